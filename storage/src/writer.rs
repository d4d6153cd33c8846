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

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use event_listener::Event;

use crate::error::StorageError;
use crate::frame::{begin_record, finish_record, FRAME_HEADER_LEN, MAX_RECORD_LEN};
use crate::io::{SegmentFile, SegmentFs};
use crate::position::{DurableWatermark, Position, MAX_SEGMENT_SIZE};
use crate::segment::{segment_header, segment_path, SEGMENT_HEADER_LEN};

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
    /// Closing: the flusher commits what is pending, then stops.
    Draining,
    Stopped,
    /// A write or fsync failed; nothing more is accepted.
    Failed,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The pending buffer is full: wait for space.
    Full,
    /// The WAL accepts nothing more (failed or stopped).
    Stopped,
}

/// Counters of one WAL (single writer: the shard's thread).
#[derive(Debug, Default)]
pub struct WalStats {
    pub appended_records: Cell<u64>,
    pub appended_bytes: Cell<u64>,
    pub durable_records: Cell<u64>,
    pub written_bytes: Cell<u64>,
    pub fsyncs: Cell<u64>,
    pub fsync_nanos: Cell<u64>,
    pub segments_created: Cell<u64>,
}

/// The shard-local append side, shared (`Rc`) by every task of the shard.
pub struct WalAppender {
    pending: RefCell<Vec<u8>>,
    pending_records: Cell<u64>,
    capacity: usize,
    policy: FsyncPolicy,
    status: Cell<WalStatus>,
    failure: RefCell<Option<String>>,
    space: Event,
    wake_flusher: Event,
    durable: Event,
    pub stats: WalStats,
}

