//! The per-shard write-ahead log.
//!
//! Each shard owns one directory and is its only writer. Outputs, on their own threads, read
//! what the shard has made durable and remember how far they got in cursor files.
//!
//! # On-disk layout
//! ```text
//! data_dir/shard-<n>/
//!   00000000000000000001.wal.zst   sealed segment, compressed (backlog; see `compress`)
//!   00000000000000000002.wal       sealed segment
//!   00000000000000000003.wal       active segment (the newest)
//!   00000000000000000004.ready     a ready segment file (see `ready`): the next segment
//!   cursors/<sink>.cursor          one per output: position after the last confirmed record
//!
//! segment  = header (record | block)* [footer] [old bytes]
//! header   = "SLUICEW3" | segment number (u64) | first record id (u64) | payload version (u32) |
//!            crc32c  32 bytes ("SLUICEW2": format 2, unsalted, still read)
//! record   = length (u32) | crc32c(length bytes ++ payload) ^ salt(segment number) (u32) | payload
//! block    = length | 1<<30 (u32) | crc32c ^ salt (u32) | uncompressed length (u32) | zstd
//!            frame of whole records: one compressed commit (`block`), read whole
//! footer   = length | 1<<31 (u32) | crc32c ^ salt (u32) | "SLFOOTR2" | records | first id |
//!            last id | data end (u64 each) | the header's crc32c chained with each record's
//!            checksum in order, records inside blocks too (u32, `segment::chain_record`)
//!            ("SLFOOTR1", still read: crc32c of the segment's bytes before the footer)
//! ```
//! A format 3 segment may be written into a recycled file: what follows its footer (or, in the
//! newest segment, its last record) is an older segment's bytes or zeros, never read as records
//! because their checksums are salted for another segment number (`frame::salt`).
//! ```text
//! cursor   = two 512-byte slots: "SLCUR003" | sequence | segment | offset | next record id |
//!            crc32c
//! ```
//! (All integers little-endian.) Record ids are dense per shard, starting at 1.
//!
//! # Durability contract
//! - A record is *durable* once the fdatasync covering it completed (policy `never`: once the
//!   write completed). The shard publishes the position up to which records are durable, its
//!   [`DurableWatermark`]; readers never return a record beyond it.
//! - A failed write or fdatasync is fatal for the WAL: it is never retried (after a failed
//!   fsync the page cache may already have dropped the dirty pages). The writer reports the
//!   error and accepts nothing more; what was durable before stays deliverable.
//! - Recovery at start truncates only a torn tail of the newest segment (a record whose length,
//!   bytes or checksum did not make it to disk); the writer then starts a new segment, so a
//!   segment is never appended to by two processes' lifetimes.
//! - A cursor moves only forward and only after its output confirmed; it is updated in place
//!   in the older of two checksummed slots and fdatasync'd (no allocation, so it works on a
//!   full disk; a torn write keeps the previous position).
//! - A segment is deleted only once every configured output's cursor is past it, and never
//!   while it is the active segment ([`Retention`]), or, with `drop_oldest`, when the disk
//!   budget is full (counted: [`DiskBudget`]).
//! - Every segment but the active one is sealed with a footer; only sealed, verified segments
//!   are compressed, and a compressed segment reads exactly like the plain one.
//!
//! # Invariants
//! - Records are appended into one caller-visible buffer (no copy per event besides the one
//!   into that buffer); the writer hands whole buffers to the kernel (group commit), and a
//!   copy of each (one per commit) to the outputs that keep up ([`fast_path`]).
//! - Outputs read the same records from memory as from the files: a commit in memory is
//!   exactly the bytes at its segment and offset, handed over once durable.
//! - A record never spans two segments.
//! - Nothing here depends on the engine.

pub mod block;
pub mod budget;
pub mod compress;
pub mod cursor;
pub mod dead_letter;
pub mod direct;
pub mod error;
pub mod fast_path;
pub mod frame;
pub mod inspect;
pub mod io;
pub mod latency;
pub mod position;
pub mod pressure;
pub mod reader;
pub mod ready;
pub mod recovery;
pub mod retention;
pub mod segment;
/// Fault injection for tests (a simulated disk that fails, tears and loses writes): only in
/// test builds and with the `sim` feature, never in the release binary.
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod writer;

pub use budget::{DiskBudget, FullPolicy, MinFree};
pub use cursor::{read_cursor, write_cursor, write_cursor_with, Cursor, CursorSync};
pub use error::StorageError;
pub use fast_path::{Commit, FastPath, FastPathReceiver};
pub use frame::MAX_RECORD_LEN;
pub use position::{DurableWatermark, Position};
pub use reader::{read_on_disk, WalReader};
pub use ready::ReadySegments;
pub use recovery::{recover_shard, RecoveryMode, RecoveryReport};
pub use retention::{Reaper, Retention};
pub use writer::{CommitCompression, FsyncPolicy, WalAppender, WalFlusher, WalStart, WalStatus};
