//! `mnist-cnn download`: fetch the four MNIST files from a list of mirrors,
//! verify them and store them, decompressed, in the data folder.
//!
//! Mirrors disagree on the gzip bytes, so a file is accepted only on the
//! SHA-256 of its *decompressed* content, plus an IDX header that parses. A
//! file that fails on one mirror is tried on the next; nothing is written
//! under its final name until it has passed (temp file, fsync, rename).

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::read::GzDecoder;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use thiserror::Error;

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

/// One of the files that make up the data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    /// File name once decompressed, e.g. `train-images-idx3-ubyte`; mirrors
    /// serve it with `.gz` appended.
    pub name: String,
    /// Lower-case hex SHA-256 of the decompressed bytes.
    pub sha256: String,
}

impl FileSpec {
    pub fn new(name: &str, sha256: &str) -> Self {
        Self {
            name: name.into(),
            sha256: sha256.into(),
        }
    }

    /// The name mirrors serve the file under.
    pub fn gz_name(&self) -> String {
        format!("{}.gz", self.name)
    }
}

/// Canonical names of the four files, in the order the tutorial loads them.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// The four real MNIST files with their canonical checksums.
pub fn mnist_files() -> Vec<FileSpec> {
    vec![
        FileSpec::new(
            TRAIN_IMAGES,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        FileSpec::new(
            TRAIN_LABELS,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        FileSpec::new(
            TEST_IMAGES,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        FileSpec::new(
            TEST_LABELS,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ]
}

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

    /// The user's mirrors (flags first, then `MNIST_MIRROR`), then the public ones.
    pub fn list(user: &[String], env: Option<&str>) -> Vec<Mirror> {
        let env = env.unwrap_or_default();
        user.iter()
            .map(String::as_str)
            .chain(env.split([',', ' ', '\n', '\t']).filter(|s| !s.is_empty()))
            .chain(DEFAULT_MIRRORS)
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
    Http(String),
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("file is larger than {} MB", MAX_DOWNLOAD >> 20)]
    TooLarge,
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
    #[error("{}", all_failed_message(file, attempts))]
    AllMirrorsFailed {
        file: String,
        attempts: Vec<(String, String)>,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

fn all_failed_message(file: &str, attempts: &[(String, String)]) -> String {
    let mut msg = format!("could not get {file} from any mirror:");
    for (mirror, reason) in attempts {
        msg.push_str(&format!("\n  {mirror}: {reason}"));
    }
    msg
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
    pub name: String,
    pub path: PathBuf,
    pub shape: Vec<usize>,
    pub outcome: Outcome,
}

/// Fetches, verifies and stores a set of files. Defaults suit real MNIST;
/// tests swap in their own files, checksums, mirrors and timeout.
#[derive(Debug, Clone)]
pub struct Downloader {
    pub mirrors: Vec<Mirror>,
    pub files: Vec<FileSpec>,
    /// Limit on connecting and on any single wait for data.
    pub timeout: Duration,
    /// Refetch even when a valid file is already present.
    pub force: bool,
    /// Log lines (and progress bars when stderr is a terminal) go to stderr.
    pub quiet: bool,
}

impl Downloader {
    pub fn new(mirrors: Vec<Mirror>) -> Self {
        Self {
            mirrors,
            files: mnist_files(),
            timeout: Duration::from_secs(30),
            force: false,
            quiet: false,
        }
    }

    /// Makes sure every file is in `dir` and valid, fetching what is missing.
    pub fn run(&self, dir: &Path) -> Result<Vec<Stored>, DownloadError> {
        fs::create_dir_all(dir).map_err(|source| DownloadError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        self.files
            .iter()
            .map(|spec| self.ensure(dir, spec))
            .collect()
    }

    fn ensure(&self, dir: &Path, spec: &FileSpec) -> Result<Stored, DownloadError> {
        let path = dir.join(&spec.name);
        if !self.force
            && let Ok(bytes) = fs::read(&path)
        {
            match verify(&bytes, spec) {
                Ok(shape) => {
                    self.log(format!("{}: already present and valid", spec.name));
                    return Ok(Stored {
                        name: spec.name.clone(),
                        path,
                        shape,
                        outcome: Outcome::AlreadyPresent,
                    });
                }
                Err(e) => self.log(format!(
                    "{}: present but invalid ({e}); fetching",
                    spec.name
                )),
            }
        }
        let mut attempts = Vec::new();
        for (i, mirror) in self.mirrors.iter().enumerate() {
            let result = self
                .fetch(mirror, spec)
                .and_then(|gz| decompress(&gz))
                .and_then(|bytes| verify(&bytes, spec).map(|shape| (bytes, shape)));
            match result {
                Ok((bytes, shape)) => {
                    write_atomically(&path, &bytes)?;
                    return Ok(Stored {
                        name: spec.name.clone(),
                        path,
                        shape,
                        outcome: Outcome::Fetched {
                            mirror: mirror.to_string(),
                        },
                    });
                }
                Err(e) => {
                    let next = if i + 1 < self.mirrors.len() {
                        "; trying the next mirror"
                    } else {
                        ""
                    };
                    self.log(format!("{}: {mirror}: {e}{next}", spec.gz_name()));
                    attempts.push((mirror.to_string(), e.to_string()));
                }
            }
        }
        Err(DownloadError::AllMirrorsFailed {
            file: spec.gz_name(),
            attempts,
        })
    }

    fn fetch(&self, mirror: &Mirror, spec: &FileSpec) -> Result<Vec<u8>, FetchError> {
        match mirror {
            Mirror::Local(dir) => {
                let path = dir.join(spec.gz_name());
                let bytes = fs::read(&path)
                    .map_err(|e| FetchError::Http(format!("{}: {e}", path.display())))?;
                self.log(format!(
                    "{}: copied {} from {}",
                    spec.gz_name(),
                    human_bytes(bytes.len() as u64),
                    dir.display()
                ));
                Ok(bytes)
            }
            Mirror::Http(base) => self.fetch_http(&format!("{base}{}", spec.gz_name()), spec),
        }
    }

    fn fetch_http(&self, url: &str, spec: &FileSpec) -> Result<Vec<u8>, FetchError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .build()
            .into();
        let mut response = agent.get(url).call().map_err(|e| match e {
            ureq::Error::StatusCode(code) => FetchError::Status(code),
            other => FetchError::Http(other.to_string()),
        })?;
        let expected = response.body().content_length();
        let bar = self.progress_bar(&spec.gz_name(), expected);
        let started = Instant::now();
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(MAX_DOWNLOAD)
            .reader();
        let mut bytes = Vec::with_capacity(expected.unwrap_or(0).min(MAX_DOWNLOAD) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        let result = loop {
            match reader.read(&mut chunk) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    bytes.extend_from_slice(&chunk[..n]);
                    if let Some(bar) = &bar {
                        bar.inc(n as u64);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        result.map_err(|e| {
            if e.to_string().contains("limit") {
                FetchError::TooLarge
            } else {
                FetchError::Io(e)
            }
        })?;
        let got = bytes.len() as u64;
        if let Some(expected) = expected.filter(|&n| n != got) {
            return Err(FetchError::Truncated { got, expected });
        }
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        self.log(format!(
            "{}: {} from {url} in {secs:.1}s ({}/s)",
            spec.gz_name(),
            human_bytes(got),
            human_bytes((got as f64 / secs) as u64)
        ));
        Ok(bytes)
    }

    fn progress_bar(&self, name: &str, len: Option<u64>) -> Option<ProgressBar> {
        if self.quiet || !io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new(len.unwrap_or(0));
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("static template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_string());
        Some(bar)
    }

    fn log(&self, line: String) {
        if !self.quiet {
            eprintln!("{line}");
        }
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
    let found = sha256_hex(bytes);
    if !found.eq_ignore_ascii_case(&spec.sha256) {
        return Err(FetchError::Checksum {
            found,
            expected: spec.sha256.clone(),
        });
    }
    Ok(idx::shape(bytes, &spec.name)?)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of a digest.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `path` so that `path` holds either its old content or
/// all of the new, never a part: temp file in the same folder, fsync, rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DownloadError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |source| DownloadError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // Temp files are private (0600) by default; the result should get the
    // usual permissions (0666 less the umask) like any file a tool writes.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{:.1} kB", n as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_put_the_users_first() {
        let list = Mirror::list(
            &["http://a.example/m".into()],
            Some("file:///srv/mnist, ../local"),
        );
        assert_eq!(list[0], Mirror::Http("http://a.example/m/".into()));
        assert_eq!(list[1], Mirror::Local("/srv/mnist".into()));
        assert_eq!(list[2], Mirror::Local("../local".into()));
        assert_eq!(list[3], Mirror::Http(DEFAULT_MIRRORS[0].into()));
        assert_eq!(list.len(), 3 + DEFAULT_MIRRORS.len());
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

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomically(&path, b"old").unwrap();
        write_atomically(&path, b"new content").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // The same permissions as any newly created file (not tempfile's 0600).
            let usual = dir.path().join("usual");
            fs::write(&usual, b"").unwrap();
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode();
            assert_eq!(mode(&path), mode(&usual));
        }
    }
}
