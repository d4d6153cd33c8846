//! Delivery: what every sink shares. Reads every shard's WAL, batches, retries, keeps the
//! cursors; the sink itself ([`crate::sinks`]) only writes and confirms.
//!
//! Each sink runs on its own thread (never a shard's) and gathers from every shard:
//! ```text
//!  shard-0 WAL ─┐  WalReader (from its cursor, up to the shard's DurableWatermark)
//!  shard-1 WAL ─┼─▶ encode (json | raw) ─▶ sink.deliver(batch) ─▶ confirmed ─▶ write cursor
//!  shard-n WAL ─┘
//! ```
//! A reader takes a shard's records from memory while the output keeps up (the shard's fast
//! path, [`storage::fast_path`]: its commits in a ring per shard → output), from the segment
//! files otherwise; the records, their ids and positions are the same either way.
//!
//! Invariants:
//! - A cursor advances only after the sink confirmed the batch (file: written and, by default,
//!   fdatasync'd; TCP: written to the socket). A crash between delivery and cursor write
//!   re-delivers that batch: duplicates possible, loss not.
//! - Cursor writes are fdatasync'd when the cursor enters a new segment, every
//!   [`CURSOR_SYNC_INTERVAL`], when the output idles and at stop; in between they are written
//!   unsynced (a crash brings back an older slot: duplicates, bounded by the interval).
//!   Retention follows synced positions only, so no segment is deleted that a crash could
//!   send the cursor back into.
//! - A failed delivery is retried, the same batch, with exponential backoff and full jitter
//!   (never shorter than the destination's `Retry-After`); records stay in the WAL meanwhile,
//!   so a stalled destination costs disk, never memory.
//! - A round gathers every shard's records (at most [`BATCH_BYTES`] of WAL per shard and read,
//!   up to `concurrency` × `batch.max_bytes` encoded), waiting up to `batch.timeout` while it
//!   holds fewer than `concurrency` full requests; it is handed to the sink in runs of at most
//!   `batch.max_events` / `batch.max_bytes` (up to `concurrency` of them at once),
//!   in order, one after the other. The cursors advance once every event of the round is
//!   confirmed or dead-lettered.
//! - Per event, a sink may confirm, ask for a resend (only those events are sent again), or
//!   reject for good: rejected events go to the output's dead-letter queue
//!   ([`storage::dead_letter`]) and are durable there before the cursor passes them. A queue
//!   that is full (or failing) holds the round back: the events stay in the WAL.
//! - On stop, a sink delivers up to the shards' final watermarks, bounded by
//!   `shutdown_timeout`; what it could not deliver stays in the WAL for the next start.

mod attempt;
mod batch;
mod cursor;
mod encode;

pub use batch::{
    Batch, BatchSettings, DeliveryResult, Failure, FailureKind, RequestBatch, StreamBatch, Verdicts,
};
pub use cursor::cursor_at;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use storage::{DurableWatermark, Position, Retention};

pub use encode::{
    encode_record, event_seconds, render_record, Encoding, LineBreaks, RecordEncoding, TcpFraming,
    Template,
};

use crate::metrics::OutputCounters;
use cursor::ShardCursor;

/// WAL bytes read per batch and shard.
pub const BATCH_BYTES: usize = 2 << 20;
/// Longest time a cursor position stays written but not synced.
pub const CURSOR_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How long an idle output sleeps when no shard wakes it (shards wake it on every commit).
pub const IDLE_PARK: Duration = Duration::from_millis(200);

/// A destination. `deliver` returns once the destination answered for every event of the
/// batch (or failed as a whole).
pub trait Sink {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult;
    /// Delivers several batches at once where the protocol allows (`concurrency`): the
    /// answers in the batches' order. By default one after the other.
    fn deliver_all(&mut self, batches: &[Batch]) -> Vec<DeliveryResult> {
        batches.iter().map(|b| self.deliver(b)).collect()
    }
    /// Called between failed attempts: drop connections, reopen files.
    fn reset(&mut self) {}
    /// Called when there is nothing to deliver (at least every
    /// [`IDLE_PARK`]): a sink can notice a broken connection and repair it
    /// before the next batch.
    fn idle(&mut self) {}
}

