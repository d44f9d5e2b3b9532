//! The binary end to end: real downloads over loopback, and every bad input
//! giving a one-line error and a non-zero exit, never a panic.

mod common;

use assert_cmd::Command;
use common::{Fixture, real_mnist, serve};
use predicates::prelude::*;

fn mnist_cnn() -> Command {
    let mut cmd = Command::cargo_bin("mnist-cnn").unwrap();
    cmd.env_remove("MNIST_MIRROR");
    cmd
}

/// Runs and checks a failure: non-zero exit, one `error:` line, no panic.
fn fails_with(cmd: &mut Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let error_line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line in: {stderr}"));
    assert!(
        error_line.contains(needle),
        "{error_line:?} lacks {needle:?}"
    );
    stderr
}

#[test]
fn downloads_real_mnist_over_loopback_and_prints_the_shapes() {
    let Some(mnist) = real_mnist() else { return };
    let files = std::fs::read_dir(&mnist)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                format!("/{}", e.file_name().to_string_lossy()),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    let url = serve(files);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    mnist_cnn()
        .args(["download", "--mirror", &url, "--data-dir"])
        .arg(&data)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "x_train shape: (60000, 28, 28)\ny_train shape: (60000,)\n\
             x_test shape: (10000, 28, 28)\ny_test shape: (10000,)\n",
        ))
        .stdout(predicate::str::contains("4 fetched"));
    // Second run: nothing fetched, and MNIST_MIRROR is honoured as a mirror.
    mnist_cnn()
        .env("MNIST_MIRROR", &mnist)
        .args(["download", "--data-dir"])
        .arg(&data)
        .assert()
        .success()
        .stderr(predicate::str::contains("already present and valid"))
        .stdout(predicate::str::contains("0 fetched, 4 already present"));
}

#[test]
fn download_with_every_mirror_failing_says_why_per_mirror() {
    let empty = tempfile::tempdir().unwrap();
    let broken = serve(vec![]);
    let dir = tempfile::tempdir().unwrap();
    // Only loopback and local mirrors are reachable here; the public ones
    // fail fast too (no network), each with its own line.
    let stderr = fails_with(
        mnist_cnn()
            .args(["download", "--timeout", "2", "--mirror"])
            .arg(empty.path())
            .args(["--mirror", &broken, "--data-dir"])
            .arg(dir.path()),
        "could not get train-images-idx3-ubyte.gz from any mirror",
    );
    assert!(
        stderr.contains(&format!("  {broken}: HTTP status 404")),
        "{stderr}"
    );
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
}

#[test]
fn eval_without_data_or_model_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    fails_with(
        mnist_cnn()
            .args(["eval", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("nope")),
        "not found: train one with `mnist-cnn train",
    );
}

#[test]
fn corrupt_model_files_are_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::synthetic(10, 10).write_raw(dir.path());
    let model = dir.path().join("m.bpk");
    std::fs::write(&model, b"definitely not a burnpack file").unwrap();
    fails_with(
        mnist_cnn()
            .args(["eval", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "is corrupt or not a model file",
    );
}

#[test]
fn bad_data_files_are_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Fixture::synthetic(10, 10);
    fixture.write_raw(dir.path());
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        b"\0\0\x08\x01\0\0\0\x02\x01\x0c",
    )
    .unwrap();
    fails_with(
        mnist_cnn()
            .args(["train", "--epochs", "1", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "train-labels-idx1-ubyte: label 12 at index 1 is not a digit 0-9",
    );
}

#[test]
fn nonsense_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::synthetic(10, 10).write_raw(dir.path());
    fails_with(
        mnist_cnn()
            .args(["train", "--batch-size", "0", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "--epochs and --batch-size must be at least 1",
    );
    mnist_cnn()
        .args(["train", "--epochs", "many"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("invalid value 'many'"));
}
