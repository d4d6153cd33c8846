//! The shard's WAL writer: an append buffer shared by the shard's tasks, and one flusher task
//! that commits it in groups.
//!
//! ```text
//!  connection tasks ──try_append──▶ pending buffer ──take──▶ flusher: write_at ─▶ fdatasync
//!         ▲  (Full: wait_for_space)                              │
//!         └──────────────── space freed ◀────────────────────────┘ publish watermark
//! ```
//! Double buffering: the flusher takes the whole pending buffer before it writes, so tasks keep
//! appending into a fresh one while the previous is in flight. At most two buffers exist;
//! a task that finds the pending buffer full waits, which stops it reading its socket: the
//! kernel's TCP window then pushes back on the sender (natural backpressure, bounded memory).
//!
//! Overlapped commits: a commit's fdatasync runs in its own task, so with `commits_in_flight`
//! above 1 (default [`DEFAULT_COMMITS_IN_FLIGHT`]) the next commit (due after the interval) is
//! written and synced while it runs, at most that many fdatasyncs outstanding. Invariants:
//! - writes are issued one at a time, in order (an O_DIRECT write rewrites the block the
//!   previous one ended in, so it must have completed);
//! - the watermark advances in commit order: a commit is published only once its own
//!   fdatasync and every earlier one's succeeded (one that finished first waits);
//! - a failed fdatasync loses its commit and every later one in flight (their bytes follow
//!   it in the same segment, which is abandoned from the last published offset);
//! - a new segment starts (seal, rotation) only with nothing in flight.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;

use crate::block::BlockCompressor;
use crate::budget::{DiskBudget, FullPolicy};
use crate::error::StorageError;
use crate::fast_path::{Commit, FastPath};
use crate::frame::{
    begin_record, finish_record_salted, header_at, FRAME_HEADER_LEN, MAX_RECORD_LEN,
};
use crate::io::{SegmentFile, SegmentFs};
use crate::latency::{Arrivals, LatencyHistogram, DURABLE_BUCKETS_SECONDS, FSYNC_BUCKETS_SECONDS};
use crate::position::{DurableWatermark, Position, MAX_SEGMENT_SIZE};
use crate::pressure::DiskPressure;
use crate::ready::ReadySegments;
use crate::segment::{chain_record, segment_header, segment_path, Footer, SEGMENT_HEADER_LEN};

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fdatasync as soon as there is anything to write (group commit of whatever accumulated
    /// while the previous sync ran).
    Always,
    /// Write and fdatasync at most this long after a record was appended (or when the buffer
    /// fills).
    Interval(Duration),
    /// Write on the default interval, never fdatasync: durable against `kill -9`, not power loss.
    Never,
}

impl FsyncPolicy {
    const NEVER_WRITE_INTERVAL: Duration = Duration::from_millis(5);

