//! Any picture of a digit (a phone photo, a drawing, a scan) made into what
//! the network was trained on, the way MNIST's digits were made: light ink
//! on black, the digit's bounding box scaled to fit 20×20 keeping its
//! proportions, placed in 28×28 so that its centre of mass is the centre.
//!
//! A model sees only such images; fed a dark digit on white paper, or a big
//! digit in a corner, it answers nonsense. The steps:
//!
//! 1. `decode`: PNG, JPEG, BMP or PNM of any size and colour to grey
//!    (transparent parts count as white paper; a photo's EXIF rotation is
//!    applied).
//! 2. `ink`: which side is ink is decided from the border, which is
//!    background in any picture of one digit: a light border means dark ink
//!    on light paper, which is inverted. The background's own level (grey
//!    paper, a shadow) is taken off and the contrast stretched, so that the
//!    ink ends at 1 and the paper at 0.
//! 3. `bounding_box` of the ink, cropped (and made black and white when
//!    it has pixels to spare, as NIST's digits were); `resize` by area
//!    averaging (the grey edges MNIST's anti-aliasing gave) to `fit` 20×20.
//! 4. `thicken`: a pen line on a big photo would shrink to a hair at
//!    20×20, thinner than any MNIST stroke; such strokes are widened first,
//!    at full size, to MNIST's usual width.
//! 5. `place`: into 28×28 by the centre of mass, where MNIST has it;
//!    values in [0, 1].
//!
//! All but `decode` and `prepare_file` are pure functions on `Grey`
//! images.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, metadata::Orientation};
use thiserror::Error;

use crate::idx::{PIXELS, SIDE};

/// Side of the box MNIST scaled each digit to fit.
pub(crate) const BOX: usize = 20;

/// Least difference between paper and ink (on a 0-1 scale) for a picture
/// to count as holding a digit at all.
pub(crate) const MIN_CONTRAST: f32 = 0.2;

/// Ink level (after stretching) from which a pixel counts as part of the
/// digit; fainter pixels are paper texture, shadow or blur.
pub(crate) const INK_THRESHOLD: f32 = 0.5;

/// Stroke width (in pixels of the 20×20 box) below which strokes are
/// widened: MNIST's are about 1.9 pixels wide there (the median over the
/// test set, as [`stroke_width`] measures them), fewer than 1% under 1.
pub(crate) const THIN_STROKE: f32 = 0.9;

/// Stroke width (in pixels of the 20×20 box) that thin strokes are widened
/// to: about MNIST's median.
pub(crate) const WIDENED_STROKE: f32 = 2.0;

/// Why a picture could not be made into a digit for the model.
#[derive(Debug, Error)]
pub enum PrepareError {
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    #[error("not an image this tool reads (PNG, JPEG, BMP, or PGM/PPM/PBM)")]
    UnknownFormat,
    #[error(
        "a {0} picture, which this tool does not read: it reads PNG, JPEG, BMP and \
         PGM/PPM/PBM (save it as PNG first)"
    )]
    Unsupported(String),
    #[error("cannot decode it: {0}")]
    Decode(String),
    #[error("no digit found: the image is blank")]
    Blank,
    #[error("the image has no pixels ({width}×{height})")]
    Empty { width: usize, height: usize },
    #[error(
        "the image is larger than this tool decodes ({width}×{height} pixels, more than {} \
         megapixels): crop or shrink it first",
        MAX_PIXELS / 1_000_000
    )]
    TooLarge { width: u64, height: u64 },
    #[error("the file is larger than the {} MB this tool reads", MAX_FILE >> 20)]
    FileTooLarge,
    #[error("the image is larger than this tool decodes ({0}): crop or shrink it first")]
    Limits(String),
}

/// The most pixels a picture may have: a 40-megapixel photo (a phone's
/// largest) and more than any drawing. Checked from the file's header, so
/// that a picture announcing more (a decompression bomb: a small file that
/// would decode to gigabytes) is refused before any decoding.
pub const MAX_PIXELS: u64 = 40_000_000;

