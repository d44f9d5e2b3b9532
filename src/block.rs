//! The network's first block — 3×3 convolution, bias, ReLU, 2×2 stride-1
//! max-pool and dropout — as one Burn backend op with its own backward pass.
//!
//! Written with Burn's tensor ops this block is a convolution (or an im2col
//! matmul), shifted slices, `max_pair`s, a bias add, a ReLU and a mask
//! multiply: a dozen passes over 2.7 MB per batch of 32 forward and as many
//! backward, each allocating its result, which cost more than the dense layer
//! that holds 92% of the arithmetic. Fused, each image's 26×26×32 convolution
//! lives in a small buffer that stays in cache: the forward pass reads the
//! image and writes the 25×25×32 features once, recording per feature which
//! window position won the max (or that ReLU or dropout zeroed it); the
//! backward pass scatters the gradient through those winners and folds it
//! straight into the weight and bias gradients.
//!
//! It is a [backend extension](burn::backend::backend_extension): the plain
//! CPU backends compute it on the host, and the autodiff backend records it
//! with [`ConvBlockBackward`]. The tests hold it to Burn's stock `conv2d`,
//! `max_pool2d`, `relu` and multiply, values and gradients.

// The extension macro names burn-ndarray, which Burn deprecates in favour of flex; it
// stays as the design's alternative backend.
#![cfg_attr(feature = "ndarray", allow(deprecated))]

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{
    Autodiff, Backend as BurnBackend, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::tensor::{Tensor, TensorData, read_sync};
use multiversion::multiversion;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

use crate::arch::{FILTERS, KERNEL, POOL, TAPS};
use crate::kernels;

// The filter count (the vectorised dimension) and the kernel size are the
// network's, from `arch`; the max-pool is written out for 2×2 windows (four
// positions, recorded as codes 0-3), so another window size must not compile.
const _: () = assert!(POOL == 2, "the fused block's max-pool reads 2x2 windows");
const _: () = assert!(
    KERNEL == 3,
    "the backward pass reads 3-tap rows of the kernel"
);

/// Rows or columns lost at each edge pair by the valid conv and the stride-1 pool.
const SHRINK: usize = (KERNEL - 1) + (POOL - 1);

/// The fused block as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Autodiff,
)]
pub trait ConvBlockOps: BurnBackend {
    /// `images`: `[n, h, w]`; `weight`: `[FILTERS, 1, KERNEL, KERNEL]`;
    /// `bias`: `[FILTERS]`. Returns
    /// `dropout(relu(max_pool_2x2_s1(conv(images, weight)) + bias))` as
    /// `[n, h - SHRINK, w - SHRINK, FILTERS]` (channels-last). Dropout is applied when
    /// `dropout` is `Some((p, seed))`, with the mask [`dropout_keep`] draws.
    fn conv_block(
        images: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dropout: Option<(f64, u64)>,
    ) -> FloatTensor<Self> {
        let device = images.device();
        let input = Input::read::<Self>(images, weight, bias);
        let out = untracked(&input, dropout);
        Self::float_from_data(TensorData::new(out, input.output_shape()), &device)
    }
}

#[cfg(feature = "flex")]
impl ConvBlockOps for burn::backend::Flex {}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // Burn deprecates ndarray in favour of flex; it stays as the design's option.
impl ConvBlockOps for burn::backend::NdArray {}

/// Applies the fused block to Burn tensors (recorded for autodiff where enabled).
pub fn conv_block(
    images: Tensor<3>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    dropout: Option<(f64, u64)>,
) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as ConvBlockOps>::conv_block(
        images.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        dropout,
    ))
}

/// The dropout multipliers [`conv_block`] uses for `seed`: one image's
/// `out.len()` values, each 0 with probability `p` and `1/(1-p)` otherwise.
///
/// Each image has its own stream, so images can be processed in parallel.
/// Each 64-bit draw decides eight values, one per byte compared with `p·256`
/// (so `p` is rounded to a multiple of 1/256; 0.25 is exact): drawing one
/// number per value made the generator a tenth of a training step.
pub fn dropout_keep(p: f64, seed: u64, image: usize, out: &mut [f32]) {
    let mut dropout = Dropout::new(p, seed, image);
    for chunk in out.chunks_mut(FILTERS) {
        let mut keep = [0.0; FILTERS];
        dropout.next(&mut keep);
        chunk.copy_from_slice(&keep[..chunk.len()]);
    }
}