/// A sink ready to run: opened (so a refusal surfaces where the sink is started: at start,
/// Sluice exits; on a reload, the reload is refused), with its encoding and retry backoff.
pub struct OpenedSink {
    pub sink: Box<dyn Sink + Send>,
    pub encoding: RecordEncoding,
    pub backoff: Backoff,
    /// The destination may reject single events for good (they need a dead-letter queue, so
    /// each event's WAL record is kept with the batch).
    pub rejects_events: bool,
}

/// When an output stops trying for a while: after `failure_threshold` failed deliveries in a
/// row the circuit opens (no attempt for `open_for`), then one probe is let through
/// (half-open): its success closes the circuit, its failure opens it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitSettings {
    pub failure_threshold: u32,
    pub open_for: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// The breaker's state (the gauge's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// A circuit breaker: consecutive failures, state, and what to wait before the next attempt.
#[derive(Debug)]
pub struct Breaker {
    settings: CircuitSettings,
    failures: u32,
    state: CircuitState,
}

impl Breaker {
    pub fn new(settings: CircuitSettings) -> Self {
        Breaker {
            settings,
            failures: 0,
            state: CircuitState::Closed,
        }
    }

    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// A delivery failed: the new state, and whether the circuit just opened.
    pub fn failed(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        let opens = match self.state {
            CircuitState::HalfOpen => true,
            CircuitState::Closed => self.failures >= self.settings.failure_threshold,
            CircuitState::Open => false,
        };
        if opens {
            self.state = CircuitState::Open;
        }
        opens
    }

    /// The wait before the next attempt: `open_for` while open, else the backoff's.
    pub fn wait(&self, backoff: Duration) -> Duration {
        match self.state {
            CircuitState::Open => self.settings.open_for,
            _ => backoff,
        }
    }

    /// The wait passed: an open circuit lets one probe through.
    pub fn waited(&mut self) {
        if self.state == CircuitState::Open {
            self.state = CircuitState::HalfOpen;
        }
    }

    /// A delivery succeeded: whether the circuit was not closed before.
    pub fn succeeded(&mut self) -> bool {
        self.failures = 0;
        std::mem::replace(&mut self.state, CircuitState::Closed) != CircuitState::Closed
    }
}

/// Delay between failed deliveries: exponential from `initial` up to `max`, full jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// A shard's WAL as an output sees it.
#[derive(Clone, Debug)]
pub struct ShardLog {
    pub id: usize,
    pub dir: PathBuf,
    pub watermark: Arc<DurableWatermark>,
    /// Shared by every output: deletes segments all of them have passed.
    pub retention: Arc<Retention>,
    /// The id the shard's next durable record gets.
    pub next_record_id: Arc<std::sync::atomic::AtomicU64>,
    /// The shard's ready segment files (none with `wal.ready_segments = 0`).
    pub ready: Option<Arc<storage::ReadySegments>>,
    /// The shard's commits in memory for its outputs (`wal.fast_path_commits`).
    pub fast_path: Arc<storage::FastPath>,
}

/// Set by the runtime to stop an output once it has delivered everything.
#[derive(Debug, Default)]
pub struct OutputControl {
    stopping: AtomicBool,
    deadline: OnceLock<Instant>,
}

impl OutputControl {
    /// Deliver up to the current watermarks (the shards have stopped), then stop; give up on
    /// what is left at `deadline`.
    pub fn stop(&self, deadline: Instant) {
        let _ = self.deadline.set(deadline);
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }
    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }
    fn past_deadline(&self) -> bool {
        self.deadline.get().is_some_and(|d| Instant::now() >= *d)
    }
    fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }
}

