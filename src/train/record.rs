//! What a run records beside its weights, and the checkpoint it resumes
//! from: the settings, each epoch's figures, the test score and the
//! backends that computed it (the model's JSON file).

use burn::tensor::Device;
use serde::{Deserialize, Deserializer, Serialize};

use super::error::TrainError;
use crate::arch::{DROPOUT, architecture};
use crate::backend::Backend;
use crate::eval::Score;
use crate::idx::CLASSES;
use crate::model::Cnn;
use crate::optim::Optimizer;
use crate::store::{ModelPaths, StoreError};

/// Hyper-parameters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    #[serde(default)]
    pub engine: Engine,
    /// Records of earlier versions have neither: they trained with plain
    /// SGD and the tutorial's dropout.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// Fraction of the features dropped while training (rounded to a
    /// multiple of 1/256 by the mask, see `block::dropout_keep`).
    #[serde(default = "tutorial_dropout")]
    pub dropout: f64,
}

fn tutorial_dropout() -> f64 {
    DROPOUT
}

impl TrainConfig {
    /// The tutorial's settings (the seed is this tool's choice).
    pub const DEFAULT: TrainConfig = TrainConfig {
        epochs: 10,
        batch_size: 32,
        learning_rate: Optimizer::Sgd.default_learning_rate(),
        seed: 42,
        engine: Engine::Host,
        optimizer: Optimizer::Sgd,
        dropout: DROPOUT,
    };

    /// Most epochs one run may ask for.
    pub const MAX_EPOCHS: usize = 100_000;
    /// Largest batch: the whole training set.
    pub const MAX_BATCH_SIZE: usize = 60_000;
    /// Largest learning rate: far past any that trains (0.01 is the
    /// tutorial's), and well inside the f32 range the host step computes in.
    pub const MAX_LEARNING_RATE: f64 = 1000.0;
    /// Largest dropout rate: one more step of the mask's 1/256 would drop
    /// every feature.
    pub const MAX_DROPOUT: f64 = 255.0 / 256.0;

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
        // The mask drops in steps of 1/256 (`block::dropout_keep`): another
        // rate would scale the kept features by other than what it drops.
        let steps = self.dropout * 256.0;
        if !(0.0..=Self::MAX_DROPOUT).contains(&self.dropout) || steps != steps.round() {
            return out_of_range(
                "dropout",
                self.dropout.to_string(),
                format!(
                    "a multiple of 1/256 from 0 to {} (255/256)",
                    Self::MAX_DROPOUT
                ),
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

/// How each training step is computed. Both compute the same step (the tests
/// hold each parameter's update to within 0.1% of the largest); they differ
/// in the last bits, so a checkpoint is resumed with the engine that made it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The host network (`crate::host`): the whole step on the host, the update folded into
    /// the backward pass. For the CPU backends; the fast one.
    #[default]
    Host,
    /// Burn's autodiff and Burn's optimisers, with the fused ops on a CPU
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

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "EpochRecord", into = "EpochRecord")]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean training loss over the epoch (with dropout on, as Keras reports it).
    pub loss: f64,
    /// Training accuracy over the epoch.
    pub accuracy: f64,
    /// Time the epoch's training took (its validation not included).
    pub seconds: f64,
    /// The score on the validation set after the epoch, when one was given:
    /// the test set, as the tutorial's `fit(validation_data=(x_test, y_test))`
    /// (see [`Metadata::validation_data`]).
    pub validation: Option<Score>,
}

/// What an epoch's figures say is wrong with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The loss has run away: above ten times chance's (ln 10 ≈ 2.3), or
    /// ten times the epoch's before (at least 0.23, a tenth of chance's,
    /// so that a tiny loss's noise does not count). A too large learning
    /// rate does it.
    Diverging,
    /// Accuracy at most 15% (chance is 10%) with a loss no better than
    /// chance's: the network has learnt nothing (a too large learning rate
    /// or dropout, or data it cannot learn).
    AtChance,
}

