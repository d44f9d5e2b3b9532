//! `mnist-cnn explain` (and `serve`'s views of a drawing): what the network
//! computes for one image, layer by layer, and which pixels pushed its answer.
//!
//! The layers come from the host network (`crate::host`), by the calls
//! `eval` makes on a CPU backend, so that the probabilities shown are those
//! `eval` and `predict` give. The one view the fused first block never
//! forms, the 26×26 maps after the convolution and its ReLU but before the
//! pool, is computed here from the model's own filters; the tests hold its
//! max-pool to the block's output.
//!
//! The saliency map is the gradient of the predicted class's logit with
//! respect to the input pixels, taken by Burn's autodiff through the stock
//! layers ([`Cnn::stock_forward`]). Why the gradient rather than occlusion:
//! it is exact and one backward pass (occlusion is one forward pass per
//! patch, and its answer depends on the patch's size and the grey it paints
//! in), and it answers the learner's question per pixel: which pixels, made
//! a little brighter, would raise the score of the digit the network chose.

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::arch::{CONV_SIDE, FEATURES, FILTERS, HIDDEN, KERNEL, POOL, POOL_SIDE, TAPS};
use crate::backend;
use crate::eval::{argmax, softmax};
use crate::host::HostNet;
use crate::idx::{CLASSES, PIXELS, SIDE};
use crate::model::Cnn;
use crate::picture::{self, BLACK, Canvas, GREY, PngError, RED, Rgb, WHITE};

/// How the saliency map is computed, as `--json` and the API name it.
const SALIENCY_METHOD: &str = "gradient of the predicted class's logit with respect to the input";

/// Everything the network computes for one image. Maps are channels first:
/// `conv[f]` is filter `f`'s map, row by row.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// The 28×28 input in [0, 1], as the network reads it.
    pub input: Vec<f32>,
    /// The 32 learned 3×3 filters, row by row: the model's own weights.
    pub filters: Vec<Vec<f32>>,
    /// The filters' biases.
    pub filter_biases: Vec<f32>,
    /// The 32 feature maps after the convolution and its ReLU, 26×26 each.
    pub conv: Vec<Vec<f32>>,
    /// The 32 maps after the 2×2 stride-1 max-pool, 25×25 each: the 20,000
    /// features the dense layer reads.
    pub pooled: Vec<Vec<f32>>,
    /// The 128 hidden activations.
    pub hidden: Vec<f32>,
    pub logits: [f32; CLASSES],
    pub probabilities: [f32; CLASSES],
    pub predicted: u8,
    /// d logit[predicted] / d input, 28×28.
    pub saliency: Vec<f32>,
    pub saliency_method: &'static str,
}

/// Explains images with one model. Holds the host network's buffers and
/// the model on an autodiff device, so that many images (a server's) share them.
pub struct Explainer {
    host: HostNet,
    /// The model on the host's autodiff device, its parameters untracked:
    /// only the input's gradient is wanted.
    tracked: Cnn,
    autodiff: burn::tensor::Device,
    kernel: Vec<f32>,
    bias: Vec<f32>,
}

impl Explainer {
    pub fn new(model: &Cnn) -> Self {
        let device = backend::host_device();
        let model = model.copied_to(&device);
        let parameters = model.parameters();
        let autodiff = device.autodiff();
        Self {
            host: HostNet::for_inference(&model),
            tracked: model.copied_to(&autodiff).no_grad(),
            autodiff,
            kernel: parameters.conv_weight,
            bias: parameters.conv_bias,
        }
    }

    /// The probabilities alone (what `serve` sends while a digit is drawn),
    /// by the same computation as [`Explainer::explain`].
    pub fn probabilities(&mut self, pixels: &[f32]) -> [f32; CLASSES] {
        let (_, _, logits) = self.host.layers(pixels);
        softmax(&logits)
    }

    /// The layers of one image of 784 values in [0, 1] and its saliency.
    pub fn explain(&mut self, pixels: &[f32]) -> Explanation {
        assert_eq!(pixels.len(), PIXELS, "a 28×28 image");
        let (features, hidden, logits) = self.host.layers(pixels);
        let probabilities = softmax(&logits);
        let predicted = argmax(&probabilities);
        let pooled = (0..FILTERS)
            .map(|f| features.iter().skip(f).step_by(FILTERS).copied().collect())
            .collect();
        Explanation {
            input: pixels.to_vec(),
            filters: self
                .kernel
                .chunks_exact(TAPS)
                .map(<[f32]>::to_vec)
                .collect(),
            filter_biases: self.bias.clone(),
            conv: conv_relu(pixels, &self.kernel, &self.bias),
            pooled,
            hidden,
            logits,
            probabilities,
            predicted,
            saliency: self.saliency(pixels, predicted),
            saliency_method: SALIENCY_METHOD,
        }
    }

