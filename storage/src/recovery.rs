//! Recovery of a shard's WAL directory at start, before the shard runs.
//!
//! Runs on the starting thread with blocking `std::fs` (no shard executor exists yet).
//! Only the newest segment can have a torn tail: older ones were fdatasync'd before the writer
//! moved on. The tail is cut back to the last whole record and the file synced.

use std::fs::OpenOptions;
use std::path::Path;

use crate::error::StorageError;
use crate::segment::{list_segments, scan_segment, segment_path, SEGMENT_HEADER_LEN};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments present after recovery, ascending.
    pub segments: Vec<u64>,
    /// Records in the newest segment after recovery.
    pub tail_records: u64,
    /// Bytes cut from the newest segment's torn tail.
    pub truncated_bytes: u64,
    /// Why the tail was cut, if it was.
    pub tail_damage: Option<&'static str>,
}

impl RecoveryReport {
    /// The number the writer's next segment gets.
    pub fn next_segment(&self) -> u64 {
        self.segments.last().map_or(1, |n| n + 1)
    }
}

/// Creates `dir` if needed and repairs a torn tail of its newest segment.
pub fn recover_shard(dir: &Path) -> Result<RecoveryReport, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    let mut report = RecoveryReport {
        segments: list_segments(dir)?,
        ..RecoveryReport::default()
    };
    let Some(&newest) = report.segments.last() else {
        return Ok(report);
    };
    let path = segment_path(dir, newest);
    let scan = scan_segment(&path, newest)?;
    report.tail_records = scan.records;
    if scan.damage.is_none() {
        // Bytes written but never synced before a crash are accepted now: make them durable
        // before anything (a cursor, a new segment) builds on them.
        sync_file(&path)?;
        return Ok(report);
    }
    report.tail_damage = scan.damage;
    report.truncated_bytes = scan.file_len - scan.valid_end;
    if scan.valid_end < SEGMENT_HEADER_LEN {
        // The crash came before the header was durable: the segment held nothing durable.
        std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
        report.segments.pop();
    } else {
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| StorageError::io("open", &path, e))?;
        file.set_len(scan.valid_end)
            .map_err(|e| StorageError::io("truncate", &path, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync", &path, e))?;
    }
    sync_dir(dir)?;
    tracing::warn!(
        segment = %path.display(),
        truncated_bytes = report.truncated_bytes,
        reason = scan.damage,
        "recovery cut a torn tail"
    );
    Ok(report)
}

fn sync_file(path: &Path) -> Result<(), StorageError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("fsync", path, e))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::append_record;
    use crate::segment::segment_header;

    #[test]
    fn truncates_torn_tail_and_drops_headerless_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = segment_header(1).to_vec();
        append_record(&mut one, b"a");
        std::fs::write(segment_path(dir.path(), 1), &one).unwrap();
        let mut two = segment_header(2).to_vec();
        append_record(&mut two, b"b");
        let good = two.len();
        two.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(segment_path(dir.path(), 2), &two).unwrap();
        let report = recover_shard(dir.path()).unwrap();
        assert_eq!(report.segments, vec![1, 2]);
        assert_eq!(report.truncated_bytes, 6);
        assert_eq!(report.next_segment(), 3);
        assert_eq!(
            std::fs::metadata(segment_path(dir.path(), 2))
                .unwrap()
                .len(),
            good as u64
        );

        std::fs::write(segment_path(dir.path(), 3), b"SLU").unwrap();
        let report = recover_shard(dir.path()).unwrap();
        assert_eq!(report.segments, vec![1, 2]);
        assert!(!segment_path(dir.path(), 3).exists());
    }
}
