//! The command line: what each command accepts, checked before any work,
//! and how it turns into calls to the library and lines for the user.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};

use mnist_cnn::arch;
use mnist_cnn::backend::{self, Backend};
use mnist_cnn::bench;
use mnist_cnn::data::{self, DataError, Part, Split};
use mnist_cnn::download::{DownloadError, Downloader, MIRROR_ENV, Mirror, Outcome};
use mnist_cnn::eval::{self, Evaluation};
use mnist_cnn::idx::{CLASSES, SIDE};
use mnist_cnn::misclassified;
use mnist_cnn::model;
use mnist_cnn::picture;
use mnist_cnn::plot;
use mnist_cnn::prepare;
use mnist_cnn::store::{ModelPaths, StoreError};
use mnist_cnn::train::{
    self, Checkpoint, Engine, Job, Metadata, TestResult, TrainConfig, TrainError, Validation,
};

use crate::term::{self, DownloadReport, EXIT_INTERRUPTED, TrainProgress, note, print};

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
    /// Look at one image of the data set: drawn, its label, one-hot vector and pixel values.
    Show(ShowArgs),
    /// Train the network (downloading the data first if needed), save it, evaluate it.
    Train(TrainArgs),
    /// Draw a model's learning curves (loss and accuracy per epoch) as an SVG file.
    Plot(PlotArgs),
    /// Evaluate a trained model on the 10,000 test images.
    Eval(EvalArgs),
    /// List (and draw) test images the model gets wrong.
    Misclassified(MisclassifiedArgs),
    /// Read digits from your own pictures (PNG, JPEG, BMP, PGM) with a trained model.
    Predict(PredictArgs),
    /// Write the trained weights as safetensors, in the tutorial's Keras layout.
    Export(ExportArgs),
    /// Measure training and evaluation images/s and peak memory on the real data.
    Bench(BenchArgs),
}

/// Most digits one `--sheet` draws: enough for any look, small enough that
/// the picture (some 80 kB a digit) stays far from the memory limits.
const MAX_SHEET: usize = 100;

/// Largest benchmark batch: the floor's products allocate their operands
/// at that batch size on top of training's own buffers.
const MAX_BENCH_BATCH: usize = 4096;

/// Largest evaluation batch: the whole test set.
const MAX_EVAL_BATCH: usize = 10_000;

/// Largest enlargement of a PNG: 28 × 64 = 1792 pixels a side.
const MAX_SCALE: usize = 64;

/// A parser for a whole number from `min` to `max`, whose error names the range.
fn in_range(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

fn engine(s: &str) -> Result<Engine, String> {
    Engine::from_name(s).ok_or_else(|| format!("must be one of: {}", Engine::NAMES.join(", ")))
}

fn learning_rate(s: &str) -> Result<f64, String> {
    let max = TrainConfig::MAX_LEARNING_RATE;
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= max => Ok(x),
        _ => Err(format!("must be a positive number up to {max}")),
    }
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Folder holding the data set (decompressed IDX files) and, by default, the model.
    #[arg(long, default_value = "data", value_name = "DIR", global = true)]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct BackendArgs {
    /// Where the network runs: flex or ndarray (CPU), wgpu (GPU), of those
    /// this build has. [default: wgpu in a build with it, else the CPU backend]
    #[arg(long, value_name = "NAME", value_parser = Backend::from_name)]
    pub backend: Option<Backend>,
}

impl BackendArgs {
    /// The backend asked for; without one, the CPU when the engine is the
    /// host's (asked for, or a checkpoint's), else the build's default.
    fn resolve(&self, engine: Option<Engine>) -> Backend {
        match (self.backend, engine) {
            (Some(backend), _) => backend,
            (None, Some(Engine::Host)) => Backend::HOST,
            (None, _) => Backend::DEFAULT,
        }
    }
}

#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// Mirror to try before the public ones: an http(s) URL, a folder or a
    /// file:// URL holding the .gz files. Repeatable. MNIST_MIRROR adds more.
    #[arg(long = "mirror", value_name = "URL")]
    pub mirrors: Vec<String>,
    /// Try only the mirrors given with --mirror and MNIST_MIRROR, not the public ones.
    #[arg(long)]
    pub no_default_mirrors: bool,
    /// Seconds to wait for a connection or for data before giving up on a mirror.
    #[arg(long, default_value_t = 30, value_name = "SECS", value_parser = in_range(1, 3600))]
    pub timeout: usize,
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
    /// Model location: weights go to PATH.bpk, metadata to PATH.json, learning
    /// curves to PATH.svg; a folder holds model.bpk, model.json and model.svg.
    /// [default: DIR/model, DIR being --data-dir]
    #[arg(long = "model", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

