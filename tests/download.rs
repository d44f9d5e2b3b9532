//! `download` against real HTTP servers on 127.0.0.1: success, every
//! failure a mirror can produce, and falling through to the next mirror.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Fixture, gzip, read_request, serve, serve_raw, serve_with};
use mnist_cnn::data::FileSpec;
use mnist_cnn::download::{DownloadError, Downloader, FetchError, Mirror, Outcome, Report};
use mnist_cnn::files::sha256_hex;

fn downloader(mirrors: &[&str], fixture: &Fixture) -> Downloader {
    let mut d = Downloader::new(mirrors.iter().map(|m| Mirror::parse(m)).collect());
    d.files = fixture.specs();
    d.timeout = Duration::from_secs(2);
    d
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// What a download reported of each failing mirror.
#[derive(Default)]
struct Failures(Vec<(String, String, bool)>);

impl Report for Failures {
    fn failed(&mut self, _file: &str, mirror: &Mirror, reason: &FetchError, next: bool) {
        self.0.push((mirror.to_string(), reason.to_string(), next));
    }
}

/// Runs a download that must fail on every mirror of its first file; returns
/// the reason each mirror gave, in order.
fn failure_lines(d: &Downloader, dir: &Path) -> Vec<String> {
    let mut failures = Failures::default();
    let err = d.run(dir, &mut failures).unwrap_err();
    match err {
        DownloadError::AllMirrorsFailed { tried, .. } => assert_eq!(tried, d.mirrors.len()),
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(failures.0.len(), d.mirrors.len(), "one report per mirror");
    let nexts: Vec<bool> = failures.0.iter().map(|f| f.2).collect();
    let mut expected = vec![true; d.mirrors.len()];
    *expected.last_mut().unwrap() = false;
    assert_eq!(nexts, expected, "\"trying the next\" on all but the last");
    failures
        .0
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect()
}

#[test]
fn fetches_verifies_and_stores_decompressed_files() {
    let fixture = Fixture::synthetic(20, 10);
    let url = serve(fixture.gz_by_path());
    let dir = tempfile::tempdir().unwrap();
    let stored = downloader(&[&url], &fixture)
        .run(dir.path(), &mut ())
        .unwrap();
    let shapes: Vec<Vec<usize>> = stored.iter().map(|s| s.shape.clone()).collect();
    assert_eq!(
        shapes,
        [vec![20, 28, 28], vec![20], vec![10, 28, 28], vec![10]]
    );
    for (s, (name, bytes)) in stored.iter().zip(&fixture.files) {
        assert_eq!(
            s.outcome,
            Outcome::Fetched {
                mirror: url.clone()
            }
        );
        assert_eq!(&std::fs::read(dir.path().join(name)).unwrap(), bytes);
    }
    assert_eq!(entries(dir.path()).len(), 4, "no temp files left behind");
}

#[test]
fn valid_files_are_not_fetched_again_unless_forced() {
    let fixture = Fixture::synthetic(5, 5);
    let url = serve(fixture.gz_by_path());
    let dir = tempfile::tempdir().unwrap();
    let mut d = downloader(&[&url], &fixture);
    d.run(dir.path(), &mut ()).unwrap();
    let again = d.run(dir.path(), &mut ()).unwrap();
    assert!(again.iter().all(|s| s.outcome == Outcome::AlreadyPresent));
    d.force = true;
    let forced = d.run(dir.path(), &mut ()).unwrap();
    assert!(
        forced
            .iter()
            .all(|s| matches!(s.outcome, Outcome::Fetched { .. }))
    );
}

#[test]
fn a_corrupted_local_file_is_fetched_again() {
    let fixture = Fixture::synthetic(5, 5);
    let url = serve(fixture.gz_by_path());
    let dir = tempfile::tempdir().unwrap();
    let d = downloader(&[&url], &fixture);
    d.run(dir.path(), &mut ()).unwrap();
    let victim = dir.path().join(&fixture.files[0].0);
    std::fs::write(&victim, b"garbage").unwrap();
    let stored = d.run(dir.path(), &mut ()).unwrap();
    assert!(matches!(stored[0].outcome, Outcome::Fetched { .. }));
    assert_eq!(std::fs::read(&victim).unwrap(), fixture.files[0].1);
}

#[test]
fn first_mirror_failing_falls_through_to_the_second() {
    let fixture = Fixture::synthetic(5, 5);
    let broken = serve(vec![]); // 404 for everything
    let good = serve(fixture.gz_by_path());
    let dir = tempfile::tempdir().unwrap();
    let stored = downloader(&[&broken, &good], &fixture)
        .run(dir.path(), &mut ())
        .unwrap();
    assert!(stored.iter().all(|s| s.outcome
        == Outcome::Fetched {
            mirror: good.clone()
        }));
}

#[test]
fn every_kind_of_failure_is_reported_per_mirror() {
    let fixture = Fixture::synthetic(5, 5);
    let not_found = serve(vec![]);
    let forbidden = serve_with(|_| (403, b"forbidden".to_vec()));
    let corrupt = serve_with(|_| (200, b"this is not gzip at all".to_vec()));
    // A valid gzip of the wrong content: fails the checksum.
    let wrong = serve_with(|_| (200, gzip(b"some other file")));
    let dir = tempfile::tempdir().unwrap();
    let d = downloader(&[&not_found, &forbidden, &corrupt, &wrong], &fixture);
    let lines = failure_lines(&d, dir.path());
    let message = d.run(dir.path(), &mut ()).unwrap_err().to_string();
    assert_eq!(
        message,
        "could not get train-images-idx3-ubyte.gz from any of the 4 mirrors tried"
    );
    assert_eq!(lines[0], "HTTP status 404");
    assert_eq!(lines[1], "HTTP status 403");
    assert!(
        lines[2].starts_with("not a valid gzip stream"),
        "{}",
        lines[2]
    );
    assert!(lines[3].starts_with("checksum mismatch"), "{}", lines[3]);
    assert!(entries(dir.path()).is_empty(), "nothing written on failure");
}

#[test]
fn a_truncated_gzip_is_rejected() {
    let fixture = Fixture::synthetic(50, 5);
    let gz = gzip(&fixture.files[0].1);
    let half = gz[..gz.len() / 2].to_vec();
    let url = serve_with(move |_| (200, half.clone()));
    let dir = tempfile::tempdir().unwrap();
    let lines = failure_lines(&downloader(&[&url], &fixture), dir.path());
    assert!(
        lines[0].starts_with("not a valid gzip stream"),
        "{}",
        lines[0]
    );
}

#[test]
fn an_interrupted_download_leaves_no_file() {
    let fixture = Fixture::synthetic(50, 5);
    let gz = gzip(&fixture.files[0].1);
    // Announce the whole body, send half, then hang up.
    let url = serve_raw(move |mut stream| {
        read_request(&mut stream);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            gz.len()
        );
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&gz[..gz.len() / 2]);
    });
    let dir = tempfile::tempdir().unwrap();
    let lines = failure_lines(&downloader(&[&url], &fixture), dir.path());
    assert!(
        lines[0].contains("cut short") || lines[0].contains("read failed"),
        "{}",
        lines[0]
    );
    assert!(
        entries(dir.path()).is_empty(),
        "no partial file: {:?}",
        entries(dir.path())
    );
}

