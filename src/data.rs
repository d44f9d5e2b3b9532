//! The data set as the commands use it: the four verified IDX files in the
//! data folder, parsed into u8 images and labels.

use std::fs;
use std::path::{Path, PathBuf};

use thiserror::Error;

use sha2::{Digest, Sha256};

use crate::download::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, hex};
use crate::idx::{self, IdxError, Images};

/// Why the data folder could not be read.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{} is missing: run `mnist-cnn download --data-dir {}` first", path.display(), dir.display())]
    Missing { path: PathBuf, dir: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Idx(#[from] IdxError),
}

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Train,
    Test,
}

impl Part {
    /// File names of the images and labels of this part.
    pub fn files(self) -> [&'static str; 2] {
        match self {
            Part::Train => [TRAIN_IMAGES, TRAIN_LABELS],
            Part::Test => [TEST_IMAGES, TEST_LABELS],
        }
    }
}

/// Images with their labels.
#[derive(Debug, Clone)]
pub struct Split {
    pub images: Images,
    pub labels: Vec<u8>,
    /// SHA-256 over the images file then the labels file, as read: recorded
    /// with a trained model so that its provenance can be checked.
    pub sha256: String,
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Keeps only the first `n` examples (for quick runs and tests).
    pub fn truncate(&mut self, n: usize) {
        self.images.truncate(n);
        self.labels.truncate(n);
    }
}

/// Whether every file of the data set is present in `dir`.
pub fn is_present(dir: &Path) -> bool {
    [Part::Train, Part::Test]
        .iter()
        .flat_map(|p| p.files())
        .all(|f| dir.join(f).is_file())
}

/// Reads and parses one part of the data set from `dir`.
pub fn load(dir: &Path, part: Part) -> Result<Split, DataError> {
    let [images_name, labels_name] = part.files();
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing {
                    path: path.clone(),
                    dir: dir.to_path_buf(),
                }
            } else {
                DataError::Io {
                    path: path.clone(),
                    source,
                }
            }
        })
    };
    let image_bytes = read(images_name)?;
    let label_bytes = read(labels_name)?;
    let images_file = dir.join(images_name).display().to_string();
    let labels_file = dir.join(labels_name).display().to_string();
    let images = idx::parse_images(&image_bytes, &images_file)?;
    let labels = idx::parse_labels(&label_bytes, &labels_file)?;
    idx::check_counts(&images, &images_file, &labels, &labels_file)?;
    let digest = Sha256::new()
        .chain_update(&image_bytes)
        .chain_update(&label_bytes)
        .finalize();
    let sha256 = hex(&digest);
    Ok(Split {
        images,
        labels,
        sha256,
    })
}
