//! `type = "syslog"`: RFC 5424 / RFC 3164 over TCP ([`super::tcp`]: octet-counted or line
//! framed), TLS (the same framing in a [`super::tls`] session, RFC 5425), RELP
//! ([`super::relp`], acknowledged once durable) or UDP ([`super::udp`]). This module is the
//! type's configuration and how a shard runs it; the transports do the serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ingest::{ParserMode, ParserOptions};
use serde::Deserialize;

use super::limits::ConnectionKeys;
use super::tls::TlsServer;
use super::SpecContext;
use super::{Binder, SharedLimits, SourceError, SourceMode, SourceSettings, SourceSpec};
use crate::metrics::SourceCounters;
use crate::units::{de_bytes, de_duration, render, Bounds, TypeTag, DAY, MIB};

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
    #[serde(default = "super::limits::default_max_connections")]
    pub max_connections: u32,
    /// Open connections from one source IP; more are closed at accept.
    #[serde(default = "super::limits::default_max_connections_per_ip")]
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
    #[serde(default = "super::limits::default_ipv4_prefix_length")]
    pub ipv4_prefix_length: u8,
    /// ... and IPv6 senders by this prefix (64: one client's usual allocation).
    #[serde(default = "super::limits::default_ipv6_prefix_length")]
    pub ipv6_prefix_length: u8,
    /// How frames are read: by their header (`auto`), always as one RFC, or not at all (`raw`).
    #[serde(default)]
    pub parser: ParserKind,
    /// rsyslog's `permit.squareBracketsInHostname`: `[host]` is a hostname.
    #[serde(default)]
    pub permit_square_brackets_in_hostname: bool,
    /// rsyslog's `permit.slashesInHostname`: `host/sub` is a hostname.
    #[serde(default)]
    pub permit_slashes_in_hostname: bool,
    /// rsyslog's `permit.AtSignsInHostname`: `user@host` is a hostname.
    #[serde(default)]
    pub permit_at_signs_in_hostname: bool,
    /// rsyslog's `force.tagEndingByColon`: a word without a colon is message, not a tag.
    #[serde(default)]
    pub force_tag_ending_by_colon: bool,
    /// Drop the space after `TAG:` (syslog-ng always does; rsyslog's `remove.msgFirstSpace`).
    #[serde(default = "default_true")]
    pub remove_msg_first_space: bool,
    /// TLS: required by `mode = "tls"`, optional for `relp`.
    #[serde(default)]
    pub tls: Option<super::tls::SourceTls>,
}

/// `parser = "..."` on a syslog source.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParserKind {
    /// RFC 5424 when the frame starts `<PRI>1 `, RFC 3164 otherwise.
    #[default]
    Auto,
    Rfc5424,
    Rfc3164,
    /// No parsing: the frame is the message.
    Raw,
}

impl ParserKind {
    /// How frames are parsed, with the vendor options at their defaults.
    pub(crate) fn options(self) -> ParserOptions {
        ParserOptions {
            mode: self.mode(),
            ..ParserOptions::default()
        }
    }

    fn mode(self) -> ParserMode {
        match self {
            ParserKind::Auto => ParserMode::Auto,
            ParserKind::Rfc5424 => ParserMode::Rfc5424,
            ParserKind::Rfc3164 => ParserMode::Rfc3164,
            ParserKind::Raw => ParserMode::Raw,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ParserKind::Auto => "auto",
            ParserKind::Rfc5424 => "rfc5424",
            ParserKind::Rfc3164 => "rfc3164",
            ParserKind::Raw => "raw",
        }
    }
}

fn default_true() -> bool {
    true
}

impl SyslogSource {
    fn connection_keys(&self) -> ConnectionKeys {
        ConnectionKeys {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            ipv4_prefix_length: self.ipv4_prefix_length,
            ipv6_prefix_length: self.ipv6_prefix_length,
        }
    }

    fn parser_options(&self) -> ParserOptions {
        ParserOptions {
            mode: self.parser.mode(),
            permit_square_brackets_in_hostname: self.permit_square_brackets_in_hostname,
            permit_slashes_in_hostname: self.permit_slashes_in_hostname,
            permit_at_signs_in_hostname: self.permit_at_signs_in_hostname,
            force_tag_ending_by_colon: self.force_tag_ending_by_colon,
            remove_msg_first_space: self.remove_msg_first_space,
        }
    }
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(600)
}
fn default_frame_timeout() -> Duration {
    Duration::from_secs(60)
}

/// The largest `max_frame` accepted.
pub const MAX_FRAME_LIMIT: u64 = 16 << 20;

fn default_max_frame() -> u64 {
    64 << 10
}
fn default_read_buffer() -> u64 {
    256 << 10
}
fn default_receive_buffer() -> u64 {
    4 << 20
}

