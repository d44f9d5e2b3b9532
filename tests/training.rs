//! The network and its training: shape, equivalence with Burn's stock ops,
//! real learning on a subset, reproducibility and save/load.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use mnist_cnn::data::{self, Part, Split};
use mnist_cnn::model::{self, Batch, Cnn, PARAMETERS};
use mnist_cnn::train::{self, ModelPaths, Silent, TrainConfig};
use mnist_cnn::{backend, eval};
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn subset(part: Part, n: usize) -> Split {
    let mut split = data::load(common::data_dir(), part).unwrap();
    split.truncate(n);
    split
}

fn quick_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        ..TrainConfig::default()
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
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
fn the_model_has_the_tutorials_shape_and_parameter_count() {
    let device = backend::device();
    let model = Cnn::new(&device, &mut SmallRng::seed_from_u64(1));
    assert_eq!(model.num_params(), 2_561_738);
    assert_eq!(PARAMETERS, 2_561_738);
    let test = subset(Part::Test, 3);
    let out = model.forward(&Batch::new(&test.images, &[0, 1, 2], &device), None);
    assert_eq!(out.dims(), [3, 10]);
    let summary = Cnn::summary_text();
    assert!(summary.contains("max_pooling2d (MaxPooling2D) (None, 25, 25, 32)"));
    assert!(summary.contains("Total params: 2,561,738"));
}

#[test]
fn the_fast_forward_pass_equals_burns_stock_ops() {
    let device = backend::device();
    let model = Cnn::new(&device, &mut SmallRng::seed_from_u64(7));
    let test = subset(Part::Test, 16);
    let indices: Vec<usize> = (0..16).collect();
    let batch = Batch::new(&test.images, &indices, &device);
    for seed in [None, Some(3)] {
        let fast = model.forward(&batch, seed).into_data();
        let mask = seed.map(|seed| model::dropout_mask(seed, 16, &device));
        let reference = model
            .forward_reference(batch.channels_first(), mask)
            .into_data();
        let (fast, reference) = (
            fast.try_to_vec::<f32>().unwrap(),
            reference.try_to_vec::<f32>().unwrap(),
        );
        assert!(
            reference.iter().any(|&v| v.abs() > 1e-3),
            "degenerate output"
        );
        assert!(
            max_abs_diff(&fast, &reference) < 1e-4,
            "dropout seed {seed:?}"
        );
    }
}

#[test]
fn dropout_drops_a_quarter_and_rescales_the_rest() {
    let device = backend::device();
    let values = model::dropout_mask(5, 32, &device)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let dropped = values.iter().filter(|&&v| v == 0.0).count() as f64 / values.len() as f64;
    assert!((dropped - 0.25).abs() < 0.005, "dropped {dropped}");
    assert!(
        values
            .iter()
            .all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6)
    );
    let other = model::dropout_mask(6, 32, &device)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_ne!(values, other, "the seed changes the mask");
    // Images get different masks within one batch.
    assert_ne!(
        values[..model::FEATURES],
        values[model::FEATURES..2 * model::FEATURES]
    );
}

#[test]
fn training_on_a_subset_really_learns() {
    let device = backend::device();
    let train_set = subset(Part::Train, 4000);
    let held_out = subset(Part::Test, 1000);
    let (model, history) =
        train::train(&train_set, &quick_config(2), &device, None, &mut Silent).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[1].loss < history[0].loss, "{history:?}");
    let result = eval::evaluate(&model, &held_out, 128, &device);
    // Chance is 10%; 4,000 images for 2 epochs reach about 87% on real MNIST.
    assert!(
        result.accuracy > 0.83,
        "held-out accuracy {}",
        result.accuracy
    );
}

#[test]
fn the_same_seed_gives_the_same_losses_and_weights() {
    let device = backend::device();
    let train_set = subset(Part::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: u64, name: &str| {
        let config = TrainConfig {
            seed,
            ..quick_config(1)
        };
        let paths = ModelPaths::new(&dir.path().join(name));
        let (_, history) =
            train::train(&train_set, &config, &device, Some(&paths), &mut Silent).unwrap();
        let saved = Cnn::load(&paths.weights, &device).unwrap();
        (history[0].loss, weights(&saved))
    };
    let (loss_a, weights_a) = run(11, "a");
    let (loss_b, weights_b) = run(11, "b");
    let (loss_c, weights_c) = run(12, "c");
    assert_eq!(loss_a, loss_b);
    assert!(weights_a == weights_b, "same seed, different weights");
    assert_ne!(loss_a, loss_c);
    assert!(weights_a != weights_c, "different seeds, same weights");
}

#[test]
fn a_saved_model_loads_with_identical_predictions_and_metadata() {
    let device = backend::device();
    let train_set = subset(Part::Train, 320);
    let dir = tempfile::tempdir().unwrap();
    let paths = ModelPaths::new(&dir.path().join("model"));
    let (model, _) = train::train(
        &train_set,
        &quick_config(2),
        &device,
        Some(&paths),
        &mut Silent,
    )
    .unwrap();
    let loaded = Cnn::load(&paths.weights, &device).unwrap();
    let test = subset(Part::Test, 64);
    let indices: Vec<usize> = (0..64).collect();
    let batch = Batch::new(&test.images, &indices, &device);
    let before = model
        .probabilities(&batch)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let after = loaded
        .probabilities(&batch)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(before, after);

    let meta: train::Metadata =
        serde_json::from_slice(&std::fs::read(&paths.metadata).unwrap()).unwrap();
    assert_eq!(meta.epochs_done, 2);
    assert_eq!(meta.history.len(), 2);
    assert_eq!(meta.parameters, PARAMETERS);
    assert_eq!(meta.train_examples, 320);
    assert_eq!(meta.train_data_sha256, train_set.sha256);
    assert_eq!(meta.architecture, model::ARCHITECTURE);
}

#[test]
fn a_model_of_another_architecture_is_refused() {
    let device = backend::device();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.bpk");
    let other = burn::nn::LinearConfig::new(784, 10).init(&device);
    let bytes = other.into_record().into_bytes().unwrap();
    std::fs::write(&path, &bytes[..]).unwrap();
    let err = Cnn::load(&path, &device).unwrap_err().to_string();
    assert!(err.contains("holds another architecture"), "{err}");
    assert!(err.contains("other.bpk"), "{err}");
}

#[test]
fn every_parameter_is_trained() {
    let device = backend::device();
    let train_set = subset(Part::Train, 64);
    let config = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let mut trainer = train::Trainer::new(&config, &device);
    let before = weights(trainer.model());
    trainer.step(&train_set, &(0..32).collect::<Vec<_>>());
    trainer.step(&train_set, &(32..64).collect::<Vec<_>>());
    let after = weights(trainer.model());
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert!(b != a, "parameter {i} did not change");
    }
}
