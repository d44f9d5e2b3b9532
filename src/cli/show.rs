//! `mnist-cnn show`: one image of the data set, as the tutorial looks at it.

use anyhow::{Result, anyhow};

use mnist_cnn::data::{self, Split};
use mnist_cnn::files::check_writable;
use mnist_cnn::idx::{CLASSES, SIDE};
use mnist_cnn::picture;

use super::args::ShowArgs;
use super::common::{data_failed, shape};
use crate::term::print;

pub fn run(args: &ShowArgs) -> Result<()> {
    let (split, set, x, y) = if args.test {
        (Split::Test, "test", "x_test", "y_test")
    } else {
        (Split::Train, "training", "x_train", "y_train")
    };
    let out_of_range = |len: usize| match len {
        0 => anyhow!(
            "there is no {set} image {}: the {set} set holds none",
            args.index
        ),
        _ => anyhow!(
            "there is no {set} image {}: the {len} {set} images are numbered 0 to {}",
            args.index,
            len - 1
        ),
    };
    if args.index >= split.size() {
        return Err(out_of_range(split.size()));
    }
    if let Some(png) = &args.png {
        picture::check_png_name(png)?;
        check_writable(png)?;
    }
    let dir = &args.data.data_dir;
    let data = data::load(dir, split).map_err(|e| data_failed(e, dir))?;
    if args.index >= data.len() {
        return Err(out_of_range(data.len()));
    }
    let pixels = data.images.image(args.index);
    let label = data.labels[args.index];
    let one_hot: Vec<u8> = (0..CLASSES)
        .map(|c| u8::from(c == label as usize))
        .collect();
    if let Some(png) = &args.png {
        picture::write_png(png, pixels, args.scale)?;
    }
    if args.json {
        let rows: Vec<&[u8]> = pixels.chunks(SIDE).collect();
        let json = serde_json::json!({
            "set": if args.test { "test" } else { "train" },
            "index": args.index,
            "label": label,
            "one_hot": one_hot,
            "pixels": rows,
        });
        return Ok(print(json)?);
    }
    print(format_args!(
        "{x} shape: {}, {y} shape: {}",
        shape(&[data.len(), SIDE, SIDE]),
        shape(&[data.len()])
    ))?;
    print(format_args!("\n{x}[{}]:", args.index))?;
    print(picture::render(pixels).trim_end_matches('\n'))?;
    if args.values {
        print("")?;
        print(picture::values_table(pixels).trim_end_matches('\n'))?;
    }
    let one_hot: Vec<String> = one_hot.iter().map(|v| format!("{v}.")).collect();
    print(format_args!("\n{y}[{}]: {label}", args.index))?;
    print(format_args!("one-hot: [{}]", one_hot.join(" ")))?;
    if let Some(png) = &args.png {
        print(format_args!("PNG written to {}", png.display()))?;
    }
    Ok(())
}
