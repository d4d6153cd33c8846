//! zstd compression of sealed segments that outputs have not reached yet (the backlog).
//!
//! # Format
//! `<n>.wal.zst` is a valid zstd file in the *seekable* layout of zstd's contrib spec: the
//! segment's exact bytes (header, records, footer) cut into independent zstd frames of
//! [`FRAME_BYTES`] uncompressed bytes each (with zstd's content checksum), then a skippable
//! frame holding the seek table:
//! ```text
//! frame*  |  0x184D2A5E | table size u32 | (compressed u32, decompressed u32)* |
//!            frame count u32 | descriptor u8 (0: no per-frame checksums) | 0x8F92EAB1
//! ```
//! `zstd -d 00000000000000000007.wal.zst` gives back the original segment file. Readers
//! decompress only the frames they read: positions (cursors) stay offsets into the
//! uncompressed segment, so compression is invisible to them.
//!
//! # Crash safety
//! Compress into `<n>.wal.zst.tmp`, decompress it again and compare, fdatasync, rename to
//! `<n>.wal.zst`, fsync the directory, then delete `<n>.wal`. A crash leaves either only the
//! plain segment (plus a `.tmp` recovery deletes) or both complete forms (recovery deletes
//! the compressed copy). Only sealed segments whose footer checks out are compressed.
//!
//! # Which segments
//! Compression costs CPU (level 1: a few hundred MB/s per core), so it runs on its own thread
//! and only on the backlog: sealed segments past the slowest output's cursor. When outputs
//! keep up, segments are delivered and deleted before they are worth compressing.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::recovery::sync_dir;
use crate::segment::{compressed_path, scan_bytes, segment_path};

