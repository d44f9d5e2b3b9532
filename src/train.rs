//! `mnist-cnn train`: plain mini-batch SGD on categorical cross-entropy, as
//! the tutorial's `model.fit`, with a checkpoint after every epoch from which
//! a run can be resumed.
//!
//! Every random choice of an epoch (its shuffle, its dropout masks) comes
//! from streams seeded by the run's seed and the epoch's number, never from
//! state carried over from the epoch before. So a run resumed from the
//! checkpoint of epoch k continues exactly as the uninterrupted run would
//! have, to the bit.

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::arch::{PARAMETERS, architecture};
use crate::backend::Backend;
use crate::data::Split;
use crate::eval::evaluate;
use crate::host::{HostNet, Phases};
use crate::model::{Batch, Cnn, cross_entropy};
use crate::store::{ModelPaths, StoreError};

/// Memory one image of a training batch takes (activations, their
/// gradients and the fused ops' buffers), measured as peak RSS over batch
/// sizes: for refusing a batch that cannot fit before it is tried.
pub const BYTES_PER_IMAGE: usize = 190_000;

/// Hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    #[serde(default)]
    pub engine: Engine,
}

impl TrainConfig {
    /// The tutorial's settings (the seed is this tool's choice).
    pub const DEFAULT: TrainConfig = TrainConfig {
        epochs: 10,
        batch_size: 32,
        learning_rate: 0.01,
        seed: 42,
        engine: Engine::Host,
    };

    /// Most epochs one run may ask for.
    pub const MAX_EPOCHS: usize = 100_000;
    /// Largest batch: the whole training set.
    pub const MAX_BATCH_SIZE: usize = 60_000;
    /// Largest learning rate: far past any that trains (0.01 is the
    /// tutorial's), and well inside the f32 range the host step computes in.
    pub const MAX_LEARNING_RATE: f64 = 1000.0;

    /// Checks every setting; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), TrainError> {
        let out_of_range = |setting: &'static str, value: String, allowed: String| {
            Err(TrainError::OutOfRange {
                setting,
                value,
                allowed,
            })
        };
        if !(1..=Self::MAX_EPOCHS).contains(&self.epochs) {
            return out_of_range(
                "epochs",
                self.epochs.to_string(),
                format!("1 to {}", Self::MAX_EPOCHS),
            );
        }
        if !(1..=Self::MAX_BATCH_SIZE).contains(&self.batch_size) {
            return out_of_range(
                "batch size",
                self.batch_size.to_string(),
                format!("1 to {}", Self::MAX_BATCH_SIZE),
            );
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= Self::MAX_LEARNING_RATE) {
            return out_of_range(
                "learning rate",
                self.learning_rate.to_string(),
                format!("a positive number up to {}", Self::MAX_LEARNING_RATE),
            );
        }
        Ok(())
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one epoch did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean training loss over the epoch (with dropout on, as Keras reports it).
    pub loss: f64,
    /// Training accuracy over the epoch.
    pub accuracy: f64,
    /// Time the epoch's training took (its validation not included).
    pub seconds: f64,
    /// Loss on the validation set after the epoch, when one was given: the
    /// test set, as the tutorial's `fit(validation_data=(x_test, y_test))`
    /// (see [`Metadata::validation_data`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    /// Accuracy on the validation set after the epoch, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// Loss and accuracy on the test images.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct TestResult {
    pub loss: f64,
    pub accuracy: f64,
}

/// What a run records beside the weights (the model's JSON file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub architecture: String,
    pub parameters: usize,
    /// The run's settings; `epochs` is the number it was asked to reach.
    pub config: TrainConfig,
    pub train_examples: usize,
    pub epochs_done: usize,
    pub history: Vec<EpochStats>,
    /// SHA-256 of the training images file followed by the labels file.
    pub train_data_sha256: String,
    /// The backend that trained it: "flex", or "wgpu, then flex" for a run
    /// resumed on another backend (whose result rounds differently from one
    /// run on a single backend).
    pub backend: String,
    /// The evaluation on the test set after the last epoch, when one was run.
    #[serde(default)]
    pub test: Option<TestResult>,
    /// What the history's `val_loss` and `val_accuracy` were measured on,
    /// when any epoch has them (e.g. "the 10000 test images").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_data: Option<String>,
}

