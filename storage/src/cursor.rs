//! Output cursors: where an output has confirmed delivery up to, per shard.
//!
//! A cursor file is 1024 bytes holding two slots, at offsets 0 and 512 (separate sectors):
//! `"SLCUR003" | sequence u64 | segment u64 | offset u64 | next record id u64 |
//! crc32c(first 40 bytes) u32`.
//! An update overwrites the older slot in place with the next sequence number and
//! fdatasyncs: it needs no new disk block (so it still works on a full disk, where a cursor
//! must advance for retention to free space), and a torn write only damages the slot being
//! written; the other still holds the previous position. Reading takes the valid slot with
//! the higher sequence; with no valid slot the cursor is reported damaged, never trusted.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::position::Position;
use crate::recovery::sync_dir;

const MAGIC: &[u8; 8] = b"SLCUR003";
const SLOT_LEN: usize = 44;
const SLOT_STRIDE: u64 = 512;
const FILE_LEN: usize = 1024;

/// How far an output got in one shard: the position after the last confirmed record and
/// the id of the next record (for lag in events and `wal dump --from ID`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub position: Position,
    pub next_id: u64,
}

pub fn cursor_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("cursors")
}

/// The cursor file of output `sink` (a validated config name, never event data).
pub fn cursor_path(shard_dir: &Path, sink: &str) -> PathBuf {
    cursor_dir(shard_dir).join(format!("{sink}.cursor"))
}

fn encode_slot(sequence: u64, c: Cursor) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..8].copy_from_slice(MAGIC);
    b[8..16].copy_from_slice(&sequence.to_le_bytes());
    b[16..24].copy_from_slice(&c.position.segment.to_le_bytes());
    b[24..32].copy_from_slice(&c.position.offset.to_le_bytes());
    b[32..40].copy_from_slice(&c.next_id.to_le_bytes());
    let crc = crc32c::crc32c(&b[..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `(sequence, cursor)` of a valid slot.
fn decode_slot(b: &[u8]) -> Option<(u64, Cursor)> {
    let b = b.get(..SLOT_LEN)?;
    if &b[..8] != MAGIC || crc32c::crc32c(&b[..40]).to_le_bytes() != b[40..44] {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    Some((
        u64_at(8),
        Cursor {
            position: Position {
                segment: u64_at(16),
                offset: u64_at(24),
            },
            next_id: u64_at(32),
        },
    ))
}

/// The newest valid slot of a cursor file's bytes.
fn newest_slot(bytes: &[u8]) -> Option<(u64, Cursor)> {
    [0, SLOT_STRIDE as usize]
        .iter()
        .filter_map(|&at| bytes.get(at..).and_then(decode_slot))
        .max_by_key(|(seq, _)| *seq)
}

/// Reads the cursor of `sink`; `Ok(None)` when the output has none yet.
pub fn read_cursor(shard_dir: &Path, sink: &str) -> Result<Option<Cursor>, StorageError> {
    let path = cursor_path(shard_dir, sink);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", path, e)),
    };
    match newest_slot(&bytes) {
        Some((_, cursor)) => Ok(Some(cursor)),
        None => Err(StorageError::Corrupt {
            path,
            offset: 0,
            reason: "cursor file damaged",
        }),
    }
}

/// Whether a cursor write waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorSync {
    /// fdatasync before returning: the position survives power loss.
    Now,
    /// Written, not synced: a crash may bring back the previous slot (an older position:
    /// duplicates, never loss). Retention must not follow such a position until synced.
    Later,
}

/// Records `pos` as the cursor of `sink`, durably, overwriting the older slot in place.
pub fn write_cursor(shard_dir: &Path, sink: &str, pos: Cursor) -> Result<(), StorageError> {
    write_cursor_with(shard_dir, sink, pos, CursorSync::Now)
}

/// Records `pos` as the cursor of `sink` in the older slot, synced as `sync` says.
pub fn write_cursor_with(
    shard_dir: &Path,
    sink: &str,
    pos: Cursor,
    sync: CursorSync,
) -> Result<(), StorageError> {
    let path = cursor_path(shard_dir, sink);
    let mut current = [0u8; FILE_LEN];
    let file = match OpenOptions::new().read(true).write(true).open(&path) {
        Ok(f) => {
            // A short file (damaged) just reads as no valid slot.
            let _ = f.read_at(&mut current, 0);
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return create_cursor(shard_dir, &path, pos)
        }
        Err(e) => return Err(StorageError::io("open", path, e)),
    };
    let sequence = newest_slot(&current).map_or(1, |(seq, _)| seq + 1);
    let at = (sequence % 2) * SLOT_STRIDE;
    file.write_all_at(&encode_slot(sequence, pos), at)
        .map_err(|e| StorageError::io("write", &path, e))?;
    match sync {
        CursorSync::Now => file
            .sync_data()
            .map_err(|e| StorageError::io("fdatasync", &path, e)),
        CursorSync::Later => Ok(()),
    }
}

/// First write: the whole file (both slots' space) then the directory entry, durably.
fn create_cursor(shard_dir: &Path, path: &Path, pos: Cursor) -> Result<(), StorageError> {
    let dir = cursor_dir(shard_dir);
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("create directory", &dir, e))?;
    let mut bytes = [0u8; FILE_LEN];
    let sequence = 1u64;
    let at = ((sequence % 2) * SLOT_STRIDE) as usize;
    bytes[at..at + SLOT_LEN].copy_from_slice(&encode_slot(sequence, pos));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io("create", path, e))?;
    file.write_all_at(&bytes, 0)
        .map_err(|e| StorageError::io("write", path, e))?;
    file.sync_data()
        .map_err(|e| StorageError::io("fdatasync", path, e))?;
    sync_dir(&dir)
}