pub struct OutputSpec {
    /// Also its slot in every shard's [`Retention`] and its cursor files' name.
    pub name: String,
    pub shards: Vec<ShardLog>,
    pub control: Arc<OutputControl>,
    pub counters: Arc<OutputCounters>,
    /// Its bit in routed records' route mask (`data_dir/sink-bits`): records without it are
    /// skipped unread.
    pub route_bit: u8,
    /// Per shard, where it starts when it has no cursor: the durable end when it was started
    /// (`start_at = "end"`), or `None` for the oldest record (`"oldest"`).
    pub start_positions: Option<Vec<Position>>,
    pub circuit: CircuitSettings,
    /// `batch.*`: how much one request carries, how long a batch waits to fill.
    pub batch: BatchSettings,
    /// Requests in flight at once (`concurrency`; 1 for stream sinks).
    pub concurrency: usize,
    /// Where events the destination rejected for good go (`data_dir/dlq/NAME`, created on
    /// the first rejection).
    pub dead_letters: storage::dead_letter::DeadLetters,
}

/// Why an output stopped for good (what retrying cannot fix).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("shard {shard}: cannot open the WAL: {source}")]
    OpenWal {
        shard: usize,
        #[source]
        source: storage::StorageError,
    },
}

/// The delay before the next attempt after failures: exponential with full jitter, or the
/// circuit breaker's `open_for` while it is open.
struct Retry {
    backoff: Backoff,
    failures: u32,
    breaker: Breaker,
}

impl Retry {
    fn new(backoff: Backoff, circuit: CircuitSettings) -> Self {
        Retry {
            backoff,
            failures: 0,
            breaker: Breaker::new(circuit),
        }
    }

    fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .backoff
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.backoff.max);
        self.failures += 1;
        ceiling.mul_f64(fastrand::f64())
    }
}

/// One round: the encoded events of every shard that had records.
struct Round {
    batch: Batch,
    scratch: Vec<u8>,
    /// Shards whose readers moved in this round (index).
    gathered: Vec<usize>,
    /// When the round got its first records (`batch.timeout` runs from there).
    started: Option<Instant>,
}

impl Round {
    fn new(batch: Batch) -> Self {
        Round {
            batch,
            scratch: Vec::new(),
            gathered: Vec::new(),
            started: None,
        }
    }

    fn has(&self, shard: usize) -> bool {
        self.gathered.contains(&shard)
    }

    fn add(&mut self, shard: usize) {
        if !self.has(shard) {
            self.gathered.push(shard);
        }
        self.started.get_or_insert_with(Instant::now);
    }

    /// Whether to wait for more events before delivering: the batch is not full and its
    /// timeout has not passed (never while stopping).
    fn wait_for_more(&self, limits: &RoundLimits, stopping: bool) -> Option<Duration> {
        let started = self.started?;
        if stopping || self.full(limits) || self.batch.is_empty() || limits.batch.timeout.is_zero()
        {
            return None;
        }
        limits.batch.timeout.checked_sub(started.elapsed())
    }

    /// Holds `concurrency` requests' worth.
    fn full(&self, limits: &RoundLimits) -> bool {
        self.batch.len() as u64 >= limits.events()
            || self.batch.bytes().len() as u64 >= limits.bytes()
    }

    fn clear(&mut self) {
        self.batch.clear();
        self.gathered.clear();
        self.started = None;
    }
}

/// How much a round holds: `concurrency` requests' worth.
struct RoundLimits {
    batch: BatchSettings,
    concurrency: usize,
}

impl RoundLimits {
    fn events(&self) -> u64 {
        u64::from(self.batch.max_events) * self.concurrency as u64
    }
    fn bytes(&self) -> u64 {
        self.batch.max_bytes.saturating_mul(self.concurrency as u64)
    }
}

