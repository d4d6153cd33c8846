//! Sinks: one module per destination behind [`Sink`]; [`open`] is the registry.
//!
//! A sink only writes what it is handed and says when it is confirmed; reading the WAL,
//! batching, retrying and cursors are [`crate::delivery`]'s, shared by every sink. A sink runs
//! on its output's thread and never touches a shard.
//!
//! A new destination is a new module here with a `Sink` implementation, plus one arm in
//! [`open`] (and its config type in `config::sink`).

mod file;
mod tcp;

use std::time::Duration;

use crate::config::SinkConfig;
use crate::delivery::RecordEncoding;

/// A destination. `deliver` returns only when the batch is confirmed.
pub trait Sink {
    fn deliver(&mut self, batch: &[u8]) -> std::io::Result<()>;
    /// Called between failed attempts: drop connections, reopen files.
    fn reset(&mut self) {}
    /// Called when there is nothing to deliver (at least every
    /// [`crate::delivery::IDLE_PARK`]): a sink can notice a broken connection and repair it
    /// before the next batch.
    fn idle(&mut self) {}
}

/// Why a sink could not be opened (the start or the reload that asked for it fails).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file sink refused its path (it names the path and why).
    #[error("{0}")]
    File(#[source] std::io::Error),
}

/// A sink ready to run: opened (so a refusal surfaces where the sink is started: at start,
/// Sluice exits; on a reload, the reload is refused), with its encoding and retry backoff.
pub struct OpenedSink {
    pub sink: Box<dyn Sink + Send>,
    pub encoding: RecordEncoding,
    pub backoff: Backoff,
}

/// Delay between failed deliveries: exponential from `initial` up to `max`, full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// The registry: opens the destination `config` names (the file sink decides here whether it
/// may write).
pub fn open(config: &SinkConfig) -> Result<OpenedSink, SinkError> {
    Ok(match config {
        SinkConfig::File(c) => OpenedSink {
            sink: Box::new(file::FileOutput::open(c).map_err(SinkError::File)?),
            encoding: RecordEncoding {
                encoding: c.encoding,
                framing: None,
                line_breaks: c.line_breaks,
            },
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
        },
        SinkConfig::Tcp(c) => OpenedSink {
            sink: Box::new(tcp::TcpOutput::new(c)),
            encoding: RecordEncoding {
                encoding: c.encoding,
                framing: Some(c.framing),
                line_breaks: c.line_breaks,
            },
            backoff: Backoff {
                initial: c.initial_backoff,
                max: c.max_backoff,
            },
        },
    })
}
