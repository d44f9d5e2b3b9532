//! What a run will do, resolved from its flags and, for `train --resume`,
//! the checkpoint it continues: the backend, the engine, the settings and
//! the images. Pure functions of their inputs, so that every combination
//! the README describes is unit-tested here rather than through the binary.

use anyhow::{Result, anyhow};

use mnist_cnn::backend::Backend;
use mnist_cnn::train::{Checkpoint, Engine, Metadata, TrainConfig};

use super::args::{BenchArgs, TrainArgs};

/// The backend a command runs on: the one asked for; without one, the CPU
/// when the engine is the host's (asked for, or a checkpoint's), since that
/// is the only place it computes; else the build's default (its GPU, if it
/// has one).
pub fn backend(asked: Option<Backend>, engine: Option<Engine>) -> Backend {
    match (asked, engine) {
        (Some(backend), _) => backend,
        (None, Some(Engine::Host)) => Backend::HOST,
        (None, _) => Backend::DEFAULT,
    }
}

/// Where and how `bench` runs: as a new `train` run would.
pub fn bench(args: &BenchArgs) -> Result<(Backend, Engine)> {
    let backend = backend(args.backend.backend, args.engine.engine);
    let engine = args.engine.engine.unwrap_or(Engine::for_backend(backend));
    engine.check_backend(backend)?;
    Ok((backend, engine))
}

/// What a `train` run does.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainPlan {
    pub backend: Backend,
    /// The settings, the engine among them.
    pub config: TrainConfig,
    /// Train on the first `limit` images (`usize::MAX`: all of them).
    pub limit: usize,
}

impl TrainPlan {
    /// A run whose checkpoint `saved` has trained every epoch asked for
    /// already: it has nothing to do.
    pub fn is_done(&self, saved: Option<&Metadata>) -> bool {
        saved.is_some_and(|m| m.epochs_done() >= self.config.epochs)
    }
}

