//! The GPU backend (the `wgpu` feature) against the CPU one, on whatever
//! adapter the machine has: Mesa's software Vulkan driver (lavapipe) in CI,
//! which runs the same compute shaders a GPU would, on the CPU.
//!
//! `cargo test --release --features wgpu --test gpu` (see README).
#![cfg(feature = "wgpu")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use common::{fails_with, mnist_cnn, stdout_of};
use mnist_cnn::backend::{self, Backend};
use mnist_cnn::data::{self, Part, Split};
use mnist_cnn::eval;
use mnist_cnn::idx::{CLASSES, PIXELS};
use mnist_cnn::model::{Batch, Cnn};
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::{Engine, TrainConfig, Trainer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::Value;

/// The bar the CPU's learning test sets (tests/training.rs), for the same
/// kind of run: 2 epochs on a few thousand images reach about 87%.
const LEARNED: f64 = 0.83;

fn gpu() -> Device {
    Backend::Wgpu.open().unwrap()
}

fn cpu() -> Device {
    Backend::HOST.device()
}

fn test_split(n: usize) -> Split {
    let mut split = data::load(common::data_dir(), Part::Test).unwrap();
    split.truncate(n);
    split
}

/// The largest absolute difference between two equally long results.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Class probabilities of `model` for the first `n` test images.
fn probabilities(model: &Cnn, n: usize, device: &Device) -> Vec<f32> {
    let test = test_split(n);
    let images: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            let mut pixels = Vec::with_capacity(PIXELS);
            test.images.scaled_into(&[i], &mut pixels);
            pixels
        })
        .collect();
    eval::classify(model, &images, device)
        .into_iter()
        .flatten()
        .collect()
}

#[test]
fn the_device_is_the_gpu_backend_and_names_its_adapter() {
    let device = gpu();
    assert_eq!(Backend::of(&device), Backend::Wgpu);
    assert!(!Backend::Wgpu.on_host());
    assert_eq!(Backend::of(&device.clone().autodiff()), Backend::Wgpu);
    let described = backend::describe(&device);
    assert!(described.starts_with("wgpu on "), "{described}");
    // These tests are meant for Vulkan (lavapipe in CI; README, GPU), not
    // for OpenGL, which wgpu falls back to where Vulkan has no driver.
    #[cfg(target_os = "linux")]
    assert!(described.ends_with(" through Vulkan"), "{described}");
}

/// The stock layers on the GPU against the fused ops on the CPU: the same
/// weights, the same real images, with and without the dropout mask.
#[test]
fn the_forward_pass_on_the_gpu_equals_the_cpus() {
    let cpu_model = Cnn::new(&cpu(), &mut SmallRng::seed_from_u64(5));
    let gpu_model = Cnn::from_parameters(cpu_model.parameters(), &gpu());
    let test = test_split(64);
    let indices: Vec<usize> = (0..64).collect();
    for dropout in [None, Some(11)] {
        let on = |model: &Cnn, device: &Device| {
            let batch = Batch::new(&test.images, &indices, device);
            let logits = model.forward(&batch, dropout).into_data();
            logits.convert::<f32>().try_into_vec::<f32>().unwrap()
        };
        let (a, b) = (on(&cpu_model, &cpu()), on(&gpu_model, &gpu()));
        assert_eq!(a.len(), 64 * CLASSES);
        assert!(a.iter().any(|v| v.abs() > 0.1), "degenerate logits");
        let worst = max_diff(&a, &b);
        assert!(worst < 1e-4, "dropout {dropout:?}: differs by {worst}");
    }
}

/// One SGD step of Burn's engine on the GPU (stock layers, autodiff, Burn's
/// SGD) against the host engine on the CPU, from the same weights on the
/// same batch with the same dropout mask.
#[test]
fn one_training_step_on_the_gpu_equals_the_host_step() {
    let test = test_split(32);
    let indices: Vec<usize> = (0..32).collect();
    let after_one_step = |engine: Engine, device: &Device| {
        let config = TrainConfig {
            engine,
            ..TrainConfig::DEFAULT
        };
        let start = Cnn::new(
            &device.clone().autodiff(),
            &mut SmallRng::seed_from_u64(config.seed),
        );
        let mut trainer = Trainer::resume(start, &config, device);
        let (loss, _) = trainer.step(&test, &indices, 17);
        (loss, trainer.model().parameters())
    };
    let (cpu_loss, cpu_params) = after_one_step(Engine::Host, &cpu());
    let (gpu_loss, gpu_params) = after_one_step(Engine::Burn, &gpu());
    assert!(
        (cpu_loss - gpu_loss).abs() < 1e-4,
        "{cpu_loss} vs {gpu_loss}"
    );
    for (i, ((_, a), (_, b))) in cpu_params.iter().zip(&gpu_params).enumerate() {
        let worst = max_diff(a, b);
        assert!(worst < 1e-4, "parameter {i} differs by {worst}");
    }
}

