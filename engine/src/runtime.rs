//! Starting, running and stopping Sluice: the main thread's job (the control plane).
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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use storage::compress::{CompactShard, Compactor};
use storage::{recover_shard, DiskBudget, DurableWatermark, Position, Retention};

use crate::admin::{
    AdminServer, AdminState, ApiAuth, ApiPolicy, Counters, ReloadAccepted, ReloadRefused,
    ReloadRequest,
};
use crate::config::{ApiListen, Compression, Config, SinkConfig, SourceConfig, SourceMode};
use crate::error::EngineError;
use crate::limits::{ConnectionLimits, ConnectionMemory};
use crate::metrics::{shard_summary, OutputCounters, ShardCounters, SourceCounters};
use crate::outputs::{open_sink, run_output, OutputControl, OutputSpec, ShardLog};
use crate::shard::{self, OutputWakers, ShardSpec, SourceSpec};

/// glommio refuses to start an executor below this locked-memory limit.
const MIN_MEMLOCK_BYTES: u64 = 512 << 10;
/// Memory glommio sets aside per shard for io_uring buffers (Sluice uses few).
const SHARD_IO_MEMORY: usize = 1 << 20;

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

struct RunningShard {
    id: usize,
    handle: glommio::ExecutorJoinHandle<Result<(), String>>,
}

/// Runs until SIGINT/SIGTERM, then drains and returns.
/// `config_path`: the file `config` came from (SIGHUP and `POST /reload` re-read it); `None`
/// for the embedded default.
pub fn run(config: &Config, config_path: Option<&Path>) -> Result<(), EngineError> {
    check_memlock()?;
    let shard_count = config.shard_count();
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
    let result = run_with(
        config,
        config_path,
        data_dir,
        shard_count,
        &admin_state,
        admin.as_ref(),
    );
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

fn run_with(
    config: &Config,
    config_path: Option<&Path>,
    data_dir: &Path,
    shard_count: usize,
    admin_state: &Arc<AdminState>,
    admin: Option<&AdminServer>,
) -> Result<(), EngineError> {
    let log_count = shard_count.max(existing_shard_dirs(data_dir)?);
    let budget = disk_budget(config, data_dir, shard_count)?;
    // Deleting delivered segments happens here, not on the outputs' delivery path.
    let reaper = storage::Reaper::start().map_err(|source| EngineError::Io {
        op: "start thread",
        path: "wal-reaper".into(),
        source,
    })?;
    let mut logs = Vec::with_capacity(log_count);
    let mut wal_starts = Vec::with_capacity(log_count);
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
        wal_starts.push(report.start());
        let sinks: Vec<&str> = config.sinks.keys().map(String::as_str).collect();
        let retention =
            Arc::new(Retention::new(&dir, &sinks, Arc::clone(&budget)).with_reaper(reaper.clone()));
        logs.push(ShardLog {
            id,
            dir,
            watermark,
            retention,
            next_record_id: Arc::new(AtomicU64::new(report.next_record_id)),
        });
    }

    let shard_counters: Vec<_> = (0..shard_count)
        .map(|_| Arc::new(ShardCounters::default()))
        .collect();
    let counters = admin_state.parts.get_or_init(|| Counters {
        shards: shard_counters.clone(),
        next_record_ids: logs.iter().map(|l| Arc::clone(&l.next_record_id)).collect(),
        outputs: Default::default(),
        sources: Default::default(),
        budget: Arc::clone(&budget),
        kernel_udp_drops: Default::default(),
        connection_memory: ConnectionMemory::new(config.max_connection_memory),
    });
    let mut outputs = OutputSet::new(&logs);
    for (name, sink) in &config.sinks {
        if let Err(e) = outputs.start(name, sink, counters) {
            outputs.stop_all(Instant::now());
            return Err(e);
        }
    }
    let compactor = match start_compactor(config, &logs) {
        Ok(c) => c,
        Err(e) => {
            outputs.stop_all(Instant::now());
            return Err(e);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (exit_tx, exit_rx) = mpsc::channel::<usize>();
    let (command_txs, command_rxs): (Vec<_>, Vec<_>) = (0..shard_count)
        .map(|_| crossbeam_channel::unbounded())
        .unzip();
    let balance = Arc::new(shard::Balance::new(command_txs.clone()));
    let memory = Arc::clone(&counters.connection_memory);
    let started = start_shards(
        config,
        &logs,
        &wal_starts,
        &shard_counters,
        &stop,
        &outputs.wakers,
        &exit_tx,
        &budget,
        command_rxs,
        &balance,
        &memory,
    );
    let (shards, listening) = match started {
        Ok(s) => s,
        Err(e) => {
            stop.store(true, Ordering::Release);
            stop_compactor(compactor);
            outputs.stop_all(Instant::now());
            return Err(e);
        }
    };

    *write_lock(&counters.sources) = listening
        .iter()
        .map(|(name, _, _, c)| (name.clone(), Arc::clone(c)))
        .collect();
    // Installed before "ready": a signal sent right after it is handled, not fatal.
    let mut signals = install_signal_handlers()?;
    let (reload_tx, reload_rx) = crossbeam_channel::bounded(4);
    let _ = admin_state.reloads.set(reload_tx);
    admin_state.ready.store(true, Ordering::Release);
    log_ready(&listening, shard_count, admin.map(|a| a.address));
    notify_systemd(&[sd_notify::NotifyState::Ready]);

    let mut live = Live {
        config: config.clone(),
        config_path: config_path.map(Path::to_path_buf),
        policy: ApiPolicy::from_startup(config),
        outputs,
        shard_commands: command_txs,
        admin_state: Arc::clone(admin_state),
        reloads_done: 0,
        memory: Arc::clone(&memory),
    };
    let early_exit = live.wait_for_stop(&mut signals, &exit_rx, &reload_rx, counters)?;
    admin_state.ready.store(false, Ordering::Release);
    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("stopping: draining sockets, committing the WAL, delivering");
    stop.store(true, Ordering::Release);
    let mut failures = Vec::new();
    for shard in shards {
        match shard.handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => failures.push(EngineError::Shard {
                shard: shard.id,
                message,
            }),
            Err(e) => failures.push(EngineError::Shard {
                shard: shard.id,
                message: e.to_string(),
            }),
        }
    }
    stop_compactor(compactor);
    let deadline = Instant::now() + live.config.shutdown_timeout;
    live.outputs.stop_all(deadline);
    tracing::info!(summary = %shard_summary(&shard_counters, &budget), "stopped");
    if let Some(id) = early_exit {
        tracing::error!(shard = id, "a shard stopped on its own");
    }
    match failures.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn install_signal_handlers() -> Result<signal_hook::iterator::Signals, EngineError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|source| {
        EngineError::Io {
            op: "install signal handlers",
            path: PathBuf::new(),
            source,
        }
    })
}

