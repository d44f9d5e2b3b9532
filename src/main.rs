//! The `mnist-cnn` binary: parses the command line and hands it to [`cli::run`].

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod term;

/// Training allocates and frees multi-megabyte activations every step; the
/// system allocator hands those back to the kernel each time (page faults
/// were 20% of a step). mimalloc keeps them for reuse.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::run(cli::Cli::parse())
}
