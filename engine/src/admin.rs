//! The admin API: plain HTTP on `[api] address` (loopback by default), served by one thread of
//! its own. It never runs on or waits for a shard: it only reads the counters the shards and
//! outputs publish (relaxed atomics) when asked.
//!
//! | request | answer |
//! |---|---|
//! | `GET /health` | 200 while the process runs (never needs the token) |
//! | `GET /ready` | 200 once listeners are bound, every WAL is recovered and outputs run; 503 before, and while stopping |
//! | `GET /metrics` | Prometheus text format (names in `docs/operations.md`) |
//! | `GET /config` | the running configuration's text |
//!
//! With `api.token` set, every request but `/health` needs `Authorization: Bearer <token>`
//! (401 otherwise). Requests are read with a bounded body and answered one at a time: the API
//! is for operators and scrapers, not a data path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::metrics::{
    OutputCounters, ShardCounters, SharedHistogram, SourceCounters, SourceShardCounters,
};

/// What the API reads; shared with the runtime. The API starts before recovery (so `/health`
/// answers during a long one); the counters arrive once everything runs.
#[derive(Debug, Default)]
pub struct AdminState {
    pub ready: AtomicBool,
    pub parts: std::sync::OnceLock<Counters>,
    /// The running configuration's text (a reload replaces it).
    pub config_text: RwLock<String>,
    /// `api.token` (a reload may change it).
    pub token: RwLock<Option<String>>,
    /// Where `POST /config` and `POST /reload` go (the main thread applies them).
    pub reloads: std::sync::OnceLock<crossbeam_channel::Sender<ReloadRequest>>,
}

/// A reload asked for over the API: new config text, or `None` to re-read the file. The reply
/// says what changed, or why the new config was refused (the old one keeps running).
pub struct ReloadRequest {
    pub text: Option<String>,
    pub reply: crossbeam_channel::Sender<Result<String, String>>,
}

impl std::fmt::Debug for ReloadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadRequest")
    }
}

/// Largest config a `POST /config` may carry.
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Longest a reload request waits for the main thread (a removed output drains first).
const RELOAD_WAIT: Duration = Duration::from_secs(600);

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

/// Every counter the API and the status line read.
#[derive(Debug)]
pub struct Counters {
    pub shards: Vec<Arc<ShardCounters>>,
    /// The id each WAL's next durable record gets (all shard logs, running or retired).
    pub next_record_ids: Vec<Arc<std::sync::atomic::AtomicU64>>,
    /// By sink name; a reload adds and removes entries.
    pub outputs: RwLock<Vec<(String, Arc<OutputCounters>)>>,
    /// By source name; a reload adds and removes entries.
    pub sources: RwLock<Vec<(String, Arc<SourceCounters>)>>,
    pub budget: Arc<storage::DiskBudget>,
    /// What the kernel dropped on the UDP sockets (read from /proc at each scrape).
    pub kernel_udp_drops: std::sync::Mutex<crate::metrics::KernelUdpDrops>,
}

impl Counters {
    /// Datagrams the kernel dropped on Sluice's UDP sockets so far (receive buffers full).
    pub fn kernel_udp_drops(&self) -> u64 {
        let open: Vec<u64> = self
            .shards
            .iter()
            .flat_map(|c| {
                c.udp_socket_inodes
                    .lock()
                    .map(|i| i.clone())
                    .unwrap_or_default()
            })
            .collect();
        let now = crate::metrics::kernel_udp_drops();
        match self.kernel_udp_drops.lock() {
            Ok(mut tally) => tally.update(&open, &now),
            Err(_) => 0,
        }
    }

    pub fn events_durable(&self) -> u64 {
        self.shards
            .iter()
            .map(|c| c.events_durable.load(Relaxed))
            .sum()
    }

    pub fn events_sent(&self) -> u64 {
        read_lock(&self.outputs)
            .iter()
            .map(|(_, c)| c.events_sent.load(Relaxed))
            .sum()
    }