/// Why training did not run or stopped.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{setting} is {value}; it must be {allowed}")]
    OutOfRange {
        setting: &'static str,
        value: String,
        allowed: String,
    },
    #[error("no training examples")]
    NoData,
    #[error(
        "the host engine computes on the CPU and cannot train on the {backend} backend: \
         use the burn engine there, or a CPU backend"
    )]
    EngineOffHost { backend: &'static str },
    #[error("cannot resume from {}: {difference}", path.display())]
    CannotResume {
        path: std::path::PathBuf,
        difference: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "training diverged in epoch {epoch} (the loss is no longer a number): try a smaller \
         learning rate; {}",
        checkpoint_note(.checkpoint)
    )]
    Diverged {
        epoch: usize,
        /// The last complete checkpoint, if one was saved.
        checkpoint: Option<std::path::PathBuf>,
    },
    #[error("interrupted during epoch {epoch}; {}", checkpoint_note(.checkpoint))]
    Interrupted {
        epoch: usize,
        /// The last complete checkpoint, if one was saved.
        checkpoint: Option<std::path::PathBuf>,
    },
}

fn checkpoint_note(checkpoint: &Option<std::path::PathBuf>) -> String {
    match checkpoint {
        Some(path) => format!("the last complete epoch is saved in {}", path.display()),
        None => "no epoch was complete, so nothing was saved".into(),
    }
}

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

/// A saved model to continue training.
pub struct Checkpoint {
    pub model: Cnn,
    pub metadata: Metadata,
    pub paths: ModelPaths,
}

impl Checkpoint {
    /// Loads the model and metadata stored at `paths` for training on `device`.
    pub fn load(paths: &ModelPaths, device: &Device) -> Result<Self, StoreError> {
        Ok(Self {
            model: paths.load_weights(&device.clone().autodiff())?,
            metadata: paths.load_metadata()?,
            paths: paths.clone(),
        })
    }

    /// The checkpoint with its model on `device` (checked on the CPU first,
    /// continued on a GPU, say).
    pub fn moved_to(self, device: &Device) -> Self {
        Self {
            model: self.model.copied_to(&device.clone().autodiff()),
            ..self
        }
    }
}

/// The work: which data, identified how, with which settings.
pub struct Job<'a> {
    pub data: &'a Split,
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
    pub data: &'a Split,
    /// What the images are, for [`Metadata::validation_data`].
    pub name: &'a str,
}

/// Images per batch when validating: the batch size `train` evaluates the
/// test set with at the end, so the last epoch's figures are the same.
pub const VALIDATION_BATCH: usize = 128;

impl Job<'_> {
    fn fresh_metadata(&self, backend: Backend) -> Metadata {
        Metadata {
            architecture: architecture(),
            parameters: PARAMETERS,
            config: self.config.clone(),
            train_examples: self.data.len(),
            epochs_done: 0,
            history: Vec::new(),
            train_data_sha256: self.data_sha256.clone(),
            backend: backend.name().into(),
            test: None,
            validation_data: None,
        }
    }

    /// Refuses a checkpoint made with other settings or data than this job's:
    /// continuing it would give a model neither run describes.
    pub fn check_resumable(&self, checkpoint: &Checkpoint) -> Result<(), TrainError> {
        let saved = &checkpoint.metadata;
        let mut differences = checkpoint.setting_differences(&self.config);
        if saved.train_examples != self.data.len() {
            differences.push(format!(
                "it was trained on {} images, not {}",
                saved.train_examples,
                self.data.len()
            ));
        }
        if saved.train_data_sha256 != self.data_sha256 {
            differences.push("it was trained on other data (SHA-256 differs)".into());
        }
        checkpoint.refuse_if_any(differences)
    }
}

