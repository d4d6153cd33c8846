//! Starting and stopping the shards: one pinned glommio executor each.

use std::net::SocketAddr;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use storage::DiskBudget;

use super::check_memlock;
use crate::config::{Config, SourceConfig, SourceMode};
use crate::delivery::ShardLog;
use crate::error::EngineError;
use crate::metrics::{ShardCounters, SourceCounters};
use crate::shard::{
    self, Balance, Bound, CommandReceiver, CommandSender, OutputWakers, ShardCommand, ShardError,
    ShardSpec,
};
use crate::sources::limits::ConnectionMemory;
use crate::sources::tls::TlsServer;
use crate::sources::{SourceError, SourceSpec, SpecContext};

/// Memory glommio sets aside per shard for io_uring buffers (Sluice uses few).
const SHARD_IO_MEMORY: usize = 1 << 20;

/// A source as the shards bound it.
pub(super) struct ListeningSource {
    pub name: String,
    pub mode: SourceMode,
    /// Port 0 resolved.
    pub address: SocketAddr,
    pub counters: Arc<SourceCounters>,
    /// Its certificates (a reload loads them again).
    pub tls: Option<Arc<TlsServer>>,
}

/// What the sources are bound to.
pub(super) type Listening = Vec<ListeningSource>;

pub(super) struct RunningShard {
    id: usize,
    handle: glommio::ExecutorJoinHandle<Result<(), ShardError>>,
}

/// What every shard is started with, besides its own command receiver.
pub(super) struct ShardSetup<'a> {
    pub config: &'a Config,
    pub data_dir: &'a std::path::Path,
    pub logs: &'a [ShardLog],
    pub wal_starts: &'a [storage::WalStart],
    pub counters: &'a [Arc<ShardCounters>],
    pub wakers: &'a Arc<OutputWakers>,
    /// Each shard sends its id here when its executor ends.
    pub exits: &'a crossbeam_channel::Sender<usize>,
    pub budget: &'a Arc<DiskBudget>,
    pub balance: &'a Arc<Balance>,
    pub memory: &'a Arc<ConnectionMemory>,
}

/// A source as `shards` shards run it.
pub(super) fn source_spec(
    name: &str,
    s: &SourceConfig,
    shards: usize,
    memory: &Arc<ConnectionMemory>,
    data_dir: &std::path::Path,
) -> Result<SourceSpec, SourceError> {
    let context = SpecContext {
        shards,
        memory,
        data_dir,
    };
    s.settings().spec(name, &context)
}

/// Starts every shard in order; shard 0 binds first and every other shard binds exactly what
/// it got (port 0 → the chosen port). On a failure the started shards are stopped again.
pub(super) fn start(
    setup: &ShardSetup<'_>,
    senders: &[CommandSender],
    receivers: Vec<CommandReceiver>,
    processing: Vec<crate::shard::Processing>,
) -> Result<(Vec<RunningShard>, Listening), EngineError> {
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let mut sources: Vec<SourceSpec> = setup
        .config
        .sources
        .iter()
        .map(|(name, s)| source_spec(name, s, setup.counters.len(), setup.memory, setup.data_dir))
        .collect::<Result<_, _>>()?;
    if let [only] = sources.as_mut_slice() {
        only.only_source = true;
    }
    let mut running = Vec::with_capacity(receivers.len());
    for (id, (commands, processing)) in receivers.into_iter().zip(processing).enumerate() {
        let placement = match cpus.get(id % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let spec = shard_spec(setup, id, &sources, commands, processing);
        let started = start_one(spec, placement, setup.exits);
        let (shard, bound) = match started {
            Ok(s) => s,
            Err(e) => {
                stop(running, senders);
                return Err(e);
            }
        };
        if id == 0 {
            for (source, addr) in sources.iter_mut().zip(&bound) {
                source.address = *addr;
            }
        }
        running.push(shard);
    }
    // Only now every shard listens: senders connecting after this spread over all of them.
    let listening = sources
        .iter()
        .map(|s| ListeningSource {
            name: s.name.clone(),
            mode: s.mode,
            address: s.address,
            counters: Arc::clone(&s.counters),
            tls: s.tls.clone(),
        })
        .collect();
    Ok((running, listening))
}

fn shard_spec(
    setup: &ShardSetup<'_>,
    id: usize,
    sources: &[SourceSpec],
    commands: CommandReceiver,
    processing: crate::shard::Processing,
) -> ShardSpec {
    let log = &setup.logs[id];
    ShardSpec {
        id,
        dir: log.dir.clone(),
        wal_start: setup.wal_starts[id],
        wal: shard::WalSettings {
            buffer_size: setup.config.wal.buffer_size,
            segment_size: setup.config.wal.segment_size,
            fsync: setup.config.wal.fsync,
            io: setup.config.wal.io,
            commit_compression: setup.config.wal.commit_compression(),
            commits_in_flight: setup.config.wal.commits_in_flight,
        },
        sources: sources.to_vec(),
        watermark: Arc::clone(&log.watermark),
        counters: Arc::clone(&setup.counters[id]),
        wakers: Arc::clone(setup.wakers),
        budget: Arc::clone(setup.budget),
        ready: log.ready.clone(),
        fast_path: Arc::clone(&log.fast_path),
        next_record_id: Arc::clone(&log.next_record_id),
        commands,
        balance: Arc::clone(setup.balance),
        processing,
    }
}

/// Starts one shard's executor and waits until it bound its sources (or failed to).
fn start_one(
    spec: ShardSpec,
    placement: Placement,
    exits: &crossbeam_channel::Sender<usize>,
) -> Result<(RunningShard, Bound), EngineError> {
    let id = spec.id;
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let exits = exits.clone();
    let handle = LocalExecutorBuilder::new(placement)
        .name(&format!("shard-{id}"))
        .io_memory(SHARD_IO_MEMORY)
        .spawn(move || async move {
            let result = shard::run(spec, bound_tx).await;
            let _ = exits.send(id);
            result
        })
        .map_err(|e| executor_error(id, e))?;
    let bound = match bound_rx.recv() {
        Ok(Ok(bound)) => bound,
        Ok(Err(error)) => {
            let _ = handle.join();
            return Err(EngineError::Shard { shard: id, error });
        }
        Err(_) => {
            let _ = handle.join();
            return Err(EngineError::ShardEnded { shard: id });
        }
    };
    Ok((RunningShard { id, handle }, bound))
}

fn executor_error(shard: usize, error: glommio::GlommioError<()>) -> EngineError {
    if error.to_string().contains("memlock") {
        if let Err(e) = check_memlock() {
            return e;
        }
    }
    EngineError::Executor { shard, error }
}

/// Tells every shard to stop (drain its connections, commit its WAL) and waits for each;
/// returns what went wrong.
pub(super) fn stop(shards: Vec<RunningShard>, senders: &[CommandSender]) -> Vec<EngineError> {
    for sender in senders {
        let _ = sender.send(ShardCommand::Stop);
    }
    let mut failures = Vec::new();
    for shard in shards {
        match shard.handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(EngineError::Shard {
                shard: shard.id,
                error,
            }),
            Err(_) => failures.push(EngineError::ShardEnded { shard: shard.id }),
        }
    }
    failures
}
