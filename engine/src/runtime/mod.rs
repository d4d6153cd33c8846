//! Starting, running and stopping Sluice: the main thread's job. This module is the start and
//! stop sequence only; [`control`] runs the control plane in between, [`shards`] and
//! [`outputs`] start and stop those, [`services`] the rest.
//!
//! Order at start: check locked memory → recover every shard's WAL (blocking, before any
//! executor exists) → start one thread per sink → start shard 0, which binds the sources and
//! reports the bound addresses (so port 0 works) → start the other shards on the same
//! addresses (SO_REUSEPORT) → "ready".
//!
//! Order at stop (SIGINT/SIGTERM): shards stop accepting, drain what their sockets hold and
//! commit their WAL → the sinks deliver up to the final watermarks (bounded by
//! `shutdown_timeout`) and persist their cursors → exit 0.
//!
//! Shard directories beyond the configured shard count (after lowering `shards`) are still
//! read by the outputs, so no durable event is stranded.

pub mod control;
pub mod outputs;
mod processing;
pub mod reload;
pub mod services;
pub mod shards;
pub mod sink_bits;

pub use sink_bits::SinkBits;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use storage::{recover_shard, DiskBudget, DurableWatermark, Position, Retention};

use crate::admin::{AdminServer, AdminState, ApiAuth, ApiPolicy};
use crate::config::{ApiListen, Config};
use crate::delivery::ShardLog;
use crate::error::EngineError;
use crate::metrics::{Counters, ShardCounters};
use crate::shard::{self, Balance};
use crate::sources::limits::ConnectionMemory;
use control::{Events, Live, Stop};
use outputs::OutputSet;
use shards::{Listening, ShardSetup};

/// glommio refuses to start an executor below this locked-memory limit.
const MIN_MEMLOCK_BYTES: u64 = 512 << 10;

pub fn shard_dir(data_dir: &Path, shard: usize) -> PathBuf {
    data_dir.join(format!("shard-{shard}"))
}

/// Fails with instructions when the locked-memory limit is below what glommio needs.
pub fn check_memlock() -> Result<(), EngineError> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // Cannot tell; glommio will report it if it matters.
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= MIN_MEMLOCK_BYTES {
        return Ok(());
    }
    Err(EngineError::MemlockTooLow {
        limit_kib: limit.rlim_cur / 1024,
        needed_kib: MIN_MEMLOCK_BYTES / 1024,
    })
}

/// Shard directories already in `data_dir` (`shard-<n>`), highest index + 1.
fn existing_shard_dirs(data_dir: &Path) -> Result<usize, EngineError> {
    let entries = std::fs::read_dir(data_dir).map_err(|source| EngineError::Io {
        op: "list",
        path: data_dir.to_path_buf(),
        source,
    })?;
    let mut count = 0;
    for entry in entries.flatten() {
        if let Some(n) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok())
        {
            count = count.max(n + 1);
        }
    }
    Ok(count)
}

/// Runs until SIGINT/SIGTERM, then drains and returns.
/// SIGHUP and `POST /reload` read `config.files` again (nothing to read on the embedded
/// default).
pub fn run(config: &Config) -> Result<(), EngineError> {
    for warning in &config.warnings {
        tracing::warn!("config: {warning}");
    }
    check_memlock()?;
    std::fs::create_dir_all(&config.data_dir).map_err(|source| EngineError::Io {
        op: "create directory",
        path: config.data_dir.clone(),
        source,
    })?;
    // Absolute: glommio opens directories relative to no directory (dirfd -1).
    let data_dir = &std::fs::canonicalize(&config.data_dir).map_err(|source| EngineError::Io {
        op: "resolve",
        path: config.data_dir.clone(),
        source,
    })?;
    let admin_state = Arc::new(AdminState {
        config_text: config.source_text.clone().into(),
        auth: api_auth(config, data_dir)?.into(),
        ..AdminState::default()
    });
    let admin = start_admin(config, &admin_state)?;
    let result = run_with(config, data_dir, &admin_state, admin.as_ref());
    if let Some(server) = admin {
        server.stop();
    }
    result
}

