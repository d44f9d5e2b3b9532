//! `mnist-cnn export`: the weights as safetensors in Keras's layout.

use anyhow::Result;

use mnist_cnn::arch;
use mnist_cnn::backend;
use mnist_cnn::export::{self, KERAS_NAMES};
use mnist_cnn::files::check_writable;
use mnist_cnn::train::Metadata;

use super::args::ExportArgs;
use super::common::{describe, model_failed};
use crate::term::print;

pub fn run(args: &ExportArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    // PATH.safetensors beside PATH.bpk, dots in PATH kept (model.1 is a backup).
    let mut beside = paths.stem().into_os_string();
    beside.push(".safetensors");
    let beside = std::path::PathBuf::from(beside);
    let out = args.out.as_ref().unwrap_or(&beside);
    check_writable(out)?;
    // The weights and the record that describes them, read as one pair
    // (only read, never computed with: the CPU will do). The record adds to
    // the file's header; a model without one (copied alone, say) still
    // exports; a damaged one is an error, as in eval.
    let (model, metadata) = paths
        .load::<Metadata>(&backend::host_device())
        .map_err(|e| model_failed(e, &paths))?;
    print(format_args!(
        "Model: {}",
        describe(&paths, metadata.as_ref())
    ))?;
    export::export(&model, metadata.as_ref(), out)?;
    print(format_args!(
        "{} exported to {} ({} parameters in Keras's layout: {})",
        paths.weights.display(),
        out.display(),
        arch::group_digits(arch::PARAMETERS),
        KERAS_NAMES.join(", ")
    ))?;
    Ok(())
}
