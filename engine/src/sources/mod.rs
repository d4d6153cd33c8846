//! Sources: one module per source type behind [`BoundSource`]; [`bind`] is the registry and
//! the one place a listener is bound. A source's tasks run on the shard that bound it and
//! hand each frame to the shard's ingest step ([`crate::shard::ingest`]).
//!
//! Every shard binds every source on the same address (SO_REUSEPORT); shard 0 binds first and
//! resolves port 0. A new source type is a new module here implementing `BoundSource` plus
//! one arm in [`bind`] (and its config type).
//!
//! Invariants: a source's tasks run only on its shard's thread; what they share across
//! shards is the connection limits and memory budget (touched at accept and close) and the
//! counters (relaxed atomics, once per read batch). A connection that cannot append stops
//! reading: TCP backpressure. On stop, each task takes in what the kernel already holds.

pub mod connection;
pub mod limits;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::sync::Gate;

use crate::config::SourceMode;
use crate::metrics::SourceCounters;
use crate::shard::{Shard, Stopper};
use limits::{ConnectionLimits, ConnectionMemory};

/// A source as a shard runs it (address already resolved by the first shard).
#[derive(Debug, Clone)]
pub struct SourceSpec {
    pub name: String,
    pub mode: SourceMode,
    pub address: SocketAddr,
    pub max_frame: usize,
    pub read_buffer: usize,
    pub receive_buffer: usize,
    pub idle_timeout: Duration,
    pub frame_timeout: Duration,
    pub limits: Arc<ConnectionLimits>,
    /// Every connection's read buffer counts against this (`max_connection_memory`).
    pub memory: Arc<ConnectionMemory>,
    /// Counters labelled with this source (one set per shard).
    pub counters: Arc<SourceCounters>,
}

/// Why a source could not start on a shard.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {name}: cannot bind {address}: {error}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error("source {name}: cannot read its bound address: {error}")]
    LocalAddress {
        name: String,
        #[source]
        error: std::io::Error,
    },
    #[error("source {name}: the shard is stopping")]
    Stopping { name: String },
}

/// A bound socket a shard serves.
pub trait BoundSource {
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Spawns the source's tasks into `gate`; false when the gate is closing (stopping).
    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool;
}

/// The registry: binds `spec` on this shard.
pub fn bind(spec: &SourceSpec) -> Result<Box<dyn BoundSource>, SourceError> {
    let bound = match spec.mode {
        SourceMode::Tcp => tcp::bind(spec),
        SourceMode::Udp => udp::bind(spec),
    };
    bound.map_err(|error| SourceError::Bind {
        name: spec.name.clone(),
        address: spec.address,
        error,
    })
}

/// Starts serving a bound source; returns what stops it.
pub fn serve(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    spec: SourceSpec,
    bound: Box<dyn BoundSource>,
) -> Result<Rc<SourceRun>, SourceError> {
    let name = spec.name.clone();
    let run = Rc::new(SourceRun {
        spec,
        stop: Stopper::default(),
    });
    if bound.serve(Rc::clone(shard), Rc::clone(&run), gate) {
        Ok(run)
    } else {
        Err(SourceError::Stopping { name })
    }
}

/// What a source's tasks watch: the shard's stop and their own source's.
pub struct SourceRun {
    pub spec: SourceSpec,
    pub stop: Stopper,
}

impl SourceRun {
    pub async fn stopped(&self, shard: &Shard) {
        futures_lite::future::or(shard.stop.stopped(), self.stop.stopped()).await;
    }

    pub fn is_stopping(&self, shard: &Shard) -> bool {
        shard.stop.is_stopping() || self.stop.is_stopping()
    }
}

pub(crate) fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}