impl ModelArgs {
    fn paths(&self, data: &DataArgs) -> ModelPaths {
        match &self.path {
            Some(path) => ModelPaths::new(path),
            None => ModelPaths::new(&data.data_dir.join(mnist_cnn::store::DEFAULT_MODEL_NAME)),
        }
    }
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Epochs to train to. [default: 10; with --resume, the checkpoint's]
    #[arg(long, value_name = "N", value_parser = in_range(1, TrainConfig::MAX_EPOCHS))]
    pub epochs: Option<usize>,
    /// Images per SGD step. [default: 32; with --resume, the checkpoint's]
    #[arg(long, value_name = "N", value_parser = in_range(1, TrainConfig::MAX_BATCH_SIZE))]
    pub batch_size: Option<usize>,
    /// Plain SGD learning rate, no momentum. [default: 0.01; with --resume, the checkpoint's]
    #[arg(long, value_name = "RATE", value_parser = learning_rate, allow_negative_numbers = true)]
    pub learning_rate: Option<f64>,
    /// Seed for the initial weights, the shuffling and dropout. [default: 42; with --resume, the checkpoint's]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Train on the first N training images only. [default: all; with --resume, the checkpoint's]
    #[arg(long, value_name = "N", value_parser = in_range(1, Part::Train.size()))]
    pub limit: Option<usize>,
    /// Continue the model at --model from its last complete epoch, up to --epochs.
    #[arg(long)]
    pub resume: bool,
    /// How each SGD step is computed: host (the fast path, CPU only) or burn
    /// (Burn's autodiff and SGD; the reference). [default: host on a CPU
    /// backend, burn on a GPU; with --resume, the checkpoint's]
    #[arg(long, value_name = "ENGINE", value_parser = engine)]
    pub engine: Option<Engine>,
    /// Evaluate on the test images after every epoch, as Keras's
    /// fit(validation_data=...) does: val_loss and val_accuracy on each epoch
    /// line and in the history. Training itself is the same with it or without.
    #[arg(long)]
    pub validate: bool,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = in_range(1, MAX_EVAL_BATCH))]
    pub batch_size: usize,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Pictures of one digit each: PNG, JPEG, BMP or PGM/PPM/PBM, any size and
    /// colour, dark on light (a pen on paper) or light on dark. Each is made
    /// into an MNIST-like 28×28 image first.
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<PathBuf>,
    /// Also draw each prepared 28×28 image in the terminal: what the model saw.
    #[arg(long)]
    pub show: bool,
    /// Print a JSON array with one object per file instead:
    /// {file, predicted, top, probabilities, inverted, thickened} or {file, error}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Which image, counted from 0: the tutorial looks at training image 53238.
    #[arg(value_name = "INDEX")]
    pub index: usize,
    /// Take it from the 10,000 test images instead of the 60,000 training images.
    #[arg(long)]
    pub test: bool,
    /// Also print its 28×28 pixel values (0-255) as a table.
    #[arg(long)]
    pub values: bool,
    /// Also write it as a PNG file (light digit on black, as MNIST stores it).
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Enlarge the --png file N times (nearest neighbour; 1 keeps 28×28).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "png",
          value_parser = in_range(1, MAX_SCALE))]
    pub scale: usize,
    /// Print one JSON object {set, index, label, one_hot, pixels} instead.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct MisclassifiedArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// How many misclassified images to show, chosen at random.
    #[arg(long, default_value_t = 5, value_name = "N", conflicts_with = "all",
          value_parser = in_range(1, Part::Test.size()))]
    pub count: usize,
    /// Show every misclassified image.
    #[arg(long)]
    pub all: bool,
    /// Seed for the random choice.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub seed: u64,
    /// Do not draw the digits in the terminal.
    #[arg(long)]
    pub no_render: bool,
    /// Also write each image as a PNG file into DIR.
    #[arg(long, value_name = "DIR")]
    pub png: Option<PathBuf>,
    /// Enlarge the --png files N times (nearest neighbour; 1 keeps 28×28).
    #[arg(long, default_value_t = 1, value_name = "N", requires = "png",
          value_parser = in_range(1, MAX_SCALE))]
    pub scale: usize,
    /// Also write one PNG of the chosen digits side by side, enlarged, with
    /// "model P" and "true T" under each.
    #[arg(long, value_name = "FILE")]
    pub sheet: Option<PathBuf>,
    /// Quiz yourself: show each chosen digit unlabelled, read your guess from
    /// stdin, then reveal the model's answer and the truth; ends with both scores.
    #[arg(long, conflicts_with_all = ["json", "no_render"])]
    pub quiz: bool,
    /// Print a JSON array of {index, predicted, true, confidence} instead.
    #[arg(long)]
    pub json: bool,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = in_range(1, MAX_EVAL_BATCH))]
    pub batch_size: usize,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The SVG file to write. [default: the model's PATH.svg, which `train`
    /// also rewrites after every epoch]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// The safetensors file to write (replaced whole if it exists).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    /// Timed training steps.
    #[arg(long, default_value_t = 300, value_name = "N", value_parser = in_range(1, 100_000))]
    pub steps: usize,
    /// Untimed training steps before them.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = in_range(0, 100_000))]
    pub warmup: usize,
    /// Images per training step.
    #[arg(long, default_value_t = 32, value_name = "N",
          value_parser = in_range(1, MAX_BENCH_BATCH))]
    pub batch_size: usize,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = in_range(1, MAX_EVAL_BATCH))]
    pub eval_batch_size: usize,
    /// How each SGD step is computed: host (the fast path, CPU only) or burn
    /// (the reference). [default: host on a CPU backend, burn on a GPU]
    #[arg(long, value_name = "ENGINE", value_parser = engine)]
    pub engine: Option<Engine>,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command the user asked for and says how it ended.
