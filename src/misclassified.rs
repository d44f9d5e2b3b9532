//! `mnist-cnn misclassified`: which test images the model gets wrong, drawn
//! in the terminal (and optionally as PNG files) as the tutorial showed them.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::Serialize;
use thiserror::Error;

use crate::data::Split;
use crate::eval::Evaluation;
use crate::idx::SIDE;
use crate::store::{StoreError, write_atomically};

/// One misclassified test image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Mistake {
    /// Index in the test set (0-based).
    pub index: usize,
    pub predicted: u8,
    #[serde(rename = "true")]
    pub truth: u8,
    /// The model's probability for its (wrong) prediction.
    pub confidence: f32,
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
pub fn pick(eval: &Evaluation, data: &Split, count: Option<usize>, seed: u64) -> Picked {
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
    let mistakes = chosen
        .into_iter()
        .map(|index| Mistake {
            index,
            predicted: eval.predictions[index].predicted,
            truth: data.labels[index],
            confidence: eval.predictions[index].confidence,
        })
        .collect();
    Picked { total, mistakes }
}

/// Draws a 28×28 image with shaded block characters, two per pixel so
/// that it keeps its proportions in a terminal.
pub fn render(pixels: &[u8]) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let mut out = String::with_capacity(SIDE * (SIDE * 2 * 3 + 1));
    for row in pixels.chunks_exact(SIDE) {
        for &p in row {
            let c = SHADES[(p as usize * SHADES.len()) / 256];
            out.push(c);
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// File name of a mistake's PNG: index, predicted and true label.
pub fn png_name(m: &Mistake) -> String {
    format!("{:05}_pred{}_true{}.png", m.index, m.predicted, m.truth)
}

/// Why a PNG could not be written.
#[derive(Debug, Error)]
pub enum PngError {
    #[error("cannot encode {} as PNG: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Writes a 28×28 greyscale PNG (atomically).
pub fn write_png(path: &Path, pixels: &[u8]) -> Result<(), PngError> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, SIDE as u32, SIDE as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(pixels)?;
            writer.finish()
        })
        .map_err(|source| PngError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(write_atomically(path, &bytes)?)
}

/// Where the PNGs of `mistakes` go in `dir`.
pub fn png_paths(dir: &Path, mistakes: &[Mistake]) -> Vec<PathBuf> {
    mistakes.iter().map(|m| dir.join(png_name(m))).collect()
}
