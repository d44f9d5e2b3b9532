//! `mnist-cnn train`: plain mini-batch SGD on categorical cross-entropy, as
//! the tutorial's `model.fit`, with a checkpoint after every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::data::Split;
use crate::idx::CLASSES;
use crate::model::{self, Batch, Cnn, ModelError};

/// Hyper-parameters; the defaults are the tutorial's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 32,
            learning_rate: 0.01,
            seed: 42,
        }
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
    pub seconds: f64,
}

/// The JSON file saved beside the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub architecture: String,
    pub parameters: usize,
    pub config: TrainConfig,
    pub train_examples: usize,
    pub epochs_done: usize,
    pub history: Vec<EpochStats>,
    /// SHA-256 of the training images file followed by the labels file.
    pub train_data_sha256: String,
    pub backend: String,
}

/// Why training stopped.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("invalid option: {0}")]
    Config(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("interrupted during epoch {epoch}; {}", checkpoint_note(.checkpoint))]
    Interrupted {
        epoch: usize,
        /// The last complete checkpoint, if one was saved.
        checkpoint: Option<PathBuf>,
    },
}

fn checkpoint_note(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(path) => format!("the last complete epoch is saved in {}", path.display()),
        None => "no epoch was complete, so nothing was saved".into(),
    }
}

/// Where a model's weights and metadata live, from the `--model` path.
#[derive(Debug, Clone)]
pub struct ModelPaths {
    pub weights: PathBuf,
    pub metadata: PathBuf,
}

impl ModelPaths {
    /// `PATH` gives `PATH.bpk` and `PATH.json` (an extension given is replaced).
    pub fn new(path: &Path) -> Self {
        Self {
            weights: path.with_extension("bpk"),
            metadata: path.with_extension("json"),
        }
    }
}

/// What the trainer reports as it goes, for the CLI to display.
pub trait Progress {
    fn epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {}
    fn step(&mut self, _step: usize, _loss: f64, _accuracy: f64) {}
    fn epoch_end(&mut self, _stats: &EpochStats, _epochs: usize) {}
    /// Asked between steps; `true` ends training early (e.g. on Ctrl-C).
    fn should_stop(&self) -> bool {
        false
    }
}

/// Reports nothing.
pub struct Silent;
impl Progress for Silent {}

