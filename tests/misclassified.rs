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
    // Two digits side by side in 80 columns: a header each, 14 lines of
    // half blocks with ink in them, then the ten probabilities as bars.
    // (The model's line names a path of any length.)
    assert!(
        out.lines().skip(1).all(|l| l.chars().count() <= 80),
        "{out}"
    );
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(headers.len(), 1, "one row of two: {out}");
    assert_eq!(headers[0].matches(": predicted ").count(), 2, "{out}");
    // The 14 lines of the drawings lie between the confidence line and
    // the digits' line.
    let lines: Vec<&str> = out.lines().collect();
    let top = lines
        .iter()
        .position(|l| l.starts_with("confidence "))
        .unwrap();
    let drawn = &lines[top + 1..top + 15];
    assert!(
        drawn.iter().all(|l| l.chars().all(|c| " ▀▄█".contains(c))),
        "{out}"
    );
    assert!(lines[top + 15].starts_with("0123456789 <- digit"), "{out}");
    assert!(drawn.iter().any(|l| l.contains('█')));
    let bars = out.lines().find(|l| l.contains("<- probability")).unwrap();
    assert_eq!(bars.matches("<- probability").count(), 2, "{out}");

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
        let inked: Vec<u8> = test.images.image(index).iter().map(|p| 255 - p).collect();
        assert_eq!(pixels, inked, "{name}: dark on white");
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

/// `misclassified` with `args` on the shared model, its streams piped.
fn misclassified_command(args: &[&str]) -> std::process::Command {
    let (_, model, _) = trained_model();
    let mut cmd = mnist_cnn();
    cmd.arg("misclassified")
        .args(args)
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `misclassified` with `args` on the shared model; returns the output.
fn misclassified(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut child = misclassified_command(args).spawn().unwrap();
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
    chosen_whole(count, seed)
        .into_iter()
        .map(|m| (m.index, m.predicted, m.truth))
        .collect()
}

/// [`chosen`] with each mistake's confidence and probabilities.
fn chosen_whole(count: usize, seed: u64) -> Vec<mnist_cnn::misclassified::Mistake> {
    let (n, s) = (count.to_string(), seed.to_string());
    let out = misclassified(&["--count", &n, "--seed", &s, "--json"], None);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |k: &str| m[k].as_u64().unwrap();
            let probabilities: Vec<f32> = m["probabilities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_f64().unwrap() as f32)
                .collect();
            let confidence = m["confidence"].as_f64().unwrap() as f32;
            let probabilities: [f32; 10] = probabilities.try_into().unwrap();
            assert_eq!(probabilities[field("predicted") as usize], confidence);
            mnist_cnn::misclassified::Mistake {
                index: field("index") as usize,
                predicted: field("predicted") as u8,
                truth: field("true") as u8,
                confidence,
                probabilities,
            }
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
    let mistakes: Vec<Mistake> = chosen_whole(3, 4);
    let cards: Vec<_> = mistakes.iter().map(|m| card(m, &test)).collect();
    let m = &mistakes[0];
    assert_eq!(
        cards[0].lines[0].0,
        format!("model {} {:.0}%", m.predicted, m.confidence * 100.0)
    );
    assert_eq!(cards[0].lines[1].0, format!("true {}", m.truth));
    let (_, model, _) = trained_model();
    let total = stdout
        .split(" of ")
        .next()
        .unwrap()
        .rsplit('\n')
        .next()
        .unwrap();
    let title = format!(
        "3 of the {total} test images the model gets wrong ({})",
        model.display()
    );
    let (width, height, expected) = picture::sheet(&title, &cards);
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
        let inked: Vec<u8> = test.images.image(index).iter().map(|p| 255 - p).collect();
        assert_eq!(pixels, picture::upscale(&inked, 28, 3));
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
    assert!(
        stdout.ends_with(
            "\nyou: 2/3, model: 0/3 (the model scores 0 on its own mistakes; --quiz --random \
             asks any test digits)\n"
        ),
        "{stdout}"
    );
    // Each digit under a line saying where the quiz stands: 14 lines of
    // half blocks, so that header, digit and prompt fit an 80×24 terminal.
    let headers: Vec<usize> = stdout
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with("Digit "))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(headers.len(), 3, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    for &h in &headers {
        assert!(lines[h].contains("so far (q to stop)"), "{}", lines[h]);
        assert!(lines[h + 15].starts_with("your answer (0-9): "), "{stdout}");
        assert!(lines[h + 1..h + 15].iter().all(|l| l.chars().count() == 28));
    }
    assert!(lines[headers[1]].contains("you 1/1 so far"), "{stdout}");

    // Input that ends early: the score so far.
    let out = misclassified(
        &["--count", "3", "--seed", "8", "--quiz"],
        Some(&format!("{}\n", picks[0].2)),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("(input ended after 1 of 3)"), "{stdout}");
    assert!(stdout.contains("\nyou: 1/1, model: 0/1 "), "{stdout}");

    // q stops with the score so far.
    let out = misclassified(
        &["--count", "3", "--seed", "8", "--quiz"],
        Some(&format!("{}\nq\n", picks[0].2)),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("(stopped after 1 of 3)"), "{stdout}");
    assert!(stdout.contains("\nyou: 1/1, model: 0/1 "), "{stdout}");
}

/// `--quiz --random` asks any test digits, so the model's score counts:
/// the test computes what it must be from the model's own answers.
#[test]
fn the_random_quiz_scores_the_model_on_digits_it_may_get_right() {
    let (_, model, _) = trained_model();
    let (probs, labels, _) = probabilities(model);
    let guesses = "0\n".repeat(20);
    let out = misclassified(
        &["--count", "20", "--seed", "3", "--quiz", "--random"],
        Some(&guesses),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("Model: "), "{stdout}");
    assert!(stdout.contains("Quiz: 20 random test images"), "{stdout}");
    let shown: Vec<usize> = stdout
        .lines()
        .filter_map(|l| {
            l.rsplit("(test image #")
                .next()?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(shown.len(), 20, "{stdout}");
    let model_right = shown
        .iter()
        .filter(|&&i| argmax(&probs[i]) == labels[i] as usize)
        .count();
    let zeros = shown.iter().filter(|&&i| labels[i] == 0).count();
    assert!(
        model_right > 10,
        "a trained model gets most right: {model_right}"
    );
    assert!(
        stdout.ends_with(&format!("\nyou: {zeros}/20, model: {model_right}/20\n")),
        "{stdout}"
    );
}

/// Ctrl-C in the middle of a quiz ends it with the score so far.
#[cfg(unix)]
#[test]
fn ctrl_c_ends_the_quiz_with_the_score_so_far() {
    use std::io::{BufRead, BufReader, Write};
    let picks = chosen(3, 8);
    let mut child = misclassified_command(&["--count", "3", "--seed", "8", "--quiz"])
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    writeln!(input, "{}", picks[0].2).unwrap();
    // Wait until the second digit is asked, then interrupt.
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("Digit 2 of 3") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(130), "{rest}");
    assert!(rest.contains("(stopped) you: 1/1, model: 0/1"), "{rest}");
    drop(input);
}
