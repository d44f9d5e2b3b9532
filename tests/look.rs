//! `show` and `predict` through the binary: looking at the data set, and
//! reading digits from pictures that are not MNIST's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{mnist_cnn, stdout_of};
use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage, imageops};
use mnist_cnn::data::{self, Examples, Split};
use mnist_cnn::idx::{PIXELS, SIDE};
use mnist_cnn::picture;
use mnist_cnn::store::ModelPaths;
use serde_json::Value;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

/// The `error:` lines of a failed run (which must not have panicked).
fn errors_of(out: &Output) -> Vec<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(String::from)
        .collect()
}

fn examples(split: Split) -> &'static Examples {
    static TRAIN: OnceLock<Examples> = OnceLock::new();
    static TEST: OnceLock<Examples> = OnceLock::new();
    let cell = match split {
        Split::Train => &TRAIN,
        Split::Test => &TEST,
    };
    cell.get_or_init(|| data::load(common::data_dir(), split).unwrap())
}

fn show(args: &[&str]) -> Command {
    let mut cmd = mnist_cnn();
    cmd.arg("show")
        .args(args)
        .arg("--data-dir")
        .arg(common::data_dir());
    cmd
}

#[test]
fn show_prints_the_tutorials_image_its_label_one_hot_and_the_shapes() {
    let out = stdout_of(&mut show(&["53238"]));
    let train = examples(Split::Train);
    let label = train.labels[53238];
    assert_eq!(label, 9, "the tutorial's image is a 9");
    assert!(
        out.starts_with("x_train shape: (60000, 28, 28), y_train shape: (60000,)\n"),
        "{out}"
    );
    assert!(
        out.contains(&picture::render(train.images.image(53238))),
        "{out}"
    );
    assert!(out.contains("\ny_train[53238]: 9\n"), "{out}");
    assert!(
        out.contains("\none-hot: [0. 0. 0. 0. 0. 0. 0. 0. 0. 1.]\n"),
        "{out}"
    );
    assert!(!out.contains(" 254 "), "no value table unless asked: {out}");
}

#[test]
fn show_values_prints_the_pixel_table_and_json_has_the_same_pixels() {
    let test = examples(Split::Test);
    // Each table row: its row number, then its values.
    let rows = |out: &str| -> Vec<(usize, Vec<f32>)> {
        out.lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                let is_row = cells.len() == 15 || cells.len() == SIDE + 1;
                let values: Option<Vec<f32>> =
                    cells.get(1..)?.iter().map(|v| v.parse().ok()).collect();
                is_row.then_some((cells[0].parse().ok()?, values?))
            })
            .collect()
    };
    // In 80 columns (a pipe's width): two halves of 14 columns, each line within 80.
    let out = stdout_of(&mut show(&["7", "--test", "--values"]));
    assert!(out.lines().all(|l| l.chars().count() <= 80), "{out}");
    let halves = rows(&out);
    assert_eq!(halves.len(), 2 * SIDE, "two halves of 28 rows: {out}");
    let image = test.images.image(7);
    let mut left = Vec::new();
    let mut right = Vec::new();
    for (i, (r, values)) in halves.iter().filter(|(_, v)| v.len() == 14).enumerate() {
        if i < SIDE {
            assert_eq!(*r, i);
            left.push(values.clone());
        } else {
            right.push(values.clone());
        }
    }
    let joined: Vec<u8> = left
        .iter()
        .zip(&right)
        .flat_map(|(l, r)| l.iter().chain(r).map(|&v| v as u8))
        .collect();
    assert_eq!(joined, image);
    assert!(out.contains(&format!("y_test[7]: {}", test.labels[7])));
    // Wide enough, one table; scaled, the values the network reads.
    let mut wide = show(&["7", "--test", "--scaled"]);
    let out = stdout_of(wide.env("COLUMNS", "200"));
    let table = rows(&out);
    let table: Vec<&(usize, Vec<f32>)> = table.iter().filter(|(_, v)| v.len() == SIDE).collect();
    assert_eq!(table.len(), SIDE, "{out}");
    for (r, values) in table {
        for (c, v) in values.iter().enumerate() {
            let exact = image[r * SIDE + c] as f32 / 255.0;
            assert!(
                (v - exact).abs() <= 0.005,
                "row {r} column {c}: {v} for {exact}"
            );
        }
    }
    assert!(
        out.contains("values / 255, as the network reads them"),
        "{out}"
    );
    // Negative indices count from the end, as in Python.
    let last = stdout_of(&mut show(&["-1", "--test"]));
    assert!(last.contains("x_test[9999]:"), "{last}");
    assert!(last.contains(&format!("y_test[9999]: {}", test.labels[9999])));
    let also = stdout_of(
        mnist_cnn()
            .args(["show", "--test", "--data-dir"])
            .arg(common::data_dir())
            .args(["--", "-10000"]),
    );
    assert!(also.contains("x_test[0]:"), "{also}");

    let json: Value =
        serde_json::from_str(&stdout_of(&mut show(&["7", "--test", "--json"]))).unwrap();
    assert_eq!(json["set"], "test");
    assert_eq!(json["index"], 7);
    assert_eq!(json["label"], test.labels[7]);
    let one_hot: Vec<u64> = json["one_hot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let mut expected = vec![0; 10];
    expected[test.labels[7] as usize] = 1;
    assert_eq!(one_hot, expected);
    let pixels: Vec<u8> = json["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u8)
        })
        .collect();
    assert_eq!(pixels, test.images.image(7));
}

fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let (width, height, colour, pixels) = common::decode_png(path);
    assert_eq!(colour, png::ColorType::Grayscale);
    (width, height, pixels)
}

#[test]
fn show_png_writes_the_image_enlarged_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/nine.png");
    let out = stdout_of(&mut show(&[
        "53238",
        "--scale",
        "3",
        "--png",
        file.to_str().unwrap(),
    ]));
    assert!(out.contains("PNG written to"), "{out}");
    let (w, h, pixels) = read_png(&file);
    assert_eq!((w, h), (84, 84));
    let image = examples(Split::Train).images.image(53238);
    // Dark ink on white, as the tutorial's cmap=binary draws it.
    let inked: Vec<u8> = image.iter().map(|p| 255 - p).collect();
    assert_eq!(pixels, picture::upscale(&inked, SIDE, 3));
    // Or MNIST's own values.
    let stored = dir.path().join("stored.png");
    stdout_of(&mut show(&[
        "53238",
        "--as-stored",
        "--png",
        stored.to_str().unwrap(),
    ]));
    assert_eq!(read_png(&stored).2, image);
}

#[test]
fn show_refuses_an_index_out_of_range_before_reading_any_data() {
    let empty = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            &["60000"][..],
            "there is no training image 60000: the 60000 training images are numbered 0 to 59999 \
             (or -1 to -60000 from the end)",
        ),
        (
            &["10000", "--test"],
            "there is no test image 10000: the 10000 test images are numbered 0 to 9999 \
             (or -1 to -10000 from the end)",
        ),
        (
            &["-10001", "--test"],
            "there is no test image -10001: the 10000 test images are numbered 0 to 9999 \
             (or -1 to -10000 from the end)",
        ),
    ] {
        let out = run(mnist_cnn()
            .arg("show")
            .args(args)
            .arg("--data-dir")
            .arg(empty.path()));
        assert_eq!(errors_of(&out), [format!("error: {needle}")]);
    }
    // Within range but no data: says how to get it.
    let out = run(mnist_cnn()
        .args(["show", "0", "--data-dir"])
        .arg(empty.path()));
    let errors = errors_of(&out);
    assert!(errors[0].contains("run `mnist-cnn download"), "{errors:?}");
    let out = run(mnist_cnn().args(["show", "seven"]));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("must be a whole number: 53238, or -1 for the last image"),
        "{said}"
    );
    assert_eq!(out.status.code(), Some(2));
    let out = run(mnist_cnn().args(["show", "0", "--scale", "2"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--png <FILE>"));
}

/// A model trained once through the binary for the `predict` tests: a few
/// thousand images, enough for a model sure of most digits.
fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    let flags = ["--epochs", "2", "--limit", "6000", "--learning-rate", "0.1"];
    let (_, path, _) = MODEL.get_or_init(|| common::train_model(&flags));
    path
}

fn predict(files: &[PathBuf]) -> Command {
    let mut cmd = mnist_cnn();
    cmd.arg("predict").args(files).arg("--model").arg(model());
    cmd
}

/// Test image `i` as a person's picture of it: MNIST's look undone (dark
/// ink on white, 140×140 with smooth edges, off-centre in a bigger picture),
/// in one of several formats and colours.
fn redrawn(pixels: &[u8], i: usize, dir: &Path) -> PathBuf {
    let small = GrayImage::from_fn(SIDE as u32, SIDE as u32, |x, y| {
        Luma([255 - pixels[y as usize * SIDE + x as usize]])
    });
    let big = imageops::resize(&small, 140, 140, imageops::FilterType::Triangle);
    let mut canvas = GrayImage::from_pixel(200, 180, Luma([255]));
    let (x, y) = (5 + 9 * (i % 6) as i64, 4 + 7 * (i % 5) as i64);
    imageops::overlay(&mut canvas, &big, x, y);
    let (image, format, ext) = match i % 10 {
        // Blue ink on yellowish paper.
        1 => {
            let rgb = RgbImage::from_fn(200, 180, |x, y| {
                let ink = 1.0 - canvas.get_pixel(x, y).0[0] as f32 / 255.0;
                let mix = |paper: f32, pen: f32| (paper + (pen - paper) * ink) as u8;
                Rgb([mix(250.0, 20.0), mix(245.0, 30.0), mix(200.0, 140.0)])
            });
            (DynamicImage::ImageRgb8(rgb), ImageFormat::Png, "png")
        }
        3 => (DynamicImage::ImageLuma8(canvas), ImageFormat::Jpeg, "jpg"),
        6 => (
            DynamicImage::ImageRgb8(DynamicImage::ImageLuma8(canvas).to_rgb8()),
            ImageFormat::Bmp,
            "bmp",
        ),
        9 => (DynamicImage::ImageLuma8(canvas), ImageFormat::Pnm, "pgm"),
        _ => (DynamicImage::ImageLuma8(canvas), ImageFormat::Png, "png"),
    };
    let path = dir.join(format!("{i:03}.{ext}"));
    image.save_with_format(&path, format).unwrap();
    path
}

#[test]
fn redrawn_test_digits_are_read_as_the_originals_are() {
    let test = examples(Split::Test);
    let n = 100;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = (0..n)
        .map(|i| redrawn(test.images.image(i), i, dir.path()))
        .collect();
    let json: Value = serde_json::from_str(&stdout_of(predict(&files).arg("--json"))).unwrap();
    let answers = json.as_array().unwrap();
    assert_eq!(answers.len(), n);

    let device = mnist_cnn::backend::host_device();
    let cnn = ModelPaths::new(model()).load_weights(&device).unwrap();
    let mut first = test.clone();
    first.truncate(n);
    let originals = mnist_cnn::eval::evaluate(&cnn, &first, n, &device).predictions;

    let mut same = 0;
    for (i, (answer, original)) in answers.iter().zip(&originals).enumerate() {
        assert_eq!(answer["file"], files[i].to_str().unwrap());
        assert_eq!(answer["inverted"], true, "{answer}");
        let probabilities: Vec<f64> = answer["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert!((probabilities.iter().sum::<f64>() - 1.0).abs() < 1e-4);
        let top = answer["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let predicted = answer["predicted"].as_u64().unwrap();
        assert_eq!(top[0]["digit"], predicted);
        for pair in top.windows(2) {
            assert!(pair[0]["probability"].as_f64() >= pair[1]["probability"].as_f64());
        }
        let best = probabilities.iter().copied().fold(0.0, f64::max);
        assert_eq!(probabilities[predicted as usize], best);
        same += usize::from(predicted == original.predicted as u64);
    }
    eprintln!("redrawn test digits read as the originals: {same} of {n}");
    assert!(
        same >= 95,
        "only {same} of {n} redrawn digits read as the originals"
    );
}

#[test]
fn predict_prints_the_digit_and_top_three_and_can_show_what_the_model_saw() {
    let test = examples(Split::Test);
    let dir = tempfile::tempdir().unwrap();
    let files = [
        redrawn(test.images.image(0), 0, dir.path()),
        redrawn(test.images.image(1), 1, dir.path()),
    ];
    let json: Value = serde_json::from_str(&stdout_of(predict(&files).arg("--json"))).unwrap();
    let out = stdout_of(predict(&files).arg("--show"));
    let lines: Vec<&str> = out.lines().collect();
    for (file, answer) in files.iter().zip(json.as_array().unwrap()) {
        let top: Vec<String> = answer["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let p = t["probability"].as_f64().unwrap() * 100.0;
                format!("{}: {p:.1}%", t["digit"])
            })
            .collect();
        let line = format!(
            "{}: {} ({})",
            file.display(),
            answer["predicted"],
            top.join(", ")
        );
        let at = lines.iter().position(|l| *l == line).expect(&line);
        assert_eq!(lines[at + 1], "what the model saw (inverted):");
        let drawing = &lines[at + 2..at + 2 + SIDE];
        assert!(drawing.iter().all(|l| l.chars().count() == 2 * SIDE));
        assert!(drawing.iter().any(|l| l.contains('█')));
    }
    let plain = stdout_of(&mut predict(&files));
    assert_eq!(
        plain.lines().count(),
        3,
        "the model's line, one per file: {plain}"
    );
}

#[test]
fn pictures_that_cannot_be_read_fail_one_line_each_and_the_others_still_run() {
    let test = examples(Split::Test);
    let dir = tempfile::tempdir().unwrap();
    let good = redrawn(test.images.image(3), 3, dir.path());
    let blank = dir.path().join("blank.png");
    GrayImage::from_pixel(120, 80, Luma([250]))
        .save(&blank)
        .unwrap();
    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not a picture").unwrap();
    let missing = dir.path().join("missing.png");
    let gif = dir.path().join("drawn.gif");
    std::fs::write(&gif, b"GIF89a\x1c\x00\x1c\x00\x80\x00\x00").unwrap();
    let files = [
        blank.clone(),
        text.clone(),
        good.clone(),
        missing.clone(),
        gif.clone(),
    ];
    let out = run(&mut predict(&files));
    let errors = errors_of(&out);
    assert_eq!(
        errors,
        [
            format!(
                "error: {}: no digit found: the image is blank",
                blank.display()
            ),
            format!(
                "error: {}: not an image this tool reads (PNG, JPEG, BMP, or PGM/PPM/PBM)",
                text.display()
            ),
            format!(
                "error: {}: cannot read it: No such file or directory (os error 2)",
                missing.display()
            ),
            format!(
                "error: {}: a GIF picture, which this tool does not read: it reads PNG, JPEG, \
                 BMP and PGM/PPM/PBM (save it as PNG first)",
                gif.display()
            ),
            "error: 4 of 5 pictures could not be read (see above)".to_string(),
        ]
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("Model: "), "{stdout}");
    assert!(
        lines[1].starts_with(&format!("{}: ", good.display())),
        "{stdout}"
    );
    assert_eq!(lines.len(), 2);

    // One file that fails: one line.
    let out = run(&mut predict(&[text]));
    assert_eq!(errors_of(&out).len(), 1);
}

#[test]
fn predict_refuses_a_missing_model_or_one_of_another_network() {
    let dir = tempfile::tempdir().unwrap();
    let picture = redrawn(examples(Split::Test).images.image(0), 0, dir.path());
    let out = run(mnist_cnn()
        .arg("predict")
        .arg(&picture)
        .arg("--model")
        .arg(dir.path().join("none")));
    let errors = errors_of(&out);
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].contains("none.bpk not found: train one with"),
        "{errors:?}"
    );

    // The weights of some other network, in Burn's format.
    use burn::module::Module;
    let other = burn::nn::LinearConfig::new(PIXELS, 10).init(&mnist_cnn::backend::host_device());
    let bytes = other.into_record().into_bytes().unwrap();
    std::fs::write(dir.path().join("other.bpk"), &bytes[..]).unwrap();
    let out = run(mnist_cnn()
        .arg("predict")
        .arg(&picture)
        .arg("--model")
        .arg(dir.path().join("other")));
    let errors = errors_of(&out);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("holds another network"), "{errors:?}");
}
