//! Learning curves through the binary: `train --validate` records the test
//! set's figures after every epoch without changing training, and the
//! curves are drawn beside the model and by `plot`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{mnist_cnn, stdout_of};
use mnist_cnn::plot::{TRAIN_COLOUR, VALIDATION_COLOUR};
use mnist_cnn::store::ModelPaths;
use mnist_cnn::train::{EpochStats, Metadata};
use serde_json::Value;

const EPOCHS: usize = 3;

struct Run {
    model: PathBuf,
    stdout: String,
}

/// The same short training run twice, with and without `--validate`.
fn runs() -> &'static (tempfile::TempDir, Run, Run) {
    static RUNS: OnceLock<(tempfile::TempDir, Run, Run)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let train = |name: &str, validate: bool| {
            let model = dir.path().join(name);
            let mut cmd = mnist_cnn();
            cmd.args(["train", "--epochs", &EPOCHS.to_string(), "--limit", "600"])
                .arg("--data-dir")
                .arg(common::data_dir())
                .arg("--model")
                .arg(&model);
            if validate {
                cmd.arg("--validate");
            }
            let stdout = stdout_of(&mut cmd);
            Run { model, stdout }
        };
        let validated = train("validated", true);
        let plain = train("plain", false);
        (dir, validated, plain)
    })
}

fn metadata(model: &Path) -> Metadata {
    ModelPaths::new(model).load_metadata().unwrap()
}

#[test]
fn validating_records_the_test_figures_without_changing_training() {
    let (_, validated, plain) = runs();
    let device = mnist_cnn::backend::host_device();
    let weights = |model: &Path| {
        ModelPaths::new(model)
            .load_weights(&device)
            .unwrap()
            .parameters()
    };
    assert!(
        weights(&validated.model) == weights(&plain.model),
        "--validate changed the trained weights"
    );
    let (v, p) = (metadata(&validated.model), metadata(&plain.model));
    let train_figures = |m: &Metadata| {
        m.history
            .iter()
            .map(|e| (e.loss, e.accuracy))
            .collect::<Vec<_>>()
    };
    assert_eq!(train_figures(&v), train_figures(&p));
    assert_eq!(v.history.len(), EPOCHS);
    assert!(v.history.iter().all(|e| e.validation.is_some()));
    assert!(p.history.iter().all(|e| e.validation.is_none()));
    assert_eq!(v.validation_data.as_deref(), Some("the 10000 test images"));
    let plain_json = std::fs::read_to_string(ModelPaths::new(&plain.model).metadata).unwrap();
    assert!(!plain_json.contains("val_") && !plain_json.contains("validation"));

    // Each epoch line carries its validation figures, as Keras prints them.
    for e in &v.history {
        let line = format!(
            "- val_loss: {:.4} - val_accuracy: {:.4}\n",
            e.validation.unwrap().loss,
            e.validation.unwrap().accuracy
        );
        let epoch_line = validated
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("Epoch {}/{EPOCHS} ", e.epoch)))
            .unwrap();
        assert!(format!("{epoch_line}\n").ends_with(&line), "{epoch_line}");
    }
    assert!(!plain.stdout.contains("val_"), "{}", plain.stdout);

    // The last epoch's figures are those of `eval` on the saved model.
    let eval: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(common::data_dir())
            .arg("--model")
            .arg(&validated.model),
    ))
    .unwrap();
    let last = v.history.last().unwrap();
    assert_eq!(
        last.validation.unwrap().accuracy,
        eval["accuracy"].as_f64().unwrap()
    );
    let loss = eval["loss"].as_f64().unwrap();
    assert!(
        (last.validation.unwrap().loss - loss).abs() < 1e-9,
        "{last:?} vs {loss}"
    );
    let test = v.test.unwrap();
    assert_eq!(
        (test.loss, test.accuracy),
        (
            last.validation.unwrap().loss,
            last.validation.unwrap().accuracy
        )
    );
}

