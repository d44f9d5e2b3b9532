//! `mnist-cnn download`: fetch the four MNIST files from a list of mirrors,
//! verify them and store them, decompressed, in the data folder.
//!
//! Mirrors disagree on the gzip bytes, so a file is accepted only on the
//! SHA-256 of its *decompressed* content, plus an IDX header that parses. A
//! file that fails on one mirror is tried on the next; nothing is written
//! under its final name until it has passed (see [`crate::files`]).
//!
//! The downloader prints nothing: it tells a [`Report`] what happens, and
//! the program that uses it decides what the user sees.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use thiserror::Error;

use crate::data::{FileSpec, mnist_files};
use crate::files::{self, FileError, sha256_hex};
use crate::idx;

/// The public mirrors, tried in this order after any the user names.
///
/// The first is the original site the tutorial used; today it often answers 403.
pub const DEFAULT_MIRRORS: [&str; 3] = [
    "http://yann.lecun.com/exdb/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];

/// Environment variable holding extra mirrors (separated by whitespace or commas).
pub const MIRROR_ENV: &str = "MNIST_MIRROR";

/// Largest compressed file accepted from a mirror (the biggest MNIST file is 9.9 MB).
const MAX_DOWNLOAD: u64 = 64 << 20;
/// Largest decompressed file accepted (the biggest MNIST file is 47 MB).
const MAX_DECOMPRESSED: u64 = 64 << 20;

/// Where a file can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// An `http://` or `https://` base URL ending in `/`.
    Http(String),
    /// A local folder holding the `.gz` files (given as a path or a `file://` URL).
    Local(PathBuf),
}

impl Mirror {
    /// Reads a mirror as the user writes it: a URL or a folder.
    pub fn parse(spec: &str) -> Self {
        if spec.starts_with("http://") || spec.starts_with("https://") {
            let mut url = spec.to_string();
            if !url.ends_with('/') {
                url.push('/');
            }
            Mirror::Http(url)
        } else if let Some(path) = spec.strip_prefix("file://") {
            Mirror::Local(PathBuf::from(path))
        } else {
            Mirror::Local(PathBuf::from(spec))
        }
    }

    /// The user's mirrors (flags first, then those of `MNIST_MIRROR`), then
    /// the public ones unless `public` is false.
    pub fn list(user: &[String], env: Option<&str>, public: bool) -> Vec<Mirror> {
        let env = env.unwrap_or_default();
        let public = if public { &DEFAULT_MIRRORS[..] } else { &[] };
        user.iter()
            .map(String::as_str)
            .chain(env.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()))
            .chain(public.iter().copied())
            .map(Mirror::parse)
            .collect()
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mirror::Http(url) => f.write_str(url),
            Mirror::Local(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why one mirror could not give one file.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
    /// The mirror's name says which folder; the reason needs no path.
    #[error("{source}")]
    Local { source: io::Error },
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("file is larger than {} MB", MAX_DOWNLOAD >> 20)]
    TooLarge,
    #[error(
        "too slow: {bytes} bytes in {seconds:.0} s, under {} kB/s (a stalled or trickling server)",
        min_rate / 1000
    )]
    TooSlow {
        bytes: u64,
        seconds: f64,
        min_rate: u64,
    },
    #[error("the download's deadline of {} s passed", .0.as_secs())]
    Deadline(Duration),
    #[error("download cut short: got {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
    #[error("not a valid gzip stream: {0}")]
    Gzip(io::Error),
    #[error("checksum mismatch: SHA-256 of the decompressed file is {found}, expected {expected}")]
    Checksum { found: String, expected: String },
    #[error("not a valid MNIST file: {0}")]
    Idx(#[from] idx::IdxError),
}

/// Why `download` failed as a whole.
#[derive(Debug, Error)]
pub enum DownloadError {
    /// Each mirror's reason went to the [`Report`] as it happened.
    #[error("could not get {file} from {}", match tried { 1 => "the one mirror tried".to_string(), n => format!("any of the {n} mirrors tried") })]
    AllMirrorsFailed { file: String, tried: usize },
    #[error("no mirror to fetch {file} from")]
    NoMirrors { file: String },
    #[error("the download's deadline of {} s passed while getting {file}", deadline.as_secs())]
    Deadline { file: String, deadline: Duration },
    #[error(transparent)]
    File(#[from] FileError),
}

/// How a file ended up in the data folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It was already there and valid; nothing was fetched.
    AlreadyPresent,
    /// It was fetched from this mirror.
    Fetched { mirror: String },
}

/// A verified file in the data folder.
#[derive(Debug, Clone)]
pub struct Stored {
    pub shape: Vec<usize>,
    pub outcome: Outcome,
}

