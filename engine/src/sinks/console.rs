//! The console sink: events to Sluice's standard output or standard error, for `sluice run` in
//! a terminal and for containers (where the runtime collects stdout).
//!
//! A batch is confirmed once it was written and flushed to the stream (a pipe or terminal
//! that accepted the bytes). Sluice's own logs go to standard error: with `target = "stderr"`
//! they interleave with the events.

use std::io::{self, Write};
use std::time::Duration;

use serde::Deserialize;

use super::{Reach, SinkError, SinkSettings, StartAt};
use crate::delivery::{
    Backoff, Batch, DeliveryResult, Encoding, LineBreaks, OpenedSink, RecordEncoding, Sink,
    Verdicts,
};
use crate::units::{render, Bounds, TypeTag};

/// Which stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsoleTarget {
    #[default]
    Stdout,
    Stderr,
}

fn json() -> Encoding {
    Encoding::Json
}

/// `type = "console"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// Sources, transforms or route outputs it takes; unset: every source.
    pub inputs: Option<Vec<String>>,
    #[serde(default)]
    pub start_at: StartAt,
    /// Deliveries failing in a row before the circuit breaker opens.
    #[serde(default = "super::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit makes no attempt before one probe.
    #[serde(
        default = "super::default_open_for",
        deserialize_with = "crate::units::de_duration"
    )]
    pub open_for: std::time::Duration,
    /// `batch.max_events`, `batch.max_bytes`, `batch.timeout`.
    #[serde(default)]
    pub batch: crate::delivery::StreamBatch,
    /// The dead-letter queue's budget (`data_dir/dlq/NAME`).
    #[serde(
        default = "super::default_dlq_max_size",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub dlq_max_size: u64,
    #[serde(default)]
    pub target: ConsoleTarget,
    #[serde(default = "json")]
    pub encoding: Encoding,
    #[serde(default)]
    pub line_breaks: LineBreaks,
    /// With `encoding = "template"`.
    pub template: Option<String>,
}

struct ConsoleOutput {
    target: ConsoleTarget,
}

impl ConsoleOutput {
    /// Writes the batch's bytes; `Ok` once confirmed.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        match self.target {
            ConsoleTarget::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(batch)?;
                out.flush()
            }
            ConsoleTarget::Stderr => {
                let mut out = io::stderr().lock();
                out.write_all(batch)?;
                out.flush()
            }
        }
    }
}

impl Sink for ConsoleOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        self.write_batch(batch.bytes())?;
        Ok(Verdicts::all_confirmed())
    }
}

impl SinkSettings for ConsoleSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        super::check_template(name, self.encoding, self.template.as_deref())
    }

    fn check_bounds(&self, _prefix: &str, _bounds: &mut Bounds) {}

    fn common(&self) -> super::SinkCommon<'_> {
        super::SinkCommon {
            inputs: self.inputs.as_deref(),
            start_at: self.start_at,
            circuit: crate::delivery::CircuitSettings {
                failure_threshold: self.failure_threshold,
                open_for: self.open_for,
            },
            batch: self.batch.0,
            dlq_max_size: self.dlq_max_size,
            concurrency: 1,
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let target = match self.target {
            ConsoleTarget::Stdout => "stdout",
            ConsoleTarget::Stderr => "stderr",
        };
        t.insert("target".into(), render::text(target));
        t.insert("encoding".into(), render::text(self.encoding.name()));
        t.insert("line_breaks".into(), render::text(self.line_breaks.name()));
        if let Some(template) = &self.template {
            t.insert("template".into(), render::text(template));
        }
        t
    }

    fn reach(&self) -> Reach<'_> {
        Reach::Console
    }

    fn open(&self) -> Result<OpenedSink, SinkError> {
        Ok(OpenedSink {
            sink: Box::new(ConsoleOutput {
                target: self.target,
            }),
            encoding: RecordEncoding {
                encoding: self.encoding,
                framing: None,
                line_breaks: self.line_breaks,
                template: super::compile_template(self.template.as_deref()),
            },
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            rejects_events: false,
        })
    }
}
