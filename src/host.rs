//! The network computed on the host, over buffers that live from batch to
//! batch: the training step (forward pass, loss, backward pass and the
//! parameter update of one batch) and inference. This is where the weights
//! change when training runs on a CPU backend, and what `eval` runs there; Burn's autodiff and `Optimizer`
//! ([`crate::train::Engine::Burn`]) compute the same step, and the tests hold
//! the two together.
//!
//! Why not Burn's own step: its autodiff graph allocates every activation and
//! gradient afresh (zero-filled, then copied into an aligned buffer), its SGD
//! makes two 10 MB temporaries, and the hidden layer's 10 MB of weights are
//! read for the forward pass, read for the input gradient, written as a
//! gradient, then read twice and written again by the optimiser. Here the
//! input gradient and, for plain SGD, the update `W -= lr·xᵀg` are one pass
//! over `W` ([`crate::kernels::backward_and_update`]): each block of rows
//! gives its part of the input gradient from the old values, then is
//! updated in place, the weight gradient never stored (momentum and Adam
//! get it whole from the same pass). The output layer, softmax and
//! cross-entropy are a few hundred operations done in one loop. The
//! forward product skips the features that ReLU and dropout made zero
//! ([`crate::kernels::sparse_product`]), about half of them. The fused
//! first block ([`crate::block`]) runs as it does under Burn. Inference
//! makes the features a pooled row at a time and multiplies each row by
//! its rows of `W` at once ([`HostNet::logits`]), so that they never go to
//! memory, skipping the zeros there too, of which it makes more: it
//! multiplies each feature's difference from its value where the image is
//! blank ([`Background`]).

use std::time::{Duration, Instant};

use burn::tensor::Device;
use serde::Serialize;

use crate::arch::{FEATURES, FILTERS, HIDDEN, POOL_SIDE};
use crate::block::{self, Input, Kernel};
use crate::data::Examples;
use crate::dense;
use crate::idx::{CLASSES, Images, SIDE};
use crate::kernels::{self, WeightGradient, backward_and_update};
use crate::model::{Cnn, Parameters};
use crate::optim::{HostUpdate, Optimizer};

/// The parameters' numbers in [`HostUpdate`], in the order a step updates them.
const OUTPUT_WEIGHT: usize = 0;
const OUTPUT_BIAS: usize = 1;
const HIDDEN_BIAS: usize = 2;
const HIDDEN_WEIGHT: usize = 3;
const CONV_WEIGHT: usize = 4;
const CONV_BIAS: usize = 5;

/// Values in one pooled row of an image's features: `[25, 32]`.
const ROW: usize = POOL_SIDE * FILTERS;

/// What a task of [`HostNet::infer_hidden`] needs besides its outputs,
/// one per thread, kept from call to call so that none allocates.
#[derive(Default)]
struct RowScratch {
    /// The two conv rows under the pooled row, for one image at a time.
    rows: block::ConvRows,
    /// Each image's lower conv row of the pooled row before, `[n]` rows,
    /// which the next pooled row takes as its upper one.
    carried: Vec<Vec<[f32; FILTERS]>>,
    /// One pooled row of each image, `[n, ROW]`, less each filter's
    /// background level ([`Background`]).
    pooled: Vec<f32>,
}

thread_local! {
    static ROW_SCRATCH: std::cell::RefCell<RowScratch> = Default::default();
}

/// Time spent in each phase of the steps taken, for `bench`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Phases {
    /// The fused conv, bias, ReLU, max-pool and dropout.
    pub block_forward: Duration,
    /// `relu(x·W + b)` of the hidden layer.
    pub dense_forward: Duration,
    /// The output layer, softmax, cross-entropy and their gradients, and the
    /// output layer's update.
    pub output_and_loss: Duration,
    /// The hidden layer's input gradient and its weight update (fused).
    pub dense_backward_and_update: Duration,
    /// The first block's gradients and its update.
    pub block_backward_and_update: Duration,
}

