//! Serving the HTTP source: hyper's HTTP/1.1 connection over a shard's plain or TLS stream,
//! and each request from credentials to the durable answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use storage::writer::WalStatus;

use super::body::{self, BodyError};
use super::keys::Access;
use super::HttpSettings;
use crate::metrics::{BatchTally, SourceShardCounters};
use crate::shard::ingest::{add_to_source, ingest_frame, BatchClock, Extras, FrameIn};
use crate::shard::Shard;
use crate::sources::events::{ingest_json_event, Origin};
use crate::sources::tcp::{ActiveConnection, SourceStream};
use crate::sources::SourceSpec;

/// A plain or TLS stream as hyper's I/O.
struct HyperIo<S>(S);

impl<S: SourceStream> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // SAFETY: the bytes are initialised (zeroed) before they are read into as `[u8]`, and
        // `advance` counts only what the read filled.
        let filled = unsafe {
            let uninit = buf.as_mut();
            uninit.fill(std::mem::MaybeUninit::new(0));
            let bytes = &mut *(uninit as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]);
            match futures_lite::AsyncRead::poll_read(Pin::new(&mut self.0), cx, bytes) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        };
        // SAFETY: `filled` bytes were written by the read above.
        unsafe { buf.advance(filled) };
        Poll::Ready(Ok(()))
    }
}

impl<S: SourceStream> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        futures_lite::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures_lite::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        futures_lite::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

/// What every request of a connection is handled with.
struct Ctx<'a> {
    shard: &'a Shard,
    spec: &'a SourceSpec,
    http: &'a HttpSettings,
    peer: SocketAddr,
    /// The connection's own fields (a TLS client's certificate subject).
    extras: Option<Extras>,
    counters: Option<&'a SourceShardCounters>,
}

/// Serves one connection's requests until it closes, idles out or the source stops (the
/// request in progress is finished, then the connection closed).
pub(in crate::sources) async fn serve<S: SourceStream>(
    active: &ActiveConnection,
    stream: S,
    peer: SocketAddr,
    extras: Option<Extras>,
) {
    let (shard, run) = (&*active.shard, &*active.run);
    let spec = &run.spec;
    let Some(http) = spec.http.as_deref() else {
        return;
    };
    let idle = spec.idle_timeout;
    if stream.tcp().set_read_timeout(Some(idle)).is_err()
        || stream.tcp().set_write_timeout(Some(idle)).is_err()
    {
        return;
    }
    let ctx = Ctx {
        shard,
        spec,
        http,
        peer,
        extras,
        counters: spec.counters.shard(shard.id),
    };
    let service = hyper::service::service_fn(|req| answer(&ctx, req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(HyperIo(stream), service);
    let mut conn = std::pin::pin!(conn);
    let stopped = futures_lite::future::or(async { Some(conn.as_mut().await) }, async {
        run.stopped(shard).await;
        None
    })
    .await;
    if stopped.is_none() {
        conn.as_mut().graceful_shutdown();
        let _ = conn.await;
    }
}

type Answer = Result<Response<Full<Bytes>>, Infallible>;

async fn answer(ctx: &Ctx<'_>, req: Request<Incoming>) -> Answer {
    let (status, body, retry_after) = match handle(ctx, req).await {
        Ok(accepted) => (StatusCode::OK, format!("{{\"accepted\":{accepted}}}"), None),
        Err(refusal) => {
            let text = serde_json::json!({ "error": refusal.reason }).to_string();
            (refusal.status, text, refusal.retry_after)
        }
    };
    count_status(ctx.counters, status);
    let mut response = Response::builder()
        .status(status)
        .header("Content-Type", "application/json");
    if let Some(seconds) = retry_after {
        response = response.header("Retry-After", seconds.to_string());
    }
    if status == StatusCode::UNAUTHORIZED {
        response = response.header("WWW-Authenticate", "Bearer");
    }
    Ok(response
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

/// Why a request was not taken: its status, the reason given, when to come back.
struct Refusal {
    status: StatusCode,
    reason: String,
    retry_after: Option<u64>,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        retry_after: None,
    }
}

fn busy(status: StatusCode, reason: &str, seconds: u64) -> Refusal {
    Refusal {
        retry_after: Some(seconds),
        ..refuse(status, reason)
    }
}

/// Which endpoint a request is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Events,
    Syslog,
}

/// The request from its credentials to its events' durability: how many were accepted.
async fn handle(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<u64, Refusal> {
    let endpoint = match req.uri().path() {
        "/v1/events" => Endpoint::Events,
        "/v1/syslog" => Endpoint::Syslog,
        path => return Err(refuse(StatusCode::NOT_FOUND, format!("no endpoint {path}"))),
    };
    if req.method() != hyper::Method::POST {
        return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "POST events here"));
    }
    let key = authorize(ctx.http, &req)?;
    if ctx.shard.appender.status() == WalStatus::Blocked {
        return Err(busy(
            StatusCode::TOO_MANY_REQUESTS,
            "the disk budget is reached: Sluice takes no events until outputs catch up",
            1,
        ));
    }
    let encoding = header_text(&req, "content-encoding");
    let raw = read_body(ctx, req).await?;
    let _held = MemoryHeld::reserve(ctx.spec, raw.len())?;
    let body =
        body::decompress(encoding.as_deref(), &raw, ctx.http.max_body_size).map_err(refusal_of)?;
    let _held_plain = MemoryHeld::reserve(ctx.spec, body.len() - raw.len().min(body.len()))?;
    let events = Events::decode(endpoint, &body, ctx.spec.max_frame)?;
    if let Some(key) = key {
        ctx.http
            .keys
            .take(key, events.len() as u64)
            .map_err(|wait| busy(StatusCode::TOO_MANY_REQUESTS, "the key's rate_limit", wait))?;
    }
    let key_name = key.and_then(|k| ctx.http.keys.name(k));
    ingest(ctx, &events, key_name).await
}

fn header_text<B>(req: &Request<B>, name: &str) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_ascii_lowercase())
}

