//! `mnist-cnn explain` through the binary: its numbers are `eval`'s and
//! `predict`'s, its filters the model's own weights, its sheet drawn from them.
mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::served::floats;
use common::{data_dir, decode_png, fails_with, mnist_cnn, stdout_of};
use mnist_cnn::data::Split;
use mnist_cnn::explain::{self, sheet_layout};
use mnist_cnn::idx::{CLASSES, SIDE};
use mnist_cnn::store::ModelPaths;
use serde_json::Value;

fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "1280"]))
}

fn explain_json(model: &Path, args: &[&str]) -> Value {
    let out = stdout_of(
        mnist_cnn()
            .arg("explain")
            .args(args)
            .arg("--json")
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--model")
            .arg(model),
    );
    serde_json::from_str(&out).unwrap()
}

fn assert_within(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
    let worst = common::max_diff(a, b);
    assert!(
        worst <= tolerance,
        "{what}: differ by {worst}\n{a:?}\n{b:?}"
    );
}

#[test]
fn a_test_images_probabilities_are_evals() {
    let (_, model, _) = trained_model();
    let test = common::subset(Split::Test, 200);
    let device = mnist_cnn::backend::host_device();
    let cnn = ModelPaths::new(model).load_weights(&device).unwrap();
    let evaluation = mnist_cnn::eval::evaluate(&cnn, &test, 128, &device);
    let (rows, labels, _) = common::probabilities(model);
    for index in [0usize, 7, 151] {
        let json = explain_json(model, &[&index.to_string()]);
        let probs = floats(&json["probabilities"]);
        assert_eq!(probs.len(), CLASSES);
        assert_within(&probs, &rows[index], 1e-6, "the model's own pass");
        let p = evaluation.predictions[index];
        assert_eq!(json["predicted"], p.predicted, "image {index}");
        let top = probs[p.predicted as usize];
        assert!(
            (top - p.confidence).abs() <= 1e-6,
            "eval's confidence {} vs {top}",
            p.confidence
        );
        assert_eq!(json["label"], labels[index]);
        assert_eq!(json["source"], format!("test image {index}"));
        let mut scaled = Vec::new();
        test.images.scaled_into(&[index], &mut scaled);
        assert_eq!(floats(&json["input"]), scaled);
    }
}

#[test]
fn a_pictures_probabilities_are_predicts() {
    let (dir, model, _) = trained_model();
    let picture = dir.path().join("seven.png");
    // A test image written 4 times larger, as a user's picture would be.
    stdout_of(
        mnist_cnn()
            .args(["show", "--test", "0", "--scale", "4", "--png"])
            .arg(&picture)
            .arg("--data-dir")
            .arg(data_dir()),
    );
    let predicted: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["predict", "--json"])
            .arg(&picture)
            .arg("--model")
            .arg(model),
    ))
    .unwrap();
    let json = explain_json(model, &["--image", picture.to_str().unwrap()]);
    assert_within(
        &floats(&json["probabilities"]),
        &floats(&predicted[0]["probabilities"]),
        1e-6,
        "predict's",
    );
    assert_eq!(json["predicted"], predicted[0]["predicted"]);
    assert_eq!(json["label"], Value::Null);
}

