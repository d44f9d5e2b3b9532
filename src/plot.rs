//! The learning curves: loss and accuracy per epoch, for training and, where
//! the history has them, for validation: the picture Keras users draw from
//! `history.history` with matplotlib, here as an SVG file (plotters' SVG
//! backend, which writes text as SVG text: no font files needed).

use std::path::Path;

use plotters::prelude::*;
use thiserror::Error;

use crate::files::{FileError, write_atomically};
use crate::train::EpochStats;

/// Size of the picture in pixels with a legend of two lines: two charts
/// side by side, the legend below them (the height grows or shrinks by a
/// line of the legend).
pub const SIZE: (u32, u32) = (1000, 420);

/// Colour of the training curves (matplotlib's first colour).
pub const TRAIN_COLOUR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// Colour of the validation curves (matplotlib's second colour).
pub const VALIDATION_COLOUR: RGBColor = RGBColor(0xff, 0x7f, 0x0e);

/// The colours of the runs of a comparison, in turn: matplotlib's cycle.
pub const RUN_COLOURS: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// Most runs one picture compares: one colour each.
pub const MAX_RUNS: usize = RUN_COLOURS.len();

/// A loss above this many times its lowest is drawn on a log scale, where
/// a diverged run's 1e22 and a good run's 0.03 are both readable.
const LOG_SCALE_ABOVE: f64 = 100.0;

/// Height of one line of the legend.
const LEGEND_LINE: u32 = 24;

/// Why the curves could not be drawn or written.
#[derive(Debug, Error)]
pub enum PlotError {
    #[error("no epochs recorded yet: nothing to plot")]
    Empty,
    #[error("at most {MAX_RUNS} runs fit one picture, not {0}")]
    TooMany(usize),
    #[error("cannot draw the learning curves: {0}")]
    Draw(String),
    #[error(transparent)]
    File(#[from] FileError),
}

/// One run's curves and what the legend calls it.
pub struct Run<'a> {
    /// `None` for a picture of one run, whose legend says only "training"
    /// and "validation".
    pub name: Option<String>,
    pub history: &'a [EpochStats],
    /// What the validation figures were measured on.
    pub validation: Option<&'a str>,
}

/// One curve: its points, colour, legend text and whether it is dashed.
struct Curve {
    /// (epoch, value): epochs are whole, and so are the axis's ticks.
    points: Vec<(i32, f64)>,
    colour: RGBColor,
    label: String,
    dashed: bool,
}

/// One chart: a quantity's curves and the axis they are drawn on.
struct Chart {
    title: &'static str,
    curves: Vec<Curve>,
    /// The value axis: `(low, high)`, in log10 units when `log`.
    range: (f64, f64),
    log: bool,
}

/// The SVG of one run's curves: loss on the left, accuracy on the right,
/// one point per epoch; `validation` names what the validation figures
/// were measured on, for the legend.
pub fn svg(history: &[EpochStats], validation: Option<&str>) -> Result<String, PlotError> {
    svg_of_runs(&[Run {
        name: None,
        history,
        validation,
    }])
}