    /// d logit[class] / d input, by Burn's autodiff through the stock layers.
    fn saliency(&self, pixels: &[f32], class: u8) -> Vec<f32> {
        let data = TensorData::new(pixels.to_vec(), [1, SIDE, SIDE]);
        let images = Tensor::<3>::from_data(data, &self.autodiff).require_grad();
        let logits = self.tracked.stock_forward(images.clone(), None);
        let class = class as usize;
        let grads = logits.slice([0..1, class..class + 1]).sum().backward();
        images
            .grad(&grads)
            .expect("the input is tracked")
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 values")
    }
}

/// The 32 maps of `relu(conv(image) + bias)`, 26×26 each, from the filters
/// in Burn's layout (`[32, 1, 3, 3]`).
fn conv_relu(pixels: &[f32], kernel: &[f32], bias: &[f32]) -> Vec<Vec<f32>> {
    (0..FILTERS)
        .map(|f| {
            let taps = &kernel[f * TAPS..(f + 1) * TAPS];
            let mut map = vec![0.0f32; CONV_SIDE * CONV_SIDE];
            for (i, out) in map.iter_mut().enumerate() {
                let (y, x) = (i / CONV_SIDE, i % CONV_SIDE);
                let mut sum = bias[f];
                for ky in 0..KERNEL {
                    for kx in 0..KERNEL {
                        sum += taps[ky * KERNEL + kx] * pixels[(y + ky) * SIDE + x + kx];
                    }
                }
                *out = sum.max(0.0);
            }
            map
        })
        .collect()
}

/// The 2×2 stride-1 max-pool of a 26×26 map: what the pooled maps must be.
pub fn max_pool(map: &[f32]) -> Vec<f32> {
    let mut out = vec![f32::NEG_INFINITY; POOL_SIDE * POOL_SIDE];
    for (i, v) in out.iter_mut().enumerate() {
        let (y, x) = (i / POOL_SIDE, i % POOL_SIDE);
        for dy in 0..POOL {
            for dx in 0..POOL {
                *v = v.max(map[(y + dy) * CONV_SIDE + x + dx]);
            }
        }
    }
    out
}

const _: () = assert!(FEATURES == FILTERS * POOL_SIDE * POOL_SIDE);

/// Where each view sits on the sheet: for drawing it and for the tests
/// that read it back.
pub mod sheet_layout {
    /// Space around and between the panels.
    pub const PAD: usize = 16;
    /// Height of a panel's title line (8×8 glyphs at scale 2, and a gap).
    pub const TITLE: usize = 24;
    /// Enlargement of the input and of the saliency map.
    pub const DIGIT_SCALE: usize = 6;
    /// Enlargement of each filter's 3×3 taps.
    pub const FILTER_SCALE: usize = 12;
    /// Enlargement of each feature map.
    pub const MAP_SCALE: usize = 3;
    /// Gap between the tiles of a panel.
    pub const GAP: usize = 6;
    /// Tiles per row in the filter and map panels.
    pub const PER_ROW: usize = 8;
    /// Side of one hidden unit's square, 16 a row.
    pub const UNIT: usize = 14;
    pub const UNITS_PER_ROW: usize = 16;
    /// The probability bars: their panel's width and each row's height.
    pub const BARS_WIDTH: usize = 360;
    pub const BAR_ROW: usize = 20;
}

/// The top-left corner of each view on the sheet, and its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// The sheet's size and where its views are.
#[derive(Debug, Clone)]
pub struct Layout {
    pub width: usize,
    pub height: usize,
    pub input: Rect,
    pub saliency: Rect,
    pub bars: Rect,
    /// Filter `f`'s tile is at `filters.x + (f % 8) * (36 + GAP)`, likewise down.
    pub filters: Rect,
    pub hidden: Rect,
    pub conv: Rect,
    pub pooled: Rect,
}

/// The tile of item `i` of a panel of square tiles of side `side`.
pub fn tile(panel: Rect, side: usize, i: usize) -> Rect {
    use sheet_layout::*;
    Rect {
        x: panel.x + (i % PER_ROW) * (side + GAP),
        y: panel.y + (i / PER_ROW) * (side + GAP),
        w: side,
        h: side,
    }
}