#[test]
fn every_view_has_its_shape_and_the_filters_are_the_models_weights() {
    let (_, model, _) = trained_model();
    let json = explain_json(model, &["--train", "53238"]);
    let train = common::subset(Split::Train, 53239);
    assert_eq!(json["label"], train.labels[53238]);
    assert_eq!(json["source"], "training image 53238");
    let shape = |key: &str| -> Vec<usize> {
        match &json[key] {
            Value::Array(rows) if rows[0].is_array() => {
                vec![rows.len(), rows[0].as_array().unwrap().len()]
            }
            Value::Array(values) => vec![values.len()],
            other => panic!("{key}: {other}"),
        }
    };
    assert_eq!(shape("input"), [784]);
    assert_eq!(shape("filters"), [32, 9]);
    assert_eq!(shape("conv"), [32, 26 * 26]);
    assert_eq!(shape("pooled"), [32, 25 * 25]);
    assert_eq!(shape("hidden"), [128]);
    assert_eq!(shape("probabilities"), [10]);
    assert_eq!(shape("saliency"), [784]);
    assert!(
        json["saliency_method"]
            .as_str()
            .unwrap()
            .contains("gradient")
    );
    let cnn = ModelPaths::new(model)
        .load_weights(&mnist_cnn::backend::host_device())
        .unwrap();
    let filters: Vec<f32> = json["filters"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    assert_eq!(filters, cnn.parameters().conv_weight);
    let sum: f32 = floats(&json["probabilities"]).iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{sum}");
    // The pooled maps are the max-pool of the conv maps.
    for (conv, pooled) in json["conv"]
        .as_array()
        .unwrap()
        .iter()
        .zip(json["pooled"].as_array().unwrap())
    {
        assert_within(
            &explain::max_pool(&floats(conv)),
            &floats(pooled),
            1e-5,
            "pool",
        );
    }
    let saliency = floats(&json["saliency"]);
    assert!(
        saliency.iter().any(|&g| g != 0.0),
        "a saliency map of zeros"
    );
}

#[test]
fn the_sheet_draws_the_input_and_the_models_own_filters() {
    let (dir, model, _) = trained_model();
    let png = dir.path().join("sheet.png");
    let out = stdout_of(
        mnist_cnn()
            .args(["explain", "5", "--png"])
            .arg(&png)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--model")
            .arg(model),
    );
    assert!(out.contains("test image 5, label "), "{out}");
    assert!(out.contains("predicted "), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains('%')).count(),
        CLASSES,
        "{out}"
    );
    assert!(out.contains("sheet written to"), "{out}");
    let (w, h, colour, pixels) = decode_png(&png);
    let layout = explain::layout();
    assert_eq!((w as usize, h as usize), (layout.width, layout.height));
    assert_eq!(colour, png::ColorType::Rgb);
    let at = |x: usize, y: usize| -> [u8; 3] {
        let i = (y * layout.width + x) * 3;
        pixels[i..i + 3].try_into().unwrap()
    };
    let test = common::subset(Split::Test, 6);
    let s = sheet_layout::DIGIT_SCALE;
    for (i, &p) in test.images.image(5).iter().enumerate() {
        let (x, y) = (
            layout.input.x + (i % SIDE) * s + s / 2,
            layout.input.y + (i / SIDE) * s + s / 2,
        );
        assert_eq!(at(x, y), [255 - p; 3], "input pixel {i}");
    }
    let weights = ModelPaths::new(model)
        .load_weights(&mnist_cnn::backend::host_device())
        .unwrap()
        .parameters()
        .conv_weight;
    let scale = weights.iter().fold(0.0f32, |m, w| m.max(w.abs()));
    let f = sheet_layout::FILTER_SCALE;
    for filter in 0..32 {
        let tile = explain::tile(layout.filters, 3 * f, filter);
        for tap in 0..9 {
            let (x, y) = (
                tile.x + (tap % 3) * f + f / 2,
                tile.y + (tap / 3) * f + f / 2,
            );
            let weight = weights[filter * 9 + tap];
            assert_eq!(
                at(x, y),
                explain::diverging(weight, scale),
                "filter {filter} tap {tap}"
            );
        }
    }
}

#[test]
fn bad_requests_get_one_line_and_what_to_do() {
    let (dir, model, _) = trained_model();
    let run = |args: &[&str]| {
        let mut cmd = mnist_cnn();
        cmd.arg("explain")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--model")
            .arg(model);
        cmd
    };
    fails_with(&mut run(&["10000"]), "numbered 0 to 9999");
    fails_with(&mut run(&["--train", "60000"]), "numbered 0 to 59999");
    let text = dir.path().join("not-a-picture.png");
    std::fs::write(&text, "hello").unwrap();
    fails_with(
        &mut run(&["--image", text.to_str().unwrap()]),
        "not an image",
    );
    let missing = dir.path().join("none");
    fails_with(
        mnist_cnn()
            .args(["explain", "1", "--data-dir"])
            .arg(data_dir())
            .arg("--model")
            .arg(&missing),
        "train one with",
    );
    // Neither an index nor a picture, or two of them: clap's usage error.
    let out = run(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["3", "--train", "4"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
