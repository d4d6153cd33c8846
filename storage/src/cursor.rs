//! Output cursors: where an output has confirmed delivery up to, per shard.
//!
//! A cursor file is 32 bytes: `"SLCUR001" | segment u64 | offset u64 | crc32c(first 24) u32 |
//! 4 zero bytes`. It is replaced atomically: written to a temporary file, fdatasync'd, renamed
//! over the old one, and the directory fsync'd. A torn or damaged cursor is reported, never
//! trusted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::position::Position;
use crate::recovery::sync_dir;

const MAGIC: &[u8; 8] = b"SLCUR001";
const CURSOR_LEN: usize = 32;

pub fn cursor_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("cursors")
}

/// The cursor file of output `sink` (a validated config name, never event data).
pub fn cursor_path(shard_dir: &Path, sink: &str) -> PathBuf {
    cursor_dir(shard_dir).join(format!("{sink}.cursor"))
}

fn encode(pos: Position) -> [u8; CURSOR_LEN] {
    let mut b = [0u8; CURSOR_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&pos.segment.to_le_bytes());
    b[16..24].copy_from_slice(&pos.offset.to_le_bytes());
    let crc = crc32c::crc32c(&b[..24]);
    b[24..28].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads the cursor of `sink`; `Ok(None)` when the output has none yet.
pub fn read_cursor(shard_dir: &Path, sink: &str) -> Result<Option<Position>, StorageError> {
    let path = cursor_path(shard_dir, sink);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    let valid = bytes.len() == CURSOR_LEN
        && &bytes[..8] == MAGIC
        && crc32c::crc32c(&bytes[..24]).to_le_bytes() == bytes[24..28];
    if !valid {
        return Err(StorageError::Corrupt {
            path,
            offset: 0,
            reason: "cursor file damaged",
        });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(Some(Position {
        segment: u64_at(8),
        offset: u64_at(16),
    }))
}

/// The highest segment any cursor file in the shard points into (damaged ones are skipped:
/// they are reported when their output opens them).
pub fn highest_cursor_segment(shard_dir: &Path) -> Result<Option<u64>, StorageError> {
    let dir = cursor_dir(shard_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut highest = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(sink) = name.to_str().and_then(|n| n.strip_suffix(".cursor")) else {
            continue;
        };
        if let Ok(Some(pos)) = read_cursor(shard_dir, sink) {
            highest = highest.max(Some(pos.segment));
        }
    }
    Ok(highest)
}

/// Replaces the cursor of `sink` atomically and durably.
pub fn write_cursor(shard_dir: &Path, sink: &str, pos: Position) -> Result<(), StorageError> {
    let dir = cursor_dir(shard_dir);
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create directory", &dir, e))?;
    let path = cursor_path(shard_dir, sink);
    let tmp = dir.join(format!("{sink}.cursor.tmp"));
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StorageError::io("create", &tmp, e))?;
    file.write_all(&encode(pos))
        .map_err(|e| StorageError::io("write", &tmp, e))?;
    file.sync_data()
        .map_err(|e| StorageError::io("fdatasync", &tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename", &path, e))?;
    sync_dir(&dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cursor(dir.path(), "out").unwrap(), None);
        let pos = Position {
            segment: 3,
            offset: 4096,
        };
        write_cursor(dir.path(), "out", pos).unwrap();
        assert_eq!(read_cursor(dir.path(), "out").unwrap(), Some(pos));
        let path = cursor_path(dir.path(), "out");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[9] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(matches!(
            read_cursor(dir.path(), "out"),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