impl Phases {
    /// The time spent since `earlier` was taken.
    pub fn since(&self, earlier: &Phases) -> Phases {
        Phases {
            block_forward: self.block_forward - earlier.block_forward,
            dense_forward: self.dense_forward - earlier.dense_forward,
            output_and_loss: self.output_and_loss - earlier.output_and_loss,
            dense_backward_and_update: self.dense_backward_and_update
                - earlier.dense_backward_and_update,
            block_backward_and_update: self.block_backward_and_update
                - earlier.block_backward_and_update,
        }
    }

    fn total(&self) -> Duration {
        self.block_forward
            + self.dense_forward
            + self.output_and_loss
            + self.dense_backward_and_update
            + self.block_backward_and_update
    }

    /// Each phase's share of the step, named, in step order.
    pub fn shares(&self) -> Vec<(&'static str, f64)> {
        let total = self.total().as_secs_f64().max(1e-12);
        [
            ("block forward", self.block_forward),
            ("dense forward", self.dense_forward),
            ("output layer + loss + its update", self.output_and_loss),
            ("dense backward + update", self.dense_backward_and_update),
            ("block backward + update", self.block_backward_and_update),
        ]
        .into_iter()
        .map(|(name, d)| (name, d.as_secs_f64() / total))
        .collect()
    }
}

/// The network's parameters on the host, with the buffers a step needs.
pub struct HostNet {
    kernel: Kernel,
    conv_bias: [f32; FILTERS],
    /// `[FEATURES, HIDDEN]`, row-major (Burn's `Linear` layout).
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// `[HIDDEN, CLASSES]`.
    w2: Vec<f32>,
    b2: [f32; CLASSES],
    update: HostUpdate,
    /// Fraction of the features dropped while training.
    dropout: f64,
    images: Vec<f32>,
    features: Vec<f32>,
    codes: Vec<u8>,
    hidden: Vec<f32>,
    grad_hidden: Vec<f32>,
    grad_features: Vec<f32>,
    /// The hidden layer's weight gradient, for the optimisers that need it
    /// whole (plain SGD folds it into the update).
    grad_w1: Vec<f32>,
    /// Inference's partial sums, one `[n, HIDDEN]` per row of features.
    partials: Vec<f32>,
    /// The product of an image without ink with `W1` ([`Background`]), for
    /// the weights as they stand: `None` once a step has changed them.
    background: Option<Background>,
    /// Time per phase, summed over the steps taken.
    pub phases: Phases,
}

impl HostNet {
    /// Takes `model`'s parameters to train them with `optimizer` at
    /// `learning_rate`, dropping a `dropout` fraction of the features.
    pub fn new(model: &Cnn, optimizer: Optimizer, learning_rate: f64, dropout: f64) -> Self {
        let p = model.parameters();
        Self {
            kernel: block::kernel_from_burn(&p.conv_weight),
            conv_bias: p.conv_bias.try_into().expect("one conv bias per filter"),
            w1: p.hidden_weight,
            b1: p.hidden_bias,
            w2: p.output_weight,
            b2: p.output_bias.try_into().expect("one output bias per class"),
            update: HostUpdate::new(optimizer, learning_rate, 6),
            dropout,
            images: Vec::new(),
            features: Vec::new(),
            codes: Vec::new(),
            hidden: Vec::new(),
            grad_hidden: Vec::new(),
            grad_features: Vec::new(),
            grad_w1: Vec::new(),
            partials: Vec::new(),
            background: None,
            phases: Phases::default(),
        }
    }

    /// Takes `model`'s parameters for inference only.
    pub fn for_inference(model: &Cnn) -> Self {
        Self::new(model, Optimizer::Sgd, 0.0, 0.0)
    }

    /// The parameters as they stand, as a Burn module on `device`.
    pub fn model(&self, device: &Device) -> Cnn {
        let parameters = Parameters {
            conv_weight: block::kernel_to_burn(&self.kernel),
            conv_bias: self.conv_bias.to_vec(),
            hidden_weight: self.w1.clone(),
            hidden_bias: self.b1.clone(),
            output_weight: self.w2.clone(),
            output_bias: self.b2.to_vec(),
        };
        Cnn::from_parameters(parameters, device)
    }

