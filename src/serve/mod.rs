//! `mnist-cnn serve`: one local web page (embedded in the binary, no CDN,
//! no network) to draw a digit and watch the model read it, and the JSON
//! API the page is built on.
//!
//! Safe by default, because a server on a laptop is reachable by every web
//! page its browser opens: it listens on loopback unless told otherwise; it
//! answers only requests whose `Host` header names the address it serves
//! (a page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own
//! name, and is refused); a body is read to at most 1 MB and a
//! drawing is checked for size from its header before it is decoded; no
//! request names a file (the routes are fixed, and everything served was
//! loaded or computed at start); a bad request gets a 4xx with a JSON
//! error, and a handler that fails gets a 500, not a dead server. A fixed
//! pool of four threads reads each request and computes its answer, each
//! with its own network buffers; connections wait in a bounded queue, and
//! every read is bounded in size and time ([`http`]), so memory does not
//! grow with the number of clients and a slow one holds a worker for
//! seconds at most.

mod http;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::AtomicBool;

use serde::Serialize;
use serde_json::{Value, json};
use thiserror::Error;

use crate::arch;
use crate::backend;
use crate::data::Examples;
use crate::eval;
use crate::explain::{Explainer, Explanation};
use crate::idx::PIXELS;
use crate::misclassified;
use crate::model::Cnn;
use crate::plot;
use crate::prepare::{self, PrepareError};
use crate::train::Metadata;

/// The page: HTML, CSS and JavaScript in one file, compiled into the binary.
const PAGE: &str = include_str!("page.html");

/// The largest request body read: a drawing is some kilobytes of PNG.
const MAX_BODY: usize = 1 << 20;

/// The largest drawing, in pixels a side, checked from the picture's
/// header before it is decoded: a page's canvas is a few hundred.
const MAX_DRAWING_SIDE: u32 = 2048;

/// Threads computing answers; each holds one copy of the network's buffers.
const WORKERS: usize = 4;

/// Most mistakes the gallery gets: the tutorial's model makes about 100.
const MAX_MISTAKES: usize = 200;

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the server answers from, loaded and computed at start.
pub struct App {
    model: Cnn,
    summary: Value,
    curves: Option<String>,
    mistakes: Value,
    test: Examples,
}

impl App {
    /// Evaluates `model` on `test` (for the mistakes and the accuracy the
    /// page shows) and keeps what the routes answer.
    pub fn new(model: &Cnn, metadata: &Metadata, test: Examples) -> Self {
        let device = backend::host_device();
        let model = model.copied_to(&device);
        let evaluation = eval::evaluate(&model, &test, eval::BATCH, &device);
        let picked = misclassified::pick(&evaluation, &test, Some(MAX_MISTAKES), 0);
        let mistakes: Vec<Value> = picked
            .mistakes
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).expect("a mistake serialises");
                v["pixels"] = test.images.image(m.index).into();
                v
            })
            .collect();
        let layers: Vec<Value> = arch::layers()
            .iter()
            .map(|l| json!({"name": l.name, "shape": l.shape, "params": l.params}))
            .collect();
        let summary = json!({
            "architecture": metadata.architecture,
            "parameters": metadata.parameters,
            "layers": layers,
            "epochs": metadata.epochs_done(),
            "config": metadata.config,
            "train_examples": metadata.train_examples,
            "history": metadata.history,
            "test_at_training": metadata.test,
            "test": {
                "loss": evaluation.loss,
                "accuracy": evaluation.accuracy,
                "count": evaluation.count,
            },
        });
        let curves = plot::svg(&metadata.history, metadata.validation_data.as_deref()).ok();
        Self {
            model,
            summary,
            curves,
            mistakes: json!({
                "total": picked.total,
                "tested": test.len(),
                "mistakes": mistakes,
            }),
            test,
        }
    }
}

/// A listening server.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    hosts: Vec<String>,
    app: App,
}

