//! Training on the real data: real learning on a subset, reproducibility,
//! resuming, and save/load.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use common::subset;
use mnist_cnn::arch::{PARAMETERS, architecture};
use mnist_cnn::data::{Examples, Split};
use mnist_cnn::model::Batch;
use mnist_cnn::optim::Optimizer;
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::{self, Checkpoint, Engine, Job, Metadata, TrainConfig, TrainError};
use mnist_cnn::{backend, eval, model::Cnn};

fn job(data: &Examples, epochs: usize) -> Job<'_> {
    Job {
        data,
        data_sha256: "test".into(),
        config: TrainConfig {
            epochs,
            ..TrainConfig::DEFAULT
        },
        validation: None,
    }
}

/// Every parameter value of a model, in visiting order.
fn weights(model: &Cnn) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0
                .push(param.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    assert_eq!(
        collect.0.len(),
        6,
        "conv, hidden and output weights and biases"
    );
    collect.0
}

#[test]
fn training_on_a_subset_really_learns() {
    learns_with(Engine::Host, Optimizer::Sgd, 4000);
}

/// Momentum and Adam learn faster than plain SGD: 2,000 images are
/// enough (plain SGD: 84.3%, momentum 88.4%, Adam 91.0%).
#[test]
fn momentum_and_adam_really_learn_with_either_engine() {
    for engine in [Engine::Host, Engine::Burn] {
        for optimizer in [Optimizer::Momentum, Optimizer::Adam] {
            learns_with(engine, optimizer, 2000);
        }
    }
}

/// The stock path (Burn's autodiff and optimiser) that any backend runs, on
/// fewer images: Burn's own ops build unoptimised (README, Build), which
/// makes its step some ten times slower than the host's.
#[test]
fn training_with_burns_own_step_really_learns() {
    learns_with(Engine::Burn, Optimizer::Sgd, 3000);
}

/// Two epochs on the first `images` training images must beat
/// [`common::LEARNED`] on 1,000 held-out ones.
fn learns_with(engine: Engine, optimizer: Optimizer, images: usize) {
    let device = backend::host_device();
    let train_set = subset(Split::Train, images);
    let held_out = subset(Split::Test, 1000);
    let mut job = job(&train_set, 2);
    job.config.engine = engine;
    job.config.optimizer = optimizer;
    job.config.learning_rate = optimizer.default_learning_rate();
    let (model, metadata) = train::train(&job, None, &device, None, &mut ()).unwrap();
    let history = &metadata.history;
    assert_eq!(history.len(), 2);
    assert!(history[1].loss < history[0].loss, "{history:?}");
    let result = eval::evaluate(&model, &held_out, 128, &device);
    assert!(
        result.accuracy > common::LEARNED,
        "{engine:?}, {optimizer:?}: held-out accuracy {}",
        result.accuracy
    );
}

#[test]
fn the_same_seed_gives_the_same_losses_and_weights() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: u64, name: &str| {
        let mut job = job(&train_set, 1);
        job.config.seed = seed;
        let paths = ModelPaths::new(&dir.path().join(name));
        let (_, metadata) = train::train(&job, None, &device, Some(&paths), &mut ()).unwrap();
        let saved = paths.load_weights(&device).unwrap();
        let file = std::fs::read(&paths.weights).unwrap();
        (metadata.history[0].loss, weights(&saved), file)
    };
    let (loss_a, weights_a, file_a) = run(11, "a");
    let (loss_b, weights_b, file_b) = run(11, "b");
    let (loss_c, weights_c, file_c) = run(12, "c");
    assert_eq!(loss_a, loss_b);
    assert!(weights_a == weights_b, "same seed, different weights");
    // The same bytes too (the parameters' ids included), so that the
    // weights' SHA-256 in the metadata tells two runs apart only when
    // their weights differ.
    assert!(file_a == file_b, "same seed, different weight files");
    assert_ne!(loss_a, loss_c);
    assert!(weights_a != weights_c, "different seeds, same weights");
    assert!(file_a != file_c, "different seeds, the same weight file");
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 2000);
    let dir = tempfile::tempdir().unwrap();
    let straight = ModelPaths::new(&dir.path().join("straight"));
    let (_, whole) =
        train::train(&job(&train_set, 3), None, &device, Some(&straight), &mut ()).unwrap();

    let resumed = ModelPaths::new(&dir.path().join("resumed"));
    train::train(&job(&train_set, 1), None, &device, Some(&resumed), &mut ()).unwrap();
    let checkpoint = Checkpoint::load(&resumed, &device).unwrap();
    assert_eq!(checkpoint.metadata.epochs_done(), 1);
    let (_, continued) = train::train(
        &job(&train_set, 3),
        Some(checkpoint),
        &device,
        Some(&resumed),
        &mut (),
    )
    .unwrap();

    assert_eq!(continued.epochs_done(), 3);
    let losses = |m: &Metadata| m.history.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&continued), losses(&whole));
    let (a, b) = (
        weights(&straight.load_weights(&device).unwrap()),
        weights(&resumed.load_weights(&device).unwrap()),
    );
    assert!(
        a == b,
        "resumed weights differ from the uninterrupted run's"
    );
    let file = |paths: &ModelPaths| std::fs::read(&paths.weights).unwrap();
    assert!(
        file(&straight) == file(&resumed),
        "the resumed weight file differs from the uninterrupted run's"
    );
}

