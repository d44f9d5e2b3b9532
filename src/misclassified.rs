//! `mnist-cnn misclassified`: which test images the model gets wrong, drawn
//! in the terminal (and optionally as PNG files, or one sheet of them) as the
//! tutorial showed them.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;

use crate::data::Examples;
use crate::eval::Evaluation;
use crate::picture::{BLACK, Card, GREY, RED};

/// One test image with the model's answer: a mistake, except in the
/// random quiz ([`random`]), which asks any test images.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Mistake {
    /// Index in the test set (0-based).
    pub index: usize,
    pub predicted: u8,
    #[serde(rename = "true")]
    pub truth: u8,
    /// The model's probability for its prediction.
    pub confidence: f32,
    /// The model's probability for each digit 0-9.
    pub probabilities: [f32; 10],
}

/// The mistakes chosen to show, out of how many there are.
#[derive(Debug, Clone)]
pub struct Picked {
    /// How many test images the model gets wrong in all.
    pub total: usize,
    /// The chosen ones, in test-set order.
    pub mistakes: Vec<Mistake>,
}

/// Picks mistakes: `count` of them at random without replacement (`None`:
/// all), listed in test-set order.
pub fn pick(eval: &Evaluation, data: &Examples, count: Option<usize>, seed: u64) -> Picked {
    let wrong = eval.misclassified(&data.labels);
    let total = wrong.len();
    let mut chosen: Vec<usize> = match count {
        Some(n) if n < total => {
            let mut rng = SmallRng::seed_from_u64(seed);
            rand::seq::index::sample(&mut rng, total, n)
                .into_iter()
                .map(|k| wrong[k])
                .collect()
        }
        _ => wrong,
    };
    chosen.sort_unstable();
    let mistakes = answers(eval, data, chosen);
    Picked { total, mistakes }
}

/// `count` test images at random, right or wrong, in the order drawn: for
/// a quiz where the model's score means something too (on its mistakes
/// alone it scores 0 by construction).
pub fn random(eval: &Evaluation, data: &Examples, count: usize, seed: u64) -> Vec<Mistake> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let chosen = rand::seq::index::sample(&mut rng, data.len(), count.min(data.len())).into_vec();
    answers(eval, data, chosen)
}

/// The model's answers and the truth for the images at `indices`.
fn answers(eval: &Evaluation, data: &Examples, indices: Vec<usize>) -> Vec<Mistake> {
    indices
        .into_iter()
        .map(|index| {
            let p = &eval.predictions[index];
            Mistake {
                index,
                predicted: p.predicted,
                truth: data.labels[index],
                confidence: p.confidence,
                probabilities: p.probabilities,
            }
        })
        .collect()
}

/// File name of a mistake's PNG: index, predicted and true label.
pub fn png_name(m: &Mistake) -> String {
    format!("{:05}_pred{}_true{}.png", m.index, m.predicted, m.truth)
}

/// Where the PNGs of `mistakes` go in `dir`.
pub fn png_paths(dir: &Path, mistakes: &[Mistake]) -> Vec<PathBuf> {
    mistakes.iter().map(|m| dir.join(png_name(m))).collect()
}

/// The mistake as a card of the sheet: the digit with the model's answer
/// and its confidence (in red), the truth and the test-set index under it.
pub fn card<'a>(m: &Mistake, data: &'a Examples) -> Card<'a> {
    Card {
        pixels: data.images.image(m.index),
        lines: vec![
            (
                format!("model {} {:.0}%", m.predicted, m.confidence * 100.0),
                RED,
            ),
            (format!("true {}", m.truth), BLACK),
            (format!("#{}", m.index), GREY),
        ],
    }
}