    /// One training step on the examples at `indices`, with the dropout mask of
    /// `dropout_seed`; returns the batch's mean loss and how many it
    /// classified correctly (before the update).
    pub fn step(&mut self, data: &Examples, indices: &[usize], dropout_seed: u64) -> (f64, usize) {
        let n = indices.len();
        self.background = None;
        self.update.begin_step();
        let mut clock = Instant::now();
        let mut lap = |phase: &mut Duration| {
            let now = Instant::now();
            *phase += now - clock;
            clock = now;
        };

        // Block forward.
        let input = self.input(&data.images, indices);
        self.features.resize(n * FEATURES, 0.0);
        self.codes.resize(n * FEATURES, 0);
        block::forward_into(
            &input,
            Some((self.dropout, dropout_seed)),
            &mut self.features,
            &mut self.codes,
        );
        lap(&mut self.phases.block_forward);

        self.dense_forward(n);
        lap(&mut self.phases.dense_forward);

        // Output layer, softmax, cross-entropy; the gradient of the mean loss
        // with respect to the logits is (softmax - one_hot) / n.
        let (loss, correct, grad_logits) = self.output_and_loss(data, indices);
        // The hidden layer's gradient through the old W2, then W2's update.
        self.grad_hidden.clear();
        self.grad_hidden.resize(n * HIDDEN, 0.0);
        for (g_row, d_row) in self
            .grad_hidden
            .chunks_exact_mut(HIDDEN)
            .zip(grad_logits.chunks_exact(CLASSES))
        {
            for (g, w_row) in g_row.iter_mut().zip(self.w2.chunks_exact(CLASSES)) {
                *g = w_row.iter().zip(d_row).map(|(w, d)| w * d).sum();
            }
        }
        let mut grad_w2 = vec![0.0f32; HIDDEN * CLASSES];
        for (j, g_row) in grad_w2.chunks_exact_mut(CLASSES).enumerate() {
            for (k, grad) in g_row.iter_mut().enumerate() {
                *grad = (0..n)
                    .map(|b| self.hidden[b * HIDDEN + j] * grad_logits[b * CLASSES + k])
                    .sum();
            }
        }
        self.update.apply(OUTPUT_WEIGHT, &mut self.w2, &grad_w2);
        let grad_b2: Vec<f32> = (0..CLASSES)
            .map(|k| (0..n).map(|row| grad_logits[row * CLASSES + k]).sum())
            .collect();
        self.update.apply(OUTPUT_BIAS, &mut self.b2, &grad_b2);
        lap(&mut self.phases.output_and_loss);

        // Dense backward: ReLU's gradient, b1's, the input gradient from the
        // old W1, then W1's update: for plain SGD W1 -= lr·featuresᵀ·g in
        // place, in the same pass; otherwise the gradient made whole first.
        let mut grad_b1 = vec![0.0f32; HIDDEN];
        dense::relu_backward_host(&mut self.grad_hidden, &self.hidden, &mut grad_b1, HIDDEN);
        self.grad_features.resize(n * FEATURES, 0.0);
        let weight_gradient = if self.update.is_plain_sgd() {
            WeightGradient::Apply {
                learning_rate: self.update.learning_rate(),
            }
        } else {
            self.grad_w1.resize(FEATURES * HIDDEN, 0.0);
            WeightGradient::Into(&mut self.grad_w1)
        };
        backward_and_update(
            &mut self.w1,
            &self.features,
            &self.grad_hidden,
            &mut self.grad_features,
            n,
            FEATURES,
            HIDDEN,
            weight_gradient,
        );
        if !self.update.is_plain_sgd() {
            self.update
                .apply(HIDDEN_WEIGHT, &mut self.w1, &self.grad_w1);
        }
        self.update.apply(HIDDEN_BIAS, &mut self.b1, &grad_b1);
        lap(&mut self.phases.dense_backward_and_update);

        // Block backward and its update.
        let scale = (1.0 / (1.0 - self.dropout)) as f32;
        let (grad_kernel, grad_bias) =
            block::backward_host(&input, &self.codes, scale, &self.grad_features);
        self.update.apply(
            CONV_WEIGHT,
            self.kernel.as_flattened_mut(),
            grad_kernel.as_flattened(),
        );
        self.update
            .apply(CONV_BIAS, &mut self.conv_bias, &grad_bias);
        self.images = input.images;
        lap(&mut self.phases.block_backward_and_update);
        (loss, correct)
    }

