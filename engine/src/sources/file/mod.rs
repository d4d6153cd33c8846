//! `type = "file"`: lines appended to files on this host (application logs, Kubernetes pod
//! logs), read on the shards.
//!
//! Every shard scans the `include` globs (every `scan_interval`, off its executor) and owns the
//! files whose identity (device, inode) hashes to it: files spread over shards, and each file
//! is read, in order, by exactly one shard (with io_uring, glommio's buffered file reads).
//!
//! Invariants:
//! - A file is known by its identity, not its name: renamed (logrotate's default) it is read on
//!   to its end under any name, and the new file at the old name is a new file, read from its
//!   start. A file whose size drops below the read position was truncated in place
//!   (copytruncate): it is read again from its start (counted).
//! - Checkpoints (identity, fingerprint of the first bytes, offset) are saved only for lines
//!   whose records are durable in the shard's WAL (`data_dir/files/SOURCE/shard-N.json`): a
//!   restart resumes there, with no loss and no re-reading beyond the last checkpoint.
//!   `read_from = "end"` applies to files found at the first scan without a checkpoint; files
//!   that appear later are read from their start.
//! - Bounded: at most `max_open_files` files (over all shards; more are counted and left for a
//!   later scan), lines of at most `max_frame` (longer ones truncated and flagged), one read
//!   buffer per file.
//! - Files and stdin read this host: they cannot be added through the admin API.

mod checkpoint;
pub mod formats;
mod tail;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Gate;
use serde::Deserialize;

use super::limits::ConnectionLimits;
use super::syslog::ParserKind;
use super::{BoundSource, SharedLimits, SourceError, SourceMode, SourceRun, SourceSettings};
use super::{SourceSpec, MAX_FRAME_LIMIT};
use crate::metrics::SourceCounters;
use crate::shard::Shard;
use crate::units::{de_bytes, de_duration, render, Bounds, TypeTag, HOUR};

/// `type = "file"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// Absolute paths or globs (`/var/log/app/*.log`, `/var/log/pods/*/*/*.log`).
    pub include: Vec<String>,
    /// Globs of paths never read.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where files found at the first scan (without a checkpoint) start.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// What a line is.
    #[serde(default)]
    pub format: FileFormat,
    /// `format = "syslog"`: how lines are parsed.
    #[serde(default)]
    pub parser: ParserKind,
    /// Longer lines are truncated and flagged.
    #[serde(default = "default_max_frame", deserialize_with = "de_bytes")]
    pub max_frame: u64,
    /// Files read at once, all shards together.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: u32,
    /// How often the globs are scanned for new files.
    #[serde(default = "default_scan_interval", deserialize_with = "de_duration")]
    pub scan_interval: Duration,
    /// How often a file at its end is looked at again.
    #[serde(default = "default_poll_interval", deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// A file no longer matched by the globs (rotated away) or deleted is closed once read to
    /// its end and quiet this long.
    #[serde(default = "default_rotate_wait", deserialize_with = "de_duration")]
    pub rotate_wait: Duration,
}

/// `read_from`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    Beginning,
    #[default]
    End,
}

/// `format`: what a line of a file is.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Syslog (or any text with `parser = "raw"`).
    #[default]
    Syslog,
    /// A JSON object per line.
    Json,
    /// Kubernetes' container runtime format (`TIME STREAM P|F MESSAGE`), partials joined.
    Cri,
    /// Docker's json-file format (`{"log":…,"stream":…,"time":…}`), partials joined.
    DockerJson,
}

impl FileFormat {
    fn name(self) -> &'static str {
        match self {
            FileFormat::Syslog => "syslog",
            FileFormat::Json => "json",
            FileFormat::Cri => "cri",
            FileFormat::DockerJson => "docker_json",
        }
    }
}

fn default_max_frame() -> u64 {
    64 << 10
}
fn default_max_open_files() -> u32 {
    1024
}
fn default_scan_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_rotate_wait() -> Duration {
    Duration::from_secs(5)
}

/// What a shard needs of a file source beyond the common [`SourceSpec`].
#[derive(Debug)]
pub struct FileSettings {
    pub include: Vec<String>,
    pub exclude: Vec<glob::Pattern>,
    pub read_from: ReadFrom,
    pub format: FileFormat,
    /// This shard's share of `max_open_files`.
    pub max_open_files: usize,
    pub scan_interval: Duration,
    pub poll_interval: Duration,
    pub rotate_wait: Duration,
    pub shards: usize,
    /// `data_dir/files/SOURCE`.
    pub checkpoint_dir: PathBuf,
}