/// The key the request presents (`Authorization: Bearer` or `X-API-Key`), checked.
fn authorize<B>(http: &HttpSettings, req: &Request<B>) -> Result<Option<usize>, Refusal> {
    let headers = req.headers();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    let presented = bearer.or_else(|| headers.get("x-api-key").map(|v| v.as_bytes()));
    match http.keys.access(presented) {
        Access::Open => Ok(None),
        Access::Key(k) => Ok(Some(k)),
        Access::Missing => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "an API key is required (Authorization: Bearer KEY or X-API-Key: KEY)",
        )),
        Access::Unknown => Err(refuse(StatusCode::FORBIDDEN, "unknown API key")),
    }
}

/// The whole body, within `max_body_size` and `request_timeout`.
async fn read_body(ctx: &Ctx<'_>, req: Request<Incoming>) -> Result<Bytes, Refusal> {
    let limit = ctx.http.max_body_size;
    let too_large = || refusal_of(BodyError::TooLarge { limit });
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let collect = async { Some(Limited::new(req.into_body(), limit).collect().await) };
    let timeout = async {
        glommio::timer::sleep(ctx.http.request_timeout).await;
        None
    };
    match futures_lite::future::or(collect, timeout).await {
        None => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive within request_timeout",
        )),
        Some(Ok(collected)) => Ok(collected.to_bytes()),
        Some(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Some(Err(e)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("reading the body: {e}"),
        )),
    }
}

fn refusal_of(e: BodyError) -> Refusal {
    let status = match e {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Encoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        BodyError::Malformed { .. } => StatusCode::BAD_REQUEST,
    };
    refuse(status, e.to_string())
}

/// Body bytes held against `max_connection_memory` while a request is handled.
struct MemoryHeld<'a> {
    spec: &'a SourceSpec,
    bytes: u64,
}

