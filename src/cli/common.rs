//! What several commands share: the hints their errors get (the command
//! that repairs the data or makes a model), reading a model and saying
//! which one it is, numpy's shapes.

use std::path::Path;
use std::time::SystemTime;

use anyhow::anyhow;

use mnist_cnn::backend;
use mnist_cnn::data::DataError;
use mnist_cnn::download::{DownloadError, MIRROR_ENV};
use mnist_cnn::model::Cnn;
use mnist_cnn::store::{ModelPaths, StoreError};
use mnist_cnn::train::Metadata;

use crate::term::{note, print};

/// Adds to a download failure what to do about it.
pub fn download_failed(e: DownloadError) -> anyhow::Error {
    let offline = format!(
        "to work offline, pass --mirror DIR or set {MIRROR_ENV}=DIR, DIR being a folder \
         (or http:// server) that holds the four .gz files"
    );
    match e {
        DownloadError::AllMirrorsFailed { .. } => anyhow!("{e} (each reason above); {offline}"),
        DownloadError::NoMirrors { .. } => anyhow!("{e}; {offline}"),
        DownloadError::Deadline { .. } => anyhow!("{e} (allow more with --deadline SECS)"),
        DownloadError::File(_) => e.into(),
    }
}

/// Adds to a data-folder failure the command that fixes it.
pub fn data_failed(e: DataError, dir: &Path) -> anyhow::Error {
    let fix = format!("mnist-cnn download --data-dir {}", dir.display());
    match e {
        DataError::Missing { .. } => anyhow!("{e}: run `{fix}` first"),
        DataError::Idx(_) | DataError::NotMnist { .. } | DataError::TooLarge { .. } => {
            anyhow!("{e}; `{fix}` repairs it")
        }
        DataError::Io { .. } => e.into(),
    }
}

/// Whether `--model` named a safetensors file that exists (an export).
fn is_export(paths: &ModelPaths) -> bool {
    let stem = paths.stem();
    stem.extension().is_some_and(|e| e == "safetensors") && stem.is_file()
}

/// `1 model`, `2 models`: a count and its noun, in the plural unless one.
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// Adds to a model-file failure the command that makes a good one.
pub fn model_failed(e: StoreError, paths: &ModelPaths) -> anyhow::Error {
    let fix = format!("mnist-cnn train --model {}", paths.stem().display());
    match e {
        // `--model x.safetensors` names an export, which no command reads.
        StoreError::Missing { .. } if is_export(paths) => {
            anyhow!(
                "{} is an export for other tools (Keras, PyTorch, numpy), which mnist-cnn \
                 writes but does not read: give --model the model it was exported from \
                 (PATH for PATH.bpk)",
                paths.stem().display()
            )
        }
        StoreError::Missing { .. } => anyhow!("{e}: train one with `{fix}`"),
        StoreError::Corrupt { .. } | StoreError::Architecture { .. } => {
            anyhow!("{e}; retrain with `{fix}`")
        }
        _ => e.into(),
    }
}

/// Where stdout is data (JSON), the lines for people go to stderr.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    Text,
    Data,
}

/// The model stored at `paths`, read and checked on the CPU (a missing or
/// damaged model is found before a GPU is opened), after a line that says
/// which it is: after an automatic backup, `data/model` is another model.
pub fn load_model(paths: &ModelPaths, stdout: Stdout) -> anyhow::Result<Cnn> {
    let (model, metadata) = paths
        .load_weights_with::<Metadata>(&backend::host_device())
        .map_err(|e| model_failed(e, paths))?;
    let line = format!("Model: {}", describe(paths, metadata.as_ref()));
    match stdout {
        Stdout::Text => print(line)?,
        Stdout::Data => note(line),
    }
    Ok(model)
}

/// `data/model.bpk (10 epochs, test accuracy 0.9814, saved 2026-12-01 10:40 UTC)`.
pub fn describe(paths: &ModelPaths, metadata: Option<&Metadata>) -> String {
    let mut facts = Vec::new();
    match metadata {
        Some(m) => {
            facts.push(count(m.epochs_done(), "epoch"));
            if let Some(test) = m.test {
                facts.push(format!("test accuracy {:.4}", test.accuracy));
            }
        }
        None => facts.push("no record beside it".into()),
    }
    if let Some(when) = saved_at(&paths.weights) {
        facts.push(format!("saved {when}"));
    }
    format!("{} ({})", paths.weights.display(), facts.join(", "))
}

/// When `path` was last written, to the minute, in UTC; `None` for a
/// time the calendar cannot show (before 1970 or after 9999, which a
/// copied file's clock can give).
pub fn saved_at(path: &Path) -> Option<String> {
    const YEAR_10000: u64 = 253_402_300_800;
    let modified: SystemTime = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(SystemTime::UNIX_EPOCH).ok()?;
    if since.as_secs() >= YEAR_10000 {
        return None;
    }
    let stamp = humantime::format_rfc3339_seconds(modified).to_string();
    // 2026-12-01T10:40:12Z
    Some(format!("{} {} UTC", stamp.get(..10)?, stamp.get(11..16)?))
}

/// `(60000, 28, 28)`, as numpy prints a shape.
pub fn shape(dims: &[usize]) -> String {
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
    use super::*;

    #[test]
    fn shapes_read_as_numpy_prints_them() {
        assert_eq!(shape(&[60000, 28, 28]), "(60000, 28, 28)");
        assert_eq!(shape(&[10000]), "(10000,)");
    }
}