    /// Durable events not yet confirmed, summed over outputs and shards (where known).
    pub fn lag_events(&self) -> u64 {
        read_lock(&self.outputs)
            .iter()
            .flat_map(|(_, c)| c.cursor_next_ids.iter().zip(&self.next_record_ids))
            .map(|(cursor, next)| match cursor.load(Relaxed) {
                0 => 0,
                cursor => next.load(Relaxed).saturating_sub(cursor),
            })
            .sum()
    }
}

/// The running server: its address and how to stop it.
pub struct AdminServer {
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
}

const POLL: Duration = Duration::from_millis(100);

impl AdminServer {
    /// Binds `address` and serves on a thread named `admin` (the token is `state.token`).
    pub fn start(address: SocketAddr, state: Arc<AdminState>) -> Result<AdminServer, String> {
        let server =
            tiny_http::Server::http(address).map_err(|e| format!("api.address {address}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| format!("api.address {address}: not an IP listener"))?;
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SluiceCollector(Arc::clone(&state))));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("admin".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    match server.recv_timeout(POLL) {
                        Ok(Some(request)) => {
                            let token = read_lock(&state.token).clone();
                            respond(request, &state, &registry, token.as_deref())
                        }
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "admin API: receive failed"),
                    }
                }
            })
            .map_err(|e| format!("start the admin thread: {e}"))?;
        Ok(AdminServer {
            address: bound,
            stop,
            handle,
        })
    }

    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        if self.handle.join().is_err() {
            tracing::error!("admin thread panicked");
        }
    }
}

fn respond(
    mut request: tiny_http::Request,
    state: &AdminState,
    registry: &Registry,
    token: Option<&str>,
) {
    let (status, content_type, body) = route(&mut request, state, registry, token);
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(h) = tiny_http::Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes()) {
        response.add_header(h);
    }
    if let Err(e) = request.respond(response) {
        tracing::debug!(error = %e, "admin API: client went away");
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn route(
    request: &mut tiny_http::Request,
    state: &AdminState,
    registry: &Registry,
    token: Option<&str>,
) -> (u16, &'static str, String) {
    use tiny_http::Method;
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let path = path.as_str();
    if path == "/health" && *request.method() == Method::Get {
        return (200, TEXT, "ok\n".into());
    }
    if let Some(token) = token {
        let expected = format!("Bearer {token}");
        let authorized = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("Authorization") && h.value.as_str() == expected);
        if !authorized {
            return (401, TEXT, "missing or wrong bearer token\n".into());
        }
    }
    match (request.method(), path) {
        (Method::Get, "/ready") if state.ready.load(Relaxed) => (200, TEXT, "ready\n".into()),
        (Method::Get, "/ready") => (503, TEXT, "not ready\n".into()),
        (Method::Get, "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => (200, PROMETHEUS, body),
                Err(_) => (500, TEXT, "cannot encode metrics\n".into()),
            }
        }
        (Method::Get, "/config") => (
            200,
            "application/toml",
            read_lock(&state.config_text).clone(),
        ),
        (Method::Post, "/config") => match read_body(request) {
            Ok(text) => reload(state, Some(text)),
            Err(e) => (400, TEXT, format!("{e}\n")),
        },
        (Method::Post, "/reload") => reload(state, None),
        (_, "/health" | "/ready" | "/metrics" | "/config" | "/reload") => {
            (405, TEXT, "method not allowed\n".into())
        }
        _ => (404, TEXT, "not found\n".into()),
    }
}

fn read_body(request: &mut tiny_http::Request) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    request
        .as_reader()
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the body as UTF-8 text: {e}"))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!("config larger than {MAX_CONFIG_BYTES} bytes"));
    }
    Ok(text)
}

/// Hands a reload to the main thread and waits for its verdict: 200 with what changed, 400
/// with why it was refused (the running config continues).
fn reload(state: &AdminState, text: Option<String>) -> (u16, &'static str, String) {
    let Some(reloads) = state.reloads.get() else {
        return (503, TEXT, "still starting\n".into());
    };
    let (reply, verdict) = crossbeam_channel::bounded(1);
    if reloads.send(ReloadRequest { text, reply }).is_err() {
        return (503, TEXT, "stopping\n".into());
    }
    match verdict.recv_timeout(RELOAD_WAIT) {
        Ok(Ok(done)) => (200, TEXT, format!("{done}\n")),
        Ok(Err(refused)) => (400, TEXT, format!("{refused}\n")),
        Err(_) => (503, TEXT, "no answer from the control plane\n".into()),
    }
}

