//! `mnist-cnn show`: one image of the data set, as the tutorial looks at it.

use anyhow::{Result, anyhow};

use mnist_cnn::data::{self, Split};
use mnist_cnn::files::check_writable;
use mnist_cnn::idx::{CLASSES, SIDE};
use mnist_cnn::picture;

use super::args::ShowArgs;
use super::common::{data_failed, shape};
use crate::term::{self, print};

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
            "there is no {set} image {}: the {len} {set} images are numbered 0 to {} \
             (or -1 to -{len} from the end)",
            args.index,
            len - 1
        ),
    };
    // Python's indexing: -1 is the last image of the set.
    let position = |len: usize| -> Option<usize> {
        let i = if args.index < 0 {
            len as i64 + args.index
        } else {
            args.index
        };
        usize::try_from(i).ok().filter(|&i| i < len)
    };
    if position(split.size()).is_none() {
        return Err(out_of_range(split.size()));
    }
    if let Some(png) = &args.png {
        picture::check_png_name(png)?;
        check_writable(png)?;
    }
    let dir = &args.data.data_dir;
    let data = data::load(dir, split).map_err(|e| data_failed(e, dir))?;
    let index = position(data.len()).ok_or_else(|| out_of_range(data.len()))?;
    let pixels = data.images.image(index);
    let label = data.labels[index];
    let one_hot: Vec<u8> = (0..CLASSES)
        .map(|c| u8::from(c == label as usize))
        .collect();
    if let Some(png) = &args.png {
        picture::write_png(png, pixels, args.scale, args.as_stored)?;
    }
    if args.json {
        let rows: Vec<&[u8]> = pixels.chunks(SIDE).collect();
        let mut json = serde_json::json!({
            "set": if args.test { "test" } else { "train" },
            "index": index,
            "label": label,
            "one_hot": one_hot,
            "pixels": rows,
        });
        if args.scaled {
            let scaled: Vec<Vec<f32>> = rows
                .iter()
                .map(|row| row.iter().map(|&p| p as f32 / 255.0).collect())
                .collect();
            json["scaled"] = serde_json::json!(scaled);
        }
        return Ok(print(json)?);
    }
    print(format_args!(
        "{x} shape: {}, {y} shape: {}",
        shape(&[data.len(), SIDE, SIDE]),
        shape(&[data.len()])
    ))?;
    print(format_args!("\n{x}[{index}]:"))?;
    print(picture::render(pixels).trim_end_matches('\n'))?;
    if args.values || args.scaled {
        let what = if args.scaled {
            "values / 255, as the network reads them"
        } else {
            "pixel values 0-255"
        };
        print(format_args!("\n{x}[{index}], {what} (row, then column):"))?;
        let table = picture::values_table(pixels, args.scaled, term::width());
        print(table.trim_end_matches('\n'))?;
    }
    let one_hot: Vec<String> = one_hot.iter().map(|v| format!("{v}.")).collect();
    print(format_args!("\n{y}[{index}]: {label}"))?;
    print(format_args!("one-hot: [{}]", one_hot.join(" ")))?;
    if let Some(png) = &args.png {
        print(format_args!("PNG written to {}", png.display()))?;
    }
    Ok(())
}