/// What a download tells as it goes. Every method has a default that
/// ignores it; `()` ignores everything.
pub trait Report {
    /// `file` was already in the folder and valid.
    fn present(&mut self, _file: &str) {}
    /// `file` was in the folder but failed verification; it is fetched again.
    fn invalid(&mut self, _file: &str, _reason: &FetchError) {}
    /// An HTTP transfer of `file` began; `len` is its announced size.
    fn transfer_started(&mut self, _file: &str, _len: Option<u64>) {}
    /// `bytes` more of the current transfer arrived.
    fn transferred(&mut self, _bytes: u64) {}
    /// The current transfer ended, well or not.
    fn transfer_ended(&mut self) {}
    /// `bytes` of `file` came from `source` in `seconds`.
    fn fetched(&mut self, _file: &str, _source: &str, _bytes: u64, _seconds: f64) {}
    /// `mirror` could not give `file`; `next` says whether another mirror is tried.
    fn failed(&mut self, _file: &str, _mirror: &Mirror, _reason: &FetchError, _next: bool) {}
}

impl Report for () {}

/// Fetches, verifies and stores a set of files. Defaults suit real MNIST;
/// tests swap in their own files, checksums, mirrors and timeout.
#[derive(Debug, Clone)]
pub struct Downloader {
    pub mirrors: Vec<Mirror>,
    pub files: Vec<FileSpec>,
    /// Limit on connecting and on any single wait for data.
    pub timeout: Duration,
    /// A transfer slower than this (bytes a second, on average) once
    /// `rate_grace` has passed is abandoned for the next mirror: a server
    /// that trickles bytes would otherwise hold the download for hours
    /// without ever waiting `timeout` for one.
    pub min_rate: u64,
    pub rate_grace: Duration,
    /// Limit on the whole download, all files and mirrors together.
    pub deadline: Option<Duration>,
    /// Refetch even when a valid file is already present.
    pub force: bool,
}

/// [`Downloader::min_rate`] unless told otherwise: 10 kB/s, a hundredth of a
/// slow real connection; MNIST's largest file would take 17 minutes at it.
pub const MIN_RATE: u64 = 10_000;

impl Downloader {
    pub fn new(mirrors: Vec<Mirror>) -> Self {
        Self {
            mirrors,
            files: mnist_files(),
            timeout: Duration::from_secs(30),
            min_rate: MIN_RATE,
            rate_grace: Duration::from_secs(10),
            deadline: None,
            force: false,
        }
    }

    /// Makes sure every file is in `dir` and valid, fetching what is missing.
    pub fn run(&self, dir: &Path, report: &mut dyn Report) -> Result<Vec<Stored>, DownloadError> {
        fs::create_dir_all(dir).map_err(|source| FileError::write(dir, source))?;
        let until = self.deadline.map(|d| Instant::now() + d);
        self.files
            .iter()
            .map(|spec| self.ensure(dir, spec, until, report))
            .collect()
    }

    fn ensure(
        &self,
        dir: &Path,
        spec: &FileSpec,
        until: Option<Instant>,
        report: &mut dyn Report,
    ) -> Result<Stored, DownloadError> {
        let path = dir.join(&spec.name);
        files::remove_stale_temps(&path);
        // A file larger than any MNIST file is not read whole: it is replaced.
        if !self.force
            && let Ok(Some(bytes)) = files::read_at_most(&path, MAX_DECOMPRESSED)
        {
            match verify(&bytes, spec) {
                Ok(shape) => {
                    report.present(&spec.name);
                    return Ok(Stored {
                        shape,
                        outcome: Outcome::AlreadyPresent,
                    });
                }
                Err(e) => report.invalid(&spec.name, &e),
            }
        }
        if self.mirrors.is_empty() {
            return Err(DownloadError::NoMirrors {
                file: spec.gz_name(),
            });
        }
        for (i, mirror) in self.mirrors.iter().enumerate() {
            let result = self
                .fetch(mirror, spec, until, report)
                .and_then(|gz| decompress(&gz))
                .and_then(|bytes| verify(&bytes, spec).map(|shape| (bytes, shape)));
            match result {
                Ok((bytes, shape)) => {
                    files::write_atomically(&path, &bytes)?;
                    return Ok(Stored {
                        shape,
                        outcome: Outcome::Fetched {
                            mirror: mirror.to_string(),
                        },
                    });
                }
                // Not this mirror's failure: said once, as the download's.
                Err(FetchError::Deadline(deadline)) => {
                    return Err(DownloadError::Deadline {
                        file: spec.gz_name(),
                        deadline,
                    });
                }
                Err(e) => {
                    let next = i + 1 < self.mirrors.len();
                    report.failed(&spec.gz_name(), mirror, &e, next);
                }
            }
        }
        Err(DownloadError::AllMirrorsFailed {
            file: spec.gz_name(),
            tried: self.mirrors.len(),
        })
    }

