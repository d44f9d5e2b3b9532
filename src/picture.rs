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

/// Draws a 28×28 image in a quarter of [`render`]'s space, 28 columns by
/// 14 lines: each character is two pixels, one above the other, as half
/// blocks. With `colour`, in 256-colour greys, dark ink on white as the
/// tutorial's `cmap=binary` draws it; without, a pixel counts as ink from
/// half intensity. Small enough for a quiz in an 80×24 terminal, or five
/// digits side by side.
pub fn render_compact(pixels: &[u8], colour: bool) -> Vec<String> {
    pixels
        .chunks_exact(2 * SIDE)
        .map(|rows| {
            let (top, bottom) = rows.split_at(SIDE);
            let mut line = String::new();
            for (&t, &b) in top.iter().zip(bottom) {
                if colour {
                    // 232 is the darkest of the 24 greys, 255 the lightest.
                    let grey = |p: u8| 255 - (p as u16 * 23 / 255) as u8;
                    line.push_str(&format!("\x1b[38;5;{};48;5;{}m▀", grey(t), grey(b)));
                } else {
                    line.push(match (t >= 128, b >= 128) {
                        (false, false) => ' ',
                        (true, false) => '▀',
                        (false, true) => '▄',
                        (true, true) => '█',
                    });
                }
            }
            if colour {
                line.push_str("\x1b[0m");
            }
            line
        })
        .collect()
}

/// Ten probabilities as ten bars, one per digit 0-9, from ' ' (none) to
/// '█' (certain): `0123456789` written under them reads as a chart.
pub fn probability_bars(probabilities: &[f32]) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    probabilities
        .iter()
        .map(|&p| BARS[((p.clamp(0.0, 1.0) * 8.0).round() as usize).min(8)])
        .collect()
}

