//! What several commands share: the hints their errors get (the command
//! that repairs the data or makes a model), reading a model, numpy's shapes.

use std::path::Path;

use anyhow::anyhow;

use mnist_cnn::backend;
use mnist_cnn::data::DataError;
use mnist_cnn::download::{DownloadError, MIRROR_ENV};
use mnist_cnn::model::Cnn;
use mnist_cnn::store::{ModelPaths, StoreError};

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

/// Adds to a model-file failure the command that makes a good one.
pub fn model_failed(e: StoreError, paths: &ModelPaths) -> anyhow::Error {
    let fix = format!("mnist-cnn train --model {}", paths.stem().display());
    match e {
        StoreError::Missing { .. } => anyhow!("{e}: train one with `{fix}`"),
        StoreError::Corrupt { .. } | StoreError::Architecture { .. } => {
            anyhow!("{e}; retrain with `{fix}`")
        }
        _ => e.into(),
    }
}

/// The model stored at `paths`, read and checked on the CPU: a missing or
/// damaged model is found before a GPU is opened.
pub fn load_model(paths: &ModelPaths) -> anyhow::Result<Cnn> {
    paths
        .load_weights(&backend::host_device())
        .map_err(|e| model_failed(e, paths))
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
