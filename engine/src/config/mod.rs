//! Configuration: the TOML file, its validation, and the embedded default.
//!
//! Parsing is strict: unknown keys are errors, and every value is checked while it is read so
//! the error names the key and the line (`toml` reports the span). Checks that span several
//! keys run afterwards and name the key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};
use storage::{FsyncPolicy, FullPolicy, MinFree, RecoveryMode};

/// The configuration `sluice run` uses when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub shards: Shards,
    /// How long a graceful stop may take to deliver what was received before exiting anyway
    /// (nothing is lost: undelivered records stay in the WAL for the next start).
    #[serde(default = "default_shutdown_timeout", deserialize_with = "de_duration")]
    pub shutdown_timeout: Duration,
    /// How often a status line (events in and out, lag, disk) is logged; `"0s"`: never.
    #[serde(default = "default_status_interval", deserialize_with = "de_duration")]
    pub status_interval: Duration,
    /// All TCP connections' read buffers together (every source, every shard). A connection
    /// that needs to grow its buffer past this budget is closed, counted
    /// (`sluice_connections_closed_total{reason="memory_budget"}`).
    #[serde(
        default = "default_max_connection_memory",
        deserialize_with = "de_bytes"
    )]
    pub max_connection_memory: u64,
    #[serde(default)]
    pub wal: WalConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    #[serde(default, rename = "sinks")]
    raw_sinks: BTreeMap<String, RawSink>,
    /// The sinks, typed (filled by validation).
    #[serde(skip)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The text this config was parsed from (served by `GET /config`).
    #[serde(skip)]
    pub source_text: String,
}

fn default_max_connection_memory() -> u64 {
    256 << 20
}

fn default_status_interval() -> Duration {
    Duration::from_secs(10)
}

/// `[api]`: the admin HTTP API (metrics, health, readiness, config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `"host:port"` on loopback, or `"off"`.
    #[serde(default = "default_api_listen", deserialize_with = "de_from_str")]
    pub address: ApiListen,
    /// The bearer token for the endpoints that change or reveal the config (and `/metrics`
    /// when set). Unset: a random one is written to `data_dir/api.token` at every start.
    #[serde(default)]
    pub token: Option<String>,
    /// Directories file sinks posted through the API may write under (default: data_dir and
    /// the directories of this file's file sinks).
    #[serde(default)]
    pub allowed_paths: Vec<PathBuf>,
    /// `host:port` destinations TCP sinks posted through the API may send to, besides this
    /// file's TCP sinks.
    #[serde(default)]
    pub allowed_destinations: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: default_api_listen(),
            token: None,
            allowed_paths: Vec::new(),
            allowed_destinations: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiListen {
    Off,
    On(SocketAddr),
}

impl FromStr for ApiListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(ApiListen::Off);
        }
        s.parse()
            .map(ApiListen::On)
            .map_err(|_| format!("expected \"host:port\" or \"off\", got {s:?}"))
    }
}

fn default_api_listen() -> ApiListen {
    ApiListen::On(SocketAddr::from(([127, 0, 0, 1], 9514)))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./sluice-data")
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(60)
}

/// How many shards (pinned executors) to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Shards {
    /// One per CPU this process may run on.
    #[default]
    Auto,
    Count(usize),
}

/// The largest shard count accepted (each shard is a pinned thread with its own io_uring).
pub const MAX_SHARDS: usize = 256;

