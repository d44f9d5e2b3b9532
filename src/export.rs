//! `mnist-cnn export`: the trained weights as a safetensors file in the
//! tutorial's Keras layout, so that `model.set_weights([...])` on the
//! tutorial's model takes them as they are.
//!
//! Keras stores a convolution kernel as `(height, width, in, out)` where Burn
//! has `(out, in, height, width)`; that one is transposed. The dense layers
//! are `(in, out)` in both. The hidden layer's input order needs no change
//! either: the fused first block already produces Keras's channels-last
//! `(25, 25, 32)` feature map, so its flatten order is Keras's.

use std::collections::HashMap;
use std::path::Path;

use safetensors::{Dtype, tensor::TensorView};
use thiserror::Error;

use crate::arch::{FILTERS, KERNEL, architecture};
use crate::files::{FileError, write_atomically};
use crate::model::Cnn;
use crate::train::Metadata;

/// Names of the six tensors, in the order `model.get_weights()` lists them.
pub const KERAS_NAMES: [&str; 6] = [
    "conv2d/kernel",
    "conv2d/bias",
    "dense/kernel",
    "dense/bias",
    "dense_1/kernel",
    "dense_1/bias",
];

/// Why an export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot encode safetensors: {0}")]
    Encode(#[from] safetensors::SafeTensorError),
    #[error(transparent)]
    File(#[from] FileError),
}

/// One tensor in Keras's layout: its name, shape and values (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct KerasTensor {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// The model's parameters under Keras's names and layouts.
pub fn keras_tensors(model: &Cnn) -> Vec<KerasTensor> {
    let parameters = model.parameters();
    parameters
        .shaped()
        .into_iter()
        .zip(KERAS_NAMES)
        .map(|((shape, values), name)| match shape[..] {
            // Burn (out, in, h, w) → Keras (h, w, in, out); one input channel.
            [out, 1, kh, kw] => {
                debug_assert_eq!([out, kh, kw], [FILTERS, KERNEL, KERNEL]);
                let mut keras = vec![0.0; values.len()];
                for f in 0..out {
                    for t in 0..kh * kw {
                        keras[t * out + f] = values[f * kh * kw + t];
                    }
                }
                KerasTensor {
                    name,
                    shape: vec![kh, kw, 1, out],
                    values: keras,
                }
            }
            _ => KerasTensor {
                name,
                shape,
                values: values.to_vec(),
            },
        })
        .collect()
}

/// The safetensors file's header metadata: what the model is and, when its
/// training record is at hand, how it was made.
pub fn header(metadata: Option<&Metadata>) -> HashMap<String, String> {
    let mut header = HashMap::from([
        ("architecture".to_string(), architecture()),
        ("layout".to_string(), "keras".to_string()),
    ]);
    if let Some(m) = metadata {
        header.insert("epochs".into(), m.epochs_done().to_string());
        header.insert("train_data_sha256".into(), m.train_data_sha256.clone());
        // The training settings beside the architecture (whose dropout is
        // the tutorial's, the network's identity; the rate trained with is here).
        header.insert("optimizer".into(), m.config.optimizer.describe());
        header.insert("learning_rate".into(), m.config.learning_rate.to_string());
        header.insert("dropout".into(), m.config.dropout.to_string());
        if let Some(test) = m.test {
            header.insert("test_accuracy".into(), test.accuracy.to_string());
            header.insert("test_loss".into(), test.loss.to_string());
        }
    }
    header
}

/// Writes the model to `out` as safetensors (atomically).
pub fn export(model: &Cnn, metadata: Option<&Metadata>, out: &Path) -> Result<(), ExportError> {
    let tensors = keras_tensors(model);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| Ok((t.name, TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let file = safetensors::serialize(views, Some(header(metadata)))?;
    write_atomically(out, &file)?;
    Ok(())
}
