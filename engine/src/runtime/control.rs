//! The control plane while running: signals, reloads (SIGHUP and the API), the status line,
//! the systemd watchdog. The main thread waits on events (a signal, a shard that exited, a
//! reload request, a retired sink that finished) and on the next timer, never in sleep slices.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::outputs::OutputSet;
use super::{notify_systemd, reload, write_lock};
use crate::admin::{
    AdminState, ApiAuth, ApiPolicy, ReloadAccepted, ReloadRefused, ReloadRequest,
    SHARD_LIVENESS_LIMIT,
};
use crate::config::{self, Config, SourceConfig};
use crate::metrics::{Counters, SourceCounters};
use crate::shard::{CommandSender, ShardCommand};
use crate::sources::limits::ConnectionMemory;
use crate::sources::tls::TlsServer;

/// How often freed heap memory is handed back to the system (after a flood of connections
/// closed, say).
const MEMORY_TRIM_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a reload waits for a shard to take a source command.
const SHARD_COMMAND_WAIT: Duration = Duration::from_secs(10);
/// Why the control plane could not apply (or keep) a new config.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("running on the embedded default config: there is no file to reload")]
    NoFileToReload,
    #[error("Sluice runs on the embedded default config: a posted config has no file to be written to and a restart would lose it; start Sluice with --config FILE")]
    PostedToEmbedded,
    #[error("Sluice was started from several config files: a posted config cannot be written back to them; edit the files and POST /reload")]
    PostedToSeveralFiles,
    #[error("cannot write the posted config to {}: {source}; nothing was changed", path.display())]
    WriteBack {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sources.{name}.address {address}: {source}")]
    AddressInUse {
        name: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("shard {shard} is not running")]
    ShardNotRunning { shard: usize },
    #[error("shard {shard} did not {what} in time")]
    ShardNoAnswer { shard: usize, what: String },
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    #[error(transparent)]
    Sink(Box<crate::error::EngineError>),
    #[error(transparent)]
    Processing(Box<crate::error::EngineError>),
}

/// What the main thread changes while running: the config, the outputs, the sources (through
/// the shards' command channels).
pub(super) struct Live {
    pub(super) config: Config,
    /// What a posted config may do (from the startup config; reloads do not widen it).
    pub(super) policy: ApiPolicy,
    pub(super) outputs: OutputSet,
    pub(super) shards: Vec<CommandSender>,
    pub(super) admin_state: Arc<AdminState>,
    /// Reloads applied so far (numbers them in `GET /reload`).
    pub(super) reloads_done: u64,
    /// The connection buffer budget new sources share.
    pub(super) memory: Arc<ConnectionMemory>,
    pub(super) data_dir: std::path::PathBuf,
    /// Each sink's routing bit (saved in data_dir).
    pub(super) bits: super::SinkBits,
    /// The TLS of the sources that have it (a reload loads their certificates again).
    pub(super) tls: std::collections::BTreeMap<String, Arc<TlsServer>>,
}

/// What the main loop waits on.
pub(super) struct Events {
    pub(super) signals: Receiver<i32>,
    /// A shard's id when its executor ended.
    pub(super) exits: Receiver<usize>,
    pub(super) reloads: Receiver<ReloadRequest>,
    /// A retiring output's name when its thread ended.
    pub(super) retired: Receiver<String>,
}

/// Why the main loop ended.
pub(super) enum Stop {
    Signal,
    ShardExited(usize),
}

/// The timers of the main loop.
struct Timers {
    status: StatusLine,
    /// Half the systemd watchdog interval, when it is enabled.
    watchdog: Option<Duration>,
    last_pet: Instant,
    last_trim: Instant,
}

impl Timers {
    /// The time until the next timer is due.
    fn next_due(&self, status_interval: Duration) -> Duration {
        let mut due = MEMORY_TRIM_INTERVAL.saturating_sub(self.last_trim.elapsed());
        if !status_interval.is_zero() {
            due = due.min(status_interval.saturating_sub(self.status.last.elapsed()));
        }
        if let Some(every) = self.watchdog {
            due = due.min(every.saturating_sub(self.last_pet.elapsed()));
        }
        due
    }

    fn run_due(&mut self, status_interval: Duration, counters: &Counters) {
        self.status.tick(status_interval, counters);
        if self.last_trim.elapsed() >= MEMORY_TRIM_INTERVAL {
            return_free_memory();
            self.last_trim = Instant::now();
        }
        if self
            .watchdog
            .is_some_and(|every| self.last_pet.elapsed() >= every)
        {
            // A stuck shard is not healthy: systemd restarts us when the pets stop.
            if counters.stuck_shards(SHARD_LIVENESS_LIMIT).is_empty() {
                notify_systemd(&[sd_notify::NotifyState::Watchdog]);
            } else {
                tracing::error!("a shard stopped beating: not petting the systemd watchdog");
            }
            self.last_pet = Instant::now();
        }
    }
}