#[test]
fn a_silent_server_hits_the_timeout() {
    let fixture = Fixture::synthetic(5, 5);
    let url = serve_raw(|mut stream| {
        read_request(&mut stream);
        std::thread::sleep(Duration::from_secs(6));
    });
    let dir = tempfile::tempdir().unwrap();
    let mut d = downloader(&[&url], &fixture);
    d.timeout = Duration::from_secs(1);
    d.files.truncate(1);
    let started = Instant::now();
    let lines = failure_lines(&d, dir.path());
    assert!(started.elapsed() < Duration::from_secs(5), "gave up late");
    assert!(lines[0].to_lowercase().contains("timeout"), "{}", lines[0]);
}

#[test]
fn local_folders_and_file_urls_are_mirrors() {
    let fixture = Fixture::synthetic(5, 5);
    let src = tempfile::tempdir().unwrap();
    fixture.write_gz(src.path());
    for mirror in [
        src.path().display().to_string(),
        format!("file://{}", src.path().display()),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let stored = downloader(&[&mirror], &fixture)
            .run(dir.path(), &mut ())
            .unwrap();
        assert_eq!(stored[0].shape, vec![5, 28, 28]);
    }
    let empty = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lines = failure_lines(
        &downloader(&[&empty.path().display().to_string()], &fixture),
        dir.path(),
    );
    assert!(lines[0].contains("No such file"), "{}", lines[0]);
}

