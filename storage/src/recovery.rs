//! Recovery of a shard's WAL directory at start, before the shard runs.
//!
//! Runs on the starting thread with blocking `std::fs` (no shard executor exists yet).
//! Only the newest segment can have a torn tail: older ones were fdatasync'd before the writer
//! moved on. What recovery does with damage is a named [`RecoveryMode`]:
//!
//! | damage in the newest segment                         | tolerate-corrupt-tail | strict  |
//! |------------------------------------------------------|-----------------------|---------|
//! | torn tail (cut-off record, zeros, or a bad last one) | cut back, go on       | same    |
//! | a bad record with more data after it                 | cut back, report      | refuse  |
//! | header missing (crash while creating it)             | remove file           | same    |
//! | header damaged or not a segment                      | rename `*.corrupt`    | refuse  |
//!
//! Damage in older segments is found by readers, which skip and count it (recovery does not
//! read every segment at start). Whatever recovery keeps is fsync'd before anything builds on
//! it, and the next segment is numbered above every segment and every cursor.

use std::fs::OpenOptions;
use std::path::Path;

use crate::error::StorageError;
use crate::segment::{list_segments, segment_path, SEGMENT_HEADER_LEN};

/// How recovery treats damage it finds (see the module table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    #[default]
    TolerateCorruptTail,
    Strict,
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tolerate-corrupt-tail" => Ok(RecoveryMode::TolerateCorruptTail),
            "strict" => Ok(RecoveryMode::Strict),
            other => Err(format!(
                "expected \"tolerate-corrupt-tail\" or \"strict\", got {other:?}"
            )),
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments present after recovery, ascending.
    pub segments: Vec<u64>,
    /// Records in the newest segment after recovery.
    pub tail_records: u64,
    /// Bytes cut from the newest segment.
    pub truncated_bytes: u64,
    /// Why the newest segment was cut or set aside, if it was.
    pub tail_damage: Option<&'static str>,
    /// The damage had valid-looking data after it (not a crash artifact).
    pub damage_mid_segment: bool,
    /// Segment files renamed to `*.corrupt`.
    pub set_aside: Vec<u64>,
    /// The number the writer's next segment gets.
    pub next_segment: u64,
}

impl RecoveryReport {
    pub fn next_segment(&self) -> u64 {
        self.next_segment
    }
}

/// Creates `dir` if needed and repairs the newest segment according to `mode`.
pub fn recover_shard(dir: &Path, mode: RecoveryMode) -> Result<RecoveryReport, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    let mut report = RecoveryReport {
        segments: list_segments(dir)?,
        ..RecoveryReport::default()
    };
    if let Some(&newest) = report.segments.last() {
        recover_newest(dir, newest, mode, &mut report)?;
    }
    let highest_cursor = crate::cursor::highest_cursor_segment(dir)?;
    report.next_segment = report
        .segments
        .last()
        .copied()
        .max(highest_cursor)
        .map_or(1, |n| n + 1);
    Ok(report)
}

fn recover_newest(
    dir: &Path,
    newest: u64,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    let path = segment_path(dir, newest);
    let data = std::fs::read(&path).map_err(|e| StorageError::io("read", &path, e))?;
    let scan = crate::segment::scan_bytes(&data, newest);
    report.tail_records = scan.records;
    let Some(reason) = scan.damage else {
        // Bytes written but never synced before a crash are accepted now: make them durable
        // before anything (a cursor, a new segment) builds on them.
        return sync_file(&path);
    };
    report.tail_damage = Some(reason);
    if scan.valid_end < SEGMENT_HEADER_LEN {
        if data.len() < SEGMENT_HEADER_LEN as usize {
            // The crash came before the header was durable: nothing durable was in it.
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            report.truncated_bytes = data.len() as u64;
        } else {
            if mode == RecoveryMode::Strict {
                return Err(StorageError::Corrupt {
                    path,
                    offset: 0,
                    reason,
                });
            }
            let aside = path.with_extension("wal.corrupt");
            std::fs::rename(&path, &aside).map_err(|e| StorageError::io("rename", &aside, e))?;
            report.set_aside.push(newest);
            tracing::error!(segment = %path.display(), reason, "not a valid segment: set aside as *.corrupt");
        }
        report.segments.pop();
        return sync_dir(dir);
    }
    let tail = &data[scan.valid_end as usize..];
    report.damage_mid_segment = !is_torn_tail(tail);
    if report.damage_mid_segment && mode == RecoveryMode::Strict {
        return Err(StorageError::Corrupt {
            path,
            offset: scan.valid_end,
            reason,
        });
    }
    report.truncated_bytes = tail.len() as u64;
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| StorageError::io("open", &path, e))?;
    file.set_len(scan.valid_end)
        .map_err(|e| StorageError::io("truncate", &path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", &path, e))?;
    sync_dir(dir)?;
    if report.damage_mid_segment {
        tracing::error!(segment = %path.display(), offset = scan.valid_end, discarded_bytes = tail.len(), reason,
            "damage inside the newest segment: cut it back to the last good record");
    } else {
        tracing::warn!(segment = %path.display(), truncated_bytes = tail.len(), reason, "recovery cut a torn tail");
    }
    Ok(())
}

/// A crash leaves a tail that is a cut-off record, zeros, or one last record whose declared
/// length runs to (or past) the end of the file. Anything else after the damage means data
/// was damaged in place.
pub fn is_torn_tail(tail: &[u8]) -> bool {
    if tail.len() < crate::frame::FRAME_HEADER_LEN || tail.iter().all(|&b| b == 0) {
        return true;
    }
    let declared = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    crate::frame::FRAME_HEADER_LEN + declared >= tail.len()
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
