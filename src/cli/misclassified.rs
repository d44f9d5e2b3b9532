//! `mnist-cnn misclassified`: the test images the model gets wrong, listed,
//! drawn, written as pictures, or asked of the user as the tutorial's quiz.

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
        if dir.is_file() || named_as_picture {
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
    if let Some(n) = count.filter(|&n| n > total) {
        note(format!(
            "only {total} of {} test images are misclassified (asked for {n})",
            test.len()
        ));
    }
    if let Some(dir) = &args.png {
        for (m, path) in mistakes.iter().zip(misclassified::png_paths(dir, mistakes)) {
            picture::write_png(&path, test.images.image(m.index), args.scale)?;
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
            picture::write_sheet(path, &cards)?;
        }
    }
    if args.json {
        return Ok(print(serde_json::to_string(mistakes)?)?);
    }
    if args.quiz {
        quiz(mistakes, total, &test, &mut std::io::stdin().lock())?;
    } else {
        print(format_args!(
            "{total} of {} test images misclassified; showing {}",
            test.len(),
            mistakes.len()
        ))?;
        for m in mistakes {
            print(format_args!(
                "\n#{}: predicted {}, true {} (confidence {:.1}%)",
                m.index,
                m.predicted,
                m.truth,
                m.confidence * 100.0
            ))?;
            if !args.no_render {
                let drawing = picture::render(test.images.image(m.index));
                print(drawing.trim_end_matches('\n'))?;
            }
        }
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

/// The tutorial's closing question, asked of the user: each mistake drawn
/// without its labels, a guess read from `input`, then the model's answer
/// and the truth. Ends with both scores, also when the input ends early.
fn quiz(
    mistakes: &[Mistake],
    total: usize,
    test: &Examples,
    input: &mut dyn std::io::BufRead,
) -> Result<()> {
    print(format_args!(
        "Quiz: {} of the {total} test images the model gets wrong. Which digit is each?",
        mistakes.len()
    ))?;
    let (mut yours, mut asked) = (0, 0);
    'digits: for (n, m) in mistakes.iter().enumerate() {
        print(format_args!("\nDigit {} of {}:", n + 1, mistakes.len()))?;
        print(picture::render(test.images.image(m.index)).trim_end_matches('\n'))?;
        let guess = loop {
            term::prompt("your answer (0-9): ")?;
            let mut line = String::new();
            if input.read_line(&mut line)? == 0 {
                print("")?;
                print(format_args!(
                    "(input ended after {asked} of {})",
                    mistakes.len()
                ))?;
                break 'digits;
            }
            match line.trim() {
                d if d.len() == 1 && d.as_bytes()[0].is_ascii_digit() => {
                    break d.as_bytes()[0] - b'0';
                }
                other => note(format!("{other:?} is not a digit: type one of 0-9")),
            }
        };
        asked += 1;
        let verdict = if guess == m.truth {
            yours += 1;
            "right"
        } else {
            "wrong"
        };
        print(format_args!(
            "you: {guess} ({verdict}) - model: {} ({:.1}% sure) - true: {} (test image #{})",
            m.predicted,
            m.confidence * 100.0,
            m.truth,
            m.index
        ))?;
    }
    let model = mistakes[..asked]
        .iter()
        .filter(|m| m.predicted == m.truth)
        .count();
    print(format_args!(
        "\nyou: {yours}/{asked}, model: {model}/{asked}"
    ))?;
    Ok(())
}