    fn fetch(
        &self,
        mirror: &Mirror,
        spec: &FileSpec,
        until: Option<Instant>,
        report: &mut dyn Report,
    ) -> Result<Vec<u8>, FetchError> {
        if let (Some(until), Some(deadline)) = (until, self.deadline)
            && Instant::now() >= until
        {
            return Err(FetchError::Deadline(deadline));
        }
        match mirror {
            Mirror::Local(dir) => {
                let path = dir.join(spec.gz_name());
                let started = Instant::now();
                let bytes = files::read_at_most(&path, MAX_DOWNLOAD)
                    .map_err(|source| FetchError::Local { source })?
                    .ok_or(FetchError::TooLarge)?;
                let secs = started.elapsed().as_secs_f64();
                report.fetched(
                    &spec.gz_name(),
                    &path.display().to_string(),
                    bytes.len() as u64,
                    secs,
                );
                Ok(bytes)
            }
            Mirror::Http(base) => {
                let url = format!("{base}{}", spec.gz_name());
                let started = Instant::now();
                let bytes = self.fetch_http(&url, &spec.gz_name(), until, report)?;
                let secs = started.elapsed().as_secs_f64();
                report.fetched(&spec.gz_name(), &url, bytes.len() as u64, secs);
                Ok(bytes)
            }
        }
    }

    fn fetch_http(
        &self,
        url: &str,
        name: &str,
        until: Option<Instant>,
        report: &mut dyn Report,
    ) -> Result<Vec<u8>, FetchError> {
        // No wait outlasts the deadline.
        let left = until.map(|u| u.saturating_duration_since(Instant::now()));
        let wait = left.map_or(self.timeout, |left| left.min(self.timeout));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(wait))
            .timeout_recv_response(Some(wait))
            .timeout_per_read(Some(wait))
            .timeout_global(left)
            .build()
            .into();
        let started = Instant::now();
        let past_deadline = || until.is_some_and(|u| Instant::now() >= u);
        let deadline = || FetchError::Deadline(self.deadline.unwrap_or_default());
        let mut response = agent.get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => FetchError::Status(code),
            _ if past_deadline() => deadline(),
            other => FetchError::Transport(other.to_string()),
        })?;
        let expected = response.body().content_length();
        if expected.is_some_and(|n| n > MAX_DOWNLOAD) {
            return Err(FetchError::TooLarge);
        }
        report.transfer_started(name, expected);
        // One byte more than allowed, to tell "exactly at the limit" from "over it".
        let mut reader = response.body_mut().as_reader().take(MAX_DOWNLOAD + 1);
        let mut bytes = Vec::with_capacity(expected.unwrap_or(0) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        let read = loop {
            match reader.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    report.transferred(n as u64);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if past_deadline() => break Err(deadline()),
                Err(e) => break Err(FetchError::Io(e)),
            }
            let seconds = started.elapsed().as_secs_f64();
            if seconds > self.rate_grace.as_secs_f64()
                && (bytes.len() as f64) < self.min_rate as f64 * seconds
            {
                break Err(FetchError::TooSlow {
                    bytes: bytes.len() as u64,
                    seconds,
                    min_rate: self.min_rate,
                });
            }
        };
        report.transfer_ended();
        read?;
        let got = bytes.len() as u64;
        if got > MAX_DOWNLOAD {
            return Err(FetchError::TooLarge);
        }
        if let Some(expected) = expected.filter(|&n| n != got) {
            return Err(FetchError::Truncated { got, expected });
        }
        Ok(bytes)
    }
}

/// Decompresses a whole gzip stream, rejecting truncated or corrupt data.
fn decompress(gz: &[u8]) -> Result<Vec<u8>, FetchError> {
    let mut out = Vec::new();
    GzDecoder::new(gz)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(FetchError::Gzip)?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(FetchError::TooLarge);
    }
    Ok(out)
}

/// Checks a decompressed file's checksum and IDX header; returns its shape.
pub fn verify(bytes: &[u8], spec: &FileSpec) -> Result<Vec<usize>, FetchError> {
    let found = sha256_hex([bytes]);
    if !found.eq_ignore_ascii_case(&spec.sha256) {
        return Err(FetchError::Checksum {
            found,
            expected: spec.sha256.clone(),
        });
    }
    Ok(idx::shape(bytes, &spec.name)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn mirrors_put_the_users_first() {
        let list = Mirror::list(
            &["http://a.example/m".into()],
            Some("file:///srv/mnist, ../local"),
            true,
        );
        assert_eq!(list[0], Mirror::Http("http://a.example/m/".into()));
        assert_eq!(list[1], Mirror::Local("/srv/mnist".into()));
        assert_eq!(list[2], Mirror::Local("../local".into()));
        assert_eq!(list[3], Mirror::Http(DEFAULT_MIRRORS[0].into()));
        assert_eq!(list.len(), 3 + DEFAULT_MIRRORS.len());
        let only_given = Mirror::list(&["../local".into()], None, false);
        assert_eq!(only_given, [Mirror::Local("../local".into())]);
    }

    #[test]
    fn truncated_gzip_is_rejected() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[1u8; 5000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(decompress(&gz).unwrap(), vec![1u8; 5000]);
        assert!(matches!(
            decompress(&gz[..gz.len() / 2]),
            Err(FetchError::Gzip(_))
        ));
    }
}
