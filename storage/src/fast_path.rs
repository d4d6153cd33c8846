//! The in-memory fast path from a shard's WAL writer to its outputs.
//!
//! After each commit (written, fdatasync'd), the writer hands the committed bytes, shared and
//! immutable (`Arc<Vec<u8>>`, one copy per commit into a reused buffer, not per event or per
//! output), to every attached
//! output through its own rtrb SPSC ring (one per shard → output pair). A [`WalReader`]
//! with a [`FastPathReceiver`] decodes records from those bytes when the commit it needs next is
//! in its ring; otherwise (it has fallen behind what the ring holds, after a restart, on
//! replay, in a compressed backlog) it reads the segment file, exactly as without a fast path.
//!
//! Invariants:
//! - A [`Commit`] is exactly the records at `segment`:`offset` of the file (salted frames, whole
//!   records, never a footer; written plain, or as one compressed block that a reader takes
//!   whole, see [`crate::block`]), handed over only after they are durable and before the
//!   watermark that covers them is published. Both paths therefore yield the same records in
//!   the same order, and positions, record ids and cursors do not depend on the path taken.
//! - A shard never waits for an output: a full ring drops that commit for that output only
//!   (counted in `full`); the output reads it from the file later.
//! - Memory is bounded: at most `capacity` commits per ring, and the commit buffers of a shard
//!   (in rings, in flight to the disk, or free for reuse) take at most `max_bytes` together
//!   (`wal.fast_path_bytes`). A commit that would pass it is not copied: every output reads it
//!   from the file (counted in `over_budget`). A buffer is reused once the last ring holding it
//!   let go; free buffers too small for a commit are freed to make room.
//! - A ring whose receiver was dropped (output retired) is removed at the next commit.
//!
//! [`WalReader`]: crate::WalReader

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::position::Position;

/// Largest ring (`wal.fast_path_commits`).
pub const MAX_FAST_PATH_COMMITS: usize = 1024;

/// One commit's bytes as they are in the segment file.
#[derive(Clone, Debug)]
pub struct Commit {
    pub segment: u64,
    /// Offset in the segment of `bytes[0]` (a record boundary).
    pub offset: u64,
    /// Id of the commit's first record.
    pub first_id: u64,
    /// The commit's records (salted frames, uncompressed).
    pub bytes: Arc<Vec<u8>>,
    /// What the commit took in the file: `bytes.len()`, or less when it was written as one
    /// compressed block ([`crate::block`]), which a reader takes whole or not at all.
    pub file_len: u64,
}

impl Commit {
    /// Offset just past the commit.
    pub fn end(&self) -> u64 {
        self.offset + self.file_len
    }

    /// Whether the file holds it as a compressed block.
    pub fn is_block(&self) -> bool {
        self.file_len != self.bytes.len() as u64
    }

    /// Whether the commit holds the record starting at `pos`.
    fn holds(&self, pos: Position) -> bool {
        self.segment == pos.segment && self.offset <= pos.offset && pos.offset < self.end()
    }

    /// Whether the commit lies wholly before `pos` (the reader is past it).
    fn before(&self, pos: Position) -> bool {
        self.segment < pos.segment || (self.segment == pos.segment && self.end() <= pos.offset)
    }
}

struct Tap {
    output: String,
    producer: rtrb::Producer<Commit>,
}

/// What the lock guards: the rings, and the commit buffers for reuse.
#[derive(Default)]
struct Shared {
    taps: Vec<Tap>,
    /// Every commit buffer of the shard: one no output holds any more is reused (a fresh
    /// allocation of a commit's size would page-fault on every write into it).
    pool: Vec<Arc<Vec<u8>>>,
}

impl Shared {
    /// Bytes the buffers take (their capacities).
    fn pool_bytes(&self) -> usize {
        self.pool.iter().map(|b| b.capacity()).sum()
    }

    /// The free buffer (no ring or commit holds it) that fits `len` most tightly.
    fn free_fitting(&mut self, len: usize) -> Option<&mut Arc<Vec<u8>>> {
        self.pool
            .iter_mut()
            .filter(|b| b.capacity() >= len)
            .filter_map(|b| Arc::get_mut(b).is_some().then_some(b))
            .min_by_key(|b| b.capacity())
    }

    /// Frees the free buffers smaller than `len` (none of them can take such a commit).
    fn free_smaller_than(&mut self, len: usize) {
        self.pool
            .retain(|b| b.capacity() >= len || Arc::strong_count(b) > 1);
    }
}

