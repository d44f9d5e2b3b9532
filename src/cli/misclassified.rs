//! `mnist-cnn misclassified`: the test images the model gets wrong, listed,
//! drawn, written as pictures, or asked of the user as the tutorial's quiz.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Result, anyhow, bail};

use mnist_cnn::data::Examples;
use mnist_cnn::files::check_writable;
use mnist_cnn::misclassified::{self, Mistake};
use mnist_cnn::picture;

use super::args::MisclassifiedArgs;
use super::common::Stdout;
use super::eval::evaluate_saved;
use crate::term::{self, note, print};

/// Most digits one `--sheet` draws: enough for any look, small enough that
/// the picture (some 80 kB a digit) stays far from the memory limits.
const MAX_SHEET: usize = 100;

pub fn run(args: &MisclassifiedArgs) -> Result<()> {
    if let Some(dir) = &args.png {
        let named_as_picture = dir
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"));
        if dir.is_file() || (named_as_picture && !dir.is_dir()) {
            bail!(
                "--png wants a folder, to write each digit into as its own PNG file; {} {}: \
                 for one picture of them all, use --sheet FILE",
                dir.display(),
                if dir.is_file() {
                    "is a file"
                } else {
                    "is named as a picture"
                }
            );
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    if let Some(sheet) = &args.sheet {
        picture::check_png_name(sheet)?;
        check_writable(sheet)?;
    }
    let (evaluation, test) = evaluate_saved(
        &args.backend,
        &args.data,
        &args.model,
        args.batch.batch_size,
        if args.json {
            Stdout::Data
        } else {
            Stdout::Text
        },
    )?;
    let count = (!args.all).then_some(args.count);
    let picked = misclassified::pick(&evaluation, &test, count, args.seed);
    let (total, mistakes) = (picked.total, &picked.mistakes);
    if let Some(n) = count.filter(|&n| n > total && !args.random) {
        note(format!(
            "only {total} of {} test images are misclassified (asked for {n})",
            test.len()
        ));
    }
    if let Some(dir) = &args.png {
        for (m, path) in mistakes.iter().zip(misclassified::png_paths(dir, mistakes)) {
            let pixels = test.images.image(m.index);
            picture::write_png(&path, pixels, args.scale, args.as_stored)?;
        }
    }
    if let Some(path) = &args.sheet {
        if mistakes.is_empty() {
            note(format!(
                "no mistakes to show: {} not written",
                path.display()
            ));
        } else {
            if mistakes.len() > MAX_SHEET {
                note(format!(
                    "the sheet shows the first {MAX_SHEET} of the {} digits",
                    mistakes.len()
                ));
            }
            let cards: Vec<_> = mistakes
                .iter()
                .take(MAX_SHEET)
                .map(|m| misclassified::card(m, &test))
                .collect();
            let title = format!(
                "{} of the {total} test images the model gets wrong ({})",
                cards.len(),
                args.model.paths(&args.data).stem().display()
            );
            picture::write_sheet(path, &title, &cards)?;
        }
    }
    if args.json {
        return Ok(print(serde_json::to_string(mistakes)?)?);
    }
    let colour = term::colour();
    if args.quiz {
        let (asked, intro) = if args.random {
            let asked = misclassified::random(&evaluation, &test, args.count, args.seed);
            let intro = format!(
                "Quiz: {} random test images, some the model gets right, some wrong. \
                 Which digit is each?",
                asked.len()
            );
            (asked, intro)
        } else {
            let intro = format!(
                "Quiz: {} of the {total} test images the model gets wrong. Which digit is each?",
                mistakes.len()
            );
            (mistakes.clone(), intro)
        };
        quiz(
            &asked,
            &intro,
            args.random,
            &test,
            colour,
            &mut std::io::stdin().lock(),
        )?;
    } else {
        print(format_args!(
            "{total} of {} test images misclassified; showing {}",
            test.len(),
            mistakes.len()
        ))?;
        let blocks: Vec<Vec<String>> = mistakes
            .iter()
            .map(|m| block(m, &test, !args.no_render, colour))
            .collect();
        print_side_by_side(&blocks, term::width())?;
    }
    if let Some(dir) = &args.png {
        print(format_args!("\nPNG files written to {}", dir.display()))?;
    }
    if let Some(path) = &args.sheet
        && !mistakes.is_empty()
    {
        print(format_args!("Sheet written to {}", path.display()))?;
    }
    Ok(())
}

/// Visible width of one digit's block: the 28-column drawing and a gap.
const BLOCK: usize = 30;

/// One mistake as lines of at most [`BLOCK`] visible columns: what it is,
/// its drawing (unless not asked for), and the ten probabilities as bars.
fn block(m: &Mistake, test: &Examples, drawn: bool, colour: bool) -> Vec<String> {
    let mut lines = vec![
        format!("#{}: predicted {}, true {}", m.index, m.predicted, m.truth),
        format!("confidence {:.1}%", m.confidence * 100.0),
    ];
    if drawn {
        lines.extend(picture::render_compact(test.images.image(m.index), colour));
    }
    lines.push("0123456789 <- digit".to_string());
    lines.push(format!(
        "{} <- probability",
        picture::probability_bars(&m.probabilities)
    ));
    lines
}

/// Prints blocks of lines side by side, as many to a row as `width`
/// columns hold (at most five, the tutorial's row), a blank line between rows.
fn print_side_by_side(blocks: &[Vec<String>], width: usize) -> std::io::Result<()> {
    let per_row = (width / BLOCK).clamp(1, 5);
    for row in blocks.chunks(per_row) {
        print("")?;
        let height = row.iter().map(Vec::len).max().unwrap_or(0);
        for l in 0..height {
            let mut line = String::new();
            for (b, block) in row.iter().enumerate() {
                let text = block.get(l).map_or("", String::as_str);
                line.push_str(text);
                if b + 1 < row.len() {
                    // Colour codes take no columns: pad by what shows.
                    let shown = visible_width(text);
                    line.push_str(&" ".repeat(BLOCK.saturating_sub(shown)));
                }
            }
            print(line.trim_end())?;
        }
    }
    Ok(())
}

/// Columns `text` takes in a terminal: its characters, escape sequences aside.
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

/// The running score, shared with the Ctrl-C handler so that an
/// interrupted quiz still ends with it.
#[derive(Default)]
struct Score {
    yours: AtomicUsize,
    model: AtomicUsize,
    asked: AtomicUsize,
}

impl Score {
    fn line(&self, random: bool) -> String {
        let (yours, model, asked) = (
            self.yours.load(Ordering::Relaxed),
            self.model.load(Ordering::Relaxed),
            self.asked.load(Ordering::Relaxed),
        );
        let mut line = format!("you: {yours}/{asked}, model: {model}/{asked}");
        if !random && asked > 0 {
            line.push_str(
                " (the model scores 0 on its own mistakes; --quiz --random asks any test digits)",
            );
        }
        line
    }
}

/// The tutorial's closing question, asked of the user: each digit drawn
/// without its labels under a line saying where the quiz stands (16 lines:
/// an 80×24 terminal shows the question whole), a guess read from `input`,
/// then the model's answer and the truth. `q`, the end of the input or
/// Ctrl-C end it with the score so far.
fn quiz(
    asked: &[Mistake],
    intro: &str,
    random: bool,
    test: &Examples,
    colour: bool,
    input: &mut dyn std::io::BufRead,
) -> Result<()> {
    let score = Arc::new(Score::default());
    let on_interrupt = Arc::clone(&score);
    term::on_ctrl_c(move || {
        let _ = print("");
        let _ = print(format_args!("(stopped) {}", on_interrupt.line(random)));
    });
    print(intro)?;
    'digits: for (n, m) in asked.iter().enumerate() {
        let so_far = score.asked.load(Ordering::Relaxed);
        print(format_args!(
            "\nDigit {} of {} - you {}/{so_far} so far (q to stop)",
            n + 1,
            asked.len(),
            score.yours.load(Ordering::Relaxed)
        ))?;
        for line in picture::render_compact(test.images.image(m.index), colour) {
            print(line)?;
        }
        let guess = loop {
            term::prompt("your answer (0-9): ")?;
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                print("")?;
                print(format_args!(
                    "(input ended after {so_far} of {})",
                    asked.len()
                ))?;
                break 'digits;
            }
            match line.trim() {
                d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                    break d.as_bytes()[0] - b'0';
                }
                "q" | "Q" | "quit" => {
                    print(format_args!("(stopped after {so_far} of {})", asked.len()))?;
                    break 'digits;
                }
                other => note(format!(
                    "{other:?} is not a digit: type one of 0-9, or q to stop"
                )),
            }
        };
        let verdict = if guess == m.truth {
            score.yours.fetch_add(1, Ordering::Relaxed);
            "right"
        } else {
            "wrong"
        };
        if m.predicted == m.truth {
            score.model.fetch_add(1, Ordering::Relaxed);
        }
        score.asked.fetch_add(1, Ordering::Relaxed);
        print(format_args!(
            "you: {guess} ({verdict}) - model: {} ({:.1}% sure) - true: {} (test image #{})",
            m.predicted,
            m.confidence * 100.0,
            m.truth,
            m.index
        ))?;
    }
    print(format_args!("\n{}", score.line(random)))?;
    Ok(())
}
