//! `mnist-cnn train`: mini-batch training on categorical cross-entropy (by
//! the tutorial's plain SGD unless another [`crate::optim::Optimizer`] is
//! asked for), as the tutorial's `model.fit`, with a checkpoint after every
//! epoch from which a run can be resumed.
//!
//! Every random choice of an epoch (its shuffle, its dropout masks) comes
//! from streams seeded by the run's seed and the epoch's number, never from
//! state carried over from the epoch before. So a run resumed from the
//! checkpoint of epoch k continues exactly as the uninterrupted run would
//! have, to the bit.

mod engine;
mod error;
mod record;

use std::time::Instant;

use burn::module::Module;
use burn::tensor::Device;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

pub use engine::Trainer;
pub use error::TrainError;
pub use record::{Checkpoint, Engine, EpochStats, Metadata, TrainConfig, Trouble};

use crate::arch::{PARAMETERS, architecture};
use crate::backend::Backend;
use crate::data::Examples;
use crate::eval::{self, evaluate};
use crate::model::Cnn;
use crate::store::ModelPaths;

/// Memory one image of a training batch takes (activations, their
/// gradients and the fused ops' buffers), measured as peak RSS over batch
/// sizes: for refusing a batch that cannot fit before it is tried.
pub const BYTES_PER_IMAGE: usize = 190_000;

/// What the trainer reports as it goes. Every method has a default that
/// ignores it; `()` ignores everything.
pub trait Progress {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    fn step(&mut self, _step: usize, _loss: f64, _accuracy: f64) {}
    fn epoch_end(&mut self, _stats: &EpochStats, _epochs: usize) {}
    /// Called once an epoch's checkpoint is saved, with the metadata saved.
    fn saved(&mut self, _metadata: &Metadata) {}
    /// Asked between steps; `true` ends training early (e.g. on Ctrl-C).
    fn should_stop(&self) -> bool {
        false
    }
}

impl Progress for () {}

/// The work: which data, identified how, with which settings.
pub struct Job<'a> {
    pub data: &'a Examples,
    /// What [`crate::data::load_with_digest`] gave for the data.
    pub data_sha256: String,
    pub config: TrainConfig,
    /// Images to evaluate the network on after each epoch, as Keras's
    /// `validation_data`, with what to call them in the metadata. It only
    /// reads the network: training is the same with it or without.
    pub validation: Option<Validation<'a>>,
}

/// A validation set and its description.
#[derive(Clone, Copy)]
pub struct Validation<'a> {
    pub data: &'a Examples,
    /// What the images are, for [`Metadata::validation_data`].
    pub name: &'a str,
}

impl Job<'_> {
    fn fresh_metadata(&self, backend: Backend) -> Metadata {
        Metadata {
            architecture: architecture(),
            parameters: PARAMETERS,
            config: self.config.clone(),
            train_examples: self.data.len(),
            history: Vec::new(),
            train_data_sha256: self.data_sha256.clone(),
            backends: vec![backend.name().into()],
            test: None,
            validation_data: None,
        }
    }
}

