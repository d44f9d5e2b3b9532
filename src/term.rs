//! The terminal: everything the program writes goes through here, and so do
//! the sinks that show the library's progress.
//!
//! Output is piped into `head` and friends, which close the pipe early.
//! `println!` would panic then. Here a closed stdout is an ordinary error
//! that the commands pass up (and `main` ends quietly with status 0, as
//! `cat` does), except while training, where losing the reader must not
//! lose the run: [`print_lossy`] just stops printing.

use std::fmt::Display;
use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressStyle};
use mnist_cnn::download::{self, FetchError, Mirror};
use mnist_cnn::train::{self, EpochStats, Trouble};

/// Set once stdout's reader has gone; nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` and a newline to stdout. A closed pipe is an error
/// of kind [`io::ErrorKind::BrokenPipe`].
pub fn print(text: impl Display) -> io::Result<()> {
    emit(format_args!("{text}\n"))
}

/// Writes `text` to stdout without a newline, for an answer typed on the
/// same line. Fails as [`print`] does.
pub fn prompt(text: impl Display) -> io::Result<()> {
    emit(format_args!("{text}"))
}

fn emit(text: std::fmt::Arguments) -> io::Result<()> {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return Err(io::ErrorKind::BrokenPipe.into());
    }
    let mut out = io::stdout().lock();
    let result = out.write_fmt(text).and_then(|()| out.flush());
    if let Err(e) = &result
        && e.kind() == io::ErrorKind::BrokenPipe
    {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
    }
    result
}

/// [`print`] for output that must never stop the work: errors are dropped.
pub fn print_lossy(text: impl Display) {
    let _ = print(text);
}

/// Writes a line to stderr, where notes and errors go; if stderr is closed
/// too, there is no one left to tell, and the line is dropped.
pub fn note(text: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Whether `error` (or anything it wraps) is a closed output pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn stderr_is_terminal() -> bool {
    io::stderr().is_terminal()
}

/// Whether pictures are drawn in colour: on a terminal, unless `NO_COLOR`
/// (no-color.org) is set.
pub fn colour() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Columns to fit what is printed into: the terminal's width, else
/// `COLUMNS`, else 80 (a pipe, a file, a test).
pub fn width() -> usize {
    if let Some((_, cols)) = console::Term::stdout().size_checked() {
        return cols.into();
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// Shows a download: a byte bar per transfer on a terminal, a line per file.
#[derive(Default)]
pub struct DownloadReport {
    bar: Option<ProgressBar>,
}

impl download::Report for DownloadReport {
    fn present(&mut self, file: &str) {
        note(format!("{file}: already present and valid"));
    }

    fn invalid(&mut self, file: &str, reason: &FetchError) {
        note(format!("{file}: present but invalid ({reason}); fetching"));
    }

    fn transfer_started(&mut self, file: &str, len: Option<u64>) {
        if !stderr_is_terminal() {
            return;
        }
        let bar = ProgressBar::new(len.unwrap_or(0));
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(file.to_string());
        self.bar = Some(bar);
    }

    fn transferred(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn transfer_ended(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn fetched(&mut self, file: &str, source: &str, bytes: u64, seconds: f64) {
        let rate = bytes as f64 / seconds.max(1e-3);
        note(format!(
            "{file}: {} from {source} in {seconds:.1}s ({}/s)",
            human_bytes(bytes as f64),
            human_bytes(rate)
        ));
    }

    fn failed(&mut self, file: &str, mirror: &Mirror, reason: &FetchError, next: bool) {
        let next = if next { "; trying the next mirror" } else { "" };
        note(format!("{file}: {mirror}: {reason}{next}"));
    }
}

fn human_bytes(n: f64) -> String {
    if n >= (1 << 20) as f64 {
        format!("{:.1} MB", n / (1 << 20) as f64)
    } else {
        format!("{:.1} kB", n / 1024.0)
    }
}

/// Set by the first Ctrl-C during training; the trainer stops before its
/// next step, so no checkpoint is ever cut off halfway.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Exit status of a program stopped by Ctrl-C (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// First Ctrl-C: finish the current step and stop cleanly. Second: quit now
/// (a save cut off then leaves only a temporary file, which the next run
/// removes).
pub fn handle_ctrl_c() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::Relaxed) {
            std::process::exit(EXIT_INTERRUPTED.into());
        }
        note("\nstopping after this step (Ctrl-C again to quit at once)");
    });
    if let Err(e) = result {
        note(format!("warning: cannot catch Ctrl-C: {e}"));
    }
}

/// On Ctrl-C, runs `last_words` and quits with [`EXIT_INTERRUPTED`]: for
/// work that has nothing to save but something to say (a quiz's score).
pub fn on_ctrl_c(last_words: impl Fn() + Send + 'static) {
    let result = ctrlc::set_handler(move || {
        last_words();
        std::process::exit(EXIT_INTERRUPTED.into());
    });
    if let Err(e) = result {
        note(format!("warning: cannot catch Ctrl-C: {e}"));
    }
}

/// Keras-style training progress: a bar per epoch on a terminal, one line
/// per epoch always, and a warning under an epoch that ran away.
pub struct TrainProgress {
    bar: Option<ProgressBar>,
    terminal: bool,
    /// The learning rate the warning suggests.
    calmer: f64,
    previous: Option<EpochStats>,
}

impl TrainProgress {
    /// Progress that suggests `calmer` as the learning rate should training diverge.
    pub fn new(calmer: f64) -> Self {
        Self {
            bar: None,
            terminal: stderr_is_terminal(),
            calmer,
            previous: None,
        }
    }
}

impl train::Progress for TrainProgress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        if !self.terminal {
            return;
        }
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {pos}/{len} [{bar:30}] - ETA: {eta} - {msg}")
                .expect("static template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
        self.bar = Some(bar);
    }

    fn step(&mut self, step: usize, loss: f64, accuracy: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            if step.is_multiple_of(16) {
                bar.set_message(format!("loss: {loss:.4} - accuracy: {accuracy:.4}"));
            }
        }
    }

    fn should_stop(&self) -> bool {
        INTERRUPTED.load(Ordering::Relaxed)
    }

    fn epoch_end(&mut self, stats: &EpochStats, epochs: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        let validation = match stats.validation {
            Some(v) => format!(
                " - val_loss: {:.4} - val_accuracy: {:.4}",
                v.loss, v.accuracy
            ),
            None => String::new(),
        };
        print_lossy(format_args!(
            "Epoch {}/{epochs} - {:.1}s - loss: {:.4} - accuracy: {:.4}{validation}",
            stats.epoch, stats.seconds, stats.loss, stats.accuracy
        ));
        if let Some(trouble) = stats.trouble(self.previous.as_ref()) {
            let loss = if stats.loss < 1e4 {
                format!("{:.4}", stats.loss)
            } else {
                format!("{:.2e}", stats.loss)
            };
            let what = match trouble {
                Trouble::Diverging => "training is diverging",
                Trouble::AtChance => "the network is learning nothing",
            };
            let dropout = match trouble {
                Trouble::AtChance => " (or less --dropout)",
                Trouble::Diverging => "",
            };
            note(format!(
                "warning: {what} (loss {loss}, accuracy {:.4}; chance is loss 2.3026, accuracy \
                 0.1): stop it with Ctrl-C and try a smaller learning rate, such as \
                 --learning-rate {}{dropout}",
                stats.accuracy, self.calmer
            ));
        }
        self.previous = Some(stats.clone());
    }
}