impl Checkpoint {
    /// The part of [`Job::check_resumable`] that needs no data: the settings.
    /// Checked before the data is even downloaded.
    pub fn check_settings(&self, config: &TrainConfig) -> Result<(), TrainError> {
        self.refuse_if_any(self.setting_differences(config))
    }

    fn setting_differences(&self, mine: &TrainConfig) -> Vec<String> {
        let saved = &self.metadata;
        let differ = |what: &str, theirs: String, ours: String| {
            (theirs != ours).then(|| format!("it was trained with {what} {theirs}, not {ours}"))
        };
        [
            (saved.architecture != architecture()).then(|| "it holds another network".into()),
            differ(
                "batch size",
                saved.config.batch_size.to_string(),
                mine.batch_size.to_string(),
            ),
            differ(
                "learning rate",
                saved.config.learning_rate.to_string(),
                mine.learning_rate.to_string(),
            ),
            differ("seed", saved.config.seed.to_string(), mine.seed.to_string()),
            differ(
                "engine",
                saved.config.engine.name().into(),
                mine.engine.name().into(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn refuse_if_any(&self, differences: Vec<String>) -> Result<(), TrainError> {
        if differences.is_empty() {
            Ok(())
        } else {
            Err(TrainError::CannotResume {
                path: self.paths.weights.clone(),
                difference: differences.join("; "),
            })
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
            job.check_resumable(&checkpoint)?;
            let mut metadata = checkpoint.metadata;
            metadata.config.epochs = config.epochs;
            metadata.test = None;
            // Continued elsewhere, the weights are no longer one backend's.
            if !metadata.backend.ends_with(backend.name()) {
                metadata.backend = format!("{}, then {}", metadata.backend, backend.name());
            }
            (Trainer::resume(checkpoint.model, config, device), metadata)
        }
        None => (Trainer::new(config, device), job.fresh_metadata(backend)),
    };
    let data = job.data;
    let steps = data.len().div_ceil(config.batch_size);
    for epoch in metadata.epochs_done + 1..=config.epochs {
        let started = Instant::now();
        progress.epoch_start(epoch, config.epochs, steps);
        let order = epoch_order(config.seed, epoch, data.len());
        let mut dropout_seeds = epoch_stream(config.seed, epoch, DROPOUT_STREAM);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            if progress.should_stop() {
                let saved = save_to.filter(|p| metadata.epochs_done > 0 && p.exists());
                return Err(TrainError::Interrupted {
                    epoch,
                    checkpoint: saved.map(|p| p.weights.clone()),
                });
            }
            let (loss, hits) = trainer.step(data, indices, dropout_seeds.random());
            if !loss.is_finite() {
                // Saving NaN weights would only replace the last good checkpoint.
                let saved = save_to.filter(|p| metadata.epochs_done > 0 && p.exists());
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
            val_loss: None,
            val_accuracy: None,
        };
        if let Some(validation) = job.validation {
            // An inference copy: no dropout, no random draws, no gradients.
            let model = trainer.model().valid();
            let result = evaluate(&model, validation.data, VALIDATION_BATCH, device);
            stats.val_loss = Some(result.loss);
            stats.val_accuracy = Some(result.accuracy);
            metadata.validation_data = Some(validation.name.to_string());
        }
        progress.epoch_end(&stats, config.epochs);
        metadata.history.push(stats);
        metadata.epochs_done = epoch;
        if let Some(paths) = save_to {
            paths.save_weights(&trainer.model())?;
            paths.save_metadata(&metadata)?;
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

/// How each SGD step is computed. Both compute the same step (the tests
/// hold them within 1e-5 of each other); they differ in the last bits, so a
/// checkpoint is resumed with the engine that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// [`crate::host`]: the whole step on the host, the update folded into
    /// the backward pass. For the CPU backends; the fast one.
    #[default]
    Host,
    /// Burn's autodiff and Burn's SGD optimiser, with the fused ops on a CPU
    /// backend and Burn's stock layers on a GPU: the path any backend runs.
    Burn,
}

impl Engine {
    pub const NAMES: [&str; 2] = ["host", "burn"];

    /// The engine a new run on `backend` takes: the host step on a CPU,
    /// Burn's on a GPU.
    pub fn for_backend(backend: Backend) -> Self {
        if backend.on_host() {
            Engine::Host
        } else {
            Engine::Burn
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Host => "host",
            Engine::Burn => "burn",
        }
    }

    /// Refuses an engine that cannot run on `backend`: the host engine
    /// computes on the CPU, so a GPU backend trains with Burn's.
    pub fn check_backend(self, backend: Backend) -> Result<(), TrainError> {
        if self == Engine::Host && !backend.on_host() {
            return Err(TrainError::EngineOffHost {
                backend: backend.name(),
            });
        }
        Ok(())
    }

    /// The engine of that name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "host" => Some(Engine::Host),
            "burn" => Some(Engine::Burn),
            _ => None,
        }
    }
}

/// The network being trained: one SGD step at a time, by either engine.
/// Shared by `train` and the benchmark so that both time the same work.
pub struct Trainer {
    engine: Inner,
    device: Device,
}

enum Inner {
    Host(Box<HostNet>),
    Burn(Box<BurnStep>),
}

/// The stock step's state.
struct BurnStep {
    /// Always `Some` between steps; taken during one so that the optimiser
    /// can update the weights in place.
    model: Option<Cnn>,
    optim: ModuleOptimizer,
    learning_rate: f64,
}

impl Trainer {
    /// A freshly initialised network (weights from `config.seed`).
    pub fn new(config: &TrainConfig, device: &Device) -> Self {
        let autodiff = device.clone().autodiff();
        autodiff.seed(config.seed);
        let model = Cnn::new(&autodiff, &mut SmallRng::seed_from_u64(config.seed));
        Self::resume(model, config, device)
    }

    /// Continues training `model` (loaded for `device`'s autodiff twin).
    pub fn resume(model: Cnn, config: &TrainConfig, device: &Device) -> Self {
        let engine = match config.engine {
            Engine::Host => Inner::Host(Box::new(HostNet::new(&model, config.learning_rate))),
            Engine::Burn => Inner::Burn(Box::new(BurnStep {
                model: Some(model),
                // Plain SGD keeps no state between steps, so a resumed run needs none.
                optim: SgdConfig::new().init(),
                learning_rate: config.learning_rate,
            })),
        };
        Self {
            engine,
            device: device.clone(),
        }
    }

    /// One SGD step on the examples at `indices`, with the dropout mask of
    /// `dropout_seed`; returns the batch's mean loss and how many it
    /// classified correctly (before the update).
    pub fn step(&mut self, data: &Split, indices: &[usize], dropout_seed: u64) -> (f64, usize) {
        match &mut self.engine {
            Inner::Host(step) => step.step(data, indices, dropout_seed),
            Inner::Burn(burn) => {
                let BurnStep {
                    model: slot,
                    optim,
                    learning_rate,
                } = &mut **burn;
                let device = self.device.clone().autodiff();
                let batch = Batch::new(&data.images, indices, &device);
                let labels: Vec<u8> = indices.iter().map(|&i| data.labels[i]).collect();
                let model = slot.take().expect("model is present between steps");
                let logits = model.forward(&batch, Some(dropout_seed));
                let loss = cross_entropy(logits.clone(), &labels);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                let result = (
                    loss.into_scalar::<f32>() as f64,
                    count_correct(logits, &labels),
                );
                *slot = Some(optim.step(*learning_rate, model, grads));
                result
            }
        }
    }

    /// The network as it stands (for a checkpoint).
    pub fn model(&self) -> Cnn {
        match &self.engine {
            Inner::Host(step) => step.model(&self.device),
            Inner::Burn(burn) => burn
                .model
                .as_ref()
                .expect("model is present between steps")
                .clone(),
        }
    }

    /// Time per phase of the steps taken, where the engine measures it.
    pub fn phases(&self) -> Option<&Phases> {
        match &self.engine {
            Inner::Host(step) => Some(&step.phases),
            Inner::Burn(_) => None,
        }
    }

    /// The trained network, for inference.
    pub fn into_model(self) -> Cnn {
        match self.engine {
            Inner::Host(step) => step.model(&self.device),
            Inner::Burn(burn) => burn.model.expect("model is present between steps").valid(),
        }
    }
}

/// How many rows of `logits` have their maximum at the label.
pub fn count_correct(logits: Tensor<2>, labels: &[u8]) -> usize {
    let predicted = logits.argmax(1).into_data();
    predicted
        .iter::<i64>()
        .zip(labels)
        .filter(|&(p, &l)| p == l as i64)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx;
    use crate::model::dropout_mask;
    use crate::test_util::{max_diff, params};

    #[test]
    fn settings_out_of_range_are_named_with_their_range() {
        TrainConfig::DEFAULT.validate().unwrap();
        let check = |config: TrainConfig, expected: &str| {
            let err = config.validate().unwrap_err().to_string();
            assert_eq!(err, expected);
        };
        let d = TrainConfig::DEFAULT;
        check(
            TrainConfig {
                epochs: 0,
                ..d.clone()
            },
            "epochs is 0; it must be 1 to 100000",
        );
        check(
            TrainConfig {
                batch_size: 60_001,
                ..d.clone()
            },
            "batch size is 60001; it must be 1 to 60000",
        );
        check(
            TrainConfig {
                learning_rate: f64::NAN,
                ..d
            },
            "learning rate is NaN; it must be a positive number up to 1000",
        );
    }

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

    /// The fast path (fused ops, Burn's `Optimizer`) against Burn's stock
    /// layers and stock SGD, one step from the same weights on the same batch
    /// with the same dropout mask.
    #[test]
    fn one_step_of_either_engine_equals_burns_stock_layers_and_sgd() {
        let n = 32;
        let mut rng = SmallRng::seed_from_u64(9);
        let pixels: Vec<u8> = (0..n * idx::PIXELS).map(|_| rng.random()).collect();
        let labels: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
        let data = Split {
            images: idx::parse_images(idx::encode_images(&pixels), "random").unwrap(),
            labels: labels.clone(),
        };
        let indices: Vec<usize> = (0..n).collect();
        for engine in [Engine::Host, Engine::Burn] {
            let config = TrainConfig {
                engine,
                ..TrainConfig::DEFAULT
            };
            check_one_step(&config, &data, &indices, &labels);
        }
    }

    fn check_one_step(config: &TrainConfig, data: &Split, indices: &[usize], labels: &[u8]) {
        let device = crate::backend::host_device();
        let autodiff = device.clone().autodiff();
        let n = indices.len();
        let start = Cnn::new(&autodiff, &mut SmallRng::seed_from_u64(config.seed));
        let mut trainer = Trainer::resume(start.clone(), config, &device);
        let dropout_seed = 17;
        trainer.step(data, indices, dropout_seed);

        let batch = Batch::new(&data.images, indices, &autodiff);
        let mask = dropout_mask(dropout_seed, n, &autodiff);
        let logits = start.stock_forward(batch.images, Some(mask));
        let loss = cross_entropy(logits, labels);
        let grads = GradientsParams::from_grads(loss.backward(), &start);
        let mut sgd = SgdConfig::new().init();
        let stock = sgd.step(config.learning_rate, start.clone(), grads);

        let (fast, stock, start) = (params(&trainer.model()), params(&stock), params(&start));
        let engine = config.engine;
        for (i, ((f, s), before)) in fast.iter().zip(&stock).zip(&start).enumerate() {
            assert!(f != before, "{engine:?}: parameter {i} did not move");
            let worst = max_diff(f, s);
            assert!(worst < 1e-5, "{engine:?}: parameter {i} differs by {worst}");
        }
    }
}
