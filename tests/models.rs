//! Knowing which model is which: the line naming the model that reading
//! commands print first, `mnist-cnn models` listing and removing models,
//! and bare `mnist-cnn` saying where to start.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fails_with, mnist_cnn, succeeds};

/// A folder with a model trained once (and a second copy of it, as the
/// automatic backup would leave).
fn folder() -> &'static (tempfile::TempDir, PathBuf) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let (dir, model, _) = common::train_model(&["--epochs", "1", "--limit", "640"]);
        for ext in ["bpk", "json", "svg"] {
            std::fs::copy(
                model.with_extension(ext),
                dir.path().join(format!("model.1.{ext}")),
            )
            .unwrap();
        }
        (dir, model)
    })
}

fn with_model(command: &str, model: &Path) -> std::process::Command {
    let mut cmd = mnist_cnn();
    cmd.arg(command)
        .arg("--data-dir")
        .arg(common::data_dir())
        .arg("--model")
        .arg(model);
    cmd
}

#[test]
fn reading_commands_name_the_model_first_on_stdout_or_on_stderr_beside_json() {
    let (_dir, model) = folder();
    let named = format!(
        "Model: {} (1 epoch, test accuracy 0.",
        model.with_extension("bpk").display()
    );
    let (out, _) = succeeds(&mut with_model("eval", model));
    let first = out.lines().next().unwrap();
    assert!(first.starts_with(&named), "{first}");
    assert!(first.ends_with(" UTC)"), "when it was saved: {first}");
    let (out, _) = succeeds(with_model("misclassified", model).args(["--count", "1"]));
    assert!(out.starts_with(&named), "{out}");
    // Where stdout is JSON, it stays JSON, and the line goes to stderr.
    for command in ["eval", "misclassified"] {
        let (out, err) = succeeds(with_model(command, model).arg("--json"));
        serde_json::from_str::<serde_json::Value>(&out).unwrap();
        assert!(err.starts_with(&named), "{command}: {err}");
    }
    let picture = tempfile::tempdir().unwrap();
    let png = picture.path().join("seven.png");
    succeeds(
        mnist_cnn()
            .args(["show", "0", "--test", "--png"])
            .arg(&png)
            .arg("--data-dir")
            .arg(common::data_dir()),
    );
    let (out, _) = succeeds(with_model("predict", model).arg(&png));
    assert!(out.starts_with(&named), "{out}");
    let (out, err) = succeeds(with_model("predict", model).arg(&png).arg("--json"));
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    assert!(err.starts_with(&named), "{err}");
}

#[test]
fn models_lists_each_model_with_its_epochs_accuracy_date_and_size() {
    let (dir, _) = folder();
    let (out, _) = succeeds(mnist_cnn().arg("models").arg(dir.path()));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("name "), "{out}");
    for name in ["model ", "model.1 "] {
        let row = lines
            .iter()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed: {out}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "1", "epochs: {row}");
        assert!(cells[2].starts_with("0."), "test accuracy: {row}");
        assert_eq!(cells[3], "sgd", "{row}");
        assert!(row.contains(" UTC "), "{row}");
        assert!(
            row.ends_with("10.2 MB") || row.ends_with("10.3 MB"),
            "{row}"
        );
    }
    assert!(out.contains("2 models in "), "{out}");
    let (json, _) = succeeds(mnist_cnn().arg("models").arg(dir.path()).arg("--json"));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["name"], "model");
    assert_eq!(json[0]["epochs"], 1);
    assert!(json[0]["bytes"].as_u64().unwrap() > 10_000_000);
}

#[test]
fn models_removes_the_model_named_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (source, _) = folder();
    for name in ["model", "model.1"] {
        for ext in ["bpk", "json", "svg"] {
            std::fs::copy(
                source.path().join(format!("{name}.{ext}")),
                dir.path().join(format!("{name}.{ext}")),
            )
            .unwrap();
        }
    }
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let models = |extra: &[&str]| {
        let mut cmd = mnist_cnn();
        cmd.arg("models").arg(dir.path()).args(extra);
        cmd
    };
    // Names not in the listing are refused before anything is removed.
    fails_with(
        &mut models(&["--remove", "model.1", "--remove", "notes"]),
        "there is no model notes in",
    );
    fails_with(
        &mut models(&["--remove", "../model"]),
        "there is no model ../model",
    );
    assert_eq!(common::file_names(dir.path()).len(), 7);
    let (out, _) = succeeds(&mut models(&["--remove", "model.1"]));
    assert!(out.starts_with("removed "), "{out}");
    let mut left = common::file_names(dir.path());
    left.sort();
    assert_eq!(left, ["model.bpk", "model.json", "model.svg", "notes.txt"]);
}

