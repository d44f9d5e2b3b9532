//! `mnist-cnn bench`: training and evaluation throughput and peak memory on
//! the real data, printed so that they can be set beside the Keras
//! reference's figures (`../shared/reference/keras_reference.py`), and
//! beside what the machine itself can do: the time the step's matrix
//! products alone take on the same kernels (the floor).

use std::time::{Duration, Instant};

use burn::tensor::Device;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::arch::{
    CONV_SIDE, EVAL_FLOP_PER_IMAGE, FEATURES, FILTERS, HIDDEN, TAPS, TRAIN_FLOP_PER_IMAGE,
};
use crate::backend::{self, Backend};
use crate::data::Examples;
use crate::eval;
use crate::idx::CLASSES;
use crate::kernels::{self, WeightGradient, backward_and_update};
use crate::machine::{cpu_seconds, peak_rss_mb};
use crate::matmul::{Matrix, product};
use crate::train::{Engine, TrainConfig, Trainer};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Timed training steps (after the warm-up).
    pub steps: usize,
    /// Untimed steps first, so that allocator and thread pool are warm.
    pub warmup: usize,
    pub batch_size: usize,
    pub eval_batch_size: usize,
    pub seed: u64,
    pub engine: Engine,
}

/// The measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// The backend and, for a GPU, its adapter ([`crate::backend::describe`]).
    pub backend: String,
    /// Whether the network ran on the host (a CPU backend): the floor, the
    /// instruction set, the threads and the CPU utilisation describe it only then.
    pub on_host: bool,
    pub engine: Engine,
    /// The instruction set the crate's own kernels use here (CPU backends
    /// only).
    pub simd: Option<String>,
    /// Whether `MNIST_CNN_SIMD` narrowed it below the CPU's widest (CPU
    /// backends only): then gemm and the block's pooling still use the
    /// widest, and the peak is the narrower one's.
    pub simd_narrowed: Option<bool>,
    /// The machine's peak single-precision rate on that instruction set,
    /// all threads, in GFLOP/s ([`kernels::peak_gflops`]; CPU backends only).
    pub peak_gflops: Option<f64>,
    /// The CPU threads computing (CPU backends only).
    pub threads: Option<usize>,
    pub train_steps: usize,
    pub batch_size: usize,
    pub train_img_per_s: f64,
    pub ms_per_step: f64,
    /// Seconds a full 60,000-image epoch takes at this rate.
    pub epoch_s: f64,
    /// The step's matrix products alone, on the same kernels, in ms (CPU
    /// backends only).
    pub floor_ms: Option<f64>,
    /// `ms_per_step / floor_ms`.
    pub step_over_floor: Option<f64>,
    /// The training step's operations per second: 16,146,432 an image
    /// ([`TRAIN_FLOP_PER_IMAGE`]) at `train_img_per_s`.
    pub train_gflops: f64,
    /// The same for the products alone, at `floor_ms`.
    pub floor_gflops: Option<f64>,
    /// CPU time over wall time × threads during the timed steps (CPU
    /// backends only).
    pub cpu_utilisation: Option<f64>,
    /// Share of the step per phase (host engine only).
    pub phases: Vec<(String, f64)>,
    pub eval_images: usize,
    pub eval_batch_size: usize,
    pub eval_img_per_s: f64,
    /// Evaluation's operations per second: 5,511,936 an image
    /// ([`EVAL_FLOP_PER_IMAGE`]), the dense count, of which the kernels
    /// skip the zero features' share.
    pub eval_gflops: f64,
    /// Peak resident memory of this process (VmHWM), in MB.
    pub peak_rss_mb: Option<f64>,
}

/// Timed passes over the test images, of which `bench` gives the median: a
/// pass takes a fraction of a second, and one alone gave anything from
/// 24,600 to 38,100 images/s within a quarter of an hour on a shared Zen 5
/// (the AVX2 build).
const EVAL_PASSES: usize = 3;