    fn syncs(self) -> bool {
        self != FsyncPolicy::Never
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match humantime::parse_duration(other) {
                Ok(d) if d.is_zero() => Ok(FsyncPolicy::Always),
                Ok(d) => Ok(FsyncPolicy::Interval(d)),
                Err(e) => Err(format!(
                    "expected \"always\", \"never\" or a duration like \"5ms\", got {other:?} ({e})"
                )),
            },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalStatus {
    Running,
    /// A write or fdatasync failed: appends wait (backpressure) while the flusher retries
    /// starting a new segment from the last durable point.
    Blocked,
    /// Closing: the flusher commits what is pending, then stops.
    Draining,
    Stopped,
    /// Closed while blocked: what was pending could not be written (counted as lost).
    Failed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AppendError {
    /// No room now (buffer full, or the WAL is blocked on a disk error): wait for space.
    Full,
    /// The WAL accepts nothing more (closing, stopped or failed).
    Stopped,
}

/// How long a blocked WAL waits between attempts to start a new segment (default).
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How often a WAL blocked by the disk budget checks it again.
const BUDGET_POLL: Duration = Duration::from_millis(10);
/// Lost record ranges remembered (for tests and tools); older ones are forgotten.
const LOST_RANGES_KEPT: usize = 1024;

/// Counters of one WAL (single writer: the shard's thread).
#[derive(Debug)]
pub struct WalStats {
    pub appended_records: Cell<u64>,
    pub appended_bytes: Cell<u64>,
    pub durable_records: Cell<u64>,
    /// Bytes written to segment files (a compressed commit counts what it took on disk).
    pub written_bytes: Cell<u64>,
    /// Commits written as compressed blocks ([`crate::block`]), and the record bytes they held.
    pub block_commits: Cell<u64>,
    pub block_raw_bytes: Cell<u64>,
    pub fsyncs: Cell<u64>,
    /// fdatasync latencies.
    pub fsync: LatencyHistogram,
    /// Latencies of a commit's write (handing the batch to the kernel).
    pub write: LatencyHistogram,
    /// Ingest (socket read) → durable (fdatasync done; written, under `FsyncPolicy::Never`),
    /// per record.
    pub ingest_durable: LatencyHistogram,
    /// When the records not yet durable arrived (see [`WalAppender::note_arrival`]).
    arrivals: Arrivals,
    pub segments_created: Cell<u64>,
    /// New segments made from a ready file (see [`crate::ready`]).
    pub segments_from_ready: Cell<u64>,
    /// New segments created as new files because no ready file was there (with ready files
    /// configured): their commits pay the file system's metadata updates.
    pub ready_misses: Cell<u64>,
    /// Segments started as new files (a miss) that were sealed early, at the first commit
    /// after a ready file became available, so the metadata cost lasts only until then.
    pub ready_switches: Cell<u64>,
    /// Records whose write or fdatasync failed: never durable, counted, never retried.
    pub lost_records: Cell<u64>,
    /// Write/fdatasync failures (each blocks ingest until a new segment could be started).
    pub io_failures: Cell<u64>,
    /// Commits whose write started while an earlier commit's fdatasync was still running
    /// (`commits_in_flight` above 1).
    pub overlapped_commits: Cell<u64>,
    /// Times records were pending while `commits_in_flight` fdatasyncs were outstanding (the
    /// limit reached): their commit waited for the oldest to finish.
    pub in_flight_full: Cell<u64>,
    /// Times the disk budget (`max_disk`, `min_free_disk`) blocked ingest.
    pub budget_blocks: Cell<u64>,
    /// `[first, end)` append indices of lost records, in order (the latest ones only).
    pub lost_ranges: RefCell<Vec<(u64, u64)>>,
}

impl Default for WalStats {
    fn default() -> Self {
        WalStats {
            appended_records: Cell::new(0),
            appended_bytes: Cell::new(0),
            durable_records: Cell::new(0),
            written_bytes: Cell::new(0),
            block_commits: Cell::new(0),
            block_raw_bytes: Cell::new(0),
            fsyncs: Cell::new(0),
            fsync: LatencyHistogram::new(FSYNC_BUCKETS_SECONDS),
            write: LatencyHistogram::new(FSYNC_BUCKETS_SECONDS),
            ingest_durable: LatencyHistogram::new(DURABLE_BUCKETS_SECONDS),
            arrivals: Arrivals::default(),
            segments_created: Cell::new(0),
            segments_from_ready: Cell::new(0),
            ready_misses: Cell::new(0),
            ready_switches: Cell::new(0),
            lost_records: Cell::new(0),
            io_failures: Cell::new(0),
            overlapped_commits: Cell::new(0),
            in_flight_full: Cell::new(0),
            budget_blocks: Cell::new(0),
            lost_ranges: RefCell::new(Vec::new()),
        }
    }
}

/// Some records were not made durable (a failed write, or the WAL stopped first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not durable: the WAL lost or did not write these records")]
pub struct NotDurable;

/// The shard-local append side, shared (`Rc`) by every task of the shard.
pub struct WalAppender {
    pending: RefCell<Vec<u8>>,
    /// Each pending record's own checksum (unsalted), in order, for the segment's footer
    /// ([`crate::segment::FooterChecksum::Records`]): taken while the record is in the cache.
    /// Walking a commit's frame headers instead missed the cache once per record. Its length
    /// is the number of pending records.
    pending_checksums: RefCell<Vec<u32>>,
    /// When the first record of the pending buffer was appended: the group-commit interval
    /// counts from here, so no record waits longer than the interval plus one commit.
    first_pending_at: Cell<Option<std::time::Instant>>,
    capacity: usize,
    policy: FsyncPolicy,
    status: Cell<WalStatus>,
    failure: RefCell<Option<String>>,
    space: Event,
    wake_flusher: Event,
    durable: Event,
    /// The checksum mask the pending buffer's records carry: the current segment's
    /// ([`crate::frame::salt`]), applied as each record is finished, so a commit needs no
    /// pass over its records (only a rotation re-salts, once).
    salt: Cell<u32>,
    pub stats: WalStats,
}

/// A taken pending buffer, the checksum mask its records carry and their own checksums.
struct Taken {
    buf: Vec<u8>,
    salt: u32,
    checksums: Vec<u32>,
}

impl WalAppender {
    /// `capacity`: bytes of the pending buffer (the group-commit batch bound).
    pub fn new(capacity: usize, policy: FsyncPolicy) -> Rc<Self> {
        Rc::new(WalAppender {
            pending: RefCell::new(Vec::with_capacity(capacity)),
            pending_checksums: RefCell::new(Vec::new()),
            first_pending_at: Cell::new(None),
            capacity,
            policy,
            status: Cell::new(WalStatus::Running),
            failure: RefCell::new(None),
            space: Event::new(),
            wake_flusher: Event::new(),
            durable: Event::new(),
            salt: Cell::new(0),
            stats: WalStats::default(),
        })
    }

    pub fn status(&self) -> WalStatus {
        self.status.get()
    }

    pub fn failure(&self) -> Option<String> {
        self.failure.borrow().clone()
    }

    /// Appends one record of `payload_len` bytes written by `fill` (which must append exactly
    /// that many bytes to the buffer it is given).
    pub fn try_append(
        &self,
        payload_len: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), AppendError> {
        match self.status.get() {
            WalStatus::Running => {}
            WalStatus::Blocked => return Err(AppendError::Full),
            _ => return Err(AppendError::Stopped),
        }
        debug_assert!(payload_len <= MAX_RECORD_LEN);
        let mut buf = self.pending.borrow_mut();
        let was_empty = buf.is_empty();
        if !was_empty && buf.len() + FRAME_HEADER_LEN + payload_len > self.capacity {
            drop(buf);
            self.wake_flusher.notify(1);
            return Err(AppendError::Full);
        }
        if was_empty {
            self.first_pending_at.set(Some(std::time::Instant::now()));
        }
        let start = begin_record(&mut buf);
        fill(&mut buf);
        let salt = self.salt.get();
        let written = finish_record_salted(&mut buf, start, salt);
        debug_assert_eq!(written, payload_len);
        let (_, stored) = header_at(&buf, start);
        self.pending_checksums.borrow_mut().push(stored ^ salt);
        self.stats
            .appended_records
            .set(self.stats.appended_records.get() + 1);
        self.stats
            .appended_bytes
            .set(self.stats.appended_bytes.get() + (FRAME_HEADER_LEN + written) as u64);
        if was_empty && self.policy == FsyncPolicy::Always {
            self.wake_flusher.notify(1);
        }
        Ok(())
    }

    /// Notes that bytes arrived now (a socket read): the records appended from now on are
    /// timed from here until they are durable (`stats.ingest_durable`).
    pub fn note_arrival(&self, at: std::time::Instant) {
        self.stats
            .arrivals
            .note(at, self.stats.appended_records.get());
    }

    /// Waits until the pending buffer may have room again or the WAL's status changed
    /// (blocked, unblocked, closing). Callers retry their append after it.
    pub async fn wait_for_space(&self) {
        let listener = self.space.listen();
        match self.status.get() {
            WalStatus::Running if self.pending.borrow().is_empty() => {}
            WalStatus::Running | WalStatus::Blocked => listener.await,
            _ => {}
        }
    }

    /// Resolves once every record appended before the call is settled: durable, or lost to a
    /// failed write (or the WAL stopped).
    pub async fn wait_durable(&self) {
        let target = self.stats.appended_records.get();
        loop {
            let listener = self.durable.listen();
            let status = self.status.get();
            let settled = self.stats.durable_records.get() + self.stats.lost_records.get();
            if settled >= target || matches!(status, WalStatus::Stopped | WalStatus::Failed) {
                return;
            }
            self.wake_flusher.notify(1);
            listener.await;
        }
    }

    /// The append index the next record gets (records appended so far).
    pub fn appended(&self) -> u64 {
        self.stats.appended_records.get()
    }

    /// Whether the records with append indices `from..end` are settled: `Some(Ok)` when all
    /// are durable, `Some(Err)` when one was lost (or the WAL stopped before they were
    /// written), `None` while some are still pending.
    pub fn settled(&self, from: u64, end: u64) -> Option<Result<(), NotDurable>> {
        let stats = &self.stats;
        let settled = stats.durable_records.get() + stats.lost_records.get();
        if settled < end {
            return match self.status.get() {
                WalStatus::Stopped | WalStatus::Failed => Some(Err(NotDurable)),
                _ => None,
            };
        }
        let lost = stats
            .lost_ranges
            .borrow()
            .iter()
            .any(|&(first, last)| first < end && from < last);
        Some(if lost { Err(NotDurable) } else { Ok(()) })
    }

    /// Waits until `from..end` is settled (see [`WalAppender::settled`]), asking the flusher
    /// to commit now rather than at the end of its interval: for a sender waiting on an
    /// acknowledgement. Many waiting at once still share one commit.
    pub async fn wait_settled(&self, from: u64, end: u64) -> Result<(), NotDurable> {
        loop {
            let listener = self.durable.listen();
            if let Some(result) = self.settled(from, end) {
                return result;
            }
            self.wake_flusher.notify(1);
            listener.await;
        }
    }

    /// Stops accepting; the flusher commits what is pending and stops.
    pub fn close(&self) {
        if matches!(self.status.get(), WalStatus::Running | WalStatus::Blocked) {
            self.status.set(WalStatus::Draining);
        }
        self.wake_flusher.notify(usize::MAX);
        self.space.notify(usize::MAX);
    }

    fn take_pending(&self) -> (Taken, u64) {
        let buf = self.pending.replace(Vec::with_capacity(self.capacity));
        // The next batch is likely about as large: one allocation, not a doubling series.
        let records = self.pending_checksums.borrow().len();
        let checksums = self.pending_checksums.replace(Vec::with_capacity(records));
        self.first_pending_at.set(None);
        self.space.notify(usize::MAX);
        let salt = self.salt.get();
        (
            Taken {
                buf,
                salt,
                checksums,
            },
            records as u64,
        )
    }

    /// A new segment started: records appended from now on carry its `salt`; those pending
    /// are re-salted (XOR-ing the old mask out and the new one in).
    fn use_salt(&self, salt: u32) {
        let old = self.salt.replace(salt);
        if old != salt {
            crate::frame::salt_frames(&mut self.pending.borrow_mut(), old ^ salt);
        }
    }

    /// A commit of `records` starting at append index `first` failed: they are lost (never
    /// durable); appends wait until the flusher has a new segment.
    fn block(&self, error: &StorageError, first: u64, records: u64) {
        let stats = &self.stats;
        if matches!(error, StorageError::Budget(_)) {
            stats.budget_blocks.set(stats.budget_blocks.get() + 1);
            tracing::warn!(%error, "WAL disk budget reached: ingest blocked until outputs deliver and space is freed");
        } else {
            stats.io_failures.set(stats.io_failures.get() + 1);
            tracing::error!(%error, lost_records = records,
                "WAL write failed: ingest blocked until a new segment can be started");
        }
        self.lose(first, records);
        *self.failure.borrow_mut() = Some(error.to_string());
        if self.status.get() == WalStatus::Running {
            self.status.set(WalStatus::Blocked);
        }
        self.durable.notify(usize::MAX);
        self.space.notify(usize::MAX);
    }

    fn lose(&self, first: u64, records: u64) {
        if records == 0 {
            return;
        }
        let stats = &self.stats;
        stats.arrivals.settle(first + records, None);
        stats.lost_records.set(stats.lost_records.get() + records);
        let mut ranges = stats.lost_ranges.borrow_mut();
        if ranges.len() == LOST_RANGES_KEPT {
            ranges.remove(0);
        }
        ranges.push((first, first + records));
    }

    fn unblock(&self) {
        if self.status.get() == WalStatus::Blocked {
            self.status.set(WalStatus::Running);
            tracing::info!("WAL writable again: ingest resumes");
        }
        self.space.notify(usize::MAX);
        self.wake_flusher.notify(1);
    }
}

/// Outstanding fdatasyncs per writer unless configured (`[wal] commits_in_flight`): one, each
/// commit waiting for the previous one's fdatasync. Two measured no better on the reference VM
/// (its fdatasyncs queue behind each other; docs/benchmarks.md), so overlap is opt-in.
pub const DEFAULT_COMMITS_IN_FLIGHT: usize = 1;
/// Upper bound of `commits_in_flight` (each holds a fast-path copy of its commit).
pub const MAX_COMMITS_IN_FLIGHT: usize = 8;

/// What an fdatasync task returns: its outcome and how long it took.
type SyncOutcome = (std::io::Result<()>, Duration);

/// A commit written into the current segment, waiting for its fdatasync (running in its own
/// task) and for every earlier commit's before it is published.
struct InFlight {
    /// `None` under [`FsyncPolicy::Never`], or once the outcome was taken.
    sync: Option<glommio::Task<SyncOutcome>>,
    /// The segment's offset after the commit.
    end: u64,
    /// The id the record after the commit gets.
    next_id: u64,
    /// Append index of the commit's first record, and its records.
    first: u64,
    records: u64,
    /// Bytes in the file; record bytes of a compressed block.
    len: u64,
    block_raw: Option<u64>,
    for_outputs: Option<Commit>,
}

/// A batch ready to be written ([`WalFlusher::encode`]).
struct Encoded {
    /// What goes into the file (the records, or their compressed block).
    bytes: Vec<u8>,
    /// The segment's record checksum chain after the batch.
    chain: u32,
    /// Bytes in the file; record bytes of a compressed block.
    len: u64,
    block_raw: Option<u64>,
    for_outputs: Option<Commit>,
}

/// What woke the flusher.
enum Wake {
    /// Records are due for a commit (or the WAL is closing).
    Work,
    /// The oldest commit in flight is to be settled (its outcome, when already known).
    Synced(Option<SyncOutcome>),
}

/// The flusher: the only task that touches the shard's segment files.
pub struct WalFlusher<F: SegmentFs> {
    fs: F,
    dir: PathBuf,
    appender: Rc<WalAppender>,
    segment_size: u64,
    watermark: Arc<DurableWatermark>,
    /// Called after each publish with the id the next record will get (= durable count + 1).
    on_durable: Box<dyn Fn(u64)>,
    segment: u64,
    /// Shared with the fdatasync tasks in flight.
    file: Option<Rc<F::File>>,
    /// Where the next commit is written (the end of what was written).
    offset: u64,
    /// The end of what is published as durable, and the id of the record after it.
    durable_offset: u64,
    durable_next_id: u64,
    /// Written commits in order, oldest first, not yet published.
    in_flight: std::collections::VecDeque<InFlight>,
    max_in_flight: usize,
    /// Id of the first record of the current segment.
    segment_first_id: u64,
    /// Id the next durable record gets (ids are dense over what is durable).
    next_id: u64,
    /// The current segment's records so far, chained for its footer
    /// ([`crate::segment::FooterChecksum::Records`], from the checksums the appender kept).
    records_checksum: u32,
    /// Append index of the next record the flusher takes.
    taken: u64,
    retry_interval: Duration,
    budget: Arc<DiskBudget>,
    ready: Option<Arc<ReadySegments>>,
    /// The current segment's checksum mask ([`crate::frame::salt`]).
    salt: u32,
    /// The current segment's file was a ready file: full length, kept so when sealed.
    file_is_ready: bool,
    /// Where committed bytes go to the outputs in memory ([`crate::fast_path`]).
    fast_path: Option<Arc<FastPath>>,
    /// Compresses each commit into one block before it is written (`None`: written plain).
    compressor: Option<BlockCompressor>,
    /// `CommitCompression::Auto`: compresses only while the disk is the bottleneck
    /// ([`crate::pressure`]); `None`: the compressor (if any) takes every commit.
    pressure: Option<DiskPressure>,
}

/// Where a writer's segments come from: the disk budget they are counted in, and the shard's
/// ready files (none: every segment is a new file).
#[derive(Clone, Debug)]
pub struct WalSpace {
    pub budget: Arc<DiskBudget>,
    pub ready: Option<Arc<ReadySegments>>,
}

/// Whether a writer compresses its commits (`[wal] commit_compression`, see [`crate::block`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitCompression {
    /// Records are written as they are.
    #[default]
    None,
    /// Each commit is written as one zstd block at this level when that is smaller.
    Zstd { level: i32 },
    /// As `Zstd`, but only while the disk is the bottleneck ([`crate::pressure`]).
    Auto { level: i32 },
}

/// Where a writer starts: the segment number and record id after everything recovered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalStart {
    pub segment: u64,
    pub record_id: u64,
}

impl<F: SegmentFs> WalFlusher<F> {
    /// Creates segment `start.segment` (the one after those recovered) and publishes it.
    pub async fn open(
        fs: F,
        dir: &Path,
        start: WalStart,
        segment_size: u64,
        appender: Rc<WalAppender>,
        watermark: Arc<DurableWatermark>,
        on_durable: Box<dyn Fn(u64)>,
    ) -> Result<Self, StorageError> {
        let space = WalSpace {
            budget: Arc::new(DiskBudget::unlimited(dir)),
            ready: None,
        };
        let opened = Self::open_with_budget(
            fs,
            dir,
            start,
            segment_size,
            appender,
            watermark,
            on_durable,
            space,
        );
        // Without limits a budget error cannot happen: any start failure is returned.
        opened.await
    }

