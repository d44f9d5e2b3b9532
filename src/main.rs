use std::process::ExitCode;

/// Training allocates and frees multi-megabyte activations every step; the
/// system allocator hands those back to the kernel each time (page faults
/// were 20% of a step). mimalloc keeps them for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use mnist_cnn::cli::{Cli, EXIT_INTERRUPTED, run};
use mnist_cnn::train::TrainError;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(TrainError::Interrupted { .. }) = e.downcast_ref() {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