/// The generator behind [`dropout_keep`], drawn as the outputs are produced
/// so that no mask is ever stored.
struct Dropout {
    rng: SmallRng,
    /// A byte at least this keeps its output (at most 256: none does).
    threshold: u32,
    scale: f32,
}

impl Dropout {
    fn new(p: f64, seed: u64, image: usize) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed ^ (image as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            threshold: (p * 256.0).round() as u32,
            scale: (1.0 / (1.0 - p)) as f32,
        }
    }

    /// The multipliers of the next [`FILTERS`] outputs.
    #[inline(always)]
    fn next(&mut self, keep: &mut [f32; FILTERS]) {
        // The bytes of four draws, each draw's lowest first, then all 32
        // compared at once, which the compiler vectorises better than eight
        // at a time: 9-13% off the block forward on one thread of a Zen 5,
        // 3-4% on two. Written for a select, which the compiler makes of
        // it, not a branch: the outcome is random, so a branch would be
        // mispredicted a quarter of the time.
        let mut bytes = [0u8; FILTERS];
        for chunk in bytes.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.rng.random::<u64>().to_le_bytes());
        }
        for (value, &byte) in keep.iter_mut().zip(&bytes) {
            *value = if u32::from(byte) >= self.threshold {
                self.scale
            } else {
                0.0
            };
        }
    }
}

const _: () = assert!(
    FILTERS.is_multiple_of(8),
    "eight dropout decisions per draw"
);

/// The kernel as the host code keeps it, `[tap][filter]`: transposed from
/// Burn's `[filter, 1, kh, kw]` so that the filters are the contiguous,
/// vectorised dimension.
pub type Kernel = [[f32; FILTERS]; TAPS];

/// Burn's `[filter, 1, kh, kw]` values as a [`Kernel`].
pub fn kernel_from_burn(values: &[f32]) -> Kernel {
    assert_eq!(values.len(), FILTERS * TAPS, "conv weight size");
    let mut kernel = [[0.0; FILTERS]; TAPS];
    for (f, taps) in values.chunks_exact(TAPS).enumerate() {
        for (t, &v) in taps.iter().enumerate() {
            kernel[t][f] = v;
        }
    }
    kernel
}

/// A [`Kernel`] back in Burn's `[filter, 1, kh, kw]` order.
pub fn kernel_to_burn(kernel: &Kernel) -> Vec<f32> {
    let mut values = vec![0.0f32; FILTERS * TAPS];
    for (t, taps) in kernel.iter().enumerate() {
        for (f, &v) in taps.iter().enumerate() {
            values[f * TAPS + t] = v;
        }
    }
    values
}

/// The op's inputs, on the host.
#[derive(Debug, Clone)]
pub struct Input {
    /// `[n, h, w]` pixels in [0, 1].
    pub images: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub weight: Kernel,
    pub bias: [f32; FILTERS],
}

impl Input {
    fn read<B: BurnBackend>(
        images: FloatTensor<B>,
        weight: FloatTensor<B>,
        bias: FloatTensor<B>,
    ) -> Self {
        let (images, dims) = to_host::<B>(images);
        let [n, h, w] = <[usize; 3]>::try_from(dims).expect("images are [n, h, w]");
        let (kernel, dims) = to_host::<B>(weight);
        assert_eq!(dims, [FILTERS, 1, KERNEL, KERNEL], "conv weight shape");
        let weight = kernel_from_burn(&kernel);
        let (bias, _) = to_host::<B>(bias);
        let bias = <[f32; FILTERS]>::try_from(bias).expect("one conv bias per filter");
        Self {
            images,
            n,
            h,
            w,
            weight,
            bias,
        }
    }

    /// `[n, h - SHRINK, w - SHRINK, FILTERS]`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.h - SHRINK, self.w - SHRINK, FILTERS]
    }

    fn image(&self, b: usize) -> &[f32] {
        &self.images[b * self.h * self.w..(b + 1) * self.h * self.w]
    }

    /// Width of the convolution output.
    pub fn conv_width(&self) -> usize {
        self.w - KERNEL + 1
    }

    /// Row `y` of the convolution of image `b`, channels-last, into `row`,
    /// on the crate's own kernel ([`kernels::conv_row`]).
    fn convolve_row(&self, b: usize, y: usize, row: &mut [[f32; FILTERS]]) {
        kernels::conv_row(self.image(b), self.w, y, &self.weight, row);
    }
}

