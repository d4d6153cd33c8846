//! Retention: a segment is deleted once every output's cursor has moved past it.
//!
//! Each output publishes the segment its cursor is in (one slot per output per shard, by name;
//! 0 = not known yet, which blocks deletion). Any output that advances computes the minimum and
//! deletes the sealed segments below it. The active segment (the watermark's) is never deleted.
//! Outputs are registered before they start (so a new one holds segments back from the start)
//! and unregistered when a reload removes them: cursor files of outputs no longer configured do
//! not hold segments back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::budget::DiskBudget;
use crate::error::StorageError;
use crate::ready::ReadySegments;
use crate::recovery::sync_dir;
use crate::segment::{compressed_path, list_segments, segment_path};

#[derive(Debug)]
pub struct Retention {
    dir: PathBuf,
    /// Cursor segment per output (by name); 0 until that output has opened its reader.
    cursor_segments: Mutex<BTreeMap<String, u64>>,
    /// Everything below this was deleted already.
    deleted_below: AtomicU64,
    budget: Arc<DiskBudget>,
    /// Where deletions go when a background reaper runs them (see [`Reaper`]); inline if none.
    reaper: Option<std::sync::mpsc::Sender<Reap>>,
    /// The shard's ready files: delivered plain segments are recycled into them while it
    /// wants more (see [`crate::ready`]).
    ready: Option<Arc<ReadySegments>>,
}

/// Work for the reaper thread.
pub enum Reap {
    /// Delete (or recycle) a shard's segments below `below`.
    Delete {
        dir: PathBuf,
        below: u64,
        budget: Arc<DiskBudget>,
        ready: Option<Arc<ReadySegments>>,
    },
    /// Bring a shard's ready files up to their target (zero-filled files).
    Fill(Arc<ReadySegments>),
}

/// Deletes delivered segments and prepares ready files on a thread of its own: unlinking a
/// large file takes tens of milliseconds (its extents are freed) and zero-filling one longer,
/// which must stall neither an output's delivery nor a shard.
pub struct Reaper;

impl Reaper {
    /// Starts the reaper thread; it ends when every sender is dropped.
    pub fn start() -> std::io::Result<std::sync::mpsc::Sender<Reap>> {
        let (tx, rx) = std::sync::mpsc::channel::<Reap>();
        std::thread::Builder::new()
            .name("wal-reaper".into())
            .spawn(move || {
                for reap in rx {
                    match reap {
                        Reap::Delete { dir, below, budget, ready } => {
                            if let Err(e) = delete_below(&dir, below, &budget, ready.as_deref()) {
                                tracing::warn!(error = %e, "deleting delivered segments failed; retried at the next advance");
                            }
                        }
                        Reap::Fill(ready) => {
                            if let Err(e) = ready.fill() {
                                tracing::warn!(error = %e, dir = %ready.dir().display(),
                                    "cannot prepare a ready WAL segment; new segments are created as needed");
                            }
                        }
                    }
                }
            })?;
        Ok(tx)
    }
}

/// Deletes the segments of `dir` below `below` (recycling plain ones into `ready` while it
/// wants more); returns them.
fn delete_below(
    dir: &Path,
    below: u64,
    budget: &DiskBudget,
    ready: Option<&ReadySegments>,
) -> Result<Vec<u64>, StorageError> {
    let mut deleted = Vec::new();
    for number in list_segments(dir)?.into_iter().take_while(|&n| n < below) {
        let plain = segment_path(dir, number);
        if let Some(ready) = ready {
            if plain.exists() && ready.recycle(&plain)? {
                // A compressed copy may exist for a moment while it is being compressed.
                budget.release(remove_segment(dir, number)?);
                deleted.push(number);
                continue;
            }
        }
        let freed = remove_segment(dir, number)?;
        if freed > 0 {
            budget.release(freed);
            deleted.push(number);
        }
    }
    if !deleted.is_empty() {
        sync_dir(dir)?;
        tracing::debug!(dir = %dir.display(), ?deleted, "deleted delivered segments");
    }
    Ok(deleted)
}

