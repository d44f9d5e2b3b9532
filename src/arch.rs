//! The tutorial's network as numbers: every shape and count the model, the
//! fused ops, the summary and the saved metadata use, derived from a few
//! constants so that they cannot disagree.

use crate::idx::{CLASSES, SIDE};

/// Convolution filters.
pub const FILTERS: usize = 32;
/// Side of the convolution kernel.
pub const KERNEL: usize = 3;
/// Taps of one filter (one input channel).
pub const TAPS: usize = KERNEL * KERNEL;
/// Side of the max-pool window (applied with stride 1).
pub const POOL: usize = 2;
/// Side of the convolution output (valid padding).
pub const CONV_SIDE: usize = SIDE - KERNEL + 1;
/// Side of the max-pool output (stride 1).
pub const POOL_SIDE: usize = CONV_SIDE - POOL + 1;
/// Features entering the dense layers: 25 × 25 × 32.
pub const FEATURES: usize = POOL_SIDE * POOL_SIDE * FILTERS;
/// Units of the hidden dense layer.
pub const HIDDEN: usize = 128;
/// Fraction of features dropped while training.
pub const DROPOUT: f64 = 0.25;
/// Parameters of the convolution: the kernel and a bias per filter.
pub const CONV_PARAMS: usize = TAPS * FILTERS + FILTERS;
/// Parameters of the hidden dense layer.
pub const HIDDEN_PARAMS: usize = FEATURES * HIDDEN + HIDDEN;
/// Parameters of the output layer.
pub const OUTPUT_PARAMS: usize = HIDDEN * CLASSES + CLASSES;
/// All parameters: 2,561,738.
pub const PARAMETERS: usize = CONV_PARAMS + HIDDEN_PARAMS + OUTPUT_PARAMS;

/// Floating-point operations of the convolution's products for one image
/// (a multiply-add counts two): 26 × 26 × 32 outputs of 9 taps.
const CONV_FLOP: usize = CONV_SIDE * CONV_SIDE * FILTERS * TAPS * 2;
/// Of one image through the hidden dense layer.
const HIDDEN_FLOP: usize = FEATURES * HIDDEN * 2;
/// Of one image through the output layer.
const OUTPUT_FLOP: usize = HIDDEN * CLASSES * 2;
/// Floating-point operations to evaluate one image: the products of the
/// three layers, 5,511,936 (pooling, ReLU and softmax are a few thousand
/// more, and not counted).
pub const EVAL_FLOP_PER_IMAGE: usize = CONV_FLOP + HIDDEN_FLOP + OUTPUT_FLOP;
/// To train on one image: the forward products, the convolution's weight
/// gradient (its input needs none), both dense layers' input and weight
/// gradients: 16,146,432.
pub const TRAIN_FLOP_PER_IMAGE: usize = 2 * CONV_FLOP + 3 * HIDDEN_FLOP + 3 * OUTPUT_FLOP;

/// A short name of the architecture, stored with every model so that a file
/// of another network is recognised before its weights are read.
pub fn architecture() -> String {
    format!(
        "conv2d({FILTERS},{KERNEL}x{KERNEL},valid,relu)-maxpool({POOL}x{POOL},s1)-dropout({DROPOUT})\
         -flatten-dense({HIDDEN},relu)-dense({CLASSES},softmax)"
    )
}

/// One row of Keras's `model.summary()`: layer, output shape, parameters.
pub struct Layer {
    pub name: &'static str,
    /// Output shape without the batch dimension (channels last, as Keras).
    pub shape: Vec<usize>,
    pub params: usize,
}

/// The layers as Keras lists them.
pub fn layers() -> [Layer; 6] {
    let pooled = vec![POOL_SIDE, POOL_SIDE, FILTERS];
    [
        Layer {
            name: "conv2d (Conv2D)",
            shape: vec![CONV_SIDE, CONV_SIDE, FILTERS],
            params: CONV_PARAMS,
        },
        Layer {
            name: "max_pooling2d (MaxPooling2D)",
            shape: pooled.clone(),
            params: 0,
        },
        Layer {
            name: "dropout (Dropout)",
            shape: pooled,
            params: 0,
        },
        Layer {
            name: "flatten (Flatten)",
            shape: vec![FEATURES],
            params: 0,
        },
        Layer {
            name: "dense (Dense)",
            shape: vec![HIDDEN],
            params: HIDDEN_PARAMS,
        },
        Layer {
            name: "dense_1 (Dense)",
            shape: vec![CLASSES],
            params: OUTPUT_PARAMS,
        },
    ]
}

/// The table Keras's `model.summary()` prints for the tutorial's model.
pub fn summary() -> String {
    let line = "_".repeat(65);
    let rule = "=".repeat(65);
    let mut out = format!(
        "Model: \"sequential\"\n{line}\n {:<28} {:<25} Param #\n{rule}\n",
        "Layer (type)", "Output Shape"
    );
    for layer in layers() {
        let dims: Vec<String> = layer.shape.iter().map(usize::to_string).collect();
        let shape = format!("(None, {})", dims.join(", "));
        out.push_str(&format!(
            " {:<28} {shape:<25} {}\n",
            layer.name,
            group_digits(layer.params)
        ));
    }
    let total = group_digits(PARAMETERS);
    out.push_str(&format!(
        "{rule}\nTotal params: {total}\nTrainable params: {total}\nNon-trainable params: 0\n{line}"
    ));
    out
}

/// `2561738` → `2,561,738`.
pub fn group_digits(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_lists_every_layer_with_its_figures() {
        let summary = summary();
        for layer in layers() {
            let row = summary
                .lines()
                .find(|l| l.trim_start().starts_with(layer.name))
                .unwrap_or_else(|| panic!("no row for {}", layer.name));
            assert!(row.ends_with(&group_digits(layer.params)), "{row}");
        }
        let total: usize = layers().iter().map(|l| l.params).sum();
        assert_eq!(total, PARAMETERS);
        assert_eq!(group_digits(1_234_567), "1,234,567");
        assert_eq!(group_digits(320), "320");
    }

    #[test]
    fn the_operation_counts_are_the_readmes() {
        assert_eq!(EVAL_FLOP_PER_IMAGE, 5_511_936);
        assert_eq!(TRAIN_FLOP_PER_IMAGE, 16_146_432);
    }
}
