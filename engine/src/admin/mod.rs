//! The admin API: plain HTTP on `[api] address` (loopback; validation refuses anything else),
//! served by threads of its own ([`server`]: bounded connections, timeouts). It never runs on
//! or waits for a shard: it reads the counters the shards and outputs publish (relaxed
//! atomics), and hands reloads to the main thread, which answers at once.
//!
//! | request | token | answer |
//! |---|---|---|
//! | `GET /health` | never | 200 while the process runs |
//! | `GET /ready` | never | 200 once listeners are bound, every WAL is recovered and outputs run; 503 before, and while stopping |
//! | `GET /metrics` | when `api.token` is configured | Prometheus text format (names in `docs/operations.md`) |
//! | `GET /config` | always | the running configuration's text |
//! | `POST /config` | always | apply the posted config (bounded by [`policy`]): 200 applied, 202 accepted with sinks still draining, 400 invalid, 403 not allowed |
//! | `POST /reload` | always | re-read the config file, same answers |
//! | `GET /reload` | always | the last reload's progress |
//!
//! The token is `api.token`, or a random one written to `data_dir/api.token` at start
//! ([`token`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::metrics::{read_lock, Published};

pub mod client;
pub mod policy;
pub mod server;
pub mod token;

pub use policy::ApiPolicy;
pub use server::ServerLimits;
pub use token::ApiAuth;

use server::{Request, Response};

/// What the API reads; shared with the runtime. The API starts before recovery (so `/health`
/// answers during a long one); the counters arrive once everything runs.
#[derive(Debug, Default)]
pub struct AdminState {
    pub ready: AtomicBool,
    /// What `/metrics` reads (the counters arrive once everything runs).
    pub metrics: Arc<Published>,
    /// The running configuration's text (a reload replaces it).
    pub config_text: RwLock<String>,
    /// The token in force (a reload may change a configured one).
    pub auth: RwLock<ApiAuth>,
    /// The last reload's progress (`GET /reload`).
    pub reload_status: RwLock<String>,
    /// Where `POST /config` and `POST /reload` go (the main thread applies them).
    pub reloads: std::sync::OnceLock<crossbeam_channel::Sender<ReloadRequest>>,
}

/// A reload asked for over the API: new config text, or `None` to re-read the file. The reply
/// says what changed, or why the new config was refused (the old one keeps running).
pub struct ReloadRequest {
    pub text: Option<String>,
    pub reply: crossbeam_channel::Sender<Result<ReloadAccepted, ReloadRefused>>,
}

/// A reload the main thread applied: what changed, and whether sinks still drain.
#[derive(Debug, Clone)]
pub struct ReloadAccepted {
    pub summary: String,
    /// Removed or changed sinks still delivering what they hold (`GET /reload` follows them).
    pub draining: bool,
}

/// A typed reason (its chain of sources kept) for a refused reload.
pub type Reason = Box<dyn std::error::Error + Send>;

/// Why a reload was refused; the running config continues. Each carries the typed error.
#[derive(Debug)]
pub enum ReloadRefused {
    /// The config is invalid or needs a restart (400).
    Invalid(Reason),
    /// The posted config would widen what Sluice may touch (403).
    Forbidden(Reason),
    /// The control plane cannot take it now (503).
    Unavailable(Reason),
    /// A posted config cannot be kept: no single config file to write it to (409).
    Conflict(Reason),
}

impl std::fmt::Display for ReloadRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReloadRefused::Invalid(e)
            | ReloadRefused::Unavailable(e)
            | ReloadRefused::Conflict(e) => {
                write!(f, "{e}")
            }
            ReloadRefused::Forbidden(e) => write!(f, "not allowed through the API: {e}"),
        }
    }
}

impl std::fmt::Debug for ReloadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReloadRequest")
    }
}

/// Longest a reload request waits for the main thread's verdict (it never waits for a sink
/// to drain: that goes on in the background).
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("api.address {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The running server: its address and how to stop it.
pub struct AdminServer {
    pub address: SocketAddr,
    http: server::HttpServer,
}

impl AdminServer {
    /// Binds `address` and serves (the token is `state.auth`).
    pub fn start(address: SocketAddr, state: Arc<AdminState>) -> Result<AdminServer, AdminError> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(crate::metrics::prometheus::SluiceCollector(
            Arc::clone(&state.metrics),
        )));
        let counters = Arc::clone(&state.metrics.api);
        let handler: Arc<server::Handler> =
            Arc::new(move |request: &Request| route(request, &state, &registry));
        let http = server::HttpServer::start(address, ServerLimits::default(), counters, handler)
            .map_err(|source| AdminError::Bind { address, source })?;
        Ok(AdminServer {
            address: http.address,
            http,
        })
    }

    pub fn stop(self) {
        self.http.stop();
    }
}

/// A shard that stopped beating for this long is stuck: `/health` answers 503.
pub const SHARD_LIVENESS_LIMIT: Duration = Duration::from_secs(5);

