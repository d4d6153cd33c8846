//! The admin API's HTTP/1.1 server: small on purpose, bounded in every dimension.
//!
//! Why our own loop around `httparse` (the well-kept parser) instead of a server crate: the
//! API must stay answerable while a local user misbehaves, and the crates we had either spawn
//! a thread per connection without a bound (and panic at the thread or fd limit) or bring an
//! async runtime into the control plane. Here:
//! - one acceptor thread; at most [`ServerLimits::max_connections`] connections are served at
//!   once, each on a thread of its own; one more is answered `503` at once and closed (counted);
//!   a thread that cannot be started is answered the same way, never a panic;
//! - a request (head and body) must arrive within [`ServerLimits::request_timeout`]: a client
//!   that announces a body and never sends it is answered `408` and closed (counted);
//! - heads are bounded ([`ServerLimits::max_head_bytes`], `431`), bodies too
//!   ([`ServerLimits::max_body_bytes`], `413`); a chunked body is refused (`411`);
//! - anything that is not HTTP/1.x (an HTTP/2 preface, TLS, garbage) gets an error status and a
//!   closed connection, never a hang;
//! - one request per connection (`Connection: close`): scrapers and `curl` expect nothing more.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::metrics::ApiCounters;

/// The bounds of the server (named so the docs and the metrics can say what was hit).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Time for a whole request (head and body) to arrive.
    pub request_timeout: Duration,
    pub max_head_bytes: usize,
    pub max_body_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 64,
            request_timeout: Duration::from_secs(5),
            max_head_bytes: 16 << 10,
            max_body_bytes: 1 << 20,
        }
    }
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }
}

pub const TEXT: &str = "text/plain; charset=utf-8";

pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// A running server: its address and how to stop it.
pub struct HttpServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: std::thread::JoinHandle<()>,
}

/// How often the acceptor looks at the stop flag.
const ACCEPT_POLL_MS: i32 = 100;

impl HttpServer {
    pub fn start(
        address: SocketAddr,
        limits: ServerLimits,
        counters: Arc<ApiCounters>,
        handler: Arc<Handler>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(address)?;
        let bound = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = Acceptor {
            listener,
            limits,
            counters,
            handler,
            active: Arc::new(AtomicUsize::new(0)),
            stop: Arc::clone(&stop),
        };
        let handle = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || acceptor.run())?;
        Ok(HttpServer {
            address: bound,
            stop,
            acceptor: handle,
        })
    }

    /// Stops accepting; requests being served finish on their own (bounded by the timeout).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        if self.acceptor.join().is_err() {
            tracing::error!("admin acceptor thread panicked");
        }
    }
}