/// The sheet's layout (fixed: it does not depend on the numbers).
pub fn layout() -> Layout {
    use sheet_layout::*;
    let digit = SIDE * DIGIT_SCALE;
    let grid = |side: usize| {
        let rows = FILTERS.div_ceil(PER_ROW);
        (PER_ROW * (side + GAP) - GAP, rows * (side + GAP) - GAP)
    };
    let top = PAD + TITLE;
    let input = Rect {
        x: PAD,
        y: top,
        w: digit,
        h: digit,
    };
    let saliency = Rect {
        x: input.x + digit + 2 * PAD,
        y: top,
        w: digit,
        h: digit,
    };
    let bars = Rect {
        x: saliency.x + digit + 2 * PAD,
        y: top,
        w: BARS_WIDTH,
        h: CLASSES * BAR_ROW,
    };
    let row2 = top + digit.max(bars.h) + PAD + TITLE;
    let (fw, fh) = grid(KERNEL * FILTER_SCALE);
    let filters = Rect {
        x: PAD,
        y: row2,
        w: fw,
        h: fh,
    };
    let (hw, hh) = (UNITS_PER_ROW * UNIT, HIDDEN.div_ceil(UNITS_PER_ROW) * UNIT);
    let hidden = Rect {
        x: filters.x + fw + 2 * PAD,
        y: row2,
        w: hw,
        h: hh,
    };
    let row3 = row2 + fh.max(hh) + PAD + TITLE;
    let (cw, ch) = grid(CONV_SIDE * MAP_SCALE);
    let conv = Rect {
        x: PAD,
        y: row3,
        w: cw,
        h: ch,
    };
    let row4 = row3 + ch + PAD + TITLE;
    let (pw, ph) = grid(POOL_SIDE * MAP_SCALE);
    let pooled = Rect {
        x: PAD,
        y: row4,
        w: pw,
        h: ph,
    };
    let width = (bars.x + bars.w).max(hidden.x + hw).max(cw + 2 * PAD) + PAD;
    Layout {
        width,
        height: row4 + ph + PAD,
        input,
        saliency,
        bars,
        filters,
        hidden,
        conv,
        pooled,
    }
}

