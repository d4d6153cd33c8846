//! `[wal]`: the write-ahead log's sizes, fsync policy, compression and disk budget.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use storage::io::WalIo;
use storage::{FsyncPolicy, FullPolicy, MinFree, RecoveryMode};

use crate::units::{de_bytes, de_duration, de_from_str, de_opt_bytes, snake_case};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WalConfig {
    /// `"always"`, `"never"` or a group-commit interval like `"2ms"`
    /// (the default: an event waits at most that long, plus its commit, to be durable).
    #[serde(default = "default_fsync", deserialize_with = "de_from_str")]
    pub fsync: FsyncPolicy,
    #[serde(default = "default_segment_size", deserialize_with = "de_bytes")]
    pub segment_size: u64,
    /// Bytes appended before a write is forced (one group-commit batch; two may exist).
    #[serde(default = "default_wal_buffer", deserialize_with = "de_bytes")]
    pub buffer_size: u64,
    /// What recovery does with damage: `"tolerate_corrupt_tail"` or `"strict"`.
    #[serde(default, deserialize_with = "de_recovery")]
    pub recovery: RecoveryMode,
    /// Compression of sealed segments outputs have not reached yet: `"zstd"` or `"none"`.
    #[serde(default)]
    pub compression: Compression,
    /// zstd level, 1 (fastest) to 19.
    #[serde(default = "default_compression_level")]
    pub compression_level: i32,
    /// A sealed segment is compressed only once it has waited this long undelivered: a
    /// backlog of seconds is delivered soon anyway, compressing it would only cost CPU.
    #[serde(default = "default_compress_after", deserialize_with = "de_duration")]
    pub compress_after: Duration,
    /// Most bytes of segments in data_dir, all shards together (unset: no limit).
    #[serde(default, deserialize_with = "de_opt_bytes")]
    pub max_disk: Option<u64>,
    /// Free space to leave on data_dir's file system: a size or a percentage like `"5%"`.
    #[serde(default = "default_min_free_disk", deserialize_with = "de_from_str")]
    pub min_free_disk: MinFree,
    /// At a limit: `"block"` (stop reading sockets) or `"drop_oldest"` (delete the oldest
    /// undelivered segment, counting its events).
    #[serde(default, deserialize_with = "de_from_str")]
    pub when_full: FullPolicy,
    /// Segment files each shard keeps written through and ready (recycled from delivered
    /// segments, else zero-filled in the background), so a commit's fdatasync flushes data
    /// only, never file-system metadata. 0: every segment is a new file.
    #[serde(default = "default_ready_segments")]
    pub ready_segments: usize,
    /// Commits each shard keeps in memory for each output (the fast path): an output that is
    /// at most this many commits (and `fast_path_bytes`) behind reads them from memory
    /// instead of the segment files. 0: outputs read files only.
    #[serde(default = "default_fast_path_commits")]
    pub fast_path_commits: usize,
    /// Most memory each shard's fast path holds: its commit buffers, shared by every output
    /// and reused. A commit past it goes to the outputs through the file only (counted in
    /// `sluice_wal_fast_path_over_budget_total`). At least `buffer_size` (a whole commit).
    #[serde(default = "default_fast_path_bytes", deserialize_with = "de_bytes")]
    pub fast_path_bytes: u64,
    /// Commits per shard whose fdatasync may run at once: above 1, the next commit is written
    /// and synced while earlier ones' fdatasyncs still run, so one slow fdatasync does not
    /// also hold back the commit behind it by a whole commit (for disks that take concurrent
    /// flushes; on the reference VM they queue, and 2 measured no better). The durable
    /// watermark still advances in commit order. 1 (the default): each commit waits for the
    /// previous one's fdatasync. 1 to 8.
    #[serde(default = "default_commits_in_flight")]
    pub commits_in_flight: usize,
    /// How segment files are written: `"buffered"` (through the page cache, the default) or
    /// `"direct"` (O_DIRECT: no copy into the page cache, block submission on the shard
    /// thread). A file system that refuses O_DIRECT gets buffered writes either way.
    #[serde(default, deserialize_with = "de_from_str")]
    pub io: WalIo,
    /// Each group commit written as one zstd block (`"zstd"`), as it is (`"none"`, the
    /// default), or compressed only while the disk is the bottleneck (`"auto"`, see
    /// `storage::pressure`): fewer bytes to the disk per event for CPU on the shard threads.
    /// Segments mix both; readers need no setting.
    #[serde(default = "default_commit_compression")]
    pub commit_compression: CommitCompressionMode,
    /// zstd level of `commit_compression`: -7 (fastest) to 19; negative levels are zstd's fast
    /// modes.
    #[serde(default = "default_commit_compression_level")]
    pub commit_compression_level: i32,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            fsync: default_fsync(),
            segment_size: default_segment_size(),
            buffer_size: default_wal_buffer(),
            recovery: RecoveryMode::default(),
            compression: Compression::default(),
            compression_level: default_compression_level(),
            compress_after: default_compress_after(),
            max_disk: None,
            min_free_disk: default_min_free_disk(),
            when_full: FullPolicy::default(),
            ready_segments: default_ready_segments(),
            fast_path_commits: default_fast_path_commits(),
            fast_path_bytes: default_fast_path_bytes(),
            commits_in_flight: default_commits_in_flight(),
            io: WalIo::default(),
            commit_compression: default_commit_compression(),
            commit_compression_level: default_commit_compression_level(),
        }
    }
}