/// Trains a new network on `data`, saving a checkpoint to `paths` (when
/// given) after every epoch. Returns the trained network and its history.
pub fn train(
    data: &Split,
    config: &TrainConfig,
    device: &Device,
    paths: Option<&ModelPaths>,
    progress: &mut dyn Progress,
) -> Result<(Cnn, Vec<EpochStats>), TrainError> {
    if config.batch_size == 0 || config.epochs == 0 {
        return Err(TrainError::Config(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    if !(config.learning_rate > 0.0 && config.learning_rate.is_finite()) {
        return Err(TrainError::Config(
            "--learning-rate must be positive".into(),
        ));
    }
    if data.is_empty() {
        return Err(TrainError::Config("no training examples".into()));
    }
    let mut trainer = Trainer::new(config, device);
    let mut shuffle_rng = SmallRng::seed_from_u64(config.seed ^ SHUFFLE_STREAM);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let steps = data.len().div_ceil(config.batch_size);
    let mut history = Vec::new();

    for epoch in 1..=config.epochs {
        let started = Instant::now();
        progress.epoch_start(epoch, config.epochs, steps);
        order.shuffle(&mut shuffle_rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        for (step, indices) in order.chunks(config.batch_size).enumerate() {
            if progress.should_stop() {
                return Err(TrainError::Interrupted {
                    epoch,
                    checkpoint: paths.filter(|_| epoch > 1).map(|p| p.weights.clone()),
                });
            }
            let (loss, hits) = trainer.step(data, indices);
            loss_sum += loss * indices.len() as f64;
            correct += hits;
            seen += indices.len();
            progress.step(
                step + 1,
                loss_sum / seen as f64,
                correct as f64 / seen as f64,
            );
        }
        let stats = EpochStats {
            epoch,
            loss: loss_sum / seen as f64,
            accuracy: correct as f64 / seen as f64,
            seconds: started.elapsed().as_secs_f64(),
        };
        progress.epoch_end(&stats, config.epochs);
        history.push(stats);
        if let Some(paths) = paths {
            save_checkpoint(trainer.model(), paths, config, data, &history)?;
        }
    }
    Ok((trainer.into_model(), history))
}

// Independent random streams derived from the one seed, so that e.g. the
// number of epochs does not change the initial weights.
const SHUFFLE_STREAM: u64 = 0x5eed_0001;
const DROPOUT_STREAM: u64 = 0x5eed_0002;

/// The network being trained with its optimiser: one SGD step at a time.
/// Shared by `train` and the benchmark so that both time the same work.
pub struct Trainer {
    /// Always `Some` between steps; taken during one so that the optimiser
    /// can update the weights in place (no second reference to them).
    model: Option<Cnn>,
    optim: ModuleOptimizer,
    dropout_rng: SmallRng,
    learning_rate: f64,
    device: Device,
}

impl Trainer {
    /// A freshly initialised network (weights from `config.seed`).
    pub fn new(config: &TrainConfig, device: &Device) -> Self {
        let device = device.clone().autodiff();
        device.seed(config.seed);
        let model = Cnn::new(&device, &mut SmallRng::seed_from_u64(config.seed));
        Self {
            model: Some(model),
            optim: SgdConfig::new().init(),
            dropout_rng: SmallRng::seed_from_u64(config.seed ^ DROPOUT_STREAM),
            learning_rate: config.learning_rate,
            device,
        }
    }

    /// One SGD step on the examples at `indices`; returns the batch's mean
    /// loss and how many it classified correctly (before the update).
    pub fn step(&mut self, data: &Split, indices: &[usize]) -> (f64, usize) {
        let batch = Batch::new(&data.images, indices, &self.device);
        let labels: Vec<u8> = indices.iter().map(|&i| data.labels[i]).collect();
        let dropout_seed: u64 = self.dropout_rng.random();
        let model = self.model.take().expect("model is present between steps");
        let logits = model.forward(&batch, Some(dropout_seed));
        let loss = cross_entropy(logits.clone(), &labels, &self.device);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let result = (
            loss.into_scalar::<f32>() as f64,
            count_correct(logits, &labels),
        );
        self.model = Some(self.optim.step(self.learning_rate, model, grads));
        result
    }

    /// The network as it stands.
    pub fn model(&self) -> &Cnn {
        self.model.as_ref().expect("model is present between steps")
    }

    /// The trained network, for inference.
    pub fn into_model(self) -> Cnn {
        self.model().valid()
    }
}

/// Mean categorical cross-entropy of `logits` against integer labels,
/// through log-softmax so that it stays finite.
pub fn cross_entropy(logits: Tensor<2>, labels: &[u8], device: &Device) -> Tensor<1> {
    let n = labels.len();
    let mut one_hot = vec![0.0f32; n * CLASSES];
    for (row, &label) in labels.iter().enumerate() {
        one_hot[row * CLASSES + label as usize] = 1.0;
    }
    let targets = Tensor::from_data(TensorData::new(one_hot, [n, CLASSES]), device);
    (log_softmax(logits, 1) * targets).sum().neg() / n as f64
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

fn save_checkpoint(
    model: &Cnn,
    paths: &ModelPaths,
    config: &TrainConfig,
    data: &Split,
    history: &[EpochStats],
) -> Result<(), ModelError> {
    model.save(&paths.weights)?;
    let metadata = Metadata {
        architecture: model::ARCHITECTURE.into(),
        parameters: model.num_params(),
        config: config.clone(),
        train_examples: data.len(),
        epochs_done: history.len(),
        history: history.to_vec(),
        train_data_sha256: data.sha256.clone(),
        backend: crate::backend::NAME.into(),
    };
    let json = serde_json::to_vec_pretty(&metadata).expect("metadata serialises");
    crate::download::write_atomically(&paths.metadata, &json).map_err(|e| ModelError::Save {
        path: paths.metadata.clone(),
        reason: e.to_string(),
    })
}