/// The configured API token, or a fresh random one written to `data_dir/api.token` (0600).
fn api_auth(config: &Config, data_dir: &Path) -> Result<ApiAuth, EngineError> {
    if let Some(token) = &config.api.token {
        return Ok(ApiAuth::configured(token.clone()));
    }
    if config.api.address == ApiListen::Off {
        return Ok(ApiAuth::default());
    }
    let token = crate::admin::token::write_generated(data_dir).map_err(|(path, source)| {
        EngineError::Io {
            op: "write the API token",
            path,
            source,
        }
    })?;
    tracing::info!(
        path = %data_dir.join(crate::admin::token::TOKEN_FILE).display(),
        "admin API token written (readable by Sluice's user only)"
    );
    Ok(ApiAuth::generated(token))
}

fn start_admin(
    config: &Config,
    state: &Arc<AdminState>,
) -> Result<Option<AdminServer>, EngineError> {
    match config.api.address {
        ApiListen::Off => Ok(None),
        ApiListen::On(address) => AdminServer::start(address, Arc::clone(state))
            .map(Some)
            .map_err(EngineError::Admin),
    }
}

/// Every shard's WAL, recovered (blocking, before any executor exists), as the outputs read
/// them; and where each shard's writer starts.
fn recover_logs(
    config: &Config,
    data_dir: &Path,
    budget: &Arc<DiskBudget>,
) -> Result<(Vec<ShardLog>, Vec<storage::WalStart>), EngineError> {
    let log_count = config.shard_count().max(existing_shard_dirs(data_dir)?);
    // Deleting delivered segments happens here, not on the outputs' delivery path.
    let reaper = storage::Reaper::start().map_err(|source| EngineError::Io {
        op: "start thread",
        path: "wal-reaper".into(),
        source,
    })?;
    let sinks: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
    let mut logs = Vec::with_capacity(log_count);
    let mut starts = Vec::with_capacity(log_count);
    for id in 0..log_count {
        let dir = shard_dir(data_dir, id);
        let report = recover_shard(&dir, config.wal.recovery)?;
        // Everything recovered is readable now, before the shard's writer has a segment
        // (it may have to wait for the disk budget, which only delivery can free).
        let watermark = Arc::new(DurableWatermark::new());
        watermark.publish(Position {
            segment: report.next_segment(),
            offset: 0,
        });
        tracing::info!(
            shard = id,
            segments = report.segments.len(),
            tail_records = report.tail_records,
            "WAL recovered"
        );
        starts.push(report.start());
        let mut retention =
            Retention::new(&dir, &sinks, Arc::clone(budget)).with_reaper(reaper.clone());
        let ready = open_ready_segments(config, &dir, budget, &reaper)?;
        if let Some(ready) = &ready {
            retention = retention.with_ready(Arc::clone(ready));
            ready.request_fill();
        }
        logs.push(ShardLog {
            id,
            dir,
            watermark,
            retention: Arc::new(retention),
            next_record_id: Arc::new(AtomicU64::new(report.next_record_id)),
            ready,
            fast_path: storage::FastPath::new(
                config.wal.fast_path_commits,
                usize::try_from(config.wal.fast_path_bytes).unwrap_or(usize::MAX),
            ),
        });
    }
    Ok((logs, starts))
}

/// A shard's ready segment files (`wal.ready_segments`), refilled on the `wal-reaper` thread.
fn open_ready_segments(
    config: &Config,
    dir: &Path,
    budget: &Arc<DiskBudget>,
    reaper: &std::sync::mpsc::Sender<storage::retention::Reap>,
) -> Result<Option<Arc<storage::ReadySegments>>, EngineError> {
    let target = config.wal.ready_segments;
    // With none wanted, files left by an earlier config are removed (and their space freed).
    let ready = storage::ReadySegments::open(
        dir,
        config.wal.segment_size,
        target,
        Arc::clone(budget),
        Some(reaper.clone()),
    )?;
    Ok((target > 0).then_some(ready))
}

/// What runs once started, and how each part stops.
struct Running {
    shards: Vec<shards::RunningShard>,
    senders: Vec<shard::CommandSender>,
    compactor: Option<services::CompactorThread>,
    outputs: OutputSet,
    listening: Listening,
}

