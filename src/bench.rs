//! `mnist-cnn bench`: training and evaluation throughput and peak memory on
//! the real data, printed so that they can be set beside the Keras
//! reference's figures (`../shared/reference/keras_reference.py`).

use std::time::Instant;

use burn::tensor::Device;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::Split;
use crate::eval;
use crate::train::{TrainConfig, Trainer};

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
}

/// The measured figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub backend: String,
    pub threads: usize,
    pub train_steps: usize,
    pub batch_size: usize,
    pub train_img_per_s: f64,
    pub ms_per_step: f64,
    /// Seconds a full 60,000-image epoch takes at this rate.
    pub epoch_s: f64,
    pub eval_images: usize,
    pub eval_batch_size: usize,
    pub eval_img_per_s: f64,
    /// Peak resident memory of this process (VmHWM), in MB.
    pub peak_rss_mb: Option<f64>,
}

/// Times `steps` SGD steps of the real training loop, then one evaluation
/// pass over `test`.
pub fn run(config: &BenchConfig, train: &Split, test: &Split, device: &Device) -> BenchResult {
    let train_config = TrainConfig {
        batch_size: config.batch_size,
        seed: config.seed,
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&train_config, device);
    let mut dropout_seeds = SmallRng::seed_from_u64(config.seed);
    let total = config.warmup + config.steps;
    let mut started = Instant::now();
    for step in 0..total {
        if step == config.warmup {
            started = Instant::now();
        }
        let first = (step * config.batch_size) % (train.len() - config.batch_size + 1);
        let indices: Vec<usize> = (first..first + config.batch_size).collect();
        trainer.step(train, &indices, dropout_seeds.random());
    }
    let train_s = started.elapsed().as_secs_f64();
    let train_img_per_s = (config.steps * config.batch_size) as f64 / train_s;

    let model = trainer.into_model();
    eval::evaluate(&model, test, config.eval_batch_size, device); // warm-up
    let started = Instant::now();
    eval::evaluate(&model, test, config.eval_batch_size, device);
    let eval_s = started.elapsed().as_secs_f64();

    BenchResult {
        backend: crate::backend::NAME.into(),
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        train_steps: config.steps,
        batch_size: config.batch_size,
        train_img_per_s,
        ms_per_step: 1000.0 * train_s / config.steps as f64,
        epoch_s: 60_000.0 / train_img_per_s,
        eval_images: test.len(),
        eval_batch_size: config.eval_batch_size,
        eval_img_per_s: test.len() as f64 / eval_s,
        peak_rss_mb: peak_rss_mb(),
    }
}

/// Peak resident set size of this process in MB, from /proc (Linux only).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

impl BenchResult {
    /// Human-readable report.
    pub fn report(&self) -> String {
        let rss = self
            .peak_rss_mb
            .map_or("unknown".into(), |mb| format!("{mb:.0} MB"));
        format!(
            "backend: {} ({} threads)\n\
             train: {:.0} images/s ({:.1} ms per step of {}, {:.1} s per 60,000-image epoch; {} steps)\n\
             eval:  {:.0} images/s ({} images at batch {})\n\
             peak RSS: {rss}",
            self.backend,
            self.threads,
            self.train_img_per_s,
            self.ms_per_step,
            self.batch_size,
            self.epoch_s,
            self.train_steps,
            self.eval_img_per_s,
            self.eval_images,
            self.eval_batch_size,
        )
    }
}
