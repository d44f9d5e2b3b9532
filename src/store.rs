//! The model store: where a model's files live, and saving and loading its
//! weights and its JSON metadata (written through [`crate::files`]) as one
//! pair that cannot disagree silently.
//!
//! The metadata records the SHA-256 of the weights it describes. A save
//! writes the new metadata beside the old first (`.NAME.json.pending`),
//! then the weights, then moves the metadata into place, each step atomic.
//! A process killed anywhere leaves the previous pair, or the new one, or
//! the new weights with their metadata still pending; the next `train`
//! completes or undoes that save before it starts, and readers take the
//! pending metadata when it is the one that names the weights. Weights
//! whose metadata names other weights (another run's file copied over, say)
//! are refused. One writer at a time: [`ModelPaths::lock`].

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use thiserror::Error;

use crate::files::{self, FileError, sha256_hex, write_atomically};
use crate::model::Cnn;

/// The metadata's field that names the weights it describes.
const WEIGHTS_SHA256: &str = "weights_sha256";

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
    #[error(
        "{} are not the weights {} describes (copied from another model, or changed since): \
         keep a model's .bpk and .json together",
        weights.display(),
        metadata.display()
    )]
    Mismatch { weights: PathBuf, metadata: PathBuf },
    #[error(
        "another mnist-cnn{} is training the model at {}: wait for it to end, or train \
         another --model",
        pid.map(|p| format!(" (process {p})")).unwrap_or_default(),
        weights.display()
    )]
    Busy { weights: PathBuf, pid: Option<u32> },
}

/// Where a model's files live: the weights (Burn's burnpack format), the
/// JSON metadata beside them, and the picture of its learning curves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPaths {
    pub weights: PathBuf,
    pub metadata: PathBuf,
    /// The learning curves as SVG, drawn from the metadata's history.
    pub plot: PathBuf,
    /// The metadata of a save in progress (see the module's doc).
    pending: PathBuf,
    /// What [`ModelPaths::lock`] locks.
    lock: PathBuf,
}