#[test]
fn resuming_with_other_settings_or_data_is_refused_naming_them() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let paths = ModelPaths::new(&dir.path().join("m"));
    train::train(&job(&train_set, 1), None, &device, Some(&paths), &mut ()).unwrap();
    let refused = |job: Job| {
        let checkpoint = Checkpoint::load(&paths, &device).unwrap();
        match train::train(&job, Some(checkpoint), &device, None, &mut ()) {
            Err(e @ TrainError::CannotResume { .. }) => e.to_string(),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("resumed with other settings"),
        }
    };
    let mut other = job(&train_set, 2);
    other.config.batch_size = 64;
    other.config.seed = 7;
    let message = refused(other);
    assert!(message.contains("m.bpk"), "{message}");
    assert!(message.contains("batch size 32, not 64"), "{message}");
    assert!(message.contains("seed 42, not 7"), "{message}");
    let mut other = job(&train_set, 2);
    other.data_sha256 = "another".into();
    assert!(refused(other).contains("other data"));
    let fewer = subset(Split::Train, 100);
    assert!(refused(job(&fewer, 2)).contains("on 320 images, not 100"));
}

#[test]
fn a_saved_model_loads_with_identical_predictions_and_metadata() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let paths = ModelPaths::new(&dir.path().join("model"));
    let mut job = job(&train_set, 2);
    job.data_sha256 = "abc".into();
    let (model, _) = train::train(&job, None, &device, Some(&paths), &mut ()).unwrap();
    let loaded = paths.load_weights(&device).unwrap();
    let test = subset(Split::Test, 64);
    let indices: Vec<usize> = (0..64).collect();
    let batch = Batch::new(&test.images, &indices, &device);
    let probabilities = |m: &Cnn| {
        m.probabilities(&batch)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    assert_eq!(probabilities(&model), probabilities(&loaded));

    let meta: Metadata = paths.load_metadata().unwrap();
    assert_eq!(meta.epochs_done(), 2);
    assert_eq!(meta.parameters, PARAMETERS);
    assert_eq!(meta.train_examples, 320);
    assert_eq!(meta.train_data_sha256, "abc");
    assert_eq!(meta.architecture, architecture());
}

#[test]
fn a_model_of_another_architecture_is_refused() {
    let device = backend::host_device();
    let dir = tempfile::tempdir().unwrap();
    let paths = ModelPaths::new(&dir.path().join("other"));
    let other = burn::nn::LinearConfig::new(784, 10).init(&device);
    let bytes = other.into_record().into_bytes().unwrap();
    std::fs::write(&paths.weights, &bytes[..]).unwrap();
    let err = paths.load_weights(&device).unwrap_err().to_string();
    assert!(err.contains("holds another network"), "{err}");
    assert!(err.contains("other.bpk"), "{err}");
}

#[test]
fn every_parameter_is_trained_by_either_engine() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 64);
    for engine in [Engine::Host, Engine::Burn] {
        let config = TrainConfig {
            engine,
            ..TrainConfig::DEFAULT
        };
        let mut trainer = train::Trainer::new(&config, &device);
        let before = weights(&trainer.model());
        trainer.step(&train_set, &(0..32).collect::<Vec<_>>(), 1);
        trainer.step(&train_set, &(32..64).collect::<Vec<_>>(), 2);
        let after = weights(&trainer.model());
        for (i, (b, a)) in before.iter().zip(&after).enumerate() {
            assert!(b != a, "{engine:?}: parameter {i} did not change");
        }
    }
}

#[test]
fn a_run_whose_loss_is_no_longer_a_number_stops_and_keeps_the_last_good_checkpoint() {
    let device = backend::host_device();
    let train_set = subset(Split::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let paths = ModelPaths::new(&dir.path().join("m"));
    train::train(&job(&train_set, 1), None, &device, Some(&paths), &mut ()).unwrap();
    let good = weights(&paths.load_weights(&device).unwrap());
    // Weights gone to NaN, as a diverging run's do.
    let mut checkpoint = Checkpoint::load(&paths, &device).unwrap();
    let mut params = checkpoint.model.parameters();
    params.output_bias[0] = f32::NAN;
    checkpoint.model = Cnn::from_parameters(params, &device.clone().autodiff());
    match train::train(
        &job(&train_set, 2),
        Some(checkpoint),
        &device,
        Some(&paths),
        &mut (),
    ) {
        Err(e @ TrainError::Diverged { .. }) => {
            let message = e.to_string();
            assert!(message.contains("diverged in epoch 2"), "{message}");
            assert!(message.contains("try a smaller learning rate"), "{message}");
            assert!(message.contains("m.bpk"), "{message}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("trained on with NaN weights"),
    }
    assert!(
        weights(&paths.load_weights(&device).unwrap()) == good,
        "checkpoint replaced"
    );
    assert_eq!(paths.load_metadata::<Metadata>().unwrap().epochs_done(), 1);
}
