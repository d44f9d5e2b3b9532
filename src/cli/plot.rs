//! `mnist-cnn plot`: a model's learning curves, redrawn from its record.

use anyhow::{Result, anyhow};

use mnist_cnn::files::check_writable;
use mnist_cnn::plot;
use mnist_cnn::train::Metadata;

use super::args::PlotArgs;
use super::common::model_failed;
use crate::term::print;

pub fn run(args: &PlotArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    let out = args.out.as_ref().unwrap_or(&paths.plot);
    check_writable(out)?;
    let metadata: Metadata = paths.load_metadata().map_err(|e| model_failed(e, &paths))?;
    plot::write(out, &metadata.history, metadata.validation_data.as_deref()).map_err(
        |e| match e {
            // Only this one is about the model's record; the others name their file.
            plot::PlotError::Empty => anyhow!("{}: {e}", paths.metadata.display()),
            e => e.into(),
        },
    )?;
    let validated = metadata
        .history
        .iter()
        .filter(|e| e.validation.is_some())
        .count();
    print(format_args!(
        "Learning curves of {} epochs ({validated} with validation figures) written to {}",
        metadata.history.len(),
        out.display()
    ))?;
    Ok(())
}