pub fn run(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Download(args) => download_cmd(&args),
        Command::Train(args) => train_cmd(&args),
        Command::Eval(args) => eval_cmd(&args),
        Command::Predict(args) => predict_cmd(&args),
        Command::Show(args) => show_cmd(&args),
        Command::Misclassified(args) => misclassified_cmd(&args),
        Command::Plot(args) => plot_cmd(&args),
        Command::Export(args) => export_cmd(&args),
        Command::Bench(args) => bench_cmd(&args),
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

fn downloader(mirror: &MirrorArgs, force: bool) -> Downloader {
    let env = std::env::var(MIRROR_ENV).ok();
    let mirrors = Mirror::list(&mirror.mirrors, env.as_deref(), !mirror.no_default_mirrors);
    let mut d = Downloader::new(mirrors);
    d.timeout = Duration::from_secs(mirror.timeout as u64);
    d.force = force;
    d
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
        DownloadError::Store(_) => e.into(),
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

fn download_cmd(args: &DownloadArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    let stored = downloader(&args.mirror, args.force)
        .run(dir, &mut DownloadReport::default())
        .map_err(download_failed)?;
    let fetched = stored
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Fetched { .. }))
        .count();
    let names = ["x_train", "y_train", "x_test", "y_test"];
    for (name, s) in names.iter().zip(&stored) {
        print(format_args!("{name} shape: {}", shape(&s.shape)))?;
    }
    print(format_args!(
        "{} files in {} ({fetched} fetched, {} already present)",
        stored.len(),
        dir.display(),
        stored.len() - fetched
    ))?;
    Ok(())
}

/// Fetches the data set first when the folder lacks it.
fn ensure_data(dir: &Path, mirror: &MirrorArgs) -> Result<()> {
    if !data::is_present(dir) {
        note(format!(
            "{} has no MNIST data yet: downloading it first",
            dir.display()
        ));
        downloader(mirror, false)
            .run(dir, &mut DownloadReport::default())
            .map_err(download_failed)?;
    }
    Ok(())
}

/// Refuses a batch that would not fit in the memory this machine has free,
/// rather than letting the kernel kill the process halfway.
fn check_memory(option: &str, batch: usize, bytes_per_image: usize, work: &str) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let needed = batch as u64 * bytes_per_image as u64 + (200 << 20);
    if needed > available {
        bail!(
            "{option} {batch} needs about {:.1} GB of memory for {work}; this machine has \
             {:.1} GB available (try a smaller {option})",
            needed as f64 / 1e9,
            available as f64 / 1e9
        );
    }
    Ok(())
}

/// `backend`'s device, opened, and checked to hold `batches` (each an
/// option and its value; see [`check_device_batch`]). A GPU is then named
/// on stderr, unless `announce` is off: its first kernels take a while to
/// compile. A missing GPU driver is said with what to do.
fn open_device(backend: Backend, batches: &[(&str, usize)], announce: bool) -> Result<Device> {
    let device = backend.open().map_err(|e| {
        let lavapipe = if cfg!(target_os = "linux") {
            "; without a GPU, Mesa's lavapipe runs the same shaders on the CPU: \
             apt-get install mesa-vulkan-drivers libvulkan1"
        } else {
            ""
        };
        anyhow!(
            "{e} (a GPU needs its Vulkan, Metal or DirectX 12 driver{lavapipe}; or run on \
             the CPU with --backend {})",
            Backend::HOST.name()
        )
    })?;
    for &(option, batch) in batches {
        check_device_batch(option, batch, &device)?;
    }
    if announce && !backend.on_host() {
        note(format!("backend: {}", backend::describe(&device)));
    }
    Ok(device)
}

