//! `mnist-cnn explain`: what the network computes for one image, layer by
//! layer, and which pixels pushed its answer.

use anyhow::{Result, anyhow};

use mnist_cnn::data::{self, Split};
use mnist_cnn::explain::{self, Explainer};
use mnist_cnn::files::check_writable;
use mnist_cnn::{picture, prepare};

use super::args::ExplainArgs;
use super::common::{Stdout, data_failed, load_model};
use crate::term::print;

pub fn run(args: &ExplainArgs) -> Result<()> {
    if let Some(png) = &args.png {
        picture::check_png_name(png)?;
        check_writable(png)?;
    }
    let paths = args.model.paths(&args.data);
    let (source, label, pixels) = match (args.index, args.train, &args.image) {
        (_, _, Some(path)) => {
            let prepared =
                prepare::prepare_file(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
            (path.display().to_string(), None, prepared.pixels)
        }
        (_, Some(index), None) => dataset_image(args, Split::Train, index)?,
        (Some(index), None, None) => dataset_image(args, Split::Test, index)?,
        (None, None, None) => unreachable!("clap requires one of them"),
    };
    let stdout = if args.json {
        Stdout::Data
    } else {
        Stdout::Text
    };
    let model = load_model(&paths, stdout)?;
    let e = Explainer::new(&model).explain(&pixels);
    if let Some(png) = &args.png {
        let title = format!(
            "mnist-cnn explain: {source}, model {}",
            paths.stem().display()
        );
        explain::write_sheet(png, &e, &title)?;
    }
    if args.json {
        let mut value = serde_json::to_value(&e)?;
        value["source"] = source.into();
        value["label"] = label.into();
        return Ok(print(value)?);
    }
    let truth = label.map(|l| format!(", label {l}")).unwrap_or_default();
    print(format_args!("{source}{truth}: predicted {}", e.predicted))?;
    for (digit, p) in e.probabilities.iter().enumerate() {
        let bar = "#".repeat((p * 40.0).round() as usize);
        let line = format!("  {digit}: {:>6.2}% {bar}", p * 100.0);
        print(line.trim_end())?;
    }
    let active = e.hidden.iter().filter(|&&h| h > 0.0).count();
    print(format_args!(
        "{active} of {} hidden units active; saliency: {}",
        e.hidden.len(),
        e.saliency_method
    ))?;
    if let Some(png) = &args.png {
        print(format_args!("sheet written to {}", png.display()))?;
    }
    Ok(())
}

/// Image `index` of `split` as the network reads it, with a name and its label.
fn dataset_image(
    args: &ExplainArgs,
    split: Split,
    index: usize,
) -> Result<(String, Option<u8>, Vec<f32>)> {
    let set = match split {
        Split::Train => "training",
        Split::Test => "test",
    };
    let out_of_range = |len: usize| {
        anyhow!(
            "there is no {set} image {index}: the {len} {set} images are numbered 0 to {}",
            len.saturating_sub(1)
        )
    };
    if index >= split.size() {
        return Err(out_of_range(split.size()));
    }
    let dir = &args.data.data_dir;
    let data = data::load(dir, split).map_err(|e| data_failed(e, dir))?;
    if index >= data.len() {
        return Err(out_of_range(data.len()));
    }
    let mut pixels = Vec::new();
    data.images.scaled_into(&[index], &mut pixels);
    Ok((
        format!("{set} image {index}"),
        Some(data.labels[index]),
        pixels,
    ))
}
