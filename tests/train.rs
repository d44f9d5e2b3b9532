//! `mnist-cnn train` through the binary: what it prints and saves, Ctrl-C
//! and resuming, the default model and its backups, leftovers of a killed
//! save, a closed output pipe.
mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{mnist_cnn, stdout_of};
use mnist_cnn::data::{self, Split};
use mnist_cnn::model::Batch;
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::Metadata;

/// A model trained once through `mnist-cnn train` for the tests here.
fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "1280"]))
}

#[test]
fn train_prints_the_summary_epochs_and_test_result_and_saves_metadata() {
    let (_, model, out) = trained_model();
    assert!(out.contains("Total params: 2,561,738"), "{out}");
    assert!(out.contains("Epoch 1/1 - "), "{out}");
    assert!(out.contains("Test loss: "), "{out}");
    assert!(out.contains(&format!(
        "Model saved to {}",
        model.with_extension("bpk").display()
    )));
    let meta: Metadata =
        serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta.epochs_done(), 1);
    assert_eq!(meta.train_examples, 1280);
    assert_eq!(meta.config.seed, 42);
}

/// The optimiser and the dropout rate are said, recorded, and held to on
/// `--resume`, where a stateful optimiser is said to start afresh.
#[test]
fn the_optimizer_and_dropout_are_recorded_and_kept_on_resume() {
    let flags = [
        "--epochs",
        "1",
        "--limit",
        "320",
        "--optimizer",
        "adam",
        "--dropout",
        "0.5",
    ];
    let (_dir, model, out) = common::train_model(&flags);
    assert!(
        out.contains("adam learning rate 0.001, dropout 0.5, seed 42"),
        "{out}"
    );
    let meta: Metadata =
        serde_json::from_slice(&std::fs::read(model.with_extension("json")).unwrap()).unwrap();
    assert_eq!(meta.config.optimizer, mnist_cnn::optim::Optimizer::Adam);
    assert_eq!(
        (meta.config.learning_rate, meta.config.dropout),
        (0.001, 0.5)
    );
    let resume = |extra: &[&str]| {
        let mut cmd = mnist_cnn();
        cmd.args(["train", "--resume", "--epochs", "2", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&model)
            .args(extra);
        cmd
    };
    common::fails_with(
        &mut resume(&["--optimizer", "momentum"]),
        "it was trained with optimizer adam, not momentum 0.9",
    );
    common::fails_with(
        &mut resume(&["--dropout", "0.25"]),
        "it was trained with dropout 0.5, not 0.25",
    );
    let (out, err) = common::succeeds(&mut resume(&[]));
    assert!(out.contains("Epoch 2/2"), "{out}");
    assert!(
        err.contains("the adam optimiser's state starts afresh"),
        "{err}"
    );
}

/// A learning rate far too large is warned about under its epoch lines,
/// with the tutorial's as the one to try. (That the tutorial's first epochs
/// are not is `EpochStats::diverging`'s unit test.)
#[test]
fn a_diverging_run_is_warned_about_at_its_epoch() {
    let (out, err) = common::succeeds(
        mnist_cnn()
            .args([
                "train",
                "--epochs",
                "1",
                "--limit",
                "320",
                "--learning-rate",
                "1000",
            ])
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(tempfile::tempdir().unwrap().path().join("m")),
    );
    assert!(out.contains("Epoch 1/1"), "{out}");
    assert!(
        err.contains("warning: training is diverging")
            && err.contains("try a smaller learning rate, such as --learning-rate 0.01"),
        "{err}"
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_training_and_keeps_the_last_checkpoint_loadable() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let child = mnist_cnn()
        .args(["train", "--epochs", "1000", "--limit", "320", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let meta_path = model.with_extension("json");
    while !meta_path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("error: interrupted during epoch"),
        "{stderr}"
    );
    assert!(
        stderr.contains("the last complete epoch is saved in"),
        "{stderr}"
    );
    assert!(
        stderr.contains("train again with --resume to go on from there"),
        "how to continue: {stderr}"
    );

    let meta: Metadata = serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    assert!(meta.epochs_done() >= 1);
    ModelPaths::new(&model)
        .load_weights(&mnist_cnn::backend::host_device())
        .unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "only the model, its metadata and its curves: {names:?}"
    );
}

#[test]
fn train_downloads_the_data_first_when_it_is_missing() {
    let mnist = common::real_mnist();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = mnist_cnn()
        .env("MNIST_MIRROR", &mnist)
        .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
        .arg(&data)
        .arg("--model")
        .arg(dir.path().join("model"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("has no MNIST data yet: downloading it first"),
        "{stderr}"
    );
    for name in ["train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        assert!(data.join(name).is_file(), "{name} was not downloaded");
    }
    assert!(String::from_utf8_lossy(&out.stdout).contains("Test loss: "));
}

#[cfg(unix)]
#[test]
fn training_goes_on_and_saves_when_its_output_pipe_closes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let (code, stderr) = common::with_stdout_closed(
        &["train", "--epochs", "2", "--limit", "320"],
        &[
            Path::new("--data-dir"),
            common::data_dir(),
            Path::new("--model"),
            &model,
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let meta: Metadata = ModelPaths::new(&model).load_metadata().unwrap();
    assert_eq!(meta.epochs_done(), 2);
    assert!(
        meta.test.is_some(),
        "the final evaluation ran and was recorded"
    );
}

#[cfg(unix)]
#[test]
fn the_default_model_lives_in_the_data_folder_and_is_never_lost() {
    let data = common::linked_data_dir();
    let train = || {
        let out = mnist_cnn()
            .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
            .arg(data.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    train();
    let paths = ModelPaths::new(&data.path().join("model"));
    let first = std::fs::read(&paths.weights).unwrap();
    let first_meta: Metadata = paths.load_metadata().unwrap();
    let accuracy = first_meta.test.unwrap().accuracy;

    // Again: the first model is kept, and the user is told where.
    let stderr = train();
    let backup = ModelPaths::new(&data.path().join("model.1"));
    let said = format!(
        "kept the earlier model {} (1 epoch, test accuracy {accuracy:.4}, saved ",
        paths.weights.display()
    );
    assert!(stderr.contains(&said), "{stderr}");
    let kept = format!(" UTC) as {} (use --resume", backup.weights.display());
    assert!(stderr.contains(&kept), "{stderr}");
    assert_eq!(std::fs::read(&backup.weights).unwrap(), first);
    assert_eq!(backup.load_metadata::<Metadata>().unwrap(), first_meta);
    assert!(paths.exists());

    // A folder given as --model holds model.bpk.
    let folder = data.path().join("runs/");
    let out = mnist_cnn()
        .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
        .arg(data.path())
        .arg("--model")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(folder.join("model.bpk").is_file());
    assert!(folder.join("model.json").is_file());
    assert!(!data.path().join("runs.bpk").exists());
}

#[cfg(unix)]
#[test]
fn a_run_stopped_by_ctrl_c_and_resumed_ends_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let args = |model: &Path| {
        let mut cmd = mnist_cnn();
        // Epochs long enough (6,000 images) that Ctrl-C lands inside the run.
        cmd.args(["train", "--limit", "6000", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model);
        cmd
    };
    let straight = dir.path().join("straight");
    let status = args(&straight)
        .args(["--epochs", "3"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());

    let stopped = dir.path().join("stopped");
    let child = args(&stopped)
        .args(["--epochs", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let paths = ModelPaths::new(&stopped);
    let started = Instant::now();
    while !paths.metadata.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let done = paths.load_metadata::<Metadata>().unwrap().epochs_done();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(130),
        "not stopped by Ctrl-C: {stderr}"
    );
    assert!(done < 3, "stopped after {done} epochs");

    // Other settings than the checkpoint's are refused, naming them, before
    // any work: here the data folder is empty and no mirror is given.
    let empty = tempfile::tempdir().unwrap();
    let refused = mnist_cnn()
        .args([
            "train",
            "--resume",
            "--no-default-mirrors",
            "--batch-size",
            "64",
            "--data-dir",
        ])
        .arg(empty.path())
        .arg("--model")
        .arg(&stopped)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("batch size 32, not 64"), "{stderr}");
    assert!(!stderr.contains("downloading"), "{stderr}");

    // Resumed with no options repeated: the checkpoint's are used.
    let out = mnist_cnn()
        .args(["train", "--resume", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(&stopped)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("after epoch {done} of 3")),
        "{stdout}"
    );
    let device = mnist_cnn::backend::host_device();
    let weights = |p: &Path| {
        let cnn = ModelPaths::new(p).load_weights(&device).unwrap();
        let test = data::load(common::data_dir(), Split::Test).unwrap();
        let batch = Batch::new(&test.images, &(0..100).collect::<Vec<_>>(), &device);
        cnn.forward(&batch, None)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert!(
        weights(&straight) == weights(&stopped),
        "resumed run differs"
    );
    let a: Metadata = ModelPaths::new(&straight).load_metadata().unwrap();
    let b: Metadata = paths.load_metadata().unwrap();
    let losses = |m: &Metadata| m.history.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.test, b.test);

    // Nothing left to do is said, not done.
    let again = stdout_of(
        mnist_cnn()
            .args(["train", "--resume", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&stopped),
    );
    assert!(
        again.contains("has trained 3 of 3 epochs already"),
        "{again}"
    );
}

#[test]
fn temp_files_an_interrupted_save_left_are_removed_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let leftover = dir.path().join(".model.bpk.tmp-Xy12Ab");
    std::fs::write(&leftover, b"half a model").unwrap();
    stdout_of(
        mnist_cnn()
            .args(["train", "--epochs", "1", "--limit", "64", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&model),
    );
    assert!(!leftover.exists());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["model.bpk", "model.json", "model.svg"]);
}

/// The test accuracy a `train` run with `MNIST_CNN_SIMD=simd` prints.
fn test_accuracy_with_kernels(simd: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let out = stdout_of(
        mnist_cnn()
            .env("MNIST_CNN_SIMD", simd)
            .args(["train", "--epochs", "2", "--limit", "2000", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(dir.path().join("model")),
    );
    common::test_accuracy(&out)
}

/// This tool's portable kernels (what a CPU without AVX2 runs for the
/// hidden layer's backward pass, ARM laptops among them), forced on this
/// machine: training through them learns, and ends near where the widest
/// kernels do (their sums round differently, so the runs drift apart by a
/// little; 2 points is several times what that drift was measured at).
#[test]
fn training_on_the_portable_kernels_learns_as_on_the_widest() {
    let portable = test_accuracy_with_kernels("portable");
    let widest = test_accuracy_with_kernels("");
    assert!(
        portable > common::LEARNED,
        "portable kernels: test accuracy {portable}"
    );
    assert!(
        (portable - widest).abs() < 0.02,
        "portable {portable}, widest {widest}"
    );
}

#[test]
fn an_unknown_or_missing_instruction_set_is_refused_in_one_line() {
    let mut cmd = mnist_cnn();
    cmd.env("MNIST_CNN_SIMD", "sse9")
        .args(["eval", "--data-dir"])
        .arg(common::data_dir());
    common::fails_with(&mut cmd, "MNIST_CNN_SIMD=sse9 is not an instruction set");
    if !mnist_cnn::kernels::Isa::Avx2.available() {
        let mut cmd = mnist_cnn();
        cmd.env("MNIST_CNN_SIMD", "avx2").arg("eval");
        common::fails_with(&mut cmd, "this CPU or build has only portable");
    }
}
