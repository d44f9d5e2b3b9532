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
