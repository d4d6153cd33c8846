//! Recovery of a shard's WAL directory at start, before the shard runs.
//!
//! Runs on the starting thread with blocking `std::fs` (no shard executor exists yet).
//! Only the newest segment can have a torn tail: older ones were fdatasync'd before the writer
//! moved on. What recovery does with damage is a named [`RecoveryMode`]:
//!
//! | damage in the newest segment                         | tolerate_corrupt_tail | strict  |
//! |------------------------------------------------------|-----------------------|---------|
//! | torn tail (cut-off record, zeros, or a bad last one) | cut back, go on       | same    |
//! | a bad record with more data after it                 | cut back, report      | refuse  |
//! | header missing (crash while creating it)             | remove file           | same    |
//! | header damaged or not a segment                      | rename `*.corrupt`    | refuse  |
//!
//! Damage in older segments is found by readers, which skip and count it (recovery does not
//! read every segment at start). Whatever recovery keeps is fsync'd before anything builds on
//! it, and the next segment is numbered above every segment and every cursor.
//!
//! After recovery every segment on disk is sealed (a newest segment left open by a crash gets
//! its footer now), and the writer's first record id follows the newest segment's last id
//! (or the highest id a cursor has seen, when delivered segments were deleted).

use std::fs::OpenOptions;
use std::path::Path;

use crate::error::StorageError;
use crate::segment::{
    compressed_path, list_segments, read_segment, scan_bytes, segment_path, Footer, ScanEnd,
    SEGMENT_HEADER_LEN,
};
use crate::writer::WalStart;

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
            // The kebab-case spelling is what earlier versions wrote.
            "tolerate_corrupt_tail" | "tolerate-corrupt-tail" => {
                Ok(RecoveryMode::TolerateCorruptTail)
            }
            "strict" => Ok(RecoveryMode::Strict),
            other => Err(format!(
                "expected \"tolerate_corrupt_tail\" or \"strict\", got {other:?}"
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
    /// The newest segment had no footer (a crash) and was sealed now.
    pub sealed_newest: bool,
    /// Leftovers of an interrupted compression that were removed.
    pub compression_leftovers: usize,
    /// The number the writer's next segment gets.
    pub next_segment: u64,
    /// The id the writer's next record gets.
    pub next_record_id: u64,
}

impl RecoveryReport {
    pub fn next_segment(&self) -> u64 {
        self.next_segment
    }

    /// Where the writer starts.
    pub fn start(&self) -> WalStart {
        WalStart {
            segment: self.next_segment,
            record_id: self.next_record_id,
        }
    }
}

/// Creates `dir` if needed and repairs the newest segment according to `mode`.
pub fn recover_shard(dir: &Path, mode: RecoveryMode) -> Result<RecoveryReport, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))?;
    let compression_leftovers = crate::compress::clean_up(dir)?;
    let mut report = RecoveryReport {
        segments: list_segments(dir)?,
        compression_leftovers,
        ..RecoveryReport::default()
    };
    let mut next_id = None;
    if let Some(&newest) = report.segments.last() {
        next_id = recover_newest(dir, newest, mode, &mut report)?;
    }
    // The newest was set aside: the id sequence continues after the newest readable one.
    for &n in report.segments.iter().rev() {
        if next_id.is_some() {
            break;
        }
        next_id = read_segment(dir, n)
            .ok()
            .and_then(|d| scan_bytes(&d, n).next_id());
    }
    let highest = crate::cursor::highest_cursors(dir)?;
    report.next_segment = report
        .segments
        .last()
        .copied()
        .max(highest.map(|c| c.position.segment))
        .map_or(1, |n| n + 1);
    report.next_record_id = next_id.max(highest.map(|c| c.next_id)).unwrap_or(1).max(1);
    Ok(report)
}

