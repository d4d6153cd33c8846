//! A shard: one pinned glommio executor that owns its sockets, its parser and its WAL. This
//! module is the executor loop and its commands; the sources ([`crate::sources`]) run their
//! tasks here and hand frames to the ingest step ([`ingest`]).
//!
//! ```text
//!  TCP accept ─▶ connection task: read ─▶ frame ─▶ parse ─▶ append ─┐
//!  UDP socket ─▶ datagram task:   recv ─────────▶ parse ─▶ append ─┤
//!                                                                   ▼
//!                                       WalAppender (pending buffer, shard-local)
//!                                                                   ▼
//!                         WalFlusher: write + fdatasync via io_uring ─▶ DurableWatermark
//! ```
//!
//! Invariants:
//! - Everything here runs on the shard's own thread; the only shared state is the connection
//!   limits (touched at accept and close), the counters (relaxed atomics, once per read batch),
//!   the watermark (one atomic store per commit) and the stop flag.
//! - No allocation per event: frames are slices of the connection's buffer, the parse result
//!   lives on the stack, and the record is encoded straight into the WAL's pending buffer.
//! - A connection that cannot append (pending buffer full) stops reading: TCP backpressure.
//! - On stop: accept loops end, each connection reads what the kernel already holds for it,
//!   then the WAL commits everything pending. Nothing read from a socket is left behind.
//! - Commands (reload, handed-off connections, stop) are awaited, not polled: a sender queues
//!   the command and rings the shard's doorbell (a socket pair the shard reads through its
//!   io_uring), so a handed-off connection is served at once.
//! - A shard beats (`ShardCounters::last_beat_ms`) every [`PUBLISH_INTERVAL`] while it serves;
//!   the watchdog and `/health` treat a shard that stopped beating as stuck. A shard stopping
//!   on request says so first (`not_running`), so a graceful drain is never reported stuck.

pub mod balance;
pub mod ingest;
pub mod process;

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;
use futures_lite::AsyncReadExt;
use glommio::net::{TcpStream, UnixStream};
use glommio::sync::Gate;
use storage::io::GlommioFs;
use storage::{DurableWatermark, WalAppender, WalFlusher};

pub use balance::{Balance, HandedOff};
pub use process::Processing;

use crate::metrics::ShardCounters;
use crate::sources::{SourceError, SourceRun, SourceSpec};

/// How often a shard publishes its WAL counters and beats.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(20);

/// Threads to unpark when new records became durable (the outputs; a reload changes them).
/// Read once per commit by each shard, written only by a reload.
#[derive(Debug, Default)]
pub struct OutputWakers(std::sync::RwLock<Vec<(String, std::thread::Thread)>>);

impl OutputWakers {
    pub fn wake_all(&self) {
        let threads = self.0.read().unwrap_or_else(|p| p.into_inner());
        for (_, t) in threads.iter() {
            t.unpark();
        }
    }

    pub fn add(&self, name: &str, thread: std::thread::Thread) {
        let mut threads = self.0.write().unwrap_or_else(|p| p.into_inner());
        threads.retain(|(n, _)| n != name);
        threads.push((name.to_string(), thread));
    }

    pub fn remove(&self, name: &str) {
        let mut threads = self.0.write().unwrap_or_else(|p| p.into_inner());
        threads.retain(|(n, _)| n != name);
    }
}

