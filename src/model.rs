//! The tutorial's network, as a Burn module:
//! Conv2d 1→32 3×3 valid, ReLU → MaxPool 2×2 stride 1 → Dropout 0.25 →
//! Flatten → Dense 128 ReLU → Dense 10 softmax (shapes in [`crate::arch`]).
//!
//! The forward pass is written for speed on a CPU without changing what it
//! computes. The first block (convolution, bias, ReLU, max-pool, dropout) is
//! one fused op with its own backward (`crate::block`), in channels-last
//! layout (Keras's own, so the flatten order matches Keras too), and so is the
//! hidden dense layer with its ReLU (`crate::dense`). The output layer is
//! Burn's `Linear`. The tests hold the whole pass to the same function built
//! from Burn's stock layers.

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::activation::{log_softmax, relu, softmax};
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use rand::Rng;
use rand::rngs::SmallRng;

use crate::arch::{CONV_SIDE, FEATURES, FILTERS, HIDDEN, KERNEL, POOL, TAPS};
use crate::backend::Backend;
use crate::idx::{CLASSES, Images, SIDE};
use crate::{block, dense};

/// Bytes per image of the largest tensor the stock pass makes (on a GPU):
/// the convolution's output, 32 × 26 × 26 f32 values. A batch must fit in
/// one of the device's buffers.
pub const STOCK_TENSOR_BYTES_PER_IMAGE: usize = FILTERS * CONV_SIDE * CONV_SIDE * 4;

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
        let mut pixels = Vec::with_capacity(indices.len() * SIDE * SIDE);
        images.scaled_into(indices, &mut pixels);
        Self::from_pixels(pixels, indices.len(), device)
    }

    /// `n` images of 784 values already in [0, 1] (pictures prepared
    /// outside MNIST keep their full precision).
    pub fn from_pixels(pixels: Vec<f32>, n: usize, device: &Device) -> Self {
        Self {
            images: Tensor::from_data(TensorData::new(pixels, [n, SIDE, SIDE]), device),
        }
    }
}

impl Cnn {
    /// A new network with Keras's initialisation (Glorot-uniform weights,
    /// zero biases), drawn from `rng` so that a seed fixes it on any backend.
    pub fn new(device: &Device, rng: &mut SmallRng) -> Self {
        let mut model = Self::skeleton(device);
        model.conv.weight = glorot(
            rng,
            [FILTERS, 1, KERNEL, KERNEL],
            TAPS,
            TAPS * FILTERS,
            device,
        );
        model.hidden.weight = glorot(rng, [FEATURES, HIDDEN], FEATURES, HIDDEN, device);
        model.output.weight = glorot(rng, [HIDDEN, CLASSES], HIDDEN, CLASSES, device);
        model.numbered()
    }