/// Uncompressed bytes per zstd frame: the unit a reader decompresses.
pub const FRAME_BYTES: usize = 1 << 20;
const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
const SEEK_FOOTER_LEN: u64 = 9;
/// Largest decompressed frame a reader accepts (others are damage, never allocated).
const MAX_FRAME_BYTES: u32 = 64 << 20;
/// Compression holds a segment, its compressed copy and the read-back in memory: larger
/// segments (a `segment_size` above this) stay uncompressed rather than cost that much.
pub const MAX_COMPRESSED_SEGMENT_BYTES: u64 = 1 << 30;

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Compresses segment bytes into the seekable layout.
pub fn compress_bytes(data: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut compressor = zstd::bulk::Compressor::new(level)?;
    compressor.include_checksum(true)?;
    let mut out = Vec::with_capacity(data.len() / 3);
    let mut entries = Vec::new();
    for chunk in data.chunks(FRAME_BYTES) {
        let frame = compressor.compress(chunk)?;
        entries.push((frame.len() as u32, chunk.len() as u32));
        out.extend_from_slice(&frame);
    }
    let table_len = entries.len() * 8 + SEEK_FOOTER_LEN as usize;
    out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    out.extend_from_slice(&(table_len as u32).to_le_bytes());
    for (compressed, decompressed) in &entries {
        out.extend_from_slice(&compressed.to_le_bytes());
        out.extend_from_slice(&decompressed.to_le_bytes());
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.push(0);
    out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
    Ok(out)
}

#[derive(Clone, Copy, Debug)]
struct FrameEntry {
    compressed_at: u64,
    compressed_len: u32,
    decompressed_at: u64,
    decompressed_len: u32,
}

/// Random access to a compressed segment by uncompressed offset.
pub struct CompressedSegment {
    file: File,
    frames: Vec<FrameEntry>,
    len: u64,
    /// The last frame decompressed: its index and bytes.
    cached: Option<(usize, Vec<u8>)>,
    compressed: Vec<u8>,
    decompressor: zstd::bulk::Decompressor<'static>,
}

impl CompressedSegment {
    /// Opens a compressed segment and reads its seek table. A table that does not add up to
    /// the file is `InvalidData`.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        let mut footer = [0u8; SEEK_FOOTER_LEN as usize];
        if file_len < SEEK_FOOTER_LEN + 8 {
            return Err(invalid("compressed segment too short"));
        }
        file.read_exact_at(&mut footer, file_len - SEEK_FOOTER_LEN)?;
        let count = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]) as u64;
        if u32::from_le_bytes([footer[5], footer[6], footer[7], footer[8]]) != SEEKABLE_MAGIC
            || footer[4] != 0
        {
            return Err(invalid("compressed segment has no seek table"));
        }
        let table_len = count * 8 + SEEK_FOOTER_LEN;
        let Some(table_at) = file_len.checked_sub(table_len + 8) else {
            return Err(invalid("seek table larger than the file"));
        };
        let mut table = vec![0u8; (table_len + 8) as usize];
        file.read_exact_at(&mut table, table_at)?;
        let word = |at: usize| {
            u32::from_le_bytes([table[at], table[at + 1], table[at + 2], table[at + 3]])
        };
        if word(0) != SKIPPABLE_MAGIC || u64::from(word(4)) != table_len {
            return Err(invalid("seek table frame damaged"));
        }
        let mut frames = Vec::with_capacity(count as usize);
        let (mut compressed_at, mut decompressed_at) = (0u64, 0u64);
        for i in 0..count as usize {
            let (compressed_len, decompressed_len) = (word(8 + i * 8), word(12 + i * 8));
            if decompressed_len > MAX_FRAME_BYTES || compressed_len == 0 {
                return Err(invalid("seek table entry out of range"));
            }
            frames.push(FrameEntry {
                compressed_at,
                compressed_len,
                decompressed_at,
                decompressed_len,
            });
            compressed_at += u64::from(compressed_len);
            decompressed_at += u64::from(decompressed_len);
        }
        if compressed_at != table_at {
            return Err(invalid("seek table does not match the frames"));
        }
        Ok(CompressedSegment {
            file,
            frames,
            len: decompressed_at,
            cached: None,
            compressed: Vec::new(),
            decompressor: zstd::bulk::Decompressor::new()?,
        })
    }

    /// Uncompressed length.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies uncompressed bytes at `offset` into `buf`; returns how many (0 at the end).
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self
            .frames
            .partition_point(|f| f.decompressed_at + u64::from(f.decompressed_len) <= offset);
        let start = (offset - self.frames[index].decompressed_at) as usize;
        let frame = self.load(index)?;
        let n = buf.len().min(frame.len() - start);
        buf[..n].copy_from_slice(&frame[start..start + n]);
        Ok(n)
    }

    fn load(&mut self, index: usize) -> io::Result<&[u8]> {
        if self.cached.as_ref().map(|(i, _)| *i) != Some(index) {
            let entry = self.frames[index];
            self.compressed.resize(entry.compressed_len as usize, 0);
            self.file
                .read_exact_at(&mut self.compressed, entry.compressed_at)?;
            let mut out = self.cached.take().map(|(_, v)| v).unwrap_or_default();
            out.clear();
            out.reserve(entry.decompressed_len as usize);
            self.decompressor
                .decompress_to_buffer(&self.compressed, &mut out)
                .map_err(|_| invalid("compressed frame damaged"))?;
            if out.len() != entry.decompressed_len as usize {
                return Err(invalid("compressed frame has the wrong length"));
            }
            self.cached = Some((index, out));
        }
        match &self.cached {
            Some((_, bytes)) => Ok(bytes),
            None => Err(invalid("compressed frame missing")),
        }
    }
}

/// The whole uncompressed content of a compressed segment file.
pub fn decompress_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    let mut segment =
        CompressedSegment::open(path).map_err(|e| StorageError::io("open", path, e))?;
    let mut data = vec![0u8; segment.len() as usize];
    let mut at = 0;
    while at < data.len() {
        let n = segment
            .read_at(&mut data[at..], at as u64)
            .map_err(|e| StorageError::io("decompress", path, e))?;
        if n == 0 {
            break;
        }
        at += n;
    }
    data.truncate(at);
    Ok(data)
}