pub struct ShardSpec {
    pub id: usize,
    pub dir: PathBuf,
    /// Where the WAL writer starts (after recovery).
    pub wal_start: storage::WalStart,
    pub wal: WalSettings,
    pub sources: Vec<SourceSpec>,
    pub watermark: Arc<DurableWatermark>,
    pub counters: Arc<ShardCounters>,
    pub wakers: Arc<OutputWakers>,
    /// The data directory's disk budget, shared by all shards.
    pub budget: Arc<storage::DiskBudget>,
    /// This shard's ready segment files (`wal.ready_segments`).
    pub ready: Option<Arc<storage::ReadySegments>>,
    /// Where its commits go to the outputs in memory (`wal.fast_path_commits`).
    pub fast_path: Arc<storage::FastPath>,
    /// The id the shard's next durable record gets (outputs compute their lag from it).
    pub next_record_id: Arc<std::sync::atomic::AtomicU64>,
    /// Reload commands, connections handed over by other shards, stop.
    pub commands: CommandReceiver,
    pub balance: Arc<Balance>,
    /// The config's transforms and routing, built for this shard.
    pub processing: Processing,
}

/// What a shard's WAL is written with (from `[wal]`).
#[derive(Debug, Clone, Copy)]
pub struct WalSettings {
    pub buffer_size: u64,
    pub segment_size: u64,
    pub fsync: storage::FsyncPolicy,
    /// How segment files are written (`wal.io`).
    pub io: storage::io::WalIo,
    /// Whether commits are written compressed (`wal.commit_compression`).
    pub commit_compression: storage::CommitCompression,
    /// Commits whose fdatasync may run at once (`wal.commits_in_flight`).
    pub commits_in_flight: usize,
}