/// Refuses a batch whose largest tensor would not fit in one of the GPU's
/// buffers (wgpu would fail the allocation halfway, with a panic).
fn check_device_batch(option: &str, batch: usize, device: &Device) -> Result<()> {
    let Some(largest) = backend::largest_buffer(device) else {
        return Ok(());
    };
    let per_image = model::STOCK_TENSOR_BYTES_PER_IMAGE as u64;
    let needed = batch as u64 * per_image;
    if needed > largest {
        bail!(
            "{option} {batch} needs a tensor of {:.1} MB on the GPU, whose buffers take at most \
             {:.1} MB (try {option} {} or less)",
            needed as f64 / 1e6,
            largest as f64 / 1e6,
            largest / per_image
        );
    }
    Ok(())
}

/// Memory this process can still take, in bytes: the least of the
/// system's available memory, the process's address-space limit
/// (`ulimit -v`) and its cgroup's limit (containers). Linux only.
fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let field = |text: &str, key: &str, index: usize| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(index)?.parse().ok()
    };
    let system =
        read("/proc/meminfo").and_then(|t| field(&t, "MemAvailable:", 1).map(|kb| kb * 1024));
    let address_space = read("/proc/self/limits").and_then(|t| field(&t, "Max address space", 3));
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .and_then(|max| max.trim().parse::<u64>().ok())
        .map(|max| {
            let used = read("/sys/fs/cgroup/memory.current")
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0);
            max.saturating_sub(used)
        });
    [system, address_space, cgroup].into_iter().flatten().min()
}

fn train_cmd(args: &TrainArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    // Everything that can be wrong with the options or the model location
    // is found before any download, loading or training.
    let paths = args.model.paths(&args.data);
    paths.check_writable()?;
    paths.remove_stale_temps();
    // A checkpoint is read on the CPU, and moved once the backend is known.
    let checkpoint = if args.resume {
        let checkpoint =
            Checkpoint::load(&paths, &backend::host_device()).map_err(|e| match e {
                StoreError::Missing { .. } => {
                    anyhow!("{e}: nothing to resume; train without --resume to start a model there")
                }
                e => model_failed(e, &paths),
            })?;
        Some(checkpoint)
    } else {
        None
    };
    let saved = checkpoint.as_ref().map(|c| &c.metadata);
    // The host engine, asked for or the checkpoint's, runs on the CPU: unless
    // told otherwise, that is where it trains, GPU in the build or not.
    let engine = args.engine.or(saved.map(|m| m.config.engine));
    let backend = args.backend.resolve(engine);
    let defaults = saved.map_or(
        TrainConfig {
            engine: Engine::for_backend(backend),
            ..TrainConfig::DEFAULT
        },
        |m| m.config.clone(),
    );
    let config = TrainConfig {
        epochs: args.epochs.unwrap_or(defaults.epochs),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        learning_rate: args.learning_rate.unwrap_or(defaults.learning_rate),
        seed: args.seed.unwrap_or(defaults.seed),
        engine: engine.unwrap_or(defaults.engine),
    };
    config.validate()?;
    if let Some(checkpoint) = &checkpoint {
        checkpoint.check_settings(&config)?;
    }
    config.engine.check_backend(backend).map_err(|e| {
        if args.resume {
            anyhow!(
                "{e} (the model was trained with the host engine: resume it with --backend {})",
                Backend::HOST.name()
            )
        } else {
            e.into()
        }
    })?;
    check_memory(
        "--batch-size",
        config.batch_size,
        train::BYTES_PER_IMAGE,
        "training",
    )?;
    // The training line names the device.
    let device = open_device(backend, &[("--batch-size", config.batch_size)], false)?;
    let checkpoint = checkpoint.map(|c| c.moved_to(&device));
    let saved = checkpoint.as_ref().map(|c| &c.metadata);
    if let Some(saved) = saved
        && saved.epochs_done >= config.epochs
    {
        print(format_args!(
            "{} has trained {} of {} epochs already: nothing to resume (ask for more with --epochs)",
            paths.weights.display(),
            saved.epochs_done,
            config.epochs
        ))?;
        return Ok(());
    }
    let limit = args
        .limit
        .or(saved.map(|m| m.train_examples))
        .unwrap_or(usize::MAX);

    ensure_data(dir, &args.mirror)?;
    let (mut data, data_sha256) =
        data::load_with_digest(dir, Part::Train).map_err(|e| data_failed(e, dir))?;
    data.truncate(limit);
    let test = data::load(dir, Part::Test).map_err(|e| data_failed(e, dir))?;

    if checkpoint.is_none() && paths.exists() {
        let earlier = describe(&paths);
        let backup = paths.back_up()?;
        note(format!(
            "{} held {earlier}; kept it as {} (use --resume to continue a model instead)",
            paths.weights.display(),
            backup.weights.display()
        ));
    }
    term::print_lossy(arch::summary());
    match saved {
        Some(m) => term::print_lossy(format_args!(
            "Resuming {} after epoch {} of {} (backend: {}; {} engine)",
            paths.weights.display(),
            m.epochs_done,
            config.epochs,
            backend::describe(&device),
            config.engine.name()
        )),
        None => term::print_lossy(format_args!(
            "Training on {} images, batch size {}, SGD learning rate {}, seed {} (backend: {}; {} engine)",
            data.len(),
            config.batch_size,
            config.learning_rate,
            config.seed,
            backend::describe(&device),
            config.engine.name()
        )),
    }
    term::handle_ctrl_c();
    let test_name = format!("the {} test images", test.len());
    let job = Job {
        data: &data,
        data_sha256,
        config,
        validation: args.validate.then_some(Validation {
            data: &test,
            name: &test_name,
        }),
    };
    let mut progress = Curves {
        progress: TrainProgress::new(),
        plot: &paths.plot,
        failed: false,
    };
    let (model, mut metadata) =
        train::train(&job, checkpoint, &device, Some(&paths), &mut progress)?;
    // The last epoch's validation was this very evaluation.
    let last = metadata.history.last().filter(|_| args.validate);
    let result = match last.and_then(|e| Some((e.val_loss?, e.val_accuracy?))) {
        Some((loss, accuracy)) => TestResult { loss, accuracy },
        None => {
            let evaluation = eval::evaluate(&model, &test, train::VALIDATION_BATCH, &device);
            TestResult {
                loss: evaluation.loss,
                accuracy: evaluation.accuracy,
            }
        }
    };
    metadata.test = Some(result);
    paths.save_metadata(&metadata)?;
    term::print_lossy(format_args!(
        "Test loss: {:.4} - accuracy: {:.4}",
        result.loss, result.accuracy
    ));
    term::print_lossy(format_args!(
        "Model saved to {} (metadata: {}, learning curves: {})",
        paths.weights.display(),
        paths.metadata.display(),
        paths.plot.display()
    ));
    Ok(())
}