impl WalConfig {
    /// How the writer compresses its commits (`commit_compression`, `commit_compression_level`).
    pub fn commit_compression(&self) -> storage::CommitCompression {
        let level = self.commit_compression_level;
        match self.commit_compression {
            CommitCompressionMode::None => storage::CommitCompression::None,
            CommitCompressionMode::Zstd => storage::CommitCompression::Zstd { level },
            CommitCompressionMode::Auto => storage::CommitCompression::Auto { level },
        }
    }

    /// The WAL's sizes and how they must relate.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
        let invalid = |key: &str, msg: &str| Err((format!("wal.{key}"), msg.to_string()));
        if !(1 << 20..=storage::position::MAX_SEGMENT_SIZE / 2).contains(&self.segment_size) {
            return invalid("segment_size", "must be between 1MiB and 32GiB");
        }
        if !(64 << 10..=256 << 20).contains(&self.buffer_size) {
            return invalid("buffer_size", "must be between 64KiB and 256MiB");
        }
        if self.segment_size < self.buffer_size {
            return invalid(
                "segment_size",
                "must be at least wal.buffer_size (a segment would grow to the buffer's size)",
            );
        }
        if self.ready_segments > MAX_READY_SEGMENTS {
            return invalid("ready_segments", "must be between 0 and 16");
        }
        if self.fast_path_commits > storage::fast_path::MAX_FAST_PATH_COMMITS {
            return invalid("fast_path_commits", "must be between 0 and 1024");
        }
        if !(self.buffer_size..=MAX_FAST_PATH_BYTES).contains(&self.fast_path_bytes) {
            return invalid(
                "fast_path_bytes",
                "must be between wal.buffer_size (one whole commit) and 16GiB",
            );
        }
        if !(1..=storage::writer::MAX_COMMITS_IN_FLIGHT).contains(&self.commits_in_flight) {
            return invalid("commits_in_flight", "must be between 1 and 8");
        }
        if !(1..=19).contains(&self.compression_level) {
            return invalid("compression_level", "must be between 1 and 19");
        }
        if !(-7..=19).contains(&self.commit_compression_level) {
            return invalid("commit_compression_level", "must be between -7 and 19");
        }
        if self.max_disk.is_some_and(|m| m < 2 * self.segment_size) {
            return invalid(
                "max_disk",
                "must hold at least two segments (2 × wal.segment_size); (shards + 1) × segment_size keeps every shard writing",
            );
        }
        Ok(())
    }
}

fn de_recovery<'de, D: Deserializer<'de>>(d: D) -> Result<RecoveryMode, D::Error> {
    snake_case(
        d,
        &[
            ("tolerate_corrupt_tail", RecoveryMode::TolerateCorruptTail),
            ("strict", RecoveryMode::Strict),
        ],
    )
}

/// `[wal] commit_compression`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitCompressionMode {
    None,
    Zstd,
    /// zstd while the disk is the bottleneck, plain otherwise.
    Auto,
}

impl CommitCompressionMode {
    pub fn name(self) -> &'static str {
        match self {
            CommitCompressionMode::None => "none",
            CommitCompressionMode::Zstd => "zstd",
            CommitCompressionMode::Auto => "auto",
        }
    }
}

impl<'de> Deserialize<'de> for CommitCompressionMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        snake_case(
            d,
            &[
                ("none", CommitCompressionMode::None),
                ("zstd", CommitCompressionMode::Zstd),
                ("auto", CommitCompressionMode::Auto),
            ],
        )
    }
}

/// `[wal] compression`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Zstd,
}

impl<'de> Deserialize<'de> for Compression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        snake_case(
            d,
            &[("zstd", Compression::Zstd), ("none", Compression::None)],
        )
    }
}

/// Upper bound of `wal.ready_segments` (each is a whole segment of disk per shard).
pub const MAX_READY_SEGMENTS: usize = 16;

fn default_ready_segments() -> usize {
    2
}
/// Upper bound of `wal.fast_path_bytes` (per shard).
pub const MAX_FAST_PATH_BYTES: u64 = 16 << 30;

/// A paced load's commits are small (~260 KB per shard at 1M events/s, 2 ms): 64 of them let
/// an output whose own fdatasync takes tens of milliseconds stay on the fast path.
fn default_fast_path_commits() -> usize {
    64
}
/// About what the 4-commit rings before it could hold at most (buffer-full commits): more
/// helps an output that lags in an unpaced run, at the cost of RSS (docs/benchmarks.md).
fn default_fast_path_bytes() -> u64 {
    24 << 20
}
fn default_commits_in_flight() -> usize {
    storage::writer::DEFAULT_COMMITS_IN_FLIGHT
}
fn default_compression_level() -> i32 {
    3
}
fn default_commit_compression() -> CommitCompressionMode {
    CommitCompressionMode::None
}
fn default_commit_compression_level() -> i32 {
    1
}
fn default_compress_after() -> Duration {
    Duration::from_secs(30)
}
/// A floor that keeps the host usable when outputs stall for long.
fn default_min_free_disk() -> MinFree {
    MinFree::Bytes(256 << 20)
}

fn default_fsync() -> FsyncPolicy {
    FsyncPolicy::Interval(Duration::from_millis(2))
}
fn default_segment_size() -> u64 {
    128 << 20
}
fn default_wal_buffer() -> u64 {
    4 << 20
}