/// Times `steps` training steps of the real training loop, then
/// [`EVAL_PASSES`] evaluation passes over `test`, then the floor.
pub fn run(
    config: &BenchConfig,
    train: &Examples,
    test: &Examples,
    device: &Device,
) -> BenchResult {
    let train_config = TrainConfig {
        batch_size: config.batch_size,
        seed: config.seed,
        engine: config.engine,
        ..TrainConfig::DEFAULT
    };
    let on_host = Backend::of(device).on_host();
    // The peak before and after the rest, the better of the two: on a
    // shared machine a neighbour's burst can hide it during one of them.
    let peak_before = on_host.then(|| kernels::peak_gflops(kernels::isa()));
    let mut trainer = Trainer::new(&train_config, device);
    let mut dropout_seeds = SmallRng::seed_from_u64(config.seed);
    let batch = |step: usize| {
        let first = (step * config.batch_size) % (train.len() - config.batch_size + 1);
        (first..first + config.batch_size).collect::<Vec<usize>>()
    };
    for step in 0..config.warmup {
        trainer.step(train, &batch(step), dropout_seeds.random());
    }
    let phases_before = trainer.phases().cloned();
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    for step in config.warmup..config.warmup + config.steps {
        trainer.step(train, &batch(step), dropout_seeds.random());
    }
    let train_s = started.elapsed().as_secs_f64();
    let cpu_utilisation = cpu_before
        .zip(cpu_seconds())
        .map(|(before, after)| (after - before) / (train_s * rayon::current_num_threads() as f64))
        .filter(|_| on_host);
    let phases = match (phases_before, trainer.phases()) {
        (Some(before), Some(after)) => after
            .since(&before)
            .shares()
            .into_iter()
            .map(|(name, share)| (name.to_string(), share))
            .collect(),
        _ => Vec::new(),
    };
    let train_img_per_s = (config.steps * config.batch_size) as f64 / train_s;
    let ms_per_step = 1000.0 * train_s / config.steps as f64;

    let model = trainer.into_model();
    eval::evaluate(&model, test, config.eval_batch_size, device); // warm-up
    let mut passes: Vec<f64> = (0..EVAL_PASSES)
        .map(|_| {
            let started = Instant::now();
            eval::evaluate(&model, test, config.eval_batch_size, device);
            started.elapsed().as_secs_f64()
        })
        .collect();
    passes.sort_by(f64::total_cmp);
    let eval_s = passes[EVAL_PASSES / 2];

    let floor_ms = on_host.then(|| floor(config.batch_size).as_secs_f64() * 1000.0);
    let peak_gflops = peak_before.map(|before| before.max(kernels::peak_gflops(kernels::isa())));
    let gflops = |images_per_s: f64, flop: usize| images_per_s * flop as f64 / 1e9;
    let eval_img_per_s = test.len() as f64 / eval_s;
    BenchResult {
        backend: backend::describe(device),
        on_host,
        engine: config.engine,
        simd: on_host.then(|| kernels::isa().label().to_string()),
        simd_narrowed: on_host.then(|| kernels::isa() != kernels::Isa::best()),
        peak_gflops,
        threads: on_host.then(rayon::current_num_threads),
        train_steps: config.steps,
        batch_size: config.batch_size,
        train_img_per_s,
        ms_per_step,
        epoch_s: 60_000.0 / train_img_per_s,
        floor_ms,
        step_over_floor: floor_ms.map(|floor| ms_per_step / floor),
        train_gflops: gflops(train_img_per_s, TRAIN_FLOP_PER_IMAGE),
        floor_gflops: floor_ms.map(|floor| {
            gflops(
                config.batch_size as f64 * 1000.0 / floor,
                TRAIN_FLOP_PER_IMAGE,
            )
        }),
        cpu_utilisation,
        phases,
        eval_images: test.len(),
        eval_batch_size: config.eval_batch_size,
        eval_img_per_s,
        eval_gflops: gflops(eval_img_per_s, EVAL_FLOP_PER_IMAGE),
        peak_rss_mb: peak_rss_mb(),
    }
}

/// The share of the features that are not zero in the floor's product: a
/// training step's, measured over the first 1,200 steps of seed 42 at
/// dropout 0.25 (41-50%, after the first few steps).
const FLOOR_NONZERO: f64 = 0.45;

/// The share of the features that are zero in all of the floor's images,
/// which the hidden layer's backward pass skips: in training 5-13% of them
/// (seed 42, two epochs of 9,600 images on a Zen 1), rising as it goes on.
const FLOOR_DEAD: f64 = 0.09;