/// What the main thread changes while running: the config, the outputs, the sources (through
/// the shards' command channels).
struct Live {
    config: Config,
    config_path: Option<PathBuf>,
    /// What a posted config may do (from the startup config; reloads do not widen it).
    policy: ApiPolicy,
    outputs: OutputSet,
    shard_commands: Vec<crossbeam_channel::Sender<shard::ShardCommand>>,
    admin_state: Arc<AdminState>,
    /// Reloads applied so far (numbers them in `GET /reload`).
    reloads_done: u64,
    /// The connection buffer budget new sources share.
    memory: Arc<ConnectionMemory>,
}

/// How often freed heap memory is handed back to the system (after a flood of connections
/// closed, say).
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// Gives the allocator's free memory back to the system (every thread's arena).
fn return_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Longest a reload waits for a shard to take a source command.
const SHARD_COMMAND_WAIT: Duration = Duration::from_secs(10);

impl Live {
    /// Blocks until SIGINT/SIGTERM (→ `None`) or a shard exits on its own (→ its id); applies
    /// reloads (SIGHUP, the API), logs the status line every `status_interval` and pets the
    /// systemd watchdog when it is enabled.
    fn wait_for_stop(
        &mut self,
        signals: &mut signal_hook::iterator::Signals,
        exits: &mpsc::Receiver<usize>,
        reloads: &crossbeam_channel::Receiver<ReloadRequest>,
        counters: &Counters,
    ) -> Result<Option<usize>, EngineError> {
        use signal_hook::consts::SIGHUP;
        let mut status = StatusLine::new(counters);
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let mut last_pet = Instant::now();
        let mut last_trim = Instant::now();
        loop {
            for signal in signals.pending() {
                if signal == SIGHUP {
                    tracing::info!("SIGHUP: reloading the config file");
                    let _ = self.reload(None, counters);
                } else {
                    tracing::info!(signal, "signal received");
                    return Ok(None);
                }
            }
            if let Ok(id) = exits.try_recv() {
                return Ok(Some(id));
            }
            while let Ok(request) = reloads.try_recv() {
                let verdict = self.reload(request.text, counters);
                let _ = request.reply.send(verdict);
            }
            if self.outputs.tick(counters) {
                self.publish_reload_status("done");
            }
            status.tick(self.config.status_interval, counters);
            if last_trim.elapsed() >= MEMORY_TRIM_INTERVAL {
                return_free_memory();
                last_trim = Instant::now();
            }
            if watchdog.is_some_and(|every| last_pet.elapsed() >= every) {
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
                last_pet = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Applies a new config (`text`, or the file again) or refuses it; the running config
    /// continues when refused. See [`crate::reload`] for what changes how. Never waits for a
    /// sink to drain: removed and changed sinks drain in the background (`OutputSet::tick`).
    fn reload(
        &mut self,
        text: Option<String>,
        counters: &Counters,
    ) -> Result<ReloadAccepted, ReloadRefused> {
        let result = self.try_reload(text, counters);
        match &result {
            Ok(done) => {
                tracing::info!("{}", done.summary);
                self.reloads_done += 1;
                let state = if done.draining {
                    "applied, sinks draining"
                } else {
                    "done"
                };
                self.publish_reload_status(state);
            }
            Err(why) => {
                tracing::error!(error = %why, "reload refused: the running config continues")
            }
        }
        result
    }

    fn try_reload(
        &mut self,
        text: Option<String>,
        counters: &Counters,
    ) -> Result<ReloadAccepted, ReloadRefused> {
        let posted = text.is_some();
        let new = match (text, &self.config_path) {
            (Some(text), _) => Config::parse(&text, "the posted config"),
            (None, Some(path)) => Config::load(path),
            (None, None) => {
                return Err(ReloadRefused::Invalid(
                    "running on the embedded default config: there is no file to reload".into(),
                ))
            }
        }
        .map_err(|e| ReloadRefused::Invalid(e.to_string()))?;
        if posted {
            self.policy
                .check(&self.config, &new)
                .map_err(ReloadRefused::Forbidden)?;
        }
        let plan = crate::reload::plan(&self.config, &new).map_err(ReloadRefused::Invalid)?;
        self.check_new_addresses(&plan)
            .map_err(ReloadRefused::Invalid)?;
        self.apply(&plan, &new, counters)
            .map_err(ReloadRefused::Unavailable)?;
        let summary = plan.describe_with(&self.config, &new);
        *write_lock(&self.admin_state.config_text) = new.source_text.clone();
        if let Some(token) = &new.api.token {
            *write_lock(&self.admin_state.auth) = ApiAuth::configured(token.clone());
        }
        self.config = new;
        Ok(ReloadAccepted {
            summary,
            draining: self.outputs.draining(),
        })
    }

    fn apply(
        &mut self,
        plan: &crate::reload::Plan,
        new: &Config,
        counters: &Counters,
    ) -> Result<(), String> {
        for name in &plan.sources_removed {
            self.remove_source(name)?;
            write_lock(&counters.sources).retain(|(n, _)| n != name);
        }
        for (name, source) in &plan.sources_added {
            let source_counters = self.add_source(name, source)?;
            write_lock(&counters.sources).push((name.clone(), source_counters));
        }
        let deadline = Instant::now() + new.shutdown_timeout;
        for name in &plan.sinks_removed {
            let gone = !new.sinks.contains_key(name);
            self.outputs.retire(name, deadline, gone);
        }
        for (name, sink) in &plan.sinks_added {
            self.outputs
                .start(name, sink, counters)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// `GET /reload`: the last reload's number, state and the sinks still draining.
    fn publish_reload_status(&self, state: &str) {
        let draining = self.outputs.draining_names();
        let status = if draining.is_empty() {
            format!("reload {}: {state}", self.reloads_done)
        } else {
            format!(
                "reload {}: {state}; draining: {}",
                self.reloads_done,
                draining.join(",")
            )
        };
        *write_lock(&self.admin_state.reload_status) = status;
    }

    /// A new source address another process holds would fail half-way through a reload:
    /// refuse it before anything changes.
    fn check_new_addresses(&self, plan: &crate::reload::Plan) -> Result<(), String> {
        let ours: Vec<SocketAddr> = self.config.sources.values().map(|s| s.address).collect();
        for (name, source) in &plan.sources_added {
            if source.address.port() == 0 || ours.contains(&source.address) {
                continue;
            }
            let free = match source.mode {
                SourceMode::Tcp => std::net::TcpListener::bind(source.address).map(drop),
                SourceMode::Udp => std::net::UdpSocket::bind(source.address).map(drop),
            };
            free.map_err(|e| format!("sources.{name}.address {}: {e}", source.address))?;
        }
        Ok(())
    }

    /// Sends shard `shard` the command `make` builds around a reply channel and waits for
    /// the reply (bounded by `SHARD_COMMAND_WAIT`); `what` names the command in errors.
    fn ask_shard<T>(
        &self,
        shard: usize,
        what: &str,
        make: impl FnOnce(crossbeam_channel::Sender<T>) -> shard::ShardCommand,
    ) -> Result<T, String> {
        let commands = self
            .shard_commands
            .get(shard)
            .ok_or_else(|| format!("no shard {shard}"))?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        commands
            .send(make(reply))
            .map_err(|_| format!("shard {shard} is not running"))?;
        answer
            .recv_timeout(SHARD_COMMAND_WAIT)
            .map_err(|_| format!("shard {shard} did not {what}"))
    }

    fn remove_source(&self, name: &str) -> Result<(), String> {
        for shard in 0..self.shard_commands.len() {
            self.ask_shard(shard, &format!("remove source {name}"), |reply| {
                shard::ShardCommand::RemoveSource {
                    name: name.to_string(),
                    reply,
                }
            })?;
        }
        Ok(())
    }

    /// Binds on shard 0 first (resolving port 0), then on the others at the same address.
    fn add_source(&self, name: &str, source: &SourceConfig) -> Result<Arc<SourceCounters>, String> {
        let mut spec = source_spec(name, source, self.shard_commands.len(), &self.memory);
        for shard in 0..self.shard_commands.len() {
            let command_spec = spec.clone();
            let address = self.ask_shard(shard, &format!("add source {name}"), |reply| {
                shard::ShardCommand::AddSource {
                    spec: command_spec,
                    reply,
                }
            })??;
            spec.address = address;
            if shard == 0 {
                tracing::info!(source = %name, %address, "source listening");
            }
        }
        Ok(spec.counters)
    }
}

/// The data directory's disk budget; warns when `max_disk` cannot give every shard a segment
/// plus one to rotate into.
fn disk_budget(
    config: &Config,
    data_dir: &Path,
    shards: usize,
) -> Result<Arc<DiskBudget>, EngineError> {
    let wal = &config.wal;
    config.check_min_free_disk(data_dir).map_err(|message| {
        EngineError::Config(crate::config::ConfigError::Invalid {
            origin: "the config".into(),
            key: "wal.min_free_disk".into(),
            message,
        })
    })?;
    if let Some(max) = wal.max_disk {
        let needed = (shards as u64 + 1) * wal.segment_size;
        if max < needed {
            tracing::warn!(max_disk = max, needed, "wal.max_disk is below (shards + 1) × segment_size: some shards will block until outputs free space");
        }
    }
    let budget = DiskBudget::new(
        data_dir,
        wal.max_disk,
        Some(wal.min_free_disk),
        wal.when_full,
    )?;
    Ok(Arc::new(budget))
}

/// The background thread compressing backlog segments (none with `compression = "none"`).
struct CompactorThread {
    stop: crossbeam_channel::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

const COMPACT_INTERVAL: Duration = Duration::from_secs(1);

fn start_compactor(
    config: &Config,
    logs: &[ShardLog],
) -> Result<Option<CompactorThread>, EngineError> {
    if config.wal.compression == Compression::None {
        return Ok(None);
    }
    let shards = logs
        .iter()
        .map(|l| CompactShard {
            watermark: Arc::clone(&l.watermark),
            retention: Arc::clone(&l.retention),
        })
        .collect();
    let mut compactor = Compactor::new(
        shards,
        config.wal.compression_level,
        config.wal.compress_after,
    );
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let handle = std::thread::Builder::new()
        .name("wal-compress".into())
        .spawn(move || loop {
            let stop_now = || !stopped.is_empty();
            if let Err(e) = compactor.run_once(&stop_now) {
                tracing::warn!(error = %e, "compressing backlog segments failed; retrying later");
            }
            match stopped.recv_timeout(COMPACT_INTERVAL) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
        .map_err(|source| EngineError::Io {
            op: "start thread",
            path: "wal-compress".into(),
            source,
        })?;
    Ok(Some(CompactorThread { stop, handle }))
}

fn stop_compactor(compactor: Option<CompactorThread>) {
    if let Some(c) = compactor {
        let _ = c.stop.send(());
        if c.handle.join().is_err() {
            tracing::error!("compression thread panicked");
        }
    }
}

/// The running outputs, one thread each; a reload stops and starts them by name. A removed
/// or changed output drains in the background ("retiring"); a changed one starts again (same
/// name, same cursor) once its old instance has stopped.
struct OutputSet {
    logs: Vec<ShardLog>,
    wakers: Arc<OutputWakers>,
    running: std::collections::BTreeMap<String, RunningOutput>,
    retiring: Vec<Retiring>,
    /// Outputs waiting for their old instance (same name) to finish retiring.
    waiting: std::collections::BTreeMap<String, SinkConfig>,
}

struct Retiring {
    name: String,
    output: RunningOutput,
    /// Gone from the config: stop holding segments back once it stopped.
    forget: bool,
}

struct RunningOutput {
    control: Arc<OutputControl>,
    handle: std::thread::JoinHandle<Result<(), String>>,
    counters: Arc<OutputCounters>,
}

impl OutputSet {
    fn new(logs: &[ShardLog]) -> Self {
        OutputSet {
            logs: logs.to_vec(),
            wakers: Arc::new(OutputWakers::default()),
            running: Default::default(),
            retiring: Vec::new(),
            waiting: Default::default(),
        }
    }

    /// Starts output `name`: it holds WAL segments back from now on, and appears in metrics.
    /// While an old instance of the same name retires, the start waits for it (`tick`).
    fn start(
        &mut self,
        name: &str,
        sink: &SinkConfig,
        registry: &Counters,
    ) -> Result<(), EngineError> {
        if self.retiring.iter().any(|r| r.name == name) {
            for log in &self.logs {
                log.retention.register(name);
            }
            self.waiting.insert(name.to_string(), sink.clone());
            return Ok(());
        }
        let opened = open_sink(sink).map_err(|message| EngineError::Output {
            sink: name.to_string(),
            message,
        })?;
        for log in &self.logs {
            log.retention.register(name);
        }
        let control = Arc::new(OutputControl::default());
        let counters = Arc::new(OutputCounters::new(self.logs.len()));
        let spec = OutputSpec {
            name: name.to_string(),
            config: sink.clone(),
            shards: self.logs.clone(),
            control: Arc::clone(&control),
            counters: Arc::clone(&counters),
        };
        let handle = std::thread::Builder::new()
            .name(format!("sink-{name}"))
            .spawn(move || run_output(spec, opened))
            .map_err(|e| EngineError::Output {
                sink: name.to_string(),
                message: e.to_string(),
            })?;
        self.wakers.add(name, handle.thread().clone());
        write_lock(&registry.outputs).push((name.to_string(), Arc::clone(&counters)));
        self.running.insert(
            name.to_string(),
            RunningOutput {
                control,
                handle,
                counters,
            },
        );
        Ok(())
    }

    /// Tells output `name` to deliver what was durable when asked (bounded by `deadline`)
    /// and stop; it does so in the background. `forget`: it is gone from the config, so once
    /// stopped it no longer holds segments back.
    fn retire(&mut self, name: &str, deadline: Instant, forget: bool) {
        self.waiting.remove(name);
        let Some(output) = self.running.remove(name) else {
            // Already retiring (changed by an earlier reload): now perhaps gone altogether.
            for r in self.retiring.iter_mut().filter(|r| r.name == name) {
                r.forget |= forget;
            }
            return;
        };
        output.control.stop(deadline);
        output.handle.thread().unpark();
        self.retiring.push(Retiring {
            name: name.to_string(),
            output,
            forget,
        });
    }

    /// Joins the retired outputs that have stopped and starts what waited for them; true when
    /// the last one just finished.
    fn tick(&mut self, registry: &Counters) -> bool {
        if self.retiring.is_empty() {
            return false;
        }
        let (done, still): (Vec<_>, Vec<_>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|r| r.output.handle.is_finished());
        self.retiring = still;
        for r in done {
            let counters = Arc::clone(&r.output.counters);
            join_output(&r.name, r.output);
            self.wakers.remove(&r.name);
            write_lock(&registry.outputs).retain(|(_, c)| !Arc::ptr_eq(c, &counters));
            let wanted = self.waiting.contains_key(&r.name) || self.running.contains_key(&r.name);
            if r.forget && !wanted {
                for log in &self.logs {
                    log.retention.unregister(&r.name);
                }
            }
            if let Some(sink) = self.waiting.remove(&r.name) {
                if let Err(e) = self.start(&r.name, &sink, registry) {
                    tracing::error!(sink = %r.name, error = %e, "cannot start the reloaded sink");
                }
            }
        }
        !self.draining()
    }

    fn draining(&self) -> bool {
        !self.retiring.is_empty() || !self.waiting.is_empty()
    }

    fn draining_names(&self) -> Vec<String> {
        self.retiring.iter().map(|r| r.name.clone()).collect()
    }

    /// Shutdown: every output delivers up to the final watermarks, bounded by `deadline`
    /// (retiring ones keep the deadline their reload gave them); waiting ones start at the
    /// next run.
    fn stop_all(mut self, deadline: Instant) {
        for output in self.running.values() {
            output.control.stop(deadline);
        }
        self.wakers.wake_all();
        for (name, output) in std::mem::take(&mut self.running) {
            join_output(&name, output);
        }
        for r in std::mem::take(&mut self.retiring) {
            join_output(&r.name, r.output);
        }
    }
}

fn join_output(name: &str, output: RunningOutput) {
    match output.handle.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(sink = %name, error = %e, "sink stopped with an error"),
        Err(_) => tracing::error!(sink = %name, "sink thread panicked"),
    }
    tracing::info!(sink = %name, summary = %output.counters.summary(), "sink stopped");
}

fn write_lock<T>(lock: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

/// A source as `shards` shards run it.
fn source_spec(
    name: &str,
    s: &SourceConfig,
    shards: usize,
    memory: &Arc<ConnectionMemory>,
) -> SourceSpec {
    SourceSpec {
        idle_timeout: s.idle_timeout,
        frame_timeout: s.frame_timeout,
        memory: Arc::clone(memory),
        counters: Arc::new(SourceCounters::new(shards)),
        name: name.to_string(),
        mode: s.mode,
        address: s.address,
        max_frame: s.max_frame as usize,
        read_buffer: s.read_buffer as usize,
        receive_buffer: s.receive_buffer as usize,
        limits: ConnectionLimits::with_prefixes(
            s.max_connections,
            s.max_connections_per_ip,
            s.ipv4_prefix_length,
            s.ipv6_prefix_length,
        ),
    }
}

#[allow(clippy::too_many_arguments)]
fn start_shards(
    config: &Config,
    logs: &[ShardLog],
    wal_starts: &[storage::WalStart],
    counters: &[Arc<ShardCounters>],
    stop: &Arc<AtomicBool>,
    wakers: &Arc<OutputWakers>,
    exit_tx: &mpsc::Sender<usize>,
    budget: &Arc<DiskBudget>,
    commands: Vec<crossbeam_channel::Receiver<shard::ShardCommand>>,
    balance: &Arc<shard::Balance>,
    memory: &Arc<ConnectionMemory>,
) -> Result<(Vec<RunningShard>, Listening), EngineError> {
    let mut commands = commands.into_iter();
    let cpus: Vec<usize> = core_affinity::get_core_ids()
        .map(|ids| ids.into_iter().map(|c| c.id).collect())
        .unwrap_or_default();
    let mut sources: Vec<SourceSpec> = config
        .sources
        .iter()
        .map(|(name, s)| source_spec(name, s, counters.len(), memory))
        .collect();
    let mut running = Vec::with_capacity(counters.len());
    for id in 0..counters.len() {
        let spec = ShardSpec {
            id,
            dir: logs[id].dir.clone(),
            wal_start: wal_starts[id],
            wal: config.wal.clone(),
            sources: sources.clone(),
            watermark: Arc::clone(&logs[id].watermark),
            counters: Arc::clone(&counters[id]),
            stop: Arc::clone(stop),
            wakers: Arc::clone(wakers),
            budget: Arc::clone(budget),
            next_record_id: Arc::clone(&logs[id].next_record_id),
            commands: commands.next().unwrap_or_else(crossbeam_channel::never),
            balance: Arc::clone(balance),
        };
        let placement = match cpus.get(id % cpus.len().max(1)) {
            Some(&cpu) => Placement::Fixed(cpu),
            None => Placement::Unbound,
        };
        let (bound_tx, bound_rx) = mpsc::channel();
        let exit_tx = exit_tx.clone();
        let handle = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{id}"))
            .io_memory(SHARD_IO_MEMORY)
            .spawn(move || async move {
                let result = shard::run(spec, bound_tx).await;
                let _ = exit_tx.send(id);
                result
            })
            .map_err(|e| executor_error(id, &e.to_string()))?;
        let bound = bound_rx
            .recv()
            .map_err(|_| EngineError::Shard {
                shard: id,
                message: "exited while starting".into(),
            })
            .and_then(|r| r.map_err(|message| EngineError::Shard { shard: id, message }));
        let bound = match bound {
            Ok(b) => b,
            Err(e) => {
                let _ = handle.join();
                return Err(e);
            }
        };
        if id == 0 {
            // Every other shard binds exactly what shard 0 got (port 0 → the chosen port).
            for (source, addr) in sources.iter_mut().zip(&bound) {
                source.address = *addr;
            }
        }
        running.push(RunningShard { id, handle });
    }
    // Only now every shard listens: senders connecting after this spread over all of them.
    let listening = sources
        .iter()
        .map(|s| (s.name.clone(), s.mode, s.address, Arc::clone(&s.counters)))
        .collect();
    Ok((running, listening))
}

/// What the sources are bound to: name, mode, address (port 0 resolved).
type Listening = Vec<(String, SourceMode, SocketAddr, Arc<SourceCounters>)>;

/// Tells systemd (`Type=notify`) about a state change; a no-op outside systemd.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn executor_error(shard: usize, message: &str) -> EngineError {
    if message.contains("memlock") {
        if let Err(e) = check_memlock() {
            return e;
        }
    }
    EngineError::Executor {
        shard,
        message: message.to_string(),
    }
}

/// The line tests and operators wait for: every shard bound, every WAL recovered, outputs and
/// the API running.
fn log_ready(sources: &Listening, shards: usize, api: Option<SocketAddr>) {
    let mut listening: Vec<String> = sources
        .iter()
        .map(|(name, mode, address, _)| {
            let scheme = match mode {
                SourceMode::Tcp => "tcp",
                SourceMode::Udp => "udp",
            };
            format!("{name}={scheme}://{address}")
        })
        .collect();
    if let Some(api) = api {
        listening.push(format!("api=http://{api}"));
    }
    tracing::info!(shards, "ready; listening on {}", listening.join(" "));
}

/// The periodic status line: rates in and out since the last line, lag, disk.
struct StatusLine {
    last: Instant,
    durable: u64,
    sent: u64,
}

impl StatusLine {
    fn new(counters: &Counters) -> Self {
        StatusLine {
            last: Instant::now(),
            durable: counters.events_durable(),
            sent: counters.events_sent(),
        }
    }

    fn tick(&mut self, interval: Duration, counters: &Counters) {
        let elapsed = self.last.elapsed();
        if interval.is_zero() || elapsed < interval {
            return;
        }
        let (durable, sent) = (counters.events_durable(), counters.events_sent());
        let per_sec =
            |now: u64, before: u64| (now - before.min(now)) as f64 / elapsed.as_secs_f64();
        tracing::info!(
            durable_per_sec = per_sec(durable, self.durable) as u64,
            sent_per_sec = per_sec(sent, self.sent) as u64,
            lag_events = counters.lag_events(),
            wal_disk_bytes = counters.budget.used(),
            "status"
        );
        (self.last, self.durable, self.sent) = (Instant::now(), durable, sent);
    }
}

/// The addresses a config's sources will listen on (for logs and tools).
pub fn source_addresses(config: &Config) -> Vec<(String, SourceMode, SocketAddr)> {
    config
        .sources
        .iter()
        .map(|(n, s)| (n.clone(), s.mode, s.address))
        .collect()
}