    /// Logits `[n, CLASSES]` for the images at `indices`, without dropout.
    ///
    /// The images are taken in another order, [`similar_groups`], which
    /// changes no image's numbers where `W1` is finite: each row of the
    /// product sums alone ([`kernels::accumulate_product`]).
    pub fn logits(&mut self, images: &Images, indices: &[usize]) -> Vec<f32> {
        let order = similar_groups(images, indices, kernels::product_rows());
        let ordered: Vec<usize> = order.iter().map(|&i| indices[i]).collect();
        let input = self.input(images, &ordered);
        self.infer_hidden(&input, None);
        self.images = input.images;
        let mut logits = vec![0.0; indices.len() * CLASSES];
        for (h_row, &i) in self.hidden.chunks_exact(HIDDEN).zip(&order) {
            logits[i * CLASSES..(i + 1) * CLASSES].copy_from_slice(&self.logits_row(h_row));
        }
        logits
    }

    /// The layers of one image (784 values in [0, 1]) by the very calls
    /// [`HostNet::logits`] makes, so that what `explain` shows is what `eval`
    /// computes: the pooled features `[25, 25, 32]` (channels last), the
    /// hidden activations and the logits.
    pub fn layers(&mut self, pixels: &[f32]) -> (Vec<f32>, Vec<f32>, [f32; CLASSES]) {
        assert_eq!(pixels.len(), SIDE * SIDE, "a 28×28 image");
        let input = Input {
            images: pixels.to_vec(),
            n: 1,
            h: SIDE,
            w: SIDE,
            weight: self.kernel,
            bias: self.conv_bias,
        };
        let mut features = vec![0.0; FEATURES];
        self.infer_hidden(&input, Some(&mut features));
        let hidden = self.hidden[..HIDDEN].to_vec();
        let logits = self.logits_row(&hidden);
        (features, hidden, logits)
    }

    /// `hidden = relu(block(images)·W1 + b1)` without dropout, a pooled
    /// row of features at a time: each row makes that row of every image's
    /// features (800 values each), less their values without ink
    /// ([`Background`]), and multiplies them by their 800 rows of `W1`
    /// while they are in cache ([`kernels::accumulate_product`], which
    /// skips the zeros), into its own partial sums, which are then added in
    /// row order to the background's own product. The features never go to memory (a batch of 128 has
    /// 10 MB of them), each row of `W1` is read once per batch, and each
    /// image's sums run in the same order whatever its batch or the threads
    /// (giving the same bits where `W1` is finite). The rows are taken in
    /// runs, two per thread, each run in order so that a conv row feeding
    /// two pooled rows is computed once: the runs' first rows compute both
    /// of theirs, so 2 threads make 29 conv rows where tasks of a row each
    /// made 50 (the convolution was a seventh of evaluation's time on a
    /// Zen 1). With `features`, each image's features are also copied
    /// there (`[n, FEATURES]`), for `explain`.
    fn infer_hidden(&mut self, input: &Input, features: Option<&mut [f32]>) {
        use rayon::prelude::*;
        let n = input.n;
        self.hidden.resize(n * HIDDEN, 0.0);
        if n == 0 {
            return;
        }
        let hidden = &mut self.hidden[..];
        let partials = &mut self.partials;
        partials.resize(POOL_SIDE * n * HIDDEN, 0.0);
        let w1 = &self.w1;
        // The levels are the pool's own bias, through ReLU.
        debug_assert_eq!(input.bias, self.conv_bias, "the input's bias is the net's");
        let background = self
            .background
            .get_or_insert_with(|| Background::of(&self.conv_bias, w1));
        let level = &background.level;
        match features {
            // For `explain`: one image, all its rows in one run.
            Some(features) => {
                assert_eq!(features.len(), n * FEATURES, "features size");
                ROW_SCRATCH.with_borrow_mut(|scratch| {
                    run_product(
                        input,
                        w1,
                        level,
                        0..POOL_SIDE,
                        partials,
                        scratch,
                        Some(features),
                    )
                });
            }
            None => {
                let runs = (2 * rayon::current_num_threads()).min(POOL_SIDE);
                let mut tasks = Vec::with_capacity(runs);
                let mut rest = &mut partials[..];
                for run in 0..runs {
                    let rows = run * POOL_SIDE / runs..(run + 1) * POOL_SIDE / runs;
                    let (part, tail) = rest.split_at_mut(rows.len() * n * HIDDEN);
                    tasks.push((rows, part));
                    rest = tail;
                }
                tasks.into_par_iter().for_each(|(rows, part)| {
                    ROW_SCRATCH.with_borrow_mut(|scratch| {
                        run_product(input, w1, level, rows, part, scratch, None)
                    })
                });
            }
        }
        let partials = &self.partials;
        let b1 = &self.b1;
        let start = &background.hidden;
        hidden
            .par_chunks_mut(HIDDEN)
            .enumerate()
            .for_each(|(b, row)| {
                row.copy_from_slice(start);
                for y in 0..POOL_SIDE {
                    let part = &partials[(y * n + b) * HIDDEN..][..HIDDEN];
                    for (v, p) in row.iter_mut().zip(part) {
                        *v += p;
                    }
                }
                dense::bias_relu_host(row, b1);
            });
    }