#[test]
fn a_file_with_the_right_checksum_but_a_bad_header_is_rejected() {
    // The checksum is the fixture's own, so only the IDX check can catch it.
    let bad = b"\x00\x00\x08\x03not an idx file".to_vec();
    let fixture = Fixture {
        files: vec![("train-images-idx3-ubyte".into(), bad.clone())],
    };
    let url = serve(fixture.gz_by_path());
    let dir = tempfile::tempdir().unwrap();
    let mut d = downloader(&[&url], &fixture);
    d.files = vec![FileSpec::new(
        "train-images-idx3-ubyte",
        &sha256_hex([&bad[..]]),
    )];
    let lines = failure_lines(&d, dir.path());
    assert!(
        lines[0].starts_with("not a valid MNIST file"),
        "{}",
        lines[0]
    );
}

/// A server that accepts, announces a large body and then trickles it a
/// byte at a time, never waiting long enough for a read to time out.
fn slow_loris() -> String {
    serve_raw(move |mut stream| {
        read_request(&mut stream);
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n";
        let _ = stream.write_all(head.as_bytes());
        for _ in 0..600 {
            if stream.write_all(b"x").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[test]
fn a_mirror_that_trickles_bytes_is_left_for_the_next_within_a_bound() {
    let fixture = Fixture::synthetic(5, 5);
    let good = tempfile::tempdir().unwrap();
    fixture.write_gz(good.path());
    let loris = slow_loris();
    let mut d = downloader(&[&loris, &good.path().display().to_string()], &fixture);
    d.rate_grace = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Failures::default();
    let started = Instant::now();
    let stored = d.run(dir.path(), &mut failures).unwrap();
    // Four files, each given up on after the grace and at most one more wait.
    assert!(
        started.elapsed() < Duration::from_secs(4 * 4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stored
            .iter()
            .all(|s| matches!(s.outcome, Outcome::Fetched { .. }))
    );
    assert_eq!(failures.0.len(), 4, "{:?}", failures.0);
    for (mirror, reason, next) in &failures.0 {
        assert_eq!(mirror, &loris);
        assert!(reason.starts_with("too slow: "), "{reason}");
        assert!(reason.contains("under 10 kB/s"), "{reason}");
        assert!(next);
    }
}

#[test]
fn the_whole_download_keeps_to_its_deadline() {
    let fixture = Fixture::synthetic(5, 5);
    let loris = slow_loris();
    let mut d = downloader(&[&loris, &loris], &fixture);
    // Slow servers allowed, but not for longer than the download may take.
    d.min_rate = 0;
    d.deadline = Some(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut failures = Failures::default();
    let err = d.run(dir.path(), &mut failures).unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(err, DownloadError::Deadline { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "the download's deadline of 2 s passed while getting train-images-idx3-ubyte.gz"
    );
    assert!(
        failures.0.is_empty(),
        "said once, not as a mirror's failure: {:?}",
        failures.0
    );
    assert!(entries(dir.path()).is_empty(), "nothing written");
}
