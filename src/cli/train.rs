//! `mnist-cnn train`: checks everything that can be wrong first, then
//! trains, saves a checkpoint and the learning curves after every epoch,
//! and evaluates the result on the test set.

use std::path::Path;

use anyhow::{Result, anyhow};

use mnist_cnn::arch;
use mnist_cnn::backend::{self, host_device};
use mnist_cnn::data::{self, Split};
use mnist_cnn::eval;
use mnist_cnn::plot;
use mnist_cnn::store::StoreError;
use mnist_cnn::train::{self, Checkpoint, Job, Metadata, Validation};

use super::args::TrainArgs;
use super::common::{count, data_failed, describe, model_failed};
use super::download::ensure_data;
use super::plan;
use super::preflight::{check_memory, open_device};
use crate::term::{self, TrainProgress, note, print};

pub fn run(args: &TrainArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    // Everything that can be wrong with the options or the model location
    // is found before any download, loading or training.
    let paths = args.model.paths(&args.data);
    paths.check_writable()?;
    // One run writes a model at a time; held to the end of this function.
    let _lock = paths.lock()?;
    if paths.recover()? {
        note(format!(
            "completed the save of {} that an earlier run was stopped in",
            paths.weights.display()
        ));
    }
    paths.remove_stale_temps();
    // A checkpoint is read on the CPU, and moved once the backend is known.
    let checkpoint = if args.resume {
        let checkpoint = Checkpoint::load(&paths, &host_device()).map_err(|e| match e {
            StoreError::Missing { .. } => {
                anyhow!("{e}: nothing to resume; train without --resume to start a model there")
            }
            e => model_failed(e, &paths),
        })?;
        Some(checkpoint)
    } else {
        None
    };
    let plan = plan::train(args, checkpoint.as_ref())?;
    let config = plan.config.clone();
    check_memory(
        "--batch-size",
        config.batch_size,
        train::BYTES_PER_IMAGE,
        "training",
    )?;
    // The training line names the device.
    let device = open_device(plan.backend, &[("--batch-size", config.batch_size)], false)?;
    let checkpoint = checkpoint.map(|c| c.moved_to(&device));
    let saved = checkpoint.as_ref().map(|c| &c.metadata);
    if let Some(saved) = saved.filter(|&m| plan.is_done(Some(m))) {
        print(format_args!(
            "{} has trained {} of {} already: nothing to resume (ask for more with --epochs)",
            paths.weights.display(),
            saved.epochs_done(),
            count(config.epochs, "epoch")
        ))?;
        return Ok(());
    }

    ensure_data(dir, &args.mirror)?;
    let (mut data, data_sha256) =
        data::load_with_digest(dir, Split::Train).map_err(|e| data_failed(e, dir))?;
    data.truncate(plan.limit);
    let test = data::load(dir, Split::Test).map_err(|e| data_failed(e, dir))?;

    if checkpoint.is_none() && paths.exists() {
        let earlier = describe(&paths, paths.load_metadata::<Metadata>().ok().as_ref());
        let backup = paths.back_up()?;
        note(format!(
            "kept the earlier model {earlier} as {} (use --resume to continue a model instead)",
            backup.weights.display()
        ));
    }
    term::print_lossy(arch::summary());
    match saved {
        Some(m) => term::print_lossy(format_args!(
            "Resuming {} after epoch {} of {} (backend: {}; {} engine)",
            paths.weights.display(),
            m.epochs_done(),
            config.epochs,
            backend::describe(&device),
            config.engine.name()
        )),
        None => term::print_lossy(format_args!(
            "Training on {} images, batch size {}, {} learning rate {}, dropout {}, seed {} \
             (backend: {}; {} engine)",
            data.len(),
            config.batch_size,
            config.optimizer.describe(),
            config.learning_rate,
            config.dropout,
            config.seed,
            backend::describe(&device),
            config.engine.name()
        )),
    }
    if saved.is_some() && config.optimizer.has_state() {
        note(format!(
            "note: the {} optimiser's state starts afresh: a checkpoint holds the weights only",
            config.optimizer.name()
        ));
    }
    term::handle_ctrl_c();
    let test_name = format!("the {} test images", test.len());
    let job = Job {
        data: &data,
        data_sha256,
        config,
        validation: args.validate.then_some(Validation {
            data: &test,
            name: &test_name,
        }),
    };
    // The optimiser's default if the rate is above it, else a tenth of it.
    let (rate, usual) = (
        job.config.learning_rate,
        job.config.optimizer.default_learning_rate(),
    );
    let calmer = if rate > usual {
        usual
    } else {
        // To two significant digits: 0.0003, not 0.00030000000000000003.
        format!("{:.1e}", rate / 10.0)
            .parse()
            .unwrap_or(rate / 10.0)
    };
    let mut progress = Curves {
        progress: TrainProgress::new(calmer),
        plot: &paths.plot,
        failed: false,
    };
    let (model, mut metadata) =
        train::train(&job, checkpoint, &device, Some(&paths), &mut progress)?;
    // The last epoch's validation was this very evaluation.
    let last = metadata.history.last().filter(|_| args.validate);
    let result = match last.and_then(|e| e.validation) {
        Some(score) => score,
        None => eval::evaluate(&model, &test, eval::BATCH, &device).score(),
    };
    metadata.test = Some(result);
    paths.save_metadata(&metadata)?;
    term::print_lossy(format_args!(
        "Test loss: {:.4} - accuracy: {:.4}",
        result.loss, result.accuracy
    ));
    term::print_lossy(format_args!(
        "Model saved to {} (metadata: {}, learning curves: {})",
        paths.weights.display(),
        paths.metadata.display(),
        paths.plot.display()
    ));
    Ok(())
}

/// The terminal's training progress, plus the learning curves redrawn
/// beside the model after every epoch. A picture that cannot be written is
/// said once and does not stop training (`mnist-cnn plot` redraws it).
struct Curves<'a> {
    progress: TrainProgress,
    plot: &'a Path,
    failed: bool,
}

impl train::Progress for Curves<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.progress.epoch_start(epoch, epochs, steps);
    }

    fn step(&mut self, step: usize, loss: f64, accuracy: f64) {
        self.progress.step(step, loss, accuracy);
    }

    fn epoch_end(&mut self, stats: &train::EpochStats, epochs: usize) {
        self.progress.epoch_end(stats, epochs);
    }

    fn should_stop(&self) -> bool {
        self.progress.should_stop()
    }

    fn saved(&mut self, metadata: &Metadata) {
        let drawn = plot::write(
            self.plot,
            &metadata.history,
            metadata.validation_data.as_deref(),
        );
        if let Err(e) = drawn
            && !std::mem::replace(&mut self.failed, true)
        {
            note(format!("warning: learning curves not drawn: {e}"));
        }
    }
}
