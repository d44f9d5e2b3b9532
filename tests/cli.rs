//! The binary end to end: real downloads over loopback, and every bad input
//! giving a one-line error and a non-zero exit, never a panic, before any
//! work is done.

mod common;

use std::path::Path;

use common::{Fixture, fails_with, mnist_cnn, real_mnist, serve, succeeds};

/// A folder with no data and a command that, if it got as far as the data,
/// would try to download it from nowhere.
fn no_data() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn downloads_real_mnist_over_loopback_and_prints_the_shapes() {
    let mnist = real_mnist();
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
    let (stdout, _) = succeeds(
        mnist_cnn()
            .args([
                "download",
                "--no-default-mirrors",
                "--mirror",
                &url,
                "--data-dir",
            ])
            .arg(&data),
    );
    assert!(
        stdout.contains(
            "x_train shape: (60000, 28, 28)\ny_train shape: (60000,)\n\
             x_test shape: (10000, 28, 28)\ny_test shape: (10000,)\n"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("4 fetched"), "{stdout}");
    // Second run: nothing fetched, and MNIST_MIRROR is honoured as a mirror.
    let (stdout, stderr) = succeeds(
        mnist_cnn()
            .env("MNIST_MIRROR", &mnist)
            .args(["download", "--no-default-mirrors", "--data-dir"])
            .arg(&data),
    );
    assert!(stderr.contains("already present and valid"), "{stderr}");
    assert!(stdout.contains("0 fetched, 4 already present"), "{stdout}");
}

#[test]
fn download_with_every_mirror_failing_names_each_once_and_the_way_out() {
    let empty = tempfile::tempdir().unwrap();
    let broken = serve(vec![]);
    let dir = tempfile::tempdir().unwrap();
    // Only the mirrors given: offline whatever the network.
    let stderr = fails_with(
        mnist_cnn()
            .args([
                "download",
                "--no-default-mirrors",
                "--timeout",
                "2",
                "--mirror",
            ])
            .arg(empty.path())
            .args(["--mirror", &broken, "--data-dir"])
            .arg(dir.path()),
        "could not get train-images-idx3-ubyte.gz from any of the 2 mirrors tried",
    );
    assert!(
        stderr.contains("pass --mirror DIR or set MNIST_MIRROR=DIR"),
        "{stderr}"
    );
    assert_eq!(stderr.matches(&broken).count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{broken}: HTTP status 404\n")),
        "{stderr}"
    );
    let local = empty.path().display().to_string();
    assert_eq!(stderr.matches(&local).count(), 1, "{stderr}");
    assert!(!stderr.contains("yann.lecun.com"), "{stderr}");
    assert_eq!(entries(dir.path()), 0);

    fails_with(
        mnist_cnn()
            .args(["download", "--no-default-mirrors", "--data-dir"])
            .arg(dir.path()),
        "no mirror to fetch",
    );
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
        "nope.bpk not found: train one with `mnist-cnn train --model",
    );
    // The default model lives in the data folder.
    fails_with(
        mnist_cnn().args(["eval", "--data-dir"]).arg(dir.path()),
        &format!("{} not found", dir.path().join("model.bpk").display()),
    );
}

