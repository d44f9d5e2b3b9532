//! The `mnist-cnn` binary: parses the command line and hands it to [`cli::run`].

#![deny(unsafe_code)]

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
    #[cfg(all(feature = "wgpu", target_os = "linux"))]
    quiet_headless_vulkan();
    cli::run(cli::Cli::parse())
}

/// Mesa's Vulkan drivers (lavapipe among them) print "error: XDG_RUNTIME_DIR
/// is invalid or not set in the environment." four times where that variable
/// is missing, as on headless machines and in containers, though nothing is
/// wrong: the folder only holds a desktop's display sockets, which a compute
/// job never opens. Pointed at the temporary folder, they say nothing.
#[cfg(all(feature = "wgpu", target_os = "linux"))]
#[allow(unsafe_code)]
fn quiet_headless_vulkan() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first thing `main` does, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}