/// What compressing one segment did.
#[derive(Debug, PartialEq, Eq)]
pub enum Compressed {
    /// Replaced by `<n>.wal.zst`: bytes before and after.
    Done {
        plain_bytes: u64,
        compressed_bytes: u64,
    },
    /// Left as it is: not sealed, or damaged (readers report the damage).
    Skipped(&'static str),
    /// Gone meanwhile (delivered and deleted).
    Missing,
}

/// Compresses sealed segment `number` of the shard in `dir` (see the module docs for the
/// crash-safe sequence).
pub fn compress_segment(dir: &Path, number: u64, level: i32) -> Result<Compressed, StorageError> {
    let plain = segment_path(dir, number);
    match std::fs::metadata(&plain) {
        Ok(m) if m.len() > MAX_COMPRESSED_SEGMENT_BYTES => {
            return Ok(Compressed::Skipped("larger than 1 GiB"))
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Compressed::Missing),
        Err(e) => return Err(StorageError::io("stat", &plain, e)),
    }
    let data = match std::fs::read(&plain) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Compressed::Missing),
        Err(e) => return Err(StorageError::io("read", &plain, e)),
    };
    let scan = scan_bytes(&data, number);
    if let Some(reason) = scan.damage {
        return Ok(Compressed::Skipped(reason));
    }
    if scan.footer.is_none() {
        return Ok(Compressed::Skipped("not sealed"));
    }
    // A salted segment's file may go on after its footer (old bytes): not compressed.
    let data = &data[..scan.end() as usize];
    let target = compressed_path(dir, number);
    let tmp = tmp_path(&target);
    let bytes = compress_bytes(data, level).map_err(|e| StorageError::io("compress", &plain, e))?;
    write_synced(&tmp, &bytes)?;
    if decompress_file(&tmp)? != data {
        let _ = std::fs::remove_file(&tmp);
        return Err(StorageError::Corrupt {
            path: tmp,
            offset: 0,
            reason: "compressed copy does not decompress to the segment",
        });
    }
    std::fs::rename(&tmp, &target).map_err(|e| StorageError::io("rename", &target, e))?;
    sync_dir(dir)?;
    match std::fs::remove_file(&plain) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StorageError::io("remove", &plain, e)),
    }
    sync_dir(dir)?;
    Ok(Compressed::Done {
        plain_bytes: data.len() as u64,
        compressed_bytes: bytes.len() as u64,
    })
}

fn tmp_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(".tmp");
    PathBuf::from(name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StorageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StorageError::io("create", path, e))?;
    file.write_all(bytes)
        .map_err(|e| StorageError::io("write", path, e))?;
    file.sync_data()
        .map_err(|e| StorageError::io("fdatasync", path, e))
}

/// Recovery's part: removes half-written `.tmp` files and, where a segment exists in both
/// forms (a crash between rename and delete), the compressed copy. Returns files removed.
pub fn clean_up(dir: &Path) -> Result<usize, StorageError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale = if name.ends_with(".wal.zst.tmp") {
            true
        } else if let Some(stem) = name.strip_suffix(".zst") {
            name.ends_with(".wal.zst") && dir.join(stem).exists()
        } else {
            false
        };
        if stale {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| StorageError::io("remove", &path, e))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// One shard as the compactor sees it.
pub struct CompactShard {
    /// The active segment is the watermark's; only older ones are compressed.
    pub watermark: std::sync::Arc<crate::DurableWatermark>,
    /// The shard's directory, slowest output cursor and disk budget.
    pub retention: std::sync::Arc<crate::Retention>,
}

/// Compresses every shard's backlog (see the module docs), one pass at a time; run by a
/// background thread, never a shard.
pub struct Compactor {
    shards: Vec<CompactShard>,
    level: i32,
    /// Only segments sealed (last written) at least this long ago are compressed.
    min_age: std::time::Duration,
    /// Segments left uncompressed on purpose (damaged or unsealed), not retried.
    skipped: std::collections::HashSet<(usize, u64)>,
    pub segments_compressed: u64,
    pub bytes_saved: u64,
}