#[test]
fn corrupt_model_files_are_rejected_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::synthetic(10, 10).write_raw(dir.path());
    std::fs::write(dir.path().join("m.bpk"), b"definitely not a burnpack file").unwrap();
    fails_with(
        mnist_cnn()
            .args(["eval", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "is corrupt or not a model file",
    );
    std::fs::create_dir(dir.path().join("d.bpk")).unwrap();
    let stderr = fails_with(
        mnist_cnn()
            .args(["eval", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("d")),
        "d.bpk is a folder, not a file",
    );
    assert_eq!(stderr.matches("folder").count(), 1, "said once: {stderr}");
}

#[test]
fn bad_data_files_are_rejected_naming_the_file_and_the_repair() {
    let dir = tempfile::tempdir().unwrap();
    Fixture::synthetic(10, 10).write_raw(dir.path());
    std::fs::write(
        dir.path().join("train-labels-idx1-ubyte"),
        b"\0\0\x08\x01\0\0\0\x02\x01\x0c",
    )
    .unwrap();
    let stderr = fails_with(
        mnist_cnn()
            .args(["train", "--epochs", "1", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "train-labels-idx1-ubyte: label 12 at index 1 is not a digit 0-9",
    );
    assert!(
        stderr.contains(&format!(
            "`mnist-cnn download --data-dir {}` repairs it",
            dir.path().display()
        )),
        "{stderr}"
    );
}

#[test]
fn each_bad_option_is_named_with_its_range_before_any_work() {
    let dir = no_data();
    let cases: [(&[&str], &str); 7] = [
        (
            &["train", "--batch-size", "0"],
            "'--batch-size <N>': must be a whole number from 1 to 60000",
        ),
        (&["train", "--batch-size", "60001"], "from 1 to 60000"),
        (
            &["train", "--epochs", "0"],
            "'--epochs <N>': must be a whole number from 1 to 100000",
        ),
        (
            &["train", "--learning-rate", "-1"],
            "'--learning-rate <RATE>': must be a positive number up to 1000",
        ),
        (
            &["train", "--limit", "0"],
            "'--limit <N>': must be a whole number from 1 to 60000",
        ),
        (
            &["eval", "--batch-size", "0"],
            "'--batch-size <N>': must be a whole number from 1 to 10000",
        ),
        (&["misclassified", "--count", "0"], "'--count <N>'"),
    ];
    for (args, needle) in cases {
        let stderr = fails_with(
            mnist_cnn().args(args).arg("--data-dir").arg(dir.path()),
            needle,
        );
        assert!(!stderr.contains("downloading"), "{stderr}");
    }
    assert_eq!(entries(dir.path()), 0, "nothing was downloaded or written");
    fails_with(
        mnist_cnn().args(["train", "--epochs", "many"]),
        "invalid value 'many'",
    );
}

#[test]
fn a_backend_this_build_lacks_is_named_with_the_feature_that_brings_it() {
    let dir = no_data();
    for command in [
        &["train"][..],
        &["eval"],
        &["misclassified"],
        &["bench"],
        &["predict", "x.png"],
    ] {
        fails_with(
            mnist_cnn()
                .args(command)
                .args(["--backend", "tpu", "--data-dir"])
                .arg(dir.path()),
            "'--backend <NAME>': must be one of: ",
        );
    }
    #[cfg(not(feature = "wgpu"))]
    fails_with(
        mnist_cnn()
            .args(["train", "--backend", "wgpu", "--data-dir"])
            .arg(dir.path()),
        "this build has no wgpu backend (it has: flex); build with `--features wgpu`",
    );
    assert_eq!(entries(dir.path()), 0, "nothing was downloaded or written");
}

#[test]
fn a_model_location_that_cannot_be_written_fails_before_any_work() {
    let dir = no_data();
    std::fs::create_dir(dir.path().join("m.bpk")).unwrap();
    let stderr = fails_with(
        mnist_cnn()
            .args(["train", "--no-default-mirrors", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(dir.path().join("m")),
        "m.bpk is a folder, not a file",
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let stderr = fails_with(
        mnist_cnn()
            .args(["train", "--no-default-mirrors", "--data-dir"])
            .arg(dir.path())
            .arg("--model")
            .arg(file.join("m")),
        "cannot write",
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
    assert_eq!(entries(dir.path()), 2, "only what the test made");
}

#[test]
fn resume_without_a_checkpoint_says_so_before_any_work() {
    let dir = no_data();
    let stderr = fails_with(
        mnist_cnn()
            .args(["train", "--resume", "--no-default-mirrors", "--data-dir"])
            .arg(dir.path()),
        "nothing to resume",
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
}

#[cfg(target_os = "linux")]
#[test]
fn a_batch_too_large_for_the_memory_available_is_refused_up_front() {
    let dir = no_data();
    // 3 GB of address space: far less than a batch of 60,000 needs.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 3000000 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_mnist-cnn"))
        .args(["train", "--batch-size", "60000", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: --batch-size 60000 needs about 11."),
        "{stderr}"
    );
    assert!(stderr.contains("try a smaller --batch-size"), "{stderr}");
    assert!(!stderr.contains("downloading"), "{stderr}");
}

#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_reporting_commands_quietly() {
    let (_dir, model, _) = common::train_model(&["--epochs", "1", "--limit", "320"]);
    let model = model.as_path();
    let data = common::data_dir();
    let model_args: [&Path; 4] = [Path::new("--data-dir"), data, Path::new("--model"), model];
    for args in [
        &["eval"][..],
        &["eval", "--json"],
        &["misclassified", "--all"],
        &["misclassified", "--json"],
    ] {
        let (code, stderr) = common::with_stdout_closed(args, &model_args);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
    for args in [
        &["download", "--no-default-mirrors"][..],
        &["bench", "--steps", "1", "--warmup", "0"],
        &["show", "53238", "--values"],
    ] {
        let (code, stderr) = common::with_stdout_closed(args, &[Path::new("--data-dir"), data]);
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}
