//! Everything this tool keeps on disk goes through here: files written
//! atomically, content hashes, and the model store (where a model's files
//! live, saving and loading its weights and its JSON metadata).
//!
//! A file is written to a temporary file beside it, synced and renamed over
//! the final name, so a crash, a full disk or Ctrl-C leaves the old content
//! or the new, never a part. Temporary files are named after the file they
//! become (`.model.bpk.tmp-XXXXXX`), so that one left behind by a killed
//! process is recognised and removed by the next run, and is never taken for
//! the file itself.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::model::Cnn;

/// Why a file could not be stored or read back.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("{} is a folder, not a file", path.display())]
    IsFolder { path: PathBuf },
    #[error("model file {} not found", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{} is corrupt or not a model file ({reason})", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{} holds another network ({reason})", path.display())]
    Architecture { path: PathBuf, reason: String },
}

/// Lower-case hex SHA-256 of the parts, one after the other.
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Prefix of the temporary files that become `path`.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.tmp-")
}

fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of the new, never a part: temp file in the same folder, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Err(StoreError::IsFolder {
            path: path.to_path_buf(),
        });
    }
    let mut builder = tempfile::Builder::new();
    let prefix = temp_prefix(path);
    builder.prefix(&prefix);
    // Temp files are private (0600) by default; the result should get the
    // usual permissions (0666 less the umask) like any file a tool writes.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(folder_of(path)).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// Makes sure `path` can be written: its folder exists (it is created) and
/// takes new files, and `path` is not a folder. Checked before any work, so
/// that a bad location fails at once rather than after the first epoch.
pub fn check_writable(path: &Path) -> Result<(), StoreError> {
    if path.is_dir() {
        return Err(StoreError::IsFolder {
            path: path.to_path_buf(),
        });
    }
    let folder = folder_of(path);
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    fs::create_dir_all(folder).map_err(err)?;
    tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .tempfile_in(folder)
        .map_err(err)?;
    Ok(())
}

/// Removes temporary files that a killed process left on the way to `path`.
/// Returns how many it removed.
pub fn remove_stale_temps(path: &Path) -> usize {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(folder_of(path)) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
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

    /// Makes sure every file can be written (see [`check_writable`]).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        self.files().into_iter().try_for_each(|p| check_writable(p))
    }

    /// Removes temporary files an interrupted save left behind.
    pub fn remove_stale_temps(&self) -> usize {
        self.files()
            .into_iter()
            .map(|p| remove_stale_temps(p))
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
                fs::rename(from, to).map_err(|source| StoreError::Write {
                    path: to.clone(),
                    source,
                })?;
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
            .map_err(|e| StoreError::Write {
                path: self.weights.clone(),
                source: io::Error::other(e.to_string()),
            })?;
        write_atomically(&self.weights, &bytes)
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
        write_atomically(&self.metadata, &json)
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
        return Err(StoreError::IsFolder {
            path: path.to_path_buf(),
        });
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
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new content").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The same permissions as any newly created file (not tempfile's 0600).
            let usual = dir.path().join("usual");
            fs::write(&usual, b"").unwrap();
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&path), mode(&usual));
        }
    }

    #[test]
    fn stale_temp_files_are_found_by_name_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        fs::write(dir.path().join(".model.bpk.tmp-abc123"), b"half").unwrap();
        fs::write(dir.path().join(".other.bpk.tmp-abc123"), b"keep").unwrap();
        fs::write(&path, b"real").unwrap();
        assert_eq!(remove_stale_temps(&path), 1);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".other.bpk.tmp-abc123", "model.bpk"]);
    }

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