/// The SVG of several runs' curves on the same two charts, each run in its
/// own colour (validation dashed), the legend naming each below the charts
/// (so that it covers no point).
pub fn svg_of_runs(runs: &[Run]) -> Result<String, PlotError> {
    if runs.len() > MAX_RUNS {
        return Err(PlotError::TooMany(runs.len()));
    }
    if runs.is_empty() || runs.iter().any(|r| r.history.is_empty()) {
        return Err(PlotError::Empty);
    }
    let mut loss = Vec::new();
    let mut accuracy = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let series = |f: &dyn Fn(&EpochStats) -> Option<f64>| -> Vec<(i32, f64)> {
            run.history
                .iter()
                .filter_map(|e| f(e).map(|v| (e.epoch as i32, v)))
                .collect()
        };
        let validation = format!("validation ({})", run.validation.unwrap_or("held-out data"));
        let (train_colour, val_colour, train_label, val_label, dashed) = match &run.name {
            None => (
                TRAIN_COLOUR,
                VALIDATION_COLOUR,
                "training".to_string(),
                validation,
                false,
            ),
            Some(name) => (
                RUN_COLOURS[i],
                RUN_COLOURS[i],
                format!("{name}: training"),
                format!("{name}: {validation}"),
                true,
            ),
        };
        for (chart, train, val) in [
            (
                &mut loss,
                series(&|e| Some(e.loss)),
                series(&|e| e.validation.map(|v| v.loss)),
            ),
            (
                &mut accuracy,
                series(&|e| Some(e.accuracy)),
                series(&|e| e.validation.map(|v| v.accuracy)),
            ),
        ] {
            chart.push(Curve {
                points: train,
                colour: train_colour,
                label: train_label.clone(),
                dashed: false,
            });
            if !val.is_empty() {
                chart.push(Curve {
                    points: val,
                    colour: val_colour,
                    label: val_label.clone(),
                    dashed,
                });
            }
        }
    }
    let values = |curves: &[Curve]| -> Vec<f64> {
        curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .collect()
    };
    let losses = values(&loss);
    let highest = losses.iter().copied().fold(0.0, f64::max);
    let smallest = losses
        .iter()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let log = highest > LOG_SCALE_ABOVE * smallest;
    let loss_range = if log {
        for curve in &mut loss {
            for p in &mut curve.points {
                p.1 = p.1.max(smallest).log10();
            }
        }
        (
            smallest.log10().floor(),
            highest.log10().ceil().max(smallest.log10().floor() + 1.0),
        )
    } else {
        (0.0, nice_ceiling(highest * 1.05))
    };
    let lowest = values(&accuracy).into_iter().fold(1.0, f64::min);
    let charts = [
        Chart {
            title: "loss",
            curves: loss,
            range: loss_range,
            log,
        },
        Chart {
            title: "accuracy",
            curves: accuracy,
            range: ((lowest * 10.0 - 0.5).floor().max(0.0) / 10.0, 1.0),
            log: false,
        },
    ];
    let first = runs.iter().map(|r| r.history[0].epoch).min().unwrap_or(1);
    let last = runs
        .iter()
        .map(|r| r.history[r.history.len() - 1].epoch)
        .max()
        .unwrap_or(1);
    // The legend: each curve's label once, in the order drawn.
    let mut legend: Vec<(&str, RGBColor, bool)> = Vec::new();
    for curve in &charts[0].curves {
        if !legend.iter().any(|(l, _, _)| *l == curve.label) {
            legend.push((&curve.label, curve.colour, curve.dashed));
        }
    }
    // Two entries a line where they fit, else one.
    let columns = if legend.iter().all(|(l, _, _)| l.chars().count() <= 52) {
        2
    } else {
        1
    };
    let legend_height = LEGEND_LINE * legend.len().div_ceil(columns) as u32 + 12;
    let size = (SIZE.0, SIZE.1 - 2 * LEGEND_LINE + legend_height);

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_failed)?;
        let (charts_area, legend_area) = root.split_vertically(size.1 - legend_height);
        let halves = charts_area.split_evenly((1, 2));
        for (area, chart) in halves.iter().zip(&charts) {
            draw(area, chart, first, last)?;
        }
        draw_legend(&legend_area, &legend, columns)?;
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