/// The models stored in `dir`: one per `NAME.bpk` that is not hidden,
/// sorted by name.
pub fn models_in(dir: &Path) -> Result<Vec<ModelPaths>, StoreError> {
    let entries = fs::read_dir(dir).map_err(|source| StoreError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut models: Vec<ModelPaths> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            p.extension().is_some_and(|e| e == "bpk") && !name.starts_with('.')
        })
        .map(|p| ModelPaths::new(&p))
        .collect();
    models.sort_by_key(|m| m.stem());
    Ok(models)
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
        // Hidden beside the model, named after it.
        let hidden = |ext: &str| {
            let mut name = std::ffi::OsString::from(".");
            name.push(stem.file_name().unwrap_or_default());
            name.push(ext);
            stem.with_file_name(name)
        };
        Self {
            weights: with("bpk"),
            metadata: with("json"),
            plot: with("svg"),
            pending: hidden(".json.pending"),
            lock: hidden(".lock"),
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
            .chain([&self.pending])
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
        // All three are in place under their new names before any goes from
        // its old one (the weights last), so that a kill in between leaves
        // the model, or the backup, whole.
        let moves: Vec<_> = self
            .files()
            .into_iter()
            .zip(backup.files())
            .filter(|(from, _)| from.exists())
            .collect();
        for &(from, to) in &moves {
            fs::hard_link(from, to)
                .or_else(|_| fs::copy(from, to).map(|_| ()))
                .map_err(|source| FileError::write(to, source))?;
        }
        files::sync_folder(files::folder_of(&self.weights));
        for &(from, _) in moves.iter().rev() {
            fs::remove_file(from).map_err(|source| FileError::write(from, source))?;
        }
        Ok(backup)
    }

    /// Saves `model` and the `metadata` that describes it as one step (see
    /// the module's doc); the metadata gets the weights' SHA-256.
    pub fn save<T: Serialize>(&self, model: &Cnn, metadata: &T) -> Result<(), StoreError> {
        let weights = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| FileError::write(&self.weights, io::Error::other(e.to_string())))?;
        let json = metadata_json(metadata, &sha256_hex([&weights[..]]));
        write_atomically(&self.pending, &json)?;
        crash_point("pending");
        if let Err(e) = write_atomically(&self.weights, &weights) {
            // The old pair stands; what named the new weights goes.
            let _ = fs::remove_file(&self.pending);
            return Err(e.into());
        }
        crash_point("weights");
        self.commit_pending()
    }

    /// Rewrites the metadata of the weights stored here (after the test
    /// result is known, say).
    pub fn save_metadata<T: Serialize>(&self, metadata: &T) -> Result<(), StoreError> {
        let sha = sha256_hex([&read(&self.weights)?[..]]);
        Ok(write_atomically(
            &self.metadata,
            &metadata_json(metadata, &sha),
        )?)
    }

    /// Moves the pending metadata into place.
    fn commit_pending(&self) -> Result<(), StoreError> {
        fs::rename(&self.pending, &self.metadata)
            .map_err(|source| FileError::write(&self.metadata, source))?;
        files::sync_folder(files::folder_of(&self.metadata));
        Ok(())
    }

    /// Completes or undoes a save a killed process left half done: the
    /// pending metadata is kept when the weights are the ones it names (the
    /// weights were written), else dropped (they were not). Only for the
    /// one writer, under [`lock`](Self::lock). Says whether it completed one.
    pub fn recover(&self) -> Result<bool, StoreError> {
        let Ok(pending) = fs::read(&self.pending) else {
            return Ok(false);
        };
        // Only weights read and found to be others (or absent) undo the
        // save: an error reading them says nothing of which they are.
        let weights = match read(&self.weights) {
            Ok(bytes) => Some(bytes),
            Err(StoreError::Missing { .. }) => None,
            Err(e) => return Err(e),
        };
        let named = weights_named(&pending);
        if weights.is_some_and(|w| named.as_deref() == Some(&sha256_hex([&w[..]]))) {
            self.commit_pending()?;
            Ok(true)
        } else {
            fs::remove_file(&self.pending)
                .map_err(|source| FileError::write(&self.pending, source))?;
            Ok(false)
        }
    }

    /// Takes the model for one writer: a second process that asks while
    /// this one lives gets [`StoreError::Busy`]. The operating system lets
    /// go when the process ends, however it ends, so no lock outlives its
    /// process; the file is removed when the lock is dropped.
    pub fn lock(&self) -> Result<Lock, StoreError> {
        let err = |source| StoreError::File(FileError::write(&self.lock, source));
        loop {
            let mut file = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&self.lock)
                .map_err(err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(fs::TryLockError::WouldBlock) => {
                    let pid = fs::read_to_string(&self.lock)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    return Err(StoreError::Busy {
                        weights: self.weights.clone(),
                        pid,
                    });
                }
                Err(fs::TryLockError::Error(e)) => return Err(err(e)),
            }
            // The holder before may have removed the file as we opened it:
            // then this lock is on a file no one else will find; try again.
            if !same_file(&file, &self.lock) {
                continue;
            }
            // Only to name this process to another; the lock holds without it
            // (on a full disk, say).
            let _ = file.set_len(0);
            let _ = write!(file, "{}", std::process::id());
            return Ok(Lock {
                _file: file,
                path: self.lock.clone(),
            });
        }
    }

    /// The weights stored here, checked against their metadata (see
    /// [`load`](Self::load)); metadata that does not parse does not stop
    /// them, as the weights alone are all a reader of them needs.
    pub fn load_weights(&self, device: &Device) -> Result<Cnn, StoreError> {
        let (weights, _) = self.read_pair()?;
        self.decode(weights, device)
    }

    /// [`load_weights`](Self::load_weights), with the record beside them
    /// when it parses (`None` when it is missing or does not): for readers
    /// of the weights that say which model they read.
    pub fn load_weights_with<T: DeserializeOwned>(
        &self,
        device: &Device,
    ) -> Result<(Cnn, Option<T>), StoreError> {
        let (weights, metadata) = self.read_pair()?;
        let metadata = metadata.and_then(|(json, _)| serde_json::from_slice(&json).ok());
        Ok((self.decode(weights, device)?, metadata))
    }

    /// Removes the model's files, unless a run is writing it. The weights
    /// go last: a removal cut short leaves them, which a listing still
    /// finds (by its `.bpk`) and a second removal takes; never a record
    /// that no listing would show.
    pub fn remove(&self) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        for path in [&self.pending, &self.plot, &self.metadata, &self.weights] {
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(FileError::write(path, source).into()),
            }
        }
        files::sync_folder(files::folder_of(&self.weights));
        Ok(())
    }

    /// The weights and the metadata that describes them, checked to agree:
    /// the metadata names these weights by SHA-256 (files of versions before
    /// that field are taken as they are). Weights alone, without metadata,
    /// load with `None`. Read while a run saves, the pair is read again until
    /// it agrees.
    pub fn load<T: DeserializeOwned>(
        &self,
        device: &Device,
    ) -> Result<(Cnn, Option<T>), StoreError> {
        let (weights, metadata) = self.read_pair()?;
        let metadata = metadata
            .map(|(json, path)| {
                serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt {
                    path,
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok((self.decode(weights, device)?, metadata))
    }

    /// The weights' bytes and the metadata that describes them (with the
    /// file it came from), read until they agree (see [`load`](Self::load)).
    #[allow(clippy::type_complexity)]
    fn read_pair(&self) -> Result<(Vec<u8>, Option<(Vec<u8>, PathBuf)>), StoreError> {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let weights = read(&self.weights)?;
            let metadata = match read(&self.metadata) {
                Ok(bytes) => Some(bytes),
                Err(StoreError::Missing { .. }) => None,
                Err(e) => return Err(e),
            };
            let sha = sha256_hex([&weights[..]]);
            let names = |json: &[u8]| weights_named(json).is_none_or(|named| named == sha);
            let agreed = match metadata {
                Some(json) if names(&json) => Some(Some((json, self.metadata.clone()))),
                // A save in progress, or one a killed process left: the
                // pending metadata is the one that names these weights.
                _ => match fs::read(&self.pending) {
                    Ok(json) if weights_named(&json).as_deref() == Some(&sha) => {
                        Some(Some((json, self.pending.clone())))
                    }
                    _ if metadata_missing(&self.metadata) => Some(None),
                    _ => None,
                },
            };
            if let Some(metadata) = agreed {
                return Ok((weights, metadata));
            }
            if attempt < ATTEMPTS {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Err(StoreError::Mismatch {
            weights: self.weights.clone(),
            metadata: self.metadata.clone(),
        })
    }

    fn decode(&self, bytes: Vec<u8>, device: &Device) -> Result<Cnn, StoreError> {
        let path = &self.weights;
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

    /// Reads the metadata saved beside the weights (not checked against
    /// them: for what needs the record alone, such as `plot`).
    pub fn load_metadata<T: DeserializeOwned>(&self) -> Result<T, StoreError> {
        let path = &self.metadata;
        serde_json::from_slice(&read(path)?).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })
    }
}

/// A model taken by one writer (see [`ModelPaths::lock`]).
#[derive(Debug)]
pub struct Lock {
    _file: fs::File,
    #[cfg_attr(not(unix), allow(dead_code))]
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still held, so that no one takes it in between; a
        // process that opened it just before finds it gone (`same_file`).
        // Where that cannot be told, the file stays.
        #[cfg(unix)]
        let _ = fs::remove_file(&self.path);
    }
}

/// Whether `file` is the file at `path` now.
fn same_file(file: &fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// `metadata` as pretty JSON with the SHA-256 of the weights it describes.
fn metadata_json<T: Serialize>(metadata: &T, weights_sha256: &str) -> Vec<u8> {
    let mut value = serde_json::to_value(metadata).expect("metadata serialises");
    if let Some(fields) = value.as_object_mut() {
        fields.insert(WEIGHTS_SHA256.into(), weights_sha256.into());
    }
    serde_json::to_vec_pretty(&value).expect("metadata serialises")
}

/// The SHA-256 a metadata file names its weights by, if it is JSON that does.
fn weights_named(json: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(json).ok()?;
    Some(value.get(WEIGHTS_SHA256)?.as_str()?.to_string())
}

fn metadata_missing(path: &Path) -> bool {
    matches!(fs::metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Where the tests stop the process on purpose, as a power cut or `kill -9`
/// would (no clean-up, no destructors): `MNIST_CNN_CRASH_AT=pending` (the
/// new metadata written, not the weights) or `weights` (the weights
/// written, the metadata still pending). An exit rather than an abort, which
/// could leave a core file.
fn crash_point(name: &str) {
    if std::env::var_os("MNIST_CNN_CRASH_AT").is_some_and(|at| at == name) {
        std::process::exit(137);
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