/// Gives the allocator's free memory back to the system (every thread's arena).
fn return_free_memory() {
    // SAFETY: malloc_trim has no preconditions; it only releases free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Live {
    /// Blocks until SIGINT/SIGTERM or a shard exits on its own; applies reloads (SIGHUP, the
    /// API), logs the status line every `status_interval` and pets the systemd watchdog
    /// while every shard beats.
    pub(super) fn wait_for_stop(&mut self, events: &Events, counters: &Counters) -> Stop {
        let mut timers = Timers {
            status: StatusLine::new(counters),
            watchdog: sd_notify::watchdog_enabled().map(|d| d / 2),
            last_pet: Instant::now(),
            last_trim: Instant::now(),
        };
        loop {
            let timeout = timers.next_due(self.config.status_interval);
            crossbeam_channel::select! {
                recv(events.signals) -> signal => match signal {
                    Ok(signal_hook::consts::SIGHUP) => {
                        tracing::info!("SIGHUP: reloading the config file");
                        let _ = self.reload(None, counters);
                    }
                    Ok(signal) => {
                        tracing::info!(signal, "signal received");
                        return Stop::Signal;
                    }
                    Err(_) => return Stop::Signal,
                },
                recv(events.exits) -> id => return Stop::ShardExited(id.unwrap_or(0)),
                recv(events.reloads) -> request => if let Ok(request) = request {
                    let verdict = self.reload(request.text, counters);
                    let _ = request.reply.send(verdict);
                },
                recv(events.retired) -> name => if let Ok(name) = name {
                    if self.outputs.retired(&name, counters) {
                        self.publish_reload_status("done");
                    }
                },
                default(timeout) => {}
            }
            timers.run_due(self.config.status_interval, counters);
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
        let new = self.read_new(text.as_deref())?;
        for warning in &new.warnings {
            tracing::warn!("config: {warning}");
        }
        if text.is_some() {
            self.policy
                .check(&self.config, &new)
                .map_err(|e| ReloadRefused::Forbidden(Box::new(e)))?;
        }
        let plan =
            reload::plan(&self.config, &new).map_err(|e| ReloadRefused::Invalid(Box::new(e)))?;
        self.check_new_addresses(&plan)
            .map_err(|e| ReloadRefused::Invalid(Box::new(e)))?;
        let mut bits = self.bits.clone();
        let compiled = super::processing::prepare(&new, &self.data_dir, &mut bits)
            .map_err(|e| ReloadRefused::Invalid(Box::new(ControlError::Processing(Box::new(e)))))?;
        if let (Some(text), Some(path)) = (&text, self.config.files.single_file()) {
            // Written before it is applied: a SIGHUP or restart later keeps it.
            config::files::write_atomically(path, text).map_err(|source| {
                ReloadRefused::Unavailable(Box::new(ControlError::WriteBack {
                    path: path.to_path_buf(),
                    source,
                }))
            })?;
        }
        self.bits = bits;
        self.apply(&plan, &new, &compiled, counters)
            .map_err(|e| ReloadRefused::Unavailable(Box::new(e)))?;
        self.reload_certificates(&plan);
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

    /// The new config: `text` posted (only when it can be written back to the one file the
    /// running config came from), or the files read again.
    fn read_new(&self, text: Option<&str>) -> Result<Config, ReloadRefused> {
        let files = &self.config.files;
        let new = match text {
            Some(_) if files.is_embedded() => {
                return Err(ReloadRefused::Conflict(Box::new(
                    ControlError::PostedToEmbedded,
                )))
            }
            Some(_) if files.single_file().is_none() => {
                return Err(ReloadRefused::Conflict(Box::new(
                    ControlError::PostedToSeveralFiles,
                )))
            }
            Some(text) => Config::parse(text, "the posted config").map(|mut c| {
                c.files = files.clone();
                c
            }),
            None if files.is_embedded() => {
                return Err(ReloadRefused::Invalid(Box::new(
                    ControlError::NoFileToReload,
                )))
            }
            None => files.load(),
        };
        new.map_err(|e| ReloadRefused::Invalid(Box::new(e)))
    }

    fn apply(
        &mut self,
        plan: &reload::Plan,
        new: &Config,
        compiled: &crate::config::Compiled,
        counters: &Counters,
    ) -> Result<(), ControlError> {
        for name in &plan.sources_removed {
            self.remove_source(name)?;
            self.tls.remove(name);
            write_lock(&counters.sources).retain(|(n, _)| n != name);
        }
        if plan.changes_processing() {
            // Before sources are added: their first events meet the new transforms.
            self.set_processing(compiled, counters)?;
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
            let bit = self.bits.bit(name).unwrap_or(0);
            self.outputs
                .start(name, sink, bit, counters)
                .map_err(|e| ControlError::Sink(Box::new(e)))?;
        }
        Ok(())
    }

    /// Loads the certificates of the TLS sources the reload kept (added ones just loaded
    /// theirs): new handshakes use them, established sessions keep theirs. Files that do not
    /// load leave the running certificates in place.
    fn reload_certificates(&self, plan: &reload::Plan) {
        let added = |name: &String| plan.sources_added.iter().any(|(n, _)| n == name);
        for (name, server) in self.tls.iter().filter(|(name, _)| !added(name)) {
            match server.reload() {
                Ok(()) => tracing::info!(source = %name, "TLS certificates reloaded"),
                Err(error) => tracing::error!(source = %name, %error,
                    "TLS certificates not reloaded: the running ones stay"),
            }
        }
    }

    /// Hands every shard its processing for the new config (each swaps it between events)
    /// and waits until each has: events a shard reads after the reload is reported go through
    /// the new transforms.
    fn set_processing(
        &self,
        compiled: &crate::config::Compiled,
        counters: &Counters,
    ) -> Result<(), ControlError> {
        let transform_counters = super::processing::register_counters(compiled, counters);
        for shard in 0..self.shards.len() {
            let processing = super::processing::for_shard(compiled, &transform_counters)
                .map_err(|e| ControlError::Processing(Box::new(e)))?;
            self.ask_shard(shard, "replace transforms", |reply| {
                ShardCommand::SetProcessing {
                    processing: Box::new(processing),
                    reply,
                }
            })?;
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
    fn check_new_addresses(&self, plan: &reload::Plan) -> Result<(), ControlError> {
        let ours: Vec<SocketAddr> = self
            .config
            .sources
            .values()
            .filter_map(|s| s.address())
            .collect();
        for (name, source) in &plan.sources_added {
            let Some(address) = source.address() else {
                continue;
            };
            if address.port() == 0 || ours.contains(&address) {
                continue;
            }
            source
                .mode()
                .try_bind(address)
                .map_err(|source_error| ControlError::AddressInUse {
                    name: name.clone(),
                    address,
                    source: source_error,
                })?;
        }
        Ok(())
    }

    /// Sends shard `shard` the command `make` builds around a reply channel and waits for
    /// the reply (bounded by `SHARD_COMMAND_WAIT`); `what` names the command in errors.
    fn ask_shard<T>(
        &self,
        shard: usize,
        what: &str,
        make: impl FnOnce(crossbeam_channel::Sender<T>) -> ShardCommand,
    ) -> Result<T, ControlError> {
        let not_running = ControlError::ShardNotRunning { shard };
        let commands = self.shards.get(shard).ok_or(not_running)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        if commands.send(make(reply)).is_err() {
            return Err(ControlError::ShardNotRunning { shard });
        }
        answer
            .recv_timeout(SHARD_COMMAND_WAIT)
            .map_err(|_| ControlError::ShardNoAnswer {
                shard,
                what: what.to_string(),
            })
    }

    fn remove_source(&self, name: &str) -> Result<(), ControlError> {
        for shard in 0..self.shards.len() {
            self.ask_shard(shard, &format!("remove source {name}"), |reply| {
                ShardCommand::RemoveSource {
                    name: name.to_string(),
                    reply,
                }
            })?;
        }
        Ok(())
    }

    /// Binds on shard 0 first (resolving port 0), then on the others at the same address.
    fn add_source(
        &mut self,
        name: &str,
        source: &SourceConfig,
    ) -> Result<Arc<SourceCounters>, ControlError> {
        let mut spec = super::shards::source_spec(
            name,
            source,
            self.shards.len(),
            &self.memory,
            &self.data_dir,
        )?;
        if let Some(tls) = &spec.tls {
            self.tls.insert(name.to_string(), Arc::clone(tls));
        }
        for shard in 0..self.shards.len() {
            let command_spec = spec.clone();
            let address = self.ask_shard(shard, &format!("add source {name}"), |reply| {
                ShardCommand::AddSource {
                    spec: Box::new(command_spec),
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