impl EpochStats {
    /// What is wrong with the run, judging by this epoch and the one
    /// before, if anything. (A NaN loss stops training outright, see
    /// [`TrainError::Diverged`].)
    pub fn trouble(&self, previous: Option<&EpochStats>) -> Option<Trouble> {
        let chance = (CLASSES as f64).ln();
        let grew = previous.is_some_and(|p| self.loss > 10.0 * p.loss.max(chance / 10.0));
        if self.loss > 10.0 * chance || grew {
            Some(Trouble::Diverging)
        } else if self.accuracy <= 0.15 && self.loss >= chance {
            Some(Trouble::AtChance)
        } else {
            None
        }
    }
}

/// [`EpochStats`] as the JSON file holds it: the validation score as
/// Keras's `val_loss` and `val_accuracy` beside the training figures.
#[derive(Serialize, Deserialize)]
struct EpochRecord {
    epoch: usize,
    loss: f64,
    accuracy: f64,
    seconds: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    val_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    val_accuracy: Option<f64>,
}

impl From<EpochRecord> for EpochStats {
    fn from(r: EpochRecord) -> Self {
        let validation = r
            .val_loss
            .zip(r.val_accuracy)
            .map(|(loss, accuracy)| Score { loss, accuracy });
        Self {
            epoch: r.epoch,
            loss: r.loss,
            accuracy: r.accuracy,
            seconds: r.seconds,
            validation,
        }
    }
}

impl From<EpochStats> for EpochRecord {
    fn from(s: EpochStats) -> Self {
        Self {
            epoch: s.epoch,
            loss: s.loss,
            accuracy: s.accuracy,
            seconds: s.seconds,
            val_loss: s.validation.map(|v| v.loss),
            val_accuracy: s.validation.map(|v| v.accuracy),
        }
    }
}

/// What a run records beside the weights (the model's JSON file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub architecture: String,
    pub parameters: usize,
    /// The run's settings; `epochs` is the number it was asked to reach.
    pub config: TrainConfig,
    pub train_examples: usize,
    /// One entry per complete epoch. (Files of earlier versions also hold
    /// `epochs_done`, its length; it is read past.)
    pub history: Vec<EpochStats>,
    /// SHA-256 of the training images file followed by the labels file.
    pub train_data_sha256: String,
    /// The backends that trained it, in order: `["flex"]`, or `["wgpu",
    /// "flex"]` for a run resumed on another backend (whose result rounds
    /// differently from one run on a single backend). Files of earlier
    /// versions hold one string, `"wgpu, then flex"`.
    #[serde(alias = "backend", deserialize_with = "backend_list")]
    pub backends: Vec<String>,
    /// The evaluation on the test set after the last epoch, when one was run.
    #[serde(default)]
    pub test: Option<Score>,
    /// What the history's validation scores were measured on, when any
    /// epoch has them (e.g. "the 10000 test images").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_data: Option<String>,
}

/// Reads the backends as a list, or as the one string earlier versions wrote.
fn backend_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Backends {
        List(Vec<String>),
        Joined(String),
    }
    Ok(match Backends::deserialize(d)? {
        Backends::List(list) => list,
        Backends::Joined(joined) => joined.split(", then ").map(str::to_string).collect(),
    })
}

impl Metadata {
    /// How many epochs the model has trained.
    pub fn epochs_done(&self) -> usize {
        self.history.len()
    }

    /// Records that training went on on `backend` (a no-op when it is the
    /// one the model was last trained on).
    pub(crate) fn continued_on(&mut self, backend: &str) {
        if self.backends.last().map(String::as_str) != Some(backend) {
            self.backends.push(backend.to_string());
        }
    }

