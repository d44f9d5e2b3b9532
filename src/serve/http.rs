//! The HTTP/1.1 the page needs and no more, over `std::net`: one request
//! per connection (`Connection: close`), every read bounded in size and in
//! time, a fixed pool of workers behind a bounded queue.
//!
//! Why not a crate: `tiny_http` 0.12, tried first, allocates a buffer the
//! size of any unread body's `Content-Length` when it drops a request (one
//! request announcing a terabyte aborted the server), parses chunk sizes and
//! header lines without a bound, starts a thread per connection and sets no
//! timeouts; `hyper` would bring `tokio` and tens of crates for a page that
//! serves one person. What is here is what those limits take: some 200
//! lines, each limit tested over real sockets (`tests/serve.rs`).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest request head (request line and headers) read.
const MAX_HEAD: usize = 16 << 10;
/// Most headers one request may have.
const MAX_HEADERS: usize = 64;
/// Time a client has to send its whole request head: a browser sends it
/// at once, and a client that dawdles holds a worker.
const HEAD_TIME: Duration = Duration::from_secs(2);
/// Time a client has to send its whole request, body included.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// Time an answer may take to be taken by the client.
const WRITE_TIME: Duration = Duration::from_secs(10);
/// Connections waiting for a worker; more are answered 503 at once.
const QUEUE: usize = 64;
/// How often the accepting thread looks at the stop flag when idle.
const POLL: Duration = Duration::from_millis(10);

/// A request's method, as the routes tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// One request, read whole.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The target without its query or fragment.
    pub path: String,
    /// The `Host` header's value.
    pub host: String,
    pub body: Vec<u8>,
}

/// One answer, in memory.
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: Vec<u8>,
}

/// A request that cannot be answered by a route: its status and why.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

fn refused(status: u16, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

/// Accepts connections on `listener` until `stop` is set, each answered
/// by one of `workers` threads: `answer` for a request read whole,
/// `refusal` for one that could not be. Returns once every worker has
/// finished the connection it had.
pub fn serve<W>(
    listener: TcpListener,
    stop: &AtomicBool,
    workers: Vec<W>,
    max_body: usize,
    answer: impl Fn(&mut W, Request) -> Response + Sync,
    refusal: impl Fn(Refused) -> Response + Sync,
) -> io::Result<()>
where
    W: Send,
{
    listener.set_nonblocking(true)?;
    let (queue, waiting): (SyncSender<TcpStream>, Receiver<TcpStream>) = sync_channel(QUEUE);
    let waiting = Arc::new(Mutex::new(waiting));
    std::thread::scope(|scope| {
        for mut state in workers {
            let waiting = Arc::clone(&waiting);
            let (answer, refusal) = (&answer, &refusal);
            scope.spawn(move || {
                loop {
                    // The lock is held only to take the next connection.
                    let next = waiting.lock().map(|w| w.recv());
                    let Ok(Ok(stream)) = next else { break };
                    let response = match read_request(&stream, max_body) {
                        Ok(request) => {
                            let head = request.method == Method::Head;
                            let mut response = answer(&mut state, request);
                            if head {
                                response.body.clear();
                            }
                            response
                        }
                        Err(r) => refusal(r),
                    };
                    // A client that went away is no concern of the server's.
                    let _ = write_response(&stream, &response);
                }
            });
        }
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(false).is_err() {
                        continue;
                    }
                    if let Err(TrySendError::Full(stream)) = queue.try_send(stream) {
                        let busy = refusal(refused(503, "the server is busy: try again"));
                        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
                        let _ = write_response(&stream, &busy);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
                // Out of file descriptors, a connection reset before it was
                // taken...: the listener itself is fine; try again shortly.
                Err(_) => std::thread::sleep(POLL * 10),
            }
        }
        // The workers end once the queue is empty and closed.
        drop(queue);
    });
    Ok(())
}

/// Reads one request from `stream`: its head within [`HEAD_TIME`] and
/// [`MAX_HEAD`] bytes, its body (`Content-Length` only, at most
/// `max_body`) within [`REQUEST_TIME`].
fn read_request(stream: &TcpStream, max_body: usize) -> Result<Request, Refused> {
    let started = Instant::now();
    let mut reader = Timed {
        stream,
        deadline: started + HEAD_TIME,
    };
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(at) = find(&buffer, b"\r\n\r\n") {
            break at;
        }
        if buffer.len() > MAX_HEAD {
            return Err(refused(431, "the request's headers are over 16 kB"));
        }
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Err(refused(400, "the request ended before its headers did"));
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buffer[..end])
        .map_err(|_| refused(400, "the request's headers are not text"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(refused(
            400,
            format!("not an HTTP request line: {request_line:?}"),
        ));
    };
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(refused(505, format!("{version} is not HTTP/1.1")));
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let path = target.split(['?', '#']).next().unwrap_or("").to_string();
    let mut host = None;
    let mut length = None;
    for (n, line) in lines.enumerate() {
        if n >= MAX_HEADERS {
            return Err(refused(431, format!("more than {MAX_HEADERS} headers")));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| refused(400, format!("not a header: {line:?}")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            if host.replace(value.to_string()).is_some() {
                return Err(refused(400, "the request has two Host headers"));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| refused(400, format!("Content-Length {value:?} is not a length")))?;
            if length.replace(n).is_some_and(|m| m != n) {
                return Err(refused(400, "the request has two Content-Lengths"));
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(refused(
                411,
                "send the body with a Content-Length, not in chunks",
            ));
        }
    }
    let host = host.ok_or_else(|| refused(400, "the request has no Host header"))?;
    let length = length.unwrap_or(0);
    if length > max_body {
        return Err(refused(
            413,
            format!(
                "the body is over the {} kB this server reads",
                max_body >> 10
            ),
        ));
    }
    // What came after the head, then the rest of the body.
    let mut body = buffer.split_off(end + 4);
    body.truncate(length);
    reader.deadline = started + REQUEST_TIME;
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        let n = reader.read(&mut chunk[..want])?;
        if n == 0 {
            return Err(refused(400, "the request ended before its body did"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Request {
        method,
        path,
        host,
        body,
    })
}

/// A stream read with an overall deadline rather than one per read.
struct Timed<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Refused> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(refused(408, "the request took too long to arrive"));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(|e| refused(400, e.to_string()))?;
        let mut stream = self.stream;
        match stream.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(refused(408, "the request took too long to arrive"))
            }
            Err(e) => Err(refused(400, format!("cannot read the request: {e}"))),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes `response` whole, then closes the connection.
fn write_response(stream: &TcpStream, response: &Response) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIME))?;
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut stream = stream;
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()?;
    stream.shutdown(std::net::Shutdown::Write)?;
    // Closing with a refused body still unread would reset the connection
    // before the client has read the answer: take a bounded part of it.
    stream.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut sink = [0u8; 8192];
    let mut drained = 0;
    while drained < MAX_DRAIN {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
    Ok(())
}

/// Most of an unread body taken before closing (see [`write_response`]).
const MAX_DRAIN: usize = 1 << 20;