/// What the backward pass needs: the inputs and, for every output, which
/// window position won (0-3), or [`DEAD`] where ReLU or dropout zeroed it.
#[derive(Debug, Clone)]
struct Saved {
    input: Arc<Input>,
    codes: Arc<Vec<u8>>,
    /// 1/(1-p) when dropout was applied, else 1.
    scale: f32,
}

/// Code of an output that is zero whatever its inputs: no gradient flows back.
const DEAD: u8 = 4;

/// The forward pass: outputs and the winner codes. Images are split across
/// threads.
fn forward(input: &Input, dropout: Option<(f64, u64)>) -> (Vec<f32>, Vec<u8>) {
    let len = input.output_shape().iter().product();
    let mut out = vec![0.0f32; len];
    let mut codes = vec![DEAD; len];
    forward_into(input, dropout, &mut out, &mut codes);
    (out, codes)
}

/// The outputs alone, when no backward pass will follow.
fn untracked(input: &Input, dropout: Option<(f64, u64)>) -> Vec<f32> {
    match dropout {
        None => {
            let mut out = vec![0.0f32; input.output_shape().iter().product()];
            infer_into(input, &mut out);
            out
        }
        Some(_) => forward(input, dropout).0,
    }
}

/// [`forward`] into buffers the caller keeps (the host training step
/// reuses them from step to step): `out` and `codes` hold one value per
/// output, every one of which is written.
pub fn forward_into(input: &Input, dropout: Option<(f64, u64)>, out: &mut [f32], codes: &mut [u8]) {
    let [n, oh, ow, _] = input.output_shape();
    let per_image = oh * ow * FILTERS;
    assert_eq!((out.len(), codes.len()), (n * per_image, n * per_image));
    out.par_chunks_mut(per_image)
        .zip(codes.par_chunks_mut(per_image))
        .enumerate()
        .for_each_init(
            || conv_rows(input),
            |rows, (b, (out, codes))| {
                let dropout = dropout.map(|(p, seed)| Dropout::new(p, seed, b));
                forward_image(input, b, rows, dropout, out, Some(codes));
            },
        );
}

/// The forward pass for inference: no dropout, and no codes, which only
/// the backward pass reads.
pub fn infer_into(input: &Input, out: &mut [f32]) {
    let [n, oh, ow, _] = input.output_shape();
    let per_image = oh * ow * FILTERS;
    assert_eq!(out.len(), n * per_image);
    out.par_chunks_mut(per_image).enumerate().for_each_init(
        || conv_rows(input),
        |rows, (b, out)| forward_image(input, b, rows, None, out, None),
    );
}

/// Two rows of convolution outputs: all the max-pool ever needs at once, so
/// that they stay in the L1 cache.
pub type ConvRows = [Vec<[f32; FILTERS]>; 2];

fn conv_rows(input: &Input) -> ConvRows {
    let row = vec![[0.0; FILTERS]; input.conv_width()];
    [row.clone(), row]
}

/// One image of [`forward_into`] or [`infer_into`]: the convolution a row
/// at a time (on [`kernels::conv_row`]), each output row pooled from the
/// two conv rows under it ([`pool_row`]), the lower one kept for the next.
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
fn forward_image(
    input: &Input,
    b: usize,
    rows: &mut ConvRows,
    mut dropout: Option<Dropout>,
    out: &mut [f32],
    mut codes: Option<&mut [u8]>,
) {
    let row_len = (input.w - SHRINK) * FILTERS;
    input.convolve_row(b, 0, &mut rows[0]);
    for (y, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        let codes_row = codes
            .as_deref_mut()
            .map(|codes| &mut codes[y * row_len..(y + 1) * row_len]);
        input.convolve_row(b, y + 1, &mut rows[1]);
        pool_row(
            input,
            rows,
            dropout.as_mut(),
            &[0.0; FILTERS],
            out_row,
            codes_row,
        );
        rows.swap(0, 1);
    }
}

/// Output row `y` of image `b` for inference (no dropout, no codes) into
/// `out` (`(w - 3) × FILTERS` values), less each filter's `level`: both
/// conv rows under it, each [`Input::conv_width`] long in `rows`, then the
/// pool, the numbers [`infer_into`] gives with one subtraction each. For
/// the host's inference, which multiplies each row of features (their
/// differences from their values without ink) by the hidden layer while
/// it is in cache: this starts a run of rows, [`infer_row_after`] goes on
/// with it.
pub fn infer_row(
    input: &Input,
    b: usize,
    y: usize,
    level: &[f32; FILTERS],
    rows: &mut ConvRows,
    out: &mut [f32],
) {
    input.convolve_row(b, y, &mut rows[0]);
    infer_row_after(input, b, y, level, rows, out);
}

