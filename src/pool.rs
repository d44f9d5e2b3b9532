//! A fused `relu(max_pool_2x2_s1(conv) + bias)` as one Burn backend op with
//! its own backward pass.
//!
//! Written with Burn's tensor ops, this block is four shifted slices, two
//! `max_pair`s, a bias add and a ReLU, each a full pass over 2.7 MB per
//! batch of 32 with a mask-driven backward of its own: together more than a
//! third of a training step. Here it is one pass forward, recording for each
//! output which of its four inputs won (or that ReLU zeroed it), and one
//! scatter backward. It is a [backend extension](burn::backend::backend_extension):
//! the plain CPU backends compute it on the host, and the autodiff backend
//! records the op with the backward below.

use std::sync::Arc;

use rayon::prelude::*;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Backend, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::tensor::{Tensor, TensorData, read_sync};

/// The fused pooling block as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Autodiff,
)]
pub trait PoolOps: Backend {
    /// `conv`: `[n, h, w, c]` channels-last; `bias`: `[c]`. Returns
    /// `relu(max over each 2×2 window, stride 1, + bias)`: `[n, h-1, w-1, c]`.
    fn bias_relu_max_pool(conv: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let device = conv.device();
        let (conv, shape) = to_host::<Self>(conv);
        let (bias, _) = to_host::<Self>(bias);
        let (out, _) = forward(&conv, shape, &bias);
        Self::float_from_data(TensorData::new(out, output_shape(shape)), &device)
    }
}

#[cfg(feature = "flex")]
impl PoolOps for burn::backend::Flex {}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // Burn deprecates ndarray in favour of flex; it stays as the design's option.
impl PoolOps for burn::backend::NdArray {}

