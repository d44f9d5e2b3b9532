//! `mnist-cnn serve` through real HTTP requests on loopback: the page and
//! the API answer, agree with `predict` and `explain`, and the server is
//! safe by default (Host checked, bodies capped, bad requests answered with
//! a JSON 4xx, many clients at once, Ctrl-C).
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::served::{Served, floats};
use common::{data_dir, mnist_cnn, stdout_of};
use serde_json::Value;

fn trained_model() -> &'static (tempfile::TempDir, PathBuf, String) {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    MODEL.get_or_init(|| common::train_model(&["--epochs", "1", "--limit", "1280"]))
}

/// A JSON error with a 4xx status, its message containing `needle`.
fn assert_json_error(status: u16, body: &[u8], expected: u16, needle: &str) {
    assert_eq!(status, expected, "{}", String::from_utf8_lossy(body));
    let json: Value = serde_json::from_slice(body).unwrap();
    let message = json["error"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// Test image `index` written as a picture four times larger.
fn picture(dir: &Path, index: usize) -> PathBuf {
    let path = dir.join(format!("test-{index}.png"));
    stdout_of(
        mnist_cnn()
            .args([
                "show",
                "--test",
                &index.to_string(),
                "--scale",
                "4",
                "--png",
            ])
            .arg(&path)
            .arg("--data-dir")
            .arg(data_dir()),
    );
    path
}

/// A PNG of `w × h` grey pixels of `value`.
fn png_of(w: u32, h: u32, value: u8) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, w, h);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_image_data(&vec![value; (w * h) as usize])
        .unwrap();
    writer.finish().unwrap();
    bytes
}

#[test]
fn the_page_and_the_api_answer_as_predict_and_explain_do() {
    let served = Served::start(&trained_model().1, &[]);
    let (status, page) = served.get("/");
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<canvas id=\"pad\""), "the drawing canvas");
    // Nothing from elsewhere: no URL in the page at all.
    for remote in ["http://", "https://", "//cdn", "src=\"//"] {
        assert!(!page.contains(remote), "the page names {remote}");
    }
    let (_, headers, _) = served.request("GET", "/", &served.host(), b"");
    assert!(
        headers.contains("Content-Security-Policy: default-src 'none'"),
        "{headers}"
    );

    let (status, api) = served.get("/api");
    assert_eq!(status, 200);
    let api: Value = serde_json::from_slice(&api).unwrap();
    assert!(api["POST /api/predict"].is_string(), "{api}");

    let (status, summary) = served.get("/api/model");
    assert_eq!(status, 200);
    let summary: Value = serde_json::from_slice(&summary).unwrap();
    assert_eq!(summary["epochs"], 1);
    assert_eq!(summary["parameters"], 2_561_738);
    assert_eq!(summary["layers"].as_array().unwrap().len(), 6);
    let accuracy = summary["test"]["accuracy"].as_f64().unwrap();
    let eval: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["eval", "--json", "--data-dir"])
            .arg(data_dir())
            .arg("--model")
            .arg(&trained_model().1),
    ))
    .unwrap();
    assert!((accuracy - eval["accuracy"].as_f64().unwrap()).abs() < 1e-12);

    let (status, svg) = served.get("/api/curves.svg");
    assert_eq!(status, 200);
    assert!(String::from_utf8(svg).unwrap().contains("<svg"));

    let (status, mistakes) = served.get("/api/mistakes");
    assert_eq!(status, 200);
    let mistakes: Value = serde_json::from_slice(&mistakes).unwrap();
    let total = mistakes["total"].as_u64().unwrap();
    let expected = ((1.0 - accuracy) * 10_000.0).round() as u64;
    assert_eq!(total, expected);
    let shown = mistakes["mistakes"].as_array().unwrap();
    assert_eq!(shown.len() as u64, total.min(200));
    let test = common::subset(mnist_cnn::data::Split::Test, 10_000);
    for m in shown.iter().take(20) {
        let i = m["index"].as_u64().unwrap() as usize;
        assert_eq!(m["true"], test.labels[i]);
        assert_ne!(m["predicted"], m["true"]);
        let pixels: Vec<u8> = serde_json::from_value(m["pixels"].clone()).unwrap();
        assert_eq!(pixels, test.images.image(i));
    }

    // A drawing: the answer is predict's for the same picture.
    let dir = tempfile::tempdir().unwrap();
    let path = picture(dir.path(), 4);
    let predicted: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["predict", "--json"])
            .arg(&path)
            .arg("--model")
            .arg(&trained_model().1),
    ))
    .unwrap();
    let (status, answer) = served.post("/api/predict", &std::fs::read(&path).unwrap());
    assert_eq!(status, 200, "{answer}");
    let worst = common::max_diff(
        &floats(&answer["probabilities"]),
        &floats(&predicted[0]["probabilities"]),
    );
    assert!(worst <= 1e-6, "differs from predict's by {worst}");
    assert_eq!(answer["predicted"], predicted[0]["predicted"]);
    assert_eq!(answer["input"].as_array().unwrap().len(), 784);

    let (status, explained) = served.post("/api/explain", &std::fs::read(&path).unwrap());
    assert_eq!(status, 200);
    let cli: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["explain", "--json", "--image"])
            .arg(&path)
            .arg("--model")
            .arg(&trained_model().1),
    ))
    .unwrap();
    for key in ["probabilities", "saliency", "hidden", "input"] {
        assert_eq!(explained[key], cli[key], "{key}");
    }
    assert_eq!(explained["conv"], cli["conv"]);

    let (status, body) = served.get("/api/explain/test/17");
    assert_eq!(status, 200);
    let by_index: Value = serde_json::from_slice(&body).unwrap();
    let cli: Value = serde_json::from_str(&stdout_of(
        mnist_cnn()
            .args(["explain", "17", "--json", "--data-dir"])
            .arg(data_dir())
            .arg("--model")
            .arg(&trained_model().1),
    ))
    .unwrap();
    assert_eq!(by_index["probabilities"], cli["probabilities"]);
    assert_eq!(by_index["label"], cli["label"]);
}