impl Server {
    /// Listens on `host:port` (port 0: any free one).
    pub fn bind(host: IpAddr, port: u16, app: App) -> Result<Self, ServeError> {
        let addr = SocketAddr::new(host, port);
        let failed = |e: std::io::Error| ServeError::Bind {
            addr,
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(addr).map_err(failed)?;
        let addr = listener.local_addr().map_err(failed)?;
        Ok(Self {
            listener,
            addr,
            hosts: allowed_hosts(addr),
            app,
        })
    }

    /// The page's address, to print.
    pub fn url(&self) -> String {
        format!("http://{}/", host_name(self.addr))
    }

    /// Serves until `stop` is set, then returns once every worker has
    /// finished the request it had.
    pub fn run(self, stop: &AtomicBool) -> Result<(), ServeError> {
        let Self {
            listener,
            addr,
            hosts,
            app,
        } = self;
        let explainers = (0..WORKERS).map(|_| Explainer::new(&app.model)).collect();
        http::serve(
            listener,
            stop,
            explainers,
            MAX_BODY,
            |explainer, request| answer(&app, &hosts, addr.port(), request, explainer),
            |refused| respond(Reply::error(refused.status, refused.message)),
        )
        .map_err(|source| ServeError::Serve { addr, source })
    }
}

/// The reply to `request`, with the headers every answer carries.
fn answer(
    app: &App,
    hosts: &[String],
    port: u16,
    request: http::Request,
    explainer: &mut Explainer,
) -> http::Response {
    let reply = catch_unwind(AssertUnwindSafe(|| {
        handle(app, hosts, port, &request, explainer)
    }))
    .unwrap_or_else(|_| {
        // The buffers may be half-written: start from fresh ones.
        *explainer = Explainer::new(&app.model);
        Reply::error(500, "internal error while answering this request")
    });
    respond(reply)
}

/// `reply` as the HTTP layer sends it.
fn respond(reply: Reply) -> http::Response {
    let mut headers = vec![
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
    ];
    if reply.content_type.starts_with("text/html") {
        headers.push((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             img-src 'self' data: blob:; connect-src 'self'; form-action 'none'; \
             frame-ancestors 'none'",
        ));
    }
    http::Response {
        status: reply.status,
        content_type: reply.content_type,
        headers,
        body: reply.body,
    }
}

/// `127.0.0.1:8080`, `[::1]:8080`.
fn host_name(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]:{}", addr.port()),
        IpAddr::V4(ip) => format!("{ip}:{}", addr.port()),
    }
}

/// The `Host` headers the server answers: its address and, on loopback,
/// `localhost`, each with the port. Listening on every interface (0.0.0.0
/// or ::) it answers any IP address with its port: DNS rebinding needs a
/// name, which is still refused.
fn allowed_hosts(addr: SocketAddr) -> Vec<String> {
    let port = addr.port();
    let mut hosts = vec![host_name(addr)];
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        hosts.push(format!("localhost:{port}"));
    }
    hosts
}

fn host_allowed(hosts: &[String], host: &str, port: u16) -> bool {
    let host = host.trim().to_ascii_lowercase();
    if hosts.contains(&host) {
        return true;
    }
    // On every interface: any IP literal with our port.
    let unspecified = hosts[0].starts_with("0.0.0.0:") || hosts[0].starts_with("[::]:");
    unspecified && host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port)
}

/// An answer: status, type and body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

impl Reply {
    fn json(value: &impl Serialize) -> Self {
        Self {
            status: 200,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("JSON values serialise"),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            ..Self::json(&json!({"error": message.into(), "status": status}))
        }
    }
}

/// The endpoints, for `GET /api` (and the README says the same).
fn endpoints() -> Value {
    json!({
        "GET /": "the page",
        "GET /api": "this list",
        "GET /api/model": "the model's summary: architecture, layers, epochs, settings, history, test loss and accuracy",
        "GET /api/curves.svg": "the learning curves (loss and accuracy per epoch)",
        "GET /api/mistakes": "test images the model gets wrong: {total, tested, mistakes: [{index, predicted, true, confidence, pixels}]}",
        "GET /api/explain/test/INDEX": "explain's numbers for test image INDEX, with its label",
        "POST /api/predict": "body: a picture of a digit (PNG from the page's canvas); answer: {predicted, probabilities, input, inverted, thickened}",
        "POST /api/explain": "body: as /api/predict; answer: explain's numbers (input, filters, conv, pooled, hidden, logits, probabilities, saliency) and inverted, thickened",
    })
}

