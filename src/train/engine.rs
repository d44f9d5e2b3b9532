//! The two ways one training step is computed (the host step, Burn's autodiff
//! and optimiser; see [`Engine`]), behind one [`Trainer`] that `train` and
//! `bench` share.

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::{Device, Tensor};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::record::{Engine, TrainConfig};
use crate::data::Examples;
use crate::host::{HostNet, Phases};
use crate::model::{Batch, Cnn, cross_entropy};
use crate::optim::Optimizer;

/// The network being trained: one training step at a time, by either engine.
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
    dropout: f64,
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
            Engine::Host => Inner::Host(Box::new(HostNet::new(
                &model,
                config.optimizer,
                config.learning_rate,
                config.dropout,
            ))),
            Engine::Burn => Inner::Burn(Box::new(BurnStep {
                model: Some(model),
                optim: burn_optimizer(config.optimizer),
                learning_rate: config.learning_rate,
                dropout: config.dropout,
            })),
        };
        Self {
            engine,
            device: device.clone(),
        }
    }

    /// One training step on the examples at `indices`, with the dropout mask of
    /// `dropout_seed`; returns the batch's mean loss and how many it
    /// classified correctly (before the update).
    pub fn step(&mut self, data: &Examples, indices: &[usize], dropout_seed: u64) -> (f64, usize) {
        match &mut self.engine {
            Inner::Host(step) => step.step(data, indices, dropout_seed),
            Inner::Burn(burn) => {
                let BurnStep {
                    model: slot,
                    optim,
                    learning_rate,
                    dropout,
                } = &mut **burn;
                let device = self.device.clone().autodiff();
                let batch = Batch::new(&data.images, indices, &device);
                let labels: Vec<u8> = indices.iter().map(|&i| data.labels[i]).collect();
                let model = slot.take().expect("model is present between steps");
                let logits = model.forward(&batch, Some((*dropout, dropout_seed)));
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
    pub(crate) fn phases(&self) -> Option<&Phases> {
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

/// Burn's stock optimiser for `optimizer`, set as [`Optimizer`] describes.
pub(crate) fn burn_optimizer(optimizer: Optimizer) -> ModuleOptimizer {
    match optimizer {
        Optimizer::Sgd => SgdConfig::new().init(),
        // Burn's momentum damps the gradient by 0.1 unless told not to;
        // Keras's does not.
        Optimizer::Momentum => SgdConfig::new()
            .with_momentum(Some(
                MomentumConfig::new()
                    .with_momentum(Optimizer::MOMENTUM.into())
                    .with_dampening(0.0),
            ))
            .init(),
        Optimizer::Adam => {
            let c = Optimizer::ADAM;
            AdamConfig::new()
                .with_beta_1(c.beta_1)
                .with_beta_2(c.beta_2)
                .with_epsilon(c.epsilon)
                .init()
        }
    }
}

/// How many rows of `logits` have their maximum at the label.
pub(crate) fn count_correct(logits: Tensor<2>, labels: &[u8]) -> usize {
    let predicted = logits.argmax(1).into_data();
    predicted
        .iter::<i64>()
        .zip(labels)
        .filter(|&(p, &l)| p == l as i64)
        .count()
}