/// Reads the counters at scrape time.
#[derive(Debug)]
struct SluiceCollector(Arc<AdminState>);

type Labels = Vec<(&'static str, String)>;
/// A per-shard counter: name (without `_total`), help, how to read it.
type ShardCounter = (&'static str, &'static str, fn(&ShardCounters) -> u64);
/// The same, per source and shard.
type SourceCounter = (&'static str, &'static str, fn(&SourceShardCounters) -> u64);

/// Ingest counters labelled `shard` and `source`.
fn encode_sources(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let sources = read_lock(&s.sources);
    let members = |f: fn(&SourceShardCounters) -> u64| {
        sources.iter().flat_map(move |(name, c)| {
            c.per_shard.iter().enumerate().map(move |(shard, c)| {
                let labels = vec![("shard", shard.to_string()), ("source", name.clone())];
                (labels, f(c))
            })
        })
    };
    let counters: [SourceCounter; 5] = [
        ("sluice_events_received", "Events read from sockets", |c| {
            c.events_received.load(Relaxed)
        }),
        (
            "sluice_bytes_received",
            "Frame bytes read from sockets",
            |c| c.bytes_received.load(Relaxed),
        ),
        (
            "sluice_parse_errors",
            "Events that fit neither RFC (kept as raw)",
            |c| c.parse_errors.load(Relaxed),
        ),
        (
            "sluice_frames_oversize",
            "Frames truncated at max_frame",
            |c| c.frames_oversize.load(Relaxed),
        ),
        (
            "sluice_connections_rejected",
            "Connections closed at accept (limits)",
            |c| c.connections_rejected.load(Relaxed),
        ),
    ];
    for (name, help, f) in counters {
        let values = members(f).map(|(l, v)| (l, ConstCounter::new(v)));
        family(encoder, name, help, MetricType::Counter, values)?;
    }
    let active = members(|c| c.connections_active.load(Relaxed).max(0) as u64)
        .map(|(l, v)| (l, ConstGauge::new(v as i64)));
    family(
        encoder,
        "sluice_connections_active",
        "Open TCP connections",
        MetricType::Gauge,
        active,
    )
}

/// One metric family whose members are `(labels, value)`.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    members: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in members {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn shard_label(i: usize) -> Labels {
    vec![("shard", i.to_string())]
}

impl Collector for SluiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.parts.get() else {
            return Ok(()); // Still starting: nothing to count yet.
        };
        let per_shard = |f: fn(&ShardCounters) -> u64| {
            s.shards
                .iter()
                .enumerate()
                .map(move |(i, c)| (shard_label(i), ConstCounter::new(f(c))))
        };
        let counters: [ShardCounter; 3] = [
            (
                "sluice_events_durable",
                "Events made durable in the WAL",
                |c| c.events_durable.load(Relaxed),
            ),
            ("sluice_wal_bytes", "Bytes written to the WAL", |c| {
                c.wal_bytes.load(Relaxed)
            }),
            (
                "sluice_connections_handed_off",
                "TCP connections this shard accepted and passed to a less loaded shard",
                |c| c.connections_handed_off.load(Relaxed),
            ),
        ];
        for (name, help, f) in counters {
            family(&mut encoder, name, help, MetricType::Counter, per_shard(f))?;
        }
        encode_sources(s, &mut encoder)?;
        encode_histograms(
            s,
            &mut encoder,
            "sluice_wal_fsync_seconds",
            "WAL fdatasync latency",
            |c| &c.wal_fsync,
        )?;
        encode_histograms(
            s,
            &mut encoder,
            "sluice_ingest_durable_seconds",
            "Per event: socket read to durable in the WAL (fdatasync done)",
            |c| &c.ingest_durable,
        )?;
        ConstGauge::new(s.budget.used() as i64).encode(encoder.encode_descriptor(
            "sluice_wal_disk_bytes",
            "Bytes of WAL segments in data_dir (reserved or on disk)",
            None,
            MetricType::Gauge,
        )?)?;
        encode_outputs(s, &mut encoder)?;
        encode_dropped(s, &mut encoder)
    }
}

