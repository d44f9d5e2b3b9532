//! Parsing of the IDX format that MNIST ships in.
//!
//! The format is a 4-byte magic (two zero bytes, a type code, the number of
//! dimensions) followed by one big-endian `u32` per dimension and then the raw
//! data. MNIST only uses unsigned bytes, so that is all this module accepts:
//! pixels stay `u8` in memory (47 MB for the training set rather than 188 MB
//! of `f32`) and are scaled to `[0, 1]` one batch at a time.

use thiserror::Error;

/// Magic number of a 1-D unsigned-byte IDX file (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Magic number of a 3-D unsigned-byte IDX file (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Side of an MNIST image in pixels.
pub const SIDE: usize = 28;
/// Pixels per MNIST image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes (digits 0-9).
pub const CLASSES: usize = 10;

/// Why an IDX file was rejected. Every variant names the file so that the
/// message alone tells the user what to fix.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdxError {
    #[error("{file}: file is too short to hold an IDX header ({len} bytes)")]
    TooShort { file: String, len: usize },
    #[error("{file}: wrong magic number {found:#010x} (expected {expected:#010x})")]
    BadMagic {
        file: String,
        found: u32,
        expected: u32,
    },
    #[error("{file}: header announces {expected} data bytes but the file holds {found}")]
    SizeMismatch {
        file: String,
        expected: u64,
        found: u64,
    },
    #[error("{file}: images are {rows}x{cols}, expected 28x28")]
    NotMnistSize { file: String, rows: u32, cols: u32 },
    #[error("{file}: label {value} at index {index} is not a digit 0-9")]
    BadLabel {
        file: String,
        index: usize,
        value: u8,
    },
    #[error("{images} has {image_count} images but {labels} has {label_count} labels")]
    CountMismatch {
        images: String,
        image_count: usize,
        labels: String,
        label_count: usize,
    },
}

/// A set of 28x28 greyscale images, pixel bytes in row-major order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    pixels: Vec<u8>,
}

impl Images {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / PIXELS
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// The 784 pixel bytes of image `index`.
    pub fn image(&self, index: usize) -> &[u8] {
        &self.pixels[index * PIXELS..(index + 1) * PIXELS]
    }

    /// Appends the pixels of the images at `indices` to `out`, scaled to
    /// [0, 1] as the network takes them (the tutorial's `x / 255`).
    pub fn scaled_into(&self, indices: &[usize], out: &mut Vec<f32>) {
        // One image at a time, so that each extend knows its length and is
        // vectorised (through `flat_map` it went a value at a time).
        out.reserve(indices.len() * PIXELS);
        for &i in indices {
            out.extend(self.image(i).iter().map(|&p| p as f32 / 255.0));
        }
    }

    /// Keeps only the first `n` images.
    pub fn truncate(&mut self, n: usize) {
        self.pixels.truncate(n * PIXELS);
    }
}

/// Parses an images file (`magic 0x00000803`, dimensions `n x 28 x 28`).
pub fn parse_images(mut bytes: Vec<u8>, file: &str) -> Result<Images, IdxError> {
    image_count(&bytes, file)?;
    // In place: a second 47 MB copy of the training set would be a third
    // of the process's peak memory.
    bytes.drain(..header_len(3));
    Ok(Images { pixels: bytes })
}

/// Checks an images file's header against its size; returns how many
/// images it holds.
pub(crate) fn image_count(bytes: &[u8], file: &str) -> Result<usize, IdxError> {
    let dims = parse_header(bytes, file, IMAGES_MAGIC, 3)?;
    let (rows, cols) = (dims[1], dims[2]);
    if rows as usize != SIDE || cols as usize != SIDE {
        return Err(IdxError::NotMnistSize {
            file: file.into(),
            rows,
            cols,
        });
    }
    Ok(dims[0] as usize)
}

/// Parses a labels file (`magic 0x00000801`), rejecting any value above 9.
pub fn parse_labels(bytes: &[u8], file: &str) -> Result<Vec<u8>, IdxError> {
    parse_header(bytes, file, LABELS_MAGIC, 1)?;
    let labels = &bytes[header_len(1)..];
    if let Some((index, &value)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &v)| v as usize >= CLASSES)
    {
        return Err(IdxError::BadLabel {
            file: file.into(),
            index,
            value,
        });
    }
    Ok(labels.to_vec())
}

/// Checks that images and labels pair up one to one.
pub fn check_counts(
    images: &Images,
    images_file: &str,
    labels: &[u8],
    labels_file: &str,
) -> Result<(), IdxError> {
    if images.len() != labels.len() {
        return Err(IdxError::CountMismatch {
            images: images_file.into(),
            image_count: images.len(),
            labels: labels_file.into(),
            label_count: labels.len(),
        });
    }
    Ok(())
}

/// Parses any unsigned-byte IDX file and returns its shape, e.g. `[60000, 28, 28]`.
///
/// Used to verify a downloaded file without knowing in advance which kind it is.
pub fn shape(bytes: &[u8], file: &str) -> Result<Vec<usize>, IdxError> {
    let magic = read_magic(bytes, file)?;
    match magic {
        IMAGES_MAGIC => Ok(vec![image_count(bytes, file)?, SIDE, SIDE]),
        LABELS_MAGIC => Ok(vec![parse_labels(bytes, file)?.len()]),
        found => Err(IdxError::BadMagic {
            file: file.into(),
            found,
            expected: IMAGES_MAGIC,
        }),
    }
}

