//! `mnist-cnn bench`: training and evaluation speed on the real data.

use anyhow::{Result, bail};

use mnist_cnn::bench::{self, BenchConfig};
use mnist_cnn::data::{self, Split};
use mnist_cnn::eval;
use mnist_cnn::train::{self, TrainConfig};

use super::args::BenchArgs;
use super::common::data_failed;
use super::download::ensure_data;
use super::plan;
use super::preflight::{check_memory, open_device};
use crate::term::print;

pub fn run(args: &BenchArgs) -> Result<()> {
    let (backend, engine) = plan::bench(args)?;
    check_memory(
        "--batch-size",
        args.batch_size,
        train::BYTES_PER_IMAGE,
        "training",
    )?;
    check_memory(
        "--eval-batch-size",
        args.eval_batch_size,
        eval::BYTES_PER_IMAGE,
        "evaluation",
    )?;
    // The report names the device.
    let batches = [
        ("--batch-size", args.batch_size),
        ("--eval-batch-size", args.eval_batch_size),
    ];
    let device = open_device(backend, &batches, false)?;
    let dir = &args.data.data_dir;
    ensure_data(dir, &args.mirror)?;
    let train = data::load(dir, Split::Train).map_err(|e| data_failed(e, dir))?;
    let test = data::load(dir, Split::Test).map_err(|e| data_failed(e, dir))?;
    if train.len() < args.batch_size {
        bail!(
            "--batch-size {} is more than the {} training images",
            args.batch_size,
            train.len()
        );
    }
    let config = BenchConfig {
        steps: args.steps,
        warmup: args.warmup,
        batch_size: args.batch_size,
        eval_batch_size: args.eval_batch_size,
        seed: TrainConfig::DEFAULT.seed,
        engine,
    };
    let result = bench::run(&config, &train, &test, &device);
    if args.json {
        print(serde_json::to_string(&result)?)?;
    } else {
        print(result.report())?;
    }
    Ok(())
}