impl WalAppender {
    /// `capacity`: bytes of the pending buffer (the group-commit batch bound).
    pub fn new(capacity: usize, policy: FsyncPolicy) -> Rc<Self> {
        Rc::new(WalAppender {
            pending: RefCell::new(Vec::with_capacity(capacity)),
            pending_records: Cell::new(0),
            capacity,
            policy,
            status: Cell::new(WalStatus::Running),
            failure: RefCell::new(None),
            space: Event::new(),
            wake_flusher: Event::new(),
            durable: Event::new(),
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
        if self.status.get() != WalStatus::Running {
            return Err(AppendError::Stopped);
        }
        debug_assert!(payload_len <= MAX_RECORD_LEN);
        let mut buf = self.pending.borrow_mut();
        let was_empty = buf.is_empty();
        if !was_empty && buf.len() + FRAME_HEADER_LEN + payload_len > self.capacity {
            drop(buf);
            self.wake_flusher.notify(1);
            return Err(AppendError::Full);
        }
        let start = begin_record(&mut buf);
        fill(&mut buf);
        let written = finish_record(&mut buf, start);
        debug_assert_eq!(written, payload_len);
        self.pending_records.set(self.pending_records.get() + 1);
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

    /// Resolves when the pending buffer has room again or the WAL stopped accepting.
    pub async fn wait_for_space(&self) {
        loop {
            let listener = self.space.listen();
            if self.status.get() != WalStatus::Running || self.pending.borrow().is_empty() {
                return;
            }
            listener.await;
        }
    }

    /// Resolves once every record appended before the call is durable (or the WAL stopped).
    pub async fn wait_durable(&self) {
        let target = self.stats.appended_records.get();
        loop {
            let listener = self.durable.listen();
            let status = self.status.get();
            if self.stats.durable_records.get() >= target
                || matches!(status, WalStatus::Stopped | WalStatus::Failed)
            {
                return;
            }
            self.wake_flusher.notify(1);
            listener.await;
        }
    }

    /// Stops accepting; the flusher commits what is pending and stops.
    pub fn close(&self) {
        if self.status.get() == WalStatus::Running {
            self.status.set(WalStatus::Draining);
        }
        self.wake_flusher.notify(usize::MAX);
        self.space.notify(usize::MAX);
    }

    fn take_pending(&self) -> (Vec<u8>, u64) {
        let buf = self.pending.replace(Vec::with_capacity(self.capacity));
        let records = self.pending_records.replace(0);
        self.space.notify(usize::MAX);
        (buf, records)
    }

    fn fail(&self, error: &StorageError) {
        tracing::error!(%error, "WAL write failed: this shard accepts no more events");
        *self.failure.borrow_mut() = Some(error.to_string());
        self.status.set(WalStatus::Failed);
        self.space.notify(usize::MAX);
        self.durable.notify(usize::MAX);
    }
}

/// The flusher: the only task that touches the shard's segment files.
pub struct WalFlusher<F: SegmentFs> {
    fs: F,
    dir: PathBuf,
    appender: Rc<WalAppender>,
    segment_size: u64,
    watermark: Arc<DurableWatermark>,
    on_durable: Box<dyn Fn()>,
    segment: u64,
    file: Option<F::File>,
    offset: u64,
}

impl<F: SegmentFs> WalFlusher<F> {
    /// Creates segment `first_segment` (the one after those recovered) and publishes it.
    pub async fn open(
        fs: F,
        dir: &Path,
        first_segment: u64,
        segment_size: u64,
        appender: Rc<WalAppender>,
        watermark: Arc<DurableWatermark>,
        on_durable: Box<dyn Fn()>,
    ) -> Result<Self, StorageError> {
        let mut flusher = WalFlusher {
            fs,
            dir: dir.to_path_buf(),
            appender,
            segment_size: segment_size.clamp(SEGMENT_HEADER_LEN + 1, MAX_SEGMENT_SIZE / 2),
            watermark,
            on_durable,
            segment: first_segment,
            file: None,
            offset: 0,
        };
        flusher.start_segment().await?;
        Ok(flusher)
    }

    /// Commits pending records until the appender is closed (then commits the rest) or a write
    /// fails (then the appender is marked failed and the error returned).
    pub async fn run(mut self) -> Result<(), StorageError> {
        loop {
            self.wait_for_work().await;
            let draining = self.appender.status() == WalStatus::Draining;
            let (buf, records) = self.appender.take_pending();
            if !buf.is_empty() {
                if let Err(e) = self.commit(buf, records).await {
                    self.appender.fail(&e);
                    return Err(e);
                }
            }
            if draining && self.appender.pending.borrow().is_empty() {
                break;
            }
        }
        if let Some(file) = self.file.take() {
            let path = segment_path(&self.dir, self.segment);
            file.close()
                .await
                .map_err(|e| StorageError::io("close", path, e))?;
        }
        self.appender.status.set(WalStatus::Stopped);
        self.appender.durable.notify(usize::MAX);
        Ok(())
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
            if self.appender.status() != WalStatus::Running {
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
                    futures_lite::future::or(glommio::timer::sleep(d), async {
                        listener.await;
                    })
                    .await;
                    return;
                }
            }
        }
    }

    async fn commit(&mut self, buf: Vec<u8>, records: u64) -> Result<(), StorageError> {
        if self.offset > SEGMENT_HEADER_LEN && self.offset + buf.len() as u64 > self.segment_size {
            self.rotate().await?;
        }
        let len = buf.len() as u64;
        self.write_all(buf).await?;
        if self.appender.policy.syncs() {
            self.sync().await?;
        }
        self.offset += len;
        let stats = &self.appender.stats;
        stats.written_bytes.set(stats.written_bytes.get() + len);
        stats
            .durable_records
            .set(stats.durable_records.get() + records);
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        self.watermark.publish(Position {
            segment: self.segment,
            offset: self.offset,
        });
        self.appender.durable.notify(usize::MAX);
        (self.on_durable)();
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
        let written = file
            .write_at(buf, self.offset)
            .await
            .map_err(|e| StorageError::io("write", &path, e))?;
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
        let stats = &self.appender.stats;
        stats.fsyncs.set(stats.fsyncs.get() + 1);
        stats
            .fsync_nanos
            .set(stats.fsync_nanos.get() + started.elapsed().as_nanos() as u64);
        Ok(())
    }

    async fn rotate(&mut self) -> Result<(), StorageError> {
        if let Some(file) = self.file.take() {
            let path = segment_path(&self.dir, self.segment);
            file.close()
                .await
                .map_err(|e| StorageError::io("close", path, e))?;
        }
        self.segment += 1;
        self.start_segment().await
    }

    async fn start_segment(&mut self) -> Result<(), StorageError> {
        let path = segment_path(&self.dir, self.segment);
        let file = self
            .fs
            .create(&path)
            .await
            .map_err(|e| StorageError::io("create", &path, e))?;
        self.file = Some(file);
        self.offset = 0;
        self.write_all(segment_header(self.segment).to_vec())
            .await?;
        self.sync().await?;
        self.fs
            .sync_dir(&self.dir)
            .await
            .map_err(|e| StorageError::io("fsync directory", &self.dir, e))?;
        self.offset = SEGMENT_HEADER_LEN;
        let stats = &self.appender.stats;
        stats.segments_created.set(stats.segments_created.get() + 1);
        self.publish();
        Ok(())
    }
}
