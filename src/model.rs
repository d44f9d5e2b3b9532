//! The tutorial's network, as a Burn module:
//! Conv2d 1→32 3×3 valid, ReLU → MaxPool 2×2 stride 1 → Dropout 0.25 →
//! Flatten → Dense 128 ReLU → Dense 10 softmax.
//!
//! The forward pass is written for speed on a CPU without changing what it
//! computes. The first block (convolution, bias, ReLU, max-pool, dropout) is
//! one fused op with its own backward ([`crate::block`]), in channels-last
//! layout (Keras's own, so the flatten order matches Keras too), and so is the
//! hidden dense layer with its ReLU ([`crate::dense`]). The output layer is
//! Burn's `Linear`. [`Cnn::forward_reference`] computes the same function with
//! Burn's stock ops, and the tests hold the two together.

use std::fs;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::store::ModuleRecord;
use burn::tensor::activation::{relu, softmax};
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use rand::Rng;
use rand::rngs::SmallRng;
use thiserror::Error;

use crate::idx::{CLASSES, Images, SIDE};
use crate::{block, dense};

/// Convolution filters.
pub const FILTERS: usize = 32;
/// Side of the convolution kernel.
pub const KERNEL: usize = 3;
/// Side of the convolution output (valid padding).
pub const CONV_SIDE: usize = SIDE - KERNEL + 1;
/// Side of the max-pool output (2×2, stride 1).
pub const POOL_SIDE: usize = CONV_SIDE - 1;
/// Features entering the dense layers: 25 × 25 × 32.
pub const FEATURES: usize = POOL_SIDE * POOL_SIDE * FILTERS;
/// Units of the hidden dense layer.
pub const HIDDEN: usize = 128;
/// Fraction of features dropped while training.
pub const DROPOUT: f64 = 0.25;
/// Parameters of the convolution: 3×3 weights and a bias per filter.
pub const CONV_PARAMS: usize = KERNEL * KERNEL * FILTERS + FILTERS;
/// Parameters of the hidden dense layer.
pub const HIDDEN_PARAMS: usize = FEATURES * HIDDEN + HIDDEN;
/// Parameters of the output layer.
pub const OUTPUT_PARAMS: usize = HIDDEN * CLASSES + CLASSES;
/// All parameters: 2,561,738.
pub const PARAMETERS: usize = CONV_PARAMS + HIDDEN_PARAMS + OUTPUT_PARAMS;
/// A short name of the architecture, stored with every model.
pub const ARCHITECTURE: &str = "conv2d(32,3x3,valid,relu)-maxpool(2x2,s1)-dropout(0.25)-flatten-dense(128,relu)-dense(10,softmax)";

/// Why a model file could not be used.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("model file {} not found: train one with `mnist-cnn train --model {}`", path.display(), stem.display())]
    Missing { path: PathBuf, stem: PathBuf },
    #[error("cannot read model file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {} is corrupt or not a model file ({reason}); retrain with `mnist-cnn train`", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("model file {} holds another architecture ({reason}); retrain with `mnist-cnn train`", path.display())]
    Architecture { path: PathBuf, reason: String },
    #[error("cannot save model to {}: {reason}", path.display())]
    Save { path: PathBuf, reason: String },
}

/// The network.
#[derive(Module, Debug)]
pub struct Cnn {
    conv: Conv2d,
    hidden: Linear,
    output: Linear,
}

/// A batch of images ready for the network: `[n, 28, 28]` scaled to [0, 1],
/// converted from the u8 pixels one batch at a time, so no f32 copy of the
/// whole data set ever exists.
pub struct Batch {
    pub images: Tensor<3>,
}

impl Batch {
    pub fn new(images: &Images, indices: &[usize], device: &Device) -> Self {
        let pixels: Vec<f32> = indices
            .iter()
            .flat_map(|&i| images.image(i).iter().map(|&p| p as f32 / 255.0))
            .collect();
        Self {
            images: Tensor::from_data(TensorData::new(pixels, [indices.len(), SIDE, SIDE]), device),
        }
    }

    /// The same images as `[n, 1, 28, 28]`, the layout of Burn's `conv2d`.
    pub fn channels_first(&self) -> Tensor<4> {
        self.images.clone().unsqueeze_dim(1)
    }
}

impl Cnn {
    /// A new network with Keras's initialisation (Glorot-uniform weights,
    /// zero biases), drawn from `rng` so that a seed fixes it on any backend.
    pub fn new(device: &Device, rng: &mut SmallRng) -> Self {
        let mut conv = Conv2dConfig::new([1, FILTERS], [KERNEL, KERNEL])
            .with_initializer(Initializer::Zeros)
            .init(device);
        let k = KERNEL * KERNEL;
        conv.weight = glorot(rng, [FILTERS, 1, KERNEL, KERNEL], k, k * FILTERS, device);
        let dense = |d_in: usize, d_out: usize, rng: &mut SmallRng| {
            let mut layer = LinearConfig::new(d_in, d_out)
                .with_initializer(Initializer::Zeros)
                .init(device);
            layer.weight = glorot(rng, [d_in, d_out], d_in, d_out, device);
            layer
        };
        let hidden = dense(FEATURES, HIDDEN, rng);
        let output = dense(HIDDEN, CLASSES, rng);
        Self {
            conv,
            hidden,
            output,
        }
    }