    /// Like [`Self::open`], but accounting segments against `space.budget` and taking new
    /// segments from `space.ready` when it has one. When the budget is already exhausted, the
    /// writer starts without a segment and blocks at its first commit until outputs free space
    /// (it must not fail: only delivery can free the space). When the ready pool is empty, the
    /// first segment is made at the first commit (from a ready file if one is there by then).
    #[allow(clippy::too_many_arguments)]
    pub async fn open_with_budget(
        fs: F,
        dir: &Path,
        start: WalStart,
        segment_size: u64,
        appender: Rc<WalAppender>,
        watermark: Arc<DurableWatermark>,
        on_durable: Box<dyn Fn(u64)>,
        space: WalSpace,
    ) -> Result<Self, StorageError> {
        let mut flusher = WalFlusher {
            fs,
            dir: dir.to_path_buf(),
            appender,
            segment_size: segment_size.clamp(SEGMENT_HEADER_LEN + 1, MAX_SEGMENT_SIZE / 2),
            watermark,
            on_durable,
            segment: start.segment,
            file: None,
            offset: 0,
            durable_offset: 0,
            durable_next_id: start.record_id,
            in_flight: std::collections::VecDeque::new(),
            max_in_flight: DEFAULT_COMMITS_IN_FLIGHT,
            segment_first_id: start.record_id,
            next_id: start.record_id,
            records_checksum: 0,
            taken: 0,
            retry_interval: RETRY_INTERVAL,
            budget: space.budget,
            ready: space.ready,
            salt: 0,
            file_is_ready: false,
            fast_path: None,
            compressor: None,
            pressure: None,
        };
        // With an empty pool (a first start: the pool is being zero-filled) the first segment
        // waits for the first commit, which by then most likely finds a ready file: a new file
        // would pay a file-system journal commit at every fdatasync until the switch to one.
        let defer = flusher.ready.as_ref().is_some_and(|r| !r.has_any());
        let started = if defer {
            Ok(())
        } else {
            flusher.start_segment().await
        };
        match started {
            Ok(()) => {}
            Err(StorageError::Budget(full)) => {
                tracing::warn!(error = %full, dir = %dir.display(), "disk budget exhausted at start: ingest waits until outputs free space");
            }
            Err(e) => return Err(e),
        }
        if flusher.file.is_none() {
            // Deferred or out of budget: everything recovered is readable meanwhile (the
            // segment's offset 0: none of it).
            flusher.publish();
        }
        Ok(flusher)
    }

