//! The model store: where a model's files live, and saving and loading its
//! weights and its JSON metadata (written through [`crate::files`]).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::files::{self, FileError, write_atomically};
use crate::model::Cnn;

/// Why a model could not be stored or read back.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("model file {} not found", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is corrupt or not a model file ({reason})", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} holds another network ({reason})", path.display())]
    Architecture { path: PathBuf, reason: String },
}

/// Where a model's files live: the weights (Burn's burnpack format), the
/// JSON metadata beside them, and the picture of its learning curves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub weights: PathBuf,
    pub metadata: PathBuf,
    /// The learning curves as SVG, drawn from the metadata's history.
    pub plot: PathBuf,
}

/// File name a model gets inside a folder.
pub const DEFAULT_MODEL_NAME: &str = "model";

impl ModelPaths {
    /// Reads a model location as users write it: `PATH` means `PATH.bpk`,
    /// `PATH.json` and `PATH.svg` (an extension `.bpk`, `.json` or `.svg`
    /// given is replaced, any other kept: `run.v2` gives `run.v2.bpk`); a
    /// folder (one that exists, or a path ending in `/`) holds `model.bpk`,
    /// `model.json` and `model.svg`.
    pub fn new(path: &Path) -> Self {
        let is_folder = path.as_os_str().to_string_lossy().ends_with('/') || path.is_dir();
        let stem = if is_folder {
            path.join(DEFAULT_MODEL_NAME)
        } else {
            match path.extension().and_then(|e| e.to_str()) {
                Some("bpk" | "json" | "svg") => path.with_extension(""),
                _ => path.to_path_buf(),
            }
        };
        let with = |ext: &str| {
            let mut name = stem.clone().into_os_string();
            name.push(".");
            name.push(ext);
            PathBuf::from(name)
        };
        Self {
            weights: with("bpk"),
            metadata: with("json"),
            plot: with("svg"),
        }
    }

    /// The location without extension, as `--model` takes it.
    pub fn stem(&self) -> PathBuf {
        self.weights.with_extension("")
    }

    /// Whether a model is stored here.
    pub fn exists(&self) -> bool {
        self.weights.exists()
    }

    fn files(&self) -> [&PathBuf; 3] {
        [&self.weights, &self.metadata, &self.plot]
    }

    /// Makes sure every file can be written (see [`files::check_writable`]).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.files()
            .into_iter()
            .try_for_each(|p| files::check_writable(p))
            .map_err(StoreError::from)
    }

    /// Removes temporary files an interrupted save left behind.
    pub fn remove_stale_temps(&self) -> usize {
        self.files()
            .into_iter()
            .map(|p| files::remove_stale_temps(p))
            .sum()
    }

    /// Moves the stored model's files to the lowest free `STEM.N.bpk` /
    /// `STEM.N.json` / `STEM.N.svg`, and returns where they went.
    pub fn back_up(&self) -> Result<ModelPaths, StoreError> {
        let stem = self.stem().into_os_string();
        let backup = (1..)
            .map(|n| {
                let mut name = stem.clone();
                name.push(format!(".{n}"));
                ModelPaths::new(Path::new(&name))
            })
            .find(|b| b.files().iter().all(|f| !f.exists()))
            .expect("some number is free");
        for (from, to) in self.files().into_iter().zip(backup.files()) {
            if from.exists() {
                fs::rename(from, to).map_err(|source| FileError::write(to, source))?;
            }
        }
        Ok(backup)
    }

    /// Saves the weights (atomically).
    pub fn save_weights(&self, model: &Cnn) -> Result<(), StoreError> {
        let bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| FileError::write(&self.weights, io::Error::other(e.to_string())))?;
        Ok(write_atomically(&self.weights, &bytes)?)
    }

    /// Loads weights saved by [`save_weights`](Self::save_weights).
    pub fn load_weights(&self, device: &Device) -> Result<Cnn, StoreError> {
        let path = &self.weights;
        let bytes = read(path)?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| {
            StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        Cnn::skeleton(device)
            .try_load_record(record)
            .map_err(|e| StoreError::Architecture {
                path: path.clone(),
                reason: e.to_string(),
            })
    }

    /// Saves the metadata as pretty JSON (atomically).
    pub fn save_metadata<T: Serialize>(&self, metadata: &T) -> Result<(), StoreError> {
        let json = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
        Ok(write_atomically(&self.metadata, &json)?)
    }

    /// Reads the metadata saved beside the weights.
    pub fn load_metadata<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        let path = &self.metadata;
        serde_json::from_slice(&read(path)?).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })
    }
}

fn read(path: &Path) -> Result<Vec<u8>, StoreError> {
    if path.is_dir() {
        return Err(FileError::IsFolder {
            path: path.to_path_buf(),
        }
        .into());
    }
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::Missing {
            path: path.to_path_buf(),
        },
        _ => StoreError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_locations_read_as_users_write_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = |s: &str| ModelPaths::new(&dir.path().join(s));
        let d = dir.path();
        assert_eq!(p("m").weights, d.join("m.bpk"));
        assert_eq!(p("m").metadata, d.join("m.json"));
        assert_eq!(p("m.bpk").metadata, d.join("m.json"));
        assert_eq!(p("m.json").weights, d.join("m.bpk"));
        assert_eq!(p("m").plot, d.join("m.svg"));
        assert_eq!(p("m.svg").weights, d.join("m.bpk"));
        assert_eq!(p("run.v2").weights, d.join("run.v2.bpk"));
        assert_eq!(p("new/").weights, d.join("new/model.bpk"));
        assert_eq!(p("new/").plot, d.join("new/model.svg"));
        fs::create_dir(d.join("old")).unwrap();
        assert_eq!(p("old").weights, d.join("old/model.bpk"));
        assert_eq!(p("m").stem(), d.join("m"));
    }

    #[test]
    fn a_location_that_cannot_be_written_fails_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ModelPaths::new(&dir.path().join("m"));
        paths.check_writable().unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no trace");
        fs::create_dir(dir.path().join("m.bpk")).unwrap();
        let err = paths.check_writable().unwrap_err().to_string();
        assert!(err.ends_with("m.bpk is a folder, not a file"), "{err}");
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let under_a_file = ModelPaths::new(&file.join("m"));
        assert!(under_a_file.check_writable().is_err());
    }

    #[test]
    fn back_up_moves_every_file_to_the_lowest_free_number() {
        let dir = tempfile::tempdir().unwrap();
        let paths = ModelPaths::new(&dir.path().join("m"));
        fs::write(&paths.weights, b"w0").unwrap();
        fs::write(&paths.metadata, b"j0").unwrap();
        fs::write(&paths.plot, b"p0").unwrap();
        let first = paths.back_up().unwrap();
        assert_eq!(first.weights, dir.path().join("m.1.bpk"));
        assert_eq!(fs::read(&first.plot).unwrap(), b"p0");
        assert!(!paths.exists() && !paths.plot.exists());
        fs::write(&paths.weights, b"w1").unwrap();
        let second = paths.back_up().unwrap();
        assert_eq!(second.weights, dir.path().join("m.2.bpk"));
        assert_eq!(fs::read(&first.weights).unwrap(), b"w0");
        assert_eq!(fs::read(&first.metadata).unwrap(), b"j0");
        assert_eq!(fs::read(&second.weights).unwrap(), b"w1");
    }
}
