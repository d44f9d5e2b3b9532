//! The learning curves: loss and accuracy per epoch, for training and, where
//! the history has them, for validation: the picture Keras users draw from
//! `history.history` with matplotlib, here as an SVG file (plotters' SVG
//! backend, which writes text as SVG text: no font files needed).

use std::path::Path;

use plotters::prelude::*;
use thiserror::Error;

use crate::files::{FileError, write_atomically};
use crate::train::EpochStats;

/// Size of the picture in pixels: two charts side by side.
pub const SIZE: (u32, u32) = (1000, 420);

/// Colour of the training curves (matplotlib's first colour).
pub const TRAIN_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Colour of the validation curves (matplotlib's second colour).
pub const VALIDATION_COLOUR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// Why the curves could not be drawn or written.
#[derive(Debug, Error)]
pub enum PlotError {
    #[error("no epochs recorded yet: nothing to plot")]
    Empty,
    #[error("cannot draw the learning curves: {0}")]
    Draw(String),
    #[error(transparent)]
    File(#[from] FileError),
}

/// One chart: a quantity's training and validation values per epoch.
struct Chart<'a> {
    title: &'a str,
    train: Vec<(f64, f64)>,
    validation: Vec<(f64, f64)>,
    /// The value axis: `(low, high)`.
    range: (f64, f64),
}

/// The SVG of `history`'s curves: loss on the left, accuracy on the right,
/// one point per epoch; `validation` names what the validation figures
/// were measured on, for the legend.
pub fn svg(history: &[EpochStats], validation: Option<&str>) -> Result<String, PlotError> {
    if history.is_empty() {
        return Err(PlotError::Empty);
    }
    let series = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .iter()
            .filter_map(|e| f(e).map(|v| (e.epoch as f64, v)))
            .collect()
    };
    let loss = series(&|e| Some(e.loss));
    let val_loss = series(&|e| e.validation.map(|v| v.loss));
    let accuracy = series(&|e| Some(e.accuracy));
    let val_accuracy = series(&|e| e.validation.map(|v| v.accuracy));
    let highest = loss
        .iter()
        .chain(&val_loss)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let lowest = accuracy
        .iter()
        .chain(&val_accuracy)
        .map(|p| p.1)
        .fold(1.0, f64::min);
    let charts = [
        Chart {
            title: "loss",
            train: loss,
            validation: val_loss,
            range: (0.0, nice_ceiling(highest * 1.05)),
        },
        Chart {
            title: "accuracy",
            train: accuracy,
            validation: val_accuracy,
            range: ((lowest * 10.0 - 0.5).floor().max(0.0) / 10.0, 1.0),
        },
    ];
    let first = history[0].epoch as f64;
    let last = history[history.len() - 1].epoch as f64;
    let epochs = (first - 0.5)..(last + 0.5);
    let validation = format!("validation ({})", validation.unwrap_or("held-out data"));

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_failed)?;
        let halves = root.split_evenly((1, 2));
        for (area, chart) in halves.iter().zip(&charts) {
            draw(area, chart, epochs.clone(), &validation)?;
        }
        root.present().map_err(draw_failed)?;
    }
    Ok(out)
}

/// Writes [`svg`] to `path` (atomically).
pub fn write(
    path: &Path,
    history: &[EpochStats],
    validation: Option<&str>,
) -> Result<(), PlotError> {
    Ok(write_atomically(
        path,
        svg(history, validation)?.as_bytes(),
    )?)
}

fn draw_failed(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The smallest of 1, 2, 2.5 or 5 times a power of ten that is at least `x`
/// (so that the axis ends on a round value).
fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * power)
}

fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &Chart,
    epochs: std::ops::Range<f64>,
    validation: &str,
) -> Result<(), PlotError> {
    let mut ctx = ChartBuilder::on(area)
        .caption(chart.title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(epochs, chart.range.0..chart.range.1)
        .map_err(draw_failed)?;
    let whole = |x: &f64| {
        if (x - x.round()).abs() < 1e-9 {
            format!("{}", x.round())
        } else {
            String::new()
        }
    };
    ctx.configure_mesh()
        .x_desc("epoch")
        .y_desc(chart.title)
        .x_label_formatter(&whole)
        .y_label_formatter(&|y| format!("{y:.2}"))
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .max_light_lines(0)
        .draw()
        .map_err(draw_failed)?;
    for (points, colour, name) in [
        (&chart.train, TRAIN_COLOUR, "training"),
        (&chart.validation, VALIDATION_COLOUR, validation),
    ] {
        if points.is_empty() {
            continue;
        }
        ctx.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(2),
        ))
        .map_err(draw_failed)?
        .label(name)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
        ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))
            .map_err(draw_failed)?;
    }
    let corner = if chart.title == "loss" {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::LowerRight
    };
    ctx.configure_series_labels()
        .position(corner)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(draw_failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::Score;

    fn epoch(epoch: usize, loss: f64, accuracy: f64, val: Option<(f64, f64)>) -> EpochStats {
        EpochStats {
            epoch,
            loss,
            accuracy,
            seconds: 1.0,
            validation: val.map(|(loss, accuracy)| Score { loss, accuracy }),
        }
    }

    /// The contents of the SVG's text elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text ")
            .skip(1)
            .map(|t| {
                t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()]
                    .trim()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn axes_end_on_round_values() {
        assert_eq!(nice_ceiling(0.37), 0.5);
        assert_eq!(nice_ceiling(2.31), 2.5);
        assert_eq!(nice_ceiling(0.09), 0.1);
        assert_eq!(nice_ceiling(0.0), 1.0);
    }

    #[test]
    fn there_is_no_picture_of_no_epochs() {
        assert!(matches!(svg(&[], None), Err(PlotError::Empty)));
    }

    #[test]
    fn the_svg_has_titles_axis_names_and_a_legend() {
        let history = [
            epoch(1, 0.9, 0.7, Some((0.5, 0.85))),
            epoch(2, 0.4, 0.88, Some((0.3, 0.91))),
        ];
        let svg = svg(&history, Some("the 10000 test images")).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        let words = texts(&svg);
        for text in [
            "loss",
            "accuracy",
            "epoch",
            "training",
            "validation (the 10000 test images)",
        ] {
            assert!(words.iter().any(|w| w == text), "{text} missing: {words:?}");
        }
        // Without validation figures: no validation curve, no legend entry.
        let svg = super::svg(&[epoch(1, 0.9, 0.7, None)], None).unwrap();
        assert!(!svg.contains("validation"));
        assert!(texts(&svg).iter().any(|w| w == "training"));
    }
}