    /// The images at `indices` scaled to [0, 1], as the first block's input
    /// (its pixel buffer is handed back to `self.images` after use).
    fn input(&mut self, images: &Images, indices: &[usize]) -> Input {
        let mut pixels = std::mem::take(&mut self.images);
        pixels.clear();
        images.scaled_into(indices, &mut pixels);
        Input {
            images: pixels,
            n: indices.len(),
            h: SIDE,
            w: SIDE,
            weight: self.kernel,
            bias: self.conv_bias,
        }
    }

    /// `hidden = relu(features·W1 + b1)` for the first `n` rows of features,
    /// skipping the features ReLU and dropout made zero
    /// ([`kernels::sparse_product`]).
    fn dense_forward(&mut self, n: usize) {
        self.hidden.resize(n * HIDDEN, 0.0);
        kernels::sparse_product(
            &mut self.hidden,
            &self.features,
            &self.w1,
            n,
            FEATURES,
            HIDDEN,
        );
        dense::bias_relu_host(&mut self.hidden, &self.b1);
    }

    /// The output layer for one row of hidden activations.
    fn logits_row(&self, hidden: &[f32]) -> [f32; CLASSES] {
        let mut logits = self.b2;
        for (&h, w_row) in hidden.iter().zip(self.w2.chunks_exact(CLASSES)) {
            for (l, &w) in logits.iter_mut().zip(w_row) {
                *l += h * w;
            }
        }
        logits
    }

    /// Logits from the hidden activations, then the batch's mean loss, the
    /// number classified correctly and the gradient of the loss with respect
    /// to the logits, `[n, CLASSES]`.
    fn output_and_loss(&self, data: &Examples, indices: &[usize]) -> (f64, usize, Vec<f32>) {
        let n = indices.len();
        let mut grad = vec![0.0f32; n * CLASSES];
        let (mut loss, mut correct) = (0.0f64, 0usize);
        for ((h_row, g_row), &i) in self
            .hidden
            .chunks_exact(HIDDEN)
            .zip(grad.chunks_exact_mut(CLASSES))
            .zip(indices)
        {
            let logits = self.logits_row(h_row);
            let label = data.labels[i] as usize;
            let (best, max) =
                logits
                    .iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |(bi, bm), (i, &v)| {
                        if v > bm { (i, v) } else { (bi, bm) }
                    });
            correct += usize::from(best == label);
            let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
            loss -= (logits[label] - max - sum.ln()) as f64;
            for (k, (g, &l)) in g_row.iter_mut().zip(&logits).enumerate() {
                let p = (l - max).exp() / sum;
                *g = (p - f32::from(k == label)) / n as f32;
            }
        }
        (loss / n as f64, correct, grad)
    }
}