    /// Hands every commit to the outputs attached to `fast_path` as well.
    pub fn with_fast_path(mut self, fast_path: Arc<FastPath>) -> Self {
        self.fast_path = Some(fast_path);
        self
    }

    /// Writes each commit as one zstd block at `level` when that is smaller (see
    /// [`crate::block`]); readers need no setting. An invalid level is an error here.
    pub fn with_commit_compression(
        mut self,
        compression: CommitCompression,
    ) -> Result<Self, StorageError> {
        let level = match compression {
            CommitCompression::None => None,
            CommitCompression::Zstd { level } | CommitCompression::Auto { level } => Some(level),
        };
        self.compressor = match level {
            None => None,
            Some(level) => Some(
                BlockCompressor::new(level)
                    .map_err(|e| StorageError::Failed(format!("zstd level {level}: {e}")))?,
            ),
        };
        self.pressure = matches!(compression, CommitCompression::Auto { .. })
            .then(|| DiskPressure::new(std::time::Instant::now()));
        Ok(self)
    }

    /// Lets up to `commits` fdatasyncs run at once (clamped to 1..=[`MAX_COMMITS_IN_FLIGHT`];
    /// 1: each commit waits for the previous one's fdatasync).
    pub fn with_commits_in_flight(mut self, commits: usize) -> Self {
        self.max_in_flight = commits.clamp(1, MAX_COMMITS_IN_FLIGHT);
        self
    }