struct Acceptor {
    listener: TcpListener,
    limits: ServerLimits,
    counters: Arc<ApiCounters>,
    handler: Arc<Handler>,
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Acceptor {
    fn run(self) {
        use std::os::fd::AsRawFd;
        let fd = self.listener.as_raw_fd();
        while !self.stop.load(Ordering::Acquire) {
            if !readable(fd, ACCEPT_POLL_MS) {
                continue;
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.serve(stream),
                Err(e) => {
                    // EMFILE and friends: the API stays up and tries again.
                    tracing::warn!(error = %e, "admin API: accept failed");
                    std::thread::sleep(Duration::from_millis(ACCEPT_POLL_MS as u64));
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream) {
        if self.active.fetch_add(1, Ordering::AcqRel) >= self.limits.max_connections {
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.reject(stream, "too many admin API connections");
            return;
        }
        let slot = ActiveSlot(Arc::clone(&self.active));
        let (limits, counters, handler) = (
            self.limits,
            Arc::clone(&self.counters),
            Arc::clone(&self.handler),
        );
        let spare = stream.try_clone();
        let spawned = std::thread::Builder::new()
            .name("admin-conn".into())
            .spawn(move || {
                let _slot = slot;
                serve_connection(stream, &limits, &counters, handler.as_ref());
            });
        if spawned.is_err() {
            // The slot went back when the closure was dropped.
            if let Ok(stream) = spare {
                self.reject(stream, "cannot start a thread for the connection");
            }
        }
    }

    fn reject(&self, mut stream: TcpStream, why: &str) {
        self.counters
            .connections_rejected
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = write_response(&mut stream, &Response::text(503, format!("{why}\n")));
    }
}

/// Gives the connection slot back when the connection's thread ends (or never started).
struct ActiveSlot(Arc<AtomicUsize>);

impl Drop for ActiveSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut pfd, 1, timeout_ms) > 0 }
}

/// Why a request could not be read; each becomes a status and a closed connection.
#[derive(Debug)]
enum ReadError {
    /// The client closed before sending a whole request: nothing to answer.
    Closed,
    TimedOut,
    Malformed(u16, &'static str),
}

fn serve_connection(
    mut stream: TcpStream,
    limits: &ServerLimits,
    counters: &ApiCounters,
    handler: &Handler,
) {
    let _ = stream.set_write_timeout(Some(limits.request_timeout));
    let response = match read_request(&mut stream, limits) {
        Ok(request) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            handler(&request)
        }
        Err(ReadError::Closed) => return,
        Err(ReadError::TimedOut) => {
            counters.requests_timed_out.fetch_add(1, Ordering::Relaxed);
            Response::text(408, "request not received in time\n")
        }
        Err(ReadError::Malformed(status, why)) => {
            counters.requests_malformed.fetch_add(1, Ordering::Relaxed);
            Response::text(status, format!("{why}\n"))
        }
    };
    if let Err(e) = write_response(&mut stream, &response) {
        tracing::debug!(error = %e, "admin API: client went away");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn read_request(stream: &mut TcpStream, limits: &ServerLimits) -> Result<Request, ReadError> {
    let deadline = Instant::now() + limits.request_timeout;
    let mut buf = Vec::with_capacity(1024);
    let (head_len, mut request, body_len) = loop {
        read_more(stream, &mut buf, deadline, limits.max_head_bytes + 1)?;
        match parse_head(&buf, limits)? {
            Some(parsed) => break parsed,
            None if buf.len() > limits.max_head_bytes => {
                return Err(ReadError::Malformed(431, "request head too large"))
            }
            None => {}
        }
    };
    let mut body = buf.split_off(head_len);
    while body.len() < body_len {
        read_more(stream, &mut body, deadline, body_len)?;
    }
    body.truncate(body_len);
    request.body = body;
    Ok(request)
}

/// Reads once more into `buf` (at most up to `cap` bytes in total), before `deadline`.
fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
    cap: usize,
) -> Result<(), ReadError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(ReadError::TimedOut);
    }
    let _ = stream.set_read_timeout(Some(left));
    let mut chunk = [0u8; 8192];
    let want = chunk.len().min(cap.saturating_sub(buf.len()).max(1));
    match stream.read(&mut chunk[..want]) {
        Ok(0) => Err(ReadError::Closed),
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Ok(())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ReadError::TimedOut)
        }
        Err(_) => Err(ReadError::Closed),
    }
}

/// What a request's bytes say so far, for tests and the `api_request` fuzz target: `Ok(None)`
/// while the head is incomplete, `Ok((head length, request, body length))` once whole, or the
/// error status and reason it is answered with.
pub fn parse_request_head(
    buf: &[u8],
    limits: &ServerLimits,
) -> Result<Option<Head>, (u16, &'static str)> {
    parse_head(buf, limits).map_err(|e| match e {
        ReadError::Malformed(status, why) => (status, why),
        ReadError::TimedOut => (408, "timed out"),
        ReadError::Closed => (400, "closed"),
    })
}

/// A whole request head: (its length, the request without body, the body's length).
pub type Head = (usize, Request, usize);