/// Runs one output until stopped. Returns an error only for what retrying cannot fix.
pub fn run_output(spec: OutputSpec, opened: OpenedSink) -> Result<(), DeliveryError> {
    let OpenedSink {
        mut sink,
        encoding,
        backoff,
        rejects_events,
    } = opened;
    let limits = RoundLimits {
        batch: spec.batch,
        concurrency: spec.concurrency.max(1),
    };
    let mut retry = Retry::new(backoff, spec.circuit);
    let mut shards = spec
        .shards
        .iter()
        .map(|log| ShardCursor::open(&spec, log))
        .collect::<Result<Vec<_>, _>>()?;
    let mut round = Round::new(Batch::new(rejects_events));
    // When told to stop: what was durable at that moment is what remains to deliver (a
    // reload stops an output while ingest goes on).
    let mut final_watermarks: Option<Vec<Position>> = None;
    loop {
        let stopping = spec.control.stopping();
        if stopping && final_watermarks.is_none() {
            final_watermarks = Some(spec.shards.iter().map(|s| s.watermark.load()).collect());
        }
        let reading = Reading {
            encoding: &encoding,
            limits: &limits,
            final_watermarks: final_watermarks.as_deref(),
        };
        let added = gather(&spec, &mut shards, &reading, &mut round, &mut retry);
        if !round.gathered.is_empty() {
            let more_durable = added && !round.full(&limits) && !limits.batch.timeout.is_zero();
            if more_durable && !stopping {
                continue; // What is already durable fills the round first, without waiting.
            }
            if let Some(wait) = round.wait_for_more(&limits, stopping) {
                // Shards wake the output on every commit: the round grows until full or due.
                std::thread::park_timeout(wait);
                continue;
            }
            let mut attempt = attempt::Attempt {
                concurrency: limits.concurrency,
                spec: &spec,
                sink: sink.as_mut(),
                retry: &mut retry,
            };
            if !attempt.deliver_round(&round.batch, &limits.batch) {
                tracing::warn!(sink = %spec.name, "shutdown timeout reached: undelivered records stay in the WAL for the next start");
                return Ok(());
            }
            confirm(&spec, &mut shards, &round);
            round.clear();
            continue;
        }
        if idle(&spec, &mut shards, stopping) == Idle::Done {
            return Ok(());
        }
        sink.idle();
        std::thread::park_timeout(IDLE_PARK);
    }
}

#[derive(PartialEq, Eq)]
enum Idle {
    Wait,
    /// Stopping, and nothing is left to deliver or save (or the deadline passed).
    Done,
}

/// Nothing to deliver: sync what was written unsynced (so retention can follow it); while
/// stopping, whether the output is done.
fn idle(spec: &OutputSpec, shards: &mut [ShardCursor], stopping: bool) -> Idle {
    for shard in shards.iter_mut() {
        shard.sync_if_dirty(spec);
    }
    let unsaved = shards.iter().any(|s| s.unsaved);
    if stopping && !unsaved {
        return Idle::Done;
    }
    if stopping && spec.control.past_deadline() {
        tracing::warn!(sink = %spec.name, "shutdown timeout reached with a cursor unsaved: that batch will be delivered again");
        return Idle::Done;
    }
    Idle::Wait
}

/// How a round reads: the encoding, the batch limits, and the last positions while stopping.
struct Reading<'a> {
    encoding: &'a RecordEncoding,
    limits: &'a RoundLimits,
    final_watermarks: Option<&'a [Position]>,
}

/// Adds every shard's next records to the round, up to the batch's byte limit; whether any
/// shard had records.
fn gather(
    spec: &OutputSpec,
    shards: &mut [ShardCursor],
    reading: &Reading,
    round: &mut Round,
    retry: &mut Retry,
) -> bool {
    let mut added = false;
    for (i, shard) in shards.iter_mut().enumerate() {
        let room = reading
            .limits
            .bytes()
            .saturating_sub(round.batch.bytes().len() as u64);
        if room == 0 {
            break;
        }
        let durable = shard.log.watermark.load();
        let limit = match reading.final_watermarks.and_then(|last| last.get(i)) {
            Some(&last) => last.min(durable),
            None => durable,
        };
        // WAL bytes to read: about what still fits (records and their encodings are of
        // similar size), at least a useful read.
        let wal_bytes = (room as usize).clamp(64 << 10, BATCH_BYTES);
        let in_round = round.has(i);
        let read = ShardRead {
            encoding: reading.encoding,
            limit,
            wal_bytes,
            in_round,
        };
        if read_shard(spec, shard, &read, round, retry) {
            round.add(i);
            added = true;
        }
    }
    added
}

/// One shard's read into the round.
struct ShardRead<'a> {
    encoding: &'a RecordEncoding,
    limit: Position,
    wal_bytes: usize,
    /// The shard already has unconfirmed records in the round: its reader is ahead of its
    /// cursor, so no cursor may be written from it now.
    in_round: bool,
}