    /// How long to wait between attempts to start a new segment after a failure.
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Commits pending records until the appender is closed (then commits the rest). A failed
    /// write or fdatasync loses that batch and those written after it (counted), blocks
    /// appends, and retries starting a new segment every retry interval; closing while blocked
    /// loses what is pending and returns the error.
    pub async fn run(mut self) -> Result<(), StorageError> {
        loop {
            if let Wake::Synced(outcome) = self.wait_for_work_or_sync().await {
                let settled = self.settle_front(outcome).await;
                self.recover_if_failed(settled).await?;
                continue;
            }
            let draining = self.appender.status() == WalStatus::Draining;
            let (taken, records) = self.appender.take_pending();
            let first = self.taken;
            self.taken += records;
            if !taken.buf.is_empty() {
                self.commit_until_settled(taken, first, records).await?;
            }
            if draining && self.appender.pending.borrow().is_empty() {
                let settled = self.settle_all().await;
                self.recover_if_failed(settled).await?;
                break;
            }
        }
        if self.file.is_some() {
            if let Err(e) = self.seal().await {
                // Everything was durable before the footer: recovery seals it at next start.
                tracing::warn!(error = %e, "cannot seal the last segment; recovery will");
                self.abandon_segment().await;
            }
        }
        self.appender.status.set(WalStatus::Stopped);
        self.appender.durable.notify(usize::MAX);
        Ok(())
    }

    /// Waits until records are due for a commit, or the oldest commit in flight is to be
    /// settled: its fdatasync finished, or `commits_in_flight` are outstanding (then a due
    /// commit waits for it, counted when records are pending).
    async fn wait_for_work_or_sync(&mut self) -> Wake {
        if self.in_flight.len() >= self.max_in_flight {
            if !self.appender.pending.borrow().is_empty() {
                let stats = &self.appender.stats;
                stats.in_flight_full.set(stats.in_flight_full.get() + 1);
            }
            return Wake::Synced(None);
        }
        let Some(mut sync) = self.in_flight.front_mut().and_then(|c| c.sync.take()) else {
            self.wait_for_work().await;
            return Wake::Work;
        };
        let woke = futures_lite::future::or(
            async {
                self.wait_for_work().await;
                None
            },
            async { Some((&mut sync).await) },
        )
        .await;
        match woke {
            Some(outcome) => Wake::Synced(Some(outcome)),
            None => {
                if let Some(front) = self.in_flight.front_mut() {
                    front.sync = Some(sync);
                }
                Wake::Work
            }
        }
    }

    /// A failed fdatasync (everything in flight lost): count, block appends and start a new
    /// segment (see [`Self::recover_from_failure`]).
    async fn recover_if_failed(
        &mut self,
        settled: Result<(), SyncFailure>,
    ) -> Result<(), StorageError> {
        match settled {
            Ok(()) => Ok(()),
            Err(f) => {
                self.appender.block(&f.error, f.first, f.records);
                self.recover_from_failure(f.error, None).await
            }
        }
    }

    /// Commits one taken batch. If the disk refused it before any byte was handed over (a new
    /// segment could not be created or reserved: the disk is full), the batch is kept and
    /// committed once a segment exists again: nothing lost. If its write failed, the batch is
    /// lost (counted). Either way appends wait while the WAL is blocked. Success means
    /// written: the batch is durable when its fdatasync is settled ([`Self::settle_front`]).
    async fn commit_until_settled(
        &mut self,
        mut taken: Taken,
        first: u64,
        records: u64,
    ) -> Result<(), StorageError> {
        loop {
            match self.commit(taken, first, records).await {
                Ok(()) => return Ok(()),
                Err(CommitFailure {
                    error,
                    unwritten: Some(kept),
                    lost: (lost_first, lost),
                }) => {
                    self.appender.block(&error, lost_first, lost);
                    self.recover_from_failure(error, Some((first, records)))
                        .await?;
                    taken = kept;
                }
                Err(CommitFailure {
                    error,
                    unwritten: None,
                    lost: (lost_first, lost),
                }) => {
                    self.appender.block(&error, lost_first, lost);
                    return self.recover_from_failure(error, None).await;
                }
            }
        }
    }

    /// Settles every commit in flight, oldest first (see [`Self::settle_front`]).
    async fn settle_all(&mut self) -> Result<(), SyncFailure> {
        while !self.in_flight.is_empty() {
            self.settle_front(None).await?;
        }
        Ok(())
    }

    /// Waits for the oldest commit's fdatasync (unless its `outcome` is known) and publishes
    /// it. If the fdatasync failed, it and every later commit in flight are lost (their bytes
    /// follow it in the segment): returned for the caller to count, and to abandon the segment.
    async fn settle_front(&mut self, outcome: Option<SyncOutcome>) -> Result<(), SyncFailure> {
        let Some(mut commit) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let outcome = match (outcome, commit.sync.take()) {
            (Some(outcome), _) => Some(outcome),
            (None, Some(sync)) => Some(sync.await),
            (None, None) => None, // FsyncPolicy::Never: written is all it gets.
        };
        if let Some((result, took)) = outcome {
            if let Err(e) = result {
                let error = StorageError::io("fdatasync", segment_path(&self.dir, self.segment), e);
                let first = commit.first;
                let records = self.drop_in_flight(commit).await;
                return Err(SyncFailure {
                    error,
                    first,
                    records,
                });
            }
            self.count_fsync(took);
        }
        self.publish_commit(commit);
        Ok(())
    }

    /// `failed` and every commit after it will not be durable: wait for their fdatasyncs
    /// (nothing may touch the file while one runs) and go back to the last published point.
    /// Returns their records (consecutive append indices from `failed.first`).
    async fn drop_in_flight(&mut self, failed: InFlight) -> u64 {
        let mut records = failed.records;
        while let Some(mut later) = self.in_flight.pop_front() {
            if let Some(sync) = later.sync.take() {
                let _ = sync.await;
            }
            records += later.records;
        }
        self.offset = self.durable_offset;
        self.next_id = self.durable_next_id;
        records
    }

    /// A commit is durable (its fdatasync and every earlier one's done): count it, hand it
    /// to the outputs, publish it, time its records.
    fn publish_commit(&mut self, commit: InFlight) {
        self.durable_offset = commit.end;
        self.durable_next_id = commit.next_id;
        self.count_commit(commit.len, commit.block_raw, commit.records);
        // In the rings before the watermark lets an output look for it.
        if let (Some(fast), Some(for_outputs)) = (&self.fast_path, &commit.for_outputs) {
            fast.offer(for_outputs);
        }
        self.publish();
        let stats = &self.appender.stats;
        stats.arrivals.settle(
            commit.first + commit.records,
            Some((std::time::Instant::now(), &stats.ingest_durable)),
        );
    }