/// Why a shard stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("cannot open the WAL: {0}")]
    Wal(#[source] storage::StorageError),
    #[error("the WAL failed: {0}")]
    WalFailed(#[source] storage::StorageError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot read its command doorbell: {0}")]
    Doorbell(#[source] std::io::Error),
    #[error("executor: {0}")]
    Executor(#[source] glommio::GlommioError<()>),
}

/// The addresses a shard bound, in source order.
pub type Bound = Vec<SocketAddr>;

/// A stop signal on the shard's thread: the whole shard's, or one source's (a reload removed
/// it). Tasks drain what the kernel holds when it fires, like at shutdown.
#[derive(Default)]
pub struct Stopper {
    stopping: Cell<bool>,
    event: Event,
}

impl Stopper {
    pub fn stop(&self) {
        self.stopping.set(true);
        self.event.notify(usize::MAX);
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    pub async fn stopped(&self) {
        loop {
            let listener = self.event.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }
}

/// Commands a shard takes from the control plane (reload, stop) and from other shards.
pub enum ShardCommand {
    /// Serve a connection another shard accepted (see [`Balance`]).
    Adopt(HandedOff),
    /// Bind and serve a source; replies with the bound address.
    AddSource {
        spec: Box<SourceSpec>,
        reply: crossbeam_channel::Sender<Result<SocketAddr, SourceError>>,
    },
    /// Stop a source: its listener closes, its connections drain what the kernel holds.
    RemoveSource {
        name: String,
        reply: crossbeam_channel::Sender<()>,
    },
    /// Process events with a new config's transforms from the next event on; the reply says
    /// the shard has (a reload is reported done only once every shard answered).
    SetProcessing {
        processing: Box<Processing>,
        reply: crossbeam_channel::Sender<()>,
    },
    /// Stop the shard: drain every connection, commit the WAL, return.
    Stop,
}

/// The sending side of a shard's commands: queues the command, then rings the doorbell.
#[derive(Clone)]
pub struct CommandSender {
    queue: crossbeam_channel::Sender<ShardCommand>,
    bell: Arc<std::os::unix::net::UnixStream>,
}

/// The shard's side: the queue and the doorbell's other end (read through io_uring).
pub struct CommandReceiver {
    queue: crossbeam_channel::Receiver<ShardCommand>,
    bell: OwnedFd,
}

/// A command channel to one shard.
pub fn command_channel() -> std::io::Result<(CommandSender, CommandReceiver)> {
    let (ring, listen) = std::os::unix::net::UnixStream::pair()?;
    ring.set_nonblocking(true)?;
    let (queue_tx, queue_rx) = crossbeam_channel::unbounded();
    Ok((
        CommandSender {
            queue: queue_tx,
            bell: Arc::new(ring),
        },
        CommandReceiver {
            queue: queue_rx,
            bell: OwnedFd::from(listen),
        },
    ))
}

impl CommandSender {
    /// Queues `command` for the shard and wakes it; gives the command back when the shard
    /// has stopped.
    pub fn send(&self, command: ShardCommand) -> Result<(), ShardCommand> {
        self.queue.send(command).map_err(|e| e.into_inner())?;
        // A full doorbell already has a ring pending: the shard will look at the queue.
        let _ = (&*self.bell).write(&[1]);
        Ok(())
    }
}

/// A shard's state its tasks share (on its own thread).
pub struct Shard {
    pub id: usize,
    pub appender: Rc<WalAppender>,
    pub counters: Arc<ShardCounters>,
    pub stop: Stopper,
    pub balance: Arc<Balance>,
    pub processing: std::cell::RefCell<Processing>,
    /// This machine's name (`remap`'s `%{host}`).
    pub host: String,
    /// This shard's ready segment files (their counters are published with the WAL's).
    pub ready: Option<Arc<storage::ReadySegments>>,
    /// Its fast path to the outputs (counters published with the WAL's).
    pub fast_path: Arc<storage::FastPath>,
}

impl Shard {
    fn publish_wal_counters(&self) {
        let stats = &self.appender.stats;
        let c = &self.counters;
        c.events_durable
            .store(stats.durable_records.get(), Ordering::Relaxed);
        c.wal_bytes
            .store(stats.written_bytes.get(), Ordering::Relaxed);
        c.wal_block_commits
            .store(stats.block_commits.get(), Ordering::Relaxed);
        c.wal_block_raw_bytes
            .store(stats.block_raw_bytes.get(), Ordering::Relaxed);
        c.wal_fsyncs.store(stats.fsyncs.get(), Ordering::Relaxed);
        c.wal_lost_records
            .store(stats.lost_records.get(), Ordering::Relaxed);
        c.wal_io_failures
            .store(stats.io_failures.get(), Ordering::Relaxed);
        c.wal_budget_blocks
            .store(stats.budget_blocks.get(), Ordering::Relaxed);
        c.wal_segments_from_ready
            .store(stats.segments_from_ready.get(), Ordering::Relaxed);
        c.wal_ready_misses
            .store(stats.ready_misses.get(), Ordering::Relaxed);
        c.wal_ready_switches
            .store(stats.ready_switches.get(), Ordering::Relaxed);
        c.wal_overlapped_commits
            .store(stats.overlapped_commits.get(), Ordering::Relaxed);
        c.wal_commits_in_flight_full
            .store(stats.in_flight_full.get(), Ordering::Relaxed);
        if let Some(ready) = &self.ready {
            c.wal_segments_recycled
                .store(ready.recycled.load(Ordering::Relaxed), Ordering::Relaxed);
            c.wal_segments_zero_filled
                .store(ready.zero_filled.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        c.wal_fast_path_commits.store(
            self.fast_path.handed.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        c.wal_fast_path_full.store(
            self.fast_path.full.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        c.wal_fast_path_over_budget.store(
            self.fast_path.over_budget.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        c.wal_fast_path_bytes.store(
            self.fast_path.held_bytes.load(Ordering::Relaxed) as i64,
            Ordering::Relaxed,
        );
        c.wal_fsync.publish(&stats.fsync);
        c.wal_write.publish(&stats.write);
        c.ingest_durable.publish(&stats.ingest_durable);
    }
}

/// Runs a shard until it is told to stop and everything it received is committed.
/// `bound` receives the bound addresses (or the error) as soon as the sockets exist.
pub async fn run(
    spec: ShardSpec,
    bound: std::sync::mpsc::Sender<Result<Bound, ShardError>>,
) -> Result<(), ShardError> {
    let appender = WalAppender::new(spec.wal.buffer_size as usize, spec.wal.fsync);
    let flusher = match open_flusher(&spec, &appender).await {
        Ok(f) => f,
        Err(e) => {
            let _ = bound.send(Err(e));
            return Ok(()); // Reported through `bound`.
        }
    };
    let flusher_task = glommio::spawn_local(flusher.run());
    let shard = Rc::new(Shard {
        id: spec.id,
        appender: Rc::clone(&appender),
        counters: Arc::clone(&spec.counters),
        stop: Stopper::default(),
        balance: Arc::clone(&spec.balance),
        processing: std::cell::RefCell::new(spec.processing),
        host: host_name(),
        ready: spec.ready.clone(),
        fast_path: Arc::clone(&spec.fast_path),
    });
    let gate = Rc::new(Gate::new());
    let served = serve_sources(&shard, &gate, spec.sources);
    let mut running = match served {
        Ok((running, addresses)) => {
            let _ = bound.send(Ok(addresses));
            running
        }
        Err(e) => {
            let _ = bound.send(Err(e));
            shard.stop.stop();
            let _ = gate.close().await;
            appender.close();
            let _ = flusher_task.await;
            return Ok(()); // Reported through `bound`.
        }
    };
    let publisher = glommio::spawn_local(publish_until_stopped(Rc::clone(&shard))).detach();
    let taken = take_commands(&shard, &gate, &mut running, spec.commands).await;
    tracing::debug!(shard = spec.id, "stopping: draining connections");
    shard.stop.stop();
    // From here it drains and stops on request: no longer beating is not being stuck.
    shard.counters.not_running();
    gate.close().await.map_err(ShardError::Executor)?;
    appender.close();
    let flushed = flusher_task.await;
    let _ = publisher.await;
    shard.publish_wal_counters();
    shard.processing.borrow_mut().publish(shard.id);
    taken?;
    flushed.map_err(ShardError::WalFailed)
}

async fn open_flusher(
    spec: &ShardSpec,
    appender: &Rc<WalAppender>,
) -> Result<WalFlusher<GlommioFs>, ShardError> {
    let wakers = Arc::clone(&spec.wakers);
    let next_record_id = Arc::clone(&spec.next_record_id);
    WalFlusher::open_with_budget(
        GlommioFs::new(spec.wal.io),
        &spec.dir,
        spec.wal_start,
        spec.wal.segment_size,
        Rc::clone(appender),
        Arc::clone(&spec.watermark),
        Box::new(move |next_id| {
            next_record_id.store(next_id, Ordering::Release);
            wakers.wake_all();
        }),
        storage::writer::WalSpace {
            budget: Arc::clone(&spec.budget),
            ready: spec.ready.clone(),
        },
    )
    .await
    .and_then(|flusher| {
        flusher
            .with_fast_path(Arc::clone(&spec.fast_path))
            .with_commits_in_flight(spec.wal.commits_in_flight)
            .with_commit_compression(spec.wal.commit_compression)
    })
    .map_err(ShardError::Wal)
}

/// Binds and serves the startup sources; their bound addresses in order.
fn serve_sources(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    sources: Vec<SourceSpec>,
) -> Result<(HashMap<String, Rc<SourceRun>>, Bound), ShardError> {
    let mut running = HashMap::new();
    let mut addresses = Vec::with_capacity(sources.len());
    for source in sources {
        let (address, run) = bind_and_serve(shard, gate, source)?;
        addresses.push(address);
        running.insert(run.spec.name.clone(), run);
    }
    Ok((running, addresses))
}

fn bind_and_serve(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    spec: SourceSpec,
) -> Result<(SocketAddr, Rc<SourceRun>), SourceError> {
    let bound = crate::sources::bind(&spec)?;
    let address = bound
        .local_addr()
        .map_err(|error| SourceError::LocalAddress {
            name: spec.name.clone(),
            error,
        })?;
    let mut spec = spec;
    spec.address = address;
    let run = crate::sources::serve(shard, gate, spec, bound)?;
    Ok((address, run))
}

/// Publishes the WAL counters (and beats) every [`PUBLISH_INTERVAL`] until the shard stops.
async fn publish_until_stopped(shard: Rc<Shard>) {
    while !shard.stop.is_stopping() {
        shard.publish_wal_counters();
        shard.processing.borrow_mut().publish(shard.id);
        shard.counters.beat();
        let tick = async {
            glommio::timer::sleep(PUBLISH_INTERVAL).await;
        };
        futures_lite::future::or(tick, shard.stop.stopped()).await;
    }
}

/// Takes commands as they come (each rings the doorbell) until `Stop`; then serves the
/// connections other shards handed over meanwhile (they are drained too).
async fn take_commands(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    running: &mut HashMap<String, Rc<SourceRun>>,
    commands: CommandReceiver,
) -> Result<(), ShardError> {
    // SAFETY: the descriptor is one end of a socket pair whose ownership moves into the stream.
    let mut bell = unsafe { UnixStream::from_raw_fd(commands.bell.into_raw_fd()) };
    let mut rung = [0u8; 64];
    let mut result = Ok(());
    'serving: loop {
        while let Ok(command) = commands.queue.try_recv() {
            if matches!(command, ShardCommand::Stop) {
                break 'serving;
            }
            run_command(shard, gate, running, command);
        }
        match bell.read(&mut rung).await {
            Ok(n) if n > 0 => {}
            // The control plane is gone (it holds the other end): stop.
            Ok(_) => break,
            Err(e) => {
                result = Err(ShardError::Doorbell(e));
                break;
            }
        }
    }
    while let Ok(command) = commands.queue.try_recv() {
        if let ShardCommand::Adopt(conn) = command {
            adopt(shard, gate, running, conn);
        }
    }
    result
}

fn run_command(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    running: &mut HashMap<String, Rc<SourceRun>>,
    command: ShardCommand,
) {
    match command {
        ShardCommand::Adopt(conn) => adopt(shard, gate, running, conn),
        ShardCommand::AddSource { spec, reply } => {
            let name = spec.name.clone();
            let result = bind_and_serve(shard, gate, *spec).map(|(address, source)| {
                if let Some(old) = running.insert(name.clone(), source) {
                    old.stop.stop();
                }
                tracing::info!(shard = shard.id, source = %name, %address, "source added");
                address
            });
            let _ = reply.send(result);
        }
        ShardCommand::RemoveSource { name, reply } => {
            if let Some(source) = running.remove(&name) {
                source.stop.stop();
                tracing::info!(shard = shard.id, source = %name, "source removed: draining its connections");
            }
            let _ = reply.send(());
        }
        ShardCommand::SetProcessing { processing, reply } => {
            let mut current = shard.processing.borrow_mut();
            current.publish(shard.id);
            *current = *processing;
            tracing::debug!(shard = shard.id, "transforms replaced");
            let _ = reply.send(());
        }
        ShardCommand::Stop => {}
    }
}

/// The machine's host name (empty when the kernel does not say).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Serves a connection another shard handed over; if its source is gone from this shard
/// (removed by a reload meanwhile), the connection is closed.
fn adopt(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    running: &HashMap<String, Rc<SourceRun>>,
    conn: HandedOff,
) {
    let Some(run) = running.get(&conn.source) else {
        shard.balance.release(shard.id);
        return;
    };
    // SAFETY: the descriptor is an open TCP socket whose ownership moves into the stream.
    let stream = unsafe { TcpStream::from_raw_fd(conn.socket.into_raw_fd()) };
    let task = crate::sources::tcp::serve_accepted(
        Rc::clone(shard),
        Rc::clone(run),
        stream,
        conn.peer,
        conn.slot,
    );
    match gate.spawn(task) {
        Ok(t) => {
            t.detach();
        }
        Err(_) => shard.balance.release(shard.id), // Stopping.
    }
}