/// A shard's side: the rings of the outputs attached to it. The writer locks it once per
/// commit (uncontended but for an output attaching), never per event.
pub struct FastPath {
    shared: Mutex<Shared>,
    /// Number of rings (read without the lock: no copy is made while nothing is attached).
    attached: AtomicUsize,
    capacity: usize,
    /// Most bytes of commit buffers (`wal.fast_path_bytes`).
    max_bytes: usize,
    /// Commits handed to at least one ring.
    pub handed: AtomicU64,
    /// Times a ring was full (that output reads that commit from the file).
    pub full: AtomicU64,
    /// Commits not copied because the buffers would pass `max_bytes` (every output reads
    /// them from the file).
    pub over_budget: AtomicU64,
    /// Bytes the commit buffers take now.
    pub held_bytes: AtomicUsize,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("attached", &self.attached.load(Relaxed))
            .field("capacity", &self.capacity)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl FastPath {
    /// Rings of `capacity_commits` commits each (0: no fast path, every output reads files),
    /// whose commit buffers take at most `max_bytes` together.
    pub fn new(capacity_commits: usize, max_bytes: usize) -> Arc<Self> {
        Arc::new(FastPath {
            shared: Mutex::new(Shared::default()),
            attached: AtomicUsize::new(0),
            capacity: capacity_commits.min(MAX_FAST_PATH_COMMITS),
            max_bytes,
            handed: AtomicU64::new(0),
            full: AtomicU64::new(0),
            over_budget: AtomicU64::new(0),
            held_bytes: AtomicUsize::new(0),
        })
    }

    /// A ring for `output` (replacing an older one of the same name); `None` when the fast
    /// path is off.
    pub fn attach(&self, output: &str) -> Option<FastPathReceiver> {
        if self.capacity == 0 {
            return None;
        }
        let (producer, consumer) = rtrb::RingBuffer::new(self.capacity);
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.taps.retain(|t| t.output != output);
        shared.taps.push(Tap {
            output: output.to_string(),
            producer,
        });
        self.attached.store(shared.taps.len(), Relaxed);
        Some(FastPathReceiver {
            consumer,
            pending: None,
        })
    }

    /// Whether any output is attached (else the writer makes no copy).
    pub fn wanted(&self) -> bool {
        self.attached.load(Relaxed) > 0
    }

    /// A shared copy of `bytes`, in a reused buffer when one is free; `None` (counted) when
    /// the buffers would take more than `max_bytes`.
    pub fn copy_of(&self, bytes: &[u8]) -> Option<Arc<Vec<u8>>> {
        if bytes.len() > self.max_bytes {
            self.over_budget.fetch_add(1, Relaxed);
            return None;
        }
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(buf) = shared.free_fitting(bytes.len()) {
            if let Some(vec) = Arc::get_mut(buf) {
                vec.clear();
                vec.extend_from_slice(bytes);
                return Some(Arc::clone(buf));
            }
        }
        shared.free_smaller_than(bytes.len());
        // Room for commits a little larger than this one, so buffers are rarely replaced.
        let mut held = shared.pool_bytes();
        let capacity = (bytes.len() + bytes.len() / 16).min(self.max_bytes.saturating_sub(held));
        let copy = if capacity >= bytes.len() {
            let mut vec = Vec::with_capacity(capacity);
            vec.extend_from_slice(bytes);
            held += vec.capacity();
            let buf = Arc::new(vec);
            shared.pool.push(Arc::clone(&buf));
            Some(buf)
        } else {
            self.over_budget.fetch_add(1, Relaxed);
            None
        };
        self.held_bytes.store(held, Relaxed);
        copy
    }

    /// Hands `commit` to every attached ring that has room.
    pub fn offer(&self, commit: &Commit) {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.taps.retain(|t| !t.producer.is_abandoned());
        self.attached.store(shared.taps.len(), Relaxed);
        let mut handed = false;
        for tap in shared.taps.iter_mut() {
            match tap.producer.push(commit.clone()) {
                Ok(()) => handed = true,
                Err(_) => {
                    self.full.fetch_add(1, Relaxed);
                }
            }
        }
        if handed {
            self.handed.fetch_add(1, Relaxed);
        }
    }
}

/// An output's side of one shard's ring.
pub struct FastPathReceiver {
    consumer: rtrb::Consumer<Commit>,
    /// The commit the reader is in (taken off the ring, kept until the reader is past it).
    pending: Option<Commit>,
}

impl FastPathReceiver {
    /// The commit holding the record at `pos`, if the ring has it. Commits the reader is
    /// already past are dropped; a commit ahead of `pos` (those between were dropped while
    /// the ring was full) stays for later: the reader reads the file up to it meanwhile.
    pub fn commit_at(&mut self, pos: Position) -> Option<&Commit> {
        loop {
            if let Some(c) = &self.pending {
                if c.holds(pos) {
                    break;
                }
                if !c.before(pos) {
                    return None;
                }
                self.pending = None;
            }
            self.pending = Some(self.consumer.pop().ok()?);
        }
        self.pending.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(segment: u64, offset: u64, len: usize) -> Commit {
        Commit {
            segment,
            offset,
            first_id: 1,
            bytes: Arc::new(vec![0u8; len]),
            file_len: len as u64,
        }
    }

    fn pos(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn finds_the_commit_holding_a_position_and_drops_older_ones() {
        let fast = FastPath::new(4, 1 << 20);
        let mut rx = fast.attach("out").unwrap();
        for c in [commit(1, 32, 100), commit(1, 132, 50), commit(2, 32, 10)] {
            fast.offer(&c);
        }
        assert_eq!(rx.commit_at(pos(1, 132)).map(|c| c.offset), Some(132));
        assert_eq!(rx.commit_at(pos(1, 150)).map(|c| c.offset), Some(132));
        // Past segment 1's commits (its footer is read from the file): not in memory.
        assert!(rx.commit_at(pos(1, 182)).is_none());
        assert_eq!(rx.commit_at(pos(2, 32)).map(|c| c.segment), Some(2));
    }

    #[test]
    fn a_gap_reads_the_file_until_the_ring_has_the_position_again() {
        let fast = FastPath::new(2, 1 << 20);
        let mut rx = fast.attach("out").unwrap();
        fast.offer(&commit(1, 32, 10));
        fast.offer(&commit(1, 42, 10));
        fast.offer(&commit(1, 52, 10)); // The ring is full: this one is dropped.
        fast.offer(&commit(1, 62, 10));
        assert_eq!(fast.full.load(Relaxed), 2);
        assert_eq!(rx.commit_at(pos(1, 42)).map(|c| c.offset), Some(42));
        assert!(
            rx.commit_at(pos(1, 52)).is_none(),
            "dropped: read from the file"
        );
        fast.offer(&commit(1, 72, 10));
        assert!(rx.commit_at(pos(1, 62)).is_none(), "was dropped too");
        assert_eq!(rx.commit_at(pos(1, 72)).map(|c| c.offset), Some(72));
    }

    #[test]
    fn commit_buffers_are_reused_once_no_output_holds_them() {
        let fast = FastPath::new(2, 1 << 20);
        let mut rx = fast.attach("out").unwrap();
        let first = fast.copy_of(b"one").unwrap();
        let ptr = Arc::as_ptr(&first);
        fast.offer(&Commit {
            segment: 1,
            offset: 32,
            first_id: 1,
            bytes: first,
            file_len: 3,
        });
        let held = fast.copy_of(b"two").unwrap();
        assert_ne!(Arc::as_ptr(&held), ptr, "the ring still holds the first");
        assert!(rx.commit_at(pos(1, 32)).is_some());
        assert!(rx.commit_at(pos(1, 35)).is_none(), "past it: dropped");
        let again = fast.copy_of(b"three").unwrap();
        assert_eq!(Arc::as_ptr(&again), ptr);
        assert_eq!(&again[..], b"three");
    }

    #[test]
    fn a_dropped_receiver_detaches_and_nothing_is_copied_without_one() {
        let fast = FastPath::new(2, 1 << 20);
        assert!(!fast.wanted());
        let rx = fast.attach("out").unwrap();
        assert!(fast.wanted());
        drop(rx);
        fast.offer(&commit(1, 32, 10));
        assert!(!fast.wanted());
        assert!(FastPath::new(0, 1 << 20).attach("out").is_none());
    }

    #[test]
    fn the_buffers_stay_within_the_budget_and_small_free_ones_make_room() {
        let fast = FastPath::new(8, 1000);
        let mut rx = fast.attach("out").unwrap();
        let offer = |bytes: Arc<Vec<u8>>, offset: u64| {
            let file_len = bytes.len() as u64;
            fast.offer(&Commit {
                segment: 1,
                offset,
                first_id: 1,
                bytes,
                file_len,
            })
        };
        offer(fast.copy_of(&[1; 400]).unwrap(), 32);
        offer(fast.copy_of(&[2; 400]).unwrap(), 432);
        assert_eq!(
            fast.held_bytes.load(Relaxed),
            850,
            "400 each and room to grow"
        );
        assert!(fast.copy_of(&[3; 200]).is_none(), "both held by the ring");
        assert_eq!(fast.over_budget.load(Relaxed), 1);
        // The reader is past the first commit: its buffer is reused, not a new one made.
        assert!(rx.commit_at(pos(1, 432)).is_some());
        let third = fast.copy_of(&[3; 300]).unwrap();
        assert_eq!(&third[..], &[3; 300][..]);
        assert_eq!(fast.held_bytes.load(Relaxed), 850);
        drop(third);
        // Past everything: the free buffers are too small for 900 bytes, so they go.
        assert!(rx.commit_at(pos(1, 832)).is_none());
        assert_eq!(fast.copy_of(&[4; 900]).map(|b| b.len()), Some(900));
        assert_eq!(fast.held_bytes.load(Relaxed), 956);
        assert!(fast.copy_of(&[5; 1001]).is_none(), "larger than the budget");
        assert_eq!(
            fast.held_bytes.load(Relaxed),
            956,
            "and nothing freed for it"
        );
    }
}