impl Retention {
    /// Retention of the shard in `dir` for the named outputs; space freed goes back to
    /// `budget`.
    pub fn new(dir: &Path, outputs: &[&str], budget: Arc<DiskBudget>) -> Self {
        let r = Retention {
            dir: dir.to_path_buf(),
            cursor_segments: Mutex::new(BTreeMap::new()),
            deleted_below: AtomicU64::new(0),
            budget,
            reaper: None,
            ready: None,
        };
        for name in outputs {
            r.register(name);
        }
        r
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        // A panic while holding this lock cannot leave the map half-updated: recover it.
        self.cursor_segments
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an output (before it starts): it holds every segment back until it advances.
    pub fn register(&self, output: &str) {
        self.slots().entry(output.to_string()).or_insert(0);
    }

    /// Removes an output (a reload dropped it): it no longer holds segments back.
    pub fn unregister(&self, output: &str) {
        self.slots().remove(output);
    }

    /// Hands deletions to a background [`Reaper`] instead of doing them in `advance`.
    pub fn with_reaper(mut self, reaper: std::sync::mpsc::Sender<Reap>) -> Self {
        self.reaper = Some(reaper);
        self
    }

    /// Recycles delivered segments into `ready` (the shard's ready files) instead of deleting
    /// them, while it wants more.
    pub fn with_ready(mut self, ready: Arc<ReadySegments>) -> Self {
        self.ready = Some(ready);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn budget(&self) -> &Arc<DiskBudget> {
        &self.budget
    }

    /// Records that `output`'s cursor is now in `segment` and deletes what every output passed,
    /// never `active_segment` or later. Returns the segments deleted (none when a reaper does
    /// the deleting: it is handed the work and the call returns at once).
    pub fn advance(
        &self,
        output: &str,
        segment: u64,
        active_segment: u64,
    ) -> Result<Vec<u64>, StorageError> {
        let passed = {
            let mut slots = self.slots();
            match slots.get_mut(output) {
                Some(slot) => *slot = segment,
                None => return Ok(Vec::new()), // Unregistered meanwhile.
            }
            slots
                .values()
                .copied()
                .min()
                .unwrap_or(0)
                .min(active_segment)
        };
        if passed <= self.deleted_below.fetch_max(passed, Ordering::AcqRel) {
            return Ok(Vec::new());
        }
        if let Some(reaper) = &self.reaper {
            let reap = Reap::Delete {
                dir: self.dir.clone(),
                below: passed,
                budget: Arc::clone(&self.budget),
                ready: self.ready.clone(),
            };
            if reaper.send(reap).is_ok() {
                return Ok(Vec::new());
            }
        }
        delete_below(&self.dir, passed, &self.budget, self.ready.as_deref())
    }
}

/// Deletes segment `number` in whichever forms exist (plain, compressed); returns the bytes
/// freed (0 if it was gone already, e.g. another output deleted it at the same moment).
pub fn remove_segment(dir: &Path, number: u64) -> Result<u64, StorageError> {
    let mut freed = 0;
    for path in [segment_path(dir, number), compressed_path(dir, number)] {
        if let Some(len) = remove_file_counted(&path)? {
            freed += len.max(1);
        }
    }
    Ok(freed)
}

/// Removes `path`: the bytes it held, or `None` when it was not there.
pub(crate) fn remove_file_counted(path: &Path) -> Result<Option<u64>, StorageError> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("stat", path, e)),
    };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(Some(len)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("remove", path, e)),
    }
}

impl Retention {
    /// The segment the slowest output's cursor is in: `None` without outputs, `Some(0)` while
    /// an output has not opened its reader yet.
    pub fn slowest_segment(&self) -> Option<u64> {
        self.slots().values().copied().min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::segment_header;

    #[test]
    fn deletes_only_what_every_output_passed() {
        let dir = tempfile::tempdir().unwrap();
        for n in 1..=5 {
            std::fs::write(segment_path(dir.path(), n), segment_header(n, 1)).unwrap();
        }
        let budget = Arc::new(DiskBudget::unlimited(dir.path()));
        let r = Retention::new(dir.path(), &["a", "b"], budget);
        assert!(
            r.advance("a", 4, 5).unwrap().is_empty(),
            "output b not started"
        );
        assert_eq!(r.advance("b", 2, 5).unwrap(), vec![1]);
        // A new output holds back what it has not passed, from before it starts.
        r.register("c");
        assert!(r.advance("b", 9, 5).unwrap().is_empty());
        r.unregister("c");
        assert_eq!(r.advance("b", 9, 5).unwrap(), vec![2, 3]);
        assert!(r.advance("a", 4, 5).unwrap().is_empty());
        assert_eq!(
            r.advance("a", 9, 5).unwrap(),
            vec![4],
            "never the active segment"
        );
        assert_eq!(list_segments(dir.path()).unwrap(), vec![5]);
    }
}
