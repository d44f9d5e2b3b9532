//! Learning curves through the binary: `train --validate` records the test
//! set's figures after every epoch without changing training.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::mnist_cnn;
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::Metadata;
use serde_json::Value;

const EPOCHS: usize = 3;

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Run {
    model: PathBuf,
    stdout: String,
}

/// The same short training run twice, with and without `--validate`.
fn runs() -> &'static (tempfile::TempDir, Run, Run) {
    static RUNS: OnceLock<(tempfile::TempDir, Run, Run)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let train = |name: &str, validate: bool| {
            let model = dir.path().join(name);
            let mut cmd = mnist_cnn();
            cmd.args(["train", "--epochs", &EPOCHS.to_string(), "--limit", "600"])
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(&model);
            if validate {
                cmd.arg("--validate");
            }
            let stdout = stdout_of(&mut cmd);
            Run { model, stdout }
        };
        let validated = train("validated", true);
        let plain = train("plain", false);
        (dir, validated, plain)
    })
}

fn metadata(model: &Path) -> Metadata {
    ModelPaths::new(model).load_metadata().unwrap()
}

#[test]
fn validating_records_the_test_figures_without_changing_training() {
    let (_, validated, plain) = runs();
    let device = mnist_cnn::backend::device();
    let weights = |model: &Path| {
        ModelPaths::new(model)
            .load_weights(&device)
            .unwrap()
            .parameters()
    };
    assert!(
        weights(&validated.model) == weights(&plain.model),
        "--validate changed the trained weights"
    );
    let (v, p) = (metadata(&validated.model), metadata(&plain.model));
    let train_figures = |m: &Metadata| {
        m.history
            .iter()
            .map(|e| (e.loss, e.accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(train_figures(&v), train_figures(&p));
    assert_eq!(v.history.len(), EPOCHS);
    assert!(
        v.history
            .iter()
            .all(|e| e.val_loss.is_some() && e.val_accuracy.is_some())
    );
    assert!(
        p.history
            .iter()
            .all(|e| e.val_loss.is_none() && e.val_accuracy.is_none())
    );
    assert_eq!(v.validation_data.as_deref(), Some("the 10000 test images"));
    let plain_json = std::fs::read_to_string(ModelPaths::new(&plain.model).metadata).unwrap();
    assert!(!plain_json.contains("val_") && !plain_json.contains("validation"));

    // Each epoch line carries its validation figures, as Keras prints them.
    for e in &v.history {
        let line = format!(
            "- val_loss: {:.4} - val_accuracy: {:.4}\n",
            e.val_loss.unwrap(),
            e.val_accuracy.unwrap()
        );
        let epoch_line = validated
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("Epoch {}/{EPOCHS} ", e.epoch)))
            .unwrap();
        assert!(format!("{epoch_line}\n").ends_with(&line), "{epoch_line}");
    }
    assert!(!plain.stdout.contains("val_"), "{}", plain.stdout);

    // The last epoch's figures are those of `eval` on the saved model.
    let eval: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&validated.model),
    ))
    .unwrap();
    let last = v.history.last().unwrap();
    assert_eq!(
        last.val_accuracy.unwrap(),
        eval["accuracy"].as_f64().unwrap()
    );
    let loss = eval["loss"].as_f64().unwrap();
    assert!(
        (last.val_loss.unwrap() - loss).abs() < 1e-9,
        "{last:?} vs {loss}"
    );
    let test = v.test.unwrap();
    assert_eq!(
        (test.loss, test.accuracy),
        (last.val_loss.unwrap(), last.val_accuracy.unwrap())
    );
}