impl SourceSettings for SyslogSource {
    fn address(&self) -> Option<SocketAddr> {
        Some(self.address)
    }

    fn mode(&self) -> SourceMode {
        self.mode
    }

    fn check(&self, name: &str, shared: &SharedLimits) -> Result<(), (String, String)> {
        let invalid = |k: &str, msg: &str| Err((format!("sources.{name}.{k}"), msg.to_string()));
        if !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return invalid("max_frame", "must be between 1 byte and 16MiB");
        }
        if self.max_frame > shared.wal_buffer_size / 2 {
            return invalid("max_frame", "must be at most half of wal.buffer_size");
        }
        if !(4096..=1 << 30).contains(&self.receive_buffer) {
            return invalid("receive_buffer", "must be between 4KiB and 1GiB");
        }
        if let Err((key, why)) = self.connection_keys().check() {
            return invalid(key, why);
        }
        match (self.mode, &self.tls) {
            (SourceMode::Tls, None) => {
                return invalid(
                    "tls",
                    "mode = \"tls\" needs a tls table (cert_file, key_file)",
                )
            }
            (SourceMode::Tcp | SourceMode::Udp, Some(_)) => {
                return invalid("tls", "TLS is for mode = \"tls\" or \"relp\"")
            }
            (_, Some(tls)) => tls.check(&format!("sources.{name}.tls"))?,
            (_, None) => {}
        }
        if self.read_buffer.max(self.max_frame) > shared.max_connection_memory {
            return invalid(
                "read_buffer",
                "read_buffer and max_frame must each be at most max_connection_memory (a connection could never hold one frame)",
            );
        }
        Ok(())
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let second = Duration::from_secs(1);
        b.size(&key("read_buffer"), self.read_buffer, 4096..=64 * MIB);
        b.duration(&key("idle_timeout"), self.idle_timeout, second..=7 * DAY);
        b.duration(&key("frame_timeout"), self.frame_timeout, second..=DAY);
        self.connection_keys().check_bounds(prefix, b);
        if let Some(tls) = &self.tls {
            tls.check_bounds(&key("tls"), b);
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("mode".into(), render::text(self.mode.scheme()));
        t.insert("address".into(), render::text(&self.address.to_string()));
        t.insert("max_frame".into(), render::bytes(self.max_frame));
        self.connection_keys().render(&mut t);
        t.insert("read_buffer".into(), render::bytes(self.read_buffer));
        t.insert("receive_buffer".into(), render::bytes(self.receive_buffer));
        t.insert("idle_timeout".into(), render::duration(self.idle_timeout));
        t.insert("frame_timeout".into(), render::duration(self.frame_timeout));
        t.insert("parser".into(), render::text(self.parser.name()));
        for (key, value) in [
            (
                "permit_square_brackets_in_hostname",
                self.permit_square_brackets_in_hostname,
            ),
            (
                "permit_slashes_in_hostname",
                self.permit_slashes_in_hostname,
            ),
            (
                "permit_at_signs_in_hostname",
                self.permit_at_signs_in_hostname,
            ),
            ("force_tag_ending_by_colon", self.force_tag_ending_by_colon),
            ("remove_msg_first_space", self.remove_msg_first_space),
        ] {
            t.insert(key.into(), toml::Value::Boolean(value));
        }
        if let Some(tls) = &self.tls {
            t.insert("tls".into(), toml::Value::Table(tls.render()));
        }
        t
    }

    fn spec(&self, name: &str, context: &SpecContext<'_>) -> Result<SourceSpec, SourceError> {
        let (shards, memory) = (context.shards, context.memory);
        let bind: Binder = match self.mode {
            SourceMode::Udp => super::udp::bind,
            // (A syslog source's `mode` is one of tcp, udp, tls, relp.)
            _ => super::tcp::bind,
        };
        let tls = match &self.tls {
            Some(keys) => Some(TlsServer::load(keys).map_err(|error| SourceError::Tls {
                name: name.to_string(),
                error,
            })?),
            None => None,
        };
        Ok(SourceSpec {
            name: name.to_string(),
            mode: self.mode,
            bind,
            address: self.address,
            max_frame: self.max_frame as usize,
            read_buffer: self.read_buffer as usize,
            receive_buffer: self.receive_buffer as usize,
            idle_timeout: self.idle_timeout,
            frame_timeout: self.frame_timeout,
            parser: self.parser_options(),
            limits: self.connection_keys().limits(),
            memory: Arc::clone(memory),
            counters: Arc::new(SourceCounters::new(shards)),
            tls,
            http: None,
            json: false,
            only_source: false,
            file: None,
        })
    }
}