/// The terminal's training progress, plus the learning curves redrawn
/// beside the model after every epoch. A picture that cannot be written is
/// said once and does not stop training (`mnist-cnn plot` redraws it).
struct Curves<'a> {
    progress: TrainProgress,
    plot: &'a Path,
    failed: bool,
}

impl train::Progress for Curves<'_> {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.progress.epoch_start(epoch, epochs, steps);
    }

    fn step(&mut self, step: usize, loss: f64, accuracy: f64) {
        self.progress.step(step, loss, accuracy);
    }

    fn epoch_end(&mut self, stats: &train::EpochStats, epochs: usize) {
        self.progress.epoch_end(stats, epochs);
    }

    fn should_stop(&self) -> bool {
        self.progress.should_stop()
    }

    fn saved(&mut self, metadata: &Metadata) {
        let drawn = plot::write(
            self.plot,
            &metadata.history,
            metadata.validation_data.as_deref(),
        );
        if let Err(e) = drawn
            && !std::mem::replace(&mut self.failed, true)
        {
            note(format!("warning: learning curves not drawn: {e}"));
        }
    }
}

/// A few words on the model stored at `paths`, from its metadata.
fn describe(paths: &ModelPaths) -> String {
    match paths.load_metadata::<Metadata>() {
        Ok(m) => {
            let epochs = match m.epochs_done {
                1 => "1 epoch".to_string(),
                n => format!("{n} epochs"),
            };
            match m.test {
                Some(t) => format!("a model of {epochs} (test accuracy {:.4})", t.accuracy),
                None => format!("a model of {epochs}"),
            }
        }
        Err(_) => "an earlier model".into(),
    }
}

/// The model stored at `paths`, read and checked on the CPU: a missing or
/// damaged model is found before a GPU is opened.
fn load_model(paths: &ModelPaths) -> Result<mnist_cnn::model::Cnn> {
    paths
        .load_weights(&backend::host_device())
        .map_err(|e| model_failed(e, paths))
}

