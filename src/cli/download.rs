//! `mnist-cnn download`, and the download other commands start when the
//! data folder is empty.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use mnist_cnn::data;
use mnist_cnn::download::{Downloader, MIRROR_ENV, Mirror, Outcome};

use super::args::{DownloadArgs, MirrorArgs};
use super::common::{download_failed, shape};
use crate::term::{DownloadReport, note, print};

pub fn run(args: &DownloadArgs) -> Result<()> {
    let dir = &args.data.data_dir;
    let stored = downloader(&args.mirror, args.force)
        .run(dir, &mut DownloadReport::default())
        .map_err(download_failed)?;
    let fetched = stored
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Fetched { .. }))
        .count();
    let names = ["x_train", "y_train", "x_test", "y_test"];
    for (name, s) in names.iter().zip(&stored) {
        print(format_args!("{name} shape: {}", shape(&s.shape)))?;
    }
    print(format_args!(
        "{} files in {} ({fetched} fetched, {} already present)",
        stored.len(),
        dir.display(),
        stored.len() - fetched
    ))?;
    Ok(())
}

/// Fetches the data set first when the folder lacks it.
pub fn ensure_data(dir: &Path, mirror: &MirrorArgs) -> Result<()> {
    if !data::is_present(dir) {
        note(format!(
            "{} has no MNIST data yet: downloading it first",
            dir.display()
        ));
        downloader(mirror, false)
            .run(dir, &mut DownloadReport::default())
            .map_err(download_failed)?;
    }
    Ok(())
}

/// The mirrors of `--mirror`, MNIST_MIRROR and (unless told not to) the
/// public ones, in that order.
fn downloader(mirror: &MirrorArgs, force: bool) -> Downloader {
    let env = std::env::var(MIRROR_ENV).ok();
    let mirrors = Mirror::list(&mirror.mirrors, env.as_deref(), !mirror.no_default_mirrors);
    let mut d = Downloader::new(mirrors);
    d.timeout = Duration::from_secs(mirror.timeout as u64);
    d.deadline = mirror.deadline.map(|s| Duration::from_secs(s as u64));
    if let Some(kb) = mirror.min_rate {
        d.min_rate = kb as u64 * 1000;
    }
    d.force = force;
    d
}
