//! `mnist-cnn plot`: a model's learning curves, redrawn from its record,
//! or several models' on one picture to compare them.

use anyhow::{Result, anyhow, bail};

use mnist_cnn::files::check_writable;
use mnist_cnn::plot::{self, Run};
use mnist_cnn::store::{DEFAULT_MODEL_NAME, ModelPaths};
use mnist_cnn::train::Metadata;

use super::args::PlotArgs;
use super::common::{count, model_failed};
use crate::term::print;

pub fn run(args: &PlotArgs) -> Result<()> {
    let paths: Vec<ModelPaths> = match &args.models[..] {
        [] => vec![ModelPaths::new(
            &args.data.data_dir.join(DEFAULT_MODEL_NAME),
        )],
        given => given.iter().map(|p| ModelPaths::new(p)).collect(),
    };
    let out = match (&args.out, &paths[..]) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.plot.clone(),
        (None, _) => bail!(
            "{} models' curves make one picture: say where it goes with --out FILE.svg",
            paths.len()
        ),
    };
    check_writable(&out)?;
    let records: Vec<Metadata> = paths
        .iter()
        .map(|p| p.load_metadata().map_err(|e| model_failed(e, p)))
        .collect::<Result<_>>()?;
    for (p, m) in paths.iter().zip(&records) {
        if m.history.is_empty() {
            bail!("{}: {}", p.metadata.display(), plot::PlotError::Empty);
        }
    }
    let names = names(&paths);
    let runs: Vec<Run> = paths
        .iter()
        .zip(&records)
        .zip(&names)
        .map(|((_, m), name)| Run {
            name: (paths.len() > 1).then(|| {
                let c = &m.config;
                format!(
                    "{name} ({}, lr {}, dropout {}, seed {})",
                    c.optimizer.describe(),
                    c.learning_rate,
                    c.dropout,
                    c.seed
                )
            }),
            history: &m.history,
            validation: m.validation_data.as_deref(),
        })
        .collect();
    plot::write_runs(&out, &runs).map_err(|e| anyhow!(e))?;
    if let [m] = &records[..] {
        let validated = m.history.iter().filter(|e| e.validation.is_some()).count();
        print(format_args!(
            "Learning curves of {} ({validated} with validation figures) written to {}",
            count(m.history.len(), "epoch"),
            out.display()
        ))?;
    } else {
        print(format_args!(
            "Learning curves of {} models ({}) written to {}",
            records.len(),
            names.join(", "),
            out.display()
        ))?;
    }
    Ok(())
}

/// What the legend calls each model: its file name, or its whole path
/// where two share a name.
fn names(paths: &[ModelPaths]) -> Vec<String> {
    let short: Vec<String> = paths
        .iter()
        .map(|p| {
            p.stem()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    short
        .iter()
        .zip(paths)
        .map(|(name, p)| {
            if short.iter().filter(|n| *n == name).count() > 1 {
                p.stem().display().to_string()
            } else {
                name.clone()
            }
        })
        .collect()
}
