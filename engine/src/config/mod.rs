//! Configuration: TOML files, their validation, and the embedded default.
//!
//! Parsing is strict: unknown keys are errors, and every value is checked while it is read so
//! the error names the key and the line (`toml` reports the span). Sources and sinks are
//! typed by `type` ([`typed`]). `${VAR}` is taken from the environment ([`env`]). Several
//! files (`--config` repeated, `--config-dir`) merge into one config; a key or a source or
//! sink name defined twice is an error naming both files. Checks that span several keys run
//! afterwards and name the key path.

pub mod api;
pub mod env;
pub mod files;
pub mod show;
pub mod typed;
pub mod wal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};
use storage::{FsyncPolicy, MinFree};

pub use crate::delivery::{Encoding, LineBreaks, TcpFraming};
pub use crate::sinks::{FileSink, SinkConfig, SinkFsync, SinkType, TcpSink, DEFAULT_REPLAY_WINDOW};
pub use crate::sources::{SourceConfig, SourceMode, SourceType, SyslogSource, MAX_FRAME_LIMIT};
pub use crate::transforms::{Compiled, TransformConfig};
pub use crate::units::TypeTag;
use crate::units::{self, de_opt_bytes, de_opt_duration, Bounds, DAY, HOUR, MIB};
pub use api::{ApiConfig, ApiListen};
pub use files::ConfigFiles;
pub use wal::{Compression, WalConfig};

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
    #[error("{origin}: {error}")]
    Environment {
        origin: String,
        #[source]
        error: env::InterpolationError,
    },
    #[error("{origin}: {key}: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{key} is defined in both {first} and {second}")]
    Duplicate {
        key: String,
        first: String,
        second: String,
    },
    #[error("{}: no *.toml files in the config directory", dir.display())]
    EmptyDir { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub shards: Shards,
    /// How long a graceful stop may take to deliver what was received before exiting anyway
    /// (nothing is lost: undelivered records stay in the WAL for the next start).
    pub shutdown_timeout: Duration,
    /// How often a status line (events in and out, lag, disk) is logged; `"0s"`: never.
    pub status_interval: Duration,
    /// All TCP connections' read buffers together (every source, every shard). A connection
    /// that needs to grow its buffer past this budget is closed, counted
    /// (`sluice_connections_closed_total{reason="memory_budget"}`).
    pub max_connection_memory: u64,
    pub wal: WalConfig,
    pub api: ApiConfig,
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[transforms.NAME]`: processing between the sources and the WAL (docs/processing.md).
    pub transforms: BTreeMap<String, TransformConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The text this config was parsed from, uninterpolated (served by `GET /config`; several
    /// files: each under a `# file:` line).
    pub source_text: String,
    /// Where it came from (empty: the embedded default).
    pub files: ConfigFiles,
    /// Deprecated spellings met while reading (logged at start and reload).
    pub warnings: Vec<String>,
}

/// One file's part of the config: every key optional (another file may set it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Part {
    data_dir: Option<PathBuf>,
    shards: Option<Shards>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    shutdown_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_duration")]
    status_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_opt_bytes")]
    max_connection_memory: Option<u64>,
    wal: Option<WalConfig>,
    api: Option<ApiConfig>,
    #[serde(default, deserialize_with = "typed::de_sources")]
    sources: BTreeMap<String, SourceConfig>,
    #[serde(default, deserialize_with = "typed::de_transforms")]
    transforms: BTreeMap<String, TransformConfig>,
    #[serde(default, deserialize_with = "typed::de_sinks")]
    sinks: BTreeMap<String, SinkConfig>,
}

/// The parts merged so far, and which file set each key.
#[derive(Default)]
struct Merged {
    part: Part,
    set_by: BTreeMap<String, String>,
}

impl Merged {
    /// Takes `value` for `key` unless another file already set it.
    fn take<T>(
        &mut self,
        slot: fn(&mut Part) -> &mut Option<T>,
        key: &str,
        value: Option<T>,
        origin: &str,
    ) -> Result<(), ConfigError> {
        let Some(value) = value else { return Ok(()) };
        self.claim(key, origin)?;
        *slot(&mut self.part) = Some(value);
        Ok(())
    }