/// A model trained once on the GPU through `mnist-cnn train`, and its output.
fn trained_on_gpu() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        let out = stdout_of(
            mnist_cnn()
                .args([
                    "train",
                    "--backend",
                    "wgpu",
                    "--limit",
                    "2000",
                    "--epochs",
                    "2",
                ])
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(&model),
        );
        (dir, model, out)
    })
}

/// The test accuracy a `train` run printed.
fn test_accuracy(train_output: &str) -> f64 {
    let line = train_output
        .lines()
        .find(|l| l.starts_with("Test loss:"))
        .unwrap_or_else(|| panic!("no test line in {train_output}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn training_on_the_gpu_learns() {
    let (_, model, out) = trained_on_gpu();
    assert!(out.contains("(backend: wgpu on "), "{out}");
    assert!(out.contains("; burn engine)"), "{out}");
    let accuracy = test_accuracy(out);
    assert!(accuracy > LEARNED, "test accuracy {accuracy}");
    let metadata: Value =
        serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(metadata["backend"], "wgpu");
    assert_eq!(metadata["config"]["engine"], "burn");
    assert_eq!(metadata["history"].as_array().unwrap().len(), 2);
}

/// The same run on the CPU, with the same engine, ends where the GPU's did:
/// same initial weights, order and dropout; only rounding differs.
#[test]
fn training_on_the_cpu_with_the_same_engine_ends_alike() {
    let (_, _, gpu_out) = trained_on_gpu();
    let dir = tempfile::tempdir().unwrap();
    let cpu_out = stdout_of(
        mnist_cnn()
            .args([
                "train",
                "--backend",
                Backend::HOST.name(),
                "--engine",
                "burn",
            ])
            .args(["--limit", "2000", "--epochs", "2", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(dir.path().join("model")),
    );
    let (cpu, gpu) = (test_accuracy(&cpu_out), test_accuracy(gpu_out));
    assert!(cpu > LEARNED, "CPU test accuracy {cpu}");
    assert!((cpu - gpu).abs() <= 0.003, "CPU {cpu} vs GPU {gpu}");
}

/// Saved on the GPU, loaded on the CPU, and back: the same predictions.
#[test]
fn a_model_saved_on_one_backend_predicts_the_same_on_the_other() {
    let (_, model, _) = trained_on_gpu();
    let paths = ModelPaths::new(model);
    let on_gpu = probabilities(&paths.load_weights(&gpu()).unwrap(), 500, &gpu());
    let on_cpu = probabilities(&paths.load_weights(&cpu()).unwrap(), 500, &cpu());
    let worst = max_diff(&on_gpu, &on_cpu);
    assert!(worst < 1e-4, "GPU-trained model: differs by {worst}");

    let dir = tempfile::tempdir().unwrap();
    let cpu_paths = ModelPaths::new(&dir.path().join("cpu"));
    let cpu_model = Cnn::new(&cpu(), &mut SmallRng::seed_from_u64(3));
    cpu_paths.save_weights(&cpu_model).unwrap();
    let a = probabilities(&cpu_paths.load_weights(&cpu()).unwrap(), 500, &cpu());
    let b = probabilities(&cpu_paths.load_weights(&gpu()).unwrap(), 500, &gpu());
    let worst = max_diff(&a, &b);
    assert!(worst < 1e-4, "CPU-saved model: differs by {worst}");
}

fn json_of(args: &[&str], model: &Path) -> Value {
    let out = stdout_of(
        mnist_cnn()
            .args(args)
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    serde_json::from_str(&out).unwrap()
}

/// `eval` and `misclassified` run unchanged on the GPU and agree with the CPU.
#[test]
fn eval_and_misclassified_agree_across_backends() {
    let (_, model, _) = trained_on_gpu();
    let gpu = json_of(&["eval", "--json", "--backend", "wgpu"], model);
    let cpu = json_of(
        &["eval", "--json", "--backend", Backend::HOST.name()],
        model,
    );
    assert_eq!(gpu["count"], 10_000);
    assert_eq!(gpu["accuracy"], cpu["accuracy"]);
    assert_eq!(gpu["confusion_matrix"], cpu["confusion_matrix"]);
    let (gl, cl) = (gpu["loss"].as_f64().unwrap(), cpu["loss"].as_f64().unwrap());
    assert!((gl - cl).abs() < 1e-4, "loss {gl} vs {cl}");

    let args = ["misclassified", "--all", "--json"];
    let gpu = json_of(&[&args[..], &["--backend", "wgpu"]].concat(), model);
    let cpu = json_of(
        &[&args[..], &["--backend", Backend::HOST.name()]].concat(),
        model,
    );
    let indices = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_u64().unwrap())
            .collect()
    };
    assert!(!indices(&gpu).is_empty());
    assert_eq!(indices(&gpu), indices(&cpu));
}

/// `predict` reads a picture on the GPU as on the CPU.
#[test]
fn predict_runs_on_the_gpu() {
    let (_, model, _) = trained_on_gpu();
    let dir = tempfile::tempdir().unwrap();
    let test = test_split(1);
    let picture = dir.path().join("digit.png");
    mnist_cnn::picture::write_png(&picture, test.images.image(0), 4).unwrap();
    let mut answers = Vec::new();
    for backend in ["wgpu", Backend::HOST.name()] {
        let json = json_of(
            &[
                "predict",
                "--json",
                "--backend",
                backend,
                picture.to_str().unwrap(),
            ],
            model,
        );
        answers.push(json[0]["probabilities"].clone());
    }
    let as_f32 = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect()
    };
    let worst = max_diff(&as_f32(&answers[0]), &as_f32(&answers[1]));
    assert!(worst < 1e-4, "differs by {worst}");
}

#[test]
fn bench_runs_on_the_gpu_and_names_the_adapter() {
    let out = stdout_of(
        mnist_cnn()
            .args([
                "bench",
                "--backend",
                "wgpu",
                "--steps",
                "3",
                "--warmup",
                "1",
            ])
            .arg("--data-dir")
            .arg(common::data_dir()),
    );
    assert!(out.starts_with("backend: wgpu on "), "{out}");
    assert!(out.contains("(burn engine)"), "{out}");
    assert!(
        !out.contains("floor:"),
        "the CPU floor means nothing here: {out}"
    );
    assert!(out.contains("eval:"), "{out}");
}

/// The host engine computes on the CPU: asked for on the GPU, it is
/// refused before any work.
#[test]
fn the_host_engine_is_refused_on_the_gpu() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["train", "bench"] {
        fails_with(
            mnist_cnn()
                .args([
                    command,
                    "--backend",
                    "wgpu",
                    "--engine",
                    "host",
                    "--data-dir",
                ])
                .arg(dir.path()),
            "the host engine computes on the CPU and cannot train on the wgpu backend",
        );
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(
            left.is_empty(),
            "{command} did work before refusing: {left:?}"
        );
    }
}

/// Without a GPU driver, `--backend wgpu` is a one-line error naming what
/// to install, not a panic, and before any work.
#[test]
fn no_gpu_driver_is_an_error_that_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-data");
    let stderr = fails_with(
        mnist_cnn()
            // Vulkan's loader then finds no driver, nor does EGL (OpenGL,
            // wgpu's last resort).
            .env("VK_LOADER_DRIVERS_DISABLE", "*")
            .env(
                "__EGL_VENDOR_LIBRARY_FILENAMES",
                dir.path().join("none.json"),
            )
            .args(["train", "--backend", "wgpu", "--data-dir"])
            .arg(&empty),
        "the wgpu backend found no device to run on",
    );
    assert!(
        stderr.contains("apt-get install mesa-vulkan-drivers"),
        "{stderr}"
    );
    assert!(!empty.exists(), "work was done before the error");
}