/// The lowest next record id of any output's cursor in the shard: every record below it was
/// confirmed by every output that has a cursor (`None`: no cursor).
pub fn lowest_cursor_id(shard_dir: &Path) -> Option<u64> {
    let entries = std::fs::read_dir(cursor_dir(shard_dir)).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let sink = name.to_str()?.strip_suffix(".cursor")?.to_string();
            read_cursor(shard_dir, &sink).ok().flatten()
        })
        .map(|c| c.next_id)
        .min()
}

/// The highest segment and the highest record id of any cursor file in the shard (damaged
/// ones are skipped: they are reported when their output opens them).
pub fn highest_cursors(shard_dir: &Path) -> Result<Option<Cursor>, StorageError> {
    let dir = cursor_dir(shard_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("list", dir, e)),
    };
    let mut highest: Option<Cursor> = None;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(sink) = name.to_str().and_then(|n| n.strip_suffix(".cursor")) else {
            continue;
        };
        if let Ok(Some(c)) = read_cursor(shard_dir, sink) {
            highest = Some(match highest {
                None => c,
                Some(h) => Cursor {
                    position: h.position.max(c.position),
                    next_id: h.next_id.max(c.next_id),
                },
            });
        }
    }
    Ok(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_alternating_slots_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cursor(dir.path(), "out").unwrap(), None);
        for i in 1..=5u64 {
            let pos = Cursor {
                position: Position {
                    segment: i,
                    offset: 4096 * i,
                },
                next_id: 100 * i,
            };
            // Unsynced writes use the same slots: a crash can only bring back the other one.
            let sync = if i % 2 == 0 {
                CursorSync::Now
            } else {
                CursorSync::Later
            };
            write_cursor_with(dir.path(), "out", pos, sync).unwrap();
            assert_eq!(read_cursor(dir.path(), "out").unwrap(), Some(pos));
        }
        let path = cursor_path(dir.path(), "out");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), FILE_LEN as u64);
        // A torn write of the newest slot (seq 5, slot 1) leaves the previous position.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[512 + 20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let previous = read_cursor(dir.path(), "out").unwrap().unwrap();
        assert_eq!(previous.position.segment, 4);
        assert_eq!(previous.next_id, 400);
        // Both slots damaged: reported, never trusted.
        bytes[9] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_cursor(dir.path(), "out"),
            Err(StorageError::Corrupt { .. })
        ));
    }
}