/// `train`'s flags merged with the checkpoint it resumes, if any: each
/// setting is the flag's, else the checkpoint's, else the default (the
/// tutorial's, with the engine of the backend). A checkpoint is continued
/// only with its own settings (and engine), and the host engine only on a
/// CPU backend; the errors say so, and what to do.
pub fn train(args: &TrainArgs, checkpoint: Option<&Checkpoint>) -> Result<TrainPlan> {
    let saved = checkpoint.map(|c| &c.metadata);
    // The host engine, asked for or the checkpoint's, runs on the CPU: unless
    // told otherwise, that is where it trains, GPU in the build or not.
    let engine = args.engine.engine.or(saved.map(|m| m.config.engine));
    let backend = backend(args.backend.backend, engine);
    let defaults = saved.map_or(
        TrainConfig {
            engine: Engine::for_backend(backend),
            ..TrainConfig::DEFAULT
        },
        |m| m.config.clone(),
    );
    let optimizer = args.optimizer.unwrap_or(defaults.optimizer);
    // A new run's learning rate is its optimiser's default (Adam's is not
    // SGD's); a resumed one keeps its own.
    let learning_rate = match saved {
        Some(_) => defaults.learning_rate,
        None => optimizer.default_learning_rate(),
    };
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        learning_rate: args.learning_rate.unwrap_or(learning_rate),
        seed: args.seed.unwrap_or(defaults.seed),
        engine: engine.unwrap_or(defaults.engine),
        optimizer,
        dropout: args.dropout.unwrap_or(defaults.dropout),
    };
    config.validate()?;
    if let Some(checkpoint) = checkpoint {
        checkpoint.check_settings(&config)?;
    }
    config.engine.check_backend(backend).map_err(|e| {
        if checkpoint.is_some() {
            anyhow!(
                "{e} (the model was trained with the host engine: resume it with --backend {})",
                Backend::HOST.name()
            )
        } else {
            e.into()
        }
    })?;
    let limit = args
        .limit
        .or(saved.map(|m| m.train_examples))
        .unwrap_or(usize::MAX);
    Ok(TrainPlan {
        backend,
        config,
        limit,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mnist_cnn::arch::{PARAMETERS, architecture};
    use mnist_cnn::backend::host_device;
    use mnist_cnn::model::Cnn;
    use mnist_cnn::optim::Optimizer;
    use mnist_cnn::store::ModelPaths;

    use super::*;
    use crate::cli::args::{Cli, Command};

    fn train_args(flags: &[&str]) -> TrainArgs {
        let line = ["mnist-cnn", "train"].iter().chain(flags);
        match Cli::try_parse_from(line).unwrap().command.unwrap() {
            Command::Train(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn bench_args(flags: &[&str]) -> BenchArgs {
        let line = ["mnist-cnn", "bench"].iter().chain(flags);
        match Cli::try_parse_from(line).unwrap().command.unwrap() {
            Command::Bench(args) => args,
            other => panic!("parsed as {other:?}"),
        }
    }

    /// A checkpoint of `epochs_done` of 3 epochs, trained on 2,000 images
    /// with these settings and the `engine`, on `backends`.
    fn checkpoint(engine: Engine, epochs_done: usize, backends: &[&str]) -> Checkpoint {
        let config = TrainConfig {
            epochs: 3,
            batch_size: 64,
            learning_rate: 0.05,
            seed: 7,
            engine,
            ..TrainConfig::DEFAULT
        };
        let stats = |epoch| mnist_cnn::train::EpochStats {
            epoch,
            loss: 1.0,
            accuracy: 0.5,
            seconds: 1.0,
            validation: None,
        };
        Checkpoint {
            model: Cnn::skeleton(&host_device().autodiff()),
            metadata: Metadata {
                architecture: architecture(),
                parameters: PARAMETERS,
                config,
                train_examples: 2000,
                history: (1..=epochs_done).map(stats).collect(),
                train_data_sha256: "ab".into(),
                backends: backends.iter().map(|b| b.to_string()).collect(),
                test: None,
                validation_data: None,
            },
            paths: ModelPaths::new(std::path::Path::new("m")),
        }
    }

    #[test]
    fn a_new_run_takes_the_tutorials_settings_on_the_default_backend() {
        let plan = train(&train_args(&[]), None).unwrap();
        assert_eq!(plan.backend, Backend::DEFAULT);
        let engine = Engine::for_backend(Backend::DEFAULT);
        assert_eq!(
            plan.config,
            TrainConfig {
                engine,
                ..TrainConfig::DEFAULT
            }
        );
        assert_eq!(plan.limit, usize::MAX, "all images");
        assert!(!plan.is_done(None));
    }

    #[test]
    fn flags_replace_each_default() {
        let args = train_args(&[
            "--epochs",
            "2",
            "--batch-size",
            "128",
            "--learning-rate",
            "0.1",
            "--seed",
            "1",
            "--limit",
            "2000",
            "--engine",
            "burn",
            "--optimizer",
            "momentum",
            "--dropout",
            "0.5",
        ]);
        let plan = train(&args, None).unwrap();
        let expected = TrainConfig {
            epochs: 2,
            batch_size: 128,
            learning_rate: 0.1,
            seed: 1,
            engine: Engine::Burn,
            optimizer: Optimizer::Momentum,
            dropout: 0.5,
        };
        assert_eq!(plan.config, expected);
        assert_eq!(plan.limit, 2000);
        assert_eq!(plan.backend, Backend::DEFAULT);
    }

    #[test]
    fn adam_takes_its_own_default_learning_rate_unless_one_is_given() {
        let plan = train(&train_args(&["--optimizer", "adam"]), None).unwrap();
        assert_eq!(plan.config.optimizer, Optimizer::Adam);
        assert_eq!(plan.config.learning_rate, 0.001);
        let args = train_args(&["--optimizer", "adam", "--learning-rate", "0.01"]);
        assert_eq!(train(&args, None).unwrap().config.learning_rate, 0.01);
        let plan = train(&train_args(&["--optimizer", "momentum"]), None).unwrap();
        assert_eq!(plan.config.learning_rate, 0.01);
    }

    #[test]
    fn another_optimizer_or_dropout_is_refused_on_resume() {
        let saved = checkpoint(Engine::Host, 1, &["flex"]);
        for (flags, said) in [
            (["--optimizer", "adam"], "optimizer sgd, not adam"),
            (["--dropout", "0.5"], "dropout 0.25, not 0.5"),
        ] {
            let args = train_args(&[&["--resume"][..], &flags].concat());
            let err = train(&args, Some(&saved)).unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
    }

    #[test]
    fn a_dropout_rate_is_rounded_to_the_masks_steps() {
        let plan = train(&train_args(&["--dropout", "0.3"]), None).unwrap();
        assert_eq!(plan.config.dropout, 77.0 / 256.0);
        let plan = train(&train_args(&["--dropout", "0.25"]), None).unwrap();
        assert_eq!(plan.config.dropout, 0.25, "the tutorial's is exact");
    }

    #[test]
    fn the_host_engine_asked_for_runs_on_the_cpu() {
        let plan = train(&train_args(&["--engine", "host"]), None).unwrap();
        assert_eq!(plan.backend, Backend::HOST);
        assert_eq!(plan.config.engine, Engine::Host);
        let asked = Backend::HOST.name();
        let plan = train(&train_args(&["--backend", asked]), None).unwrap();
        assert_eq!(plan.config.engine, Engine::Host, "a CPU backend's default");
    }

    #[test]
    fn a_resumed_run_takes_the_checkpoints_settings_and_images() {
        let saved = checkpoint(Engine::Host, 1, &["flex"]);
        let plan = train(&train_args(&["--resume"]), Some(&saved)).unwrap();
        assert_eq!(plan.config, saved.metadata.config);
        assert_eq!(plan.limit, 2000);
        assert_eq!(plan.backend, Backend::HOST, "the host engine's backend");
        assert!(!plan.is_done(Some(&saved.metadata)));
        let more = train(&train_args(&["--resume", "--epochs", "5"]), Some(&saved)).unwrap();
        assert_eq!(more.config.epochs, 5);
        // The settings it was trained with may be repeated.
        let same = ["--resume", "--batch-size", "64", "--seed", "7"];
        assert_eq!(train(&train_args(&same), Some(&saved)).unwrap(), plan);
    }

    #[test]
    fn a_checkpoint_that_has_every_epoch_asked_for_is_done() {
        let saved = checkpoint(Engine::Host, 3, &["flex"]);
        let plan = train(&train_args(&["--resume"]), Some(&saved)).unwrap();
        assert!(plan.is_done(Some(&saved.metadata)));
        let more = train(&train_args(&["--resume", "--epochs", "4"]), Some(&saved)).unwrap();
        assert!(!more.is_done(Some(&saved.metadata)));
    }

    #[test]
    fn a_checkpoint_is_continued_only_with_its_own_settings() {
        let saved = checkpoint(Engine::Host, 1, &["flex"]);
        let err = train(
            &train_args(&["--resume", "--learning-rate", "0.01", "--seed", "8"]),
            Some(&saved),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "cannot resume from m.bpk: it was trained with learning rate 0.05, not 0.01; \
             it was trained with seed 7, not 8"
        );
        let err = train(&train_args(&["--resume", "--engine", "burn"]), Some(&saved))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("engine host, not burn"), "{err}");
    }

    #[test]
    fn a_burn_engine_checkpoint_resumes_on_the_default_backend() {
        // Made on a GPU, say: its engine is Burn's, which any backend runs.
        let saved = checkpoint(Engine::Burn, 1, &["wgpu"]);
        let plan = train(&train_args(&["--resume"]), Some(&saved)).unwrap();
        assert_eq!(plan.backend, Backend::DEFAULT);
        assert_eq!(plan.config.engine, Engine::Burn);
        let asked = Backend::HOST.name();
        let on_cpu = train(&train_args(&["--resume", "--backend", asked]), Some(&saved)).unwrap();
        assert_eq!(on_cpu.backend, Backend::HOST, "resumed across backends");
        assert_eq!(on_cpu.config.engine, Engine::Burn);
    }

    #[test]
    fn settings_out_of_range_in_a_checkpoint_are_refused() {
        let mut saved = checkpoint(Engine::Host, 1, &["flex"]);
        saved.metadata.config.batch_size = 0;
        let err = train(&train_args(&["--resume"]), Some(&saved)).unwrap_err();
        assert_eq!(err.to_string(), "batch size is 0; it must be 1 to 60000");
    }

    #[test]
    fn bench_runs_where_a_new_training_run_would() {
        let (backend, engine) = bench(&bench_args(&[])).unwrap();
        assert_eq!(backend, Backend::DEFAULT);
        assert_eq!(engine, Engine::for_backend(Backend::DEFAULT));
        let (backend, engine) = bench(&bench_args(&["--engine", "host"])).unwrap();
        assert_eq!((backend, engine), (Backend::HOST, Engine::Host));
        let (_, engine) = bench(&bench_args(&["--engine", "burn"])).unwrap();
        assert_eq!(engine, Engine::Burn);
    }

    /// In a build with a GPU: new runs go there with Burn's engine, the host
    /// engine stays on the CPU, and is refused on the GPU with the way out.
    #[cfg(feature = "wgpu")]
    #[test]
    fn with_a_gpu_the_host_engine_stays_on_the_cpu() {
        let plan = train(&train_args(&[]), None).unwrap();
        assert_eq!(
            (plan.backend, plan.config.engine),
            (Backend::Wgpu, Engine::Burn)
        );
        let saved = checkpoint(Engine::Host, 1, &["flex"]);
        let plan = train(&train_args(&["--resume"]), Some(&saved)).unwrap();
        assert_eq!(plan.backend, Backend::HOST);
        let err = train(
            &train_args(&["--resume", "--backend", "wgpu"]),
            Some(&saved),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with(
                "(the model was trained with the host engine: resume it with --backend flex)"
            ),
            "{err}"
        );
        let err = train(
            &train_args(&["--engine", "host", "--backend", "wgpu"]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("the host engine computes on the CPU"),
            "{err}"
        );
        assert!(bench(&bench_args(&["--engine", "host", "--backend", "wgpu"])).is_err());
    }
}