    fn claim(&mut self, key: &str, origin: &str) -> Result<(), ConfigError> {
        match self.set_by.insert(key.to_string(), origin.to_string()) {
            Some(first) => Err(ConfigError::Duplicate {
                key: key.to_string(),
                first,
                second: origin.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn add(&mut self, part: Part, origin: &str) -> Result<(), ConfigError> {
        self.take(|p| &mut p.data_dir, "data_dir", part.data_dir, origin)?;
        self.take(|p| &mut p.shards, "shards", part.shards, origin)?;
        self.take(
            |p| &mut p.shutdown_timeout,
            "shutdown_timeout",
            part.shutdown_timeout,
            origin,
        )?;
        self.take(
            |p| &mut p.status_interval,
            "status_interval",
            part.status_interval,
            origin,
        )?;
        self.take(
            |p| &mut p.max_connection_memory,
            "max_connection_memory",
            part.max_connection_memory,
            origin,
        )?;
        self.take(|p| &mut p.wal, "[wal]", part.wal, origin)?;
        self.take(|p| &mut p.api, "[api]", part.api, origin)?;
        for (name, source) in part.sources {
            self.claim(&format!("sources.{name}"), origin)?;
            self.part.sources.insert(name, source);
        }
        for (name, transform) in part.transforms {
            self.claim(&format!("transforms.{name}"), origin)?;
            self.part.transforms.insert(name, transform);
        }
        for (name, sink) in part.sinks {
            self.claim(&format!("sinks.{name}"), origin)?;
            self.part.sinks.insert(name, sink);
        }
        Ok(())
    }
}

fn default_max_connection_memory() -> u64 {
    256 << 20
}

fn default_status_interval() -> Duration {
    Duration::from_secs(10)
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

/// Reads one file's text into its part: interpolated, then typed in two passes.
fn read_part(text: &str, origin: &str) -> Result<Part, ConfigError> {
    let interpolated = env::interpolate(text, |name| std::env::var(name).ok()).map_err(|e| {
        ConfigError::Environment {
            origin: origin.to_string(),
            error: e,
        }
    })?;
    let parse_error = |e: toml::de::Error| ConfigError::Parse {
        origin: origin.to_string(),
        message: e.to_string().trim_end().to_string(),
    };
    let kinds = typed::read_kinds(&interpolated).map_err(parse_error)?;
    typed::with_kinds(kinds, || toml::from_str::<Part>(&interpolated)).map_err(parse_error)
}

impl Config {
    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Config::parse(DEFAULT_CONFIG, "embedded default config")
    }

    /// One file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        ConfigFiles::file(path).load()
    }

    /// Parses and validates `text`; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_all(&[(origin.to_string(), text.to_string())])
    }

    /// Parses, merges and validates `(origin, text)` pairs.
    pub fn parse_all(texts: &[(String, String)]) -> Result<Config, ConfigError> {
        let mut merged = Merged::default();
        units::take_deprecations();
        for (origin, text) in texts {
            let part = read_part(text, origin)?;
            merged.add(part, origin)?;
        }
        let origin = match texts {
            [(origin, _)] => origin.clone(),
            _ => "the config".to_string(),
        };
        let mut config = Config::from_part(merged.part);
        config.warnings = units::take_deprecations();
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Invalid {
                key: with_line(texts, &key),
                origin,
                message,
            })?;
        config.source_text = match texts {
            [(_, text)] => text.clone(),
            _ => texts
                .iter()
                .map(|(origin, text)| format!("# file: {origin}\n{text}"))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        Ok(config)
    }

    fn from_part(p: Part) -> Config {
        Config {
            data_dir: p.data_dir.unwrap_or_else(default_data_dir),
            shards: p.shards.unwrap_or_default(),
            shutdown_timeout: p.shutdown_timeout.unwrap_or_else(default_shutdown_timeout),
            status_interval: p.status_interval.unwrap_or_else(default_status_interval),
            max_connection_memory: p
                .max_connection_memory
                .unwrap_or_else(default_max_connection_memory),
            wal: p.wal.unwrap_or_default(),
            api: p.api.unwrap_or_default(),
            sources: p.sources,
            transforms: p.transforms,
            sinks: p.sinks,
            source_text: String::new(),
            files: ConfigFiles::default(),
            warnings: Vec::new(),
        }
    }

    /// The file system under data_dir must be larger than what `min_free_disk` keeps free, or
    /// no segment could ever be written (ingest would block forever while `/ready` says 200).
    pub fn check_min_free_disk(&self, data_dir: &Path) -> Result<(), ConfigError> {
        let MinFree::Bytes(keep) = self.wal.min_free_disk else {
            return Ok(());
        };
        match storage::budget::file_system_size(data_dir) {
            Some(total) if keep.saturating_add(self.wal.segment_size) > total => {
                Err(ConfigError::Invalid {
                    origin: "the config".into(),
                    key: "wal.min_free_disk".into(),
                    message: format!(
                        "{keep} bytes plus one segment does not fit on the file system of {} ({total} bytes)",
                        data_dir.display()
                    ),
                })
            }
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
            source
                .settings()
                .check_bounds(&format!("sources.{name}"), &mut b);
        }
        for (name, sink) in &self.sinks {
            let prefix = format!("sinks.{name}");
            sink.settings().common().check_bounds(&prefix, &mut b);
            sink.settings().check_bounds(&prefix, &mut b);
        }
        b.into_result()
    }

    fn validate(&mut self) -> Result<(), (String, String)> {
        let invalid = |key: String, msg: &str| Err((key, msg.to_string()));
        if self.sources.is_empty() {
            return invalid("sources".into(), "at least one source is required");
        }
        if self.sinks.is_empty() {
            return invalid("sinks".into(), "at least one sink is required");
        }
        self.check_bounds()?;
        self.wal.check()?;
        self.api.check()?;
        let mut bound = Vec::new();
        for (name, source) in &self.sources {
            if !is_plain_name(name) {
                return invalid(format!("sources.{name}"), NAME_RULE);
            }
            let shared = crate::sources::SharedLimits {
                wal_buffer_size: self.wal.buffer_size,
                max_connection_memory: self.max_connection_memory,
            };
            source.settings().check(name, &shared)?;
            let Some(address) = source.address() else {
                continue;
            };
            let listens = (source.mode().is_stream(), address);
            // Port 0 is a new port for each source.
            if address.port() != 0 && bound.contains(&listens) {
                return invalid(
                    format!("sources.{name}.address"),
                    "another source already uses this address and mode",
                );
            }
            bound.push(listens);
        }
        for (name, sink) in &self.sinks {
            if !is_plain_name(name) {
                return invalid(format!("sinks.{name}"), NAME_RULE);
            }
            sink.settings().check(name)?;
        }
        for (name, transform) in &self.transforms {
            if !is_plain_name(name) {
                return invalid(format!("transforms.{name}"), NAME_RULE);
            }
            transform.settings().check(name)?;
        }
        let warnings = self.check_topology()?;
        self.warnings.extend(warnings);
        Ok(())
    }

    /// The transform graph: names, cycles, what each shard will build (checked once here).
    /// Returns warnings (transforms whose output nobody takes).
    fn check_topology(&self) -> Result<Vec<String>, (String, String)> {
        let sinks: Vec<&String> = self.sinks.keys().collect();
        // Any distinct bits do for checking; the running ones come from data_dir.
        let bit = |name: &str| sinks.iter().position(|s| *s == name).unwrap_or(0).min(63) as u8;
        let topology =
            crate::transforms::topology(&self.sources, &self.transforms, &self.sinks, bit);
        let compiled = Compiled::new(&topology, &self.transforms).map_err(|e| match e {
            crate::transforms::CompileError::Topology(t) => topology_key(t),
            crate::transforms::CompileError::Multiline { name, input, why } => (
                format!("transforms.{name}.inputs"),
                format!("`{input}` {why}"),
            ),
            other => ("transforms".to_string(), other.to_string()),
        })?;
        for (source, _) in compiled.joins() {
            if self
                .sources
                .get(source)
                .is_some_and(|s| !s.settings().joins_lines())
            {
                return Err((
                    format!("sources.{source}.mode"),
                    "a multiline transform joins the lines of TCP or TLS connections and of files with format = \"syslog\": this source is none of them".into(),
                ));
            }
        }
        Ok(compiled.warnings().to_vec())
    }

    /// The processing of this config with the running sinks' routing bits.
    pub fn compile(
        &self,
        bits: &crate::runtime::SinkBits,
    ) -> Result<Compiled, crate::transforms::CompileError> {
        let topology =
            crate::transforms::topology(&self.sources, &self.transforms, &self.sinks, |n| {
                bits.bit(n).unwrap_or(0)
            });
        Compiled::new(&topology, &self.transforms)
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

/// A topology error as (key, message): the key is the table's `inputs`.
fn topology_key(e: pipeline::topology::TopologyError) -> (String, String) {
    use pipeline::topology::TopologyError as T;
    let key = match &e {
        T::UnknownInput { at, .. }
        | T::RouteNeedsOutput { at, .. }
        | T::UnknownPort { at, .. }
        | T::NoInputs { at } => format!("{at}.inputs"),
        T::NameTaken { name } => format!("transforms.{name}"),
        T::Cycle { path } => format!(
            "transforms.{}.inputs",
            path.first().map_or("", String::as_str)
        ),
        T::TooLarge { source_name } => format!("sources.{source_name}"),
    };
    let message = e.to_string();
    let message = message
        .split_once(": ")
        .map_or(message.clone(), |(_, m)| m.to_string());
    (key, message)
}

/// `key` with the line that sets it, when one file's text has it (`transforms.a.inputs (line 12)`):
/// checks that span tables run after parsing, so the line is found in the text.
fn with_line(texts: &[(String, String)], key: &str) -> String {
    let mut parts: Vec<&str> = key.splitn(3, '.').collect();
    if parts.len() < 2 || !["sources", "transforms", "sinks"].contains(&parts[0]) {
        return key.to_string();
    }
    let leaf = if parts.len() == 3 { parts.pop() } else { None };
    let header = format!("[{}.{}]", parts[0], parts[1]);
    for (origin, text) in texts {
        let mut in_table = false;
        let mut table_line = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.starts_with('[') {
                in_table = line == header;
                if in_table {
                    table_line = Some(n + 1);
                }
                continue;
            }
            let leaf_key = leaf.and_then(|l| l.split(['.', '[']).next());
            if in_table
                && leaf_key.is_some_and(|l| line.split('=').next().is_some_and(|k| k.trim() == l))
            {
                return format!("{key} ({origin} line {})", n + 1);
            }
        }
        if let Some(n) = table_line {
            return format!("{key} ({origin} line {n})");
        }
    }
    key.to_string()
}

/// Source and sink names become file names (cursors), so they are kept plain.
const NAME_RULE: &str = "names may only use letters, digits, '_' and '-' (at most 64)";

fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::embedded_default().unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.wal.fsync, FsyncPolicy::Interval(Duration::from_millis(2)));
        assert_eq!(c.wal.commits_in_flight, 1);
        assert_eq!(c.wal.segment_size, 128 << 20);
        assert_eq!(c.wal.fast_path_commits, 64);
        assert_eq!(c.wal.fast_path_bytes, 24 << 20);
    }