impl<'de> Deserialize<'de> for Shards {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Word(w) if w == "auto" => Ok(Shards::Auto),
            Raw::Count(n) if (1..=MAX_SHARDS as i64).contains(&n) => Ok(Shards::Count(n as usize)),
            Raw::Count(n) => Err(de::Error::custom(format!(
                "shards must be between 1 and {MAX_SHARDS}, got {n}"
            ))),
            Raw::Word(w) => Err(de::Error::custom(format!(
                "expected \"auto\" or a number of shards, got {w:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// `"always"`, `"never"` or a group-commit interval like `"5ms"`.
    #[serde(default = "default_fsync", deserialize_with = "de_from_str")]
    pub fsync: FsyncPolicy,
    #[serde(default = "default_segment_size", deserialize_with = "de_bytes")]
    pub segment_size: u64,
    /// Bytes appended before a write is forced (one group-commit batch; two may exist).
    #[serde(default = "default_wal_buffer", deserialize_with = "de_bytes")]
    pub buffer_size: u64,
    /// What recovery does with damage: `"tolerate-corrupt-tail"` or `"strict"`.
    #[serde(default, deserialize_with = "de_from_str")]
    pub recovery: RecoveryMode,
    /// Compression of sealed segments outputs have not reached yet: `"zstd"` or `"none"`.
    #[serde(default, deserialize_with = "de_from_str")]
    pub compression: Compression,
    /// zstd level, 1 (fastest) to 19.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// A sealed segment is compressed only once it has waited this long undelivered: a
    /// backlog of seconds is delivered soon anyway, compressing it would only cost CPU.
    #[serde(default = "default_compress_after", deserialize_with = "de_duration")]
    pub compress_after: Duration,
    /// Most bytes of segments in data_dir, all shards together (unset: no limit).
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub max_disk: Option<u64>,
    /// Free space to leave on data_dir's file system: a size or a percentage like `"5%"`.
    #[serde(default = "default_min_free_disk", deserialize_with = "de_from_str")]
    pub min_free_disk: MinFree,
    /// At a limit: `"block"` (stop reading sockets) or `"drop_oldest"` (delete the oldest
    /// undelivered segment, counting its events).
    #[serde(default, deserialize_with = "de_from_str")]
    pub when_full: FullPolicy,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            fsync: default_fsync(),
            segment_size: default_segment_size(),
            buffer_size: default_wal_buffer(),
            recovery: RecoveryMode::default(),
            compression: Compression::default(),
            compression_level: default_compression_level(),
            compress_after: default_compress_after(),
            max_disk: None,
            min_free_disk: default_min_free_disk(),
            when_full: FullPolicy::default(),
        }
    }
}

impl WalConfig {
    /// The WAL's sizes and how they must relate.
    fn check(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, msg: &str| Err((format!("wal.{key}"), msg.to_string()));
        if !(1 << 20..=storage::position::MAX_SEGMENT_SIZE / 2).contains(&self.segment_size) {
            return invalid("segment_size", "must be between 1MiB and 32GiB");
        }
        if !(64 << 10..=256 << 20).contains(&self.buffer_size) {
            return invalid("buffer_size", "must be between 64KiB and 256MiB");
        }
        if self.segment_size < self.buffer_size {
            return invalid(
                "segment_size",
                "must be at least wal.buffer_size (a segment would grow to the buffer's size)",
            );
        }
        if !(1..=19).contains(&self.compression_level) {
            return invalid("compression_level", "must be between 1 and 19");
        }
        if self.max_disk.is_some_and(|m| m < 2 * self.segment_size) {
            return invalid(
                "max_disk",
                "must hold at least two segments (2 × wal.segment_size); (shards + 1) × segment_size keeps every shard writing",
            );
        }
        Ok(())
    }
}

impl ApiConfig {
    fn check(&self) -> Result<(), (String, String)> {
        if self.token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(("api.token".into(), "must be at least 16 characters".into()));
        }
        match self.address {
            ApiListen::On(address) if !address.ip().is_loopback() => Err((
                "api.address".into(),
                "must be a loopback address: the API speaks plain HTTP (no TLS); put a TLS proxy with authentication in front of it to reach it from elsewhere".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// `[wal] compression`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Zstd,
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zstd" => Ok(Compression::Zstd),
            "none" => Ok(Compression::None),
            other => Err(format!("expected \"zstd\" or \"none\", got {other:?}")),
        }
    }
}

fn default_compression_level() -> i32 {
    3
}
fn default_compress_after() -> Duration {
    Duration::from_secs(30)
}
/// A floor that keeps the host usable when outputs stall for long.
fn default_min_free_disk() -> MinFree {
    MinFree::Bytes(256 << 20)
}

fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Interval(Duration::from_millis(5))
}
fn default_segment_size() -> u64 {
    128 << 20
}
fn default_wal_buffer() -> u64 {
    4 << 20
}

/// Source kinds (`type = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceType {
    Syslog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    #[serde(rename = "type")]
    pub kind: SourceType,
    pub mode: SourceMode,
    pub address: SocketAddr,
    /// Longer frames are truncated to this and flagged.
    #[serde(default = "default_max_frame", deserialize_with = "de_bytes")]
    pub max_frame: u64,
    /// Open connections for this source across all shards; more are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Open connections from one source IP; more are closed at accept.
    #[serde(default = "default_max_connections_per_ip")]
    pub max_connections_per_ip: u32,
    /// Per-connection read buffer (raised to fit at least one `max_frame`).
    #[serde(default = "default_read_buffer", deserialize_with = "de_bytes")]
    pub read_buffer: u64,
    /// UDP: kernel receive buffer (SO_RCVBUF) of each shard's socket, i.e. how big a burst is
    /// absorbed before the kernel drops datagrams; raised past `net.core.rmem_max` when Sluice
    /// may (CAP_NET_ADMIN). TCP keeps the kernel's autotuning.
    #[serde(default = "default_receive_buffer", deserialize_with = "de_bytes")]
    pub receive_buffer: u64,
    /// TCP: a connection that sends nothing for this long is closed (counted).
    #[serde(default = "default_idle_timeout", deserialize_with = "de_duration")]
    pub idle_timeout: Duration,
    /// TCP: a frame begun but not finished within this long closes the connection (counted;
    /// its partial frame is kept as an event, flagged, like at any close).
    #[serde(default = "default_frame_timeout", deserialize_with = "de_duration")]
    pub frame_timeout: Duration,
    /// `max_connections_per_ip` counts IPv4 senders by this prefix (32: each address).
    #[serde(default = "default_ipv4_prefix_length")]
    pub ipv4_prefix_length: u8,
    /// ... and IPv6 senders by this prefix (64: one client's usual allocation).
    #[serde(default = "default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_frame_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_ipv4_prefix_length() -> u8 {
    32
}
fn default_ipv6_prefix_length() -> u8 {
    64
}

