//! Why training did not run or stopped.

use std::path::PathBuf;

use thiserror::Error;

use crate::store::StoreError;

/// Why training did not run or stopped.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{setting} is {value}; it must be {allowed}")]
    OutOfRange {
        setting: &'static str,
        value: String,
        allowed: String,
    },
    #[error("no training examples")]
    NoData,
    #[error(
        "the host engine computes on the CPU and cannot train on the {backend} backend: \
         use the burn engine there, or a CPU backend"
    )]
    EngineOffHost { backend: &'static str },
    #[error("cannot resume from {}: {difference}", path.display())]
    CannotResume { path: PathBuf, difference: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "training diverged in epoch {epoch} (the loss is no longer a number): try a smaller \
         learning rate; {}",
        checkpoint_note(.checkpoint)
    )]
    Diverged {
        epoch: usize,
        /// The last complete checkpoint, if one was saved.
        checkpoint: Option<PathBuf>,
    },
    #[error("interrupted during epoch {epoch}; {}", resume_note(.checkpoint))]
    Interrupted {
        epoch: usize,
        /// The last complete checkpoint, if one was saved.
        checkpoint: Option<PathBuf>,
    },
}

/// Where the work is, and how to go on with it.
fn resume_note(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(_) => format!(
            "{}: train again with --resume to go on from there",
            checkpoint_note(checkpoint)
        ),
        None => checkpoint_note(checkpoint),
    }
}

fn checkpoint_note(checkpoint: &Option<PathBuf>) -> String {
    match checkpoint {
        Some(path) => format!("the last complete epoch is saved in {}", path.display()),
        None => "no epoch was complete, so nothing was saved".into(),
    }
}