impl<'a> MemoryHeld<'a> {
    fn reserve(spec: &'a SourceSpec, bytes: usize) -> Result<Self, Refusal> {
        let bytes = bytes as u64;
        if !spec.memory.reserve(bytes) {
            return Err(busy(
                StatusCode::SERVICE_UNAVAILABLE,
                "max_connection_memory is in use by other requests",
                1,
            ));
        }
        Ok(MemoryHeld { spec, bytes })
    }
}

impl Drop for MemoryHeld<'_> {
    fn drop(&mut self) {
        self.spec.memory.release(self.bytes);
    }
}

/// A request's events, decoded whole before any is taken.
enum Events<'b> {
    Json(Vec<body::JsonEvent>),
    Syslog(Vec<(&'b [u8], bool)>),
}

impl<'b> Events<'b> {
    fn decode(endpoint: Endpoint, body: &'b [u8], max_frame: usize) -> Result<Self, Refusal> {
        match endpoint {
            Endpoint::Events => body::decode_events(body)
                .map(Events::Json)
                .map_err(refusal_of),
            Endpoint::Syslog => Ok(Events::Syslog(body::decode_syslog(body, max_frame))),
        }
    }

    fn len(&self) -> usize {
        match self {
            Events::Json(e) => e.len(),
            Events::Syslog(l) => l.len(),
        }
    }
}

/// Appends every event, then waits until they are durable.
async fn ingest(
    ctx: &Ctx<'_>,
    events: &Events<'_>,
    key_name: Option<&str>,
) -> Result<u64, Refusal> {
    let shard = ctx.shard;
    let from = shard.appender.appended();
    shard.appender.note_arrival(std::time::Instant::now());
    let clock = BatchClock::now();
    let mut tally = BatchTally::default();
    let context = request_extras(ctx, key_name);
    let origin = Origin {
        source: &ctx.spec.name,
        source_ip: Some(ctx.peer.ip()),
        context: context.as_ref(),
    };
    match events {
        Events::Json(events) => {
            for event in events {
                ingest_json_event(shard, &origin, event, &clock, &mut tally).await;
            }
        }
        Events::Syslog(lines) => {
            for &(line, truncated) in lines {
                let input = FrameIn {
                    frame: line,
                    flags: ingest::FrameFlags(if truncated {
                        ingest::FrameFlags::TRUNCATED
                    } else {
                        0
                    }),
                    source_ip: Some(ctx.peer.ip()),
                    parser: &ctx.spec.parser,
                    source: &ctx.spec.name,
                    extras: context.as_ref(),
                };
                ingest_frame(shard, input, &clock, &mut tally).await;
            }
        }
    }
    shard.counters.add(&tally);
    add_to_source(&ctx.spec.counters, shard.id, &tally);
    let end = shard.appender.appended();
    let durable = tally.dropped_wal == 0 && shard.appender.wait_settled(from, end).await.is_ok();
    if !durable {
        return Err(busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "the WAL did not make the events durable: send them again",
            1,
        ));
    }
    Ok(events.len() as u64)
}

/// The fields every event of a request gets (the connection's, the key's name), if any.
fn request_extras(ctx: &Ctx<'_>, key_name: Option<&str>) -> Option<Extras> {
    if key_name.is_none() && ctx.extras.is_none() {
        return None;
    }
    let mut fields = pipeline::event::Fields::default();
    if let Some(extras) = &ctx.extras {
        extras.load_into(&mut fields);
    }
    if let Some(name) = key_name {
        fields.set(
            b"api_key_name",
            pipeline::event::NewValue::Str(name.as_bytes()),
        );
    }
    Some(Extras::of(fields))
}

fn count_status(counters: Option<&SourceShardCounters>, status: StatusCode) {
    let Some(c) = counters else {
        return;
    };
    let counter = match status.as_u16() {
        200 => &c.http_200,
        400 => &c.http_400,
        401 => &c.http_401,
        403 => &c.http_403,
        404 | 405 => &c.http_404,
        408 => &c.http_408,
        413 => &c.http_413,
        415 => &c.http_415,
        429 => &c.http_429,
        _ => &c.http_503,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}