/// The head, once whole.
fn parse_head(buf: &[u8], limits: &ServerLimits) -> Result<Option<Head>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => {
            return Err(ReadError::Malformed(
                505,
                "only HTTP/1.0 and HTTP/1.1 are spoken here",
            ))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ReadError::Malformed(431, "too many headers"))
        }
        Err(_) => return Err(ReadError::Malformed(400, "not an HTTP/1.x request")),
    };
    let request = Request {
        method: parsed.method.unwrap_or("").to_string(),
        path: parsed
            .path
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("")
            .to_string(),
        headers: parsed
            .headers
            .iter()
            .map(|h| (h.name.to_string(), h.value.to_vec()))
            .collect(),
        body: Vec::new(),
    };
    if request.header("transfer-encoding").is_some() {
        return Err(ReadError::Malformed(
            411,
            "send the body with a Content-Length",
        ));
    }
    let body_len = match request.header("content-length") {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .ok_or(ReadError::Malformed(400, "bad Content-Length"))?,
    };
    if body_len > limits.max_body_bytes {
        return Err(ReadError::Malformed(413, "request body too large"));
    }
    Ok(Some((head_len, request, body_len)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(response.body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(limits: ServerLimits) -> (HttpServer, Arc<ApiCounters>) {
        let counters = Arc::new(ApiCounters::default());
        let handler: Arc<Handler> = Arc::new(|r: &Request| {
            Response::text(200, format!("{} {} {}", r.method, r.path, r.body.len()))
        });
        let server = HttpServer::start(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            Arc::clone(&counters),
            handler,
        )
        .unwrap();
        (server, counters)
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(bytes).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    }

    #[test]
    fn answers_bodies_and_refuses_what_it_cannot_speak() {
        let (server, counters) = start(ServerLimits::default());
        let a = server.address;
        let ok = exchange(a, b"POST /x?y=1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("POST /x 3"),
            "{ok}"
        );
        let h2 = exchange(a, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(h2.starts_with("HTTP/1.1 505"), "{h2}");
        let junk = exchange(a, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
        assert!(junk.starts_with("HTTP/1.1 400"), "{junk}");
        let chunked = exchange(
            a,
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        );
        assert!(chunked.starts_with("HTTP/1.1 411"), "{chunked}");
        let big = exchange(a, b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        assert_eq!(counters.requests_malformed.load(Ordering::Relaxed), 4);
        server.stop();
    }

    /// A client that announces a body and never sends it holds one connection until the
    /// request timeout, and nobody else waits for it.
    #[test]
    fn a_stalled_body_does_not_block_other_requests() {
        let limits = ServerLimits {
            request_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        };
        let (server, counters) = start(limits);
        let mut stalled = TcpStream::connect(server.address).unwrap();
        stalled
            .write_all(b"POST /config HTTP/1.1\r\nContent-Length: 100\r\n\r\nab")
            .unwrap();
        let ok = exchange(server.address, b"GET /health HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        let mut answer = String::new();
        stalled.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert_eq!(counters.requests_timed_out.load(Ordering::Relaxed), 1);
        server.stop();
    }

    /// Past `max_connections` a connection is answered 503 at once, and served again once a
    /// slot is free.
    #[test]
    fn connections_are_bounded() {
        let limits = ServerLimits {
            max_connections: 2,
            request_timeout: Duration::from_secs(30),
            ..ServerLimits::default()
        };
        let (server, counters) = start(limits);
        let held: Vec<TcpStream> = (0..2)
            .map(|_| {
                let mut s = TcpStream::connect(server.address).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
                s
            })
            .collect();
        // The acceptor takes connections in order: wait until both are being served.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut refused = String::new();
        while Instant::now() < deadline {
            refused = exchange(server.address, b"GET /health HTTP/1.1\r\n\r\n");
            if refused.starts_with("HTTP/1.1 503") {
                break;
            }
        }
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(counters.connections_rejected.load(Ordering::Relaxed) >= 1);
        drop(held);
        let mut ok = String::new();
        while Instant::now() < deadline {
            ok = exchange(server.address, b"GET /health HTTP/1.1\r\n\r\n");
            if ok.starts_with("HTTP/1.1 200") {
                break;
            }
        }
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        server.stop();
    }
}
