//! `show` through the binary: looking at the data set.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::mnist_cnn;
use mnist_cnn::data::{self, Part, Split};
use mnist_cnn::idx::SIDE;
use mnist_cnn::picture;
use serde_json::Value;

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
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

fn split(part: Part) -> &'static Split {
    static TRAIN: OnceLock<Split> = OnceLock::new();
    static TEST: OnceLock<Split> = OnceLock::new();
    let cell = match part {
        Part::Train => &TRAIN,
        Part::Test => &TEST,
    };
    cell.get_or_init(|| data::load(common::data_dir(), part).unwrap())
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
    let train = split(Part::Train);
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
    let test = split(Part::Test);
    let out = stdout_of(&mut show(&["7", "--test", "--values"]));
    let table: Vec<Vec<u8>> = out
        .lines()
        .filter(|l| l.len() == SIDE * 4 - 1 && l.trim_start().starts_with(char::is_numeric))
        .map(|l| l.split_whitespace().map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(table.len(), SIDE, "{out}");
    assert_eq!(table.concat(), test.images.image(7));
    assert!(out.contains(&format!("y_test[7]: {}", test.labels[7])));

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
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
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
    let image = split(Part::Train).images.image(53238);
    assert_eq!(pixels, picture::upscale(image, SIDE, 3));
}

#[test]
fn show_refuses_an_index_out_of_range_before_reading_any_data() {
    let empty = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            &["60000"][..],
            "there is no training image 60000: the 60000 training images are numbered 0 to 59999",
        ),
        (
            &["10000", "--test"],
            "there is no test image 10000: the 10000 test images are numbered 0 to 9999",
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
    let out = run(mnist_cnn().args(["show", "0", "--scale", "2"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--png <FILE>"));
}