/// The model at `--model` evaluated on the test set.
fn evaluate_saved(
    backend: &BackendArgs,
    data: &DataArgs,
    model: &ModelArgs,
    batch_size: usize,
) -> Result<(Evaluation, Split)> {
    check_memory(
        "--batch-size",
        batch_size,
        eval::BYTES_PER_IMAGE,
        "evaluation",
    )?;
    let paths = model.paths(data);
    let cnn = load_model(&paths)?;
    let dir = &data.data_dir;
    let test = data::load(dir, Part::Test).map_err(|e| data_failed(e, dir))?;
    let device = open_device(backend.resolve(None), &[("--batch-size", batch_size)], true)?;
    let cnn = cnn.copied_to(&device);
    Ok((eval::evaluate(&cnn, &test, batch_size, &device), test))
}

fn eval_cmd(args: &EvalArgs) -> Result<()> {
    let (evaluation, _) = evaluate_saved(&args.backend, &args.data, &args.model, args.batch_size)?;
    if args.json {
        print(serde_json::to_string(&evaluation)?)?;
    } else {
        print(evaluation.summary_line())?;
        print(evaluation.report().trim_end())?;
    }
    Ok(())
}

fn predict_cmd(args: &PredictArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    let cnn = load_model(&paths)?;
    let prepared: Vec<Result<prepare::Prepared, prepare::PrepareError>> = args
        .images
        .iter()
        .map(|path| prepare::prepare_file(path))
        .collect();
    let inputs: Vec<Vec<f32>> = prepared
        .iter()
        .flatten()
        .map(|p| p.pixels.clone())
        .collect();
    let device = open_device(args.backend.resolve(None), &[], true)?;
    let cnn = cnn.copied_to(&device);
    let mut probabilities = eval::classify(&cnn, &inputs, &device).into_iter();
    let mut failed = Vec::new();
    let mut json = Vec::new();
    for (path, result) in args.images.iter().zip(&prepared) {
        let file = path.display();
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                let message = format!("{file}: {e}");
                if args.json {
                    json.push(serde_json::json!({"file": path, "error": e.to_string()}));
                }
                if args.images.len() > 1 {
                    note(format!("error: {message}"));
                }
                failed.push(message);
                continue;
            }
        };
        let probs = probabilities.next().expect("one row per prepared image");
        let top = eval::top(&probs, 3);
        if args.json {
            json.push(serde_json::json!({
                "file": path,
                "predicted": top[0].0,
                "top": top.iter().map(|&(digit, probability)| {
                    serde_json::json!({"digit": digit, "probability": probability})
                }).collect::<Vec<_>>(),
                "probabilities": probs,
                "inverted": p.inverted,
                "thickened": p.thickened,
            }));
            continue;
        }
        let ranked: Vec<String> = top
            .iter()
            .map(|(d, p)| format!("{d}: {:.1}%", p * 100.0))
            .collect();
        print(format_args!("{file}: {} ({})", top[0].0, ranked.join(", ")))?;
        if args.show {
            let how = match (p.inverted, p.thickened) {
                (true, true) => " (inverted, strokes widened)",
                (true, false) => " (inverted)",
                (false, true) => " (strokes widened)",
                (false, false) => "",
            };
            print(format_args!("what the model saw{how}:"))?;
            print(picture::render(&p.bytes()).trim_end_matches('\n'))?;
        }
    }
    if args.json {
        print(serde_json::Value::Array(json))?;
    }
    match &failed[..] {
        [] => Ok(()),
        [only] if args.images.len() == 1 => bail!("{only}"),
        _ => bail!(
            "{} of {} pictures could not be read (see above)",
            failed.len(),
            args.images.len()
        ),
    }
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