/// The tutorial's `print` of an image as a table, one row per line with its
/// index, under a line of column indices: the pixel values 0-255, or with
/// `scaled` the values /255 the network reads (0.00-1.00). `columns` is the
/// width to fit: a table wider than that comes as two halves of 14 columns.
pub fn values_table(pixels: &[u8], scaled: bool, columns: usize) -> String {
    let cell = if scaled { 4 } else { 3 };
    let full = 2 + SIDE * (cell + 1);
    // The columns of each part, first and last + 1.
    let halves: &[(usize, usize)] = if full <= columns {
        &[(0, SIDE)]
    } else {
        &[(0, SIDE / 2), (SIDE / 2, SIDE)]
    };
    let mut out = String::with_capacity(SIDE * SIDE * (cell + 1) + 200);
    for (h, &(first, end)) in halves.iter().enumerate() {
        if h > 0 {
            out.push('\n');
        }
        out.push_str("  ");
        for c in first..end {
            out.push_str(&format!(" {c:>cell$}"));
        }
        out.push('\n');
        for (r, row) in pixels.chunks_exact(SIDE).enumerate() {
            out.push_str(&format!("{r:>2}"));
            for &p in &row[first..end] {
                if scaled {
                    out.push_str(&format!(" {:.2}", p as f32 / 255.0));
                } else {
                    out.push_str(&format!(" {p:>3}"));
                }
            }
            out.push('\n');
        }
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
    #[error("{}: the picture is written as PNG, so its name must end in .png", path.display())]
    NotPngName { path: PathBuf },
}

/// Refuses a name that would put PNG bytes under another format's
/// extension (`sheet.jpg`): checked before any work.
pub fn check_png_name(path: &Path) -> Result<(), PngError> {
    match path.extension() {
        Some(e) if e.eq_ignore_ascii_case("png") => Ok(()),
        _ => Err(PngError::NotPngName {
            path: path.to_path_buf(),
        }),
    }
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

/// Writes a 28×28 image as a greyscale PNG (atomically), enlarged `scale`
/// times (1: 28×28 as it is): dark ink on white as the tutorial draws
/// digits (`cmap=binary`) and the sheets do, or with `as_stored` light on
/// black, MNIST's own values.
pub fn write_png(
    path: &Path,
    pixels: &[u8],
    scale: usize,
    as_stored: bool,
) -> Result<(), PngError> {
    let side = SIDE * scale;
    let mut big = upscale(pixels, SIDE, scale);
    if !as_stored {
        big.iter_mut().for_each(|p| *p = 255 - *p);
    }
    write_encoded(path, side, side, 1, &big)
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

/// The sheet of `cards` under a `title` line: rows of at most
/// [`sheet_layout::PER_ROW`] cards, each digit enlarged and drawn dark on
/// white as the tutorial shows them (`cmap=binary`), its lines of text
/// centred under it. Returns width, height and RGB pixels.
pub fn sheet(title: &str, cards: &[Card]) -> (usize, usize, Vec<u8>) {
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
    let head = PAD + LINE;
    let width = (columns * cell_w).max(text_width(title, TEXT_SCALE) + 2 * PAD);
    let mut canvas = Canvas::new(width, head + rows * cell_h, WHITE);
    canvas.text(PAD, PAD, title, TEXT_SCALE, BLACK);
    for (n, card) in cards.iter().enumerate() {
        let (x0, y0) = ((n % columns) * cell_w, head + (n / columns) * cell_h);
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
pub fn write_sheet(path: &Path, title: &str, cards: &[Card]) -> Result<(), PngError> {
    let (width, height, pixels) = sheet(title, cards);
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
    fn the_values_table_has_indexed_aligned_rows_and_fits_the_width_given() {
        let pixels: Vec<u8> = (0..SIDE * SIDE).map(|i| (i % 256) as u8).collect();
        let parse = |table: &str| -> Vec<Vec<String>> {
            table
                .lines()
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect()
        };
        // Wide enough: one table, a header of column numbers, 28 indexed rows.
        let table = values_table(&pixels, false, 200);
        let rows = parse(&table);
        assert_eq!(rows.len(), 1 + SIDE);
        assert_eq!(
            rows[0],
            (0..SIDE).map(|c| c.to_string()).collect::<Vec<_>>()
        );
        for (r, row) in rows[1..].iter().enumerate() {
            assert_eq!(row[0], r.to_string());
            let values: Vec<u8> = row[1..].iter().map(|v| v.parse().unwrap()).collect();
            assert_eq!(values, pixels[r * SIDE..(r + 1) * SIDE]);
        }
        let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
        assert!(
            widths.iter().all(|&w| w == widths[0]),
            "aligned: {widths:?}"
        );
        // In 80 columns: two halves of 14 columns, every line within 80.
        for scaled in [false, true] {
            let table = values_table(&pixels, scaled, 80);
            assert!(table.lines().all(|l| l.chars().count() <= 80), "{table}");
            let rows = parse(&table);
            // Two parts of a header and 28 rows, a blank line between them.
            assert_eq!(rows.len(), 2 * (1 + SIDE) + 1, "{table}");
            assert!(rows[1 + SIDE].is_empty());
            assert_eq!(rows[0][0], "0");
            assert_eq!(rows[2 + SIDE][0], "14", "the second half's first column");
            if scaled {
                // Row 1 holds 28..56: pixel 29 is 29/255.
                assert_eq!(rows[2][2], format!("{:.2}", 29.0 / 255.0));
            }
        }
    }

    #[test]
    fn compact_drawings_pair_rows_into_half_blocks() {
        let mut pixels = vec![0u8; SIDE * SIDE];
        pixels[0] = 255; // row 0, column 0: the upper half of line 0
        pixels[SIDE + 1] = 255; // row 1, column 1: the lower half
        pixels[2] = 255;
        pixels[SIDE + 2] = 255; // both halves of column 2
        let lines = render_compact(&pixels, false);
        assert_eq!(lines.len(), SIDE / 2);
        assert!(lines.iter().all(|l| l.chars().count() == SIDE));
        assert!(lines[0].starts_with("▀▄█ "), "{:?}", lines[0]);
        assert!(lines[1..].iter().all(|l| l.trim().is_empty()));
        // In colour: ink dark on white, top pixel as the foreground.
        let coloured = render_compact(&pixels, true);
        assert!(
            coloured[0].starts_with("\x1b[38;5;232;48;5;255m▀"),
            "{:?}",
            coloured[0]
        );
    }

    #[test]
    fn probability_bars_rise_with_the_probability() {
        let mut p = [0.0f32; 10];
        p[3] = 1.0;
        p[8] = 0.5;
        assert_eq!(probability_bars(&p), "   █    ▄ ");
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
        let (w, h, pixels) = sheet("two", &cards);
        let digit = SIDE * DIGIT_SCALE;
        let cell_w = digit.max(text_width("model 8", TEXT_SCALE)) + 2 * PAD;
        let head = PAD + LINE;
        assert_eq!(w, 2 * cell_w);
        assert_eq!(h, head + PAD + digit + PAD / 2 + 2 * LINE + PAD);
        let at = |x: usize, y: usize| -> Rgb {
            let i = (y * w + x) * 3;
            [pixels[i], pixels[i + 1], pixels[i + 2]]
        };
        let dx = (cell_w - digit) / 2;
        let top = head + PAD;
        // The title in black above the digits.
        assert!(
            (PAD..head).any(|y| (0..w).any(|x| at(x, y) == BLACK)),
            "no title"
        );
        // The first digit: white background, its one bright pixel dark, 4×4.
        assert_eq!(at(dx, top), WHITE);
        for d in 0..DIGIT_SCALE {
            assert_eq!(
                at(dx + 14 * DIGIT_SCALE + d, top + 14 * DIGIT_SCALE + d),
                BLACK
            );
        }
        // The second digit is all ink.
        assert_eq!(at(cell_w + dx + 5, top + 5), BLACK);
        // Red text in the first line under each digit, none above it.
        let below = top + digit + PAD / 2;
        let red_rows: Vec<usize> = (0..h)
            .filter(|&y| (0..cell_w).any(|x| at(x, y) == RED))
            .collect();
        assert!(!red_rows.is_empty());
        assert!(red_rows.iter().all(|&y| (below..below + LINE).contains(&y)));
    }
}