/// The time the matrix products of one training step at batch `n` take
/// alone, on the same kernels the step uses (gemm, and the crate's own
/// sparse forward product and fused input gradient and update), at the
/// same shapes, with as many of the features zero as in training
/// ([`FLOOR_NONZERO`]), some in every image ([`FLOOR_DEAD`]): the convolution as
/// a product (im2col) forward and for its weight gradient, the hidden layer
/// forward, its input gradient and its weight update, and the output layer
/// forward and its two gradients. The best of several rounds.
pub(crate) fn floor(n: usize) -> Duration {
    let mut rng = SmallRng::seed_from_u64(17);
    let positions = n * CONV_SIDE * CONV_SIDE;
    let buffer = |len: usize| -> Vec<f32> { (0..len).map(|i| (i % 17) as f32 * 0.01).collect() };
    let (patches, kernel, mut conv) = (
        buffer(positions * TAPS),
        buffer(TAPS * FILTERS),
        buffer(positions * FILTERS),
    );
    let mut kernel_grad = buffer(TAPS * FILTERS);
    let mut features = buffer(n * FEATURES);
    let dead: Vec<bool> = (0..FEATURES).map(|_| rng.random_bool(FLOOR_DEAD)).collect();
    for (i, v) in features.iter_mut().enumerate() {
        // Never zero where kept (buffer's own values are, one in 17).
        let live = !dead[i % FEATURES] && rng.random_bool(FLOOR_NONZERO / (1.0 - FLOOR_DEAD));
        *v = if live { *v + 0.005 } else { 0.0 };
    }
    let (mut w1, mut hidden) = (buffer(FEATURES * HIDDEN), buffer(n * HIDDEN));
    let mut grad_features = buffer(n * FEATURES);
    let (w2, mut logits, mut w2_grad) = (
        buffer(HIDDEN * CLASSES),
        buffer(n * CLASSES),
        buffer(HIDDEN * CLASSES),
    );
    let grad_logits = buffer(n * CLASSES);
    let mut round = || {
        let started = Instant::now();
        product(
            &mut conv,
            positions,
            TAPS,
            FILTERS,
            Matrix::row_major(&patches, TAPS),
            Matrix::row_major(&kernel, FILTERS),
            None,
        );
        product(
            &mut kernel_grad,
            TAPS,
            positions,
            FILTERS,
            Matrix::transposed(&patches, TAPS),
            Matrix::row_major(&conv, FILTERS),
            None,
        );
        kernels::sparse_product(&mut hidden, &features, &w1, n, FEATURES, HIDDEN);
        backward_and_update(
            &mut w1,
            &features,
            &hidden,
            &mut grad_features,
            n,
            FEATURES,
            HIDDEN,
            WeightGradient::Apply {
                learning_rate: 1e-9,
            },
        );
        product(
            &mut logits,
            n,
            HIDDEN,
            CLASSES,
            Matrix::row_major(&hidden, HIDDEN),
            Matrix::row_major(&w2, CLASSES),
            None,
        );
        product(
            &mut w2_grad,
            HIDDEN,
            n,
            CLASSES,
            Matrix::transposed(&hidden, HIDDEN),
            Matrix::row_major(&grad_logits, CLASSES),
            None,
        );
        product(
            &mut hidden,
            n,
            CLASSES,
            HIDDEN,
            Matrix::row_major(&grad_logits, CLASSES),
            Matrix::transposed(&w2, CLASSES),
            None,
        );
        started.elapsed()
    };
    (0..5)
        .map(|_| (0..20).map(|_| round()).sum::<Duration>() / 20)
        .min()
        .expect("rounds")
}

impl BenchResult {
    /// Human-readable report.
    pub fn report(&self) -> String {
        let rss = self
            .peak_rss_mb
            .map_or("unknown".into(), |mb| format!("{mb:.0} MB"));
        let cpu = self
            .cpu_utilisation
            .map_or("unknown".into(), |u| format!("{:.0}%", u * 100.0));
        let mut out = if let (Some(simd), Some(threads)) = (&self.simd, self.threads) {
            format!(
                "backend: {} ({} engine, {simd}, {threads} threads)\n",
                self.backend,
                self.engine.name(),
            )
        } else {
            format!(
                "backend: {} ({} engine)\n",
                self.backend,
                self.engine.name()
            )
        };
        let rate = |gflops: f64| match self.peak_gflops {
            Some(peak) => format!("{gflops:.0} GFLOP/s, {:.0}% of peak", 100.0 * gflops / peak),
            None => format!("{gflops:.0} GFLOP/s"),
        };
        if let (Some(peak), Some(simd), Some(threads)) =
            (self.peak_gflops, &self.simd, self.threads)
        {
            out.push_str(&format!(
                "peak: {peak:.0} GFLOP/s ({simd} multiply-adds on {threads} threads, measured now)\n"
            ));
            out.push_str(
                "(GFLOP/s below count the dense network's operations; the hidden layer's forward product skips the zero features, so evaluation's can pass the peak)\n",
            );
        }
        if self.simd_narrowed == Some(true) {
            out.push_str(
                "(MNIST_CNN_SIMD set the instruction set of this tool's own kernels and of the peak; gemm and the pooling still use the CPU's widest)\n",
            );
        }
        out.push_str(&format!(
            "train: {:.0} images/s ({:.2} ms per step of {}, {:.1} s per 60,000-image epoch; {} steps): {}\n",
            self.train_img_per_s,
            self.ms_per_step,
            self.batch_size,
            self.epoch_s,
            self.train_steps,
            rate(self.train_gflops),
        ));
        if let (Some(floor), Some(ratio), Some(gflops)) =
            (self.floor_ms, self.step_over_floor, self.floor_gflops)
        {
            out.push_str(&format!(
                "floor: {floor:.2} ms per step for the step's matrix products alone ({}); step/floor {ratio:.2}\n",
                rate(gflops),
            ));
        }
        if self.on_host {
            out.push_str(&format!("CPU utilisation while training: {cpu}\n"));
        }
        if !self.phases.is_empty() {
            let shares: Vec<String> = self
                .phases
                .iter()
                .map(|(name, share)| format!("{name} {:.0}%", share * 100.0))
                .collect();
            out.push_str(&format!("step phases: {}\n", shares.join(", ")));
        }
        out.push_str(&format!(
            "eval:  {:.0} images/s ({} images at batch {}): {}\npeak RSS: {rss}",
            self.eval_img_per_s,
            self.eval_images,
            self.eval_batch_size,
            rate(self.eval_gflops),
        ));
        out
    }
}
