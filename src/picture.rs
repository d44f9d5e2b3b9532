//! Digits as pictures for people: drawn in the terminal with shade
//! characters, and as PNG files: one digit (enlarged when asked, since 28
//! pixels are too small to look at), or a sheet of several side by side with
//! a few words under each, as the tutorial's row of images with its table.
//!
//! Text on a sheet is drawn from the public-domain 8×8 bitmap font of the
//! `font8x8` crate, scaled up: no font file and no system fonts, so a sheet
//! looks the same on every machine.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::files::{FileError, write_atomically};
use crate::idx::SIDE;

/// Draws a 28×28 image with shaded block characters, two per pixel so
/// that it keeps its proportions in a terminal.
pub fn render(pixels: &[u8]) -> String {
    const SHADES: [char; 5] = [' ', '░', '▒', '▓', '█'];
    let mut out = String::with_capacity(SIDE * (SIDE * 2 * 3 + 1));
    for row in pixels.chunks_exact(SIDE) {
        for &p in row {
            let c = SHADES[(p as usize * SHADES.len()) / 256];
            out.push(c);
            out.push(c);
        }
        out.push('\n');
    }
    out
}

/// The tutorial's `print` of an image: its pixel values 0-255 as a table,
/// one row per line, each value right-aligned in a column of 3.
pub fn values_table(pixels: &[u8]) -> String {
    let mut out = String::with_capacity(SIDE * SIDE * 4);
    for row in pixels.chunks_exact(SIDE) {
        let cells: Vec<String> = row.iter().map(|p| format!("{p:>3}")).collect();
        out.push_str(&cells.join(" "));
        out.push('\n');
    }
    out
}

/// `pixels`, `width` wide, enlarged `scale` times by repeating each pixel
/// (nearest neighbour: the pixels stay sharp squares, as MNIST's are).
pub fn upscale(pixels: &[u8], width: usize, scale: usize) -> Vec<u8> {
    if scale == 1 {
        return pixels.to_vec();
    }
    let mut out = Vec::with_capacity(pixels.len() * scale * scale);
    for row in pixels.chunks_exact(width) {
        let wide: Vec<u8> = row
            .iter()
            .flat_map(|&p| std::iter::repeat_n(p, scale))
            .collect();
        for _ in 0..scale {
            out.extend_from_slice(&wide);
        }
    }
    out
}

/// Why a PNG could not be written.
#[derive(Debug, Error)]
pub enum PngError {
    #[error("cannot encode {} as PNG: {source}", path.display())]
    Encode {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error(transparent)]
    File(#[from] FileError),
}

/// Encodes 8-bit pixels (`channels` 1: grey, 3: RGB) as PNG and writes them
/// to `path` atomically.
pub(crate) fn write_encoded(
    path: &Path,
    width: usize,
    height: usize,
    channels: usize,
    pixels: &[u8],
) -> Result<(), PngError> {
    debug_assert_eq!(pixels.len(), width * height * channels);
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(match channels {
        1 => png::ColorType::Grayscale,
        _ => png::ColorType::Rgb,
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| {
            writer.write_image_data(pixels)?;
            writer.finish()
        })
        .map_err(|source| PngError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(write_atomically(path, &bytes)?)
}

/// Writes a 28×28 image as a greyscale PNG (atomically), as MNIST stores
/// it (light digit on black), enlarged `scale` times (1: 28×28 as it is).
pub fn write_png(path: &Path, pixels: &[u8], scale: usize) -> Result<(), PngError> {
    let side = SIDE * scale;
    write_encoded(path, side, side, 1, &upscale(pixels, SIDE, scale))
}

/// An RGB colour.
pub type Rgb = [u8; 3];

pub const BLACK: Rgb = [0, 0, 0];
pub const WHITE: Rgb = [255, 255, 255];
/// For what is wrong (a model's mistaken answer).
pub const RED: Rgb = [200, 20, 20];
/// For what is said in passing (an index).
pub const GREY: Rgb = [110, 110, 110];
/// The frame around each digit on a sheet.
const FRAME: Rgb = [200, 200, 200];

/// One digit on a sheet, with the lines of text written under it.
pub struct Card<'a> {
    /// The 28×28 image, as MNIST stores it.
    pub pixels: &'a [u8],
    pub lines: Vec<(String, Rgb)>,
}

/// How a sheet is laid out.
pub mod sheet_layout {
    /// Each digit is enlarged this many times (28 → 112 pixels).
    pub const DIGIT_SCALE: usize = 4;
    /// Each 8×8 glyph is enlarged this many times.
    pub const TEXT_SCALE: usize = 2;
    /// Space around each card, and between a digit and its text.
    pub const PAD: usize = 12;
    /// Height of one line of text.
    pub const LINE: usize = 8 * TEXT_SCALE + 4;
    /// Most cards in one row.
    pub const PER_ROW: usize = 10;
}

/// An RGB picture being drawn.
pub(crate) struct Canvas {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) pixels: Vec<u8>,
}

impl Canvas {
    pub(crate) fn new(width: usize, height: usize, colour: Rgb) -> Self {
        Self {
            width,
            height,
            pixels: colour.repeat(width * height),
        }
    }

