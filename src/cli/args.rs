//! Every option of every command, as clap parses it: values checked
//! against their ranges, nothing resolved yet. Groups that several commands
//! share (the data folder, the model, the backend, the engine, the mirrors,
//! the evaluation batch) are defined once and flattened into each.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use mnist_cnn::backend::Backend;
use mnist_cnn::data::Split;
use mnist_cnn::eval;
use mnist_cnn::optim::Optimizer;
use mnist_cnn::store::{DEFAULT_MODEL_NAME, ModelPaths};
use mnist_cnn::train::{Engine, TrainConfig};

/// The tutorial's steps in order, which bare `mnist-cnn` prints and the
/// help ends with.
pub const START_HERE: &str = "\
Start here: the Keras MNIST tutorial's steps, in order
  1. mnist-cnn download                fetch the four MNIST files into ./data
  2. mnist-cnn show 53238              look at a training image, its label and one-hot vector
  3. mnist-cnn train                   fit the network (10 epochs; downloads first if needed)
  4. mnist-cnn eval                    its loss and accuracy on the 10,000 test images
  5. mnist-cnn misclassified           the test digits it gets wrong
  6. mnist-cnn misclassified --quiz    guess them yourself, then see the model's answer
Then: plot (learning curves), predict FILE (your own digits), models (the saved ones).
Each command's options: mnist-cnn help COMMAND";

/// Download MNIST, train the Keras tutorial's CNN on it, evaluate it and show its mistakes.
#[derive(Debug, Parser)]
#[command(name = "mnist-cnn", version, about, after_help = START_HERE)]
pub struct Cli {
    /// None: bare `mnist-cnn`, which says where to start.
    #[command(subcommand)]
    pub command: Option<Command>,
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
    /// List the models in a folder (epochs, test accuracy, when saved, size), or remove some.
    Models(ModelsArgs),
    /// Measure training and evaluation images/s, against the machine's peak, and peak memory on the real data.
    ///
    /// For any command, MNIST_CNN_SIMD=portable, avx2 or avx512 makes this
    /// tool's own kernels (and the peak bench measures) use that instruction
    /// set rather than the widest the CPU has: for measuring or testing it.
    Bench(BenchArgs),
    /// Look inside the network for one image: each layer's output, the filters, the saliency.
    Explain(ExplainArgs),
    /// Serve a local web page to draw a digit and watch the model think (and a JSON API).
    Serve(ServeArgs),
}

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

/// An image index: a whole number, negative ones counted from the end.
fn index(s: &str) -> Result<i64, String> {
    s.trim().parse::<i64>().map_err(|_| {
        "must be a whole number: 53238, or -1 for the last image (counted from the end)".into()
    })
}

fn engine(s: &str) -> Result<Engine, String> {
    Engine::from_name(s).ok_or_else(|| format!("must be one of: {}", Engine::NAMES.join(", ")))
}

fn optimizer(s: &str) -> Result<Optimizer, String> {
    Optimizer::from_name(s)
        .ok_or_else(|| format!("must be one of: {}", Optimizer::NAMES.join(", ")))
}

/// A dropout rate, rounded to the mask's resolution (1/256), so that the
/// rate recorded and the scale applied are those of the mask drawn.
fn dropout(s: &str) -> Result<f64, String> {
    let max = TrainConfig::MAX_DROPOUT;
    match s.parse::<f64>() {
        Ok(x) if (0.0..=max).contains(&x) => Ok((x * 256.0).round() / 256.0),
        _ => Err(format!("must be a number from 0 to {max} (255/256)")),
    }
}

fn learning_rate(s: &str) -> Result<f64, String> {
    let max = TrainConfig::MAX_LEARNING_RATE;
    match s.parse::<f64>() {
        Ok(x) if x > 0.0 && x <= max => Ok(x),
        _ => Err(format!("must be a positive number up to {max}")),
    }
}

/// The help of a training setting whose default is `value`, or the
/// checkpoint's when resuming.
fn train_default(what: &str, value: impl std::fmt::Display) -> String {
    format!("{what} [default: {value}; with --resume, the checkpoint's]")
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

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// How each training step is computed: host (the fast path, CPU only) or burn
    /// (Burn's autodiff and optimisers; the reference). [default: host on a CPU
    /// backend, burn on a GPU]
    #[arg(long, value_name = "ENGINE", value_parser = engine)]
    pub engine: Option<Engine>,
}