pub const MAX_FRAME_LIMIT: u64 = 16 << 20;

fn default_max_frame() -> u64 {
    64 << 10
}
fn default_max_connections() -> u32 {
    10_000
}
fn default_max_connections_per_ip() -> u32 {
    1_000
}
fn default_read_buffer() -> u64 {
    256 << 10
}
fn default_receive_buffer() -> u64 {
    4 << 20
}

/// A sink as written in the file: every key of every sink type, checked against its `type` by
/// [`RawSink::into_typed`]. (A serde-tagged enum would lose the line numbers of errors.)
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    #[serde(rename = "type")]
    kind: SinkType,
    path: Option<PathBuf>,
    address: Option<String>,
    encoding: Option<Encoding>,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    rotate_size: Option<u64>,
    keep: Option<u32>,
    fsync: Option<SinkFsync>,
    framing: Option<TcpFraming>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    max_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    write_timeout: Option<Duration>,
    append_existing: Option<bool>,
    line_breaks: Option<LineBreaks>,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    replay_window: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkType {
    File,
    Tcp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    File(FileSink),
    Tcp(TcpSink),
}

impl RawSink {
    fn into_typed(self) -> Result<SinkConfig, (&'static str, String)> {
        let foreign = |key: &'static str, present: bool| -> Result<(), (&'static str, String)> {
            if present {
                Err((
                    key,
                    format!("not a key of {:?} sinks", self.kind).to_lowercase(),
                ))
            } else {
                Ok(())
            }
        };
        match self.kind {
            SinkType::File => {
                foreign("address", self.address.is_some())?;
                foreign("framing", self.framing.is_some())?;
                foreign("connect_timeout", self.connect_timeout.is_some())?;
                foreign("initial_backoff", self.initial_backoff.is_some())?;
                foreign("max_backoff", self.max_backoff.is_some())?;
                foreign("write_timeout", self.write_timeout.is_some())?;
                foreign("replay_window", self.replay_window.is_some())?;
                Ok(SinkConfig::File(FileSink {
                    path: self.path.ok_or(("path", "is required".to_string()))?,
                    encoding: self.encoding.unwrap_or(Encoding::Json),
                    rotate_size: self.rotate_size.unwrap_or(100_000_000),
                    keep: self.keep.unwrap_or(10),
                    fsync: self.fsync.unwrap_or(SinkFsync::Always),
                    append_existing: self.append_existing.unwrap_or(false),
                    line_breaks: self.line_breaks.unwrap_or_default(),
                }))
            }
            SinkType::Tcp => {
                foreign("path", self.path.is_some())?;
                foreign("rotate_size", self.rotate_size.is_some())?;
                foreign("keep", self.keep.is_some())?;
                foreign("fsync", self.fsync.is_some())?;
                foreign("append_existing", self.append_existing.is_some())?;
                Ok(SinkConfig::Tcp(TcpSink {
                    line_breaks: self.line_breaks.unwrap_or_default(),
                    replay_window: self.replay_window.unwrap_or(DEFAULT_REPLAY_WINDOW),
                    address: self.address.ok_or(("address", "is required".to_string()))?,
                    framing: self.framing.unwrap_or(TcpFraming::OctetCounting),
                    encoding: self.encoding.unwrap_or(Encoding::Raw),
                    connect_timeout: self.connect_timeout.unwrap_or(Duration::from_secs(5)),
                    initial_backoff: self.initial_backoff.unwrap_or(Duration::from_millis(100)),
                    max_backoff: self.max_backoff.unwrap_or(Duration::from_secs(30)),
                    write_timeout: self.write_timeout.unwrap_or(Duration::from_secs(30)),
                }))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One JSON object per line.
    Json,
    /// The frame's bytes as received.
    Raw,
}

/// What raw encoding does with line breaks (LF, CR) and NULs inside a frame: a frame that
/// carries them (octet-counted, or a UDP datagram) would otherwise forge whole lines in a raw
/// file or a newline-framed forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineBreaks {
    /// As rsyslog's control-character escaping does: LF → `#012`, CR → `#015`, NUL → `#000`.
    #[default]
    Escape,
    /// Each replaced by a space.
    Space,
    /// Written verbatim (only for receivers that frame by octet count and trust the sender).
    Keep,
}

/// The default TCP sink replay window: more than a loopback receive buffer can hold (Linux
/// autotunes up to `net.ipv4.tcp_rmem`'s maximum, 6 MiB by default).
pub const DEFAULT_REPLAY_WINDOW: u64 = 8 << 20;

/// When the file sink confirms a batch (and so when its cursor may advance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFsync {
    /// After the batch was written and fdatasync'd: survives power loss.
    Always,
    /// After the batch was written: survives a crash of Sluice, not of the machine.
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileSink {
    pub path: PathBuf,
    pub encoding: Encoding,
    /// Rotate once the file reaches this size (default 100MB).
    pub rotate_size: u64,
    /// Rotated files kept; older ones are deleted (default 10).
    pub keep: u32,
    pub fsync: SinkFsync,
    /// A file at `path` that Sluice did not create: append to it (never cut, rotate or delete
    /// it) instead of refusing to start.
    pub append_existing: bool,
    pub line_breaks: LineBreaks,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TcpFraming {
    OctetCounting,
    Newline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TcpSink {
    /// `host:port` of the receiver (resolved at each connect).
    pub address: String,
    pub framing: TcpFraming,
    pub encoding: Encoding,
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failure (with full jitter) up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A write blocked longer than this counts as failed (the batch is resent).
    pub write_timeout: Duration,
    pub line_breaks: LineBreaks,
    /// Bytes already confirmed (acknowledged by the receiver's TCP) that are sent again after
    /// every reconnect: what a receiver that died may have held unread.
    pub replay_window: u64,
}

fn de_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("expected a duration like \"5s\", got {s:?} ({e})")))
}

