//! `mnist-cnn eval` through the binary, checked against predictions this
//! test computes itself from the saved model.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{argmax, mnist_cnn, probabilities, stdout_of};
use mnist_cnn::idx::CLASSES;
use serde_json::Value;

/// A model trained once through `mnist-cnn train` for the tests here.
fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "1280"]))
}

#[test]
fn eval_json_agrees_with_predictions_computed_here() {
    let (_, model, _) = trained_model();
    let json: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    ))
    .unwrap();
    let (rows, labels, loss) = probabilities(model);
    let mut confusion = [[0u64; CLASSES]; CLASSES];
    for (row, &label) in rows.iter().zip(&labels) {
        confusion[label as usize][argmax(row)] += 1;
    }
    let correct: u64 = (0..CLASSES).map(|c| confusion[c][c]).sum();
    assert_eq!(json["count"], labels.len());
    let accuracy = json["accuracy"].as_f64().unwrap();
    assert!((accuracy - correct as f64 / labels.len() as f64).abs() < 1e-12);
    assert!(accuracy > 0.5, "a trained model, not chance: {accuracy}");
    let json_loss = json["loss"].as_f64().unwrap();
    assert!((json_loss - loss).abs() < 1e-5, "{json_loss} vs {loss}");
    for c in 0..CLASSES {
        let row: Vec<u64> = json["confusion_matrix"][c]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(row, confusion[c], "confusion row {c}");
        let total: u64 = confusion[c].iter().sum();
        let per_class = json["per_class_accuracy"][c].as_f64().unwrap();
        assert!((per_class - confusion[c][c] as f64 / total as f64).abs() < 1e-12);
    }

    let human = stdout_of(
        mnist_cnn()
            .args(["eval", "--batch-size", "77", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    let (first, report) = human.split_once('\n').unwrap();
    assert!(first.starts_with("Model: "), "{first}");
    assert!(report.starts_with(&format!("loss: {json_loss:.4} - accuracy: {accuracy:.4}\n")));
    assert!(human.contains("confusion matrix (rows: true label, columns: predicted)"));
}
