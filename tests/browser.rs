//! The page in a real browser: headless Chromium driven through
//! chromedriver (WebDriver, with fantoccini). A test image's strokes are
//! drawn on the canvas with pointer events, and the digit and the ten
//! probabilities the page shows must be `predict`'s for the very picture
//! the page sent; the gallery shows the mistakes and the quiz keeps score.
//! Takes the screenshot the README shows.
//!
//! Needs Debian's `chromium` and `chromium-driver` (or CHROMIUM and
//! CHROMEDRIVER naming the two programs), and the `browser-test` feature:
//! `cargo test --release --features browser-test --test browser`.
mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::served::{Served, floats};
use common::{mnist_cnn, stdout_of};
use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use mnist_cnn::data::Split;
use mnist_cnn::idx::SIDE;
use serde_json::{Value, json};

/// Side of the page's drawing canvas, in CSS pixels.
const PAD: usize = 280;

/// A program named by `var` or found at `default`, or a failure that says
/// what to install.
fn program(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| default.into());
    assert!(
        path.exists(),
        "{} not found: the browser test needs Chromium and its WebDriver \
         (`apt-get install -y chromium chromium-driver`), or {var} naming it",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver(Child, u16);

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new(program("CHROMEDRIVER", "/usr/bin/chromedriver"))
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(child, port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = program("CHROMIUM", "/usr/bin/chromium");
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1100,1250",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {"binary": chromium, "args": args},
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.1))
        .await
        .expect("a Chromium session through chromedriver")
}

/// The strokes of a 28×28 image scaled to the canvas: one horizontal
/// stroke per run of inked pixels in a row, in canvas coordinates.
fn strokes(pixels: &[u8]) -> Vec<((f64, f64), (f64, f64))> {
    let scale = (PAD / SIDE) as f64;
    let mut out = Vec::new();
    for y in 0..SIDE {
        let mut x = 0;
        while x < SIDE {
            if pixels[y * SIDE + x] < 128 {
                x += 1;
                continue;
            }
            let start = x;
            while x < SIDE && pixels[y * SIDE + x] >= 128 {
                x += 1;
            }
            let cy = (y as f64 + 0.5) * scale;
            out.push((
                ((start as f64 + 0.5) * scale, cy),
                ((x as f64 - 0.5) * scale, cy),
            ));
        }
    }
    out
}

async fn script(client: &Client, code: &str) -> Value {
    client.execute(code, vec![]).await.unwrap()
}

