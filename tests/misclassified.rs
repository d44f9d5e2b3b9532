//! `mnist-cnn misclassified` through the binary: exactly the mistakes this
//! test computes itself from the saved model, drawn, written as pictures
//! and asked as a quiz.
mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use common::{argmax, decode_png, fails_with, mnist_cnn, probabilities, stdout_of};
use mnist_cnn::data::{self, Split};
use serde_json::Value;

/// A model trained once through `mnist-cnn train` for the tests here.
fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "1280"]))
}

#[test]
fn misclassified_lists_exactly_the_mistakes_computed_here() {
    let (_, model, _) = trained_model();
    let run = |args: &[&str]| -> Vec<Value> {
        let out = stdout_of(
            mnist_cnn()
                .arg("misclassified")
                .args(args)
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(model),
        );
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let (rows, labels, _) = probabilities(model);
    let wrong: Vec<usize> = (0..labels.len())
        .filter(|&i| argmax(&rows[i]) != labels[i] as usize)
        .collect();
    assert!(
        wrong.len() > 10,
        "expected some mistakes, got {}",
        wrong.len()
    );

    let all = run(&["--all", "--json"]);
    let indices: Vec<usize> = all
        .iter()
        .map(|m| m["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(indices, wrong);
    for m in &all {
        let i = m["index"].as_u64().unwrap() as usize;
        assert_eq!(m["true"].as_u64().unwrap(), labels[i] as u64);
        assert_eq!(m["predicted"].as_u64().unwrap() as usize, argmax(&rows[i]));
        let confidence = m["confidence"].as_f64().unwrap();
        assert!((confidence - rows[i][argmax(&rows[i])] as f64).abs() < 1e-6);
    }

    let some = run(&["--count", "4", "--seed", "5", "--json"]);
    assert_eq!(some.len(), 4);
    assert!(some.iter().all(|m| all.contains(m)));
    assert_eq!(
        some,
        run(&["--count", "4", "--seed", "5", "--json"]),
        "seeded choice repeats"
    );
    assert_ne!(some, run(&["--count", "4", "--seed", "6", "--json"]));
}

#[test]
fn misclassified_draws_digits_and_writes_pngs() {
    let (dir, model, _) = trained_model();
    let png_dir = dir.path().join("pngs");
    let out = stdout_of(
        mnist_cnn()
            .args(["misclassified", "--count", "2", "--png"])
            .arg(&png_dir)
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    let test = data::load(common::data_dir(), Split::Test).unwrap();
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers.len(), 2, "{out}");
    // Each digit: 28 rows of 56 shade characters, with some ink in them.
    let drawn: Vec<&str> = out
        .lines()
        .filter(|l| l.chars().count() == 56 && l.chars().all(|c| " ░▒▓█".contains(c)))
        .collect();
    assert_eq!(drawn.len(), 2 * 28, "{out}");
    assert!(drawn.iter().any(|l| l.contains('█')));

    let mut files: Vec<PathBuf> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let index: usize = name[..5].parse().unwrap();
        assert!(
            name.contains(&format!("_true{}", test.labels[index])),
            "{name}"
        );
        assert!(out.contains(&format!("#{index}: predicted ")), "{out}");
        let (_, _, _, pixels) = decode_png(&file);
        assert_eq!(&pixels[..], test.images.image(index), "{name}");
    }
}

#[test]
fn misclassified_says_when_fewer_mistakes_exist_than_asked() {
    let (_, model, _) = trained_model();
    let out = mnist_cnn()
        .args([
            "misclassified",
            "--no-render",
            "--count",
            "10000",
            "--data-dir",
        ])
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("test images are misclassified (asked for 10000)"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains('█'));
}

/// `misclassified` with `args` on the shared model; returns the output.
fn misclassified(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let (_, model, _) = trained_model();
    let mut child = mnist_cnn()
        .arg("misclassified")
        .args(args)
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The mistakes `--count N --seed S` chooses, as `--json` lists them.
fn chosen(count: usize, seed: u64) -> Vec<(usize, u8, u8)> {
    let (n, s) = (count.to_string(), seed.to_string());
    let out = misclassified(&["--count", &n, "--seed", &s, "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_u64().unwrap();
            (
                field("index") as usize,
                field("predicted") as u8,
                field("true") as u8,
            )
        })
        .collect()
}

#[test]
fn misclassified_sheet_shows_the_chosen_mistakes_with_their_labels() {
    use mnist_cnn::misclassified::{Mistake, card};
    use mnist_cnn::picture;
    let (dir, _, _) = trained_model();
    let sheet = dir.path().join("sheets/mistakes.png");
    let out = misclassified(
        &[
            "--count",
            "3",
            "--seed",
            "4",
            "--no-render",
            "--sheet",
            sheet.to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("Sheet written to {}", sheet.display())),
        "{stdout}"
    );
    let test = data::load(common::data_dir(), Split::Test).unwrap();
    let mistakes: Vec<Mistake> = chosen(3, 4)
        .into_iter()
        .map(|(index, predicted, truth)| Mistake {
            index,
            predicted,
            truth,
            confidence: 0.0,
        })
        .collect();
    let cards: Vec<_> = mistakes.iter().map(|m| card(m, &test)).collect();
    assert_eq!(
        cards[0].lines[0].0,
        format!("model {}", mistakes[0].predicted)
    );
    assert_eq!(cards[0].lines[1].0, format!("true {}", mistakes[0].truth));
    let (width, height, expected) = picture::sheet(&cards);
    let (w, h, colour, pixels) = decode_png(&sheet);
    assert_eq!((w as usize, h as usize), (width, height));
    assert_eq!(colour, png::ColorType::Rgb);
    assert!(pixels == expected, "the sheet of the chosen mistakes");
}

/// `--png` takes a folder and `--sheet` a .png name: a file where the
/// folder should be, or a JPEG name for PNG bytes, are refused before any
/// work, and nothing is written.
#[test]
fn misclassified_and_show_refuse_picture_names_they_would_get_wrong() {
    let (_, model, _) = trained_model();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digits");
    std::fs::write(&file, "mine").unwrap();
    let run = |flags: &[&std::ffi::OsStr]| {
        let mut cmd = mnist_cnn();
        cmd.arg("misclassified")
            .args(flags)
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(model);
        cmd
    };
    let png = std::ffi::OsStr::new("--png");
    let sheet = std::ffi::OsStr::new("--sheet");
    let said = fails_with(&mut run(&[png, file.as_os_str()]), "--png wants a folder");
    assert!(
        said.contains("is a file: for one picture of them all, use --sheet FILE"),
        "{said}"
    );
    let named = dir.path().join("sheet.png");
    fails_with(&mut run(&[png, named.as_os_str()]), "is named as a picture");
    let jpeg = dir.path().join("sheet.jpg");
    fails_with(
        &mut run(&[sheet, jpeg.as_os_str()]),
        "the picture is written as PNG, so its name must end in .png",
    );
    fails_with(
        mnist_cnn()
            .args(["show", "0", "--png"])
            .arg(&jpeg)
            .arg("--data-dir")
            .arg(common::data_dir()),
        "must end in .png",
    );
    let mut left = common::file_names(dir.path());
    left.sort();
    assert_eq!(left, ["digits"], "nothing written");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

#[test]
fn misclassified_png_scale_enlarges_each_file() {
    use mnist_cnn::picture;
    let (dir, _, _) = trained_model();
    let png_dir = dir.path().join("big");
    misclassified(
        &[
            "--count",
            "2",
            "--no-render",
            "--scale",
            "3",
            "--png",
            png_dir.to_str().unwrap(),
        ],
        None,
    );
    let test = data::load(common::data_dir(), Split::Test).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&png_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2);
    for file in files {
        let index: usize = file.file_name().unwrap().to_str().unwrap()[..5]
            .parse()
            .unwrap();
        let (w, h, colour, pixels) = decode_png(&file);
        assert_eq!((w, h, colour), (84, 84, png::ColorType::Grayscale));
        assert_eq!(pixels, picture::upscale(test.images.image(index), 28, 3));
    }
    // --scale means nothing without --png.
    let out = mnist_cnn()
        .args(["misclassified", "--scale", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--png <DIR>"));
}

#[test]
fn misclassified_quiz_reads_guesses_reveals_answers_and_scores() {
    let picks = chosen(3, 8);
    // Right on the first, not a digit then wrong on the second, right on the third.
    let wrong = (picks[1].2 + 1) % 10;
    let input = format!("{}\nx\n{wrong}\n {} \n", picks[0].2, picks[2].2);
    let out = misclassified(&["--count", "3", "--seed", "8", "--quiz"], Some(&input));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("\"x\" is not a digit: type one of 0-9"),
        "{stderr}"
    );
    // Nothing is revealed before the first answer.
    let before = &stdout[..stdout.find("you: ").unwrap()];
    assert!(
        !before.contains("true") && !before.contains("model:"),
        "{before}"
    );
    assert_eq!(before.matches("your answer (0-9): ").count(), 1);
    let reveals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("your answer (0-9): "))
        .filter_map(|l| l.rsplit("your answer (0-9): ").next())
        .collect();
    assert_eq!(reveals.len(), 3, "{stdout}");
    for ((reveal, (index, predicted, truth)), verdict) in
        reveals.iter().zip(&picks).zip(["right", "wrong", "right"])
    {
        assert!(
            reveal.contains(&format!("({verdict}) - model: {predicted} (")),
            "{reveal}"
        );
        assert!(
            reveal.ends_with(&format!("true: {truth} (test image #{index})")),
            "{reveal}"
        );
    }
    assert!(stdout.ends_with("\nyou: 2/3, model: 0/3\n"), "{stdout}");

    // Input that ends early: the score so far.
    let out = misclassified(
        &["--count", "3", "--seed", "8", "--quiz"],
        Some(&format!("{}\n", picks[0].2)),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("(input ended after 1 of 3)"), "{stdout}");
    assert!(stdout.ends_with("\nyou: 1/1, model: 0/1\n"), "{stdout}");
}
