//! The GPU backend (the `wgpu` feature) against the CPU one, on whatever
//! adapter the machine has through Vulkan: Mesa's software driver (lavapipe)
//! in CI, which runs the same compute shaders a GPU would, on the CPU.
//!
//! `cargo test --release --features wgpu --lib --test gpu` (see README, GPU).
#![cfg(feature = "wgpu")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use burn::tensor::Device;
use common::{LEARNED, fails_with, max_diff, mnist_cnn, stdout_of, subset, succeeds};
use mnist_cnn::backend::{self, Backend};
use mnist_cnn::data::Split;
use mnist_cnn::eval;
use mnist_cnn::idx::{CLASSES, PIXELS};
use mnist_cnn::model::{Batch, Cnn};
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::{Engine, TrainConfig, Trainer};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde_json::Value;

fn gpu() -> Device {
    Backend::Wgpu.open().unwrap()
}

fn cpu() -> Device {
    backend::host_device()
}

/// Class probabilities of `model` for the first `n` test images.
fn probabilities(model: &Cnn, n: usize, device: &Device) -> Vec<f32> {
    let test = subset(Split::Test, n);
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
    assert!(backend::largest_buffer(&device).unwrap() > 0);
    assert_eq!(backend::largest_buffer(&cpu()), None);
}

/// The stock layers on the GPU against the fused ops on the CPU: the same
/// weights, the same real images, with and without the dropout mask.
#[test]
fn the_forward_pass_on_the_gpu_equals_the_cpus() {
    let cpu_model = Cnn::new(&cpu(), &mut SmallRng::seed_from_u64(5));
    let gpu_model = cpu_model.copied_to(&gpu());
    let test = subset(Split::Test, 64);
    let indices: Vec<usize> = (0..64).collect();
    for dropout in [None, Some((mnist_cnn::arch::DROPOUT, 11))] {
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
/// same batch with the same dropout mask. The updates are compared, not the
/// weights: at learning rate 0.01 a wrong gradient would hide in the weights'
/// last digits.
#[test]
fn one_training_step_on_the_gpu_equals_the_host_step() {
    let test = subset(Split::Test, 32);
    let indices: Vec<usize> = (0..32).collect();
    let step = |engine: Engine, device: &Device| {
        let config = TrainConfig {
            engine,
            ..TrainConfig::DEFAULT
        };
        let start = Cnn::new(
            &device.clone().autodiff(),
            &mut SmallRng::seed_from_u64(config.seed),
        );
        let before = start.parameters();
        let mut trainer = Trainer::resume(start, &config, device);
        let (loss, _) = trainer.step(&test, &indices, 17);
        let after = trainer.model().parameters();
        let updates: Vec<Vec<f32>> = before
            .values()
            .iter()
            .zip(after.values())
            .map(|(b, a)| a.iter().zip(*b).map(|(a, b)| a - b).collect())
            .collect();
        (loss, updates)
    };
    let (cpu_loss, cpu_updates) = step(Engine::Host, &cpu());
    let (gpu_loss, gpu_updates) = step(Engine::Burn, &gpu());
    assert!(
        (cpu_loss - gpu_loss).abs() < 1e-4,
        "{cpu_loss} vs {gpu_loss}"
    );
    for (i, (a, b)) in cpu_updates.iter().zip(&gpu_updates).enumerate() {
        let largest = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(largest > 0.0, "parameter {i} did not move");
        let worst = max_diff(a, b);
        assert!(
            worst <= 1e-3 * largest,
            "parameter {i}: updates differ by {worst} (largest {largest})"
        );
    }
}

/// A model trained once through `mnist-cnn train` on `backend` with Burn's
/// engine, on the first 2,000 images for 2 epochs, and what it printed.
fn trained(backend: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let out = stdout_of(
        mnist_cnn()
            .args(["train", "--backend", backend, "--engine", "burn"])
            .args(["--limit", "2000", "--epochs", "2", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&model),
    );
    (dir, model, out)
}

fn trained_on_gpu() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| trained("wgpu"))
}

fn trained_on_cpu() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| trained(Backend::HOST.name()))
}

fn metadata(model: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(model.with_extension("json")).unwrap()).unwrap()
}

#[test]
fn training_on_the_gpu_learns() {
    let (_, model, out) = trained_on_gpu();
    assert!(out.contains("(backend: wgpu on "), "{out}");
    assert!(out.contains("; burn engine)"), "{out}");
    let accuracy = common::test_accuracy(out);
    assert!(accuracy > LEARNED, "test accuracy {accuracy}");
    let metadata = metadata(model);
    assert_eq!(metadata["backends"], serde_json::json!(["wgpu"]));
    assert_eq!(metadata["config"]["engine"], "burn");
    assert_eq!(metadata["history"].as_array().unwrap().len(), 2);
}