/// Trains a network for `job`: a new one, or the `resume`d checkpoint's up
/// to `job.config.epochs`. Saves a checkpoint to `save_to` (when given)
/// after every epoch. Returns the trained network, ready for inference, and
/// its metadata.
pub fn train(
    job: &Job,
    resume: Option<Checkpoint>,
    device: &Device,
    save_to: Option<&ModelPaths>,
    progress: &mut dyn Progress,
) -> Result<(Cnn, Metadata), TrainError> {
    let config = &job.config;
    config.validate()?;
    let backend = Backend::of(device);
    config.engine.check_backend(backend)?;
    if job.data.is_empty() {
        return Err(TrainError::NoData);
    }
    let (mut trainer, mut metadata) = match resume {
        Some(checkpoint) => {
            checkpoint.check_resumable(config, job.data.len(), &job.data_sha256)?;
            let mut metadata = checkpoint.metadata;
            metadata.config.epochs = config.epochs;
            metadata.test = None;
            // Continued elsewhere, the weights are no longer one backend's.
            metadata.continued_on(backend.name());
            (Trainer::resume(checkpoint.model, config, device), metadata)
        }
        None => (Trainer::new(config, device), job.fresh_metadata(backend)),
    };
    let data = job.data;
    let steps = data.len().div_ceil(config.batch_size);
    for epoch in metadata.epochs_done() + 1..=config.epochs {
        let started = Instant::now();
        progress.epoch_start(epoch, config.epochs, steps);
        let order = epoch_order(config.seed, epoch, data.len());
        let mut dropout_seeds = epoch_stream(config.seed, epoch, DROPOUT_STREAM);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            if progress.should_stop() {
                let saved = save_to.filter(|p| metadata.epochs_done() > 0 && p.exists());
                return Err(TrainError::Interrupted {
                    epoch,
                    checkpoint: saved.map(|p| p.weights.clone()),
                });
            }
            let (loss, hits) = trainer.step(data, indices, dropout_seeds.random());
            if !loss.is_finite() {
                // Saving NaN weights would only replace the last good checkpoint.
                let saved = save_to.filter(|p| metadata.epochs_done() > 0 && p.exists());
                return Err(TrainError::Diverged {
                    epoch,
                    checkpoint: saved.map(|p| p.weights.clone()),
                });
            }
            loss_sum += loss * indices.len() as f64;
            correct += hits;
            seen += indices.len();
            progress.step(
                step + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        let mut stats = EpochStats {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            seconds: started.elapsed().as_secs_f64(),
            validation: None,
        };
        if let Some(validation) = job.validation {
            // An inference copy: no dropout, no random draws, no gradients.
            let model = trainer.model().valid();
            // The batch `train` evaluates the test set with at the end, so the
            // last epoch's figures are the same.
            let result = evaluate(&model, validation.data, eval::BATCH, device);
            stats.validation = Some(result.score());
            metadata.validation_data = Some(validation.name.to_string());
        }
        progress.epoch_end(&stats, config.epochs);
        metadata.history.push(stats);
        if let Some(paths) = save_to {
            paths.save(&trainer.model(), &metadata)?;
            progress.saved(&metadata);
        }
    }
    Ok((trainer.into_model(), metadata))
}

// Independent random streams derived from the one seed, so that e.g. the
// number of epochs does not change the initial weights.
const SHUFFLE_STREAM: u64 = 0x5eed_0001;
const DROPOUT_STREAM: u64 = 0x5eed_0002;

/// The generator of one stream of one epoch.
fn epoch_stream(seed: u64, epoch: usize, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed ^ stream ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The order in which epoch `epoch` visits the `n` examples.
fn epoch_order(seed: u64, epoch: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut epoch_stream(seed, epoch, SHUFFLE_STREAM));
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx;
    use crate::model::dropout_mask;
    use crate::model::{Batch, cross_entropy};
    use crate::optim::Optimizer;
    use crate::test_util::{max_diff, params};
    use burn::optim::GradientsParams;

    #[test]
    fn each_epoch_has_its_own_order_fixed_by_seed_and_epoch() {
        let a = epoch_order(1, 1, 100);
        assert_eq!(a, epoch_order(1, 1, 100));
        assert_ne!(a, epoch_order(1, 2, 100));
        assert_ne!(a, epoch_order(2, 1, 100));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    /// Each engine with each optimiser and two dropout rates against Burn's
    /// stock layers and Burn's stock optimiser: two steps from the same
    /// weights on the same batch with the same dropout masks (two, so that
    /// the optimiser's state counts).
    #[test]
    fn steps_of_either_engine_equal_burns_stock_layers_and_optimisers() {
        let n = 32;
        let mut rng = SmallRng::seed_from_u64(9);
        let pixels: Vec<u8> = (0..n * idx::PIXELS).map(|_| rng.random()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
        let data = Examples {
            images: idx::parse_images(idx::encode_images(&pixels), "random").unwrap(),
            labels: labels.clone(),
        };
        let indices: Vec<usize> = (0..n).collect();
        for engine in [Engine::Host, Engine::Burn] {
            for optimizer in [Optimizer::Sgd, Optimizer::Momentum, Optimizer::Adam] {
                for dropout in [TrainConfig::DEFAULT.dropout, 0.5] {
                    let config = TrainConfig {
                        engine,
                        optimizer,
                        learning_rate: optimizer.default_learning_rate(),
                        dropout,
                        ..TrainConfig::DEFAULT
                    };
                    check_steps(&config, &data, &indices, &labels);
                }
            }
        }
    }

    fn check_steps(config: &TrainConfig, data: &Examples, indices: &[usize], labels: &[u8]) {
        let device = crate::backend::host_device();
        let autodiff = device.clone().autodiff();
        let n = indices.len();
        let start = Cnn::new(&autodiff, &mut SmallRng::seed_from_u64(config.seed));
        let mut trainer = Trainer::resume(start.clone(), config, &device);
        let mut optimiser = engine::burn_optimizer(config.optimizer);
        let mut stock = start.clone();
        for dropout_seed in [17, 18] {
            trainer.step(data, indices, dropout_seed);
            let batch = Batch::new(&data.images, indices, &autodiff);
            let mask = dropout_mask(config.dropout, dropout_seed, n, &autodiff);
            let logits = stock.stock_forward(batch.images, Some(mask));
            let loss = cross_entropy(logits, labels);
            let grads = GradientsParams::from_grads(loss.backward(), &stock);
            stock = optimiser.step(config.learning_rate, stock, grads);
        }

        let (fast, stock, start) = (params(&trainer.model()), params(&stock), params(&start));
        let engine = (config.engine, config.optimizer, config.dropout);
        // Adam divides each gradient by its own size, so where a gradient is
        // near zero the last bits that the summation order changes become a
        // visible part of its update (at most 0.4% of the largest here).
        let tolerance = match config.optimizer {
            Optimizer::Adam => 1e-2,
            Optimizer::Sgd | Optimizer::Momentum => 1e-3,
        };
        for (i, ((f, s), before)) in fast.iter().zip(&stock).zip(&start).enumerate() {
            // The updates, not the weights: at lr 0.01 a wrong gradient would
            // hide in the weights' last digits.
            let update = |after: &[f32]| -> Vec<f32> {
                after.iter().zip(before).map(|(a, b)| a - b).collect()
            };
            let (fast_update, stock_update) = (update(f), update(s));
            let largest = stock_update.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(largest > 0.0, "{engine:?}: parameter {i} did not move");
            let worst = max_diff(&fast_update, &stock_update);
            assert!(
                worst <= tolerance * largest,
                "{engine:?}: parameter {i}'s update differs by {worst} of at most {largest}"
            );
        }
    }
}
