//! Outputs: deliver durable WAL records at least once.
//!
//! Each sink runs on its own thread (never a shard's) and gathers from every shard:
//! ```text
//!  shard-0 WAL ─┐  WalReader (from its cursor, up to the shard's DurableWatermark)
//!  shard-1 WAL ─┼─▶ encode (json | raw) ─▶ sink.deliver(batch) ─▶ confirmed ─▶ write cursor
//!  shard-n WAL ─┘
//! ```
//! Invariants:
//! - A cursor advances only after the sink confirmed the batch (file: written and, by default,
//!   fdatasync'd; TCP: written to the socket). A crash between delivery and cursor write
//!   re-delivers that batch: duplicates possible, loss not.
//! - Cursor writes are fdatasync'd when the cursor enters a new segment, every
//!   [`CURSOR_SYNC_INTERVAL`], when the output idles and at stop; in between they are written
//!   unsynced (a crash brings back an older slot: duplicates, bounded by the interval).
//!   Retention follows synced positions only, so no segment is deleted that a crash could
//!   send the cursor back into.
//! - A failed delivery is retried, the same batch, with exponential backoff and full jitter;
//!   records stay in the WAL meanwhile, so a stalled destination costs disk, never memory.
//! - Batches are bounded by [`BATCH_BYTES`] of WAL bytes per shard; one delivery per round
//!   gathers the batches of every shard that has records (one write and one fdatasync).
//! - On stop, a sink delivers up to the shards' final watermarks, bounded by
//!   `shutdown_timeout`; what it could not deliver stays in the WAL for the next start.

mod encode;
mod file;
mod tcp;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use storage::{DurableWatermark, Retention, WalReader};

pub use encode::{encode_record, RecordEncoding};

use crate::config::SinkConfig;
use crate::metrics::OutputCounters;

/// WAL bytes read per batch and shard.
pub const BATCH_BYTES: usize = 2 << 20;
/// Longest time a cursor position stays written but not synced.
pub const CURSOR_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How long an idle output sleeps when no shard wakes it (shards wake it on every commit).
const IDLE_PARK: Duration = Duration::from_millis(200);

/// A destination. `deliver` returns only when the batch is confirmed.
pub trait Sink {
    fn deliver(&mut self, batch: &[u8]) -> std::io::Result<()>;
    /// Called between failed attempts: drop connections, reopen files.
    fn reset(&mut self) {}
    /// Called when there is nothing to deliver (at least every [`IDLE_PARK`]): a sink can
    /// notice a broken connection and repair it before the next batch.
    fn idle(&mut self) {}
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
}

pub struct OutputSpec {
    /// Also its slot in every shard's [`Retention`] and its cursor files' name.
    pub name: String,
    pub config: SinkConfig,
    pub shards: Vec<ShardLog>,
    pub control: Arc<OutputControl>,
    pub counters: Arc<OutputCounters>,
}

/// Backoff between failed deliveries: exponential with full jitter.
struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures += 1;
        ceiling.mul_f64(fastrand::f64())
    }
}

/// A sink ready to run: opened (so a refusal surfaces where the sink is started: at start,
/// Sluice exits; on a reload, the reload is refused), with its encoding and retry backoff.
pub struct OpenedSink {
    sink: Box<dyn Sink + Send>,
    how: RecordEncoding,
    /// (initial, max) delay between failed deliveries.
    backoff: (Duration, Duration),
}

/// Opens the destination `config` names (the file sink decides here whether it may write).
pub fn open_sink(config: &SinkConfig) -> Result<OpenedSink, String> {
    let (sink, how, backoff): (Box<dyn Sink + Send>, _, _) = match config {
        SinkConfig::File(c) => (
            Box::new(file::FileOutput::open(c).map_err(|e| e.to_string())?),
            RecordEncoding {
                encoding: c.encoding,
                framing: None,
                line_breaks: c.line_breaks,
            },
            (Duration::from_millis(100), Duration::from_secs(5)),
        ),
        SinkConfig::Tcp(c) => (
            Box::new(tcp::TcpOutput::new(c)),
            RecordEncoding {
                encoding: c.encoding,
                framing: Some(c.framing),
                line_breaks: c.line_breaks,
            },
            (c.initial_backoff, c.max_backoff),
        ),
    };
    Ok(OpenedSink { sink, how, backoff })
}

