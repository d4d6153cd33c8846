//! Sinks: one module per destination. A module holds the sink type's configuration (its
//! struct, defaults, checks, bounds and rendering: [`SinkSettings`]) and its
//! [`crate::delivery::Sink`] implementation; the `type_registry!` list below is the registry.
//!
//! A sink only writes what it is handed and says when it is confirmed; reading the WAL,
//! batching, retrying and cursors are [`crate::delivery`]'s, shared by every sink. A sink runs
//! on its output's thread and never touches a shard.
//!
//! **A new destination is one new module here plus one line in the registry.** The registry
//! generates the `type` names, the typed config enum the config reader fills (with the key and
//! line of every error), and the dispatch to the module's settings and `open`.

pub(crate) mod compression;
mod console;
mod elasticsearch;
mod file;
mod http;
pub(crate) mod http_client;
mod relp;
mod tcp;
pub(crate) mod tls_client;

use std::path::Path;

pub use console::{ConsoleSink, ConsoleTarget};
pub use elasticsearch::bulk_answer_verdicts;
pub use elasticsearch::{BulkAction, ElasticsearchSink};
pub use file::{FileSink, SinkFsync};
pub use http::{BodyEncoding, HttpSink};
pub use relp::{read_answers as read_relp_answers, RelpSink};
pub use tcp::{TcpSink, DEFAULT_REPLAY_WINDOW};

use crate::delivery::OpenedSink;
use crate::units::Bounds;

/// What a sink writes to or connects to (what a config posted through the API may reach is
/// checked against it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach<'a> {
    /// A file it writes (and rotates next to).
    File(&'a Path),
    /// A `host:port` it connects to.
    Destination(&'a str),
    /// Sluice's own standard output or error.
    Console,
}

/// A sink type's configuration: everything the rest of Sluice needs to know of it.
pub trait SinkSettings {
    /// Checks that span keys; the key (`sinks.NAME.KEY`) and why, when refused.
    fn check(&self, name: &str) -> Result<(), (String, String)>;
    /// Puts every size and duration against its bounds (keys under `prefix`).
    fn check_bounds(&self, prefix: &str, bounds: &mut Bounds);
    /// The keys every sink type has.
    fn common(&self) -> SinkCommon<'_>;
    /// Every key of its own with its effective value (`sluice config`); `type` and the
    /// common keys aside.
    fn render(&self) -> toml::Table;
    /// What it writes to or connects to.
    fn reach(&self) -> Reach<'_>;
    /// Opens the destination (where the sink is started: a refusal fails the start or the
    /// reload), with its encoding and retry backoff.
    fn open(&self) -> Result<OpenedSink, SinkError>;
}

/// Why a sink could not be opened (the start or the reload that asked for it fails).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The destination refused (it names the path or address and why).
    #[error("{source}")]
    Open {
        sink_type: &'static str,
        #[source]
        source: std::io::Error,
    },
}

crate::registry::type_registry! {
    SinkType, SinkConfig, SinkSettings, "sink";
    File = "file" => FileSink,
    Tcp = "tcp" => TcpSink,
    Console = "console" => ConsoleSink,
    Http = "http" => HttpSink,
    Elasticsearch = "elasticsearch" => ElasticsearchSink,
    Relp = "relp" => RelpSink,
}

/// Where a sink without a cursor (added by a reload, or new in the config) starts reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// At the end of the WAL when the sink starts: it gets what arrives from then on.
    #[default]
    End,
    /// At the oldest record still on disk: it back-fills the history the WAL holds.
    Oldest,
}

impl StartAt {
    pub fn name(self) -> &'static str {
        match self {
            StartAt::End => "end",
            StartAt::Oldest => "oldest",
        }
    }
}

/// `encoding = "template"` and `template` go together; the template must compile.
pub(crate) fn check_template(
    name: &str,
    encoding: crate::delivery::Encoding,
    template: Option<&str>,
) -> Result<(), (String, String)> {
    use crate::delivery::Encoding;
    let key = |k: &str| format!("sinks.{name}.{k}");
    match (encoding, template) {
        (Encoding::Template, None) => Err((
            key("template"),
            "encoding = \"template\" needs a template".into(),
        )),
        (Encoding::Template, Some(t)) => crate::delivery::Template::parse(t)
            .map(|_| ())
            .map_err(|e| (key("template"), e)),
        (_, Some(_)) => Err((
            key("template"),
            "a template is used only with encoding = \"template\"".into(),
        )),
        (_, None) => Ok(()),
    }
}

/// The compiled template (checked when the config was read).
pub(crate) fn compile_template(
    template: Option<&str>,
) -> Option<std::sync::Arc<crate::delivery::Template>> {
    template
        .and_then(|t| crate::delivery::Template::parse(t).ok())
        .map(std::sync::Arc::new)
}

/// The keys every sink type has (each type's struct declares them, so that errors keep their
/// line: see `config::typed`); read, bounded and rendered here, in one place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkCommon<'a> {
    /// Sources, transforms or route outputs it takes (`inputs`); `None`: every source.
    pub inputs: Option<&'a [String]>,
    /// Where it starts when it has no cursor yet (`start_at`).
    pub start_at: StartAt,
    /// Its circuit breaker (`failure_threshold`, `open_for`).
    pub circuit: crate::delivery::CircuitSettings,
    /// `batch.*`, the type's defaults filled in.
    pub batch: crate::delivery::BatchSettings,
    /// The dead-letter queue's budget in bytes (`dlq_max_size`).
    pub dlq_max_size: u64,
    /// Requests in flight at once (`concurrency`; always 1 for stream sinks).
    pub concurrency: usize,
}

impl SinkCommon<'_> {
    /// The common keys against their bounds (keys under `prefix`).
    pub(crate) fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let c = self.circuit;
        b.count(
            &format!("{prefix}.failure_threshold"),
            c.failure_threshold.into(),
            1..=10_000,
        );
        b.duration(
            &format!("{prefix}.open_for"),
            c.open_for,
            std::time::Duration::from_millis(10)..=crate::units::HOUR,
        );
        self.batch.check_bounds(prefix, b);
        b.size(
            &format!("{prefix}.dlq_max_size"),
            self.dlq_max_size,
            (64 << 10)..=(1 << 50),
        );
    }

    /// The common keys as `sluice config` writes them.
    pub(crate) fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        if let Some(inputs) = self.inputs {
            let inputs = inputs.iter().map(|i| toml::Value::String(i.clone()));
            t.insert("inputs".into(), toml::Value::Array(inputs.collect()));
        }
        t.insert(
            "start_at".into(),
            crate::units::render::text(self.start_at.name()),
        );
        let c = self.circuit;
        t.insert(
            "failure_threshold".into(),
            toml::Value::Integer(c.failure_threshold.into()),
        );
        t.insert(
            "open_for".into(),
            crate::units::render::duration(c.open_for),
        );
        t.insert("batch".into(), self.batch.render());
        t.insert(
            "dlq_max_size".into(),
            crate::units::render::bytes(self.dlq_max_size),
        );
        t
    }
}

/// `failure_threshold` default.
pub(crate) fn default_failure_threshold() -> u32 {
    crate::delivery::CircuitSettings::default().failure_threshold
}

/// `open_for` default.
pub(crate) fn default_open_for() -> std::time::Duration {
    crate::delivery::CircuitSettings::default().open_for
}

/// `dlq_max_size` default: 1 GiB.
pub(crate) fn default_dlq_max_size() -> u64 {
    1 << 30
}

/// Opens the destination `config` names.
pub fn open(config: &SinkConfig) -> Result<OpenedSink, SinkError> {
    config.settings().open()
}
