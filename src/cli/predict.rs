//! `mnist-cnn predict`: digits read from the user's own pictures.

use anyhow::{Result, bail};

use mnist_cnn::eval;
use mnist_cnn::picture;
use mnist_cnn::prepare::{self, PrepareError, Prepared};

use super::args::PredictArgs;
use super::common::{Stdout, load_model};
use super::plan;
use super::preflight::open_device;
use crate::term::{note, print};

pub fn run(args: &PredictArgs) -> Result<()> {
    let paths = args.model.paths(&args.data);
    let stdout = if args.json {
        Stdout::Data
    } else {
        Stdout::Text
    };
    let cnn = load_model(&paths, stdout)?;
    let prepared: Vec<Result<Prepared, PrepareError>> = args
        .images
        .iter()
        .map(|path| prepare::prepare_file(path))
        .collect();
    let inputs: Vec<Vec<f32>> = prepared
        .iter()
        .flatten()
        .map(|p| p.pixels.clone())
        .collect();
    let device = open_device(plan::backend(args.backend.backend, None), &[], true)?;
    let cnn = cnn.copied_to(&device);
    let mut probabilities = eval::classify(&cnn, &inputs, &device).into_iter();
    let mut failed = Vec::new();
    let mut json = Vec::new();
    for (path, result) in args.images.iter().zip(&prepared) {
        let file = path.display();
        let p = match result {
            Ok(p) => p,
            Err(e) => {
                let message = format!("{file}: {e}");
                if args.json {
                    json.push(serde_json::json!({"file": path, "error": e.to_string()}));
                }
                if args.images.len() > 1 {
                    note(format!("error: {message}"));
                }
                failed.push(message);
                continue;
            }
        };
        let probs = probabilities.next().expect("one row per prepared image");
        let top = eval::top(&probs, 3);
        if args.json {
            json.push(serde_json::json!({
                "file": path,
                "predicted": top[0].0,
                "top": top.iter().map(|&(digit, probability)| {
                    serde_json::json!({"digit": digit, "probability": probability})
                }).collect::<Vec<_>>(),
                "probabilities": probs,
                "inverted": p.inverted,
                "thickened": p.thickened,
            }));
            continue;
        }
        let ranked: Vec<String> = top
            .iter()
            .map(|(d, p)| format!("{d}: {:.1}%", p * 100.0))
            .collect();
        print(format_args!("{file}: {} ({})", top[0].0, ranked.join(", ")))?;
        if args.show {
            let how = match (p.inverted, p.thickened) {
                (true, true) => " (inverted, strokes widened)",
                (true, false) => " (inverted)",
                (false, true) => " (strokes widened)",
                (false, false) => "",
            };
            print(format_args!("what the model saw{how}:"))?;
            print(picture::render(&p.bytes()).trim_end_matches('\n'))?;
        }
    }
    if args.json {
        print(serde_json::Value::Array(json))?;
    }
    match &failed[..] {
        [] => Ok(()),
        [only] if args.images.len() == 1 => bail!("{only}"),
        _ => bail!(
            "{} of {} pictures could not be read (see above)",
            failed.len(),
            args.images.len()
        ),
    }
}