/// [`infer_row`] where `rows[0]` already holds conv row `y` (the lower one
/// of output row `y - 1`, or [`infer_row`]'s own): only conv row `y + 1` is
/// computed, so that a run of output rows convolves each row once (the
/// same numbers).
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
pub fn infer_row_after(
    input: &Input,
    b: usize,
    y: usize,
    level: &[f32; FILTERS],
    rows: &mut ConvRows,
    out: &mut [f32],
) {
    assert_eq!(out.len(), (input.w - SHRINK) * FILTERS, "one output row");
    debug_assert_eq!(rows[0].len(), input.conv_width(), "conv row y carried");
    input.convolve_row(b, y + 1, &mut rows[1]);
    pool_row(input, rows, None, level, out, None);
}

/// One output row from the conv rows above (`rows[0]`) and below it: the
/// max of each 2×2 window, plus bias, ReLU and dropout, less `level`, with
/// the winning position's code where asked. The loops run over the 32 filters,
/// contiguous in memory, with branch-free selects, inlined into functions
/// compiled for AVX-512 and AVX2 as well as the baseline and picked at run
/// time, so that they are vectorised wide. Ties go to the earliest window
/// position.
#[inline(always)]
fn pool_row(
    input: &Input,
    rows: &ConvRows,
    mut dropout: Option<&mut Dropout>,
    level: &[f32; FILTERS],
    out_row: &mut [f32],
    mut codes: Option<&mut [u8]>,
) {
    let [top, bottom] = rows;
    let mut keep = [1.0f32; FILTERS];
    for (x, out) in out_row.chunks_exact_mut(FILTERS).enumerate() {
        if let Some(dropout) = dropout.as_deref_mut() {
            dropout.next(&mut keep);
        }
        let (w0, w1, w2, w3) = (&top[x], &top[x + 1], &bottom[x], &bottom[x + 1]);
        let mut code = [DEAD; FILTERS];
        for f in 0..FILTERS {
            let (a, b, c, d) = (w0[f], w1[f], w2[f], w3[f]);
            let best = a.max(b).max(c.max(d));
            let won = if best == a {
                0
            } else if best == b {
                1
            } else if best == c {
                2
            } else {
                3
            };
            let v = best + input.bias[f];
            let live = v > 0.0 && keep[f] != 0.0;
            out[f] = if live { v * keep[f] } else { 0.0 } - level[f];
            code[f] = if live { won } else { DEAD };
        }
        if let Some(codes) = codes.as_deref_mut() {
            codes[x * FILTERS..(x + 1) * FILTERS].copy_from_slice(&code);
        }
    }
}

/// The backward pass: each live output's gradient goes to its window's
/// winning convolution output, and from there into the weight gradient
/// (times the image window) and the bias gradient. Per-image partial sums
/// are added in image order, so the result does not depend on threads.
fn backward(grad: &[f32], saved: &Saved) -> (Kernel, [f32; FILTERS]) {
    backward_host(&saved.input, &saved.codes, saved.scale, grad)
}

/// [`backward`] from host values: the inputs, the codes [`forward_into`]
/// wrote, the dropout scale (`1/(1-p)`, or 1 without dropout) and the
/// gradient of the outputs. Returns the kernel and bias gradients.
pub fn backward_host(
    input: &Input,
    codes: &[u8],
    scale: f32,
    grad: &[f32],
) -> (Kernel, [f32; FILTERS]) {
    let [_, oh, ow, _] = input.output_shape();
    let per_image = oh * ow * FILTERS;
    let parts: Vec<(Kernel, [f32; FILTERS])> = grad
        .par_chunks(per_image)
        .zip(codes.par_chunks(per_image))
        .enumerate()
        .map_init(Vec::new, |grad_conv, (b, (grad, codes))| {
            backward_image(input, b, grad, codes, scale, grad_conv)
        })
        .collect();
    let mut grad_weight = [[0.0f32; FILTERS]; TAPS];
    let mut grad_bias = [0.0f32; FILTERS];
    for (w, b) in parts {
        for (total, part) in grad_weight.iter_mut().zip(&w) {
            for (t, p) in total.iter_mut().zip(part) {
                *t += p;
            }
        }
        for (t, p) in grad_bias.iter_mut().zip(&b) {
            *t += p;
        }
    }
    (grad_weight, grad_bias)
}

