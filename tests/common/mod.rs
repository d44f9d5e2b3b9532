//! Helpers shared by the integration tests: loopback HTTP servers, small
//! valid MNIST-shaped fixtures, and the real data set when it is available.
#![allow(dead_code)] // Each test crate uses a different subset.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

pub mod served;

use flate2::Compression;
use flate2::write::GzEncoder;
use mnist_cnn::data::{FileSpec, Split};
use mnist_cnn::files::sha256_hex;
use mnist_cnn::idx::{self, CLASSES, PIXELS};
use mnist_cnn::model::{Batch, cross_entropy};
use mnist_cnn::store::ModelPaths;

/// The binary under test, with no mirror from the caller's environment
/// and no terminal width from it either (a pipe's 80 columns).
pub fn mnist_cnn() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist-cnn"));
    cmd.env_remove("MNIST_MIRROR").env_remove("COLUMNS");
    cmd
}

/// Runs a command that must succeed; returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs and checks a failure: non-zero exit, one `error:` line, no panic.
/// Returns all of stderr.
pub fn fails_with(cmd: &mut Command, needle: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(error_lines.len(), 1, "{stderr}");
    assert!(
        error_lines[0].contains(needle),
        "{:?} lacks {needle:?}",
        error_lines[0]
    );
    stderr
}

/// Runs and checks a success; returns stdout and stderr.
pub fn succeeds(cmd: &mut Command) -> (String, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// The real MNIST .gz files: `../shared/mnist` beside the repository, or the
/// folder `MNIST_CNN_TEST_DATA` names. The tests that train or download the
/// real set need them; without them they fail, saying where to put them,
/// rather than pass without having checked anything.
pub fn real_mnist() -> PathBuf {
    let dir = match std::env::var_os("MNIST_CNN_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/mnist"),
    };
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "these tests need the four MNIST .gz files in {} (or in the folder \
         MNIST_CNN_TEST_DATA names); `mnist-cnn download` fetches them",
        dir.display()
    );
    dir
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// `bytes` as a zlib stream (PNG's image data).
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// The names of the entries of a folder, hidden ones included.
pub fn file_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A small data set in the MNIST layout: decompressed bytes by file name.
pub struct Fixture {
    pub files: Vec<(String, Vec<u8>)>,
}

impl Fixture {
    /// `n_train` and `n_test` synthetic digits in the MNIST layout (class
    /// `c` is a bright bar at a class-specific place plus noise, with 5%
    /// wrong labels): small files for the downloader and error tests.
    pub fn synthetic(n_train: usize, n_test: usize) -> Self {
        let (train_x, train_y) = synthetic_digits(n_train, 1);
        let (test_x, test_y) = synthetic_digits(n_test, 2);
        Self {
            files: vec![
                (
                    "train-images-idx3-ubyte".into(),
                    idx::encode_images(&train_x),
                ),
                (
                    "train-labels-idx1-ubyte".into(),
                    idx::encode_labels(&train_y),
                ),
                ("t10k-images-idx3-ubyte".into(), idx::encode_images(&test_x)),
                ("t10k-labels-idx1-ubyte".into(), idx::encode_labels(&test_y)),
            ],
        }
    }

    /// File specs whose checksums match these fixtures.
    pub fn specs(&self) -> Vec<FileSpec> {
        self.files
            .iter()
            .map(|(name, bytes)| FileSpec::new(name, &sha256_hex([&bytes[..]])))
            .collect()
    }

    /// Writes the fixtures gzipped into `dir`, as a mirror holds them.
    pub fn write_gz(&self, dir: &Path) {
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(bytes)).unwrap();
        }
    }

    /// Writes the fixtures decompressed into `dir`, as `download` stores them.
    pub fn write_raw(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, bytes) in &self.files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }

    pub fn gz_by_path(&self) -> Vec<(String, Vec<u8>)> {
        self.files
            .iter()
            .map(|(name, bytes)| (format!("/{name}.gz"), gzip(bytes)))
            .collect()
    }
}

fn synthetic_digits(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut pixels = vec![0u8; n * PIXELS];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (next() % 10) as usize;
        // One label in twenty is wrong, so that even a perfect model makes
        // mistakes for `misclassified` to find.
        let label = if next() % 20 == 0 {
            (class + 1 + (next() % 9) as usize) % 10
        } else {
            class
        };
        labels.push(label as u8);
        let img = &mut pixels[i * PIXELS..(i + 1) * PIXELS];
        for p in img.iter_mut() {
            *p = (next() % 60) as u8;
        }
        // A 3-pixel-thick horizontal bar for classes 0-4, vertical for 5-9.
        let pos = 3 + (class % 5) * 5;
        for a in pos..pos + 3 {
            for b in 4..24 {
                let (y, x) = if class < 5 { (a, b) } else { (b, a) };
                img[y * 28 + x] = 200 + (next() % 56) as u8;
            }
        }
    }
    (pixels, labels)
}

/// An HTTP server on 127.0.0.1 answering each path with the given bytes and
/// 404 otherwise; lives as long as the test process. Returns its base URL.
pub fn serve(files: Vec<(String, Vec<u8>)>) -> String {
    serve_with(move |path| match files.iter().find(|(p, _)| p == path) {
        Some((_, bytes)) => (200, bytes.clone()),
        None => (404, b"not found".to_vec()),
    })
}