fn run_with(
    config: &Config,
    data_dir: &Path,
    admin_state: &Arc<AdminState>,
    admin: Option<&AdminServer>,
) -> Result<(), EngineError> {
    let budget = services::disk_budget(config, data_dir, config.shard_count())?;
    let (logs, wal_starts) = recover_logs(config, data_dir, &budget)?;
    let counters = register_counters(config, admin_state, &logs, &budget);
    let mut bits = SinkBits::load(data_dir)?;
    let compiled = processing::prepare(config, data_dir, &mut bits)?;
    let (exits_tx, exits) = crossbeam_channel::unbounded();
    let (retired_tx, retired) = crossbeam_channel::unbounded();
    let start = Start {
        config,
        data_dir,
        logs: &logs,
        wal_starts: &wal_starts,
        counters,
        exits: &exits_tx,
        bits: &bits,
        compiled: &compiled,
    };
    let (running, signals, signal_handle) = start_with_signals(&start, retired_tx)?;
    let (reload_tx, reloads) = crossbeam_channel::bounded(4);
    let _ = admin_state.reloads.set(reload_tx);
    announce_ready(admin_state, &running.listening, counters, admin);
    let Running {
        shards,
        senders,
        compactor,
        outputs,
        listening,
    } = running;
    let mut live = Live {
        config: config.clone(),
        policy: ApiPolicy::from_startup(config),
        outputs,
        shards: senders,
        admin_state: Arc::clone(admin_state),
        reloads_done: 0,
        memory: Arc::clone(&counters.connection_memory),
        data_dir: data_dir.to_path_buf(),
        bits,
        tls: tls_of(&listening),
    };
    let events = Events {
        signals,
        exits,
        reloads,
        retired,
    };
    let stopped = live.wait_for_stop(&events, counters);
    signal_handle.close();
    admin_state.ready.store(false, Ordering::Release);
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: draining sockets, committing the WAL, delivering");
    let failures = shards::stop(shards, &live.shards);
    services::stop_compactor(compactor);
    live.outputs
        .stop_all(Instant::now() + live.config.shutdown_timeout);
    let summary = counters.summary(admin_state.metrics.start_time_seconds);
    tracing::info!(summary = %summary, "stopped");
    if let Stop::ShardExited(id) = stopped {
        tracing::error!(shard = id, "a shard stopped on its own");
    }
    failures.into_iter().next().map_or(Ok(()), Err)
}

/// Installs the signal handlers, then starts everything: a signal from then on (an
/// operator's, or stdin's end stopping Sluice) is handled once ready, never fatal.
fn start_with_signals(
    start: &Start<'_>,
    retired: crossbeam_channel::Sender<String>,
) -> Result<
    (
        Running,
        crossbeam_channel::Receiver<i32>,
        signal_hook::iterator::Handle,
    ),
    EngineError,
> {
    let (signals, handle) = forward_signals()?;
    match start_all(start, retired) {
        Ok(running) => Ok((running, signals, handle)),
        Err(e) => {
            handle.close();
            Err(e)
        }
    }
}

/// The sources that have TLS, by name (a reload loads their certificates again).
fn tls_of(
    listening: &Listening,
) -> std::collections::BTreeMap<String, Arc<crate::sources::tls::TlsServer>> {
    listening
        .iter()
        .filter_map(|l| Some((l.name.clone(), Arc::clone(l.tls.as_ref()?))))
        .collect()
}

/// Everything runs: `/ready` answers 200, the ready line is logged, systemd is told.
fn announce_ready(
    admin_state: &AdminState,
    listening: &Listening,
    counters: &Counters,
    admin: Option<&AdminServer>,
) {
    admin_state.ready.store(true, Ordering::Release);
    log_ready(listening, counters.shards.len(), admin.map(|a| a.address));
    notify_systemd(&[sd_notify::NotifyState::Ready]);
}

/// The counters every part publishes into, registered where `/metrics` reads them.
fn register_counters<'a>(
    config: &Config,
    admin_state: &'a AdminState,
    logs: &[ShardLog],
    budget: &Arc<DiskBudget>,
) -> &'a Counters {
    admin_state.metrics.counters.get_or_init(|| Counters {
        shards: (0..config.shard_count())
            .map(|_| Arc::new(ShardCounters::default()))
            .collect(),
        next_record_ids: logs.iter().map(|l| Arc::clone(&l.next_record_id)).collect(),
        outputs: Default::default(),
        sources: Default::default(),
        transforms: Default::default(),
        budget: Arc::clone(budget),
        kernel_udp_drops: Default::default(),
        connection_memory: ConnectionMemory::new(config.max_connection_memory),
    })
}

