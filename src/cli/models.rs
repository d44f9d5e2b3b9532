//! `mnist-cnn models`: the models a folder holds (automatic backups pile
//! up at 10 MB each), and the removal of the ones no longer wanted.

use anyhow::{Result, anyhow};

use mnist_cnn::store::{self, ModelPaths, StoreError};
use mnist_cnn::train::Metadata;

use super::args::ModelsArgs;
use super::common::{count, saved_at};
use crate::term::print;

pub fn run(args: &ModelsArgs) -> Result<()> {
    let folder = args.folder.as_ref().unwrap_or(&args.data.data_dir);
    // A folder not made yet (a fresh clone's data/) holds no models.
    let models = match store::models_in(folder) {
        Err(StoreError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Vec::new()
        }
        listed => listed?,
    };
    if !args.remove.is_empty() {
        return remove(&args.remove, &models, folder);
    }
    let rows: Vec<Row> = models.iter().map(Row::of).collect();
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "epochs": r.metadata.as_ref().map(Metadata::epochs_done),
                    "test_accuracy": r.metadata.as_ref().and_then(|m| m.test).map(|t| t.accuracy),
                    "optimizer": r.metadata.as_ref().map(|m| m.config.optimizer.name()),
                    "saved": r.saved,
                    "bytes": r.bytes,
                })
            })
            .collect();
        return Ok(print(serde_json::Value::Array(json))?);
    }
    if rows.is_empty() {
        print(format_args!(
            "no models in {}: `mnist-cnn train` makes one",
            folder.display()
        ))?;
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    print(format_args!(
        "{:<width$}  {:>6}  {:>8}  {:<12}  {:<20}  {:>7}",
        "name", "epochs", "test acc", "optimizer", "saved", "size"
    ))?;
    for r in &rows {
        let m = r.metadata.as_ref();
        let epochs = m.map_or("?".into(), |m| m.epochs_done().to_string());
        let accuracy = m
            .and_then(|m| m.test)
            .map_or("-".into(), |t| format!("{:.4}", t.accuracy));
        let optimizer = m.map_or("?".into(), |m| m.config.optimizer.describe());
        print(format_args!(
            "{:<width$}  {epochs:>6}  {accuracy:>8}  {optimizer:<12}  {:<20}  {:>4.1} MB",
            r.name,
            r.saved.as_deref().unwrap_or("?"),
            r.bytes as f64 / 1e6
        ))?;
    }
    let total: u64 = rows.iter().map(|r| r.bytes).sum();
    print(format_args!(
        "{} in {}, {:.1} MB; remove one with `mnist-cnn models --remove NAME`",
        count(rows.len(), "model"),
        folder.display(),
        total as f64 / 1e6
    ))?;
    Ok(())
}

/// One model as the listing shows it.
struct Row {
    name: String,
    /// `None` when the record is missing or unreadable.
    metadata: Option<Metadata>,
    saved: Option<String>,
    /// The weights, record and curves together.
    bytes: u64,
}

impl Row {
    fn of(paths: &ModelPaths) -> Self {
        let bytes = [&paths.weights, &paths.metadata, &paths.plot]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Self {
            name: name(paths),
            metadata: paths.load_metadata().ok(),
            saved: saved_at(&paths.weights),
            bytes,
        }
    }
}

/// The name `--remove` takes: the file name without `.bpk`.
fn name(paths: &ModelPaths) -> String {
    paths
        .stem()
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Removes the models named, each one only if it is in the listing (so no
/// other file is ever touched), all checked before any goes.
fn remove(names: &[String], models: &[ModelPaths], folder: &std::path::Path) -> Result<()> {
    let mut chosen: Vec<&ModelPaths> = names
        .iter()
        .map(|wanted| {
            let wanted = wanted.strip_suffix(".bpk").unwrap_or(wanted);
            models.iter().find(|m| name(m) == wanted).ok_or_else(|| {
                anyhow!(
                    "there is no model {wanted} in {} (`mnist-cnn models {}` lists them)",
                    folder.display(),
                    folder.display()
                )
            })
        })
        .collect::<Result<_>>()?;
    chosen.sort_by_key(|p| p.weights.clone());
    chosen.dedup_by_key(|p| p.weights.clone());
    for paths in chosen {
        let freed: u64 = [&paths.weights, &paths.metadata, &paths.plot]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        paths.remove()?;
        print(format_args!(
            "removed {} ({:.1} MB)",
            paths.weights.display(),
            freed as f64 / 1e6
        ))?;
    }
    Ok(())
}
