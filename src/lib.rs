//! mnist-cnn: the classic Keras MNIST tutorial (download → fit → evaluate →
//! look at mistakes) as a library the `mnist-cnn` binary drives.
//!
//! One module per concern, with no cycles: each uses only modules listed
//! before it.
//! - [`files`]: atomic writes, leftovers of interrupted ones, hashes;
//!   [`machine`]: free memory, CPU time and peak memory of this process;
//!   [`backend`]: the backends the crate was built with (CPU, and GPU with
//!   the `wgpu` feature), and which path each takes; [`idx`]: the IDX file
//!   format; [`arch`]: the network's shapes and counts; [`kernels`]: the
//!   crate's own SIMD kernels (the hidden layer's backward pass, inference's
//!   product, the convolution) and the machine's peak rate; `matmul`: host
//!   matrix products; [`optim`]: the optimisers and their update rules.
//! - [`data`]: the MNIST files, the data folder, the train and test
//!   splits; [`picture`]: digits drawn for people; [`prepare`]: any picture
//!   of a digit made into what the network reads; [`download`]: mirrors and
//!   verification.
//! - `block`, `dense`: the network's two fused ops; [`model`]: the network
//!   and its loss; `host`: the network computed on the host, its training
//!   step and its inference; [`store`]: the model store.
//! - [`eval`], then [`train`]: one command each; [`plot`]: the learning
//!   curves; [`misclassified`], [`export`], [`bench`](mod@bench): one
//!   command each; [`explain`]: one image's layers and saliency; [`serve`]:
//!   the local page and its JSON API, built on all of the above.
//!
//! The public API is what the binary and the tests use; the fused ops, the
//! host network and the matrix products are the crate's own. The library
//! never prints: long work reports through traits ([`download::Report`],
//! [`train::Progress`]) that the binary implements. No unsafe code but in
//! `kernels` (SIMD intrinsics, on operands whose sizes it checks first) and
//! `matmul`, whose raw-pointer products are bounds-checked there (the
//! binary has one more: setting an environment variable before any thread).

#![deny(unsafe_code)]

pub mod arch;
pub mod backend;
pub mod bench;
mod block;
pub mod data;
mod dense;
pub mod download;
pub mod eval;
pub mod explain;
pub mod export;
pub mod files;
mod host;
pub mod idx;
#[allow(unsafe_code)]
pub mod kernels;
pub mod machine;
#[allow(unsafe_code)]
mod matmul;
pub mod misclassified;
pub mod model;
pub mod optim;
pub mod picture;
pub mod plot;
pub mod prepare;
pub mod serve;
pub mod store;
pub mod train;

/// Helpers shared by the unit tests of the fused ops.
#[cfg(test)]
mod test_util {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;

    /// Every parameter value of a model, in visiting order.
    pub fn params(model: &crate::model::Cnn) -> Vec<Vec<f32>> {
        struct Collect(Vec<Vec<f32>>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.push(values(param.val()));
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }

    /// A tensor's values.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// The largest absolute difference between two results of one length.
    pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "lengths differ");
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Asserts that two results agree to 1e-4 everywhere.
    pub fn assert_close(a: &[f32], b: &[f32], what: &str) {
        let worst = max_diff(a, b);
        assert!(worst < 1e-4, "{what}: differs by {worst}");
    }
}