/// One histogram family with a series per shard.
fn encode_histograms(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    of_shard: impl Fn(&ShardCounters) -> &SharedHistogram,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (i, c) in s.shards.iter().enumerate() {
        let h = of_shard(c);
        let counts = h.counts();
        let buckets: Vec<(f64, u64)> = h
            .bounds_seconds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        family
            .encode_family(&shard_label(i))?
            .encode_histogram::<Labels>(h.sum_seconds(), count, &buckets, None)?;
    }
    Ok(())
}

fn encode_outputs(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let outputs = read_lock(&s.outputs);
    let sink = |name: &str| vec![("sink", name.to_string())];
    family(
        encoder,
        "sluice_output_events_sent",
        "Events an output delivered (confirmed)",
        MetricType::Counter,
        outputs
            .iter()
            .map(|(n, c)| (sink(n), ConstCounter::new(c.events_sent.load(Relaxed)))),
    )?;
    family(
        encoder,
        "sluice_output_errors",
        "Output delivery, read and cursor errors (each retried)",
        MetricType::Counter,
        outputs
            .iter()
            .map(|(n, c)| (sink(n), ConstCounter::new(c.errors.load(Relaxed)))),
    )?;
    let lags = outputs.iter().flat_map(|(n, c)| {
        c.cursor_next_ids
            .iter()
            .zip(&s.next_record_ids)
            .enumerate()
            .filter_map(move |(shard, (cursor, next))| {
                let cursor = cursor.load(Relaxed);
                // 0: the cursor's id is not known (after damage), no honest figure.
                (cursor != 0).then(|| {
                    let lag = next.load(Relaxed).saturating_sub(cursor);
                    let labels = vec![("sink", n.clone()), ("shard", shard.to_string())];
                    (labels, ConstGauge::new(lag as i64))
                })
            })
    });
    family(
        encoder,
        "sluice_output_lag_events",
        "Durable events an output has not confirmed yet",
        MetricType::Gauge,
        lags,
    )
}

fn encode_dropped(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let sum = |f: fn(&ShardCounters) -> u64| s.shards.iter().map(|c| f(c)).sum::<u64>();
    let damaged: u64 = read_lock(&s.outputs)
        .iter()
        .map(|(_, c)| c.wal_damaged_records.load(Relaxed))
        .sum();
    let reasons: [(&str, u64); 6] = [
        (
            "wal_write_failed",
            sum(|c| c.wal_lost_records.load(Relaxed)),
        ),
        (
            "wal_unavailable",
            sum(|c| c.events_dropped_wal.load(Relaxed)),
        ),
        (
            "udp_while_blocked",
            sum(|c| c.udp_dropped_blocked.load(Relaxed)),
        ),
        (
            "disk_full_drop_oldest",
            s.budget.dropped_records.load(Relaxed),
        ),
        ("wal_damaged", damaged),
        ("udp_socket_buffer", s.kernel_udp_drops()),
    ];
    family(
        encoder,
        "sluice_events_dropped",
        "Events lost, by reason (every loss is counted here)",
        MetricType::Counter,
        reasons
            .iter()
            .map(|(reason, v)| (vec![("reason", reason.to_string())], ConstCounter::new(*v))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn get(addr: SocketAddr, path: &str) -> u16 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// The runtime starts the API before recovery and sets `ready` only once every shard is
    /// bound, every WAL recovered and the outputs run: until then `/ready` is 503 while
    /// `/health` and `/metrics` already answer.
    #[test]
    fn ready_is_503_until_the_runtime_says_so() {
        let state = Arc::new(AdminState::default());
        let server =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&state)).unwrap();
        assert_eq!(get(server.address, "/health"), 200);
        assert_eq!(get(server.address, "/ready"), 503);
        assert_eq!(get(server.address, "/metrics"), 200);
        state.ready.store(true, Relaxed);
        assert_eq!(get(server.address, "/ready"), 200);
        server.stop();
    }
}
