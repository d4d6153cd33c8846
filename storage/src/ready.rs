//! Ready segment files: written all the way through before the writer needs them, so a
//! commit's fdatasync only flushes data.
//!
//! Writing into a file region that has never been written (a new file, or space reserved with
//! `fallocate`) makes every fdatasync also commit file-system metadata (the file's size, the
//! extents turned from unwritten to written): on ext4 a journal commit, measured here at 5–10 ms
//! at the 90th percentile against 0.7 ms for the same writes over an already written file. So
//! each shard keeps a few files of the segment size whose every block is written and synced,
//! and a new segment is one of them, renamed. PostgreSQL does the same with its WAL files
//! (`wal_init_zero`, `wal_recycle`).
//!
//! A ready file comes from one of two places, both on the `wal-reaper` thread (never a shard):
//! - **recycled**: a delivered segment that retention would delete is renamed instead (and
//!   extended with zeros to the segment size if it is shorter);
//! - **zero-filled**: a new file written full of zeros, at start, when nothing is there to
//!   recycle yet. Not while running: measured here, zero-filling beside a loaded writer
//!   doubled the disk's write load and made commits slower (fdatasync p50 10 ms against
//!   2.5 ms), and it took the place of recycling. While outputs hold every segment back
//!   the pool runs dry and new segments are new files again (`ready_misses`).
//!
//! A writer that opens on an empty pool (a first start: the fill has just been asked for)
//! makes its first segment at its first commit, which by then usually finds a ready file. A
//! segment that still had to start as a new file (traffic came before the fill; the pool ran
//! dry) is sealed at the first commit after a ready file is there again (`ready_switches`):
//! its journal-committing fdatasyncs last only that long, not a whole segment (at 1M events/s,
//! 128 MiB is about a second per shard). Measured at a first start under 1M events/s: the
//! new first segment and its switch held ~140K events over 10 ms in the first 0.3 s, the
//! deferred first segment ~20K.
//!
//! Its old contents stay behind the new segment's write position. Segments are format 3 for
//! that reason: every frame's checksum is salted with its segment's number
//! ([`crate::frame::salt`]), so an old segment's records never read as the new one's, and a
//! salted segment's file may go on after its last record or footer.
//!
//! # On-disk layout (in the shard directory)
//! ```text
//! 00000000000000000007.ready        a ready file (contents: zeros or an old segment)
//! 00000000000000000008.ready.tmp    one being prepared (removed at start: never used)
//! ```
//! A ready file becomes a segment by writing the segment's header into it, fdatasync, renaming
//! it to the segment's name, and syncing the directory: a crash before the rename leaves a
//! ready file (its header is overwritten by the next use), after it a segment whose records
//! (none yet) end at its header.
//!
//! # Budget
//! Ready files count against the disk budget like segments: a recycled segment keeps its
//! bytes, a zero-filled file reserves its size first (and is only made while one more segment
//! would still fit, so the writer is never refused for the sake of the pool). Taking a ready
//! file needs no reservation.

use std::collections::VecDeque;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::budget::DiskBudget;
use crate::error::StorageError;
use crate::recovery::sync_dir;
use crate::retention::Reap;

const READY_SUFFIX: &str = ".ready";
const TMP_SUFFIX: &str = ".ready.tmp";
/// Zeros are written in pieces of this size (bounded memory).
const ZERO_CHUNK: usize = 1 << 20;

/// The ready files of one shard directory.
#[derive(Debug)]
pub struct ReadySegments {
    dir: PathBuf,
    segment_size: u64,
    /// How many ready files to keep (`wal.ready_segments`).
    target: usize,
    files: Mutex<VecDeque<PathBuf>>,
    next_seq: AtomicU64,
    budget: Arc<DiskBudget>,
    /// Where refill requests go (the `wal-reaper` thread).
    preparer: Option<std::sync::mpsc::Sender<Reap>>,
    /// Delivered segments renamed into ready files.
    pub recycled: AtomicU64,
    /// Ready files written full of zeros.
    pub zero_filled: AtomicU64,
}