    /// Each setting of `mine` that differs from the one this model was
    /// trained with, said for the user.
    fn setting_differences(&self, mine: &TrainConfig) -> Vec<String> {
        let differ = |what: &str, theirs: String, ours: String| {
            (theirs != ours).then(|| format!("it was trained with {what} {theirs}, not {ours}"))
        };
        let saved = &self.config;
        [
            (self.architecture != architecture()).then(|| "it holds another network".into()),
            differ(
                "batch size",
                saved.batch_size.to_string(),
                mine.batch_size.to_string(),
            ),
            differ(
                "learning rate",
                saved.learning_rate.to_string(),
                mine.learning_rate.to_string(),
            ),
            differ("seed", saved.seed.to_string(), mine.seed.to_string()),
            differ(
                "optimizer",
                saved.optimizer.describe(),
                mine.optimizer.describe(),
            ),
            differ(
                "dropout",
                saved.dropout.to_string(),
                mine.dropout.to_string(),
            ),
            differ(
                "engine",
                saved.engine.name().into(),
                mine.engine.name().into(),
            ),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// A saved model to continue training.
pub struct Checkpoint {
    pub model: Cnn,
    pub metadata: Metadata,
    pub paths: ModelPaths,
}

impl Checkpoint {
    /// Loads the model and the metadata that describes it (checked to
    /// agree, see [`ModelPaths::load`]) for training on `device`.
    pub fn load(paths: &ModelPaths, device: &Device) -> Result<Self, StoreError> {
        let (model, metadata) = paths.load(&device.clone().autodiff())?;
        let metadata = metadata.ok_or_else(|| StoreError::Missing {
            path: paths.metadata.clone(),
        })?;
        Ok(Self {
            model,
            metadata,
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

    /// Refuses to continue with settings other than the checkpoint's: the
    /// result would be a model neither run describes. Needs no data, so it
    /// is checked before the data is even downloaded.
    pub fn check_settings(&self, config: &TrainConfig) -> Result<(), TrainError> {
        self.refuse_if_any(self.metadata.setting_differences(config))
    }

    /// [`check_settings`](Self::check_settings), and the data too: as many
    /// images as before, with the same SHA-256.
    pub(crate) fn check_resumable(
        &self,
        config: &TrainConfig,
        train_examples: usize,
        data_sha256: &str,
    ) -> Result<(), TrainError> {
        let saved = &self.metadata;
        let mut differences = saved.setting_differences(config);
        if saved.train_examples != train_examples {
            differences.push(format!(
                "it was trained on {} images, not {train_examples}",
                saved.train_examples,
            ));
        }
        if saved.train_data_sha256 != data_sha256 {
            differences.push("it was trained on other data (SHA-256 differs)".into());
        }
        self.refuse_if_any(differences)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A figure read back from the file is the one written, to the last
    /// bit: a resumed run's history must equal an uninterrupted one's. This
    /// loss (a real one) came back one unit in the last place off before
    /// serde_json's `float_roundtrip`, whose default parser is approximate.
    #[test]
    fn an_epoch_reads_back_bit_for_bit() {
        for loss in [
            1.7304413366690279,
            0.1 + 0.2,
            f64::MIN_POSITIVE,
            f64::from_bits(1),
            f64::MAX,
        ] {
            let epoch = EpochStats {
                epoch: 1,
                loss,
                accuracy: 1.0 / 3.0,
                seconds: 0.123_456_789_012_345_67,
                validation: Some(Score {
                    loss: 0.7310207951010671,
                    accuracy: 2.0 / 3.0,
                }),
            };
            let json = serde_json::to_string(&epoch).unwrap();
            let back: EpochStats = serde_json::from_str(&json).unwrap();
            assert_eq!(back.loss.to_bits(), loss.to_bits(), "{json}");
            assert_eq!(back, epoch, "{json}");
        }
    }

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
                ..d.clone()
            },
            "learning rate is NaN; it must be a positive number up to 1000",
        );
        let dropout = "it must be a multiple of 1/256 from 0 to 0.99609375 (255/256)";
        check(
            TrainConfig {
                dropout: 1.0,
                ..d.clone()
            },
            &format!("dropout is 1; {dropout}"),
        );
        // 0.3 drops 77/256 of the features: the scale must be that rate's.
        check(
            TrainConfig { dropout: 0.3, ..d },
            &format!("dropout is 0.3; {dropout}"),
        );
    }

    #[test]
    fn runaway_epochs_are_told_from_slow_ones() {
        let epoch = |loss, accuracy| EpochStats {
            epoch: 1,
            loss,
            accuracy,
            seconds: 1.0,
            validation: None,
        };
        use Trouble::*;
        // --learning-rate 1000, and 1, on the real data.
        assert_eq!(epoch(1.3e22, 0.099).trouble(None), Some(Diverging));
        assert_eq!(epoch(2.31, 0.11).trouble(None), Some(AtChance));
        // The tutorial's first epoch, and a slow start on 320 images.
        assert_eq!(epoch(0.35, 0.89).trouble(None), None);
        assert_eq!(epoch(2.2, 0.21).trouble(None), None);
        // Growing tenfold from one epoch to the next.
        let first = epoch(0.3, 0.9);
        assert_eq!(epoch(3.5, 0.5).trouble(Some(&first)), Some(Diverging));
        assert_eq!(epoch(0.32, 0.9).trouble(Some(&first)), None);
        // A tiny loss's noise is not a run away.
        let tiny = epoch(0.001, 0.999);
        assert_eq!(epoch(0.02, 0.995).trouble(Some(&tiny)), None);
    }

    /// A record as the previous version wrote it: `epochs_done`, one
    /// backend string, validation figures flat in each epoch.
    const EARLIER: &str = r#"{
      "architecture": "a", "parameters": 1,
      "config": {"epochs": 3, "batch_size": 32, "learning_rate": 0.01, "seed": 42, "engine": "host"},
      "train_examples": 2000, "epochs_done": 2,
      "history": [
        {"epoch": 1, "loss": 1.5, "accuracy": 0.5, "seconds": 1.0, "val_loss": 0.9, "val_accuracy": 0.7},
        {"epoch": 2, "loss": 0.5, "accuracy": 0.8, "seconds": 1.0}
      ],
      "train_data_sha256": "ab", "backend": "wgpu, then flex",
      "test": {"loss": 0.4, "accuracy": 0.88}
    }"#;

    #[test]
    fn records_of_the_earlier_version_still_read() {
        let m: Metadata = serde_json::from_str(EARLIER).unwrap();
        assert_eq!(m.epochs_done(), 2);
        assert_eq!(m.backends, ["wgpu", "flex"]);
        // Before the optimiser and dropout were settings: the tutorial's.
        assert_eq!(m.config.optimizer, Optimizer::Sgd);
        assert_eq!(m.config.dropout, 0.25);
        let first = Score {
            loss: 0.9,
            accuracy: 0.7,
        };
        assert_eq!(m.history[0].validation, Some(first));
        assert_eq!(m.history[1].validation, None);
        assert_eq!(m.test.map(|t| t.accuracy), Some(0.88));
    }

    #[test]
    fn a_record_reads_back_as_written_with_keras_names_for_validation() {
        let mut m: Metadata = serde_json::from_str(EARLIER).unwrap();
        m.continued_on("flex");
        assert_eq!(m.backends, ["wgpu", "flex"], "the same backend again");
        m.continued_on("wgpu");
        assert_eq!(m.backends, ["wgpu", "flex", "wgpu"]);
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["history"][0]["val_loss"], 0.9);
        assert_eq!(json["history"][0]["val_accuracy"], 0.7);
        assert!(json["history"][1].get("val_loss").is_none());
        assert!(json.get("epochs_done").is_none(), "derived, not stored");
        assert_eq!(
            json["backends"],
            serde_json::json!(["wgpu", "flex", "wgpu"])
        );
        let back: Metadata = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
    }
}