/// Positions of a batch's images (`indices`) taken in groups of `size`
/// whose ink lies in about the same places, and so their zero features
/// too: each tile of the inference product takes `size` images and every
/// feature that one of them has nonzero, so unrelated digits side by side
/// compute their partner's features for nothing. Greedy, within windows
/// of about [`GROUPING_WINDOW`] positions (a whole number of groups, so
/// that the groups stay in step with the tiles): a group starts with the first image
/// left and takes, one by one, the one whose ink cells differ least from
/// the group's. On the 10,000 test images (batches of 128, the seed-42
/// model, pairs), the features computed for nothing fell from 25% of
/// those needed to 14%.
fn similar_groups(images: &Images, indices: &[usize], size: usize) -> Vec<usize> {
    let ink: Vec<InkCells> = indices
        .iter()
        .map(|&i| ink_cells(images.image(i)))
        .collect();
    let mut order = Vec::with_capacity(indices.len());
    let window = grouping_window(size);
    for start in (0..indices.len()).step_by(window) {
        let end = (start + window).min(indices.len());
        let mut left: Vec<usize> = (start..end).collect();
        while !left.is_empty() {
            let first = left.remove(0);
            let mut union = ink[first];
            order.push(first);
            for _ in 1..size.min(left.len() + 1) {
                let differing = |i: &usize| -> u32 {
                    union
                        .iter()
                        .zip(&ink[*i])
                        .map(|(a, b)| (a ^ b).count_ones())
                        .sum()
                };
                let (at, _) = left
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, i)| differing(i))
                    .expect("images left");
                let next = left.remove(at);
                union.iter_mut().zip(&ink[next]).for_each(|(u, b)| *u |= b);
                order.push(next);
            }
        }
    }
    order
}

/// Positions [`similar_groups`] compares each image with: 128, a default
/// evaluation batch, at about 4,000 comparisons of 256 bits a window
/// (under 1% of a batch's time), and a bound on that cost for larger
/// batches.
const GROUPING_WINDOW: usize = 128;

/// [`GROUPING_WINDOW`] cut to whole groups of `size`.
fn grouping_window(size: usize) -> usize {
    let size = size.max(1);
    GROUPING_WINDOW - GROUPING_WINDOW % size
}

/// An image's 14 × 14 cells of 2 × 2 pixels, a bit set where one pixel is
/// brighter than a quarter of full scale. (Cells of 1 × 1 pixels paired as
/// well; of 4 × 4 and 7 × 7, less well.)
type InkCells = [u64; 4];

fn ink_cells(pixels: &[u8]) -> InkCells {
    const CELLS: usize = SIDE / 2;
    let mut cells = [0u64; 4];
    for (p, &v) in pixels.iter().enumerate() {
        if v > 64 {
            let cell = (p / SIDE / 2) * CELLS + (p % SIDE) / 2;
            cells[cell / 64] |= 1 << (cell % 64);
        }
    }
    cells
}

/// What every image has where it has no ink. A feature whose 4×4 window
/// of pixels is all zero is its filter's bias through ReLU, the same
/// number in every image (its `level`), and such windows are about half of
/// a test image's (53% on the 10,000). Inference multiplies each feature's
/// difference from its level instead, an exact zero there that the product
/// skips, and starts each image's sum from the levels' own product with
/// `W1` (`hidden`), made once per set of weights: on the seed-42 model the
/// features to multiply fell from 46% of them to 34% (the filters whose
/// bias is positive, 7 of 32 there, are nonzero in all the background).
/// The sums run in another order than a plain product's, and still the
/// same way for an image in any batch.
struct Background {
    /// `relu(conv bias)`, per filter.
    level: [f32; FILTERS],
    /// The levels times `W1`, `[HIDDEN]`, summed in order of feature.
    hidden: Vec<f32>,
}

impl Background {
    fn of(conv_bias: &[f32; FILTERS], w1: &[f32]) -> Self {
        let level = conv_bias.map(|b| if b > 0.0 { b } else { 0.0 });
        let mut hidden = vec![0.0f32; HIDDEN];
        for (k, w_row) in w1.chunks_exact(HIDDEN).enumerate() {
            let l = level[k % FILTERS];
            if l != 0.0 {
                for (h, &w) in hidden.iter_mut().zip(w_row) {
                    *h += l * w;
                }
            }
        }
        Self { level, hidden }
    }
}

