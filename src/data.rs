//! The MNIST data set as this tool lays it out: the four files, their
//! canonical checksums, which half each belongs to, and the data folder the
//! commands read them from (decompressed, as `download` stores them).

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::files::{read_at_most, sha256_hex, sha256_hex_running};
use crate::idx::{self, IdxError, Images};

/// One of the files that make up the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name once decompressed, e.g. `train-images-idx3-ubyte`; mirrors
    /// serve it with `.gz` appended.
    pub name: String,
    /// Lower-case hex SHA-256 of the decompressed bytes. Mirrors differ in
    /// their gzip bytes, never in these.
    pub sha256: String,
}

impl FileSpec {
    pub fn new(name: &str, sha256: &str) -> Self {
        Self {
            name: name.into(),
            sha256: sha256.into(),
        }
    }

    /// The name mirrors serve the file under.
    pub fn gz_name(&self) -> String {
        format!("{}.gz", self.name)
    }
}

/// Canonical names of the four files.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The four real MNIST files with their canonical checksums, in the order
/// the tutorial loads them.
pub fn mnist_files() -> Vec<FileSpec> {
    vec![
        FileSpec::new(
            TRAIN_IMAGES,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        FileSpec::new(
            TRAIN_LABELS,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        FileSpec::new(
            TEST_IMAGES,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        FileSpec::new(
            TEST_LABELS,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ]
}

/// Why the data folder could not be read.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{} is missing", path.display())]
    Missing { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Idx(#[from] IdxError),
    #[error("{} is not MNIST's file of that name (its SHA-256 differs)", path.display())]
    NotMnist { path: PathBuf },
    #[error("{} is larger than any MNIST file (over {} MB)", path.display(), MAX_FILE >> 20)]
    TooLarge { path: PathBuf },
}

/// The largest file read as part of the data set: the training images are
/// 47 MB. Checked before reading, so a wrong file never fills the memory.
pub const MAX_FILE: u64 = 64 << 20;

/// Which half of MNIST: the training split or the test split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// File names of the images and labels of this split.
    pub fn files(self) -> [&'static str; 2] {
        match self {
            Split::Train => [TRAIN_IMAGES, TRAIN_LABELS],
            Split::Test => [TEST_IMAGES, TEST_LABELS],
        }
    }

    /// How many images the real split holds.
    pub fn size(self) -> usize {
        match self {
            Split::Train => 60_000,
            Split::Test => 10_000,
        }
    }
}

/// Labelled examples: images with their labels (a split's, or part of one).
#[derive(Debug, Clone)]
pub struct Examples {
    pub images: Images,
    pub labels: Vec<u8>,
}

impl Examples {
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
    [Split::Train, Split::Test]
        .iter()
        .flat_map(|p| p.files())
        .all(|f| dir.join(f).is_file())
}

/// Reads and parses one split of the data set from `dir`, checked to be
/// MNIST's own files (by SHA-256, as `download` checks them): a changed
/// file would give other results without a word.
pub fn load(dir: &Path, split: Split) -> Result<Examples, DataError> {
    read(dir, split).map(|(examples, _)| examples)
}

/// [`load`], plus the SHA-256 over the images file then the labels file as
/// read: what a trained model records of the data it was trained on.
pub fn load_with_digest(dir: &Path, split: Split) -> Result<(Examples, String), DataError> {
    read(dir, split)
}

fn read(dir: &Path, split: Split) -> Result<(Examples, String), DataError> {
    let [images_name, labels_name] = split.files();
    let read = |name: &str| {
        let path = dir.join(name);
        let io = |source: std::io::Error| {
            if source.kind() == std::io::ErrorKind::NotFound {
                DataError::Missing { path: path.clone() }
            } else {
                DataError::Io {
                    path: path.clone(),
                    source,
                }
            }
        };
        match read_at_most(&path, MAX_FILE).map_err(io)? {
            Some(bytes) => Ok(bytes),
            None => Err(DataError::TooLarge { path }),
        }
    };
    let image_bytes = read(images_name)?;
    let label_bytes = read(labels_name)?;
    let images_file = dir.join(images_name).display().to_string();
    let labels_file = dir.join(labels_name).display().to_string();
    // Parsed first, so that a damaged file is named for what is wrong with it.
    idx::image_count(&image_bytes, &images_file)?;
    let labels = idx::parse_labels(&label_bytes, &labels_file)?;
    // The images (47 MB for training) are hashed once: for their own sum
    // and, continued over the labels, for the digest a model records.
    let [images_sha, digest] =
        <[String; 2]>::try_from(sha256_hex_running([&image_bytes[..], &label_bytes[..]]))
            .expect("two sums");
    let labels_sha = sha256_hex([&label_bytes[..]]);
    for spec in mnist_files() {
        let sha = match spec.name.as_str() {
            name if name == images_name => &images_sha,
            name if name == labels_name => &labels_sha,
            _ => continue,
        };
        if *sha != spec.sha256 {
            return Err(DataError::NotMnist {
                path: dir.join(&spec.name),
            });
        }
    }
    let images = idx::parse_images(image_bytes, &images_file)?;
    idx::check_counts(&images, &images_file, &labels, &labels_file)?;
    Ok((Examples { images, labels }, digest))
}
