//! `mnist-cnn export`: the weights as safetensors in Keras's layout.

use anyhow::Result;

use mnist_cnn::arch;
use mnist_cnn::export::{self, KERAS_NAMES};
use mnist_cnn::files::check_writable;
use mnist_cnn::store::StoreError;
use mnist_cnn::train::Metadata;

use super::args::ExportArgs;
use super::common::{load_model, model_failed};
use crate::term::print;

pub fn run(args: &ExportArgs) -> Result<()> {
    check_writable(&args.out)?;
    let paths = args.model.paths(&args.data);
    // Only read, never computed with: the CPU will do.
    let model = load_model(&paths)?;
    // The training record adds to the file's header; a model without one
    // (copied alone, say) still exports; a damaged one is an error, as in eval.
    let metadata = match paths.load_metadata::<Metadata>() {
        Ok(m) => Some(m),
        Err(StoreError::Missing { .. }) => None,
        Err(e) => return Err(model_failed(e, &paths)),
    };
    export::export(&model, metadata.as_ref(), &args.out)?;
    print(format_args!(
        "{} exported to {} ({} parameters in Keras's layout: {})",
        paths.weights.display(),
        args.out.display(),
        arch::group_digits(arch::PARAMETERS),
        KERAS_NAMES.join(", ")
    ))?;
    Ok(())
}