/// Runs one output until stopped. Returns an error only for what retrying cannot fix.
pub fn run_output(spec: OutputSpec, opened: OpenedSink) -> Result<(), String> {
    let OpenedSink {
        mut sink,
        how,
        backoff,
    } = opened;
    let mut backoff = Backoff {
        initial: backoff.0,
        max: backoff.1,
        failures: 0,
    };
    let mut readers = Vec::with_capacity(spec.shards.len());
    for shard in &spec.shards {
        let cursor = match storage::read_cursor(&shard.dir, &spec.name) {
            Ok(c) => c,
            Err(e) => {
                // At-least-once: a damaged cursor means re-delivering from the oldest segment.
                tracing::error!(sink = %spec.name, shard = shard.id, error = %e, "cursor unreadable: starting from the oldest record");
                None
            }
        };
        let reader = WalReader::open(&shard.dir, cursor).map_err(|e| e.to_string())?;
        if cursor.is_none() {
            // Create the cursor file now, while there is disk space: later updates overwrite
            // it in place and never need a new block, even on a full disk.
            let mut state = CursorSyncState::new(reader.position().segment);
            save_cursor(&spec, shard, reader.cursor(), &mut state, true);
        }
        retain(&spec, shard, reader.position().segment);
        readers.push(reader);
    }
    let mut out = Vec::with_capacity(BATCH_BYTES * 2);
    let mut scratch = Vec::new();
    // Shards whose latest confirmed position is not persisted yet (a cursor write failed).
    let mut unsaved = vec![false; spec.shards.len()];
    // The position last handed to `save_cursor`, per shard.
    let mut saved: Vec<_> = readers.iter().map(|r| r.position()).collect();
    let mut syncs: Vec<CursorSyncState> = readers
        .iter()
        .map(|r| CursorSyncState::new(r.position().segment))
        .collect();
    // (damaged skips, damaged records) already added to the counters, per shard.
    let mut damage_seen = vec![(0u64, 0u64); spec.shards.len()];
    // When told to stop: what was durable at that moment is what remains to deliver (a
    // reload stops an output while ingest goes on).
    let mut final_watermarks: Option<Vec<storage::Position>> = None;
    loop {
        let stopping = spec.control.stopping();
        if stopping && final_watermarks.is_none() {
            final_watermarks = Some(spec.shards.iter().map(|s| s.watermark.load()).collect());
        }
        // One delivery per round gathers every shard's batch (one write, one fdatasync).
        out.clear();
        // Shards in this round's delivery, with the events they put in it.
        let mut gathered: Vec<(usize, u64)> = Vec::new();
        for (i, (shard, reader)) in spec.shards.iter().zip(readers.iter_mut()).enumerate() {
            if unsaved[i] {
                unsaved[i] = !save_cursor(&spec, shard, reader.cursor(), &mut syncs[i], true);
            }
            let mut undecodable = 0u64;
            let durable = match &final_watermarks {
                Some(last) => last[i].min(shard.watermark.load()),
                None => shard.watermark.load(),
            };
            let batch = reader.read_batch(durable, BATCH_BYTES, |payload| {
                if !encode_record(payload, shard.id, how, &mut out, &mut scratch) {
                    undecodable += 1;
                }
            });
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    // Could not read the WAL (I/O error): nothing was delivered; try again.
                    spec.counters.errors.fetch_add(1, Relaxed);
                    tracing::error!(sink = %spec.name, shard = shard.id, error = %e, "cannot read the WAL; retrying");
                    std::thread::sleep(backoff.next_delay());
                    continue;
                }
            };
            publish_damage(&spec, reader, &mut damage_seen[i]);
            if undecodable > 0 {
                spec.counters.undecodable.fetch_add(undecodable, Relaxed);
                tracing::error!(sink = %spec.name, shard = shard.id, undecodable, "WAL records that are not events were skipped");
            }
            if batch.records == 0 {
                // Moved over empty or damaged segments without a record: persist that too,
                // or retention would keep them (and their reserved space) forever.
                if reader.position() != saved[i] && !unsaved[i] {
                    unsaved[i] = !save_cursor(&spec, shard, reader.cursor(), &mut syncs[i], true);
                    saved[i] = reader.position();
                }
                if !unsaved[i] {
                    publish_caught_up(&spec, shard, reader);
                }
                continue;
            }
            gathered.push((i, batch.records as u64 - undecodable));
        }
        let delivered_any = !gathered.is_empty();
        if delivered_any {
            if !deliver_with_retry(&spec, sink.as_mut(), &out, &mut backoff) {
                tracing::warn!(sink = %spec.name, "shutdown timeout reached: undelivered records stay in the WAL for the next start");
                return Ok(());
            }
            for &(i, events) in &gathered {
                let (shard, reader) = (&spec.shards[i], &readers[i]);
                unsaved[i] = !save_cursor(&spec, shard, reader.cursor(), &mut syncs[i], false);
                saved[i] = reader.position();
                spec.counters.events_sent.fetch_add(events, Relaxed);
            }
            spec.counters
                .bytes_sent
                .fetch_add(out.len() as u64, Relaxed);
        }
        if !delivered_any {
            // Idle: sync what was written unsynced, so retention can follow it.
            for (i, (shard, reader)) in spec.shards.iter().zip(readers.iter()).enumerate() {
                if syncs[i].dirty && !unsaved[i] {
                    unsaved[i] = !save_cursor(&spec, shard, reader.cursor(), &mut syncs[i], true);
                }
            }
            if stopping && !unsaved.contains(&true) {
                return Ok(());
            }
            if stopping && spec.control.past_deadline() {
                tracing::warn!(sink = %spec.name, "shutdown timeout reached with a cursor unsaved: that batch will be delivered again");
                return Ok(());
            }
            sink.idle();
            std::thread::park_timeout(IDLE_PARK);
        }
    }
}