/// An HTTP server on 127.0.0.1 whose answer (status, body) a closure picks.
pub fn serve_with(handler: impl Fn(&str) -> (u16, Vec<u8>) + Send + Sync + 'static) -> String {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let url = format!("http://{}/", server.server_addr().to_ip().unwrap());
    thread::spawn(move || {
        for request in server.incoming_requests() {
            let (status, body) = handler(request.url());
            let _ = request.respond(tiny_http::Response::from_data(body).with_status_code(status));
        }
    });
    url
}

/// A raw TCP server on 127.0.0.1 that hands every connection to `handle`
/// (for misbehaviour tiny_http will not produce). Returns its base URL.
pub fn serve_raw(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let handle = Arc::new(handle);
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            thread::spawn(move || handle(stream));
        }
    });
    url
}

/// Reads an HTTP request's head from `stream` (enough to answer it).
pub fn read_request(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// The held-out accuracy a short training run must beat to count as
/// learning (chance is 10%): 2 epochs on a few thousand real images reach
/// 84-87% (2,000 images: 84.3%; 4,000: about 87%).
pub const LEARNED: f64 = 0.83;

/// The first `n` images of one split of the real set.
pub fn subset(split: Split, n: usize) -> mnist_cnn::data::Examples {
    let mut examples = mnist_cnn::data::load(data_dir(), split).unwrap();
    examples.truncate(n);
    examples
}

/// The largest absolute difference between two equally long results.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The real MNIST set decompressed, once per suite run rather than once per
/// test binary: in the target folder's scratch space, through the
/// downloader from the local mirror (which leaves valid files alone). A
/// lock keeps test binaries run side by side (nextest) from writing it at
/// once.
fn decompressed_mnist() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mnist");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join(".lock")).unwrap();
    lock.lock().unwrap();
    let mirror = mnist_cnn::download::Mirror::Local(real_mnist());
    mnist_cnn::download::Downloader::new(vec![mirror])
        .run(&dir, &mut ())
        .unwrap();
    dir
}

/// A data folder of its own holding the real MNIST set: links to the
/// suite's one decompressed copy, so that whatever a command writes beside
/// the data (a default model, say) stays in this folder.
pub fn linked_data_dir() -> tempfile::TempDir {
    static SOURCE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let source = SOURCE.get_or_init(decompressed_mnist);
    let dir = tempfile::tempdir().unwrap();
    for split in [Split::Train, Split::Test] {
        for name in split.files() {
            let (from, to) = (source.join(name), dir.path().join(name));
            #[cfg(unix)]
            std::os::unix::fs::symlink(from, to).unwrap();
            #[cfg(not(unix))]
            std::fs::copy(from, to).unwrap();
        }
    }
    dir
}

/// The data folder the tests of one binary share (see [`linked_data_dir`]).
pub fn data_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(linked_data_dir).path()
}

/// Trains a model through the binary on the shared data, with `flags`
/// after `train`. Returns the folder that holds it (removed when dropped),
/// its `--model` path and what `train` printed.
pub fn train_model(flags: &[&str]) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let out = stdout_of(
        mnist_cnn()
            .arg("train")
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--model")
            .arg(&model),
    );
    (dir, model, out)
}

/// The test accuracy a `train` run printed (its `Test loss: …` line).
pub fn test_accuracy(train_output: &str) -> f64 {
    let line = train_output
        .lines()
        .find(|l| l.starts_with("Test loss:"))
        .unwrap_or_else(|| panic!("no test line in {train_output}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// Probabilities for every test image and the mean loss, computed here
/// from the saved weights, with the labels.
pub fn probabilities(model: &Path) -> (Vec<[f32; CLASSES]>, Vec<u8>, f64) {
    let device = mnist_cnn::backend::host_device();
    let cnn = ModelPaths::new(model).load_weights(&device).unwrap();
    let test = mnist_cnn::data::load(data_dir(), Split::Test).unwrap();
    let mut rows = Vec::new();
    let mut loss_sum = 0.0f64;
    let indices: Vec<usize> = (0..test.len()).collect();
    for chunk in indices.chunks(500) {
        let logits = cnn.forward(&Batch::new(&test.images, chunk, &device), None);
        let labels: Vec<u8> = chunk.iter().map(|&i| test.labels[i]).collect();
        let loss = cross_entropy(logits.clone(), &labels).into_scalar::<f32>();
        loss_sum += loss as f64 * chunk.len() as f64;
        let probs = burn::tensor::activation::softmax(logits, 1);
        let values = probs.into_data().try_to_vec::<f32>().unwrap();
        rows.extend(
            values
                .chunks(CLASSES)
                .map(|r| <[f32; CLASSES]>::try_from(r).unwrap()),
        );
    }
    let loss = loss_sum / test.len() as f64;
    (rows, test.labels, loss)
}

/// The class with the highest probability (the first of a tie).
pub fn argmax(row: &[f32; CLASSES]) -> usize {
    (0..CLASSES).fold(0, |best, c| if row[c] > row[best] { c } else { best })
}

/// A PNG file's width, height, colour type and pixels.
pub fn decode_png(path: &Path) -> (u32, u32, png::ColorType, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    (info.width, info.height, info.color_type, pixels)
}

/// Runs the binary with its stdout closed before it writes anything (the
/// reader has gone, as `| head` does once satisfied). Returns the exit
/// status and stderr.
#[cfg(unix)]
pub fn with_stdout_closed(args: &[&str], extra: &[&Path]) -> (Option<i32>, String) {
    let mut child = mnist_cnn()
        .args(args)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