/// The most a decoder may allocate for one picture, however its format
/// counts: a 40-megapixel RGBA picture at 16 bits a channel fits.
const MAX_DECODER_ALLOC: u64 = 512 << 20;

/// The largest picture file read: a 40-megapixel picture stored
/// uncompressed (BMP, PNM) at 16 bits a channel is 240 MB.
pub const MAX_FILE: u64 = 256 << 20;

/// A greyscale picture: `width × height` values, row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Grey {
    pub fn new(width: usize, height: usize, pixels: Vec<f32>) -> Self {
        assert_eq!(pixels.len(), width * height, "{width}×{height}");
        Self {
            width,
            height,
            pixels,
        }
    }

    fn at(&self, x: usize, y: usize) -> f32 {
        self.pixels[y * self.width + x]
    }

    /// The values around the edge (each pixel once).
    fn border(&self) -> Vec<f32> {
        let (w, h) = (self.width, self.height);
        (0..w * h)
            .filter(|i| {
                let (x, y) = (i % w, i / w);
                x == 0 || y == 0 || x == w - 1 || y == h - 1
            })
            .map(|i| self.pixels[i])
            .collect()
    }
}

/// Decodes an image file's bytes to lightness in [0, 1] (1 white): any
/// colour or bit depth, transparency composited over white paper, the EXIF
/// orientation a phone camera records applied.
pub(crate) fn decode(bytes: &[u8]) -> Result<Grey, PrepareError> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(PrepareError::Read)?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    let Some(format) = reader.format() else {
        return Err(PrepareError::UnknownFormat);
    };
    let failed = |e: image::ImageError| match e {
        // Formats recognised but not built in (GIF, WebP, TIFF...: README,
        // predict), named as people name them.
        image::ImageError::Unsupported(_) => PrepareError::Unsupported(
            format
                .extensions_str()
                .first()
                .map_or(format!("{format:?}"), |e| e.to_uppercase()),
        ),
        image::ImageError::Limits(e) => PrepareError::Limits(e.to_string()),
        e => PrepareError::Decode(e.to_string()),
    };
    let mut decoder = reader.into_decoder().map_err(failed)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(PrepareError::TooLarge {
            width: width.into(),
            height: height.into(),
        });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(failed)?;
    image.apply_orientation(orientation);
    let grey = image.to_luma_alpha8();
    let (width, height) = (grey.width() as usize, grey.height() as usize);
    if width == 0 || height == 0 {
        return Err(PrepareError::Empty { width, height });
    }
    let pixels = grey
        .pixels()
        .map(|p| {
            let [l, a] = p.0;
            let (l, a) = (l as f32 / 255.0, a as f32 / 255.0);
            l * a + (1.0 - a)
        })
        .collect();
    Ok(Grey::new(width, height, pixels))
}

/// The median of `values` (not empty).
fn median(mut values: Vec<f32>) -> f32 {
    values.sort_by(f32::total_cmp);
    values[values.len() / 2]
}

/// Ink in [0, 1] (1: the most inked pixel, 0: the paper), and whether the
/// picture was dark on light (and so inverted). `Blank` when nothing stands
/// out from the paper by [`MIN_CONTRAST`].
pub(crate) fn ink(image: &Grey) -> Result<(Grey, bool), PrepareError> {
    let border = image.border();
    let mean = border.iter().sum::<f32>() / border.len() as f32;
    let inverted = mean > 0.5;
    let flip = |v: f32| if inverted { 1.0 - v } else { v };
    let paper = flip(median(border));
    let peak = image.pixels.iter().map(|&v| flip(v)).fold(0.0, f32::max);
    if peak - paper < MIN_CONTRAST {
        return Err(PrepareError::Blank);
    }
    let pixels = image
        .pixels
        .iter()
        .map(|&v| ((flip(v) - paper) / (peak - paper)).clamp(0.0, 1.0))
        .collect();
    Ok((Grey::new(image.width, image.height, pixels), inverted))
}