/// `--engine`'s help for `train`, where a checkpoint's engine is the default.
const TRAIN_ENGINE_HELP: &str = "How each training step is computed: host (the fast path, CPU only) \
    or burn (Burn's autodiff and optimisers; the reference). [default: host on a CPU backend, burn on \
    a GPU; with --resume, the checkpoint's]";

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
    /// Seconds the whole download may take, all files and mirrors together.
    /// [default: no limit]
    #[arg(long, value_name = "SECS", value_parser = in_range(1, 86_400))]
    pub deadline: Option<usize>,
    /// A transfer slower than this many kB/s, on average after its first 10
    /// s, is left for the next mirror; 0 waits for any. [default: 10]
    #[arg(long, value_name = "KB_PER_S", value_parser = in_range(0, 1_000_000))]
    pub min_rate: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The model to read: PATH.bpk (its weights) with PATH.json (its record);
    /// a folder holds model.bpk and model.json. [default: DIR/model, DIR being
    /// --data-dir]
    #[arg(long = "model", value_name = "PATH")]
    pub path: Option<PathBuf>,
}

/// `--model`'s help for `train`, which writes the model.
const TRAIN_MODEL_HELP: &str = "Where the model goes: weights to PATH.bpk, metadata to \
    PATH.json, learning curves to PATH.svg; a folder holds model.bpk, model.json and model.svg. \
    [default: DIR/model, DIR being --data-dir]";

impl ModelArgs {
    /// The model's files: `--model`'s, or the data folder's default model.
    pub fn paths(&self, data: &DataArgs) -> ModelPaths {
        match &self.path {
            Some(path) => ModelPaths::new(path),
            None => ModelPaths::new(&data.data_dir.join(DEFAULT_MODEL_NAME)),
        }
    }
}

#[derive(Debug, Args)]
pub struct EvalBatchArgs {
    /// Images per evaluation batch.
    #[arg(long, default_value_t = eval::BATCH, value_name = "N",
          value_parser = in_range(1, MAX_EVAL_BATCH))]
    pub batch_size: usize,
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
#[command(mut_arg("engine", |arg| arg.help(TRAIN_ENGINE_HELP)))]
#[command(mut_arg("path", |arg| arg.help(TRAIN_MODEL_HELP)))]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    // The help of each setting takes its default from TrainConfig::DEFAULT.
    #[arg(long, value_name = "N", value_parser = in_range(1, TrainConfig::MAX_EPOCHS),
          help = train_default("Epochs to train to.", TrainConfig::DEFAULT.epochs))]
    pub epochs: Option<usize>,
    #[arg(long, value_name = "N", value_parser = in_range(1, TrainConfig::MAX_BATCH_SIZE),
          help = train_default("Images per training step.", TrainConfig::DEFAULT.batch_size))]
    pub batch_size: Option<usize>,
    #[arg(long, value_name = "RATE", value_parser = learning_rate, allow_negative_numbers = true,
          help = train_default("Learning rate.", format_args!("{} for sgd and momentum, {} for adam",
              Optimizer::Sgd.default_learning_rate(), Optimizer::Adam.default_learning_rate())))]
    pub learning_rate: Option<f64>,
    #[arg(long, value_name = "NAME", value_parser = optimizer,
          help = train_default(&format!("How each step's gradient changes the weights: sgd (plain, \
              the tutorial's), momentum (SGD with momentum {}) or adam (Keras's defaults).",
              Optimizer::MOMENTUM), Optimizer::Sgd.name()))]
    pub optimizer: Option<Optimizer>,
    #[arg(long, value_name = "RATE", value_parser = dropout,
          help = train_default("Fraction of the 20,000 features dropped while training, \
              0 to 255/256 (rounded to a multiple of 1/256).", TrainConfig::DEFAULT.dropout))]
    pub dropout: Option<f64>,
    #[arg(long, value_name = "N",
          help = train_default("Seed for the initial weights, the shuffling and dropout.",
                               TrainConfig::DEFAULT.seed))]
    pub seed: Option<u64>,
    /// Train on the first N training images only. [default: all; with --resume, the checkpoint's]
    #[arg(long, value_name = "N", value_parser = in_range(1, Split::Train.size()))]
    pub limit: Option<usize>,
    /// Continue the model at --model from its last complete epoch, up to --epochs.
    #[arg(long)]
    pub resume: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
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
    #[command(flatten)]
    pub batch: EvalBatchArgs,
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
    /// Which image, counted from 0 (the tutorial looks at training image
    /// 53238), or from the end as in Python: -1 is the last.
    #[arg(value_name = "INDEX", allow_negative_numbers = true, value_parser = index)]
    pub index: i64,
    /// Take it from the 10,000 test images instead of the 60,000 training images.
    #[arg(long)]
    pub test: bool,
    /// Also print its 28×28 pixel values (0-255) as a table, with row and
    /// column numbers, in two halves where the terminal is narrower than it.
    #[arg(long)]
    pub values: bool,
    /// Print the values as the network reads them, scaled to 0-1 (/255)
    /// (implies --values).
    #[arg(long)]
    pub scaled: bool,
    /// Also write it as a PNG file (dark digit on white, as the tutorial
    /// draws it; --as-stored for MNIST's light on black).
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Write PNG files as MNIST stores the values: light digit on black.
    #[arg(long, requires = "png")]
    pub as_stored: bool,
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
          value_parser = in_range(1, Split::Test.size()))]
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
    /// Write the --png files as MNIST stores the values: light digit on
    /// black (by default dark on white, as the tutorial draws them).
    #[arg(long, requires = "png")]
    pub as_stored: bool,
    /// Also write one PNG of the chosen digits side by side, enlarged, with
    /// "model P NN%" and "true T" under each, under a title.
    #[arg(long, value_name = "FILE")]
    pub sheet: Option<PathBuf>,
    /// Quiz yourself: show each chosen digit unlabelled, read your guess from
    /// stdin (q ends it), then reveal the model's answer and the truth; ends
    /// with both scores.
    #[arg(long, conflicts_with_all = ["json", "no_render"])]
    pub quiz: bool,
    /// Quiz on --count random test digits, right or wrong, instead of the
    /// mistakes: then the model's score means something too.
    #[arg(long, requires = "quiz", conflicts_with_all = ["all", "png", "sheet"])]
    pub random: bool,
    /// Print a JSON array of {index, predicted, true, confidence, probabilities} instead.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub batch: EvalBatchArgs,
}