impl ReadySegments {
    /// The ready files of `dir` (a shard directory, created if needed): leftovers of an
    /// interrupted preparation are removed, ready files found are kept (up to `target`; the
    /// rest are deleted and given back to the budget). Refill requests go to `preparer` (the
    /// `wal-reaper` thread); without one the pool is refilled only by recycling and explicit
    /// [`ReadySegments::fill`] calls.
    pub fn open(
        dir: &Path,
        segment_size: u64,
        target: usize,
        budget: Arc<DiskBudget>,
        preparer: Option<std::sync::mpsc::Sender<Reap>>,
    ) -> Result<Arc<Self>, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
        let mut found = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                remove(&entry.path(), &budget)?;
            } else if let Some(seq) = name.strip_suffix(READY_SUFFIX) {
                if let Ok(seq) = seq.parse::<u64>() {
                    found.push((seq, entry.path()));
                }
            }
        }
        found.sort();
        let next_seq = found.last().map_or(1, |(seq, _)| seq + 1);
        let mut files = VecDeque::new();
        for (_, path) in found {
            if files.len() < target {
                files.push_back(path);
            } else {
                remove(&path, &budget)?;
            }
        }
        Ok(Arc::new(ReadySegments {
            dir: dir.to_path_buf(),
            segment_size,
            target,
            files: Mutex::new(files),
            next_seq: AtomicU64::new(next_seq),
            budget,
            preparer,
            recycled: AtomicU64::new(0),
            zero_filled: AtomicU64::new(0),
        }))
    }

    fn list(&self) -> std::sync::MutexGuard<'_, VecDeque<PathBuf>> {
        // Only pushes and pops happen under the lock: a poisoned one is still consistent.
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.list().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a ready file is there to take.
    pub fn has_any(&self) -> bool {
        !self.list().is_empty()
    }

    /// Takes the oldest ready file (its path; the caller renames it into a segment). Its
    /// place is taken by the next delivered segment (recycled).
    pub fn take(&self) -> Option<PathBuf> {
        self.list().pop_front()
    }

    /// Asks the preparer (if any) to bring the pool up to its target with zero-filled files
    /// (at start).
    pub fn request_fill(self: &Arc<Self>) {
        if let Some(preparer) = &self.preparer {
            let _ = preparer.send(Reap::Fill(Arc::clone(self)));
        }
    }

    /// A file that was taken but could not be made a segment goes back (its contents are
    /// still a ready file's).
    pub fn put_back(&self, path: PathBuf) {
        self.list().push_front(path);
    }

    fn wants_more(&self) -> bool {
        self.list().len() < self.target
    }

    fn next_paths(&self) -> (PathBuf, PathBuf) {
        let seq = self.next_seq.fetch_add(1, Relaxed);
        (
            self.dir.join(format!("{seq:020}{TMP_SUFFIX}")),
            self.dir.join(format!("{seq:020}{READY_SUFFIX}")),
        )
    }

    /// Makes the delivered segment file `path` a ready file if the pool wants one; returns
    /// whether it did (if not, the caller deletes it). Its bytes stay counted in the budget.
    pub fn recycle(&self, path: &Path) -> Result<bool, StorageError> {
        if !self.wants_more() {
            return Ok(false);
        }
        let (tmp, ready) = self.next_paths();
        std::fs::rename(path, &tmp).map_err(|e| StorageError::io("rename", path, e))?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(|e| StorageError::io("open", &tmp, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &tmp, e))?
            .len();
        if len < self.segment_size {
            // A segment sealed short (cut to its footer): written through to full size, so
            // no commit into it extends the file.
            zero_fill(&file, &tmp, len, self.segment_size)?;
            self.budget.charge(self.segment_size - len);
        }
        self.publish(&tmp, &ready)?;
        self.recycled.fetch_add(1, Relaxed);
        Ok(true)
    }

    /// Writes new zero-filled ready files until the pool has its target, as long as the
    /// budget has room for each plus one more segment.
    pub fn fill(&self) -> Result<(), StorageError> {
        while self.wants_more() {
            if self.budget.reserve(self.segment_size * 2).is_err() {
                return Ok(());
            }
            self.budget.release(self.segment_size);
            let (tmp, ready) = self.next_paths();
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| StorageError::io("create", &tmp, e))
                .and_then(|file| zero_fill(&file, &tmp, 0, self.segment_size))
                .and_then(|()| self.publish(&tmp, &ready));
            if let Err(e) = made {
                let _ = std::fs::remove_file(&tmp);
                self.budget.release(self.segment_size);
                return Err(e);
            }
            self.zero_filled.fetch_add(1, Relaxed);
        }
        Ok(())
    }

    /// The prepared (synced) `tmp` becomes ready file `ready`, durably.
    fn publish(&self, tmp: &Path, ready: &Path) -> Result<(), StorageError> {
        std::fs::rename(tmp, ready).map_err(|e| StorageError::io("rename", tmp, e))?;
        sync_dir(&self.dir)?;
        self.list().push_back(ready.to_path_buf());
        Ok(())
    }
}

/// Writes zeros over `from..to` of `file` and syncs it (data and size).
fn zero_fill(file: &std::fs::File, path: &Path, from: u64, to: u64) -> Result<(), StorageError> {
    let zeros = vec![0u8; ZERO_CHUNK];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZERO_CHUNK as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(|e| StorageError::io("write zeros", path, e))?;
        at += n as u64;
    }
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", path, e))
}

fn remove(path: &Path, budget: &DiskBudget) -> Result<(), StorageError> {
    if let Some(len) = crate::retention::remove_file_counted(path)? {
        budget.release(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_then_zero_fills_up_to_the_target_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(DiskBudget::unlimited(dir.path()));
        let ready = ReadySegments::open(dir.path(), 4096, 2, Arc::clone(&budget), None).unwrap();
        let old = dir.path().join("00000000000000000001.wal");
        std::fs::write(&old, b"short segment").unwrap();
        assert!(ready.recycle(&old).unwrap());
        assert!(!old.exists());
        ready.fill().unwrap();
        assert_eq!(ready.len(), 2);
        assert_eq!(ready.recycled.load(Relaxed), 1);
        assert_eq!(ready.zero_filled.load(Relaxed), 1);
        let other = dir.path().join("00000000000000000002.wal");
        std::fs::write(&other, b"x").unwrap();
        assert!(
            !ready.recycle(&other).unwrap(),
            "pool full: the caller deletes"
        );
        let taken = ready.take().unwrap();
        let bytes = std::fs::read(&taken).unwrap();
        assert_eq!(bytes.len(), 4096, "extended to the segment size");
        assert_eq!(&bytes[..13], b"short segment");
        // A preparation cut short by a crash is removed; ready files are found again.
        std::fs::write(dir.path().join("00000000000000000009.ready.tmp"), b"half").unwrap();
        let again = ReadySegments::open(dir.path(), 4096, 2, budget, None).unwrap();
        assert_eq!(
            again.len(),
            2,
            "the taken one was not renamed away: still ready"
        );
        assert!(!dir.path().join("00000000000000000009.ready.tmp").exists());
    }
}