    /// After a failed commit: give up the segment (cut back to its durable end, best effort),
    /// then retry starting the next one until it works. Closing while blocked gets one last
    /// attempt; if that fails too, the kept batch and what is pending are lost (counted) and
    /// the error returned.
    async fn recover_from_failure(
        &mut self,
        error: StorageError,
        kept: Option<(u64, u64)>,
    ) -> Result<(), StorageError> {
        self.abandon_segment().await;
        let mut budget_wait = matches!(error, StorageError::Budget(_));
        loop {
            let draining = self.appender.status() == WalStatus::Draining;
            if !draining {
                // Budget checks are a few atomics and a statfs: poll them often, so ingest
                // resumes as soon as delivery frees space. Disk errors retry slower.
                let interval = if budget_wait {
                    BUDGET_POLL.min(self.retry_interval)
                } else {
                    self.retry_interval
                };
                let listener = self.appender.wake_flusher.listen();
                futures_lite::future::or(glommio::timer::sleep(interval), async {
                    listener.await;
                })
                .await;
            }
            match self.start_segment().await {
                Ok(()) => {
                    self.appender.unblock();
                    return Ok(());
                }
                Err(e) if draining => {
                    if let Some((first, records)) = kept {
                        self.appender.lose(first, records);
                    }
                    let (_, pending) = self.appender.take_pending();
                    self.appender.lose(self.taken, pending);
                    self.taken += pending;
                    self.appender.status.set(WalStatus::Failed);
                    self.appender.durable.notify(usize::MAX);
                    self.appender.space.notify(usize::MAX);
                    tracing::error!(lost_records = pending, error = %e, "closed while the WAL was blocked");
                    return Err(error);
                }
                Err(e) => {
                    budget_wait = matches!(e, StorageError::Budget(_));
                    if !budget_wait {
                        tracing::warn!(error = %e, "still cannot start a new WAL segment; retrying");
                    }
                    self.abandon_segment().await;
                }
            }
        }
    }

    /// Drops the current segment after a failure and moves to the next number. Its bytes past
    /// the last durable offset were never durable: cutting them off keeps readers from meeting
    /// a torn record there. If even that fails, readers skip the damage and count it.
    async fn abandon_segment(&mut self) {
        if let Some(file) = self.take_file() {
            self.offset = self.durable_offset;
            self.next_id = self.durable_next_id;
            let durable = self.durable_offset;
            self.budget
                .release(self.segment_size.saturating_sub(durable));
            if let Err(e) = file.truncate(durable).await {
                tracing::warn!(segment = self.segment, error = %e, "cannot cut the failed segment back");
            }
            let _ = file.close().await;
            self.segment += 1;
        }
    }

    async fn wait_for_work(&self) {
        let interval = match self.appender.policy {
            FsyncPolicy::Always => None,
            FsyncPolicy::Interval(d) => Some(d),
            FsyncPolicy::Never => Some(FsyncPolicy::NEVER_WRITE_INTERVAL),
        };
        loop {
            let listener = self.appender.wake_flusher.listen();
            let pending = !self.appender.pending.borrow().is_empty();
            if !matches!(
                self.appender.status(),
                WalStatus::Running | WalStatus::Blocked
            ) {
                return;
            }
            match interval {
                None if pending => return,
                None => listener.await,
                Some(d) => {
                    let full = self.appender.pending.borrow().len() * 2 >= self.appender.capacity;
                    if full {
                        return;
                    }
                    // Due `d` after the oldest pending record (which may have been appended
                    // while the previous commit ran); with nothing pending, look again in `d`.
                    let wait = match self.appender.first_pending_at.get() {
                        Some(first) => d.saturating_sub(first.elapsed()),
                        None => d,
                    };
                    if wait.is_zero() {
                        return;
                    }
                    futures_lite::future::or(glommio::timer::sleep(wait), async {
                        listener.await;
                    })
                    .await;
                    return;
                }
            }
        }
    }

    /// Writes one batch at the end of the current segment (after starting a new one when it
    /// needs to, with nothing in flight) and starts its fdatasync.
    async fn commit(
        &mut self,
        taken: Taken,
        first: u64,
        records: u64,
    ) -> Result<(), CommitFailure> {
        let file = match self.segment_for(taken.buf.len() as u64, first).await {
            Ok(file) => file,
            Err((error, lost)) => {
                return Err(CommitFailure {
                    error,
                    unwritten: Some(taken),
                    lost,
                })
            }
        };
        let encoded = self.encode(taken);
        if !self.in_flight.is_empty() {
            let stats = &self.appender.stats;
            stats
                .overlapped_commits
                .set(stats.overlapped_commits.get() + 1);
        }
        if let Err(error) = self.write_all(encoded.bytes).await {
            // What is in flight before it settles first (it may still become durable).
            let lost = match self.settle_all().await {
                Ok(()) => (first, records),
                Err(f) => (f.first, f.records + records),
            };
            return Err(CommitFailure {
                error,
                unwritten: None,
                lost,
            });
        }
        self.offset += encoded.len;
        self.records_checksum = encoded.chain;
        self.next_id += records;
        let sync = self.appender.policy.syncs().then(|| spawn_sync(file));
        let never_synced = sync.is_none();
        self.in_flight.push_back(InFlight {
            sync,
            end: self.offset,
            next_id: self.next_id,
            first,
            records,
            len: encoded.len,
            block_raw: encoded.block_raw,
            for_outputs: encoded.for_outputs,
        });
        if never_synced {
            // FsyncPolicy::Never: nothing to wait for (settling cannot fail).
            let _ = self.settle_front(None).await;
        }
        Ok(())
    }

    /// The segment a commit of `len` bytes goes into: the current one, or a new one when it
    /// needs one (after settling what is in flight). On failure, the error and the records
    /// lost (append indices from `first`: none, or those in flight whose fdatasync failed).
    async fn segment_for(
        &mut self,
        len: u64,
        first: u64,
    ) -> Result<Rc<F::File>, (StorageError, (u64, u64))> {
        if self.needs_segment(len) {
            match self.settle_all().await {
                Ok(()) => self.rotate().await.map_err(|e| (e, (first, 0)))?,
                Err(f) => return Err((f.error, (f.first, f.records))),
            }
        }
        let no_segment = || (StorageError::Failed("no open segment".into()), (first, 0));
        self.file.clone().ok_or_else(no_segment)
    }

