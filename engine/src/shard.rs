//! A shard: one pinned glommio executor that owns its sockets, its parser and its WAL.
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

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use event_listener::Event;
use futures_lite::AsyncReadExt;
use glommio::net::{TcpListener, TcpStream, UdpSocket};
use glommio::sync::Gate;
use ingest::framing::{EofRemainder, FrameFlags, Framer};
use ingest::{record, Format};
use storage::io::GlommioFs;
use storage::writer::{AppendError, WalStatus};
use storage::{DurableWatermark, WalAppender, WalFlusher};

use crate::config::{SourceMode, WalConfig};
use crate::limits::{ConnectionLimits, ConnectionMemory, ConnectionSlot};
use crate::metrics::{BatchTally, ShardCounters, SourceCounters, SourceShardCounters};

/// How often a shard looks at the stop flag and publishes WAL counters.
const CONTROL_POLL: Duration = Duration::from_millis(20);
/// How long a UDP receive waits before it looks at the stop flag again.
const UDP_POLL: Duration = Duration::from_millis(100);
/// The largest UDP datagram.
const UDP_MAX_DATAGRAM: usize = 65_535;
/// A TCP connection's read buffer starts this small; it doubles while a read fills it (up to
/// the source's `read_buffer`, at least one whole frame) and shrinks back once drained.
const INITIAL_READ_BUFFER: usize = 4 << 10;
/// How often a full source's accept loop looks whether a slot came free.
const ACCEPT_FULL_POLL: Duration = Duration::from_millis(10);

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
    pub wal: WalConfig,
    pub sources: Vec<SourceSpec>,
    pub watermark: Arc<DurableWatermark>,
    pub counters: Arc<ShardCounters>,
    pub stop: Arc<AtomicBool>,
    pub wakers: Arc<OutputWakers>,
    /// The data directory's disk budget, shared by all shards.
    pub budget: Arc<storage::DiskBudget>,
    /// The id the shard's next durable record gets (outputs compute their lag from it).
    pub next_record_id: Arc<std::sync::atomic::AtomicU64>,
    /// Reload commands (sources added and removed while running) and connections handed
    /// over by other shards.
    pub commands: crossbeam_channel::Receiver<ShardCommand>,
    pub balance: Arc<Balance>,
}

/// Accept-time balancing of TCP connections over shards. SO_REUSEPORT spreads connections by
/// a hash of their addresses, so a few busy senders can all land on one shard while another
/// idles. A shard that accepts a connection while it serves more than the least loaded shard
/// hands it over (the socket, before anything was read from it) through that shard's command
/// channel. Cross-core traffic once per connection, never per event.
pub struct Balance {
    /// Connections each shard serves or has been handed (all TCP sources).
    load: Vec<AtomicI64>,
    shards: Vec<crossbeam_channel::Sender<ShardCommand>>,
}

impl Balance {
    pub fn new(shards: Vec<crossbeam_channel::Sender<ShardCommand>>) -> Self {
        Balance {
            load: shards.iter().map(|_| AtomicI64::new(0)).collect(),
            shards,
        }
    }

    /// The shard that should serve a connection `me` just accepted: the least loaded one if
    /// `me` serves more; counts the connection there.
    fn assign(&self, me: usize) -> usize {
        let load = |i: usize| {
            self.load
                .get(i)
                .map_or(i64::MAX, |l| l.load(Ordering::Acquire))
        };
        let least = (0..self.load.len()).min_by_key(|&i| load(i)).unwrap_or(me);
        let target = if load(me) > load(least) { least } else { me };
        self.count(target);
        target
    }

