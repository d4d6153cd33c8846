//! Sources: one module per source type; the `type_registry!` list below is the registry, and
//! [`bind`] the one place a listener is bound. A source's tasks run on the shard that bound it and
//! hand each frame to the shard's ingest step ([`crate::shard::ingest`]).
//!
//! Every shard binds every source on the same address (SO_REUSEPORT); shard 0 binds first and
//! resolves port 0.
//!
//! **A new source type is one new module here plus one line in the registry list.**
//! The module holds the type's configuration ([`SourceSettings`]: keys, defaults, checks,
//! bounds, rendering, and the [`SourceSpec`] a shard runs, with the function that binds it)
//! and its serving (a [`BoundSource`]; `tcp.rs` and `udp.rs` are the transports `syslog`
//! uses).
//!
//! Invariants: a source's tasks run only on its shard's thread; what they share across
//! shards is the connection limits and memory budget (touched at accept and close) and the
//! counters (relaxed atomics, once per read batch). A connection that cannot append stops
//! reading: TCP backpressure. On stop, each task takes in what the kernel already holds.

pub mod connection;
pub(crate) mod events;
pub mod file;
pub mod http;
pub mod limits;
pub mod relp;
pub mod stdin;
pub mod syslog;
pub mod tcp;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Gate;

use crate::metrics::SourceCounters;
use crate::shard::{Shard, Stopper};
use crate::units::Bounds;
use limits::{ConnectionLimits, ConnectionMemory};

/// A source as a shard runs it (address already resolved by the first shard).
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub mode: SourceMode,
    /// Binds it on a shard (the source type's transport).
    pub bind: Binder,
    pub address: SocketAddr,
    pub max_frame: usize,
    pub read_buffer: usize,
    pub receive_buffer: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    /// How frames are parsed (`parser` and the vendor options).
    pub parser: ingest::ParserOptions,
    pub limits: Arc<ConnectionLimits>,
    /// Every connection's read buffer counts against this (`max_connection_memory`).
    pub memory: Arc<ConnectionMemory>,
    /// Counters labelled with this source (one set per shard).
    pub counters: Arc<SourceCounters>,
    /// TLS (`mode = "tls"`, or `relp` with a `tls` table), shared by every shard.
    pub tls: Option<Arc<tls::TlsServer>>,
    /// What only an HTTP source has (its keys, body limits).
    pub http: Option<Arc<http::HttpSettings>>,
    /// Lines are JSON objects (`format = "json"` of stdin and files).
    pub json: bool,
    /// The config's only source: when its input ends (stdin), Sluice stops.
    pub only_source: bool,
    /// What only a file source has (globs, formats, checkpoints).
    pub file: Option<Arc<file::FileSettings>>,
}

/// What building a [`SourceSpec`] needs besides the source's own settings.
pub struct SpecContext<'a> {
    pub shards: usize,
    /// The connection buffer budget every source shares.
    pub memory: &'a Arc<ConnectionMemory>,
    pub data_dir: &'a std::path::Path,
}

/// Why a source could not start on a shard.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {name}: cannot bind {address}: {error}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("source {name}: cannot read its bound address: {error}")]
    LocalAddress {
        name: String,
        #[source]
        error: std::io::Error,
    },
    #[error("source {name}: the shard is stopping")]
    Stopping { name: String },
    #[error("sources.{name}.tls: {error}")]
    Tls {
        name: String,
        #[source]
        error: tls::TlsError,
    },
}

/// A bound socket a shard serves.
pub trait BoundSource {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Spawns the source's tasks into `gate`; false when the gate is closing (stopping).
    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool;
}

/// Binds a source of some type on this shard (its type's transport).
pub type Binder = fn(&SourceSpec) -> std::io::Result<Box<dyn BoundSource>>;

/// The protocol a source listens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceMode {
    /// Syslog over TCP (octet-counted or line framed).
    Tcp,
    /// Syslog datagrams.
    Udp,
    /// Syslog over TLS (RFC 5425).
    Tls,
    /// RELP (rsyslog's acknowledged protocol), plain or over TLS.
    Relp,
    /// HTTP requests (`type = "http"`, not a syslog `mode`).
    #[serde(skip_deserializing)]
    Http,
    /// Sluice's standard input (`type = "stdin"`).
    #[serde(skip_deserializing)]
    Stdin,
    /// Files on this host (`type = "file"`).
    #[serde(skip_deserializing)]
    File,
}

