//! Segment files: naming, listing, header, and scanning records.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::frame::{self, Decoded, FRAME_HEADER_LEN, MAX_RECORD_LEN};

pub const SEGMENT_MAGIC: &[u8; 8] = b"SLUICEW1";
pub const SEGMENT_HEADER_LEN: u64 = 16;
const SUFFIX: &str = ".wal";

pub fn segment_file_name(number: u64) -> String {
    format!("{number:020}{SUFFIX}")
}

pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(segment_file_name(number))
}

pub fn segment_header(number: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..].copy_from_slice(&number.to_le_bytes());
    h
}

/// The segment numbers present in `dir`, ascending. Other files are ignored.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    let mut numbers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if stem.len() == 20 {
            if let Ok(n) = stem.parse::<u64>() {
                numbers.push(n);
            }
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Where a scan of a segment stopped.
#[derive(Debug, PartialEq, Eq)]
pub struct ScanEnd {
    /// Offset just past the last whole, valid record.
    pub valid_end: u64,
    pub records: u64,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<&'static str>,
    pub file_len: u64,
}

/// Reads a whole segment, checking the header and every record.
pub fn scan_segment(path: &Path, number: u64) -> Result<ScanEnd, StorageError> {
    let mut file = File::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)
        .map_err(|e| StorageError::io("read", path, e))?;
    Ok(scan_bytes(&data, number))
}

/// Scans segment bytes (header then records).
pub fn scan_bytes(data: &[u8], number: u64) -> ScanEnd {
    let file_len = data.len() as u64;
    if data.len() < SEGMENT_HEADER_LEN as usize || data[..16] != segment_header(number) {
        return ScanEnd {
            valid_end: 0,
            records: 0,
            damage: Some(if data.len() < 16 {
                "segment header incomplete"
            } else {
                "segment header does not match its file name"
            }),
            file_len,
        };
    }
    let mut at = SEGMENT_HEADER_LEN as usize;
    let mut records = 0;
    let damage = loop {
        if at == data.len() {
            break None;
        }
        match frame::decode(&data[at..]) {
            Decoded::Record { frame_len, .. } => {
                at += frame_len;
                records += 1;
            }
            Decoded::Incomplete => break Some("record cut short"),
            Decoded::Damaged(reason) => break Some(reason),
        }
    };
    ScanEnd {
        valid_end: at as u64,
        records,
        damage,
        file_len,
    }
}

/// Largest frame a reader may need to hold at once.
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_RECORD_LEN;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::append_record;

    #[test]
    fn torn_tail_is_found() {
        let mut data = segment_header(7).to_vec();
        append_record(&mut data, b"one");
        append_record(&mut data, b"two");
        let whole = data.len() as u64;
        append_record(&mut data, b"three");
        data.truncate(data.len() - 2);
        let end = scan_bytes(&data, 7);
        assert_eq!(end.valid_end, whole);
        assert_eq!(end.records, 2);
        assert_eq!(end.damage, Some("record cut short"));
        assert_eq!(
            scan_bytes(&data, 8).damage,
            Some("segment header does not match its file name")
        );
    }
}