/// Blue for negative, white for zero, red for positive, at `v / scale`.
pub fn diverging(v: f32, scale: f32) -> Rgb {
    let t = if scale > 0.0 {
        (v / scale).clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let fade = (255.0 * (1.0 - t.abs())).round() as u8;
    if t >= 0.0 {
        [255, fade, fade]
    } else {
        [fade, fade, 255]
    }
}

/// Dark for zero to white for `scale` and above (activations are ≥ 0).
fn brightness(v: f32, scale: f32) -> Rgb {
    let t = if scale > 0.0 {
        (v / scale).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let g = (255.0 * t).round() as u8;
    [g, g, g]
}

fn largest(values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// Draws a `w × h` map, each value a square of `scale` pixels.
fn draw_map(c: &mut Canvas, at: Rect, w: usize, scale: usize, colour: impl Fn(usize) -> Rgb) {
    for i in 0..at.w * at.h {
        let (x, y) = (i % at.w, i / at.w);
        c.put(at.x + x, at.y + y, colour((y / scale) * w + x / scale));
    }
}

/// The labelled sheet of every view, as RGB pixels of `layout()`'s size.
/// Colours: maps and hidden units from black (0) to white (the panel's
/// largest value, one scale for its 32 maps); filters and saliency from
/// blue (negative) through white to red (positive), scaled by their
/// largest magnitude. The saliency is drawn over the digit: grey ink where
/// the gradient is small.
fn sheet(e: &Explanation, title: &str) -> (usize, usize, Vec<u8>) {
    use sheet_layout::*;
    let l = layout();
    let mut c = Canvas::new(l.width, l.height, WHITE);
    let caption =
        |c: &mut Canvas, at: Rect, text: &str| c.text(at.x, at.y - TITLE + 4, text, 2, BLACK);
    c.text(PAD, 4, title, 1, GREY);
    caption(&mut c, l.input, "input 28x28");
    draw_map(&mut c, l.input, SIDE, DIGIT_SCALE, |i| {
        let ink = 255 - (e.input[i] * 255.0).round().clamp(0.0, 255.0) as u8;
        [ink, ink, ink]
    });
    caption(&mut c, l.saliency, "saliency");
    let s = largest(e.saliency.iter().copied());
    draw_map(&mut c, l.saliency, SIDE, DIGIT_SCALE, |i| {
        let g = if s > 0.0 {
            (e.saliency[i] / s).clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let digit = 255.0 - 140.0 * e.input[i];
        let [r, gg, b] = diverging(e.saliency[i], s);
        let mix = |paint: u8| (digit * (1.0 - g.abs()) + paint as f32 * g.abs()).round() as u8;
        [mix(r), mix(gg), mix(b)]
    });
    caption(&mut c, l.bars, "probabilities");
    for (k, &p) in e.probabilities.iter().enumerate() {
        let y = l.bars.y + k * BAR_ROW;
        let colour = if k == e.predicted as usize { RED } else { GREY };
        c.text(l.bars.x, y + 2, &k.to_string(), 2, BLACK);
        // Digit, bar, then "100.0%" (six glyphs) at the right.
        let room = l.bars.w - 24 - 6 * 16 - 8;
        let len = (room as f32 * p).round() as usize;
        c.fill(l.bars.x + 24, y + 3, len.max(1), BAR_ROW - 6, colour);
        let text = format!("{:.1}%", p * 100.0);
        let tx = l.bars.x + l.bars.w - picture::text_width(&text, 2);
        c.text(tx, y + 2, &text, 2, BLACK);
    }
    caption(&mut c, l.filters, "32 filters 3x3");
    let w = largest(e.filters.iter().flatten().copied());
    for (f, taps) in e.filters.iter().enumerate() {
        let at = tile(l.filters, KERNEL * FILTER_SCALE, f);
        draw_map(&mut c, at, KERNEL, FILTER_SCALE, |i| diverging(taps[i], w));
    }
    caption(&mut c, l.hidden, "128 hidden units");
    let h = largest(e.hidden.iter().copied());
    for (u, &v) in e.hidden.iter().enumerate() {
        let (x, y) = (u % UNITS_PER_ROW, u / UNITS_PER_ROW);
        c.fill(
            l.hidden.x + x * UNIT,
            l.hidden.y + y * UNIT,
            UNIT - 1,
            UNIT - 1,
            brightness(v, h),
        );
    }
    for (panel, maps, side, name) in [
        (l.conv, &e.conv, CONV_SIDE, "after conv + ReLU, 32 x 26x26"),
        (
            l.pooled,
            &e.pooled,
            POOL_SIDE,
            "after max-pool, 32 x 25x25 = 20,000 features",
        ),
    ] {
        caption(&mut c, panel, name);
        let m = largest(maps.iter().flatten().copied());
        for (f, map) in maps.iter().enumerate() {
            let at = tile(panel, side * MAP_SCALE, f);
            draw_map(&mut c, at, side, MAP_SCALE, |i| brightness(map[i], m));
        }
    }
    (c.width, c.height, c.pixels)
}

/// Writes the sheet of every view as an RGB PNG (atomically).
pub fn write_sheet(path: &Path, e: &Explanation, title: &str) -> Result<(), PngError> {
    let (width, height, pixels) = sheet(e, title);
    picture::write_encoded(path, width, height, 3, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Parameters;

    /// A network where only input pixel (`row`, `col`) matters, for class
    /// `class`: filter 0 is the identity on its centre tap, one pooled
    /// feature feeds hidden unit 0, which feeds class `class`'s logit.
    fn one_pixel_network(row: usize, col: usize, class: usize) -> Cnn {
        let mut conv_weight = vec![0.0; FILTERS * TAPS];
        conv_weight[4] = 1.0; // filter 0, centre tap
        let mut hidden_weight = vec![0.0; FEATURES * HIDDEN];
        // Pooled position (row - 1, col - 1) of filter 0 reads conv outputs
        // from there, which read the input from (row, col) on.
        let feature = ((row - 1) * POOL_SIDE + (col - 1)) * FILTERS;
        hidden_weight[feature * HIDDEN] = 2.0;
        let mut output_weight = vec![0.0; HIDDEN * CLASSES];
        output_weight[class] = 3.0;
        let parameters = Parameters {
            conv_weight,
            conv_bias: vec![0.0; FILTERS],
            hidden_weight,
            hidden_bias: vec![0.0; HIDDEN],
            output_weight,
            output_bias: vec![0.0; CLASSES],
        };
        Cnn::from_parameters(parameters, &backend::host_device())
    }

    #[test]
    fn the_saliency_of_a_one_pixel_network_is_that_pixel() {
        let (row, col, class) = (9, 14, 7);
        let model = one_pixel_network(row, col, class);
        let mut image = vec![0.1f32; PIXELS];
        // The pixel that wins the pool's window, and others that do not matter.
        image[row * SIDE + col] = 0.8;
        image[3 * SIDE + 3] = 1.0;
        image[20 * SIDE + 5] = 0.6;
        let e = Explainer::new(&model).explain(&image);
        assert_eq!(e.predicted as usize, class);
        // logit = 3 · 2 · pixel: the gradient is 6 there and 0 elsewhere.
        for (i, &g) in e.saliency.iter().enumerate() {
            let expected = if i == row * SIDE + col { 6.0 } else { 0.0 };
            assert!(
                (g - expected).abs() < 1e-5,
                "pixel {i}: {g}, expected {expected}"
            );
        }
        assert!((e.logits[class] - 6.0 * 0.8).abs() < 1e-5, "{:?}", e.logits);
    }

    fn random_network(seed: u64) -> Cnn {
        use rand::SeedableRng;
        Cnn::new(
            &backend::host_device(),
            &mut rand::rngs::SmallRng::seed_from_u64(seed),
        )
    }

    fn random_image(seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        (0..PIXELS).map(|_| rng.random_range(0.0..1.0)).collect()
    }

    #[test]
    fn the_layers_agree_with_each_other_and_with_the_models_own_pass() {
        let model = random_network(3);
        let image = random_image(4);
        let e = Explainer::new(&model).explain(&image);
        // The pooled maps are the max-pool of the conv maps.
        for (conv, pooled) in e.conv.iter().zip(&e.pooled) {
            let expected = max_pool(conv);
            let worst = crate::test_util::max_diff(&expected, pooled);
            assert!(worst < 1e-5, "pool differs by {worst}");
        }
        assert!(e.conv.iter().flatten().any(|&v| v > 0.0), "all maps dead");
        let device = backend::host_device();
        let batch = crate::model::Batch::from_pixels(image, 1, &device);
        let probs = crate::test_util::values(model.probabilities(&batch));
        crate::test_util::assert_close(&probs, &e.probabilities, "probabilities");
        assert_eq!(e.filters.len(), FILTERS);
        assert_eq!(e.filters.concat(), model.parameters().conv_weight);
    }

    #[test]
    fn the_saliency_is_the_logits_slope() {
        // Central differences on a random network and image, at pixels where
        // a small step moves no ReLU or pool winner (most of them).
        let model = random_network(5);
        let image = random_image(6);
        let mut explainer = Explainer::new(&model);
        let e = explainer.explain(&image);
        let k = e.predicted as usize;
        let logit =
            |explainer: &mut Explainer, image: &[f32]| explainer.explain(image).logits[k] as f64;
        let mut agreeing = 0;
        let pixels = [100, 200, 300, 400, 500, 600, 700];
        for &i in &pixels {
            let h = 1e-2;
            let (mut up, mut down) = (image.clone(), image.clone());
            up[i] += h;
            down[i] -= h;
            let slope =
                (logit(&mut explainer, &up) - logit(&mut explainer, &down)) / (2.0 * h as f64);
            if (slope - e.saliency[i] as f64).abs() < 1e-3 + 1e-2 * slope.abs() {
                agreeing += 1;
            }
        }
        assert!(
            agreeing >= 5,
            "only {agreeing} of {} pixels agree",
            pixels.len()
        );
    }

    #[test]
    fn a_filters_tile_on_the_sheet_shows_its_weights() {
        let model = random_network(8);
        let e = Explainer::new(&model).explain(&random_image(9));
        let (width, _, pixels) = sheet(&e, "test");
        let l = layout();
        let scale = largest(e.filters.iter().flatten().copied());
        for f in [0, 5, 31] {
            let at = tile(l.filters, KERNEL * sheet_layout::FILTER_SCALE, f);
            for tap in 0..TAPS {
                let (x, y) = (tap % KERNEL, tap / KERNEL);
                let s = sheet_layout::FILTER_SCALE;
                let (px, py) = (at.x + x * s + s / 2, at.y + y * s + s / 2);
                let at = (py * width + px) * 3;
                let drawn: Rgb = pixels[at..at + 3].try_into().unwrap();
                assert_eq!(
                    drawn,
                    diverging(e.filters[f][tap], scale),
                    "filter {f} tap {tap}"
                );
            }
        }
    }
}
