//! `mnist-cnn eval`: loss, accuracy, per-class accuracy and the confusion
//! matrix on the test set, as Keras's `model.evaluate` reports them and more.

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::backend::Backend;
use crate::data::Examples;
use crate::host::HostNet;
use crate::idx::{CLASSES, PIXELS};
use crate::model::{Batch, Cnn};

/// Memory one image of an evaluation batch takes, measured as peak RSS
/// over batch sizes: for refusing a batch that cannot fit before it is tried.
pub const BYTES_PER_IMAGE: usize = 100_000;

/// Images per evaluation batch unless told otherwise: `eval`'s, and the
/// batch `train` evaluates with after each epoch and at the end.
pub const BATCH: usize = 128;

/// The model's answer for one image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    pub predicted: u8,
    /// Softmax probability of the predicted class.
    pub confidence: f32,
    /// All ten softmax probabilities, digit 0 first.
    pub probabilities: [f32; CLASSES],
}

/// The results of evaluating a model on a data set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Mean categorical cross-entropy.
    pub loss: f64,
    pub accuracy: f64,
    pub count: usize,
    /// Accuracy on the images of each true class 0-9.
    pub per_class_accuracy: Vec<f64>,
    /// `confusion_matrix[true][predicted]` = number of images.
    pub confusion_matrix: Vec<Vec<usize>>,
    #[serde(skip)]
    pub predictions: Vec<Prediction>,
}

/// Loss and accuracy of a network on a set of images, as Keras's
/// `model.evaluate` returns them (the tutorial calls them the score).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Score {
    pub loss: f64,
    pub accuracy: f64,
}

impl Evaluation {
    /// The loss and accuracy alone.
    pub fn score(&self) -> Score {
        Score {
            loss: self.loss,
            accuracy: self.accuracy,
        }
    }
}

/// Runs the model over `data` in batches of `batch_size` (at least 1): on
/// the host (`HostNet`, the fast path) for a CPU backend, through the
/// model's own pass on a GPU. Softmax and loss are then taken on the host
/// from the logits, in f64 ([`softmax`]): as Burn's tensor ops they cost a
/// tenth of an evaluation, for ten numbers an image.
pub fn evaluate(model: &Cnn, data: &Examples, batch_size: usize, device: &Device) -> Evaluation {
    let mut host = Backend::of(device)
        .on_host()
        .then(|| HostNet::for_inference(model));
    let indices: Vec<usize> = (0..data.len()).collect();
    let mut predictions = Vec::with_capacity(data.len());
    let mut loss_sum = 0.0f64;
    let mut confusion = vec![vec![0usize; CLASSES]; CLASSES];
    for chunk in indices.chunks(batch_size.max(1)) {
        let logits = match &mut host {
            Some(net) => net.logits(&data.images, chunk),
            None => model
                .forward(&Batch::new(&data.images, chunk, device), None)
                .into_data()
                .try_to_vec::<f32>()
                .expect("logits are f32"),
        };
        for (row, &i) in logits.chunks_exact(CLASSES).zip(chunk) {
            let row: &[f32; CLASSES] = row.try_into().expect("ten classes");
            let label = data.labels[i];
            let exps = Exps::of(row);
            loss_sum += exps.cross_entropy(row, label);
            let probabilities = exps.probabilities();
            let predicted = argmax(&probabilities) as usize;
            let confidence = probabilities[predicted];
            confusion[label as usize][predicted] += 1;
            predictions.push(Prediction {
                predicted: predicted as u8,
                confidence,
                probabilities,
            });
        }
    }
    let count = data.len();
    let correct: usize = (0..CLASSES).map(|c| confusion[c][c]).sum();
    let per_class_accuracy = (0..CLASSES)
        .map(|c| {
            let total: usize = confusion[c].iter().sum();
            if total == 0 {
                0.0
            } else {
                confusion[c][c] as f64 / total as f64
            }
        })
        .collect();
    Evaluation {
        loss: loss_sum / count.max(1) as f64,
        accuracy: correct as f64 / count.max(1) as f64,
        count,
        per_class_accuracy,
        confusion_matrix: confusion,
        predictions,
    }
}

/// Softmax in f64, rounded to f32 once: what `eval`, `explain` and
/// `serve` show.
pub(crate) fn softmax(logits: &[f32; CLASSES]) -> [f32; CLASSES] {
    Exps::of(logits).probabilities()
}