    /// Logits `[n, 10]`. `dropout_seed` is given while training (it fixes
    /// the dropout mask, see [`block::dropout_keep`]) and `None` for inference.
    pub fn forward(&self, batch: &Batch, dropout_seed: Option<u64>) -> Tensor<2> {
        let n = batch.images.dims()[0];
        let features = block::conv_block(
            batch.images.clone(),
            self.conv.weight.val(),
            self.conv_bias(),
            dropout_seed.map(|seed| (DROPOUT, seed)),
        );
        let hidden = dense::dense_relu(
            features.reshape([n, FEATURES]),
            self.hidden.weight.val(),
            self.hidden_bias(),
        );
        self.output.forward(hidden)
    }

    /// The same function computed with Burn's stock `conv2d`, `max_pool2d`,
    /// `relu`, `Linear` and a multiply by the dropout mask `[n, 20000]` that
    /// [`dropout_mask`] gives for the same seed (channels-first, then permuted
    /// to Keras's flatten order). Slow; the yardstick the fused op is tested
    /// against.
    pub fn forward_reference(
        &self,
        images: Tensor<4>,
        dropout_mask: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let n = images.dims()[0];
        let conv = relu(self.conv.forward(images));
        let pool = MaxPoolOptions::new([2, 2]).with_stride([1, 1]);
        let pooled = burn::tensor::module::max_pool2d(conv, pool);
        let features = pooled.permute([0, 2, 3, 1]).reshape([n, FEATURES]);
        let features = match dropout_mask {
            Some(mask) => features * mask,
            None => features,
        };
        let hidden = relu(self.hidden.forward(features));
        self.output.forward(hidden)
    }

    fn hidden_bias(&self) -> Tensor<1> {
        self.hidden
            .bias
            .as_ref()
            .expect("the hidden layer is built with a bias")
            .val()
    }

    fn conv_bias(&self) -> Tensor<1> {
        self.conv
            .bias
            .as_ref()
            .expect("the convolution is built with a bias")
            .val()
    }

    /// Class probabilities `[n, 10]` for inference.
    pub fn probabilities(&self, batch: &Batch) -> Tensor<2> {
        softmax(self.forward(batch, None), 1)
    }

    /// The table Keras's `model.summary()` prints: layer, output shape, parameters.
    pub fn summary_text() -> String {
        let rows = [
            ("conv2d (Conv2D)", "(None, 26, 26, 32)", CONV_PARAMS),
            ("max_pooling2d (MaxPooling2D)", "(None, 25, 25, 32)", 0),
            ("dropout (Dropout)", "(None, 25, 25, 32)", 0),
            ("flatten (Flatten)", "(None, 20000)", 0),
            ("dense (Dense)", "(None, 128)", HIDDEN_PARAMS),
            ("dense_1 (Dense)", "(None, 10)", OUTPUT_PARAMS),
        ];
        let line = "_".repeat(65);
        let rule = "=".repeat(65);
        let mut out = format!(
            "Model: \"sequential\"\n{line}\n {:<28} {:<25} Param #\n{rule}\n",
            "Layer (type)", "Output Shape"
        );
        for (layer, shape, params) in rows {
            out.push_str(&format!(
                " {layer:<28} {shape:<25} {}\n",
                group_digits(params)
            ));
        }
        let total = group_digits(PARAMETERS);
        out.push_str(&format!(
            "{rule}\nTotal params: {total}\nTrainable params: {total}\nNon-trainable params: 0\n{line}"
        ));
        out
    }

    /// Saves the weights to `path` atomically (temp file + rename).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let err = |reason: String| ModelError::Save {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = self
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| err(e.to_string()))?;
        crate::download::write_atomically(path, &bytes).map_err(|e| err(e.to_string()))
    }

    /// Loads weights saved by [`Cnn::save`], with errors that say what to do.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let bytes = fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ModelError::Missing {
                    path: path.to_path_buf(),
                    stem: path.with_extension(""),
                }
            } else {
                ModelError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            ModelError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let mut rng = rand::SeedableRng::seed_from_u64(0);
        Cnn::new(device, &mut rng)
            .try_load_record(record)
            .map_err(|e| ModelError::Architecture {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }
}

/// Glorot-uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), as Keras.
fn glorot<const D: usize>(
    rng: &mut SmallRng,
    shape: [usize; D],
    fan_in: usize,
    fan_out: usize,
    device: &Device,
) -> Param<Tensor<D>> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let len = shape.iter().product();
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-limit..limit)).collect();
    Param::from_data(TensorData::new(values, shape), device)
}

/// The dropout multipliers the training forward pass uses for `seed`, as an
/// `[n, 20000]` tensor in flatten order: for [`Cnn::forward_reference`].
pub fn dropout_mask(seed: u64, n: usize, device: &Device) -> Tensor<2> {
    let mut mask = vec![0.0f32; n * FEATURES];
    for (image, values) in mask.chunks_mut(FEATURES).enumerate() {
        block::dropout_keep(DROPOUT, seed, image, values);
    }
    Tensor::from_data(TensorData::new(mask, [n, FEATURES]), device)
}

fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