    /// The network's structure with zero parameters, to load saved weights
    /// into. Burn initialises parameters lazily, so the zeros are never
    /// materialised for a parameter that a record replaces.
    pub fn skeleton(device: &Device) -> Self {
        let linear = |d_in, d_out| {
            LinearConfig::new(d_in, d_out)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        Self {
            conv: Conv2dConfig::new([1, FILTERS], [KERNEL, KERNEL])
                .with_initializer(Initializer::Zeros)
                .init(device),
            hidden: linear(FEATURES, HIDDEN),
            output: linear(HIDDEN, CLASSES),
        }
    }

    /// The network with its parameters' ids 0 to 5, in visiting order, in
    /// place of the random ones Burn draws for each new parameter: the ids
    /// are saved with the weights, so that the same weights make the same
    /// file, and the same SHA-256 in the metadata, in every run. For the
    /// constructors that make new parameters ([`Cnn::new`],
    /// [`Cnn::from_parameters`]); a loaded record brings its own ids.
    fn numbered(self) -> Self {
        struct Numbering(u64);
        impl ModuleMapper for Numbering {
            fn map_float<const D: usize>(
                &mut self,
                mut param: Param<Tensor<D>>,
            ) -> Param<Tensor<D>> {
                param.id = ParamId::from(self.0);
                self.0 += 1;
                param
            }
        }
        self.map(&mut Numbering(0))
    }

    /// Logits `[n, 10]`. `dropout` is given while training: the fraction
    /// dropped and the seed that fixes the mask (see `block::dropout_keep`);
    /// `None` for inference.
    ///
    /// On a CPU backend the pass takes the fused ops; on a GPU, Burn's
    /// stock layers ([`Cnn::stock_forward`]) with the same dropout mask.
    pub fn forward(&self, batch: &Batch, dropout: Option<(f64, u64)>) -> Tensor<2> {
        let device = batch.images.device();
        let n = batch.images.dims()[0];
        if !Backend::of(&device).on_host() {
            let mask = dropout.map(|(rate, seed)| dropout_mask(rate, seed, n, &device));
            return self.stock_forward(batch.images.clone(), mask);
        }
        let features = block::conv_block(
            batch.images.clone(),
            self.conv.weight.val(),
            self.conv_bias(),
            dropout,
        );
        let hidden = dense::dense_relu(
            features.reshape([n, FEATURES]),
            self.hidden.weight.val(),
            self.hidden_bias(),
        );
        self.output.forward(hidden)
    }

    /// The pooled feature map `[n, 32, 25, 25]` (channels first) from Burn's
    /// `conv2d`, `relu` and `max_pool2d`, with the convolution's output shape.
    pub(crate) fn stock_features(&self, images: Tensor<3>) -> (Tensor<4>, [usize; 4]) {
        let conv = self.conv.forward(images.unsqueeze_dim(1));
        let conv_dims = conv.dims();
        let pool = MaxPoolOptions::new([POOL, POOL]).with_stride([1, 1]);
        (max_pool2d(relu(conv), pool), conv_dims)
    }

    /// Logits from Burn's stock layers alone, which any backend runs: the
    /// pass on a GPU, and what the tests hold the fused pass to. The
    /// features are multiplied by `mask` (`[n, 20000]` in Keras's flatten
    /// order, see [`dropout_mask`]) when given.
    pub fn stock_forward(&self, images: Tensor<3>, mask: Option<Tensor<2>>) -> Tensor<2> {
        let n = images.dims()[0];
        let (pooled, _) = self.stock_features(images);
        let flat = pooled.permute([0, 2, 3, 1]).reshape([n, FEATURES]);
        let flat = match mask {
            Some(mask) => flat * mask,
            None => flat,
        };
        self.output.forward(relu(self.hidden.forward(flat)))
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

    /// The six parameters as host values.
    pub fn parameters(&self) -> Parameters {
        fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .expect("f32 values")
        }
        Parameters {
            conv_weight: host(self.conv.weight.val()),
            conv_bias: host(self.conv_bias()),
            hidden_weight: host(self.hidden.weight.val()),
            hidden_bias: host(self.hidden_bias()),
            output_weight: host(self.output.weight.val()),
            output_bias: host(
                self.output
                    .bias
                    .as_ref()
                    .expect("the output layer is built with a bias")
                    .val(),
            ),
        }
    }

    /// The network with these parameters, on `device`.
    pub fn from_parameters(params: Parameters, device: &Device) -> Self {
        fn param<const D: usize>(
            values: Vec<f32>,
            shape: [usize; D],
            device: &Device,
        ) -> Param<Tensor<D>> {
            Param::from_data(TensorData::new(values, shape), device)
        }
        let Parameters {
            conv_weight,
            conv_bias,
            hidden_weight,
            hidden_bias,
            output_weight,
            output_bias,
        } = params;
        use Parameters as P;
        let mut model = Self::skeleton(device);
        model.conv.weight = param(conv_weight, P::CONV_WEIGHT, device);
        model.conv.bias = Some(param(conv_bias, P::CONV_BIAS, device));
        model.hidden.weight = param(hidden_weight, P::HIDDEN_WEIGHT, device);
        model.hidden.bias = Some(param(hidden_bias, P::HIDDEN_BIAS, device));
        model.output.weight = param(output_weight, P::OUTPUT_WEIGHT, device);
        model.output.bias = Some(param(output_bias, P::OUTPUT_BIAS, device));
        model.numbered()
    }

    /// The network on `device`, of any backend: its parameters copied over,
    /// or the network itself where it is there already (autodiff alike).
    pub fn copied_to(&self, device: &Device) -> Self {
        let here = self.conv.weight.device();
        if here == *device && here.is_autodiff() == device.is_autodiff() {
            return self.clone();
        }
        Self::from_parameters(self.parameters(), device)
    }

    /// Class probabilities `[n, 10]` for inference.
    pub fn probabilities(&self, batch: &Batch) -> Tensor<2> {
        softmax(self.forward(batch, None), 1)
    }
}

/// The network's six parameters as host values (row-major), in the order
/// Keras lists them; each one's shape is in `Parameters::shaped`.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameters {
    /// The convolution's kernel, `[32, 1, 3, 3]` (Burn's layout:
    /// filter, input channel, row, column).
    pub conv_weight: Vec<f32>,
    /// `[32]`.
    pub conv_bias: Vec<f32>,
    /// The hidden layer's weights, `[20000, 128]` (input, output), its input
    /// in Keras's channels-last flatten order.
    pub hidden_weight: Vec<f32>,
    /// `[128]`.
    pub hidden_bias: Vec<f32>,
    /// The output layer's weights, `[128, 10]`.
    pub output_weight: Vec<f32>,
    /// `[10]`.
    pub output_bias: Vec<f32>,
}