/// Encodes one shard's records up to the read's limit into the round; false when it had none
/// (or its WAL could not be read this time).
fn read_shard(
    spec: &OutputSpec,
    shard: &mut ShardCursor,
    read: &ShardRead,
    round: &mut Round,
    retry: &mut Retry,
) -> bool {
    if shard.unsaved && !read.in_round {
        shard.save(spec, true);
    }
    let (mut undecodable, mut skipped) = (0u64, 0u64);
    let id = shard.log.id;
    let bit = spec.route_bit;
    let (batch, scratch) = (&mut round.batch, &mut round.scratch);
    let result = shard
        .reader
        .read_batch(read.limit, read.wal_bytes, |payload| {
            if !ingest::record::wanted_by(payload, bit) {
                skipped += 1;
            } else if encode_record(payload, id, read.encoding, batch.buffer(), scratch) {
                batch.end_event(payload, id);
            } else {
                undecodable += 1;
            }
        });
    let result = match result {
        Ok(b) => b,
        Err(e) => {
            // Could not read the WAL (I/O error): nothing was delivered; try again.
            spec.counters.errors.fetch_add(1, Relaxed);
            tracing::error!(sink = %spec.name, shard = id, error = %e, "cannot read the WAL; retrying");
            std::thread::park_timeout(retry.next_delay());
            return false;
        }
    };
    shard.publish_reader_counts(spec);
    if undecodable > 0 {
        spec.counters.undecodable.fetch_add(undecodable, Relaxed);
        tracing::error!(sink = %spec.name, shard = id, undecodable, "WAL records that are not events were skipped");
    }
    if skipped > 0 {
        spec.counters.skipped_not_routed.fetch_add(skipped, Relaxed);
    }
    if result.records == 0 {
        if !read.in_round {
            shard.persist_progress(spec);
        }
        return false;
    }
    true
}

/// The round was delivered: advance (and write) the cursors of the shards in it.
fn confirm(spec: &OutputSpec, shards: &mut [ShardCursor], round: &Round) {
    for &i in &round.gathered {
        if let Some(shard) = shards.get_mut(i) {
            shard.save(spec, false);
            shard.saved = shard.reader.position();
        }
    }
}

fn publish_circuit(spec: &OutputSpec, breaker: &Breaker) {
    spec.counters
        .circuit_state
        .store(breaker.state() as i64, Relaxed);
}

/// Parks for `delay` (a stop unparks); false when the stop deadline passed first.
fn wait_or_deadline(spec: &OutputSpec, delay: Duration) -> bool {
    let until = Instant::now() + delay;
    loop {
        if spec.control.past_deadline() {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        let wait = match spec.control.deadline() {
            Some(deadline) => (until - now).min(deadline.saturating_duration_since(now)),
            None => until - now,
        };
        std::thread::park_timeout(wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_closes_on_a_probe() {
        let mut b = Breaker::new(CircuitSettings {
            failure_threshold: 3,
            open_for: Duration::from_secs(7),
        });
        let backoff = Duration::from_millis(10);
        assert!(!b.failed() && !b.failed());
        assert_eq!(
            (b.state(), b.wait(backoff)),
            (CircuitState::Closed, backoff)
        );
        assert!(b.failed(), "the third failure in a row opens it");
        assert_eq!(
            (b.state(), b.wait(backoff)),
            (CircuitState::Open, Duration::from_secs(7))
        );
        b.waited();
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert!(b.failed(), "a failed probe opens it again");
        b.waited();
        assert!(b.succeeded(), "a good probe closes it");
        assert_eq!(b.state(), CircuitState::Closed);
        assert!(!b.failed() && !b.failed(), "the count starts again");
        assert!(!b.succeeded());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut r = Retry {
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            },
            failures: 0,
            breaker: Breaker::new(CircuitSettings::default()),
        };
        for _ in 0..50 {
            assert!(r.next_delay() <= Duration::from_secs(1));
        }
        assert_eq!(r.failures, 50);
    }
}