/// Repairs the newest segment; returns the id after its last record if it is readable.
fn recover_newest(
    dir: &Path,
    newest: u64,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<Option<u64>, StorageError> {
    let path = segment_path(dir, newest);
    if !path.exists() {
        return recover_compressed_newest(dir, newest, mode, report);
    }
    let data = std::fs::read(&path).map_err(|e| StorageError::io("read", &path, e))?;
    let scan = crate::segment::scan_bytes(&data, newest);
    report.tail_records = scan.records;
    let Some(reason) = scan.damage else {
        if scan.footer.is_none() {
            seal(&path, &scan)?;
            report.sealed_newest = true;
        } else {
            // Written but perhaps never synced before a crash (fsync = "never"): make it
            // durable before anything (a cursor, a new segment) builds on it.
            sync_file(&path)?;
        }
        return Ok(scan.next_id());
    };
    report.tail_damage = Some(reason);
    if scan.valid_end < SEGMENT_HEADER_LEN {
        if data.len() < SEGMENT_HEADER_LEN as usize {
            // The crash came before the header was durable: nothing durable was in it.
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            report.truncated_bytes = data.len() as u64;
        } else {
            set_aside(&path, newest, mode, reason, report)?;
        }
        report.segments.pop();
        sync_dir(dir)?;
        return Ok(None);
    }
    let tail = &data[scan.valid_end as usize..];
    report.damage_mid_segment = !scan.tail_is_torn(&data);
    if report.damage_mid_segment && mode == RecoveryMode::Strict {
        return Err(StorageError::Corrupt {
            path,
            offset: scan.valid_end,
            reason,
        });
    }
    report.truncated_bytes = tail.len() as u64;
    seal(&path, &scan)?;
    report.sealed_newest = true;
    if scan.salt != 0 && !report.damage_mid_segment {
        // A salted segment's file goes on with a ready file's old bytes: expected after a
        // crash, not damage.
        tracing::info!(segment = %path.display(), end = scan.valid_end, reason,
            "recovery sealed the newest segment after its last whole record");
    } else if report.damage_mid_segment {
        tracing::error!(segment = %path.display(), offset = scan.valid_end, discarded_bytes = tail.len(), reason,
            "damage inside the newest segment: cut it back to the last good record");
    } else {
        tracing::warn!(segment = %path.display(), truncated_bytes = tail.len(), reason, "recovery cut a torn tail");
    }
    Ok(scan.next_id())
}

/// A compressed newest segment was sealed and verified before it was compressed: any damage
/// in it is real damage, never a torn write.
fn recover_compressed_newest(
    dir: &Path,
    newest: u64,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<Option<u64>, StorageError> {
    let path = compressed_path(dir, newest);
    let scan = match read_segment(dir, newest) {
        Ok(data) => scan_bytes(&data, newest),
        Err(_) => scan_bytes(&[], newest),
    };
    report.tail_records = scan.records;
    match scan.damage {
        None if scan.footer.is_some() => Ok(scan.next_id()),
        damage => {
            let reason = damage.unwrap_or("compressed segment without a footer");
            report.tail_damage = Some(reason);
            set_aside(&path, newest, mode, reason, report)?;
            report.segments.pop();
            sync_dir(dir)?;
            Ok(None)
        }
    }
}

fn set_aside(
    path: &Path,
    number: u64,
    mode: RecoveryMode,
    reason: &'static str,
    report: &mut RecoveryReport,
) -> Result<(), StorageError> {
    if mode == RecoveryMode::Strict {
        return Err(StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason,
        });
    }
    let mut aside = path.as_os_str().to_owned();
    aside.push(".corrupt");
    std::fs::rename(path, &aside).map_err(|e| StorageError::io("rename", path, e))?;
    report.set_aside.push(number);
    tracing::error!(segment = %path.display(), reason, "not a valid segment: set aside as *.corrupt");
    Ok(())
}

/// Appends the footer after the segment's valid records and syncs file and directory. A
/// format 2 file is cut to its records first; a salted (format 3) one keeps its length (what
/// follows the footer is not read, and a full-length file is cheaper to recycle).
fn seal(path: &Path, scan: &ScanEnd) -> Result<(), StorageError> {
    let valid_end = scan.valid_end;
    let footer = Footer {
        records: scan.records,
        first_id: scan.first_id.unwrap_or(1),
        data_end: valid_end,
        checksum: scan.records_checksum,
        covers: crate::segment::FooterChecksum::Records,
    };
    let frame = footer.frame(scan.salt);
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open", path, e))?;
    use std::os::unix::fs::FileExt;
    if scan.salt == 0 {
        file.set_len(valid_end)
            .map_err(|e| StorageError::io("truncate", path, e))?;
    }
    file.write_all_at(&frame, valid_end)
        .map_err(|e| StorageError::io("write footer", path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync", path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
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
