//! The hidden layer, `relu(x·W + b)` with W 20,000×128, as one Burn backend
//! op with its own backward pass.
//!
//! This layer is 92% of the network's arithmetic, and Burn's own ops already
//! run its matmuls on a good kernel (the `gemm` crate). What they add around
//! it costs as much again: every matmul result is allocated zeroed and then
//! copied into an aligned buffer, so the 10 MB weight gradient alone is
//! written three times a step, and bias, ReLU and their backward passes are
//! more passes still. Here the three matmuls (forward, weight gradient,
//! input gradient) write straight into the tensors they return, with bias,
//! ReLU and their gradients folded in, reading Flex's tensors in place. Other
//! backends compose the op from their own tensor ops.

// The extension macro names burn-ndarray, which Burn deprecates in favour of flex; it
// stays as the design's alternative backend.
#![cfg_attr(feature = "ndarray", allow(deprecated))]

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{
    Autodiff, Backend as BurnBackend, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::tensor::{Shape, Tensor};

/// The fused dense layer as a backend operation.
#[backend_extension(
    Flex: cfg(feature = "flex"),
    NdArray: cfg(feature = "ndarray"),
    Autodiff,
)]
pub trait DenseOps: BurnBackend {
    /// `relu(x·w + b)` for `x`: `[n, i]`, `w`: `[i, o]`, `b`: `[o]`. By default
    /// composed of the backend's own ops.
    fn dense_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let o = b.shape()[0];
        let b = Self::float_reshape(b, Shape::new([1, o]));
        Self::relu(Self::float_add(Self::float_matmul(x, w), b))
    }

    /// The gradients `(dx, dw, db)` of [`dense_relu`](DenseOps::dense_relu),
    /// given its inputs, its output and the gradient of its output.
    fn dense_relu_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        out: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let g = Self::relu_backward(out, grad);
        let o = g.shape()[1];
        let dx = Self::float_matmul(g.clone(), Self::float_transpose(w));
        let dw = Self::float_matmul(Self::float_transpose(x), g.clone());
        let db = Self::float_reshape(Self::float_sum_dim(g, 0), Shape::new([o]));
        (dx, dw, db)
    }
}

/// `out = relu(x·w + b)` on the host, for `x`: `n × i`, `w`: `i × o`,
/// `b`: `o`, all row-major: the forward pass of the op on Flex, for any
/// shape (the host step's own takes [`crate::kernels::sparse_product`]).
#[cfg(feature = "flex")]
pub fn forward_host(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    n: usize,
    i: usize,
    o: usize,
    out: &mut [f32],
) {
    crate::matmul::product_split_k(out, n, i, o, x, w);
    bias_relu_host(out, b);
}

/// `out = relu(out + b)` for each row of `out` (as long as `b`): the end of
/// the layer's forward pass, here and in the host's training step and
/// inference.
pub fn bias_relu_host(out: &mut [f32], b: &[f32]) {
    for row in out.chunks_exact_mut(b.len()) {
        for (v, &bias) in row.iter_mut().zip(b) {
            *v = (*v + bias).max(0.0);
        }
    }
}

