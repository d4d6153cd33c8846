//! `[sources.<name>]`: one struct per source `type`. A new source type is a variant of
//! [`SourceConfig`], its struct here, and one arm in [`super::typed`] and `crate::sources`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::units::{de_bytes, de_duration, Bounds, TypeTag, DAY, MIB};

/// Source types (`type = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    Syslog,
}

/// A source, typed by its `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Syslog(SyslogSource),
}

impl SourceConfig {
    /// The address the source listens on.
    pub fn address(&self) -> SocketAddr {
        match self {
            SourceConfig::Syslog(s) => s.address,
        }
    }

    /// The transport it listens with.
    pub fn mode(&self) -> SourceMode {
        match self {
            SourceConfig::Syslog(s) => s.mode,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceMode {
    Tcp,
    Udp,
}

/// `type = "syslog"`: RFC 5424 / RFC 3164 over TCP (octet-counted or line framed) or UDP.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogSource {
    #[serde(rename = "type")]
    pub tag: TypeTag,
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

/// The largest `max_frame` accepted.
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

impl SyslogSource {
    /// Checks that span keys (and the WAL's buffer).
    pub(super) fn check(&self, name: &str, wal: &super::WalConfig) -> Result<(), (String, String)> {
        let invalid = |k: &str, msg: &str| Err((format!("sources.{name}.{k}"), msg.to_string()));
        if !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return invalid("max_frame", "must be between 1 byte and 16MiB");
        }
        if self.max_frame > wal.buffer_size / 2 {
            return invalid("max_frame", "must be at most half of wal.buffer_size");
        }
        if !(4096..=1 << 30).contains(&self.receive_buffer) {
            return invalid("receive_buffer", "must be between 4KiB and 1GiB");
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return invalid("max_connections", "connection limits must be at least 1");
        }
        Ok(())
    }

    pub(super) fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
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