#[test]
fn only_requests_naming_the_served_address_are_answered() {
    let served = Served::start(&trained_model().1, &[]);
    let port = served.port;
    for ok in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, _, _) = served.request("GET", "/api", &ok, b"");
        assert_eq!(status, 200, "{ok}");
    }
    // DNS rebinding: a page at evil.example whose name now points here.
    for refused in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        format!("localhost.evil.example:{port}"),
    ] {
        let (status, _, body) = served.request("GET", "/api/model", &refused, b"");
        assert_json_error(status, &body, 421, "this server answers requests for");
    }
    let (status, _, body) = served.raw("GET /api HTTP/1.0\r\n\r\n", b"");
    assert_json_error(status, &body, 400, "no Host header");
}

/// Requests built to exhaust the server: a body announced as a terabyte
/// (refused unread: nothing the size of it is allocated), a header that
/// never ends, clients that connect and send nothing, two Host headers. Each
/// gets its JSON 4xx or is dropped within seconds, the memory stays flat,
/// and a well-behaved client is answered throughout.
#[test]
fn requests_built_to_exhaust_it_are_refused_in_bounded_time_and_memory() {
    let served = Served::start(&trained_model().1, &[]);
    let host = served.host();
    // Warmed up first: each worker's buffers made, a drawing read.
    let dir = tempfile::tempdir().unwrap();
    let drawing = std::fs::read(picture(dir.path(), 0)).unwrap();
    for _ in 0..8 {
        assert_eq!(served.post("/api/explain", &drawing).0, 200);
    }
    let before = served.peak_rss_kb();
    for length in [
        "1099511627776",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let head = format!(
            "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n"
        );
        let (status, _, body) = served.raw(&head, b"abc");
        let expected = if length.len() > 20 { 400 } else { 413 };
        assert_json_error(status, &body, expected, "");
    }
    // Headers over 16 kB.
    let head = format!(
        "GET /api HTTP/1.1\r\nHost: {host}\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20 << 10)
    );
    let (status, _, body) = served.raw(&head, b"");
    assert_json_error(status, &body, 431, "16 kB");
    let (status, _, body) = served.raw(
        &format!("GET /api HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n"),
        b"",
    );
    assert_json_error(status, &body, 400, "two Host headers");
    // Ten clients that connect and send nothing (more than the workers):
    // each is dropped after the 2 s the head may take, and a real request
    // made meanwhile is answered within a few seconds.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(("127.0.0.1", served.port)).unwrap())
        .collect();
    let started = Instant::now();
    assert_eq!(served.get("/api").0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        started.elapsed()
    );
    for mut stream in idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }
    let after = served.peak_rss_kb();
    assert!(after < before + 20_000, "peak RSS {before} -> {after} kB");
    assert!(!served.stderr().contains("panicked"), "{}", served.stderr());
}

