//! Command-line interface: argument parsing and the glue that turns each
//! command into calls to the library, and results into output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::bench;
use crate::data::{self, Part};
use crate::download::{Downloader, MIRROR_ENV, Mirror, Outcome};
use crate::eval::{self, Evaluation};
use crate::misclassified;
use crate::model::Cnn;
use crate::train::{self, EpochStats, ModelPaths, Progress, TrainConfig};

/// Download MNIST, train the Keras tutorial's CNN on it, evaluate it and show its mistakes.
#[derive(Debug, Parser)]
#[command(name = "mnist-cnn", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch and verify the four MNIST files into the data folder.
    Download(DownloadArgs),
    /// Train the network (downloading the data first if needed), save it, evaluate it.
    Train(TrainArgs),
    /// Evaluate a trained model on the 10,000 test images.
    Eval(EvalArgs),
    /// List (and draw) test images the model gets wrong.
    Misclassified(MisclassifiedArgs),
    /// Measure training and evaluation images/s and peak memory on the real data.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Folder holding the data set (decompressed IDX files).
    #[arg(long, default_value = "data", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Mirror to try before the public ones: an http(s) URL, a folder or a
    /// file:// URL holding the .gz files. Repeatable. MNIST_MIRROR adds more.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Seconds to wait for a connection or for data before giving up on a mirror.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Fetch again even if valid files are already present.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Model path: weights go to PATH.bpk, metadata to PATH.json.
    #[arg(long = "model", default_value = "data/model", value_name = "PATH")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Plain SGD learning rate (no momentum).
    #[arg(long, default_value_t = 0.01)]
    pub learning_rate: f64,
    /// Seed for the initial weights, the shuffling and dropout.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Train on the first N training images only.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MisclassifiedArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How many misclassified images to show, chosen at random.
    #[arg(long, default_value_t = 5, conflicts_with = "all")]
    pub count: usize,
    /// Show every misclassified image.
    #[arg(long)]
    pub all: bool,
    /// Seed for the random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Do not draw the digits in the terminal.
    #[arg(long)]
    pub no_render: bool,
    /// Also write each image as a PNG file into DIR.
    #[arg(long, value_name = "DIR")]
    pub png: Option<PathBuf>,
    /// Print a JSON array of {index, predicted, true, confidence} instead.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Timed training steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Untimed training steps before them.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 128)]
    pub eval_batch_size: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command the user asked for.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Download(args) => download(&args),
        Command::Train(args) => train_cmd(&args),
        Command::Eval(args) => eval_cmd(&args),
        Command::Misclassified(args) => misclassified_cmd(&args),
        Command::Bench(args) => bench_cmd(&args),
    }
}

fn downloader(mirror: &MirrorArgs, force: bool) -> Downloader {
    let env = std::env::var(MIRROR_ENV).ok();
    let mut d = Downloader::new(Mirror::list(&mirror.mirrors, env.as_deref()));
    d.timeout = Duration::from_secs(mirror.timeout.max(1));
    d.force = force;
    d
}

fn download(args: &DownloadArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    let stored = downloader(&args.mirror, args.force).run(dir)?;
    let fetched = stored
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Fetched { .. }))
        .count();
    let names = ["x_train", "y_train", "x_test", "y_test"];
    for (name, s) in names.iter().zip(&stored) {
        let dims: Vec<String> = s.shape.iter().map(usize::to_string).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        println!("{name} shape: {shape}");
    }
    println!(
        "{} files in {} ({fetched} fetched, {} already present)",
        stored.len(),
        dir.display(),
        stored.len() - fetched
    );
    Ok(())
}

/// Loads one part of the data, downloading the data set first when absent.
fn load_or_download(dir: &Path, mirror: &MirrorArgs, part: Part) -> Result<data::Split> {
    if !data::is_present(dir) {
        eprintln!(
            "{} has no MNIST data yet: downloading it first",
            dir.display()
        );
        downloader(mirror, false).run(dir)?;
    }
    Ok(data::load(dir, part)?)
}

fn train_cmd(args: &TrainArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    let mut data = load_or_download(dir, &args.mirror, Part::Train)?;
    if let Some(limit) = args.limit {
        if limit == 0 {
            bail!("--limit must be at least 1");
        }
        data.truncate(limit);
    }
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        seed: args.seed,
    };
    let paths = ModelPaths::new(&args.model.path);
    if let Some(parent) = paths.weights.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let device = crate::backend::device();
    println!("{}", Cnn::summary_text());
    println!(
        "Training on {} images, batch size {}, SGD learning rate {}, seed {} ({} backend)",
        data.len(),
        config.batch_size,
        config.learning_rate,
        config.seed,
        crate::backend::NAME
    );
    handle_ctrl_c();
    let mut progress = CliProgress::new();
    let (model, _history) = train::train(&data, &config, &device, Some(&paths), &mut progress)?;
    let test = data::load(dir, Part::Test)?;
    let evaluation = eval::evaluate(&model, &test, 128, &device);
    println!("Test {}", evaluation.summary_line());
    println!(
        "Model saved to {} (metadata: {})",
        paths.weights.display(),
        paths.metadata.display()
    );
    Ok(())
}