/// The likeliest class: the first of equal probabilities, in `eval` as in
/// `explain` and `serve`.
pub(crate) fn argmax(p: &[f32; CLASSES]) -> u8 {
    let mut best = 0;
    for (k, &v) in p.iter().enumerate() {
        if v > p[best] {
            best = k;
        }
    }
    best as u8
}

/// One image's logits shifted by their largest and exponentiated, in f64:
/// what its softmax and its loss are both made of.
struct Exps {
    max: f64,
    exp: [f64; CLASSES],
    sum: f64,
}

impl Exps {
    fn of(logits: &[f32; CLASSES]) -> Exps {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let exp: [f64; CLASSES] = std::array::from_fn(|k| (logits[k] as f64 - max).exp());
        Exps {
            max,
            exp,
            sum: exp.iter().sum(),
        }
    }

    fn probabilities(&self) -> [f32; CLASSES] {
        std::array::from_fn(|k| (self.exp[k] / self.sum) as f32)
    }

    /// The categorical cross-entropy for `label`, through log-softmax as
    /// [`crate::model::cross_entropy`] takes it (so it stays finite for a
    /// probability that underflows).
    fn cross_entropy(&self, logits: &[f32; CLASSES], label: u8) -> f64 {
        self.max + self.sum.ln() - logits[label as usize] as f64
    }
}

/// Class probabilities for images given as 784 values in [0, 1] each
/// (pictures prepared by [`crate::prepare`]), in batches of 128.
pub fn classify(model: &Cnn, images: &[Vec<f32>], device: &Device) -> Vec<[f32; CLASSES]> {
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(128) {
        let mut pixels = Vec::with_capacity(chunk.len() * PIXELS);
        for image in chunk {
            assert_eq!(image.len(), PIXELS, "a 28×28 image");
            pixels.extend_from_slice(image);
        }
        let batch = Batch::from_pixels(pixels, chunk.len(), device);
        let probs = model.probabilities(&batch).into_data();
        let probs = probs.as_slice::<f32>().expect("probabilities are f32");
        out.extend(
            probs
                .chunks_exact(CLASSES)
                .map(|row| <[f32; CLASSES]>::try_from(row).expect("ten classes")),
        );
    }
    out
}

/// The `k` likeliest digits with their probabilities, likeliest first.
pub fn top(probabilities: &[f32; CLASSES], k: usize) -> Vec<(u8, f32)> {
    let mut ranked: Vec<(u8, f32)> = (0..CLASSES as u8)
        .map(|d| (d, probabilities[d as usize]))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    ranked
}

impl Evaluation {
    /// The line Keras's `evaluate` prints.
    pub fn summary_line(&self) -> String {
        format!("loss: {:.4} - accuracy: {:.4}", self.loss, self.accuracy)
    }

    /// Per-class accuracy and the confusion matrix, for people.
    pub fn report(&self) -> String {
        let mut out = String::from("\nper-class accuracy:\n");
        for (c, acc) in self.per_class_accuracy.iter().enumerate() {
            let total: usize = self.confusion_matrix[c].iter().sum();
            out.push_str(&format!("  {c}: {acc:.4} ({total} images)\n"));
        }
        out.push_str("\nconfusion matrix (rows: true label, columns: predicted):\n      ");
        for c in 0..CLASSES {
            out.push_str(&format!("{c:>6}"));
        }
        out.push('\n');
        for (c, row) in self.confusion_matrix.iter().enumerate() {
            out.push_str(&format!("  {c:>2}: "));
            for n in row {
                out.push_str(&format!("{n:>6}"));
            }
            out.push('\n');
        }
        out
    }

    /// Indices of the images the model got wrong, in data-set order.
    pub fn misclassified(&self, labels: &[u8]) -> Vec<usize> {
        self.predictions
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(_, (p, l))| p.predicted != **l)
            .map(|(i, _)| i)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_top_digits_come_likeliest_first() {
        let mut p = [0.0f32; CLASSES];
        p[3] = 0.6;
        p[8] = 0.3;
        p[5] = 0.05;
        p[1] = 0.05;
        assert_eq!(top(&p, 3), [(3, 0.6), (8, 0.3), (1, 0.05)]);
        assert_eq!(top(&p, 10).len(), 10);
    }
}
