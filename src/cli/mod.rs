//! The command line: what each command accepts ([`args`]), what a run will
//! do once its flags are resolved ([`plan`]), the checks made before any
//! work ([`preflight`]), and one file per command that turns it into calls
//! to the library and lines for the user.

mod args;
mod bench;
mod download;
mod eval;
mod export;
mod misclassified;
mod plan;
mod plot;
mod predict;
mod preflight;
mod show;
mod train;

use std::path::Path;
use std::process::ExitCode;

use anyhow::anyhow;

use mnist_cnn::backend;
use mnist_cnn::data::DataError;
use mnist_cnn::download::{DownloadError, MIRROR_ENV};
use mnist_cnn::model::Cnn;
use mnist_cnn::store::{ModelPaths, StoreError};
use mnist_cnn::train::TrainError;

pub use args::Cli;
use args::Command;

use crate::term::{self, EXIT_INTERRUPTED, note};

/// Runs the command the user asked for and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Download(args) => download::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Show(args) => show::run(&args),
        Command::Misclassified(args) => misclassified::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output has gone (`| head`): nothing is wrong.
        Err(e) if term::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note(format!("error: {e:#}"));
            match e.downcast_ref() {
                Some(TrainError::Interrupted { .. }) => ExitCode::from(EXIT_INTERRUPTED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// Adds to a download failure what to do about it.
fn download_failed(e: DownloadError) -> anyhow::Error {
    let offline = format!(
        "to work offline, pass --mirror DIR or set {MIRROR_ENV}=DIR, DIR being a folder \
         (or http:// server) that holds the four .gz files"
    );
    match e {
        DownloadError::AllMirrorsFailed { .. } => anyhow!("{e} (each reason above); {offline}"),
        DownloadError::NoMirrors { .. } => anyhow!("{e}; {offline}"),
        DownloadError::File(_) => e.into(),
    }
}

/// Adds to a data-folder failure the command that fixes it.
fn data_failed(e: DataError, dir: &Path) -> anyhow::Error {
    let fix = format!("mnist-cnn download --data-dir {}", dir.display());
    match e {
        DataError::Missing { .. } => anyhow!("{e}: run `{fix}` first"),
        DataError::Idx(_) => anyhow!("{e}; `{fix}` repairs it"),
        DataError::Io { .. } => e.into(),
    }
}

/// Adds to a model-file failure the command that makes a good one.
fn model_failed(e: StoreError, paths: &ModelPaths) -> anyhow::Error {
    let fix = format!("mnist-cnn train --model {}", paths.stem().display());
    match e {
        StoreError::Missing { .. } => anyhow!("{e}: train one with `{fix}`"),
        StoreError::Corrupt { .. } | StoreError::Architecture { .. } => {
            anyhow!("{e}; retrain with `{fix}`")
        }
        _ => e.into(),
    }
}

/// The model stored at `paths`, read and checked on the CPU: a missing or
/// damaged model is found before a GPU is opened.
fn load_model(paths: &ModelPaths) -> anyhow::Result<Cnn> {
    paths
        .load_weights(&backend::host_device())
        .map_err(|e| model_failed(e, paths))
}

/// `(60000, 28, 28)`, as numpy prints a shape.
fn shape(dims: &[usize]) -> String {
    match dims {
        [one] => format!("({one},)"),
        _ => {
            let dims: Vec<String> = dims.iter().map(usize::to_string).collect();
            format!("({})", dims.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own checks of the definitions (conflicts, requirements,
    /// defaults against their parsers), which only debug builds make on
    /// their own and the suite runs in release.
    #[test]
    fn the_command_line_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_in_the_help_come_from_the_settings_themselves() {
        let mut cli = Cli::command();
        let train = cli.find_subcommand_mut("train").unwrap();
        let help = train.render_help().to_string();
        let d = mnist_cnn::train::TrainConfig::DEFAULT;
        for default in [
            d.epochs.to_string(),
            d.batch_size.to_string(),
            d.seed.to_string(),
        ] {
            assert!(help.contains(&format!("[default: {default};")), "{help}");
        }
        assert!(
            help.contains(&format!("[default: {};", d.learning_rate)),
            "{help}"
        );
        let eval = cli.find_subcommand_mut("eval").unwrap();
        let help = eval.render_help().to_string();
        assert!(
            help.contains(&format!("[default: {}]", mnist_cnn::eval::BATCH)),
            "{help}"
        );
    }

    #[test]
    fn shapes_read_as_numpy_prints_them() {
        assert_eq!(shape(&[60000, 28, 28]), "(60000, 28, 28)");
        assert_eq!(shape(&[10000]), "(10000,)");
    }
}