/// ReLU's backward pass on the host: zeroes the gradient `grad` (`n × o`)
/// where the output `out` was not positive, and adds the result's column
/// sums (the bias gradient) to `db`.
pub fn relu_backward_host(grad: &mut [f32], out: &[f32], db: &mut [f32], o: usize) {
    for (g_row, out_row) in grad.chunks_exact_mut(o).zip(out.chunks_exact(o)) {
        for ((g, &y), total) in g_row.iter_mut().zip(out_row).zip(db.iter_mut()) {
            if y <= 0.0 {
                *g = 0.0;
            }
            *total += *g;
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use super::*;
    use crate::matmul::{Matrix, matmul};
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;

    /// Runs `f` on the tensor's values, in place when they are contiguous.
    fn with_values<R>(t: &FlexTensor, f: impl FnOnce(&[f32]) -> R) -> R {
        if t.is_contiguous() && t.layout().start_offset() == 0 {
            f(&t.storage::<f32>()[..t.layout().num_elements()])
        } else {
            let data = t.clone().into_data();
            f(data.as_slice::<f32>().expect("f32 tensor"))
        }
    }

    fn dims2(t: &FlexTensor) -> [usize; 2] {
        <[usize; 2]>::try_from(&t.layout().shape()[..]).expect("a matrix")
    }

    impl DenseOps for Flex {
        fn dense_relu(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
            let ([n, i], [_, o]) = (dims2(&x), dims2(&w));
            let out = with_values(&x, |x| {
                with_values(&w, |w| with_values(&b, |b| forward(x, w, b, n, i, o)))
            });
            FlexTensor::from_data(TensorData::new(out, [n, o]))
        }

        fn dense_relu_backward(
            x: FlexTensor,
            w: FlexTensor,
            out: FlexTensor,
            grad: FlexTensor,
        ) -> (FlexTensor, FlexTensor, FlexTensor) {
            let ([n, i], [_, o]) = (dims2(&x), dims2(&w));
            let grad = with_values(&grad, <[f32]>::to_vec);
            let (dx, dw, db) = with_values(&x, |x| {
                with_values(&w, |w| {
                    with_values(&out, |out| backward(x, w, out, grad, n, i, o))
                })
            });
            (
                FlexTensor::from_data(TensorData::new(dx, [n, i])),
                FlexTensor::from_data(TensorData::new(dw, [i, o])),
                FlexTensor::from_data(TensorData::new(db, [o])),
            )
        }
    }

    fn forward(x: &[f32], w: &[f32], b: &[f32], n: usize, i: usize, o: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n * o];
        forward_host(x, w, b, n, i, o, &mut out);
        out
    }

    /// `(dx, dw, db)` on the host: the gradient is zeroed where ReLU was, then
    /// `dx = g·wᵀ`, `dw = xᵀ·g` and `db` = the column sums of `g`.
    fn backward(
        x: &[f32],
        w: &[f32],
        out: &[f32],
        mut grad: Vec<f32>,
        n: usize,
        i: usize,
        o: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut db = vec![0.0f32; o];
        relu_backward_host(&mut grad, out, &mut db, o);
        let dx = matmul(
            n,
            o,
            i,
            Matrix::row_major(&grad, o),
            Matrix::transposed(w, o),
        );
        let dw = matmul(
            i,
            n,
            o,
            Matrix::transposed(x, i),
            Matrix::row_major(&grad, o),
        );
        (dx, dw, db)
    }
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // Burn deprecates ndarray in favour of flex; it stays as the design's option.
impl DenseOps for burn::backend::NdArray {}

/// Applies the fused layer to Burn tensors (recorded for autodiff where enabled).
pub fn dense_relu(x: Tensor<2>, w: Tensor<2>, b: Tensor<1>) -> Tensor<2> {
    Tensor::from_dispatch(<burn::backend::Dispatch as DenseOps>::dense_relu(
        x.into_dispatch(),
        w.into_dispatch(),
        b.into_dispatch(),
    ))
}

/// Records the op for autodiff: parents x, w, b.
#[derive(Debug)]
struct DenseReluBackward;

impl<B: BurnBackend + DenseOps> Backward<B, 3> for DenseReluBackward {
    /// x, w and the op's output.
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        let (x, w, out) = ops.state;
        let (dx, dw, db) = B::dense_relu_backward(x, w, out, grad);
        let [x_node, w_node, b_node] = ops.parents;
        for (node, grad) in [(x_node, dx), (w_node, dw), (b_node, db)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

impl<B: BurnBackend + DenseOps, C: CheckpointStrategy> DenseOps for Autodiff<B, C> {
    fn dense_relu(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let prep = DenseReluBackward
            .prepare::<C>([x.node(), w.node(), b.node()])
            .compute_bound()
            .stateful();
        let (x, w) = (x.into_primitive(), w.into_primitive());
        let out = B::dense_relu(x.clone(), w.clone(), b.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, w, out.clone()), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        }
    }

    fn dense_relu_backward(
        _x: FloatTensor<Self>,
        _w: FloatTensor<Self>,
        _out: FloatTensor<Self>,
        _grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        unreachable!("the backward pass runs on the inner backend, never differentiated itself")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, values};
    use burn::tensor::Distribution;
    use burn::tensor::activation::relu;

    #[test]
    fn values_and_gradients_match_burns_own_ops() {
        check_against_burn(5, 37, 11);
    }

    /// At the network's real shape, where gemm takes its packed,
    /// multi-threaded path rather than the small-matrix one.
    #[test]
    fn values_and_gradients_match_burns_own_ops_at_the_real_shape() {
        check_against_burn(32, crate::arch::FEATURES, crate::arch::HIDDEN);
    }

    fn check_against_burn(n: usize, i: usize, o: usize) {
        let device = crate::backend::host_device().autodiff();
        device.seed(5);
        let x = Tensor::<2>::random([n, i], Distribution::Normal(0.0, 1.0), &device);
        let scale = (2.0 / (i + o) as f64).sqrt();
        let w = Tensor::<2>::random([i, o], Distribution::Normal(0.0, scale), &device);
        let b = Tensor::<1>::random([o], Distribution::Normal(0.0, 0.3), &device);
        let upstream = Tensor::<2>::random([n, o], Distribution::Default, &device);
        let mut results = Vec::new();
        for fused in [true, false] {
            let (x, w, b) = (
                x.clone().require_grad(),
                w.clone().require_grad(),
                b.clone().require_grad(),
            );
            let out = if fused {
                dense_relu(x.clone(), w.clone(), b.clone())
            } else {
                relu(x.clone().matmul(w.clone()) + b.clone().unsqueeze_dim(0))
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            let grad = |t: &Tensor<2>| values(t.grad(&grads).expect("gradient"));
            results.push((
                values(out),
                grad(&x),
                grad(&w),
                values(b.grad(&grads).expect("bias gradient")),
            ));
        }
        let (fused, reference) = (&results[0], &results[1]);
        assert!(fused.0.contains(&0.0) && fused.0.iter().any(|&v| v > 0.0));
        assert_close(&fused.0, &reference.0, "outputs");
        assert_close(&fused.1, &reference.1, "input gradients");
        assert_close(&fused.2, &reference.2, "weight gradients");
        assert_close(&fused.3, &reference.3, "bias gradients");
    }

    #[test]
    fn works_without_autodiff() {
        let device = crate::backend::host_device();
        let x = Tensor::<2>::random([3, 7], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<2>::random([7, 4], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<1>::random([4], Distribution::Default, &device);
        let reference = relu(x.clone().matmul(w.clone()) + b.clone().unsqueeze_dim(0));
        assert_close(&values(dense_relu(x, w, b)), &values(reference), "outputs");
    }
}