/// The smallest box `(x, y, width, height)` holding every pixel of at least
/// `threshold`; `None` if there is none.
pub(crate) fn bounding_box(image: &Grey, threshold: f32) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..image.height {
        for x in 0..image.width {
            if image.at(x, y) >= threshold {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// The part of `image` inside the box `(x, y, width, height)`.
pub(crate) fn crop(image: &Grey, (x, y, width, height): (usize, usize, usize, usize)) -> Grey {
    let pixels = (y..y + height)
        .flat_map(|row| {
            image.pixels[row * image.width + x..][..width]
                .iter()
                .copied()
        })
        .collect();
    Grey::new(width, height, pixels)
}

/// For each of `to` output cells along an axis of `from` input cells, the
/// input cells it covers and by how much (weights summing to 1).
fn coverage(from: usize, to: usize) -> Vec<Vec<(usize, f32)>> {
    let step = from as f64 / to as f64;
    (0..to)
        .map(|o| {
            let (start, end) = (o as f64 * step, (o + 1) as f64 * step);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(from);
            (first..last)
                .map(|i| {
                    let overlap = end.min(i as f64 + 1.0) - start.max(i as f64);
                    (i, (overlap / step) as f32)
                })
                .filter(|&(_, w)| w > 0.0)
                .collect()
        })
        .collect()
}

/// `image` resampled to `width × height`, each output pixel the average of
/// the input area it covers (anti-aliased when shrinking).
pub(crate) fn resize(image: &Grey, width: usize, height: usize) -> Grey {
    let (cols, rows) = (coverage(image.width, width), coverage(image.height, height));
    let mut wide = vec![0.0f32; width * image.height];
    for y in 0..image.height {
        for (x, cover) in cols.iter().enumerate() {
            wide[y * width + x] = cover.iter().map(|&(i, w)| image.at(i, y) * w).sum();
        }
    }
    let mut out = vec![0.0f32; width * height];
    for (y, cover) in rows.iter().enumerate() {
        for x in 0..width {
            out[y * width + x] = cover.iter().map(|&(i, w)| wide[i * width + x] * w).sum();
        }
    }
    Grey::new(width, height, out)
}

/// The size that fits `width × height` into `side × side` keeping its
/// proportions (the longer side becomes `side`).
pub(crate) fn fit(width: usize, height: usize, side: usize) -> (usize, usize) {
    let long = width.max(height) as f64;
    let scaled = |n: usize| ((n as f64 * side as f64 / long).round() as usize).clamp(1, side);
    (scaled(width), scaled(height))
}

/// The mean width of the strokes (pixels of at least 0.5): twice their area
/// over their outline's length, which for a line of width w is about w.
pub(crate) fn stroke_width(image: &Grey) -> f32 {
    let inked = |x: isize, y: isize| {
        x >= 0
            && y >= 0
            && (x as usize) < image.width
            && (y as usize) < image.height
            && image.at(x as usize, y as usize) >= 0.5
    };
    let (mut area, mut outline) = (0usize, 0usize);
    for y in 0..image.height as isize {
        for x in 0..image.width as isize {
            if inked(x, y) {
                area += 1;
                outline += [(1, 0), (-1, 0), (0, 1), (0, -1)]
                    .iter()
                    .filter(|(dx, dy)| !inked(x + dx, y + dy))
                    .count();
            }
        }
    }
    if outline == 0 {
        return 0.0;
    }
    2.0 * area as f32 / outline as f32
}

/// `image` with its strokes widened by `r` pixels on each side (and so `r`
/// pixels bigger on each side itself): each pixel takes the largest value
/// within `r` of it, along the rows and then the columns.
pub(crate) fn thicken(image: &Grey, r: usize) -> Grey {
    let (w, h) = (image.width + 2 * r, image.height + 2 * r);
    // The image placed in the middle of the bigger canvas.
    let mut canvas = vec![0.0f32; w * h];
    for y in 0..image.height {
        let row = &image.pixels[y * image.width..][..image.width];
        canvas[(y + r) * w + r..][..image.width].copy_from_slice(row);
    }
    let widest = |values: &[f32], i: usize| -> f32 {
        let (lo, hi) = (i.saturating_sub(r), (i + r + 1).min(values.len()));
        values[lo..hi].iter().copied().fold(0.0, f32::max)
    };
    let mut wide = vec![0.0f32; w * h];
    for y in 0..h {
        let row = &canvas[y * w..][..w];
        for x in 0..w {
            wide[y * w + x] = widest(row, x);
        }
    }
    let mut column = vec![0.0f32; h];
    for x in 0..w {
        for (y, v) in column.iter_mut().enumerate() {
            *v = wide[y * w + x];
        }
        for y in 0..h {
            canvas[y * w + x] = widest(&column, y);
        }
    }
    Grey::new(w, h, canvas)
}

/// How many pixels to add on each side of strokes `stroke` wide in a digit
/// `long` pixels at its longest, so that they end [`WIDENED_STROKE`] wide
/// once it is shrunk to fit the box (the widening lengthens it too).
pub(crate) fn widening(stroke: f32, long: usize) -> usize {
    let box_fraction = WIDENED_STROKE / BOX as f32;
    let r = (box_fraction * long as f32 - stroke) / (2.0 * (1.0 - box_fraction));
    r.round().max(1.0) as usize
}

/// The centre of mass `(x, y)`, pixel `i` covering `[i, i + 1)`.
pub(crate) fn centre_of_mass(image: &Grey) -> (f64, f64) {
    let (mut mass, mut sx, mut sy) = (0.0f64, 0.0f64, 0.0f64);
    for y in 0..image.height {
        for x in 0..image.width {
            let m = image.at(x, y) as f64;
            mass += m;
            sx += m * (x as f64 + 0.5);
            sy += m * (y as f64 + 0.5);
        }
    }
    if mass == 0.0 {
        return (image.width as f64 / 2.0, image.height as f64 / 2.0);
    }
    (sx / mass, sy / mass)
}

/// Where MNIST's digits have their centre of mass: in pixel (14, 14)
/// counted from 0, so at 14.5 in the coordinates of [`centre_of_mass`]
/// (the mean over the 60,000 training images is (14.507, 14.496)).
pub(crate) const CENTRE: f64 = SIDE as f64 / 2.0 + 0.5;

/// `image` put in a 28×28 field, shifted by whole pixels so that its centre
/// of mass is nearest [`CENTRE`] (what is pushed past the edge is lost,
/// which for a digit of at most 20×20 is at most a stray speck).
pub(crate) fn place(image: &Grey) -> Grey {
    let (cx, cy) = centre_of_mass(image);
    let centre = CENTRE;
    let (ox, oy) = (
        (centre - cx).round() as isize,
        (centre - cy).round() as isize,
    );
    let mut out = vec![0.0f32; PIXELS];
    for y in 0..image.height {
        for x in 0..image.width {
            let (tx, ty) = (x as isize + ox, y as isize + oy);
            if (0..SIDE as isize).contains(&tx) && (0..SIDE as isize).contains(&ty) {
                out[ty as usize * SIDE + tx as usize] = image.at(x, y);
            }
        }
    }
    Grey::new(SIDE, SIDE, out)
}

/// A picture made into the network's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// 28×28 values in [0, 1], light digit on black, as MNIST's scaled.
    pub pixels: Vec<f32>,
    /// Whether the picture was dark on light and so was inverted.
    pub inverted: bool,
    /// Whether its strokes were too thin and were widened.
    pub thickened: bool,
}

impl Prepared {
    /// The pixels as bytes 0-255, as MNIST stores them (for drawing).
    pub fn bytes(&self) -> Vec<u8> {
        self.pixels
            .iter()
            .map(|&v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
            .collect()
    }
}

/// Every step from a decoded picture to the network's input.
pub fn prepare(image: &Grey) -> Result<Prepared, PrepareError> {
    let (ink, inverted) = ink(image)?;
    let bounds = bounding_box(&ink, INK_THRESHOLD).ok_or(PrepareError::Blank)?;
    let mut digit = crop(&ink, bounds);
    if digit.width.max(digit.height) >= 2 * BOX {
        // NIST's digits were black and white; MNIST's greys are only the
        // anti-aliasing of shrinking them. A picture with pixels to spare
        // is made black and white too, which also drops paper texture and
        // the blur of a photo or of an enlarged image.
        for v in &mut digit.pixels {
            *v = if *v >= INK_THRESHOLD { 1.0 } else { 0.0 };
        }
    }
    // Measured before shrinking, where even a hair is some pixels wide.
    let long = digit.width.max(digit.height);
    let stroke = stroke_width(&digit);
    let thickened = stroke * BOX as f32 / (long as f32) < THIN_STROKE;
    if thickened {
        digit = thicken(&digit, widening(stroke, long));
    }
    let (width, height) = fit(digit.width, digit.height, BOX);
    let mut small = resize(&digit, width, height);
    let peak = small.pixels.iter().copied().fold(0.0, f32::max);
    if peak <= 0.0 {
        return Err(PrepareError::Blank);
    }
    // Shrinking a small picture can leave its strokes short of full ink:
    // bring their core back to 1, as MNIST's strokes have.
    small
        .pixels
        .iter_mut()
        .for_each(|v| *v = (*v / peak).min(1.0));
    Ok(Prepared {
        pixels: place(&small).pixels,
        inverted,
        thickened,
    })
}

/// Reads and prepares the image file at `path`.
pub fn prepare_file(path: &std::path::Path) -> Result<Prepared, PrepareError> {
    let bytes = crate::files::read_at_most(path, MAX_FILE)?.ok_or(PrepareError::FileTooLarge)?;
    prepare_bytes(&bytes)
}

/// Decodes and prepares a picture already in memory (a drawing sent to
/// `serve`): the same steps as [`prepare_file`]'s.
pub fn prepare_bytes(bytes: &[u8]) -> Result<Prepared, PrepareError> {
    prepare(&decode(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` picture of `paper` with the rectangle (x, y, rw, rh) of `ink`.
    fn picture(w: usize, h: usize, paper: f32, ink: f32, rect: [usize; 4]) -> Grey {
        let [rx, ry, rw, rh] = rect;
        let pixels = (0..w * h)
            .map(|i| {
                let (x, y) = (i % w, i / w);
                if (rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y) {
                    ink
                } else {
                    paper
                }
            })
            .collect();
        Grey::new(w, h, pixels)
    }

    #[test]
    fn dark_ink_on_light_paper_is_inverted_and_the_paper_level_taken_off() {
        // Grey paper (0.8) with darker ink (0.3): ink 1, paper 0 after.
        let image = picture(10, 10, 0.8, 0.3, [3, 3, 2, 4]);
        let (out, inverted) = ink(&image).unwrap();
        assert!(inverted);
        assert_eq!(out.at(0, 0), 0.0);
        assert!((out.at(3, 3) - 1.0).abs() < 1e-6);
        // Light on dark is kept as it is (stretched the same way).
        let image = picture(10, 10, 0.1, 0.6, [3, 3, 2, 4]);
        let (out, inverted) = ink(&image).unwrap();
        assert!(!inverted);
        assert_eq!(out.at(9, 9), 0.0);
        assert!((out.at(4, 6) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_blank_or_nearly_blank_picture_is_refused() {
        for paper in [0.0, 0.5, 1.0] {
            let blank = picture(8, 8, paper, paper, [0, 0, 0, 0]);
            assert!(matches!(prepare(&blank), Err(PrepareError::Blank)));
        }
        let faint = picture(8, 8, 1.0, 0.9, [2, 2, 3, 3]);
        assert!(matches!(prepare(&faint), Err(PrepareError::Blank)));
    }

    #[test]
    fn the_bounding_box_holds_exactly_the_ink() {
        let image = picture(12, 9, 0.0, 1.0, [4, 2, 3, 5]);
        assert_eq!(bounding_box(&image, 0.5), Some((4, 2, 3, 5)));
        assert_eq!(crop(&image, (4, 2, 3, 5)).pixels, vec![1.0; 15]);
        assert_eq!(bounding_box(&picture(4, 4, 0.0, 0.0, [0; 4]), 0.5), None);
    }

    #[test]
    fn resizing_averages_the_area_each_pixel_covers() {
        // 4×2 → 2×1: each output pixel is the mean of a 2×2 block.
        let image = Grey::new(4, 2, vec![1.0, 0.0, 0.5, 0.5, 1.0, 0.0, 1.0, 1.0]);
        let small = resize(&image, 2, 1);
        assert_eq!(small.pixels, vec![0.5, 0.75]);
        // 3 → 2: the middle pixel is split between both.
        let row = Grey::new(3, 1, vec![0.0, 1.0, 0.0]);
        let pixels = resize(&row, 2, 1).pixels;
        assert!((pixels[0] - 1.0 / 3.0).abs() < 1e-6, "{pixels:?}");
        assert!((pixels[1] - 1.0 / 3.0).abs() < 1e-6, "{pixels:?}");
        // Growing repeats; the total ink per area is kept either way.
        let big = resize(&Grey::new(2, 1, vec![0.2, 0.8]), 4, 2);
        assert_eq!(big.pixels, vec![0.2, 0.2, 0.8, 0.8, 0.2, 0.2, 0.8, 0.8]);
    }

    #[test]
    fn the_longer_side_fits_20_and_the_proportions_are_kept() {
        assert_eq!(fit(100, 50, BOX), (20, 10));
        assert_eq!(fit(30, 300, BOX), (2, 20));
        assert_eq!(fit(5, 5, BOX), (20, 20));
        assert_eq!(fit(1, 1000, BOX), (1, 20));
        assert_eq!(fit(300, 150, 18), (18, 9));
    }

    #[test]
    fn the_centre_of_mass_lands_on_the_centre_of_the_field() {
        // A 3×3 square: its middle pixel goes to (14, 14).
        let placed = place(&Grey::new(3, 3, vec![1.0; 9]));
        assert_eq!(placed.width, SIDE);
        let inked: Vec<usize> = (0..PIXELS).filter(|&i| placed.pixels[i] > 0.0).collect();
        let square: Vec<usize> = (13..16)
            .flat_map(|y| (13..16).map(move |x| y * SIDE + x))
            .collect();
        assert_eq!(inked, square);
        assert_eq!(centre_of_mass(&placed), (CENTRE, CENTRE));
        // A Γ, heavy on the left: its mass, not its box, is centred.
        let mut gamma = Grey::new(12, 10, vec![0.0; 120]);
        for y in 0..10 {
            for x in 0..12 {
                if x < 4 || y == 0 {
                    gamma.pixels[y * 12 + x] = 1.0;
                }
            }
        }
        let placed = place(&gamma);
        let (cx, cy) = centre_of_mass(&placed);
        assert!(
            (cx - CENTRE).abs() <= 0.5 && (cy - CENTRE).abs() <= 0.5,
            "{cx} {cy}"
        );
        let (x, _, w, _) = bounding_box(&placed, 0.5).unwrap();
        assert_eq!((x, w), (12, 12), "the box sits right of centre");
        assert_eq!(placed.pixels.iter().sum::<f32>(), 48.0, "nothing lost");
    }

    #[test]
    fn thin_strokes_are_widened_and_mnist_like_ones_kept() {
        let hair = picture(20, 20, 0.0, 1.0, [9, 2, 1, 16]);
        assert!((stroke_width(&hair) - 1.0).abs() < 0.1);
        let wide = thicken(&hair, 2);
        assert_eq!((wide.width, wide.height), (24, 24));
        assert_eq!(bounding_box(&wide, 0.5), Some((9, 2, 5, 20)));
        assert_eq!(stroke_width(&wide), 4.0, "5 wide, less its ends");

        // A pen line on a big picture: 4 pixels of 300 would be a fifth of
        // a pixel at 20×20; it comes out about as wide as MNIST's strokes.
        assert_eq!(widening(4.0, 300), 14);
        let pen = picture(400, 400, 1.0, 0.0, [150, 50, 4, 300]);
        let prepared = prepare(&pen).unwrap();
        assert!(prepared.thickened);
        let out = Grey::new(SIDE, SIDE, prepared.pixels);
        let width = stroke_width(&out);
        assert!((1.5..3.0).contains(&width), "{width}");
        let (_, _, _, h) = bounding_box(&out, 0.5).unwrap();
        assert_eq!(h, BOX);
        // A marker line: 40 of 300 is 2.7 pixels at 20×20, like MNIST's.
        let marker = picture(400, 400, 1.0, 0.0, [150, 50, 40, 300]);
        let prepared = prepare(&marker).unwrap();
        assert!(!prepared.thickened);
        let out = Grey::new(SIDE, SIDE, prepared.pixels);
        let (_, _, w, _) = bounding_box(&out, 0.5).unwrap();
        assert_eq!(w, 3);
    }

    #[test]
    fn a_big_dark_digit_off_centre_comes_out_like_mnist() {
        // A bar 40 wide and 160 tall, dark on white, near a corner of 300×200.
        let image = picture(300, 200, 1.0, 0.0, [10, 20, 40, 160]);
        let prepared = prepare(&image).unwrap();
        assert!(prepared.inverted && !prepared.thickened);
        let out = Grey::new(SIDE, SIDE, prepared.pixels.clone());
        // 40×160 fits 20×20 as 5×20, centred.
        assert_eq!(bounding_box(&out, 0.5), Some((12, 5, 5, 20)));
        let (cx, cy) = centre_of_mass(&out);
        assert!((cx - CENTRE).abs() <= 0.5 && (cy - CENTRE).abs() <= 0.5);
        assert!(prepared.pixels.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_eq!(prepared.bytes()[14 * 28 + 14], 255);
    }

    #[test]
    fn files_of_each_format_decode_to_the_same_picture() {
        use image::{GrayImage, ImageFormat, Luma, Rgba, RgbaImage};
        let mut grey = GrayImage::from_pixel(6, 4, Luma([255]));
        grey.put_pixel(2, 1, Luma([0]));
        let expected = decode_from(&DynamicImage::ImageLuma8(grey.clone()), ImageFormat::Png);
        assert_eq!(expected.width, 6);
        assert_eq!(expected.at(2, 1), 0.0);
        assert_eq!(expected.at(0, 0), 1.0);
        for format in [ImageFormat::Bmp, ImageFormat::Pnm] {
            let rgb = DynamicImage::ImageLuma8(grey.clone()).to_rgb8();
            assert_eq!(
                decode_from(&DynamicImage::ImageRgb8(rgb), format),
                expected,
                "{format:?}"
            );
        }
        let jpeg = decode_from(&DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg);
        assert!(
            jpeg.at(2, 1) < 0.5 && jpeg.at(5, 3) > 0.9,
            "lossy but close"
        );
        // Transparent is white paper, whatever colour its pixels hold.
        let mut rgba = RgbaImage::from_pixel(6, 4, Rgba([0, 0, 0, 0]));
        rgba.put_pixel(2, 1, Rgba([0, 0, 0, 255]));
        assert_eq!(
            decode_from(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png),
            expected
        );
    }

    fn decode_from(image: &DynamicImage, format: image::ImageFormat) -> Grey {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        decode(bytes.get_ref()).unwrap()
    }

    #[test]
    fn what_is_not_an_image_is_named_so() {
        // A PGM of 0×0 pixels decodes; it is refused rather than measured.
        let err = decode(b"P5\n0 0\n255\n").unwrap_err();
        assert!(matches!(err, PrepareError::Empty { .. }), "{err}");
        let err = decode(b"just some text, no image").unwrap_err();
        assert!(matches!(err, PrepareError::UnknownFormat), "{err}");
        // A PNG signature followed by garbage: recognised, not decodable.
        let err = decode(b"\x89PNG\r\n\x1a\n garbage").unwrap_err();
        assert!(matches!(err, PrepareError::Decode(_)), "{err}");
        // GIF, WebP and TIFF are recognised but not built in.
        for (bytes, name) in [
            (&b"GIF89a\x01\x00\x01\x00"[..], "GIF"),
            (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
            (b"II*\x00\x08\x00\x00\x00", "TIFF"),
        ] {
            let err = decode(bytes).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "a {name} picture, which this tool does not read: it reads PNG, JPEG, BMP \
                     and PGM/PPM/PBM (save it as PNG first)"
                )
            );
        }
    }
}