    pub(crate) fn put(&mut self, x: usize, y: usize, colour: Rgb) {
        if x < self.width && y < self.height {
            let at = (y * self.width + x) * 3;
            self.pixels[at..at + 3].copy_from_slice(&colour);
        }
    }

    pub(crate) fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, colour: Rgb) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.put(xx, yy, colour);
            }
        }
    }

    /// Draws `text` with its top-left corner at (x, y); characters outside
    /// printable ASCII are drawn as `?`.
    pub(crate) fn text(&mut self, x: usize, y: usize, text: &str, scale: usize, colour: Rgb) {
        for (i, c) in text.chars().enumerate() {
            let code = if c.is_ascii() && !c.is_ascii_control() {
                c as usize
            } else {
                '?' as usize
            };
            let glyph = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    // Bit 0 is the leftmost pixel of the row.
                    if (bits >> col) & 1 == 1 {
                        let gx = x + (i * 8 + col) * scale;
                        self.fill(gx, y + row * scale, scale, scale, colour);
                    }
                }
            }
        }
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: usize) -> usize {
    text.chars().count() * 8 * scale
}

/// The sheet of `cards`: rows of at most [`sheet_layout::PER_ROW`] cards,
/// each digit enlarged and drawn dark on white as the tutorial shows them
/// (`cmap=binary`), its lines of text centred under it. Returns width,
/// height and RGB pixels.
pub fn sheet(cards: &[Card]) -> (usize, usize, Vec<u8>) {
    use sheet_layout::*;
    let digit = SIDE * DIGIT_SCALE;
    let widest_text = cards
        .iter()
        .flat_map(|c| c.lines.iter().map(|(t, _)| text_width(t, TEXT_SCALE)))
        .max()
        .unwrap_or(0);
    let lines = cards.iter().map(|c| c.lines.len()).max().unwrap_or(0);
    let cell_w = digit.max(widest_text) + 2 * PAD;
    let cell_h = PAD + digit + PAD / 2 + lines * LINE + PAD;
    let columns = cards.len().clamp(1, PER_ROW);
    let rows = cards.len().div_ceil(columns).max(1);
    let mut canvas = Canvas::new(columns * cell_w, rows * cell_h, WHITE);
    for (n, card) in cards.iter().enumerate() {
        let (x0, y0) = ((n % columns) * cell_w, (n / columns) * cell_h);
        let dx = x0 + (cell_w - digit) / 2;
        let dy = y0 + PAD;
        canvas.fill(dx - 1, dy - 1, digit + 2, digit + 2, FRAME);
        let big = upscale(card.pixels, SIDE, DIGIT_SCALE);
        for (i, &p) in big.iter().enumerate() {
            let ink = 255 - p;
            canvas.put(dx + i % digit, dy + i / digit, [ink, ink, ink]);
        }
        for (l, (text, colour)) in card.lines.iter().enumerate() {
            let tx = x0 + (cell_w - text_width(text, TEXT_SCALE)) / 2;
            let ty = dy + digit + PAD / 2 + l * LINE + 2;
            canvas.text(tx, ty, text, TEXT_SCALE, *colour);
        }
    }
    (canvas.width, canvas.height, canvas.pixels)
}