/// The same run on the CPU, with the same engine, ends where the GPU's did:
/// same initial weights, order and dropout; only rounding differs.
#[test]
fn training_on_the_cpu_with_the_same_engine_ends_alike() {
    let (cpu, gpu) = (
        common::test_accuracy(&trained_on_cpu().2),
        common::test_accuracy(&trained_on_gpu().2),
    );
    assert!(cpu > LEARNED, "CPU test accuracy {cpu}");
    assert!((cpu - gpu).abs() <= 0.003, "CPU {cpu} vs GPU {gpu}");
}

/// Saved on the GPU, loaded on the CPU, and the other way round: the same
/// predictions.
#[test]
fn a_model_saved_on_one_backend_predicts_the_same_on_the_other() {
    for (trained_on, (_, model, _)) in [("GPU", trained_on_gpu()), ("CPU", trained_on_cpu())] {
        let paths = ModelPaths::new(model);
        let on_gpu = probabilities(&paths.load_weights(&gpu()).unwrap(), 500, &gpu());
        let on_cpu = probabilities(&paths.load_weights(&cpu()).unwrap(), 500, &cpu());
        assert!(
            on_cpu.iter().any(|&p| p > 0.9),
            "a model sure of some digits"
        );
        let worst = max_diff(&on_gpu, &on_cpu);
        assert!(
            worst < 1e-4,
            "{trained_on}-trained model: differs by {worst}"
        );
    }
}

/// A GPU-trained model resumed on the CPU, and a CPU (host engine) model
/// resumed in this build without `--backend`: on the CPU, where its engine runs.
#[test]
fn a_model_resumes_on_the_backend_its_engine_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("gpu");
    let (_, model, _) = trained_on_gpu();
    for ext in ["bpk", "json"] {
        std::fs::copy(model.with_extension(ext), copy.with_extension(ext)).unwrap();
    }
    let resume = |model: &Path, args: &[&str]| {
        stdout_of(
            mnist_cnn()
                .args(["train", "--resume", "--epochs", "3"])
                .args(args)
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(model),
        )
    };
    let out = resume(&copy, &["--backend", Backend::HOST.name()]);
    assert!(
        out.contains("after epoch 2 of 3 (backend: flex; burn engine)"),
        "{out}"
    );
    let resumed = metadata(&copy);
    assert_eq!(resumed["backends"], serde_json::json!(["wgpu", "flex"]));
    assert_eq!(resumed["history"].as_array().unwrap().len(), 3);

    let host = dir.path().join("host");
    stdout_of(
        mnist_cnn()
            .args([
                "train", "--engine", "host", "--limit", "320", "--epochs", "1",
            ])
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(&host),
    );
    assert_eq!(metadata(&host)["backends"], serde_json::json!(["flex"]));
    let out = resume(&host, &[]);
    assert!(out.contains("(backend: flex; host engine)"), "{out}");
    fails_with(
        mnist_cnn()
            .args(["train", "--resume", "--epochs", "4", "--backend", "wgpu"])
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(&host),
        "resume it with --backend flex",
    );
}

fn run(args: &[&str], model: &Path) -> (String, String) {
    succeeds(
        mnist_cnn()
            .args(args)
            .arg("--data-dir")
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    )
}