fn handle(
    app: &App,
    hosts: &[String],
    port: u16,
    request: &http::Request,
    explainer: &mut Explainer,
) -> Reply {
    let host = &request.host;
    if !host_allowed(hosts, host, port) {
        return Reply::error(
            421,
            format!(
                "this server answers requests for {}, not {host}",
                hosts.join(" or ")
            ),
        );
    }
    // The path without the query, which no route reads.
    let path = request.path.as_str();
    use http::Method::{Get, Head, Post};
    match (request.method, path) {
        (Get | Head, "/") => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: PAGE.as_bytes().to_vec(),
        },
        (Get | Head, "/api") => Reply::json(&endpoints()),
        (Get | Head, "/api/model") => Reply::json(&app.summary),
        (Get | Head, "/api/curves.svg") => match &app.curves {
            Some(svg) => Reply {
                status: 200,
                content_type: "image/svg+xml",
                body: svg.as_bytes().to_vec(),
            },
            None => Reply::error(404, "the model has no learning curves (no epoch recorded)"),
        },
        (Get | Head, "/api/mistakes") => Reply::json(&app.mistakes),
        (Get | Head, p) if p.starts_with("/api/explain/test/") => {
            let index = &p["/api/explain/test/".len()..];
            match index.parse::<usize>() {
                Ok(i) if i < app.test.len() => {
                    let mut pixels = Vec::with_capacity(PIXELS);
                    app.test.images.scaled_into(&[i], &mut pixels);
                    let mut v = explanation_json(&explainer.explain(&pixels));
                    v["index"] = i.into();
                    v["label"] = app.test.labels[i].into();
                    Reply::json(&v)
                }
                _ => Reply::error(
                    404,
                    format!(
                        "no test image {index:?}: the {} test images are numbered 0 to {}",
                        app.test.len(),
                        app.test.len().saturating_sub(1)
                    ),
                ),
            }
        }
        (Post, "/api/predict" | "/api/explain") => {
            if request.body.is_empty() {
                return Reply::error(400, "the body is empty: send the drawing as a PNG");
            }
            let prepared = match prepare_drawing(&request.body) {
                Ok(p) => p,
                Err(reply) => return reply,
            };
            let mut v = if path == "/api/predict" {
                let probabilities = explainer.probabilities(&prepared.pixels);
                json!({
                    "predicted": eval::top(&probabilities, 1)[0].0,
                    "probabilities": probabilities,
                    "input": prepared.pixels,
                })
            } else {
                explanation_json(&explainer.explain(&prepared.pixels))
            };
            v["inverted"] = prepared.inverted.into();
            v["thickened"] = prepared.thickened.into();
            Reply::json(&v)
        }
        (_, "/" | "/api" | "/api/model" | "/api/curves.svg" | "/api/mistakes") => {
            Reply::error(405, format!("{path} answers GET only"))
        }
        (_, "/api/predict" | "/api/explain") => Reply::error(
            405,
            format!("{path} answers POST only (the picture as the body)"),
        ),
        _ => Reply::error(
            404,
            format!("nothing at {path:?}: GET /api lists the endpoints"),
        ),
    }
}

fn explanation_json(e: &Explanation) -> Value {
    serde_json::to_value(e).expect("an explanation serialises")
}

/// A drawing made into the network's input by `predict`'s steps, its size
/// checked from its header first.
fn prepare_drawing(body: &[u8]) -> Result<prepare::Prepared, Reply> {
    let bad = |e: PrepareError| Reply::error(400, format!("cannot read the drawing: {e}"));
    let reader = image::ImageReader::new(std::io::Cursor::new(body))
        .with_guessed_format()
        .map_err(|e| bad(PrepareError::Read(e)))?;
    if reader.format().is_none() {
        return Err(bad(PrepareError::UnknownFormat));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| bad(PrepareError::Decode(e.to_string())))?;
    if w > MAX_DRAWING_SIDE || h > MAX_DRAWING_SIDE {
        return Err(Reply::error(
            413,
            format!("the drawing is {w}×{h} pixels; at most {MAX_DRAWING_SIDE} a side"),
        ));
    }
    prepare::prepare_bytes(body).map_err(|e| match e {
        // Said apart, so that the page can show an empty canvas as one.
        PrepareError::Blank => Reply {
            status: 400,
            ..Reply::json(&json!({"error": format!("cannot read the drawing: {e}"), "status": 400, "blank": true}))
        },
        e => bad(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_must_name_the_served_address() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let hosts = allowed_hosts(loopback);
        for ok in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST:8080"] {
            assert!(host_allowed(&hosts, ok, 8080), "{ok}");
        }
        for refused in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "localhost",
            "127.0.0.1",
            "10.0.0.1:8080",
        ] {
            assert!(!host_allowed(&hosts, refused, 8080), "{refused}");
        }
        let all: SocketAddr = "0.0.0.0:9000".parse().unwrap();
        let hosts = allowed_hosts(all);
        assert!(host_allowed(&hosts, "192.168.1.7:9000", 9000));
        assert!(host_allowed(&hosts, "[fe80::1]:9000", 9000));
        assert!(!host_allowed(&hosts, "rebind.example:9000", 9000));
        assert!(!host_allowed(&hosts, "192.168.1.7:80", 9000));
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert!(host_allowed(&allowed_hosts(v6), "[::1]:7000", 7000));
    }
}