    /// A taken batch as the current segment stores it: re-salted if it was appended for an
    /// older segment, its records chained for the footer, compressed into a block when that
    /// is smaller, copied for the outputs' fast path.
    fn encode(&mut self, taken: Taken) -> Encoded {
        let Taken {
            mut buf,
            salt,
            checksums,
        } = taken;
        if salt != self.salt {
            crate::frame::salt_frames(&mut buf, salt ^ self.salt);
        }
        let chain = checksums
            .iter()
            .fold(self.records_checksum, |acc, &crc| chain_record(acc, crc));
        let wanted = self
            .pressure
            .as_mut()
            .is_none_or(|p| p.compress(std::time::Instant::now()));
        let block = self
            .compressor
            .as_mut()
            .filter(|_| wanted)
            .and_then(|c| c.block_of(&buf, self.salt));
        let raw_len = buf.len() as u64;
        let len = block.as_ref().map_or(raw_len, |b| b.len() as u64);
        // glommio takes the buffer: the outputs' copy is made before (one per commit).
        let for_outputs = self
            .fast_path
            .as_ref()
            .filter(|f| f.wanted())
            .and_then(|fast| fast.copy_of(&buf))
            .map(|bytes| Commit {
                segment: self.segment,
                offset: self.offset,
                first_id: self.next_id,
                bytes,
                file_len: len,
            });
        Encoded {
            block_raw: block.is_some().then_some(raw_len),
            bytes: block.unwrap_or(buf),
            chain,
            len,
            for_outputs,
        }
    }

    /// A commit of `records` took `len` bytes in the file (a block of `block_raw` bytes of
    /// records when compressed).
    fn count_commit(&self, len: u64, block_raw: Option<u64>, records: u64) {
        let stats = &self.appender.stats;
        stats.written_bytes.set(stats.written_bytes.get() + len);
        if let Some(raw) = block_raw {
            stats.block_commits.set(stats.block_commits.get() + 1);
            stats.block_raw_bytes.set(stats.block_raw_bytes.get() + raw);
        }
        stats
            .durable_records
            .set(stats.durable_records.get() + records);
    }

    /// Publishes the durable end (readers and outputs may read up to it).
    fn publish(&self) {
        self.watermark.publish(Position {
            segment: self.segment,
            offset: self.durable_offset,
        });
        self.appender.durable.notify(usize::MAX);
        (self.on_durable)(self.durable_next_id);
    }

    /// The current segment's file, no longer shared (nothing may be in flight).
    fn take_file(&mut self) -> Option<F::File> {
        debug_assert!(self.in_flight.is_empty());
        Rc::try_unwrap(self.file.take()?).ok()
    }