fn show_cmd(args: &ShowArgs) -> Result<()> {
    let (part, set, x, y) = if args.test {
        (Part::Test, "test", "x_test", "y_test")
    } else {
        (Part::Train, "training", "x_train", "y_train")
    };
    let out_of_range = |len: usize| match len {
        0 => anyhow!(
            "there is no {set} image {}: the {set} set holds none",
            args.index
        ),
        _ => anyhow!(
            "there is no {set} image {}: the {len} {set} images are numbered 0 to {}",
            args.index,
            len - 1
        ),
    };
    if args.index >= part.size() {
        return Err(out_of_range(part.size()));
    }
    if let Some(png) = &args.png {
        mnist_cnn::store::check_writable(png)?;
    }
    let dir = &args.data.data_dir;
    let data = data::load(dir, part).map_err(|e| data_failed(e, dir))?;
    if args.index >= data.len() {
        return Err(out_of_range(data.len()));
    }
    let pixels = data.images.image(args.index);
    let label = data.labels[args.index];
    let one_hot: Vec<u8> = (0..CLASSES)
        .map(|c| u8::from(c == label as usize))
        .collect();
    if let Some(png) = &args.png {
        picture::write_png(png, pixels, args.scale)?;
    }
    if args.json {
        let rows: Vec<&[u8]> = pixels.chunks(SIDE).collect();
        let json = serde_json::json!({
            "set": if args.test { "test" } else { "train" },
            "index": args.index,
            "label": label,
            "one_hot": one_hot,
            "pixels": rows,
        });
        return Ok(print(json)?);
    }
    print(format_args!(
        "{x} shape: {}, {y} shape: {}",
        shape(&[data.len(), SIDE, SIDE]),
        shape(&[data.len()])
    ))?;
    print(format_args!("\n{x}[{}]:", args.index))?;
    print(picture::render(pixels).trim_end_matches('\n'))?;
    if args.values {
        print("")?;
        print(picture::values_table(pixels).trim_end_matches('\n'))?;
    }
    let one_hot: Vec<String> = one_hot.iter().map(|v| format!("{v}.")).collect();
    print(format_args!("\n{y}[{}]: {label}", args.index))?;
    print(format_args!("one-hot: [{}]", one_hot.join(" ")))?;
    if let Some(png) = &args.png {
        print(format_args!("PNG written to {}", png.display()))?;
    }
    Ok(())
}

fn misclassified_cmd(args: &MisclassifiedArgs) -> Result<()> {
    if let Some(dir) = &args.png {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    if let Some(sheet) = &args.sheet {
        mnist_cnn::store::check_writable(sheet)?;
    }
    let (evaluation, test) =
        evaluate_saved(&args.backend, &args.data, &args.model, args.batch_size)?;
    let count = (!args.all).then_some(args.count);
    let picked = misclassified::pick(&evaluation, &test, count, args.seed);
    let (total, mistakes) = (picked.total, &picked.mistakes);
    if let Some(n) = count.filter(|&n| n > total) {
        note(format!(
            "only {total} of {} test images are misclassified (asked for {n})",
            test.len()
        ));
    }
    if let Some(dir) = &args.png {
        for (m, path) in mistakes.iter().zip(misclassified::png_paths(dir, mistakes)) {
            picture::write_png(&path, test.images.image(m.index), args.scale)?;
        }
    }
    if let Some(path) = &args.sheet {
        if mistakes.is_empty() {
            note(format!(
                "no mistakes to show: {} not written",
                path.display()
            ));
        } else {
            if mistakes.len() > MAX_SHEET {
                note(format!(
                    "the sheet shows the first {MAX_SHEET} of the {} digits",
                    mistakes.len()
                ));
            }
            let cards: Vec<_> = mistakes
                .iter()
                .take(MAX_SHEET)
                .map(|m| misclassified::card(m, &test))
                .collect();
            picture::write_sheet(path, &cards)?;
        }
    }
    if args.json {
        return Ok(print(serde_json::to_string(mistakes)?)?);
    }
    if args.quiz {
        quiz(mistakes, total, &test, &mut std::io::stdin().lock())?;
    } else {
        print(format_args!(
            "{total} of {} test images misclassified; showing {}",
            test.len(),
            mistakes.len()
        ))?;
        for m in mistakes {
            print(format_args!(
                "\n#{}: predicted {}, true {} (confidence {:.1}%)",
                m.index,
                m.predicted,
                m.truth,
                m.confidence * 100.0
            ))?;
            if !args.no_render {
                let drawing = picture::render(test.images.image(m.index));
                print(drawing.trim_end_matches('\n'))?;
            }
        }
    }
    if let Some(dir) = &args.png {
        print(format_args!("\nPNG files written to {}", dir.display()))?;
    }
    if let Some(path) = &args.sheet
        && !mistakes.is_empty()
    {
        print(format_args!("Sheet written to {}", path.display()))?;
    }
    Ok(())
}

/// The tutorial's closing question, asked of the user: each mistake drawn
/// without its labels, a guess read from `input`, then the model's answer
/// and the truth. Ends with both scores, also when the input ends early.
fn quiz(
    mistakes: &[misclassified::Mistake],
    total: usize,
    test: &Split,
    input: &mut dyn std::io::BufRead,
) -> Result<()> {
    print(format_args!(
        "Quiz: {} of the {total} test images the model gets wrong. Which digit is each?",
        mistakes.len()
    ))?;
    let (mut yours, mut asked) = (0, 0);
    'digits: for (n, m) in mistakes.iter().enumerate() {
        print(format_args!("\nDigit {} of {}:", n + 1, mistakes.len()))?;
        print(picture::render(test.images.image(m.index)).trim_end_matches('\n'))?;
        let guess = loop {
            term::prompt("your answer (0-9): ")?;
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                print("")?;
                print(format_args!(
                    "(input ended after {asked} of {})",
                    mistakes.len()
                ))?;
                break 'digits;
            }
            match line.trim() {
                d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                    break d.as_bytes()[0] - b'0';
                }
                other => note(format!("{other:?} is not a digit: type one of 0-9")),
            }
        };
        asked += 1;
        let verdict = if guess == m.truth {
            yours += 1;
            "right"
        } else {
            "wrong"
        };
        print(format_args!(
            "you: {guess} ({verdict}) - model: {} ({:.1}% sure) - true: {} (test image #{})",
            m.predicted,
            m.confidence * 100.0,
            m.truth,
            m.index
        ))?;
    }
    let model = mistakes[..asked]
        .iter()
        .filter(|m| m.predicted == m.truth)
        .count();
    print(format_args!(
        "\nyou: {yours}/{asked}, model: {model}/{asked}"
    ))?;
    Ok(())
}

