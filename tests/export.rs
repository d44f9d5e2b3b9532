//! `mnist-cnn export`: the safetensors file read back with the `safetensors`
//! crate, and the forward pass computed from it in plain Rust in Keras's
//! channels-last layout, against the model's own probabilities.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::mnist_cnn;
use mnist_cnn::data::{self, Split};
use mnist_cnn::model::Batch;
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::Metadata;
use safetensors::{Dtype, SafeTensors};

/// A model trained once for the tests here.
fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "640"]))
}

/// Runs `export`; returns whether it succeeded, and its stderr.
fn export(model: &Path, out: &Path) -> (bool, String) {
    let output = mnist_cnn()
        .args(["export", "--data-dir"])
        .arg(common::data_dir())
        .arg("--model")
        .arg(model)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

/// A tensor's shape and f32 values.
fn tensor(file: &SafeTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), Dtype::F32, "{name}");
    let values = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    (view.shape().to_vec(), values)
}

/// The tutorial's forward pass written out over Keras's arrays: conv with
/// a (3, 3, 1, 32) kernel on a (28, 28) image, channels last; ReLU; 2×2
/// stride-1 max-pool to (25, 25, 32); flatten in that order; dense 128 ReLU;
/// dense 10; softmax.
fn keras_forward(file: &SafeTensors, image: &[u8]) -> Vec<f32> {
    let (_, kernel) = tensor(file, "conv2d/kernel");
    let (_, conv_bias) = tensor(file, "conv2d/bias");
    let (_, dense) = tensor(file, "dense/kernel");
    let (_, dense_bias) = tensor(file, "dense/bias");
    let (_, out) = tensor(file, "dense_1/kernel");
    let (_, out_bias) = tensor(file, "dense_1/bias");
    let pixel = |y: usize, x: usize| image[y * 28 + x] as f32 / 255.0;
    let mut conv = vec![0.0f32; 26 * 26 * 32];
    for y in 0..26 {
        for x in 0..26 {
            for f in 0..32 {
                let mut sum = conv_bias[f];
                for ky in 0..3 {
                    for kx in 0..3 {
                        // kernel[ky][kx][0][f]: one input channel.
                        sum += pixel(y + ky, x + kx) * kernel[(ky * 3 + kx) * 32 + f];
                    }
                }
                conv[(y * 26 + x) * 32 + f] = sum.max(0.0);
            }
        }
    }
    let mut flat = Vec::with_capacity(20_000);
    for y in 0..25 {
        for x in 0..25 {
            for f in 0..32 {
                let at = |yy: usize, xx: usize| conv[(yy * 26 + xx) * 32 + f];
                flat.push(
                    at(y, x)
                        .max(at(y, x + 1))
                        .max(at(y + 1, x))
                        .max(at(y + 1, x + 1)),
                );
            }
        }
    }
    let hidden: Vec<f32> = (0..128)
        .map(|j| {
            let sum: f32 = (0..20_000).map(|i| flat[i] * dense[i * 128 + j]).sum();
            (sum + dense_bias[j]).max(0.0)
        })
        .collect();
    let logits: Vec<f32> = (0..10)
        .map(|k| (0..128).map(|j| hidden[j] * out[j * 10 + k]).sum::<f32>() + out_bias[k])
        .collect();
    let max = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
    let exp: Vec<f32> = logits.iter().map(|&l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    exp.iter().map(|e| e / total).collect()
}

#[test]
fn the_exported_file_computes_the_models_probabilities_in_keras_layout() {
    let (dir, model, _) = trained_model();
    let out = dir.path().join("model.safetensors");
    let (ok, stderr) = export(model, &out);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&out).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();

    let shapes: Vec<(String, Vec<usize>)> = mnist_cnn::export::KERAS_NAMES
        .iter()
        .map(|n| (n.to_string(), tensor(&file, n).0))
        .collect();
    assert_eq!(
        shapes,
        [
            ("conv2d/kernel".to_string(), vec![3, 3, 1, 32]),
            ("conv2d/bias".into(), vec![32]),
            ("dense/kernel".into(), vec![20_000, 128]),
            ("dense/bias".into(), vec![128]),
            ("dense_1/kernel".into(), vec![128, 10]),
            ("dense_1/bias".into(), vec![10]),
        ]
    );
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let header = header.metadata().clone().unwrap();
    let meta: Metadata = ModelPaths::new(model).load_metadata().unwrap();
    assert_eq!(header["architecture"], mnist_cnn::arch::architecture());
    assert_eq!(header["epochs"], "1");
    assert_eq!(header["train_data_sha256"], meta.train_data_sha256);
    assert_eq!(
        (
            &header["optimizer"][..],
            &header["learning_rate"][..],
            &header["dropout"][..]
        ),
        ("sgd", "0.01", "0.25")
    );
    assert_eq!(
        header["test_accuracy"],
        meta.test.unwrap().accuracy.to_string()
    );

    let device = mnist_cnn::backend::host_device();
    let cnn = ModelPaths::new(model).load_weights(&device).unwrap();
    let test = data::load(common::data_dir(), Split::Test).unwrap();
    let indices: Vec<usize> = (0..20).map(|i| i * 487).collect();
    let probs = cnn
        .probabilities(&Batch::new(&test.images, &indices, &device))
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let mut worst = 0.0f32;
    for (row, &i) in probs.chunks(10).zip(&indices) {
        let keras = keras_forward(&file, test.images.image(i));
        for (a, b) in row.iter().zip(&keras) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst < 1e-5,
        "the Keras-layout forward pass differs by {worst}"
    );
}

#[test]
fn an_existing_output_is_replaced_whole() {
    let (dir, model, _) = trained_model();
    let out_dir = dir.path().join("replace");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.safetensors");
    std::fs::write(&out, b"an older export").unwrap();
    let (ok, stderr) = export(model, &out);
    assert!(ok, "{stderr}");
    SafeTensors::deserialize(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        1,
        "no temp files"
    );
}

#[test]
fn bad_models_and_outputs_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let check = |model: &Path, out: &Path, needle: &str| {
        let (ok, stderr) = export(model, out);
        assert!(!ok, "should fail: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    };
    check(&dir.path().join("none"), &out, "not found: train one with");
    std::fs::write(dir.path().join("bad.bpk"), b"not a model").unwrap();
    check(
        &dir.path().join("bad"),
        &out,
        "is corrupt or not a model file",
    );
    assert!(!out.exists());
    let (_, model, _) = trained_model();
    check(model, dir.path(), "is a folder, not a file");
}