/// A size: `"64KiB"`, `"100MB"`, `"128 MiB"` or a plain number of bytes.
fn de_opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_bytes(d).map(Some)
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(s) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                de::Error::custom(format!("expected a size like \"64KiB\", got {s:?} ({e})"))
            }),
    }
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "embedded default config")
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message,
            })?;
        config.source_text = text.to_string();
        Ok(config)
    }

    /// The file system under data_dir must be larger than what `min_free_disk` keeps free, or
    /// no segment could ever be written (ingest would block forever while `/ready` says 200).
    pub fn check_min_free_disk(&self, data_dir: &Path) -> Result<(), String> {
        let MinFree::Bytes(keep) = self.wal.min_free_disk else {
            return Ok(());
        };
        match storage::budget::file_system_size(data_dir) {
            Some(total) if keep.saturating_add(self.wal.segment_size) > total => Err(format!(
                "wal.min_free_disk ({keep} bytes) plus one segment does not fit on the file system of {} ({total} bytes)",
                data_dir.display()
            )),
            _ => Ok(()),
        }
    }

    /// Upper (and lower) bounds of every size and duration, so no value can exhaust memory or
    /// wait forever.
    fn check_bounds(&self) -> Result<(), (String, String)> {
        let mut b = Bounds::default();
        b.size(
            "max_connection_memory",
            self.max_connection_memory,
            MIB..=64 << 30,
        );
        b.duration(
            "shutdown_timeout",
            self.shutdown_timeout,
            Duration::ZERO..=HOUR,
        );
        b.duration(
            "status_interval",
            self.status_interval,
            Duration::ZERO..=DAY,
        );
        let wal = &self.wal;
        b.duration(
            "wal.compress_after",
            wal.compress_after,
            Duration::ZERO..=30 * DAY,
        );
        if let FsyncPolicy::Interval(d) = wal.fsync {
            b.duration(
                "wal.fsync",
                d,
                Duration::from_micros(100)..=Duration::from_secs(10),
            );
        }
        if let Some(max) = wal.max_disk {
            b.size("wal.max_disk", max, 2 * MIB..=1 << 50);
        }
        if let MinFree::Bytes(bytes) = wal.min_free_disk {
            b.size("wal.min_free_disk", bytes, 0..=1 << 50);
        }
        for (name, source) in &self.sources {
            source.check_bounds(&format!("sources.{name}"), &mut b);
        }
        for (name, sink) in &self.sinks {
            sink.check_bounds(&format!("sinks.{name}"), &mut b);
        }
        b.into_result()
    }

    fn validate(&mut self) -> Result<(), (String, String)> {
        let invalid = |key: String, msg: &str| Err((key, msg.to_string()));
        for (name, raw) in &self.raw_sinks {
            let typed = raw
                .clone()
                .into_typed()
                .map_err(|(key, msg)| (format!("sinks.{name}.{key}"), msg))?;
            self.sinks.insert(name.clone(), typed);
        }
        if self.sources.is_empty() {
            return invalid("sources".into(), "at least one source is required");
        }
        if self.sinks.is_empty() {
            return invalid("sinks".into(), "at least one sink is required");
        }
        self.check_bounds()?;
        self.wal.check()?;
        self.api.check()?;
        let wal = &self.wal;
        let mut bound = Vec::new();
        for (name, source) in &self.sources {
            check_name(name).or_else(|m| invalid(format!("sources.{name}"), &m))?;
            let s = source;
            let key = |k: &str| format!("sources.{name}.{k}");
            if !(1..=MAX_FRAME_LIMIT).contains(&s.max_frame) {
                return invalid(key("max_frame"), "must be between 1 byte and 16MiB");
            }
            if s.max_frame > wal.buffer_size / 2 {
                return invalid(key("max_frame"), "must be at most half of wal.buffer_size");
            }
            if !(4096..=1 << 30).contains(&s.receive_buffer) {
                return invalid(key("receive_buffer"), "must be between 4KiB and 1GiB");
            }
            if s.max_connections == 0 || s.max_connections_per_ip == 0 {
                return invalid(
                    key("max_connections"),
                    "connection limits must be at least 1",
                );
            }
            if bound.contains(&(s.mode, s.address)) {
                return invalid(
                    key("address"),
                    "another source already uses this address and mode",
                );
            }
            bound.push((s.mode, s.address));
        }
        for (name, sink) in &self.sinks {
            check_name(name).or_else(|m| invalid(format!("sinks.{name}"), &m))?;
            match sink {
                SinkConfig::File(f) => {
                    if f.path.as_os_str().is_empty() || f.path.file_name().is_none() {
                        return invalid(format!("sinks.{name}.path"), "must name a file");
                    }
                    if f.rotate_size < 1024 {
                        return invalid(
                            format!("sinks.{name}.rotate_size"),
                            "must be at least 1KiB",
                        );
                    }
                }
                SinkConfig::Tcp(t) => {
                    if !t.address.contains(':') {
                        return invalid(format!("sinks.{name}.address"), "must be host:port");
                    }
                    if t.initial_backoff.is_zero() || t.max_backoff < t.initial_backoff {
                        return invalid(
                            format!("sinks.{name}.max_backoff"),
                            "backoffs must be positive and max_backoff >= initial_backoff",
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Shard count after resolving `"auto"` against the CPUs this process may use.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            Shards::Count(n) => n,
            // The rule `sluice tune` recommends, on the CPUs this process may use.
            Shards::Auto => {
                tuning::recommended_shards(core_affinity::get_core_ids().map_or(1, |ids| ids.len()))
            }
        }
    }
}

const MIB: u64 = 1 << 20;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Values checked against their bounds; keeps the first one outside them.
#[derive(Default)]
struct Bounds {
    first_violation: Option<(String, String)>,
}

impl Bounds {
    fn check<T: PartialOrd + Copy>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        show: impl Fn(T) -> String,
    ) {
        if self.first_violation.is_none() && !range.contains(&value) {
            let message = format!(
                "must be between {} and {} (got {})",
                show(*range.start()),
                show(*range.end()),
                show(value)
            );
            self.first_violation = Some((key.to_string(), message));
        }
    }

    fn size(&mut self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) {
        self.check(key, value, range, |b| bytesize::ByteSize(b).to_string());
    }

    fn duration(&mut self, key: &str, value: Duration, range: std::ops::RangeInclusive<Duration>) {
        self.check(key, value, range, |d| {
            humantime::format_duration(d).to_string()
        });
    }

    fn count(&mut self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) {
        self.check(key, value, range, |n| n.to_string());
    }

    fn into_result(self) -> Result<(), (String, String)> {
        self.first_violation.map_or(Ok(()), Err)
    }
}

impl SourceConfig {
    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let second = Duration::from_secs(1);
        b.size(&key("read_buffer"), self.read_buffer, 4096..=64 * MIB);
        b.duration(&key("idle_timeout"), self.idle_timeout, second..=7 * DAY);
        b.duration(&key("frame_timeout"), self.frame_timeout, second..=DAY);
        b.count(
            &key("ipv4_prefix_length"),
            self.ipv4_prefix_length.into(),
            0..=32,
        );
        b.count(
            &key("ipv6_prefix_length"),
            self.ipv6_prefix_length.into(),
            0..=128,
        );
        b.count(
            &key("max_connections"),
            self.max_connections.into(),
            1..=1_000_000,
        );
    }
}

impl SinkConfig {
    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let some = Duration::from_millis(1);
        match self {
            SinkConfig::File(f) => {
                b.size(&key("rotate_size"), f.rotate_size, 1024..=1 << 40);
                b.count(&key("keep"), f.keep.into(), 0..=100_000);
            }
            SinkConfig::Tcp(t) => {
                b.size(&key("replay_window"), t.replay_window, 0..=1 << 30);
                b.duration(&key("connect_timeout"), t.connect_timeout, some..=HOUR);
                b.duration(&key("write_timeout"), t.write_timeout, some..=HOUR);
                b.duration(&key("initial_backoff"), t.initial_backoff, some..=HOUR);
                b.duration(&key("max_backoff"), t.max_backoff, some..=DAY);
            }
        }
    }
}