#[cfg(unix)]
#[test]
fn a_model_being_trained_is_not_removed() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("busy");
    let mut child = mnist_cnn()
        .args(["train", "--epochs", "1000", "--limit", "320", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(&model)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !model.with_extension("json").exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let refused = fails_with(
        mnist_cnn()
            .arg("models")
            .arg(dir.path())
            .args(["--remove", "busy"]),
        "busy.bpk",
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(model.with_extension("bpk").exists(), "{refused}");
}

#[test]
fn a_folder_not_made_yet_holds_no_models() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = succeeds(mnist_cnn().arg("models").arg(dir.path().join("data")));
    assert!(out.starts_with("no models in "), "{out}");
    assert!(out.contains("`mnist-cnn train` makes one"), "{out}");
}

/// A weights file dated before 1970 (a copied file's clock) is read and
/// named without a date, not a panic.
#[test]
fn a_model_with_an_impossible_date_is_named_without_it() {
    let (source, _) = folder();
    let dir = tempfile::tempdir().unwrap();
    for ext in ["bpk", "json"] {
        std::fs::copy(
            source.path().join(format!("model.{ext}")),
            dir.path().join(format!("old.{ext}")),
        )
        .unwrap();
    }
    let weights = std::fs::File::options()
        .write(true)
        .open(dir.path().join("old.bpk"))
        .unwrap();
    let long_ago =
        std::time::SystemTime::UNIX_EPOCH - std::time::Duration::from_secs(86_400 * 3650);
    weights.set_modified(long_ago).unwrap();
    drop(weights);
    let (out, _) = succeeds(&mut with_model("eval", &dir.path().join("old")));
    let first = out.lines().next().unwrap();
    assert!(first.contains("(1 epoch, test accuracy 0."), "{first}");
    assert!(first.ends_with(')') && !first.contains("saved"), "{first}");
    let (listing, _) = succeeds(mnist_cnn().arg("models").arg(dir.path()));
    assert!(
        listing.lines().nth(1).unwrap().starts_with("old "),
        "{listing}"
    );
}

#[test]
fn bare_mnist_cnn_says_where_to_start_and_succeeds() {
    let (out, _) = succeeds(&mut mnist_cnn());
    let steps = [
        "mnist-cnn download",
        "mnist-cnn show 53238",
        "mnist-cnn train",
        "mnist-cnn eval",
        "mnist-cnn misclassified",
        "mnist-cnn misclassified --quiz",
    ];
    let mut at = 0;
    for step in steps {
        let found = out[at..]
            .find(step)
            .unwrap_or_else(|| panic!("{step} out of order: {out}"));
        at += found + step.len();
    }
    let (help, _) = succeeds(mnist_cnn().arg("--help"));
    assert!(
        help.contains("Start here: the Keras MNIST tutorial's steps"),
        "{help}"
    );
}

#[test]
fn a_safetensors_export_given_as_a_model_is_named_for_what_it_is() {
    let (_dir, model) = folder();
    let out = tempfile::tempdir().unwrap();
    // Without --out, the export goes beside the model, a backup's beside
    // the backup (model.1.safetensors, not model.safetensors).
    let exported = model.with_extension("safetensors");
    let (said, _) = succeeds(mnist_cnn().arg("export").arg("--model").arg(model));
    assert!(said.contains(&exported.display().to_string()), "{said}");
    let backup = model.with_file_name("model.1");
    let (said, _) = succeeds(mnist_cnn().arg("export").arg("--model").arg(&backup));
    let beside = model.with_file_name("model.1.safetensors");
    assert!(
        said.contains(&format!("exported to {}", beside.display())),
        "{said}"
    );
    assert!(beside.is_file());
    std::fs::remove_file(&beside).unwrap();
    let copy = out.path().join("weights.safetensors");
    std::fs::rename(&exported, &copy).unwrap();
    fails_with(
        &mut with_model("eval", &copy),
        "is an export for other tools (Keras, PyTorch, numpy), which mnist-cnn writes but does not read",
    );
}