/// Writes [`svg_of_runs`] to `path` (atomically).
pub fn write_runs(path: &Path, runs: &[Run]) -> Result<(), PlotError> {
    Ok(write_atomically(path, svg_of_runs(runs)?.as_bytes())?)
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
    first: usize,
    last: usize,
) -> Result<(), PlotError> {
    // Whole epochs, one to spare at each end, so that every tick is one.
    let (first, last) = (first as i32, last as i32);
    let epochs = first - 1..last + 1;
    let title = if chart.log {
        format!("{} (log scale)", chart.title)
    } else {
        chart.title.to_string()
    };
    let mut ctx = ChartBuilder::on(area)
        .caption(&title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(epochs, chart.range.0..chart.range.1)
        .map_err(draw_failed)?;
    let log = chart.log;
    let value = move |y: &f64| {
        if log {
            // Ticks at whole powers of ten only.
            if (y - y.round()).abs() < 1e-9 {
                let v = 10f64.powf(y.round());
                if (1e-3..1e4).contains(&v) {
                    format!("{v}")
                } else {
                    format!("1e{}", y.round())
                }
            } else {
                String::new()
            }
        } else {
            format!("{y:.2}")
        }
    };
    ctx.configure_mesh()
        .x_desc("epoch")
        .y_desc(chart.title)
        .x_label_formatter(&|&x| {
            if (first..=last).contains(&x) {
                x.to_string()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&value)
        .axis_desc_style(("sans-serif", 18))
        .label_style(("sans-serif", 15))
        .max_light_lines(0)
        .draw()
        .map_err(draw_failed)?;
    for curve in &chart.curves {
        let style = curve.colour.stroke_width(2);
        if curve.dashed {
            ctx.draw_series(DashedLineSeries::new(
                curve.points.iter().copied(),
                8,
                5,
                style,
            ))
            .map_err(draw_failed)?;
        } else {
            ctx.draw_series(LineSeries::new(curve.points.iter().copied(), style))
                .map_err(draw_failed)?;
        }
        ctx.draw_series(
            curve
                .points
                .iter()
                .map(|&p| Circle::new(p, 4, curve.colour.filled())),
        )
        .map_err(draw_failed)?;
    }
    Ok(())
}

/// The legend in its own strip under the charts, `columns` entries a
/// line: a sample of each line and its label.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(&str, RGBColor, bool)],
    columns: usize,
) -> Result<(), PlotError> {
    let column = (area.dim_in_pixel().0 as usize / columns) as i32;
    for (n, (label, colour, dashed)) in entries.iter().enumerate() {
        let x = 24 + (n % columns) as i32 * column;
        let y = 12 + (n / columns) as i32 * LEGEND_LINE as i32;
        let style = colour.stroke_width(2);
        if *dashed {
            for dash in 0..3 {
                let x0 = x + dash * 11;
                area.draw(&PathElement::new(vec![(x0, y), (x0 + 7, y)], style))
                    .map_err(draw_failed)?;
            }
        } else {
            area.draw(&PathElement::new(vec![(x, y), (x + 30, y)], style))
                .map_err(draw_failed)?;
        }
        area.draw(&Text::new(
            label.to_string(),
            (x + 40, y - 8),
            ("sans-serif", 15).into_font().color(&BLACK),
        ))
        .map_err(draw_failed)?;
    }
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

    /// The y coordinate of the text element whose content is `text`.
    fn text_y(svg: &str, text: &str) -> f64 {
        let tag = svg
            .split("<text ")
            .skip(1)
            .find(|t| t[t.find('>').unwrap() + 1..t.find("</text>").unwrap()].trim() == text)
            .unwrap_or_else(|| panic!("no text {text:?}"));
        let at = tag.find("y=\"").unwrap() + 3;
        tag[at..at + tag[at..].find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn epoch_ticks_are_whole_epochs_only() {
        let history = [epoch(1, 0.9, 0.7, None), epoch(2, 0.4, 0.88, None)];
        let svg = svg(&history, None).unwrap();
        let numbers: Vec<String> = texts(&svg)
            .into_iter()
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
            .collect();
        assert_eq!(numbers, ["1", "2", "1", "2"], "x ticks of both charts");
    }

    #[test]
    fn a_runaway_loss_is_drawn_on_a_log_scale() {
        let history = [epoch(1, 7.6e10, 0.09, None), epoch(2, 452.4, 0.11, None)];
        let svg = svg(&history, None).unwrap();
        let words = texts(&svg);
        assert!(words.iter().any(|w| w == "loss (log scale)"), "{words:?}");
        for tick in ["1e11", "1000", "100"] {
            assert!(words.iter().any(|w| w == tick), "{tick} missing: {words:?}");
        }
        // An ordinary run keeps its linear axis.
        let ordinary = [epoch(1, 0.35, 0.89, None), epoch(2, 0.12, 0.96, None)];
        assert!(!super::svg(&ordinary, None).unwrap().contains("log scale"));
    }

    #[test]
    fn several_runs_share_the_charts_each_named_in_its_colour_below_them() {
        let a = [
            epoch(1, 0.9, 0.7, Some((0.5, 0.85))),
            epoch(2, 0.4, 0.88, None),
        ];
        let b = [
            epoch(1, 0.6, 0.8, None),
            epoch(2, 0.3, 0.9, None),
            epoch(3, 0.2, 0.93, None),
        ];
        let runs = [
            Run {
                name: Some("sgd run".into()),
                history: &a,
                validation: Some("the 10000 test images"),
            },
            Run {
                name: Some("adam run".into()),
                history: &b,
                validation: None,
            },
        ];
        let svg = svg_of_runs(&runs).unwrap();
        let words = texts(&svg);
        for label in [
            "sgd run: training",
            "sgd run: validation (the 10000 test images)",
            "adam run: training",
        ] {
            assert!(words.iter().any(|w| w == label), "{label}: {words:?}");
        }
        for colour in &RUN_COLOURS[..2] {
            let stroke = format!(
                "stroke=\"#{:02X}{:02X}{:02X}\"",
                colour.0, colour.1, colour.2
            );
            assert!(svg.contains(&stroke), "{stroke}");
        }
        // The legend is under the axes' names: it covers no point.
        let below = text_y(&svg, "epoch");
        assert!(text_y(&svg, "adam run: training") > below);
        assert!(matches!(svg_of_runs(&[]), Err(PlotError::Empty)));
        let many: Vec<Run> = (0..=MAX_RUNS)
            .map(|_| Run {
                name: Some("r".into()),
                history: &a,
                validation: None,
            })
            .collect();
        assert!(matches!(svg_of_runs(&many), Err(PlotError::TooMany(11))));
    }
}