impl Compactor {
    pub fn new(shards: Vec<CompactShard>, level: i32, min_age: std::time::Duration) -> Self {
        Compactor {
            shards,
            level,
            min_age,
            skipped: Default::default(),
            segments_compressed: 0,
            bytes_saved: 0,
        }
    }

    /// Sealed segments of shard `i` that outputs have not started on yet.
    fn candidates(&self, i: usize) -> Result<Vec<u64>, StorageError> {
        let shard = &self.shards[i];
        let active = shard.watermark.load().segment;
        let after = match shard.retention.slowest_segment() {
            // An output has not opened its reader yet: wait for it.
            Some(0) => return Ok(Vec::new()),
            Some(slowest) => slowest,
            None => 0,
        };
        let dir = shard.retention.dir();
        Ok(crate::segment::list_segments(dir)?
            .into_iter()
            .filter(|&n| n > after && n < active && !self.skipped.contains(&(i, n)))
            .filter(|&n| self.old_enough(&segment_path(dir, n)))
            .collect())
    }

    /// The segment exists and was last written (sealed) at least `min_age` ago.
    fn old_enough(&self, path: &Path) -> bool {
        let modified = std::fs::metadata(path).and_then(|m| m.modified());
        match modified {
            Ok(at) => at.elapsed().map_or(true, |age| age >= self.min_age),
            Err(_) => false,
        }
    }

    /// One pass over every shard; `stop` is checked between segments. Returns the segments
    /// compressed.
    pub fn run_once(&mut self, stop: &dyn Fn() -> bool) -> Result<usize, StorageError> {
        let mut done = 0;
        for i in 0..self.shards.len() {
            for n in self.candidates(i)? {
                if stop() {
                    return Ok(done);
                }
                let retention = std::sync::Arc::clone(&self.shards[i].retention);
                match compress_segment(retention.dir(), n, self.level)? {
                    Compressed::Done {
                        plain_bytes,
                        compressed_bytes,
                    } => {
                        let saved = plain_bytes.saturating_sub(compressed_bytes);
                        retention.budget().release(saved);
                        self.segments_compressed += 1;
                        self.bytes_saved += saved;
                        done += 1;
                        tracing::debug!(dir = %retention.dir().display(), segment = n, plain_bytes, compressed_bytes, "compressed a backlog segment");
                    }
                    Compressed::Skipped(reason) => {
                        tracing::warn!(dir = %retention.dir().display(), segment = n, reason, "segment left uncompressed");
                        self.skipped.insert((i, n));
                    }
                    Compressed::Missing => {}
                }
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_access_matches_the_original() {
        let data: Vec<u8> = (0..(FRAME_BYTES * 2 + 12345))
            .map(|i| (i % 251) as u8 ^ (i / 7919) as u8)
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wal.zst");
        std::fs::write(&path, compress_bytes(&data, 1).unwrap()).unwrap();
        let mut seg = CompressedSegment::open(&path).unwrap();
        assert_eq!(seg.len(), data.len() as u64);
        let mut buf = vec![0u8; 5000];
        for &at in &[0usize, FRAME_BYTES - 10, FRAME_BYTES * 2 + 12000, 77] {
            let n = seg.read_at(&mut buf, at as u64).unwrap();
            assert!(n > 0);
            assert_eq!(&buf[..n], &data[at..at + n]);
        }
        assert_eq!(decompress_file(&path).unwrap(), data);
        // A plain zstd decoder reads it too (the seek table is a skippable frame).
        let plain = zstd::stream::decode_all(&std::fs::read(&path).unwrap()[..]).unwrap();
        assert_eq!(plain, data);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let data = vec![7u8; 100_000];
        let mut bytes = compress_bytes(&data, 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wal.zst");
        for at in [0, 5, bytes.len() / 2, bytes.len() - 3] {
            bytes[at] ^= 0x40;
            std::fs::write(&path, &bytes).unwrap();
            assert!(decompress_file(&path).map(|d| d != data).unwrap_or(true));
            bytes[at] ^= 0x40;
        }
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(decompress_file(&path).is_err());
    }
}