fn header_len(ndims: usize) -> usize {
    4 + 4 * ndims
}

fn read_magic(bytes: &[u8], file: &str) -> Result<u32, IdxError> {
    match bytes.first_chunk::<4>() {
        Some(magic) => Ok(u32::from_be_bytes(*magic)),
        None => Err(IdxError::TooShort {
            file: file.into(),
            len: bytes.len(),
        }),
    }
}

/// Validates magic and dimensions against the byte count and returns the dimensions.
fn parse_header(bytes: &[u8], file: &str, magic: u32, ndims: usize) -> Result<Vec<u32>, IdxError> {
    let found = read_magic(bytes, file)?;
    if found != magic {
        return Err(IdxError::BadMagic {
            file: file.into(),
            found,
            expected: magic,
        });
    }
    if bytes.len() < header_len(ndims) {
        return Err(IdxError::TooShort {
            file: file.into(),
            len: bytes.len(),
        });
    }
    let dims: Vec<u32> = bytes[4..header_len(ndims)]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let expected: u64 = dims.iter().map(|&d| u64::from(d)).product();
    let found = (bytes.len() - header_len(ndims)) as u64;
    if expected != found {
        return Err(IdxError::SizeMismatch {
            file: file.into(),
            expected,
            found,
        });
    }
    Ok(dims)
}

/// Encodes images and labels as IDX bytes: for test fixtures and tools that
/// need small, valid MNIST-shaped files.
pub fn encode_images(pixels: &[u8]) -> Vec<u8> {
    encode(IMAGES_MAGIC, &[pixels.len() / PIXELS, SIDE, SIDE], pixels)
}

/// Encodes labels as IDX bytes (see [`encode_images`]).
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    encode(LABELS_MAGIC, &[labels.len()], labels)
}

fn encode(magic: u32, dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: usize) -> Vec<u8> {
        encode_images(&vec![7u8; n * PIXELS])
    }

    #[test]
    fn parses_valid_images_and_labels() {
        let imgs = parse_images(images(3), "img").unwrap();
        assert_eq!(imgs.len(), 3);
        assert_eq!(imgs.image(2), &[7u8; PIXELS][..]);
        let labels = parse_labels(&encode_labels(&[0, 9, 4]), "lbl").unwrap();
        assert_eq!(labels, vec![0, 9, 4]);
        assert!(check_counts(&imgs, "img", &labels, "lbl").is_ok());
        assert_eq!(shape(&images(3), "img").unwrap(), vec![3, 28, 28]);
        assert_eq!(shape(&encode_labels(&[1, 2]), "lbl").unwrap(), vec![2]);
    }

    #[test]
    fn rejects_wrong_magic_naming_the_file() {
        let mut bytes = images(1);
        bytes[3] = 0x01;
        let err = parse_images(bytes.clone(), "x.idx").unwrap_err();
        assert!(matches!(err, IdxError::BadMagic { found: 0x801, .. }));
        assert!(err.to_string().starts_with("x.idx: wrong magic"));
        assert!(parse_labels(&images(1), "y").is_err());
        assert!(matches!(
            shape(&[0, 0, 9, 1, 0, 0, 0, 0], "z"),
            Err(IdxError::BadMagic { .. })
        ));
    }

    #[test]
    fn rejects_truncated_and_trailing_bytes() {
        let bytes = images(2);
        let truncated = &bytes[..bytes.len() - 1];
        assert!(matches!(
            parse_images(truncated.to_vec(), "t"),
            Err(IdxError::SizeMismatch { .. })
        ));
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            parse_images(trailing.clone(), "t"),
            Err(IdxError::SizeMismatch { .. })
        ));
        let mut labels = encode_labels(&[1, 2, 3]);
        labels.pop();
        assert!(matches!(
            parse_labels(&labels, "l"),
            Err(IdxError::SizeMismatch { .. })
        ));
        // Header cut short, and no header at all.
        assert!(matches!(
            parse_images(bytes[..10].to_vec(), "h"),
            Err(IdxError::TooShort { .. })
        ));
        assert!(matches!(
            parse_labels(&[], "e"),
            Err(IdxError::TooShort { .. })
        ));
    }

    #[test]
    fn rejects_images_that_are_not_28x28() {
        let bytes = encode(IMAGES_MAGIC, &[1, 32, 32], &[0; 32 * 32]);
        let err = parse_images(bytes.clone(), "big").unwrap_err();
        assert_eq!(err.to_string(), "big: images are 32x32, expected 28x28");
    }

    #[test]
    fn rejects_labels_above_nine() {
        let err = parse_labels(&encode_labels(&[3, 10, 1]), "lbl").unwrap_err();
        assert_eq!(
            err,
            IdxError::BadLabel {
                file: "lbl".into(),
                index: 1,
                value: 10
            }
        );
    }

    #[test]
    fn rejects_differing_counts() {
        let imgs = parse_images(images(3), "img").unwrap();
        let err = check_counts(&imgs, "img", &[1, 2], "lbl").unwrap_err();
        assert_eq!(err.to_string(), "img has 3 images but lbl has 2 labels");
    }
}
