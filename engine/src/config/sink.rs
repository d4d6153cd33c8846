//! `[sinks.<name>]`: one struct per sink `type`, each with its own keys and defaults. A new
//! sink type is a variant of [`SinkConfig`], its struct here, one arm in [`super::typed`]
//! and one in `crate::sinks::open`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::units::{de_bytes, de_duration, snake_case, Bounds, TypeTag, DAY, HOUR};

/// Sink types (`type = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkType {
    File,
    Tcp,
}

/// A sink, typed by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkConfig {
    File(FileSink),
    Tcp(TcpSink),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFsync {
    /// After the batch was written and fdatasync'd: survives power loss.
    #[default]
    Always,
    /// After the batch was written: survives a crash of Sluice, not of the machine.
    Never,
}

/// `type = "file"`: newline-delimited events in a file Sluice owns, rotated by size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub path: PathBuf,
    #[serde(default = "json")]
    pub encoding: Encoding,
    /// Rotate once the file reaches this size (default 100MB).
    #[serde(default = "default_rotate_size", deserialize_with = "de_bytes")]
    pub rotate_size: u64,
    /// Rotated files kept; older ones are deleted (default 10).
    #[serde(default = "default_keep")]
    pub keep: u32,
    #[serde(default)]
    pub fsync: SinkFsync,
    /// A file at `path` that Sluice did not create: append to it (never cut, rotate or delete
    /// it) instead of refusing to start.
    #[serde(default)]
    pub append_existing: bool,
    #[serde(default)]
    pub line_breaks: LineBreaks,
}

/// How the TCP sink frames events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpFraming {
    /// RFC 6587 octet counting: `<length> <frame>`.
    #[default]
    OctetCounting,
    /// One event per line.
    Newline,
}

impl<'de> Deserialize<'de> for TcpFraming {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        snake_case(
            d,
            &[
                ("octet_counting", TcpFraming::OctetCounting),
                ("newline", TcpFraming::Newline),
            ],
        )
    }
}

/// `type = "tcp"`: forwards to another syslog receiver (another Sluice, rsyslog, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// `host:port` of the receiver (resolved at each connect).
    pub address: String,
    #[serde(default)]
    pub framing: TcpFraming,
    #[serde(default = "raw")]
    pub encoding: Encoding,
    #[serde(default = "five_seconds", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failure (with full jitter) up to `max_backoff`.
    #[serde(default = "hundred_ms", deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// A write blocked longer than this counts as failed (the batch is resent).
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    #[serde(default)]
    pub line_breaks: LineBreaks,
    /// Bytes already confirmed (acknowledged by the receiver's TCP) that are sent again after
    /// every reconnect: what a receiver that died may have held unread.
    #[serde(default = "default_replay_window", deserialize_with = "de_bytes")]
    pub replay_window: u64,
}

fn json() -> Encoding {
    Encoding::Json
}
fn raw() -> Encoding {
    Encoding::Raw
}
fn default_rotate_size() -> u64 {
    100_000_000
}
fn default_keep() -> u32 {
    10
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn hundred_ms() -> Duration {
    Duration::from_millis(100)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn default_replay_window() -> u64 {
    DEFAULT_REPLAY_WINDOW
}

impl SinkConfig {
    /// Checks that span keys: a file name, host:port, backoffs in order.
    pub(super) fn check(&self, name: &str) -> Result<(), (String, String)> {
        let invalid = |key: &str, msg: &str| Err((format!("sinks.{name}.{key}"), msg.to_string()));
        match self {
            SinkConfig::File(f)
                if f.path.as_os_str().is_empty() || f.path.file_name().is_none() =>
            {
                invalid("path", "must name a file")
            }
            SinkConfig::File(f) if f.rotate_size < 1024 => {
                invalid("rotate_size", "must be at least 1KiB")
            }
            SinkConfig::Tcp(t) if !t.address.contains(':') => {
                invalid("address", "must be host:port")
            }
            SinkConfig::Tcp(t)
                if t.initial_backoff.is_zero() || t.max_backoff < t.initial_backoff =>
            {
                invalid(
                    "max_backoff",
                    "backoffs must be positive and max_backoff >= initial_backoff",
                )
            }
            _ => Ok(()),
        }
    }

    pub(super) fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
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
