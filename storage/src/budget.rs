//! The disk budget of a data directory: `max_disk` bytes of segments in all shards together,
//! and `min_free_disk` left free on its file system.
//!
//! Accounting is by reservation: a shard reserves a whole segment's size before it creates
//! the segment (the same moment it preallocates it), gives back the unused rest when it seals
//! it, and retention, compression and `drop_oldest` give back what they free. At start the
//! budget counts the segment files already on disk. One instance per data directory, shared
//! by every shard (atomics; a shard checks it once per segment, never per event).
//!
//! When a reservation does not fit, the [`FullPolicy`] decides: `Block` (the shard's writer
//! blocks like on a full disk: TCP backpressure, UDP drops counted, retried periodically) or
//! `DropOldest` (the shard deletes its own oldest sealed segments, counting every record in
//! them, until it fits; with nothing of its own left to drop it blocks).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::StorageError;

/// What a shard does when its next segment would exceed the budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FullPolicy {
    /// Stop taking events until outputs deliver and retention frees space.
    #[default]
    Block,
    /// Delete the oldest undelivered segment(s) of the shard; the events in them are counted
    /// as dropped.
    DropOldest,
}

impl std::str::FromStr for FullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "block" => Ok(FullPolicy::Block),
            "drop_oldest" => Ok(FullPolicy::DropOldest),
            other => Err(format!(
                "expected \"block\" or \"drop_oldest\", got {other:?}"
            )),
        }
    }
}

/// Free space to keep on the data directory's file system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinFree {
    Bytes(u64),
    /// Percent of the file system's size.
    Percent(f64),
}

impl std::str::FromStr for MinFree {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            return match p.trim().parse::<f64>() {
                Ok(v) if (0.0..100.0).contains(&v) => Ok(MinFree::Percent(v)),
                _ => Err(format!("expected a percentage below 100, got {s:?}")),
            };
        }
        s.parse::<bytesize::ByteSize>()
            .map(|b| MinFree::Bytes(b.as_u64()))
            .map_err(|e| {
                format!(
                    "expected a size like \"5GiB\" or a percentage like \"5%\", got {s:?} ({e})"
                )
            })
    }
}

/// Why a reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetFull {
    #[error("max_disk reached: {used} bytes of segments + {need} more > {max}")]
    MaxDisk { used: u64, need: u64, max: u64 },
    #[error("min_free_disk reached: {free} bytes free - {need} < {keep} to keep free")]
    MinFree { free: u64, need: u64, keep: u64 },
}

#[derive(Debug)]
pub struct DiskBudget {
    data_dir: PathBuf,
    max_bytes: Option<u64>,
    min_free: Option<MinFree>,
    pub policy: FullPolicy,
    used: AtomicU64,
    /// Reservations refused (each blocked a shard or made it drop segments).
    pub refusals: AtomicU64,
    pub dropped_segments: AtomicU64,
    /// Records deleted undelivered by `drop_oldest`.
    pub dropped_records: AtomicU64,
}

impl DiskBudget {
    /// A budget for `data_dir` counting the segment files already under it.
    pub fn new(
        data_dir: &Path,
        max_bytes: Option<u64>,
        min_free: Option<MinFree>,
        policy: FullPolicy,
    ) -> Result<Self, StorageError> {
        Ok(DiskBudget {
            data_dir: data_dir.to_path_buf(),
            max_bytes,
            min_free,
            policy,
            used: AtomicU64::new(segment_bytes_under(data_dir)?),
            refusals: AtomicU64::new(0),
            dropped_segments: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
        })
    }

    /// No limits: only accounting.
    pub fn unlimited(data_dir: &Path) -> Self {
        DiskBudget {
            data_dir: data_dir.to_path_buf(),
            max_bytes: None,
            min_free: None,
            policy: FullPolicy::Block,
            used: AtomicU64::new(0),
            refusals: AtomicU64::new(0),
            dropped_segments: AtomicU64::new(0),
            dropped_records: AtomicU64::new(0),
        }
    }