/// The columns of an image row from its first pixel that is not zero to
/// its last (empty where it has none).
fn ink_columns(row: &[f32]) -> std::ops::Range<usize> {
    match row.iter().position(|&p| p != 0.0) {
        Some(first) => first..row.iter().rposition(|&p| p != 0.0).unwrap_or(first) + 1,
        None => 0..0,
    }
}

/// The positions, of `positions` in a row, whose windows `size` pixels
/// wide over the rows whose [`ink_columns`] are `rows` can hold a pixel
/// that is not zero: the MNIST digit's box, about half of them. MNIST's
/// background is exactly zero, and the backward pass skips the rest.
fn window_positions(
    rows: &[std::ops::Range<usize>],
    size: usize,
    positions: usize,
) -> std::ops::Range<usize> {
    let inked = rows.iter().filter(|r| !r.is_empty());
    let first = inked.clone().map(|r| r.start).min();
    let end = inked.map(|r| r.end).max();
    match (first, end) {
        (Some(first), Some(end)) => {
            first.saturating_sub(size - 1).min(positions)..end.min(positions)
        }
        _ => 0..0,
    }
}

/// One image of [`backward`], multiversioned like [`forward_image`].
#[cfg_attr(
    feature = "avx512",
    multiversion(targets("x86_64+avx512f+avx512bw+avx512vl", "x86_64+avx2+fma"))
)]
#[cfg_attr(not(feature = "avx512"), multiversion(targets("x86_64+avx2+fma")))]
fn backward_image(
    input: &Input,
    b: usize,
    grad: &[f32],
    codes: &[u8],
    scale: f32,
    grad_conv: &mut Vec<[f32; FILTERS]>,
) -> ([[f32; FILTERS]; TAPS], [f32; FILTERS]) {
    let ow = input.w - SHRINK;
    let cw = input.conv_width();
    grad_conv.clear();
    grad_conv.resize((input.h - KERNEL + 1) * cw, [0.0; FILTERS]);
    let mut grad_bias = [0.0f32; FILTERS];
    let image = input.image(b);
    let ink: Vec<std::ops::Range<usize>> = image.chunks_exact(input.w).map(ink_columns).collect();
    let rows = grad
        .chunks_exact(ow * FILTERS)
        .zip(codes.chunks_exact(ow * FILTERS));
    for (y, (grad, codes)) in rows.enumerate() {
        // Each window position takes the gradient of the filters it won,
        // where its 4×4 pixels can have ink: no other conv position's
        // gradient is multiplied by a pixel that is not zero below.
        let inked = window_positions(&ink[y..y + SHRINK + 1], SHRINK + 1, ow);
        let pixels = grad.chunks_exact(FILTERS).zip(codes.chunks_exact(FILTERS));
        for (x, (grad, codes)) in pixels.enumerate() {
            let scaled: [f32; FILTERS] = std::array::from_fn(|f| grad[f] * scale);
            for f in 0..FILTERS {
                grad_bias[f] += if codes[f] == DEAD { 0.0 } else { scaled[f] };
            }
            if !inked.contains(&x) {
                continue;
            }
            let at = y * cw + x;
            for (k, offset) in [0, 1, cw, cw + 1].into_iter().enumerate() {
                let target = &mut grad_conv[at + offset];
                for f in 0..FILTERS {
                    target[f] += if codes[f] == k as u8 { scaled[f] } else { 0.0 };
                }
            }
        }
    }
    // One row of the kernel's taps at a time, over every position: their
    // 3 × 32 sums stay in registers, where all nine taps' spilled to memory
    // (a batch's backward pass took 0.66 ms on a Zen 3's two cores, now
    // 0.41). Each sum still runs in order of position, so the numbers are
    // the same. A multiply and an add, not `mul_add`: the sums every model
    // so far was trained with (and fused, the loop ran 3.5× slower).
    let mut grad_weight = [[0.0f32; FILTERS]; TAPS];
    for (dy, taps) in grad_weight.chunks_exact_mut(KERNEL).enumerate() {
        let mut sums = [[0.0f32; FILTERS]; KERNEL];
        for (y, g_row) in grad_conv.chunks_exact(cw).enumerate() {
            let image_row = &image[(y + dy) * input.w..(y + dy + 1) * input.w];
            // Only the positions whose three pixels in this row can have
            // ink: the others add g·0 = ±0 to a sum that is never -0 (it
            // starts at +0 and an exact cancellation gives +0), which
            // changes no bit while g is finite.
            let inked = window_positions(&ink[y + dy..y + dy + 1], KERNEL, cw);
            let g_row = &g_row[inked.clone()];
            let windows = image_row[inked.start..].windows(KERNEL);
            for (g, window) in g_row.iter().zip(windows) {
                let [p0, p1, p2] = [window[0], window[1], window[2]];
                for f in 0..FILTERS {
                    sums[0][f] += g[f] * p0;
                    sums[1][f] += g[f] * p1;
                    sums[2][f] += g[f] * p2;
                }
            }
        }
        taps.copy_from_slice(&sums);
    }
    (grad_weight, grad_bias)
}

