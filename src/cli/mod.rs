//! The command line: what each command accepts ([`args`]), what a run will
//! do once its flags are resolved ([`plan`]), the checks made before any
//! work ([`preflight`]), what several commands share ([`common`]: the
//! hints their errors get, reading a model), and one file per command that
//! turns it into calls to the library and lines for the user.

mod args;
mod bench;
mod common;
mod download;
mod eval;
mod explain;
mod export;
mod misclassified;
mod models;
mod plan;
mod plot;
mod predict;
mod preflight;
mod serve;
mod show;
mod train;

use std::process::ExitCode;

use mnist_cnn::train::TrainError;

pub use args::Cli;
use args::Command;

use crate::term::{self, EXIT_INTERRUPTED, note};

/// Sets the kernels' instruction set from `MNIST_CNN_SIMD` (unset: the
/// widest this CPU and build have), refusing a name it does not know or an
/// instruction set the CPU lacks, which would die of an illegal instruction.
fn choose_kernels() -> anyhow::Result<()> {
    let setting = std::env::var("MNIST_CNN_SIMD").ok();
    let isa = mnist_cnn::kernels::Isa::from_setting(setting.as_deref())?;
    let chosen = mnist_cnn::kernels::choose(isa);
    debug_assert!(chosen, "the kernels ran before the setting was read");
    Ok(())
}

/// Runs the command the user asked for and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    let Some(command) = cli.command else {
        // Bare `mnist-cnn`: not an error, a first step.
        let _ = term::print(args::START_HERE);
        return ExitCode::SUCCESS;
    };
    let result = choose_kernels().and_then(|()| match command {
        Command::Download(args) => download::run(&args),
        Command::Train(args) => train::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Predict(args) => predict::run(&args),
        Command::Show(args) => show::run(&args),
        Command::Misclassified(args) => misclassified::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Export(args) => export::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Models(args) => models::run(&args),
        Command::Explain(args) => explain::run(&args),
        Command::Serve(args) => serve::run(&args),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output has gone (`| head`): nothing is wrong.
        Err(e) if term::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            note(format!("error: {}", one_line(&e)));
            match e.downcast_ref() {
                Some(TrainError::Interrupted { .. }) => ExitCode::from(EXIT_INTERRUPTED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// The error and its causes on one line, each said once: the library's
/// errors already end with the cause they wrap ("cannot write F: No space
/// left on device"), which `{:#}` would repeat.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn an_error_says_each_cause_once() {
        let disk = std::io::Error::from_raw_os_error(28);
        let store = mnist_cnn::store::StoreError::Read {
            path: "m.bpk".into(),
            source: disk,
        };
        let e = anyhow::Error::from(store).context("while saving");
        assert_eq!(
            one_line(&e),
            "while saving: cannot read m.bpk: No space left on device (os error 28)"
        );
    }

    /// clap's own checks of the definitions (conflicts, requirements,
    /// defaults against their parsers), which only debug builds make on
    /// their own and the suite runs in release.
    #[test]
    fn the_command_line_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    /// The help states the tutorial's settings, taken from the code that
    /// applies them, and the engine's default on train as the checkpoint's.
    #[test]
    fn the_help_gives_the_defaults_the_code_applies() {
        let d = mnist_cnn::train::TrainConfig::DEFAULT;
        let tutorial = (
            d.epochs,
            d.batch_size,
            d.learning_rate,
            mnist_cnn::eval::BATCH,
        );
        assert_eq!(tutorial, (10, 32, 0.01, 128), "the tutorial's settings");
        let mut cli = Cli::command();
        let help = |cli: &mut clap::Command, command: &str| {
            let sub = cli.find_subcommand_mut(command).unwrap();
            sub.render_help().to_string()
        };
        let train = help(&mut cli, "train");
        let rates = "0.01 for sgd and momentum, 0.001 for adam";
        for default in ["10", "32", rates, "42", "sgd", "0.25"] {
            let text = format!("[default: {default}; with --resume, the checkpoint's]");
            assert!(train.contains(&text), "{text} not in {train}");
        }
        assert!(
            train.contains("burn on a GPU; with --resume, the checkpoint's]"),
            "{train}"
        );
        for command in ["eval", "misclassified"] {
            assert!(
                help(&mut cli, command).contains("[default: 128]"),
                "{command}"
            );
        }
        let bench = help(&mut cli, "bench");
        assert!(bench.contains("burn on a GPU]"), "{bench}");
        assert!(!bench.contains("--resume"), "{bench}");
    }
}