impl Parameters {
    // Their shapes, in Burn's layout.
    const CONV_WEIGHT: [usize; 4] = [FILTERS, 1, KERNEL, KERNEL];
    const CONV_BIAS: [usize; 1] = [FILTERS];
    const HIDDEN_WEIGHT: [usize; 2] = [FEATURES, HIDDEN];
    const HIDDEN_BIAS: [usize; 1] = [HIDDEN];
    const OUTPUT_WEIGHT: [usize; 2] = [HIDDEN, CLASSES];
    const OUTPUT_BIAS: [usize; 1] = [CLASSES];

    /// The six with their shapes, in Keras's order.
    pub(crate) fn shaped(&self) -> [(Vec<usize>, &[f32]); 6] {
        [
            (Self::CONV_WEIGHT.to_vec(), &self.conv_weight),
            (Self::CONV_BIAS.to_vec(), &self.conv_bias),
            (Self::HIDDEN_WEIGHT.to_vec(), &self.hidden_weight),
            (Self::HIDDEN_BIAS.to_vec(), &self.hidden_bias),
            (Self::OUTPUT_WEIGHT.to_vec(), &self.output_weight),
            (Self::OUTPUT_BIAS.to_vec(), &self.output_bias),
        ]
    }

    /// The six, in Keras's order, for comparing two networks value by value.
    pub fn values(&self) -> [&[f32]; 6] {
        self.shaped().map(|(_, values)| values)
    }
}

/// Mean categorical cross-entropy of `logits` against integer labels: the
/// loss of Burn's training step, of `eval` and of the tests' oracle. The host
/// step (`crate::host`) computes the same loss and its gradient in its own
/// loop, and the tests hold its steps to the ones this loss gives.
///
/// Computed from the logits through log-softmax, as Keras does for a
/// `Dense(..., activation="softmax")` output in `fit` and `evaluate`, so it
/// stays finite without clipping.
pub fn cross_entropy(logits: Tensor<2>, labels: &[u8]) -> Tensor<1> {
    let n = labels.len();
    let mut one_hot = vec![0.0f32; n * CLASSES];
    for (row, &label) in labels.iter().enumerate() {
        one_hot[row * CLASSES + label as usize] = 1.0;
    }
    let targets = Tensor::from_data(TensorData::new(one_hot, [n, CLASSES]), &logits.device());
    (log_softmax(logits, 1) * targets).sum().neg() / n as f64
}

