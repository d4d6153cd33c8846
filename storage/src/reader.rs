//! Reading durable records of one shard, for outputs (on their own threads, never a shard's).
//!
//! The reader reads with positional reads (`pread`) through the page cache and never past the
//! shard's [`DurableWatermark`]: in a segment older than the watermark's, every byte is durable
//! (the writer syncs a segment before it moves on); in the watermark's segment, bytes up to its
//! offset are.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::frame::{self, Decoded, FRAME_HEADER_LEN};
use crate::position::Position;
use crate::segment::{list_segments, segment_header, segment_path, SEGMENT_HEADER_LEN};

/// Reads records from a position onwards.
pub struct WalReader {
    dir: PathBuf,
    pos: Position,
    file: Option<(u64, File)>,
    buf: Vec<u8>,
    /// Records skipped because they were damaged (counted, never delivered).
    pub damaged_skips: u64,
}

/// What one call to [`WalReader::read_batch`] returned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: usize,
    pub bytes: usize,
}

impl WalReader {
    /// A reader starting at `from` (a cursor), or at the oldest segment when `None`.
    pub fn open(dir: &Path, from: Option<Position>) -> Result<Self, StorageError> {
        let pos = match from {
            Some(p) => p,
            None => Position {
                segment: list_segments(dir)?.first().copied().unwrap_or(1),
                offset: SEGMENT_HEADER_LEN,
            },
        };
        Ok(WalReader {
            dir: dir.to_path_buf(),
            pos,
            file: None,
            buf: Vec::new(),
            damaged_skips: 0,
        })
    }

    /// Position after the last record returned.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Calls `each(payload)` for durable records after the current position, about `max_bytes`
    /// worth, and advances the position past them. Returns an empty batch when caught up.
    pub fn read_batch(
        &mut self,
        durable: Position,
        max_bytes: usize,
        mut each: impl FnMut(&[u8]),
    ) -> Result<Batch, StorageError> {
        loop {
            if self.pos.segment > durable.segment || durable.segment == 0 {
                return Ok(Batch::default());
            }
            let sealed = self.pos.segment < durable.segment;
            let limit = if sealed { None } else { Some(durable.offset) };
            let batch = self.read_in_segment(limit, max_bytes, &mut each)?;
            if batch.records > 0 || !sealed {
                return Ok(batch);
            }
            // Finished a sealed segment: go to the next one that exists.
            self.advance_segment(durable.segment)?;
        }
    }

    fn read_in_segment(
        &mut self,
        limit: Option<u64>,
        max_bytes: usize,
        each: &mut impl FnMut(&[u8]),
    ) -> Result<Batch, StorageError> {
        let path = segment_path(&self.dir, self.pos.segment);
        if !self.open_segment_file(&path)? {
            return Ok(Batch::default());
        }
        let want = match limit {
            Some(end) => (end.saturating_sub(self.pos.offset) as usize).min(max_bytes),
            None => max_bytes,
        };
        if want == 0 {
            return Ok(Batch::default());
        }
        self.buf.resize(want.max(FRAME_HEADER_LEN), 0);
        let Some((_, file)) = &self.file else {
            return Ok(Batch::default());
        };
        let got = read_full_at(file, &mut self.buf[..want], self.pos.offset)
            .map_err(|e| StorageError::io("read", &path, e))?;
        if got == 0 {
            return Ok(Batch::default());
        }
        let mut at = 0;
        let mut batch = Batch::default();
        loop {
            match frame::decode(&self.buf[at..got]) {
                Decoded::Record { payload, frame_len } => {
                    each(payload);
                    at += frame_len;
                    batch.records += 1;
                }
                Decoded::Incomplete if at > 0 => break,
                Decoded::Incomplete => {
                    // One record larger than the window: widen it, or note a cut-off tail.
                    match self.whole_record_len(&path, limit)? {
                        Some(len) if len > want => return self.read_in_segment(limit, len, each),
                        _ if limit.is_none() => {
                            self.skip_damage(&path, "record cut short at end of sealed segment");
                        }
                        _ => {}
                    }
                    break;
                }
                Decoded::Damaged(reason) => {
                    // Below the watermark this cannot be a torn write: it is damage. Skip the
                    // rest of this segment, loudly; never deliver a record we cannot verify.
                    self.pos.offset += at as u64;
                    self.skip_damage(&path, reason);
                    return Ok(batch);
                }
            }
        }
        self.pos.offset += at as u64;
        batch.bytes = at;
        Ok(batch)
    }