/// Writes the [`sheet`] of `cards` to `path` as an RGB PNG (atomically).
pub fn write_sheet(path: &Path, cards: &[Card]) -> Result<(), PngError> {
    let (width, height, pixels) = sheet(cards);
    write_encoded(path, width, height, 3, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upscaling_repeats_each_pixel_in_a_square() {
        let pixels = [1, 2, 3, 4, 5, 6];
        assert_eq!(upscale(&pixels, 3, 1), pixels);
        assert_eq!(
            upscale(&pixels, 3, 2),
            [
                1, 1, 2, 2, 3, 3, //
                1, 1, 2, 2, 3, 3, //
                4, 4, 5, 5, 6, 6, //
                4, 4, 5, 5, 6, 6,
            ]
        );
    }

    #[test]
    fn the_values_table_has_28_aligned_rows_of_28_values() {
        let pixels: Vec<u8> = (0..SIDE * SIDE).map(|i| (i % 256) as u8).collect();
        let table = values_table(&pixels);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), SIDE);
        for (r, row) in rows.iter().enumerate() {
            assert_eq!(row.len(), SIDE * 4 - 1, "row {r}: {row:?}");
            let values: Vec<u8> = row.split_whitespace().map(|v| v.parse().unwrap()).collect();
            assert_eq!(values, pixels[r * SIDE..(r + 1) * SIDE]);
        }
        assert!(rows[0].starts_with("  0   1   2"), "{}", rows[0]);
    }

    #[test]
    fn text_is_drawn_from_the_bitmap_font() {
        let mut canvas = Canvas::new(20, 10, WHITE);
        canvas.text(1, 1, "1", 1, BLACK);
        // The glyph of '1' in font8x8, row by row; bit 0 is the leftmost pixel.
        let glyph = font8x8::legacy::BASIC_LEGACY['1' as usize];
        assert!(glyph.iter().any(|&b| b != 0));
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                let at = ((1 + row) * 20 + 1 + col) * 3;
                let ink = canvas.pixels[at] == 0;
                assert_eq!(ink, (bits >> col) & 1 == 1, "row {row} col {col}");
            }
        }
        // Nothing outside the glyph's cell.
        let inked = canvas.pixels.chunks(3).filter(|p| p[0] == 0).count();
        let set: u32 = glyph.iter().map(|b| b.count_ones()).sum();
        assert_eq!(inked, set as usize);
    }

    #[test]
    fn a_sheet_places_each_digit_dark_on_white_with_its_text_below() {
        use sheet_layout::*;
        let mut one = vec![0u8; SIDE * SIDE];
        one[14 * SIDE + 14] = 255;
        let two = vec![255u8; SIDE * SIDE];
        let cards = [
            Card {
                pixels: &one,
                lines: vec![("model 8".into(), RED), ("true 6".into(), BLACK)],
            },
            Card {
                pixels: &two,
                lines: vec![("model 1".into(), RED), ("true 7".into(), BLACK)],
            },
        ];
        let (w, h, pixels) = sheet(&cards);
        let digit = SIDE * DIGIT_SCALE;
        let cell_w = digit.max(text_width("model 8", TEXT_SCALE)) + 2 * PAD;
        assert_eq!(w, 2 * cell_w);
        assert_eq!(h, PAD + digit + PAD / 2 + 2 * LINE + PAD);
        let at = |x: usize, y: usize| -> Rgb {
            let i = (y * w + x) * 3;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        let dx = (cell_w - digit) / 2;
        // The first digit: white background, its one bright pixel dark, 4×4.
        assert_eq!(at(dx, PAD), WHITE);
        for d in 0..DIGIT_SCALE {
            assert_eq!(
                at(dx + 14 * DIGIT_SCALE + d, PAD + 14 * DIGIT_SCALE + d),
                BLACK
            );
        }
        // The second digit is all ink.
        assert_eq!(at(cell_w + dx + 5, PAD + 5), BLACK);
        // Red text in the first line under each digit, none above it.
        let below = PAD + digit + PAD / 2;
        let red_rows: Vec<usize> = (0..h)
            .filter(|&y| (0..cell_w).any(|x| at(x, y) == RED))
            .collect();
        assert!(!red_rows.is_empty());
        assert!(red_rows.iter().all(|&y| (below..below + LINE).contains(&y)));
    }
}