/// Source and sink names become file names (cursors), so they are kept plain.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err("names may only use letters, digits, '_' and '-' (at most 64)".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.wal.fsync, FsyncPolicy::Interval(Duration::from_millis(5)));
        assert_eq!(c.wal.segment_size, 128 << 20);
    }

    fn error_of(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    const MINIMAL: &str = "[sources.a]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:1\"\n[sinks.b]\ntype = \"file\"\npath = \"x/out.log\"\n";

    #[test]
    fn errors_name_key_and_line() {
        let e = error_of(&format!("{MINIMAL}bogus = 1\n"));
        assert!(e.contains("line 8") && e.contains("bogus"), "{e}");
        let e = error_of(&format!("{MINIMAL}framing = \"newline\"\n"));
        assert!(
            e.contains("sinks.b.framing") && e.contains("not a key of file sinks"),
            "{e}"
        );
        let e = error_of(&format!("data_dir = \"d\"\nbogus = 1\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = error_of(&format!("[wal]\nfsync = \"sometimes\"\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("always"), "{e}");
        let e = error_of(&MINIMAL.replace("mode = \"tcp\"", "mode = \"sctp\""));
        assert!(e.contains("line 3") && e.contains("sctp"), "{e}");
        let e = error_of(&format!("{MINIMAL}rotate_size = \"huge\"\n"));
        assert!(e.contains("line 8") && e.contains("huge"), "{e}");
        let e = error_of(&MINIMAL.replace("[sinks.b]", "[sinks.\"b/../c\"]"));
        assert!(e.contains("sinks.b/../c"), "{e}");
        let e = error_of(&format!("shards = 0\n{MINIMAL}"));
        assert!(e.contains("line 1") && e.contains("between 1"), "{e}");
    }

    /// Every size and duration has bounds: nothing that could exhaust memory or wait forever
    /// passes (read_buffer = "1TiB" aborted the process).
    #[test]
    fn sizes_and_durations_are_bounded() {
        let source_key = |k: &str| {
            MINIMAL.replace(
                "address = \"127.0.0.1:1\"\n",
                &format!("address = \"127.0.0.1:1\"\n{k}\n"),
            )
        };
        let cases = [
            (
                source_key("read_buffer = \"1TiB\""),
                "sources.a.read_buffer",
            ),
            (
                source_key("idle_timeout = \"0s\""),
                "sources.a.idle_timeout",
            ),
            (
                source_key("frame_timeout = \"400d\""),
                "sources.a.frame_timeout",
            ),
            (
                source_key("ipv6_prefix_length = 200"),
                "sources.a.ipv6_prefix_length",
            ),
            (
                format!("shutdown_timeout = \"1000h\"\n{MINIMAL}"),
                "shutdown_timeout",
            ),
            (
                format!("max_connection_memory = \"1TiB\"\n{MINIMAL}"),
                "max_connection_memory",
            ),
            (format!("[wal]\nfsync = \"1h\"\n{MINIMAL}"), "wal.fsync"),
            (
                format!("[wal]\nsegment_size = \"2MiB\"\nbuffer_size = \"4MiB\"\n{MINIMAL}"),
                "wal.segment_size",
            ),
            (
                format!("{MINIMAL}rotate_size = \"10PiB\"\n"),
                "sinks.b.rotate_size",
            ),
            (
                format!("[api]\naddress = \"0.0.0.0:9514\"\n{MINIMAL}"),
                "api.address",
            ),
        ];
        for (text, key) in cases {
            let e = error_of(&text);
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn min_free_disk_larger_than_the_file_system_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::parse(&format!("[wal]\nmin_free_disk = \"1PiB\"\n{MINIMAL}"), "t").unwrap();
        let e = c.check_min_free_disk(dir.path()).unwrap_err();
        assert!(e.contains("min_free_disk"), "{e}");
        assert!(Config::parse(MINIMAL, "t")
            .unwrap()
            .check_min_free_disk(dir.path())
            .is_ok());
    }

    #[test]
    fn sizes_and_policies() {
        let c = Config::parse(
            &format!("[wal]\nfsync = \"always\"\nsegment_size = \"8MiB\"\n{MINIMAL}max_frame_unused = 1\n")
                .replace("max_frame_unused = 1\n", "rotate_size = \"100MB\"\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.wal.fsync, FsyncPolicy::Always);
        assert_eq!(c.wal.segment_size, 8 << 20);
        let SinkConfig::File(f) = &c.sinks["b"] else {
            panic!()
        };
        assert_eq!(f.rotate_size, 100_000_000);
    }
}
