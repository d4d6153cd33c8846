//! Sinks: one module per destination behind [`Sink`]; [`open`] is the registry.
//!
//! A sink only writes what it is handed and says when it is confirmed ([`crate::delivery::Sink`],
//! the contract); reading the WAL, batching, retrying and cursors are [`crate::delivery`]'s,
//! shared by every sink. A sink runs on its output's thread and never touches a shard.
//!
//! A new destination is a new module here with a `Sink` implementation, plus one arm in
//! [`open`] (and its config type in `config::sink`).

mod file;
mod tcp;

use std::time::Duration;

use crate::config::SinkConfig;
use crate::delivery::{Backoff, OpenedSink, RecordEncoding};

/// Why a sink could not be opened (the start or the reload that asked for it fails).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The file sink refused its path (it names the path and why).
    #[error("{0}")]
    File(#[source] std::io::Error),
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
