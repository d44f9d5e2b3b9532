//! `mnist-cnn eval`: a trained model on the 10,000 test images.

use anyhow::Result;

use mnist_cnn::data::{self, Examples, Split};
use mnist_cnn::eval::{self, Evaluation};

use super::args::{BackendArgs, DataArgs, EvalArgs, ModelArgs};
use super::common::{Stdout, data_failed, load_model};
use super::plan;
use super::preflight::{check_memory, open_device};
use crate::term::print;

pub fn run(args: &EvalArgs) -> Result<()> {
    let (evaluation, _) = evaluate_saved(
        &args.backend,
        &args.data,
        &args.model,
        args.batch.batch_size,
        if args.json {
            Stdout::Data
        } else {
            Stdout::Text
        },
    )?;
    if args.json {
        print(serde_json::to_string(&evaluation)?)?;
    } else {
        print(evaluation.summary_line())?;
        print(evaluation.report().trim_end())?;
    }
    Ok(())
}

/// The model at `--model` evaluated on the test set, with the test set;
/// the line naming the model goes where `stdout` says.
pub fn evaluate_saved(
    backend: &BackendArgs,
    data: &DataArgs,
    model: &ModelArgs,
    batch_size: usize,
    stdout: Stdout,
) -> Result<(Evaluation, Examples)> {
    check_memory(
        "--batch-size",
        batch_size,
        eval::BYTES_PER_IMAGE,
        "evaluation",
    )?;
    let paths = model.paths(data);
    let cnn = load_model(&paths, stdout)?;
    let dir = &data.data_dir;
    let test = data::load(dir, Split::Test).map_err(|e| data_failed(e, dir))?;
    let backend = plan::backend(backend.backend, None);
    let device = open_device(backend, &[("--batch-size", batch_size)], true)?;
    let cnn = cnn.copied_to(&device);
    Ok((eval::evaluate(&cnn, &test, batch_size, &device), test))
}