/// One run of [`HostNet::infer_hidden`]: for each pooled row `y` of
/// `rows` in turn, that row of every image's features less `level` into
/// `scratch.pooled` (`[n, ROW]`) and, with `features`, the features
/// themselves into each image's (`[n, FEATURES]`), then the differences'
/// product with the row's 800 rows of `w1` into its part of `partials`
/// (`[rows.len(), n, HIDDEN]`).
fn run_product(
    input: &Input,
    w1: &[f32],
    level: &[f32; FILTERS],
    rows: std::ops::Range<usize>,
    partials: &mut [f32],
    scratch: &mut RowScratch,
    mut features: Option<&mut [f32]>,
) {
    let n = input.n;
    let width = input.conv_width();
    let RowScratch {
        rows: conv,
        carried,
        pooled,
    } = scratch;
    for row in conv.iter_mut() {
        row.resize(width, [0.0; FILTERS]);
    }
    carried.resize_with(n.max(carried.len()), Vec::new);
    for lower in &mut carried[..n] {
        lower.resize(width, [0.0; FILTERS]);
    }
    pooled.resize(n * ROW, 0.0);
    let first = rows.start;
    for (y, partial) in rows.zip(partials.chunks_exact_mut(n * HIDDEN)) {
        for (b, out) in pooled.chunks_exact_mut(ROW).enumerate() {
            let lower = &mut carried[b];
            // With `features`, the features themselves first, then their
            // differences by the same subtraction the pool makes.
            let shift = if features.is_some() {
                &[0.0; FILTERS]
            } else {
                level
            };
            if y == first {
                block::infer_row(input, b, y, shift, conv, out);
            } else {
                std::mem::swap(&mut conv[0], lower);
                block::infer_row_after(input, b, y, shift, conv, out);
            }
            std::mem::swap(&mut conv[1], lower);
            if let Some(features) = features.as_deref_mut() {
                features[b * FEATURES + y * ROW..][..ROW].copy_from_slice(out);
                for cell in out.chunks_exact_mut(FILTERS) {
                    for (v, l) in cell.iter_mut().zip(level) {
                        *v -= l;
                    }
                }
            }
        }
        partial.fill(0.0);
        let w_rows = &w1[y * ROW * HIDDEN..(y + 1) * ROW * HIDDEN];
        kernels::accumulate_product(partial, pooled, w_rows, n, ROW, HIDDEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::{PIXELS, encode_images, parse_images};
    use crate::model::Batch;
    use crate::test_util::{assert_close, values};
    use rand::{Rng, SeedableRng, rngs::SmallRng, seq::SliceRandom};

    /// Digit-like images: random strokes of bright pixels on black.
    fn images(n: usize) -> Images {
        let mut rng = SmallRng::seed_from_u64(9);
        let pixels: Vec<u8> = (0..n * PIXELS)
            .map(|_| {
                if rng.random_bool(0.2) {
                    rng.random()
                } else {
                    0
                }
            })
            .collect();
        parse_images(encode_images(&pixels), "test").unwrap()
    }

    #[test]
    fn similar_images_are_grouped_in_a_permutation_of_the_batch() {
        // 40 distinct images, each twice, shuffled: pairs are the twins.
        let distinct = images(40);
        let mut rng = SmallRng::seed_from_u64(4);
        let mut twins: Vec<usize> = (0..80).map(|i| i / 2).collect();
        twins.shuffle(&mut rng);
        let order = similar_groups(&distinct, &twins, 2);
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..80).collect::<Vec<_>>(), "not a permutation");
        for pair in order.chunks_exact(2) {
            assert_eq!(twins[pair[0]], twins[pair[1]], "{pair:?} are not twins");
        }
        // Any group size and batch, more than one window too; each window
        // keeps its own positions.
        let many = images(300);
        for (n, size) in [(0, 2), (1, 3), (7, 3), (300, 1), (300, 2), (300, 3)] {
            let indices: Vec<usize> = (0..n).rev().collect();
            let order = similar_groups(&many, &indices, size);
            assert_eq!(order.len(), n);
            // Whole groups a window (126 for groups of 3), so that groups
            // keep in step with the product's tiles.
            let window = grouping_window(size);
            assert_eq!(window % size, 0);
            assert!(window > GROUPING_WINDOW - size, "{window}");
            for (w, positions) in order.chunks(window).enumerate() {
                let mut positions = positions.to_vec();
                positions.sort();
                let start = w * window;
                assert_eq!(
                    positions,
                    (start..start + positions.len()).collect::<Vec<_>>()
                );
            }
        }
        assert_eq!(
            similar_groups(&many, &[5, 9, 2], 1),
            [0, 1, 2],
            "size 1 reorders"
        );
    }

    /// Digit-like images with MNIST's blank margins: strokes only inside
    /// the middle 16 × 16 pixels, so that most 4×4 windows are blank.
    fn digits(n: usize) -> Images {
        let mut rng = SmallRng::seed_from_u64(8);
        let pixels: Vec<u8> = (0..n * PIXELS)
            .map(|i| {
                let (y, x) = (i % PIXELS / SIDE, i % SIDE);
                let inside = (6..22).contains(&y) && (6..22).contains(&x);
                if inside && rng.random_bool(0.3) {
                    rng.random()
                } else {
                    0
                }
            })
            .collect();
        parse_images(encode_images(&pixels), "test").unwrap()
    }

    #[test]
    fn inference_starts_from_the_background_and_redoes_it_after_a_step() {
        let device = crate::backend::host_device();
        let mut p = Cnn::new(&device, &mut SmallRng::seed_from_u64(5)).parameters();
        // Filters whose blank windows are live (positive bias) and dead.
        p.conv_bias = (0..FILTERS)
            .map(|f| if f % 2 == 0 { 0.1 } else { -0.05 })
            .collect();
        let model = Cnn::from_parameters(p, &device);
        let data = Examples {
            images: digits(64),
            labels: (0..64).map(|i| (i % CLASSES) as u8).collect(),
        };
        let all: Vec<usize> = (0..64).collect();
        let mut net = HostNet::new(&model, Optimizer::Sgd, 0.05, 0.25);
        let before = net.logits(&data.images, &all);
        let burn = values(model.forward(&Batch::new(&data.images, &all, &device), None));
        assert_close(&before, &burn, "logits against Burn's forward pass");
        assert_eq!(before[..10 * CLASSES], net.logits(&data.images, &all[..10]));

        // After a step the levels and their product are the new weights'.
        net.step(&data, &all, 1);
        let after = net.logits(&data.images, &all);
        assert!(after != before, "the step changed nothing");
        let fresh = HostNet::for_inference(&net.model(&device)).logits(&data.images, &all);
        assert!(after == fresh, "inference kept the old weights' background");
    }

    #[test]
    fn inference_is_burns_forward_pass_whatever_the_batch_and_threads() {
        let device = crate::backend::host_device();
        let model = Cnn::new(&device, &mut SmallRng::seed_from_u64(3));
        let images = images(140);
        let all: Vec<usize> = (0..images.len()).collect();
        let run = |threads: usize, batch: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut net = HostNet::for_inference(&model);
                all.chunks(batch)
                    .flat_map(|chunk| net.logits(&images, chunk))
                    .collect::<Vec<f32>>()
            })
        };
        let logits = run(2, 140);
        let burn = values(model.forward(&Batch::new(&images, &all, &device), None));
        assert!(burn.iter().any(|&v| v.abs() > 1e-2), "degenerate logits");
        assert_close(&logits, &burn, "logits against Burn's forward pass");
        assert!(logits == run(1, 140), "one thread gives other bits");
        assert!(logits == run(2, 70), "batches of 70 give other bits");
        assert!(
            logits == run(3, 7),
            "three threads and batches of 7 give other bits"
        );
        // 13 threads: 25 runs of one pooled row each, none carrying a conv row.
        assert!(logits == run(13, 140), "runs of one row give other bits");

        // `explain`'s layers are the same numbers, image by image.
        let mut net = HostNet::for_inference(&model);
        let mut pixels = Vec::new();
        images.scaled_into(&[5], &mut pixels);
        let (features, _, one) = net.layers(&pixels);
        assert_eq!(one[..], logits[5 * CLASSES..6 * CLASSES]);
        let input = net.input(&images, &[5]);
        let mut expected = vec![0.0; FEATURES];
        block::infer_into(&input, &mut expected);
        assert_eq!(features, expected, "the features infer_into gives");
    }
}