/// The points `(x, y)` of each polyline drawn in `colour` with `n` points
/// (the curves; the legend's samples have two).
fn curves(svg: &str, colour: plotters::style::RGBColor, n: usize) -> Vec<Vec<(f64, f64)>> {
    let stroke = format!(
        "stroke=\"#{:02X}{:02X}{:02X}\"",
        colour.0, colour.1, colour.2
    );
    svg.split("<polyline ")
        .skip(1)
        .map(|tag| &tag[..tag.find("/>").unwrap()])
        .filter(|tag| tag.contains(&stroke))
        .map(|tag| {
            let points = tag.split("points=\"").nth(1).unwrap();
            points[..points.find('"').unwrap()]
                .split_whitespace()
                .map(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect::<Vec<(f64, f64)>>()
        })
        .filter(|points| points.len() == n)
        .collect()
}

/// Checks that pixel heights `ys` are the values `vs` on one linear axis
/// (higher values higher up), to within the pixel the SVG rounds to.
fn on_one_axis(ys: &[f64], vs: &[f64]) {
    let n = ys.len() as f64;
    let (my, mv) = (ys.iter().sum::<f64>() / n, vs.iter().sum::<f64>() / n);
    let cov: f64 = ys.iter().zip(vs).map(|(y, v)| (y - my) * (v - mv)).sum();
    let var: f64 = vs.iter().map(|v| (v - mv).powi(2)).sum();
    let slope = cov / var;
    assert!(
        slope < 0.0,
        "higher values must be drawn higher: {ys:?} {vs:?}"
    );
    for (y, v) in ys.iter().zip(vs) {
        let fitted = my + slope * (v - mv);
        assert!(
            (y - fitted).abs() <= 1.0,
            "{y} is not {v} on the axis: {ys:?} {vs:?}"
        );
    }
}

fn check_curves(svg: &str, history: &[EpochStats], validated: bool) {
    assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches('<').count(), svg.matches('>').count());
    let train = curves(svg, TRAIN_COLOUR, EPOCHS);
    let val = curves(svg, VALIDATION_COLOUR, EPOCHS);
    assert_eq!(train.len(), 2, "a training curve in each chart");
    assert_eq!(val.len(), if validated { 2 } else { 0 });
    let field = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<f64> {
        history.iter().map(|e| f(e).unwrap()).collect()
    };
    // Left: loss; right: accuracy; one point per epoch at the same x.
    let xs: Vec<f64> = train[0].iter().map(|p| p.0).collect();
    let step = xs[1] - xs[0];
    assert!(step > 0.0 && xs.windows(2).all(|w| (w[1] - w[0] - step).abs() <= 1.0));
    for (chart, (values, val_values)) in [
        (
            field(&|e| Some(e.loss)),
            field(&|e| e.validation.map(|v| v.loss).or(Some(0.0))),
        ),
        (
            field(&|e| Some(e.accuracy)),
            field(&|e| e.validation.map(|v| v.accuracy).or(Some(0.0))),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut ys: Vec<f64> = train[chart].iter().map(|p| p.1).collect();
        let mut vs = values;
        if validated {
            let val_xs: Vec<f64> = val[chart].iter().map(|p| p.0).collect();
            let train_xs: Vec<f64> = train[chart].iter().map(|p| p.0).collect();
            assert_eq!(val_xs, train_xs);
            ys.extend(val[chart].iter().map(|p| p.1));
            vs.extend(val_values);
        }
        on_one_axis(&ys, &vs);
    }
    assert!(train[0][0].0 < train[1][0].0, "loss left of accuracy");
    // A dot on each point.
    let markers = |c: plotters::style::RGBColor| {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        svg.split("<circle ")
            .skip(1)
            .filter(|tag| tag[..tag.find("/>").unwrap()].contains(&fill))
            .count()
    };
    assert_eq!(markers(TRAIN_COLOUR), 2 * EPOCHS);
    assert_eq!(
        markers(VALIDATION_COLOUR),
        if validated { 2 * EPOCHS } else { 0 }
    );
}

#[test]
fn the_learning_curves_are_drawn_beside_the_model_one_point_per_epoch() {
    let (_, validated, plain) = runs();
    for (run, with_validation) in [(validated, true), (plain, false)] {
        let paths = ModelPaths::new(&run.model);
        let svg = std::fs::read_to_string(&paths.plot).unwrap();
        check_curves(&svg, &metadata(&run.model).history, with_validation);
        assert!(
            run.stdout
                .contains(&format!("learning curves: {})", paths.plot.display())),
            "{}",
            run.stdout
        );
    }
    let svg = std::fs::read_to_string(ModelPaths::new(&validated.model).plot).unwrap();
    assert!(svg.contains(">\nvalidation (the 10000 test images)\n</text>"));
}

#[test]
fn plot_draws_the_curves_of_a_saved_model() {
    let (dir, validated, _) = runs();
    let out = dir.path().join("pictures/curves.svg");
    let stdout = stdout_of(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(&validated.model)
            .arg("--out")
            .arg(&out),
    );
    assert_eq!(
        stdout,
        format!(
            "Learning curves of {EPOCHS} epochs ({EPOCHS} with validation figures) written to {}\n",
            out.display()
        )
    );
    let drawn = std::fs::read_to_string(&out).unwrap();
    check_curves(&drawn, &metadata(&validated.model).history, true);
    let beside = std::fs::read_to_string(ModelPaths::new(&validated.model).plot).unwrap();
    assert_eq!(drawn, beside, "the same picture as train drew");

    let fails = |cmd: &mut Command, needle: &str| {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && !stderr.contains("panicked"),
            "{stderr}"
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{stderr}");
        assert!(errors[0].contains(needle), "{stderr}");
    };
    fails(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(dir.path().join("none")),
        "none.json not found: train one with",
    );
    fails(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(&validated.model)
            .arg("--out")
            .arg(dir.path()),
        "is a folder, not a file",
    );
}

/// `plot --model A --model B --out F` draws both runs on one picture, in
/// the first two colours of matplotlib's cycle, each named with its
/// settings; several models without `--out` are refused.
#[test]
fn plot_compares_several_runs_on_one_picture() {
    let (dir, validated, plain) = runs();
    let out = dir.path().join("both.svg");
    let said = stdout_of(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(&validated.model)
            .arg("--model")
            .arg(&plain.model)
            .arg("--out")
            .arg(&out),
    );
    assert!(
        said.contains("Learning curves of 2 models (validated, plain)"),
        "{said}"
    );
    let svg = std::fs::read_to_string(&out).unwrap();
    for (colour, run) in mnist_cnn::plot::RUN_COLOURS.iter().zip([validated, plain]) {
        // Each run's training curve in its colour, one point per epoch.
        let lines = curves(&svg, *colour, EPOCHS);
        assert!(!lines.is_empty(), "no curve in {colour:?}");
        let losses: Vec<f64> = metadata(&run.model)
            .history
            .iter()
            .map(|e| e.loss)
            .collect();
        let ys: Vec<f64> = lines[0].iter().map(|p| p.1).collect();
        on_one_axis(&ys, &losses);
    }
    for label in [
        "validated (sgd, lr 0.01, dropout 0.25, seed 42): training",
        "plain (sgd, lr 0.01, dropout 0.25, seed 42): training",
    ] {
        assert!(svg.contains(label), "{label}");
    }
    common::fails_with(
        mnist_cnn()
            .arg("plot")
            .arg("--model")
            .arg(&validated.model)
            .arg("--model")
            .arg(&plain.model),
        "say where it goes with --out FILE.svg",
    );
}