async fn wait_until(client: &Client, condition: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while script(client, &format!("return Boolean({condition});")).await != Value::Bool(true) {
        let errors = script(
            client,
            "return window.mnist ? window.mnist.errors : 'no page';",
        )
        .await;
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page errors: {errors}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Draws test image `index` on the canvas; returns what the page then shows
/// (predicted digit, probabilities) and the picture it sent.
async fn draw(client: &Client, index: usize) -> (Value, Vec<f32>, Vec<u8>) {
    let test = common::subset(Split::Test, index + 1);
    let pad = client.find(Locator::Id("pad")).await.unwrap();
    client
        .find(Locator::Id("clear"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Offsets from the canvas's centre, as WebDriver's element origin takes them.
    let at = |(x, y): (f64, f64)| PointerAction::MoveToElement {
        element: pad.clone(),
        duration: Some(Duration::from_millis(15)),
        x: x - PAD as f64 / 2.0,
        y: y - PAD as f64 / 2.0,
    };
    let mut pen = MouseActions::new("pen".into());
    for (from, to) in strokes(test.images.image(index)) {
        pen = pen
            .then(at(from))
            .then(PointerAction::Down { button: 0 })
            .then(at(((from.0 + to.0) / 2.0, from.1)))
            .then(at(to))
            .then(PointerAction::Up { button: 0 });
    }
    client.perform_actions(pen).await.unwrap();
    wait_until(
        client,
        "window.mnist.idle() && window.mnist.requests > 0",
        "the last stroke's answer",
    )
    .await;
    let shown = script(
        client,
        "return {predicted: document.getElementById('predicted').dataset.predicted,
                 probabilities: Array.from({length: 10}, (_, d) =>
                     Number(document.getElementById('bar-' + d).dataset.p))};",
    )
    .await;
    let png = client
        .execute(
            "return window.mnist.lastPng.arrayBuffer().then(b => Array.from(new Uint8Array(b)));",
            vec![],
        )
        .await
        .unwrap();
    let png: Vec<u8> = serde_json::from_value(png).unwrap();
    let probabilities = floats(&shown["probabilities"]);
    (shown["predicted"].clone(), probabilities, png)
}

/// Clicks the quiz's button for digit `d`; returns the score shown then.
async fn guess(client: &Client, d: u64) -> Value {
    let id = format!("guess-{d}");
    client
        .find(Locator::Id(&id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    script(
        client,
        "return document.getElementById('score').textContent;",
    )
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn a_digit_drawn_in_the_browser_reads_as_predict_reads_it() {
    let (dir, model, _) = common::train_model(&["--epochs", "1", "--limit", "6000"]);
    let served = Served::start(&model, &[]);
    let (_, body) = served.get("/api/mistakes");
    let mistakes: Value = serde_json::from_slice(&body).unwrap();
    let driver = Driver::start();
    let client = browser(&driver, &dir.path().join("profile")).await;
    // The checks run as a task of their own, so that the browser is closed
    // however they end (chromedriver killed leaves it running).
    let checks = tokio::spawn(check_page(
        client.clone(),
        served.port,
        model.clone(),
        dir.path().to_path_buf(),
        mistakes,
    ));
    let outcome = checks.await;
    client.close().await.unwrap();
    if let Err(failed) = outcome {
        std::panic::resume_unwind(failed.into_panic());
    }
}

/// What the test checks on the page served at `port` (see the file's doc).
async fn check_page(client: Client, port: u16, model: PathBuf, dir: PathBuf, mistakes: Value) {
    let opened = Instant::now();
    client
        .goto(&format!("http://127.0.0.1:{port}/"))
        .await
        .unwrap();
    wait_until(
        &client,
        "document.body.dataset.ready === '1'",
        "the page to load",
    )
    .await;
    let load_ms = script(&client, "return window.mnist.loadMs;")
        .await
        .as_f64()
        .unwrap();
    let until_ready = opened.elapsed().as_secs_f64() * 1000.0;

    let mut latencies = Vec::new();
    for index in [0, 1, 2] {
        let (predicted, probabilities, png) = draw(&client, index).await;
        let picture = dir.join(format!("drawn-{index}.png"));
        std::fs::write(&picture, &png).unwrap();
        let cli: Value = serde_json::from_str(&stdout_of(
            mnist_cnn()
                .args(["predict", "--json"])
                .arg(&picture)
                .arg("--model")
                .arg(&model),
        ))
        .unwrap();
        assert_eq!(
            predicted,
            cli[0]["predicted"].to_string(),
            "test image {index}"
        );
        let worst = common::max_diff(&probabilities, &floats(&cli[0]["probabilities"]));
        assert!(
            worst <= 1e-6,
            "test image {index}: the page's bars differ from predict's by {worst}"
        );
        let label = common::subset(Split::Test, index + 1).labels[index];
        eprintln!(
            "test image {index} (label {label}) drawn: the page and predict read {predicted}"
        );
        let times = script(&client, "return window.mnist.latencies.splice(0);").await;
        let ms: Vec<i32> = floats(&times).iter().map(|&x| x.round() as i32).collect();
        eprintln!("test image {index}: stroke-to-bars latencies (ms) {ms:?}");
        latencies.extend(floats(&times));
    }
    // The explain views of the last drawing, and its 28×28 input.
    wait_until(
        &client,
        "document.querySelectorAll('#conv canvas').length === 32",
        "the feature maps",
    )
    .await;
    assert_eq!(
        script(
            &client,
            "return document.querySelectorAll('#pooled canvas').length;"
        )
        .await,
        32
    );
    assert_eq!(
        script(
            &client,
            "return document.querySelectorAll('#hidden div').length;"
        )
        .await,
        128
    );

    // The gallery holds the mistakes the API lists; the quiz keeps score.
    let listed = mistakes["mistakes"].as_array().unwrap();
    assert!(
        !listed.is_empty(),
        "a model with no mistakes cannot test the gallery"
    );
    let shown: Vec<u64> = serde_json::from_value(
        script(&client, "return Array.from(document.querySelectorAll('#gallery figure.mistake'), f => Number(f.dataset.index));").await,
    )
    .unwrap();
    let expected: Vec<u64> = listed
        .iter()
        .map(|m| m["index"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, expected);
    let truth = |i: usize| listed[i % listed.len()]["true"].as_u64().unwrap();
    assert_eq!(guess(&client, truth(0)).await, "you: 1/1 · model: 0/1");
    // A second guess at the same digit does not count.
    assert_eq!(
        guess(&client, (truth(0) + 1) % 10).await,
        "you: 1/1 · model: 0/1"
    );
    client
        .find(Locator::Id("next"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        guess(&client, (truth(1) + 1) % 10).await,
        "you: 1/2 · model: 0/2"
    );
    let result = script(
        &client,
        "return document.getElementById('quiz-result').textContent;",
    )
    .await;
    let said = listed[1 % listed.len()]["predicted"].as_u64().unwrap();
    assert!(
        result
            .as_str()
            .unwrap()
            .contains(&format!("the model said {said}")),
        "{result}"
    );

    // The screenshot the README shows (from the top of the page).
    script(&client, "window.scrollTo(0, 0); return 0;").await;
    let shot = client.screenshot().await.unwrap();
    let out = std::env::var_os("MNIST_CNN_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve.png"));
    std::fs::write(&out, &shot).unwrap();
    let errors = script(&client, "return window.mnist.errors;").await;
    assert_eq!(errors, json!([]), "the page reported errors");

    latencies.sort_by(f32::total_cmp);
    let median = latencies[latencies.len() / 2];
    let worst = latencies[latencies.len() - 1];
    eprintln!(
        "page load {load_ms:.0} ms (navigation to data shown; {until_ready:.0} ms as the test saw it); \
         stroke to updated bars: median {median:.0} ms, worst {worst:.0} ms over {} answers; \
         screenshot {} ({} kB)",
        latencies.len(),
        out.display(),
        shot.len() / 1024
    );
    assert!(latencies.iter().all(|&ms| ms > 0.0), "{latencies:?}");
}
