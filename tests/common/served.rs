//! A running `mnist-cnn serve` for the tests that talk to it over HTTP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{data_dir, mnist_cnn};

/// A running `serve`, stopped (killed) when dropped.
pub struct Served {
    pub child: Child,
    /// Its stdout after the URL line.
    pub out: BufReader<std::process::ChildStdout>,
    pub port: u16,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Serves the model at `model` on the shared data, on a free port.
    pub fn start(model: &Path, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let mut child = mnist_cnn()
            .args(["serve", "--port", "0"])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir())
            .arg("--model")
            .arg(model)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        // First the line naming the model, then the one with the URL.
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut named = String::new();
        out.read_line(&mut named).unwrap();
        assert!(named.starts_with("Model: "), "{named:?}");
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                let err = std::fs::read_to_string(&stderr).unwrap_or_default();
                panic!("no URL in {line:?}; stderr: {err}")
            });
        let port = url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Self {
            child,
            out,
            port,
            stderr,
            _dir: dir,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// One raw HTTP/1.1 request (its own connection); status, headers, body.
    pub fn raw(&self, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        // A server that answers before reading all of a large body may
        // close the connection under the rest: that is fine.
        let _ = stream.write_all(body);
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let headers = String::from_utf8_lossy(&answer[..split]).into_owned();
        let status = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, headers, answer[split + 4..].to_vec())
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        host: &str,
        body: &[u8],
    ) -> (u16, String, Vec<u8>) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        self.raw(&head, body)
    }

    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        let (status, _, body) = self.request("GET", path, &self.host(), b"");
        (status, body)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> (u16, Value) {
        let (status, _, body) = self.request("POST", path, &self.host(), body);
        (status, serde_json::from_slice(&body).unwrap())
    }

    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A JSON array of numbers as f32 values.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}