impl SourceMode {
    /// Binds `address` with this mode's transport and lets it go again: whether a source
    /// could listen there now (validate's host check, a reload's check of new addresses).
    pub fn try_bind(self, address: SocketAddr) -> std::io::Result<()> {
        match self {
            SourceMode::Udp => std::net::UdpSocket::bind(address).map(drop),
            SourceMode::Stdin | SourceMode::File => Ok(()),
            _ => std::net::TcpListener::bind(address).map(drop),
        }
    }

    /// The URL scheme it is logged with.
    pub fn scheme(self) -> &'static str {
        match self {
            SourceMode::Tcp => "tcp",
            SourceMode::Udp => "udp",
            SourceMode::Tls => "tls",
            SourceMode::Relp => "relp",
            SourceMode::Http => "http",
            SourceMode::Stdin => "stdin",
            SourceMode::File => "file",
        }
    }

    /// Whether it listens on TCP (two such sources cannot share an address).
    pub fn is_stream(self) -> bool {
        !matches!(self, SourceMode::Udp | SourceMode::Stdin | SourceMode::File)
    }

    /// Whether it listens on the network at all (stdin and files do not).
    pub fn listens(self) -> bool {
        !matches!(self, SourceMode::Stdin | SourceMode::File)
    }

    /// Whether its connections carry syslog lines a `multiline` transform can join.
    pub fn joins_lines(self) -> bool {
        matches!(self, SourceMode::Tcp | SourceMode::Tls)
    }
}

/// What a source's checks need from the rest of the config.
#[derive(Debug, Clone, Copy)]
pub struct SharedLimits {
    pub wal_buffer_size: u64,
    pub max_connection_memory: u64,
}

/// A source type's configuration: everything the rest of Sluice needs to know of it.
pub trait SourceSettings {
    /// Where it listens; `None` for a source that reads this host (files, stdin).
    fn address(&self) -> Option<SocketAddr>;
    fn mode(&self) -> SourceMode;
    /// Checks that span keys; the key (`sources.NAME.KEY`) and why, when refused.
    fn check(&self, name: &str, shared: &SharedLimits) -> Result<(), (String, String)>;
    /// Puts every size and duration against its bounds (keys under `prefix`).
    fn check_bounds(&self, prefix: &str, bounds: &mut Bounds);
    /// Every key with its effective value (`sluice config`), `type` aside.
    fn render(&self) -> toml::Table;
    /// Whether a `multiline` transform can join its lines (streams of syslog lines).
    fn joins_lines(&self) -> bool {
        self.mode().joins_lines()
    }
    /// The source as the shards run it (its own counters; the shared memory budget; TLS
    /// certificates read now).
    fn spec(&self, name: &str, context: &SpecContext<'_>) -> Result<SourceSpec, SourceError>;
}

crate::registry::type_registry! {
    SourceType, SourceConfig, SourceSettings, "source";
    Syslog = "syslog" => SyslogSource,
    Http = "http" => http::HttpSource,
    Stdin = "stdin" => stdin::StdinSource,
    File = "file" => file::FileSource,
}

impl SourceConfig {
    /// The address it listens on (none for files and stdin).
    pub fn address(&self) -> Option<SocketAddr> {
        self.settings().address()
    }

    /// The transport it listens with.
    pub fn mode(&self) -> SourceMode {
        self.settings().mode()
    }
}

pub use syslog::{SyslogSource, MAX_FRAME_LIMIT};

/// Binds `spec` on this shard.
pub fn bind(spec: &SourceSpec) -> Result<Box<dyn BoundSource>, SourceError> {
    (spec.bind)(spec).map_err(|error| SourceError::Bind {
        name: spec.name.clone(),
        address: spec.address,
        error,
    })
}

/// Starts serving a bound source; returns what stops it.
pub fn serve(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    spec: SourceSpec,
    bound: Box<dyn BoundSource>,
) -> Result<Rc<SourceRun>, SourceError> {
    let name = spec.name.clone();
    let run = Rc::new(SourceRun {
        spec,
        stop: Stopper::default(),
    });
    if bound.serve(Rc::clone(shard), Rc::clone(&run), gate) {
        Ok(run)
    } else {
        Err(SourceError::Stopping { name })
    }
}

/// What a source's tasks watch: the shard's stop and their own source's.
pub struct SourceRun {
    pub spec: SourceSpec,
    pub stop: Stopper,
}

impl SourceRun {
    pub async fn stopped(&self, shard: &Shard) {
        futures_lite::future::or(shard.stop.stopped(), self.stop.stopped()).await;
    }

    pub fn is_stopping(&self, shard: &Shard) -> bool {
        shard.stop.is_stopping() || self.stop.is_stopping()
    }
}

pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}