#[derive(Debug, Args)]
pub struct PlotArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The model whose curves to draw (PATH.json, its record). Repeat it to
    /// draw several runs on one picture, each in its colour, the legend
    /// naming each with its settings. [default: DIR/model, DIR being --data-dir]
    #[arg(long = "model", value_name = "PATH")]
    pub models: Vec<PathBuf>,
    /// The SVG file to write. [default: the model's PATH.svg, which `train`
    /// also rewrites after every epoch; needed with several models]
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
    /// [default: beside the model, PATH.safetensors]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The folder to list. [default: DIR, the --data-dir]
    #[arg(value_name = "FOLDER")]
    pub folder: Option<PathBuf>,
    /// Remove the model NAME (NAME.bpk, .json and .svg) from the folder,
    /// e.g. an automatic backup such as model.1. Repeatable.
    #[arg(long, value_name = "NAME")]
    pub remove: Vec<String>,
    /// Print a JSON array of {name, epochs, test_accuracy, optimizer, saved, bytes} instead.
    #[arg(long)]
    pub json: bool,
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
    #[arg(long, default_value_t = TrainConfig::DEFAULT.batch_size, value_name = "N",
          value_parser = in_range(1, MAX_BENCH_BATCH))]
    pub batch_size: usize,
    /// Images per evaluation batch.
    #[arg(long, default_value_t = eval::BATCH, value_name = "N",
          value_parser = in_range(1, MAX_EVAL_BATCH))]
    pub eval_batch_size: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print one JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["index", "train", "image"])))]
pub struct ExplainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// A test image, counted from 0.
    #[arg(value_name = "INDEX")]
    pub index: Option<usize>,
    /// A training image instead, counted from 0.
    #[arg(long, value_name = "INDEX")]
    pub train: Option<usize>,
    /// A picture of a digit instead (PNG, JPEG, BMP, PGM), prepared as `predict` prepares it.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Also write one labelled PNG sheet: the input, the 32 filters, the
    /// feature maps after conv+ReLU and after the pool, the hidden units,
    /// the probabilities and the saliency map.
    #[arg(long, value_name = "FILE")]
    pub png: Option<PathBuf>,
    /// Print one JSON object with every number instead:
    /// {source, label, predicted, probabilities, logits, input, filters,
    /// filter_biases, conv, pooled, hidden, saliency, saliency_method}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on. Anything but loopback lets anyone on that
    /// network use the page.
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDRESS")]
    pub host: std::net::IpAddr,
    /// Port to listen on (0: any free one, printed).
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub port: u16,
}