impl SourceSettings for FileSource {
    fn address(&self) -> Option<SocketAddr> {
        None
    }

    fn mode(&self) -> SourceMode {
        SourceMode::File
    }

    fn check(&self, name: &str, shared: &SharedLimits) -> Result<(), (String, String)> {
        let invalid = |k: &str, msg: String| Err((format!("sources.{name}.{k}"), msg));
        if self.include.is_empty() {
            return invalid("include", "name at least one path or glob".into());
        }
        for (key, globs) in [("include", &self.include), ("exclude", &self.exclude)] {
            for g in globs {
                if !g.starts_with('/') {
                    return invalid(key, format!("{g:?}: paths must be absolute"));
                }
                if let Err(e) = glob::Pattern::new(g) {
                    return invalid(key, format!("{g:?}: {e}"));
                }
            }
        }
        if !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return invalid("max_frame", "must be between 1 byte and 16MiB".into());
        }
        if self.max_frame > shared.wal_buffer_size / 2 {
            return invalid(
                "max_frame",
                "must be at most half of wal.buffer_size".into(),
            );
        }
        Ok(())
    }

    fn joins_lines(&self) -> bool {
        self.format == FileFormat::Syslog
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let ms = Duration::from_millis(10);
        b.count(
            &key("max_open_files"),
            self.max_open_files.into(),
            1..=1_000_000,
        );
        b.duration(&key("scan_interval"), self.scan_interval, ms..=HOUR);
        b.duration(&key("poll_interval"), self.poll_interval, ms..=HOUR);
        b.duration(&key("rotate_wait"), self.rotate_wait, Duration::ZERO..=HOUR);
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let list = |v: &[String]| toml::Value::Array(v.iter().map(|s| render::text(s)).collect());
        t.insert("include".into(), list(&self.include));
        t.insert("exclude".into(), list(&self.exclude));
        let from = match self.read_from {
            ReadFrom::Beginning => "beginning",
            ReadFrom::End => "end",
        };
        t.insert("read_from".into(), render::text(from));
        t.insert("format".into(), render::text(self.format.name()));
        t.insert("parser".into(), render::text(self.parser.name()));
        t.insert("max_frame".into(), render::bytes(self.max_frame));
        t.insert(
            "max_open_files".into(),
            toml::Value::Integer(self.max_open_files.into()),
        );
        t.insert("scan_interval".into(), render::duration(self.scan_interval));
        t.insert("poll_interval".into(), render::duration(self.poll_interval));
        t.insert("rotate_wait".into(), render::duration(self.rotate_wait));
        t
    }

    fn spec(
        &self,
        name: &str,
        context: &super::SpecContext<'_>,
    ) -> Result<SourceSpec, SourceError> {
        let shards = context.shards.max(1);
        let file = FileSettings {
            include: self.include.clone(),
            exclude: self
                .exclude
                .iter()
                .filter_map(|g| glob::Pattern::new(g).ok())
                .collect(),
            read_from: self.read_from,
            format: self.format,
            max_open_files: (self.max_open_files as usize).div_ceil(shards),
            scan_interval: self.scan_interval,
            poll_interval: self.poll_interval,
            rotate_wait: self.rotate_wait,
            shards,
            checkpoint_dir: context.data_dir.join("files").join(name),
        };
        Ok(SourceSpec {
            name: name.to_string(),
            mode: SourceMode::File,
            bind,
            address: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            max_frame: self.max_frame as usize,
            read_buffer: 64 << 10,
            receive_buffer: 0,
            idle_timeout: Duration::ZERO,
            frame_timeout: Duration::ZERO,
            parser: self.parser.options(),
            limits: ConnectionLimits::with_prefixes(1, 1, 32, 64),
            memory: Arc::clone(context.memory),
            counters: Arc::new(SourceCounters::new(context.shards)),
            tls: None,
            http: None,
            json: self.format == FileFormat::Json,
            only_source: false,
            file: Some(Arc::new(file)),
        })
    }
}

fn bind(_spec: &SourceSpec) -> std::io::Result<Box<dyn BoundSource>> {
    Ok(Box::new(FilesBound))
}

/// Nothing to bind: each shard starts its tailer when it serves the source.
struct FilesBound;

impl BoundSource for FilesBound {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool {
        gate.spawn(tail::run(shard, run))
            .map(|t| t.detach())
            .is_ok()
    }
}