/// Records the op for autodiff. The images get no gradient (they are data).
#[derive(Debug)]
struct ConvBlockBackward;

impl<B: BurnBackend> Backward<B, 2> for ConvBlockBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let device = grad.device();
        let (grad, _) = to_host::<B>(grad);
        let (grad_weight, grad_bias) = backward(&grad, &ops.state);
        let [weight_node, bias_node] = ops.parents;
        if let Some(node) = weight_node {
            let data = TensorData::new(kernel_to_burn(&grad_weight), [FILTERS, 1, KERNEL, KERNEL]);
            grads.register::<B>(node.id, B::float_from_data(data, &device));
        }
        if let Some(node) = bias_node {
            let data = TensorData::new(grad_bias.to_vec(), [FILTERS]);
            grads.register::<B>(node.id, B::float_from_data(data, &device));
        }
    }
}

impl<B: BurnBackend, C: CheckpointStrategy> ConvBlockOps for Autodiff<B, C> {
    fn conv_block(
        images: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dropout: Option<(f64, u64)>,
    ) -> FloatTensor<Self> {
        let device = images.primitive().device();
        let prep = ConvBlockBackward
            .prepare::<C>([weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let input = Input::read::<B>(
            images.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let shape = input.output_shape();
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, codes) = forward(&input, dropout);
                let out = B::float_from_data(TensorData::new(out, shape), &device);
                let scale = dropout.map_or(1.0, |(p, _)| (1.0 / (1.0 - p)) as f32);
                let saved = Saved {
                    input: Arc::new(input),
                    codes: Arc::new(codes),
                    scale,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => {
                let out = untracked(&input, dropout);
                prep.finish(B::float_from_data(TensorData::new(out, shape), &device))
            }
        }
    }
}

/// Reads a tensor's values to the host as f32, with its dimensions.
fn to_host<B: BurnBackend>(tensor: FloatTensor<B>) -> (Vec<f32>, Vec<usize>) {
    let data = read_sync(B::float_into_data(tensor)).expect("CPU tensors can be read back");
    let dims = data.shape().to_vec();
    let values = data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32");
    (values, dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::{assert_close, values};
    use burn::tensor::activation::relu;
    use burn::tensor::module::{conv2d, max_pool2d};
    use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
    use burn::tensor::{Distribution, TensorData};

    /// Lane `i` of a draw decides by the draw's byte `i`, lowest first: the
    /// masks every model so far was trained with.
    #[test]
    fn dropout_decides_by_the_bytes_of_each_draw_lowest_first() {
        for p in [0.25, 0.5, 0.30078125] {
            let mut dropout = Dropout::new(p, 7, 3);
            let mut draws = dropout.rng.clone();
            let threshold = (p * 256.0).round() as u64;
            let scale = (1.0 / (1.0 - p)) as f32;
            for _ in 0..100 {
                let mut keep = [f32::NAN; FILTERS];
                dropout.next(&mut keep);
                for chunk in keep.chunks_exact(8) {
                    let bits: u64 = draws.random();
                    for (lane, &value) in chunk.iter().enumerate() {
                        let kept = (bits >> (8 * lane)) & 0xff >= threshold;
                        assert_eq!(value, if kept { scale } else { 0.0 }, "p {p}");
                    }
                }
            }
        }
    }

    /// The block from Burn's stock ops (channels-first, permuted to
    /// channels-last): the yardstick for values and gradients.
    fn reference(
        images: Tensor<3>,
        weight: Tensor<4>,
        bias: Tensor<1>,
        mask: Option<Tensor<4>>,
    ) -> Tensor<4> {
        let conv = conv2d(
            images.unsqueeze_dim(1),
            weight,
            Some(bias),
            ConvOptions::new([1, 1], [0, 0], [1, 1], 1),
        );
        let pooled = max_pool2d(
            relu(conv),
            MaxPoolOptions::new([POOL, POOL]).with_stride([1, 1]),
        );
        let out = pooled.permute([0, 2, 3, 1]);
        match mask {
            Some(mask) => out * mask,
            None => out,
        }
    }

    #[test]
    fn values_and_gradients_match_burns_own_ops() {
        let device = crate::backend::host_device().autodiff();
        device.seed(3);
        let (n, h, w) = (3, 9, 8);
        let images = Tensor::<3>::random([n, h, w], Distribution::Default, &device);
        let weight = Tensor::<4>::random(
            [FILTERS, 1, KERNEL, KERNEL],
            Distribution::Normal(0.0, 0.5),
            &device,
        );
        let bias = Tensor::<1>::random([FILTERS], Distribution::Normal(0.0, 0.3), &device);
        let (oh, ow) = (h - SHRINK, w - SHRINK);
        let upstream = Tensor::<4>::random([n, oh, ow, FILTERS], Distribution::Default, &device);
        let per_image = oh * ow * FILTERS;

        for dropout in [None, Some((0.25, 11u64))] {
            let mask = dropout.map(|(p, seed)| {
                let mut keep = vec![0.0f32; n * per_image];
                for (b, chunk) in keep.chunks_mut(per_image).enumerate() {
                    dropout_keep(p, seed, b, chunk);
                }
                Tensor::<4>::from_data(TensorData::new(keep, [n, oh, ow, FILTERS]), &device)
            });
            let mut results = Vec::new();
            for fused in [true, false] {
                let weight = weight.clone().require_grad();
                let bias = bias.clone().require_grad();
                let out = if fused {
                    conv_block(images.clone(), weight.clone(), bias.clone(), dropout)
                } else {
                    reference(images.clone(), weight.clone(), bias.clone(), mask.clone())
                };
                let grads = (out.clone() * upstream.clone()).sum().backward();
                let grad_weight = weight.grad(&grads).expect("weight gradient");
                let grad_bias = bias.grad(&grads).expect("bias gradient");
                results.push((values(out), values(grad_weight), values(grad_bias)));
            }
            let (fused, reference) = (&results[0], &results[1]);
            assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0));
            assert_close(&fused.0, &reference.0, "outputs");
            assert_close(&fused.1, &reference.1, "weight gradients");
            assert_close(&fused.2, &reference.2, "bias gradients");
        }
    }

    /// `len` numbers in [-1, 1) drawn from `seed`.
    fn numbers(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// Digit-like inputs: `n` images `h × w`, zero but for a box of random
    /// ink that moves from image to image and, in image 1, one pixel in
    /// each corner; image 2 is blank.
    fn inked(n: usize, h: usize, w: usize) -> Vec<f32> {
        let noise = numbers(n * h * w, 5);
        let mut images = vec![0.0f32; n * h * w];
        for b in 0..n {
            let image = &mut images[b * h * w..(b + 1) * h * w];
            if b == 2 {
                continue;
            }
            let (top, left) = (1 + b % 5, 2 + b % 7);
            for y in top..(top + h / 2).min(h) {
                for x in left..(left + w / 2).min(w) {
                    image[y * w + x] = noise[(b * h + y) * w + x].abs();
                }
            }
            if b == 1 {
                for at in [0, w - 1, (h - 1) * w, h * w - 1] {
                    image[at] = 0.5;
                }
            }
        }
        images
    }

    /// The backward pass as it was before it skipped the blank windows:
    /// every position's gradient scattered, every position's taps summed.
    fn backward_everywhere(
        input: &Input,
        codes: &[u8],
        scale: f32,
        grad: &[f32],
    ) -> (Kernel, [f32; FILTERS]) {
        let (ow, cw) = (input.w - SHRINK, input.conv_width());
        let per_image = (input.h - SHRINK) * ow * FILTERS;
        let mut total = ([[0.0f32; FILTERS]; TAPS], [0.0f32; FILTERS]);
        for b in 0..input.n {
            let (grad, codes) = (&grad[b * per_image..][..per_image], &codes[b * per_image..]);
            let mut grad_conv = vec![[0.0f32; FILTERS]; (input.h - KERNEL + 1) * cw];
            let mut grad_bias = [0.0f32; FILTERS];
            for (pixel, grad) in grad.chunks_exact(FILTERS).enumerate() {
                let at = pixel / ow * cw + pixel % ow;
                for f in 0..FILTERS {
                    let (g, code) = (grad[f] * scale, codes[pixel * FILTERS + f]);
                    for (k, offset) in [0, 1, cw, cw + 1].into_iter().enumerate() {
                        grad_conv[at + offset][f] += if code == k as u8 { g } else { 0.0 };
                    }
                    grad_bias[f] += if code == DEAD { 0.0 } else { g };
                }
            }
            let image = input.image(b);
            let mut grad_weight = [[0.0f32; FILTERS]; TAPS];
            for (t, taps) in grad_weight.iter_mut().enumerate() {
                for (y, g_row) in grad_conv.chunks_exact(cw).enumerate() {
                    for (x, g) in g_row.iter().enumerate() {
                        let p = image[(y + t / KERNEL) * input.w + x + t % KERNEL];
                        for f in 0..FILTERS {
                            taps[f] += g[f] * p;
                        }
                    }
                }
            }
            for (sum, part) in total.0.iter_mut().zip(&grad_weight) {
                for (s, p) in sum.iter_mut().zip(part) {
                    *s += p;
                }
            }
            for (s, p) in total.1.iter_mut().zip(&grad_bias) {
                *s += p;
            }
        }
        total
    }

    #[test]
    fn the_backward_pass_skips_only_blank_windows_bit_for_bit() {
        // MNIST's 28 × 28, and a row wider than the ink masks' 64 bits.
        for (n, h, w) in [(7, 28, 28), (3, 9, 70)] {
            let input = Input {
                images: inked(n, h, w),
                n,
                h,
                w,
                weight: std::array::from_fn(|t| {
                    std::array::from_fn(|f| numbers(TAPS * FILTERS, 2)[t * FILTERS + f])
                }),
                // Positive and negative biases: blank windows live and dead.
                bias: std::array::from_fn(|f| if f % 3 == 0 { 0.2 } else { -0.01 }),
            };
            let len = n * (h - SHRINK) * (w - SHRINK) * FILTERS;
            let grad = numbers(len, 7);
            for dropout in [None, Some((0.25, 3u64))] {
                let (mut out, mut codes) = (vec![0.0; len], vec![0; len]);
                forward_into(&input, dropout, &mut out, &mut codes);
                let scale = if dropout.is_some() { 1.0 / 0.75 } else { 1.0 };
                let got = backward_host(&input, &codes, scale, &grad);
                let expected = backward_everywhere(&input, &codes, scale, &grad);
                let bits = |(w, b): &(Kernel, [f32; FILTERS])| -> Vec<u32> {
                    w.as_flattened()
                        .iter()
                        .chain(b)
                        .map(|v| v.to_bits())
                        .collect()
                };
                let nonzero = expected.0.as_flattened().iter().filter(|v| **v != 0.0);
                assert!(
                    nonzero.count() > TAPS * FILTERS / 2,
                    "a degenerate gradient"
                );
                assert_eq!(bits(&got), bits(&expected), "{n} × {h} × {w}, {dropout:?}");
            }
        }
    }

    #[test]
    fn ink_bounds_the_windows_that_can_see_it() {
        assert_eq!(ink_columns(&[0.0, 0.0, 0.3, 0.0, 0.1, 0.0]), 2..5);
        assert_eq!(ink_columns(&[0.0, -0.0, 0.0]), 0..0);
        assert_eq!(ink_columns(&[0.4]), 0..1);
        // Windows 3 wide over 6 positions (an 8-pixel row): those that
        // reach column 2 to column 4, over the rows' union.
        assert_eq!(window_positions(std::slice::from_ref(&(2..5)), 3, 6), 0..5);
        assert_eq!(window_positions(&[0..0, 6..8, 0..0], 3, 6), 4..6);
        assert_eq!(window_positions(&[3..4, 0..0, 5..6], 4, 5), 0..5);
        assert_eq!(window_positions(&[0..0, 0..0], 3, 6), 0..0);
    }

    #[test]
    fn works_without_autodiff() {
        let device = crate::backend::host_device();
        let images = Tensor::<3>::random([2, 6, 7], Distribution::Default, &device);
        let weight = Tensor::<4>::random(
            [FILTERS, 1, KERNEL, KERNEL],
            Distribution::Normal(0.0, 0.5),
            &device,
        );
        let bias = Tensor::<1>::zeros([FILTERS], &device);
        let fused = values(conv_block(
            images.clone(),
            weight.clone(),
            bias.clone(),
            None,
        ));
        assert_close(
            &fused,
            &values(reference(images, weight, bias, None)),
            "outputs",
        );
    }
}