/// 200 while every shard beats (or before the shards run), 503 naming the stuck ones.
fn health(state: &AdminState) -> Response {
    let stuck = state
        .metrics
        .counters
        .get()
        .map(|c| c.stuck_shards(SHARD_LIVENESS_LIMIT))
        .unwrap_or_default();
    if stuck.is_empty() {
        return Response::text(200, "ok\n");
    }
    let names: Vec<String> = stuck.iter().map(|s| format!("shard-{s}")).collect();
    Response::text(503, format!("stuck: {}\n", names.join(" ")))
}

const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

fn route(request: &Request, state: &AdminState, registry: &Registry) -> Response {
    let (method, path) = (request.method.as_str(), request.path.as_str());
    let known = matches!(
        path,
        "/health" | "/ready" | "/metrics" | "/config" | "/reload"
    );
    if !known {
        return Response::text(404, "not found\n");
    }
    let auth = read_lock(&state.auth).clone();
    let open = match path {
        "/health" | "/ready" => true,
        "/metrics" => !auth.configured,
        _ => false,
    };
    if !open && !auth.admits(request.header("authorization")) {
        return Response::text(
            401,
            "missing or wrong bearer token (see api.token, or data_dir/api.token)\n",
        );
    }
    match (method, path) {
        ("GET", "/health") => health(state),
        ("GET", "/ready") if state.ready.load(Relaxed) => Response::text(200, "ready\n"),
        ("GET", "/ready") => Response::text(503, "not ready\n"),
        ("GET", "/metrics") => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => Response {
                    status: 200,
                    content_type: PROMETHEUS,
                    body,
                },
                Err(_) => Response::text(500, "cannot encode metrics\n"),
            }
        }
        ("GET", "/config") => Response {
            status: 200,
            content_type: "application/toml",
            body: read_lock(&state.config_text).clone(),
        },
        ("POST", "/config") => match String::from_utf8(request.body.clone()) {
            Ok(text) => reload(state, Some(text)),
            Err(_) => Response::text(400, "the config must be UTF-8 text\n"),
        },
        ("POST", "/reload") => reload(state, None),
        ("GET", "/reload") => Response::text(200, format!("{}\n", read_lock(&state.reload_status))),
        _ => Response::text(405, "method not allowed\n"),
    }
}

/// Hands a reload to the main thread and waits for its verdict (never for a sink to drain):
/// 200 applied, 202 applied with sinks still draining, 400 invalid, 403 not allowed.
fn reload(state: &AdminState, text: Option<String>) -> Response {
    let Some(reloads) = state.reloads.get() else {
        return Response::text(503, "still starting\n");
    };
    let (reply, verdict) = crossbeam_channel::bounded(1);
    if reloads.try_send(ReloadRequest { text, reply }).is_err() {
        return Response::text(503, "stopping, or too many reloads waiting\n");
    }
    match verdict.recv_timeout(RELOAD_WAIT) {
        Ok(Ok(done)) if done.draining => Response::text(
            202,
            format!(
                "{} (sinks still draining: GET /reload shows progress)\n",
                done.summary
            ),
        ),
        Ok(Ok(done)) => Response::text(200, format!("{}\n", done.summary)),
        Ok(Err(refused @ ReloadRefused::Invalid(_))) => Response::text(400, format!("{refused}\n")),
        Ok(Err(refused @ ReloadRefused::Forbidden(_))) => {
            Response::text(403, format!("{refused}\n"))
        }
        Ok(Err(refused @ ReloadRefused::Unavailable(_))) => {
            Response::text(503, format!("{refused}\n"))
        }
        Ok(Err(refused @ ReloadRefused::Conflict(_))) => {
            Response::text(409, format!("{refused}\n"))
        }
        Err(_) => Response::text(503, "no answer from the control plane\n"),
    }
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

    /// A shard whose executor stopped running its tasks (it no longer beats) makes `/health`
    /// answer 503; one that beats keeps it 200.
    #[test]
    fn health_is_503_while_a_shard_does_not_beat() {
        use crate::metrics::{Counters, ShardCounters};
        let dir = tempfile::tempdir().unwrap();
        let budget =
            storage::DiskBudget::new(dir.path(), None, None, storage::FullPolicy::Block).unwrap();
        let shards = vec![
            Arc::new(ShardCounters::default()),
            Arc::new(ShardCounters::default()),
        ];
        shards[0].beat();
        shards[1].beat();
        let state = Arc::new(AdminState::default());
        let _ = state.metrics.counters.set(Counters {
            shards: shards.clone(),
            next_record_ids: Vec::new(),
            outputs: Default::default(),
            sources: Default::default(),
            transforms: Default::default(),
            budget: Arc::new(budget),
            kernel_udp_drops: Default::default(),
            connection_memory: crate::sources::limits::ConnectionMemory::new(1 << 20),
        });
        let server =
            AdminServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(&state)).unwrap();
        assert_eq!(get(server.address, "/health"), 200);
        shards[1].last_beat_ms.store(1, Relaxed); // Last beat long ago: stuck.
        assert_eq!(get(server.address, "/health"), 503);
        shards[1].beat();
        assert_eq!(get(server.address, "/health"), 200);
        // A shard that stops on request (a graceful drain) is not stuck.
        shards[1].last_beat_ms.store(1, Relaxed);
        shards[1].not_running();
        assert_eq!(get(server.address, "/health"), 200);
        server.stop();
    }
}