/// Caught up and persisted: the lag metric needs the id of the next record, which a reader
/// that has read nothing yet learns from the segment header.
fn publish_caught_up(spec: &OutputSpec, shard: &ShardLog, reader: &mut WalReader) {
    if let (Ok(id @ 1..), Some(slot)) = (
        reader.next_id(shard.watermark.load()),
        spec.counters.cursor_next_ids.get(shard.id),
    ) {
        slot.store(id, Relaxed);
    }
}

/// Adds the reader's new damage findings to the output's counters.
fn publish_damage(spec: &OutputSpec, reader: &WalReader, seen: &mut (u64, u64)) {
    let now = (reader.damaged_skips, reader.damaged_records);
    if now != *seen {
        let c = &spec.counters;
        c.wal_damaged_skips.fetch_add(now.0 - seen.0, Relaxed);
        c.wal_damaged_records.fetch_add(now.1 - seen.1, Relaxed);
        *seen = now;
    }
}

/// When a shard's cursor was last synced, and whether a newer position is written unsynced.
struct CursorSyncState {
    segment: u64,
    at: Instant,
    dirty: bool,
}

impl CursorSyncState {
    fn new(segment: u64) -> Self {
        CursorSyncState {
            segment,
            at: Instant::now(),
            dirty: false,
        }
    }
}

/// Persists the cursor after a confirmed batch; synced (and retention follows it) when `force`,
/// when it entered a new segment, or when the last sync is [`CURSOR_SYNC_INTERVAL`] old. A
/// failed write (a full disk, say) is counted and retried later: the output keeps delivering,
/// retention waits for the persisted position, and a crash meanwhile only means duplicates.
fn save_cursor(
    spec: &OutputSpec,
    shard: &ShardLog,
    cursor: storage::Cursor,
    state: &mut CursorSyncState,
    force: bool,
) -> bool {
    let sync = force
        || cursor.position.segment != state.segment
        || state.at.elapsed() >= CURSOR_SYNC_INTERVAL;
    let how = if sync {
        storage::CursorSync::Now
    } else {
        storage::CursorSync::Later
    };
    match storage::write_cursor_with(&shard.dir, &spec.name, cursor, how) {
        Ok(()) => {
            if let Some(slot) = spec.counters.cursor_next_ids.get(shard.id) {
                slot.store(cursor.next_id, Relaxed);
            }
            if sync {
                *state = CursorSyncState::new(cursor.position.segment);
                retain(spec, shard, cursor.position.segment);
            } else {
                state.dirty = true;
            }
            true
        }
        Err(e) => {
            spec.counters.errors.fetch_add(1, Relaxed);
            tracing::warn!(sink = %spec.name, shard = shard.id, error = %e, "cannot save the cursor; will retry");
            false
        }
    }
}

/// Tells the shard's retention where this output's cursor is; deletion failures are logged
/// (they cost disk, not data) and retried at the next advance.
fn retain(spec: &OutputSpec, shard: &ShardLog, cursor_segment: u64) {
    let active = shard.watermark.load().segment;
    if let Err(e) = shard.retention.advance(&spec.name, cursor_segment, active) {
        tracing::warn!(sink = %spec.name, shard = shard.id, error = %e, "cannot delete delivered segments");
    }
}

/// Delivers `batch`, retrying until it is confirmed; false if the stop deadline passed first.
fn deliver_with_retry(
    spec: &OutputSpec,
    sink: &mut dyn Sink,
    batch: &[u8],
    backoff: &mut Backoff,
) -> bool {
    loop {
        match sink.deliver(batch) {
            Ok(()) => {
                backoff.failures = 0;
                return true;
            }
            Err(e) => {
                spec.counters.errors.fetch_add(1, Relaxed);
                sink.reset();
                let delay = backoff.next_delay();
                tracing::warn!(sink = %spec.name, error = %e, retry_in = ?delay, "delivery failed");
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    if spec.control.past_deadline() {
                        return false;
                    }
                    std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
                }
                if spec.control.past_deadline() {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            failures: 0,
        };
        for _ in 0..50 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        assert_eq!(b.failures, 50);
    }
}
