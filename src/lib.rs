//! mnist-cnn: the classic Keras MNIST tutorial (download → fit → evaluate →
//! look at mistakes) as one self-contained Rust program built on Burn.
//!
//! One module per concern; `main.rs` only hands the parsed command line to
//! [`cli::run`].

pub mod backend;
pub mod bench;
pub mod block;
pub mod cli;
pub mod data;
pub mod dense;
pub mod download;
pub mod eval;
pub mod idx;
pub mod misclassified;
pub mod model;
pub mod train;

/// Helpers shared by the unit tests of the fused ops.
#[cfg(test)]
mod test_util {
    use burn::tensor::Tensor;

    /// A tensor's values.
    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Asserts that two results agree to 1e-4 everywhere.
    pub fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{what}: differs by {worst}");
    }
}