fn evaluate_saved(
    dir: &Path,
    model: &ModelArgs,
    batch_size: usize,
) -> Result<(Evaluation, data::Split)> {
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let device = crate::backend::device();
    let paths = ModelPaths::new(&model.path);
    let cnn = Cnn::load(&paths.weights, &device)?;
    let test = data::load(dir, Part::Test)?;
    Ok((eval::evaluate(&cnn, &test, batch_size, &device), test))
}

fn eval_cmd(args: &EvalArgs) -> Result<()> {
    let (evaluation, _) = evaluate_saved(&args.data.data_dir, &args.model, args.batch_size)?;
    if args.json {
        println!("{}", serde_json::to_string(&evaluation)?);
    } else {
        println!("{}", evaluation.summary_line());
        print!("{}", evaluation.report());
    }
    Ok(())
}

fn misclassified_cmd(args: &MisclassifiedArgs) -> Result<()> {
    let (evaluation, test) = evaluate_saved(&args.data.data_dir, &args.model, args.batch_size)?;
    let count = (!args.all).then_some(args.count);
    let mistakes = misclassified::pick(&evaluation, &test, count, args.seed);
    let total = evaluation.misclassified(&test.labels).len();
    if let Some(n) = count.filter(|&n| n > total) {
        eprintln!(
            "only {total} of {} test images are misclassified (asked for {n})",
            test.len()
        );
    }
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        for (m, path) in mistakes
            .iter()
            .zip(misclassified::png_paths(dir, &mistakes))
        {
            misclassified::write_png(&path, test.images.image(m.index))?;
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&mistakes)?);
        return Ok(());
    }
    println!(
        "{total} of {} test images misclassified; showing {}",
        test.len(),
        mistakes.len()
    );
    let mut out = std::io::stdout().lock();
    for m in &mistakes {
        writeln!(
            out,
            "\n#{}: predicted {}, true {} (confidence {:.1}%)",
            m.index,
            m.predicted,
            m.truth,
            m.confidence * 100.0
        )?;
        if !args.no_render {
            write!(out, "{}", misclassified::render(test.images.image(m.index)))?;
        }
    }
    if let Some(dir) = &args.png {
        writeln!(out, "\nPNG files written to {}", dir.display())?;
    }
    Ok(())
}

/// Set by the first Ctrl-C during training; the trainer stops before its
/// next step, so no checkpoint is ever cut off halfway.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit status of a program stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// First Ctrl-C: finish the current step and stop cleanly. Second: quit now.
fn handle_ctrl_c() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(EXIT_INTERRUPTED.into());
        }
        eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
    });
    if let Err(e) = result {
        eprintln!("warning: cannot catch Ctrl-C: {e}");
    }
}

/// Keras-style training progress: a bar per epoch on a terminal, one line per epoch always.
struct CliProgress {
    bar: Option<ProgressBar>,
    terminal: bool,
}

impl CliProgress {
    fn new() -> Self {
        Self {
            bar: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }
}

impl Progress for CliProgress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {pos}/{len} [{bar:30}] - ETA: {eta} - {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step(&mut self, step: usize, loss: f64, accuracy: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            if step.is_multiple_of(16) {
                bar.set_message(format!("loss: {loss:.4} - accuracy: {accuracy:.4}"));
            }
        }
    }

    fn should_stop(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }

    fn epoch_end(&mut self, stats: &EpochStats, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!(
            "Epoch {}/{epochs} - {:.1}s - loss: {:.4} - accuracy: {:.4}",
            stats.epoch, stats.seconds, stats.loss, stats.accuracy
        );
    }
}

fn bench_cmd(args: &BenchArgs) -> Result<()> {
    if args.steps == 0 || args.batch_size == 0 || args.eval_batch_size == 0 {
        bail!("--steps, --batch-size and --eval-batch-size must be at least 1");
    }
    let dir = &args.data.data_dir;
    let train = load_or_download(dir, &args.mirror, Part::Train)?;
    let test = data::load(dir, Part::Test)?;
    if train.len() < args.batch_size {
        bail!("the training set has fewer than --batch-size images");
    }
    let config = bench::BenchConfig {
        steps: args.steps,
        warmup: args.warmup,
        batch_size: args.batch_size,
        eval_batch_size: args.eval_batch_size,
        seed: 42,
    };
    let result = bench::run(&config, &train, &test, &crate::backend::device());
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", result.report());
    }
    Ok(())
}