    /// Bytes of segments (reserved or on disk) under the data directory.
    pub fn used(&self) -> u64 {
        self.used.load(Relaxed)
    }

    /// Reserves `need` bytes for a new segment, or says which limit it would cross.
    pub fn reserve(&self, need: u64) -> Result<(), BudgetFull> {
        if let Some(max) = self.max_bytes {
            let reserved = self.used.fetch_add(need, Relaxed);
            if reserved + need > max {
                self.used.fetch_sub(need, Relaxed);
                self.refusals.fetch_add(1, Relaxed);
                return Err(BudgetFull::MaxDisk {
                    used: reserved,
                    need,
                    max,
                });
            }
        } else {
            self.used.fetch_add(need, Relaxed);
        }
        if let Some(min_free) = self.min_free {
            if let Some((free, total)) = free_space(&self.data_dir) {
                let keep = match min_free {
                    MinFree::Bytes(b) => b,
                    MinFree::Percent(p) => (total as f64 * p / 100.0) as u64,
                };
                if free.saturating_sub(need) < keep {
                    self.used.fetch_sub(need, Relaxed);
                    self.refusals.fetch_add(1, Relaxed);
                    return Err(BudgetFull::MinFree { free, need, keep });
                }
            }
        }
        Ok(())
    }

    /// Gives back `bytes` (a sealed segment's unused reservation, or a deleted or compressed
    /// file's space).
    pub fn release(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Relaxed, Relaxed, |u| Some(u.saturating_sub(bytes)));
    }

    /// Counts `bytes` written past a reservation (a sealed segment's footer), without a limit
    /// check: they are on disk already.
    pub fn charge(&self, bytes: u64) {
        self.used.fetch_add(bytes, Relaxed);
    }

    /// Counts a segment deleted undelivered.
    pub fn count_drop(&self, records: u64) {
        self.dropped_segments.fetch_add(1, Relaxed);
        self.dropped_records.fetch_add(records, Relaxed);
    }
}

/// The size in bytes of the file system holding `dir` (`None` when it cannot be told).
pub fn file_system_size(dir: &Path) -> Option<u64> {
    free_space(dir).map(|(_, total)| total)
}

/// `(available to us, total)` bytes of the file system holding `dir`.
fn free_space(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let unit = st.f_frsize as u64;
    Some((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// Total size of segment files (plain, compressed, ready) in the `shard-*` directories under
/// `data_dir`.
fn segment_bytes_under(data_dir: &Path) -> Result<u64, StorageError> {
    let mut total = 0;
    let shards = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StorageError::io("list", data_dir, e)),
    };
    for shard in shards.flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for file in files.flatten() {
            let name = file.file_name();
            let name = name.to_string_lossy();
            // Ready files (and one being prepared) are segments-to-be: counted alike.
            if [".wal", ".wal.zst", ".ready", ".ready.tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            {
                total += file.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limits() {
        assert_eq!("5%".parse::<MinFree>(), Ok(MinFree::Percent(5.0)));
        assert_eq!("1KiB".parse::<MinFree>(), Ok(MinFree::Bytes(1024)));
        assert!("150%".parse::<MinFree>().is_err());
        assert_eq!("drop_oldest".parse(), Ok(FullPolicy::DropOldest));
        assert!("drop".parse::<FullPolicy>().is_err());
    }

    #[test]
    fn max_disk_refuses_then_fits_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let b = DiskBudget::new(dir.path(), Some(100), None, FullPolicy::Block).unwrap();
        b.reserve(60).unwrap();
        assert!(matches!(b.reserve(60), Err(BudgetFull::MaxDisk { .. })));
        assert_eq!(b.used(), 60);
        b.release(30);
        b.reserve(60).unwrap();
        assert_eq!(b.refusals.load(Relaxed), 1);
        // More free space demanded than any disk has: refused.
        let b = DiskBudget::new(
            dir.path(),
            None,
            Some(MinFree::Percent(99.9)),
            FullPolicy::Block,
        )
        .unwrap();
        assert!(matches!(
            b.reserve(1 << 40),
            Err(BudgetFull::MinFree { .. })
        ));
    }
}