/// What starting needs.
struct Start<'a> {
    config: &'a Config,
    data_dir: &'a Path,
    logs: &'a [ShardLog],
    wal_starts: &'a [storage::WalStart],
    counters: &'a Counters,
    exits: &'a crossbeam_channel::Sender<usize>,
    bits: &'a SinkBits,
    compiled: &'a crate::config::Compiled,
}

/// Starts the outputs, the compactor and the shards, in that order; what started is stopped
/// again when a later part fails.
fn start_all(
    start: &Start<'_>,
    retired: crossbeam_channel::Sender<String>,
) -> Result<Running, EngineError> {
    let (config, counters) = (start.config, start.counters);
    let mut outputs = OutputSet::new(start.data_dir, start.logs, retired);
    for (name, sink) in &config.sinks {
        let bit = start.bits.bit(name).unwrap_or(0);
        if let Err(e) = outputs.start(name, sink, bit, counters) {
            outputs.stop_all(Instant::now());
            return Err(e);
        }
    }
    let compactor = match services::start_compactor(config, start.logs) {
        Ok(c) => c,
        Err(e) => {
            outputs.stop_all(Instant::now());
            return Err(e);
        }
    };
    match start_shards(start, &outputs) {
        Ok((shards, senders, listening)) => {
            *write_lock(&counters.sources) = listening
                .iter()
                .map(|l| (l.name.clone(), Arc::clone(&l.counters)))
                .collect();
            Ok(Running {
                shards,
                senders,
                compactor,
                outputs,
                listening,
            })
        }
        Err(e) => {
            services::stop_compactor(compactor);
            outputs.stop_all(Instant::now());
            Err(e)
        }
    }
}

type StartedShards = (
    Vec<shards::RunningShard>,
    Vec<shard::CommandSender>,
    Listening,
);

fn start_shards(start: &Start<'_>, outputs: &OutputSet) -> Result<StartedShards, EngineError> {
    let counters = start.counters;
    let mut senders = Vec::with_capacity(counters.shards.len());
    let mut receivers = Vec::with_capacity(counters.shards.len());
    for _ in 0..counters.shards.len() {
        let (tx, rx) = shard::command_channel().map_err(|source| EngineError::Io {
            op: "create a shard's command channel",
            path: PathBuf::new(),
            source,
        })?;
        senders.push(tx);
        receivers.push(rx);
    }
    let balance = Arc::new(Balance::new(senders.clone()));
    let transform_counters = processing::register_counters(start.compiled, counters);
    let processing = (0..counters.shards.len())
        .map(|_| processing::for_shard(start.compiled, &transform_counters))
        .collect::<Result<Vec<_>, _>>()?;
    let setup = ShardSetup {
        config: start.config,
        data_dir: start.data_dir,
        logs: start.logs,
        wal_starts: start.wal_starts,
        counters: &counters.shards,
        wakers: &outputs.wakers,
        exits: start.exits,
        budget: &counters.budget,
        balance: &balance,
        memory: &counters.connection_memory,
    };
    let (running, listening) = shards::start(&setup, &senders, receivers, processing)?;
    Ok((running, senders, listening))
}

/// SIGINT, SIGTERM and SIGHUP, forwarded to a channel the main loop waits on.
fn forward_signals() -> Result<
    (
        crossbeam_channel::Receiver<i32>,
        signal_hook::iterator::Handle,
    ),
    EngineError,
> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let io_error = |source| EngineError::Io {
        op: "install signal handlers",
        path: PathBuf::new(),
        source,
    };
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(io_error)?;
    let handle = signals.handle();
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if tx.send(signal).is_err() {
                    return;
                }
            }
        })
        .map_err(io_error)?;
    Ok((rx, handle))
}

/// Tells systemd (`Type=notify`) about a state change; a no-op outside systemd.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn write_lock<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// The line tests and operators wait for: every shard bound, every WAL recovered, outputs and
/// the API running.
fn log_ready(sources: &Listening, shards: usize, api: Option<SocketAddr>) {
    let mut listening: Vec<String> = sources
        .iter()
        .map(|l| match l.mode.listens() {
            true => format!("{}={}://{}", l.name, l.mode.scheme(), l.address),
            false => format!("{}={}", l.name, l.mode.scheme()),
        })
        .collect();
    if let Some(api) = api {
        listening.push(format!("api=http://{api}"));
    }
    tracing::info!(shards, "ready; listening on {}", listening.join(" "));
}