/// `eval` and `misclassified` run unchanged on the GPU, name the adapter on
/// stderr, and agree with the CPU (to a near tie or two: the probabilities
/// agree to 1e-4, not to the bit).
#[test]
fn eval_and_misclassified_agree_across_backends() {
    let (_, model, _) = trained_on_gpu();
    let (gpu, stderr) = run(&["eval", "--json", "--backend", "wgpu"], model);
    assert!(stderr.contains("backend: wgpu on "), "{stderr}");
    // Where XDG_RUNTIME_DIR is missing (headless machines), Mesa's drivers
    // would print four false "error:" lines; the binary keeps them quiet.
    let (_, headless) = succeeds(
        mnist_cnn()
            .env_remove("XDG_RUNTIME_DIR")
            .args(["eval", "--backend", "wgpu", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
    );
    assert!(!headless.contains("error"), "{headless}");
    let (cpu, stderr) = run(&["eval", "--json", "--backend", "flex"], model);
    assert!(!stderr.contains("backend:"), "{stderr}");
    let (gpu, cpu): (Value, Value) = (
        serde_json::from_str(&gpu).unwrap(),
        serde_json::from_str(&cpu).unwrap(),
    );
    assert_eq!(gpu["count"], 10_000);
    let (ga, ca) = (
        gpu["accuracy"].as_f64().unwrap(),
        cpu["accuracy"].as_f64().unwrap(),
    );
    assert!((ga - ca).abs() <= 2e-4, "accuracy {ga} vs {ca}");
    let (gl, cl) = (gpu["loss"].as_f64().unwrap(), cpu["loss"].as_f64().unwrap());
    assert!((gl - cl).abs() < 1e-4, "loss {gl} vs {cl}");

    let mistakes = |backend: &str| -> Vec<u64> {
        let (out, _) = run(
            &["misclassified", "--all", "--json", "--backend", backend],
            model,
        );
        let json: Value = serde_json::from_str(&out).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|m| m["index"].as_u64().unwrap())
            .collect()
    };
    let (gpu, cpu) = (mistakes("wgpu"), mistakes("flex"));
    assert!(gpu.len() > 100, "{} mistakes", gpu.len());
    let only_one = gpu.iter().filter(|i| !cpu.contains(i)).count()
        + cpu.iter().filter(|i| !gpu.contains(i)).count();
    assert!(
        only_one <= 2,
        "{only_one} images misclassified on one backend only"
    );
}

/// `predict` reads a picture on the GPU as on the CPU.
#[test]
fn predict_runs_on_the_gpu() {
    let (_, model, _) = trained_on_gpu();
    let dir = tempfile::tempdir().unwrap();
    let test = subset(Split::Test, 1);
    let picture = dir.path().join("digit.png");
    mnist_cnn::picture::write_png(&picture, test.images.image(0), 4, true).unwrap();
    let picture = picture.to_str().unwrap();
    let answer = |backend: &str| -> Vec<f32> {
        let (out, _) = run(&["predict", "--json", "--backend", backend, picture], model);
        let json: Value = serde_json::from_str(&out).unwrap();
        json[0]["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap() as f32)
            .collect()
    };
    let (gpu, cpu) = (answer("wgpu"), answer("flex"));
    assert_eq!(gpu.len(), CLASSES);
    let worst = max_diff(&gpu, &cpu);
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
    // The CPU's figures mean nothing here.
    assert!(!out.contains("floor:"), "{out}");
    assert!(!out.contains("peak:"), "{out}");
    assert!(!out.contains("CPU utilisation"), "{out}");
    assert!(out.contains("eval:"), "{out}");
}

/// The host engine computes on the CPU: asked for on the GPU, it is
/// refused before any work; asked for alone, it runs on the CPU.
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
    let out = stdout_of(
        mnist_cnn()
            .args(["bench", "--engine", "host", "--steps", "2", "--warmup", "0"])
            .arg("--data-dir")
            .arg(common::data_dir()),
    );
    assert!(out.starts_with("backend: flex (host engine, "), "{out}");
}

/// A batch whose tensors exceed the GPU's largest buffer is refused before
/// any work, with the largest batch that fits (lavapipe's buffers take 128 MiB).
#[test]
fn a_batch_too_large_for_the_gpus_buffers_is_refused_up_front() {
    let (_, model, _) = trained_on_gpu();
    let out = mnist_cnn()
        .args([
            "eval",
            "--backend",
            "wgpu",
            "--batch-size",
            "10000",
            "--data-dir",
        ])
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("error: --batch-size 10000 needs a tensor of 865.3 MB on the GPU"),
        "{stderr}"
    );
    let largest: usize = stderr
        .split("(try --batch-size ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    // The largest batch said to fit does.
    run(
        &[
            "eval",
            "--backend",
            "wgpu",
            "--batch-size",
            &largest.to_string(),
        ],
        model,
    );
}

/// Without a GPU driver, `--backend wgpu` is a one-line error naming what
/// to install, not a panic, and before any work.
#[test]
fn no_gpu_driver_is_an_error_that_says_what_to_install() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("no-data");
    let (_, model, _) = trained_on_gpu();
    let without_driver = || {
        let mut cmd: Command = mnist_cnn();
        // Vulkan's loader then finds no driver, nor does EGL (OpenGL,
        // wgpu's last resort).
        cmd.env("VK_LOADER_DRIVERS_DISABLE", "*").env(
            "__EGL_VENDOR_LIBRARY_FILENAMES",
            dir.path().join("none.json"),
        );
        cmd
    };
    let stderr = fails_with(
        without_driver()
            .args(["train", "--backend", "wgpu", "--data-dir"])
            .arg(&empty),
        "the wgpu backend found no device to run on",
    );
    assert!(
        stderr.contains("apt-get install mesa-vulkan-drivers"),
        "{stderr}"
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
    assert!(!empty.join("train-images-idx3-ubyte").exists());
    fails_with(
        without_driver()
            .args(["eval", "--backend", "wgpu", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(model),
        "the wgpu backend found no device to run on",
    );
}