    fn whole_record_len(
        &mut self,
        path: &Path,
        limit: Option<u64>,
    ) -> Result<Option<usize>, StorageError> {
        let Some((_, file)) = &self.file else {
            return Ok(None);
        };
        let mut header = [0u8; FRAME_HEADER_LEN];
        let got = read_full_at(file, &mut header, self.pos.offset)
            .map_err(|e| StorageError::io("read", path, e))?;
        if got < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = FRAME_HEADER_LEN
            + u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let available = limit.map_or(u64::MAX, |end| end.saturating_sub(self.pos.offset));
        Ok((len as u64 <= available && len <= crate::segment::MAX_FRAME_LEN).then_some(len))
    }

    fn skip_damage(&mut self, path: &Path, reason: &'static str) {
        self.damaged_skips += 1;
        tracing::error!(
            segment = %path.display(),
            offset = self.pos.offset,
            reason,
            "damaged WAL record: skipping the rest of the segment"
        );
        // Past any real offset; read_batch moves to the next segment once this one is sealed.
        self.pos.offset = u64::MAX >> 28;
    }

    /// Opens the current segment's file if it is not open yet; false if it does not exist.
    fn open_segment_file(&mut self, path: &Path) -> Result<bool, StorageError> {
        if self.file.as_ref().map(|(n, _)| *n) == Some(self.pos.segment) {
            return Ok(true);
        }
        match File::open(path) {
            Ok(f) => {
                let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
                let got = read_full_at(&f, &mut header, 0)
                    .map_err(|e| StorageError::io("read", path, e))?;
                self.file = Some((self.pos.segment, f));
                if got == header.len() && header != segment_header(self.pos.segment) {
                    self.skip_damage(path, "segment header does not match its file name");
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.file = None;
                Ok(false)
            }
            Err(e) => Err(StorageError::io("open", path, e)),
        }
    }

    /// Moves to the oldest segment after the current one, or to `newest` (the watermark's,
    /// which the writer creates) when none is on disk yet.
    fn advance_segment(&mut self, newest: u64) -> Result<(), StorageError> {
        let next = list_segments(&self.dir)?
            .into_iter()
            .find(|&n| n > self.pos.segment)
            .unwrap_or(newest)
            .min(newest);
        self.pos = Position {
            segment: next,
            offset: SEGMENT_HEADER_LEN,
        };
        self.file = None;
        Ok(())
    }
}

/// Calls `each` for every complete record of the shard in `dir` from `from` (or the oldest),
/// reading as the files stand: every segment, the newest up to its last whole record. For
/// tools and tests; a running writer's newest record may be cut off and is then skipped.
/// Returns the records read.
pub fn read_on_disk(
    dir: &Path,
    from: Option<Position>,
    mut each: impl FnMut(&[u8]),
) -> Result<u64, StorageError> {
    let end = Position {
        segment: crate::position::MAX_SEGMENT_NUMBER,
        offset: 0,
    };
    let mut reader = WalReader::open(dir, from)?;
    let mut records = 0;
    loop {
        let batch = reader.read_batch(end, 4 << 20, &mut each)?;
        if batch.records == 0 {
            return Ok(records);
        }
        records += batch.records as u64;
    }
}

/// `pread` until `buf` is full or the file ends; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