    /// Writes the whole buffer at the current offset. glommio takes the buffer by value, so a
    /// short write (on a regular file only possible when the disk filled up mid-write) cannot
    /// be resumed from here: it is reported as a failure, like ENOSPC itself.
    async fn write_all(&mut self, buf: Vec<u8>) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, self.segment);
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| StorageError::Failed("no open segment".into()))?;
        let len = buf.len();
        let started = std::time::Instant::now();
        let written = file
            .write_at(buf, self.offset)
            .await
            .map_err(|e| StorageError::io("write", &path, e))?;
        let took = started.elapsed();
        self.appender.stats.write.record(took, 1);
        if let Some(p) = &mut self.pressure {
            p.add_busy(took);
        }
        if written < len {
            let e = std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes"),
            );
            return Err(StorageError::io("write", &path, e));
        }
        Ok(())
    }

    async fn sync(&mut self) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, self.segment);
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| StorageError::Failed("no open segment".into()))?;
        let started = std::time::Instant::now();
        file.fdatasync()
            .await
            .map_err(|e| StorageError::io("fdatasync", &path, e))?;
        self.count_fsync(started.elapsed());
        Ok(())
    }

    /// One fdatasync succeeded and took `took`.
    fn count_fsync(&mut self, took: Duration) {
        if let Some(p) = &mut self.pressure {
            p.add_busy(took);
        }
        let stats = &self.appender.stats;
        stats.fsyncs.set(stats.fsyncs.get() + 1);
        stats.fsync.record(took, 1);
    }

    /// Whether a commit of `len` bytes starts a new segment first: none is open, the current
    /// one is full, or [`Self::leaves_new_file`]. A segment holds at least one commit.
    fn needs_segment(&self, len: u64) -> bool {
        if self.file.is_none() {
            return true;
        }
        self.offset > SEGMENT_HEADER_LEN
            && (self.offset + len > self.segment_size || self.leaves_new_file())
    }

    /// Whether the current segment is a new file (every fdatasync into it commits
    /// file-system metadata too) and a ready file is there now, which it was not when this
    /// one started (at the first start, or while the pool was dry): counted, as the switch
    /// follows.
    fn leaves_new_file(&self) -> bool {
        let switch = !self.file_is_ready && self.ready.as_ref().is_some_and(|r| r.has_any());
        if switch {
            let stats = &self.appender.stats;
            stats.ready_switches.set(stats.ready_switches.get() + 1);
        }
        switch
    }

    /// Seals the current segment (if any) and starts the next one.
    async fn rotate(&mut self) -> Result<(), StorageError> {
        if self.file.is_some() {
            self.seal().await?;
            self.segment += 1;
        }
        self.start_segment().await
    }

    /// Appends the footer (record count, ids, checksum), gives back the space reserved past
    /// it, syncs and closes. On failure the file stays open, so the caller's
    /// [`Self::abandon_segment`] cuts the partial footer off again.
    async fn seal(&mut self) -> Result<(), StorageError> {
        let footer = Footer {
            records: self.next_id - self.segment_first_id,
            first_id: self.segment_first_id,
            data_end: self.offset,
            checksum: self.records_checksum,
            covers: crate::segment::FooterChecksum::Records,
        };
        let frame = footer.frame(self.salt);
        let end = self.offset + frame.len() as u64;
        let path = segment_path(&self.dir, self.segment);
        self.write_all(frame).await?;
        // A new file is cut to its footer (giving back its unused reservation); a ready file
        // keeps its full length, so it can be recycled as it is.
        if let (Some(file), false) = (&self.file, self.file_is_ready) {
            file.truncate(end)
                .await
                .map_err(|e| StorageError::io("truncate", &path, e))?;
        }
        if self.appender.policy.syncs() {
            self.sync().await?;
        }
        // The budget counts what is on disk: the unused reservation goes back, and a footer
        // that ends past the reservation (the segment was full to the last bytes) is added.
        match end.checked_sub(self.segment_size) {
            Some(over) => self.budget.charge(over),
            None if self.file_is_ready => {}
            None => self.budget.release(self.segment_size - end),
        }
        if let Some(file) = self.take_file() {
            file.close()
                .await
                .map_err(|e| StorageError::io("close", path, e))?;
        }
        Ok(())
    }

    /// Reserves the next segment's space in the disk budget; under `drop_oldest`, deletes
    /// this shard's oldest segments (counting their records) until it fits.
    fn reserve_segment(&self) -> Result<(), StorageError> {
        loop {
            let full = match self.budget.reserve(self.segment_size) {
                Ok(()) => return Ok(()),
                Err(full) => full,
            };
            if self.budget.policy != FullPolicy::DropOldest || !self.drop_oldest()? {
                return Err(full.into());
            }
        }
    }

    /// Deletes this shard's oldest segment (all are sealed: the next is being created).
    /// Blocking file-system calls on the shard thread: rare (only at a full budget).
    fn drop_oldest(&self) -> Result<bool, StorageError> {
        let Some(&oldest) = crate::segment::list_segments(&self.dir)?
            .iter()
            .find(|&&n| n < self.segment)
        else {
            return Ok(false);
        };
        let records = self.undelivered_records(oldest);
        let freed = crate::retention::remove_segment(&self.dir, oldest)?;
        crate::recovery::sync_dir(&self.dir)?;
        self.budget.release(freed);
        self.budget.count_drop(records);
        tracing::error!(dir = %self.dir.display(), segment = oldest, dropped_events = records,
            "disk budget full (when_full = \"drop_oldest\"): deleted the oldest undelivered segment");
        Ok(true)
    }

    /// Records of segment `number` that some output has not confirmed yet (by the lowest
    /// cursor id): what deleting it loses. Records every output confirmed are not a loss.
    fn undelivered_records(&self, number: u64) -> u64 {
        let records = crate::segment::record_count(&self.dir, number).unwrap_or(0);
        let first_id = crate::segment::read_head(&self.dir, number).map(|h| h.first_id);
        match (first_id, crate::cursor::lowest_cursor_id(&self.dir)) {
            (Some(first), Some(lowest)) => records - lowest.saturating_sub(first).min(records),
            _ => records,
        }
    }

    /// Creates segment `self.segment`: reserve its space, write and sync its header, sync the
    /// directory, publish it. On failure the half-made file is removed (best effort) and the
    /// number stays free for the next attempt.
    async fn start_segment(&mut self) -> Result<(), StorageError> {
        let stats = &self.appender.stats;
        if let Some(ready) = &self.ready {
            match ready.take() {
                Some(path) => match self.start_from_ready(path).await {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot use a ready WAL segment; creating a new file")
                    }
                },
                None => stats.ready_misses.set(stats.ready_misses.get() + 1),
            }
        }
        self.reserve_segment()?;
        let started = self.create_segment().await;
        if started.is_err() {
            self.budget.release(self.segment_size);
        }
        started
    }

    /// Makes the ready file at `ready_path` segment `self.segment`: header written and synced
    /// under its ready name, then renamed (see [`crate::ready`] for why this order). A failure
    /// before the rename gives the file back to the pool.
    async fn start_from_ready(&mut self, ready_path: PathBuf) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, self.segment);
        // One that cannot be opened is left out of the pool (a new file is made instead).
        let mut file = match self.fs.open_existing(&ready_path).await {
            Ok(file) => file,
            Err(e) => return Err(StorageError::io("open", &ready_path, e)),
        };
        let header = segment_header(self.segment, self.next_id);
        if let Err(e) = header_then_rename(&mut file, &header, &ready_path, &path).await {
            // Not renamed: still a ready file, back into the pool.
            let _ = file.close().await;
            if let Some(ready) = &self.ready {
                ready.put_back(ready_path);
            }
            return Err(e);
        }
        self.file = Some(Rc::new(file));
        self.file_is_ready = true;
        let stats = &self.appender.stats;
        stats
            .segments_from_ready
            .set(stats.segments_from_ready.get() + 1);
        self.segment_started(&header).await
    }

    async fn create_segment(&mut self) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, self.segment);
        let file = self
            .fs
            .create(&path)
            .await
            .map_err(|e| StorageError::io("create", &path, e))?;
        if let Err(e) = file.preallocate(self.segment_size).await {
            let _ = file.remove().await;
            let _ = file.close().await;
            return Err(StorageError::io("reserve space for", &path, e));
        }
        self.file = Some(Rc::new(file));
        self.file_is_ready = false;
        self.offset = 0;
        let header = segment_header(self.segment, self.next_id);
        let started = match self.write_all(header.to_vec()).await {
            Ok(()) => self.sync().await,
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            if let Some(file) = self.take_file() {
                let _ = file.remove().await;
                let _ = file.close().await;
            }
            return Err(e);
        }
        self.segment_started(&header).await
    }

    /// The new segment's header is synced in its file under the segment's name: sync the
    /// directory, then publish it.
    async fn segment_started(&mut self, header: &[u8]) -> Result<(), StorageError> {
        if let Err(e) = self.fs.sync_dir(&self.dir).await {
            if let Some(file) = self.take_file() {
                let _ = file.remove().await;
                let _ = file.close().await;
            }
            return Err(StorageError::io("fsync directory", &self.dir, e));
        }
        self.offset = SEGMENT_HEADER_LEN;
        self.durable_offset = SEGMENT_HEADER_LEN;
        self.durable_next_id = self.next_id;
        self.segment_first_id = self.next_id;
        self.records_checksum = crc32c::crc32c(header);
        self.salt = crate::frame::salt(self.segment);
        self.appender.use_salt(self.salt);
        let stats = &self.appender.stats;
        stats.segments_created.set(stats.segments_created.get() + 1);
        self.publish();
        Ok(())
    }
}

/// Writes and syncs a new segment's `header` into a ready file, then renames it to `path`.
/// Runs an fdatasync of `file` in its own task, so the flusher can write the next commit
/// meanwhile; the task's outcome carries how long it took.
fn spawn_sync<F: SegmentFile + 'static>(file: Rc<F>) -> glommio::Task<SyncOutcome> {
    glommio::spawn_local(async move {
        let started = std::time::Instant::now();
        let result = file.fdatasync().await;
        (result, started.elapsed())
    })
}

async fn header_then_rename<F: SegmentFile>(
    file: &mut F,
    header: &[u8],
    ready_path: &Path,
    path: &Path,
) -> Result<(), StorageError> {
    let written = match file.write_at(header.to_vec(), 0).await {
        Ok(n) if n == header.len() => file.fdatasync().await,
        Ok(n) => Err(std::io::Error::new(
            std::io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", header.len()),
        )),
        Err(e) => Err(e),
    };
    written.map_err(|e| StorageError::io("write header into", ready_path, e))?;
    file.rename(path)
        .await
        .map_err(|e| StorageError::io("rename", ready_path, e))
}

/// A commit that failed, with the batch if no byte of it reached the kernel, and the records
/// lost with it: append indices `[first, first + records)` (this batch when it was written;
/// commits in flight before it whose fdatasync failed).
struct CommitFailure {
    error: StorageError,
    unwritten: Option<Taken>,
    lost: (u64, u64),
}

/// A failed fdatasync, and the records lost with it (that commit's and every later one's in
/// flight): append indices `[first, first + records)`.
struct SyncFailure {
    error: StorageError,
    first: u64,
    records: u64,
}