    /// Counts a connection on `shard`.
    fn count(&self, shard: usize) {
        if let Some(l) = self.load.get(shard) {
            l.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn release(&self, shard: usize) {
        if let Some(l) = self.load.get(shard) {
            l.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A connection accepted by one shard for another to serve.
pub struct HandedOff {
    source: String,
    socket: std::os::fd::OwnedFd,
    peer: SocketAddr,
    slot: ConnectionSlot,
}

/// The addresses a shard bound, in source order.
pub type Bound = Vec<SocketAddr>;

/// A stop signal on the shard's thread: the whole shard's, or one source's (a reload removed
/// it). Tasks drain what the kernel holds when it fires, like at shutdown.
#[derive(Default)]
struct Stopper {
    stopping: Cell<bool>,
    event: Event,
}

impl Stopper {
    fn stop(&self) {
        self.stopping.set(true);
        self.event.notify(usize::MAX);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    async fn stopped(&self) {
        loop {
            let listener = self.event.listen();
            if self.stopping.get() {
                return;
            }
            listener.await;
        }
    }
}

/// What a source's tasks watch: the shard's stop and their own source's.
struct SourceRun {
    spec: SourceSpec,
    stop: Stopper,
}

impl SourceRun {
    async fn stopped(&self, shard: &Shard) {
        futures_lite::future::or(shard.stop.stopped(), self.stop.stopped()).await;
    }

    fn is_stopping(&self, shard: &Shard) -> bool {
        shard.stop.is_stopping() || self.stop.is_stopping()
    }
}

/// Commands a shard takes from the control plane (reload) and from other shards, checked
/// every `CONTROL_POLL`.
pub enum ShardCommand {
    /// Serve a connection another shard accepted (see [`Balance`]).
    Adopt(HandedOff),
    /// Bind and serve a source; replies with the bound address.
    AddSource {
        spec: SourceSpec,
        reply: crossbeam_channel::Sender<Result<SocketAddr, String>>,
    },
    /// Stop a source: its listener closes, its connections drain what the kernel holds.
    RemoveSource {
        name: String,
        reply: crossbeam_channel::Sender<()>,
    },
}

struct Shard {
    id: usize,
    appender: Rc<WalAppender>,
    counters: Arc<ShardCounters>,
    stop: Stopper,
    balance: Arc<Balance>,
}

impl Shard {
    fn publish_wal_counters(&self) {
        let stats = &self.appender.stats;
        let c = &self.counters;
        c.events_durable
            .store(stats.durable_records.get(), Ordering::Relaxed);
        c.wal_bytes
            .store(stats.written_bytes.get(), Ordering::Relaxed);
        c.wal_fsyncs.store(stats.fsyncs.get(), Ordering::Relaxed);
        c.wal_lost_records
            .store(stats.lost_records.get(), Ordering::Relaxed);
        c.wal_io_failures
            .store(stats.io_failures.get(), Ordering::Relaxed);
        c.wal_budget_blocks
            .store(stats.budget_blocks.get(), Ordering::Relaxed);
        c.wal_fsync.publish(&stats.fsync);
        c.ingest_durable.publish(&stats.ingest_durable);
    }
}

enum Listener {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// Runs a shard until the stop flag is set and everything it received is committed.
/// `bound` receives the bound addresses (or the error) as soon as the sockets exist.
pub async fn run(
    spec: ShardSpec,
    bound: std::sync::mpsc::Sender<Result<Bound, String>>,
) -> Result<(), String> {
    let appender = WalAppender::new(spec.wal.buffer_size as usize, spec.wal.fsync);
    let wakers = Arc::clone(&spec.wakers);
    let next_record_id = Arc::clone(&spec.next_record_id);
    let flusher = WalFlusher::open_with_budget(
        GlommioFs,
        &spec.dir,
        spec.wal_start,
        spec.wal.segment_size,
        Rc::clone(&appender),
        Arc::clone(&spec.watermark),
        Box::new(move |next_id| {
            next_record_id.store(next_id, Ordering::Release);
            wakers.wake_all();
        }),
        Arc::clone(&spec.budget),
    )
    .await;
    let flusher = match flusher {
        Ok(f) => f,
        Err(e) => {
            let _ = bound.send(Err(e.to_string()));
            return Err(e.to_string());
        }
    };
    let flusher_task = glommio::spawn_local(flusher.run());
    let listeners = match bind_all(&spec.sources) {
        Ok(l) => l,
        Err(message) => {
            let _ = bound.send(Err(message.clone()));
            appender.close();
            let _ = flusher_task.await;
            return Err(message);
        }
    };
    let addresses = listeners
        .iter()
        .map(Listener::local_addr)
        .collect::<Result<Vec<_>, _>>()?;
    let _ = bound.send(Ok(addresses));

    let shard = Rc::new(Shard {
        id: spec.id,
        appender: Rc::clone(&appender),
        counters: Arc::clone(&spec.counters),
        stop: Stopper::default(),
        balance: Arc::clone(&spec.balance),
    });
    let gate = Rc::new(Gate::new());
    let mut running = std::collections::HashMap::new();
    for (listener, source) in listeners.into_iter().zip(spec.sources) {
        let name = source.name.clone();
        running.insert(name, serve_source(&shard, &gate, source, listener)?);
    }

    while !spec.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(CONTROL_POLL).await;
        shard.publish_wal_counters();
        while let Ok(command) = spec.commands.try_recv() {
            run_command(&shard, &gate, &mut running, command);
        }
    }
    // Connections other shards handed over meanwhile are served (drained) too.
    while let Ok(command) = spec.commands.try_recv() {
        run_command(&shard, &gate, &mut running, command);
    }
    tracing::debug!(shard = spec.id, "stopping: draining connections");
    shard.stop.stop();
    gate.close().await.map_err(|e| e.to_string())?;
    appender.close();
    let flushed = flusher_task.await;
    shard.publish_wal_counters();
    flushed.map_err(|e| e.to_string())
}

/// Spawns a bound source's accept or receive loop; returns what stops it.
fn serve_source(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    spec: SourceSpec,
    listener: Listener,
) -> Result<Rc<SourceRun>, String> {
    let source = Rc::new(SourceRun {
        spec,
        stop: Stopper::default(),
    });
    let (shard2, source2, gate2) = (Rc::clone(shard), Rc::clone(&source), Rc::clone(gate));
    let spawned = match listener {
        Listener::Tcp(l) => gate.spawn(accept_loop(shard2, source2, l, gate2)),
        Listener::Udp(u) => gate.spawn(udp_loop(shard2, source2, u)),
    };
    spawned.map_err(|e| e.to_string())?.detach();
    Ok(source)
}

fn run_command(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    running: &mut std::collections::HashMap<String, Rc<SourceRun>>,
    command: ShardCommand,
) {
    match command {
        ShardCommand::Adopt(conn) => adopt(shard, gate, running, conn),
        ShardCommand::AddSource { spec, reply } => {
            let name = spec.name.clone();
            let added = bind(&spec).and_then(|listener| {
                let address = listener.local_addr()?;
                let source = serve_source(shard, gate, spec, listener)?;
                Ok((address, source))
            });
            let result = added.map(|(address, source)| {
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
    }
}

/// Serves a connection another shard handed over; if its source is gone from this shard
/// (removed by a reload meanwhile), the connection is closed.
fn adopt(
    shard: &Rc<Shard>,
    gate: &Rc<Gate>,
    running: &std::collections::HashMap<String, Rc<SourceRun>>,
    conn: HandedOff,
) {
    let Some(run) = running.get(&conn.source) else {
        shard.balance.release(shard.id);
        return;
    };
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: the descriptor is an open TCP socket whose ownership moves into the stream.
    let stream = unsafe { TcpStream::from_raw_fd(conn.socket.into_raw_fd()) };
    let task = serve_tcp(
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

fn bind_all(sources: &[SourceSpec]) -> Result<Vec<Listener>, String> {
    sources.iter().map(bind).collect()
}

fn bind(s: &SourceSpec) -> Result<Listener, String> {
    let bound = match s.mode {
        SourceMode::Tcp => TcpListener::bind(s.address).map(Listener::Tcp),
        SourceMode::Udp => UdpSocket::bind(s.address).map(Listener::Udp),
    };
    let listener =
        bound.map_err(|e| format!("source {}: cannot bind {}: {e}", s.name, s.address))?;
    if let Listener::Udp(u) = &listener {
        set_receive_buffer(u, s);
    }
    Ok(listener)
}

impl Listener {
    fn local_addr(&self) -> Result<SocketAddr, String> {
        match self {
            Listener::Tcp(t) => t.local_addr(),
            Listener::Udp(u) => u.local_addr(),
        }
        .map_err(|e| e.to_string())
    }
}

/// SO_RCVBUFFORCE where permitted (it may exceed `net.core.rmem_max`), else SO_RCVBUF.
/// UDP only: on TCP a fixed buffer would switch off the kernel's receive-window autotuning.
fn set_receive_buffer(socket: &UdpSocket, source: &SourceSpec) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let size = source.receive_buffer.min(i32::MAX as usize) as libc::c_int;
    let set = |option| {
        // SAFETY: setsockopt on a socket we own, with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        tracing::warn!(source = %source.name, size, "cannot set the socket receive buffer");
    }
}

async fn accept_loop(shard: Rc<Shard>, run: Rc<SourceRun>, listener: TcpListener, gate: Rc<Gate>) {
    let source = &run.spec;
    loop {
        // At max_connections: leave new connections in the kernel's backlog (the sender is
        // pushed back) rather than accept and reset them, losing what they already sent.
        while source.limits.is_full() && !run.is_stopping(&shard) {
            glommio::timer::sleep(ACCEPT_FULL_POLL).await;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            run.stopped(&shard).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(source = %source.name, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue, // Already gone.
        };
        let slot = match source.limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                shard
                    .counters
                    .connections_rejected
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(c) = source.counters.shard(shard.id) {
                    c.connections_rejected.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(source = %source.name, %peer, ?refusal, "connection refused by limit");
                continue; // Dropping the stream closes it.
            }
        };
        shard
            .counters
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let Some((stream, slot)) = hand_off_if_busier(&shard, &source.name, stream, peer, slot)
        else {
            continue;
        };
        let task = serve_tcp(Rc::clone(&shard), Rc::clone(&run), stream, peer, slot);
        match gate.spawn(task) {
            Ok(t) => t.detach(),
            Err(_) => {
                shard.balance.release(shard.id);
                return; // The gate is closing: we are stopping.
            }
        };
    }
}

/// Passes the connection to a less loaded shard if there is one (`None`: handed off);
/// otherwise, or if the handover fails, gives it back to be served here.
fn hand_off_if_busier(
    shard: &Shard,
    source: &str,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) -> Option<(TcpStream, ConnectionSlot)> {
    let target = shard.balance.assign(shard.id);
    if target == shard.id {
        return Some((stream, slot));
    }
    let serve_here = || {
        shard.balance.release(target);
        shard.balance.count(shard.id);
    };
    // A duplicate of the socket travels; dropping ours closes only our descriptor.
    let socket = match dup_socket(&stream) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(shard = shard.id, %peer, error = %e, "cannot hand the connection over: served here");
            serve_here();
            return Some((stream, slot));
        }
    };
    let conn = HandedOff {
        source: source.to_string(),
        socket,
        peer,
        slot,
    };
    let sent = match shard.balance.shards.get(target) {
        Some(to) => to
            .send(ShardCommand::Adopt(conn))
            .map_err(|e| e.into_inner()),
        None => Err(ShardCommand::Adopt(conn)),
    };
    match sent {
        Ok(()) => {
            shard
                .counters
                .connections_handed_off
                .fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(refused) => {
            // The target shard has stopped: served here (the duplicate is dropped).
            serve_here();
            match refused {
                ShardCommand::Adopt(conn) => Some((stream, conn.slot)),
                _ => None,
            }
        }
    }
}

fn dup_socket(stream: &TcpStream) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    borrowed.try_clone_to_owned()
}

/// Time taken once per read batch: every event of the batch gets the same `received_at`.
struct BatchClock {
    received_at_us: i64,
    now_secs: i64,
}

impl BatchClock {
    fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        BatchClock {
            received_at_us: d.as_micros() as i64,
            now_secs: d.as_secs() as i64,
        }
    }
}

/// Parses one frame and appends its record, waiting for WAL space if needed.
async fn ingest_frame(
    shard: &Shard,
    frame: &[u8],
    flags: FrameFlags,
    clock: &BatchClock,
    source_ip: IpAddr,
    tally: &mut BatchTally,
) {
    let parsed = ingest::parse(frame, clock.now_secs);
    tally.events += 1;
    tally.bytes += frame.len() as u64;
    tally.parse_errors += u64::from(parsed.format == Format::Raw);
    tally.oversize += u64::from(flags.truncated());
    tally.bad_length += u64::from(flags.bad_length());
    let header = record::EventHeader {
        received_at_us: clock.received_at_us,
        source_ip: Some(source_ip),
        frame_flags: flags,
    };
    let len = record::encoded_len(frame.len());
    loop {
        match shard
            .appender
            .try_append(len, |buf| record::encode(buf, &header, &parsed, frame))
        {
            Ok(()) => return,
            Err(AppendError::Full) if shard.stop.is_stopping() => {
                if shard.appender.status() == WalStatus::Blocked {
                    // Stopping while the disk refuses writes: this event cannot be kept.
                    tally.dropped_wal += 1;
                    return;
                }
                shard.appender.wait_for_space().await;
            }
            Err(AppendError::Full) => {
                futures_lite::future::or(shard.appender.wait_for_space(), shard.stop.stopped())
                    .await;
            }
            Err(AppendError::Stopped) => {
                tally.dropped_wal += 1;
                return;
            }
        }
    }
}

/// One TCP connection's state: its buffer, framer and the frames of the current read.
struct Connection {
    buf: Vec<u8>,
    filled: usize,
    /// The largest the buffer may grow: `read_buffer`, at least one whole frame.
    max_buffer: usize,
    memory: Arc<ConnectionMemory>,
    framer: Framer,
    frames: Vec<(usize, usize, FrameFlags)>,
    peer: IpAddr,
    counters: Arc<SourceCounters>,
    /// When the partial frame now in the buffer began (`frame_timeout` counts from it).
    partial_since: Option<std::time::Instant>,
    /// Bytes the last read brought (a trickle lets a grown buffer shrink).
    last_read: usize,
    /// The read timeout last given to the stream, whole seconds (set again only on change).
    read_timeout_secs: u64,
}

/// Why a connection was closed by Sluice (each counted per source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    IdleTimeout,
    FrameTimeout,
    MemoryBudget,
}

impl Connection {
    /// A connection with the small initial buffer, or `None` when even that is over budget.
    fn new(source: &SourceSpec, peer: IpAddr) -> Option<Connection> {
        let max_buffer = source
            .read_buffer
            .max(Framer::min_buffer_len(source.max_frame));
        let initial = INITIAL_READ_BUFFER.min(max_buffer);
        if !source.memory.reserve(initial as u64) {
            return None;
        }
        Some(Connection {
            buf: vec![0; initial],
            filled: 0,
            max_buffer,
            memory: Arc::clone(&source.memory),
            framer: Framer::new(source.max_frame),
            frames: Vec::new(),
            peer,
            counters: Arc::clone(&source.counters),
            partial_since: None,
            last_read: 0,
            read_timeout_secs: 0,
        })
    }

    /// Makes room for the next read: doubles a full buffer (within the budget). `Err` when
    /// the budget refuses and the buffer has no room left.
    fn make_room(&mut self) -> Result<(), CloseReason> {
        if self.filled < self.buf.len() {
            return Ok(());
        }
        let grown = (self.buf.len() * 2).min(self.max_buffer);
        if grown > self.buf.len() && self.memory.reserve((grown - self.buf.len()) as u64) {
            self.buf.resize(grown, 0);
            return Ok(());
        }
        Err(CloseReason::MemoryBudget)
    }

    /// Gives a grown buffer back once drained and the sender slowed to a trickle (a read
    /// that brought under an eighth of it): the budget and, through the allocator, the system
    /// get the memory back. A busy connection keeps its buffer (and its large reads).
    fn shrink_when_drained(&mut self) {
        let trickle = self.last_read * 8 < self.buf.len();
        if self.filled > 0 || !trickle || self.buf.len() <= INITIAL_READ_BUFFER {
            return;
        }
        self.memory
            .release((self.buf.len() - INITIAL_READ_BUFFER) as u64);
        self.buf = vec![0; INITIAL_READ_BUFFER];
        self.frames = Vec::new();
    }

    /// How long the next read may wait: the idle timeout, or what is left of the frame
    /// timeout while a frame is partial.
    fn read_timeout(&self, source: &SourceSpec) -> (Duration, CloseReason) {
        match self.partial_since {
            Some(since) if self.filled > 0 => (
                source.frame_timeout.saturating_sub(since.elapsed()),
                CloseReason::FrameTimeout,
            ),
            _ => (source.idle_timeout, CloseReason::IdleTimeout),
        }
    }

    /// Gives the stream `timeout`, rounded up to whole seconds, when that changed (the
    /// deadline counts from when a read starts waiting; a second's slack is fine for both).
    fn apply_read_timeout(&mut self, stream: &TcpStream, timeout: Duration) -> std::io::Result<()> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        if secs != self.read_timeout_secs {
            stream.set_read_timeout(Some(Duration::from_secs(secs)))?;
            self.read_timeout_secs = secs;
        }
        Ok(())
    }

    /// Frames, parses and appends everything complete in the buffer; keeps the partial rest.
    async fn process(&mut self, shard: &Shard) {
        shard.appender.note_arrival(std::time::Instant::now());
        self.frames.clear();
        let base = self.buf.as_ptr() as usize;
        let frames = &mut self.frames;
        let consumed = self.framer.feed(&self.buf[..self.filled], |f| {
            frames.push(frame_ref(base, &f))
        });
        self.append_frames(shard).await;
        self.buf.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
        // A frame completed in this read: what is left began with this read.
        self.partial_since = match (self.filled, consumed) {
            (0, _) => None,
            (_, 0) => self
                .partial_since
                .or_else(|| Some(std::time::Instant::now())),
            _ => Some(std::time::Instant::now()),
        };
    }

    /// The peer closed (or we stop): a pending unterminated line is still an event.
    async fn finish(&mut self, shard: &Shard) {
        shard.appender.note_arrival(std::time::Instant::now());
        self.frames.clear();
        let base = self.buf.as_ptr() as usize;
        let frames = &mut self.frames;
        let remainder = self.framer.finish(&self.buf[..self.filled], |f| {
            frames.push(frame_ref(base, &f))
        });
        self.append_frames(shard).await;
        if let EofRemainder::IncompleteFrame { bytes } = remainder {
            shard
                .counters
                .frames_incomplete
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(shard = shard.id, peer = %self.peer, bytes, "connection closed mid-frame");
        }
        self.filled = 0;
    }

    async fn append_frames(&self, shard: &Shard) {
        if self.frames.is_empty() {
            return;
        }
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        for &(start, len, flags) in &self.frames {
            let frame = &self.buf[start..start + len];
            ingest_frame(shard, frame, flags, &clock, self.peer, &mut tally).await;
        }
        shard.counters.add(&tally);
        add_to_source(&self.counters, shard.id, &tally);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.memory.release(self.buf.len() as u64);
    }
}

/// A frame as (offset in the connection's buffer, length, flags): the framer's slices borrow
/// the buffer, which the appends that follow need back.
fn frame_ref(buffer_start: usize, frame: &ingest::Frame) -> (usize, usize, FrameFlags) {
    (
        frame.bytes.as_ptr() as usize - buffer_start,
        frame.bytes.len(),
        frame.flags,
    )
}

enum ReadOutcome {
    Data(std::io::Result<usize>),
    Stop,
}

/// Counts a connection on its shard and source for as long as it lives.
struct ActiveConnection<'a> {
    shard: &'a Shard,
    source: Option<&'a SourceShardCounters>,
}

impl<'a> ActiveConnection<'a> {
    fn open(shard: &'a Shard, source: Option<&'a SourceShardCounters>) -> Self {
        shard
            .counters
            .connections_active
            .fetch_add(1, Ordering::Relaxed);
        if let Some(c) = source {
            c.connections_active.fetch_add(1, Ordering::Relaxed);
        }
        ActiveConnection { shard, source }
    }

    fn closed_by_us(&self, reason: CloseReason, peer: SocketAddr) {
        if let Some(c) = self.source {
            let counter = match reason {
                CloseReason::IdleTimeout => &c.closed_idle_timeout,
                CloseReason::FrameTimeout => &c.closed_frame_timeout,
                CloseReason::MemoryBudget => &c.closed_memory_budget,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(shard = self.shard.id, %peer, ?reason, "connection closed");
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.shard.balance.release(self.shard.id);
        self.shard
            .counters
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(c) = self.source {
            c.connections_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

async fn serve_tcp(
    shard: Rc<Shard>,
    run: Rc<SourceRun>,
    mut stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
) {
    let source = &run.spec;
    let active = ActiveConnection::open(&shard, source.counters.shard(shard.id));
    let Some(mut conn) = Connection::new(source, peer.ip()) else {
        active.closed_by_us(CloseReason::MemoryBudget, peer);
        return;
    };
    loop {
        if let Err(reason) = conn.make_room() {
            active.closed_by_us(reason, peer);
            break;
        }
        let (timeout, on_timeout) = conn.read_timeout(source);
        if timeout.is_zero() || conn.apply_read_timeout(&stream, timeout).is_err() {
            active.closed_by_us(on_timeout, peer);
            break;
        }
        let filled = conn.filled;
        let outcome = futures_lite::future::or(
            async { ReadOutcome::Data(stream.read(&mut conn.buf[filled..]).await) },
            async {
                run.stopped(&shard).await;
                ReadOutcome::Stop
            },
        )
        .await;
        match outcome {
            ReadOutcome::Data(Ok(0)) => break,
            ReadOutcome::Data(Ok(n)) => {
                conn.filled += n;
                conn.last_read = n;
            }
            ReadOutcome::Data(Err(e)) if is_timeout(&e) => {
                active.closed_by_us(on_timeout, peer);
                break;
            }
            ReadOutcome::Data(Err(e)) => {
                tracing::debug!(shard = shard.id, %peer, error = %e, "connection read failed");
                break;
            }
            ReadOutcome::Stop => {
                drain_ready(&shard, &mut stream, &mut conn).await;
                break;
            }
        }
        conn.process(&shard).await;
        conn.shrink_when_drained();
        glommio::yield_if_needed().await;
    }
    conn.finish(&shard).await;
}

/// On stop: take in whatever the kernel already holds for this connection, without waiting.
/// (glommio's read tries a non-blocking `recv` first, so polling it once never loses data.)
async fn drain_ready(shard: &Shard, stream: &mut TcpStream, conn: &mut Connection) {
    loop {
        if conn.make_room().is_err() {
            return;
        }
        let filled = conn.filled;
        match futures_lite::future::poll_once(stream.read(&mut conn.buf[filled..])).await {
            Some(Ok(n)) if n > 0 => {
                conn.filled += n;
                conn.process(shard).await;
            }
            _ => return,
        }
    }
}

async fn udp_loop(shard: Rc<Shard>, run: Rc<SourceRun>, socket: UdpSocket) {
    let _registered = KernelDropsWatch::register(&shard.counters, &socket);
    let source = &run.spec;
    if let Err(e) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(source = %source.name, error = %e, "cannot set UDP read timeout");
        return;
    }
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    while !run.is_stopping(&shard) {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => ingest_datagram(&shard, source, &buf[..n], peer.ip()).await,
            Err(e) => {
                let e = std::io::Error::from(e);
                if !is_timeout(&e) {
                    tracing::warn!(source = %source.name, error = %e, "UDP receive failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        glommio::yield_if_needed().await;
    }
    // Stopping: take what the kernel already queued, without waiting.
    use std::os::fd::AsRawFd;
    // SAFETY: the fd belongs to `socket`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    loop {
        let uninit = unsafe_uninit(&mut buf);
        match sock.recv_from_with_flags(uninit, libc::MSG_DONTWAIT) {
            Ok((n, peer)) => {
                let ip = peer
                    .as_socket()
                    .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                ingest_datagram(&shard, source, &buf[..n], ip).await;
            }
            Err(_) => return,
        }
    }
}

/// Lists a UDP socket's inode in the shard's counters while the socket is served, so the
/// metrics can count what the kernel dropped on it.
struct KernelDropsWatch {
    counters: Arc<ShardCounters>,
    inode: Option<u64>,
}

impl KernelDropsWatch {
    fn register(counters: &Arc<ShardCounters>, socket: &UdpSocket) -> Self {
        use std::os::fd::AsRawFd;
        let inode = crate::metrics::socket_inode(socket.as_raw_fd());
        if let (Some(inode), Ok(mut inodes)) = (inode, counters.udp_socket_inodes.lock()) {
            inodes.push(inode);
        }
        KernelDropsWatch {
            counters: Arc::clone(counters),
            inode,
        }
    }
}

impl Drop for KernelDropsWatch {
    fn drop(&mut self) {
        if let (Some(inode), Ok(mut inodes)) = (self.inode, self.counters.udp_socket_inodes.lock())
        {
            inodes.retain(|&i| i != inode);
        }
    }
}

/// Views an initialised byte buffer as `MaybeUninit` for socket2 (always sound: initialised
/// bytes are valid `MaybeUninit` bytes, and socket2 only writes into it).
fn unsafe_uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout; the callee never de-initialises.
    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
    )
}

/// One datagram is one event: trailing line ends are stripped, an oversize one is truncated.
async fn ingest_datagram(shard: &Shard, source: &SourceSpec, datagram: &[u8], ip: IpAddr) {
    shard.appender.note_arrival(std::time::Instant::now());
    shard.counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
    if shard.appender.status() == WalStatus::Blocked {
        // Waiting would only move the loss into the kernel's socket buffer, uncounted.
        shard
            .counters
            .udp_dropped_blocked
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut frame = datagram;
    while let [rest @ .., b'\n' | b'\r' | 0] = frame {
        frame = rest;
    }
    if frame.is_empty() {
        return;
    }
    let mut flags = FrameFlags::default();
    if frame.len() > source.max_frame {
        frame = &frame[..source.max_frame];
        flags.0 |= FrameFlags::TRUNCATED;
    }
    let mut tally = BatchTally::default();
    ingest_frame(shard, frame, flags, &BatchClock::now(), ip, &mut tally).await;
    shard.counters.add(&tally);
    add_to_source(&source.counters, shard.id, &tally);
}

fn add_to_source(counters: &SourceCounters, shard: usize, tally: &BatchTally) {
    if let Some(c) = counters.shard(shard) {
        SourceShardCounters::add(c, tally);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_keeps_a_connection_only_while_it_is_among_the_least_loaded() {
        let (txs, _rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| crossbeam_channel::unbounded()).unzip();
        let b = Balance::new(txs);
        // Every connection lands on shard 0 (the worst a hash can do).
        let placed: Vec<usize> = (0..6).map(|_| b.assign(0)).collect();
        assert_eq!(placed, vec![0, 1, 2, 0, 1, 2]);
        // A connection on shard 1 ends: the next one accepted anywhere goes there.
        b.release(1);
        assert_eq!(b.assign(2), 1);
        assert_eq!(b.assign(2), 2, "all equal again: served where accepted");
    }
}