/// Applies the fused block to Burn tensors (with autodiff where enabled).
pub fn bias_relu_max_pool(conv: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(<burn::backend::Dispatch as PoolOps>::bias_relu_max_pool(
        conv.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// What the backward pass needs: the input shape and, for every output,
/// which window position won (0-3) or [`DEAD`] where ReLU gave 0.
#[derive(Debug, Clone)]
struct Winners {
    shape: [usize; 4],
    codes: Arc<Vec<u8>>,
}

/// Code of an output that ReLU clamped to zero: no gradient flows back.
const DEAD: u8 = 4;

#[derive(Debug)]
struct BiasReluMaxPoolBackward;

impl<B: Backend> Backward<B, 2> for BiasReluMaxPoolBackward {
    type State = Winners;

    fn backward(self, ops: Ops<Winners, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let device = grad.device();
        let (grad, _) = to_host::<B>(grad);
        let (grad_conv, grad_bias) = backward(&grad, &ops.state);
        let [conv_node, bias_node] = ops.parents;
        let [n, h, w, c] = ops.state.shape;
        if let Some(node) = conv_node {
            let data = TensorData::new(grad_conv, [n, h, w, c]);
            grads.register::<B>(node.id, B::float_from_data(data, &device));
        }
        if let Some(node) = bias_node {
            let data = TensorData::new(grad_bias, [c]);
            grads.register::<B>(node.id, B::float_from_data(data, &device));
        }
    }
}

impl<B: Backend, C: CheckpointStrategy> PoolOps for Autodiff<B, C> {
    fn bias_relu_max_pool(conv: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let device = conv.primitive().device();
        let prep = BiasReluMaxPoolBackward
            .prepare::<C>([conv.node(), bias.node()])
            .compute_bound()
            .stateful();
        let (conv, shape) = to_host::<B>(conv.into_primitive());
        let (bias, _) = to_host::<B>(bias.into_primitive());
        let (out, codes) = forward(&conv, shape, &bias);
        let out = B::float_from_data(TensorData::new(out, output_shape(shape)), &device);
        match prep {
            OpsKind::Tracked(prep) => prep.finish(
                Winners {
                    shape,
                    codes: Arc::new(codes),
                },
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }
}

fn output_shape([n, h, w, c]: [usize; 4]) -> [usize; 4] {
    [n, h - 1, w - 1, c]
}

/// Reads a tensor's values to the host as f32, with its shape padded to 4-D.
fn to_host<B: Backend>(tensor: FloatTensor<B>) -> (Vec<f32>, [usize; 4]) {
    let data = read_sync(B::float_into_data(tensor)).expect("CPU tensors can be read back");
    let mut shape = [1usize; 4];
    let dims = data.shape().to_vec();
    shape[4 - dims.len()..].copy_from_slice(&dims);
    let values = data
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("converted to f32");
    (values, shape)
}

/// The forward pass on host slices: outputs and the winner codes.
///
/// Images are independent, so they are split across threads. Within one,
/// the innermost loop runs over the channels of an output pixel, whose four
/// window inputs are contiguous runs of `c` values: branch-free selects that
/// the compiler vectorises. Ties go to the earliest position, as the
/// reference's `max_pair`s may not; that only matters where the window's
/// values are equal, e.g. blank background, where the conv's patches are all
/// zero and so get no weight gradient either way.
fn forward(conv: &[f32], [n, h, w, c]: [usize; 4], bias: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let (oh, ow) = (h - 1, w - 1);
    let per_image = oh * ow * c;
    let mut out = vec![0.0f32; n * per_image];
    let mut codes = vec![DEAD; out.len()];
    let row = w * c;
    out.par_chunks_mut(per_image)
        .zip(codes.par_chunks_mut(per_image))
        .zip(conv.par_chunks(h * row))
        .for_each(|((out, codes), image)| {
            let outputs = out.chunks_exact_mut(c).zip(codes.chunks_exact_mut(c));
            for (pixel, (out, codes)) in outputs.enumerate() {
                let at = (pixel / ow * w + pixel % ow) * c;
                let window = |start: usize| &image[start..start + c];
                let inputs = window(at)
                    .iter()
                    .zip(window(at + c))
                    .zip(window(at + row))
                    .zip(window(at + row + c))
                    .zip(bias);
                for ((out, code), ((((&a, &b), &c2), &d), &bias)) in
                    out.iter_mut().zip(codes).zip(inputs)
                {
                    let (top, top_code) = if b > a { (b, 1) } else { (a, 0) };
                    let (bottom, bottom_code) = if d > c2 { (d, 3) } else { (c2, 2) };
                    let (best, best_code) = if bottom > top {
                        (bottom, bottom_code)
                    } else {
                        (top, top_code)
                    };
                    let v = best + bias;
                    let live = v > 0.0;
                    *out = if live { v } else { 0.0 };
                    *code = if live { best_code } else { DEAD };
                }
            }
        });
    (out, codes)
}

/// The backward pass: each live output's gradient goes to its window's
/// winner and to its channel's bias. Images are split across threads; the
/// bias gradient is summed per image, then over images in order, so the
/// result does not depend on the thread count.
fn backward(grad: &[f32], winners: &Winners) -> (Vec<f32>, Vec<f32>) {
    let [n, h, w, c] = winners.shape;
    let (oh, ow) = (h - 1, w - 1);
    let per_image = oh * ow * c;
    let row = w * c;
    let mut grad_conv = vec![0.0f32; n * h * row];
    let bias_parts: Vec<Vec<f32>> = grad_conv
        .par_chunks_mut(h * row)
        .zip(grad.par_chunks(per_image))
        .zip(winners.codes.par_chunks(per_image))
        .map(|((grad_conv, grad), codes)| {
            let mut grad_bias = vec![0.0f32; c];
            let pixels = grad.chunks_exact(c).zip(codes.chunks_exact(c));
            for (pixel, (grad, codes)) in pixels.enumerate() {
                let at = (pixel / ow * w + pixel % ow) * c;
                let windows = [at, at + c, at + row, at + row + c];
                for (ch, (&g, &code)) in grad.iter().zip(codes).enumerate() {
                    if code != DEAD {
                        grad_conv[windows[code as usize] + ch] += g;
                        grad_bias[ch] += g;
                    }
                }
            }
            grad_bias
        })
        .collect();
    let mut grad_bias = vec![0.0f32; c];
    for part in bias_parts {
        for (total, v) in grad_bias.iter_mut().zip(part) {
            *total += v;
        }
    }
    (grad_conv, grad_bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::relu;
    use burn::tensor::{Distribution, s};

    /// The same block from Burn's own ops: the yardstick for value and gradient.
    fn reference(conv: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
        let [_, h, w, c] = conv.dims();
        let rows = conv
            .clone()
            .slice(s![.., 0..h - 1])
            .max_pair(conv.slice(s![.., 1..h]));
        let pooled = rows
            .clone()
            .slice(s![.., .., 0..w - 1])
            .max_pair(rows.slice(s![.., .., 1..w]));
        relu(pooled + bias.reshape([1, 1, 1, c]))
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    #[test]
    fn values_and_gradients_match_burns_own_ops() {
        let device = crate::backend::device().autodiff();
        device.seed(3);
        let conv = Tensor::<4>::random([2, 5, 6, 3], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([3], Distribution::Normal(0.0, 0.5), &device);
        let weights = Tensor::<4>::random([2, 4, 5, 3], Distribution::Default, &device);

        let mut results = Vec::new();
        for fused in [true, false] {
            let conv = conv.clone().require_grad();
            let bias = bias.clone().require_grad();
            let out = if fused {
                bias_relu_max_pool(conv.clone(), bias.clone())
            } else {
                reference(conv.clone(), bias.clone())
            };
            let grads = (out.clone() * weights.clone()).sum().backward();
            let grad_conv = conv.grad(&grads).expect("conv gradient");
            let grad_bias = bias.grad(&grads).expect("bias gradient");
            results.push((values(out), values(grad_conv), values(grad_bias)));
        }
        let (fused, reference) = (&results[0], &results[1]);
        assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0));
        assert!(close(&fused.0, &reference.0), "outputs differ");
        assert!(close(&fused.1, &reference.1), "conv gradients differ");
        assert!(close(&fused.2, &reference.2), "bias gradients differ");
    }

    #[test]
    fn works_without_autodiff() {
        let device = crate::backend::device();
        let conv = Tensor::<4>::random([1, 3, 3, 2], Distribution::Default, &device);
        let bias = Tensor::<1>::zeros([2], &device);
        let fused = values(bias_relu_max_pool(conv.clone(), bias.clone()));
        assert!(close(&fused, &values(reference(conv, bias))));
    }
}