fn plot_cmd(args: &PlotArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    let out = args.out.as_ref().unwrap_or(&paths.plot);
    mnist_cnn::store::check_writable(out)?;
    let metadata: Metadata = paths.load_metadata().map_err(|e| model_failed(e, &paths))?;
    plot::write(out, &metadata.history, metadata.validation_data.as_deref()).map_err(
        |e| match e {
            // Only this one is about the model's record; the others name their file.
            plot::PlotError::Empty => anyhow!("{}: {e}", paths.metadata.display()),
            e => e.into(),
        },
    )?;
    let validated = metadata
        .history
        .iter()
        .filter(|e| e.val_loss.is_some())
        .count();
    print(format_args!(
        "Learning curves of {} epochs ({validated} with validation figures) written to {}",
        metadata.history.len(),
        out.display()
    ))?;
    Ok(())
}

fn export_cmd(args: &ExportArgs) -> Result<()> {
    mnist_cnn::store::check_writable(&args.out)?;
    let paths = args.model.paths(&args.data);
    // Only read, never computed with: the CPU will do.
    let model = load_model(&paths)?;
    // The training record adds to the file's header; a model without one
    // (copied alone, say) still exports; a damaged one is an error, as in eval.
    let metadata = match paths.load_metadata::<Metadata>() {
        Ok(m) => Some(m),
        Err(StoreError::Missing { .. }) => None,
        Err(e) => return Err(model_failed(e, &paths)),
    };
    mnist_cnn::export::export(&model, metadata.as_ref(), &args.out)?;
    print(format_args!(
        "{} exported to {} ({} parameters in Keras's layout: {})",
        paths.weights.display(),
        args.out.display(),
        arch::group_digits(arch::PARAMETERS),
        mnist_cnn::export::KERAS_NAMES.join(", ")
    ))?;
    Ok(())
}

fn bench_cmd(args: &BenchArgs) -> Result<()> {
    let backend = args.backend.resolve(args.engine);
    let engine = args.engine.unwrap_or(Engine::for_backend(backend));
    engine.check_backend(backend)?;
    check_memory(
        "--batch-size",
        args.batch_size,
        train::BYTES_PER_IMAGE,
        "training",
    )?;
    check_memory(
        "--eval-batch-size",
        args.eval_batch_size,
        eval::BYTES_PER_IMAGE,
        "evaluation",
    )?;
    // The report names the device.
    let batches = [
        ("--batch-size", args.batch_size),
        ("--eval-batch-size", args.eval_batch_size),
    ];
    let device = open_device(backend, &batches, false)?;
    let dir = &args.data.data_dir;
    ensure_data(dir, &args.mirror)?;
    let train = data::load(dir, Part::Train).map_err(|e| data_failed(e, dir))?;
    let test = data::load(dir, Part::Test).map_err(|e| data_failed(e, dir))?;
    if train.len() < args.batch_size {
        bail!(
            "--batch-size {} is more than the {} training images",
            args.batch_size,
            train.len()
        );
    }
    let config = bench::BenchConfig {
        steps: args.steps,
        warmup: args.warmup,
        batch_size: args.batch_size,
        eval_batch_size: args.eval_batch_size,
        seed: TrainConfig::DEFAULT.seed,
        engine,
    };
    let result = bench::run(&config, &train, &test, &device);
    if args.json {
        print(serde_json::to_string(&result)?)?;
    } else {
        print(result.report())?;
    }
    Ok(())
}
