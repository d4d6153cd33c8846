//! Read-only views of a WAL directory for operator tools (`sluice wal inspect|verify|dump`).
//! Safe to run while Sluice runs: it only reads, and reports the newest segment as "newest"
//! (it may still be growing).

use std::path::{Path, PathBuf};

use crate::cursor::{cursor_dir, read_cursor, Cursor};
use crate::error::StorageError;
use crate::frame::{self, Decoded};
use crate::position::Position;
use crate::segment::{
    compressed_path, list_segments, read_segment, scan_bytes, segment_path, Footer,
    SEGMENT_HEADER_LEN,
};

#[derive(Debug)]
pub struct SegmentInfo {
    pub number: u64,
    pub path: PathBuf,
    /// Bytes on disk (compressed size for a compressed segment).
    pub bytes: u64,
    /// Bytes of the segment itself (uncompressed).
    pub segment_bytes: u64,
    pub compressed: bool,
    pub records: u64,
    /// Id of the first record (from the header).
    pub first_id: Option<u64>,
    /// The footer of a sealed segment, checked against the records.
    pub footer: Option<Footer>,
    /// Where the first damage is, if any: offset and reason.
    pub damage: Option<(u64, &'static str)>,
    /// The damage is what a crash leaves at the end of the newest segment (recovery cuts it).
    pub torn_tail: bool,
    pub newest: bool,
    /// Offsets at which records start (for lag computations).
    record_starts: Vec<u64>,
}

#[derive(Debug)]
pub struct CursorInfo {
    pub sink: String,
    pub position: Result<Cursor, String>,
    /// Records on disk after the cursor.
    pub lag_records: Option<u64>,
}

#[derive(Debug)]
pub struct ShardInfo {
    pub dir: PathBuf,
    pub segments: Vec<SegmentInfo>,
    pub cursors: Vec<CursorInfo>,
}

/// The `shard-<n>` directories under `data_dir`, by shard number.
pub fn shard_dirs(data_dir: &Path) -> Result<Vec<(usize, PathBuf)>, StorageError> {
    let entries = std::fs::read_dir(data_dir).map_err(|e| StorageError::io("list", data_dir, e))?;
    let mut shards: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e
                .file_name()
                .to_str()?
                .strip_prefix("shard-")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    shards.sort();
    Ok(shards)
}

/// Scans every segment and cursor of one shard.
pub fn inspect_shard(dir: &Path) -> Result<ShardInfo, StorageError> {
    let numbers = list_segments(dir)?;
    let mut segments = Vec::with_capacity(numbers.len());
    for (i, &number) in numbers.iter().enumerate() {
        segments.push(inspect_segment(dir, number, i + 1 == numbers.len())?);
    }
    let cursors = inspect_cursors(dir, &segments);
    Ok(ShardInfo {
        dir: dir.to_path_buf(),
        segments,
        cursors,
    })
}

/// Scans one segment (plain or compressed); `newest`: the shard's last one.
fn inspect_segment(dir: &Path, number: u64, newest: bool) -> Result<SegmentInfo, StorageError> {
    let plain = segment_path(dir, number);
    let compressed = !plain.exists();
    let path = if compressed {
        compressed_path(dir, number)
    } else {
        plain
    };
    let bytes = std::fs::metadata(&path)
        .map_err(|e| StorageError::io("stat", &path, e))?
        .len();
    let data = match read_segment(dir, number) {
        Ok(d) => d,
        // An unreadable compressed file shows as a segment with no valid header.
        Err(_) if compressed => Vec::new(),
        Err(e) => return Err(e),
    };
    let scan = scan_bytes(&data, number);
    Ok(SegmentInfo {
        number,
        bytes,
        segment_bytes: data.len() as u64,
        compressed,
        records: scan.records,
        first_id: scan.first_id,
        footer: scan.footer,
        damage: scan.damage.map(|r| (scan.valid_end, r)),
        torn_tail: scan.damage.is_some()
            && newest
            && scan.valid_end >= SEGMENT_HEADER_LEN
            && scan.tail_is_torn(&data),
        newest,
        record_starts: record_starts(&data, scan.valid_end, scan.salt),
        path,
    })
}

/// Every output's cursor in the shard, by sink name, with its lag over `segments`.
fn inspect_cursors(dir: &Path, segments: &[SegmentInfo]) -> Vec<CursorInfo> {
    let mut cursors = Vec::new();
    let Ok(entries) = std::fs::read_dir(cursor_dir(dir)) else {
        return cursors;
    };
    let mut sinks: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".cursor")
                .map(String::from)
        })
        .collect();
    sinks.sort();
    for sink in sinks {
        let position = match read_cursor(dir, &sink) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => continue,
            Err(e) => Err(e.to_string()),
        };
        let lag_records = position.as_ref().ok().map(|c| lag(segments, c.position));
        cursors.push(CursorInfo {
            sink,
            position,
            lag_records,
        });
    }
    cursors
}

/// Where each record starts; the records of a compressed commit ([`crate::block`]) all start
/// where their block does (a cursor is never inside a block).
fn record_starts(data: &[u8], valid_end: u64, salt: u32) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut blocks = crate::block::BlockReader::default();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while (at as u64) < valid_end {
        match frame::decode_salted(&data[at..], salt) {
            Decoded::Record { frame_len, .. } => {
                starts.push(at as u64);
                at += frame_len;
            }
            Decoded::Block { payload, frame_len } => {
                let Ok(opened) = blocks.open(payload, salt) else {
                    break;
                };
                starts.extend(std::iter::repeat_n(at as u64, opened.records as usize));
                at += frame_len;
            }
            _ => break,
        }
    }
    starts
}

fn lag(segments: &[SegmentInfo], cursor: Position) -> u64 {
    segments
        .iter()
        .map(|s| match s.number.cmp(&cursor.segment) {
            std::cmp::Ordering::Less => 0,
            std::cmp::Ordering::Equal => s
                .record_starts
                .iter()
                .filter(|&&o| o >= cursor.offset)
                .count() as u64,
            std::cmp::Ordering::Greater => s.records,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::append_record;
    use crate::segment::segment_header_v2 as segment_header;

    #[test]
    fn counts_records_damage_and_lag() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = segment_header(1, 1).to_vec();
        append_record(&mut one, b"a");
        let second_record = one.len() as u64;
        append_record(&mut one, b"b");
        std::fs::write(segment_path(dir.path(), 1), &one).unwrap();
        let mut two = segment_header(2, 3).to_vec();
        append_record(&mut two, b"c");
        two.extend_from_slice(&[1, 2, 3]);
        std::fs::write(segment_path(dir.path(), 2), &two).unwrap();
        crate::write_cursor(
            dir.path(),
            "out",
            Cursor {
                position: Position {
                    segment: 1,
                    offset: second_record,
                },
                next_id: 2,
            },
        )
        .unwrap();
        let info = inspect_shard(dir.path()).unwrap();
        assert_eq!(info.segments.len(), 2);
        assert_eq!(info.segments[0].records, 2);
        assert_eq!(info.segments[1].damage, Some((41, "record cut short")));
        assert_eq!(info.segments[1].first_id, Some(3));
        assert!(info.segments[1].newest);
        assert_eq!(info.cursors[0].lag_records, Some(2));
    }
}
