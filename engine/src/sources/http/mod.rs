//! `type = "http"`: events POSTed by applications and agents, answered only once durable.
//!
//! ```text
//! POST /v1/events   one JSON object, NDJSON, or a JSON array of objects; each object is an
//!                   event (its `message`, its other members as fields)
//! POST /v1/syslog   syslog lines, one per line, parsed like a syslog source's frames
//! ```
//! Served by hyper (HTTP/1.1, keep-alive) on every shard (SO_REUSEPORT), plain or TLS.
//!
//! Invariants:
//! - A request is answered 200 (`{"accepted":N}`) only when every event of it is durable in
//!   the shard's WAL. A body that does not decode is refused whole (400 with the line): nothing
//!   of it is taken. A request the WAL did not make durable is answered 503 (send it again).
//! - Bounded: the body (`max_body_size`, before and after decompression: 413), the time to
//!   send it (`request_timeout`: 408), connections (`max_connections`, per IP prefix), idle
//!   keep-alive connections (`idle_timeout`), body memory against `max_connection_memory`.
//! - API keys (`Authorization: Bearer KEY` or `X-API-Key: KEY`, compared in constant time):
//!   none sent 401, an unknown one 403. The key's name goes on each event (`api_key_name`);
//!   its `rate_limit` (events/s, shared by all shards) answers 429 with `Retry-After`.
//! - While the disk budget blocks the shard's WAL, requests are answered 429 with
//!   `Retry-After` instead of waiting.
//! - Every answer is counted by status (`sluice_http_requests_total`).

mod body;
mod keys;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

pub use body::{decode_events, decode_syslog, decompress, BodyError, JsonEvent};
pub use keys::{ApiKey, ApiKeys};

use super::limits::ConnectionKeys;
use super::syslog::ParserKind;
use super::tls::{SourceTls, TlsServer};
use super::{SharedLimits, SourceError, SourceMode, SourceSettings, SourceSpec, SpecContext};
use crate::metrics::SourceCounters;
use crate::units::{de_bytes, de_duration, render, Bounds, TypeTag, DAY, MIB};

pub(super) use serve::serve;

/// `type = "http"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpSource {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub address: SocketAddr,
    /// Keys a request must present; none: requests need no key.
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    /// Largest request body, before and after decompression.
    #[serde(default = "default_max_body_size", deserialize_with = "de_bytes")]
    pub max_body_size: u64,
    /// A `/v1/syslog` line longer than this is truncated and flagged.
    #[serde(default = "default_max_frame", deserialize_with = "de_bytes")]
    pub max_frame: u64,
    /// A request whose body has not arrived within this long is answered 408.
    #[serde(default = "default_request_timeout", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// A keep-alive connection idle for this long is closed.
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    #[serde(default = "super::limits::default_max_connections")]
    pub max_connections: u32,
    #[serde(default = "super::limits::default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    #[serde(default = "super::limits::default_ipv4_prefix_length")]
    pub ipv4_prefix_length: u8,
    #[serde(default = "super::limits::default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
    /// How `/v1/syslog` lines are parsed.
    #[serde(default)]
    pub parser: ParserKind,
    #[serde(default)]
    pub tls: Option<SourceTls>,
}

fn default_max_body_size() -> u64 {
    10 * MIB
}
fn default_max_frame() -> u64 {
    64 << 10
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

/// What a shard needs of an HTTP source beyond the common [`SourceSpec`].
#[derive(Debug)]
pub struct HttpSettings {
    pub keys: ApiKeys,
    pub max_body_size: usize,
    pub request_timeout: Duration,
}

impl HttpSource {
    fn connection_keys(&self) -> ConnectionKeys {
        ConnectionKeys {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            ipv4_prefix_length: self.ipv4_prefix_length,
            ipv6_prefix_length: self.ipv6_prefix_length,
        }
    }
}

impl SourceSettings for HttpSource {
    fn address(&self) -> Option<SocketAddr> {
        Some(self.address)
    }

    fn mode(&self) -> SourceMode {
        SourceMode::Http
    }

    fn check(&self, name: &str, shared: &SharedLimits) -> Result<(), (String, String)> {
        let invalid = |k: &str, msg: &str| Err((format!("sources.{name}.{k}"), msg.to_string()));
        if !(1..=super::MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return invalid("max_frame", "must be between 1 byte and 16MiB");
        }
        if self.max_frame > shared.wal_buffer_size / 2 {
            return invalid("max_frame", "must be at most half of wal.buffer_size");
        }
        if self.max_body_size > shared.max_connection_memory {
            return invalid(
                "max_body_size",
                "must be at most max_connection_memory (a request could never be held)",
            );
        }
        if let Err((key, why)) = self.connection_keys().check() {
            return invalid(key, why);
        }
        keys::check(&self.api_keys).map_err(|(k, why)| (format!("sources.{name}.{k}"), why))?;
        if let Some(tls) = &self.tls {
            tls.check(&format!("sources.{name}.tls"))?;
        }
        Ok(())
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let second = Duration::from_secs(1);
        b.size(&key("max_body_size"), self.max_body_size, 1024..=1024 * MIB);
        b.duration(&key("request_timeout"), self.request_timeout, second..=DAY);
        b.duration(&key("idle_timeout"), self.idle_timeout, second..=7 * DAY);
        self.connection_keys().check_bounds(prefix, b);
        if let Some(tls) = &self.tls {
            tls.check_bounds(&key("tls"), b);
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("address".into(), render::text(&self.address.to_string()));
        if !self.api_keys.is_empty() {
            t.insert("api_keys".into(), keys::render(&self.api_keys));
        }
        t.insert("max_body_size".into(), render::bytes(self.max_body_size));
        t.insert("max_frame".into(), render::bytes(self.max_frame));
        t.insert(
            "request_timeout".into(),
            render::duration(self.request_timeout),
        );
        t.insert("idle_timeout".into(), render::duration(self.idle_timeout));
        self.connection_keys().render(&mut t);
        t.insert("parser".into(), render::text(self.parser.name()));
        if let Some(tls) = &self.tls {
            t.insert("tls".into(), toml::Value::Table(tls.render()));
        }
        t
    }

    fn spec(&self, name: &str, context: &SpecContext<'_>) -> Result<SourceSpec, SourceError> {
        let (shards, memory) = (context.shards, context.memory);
        let tls = match &self.tls {
            Some(keys) => Some(TlsServer::load(keys).map_err(|error| SourceError::Tls {
                name: name.to_string(),
                error,
            })?),
            None => None,
        };
        Ok(SourceSpec {
            name: name.to_string(),
            mode: SourceMode::Http,
            bind: super::tcp::bind,
            address: self.address,
            max_frame: self.max_frame as usize,
            read_buffer: 64 << 10,
            receive_buffer: 0,
            idle_timeout: self.idle_timeout,
            frame_timeout: self.request_timeout,
            parser: self.parser.options(),
            limits: self.connection_keys().limits(),
            memory: Arc::clone(memory),
            counters: Arc::new(SourceCounters::new(shards)),
            tls,
            http: Some(Arc::new(HttpSettings {
                keys: ApiKeys::new(&self.api_keys),
                max_body_size: self.max_body_size as usize,
                request_timeout: self.request_timeout,
            })),
            json: false,
            only_source: false,
            file: None,
        })
    }
}