/// The dropout multipliers the fused block applies for `seed` (see
/// `block::dropout_keep`), as `[n, 20000]` in Keras's flatten order: so
/// that the stock pass drops the very same features.
pub fn dropout_mask(rate: f64, seed: u64, n: usize, device: &Device) -> Tensor<2> {
    let mut mask = vec![0.0f32; n * FEATURES];
    for (image, values) in mask.chunks_mut(FEATURES).enumerate() {
        block::dropout_keep(rate, seed, image, values);
    }
    Tensor::from_data(TensorData::new(mask, [n, FEATURES]), device)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{self, DROPOUT, PARAMETERS};
    use crate::test_util::{assert_close, values};
    use burn::tensor::Distribution;
    use rand::SeedableRng;

    /// The parameters of each layer (conv, hidden, output).
    fn layer_params(model: &Cnn) -> [usize; 3] {
        [
            model.conv.num_params(),
            model.hidden.num_params(),
            model.output.num_params(),
        ]
    }

    fn model(seed: u64) -> (Cnn, Device) {
        let device = crate::backend::host_device();
        (
            Cnn::new(&device, &mut SmallRng::seed_from_u64(seed)),
            device,
        )
    }

    #[test]
    fn the_layers_have_the_summarys_shapes_and_parameters() {
        let (model, device) = model(1);
        assert_eq!(model.num_params(), PARAMETERS);
        let params = layer_params(&model);
        let layers = arch::layers();
        assert_eq!(
            params,
            [layers[0].params, layers[4].params, layers[5].params]
        );
        let images = Tensor::<3>::random([2, SIDE, SIDE], Distribution::Default, &device);
        let (pooled, conv) = model.stock_features(images.clone());
        // Keras lists channels last.
        assert_eq!(
            conv[1..],
            [layers[0].shape[2], layers[0].shape[0], layers[0].shape[1]]
        );
        let [_, c, h, w] = pooled.dims();
        assert_eq!([h, w, c], layers[1].shape[..]);
        assert_eq!(h * w * c, layers[3].shape[0]);
        let out = model.forward(&Batch { images }, None);
        assert_eq!(out.dims(), [2, layers[5].shape[0]]);
    }

    #[test]
    fn the_fast_forward_pass_equals_burns_stock_layers() {
        let (model, device) = model(7);
        let images = Tensor::<3>::random([16, SIDE, SIDE], Distribution::Default, &device);
        let batch = Batch {
            images: images.clone(),
        };
        for dropout in [None, Some((DROPOUT, 3)), Some((0.5, 4))] {
            let fast = values(model.forward(&batch, dropout));
            let mask = dropout.map(|(rate, seed)| dropout_mask(rate, seed, 16, &device));
            let slow = values(model.stock_forward(images.clone(), mask));
            assert!(slow.iter().any(|&v| v.abs() > 1e-3), "degenerate output");
            assert_close(&fast, &slow, &format!("dropout {dropout:?}"));
        }
    }

    #[test]
    fn dropout_drops_a_quarter_and_rescales_the_rest() {
        let device = crate::backend::host_device();
        let mask = values(dropout_mask(DROPOUT, 5, 32, &device));
        let dropped = mask.iter().filter(|&&v| v == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.25).abs() < 0.005, "dropped {dropped}");
        assert!(
            mask.iter()
                .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6)
        );
        assert_ne!(mask, values(dropout_mask(DROPOUT, 6, 32, &device)));
        let half = values(dropout_mask(0.5, 5, 32, &device));
        let dropped = half.iter().filter(|&&v| v == 0.0).count() as f64 / half.len() as f64;
        assert!((dropped - 0.5).abs() < 0.005, "dropped {dropped} of half");
        assert!(half.iter().all(|&v| v == 0.0 || v == 2.0));
        let none = values(dropout_mask(0.0, 5, 32, &device));
        assert!(none.iter().all(|&v| v == 1.0), "rate 0 keeps all");
        // Images get different masks within one batch.
        assert_ne!(mask[..FEATURES], mask[FEATURES..2 * FEATURES]);
    }

    #[test]
    fn the_loss_is_the_mean_negative_log_probability_of_the_label() {
        let device = crate::backend::host_device();
        let logits = [[2.0f32, -1.0, 0.5], [0.0, 0.0, 120.0]];
        let labels = [0u8, 1];
        let mut padded = vec![0.0f32; 2 * CLASSES];
        let mut expected = 0.0f64;
        for (row, (l, &label)) in logits.iter().zip(&labels).enumerate() {
            // The other seven classes get a logit of -inf-like -1e4.
            let mut full = [-1e4f32; CLASSES];
            full[..3].copy_from_slice(l);
            padded[row * CLASSES..(row + 1) * CLASSES].copy_from_slice(&full);
            let max = full.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            let sum: f64 = full.iter().map(|&v| (v as f64 - max).exp()).sum();
            expected -= full[label as usize] as f64 - max - sum.ln();
        }
        let tensor = Tensor::from_data(TensorData::new(padded, [2, CLASSES]), &device);
        let loss = cross_entropy(tensor, &labels).into_scalar::<f32>() as f64;
        // Finite for a probability that underflows f32 (e^-120), unlike log(softmax).
        assert!(
            (loss - expected / 2.0).abs() < 1e-3,
            "{loss} vs {}",
            expected / 2.0
        );
    }
}