#[test]
fn bad_requests_get_a_json_4xx_and_the_server_goes_on() {
    let served = Served::start(&trained_model().1, &[]);
    let host = served.host();
    // Bodies over 1 MB, announced or streamed in chunks.
    let big = vec![0u8; (1 << 20) + 1];
    let (status, body) = served.post("/api/predict", &big);
    assert_json_error(status, &serde_json::to_vec(&body).unwrap(), 413, "1024 kB");
    let mut chunked = format!(
        "POST /api/predict HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..20 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend(std::iter::repeat_n(b'a', 64 << 10));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    // Chunks are refused unread: a chunk-size line has no natural bound.
    let (status, _, body) = served.raw("", &chunked);
    assert_json_error(status, &body, 411, "with a Content-Length, not in chunks");
    // Drawings: too large, not a picture, blank, empty.
    let (status, body) = served.post("/api/predict", &png_of(3000, 8, 255));
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at most 2048"),
        "{body}"
    );
    let (status, body) = served.post("/api/explain", b"not a picture");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not an image"),
        "{body}"
    );
    let (status, body) = served.post("/api/predict", &png_of(100, 100, 255));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("blank"), "{body}");
    assert_eq!(body["blank"], true);
    let (status, body) = served.post("/api/predict", b"");
    assert_eq!(status, 400, "{body}");
    let truncated = &png_of(50, 50, 0)[..40];
    let (status, _) = served.post("/api/predict", truncated);
    assert_eq!(status, 400);
    // No route reads a path the request names.
    for path in [
        "/../../../../etc/passwd",
        "/api/../Cargo.toml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/page.html",
        "/api/explain/test/10000",
        "/api/explain/test/-1",
        "/api/explain/test/..%2f..%2fetc",
    ] {
        let (status, body) = served.get(path);
        assert_json_error(status, &body, 404, "");
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{path}");
    }
    let (status, _, body) = served.request("DELETE", "/api/model", &host, b"");
    assert_json_error(status, &body, 405, "GET only");
    let (status, _, body) = served.request("GET", "/api/predict", &host, b"");
    assert_json_error(status, &body, 405, "POST only");
    // Garbage that is not HTTP: the connection is closed or answered 4xx.
    let mut stream = TcpStream::connect(("127.0.0.1", served.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(b"\x00\x01\x02 garbage\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );
    // Still serving, and nothing panicked.
    assert_eq!(served.get("/api").0, 200);
    assert!(!served.stderr().contains("panicked"), "{}", served.stderr());
}

#[test]
fn sixty_four_clients_at_once_are_all_served_in_bounded_memory() {
    let served = Served::start(&trained_model().1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let drawing = std::fs::read(picture(dir.path(), 9)).unwrap();
    let (_, first) = served.post("/api/predict", &drawing);
    let before = served.peak_rss_kb();
    let started = Instant::now();
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..64)
            .map(|client| {
                let (served, drawing) = (&served, &drawing);
                scope.spawn(move || {
                    (0..4)
                        .map(|round| match (client + round) % 4 {
                            0 => served.post("/api/explain", drawing),
                            1 => {
                                let (s, b) = served.get("/api/mistakes");
                                (s, serde_json::from_slice(&b).unwrap())
                            }
                            _ => served.post("/api/predict", drawing),
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(answers.len(), 256);
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        if body.get("predicted").is_some() {
            assert_eq!(body["probabilities"], first["probabilities"]);
        }
    }
    let after = served.peak_rss_kb();
    eprintln!(
        "256 requests from 64 clients in {:.1} s; peak RSS {} MB before, {} MB after",
        started.elapsed().as_secs_f64(),
        before / 1024,
        after / 1024
    );
    // Four workers' buffers and 64 connections' threads, not 256 answers' worth.
    assert!(
        after < before + 200 * 1024,
        "peak RSS grew from {before} kB to {after} kB"
    );
}

#[test]
fn ctrl_c_stops_it_cleanly_and_other_hosts_are_warned_about() {
    let mut served = Served::start(&trained_model().1, &[]);
    assert_eq!(served.get("/api").0, 200);
    let status = std::process::Command::new("kill")
        .args(["-INT", &served.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = served.child.try_wait().unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline, "still running 10 s after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}: {}", served.stderr());
    let mut rest = String::new();
    served.out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "stopped\n");
    assert!(!served.stderr().contains("panicked"));
    assert!(
        TcpStream::connect(("127.0.0.1", served.port)).is_err(),
        "still listening"
    );

    // All interfaces: served, with a warning (the test talks to loopback only).
    let everywhere = Served::start(&trained_model().1, &["--host", "0.0.0.0"]);
    assert_eq!(everywhere.get("/api").0, 200);
    assert!(
        everywhere
            .stderr()
            .contains("anyone who can reach this machine"),
        "{}",
        everywhere.stderr()
    );
    let quiet = Served::start(&trained_model().1, &["--host", "127.0.0.1"]);
    assert!(!quiet.stderr().contains("warning"), "{}", quiet.stderr());

    // A taken port: one line, what to do.
    let taken = quiet.port;
    common::fails_with(
        mnist_cnn()
            .args(["serve", "--port", &taken.to_string(), "--data-dir"])
            .arg(data_dir())
            .arg("--model")
            .arg(&trained_model().1),
        "choose another with --port",
    );
}