    #[test]
    fn commit_compression_takes_none_zstd_and_auto_with_its_level() {
        assert_eq!(
            Config::embedded_default().unwrap().wal.commit_compression(),
            storage::CommitCompression::None
        );
        for (name, want) in [
            ("zstd", storage::CommitCompression::Zstd { level: 3 }),
            ("auto", storage::CommitCompression::Auto { level: 3 }),
        ] {
            let text = format!(
                "[wal]\ncommit_compression = \"{name}\"\ncommit_compression_level = 3\n{MINIMAL}"
            );
            let c = Config::parse(&text, "test.toml").unwrap();
            assert_eq!(c.wal.commit_compression(), want);
            assert_eq!(c.wal.commit_compression.name(), name);
        }
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
            e.contains("line 8") && e.contains("unknown field `framing`"),
            "each sink type has its own keys: {e}"
        );
        let e = error_of(&MINIMAL.replace("type = \"file\"", "type = \"kafka\""));
        assert!(e.contains("line 6") && e.contains("kafka"), "{e}");
        let e = error_of(&MINIMAL.replace("type = \"file\"\n", ""));
        assert!(e.contains("missing field `type`"), "{e}");
        let e = error_of(&format!("{MINIMAL}keep = \"ten\"\n"));
        assert!(e.contains("line 8") && e.contains("keep"), "{e}");
        let e = error_of(&format!("data_dir = \"d\"\nbogus = 1\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("bogus"), "{e}");
        let e = error_of(&format!("[wal]\nfsync = \"sometimes\"\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("always"), "{e}");
        let e = error_of(&format!("[wal]\nio = \"sideways\"\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("\"buffered\""), "{e}");
        let e = error_of(&format!("[wal]\ncommit_compression = \"lz4\"\n{MINIMAL}"));
        assert!(e.contains("line 2") && e.contains("zstd"), "{e}");
        let e = error_of(&format!("[wal]\ncommit_compression_level = 30\n{MINIMAL}"));
        assert!(
            e.contains("commit_compression_level") && e.contains("-7 and 19"),
            "{e}"
        );
        for bad in [0, 9] {
            let e = error_of(&format!("[wal]\ncommits_in_flight = {bad}\n{MINIMAL}"));
            assert!(
                e.contains("commits_in_flight") && e.contains("1 and 8"),
                "{e}"
            );
        }
        for bad in ["\"1MiB\"", "\"17GiB\""] {
            let e = error_of(&format!("[wal]\nfast_path_bytes = {bad}\n{MINIMAL}"));
            assert!(
                e.contains("fast_path_bytes") && e.contains("wal.buffer_size"),
                "{e}"
            );
        }
        let c = Config::parse(
            &format!("[wal]\nfast_path_bytes = \"256MiB\"\n{MINIMAL}"),
            "test.toml",
        )
        .unwrap();
        assert_eq!(c.wal.fast_path_bytes, 256 << 20);
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
            (
                format!(
                    "max_connection_memory = \"1MiB\"\n{}",
                    source_key("read_buffer = \"2MiB\"")
                ),
                "sources.a.read_buffer",
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
        assert!(e.to_string().contains("min_free_disk"), "{e}");
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

    /// Several files merge; a key or a name defined twice names both files.
    #[test]
    fn files_merge_and_duplicates_name_both_files() {
        let (sources, sinks) = MINIMAL.split_at(MINIMAL.find("[sinks.b]").unwrap());
        let parts = |a: &str, b: &str| {
            Config::parse_all(&[
                ("a.toml".to_string(), a.to_string()),
                ("b.toml".to_string(), b.to_string()),
            ])
        };
        let c = parts(&format!("data_dir = \"/d\"\n{sources}"), sinks).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/d"));
        assert_eq!((c.sources.len(), c.sinks.len()), (1, 1));
        let e = parts(MINIMAL, sinks).unwrap_err().to_string();
        assert_eq!(e, "sinks.b is defined in both a.toml and b.toml");
        let e = parts(
            &format!("shards = 1\n{sources}"),
            &format!("shards = 2\n{sinks}"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "shards is defined in both a.toml and b.toml");
    }

    /// Enum values are snake_case; the kebab-case spellings of earlier versions still read,
    /// with a deprecation warning.
    #[test]
    fn old_enum_spellings_are_accepted_with_a_warning() {
        let text = format!(
            "[wal]\nrecovery = \"tolerate-corrupt-tail\"\n{MINIMAL}[sinks.f]\ntype = \"tcp\"\naddress = \"h:1\"\nframing = \"octet-counting\"\n"
        );
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(
            c.warnings[0].contains("write \"tolerate_corrupt_tail\""),
            "{:?}",
            c.warnings
        );
        let c = Config::parse(
            &text
                .replace("tolerate-corrupt-tail", "strict")
                .replace("octet-counting", "octet_counting"),
            "t",
        )
        .unwrap();
        assert!(c.warnings.is_empty());
        assert_eq!(c.wal.recovery, storage::RecoveryMode::Strict);
    }

    /// `${VAR}` comes from the environment; `GET /config` keeps the text uninterpolated.
    #[test]
    fn environment_variables_are_interpolated() {
        std::env::set_var("SLUICE_TEST_DATA_DIR", "/from/env");
        let text = format!("data_dir = \"${{SLUICE_TEST_DATA_DIR}}\"\n{MINIMAL}");
        let c = Config::parse(&text, "t").unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/env"));
        assert_eq!(c.source_text, text);
        let e = error_of(&format!(
            "x = 1\ndata_dir = \"${{SLUICE_TEST_UNSET_VAR}}\"\n{MINIMAL}"
        ));
        assert!(
            e.contains("line 2") && e.contains("SLUICE_TEST_UNSET_VAR is not set"),
            "{e}"
        );
    }
}
