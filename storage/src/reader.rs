//! Reading durable records of one shard, for outputs (on their own threads, never a shard's).
//!
//! The reader reads with positional reads (`pread`) through the page cache and never past the
//! shard's [`DurableWatermark`](crate::DurableWatermark): in a segment older than the watermark's, every byte is durable
//! (the writer syncs a segment before it moves on); in the watermark's segment, bytes up to its
//! offset are. A sealed segment may have been compressed meanwhile (`<n>.wal.zst`): the
//! reader then reads the same bytes through [`CompressedSegment`], at the same offsets.
//! A segment ends at its footer (or, for the active one, at the watermark).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::block::{self, BlockReader};
use crate::compress::CompressedSegment;
use crate::cursor::Cursor;
use crate::error::StorageError;
use crate::fast_path::FastPathReceiver;
use crate::frame::{self, Decoded, FRAME_HEADER_LEN};
use crate::position::Position;
use crate::segment::{
    compressed_path, list_segments, parse_header, segment_path, Footer, SEGMENT_HEADER_LEN,
};

/// A segment's bytes, plain or compressed.
enum Source {
    Plain(File),
    Compressed(Box<CompressedSegment>),
}

impl Source {
    /// Bytes the segment (uncompressed) holds past `offset`, as it stands now: reads never
    /// ask for more, so a small segment costs a small buffer.
    fn len_after(&self, offset: u64, path: &Path) -> Result<u64, StorageError> {
        let len = match self {
            Source::Plain(f) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|e| StorageError::io("stat", path, e))?,
            Source::Compressed(c) => c.len(),
        };
        Ok(len.saturating_sub(offset))
    }

    /// `pread` until `buf` is full or the segment ends; returns the bytes read.
    fn read_full_at(&mut self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let read = match self {
                Source::Plain(f) => f.read_at(&mut buf[done..], at),
                Source::Compressed(c) => c.read_at(&mut buf[done..], at),
            };
            match read {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// Reads records from a position onwards.
pub struct WalReader {
    dir: PathBuf,
    pos: Position,
    /// Id of the record at `pos`; 0 while unknown (after damage, until the next segment).
    next_id: u64,
    source: Option<(u64, Source)>,
    /// The open segment's checksum mask (from its header; 0 in format 2).
    salt: u32,
    buf: Vec<u8>,
    /// Damaged places met (each skipped, never delivered).
    pub damaged_skips: u64,
    /// Records known lost to damage: a sealed segment's footer count minus what was read of
    /// it (known when the segment was read from its start).
    pub damaged_records: u64,
    /// Records read in the current segment, if reading started at its first record.
    read_in_current: Option<u64>,
    /// The shard's commits in memory ([`crate::fast_path`]); `None`: files only.
    fast: Option<FastPathReceiver>,
    /// WAL bytes read from the fast path's memory and from segment files.
    pub read_memory_bytes: u64,
    pub read_file_bytes: u64,
    /// Where compressed commits are opened.
    blocks: BlockReader,
}

/// Longest record a resync after damage considers (longer ones behind damage are skipped
/// with it): bounds the checksum work per byte of garbage.
const RESYNC_MAX_RECORD: usize = 1 << 20;
const RESYNC_WINDOW: usize = 4 << 20;

/// What one call to [`WalReader::read_batch`] returned.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub records: usize,
    pub bytes: usize,
}

/// Whether the writer has published segment `n` (its header is written and synced). A
/// watermark at offset 0 names the segment the writer will make next (after recovery, before
/// the first commit): nothing of it is there to open yet.
fn published(n: u64, durable: Position) -> bool {
    durable.segment != 0
        && (n < durable.segment || (n == durable.segment && durable.offset >= SEGMENT_HEADER_LEN))
}

impl WalReader {
    /// A reader starting at `from` (a cursor), or at the oldest segment when `None`.
    pub fn open(dir: &Path, from: Option<Cursor>) -> Result<Self, StorageError> {
        let (pos, next_id) = match from {
            Some(c) => (c.position, c.next_id),
            None => (
                Position {
                    segment: list_segments(dir)?.first().copied().unwrap_or(1),
                    offset: SEGMENT_HEADER_LEN,
                },
                0,
            ),
        };
        Ok(WalReader {
            dir: dir.to_path_buf(),
            pos,
            next_id,
            source: None,
            salt: 0,
            buf: Vec::new(),
            damaged_skips: 0,
            damaged_records: 0,
            read_in_current: (pos.offset == SEGMENT_HEADER_LEN).then_some(0),
            fast: None,
            read_memory_bytes: 0,
            read_file_bytes: 0,
            blocks: BlockReader::default(),
        })
    }

    /// Reads the records the shard's fast path still holds from memory (same records, same
    /// positions as from the files).
    pub fn with_fast_path(mut self, fast: Option<FastPathReceiver>) -> Self {
        self.fast = fast;
        self
    }

    /// Position after the last record returned.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// Id of the next record (0 while unknown: after damage, until the next segment starts,
    /// or while the writer has not published the reader's segment in `durable` yet).
    /// The records of a batch have consecutive ids starting with this.
    pub fn next_id(&mut self, durable: Position) -> Result<u64, StorageError> {
        // A segment past the watermark may be mid-creation (preallocated, header not yet
        // written): its header must not be read, or it would look damaged.
        if self.next_id == 0 && published(self.pos.segment, durable) {
            // Opening the segment reads its header, which knows the first id.
            let path = segment_path(&self.dir, self.pos.segment);
            self.open_segment_file(&path)?;
        }
        Ok(self.next_id)
    }

    /// What to persist for this reader's output.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            position: self.pos,
            next_id: self.next_id,
        }
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
            if !published(self.pos.segment, durable) {
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

    /// Reads up to `max_bytes` (below `limit`, within the file) at the position into the
    /// buffer: the bytes read, or `None` when there is nothing to read.
    fn fill_buf(
        &mut self,
        path: &Path,
        limit: Option<u64>,
        max_bytes: usize,
    ) -> Result<Option<usize>, StorageError> {
        if !self.open_segment_file(path)? {
            return Ok(None);
        }
        let Some((_, source)) = &mut self.source else {
            return Ok(None);
        };
        let in_file = source.len_after(self.pos.offset, path)?;
        let want = match limit {
            Some(end) => (end.saturating_sub(self.pos.offset) as usize).min(max_bytes),
            None => max_bytes,
        }
        .min(usize::try_from(in_file).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(None);
        }
        self.buf.resize(want.max(FRAME_HEADER_LEN), 0);
        match source.read_full_at(&mut self.buf[..want], self.pos.offset) {
            Ok(0) => Ok(None),
            Ok(got) => Ok(Some(got)),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.skip_damage(path, "compressed segment damaged");
                Ok(None)
            }
            Err(e) => Err(StorageError::io("read", path, e)),
        }
    }

    /// Reads records in the current segment below `limit`: from the fast path's commit when
    /// it holds the position, else from the file.
    fn read_in_segment(
        &mut self,
        limit: Option<u64>,
        max_bytes: usize,
        each: &mut impl FnMut(&[u8]),
    ) -> Result<Batch, StorageError> {
        if let Some(batch) = self.read_from_memory(limit, max_bytes, each) {
            self.read_memory_bytes += batch.bytes as u64;
            return Ok(batch);
        }
        let batch = self.read_file_in_segment(limit, max_bytes, each)?;
        self.read_file_bytes += batch.bytes as u64;
        Ok(batch)
    }

    /// The records at the position from the commit in memory that holds them, up to about
    /// `max_bytes`; `None` when the file must be read (not in memory, or nothing decodes).
    fn read_from_memory(
        &mut self,
        limit: Option<u64>,
        max_bytes: usize,
        each: &mut impl FnMut(&[u8]),
    ) -> Option<Batch> {
        let commit = self.fast.as_mut()?.commit_at(self.pos)?.clone();
        if commit.is_block() {
            return self.read_block_from_memory(&commit, limit, each);
        }
        let end = limit.map_or(commit.end(), |l| l.min(commit.end()));
        let start = usize::try_from(self.pos.offset - commit.offset).ok()?;
        let stop = usize::try_from(end.checked_sub(commit.offset)?).ok()?;
        let data = commit.bytes.get(start..stop)?;
        if self.next_id == 0 && start == 0 {
            // At a new segment's first commit: its header need not be read for the id.
            self.next_id = commit.first_id;
        }
        let mut at = 0;
        let mut batch = Batch::default();
        while at < data.len() {
            // A commit holds whole records of this segment (their checksums were made from
            // these very bytes); anything else (never expected) is left to the file path.
            let Some((payload, frame_len)) = frame::decode_in_memory(&data[at..]) else {
                break;
            };
            if at > 0 && at + frame_len > max_bytes {
                break;
            }
            each(payload);
            at += frame_len;
            batch.records += 1;
        }
        if at == 0 {
            return None;
        }
        self.pos.offset += at as u64;
        self.note_read(batch.records as u64);
        batch.bytes = at;
        Some(batch)
    }

    /// A commit the file holds as one compressed block: all its records, or `None` (the
    /// position is not its start, or the watermark does not cover it yet).
    fn read_block_from_memory(
        &mut self,
        commit: &crate::fast_path::Commit,
        limit: Option<u64>,
        each: &mut impl FnMut(&[u8]),
    ) -> Option<Batch> {
        if self.pos.offset != commit.offset || limit.is_some_and(|l| l < commit.end()) {
            return None;
        }
        if self.next_id == 0 && commit.offset == SEGMENT_HEADER_LEN {
            self.next_id = commit.first_id;
        }
        let records = block::each_record(&commit.bytes, each) as usize;
        if records == 0 {
            return None;
        }
        self.pos.offset = commit.end();
        self.note_read(records as u64);
        Some(Batch {
            records,
            bytes: commit.file_len as usize,
        })
    }

    fn read_file_in_segment(
        &mut self,
        limit: Option<u64>,
        max_bytes: usize,
        each: &mut impl FnMut(&[u8]),
    ) -> Result<Batch, StorageError> {
        let path = segment_path(&self.dir, self.pos.segment);
        let Some(got) = self.fill_buf(&path, limit, max_bytes)? else {
            return Ok(Batch::default());
        };
        let mut at = 0;
        let mut batch = Batch::default();
        // Record bytes delivered (a block's uncompressed): blocks stop the batch near max_bytes.
        let mut delivered = 0;
        loop {
            match frame::decode_salted(&self.buf[at..got], self.salt) {
                Decoded::Record { payload, frame_len } => {
                    each(payload);
                    at += frame_len;
                    delivered += frame_len;
                    batch.records += 1;
                }
                Decoded::Block { payload, frame_len } => {
                    let raw = block::raw_len(payload).unwrap_or(0);
                    if at > 0 && delivered + raw > max_bytes {
                        break;
                    }
                    match self.blocks.open(payload, self.salt) {
                        Ok(opened) => {
                            batch.records += block::each_record(opened.frames, &mut *each) as usize
                        }
                        Err(reason) => return self.damaged(at, batch, &path, limit, reason),
                    }
                    at += frame_len;
                    delivered += raw;
                }
                // The segment's end; a sealed one is left on the next call (no records).
                Decoded::Footer { payload, .. } => {
                    let footer = Footer::decode(payload);
                    self.count_damaged_records(batch.records as u64, footer);
                    break;
                }
                Decoded::Incomplete if at > 0 => break,
                Decoded::Incomplete => {
                    // One record larger than the window: widen it, or note a cut-off tail.
                    match self.whole_record_len(&path, limit)? {
                        // (Against what was asked, not what the file holds: a record that
                        // claims more than the file has is damage, not a reason to ask again.)
                        Some(len) if len > max_bytes => {
                            return self.read_file_in_segment(limit, len, each)
                        }
                        _ if limit.is_none() => {
                            self.skip_damage(&path, "record cut short at end of sealed segment");
                        }
                        _ => {}
                    }
                    break;
                }
                Decoded::Damaged(reason) => return self.damaged(at, batch, &path, limit, reason),
            }
        }
        self.pos.offset += at as u64;
        self.note_read(batch.records as u64);
        batch.bytes = at;
        Ok(batch)
    }

    /// Damage `at` bytes past the position, after `batch`: below the watermark this cannot be
    /// a torn write. Skip to the next record that checks out, loudly; never deliver one that
    /// does not.
    fn damaged(
        &mut self,
        at: usize,
        mut batch: Batch,
        path: &Path,
        limit: Option<u64>,
        reason: &'static str,
    ) -> Result<Batch, StorageError> {
        self.pos.offset += at as u64;
        self.note_read(batch.records as u64);
        batch.bytes = at;
        self.resync(path, limit, reason)?;
        Ok(batch)
    }

    fn note_read(&mut self, records: u64) {
        if self.next_id != 0 {
            self.next_id += records;
        }
        if let Some(n) = &mut self.read_in_current {
            *n += records;
        }
    }

    /// At a sealed segment's footer: records it holds that were not read were lost to damage.
    fn count_damaged_records(&mut self, in_batch: u64, footer: Option<Footer>) {
        let (Some(read), Some(footer)) = (self.read_in_current.take(), footer) else {
            return;
        };
        let lost = footer.records.saturating_sub(read + in_batch);
        if lost > 0 {
            self.damaged_records += lost;
            tracing::error!(
                segment = self.pos.segment,
                lost_records = lost,
                "records lost to damage in a sealed segment"
            );
        }
    }

    /// After damage at the current offset: moves to the next offset (below `limit`) where a
    /// whole, checksummed record or footer starts, searching byte by byte; or, if there is
    /// none, past the segment. Record ids are unknown until the next segment.
    fn resync(
        &mut self,
        path: &Path,
        limit: Option<u64>,
        reason: &'static str,
    ) -> Result<(), StorageError> {
        let damaged_at = self.pos.offset;
        match self.next_valid_frame(path, damaged_at + 1, limit)? {
            Some(at) => {
                self.damaged_skips += 1;
                self.next_id = 0;
                self.pos.offset = at;
                tracing::error!(segment = %path.display(), offset = damaged_at, reason,
                    skipped_bytes = at - damaged_at, "damaged WAL record: skipped to the next valid one");
            }
            None => self.skip_damage(path, reason),
        }
        Ok(())
    }

    fn next_valid_frame(
        &mut self,
        path: &Path,
        mut from: u64,
        limit: Option<u64>,
    ) -> Result<Option<u64>, StorageError> {
        let salt = self.salt;
        let Some((_, source)) = &mut self.source else {
            return Ok(None);
        };
        let in_file = source.len_after(from, path)?;
        let mut window = vec![0u8; in_file.min(RESYNC_WINDOW as u64) as usize];
        loop {
            let want = limit.map_or(RESYNC_WINDOW as u64, |l| {
                l.saturating_sub(from).min(RESYNC_WINDOW as u64)
            }) as usize;
            let want = want.min(window.len());
            let got = match source.read_full_at(&mut window[..want], from) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
                Err(e) => return Err(StorageError::io("read", path, e)),
            };
            if got < FRAME_HEADER_LEN {
                return Ok(None);
            }
            let data = &window[..got];
            for i in 0..=got - FRAME_HEADER_LEN {
                let word = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
                let len = (word & !frame::KIND_FLAGS) as usize;
                if len == 0 || len > RESYNC_MAX_RECORD {
                    continue;
                }
                if matches!(
                    frame::decode_salted(&data[i..], salt),
                    Decoded::Record { .. } | Decoded::Footer { .. } | Decoded::Block { .. }
                ) {
                    return Ok(Some(from + i as u64));
                }
            }
            if got < RESYNC_WINDOW {
                return Ok(None);
            }
            // Overlap so that a record starting near the end is tried whole next time.
            from += (got - RESYNC_MAX_RECORD - FRAME_HEADER_LEN) as u64;
        }
    }

    fn whole_record_len(
        &mut self,
        path: &Path,
        limit: Option<u64>,
    ) -> Result<Option<usize>, StorageError> {
        let Some((_, source)) = &mut self.source else {
            return Ok(None);
        };
        let mut header = [0u8; FRAME_HEADER_LEN];
        let got = match source.read_full_at(&mut header, self.pos.offset) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(StorageError::io("read", path, e)),
        };
        if got < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let len = FRAME_HEADER_LEN + (word & !frame::KIND_FLAGS) as usize;
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
        self.next_id = 0;
    }

    /// Opens the current segment (plain, else compressed) if it is not open yet and checks
    /// its header; false if it does not exist.
    fn open_segment_file(&mut self, path: &Path) -> Result<bool, StorageError> {
        if self.source.as_ref().map(|(n, _)| *n) == Some(self.pos.segment) {
            return Ok(true);
        }
        self.source = None;
        let mut source = match File::open(path) {
            Ok(f) => Source::Plain(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let zst = compressed_path(&self.dir, self.pos.segment);
                match CompressedSegment::open(&zst) {
                    Ok(c) => Source::Compressed(Box::new(c)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                        self.skip_damage(&zst, "compressed segment damaged");
                        return Ok(true);
                    }
                    Err(e) => return Err(StorageError::io("open", zst, e)),
                }
            }
            Err(e) => return Err(StorageError::io("open", path, e)),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let got = source.read_full_at(&mut header, 0);
        self.source = Some((self.pos.segment, source));
        match got {
            // A header still being written (a new segment before its watermark) is not
            // damage; open it again next time, when its header (and first id) is there.
            Ok(n) if n < header.len() => self.source = None,
            Ok(_) => match parse_header(&header, self.pos.segment) {
                Ok(head) => {
                    self.salt = head.salt;
                    if self.pos.offset == SEGMENT_HEADER_LEN {
                        self.next_id = head.first_id;
                    }
                }
                Err(reason) => self.skip_damage(path, reason),
            },
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                self.skip_damage(path, "compressed segment damaged");
            }
            Err(e) => return Err(StorageError::io("read", path, e)),
        }
        Ok(true)
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
        self.source = None;
        self.next_id = 0;
        self.read_in_current = Some(0);
        Ok(())
    }
}

/// Calls `each(id, payload)` for every complete record of the shard in `dir` with an id at
/// or above `from_id` (all when `None`), reading as the files stand: every segment, the newest
/// up to its last whole record. For tools and tests; a running writer's newest record may be
/// cut off and is then skipped. Returns the records passed to `each`.
pub fn read_on_disk(
    dir: &Path,
    from_id: Option<u64>,
    mut each: impl FnMut(u64, &[u8]),
) -> Result<u64, StorageError> {
    let end = Position {
        segment: crate::position::MAX_SEGMENT_NUMBER,
        offset: 0,
    };
    let from_id = from_id.unwrap_or(0);
    let start = first_segment_with(dir, from_id)?;
    let mut reader = WalReader::open(dir, start)?;
    let mut records = 0;
    loop {
        let mut id = reader.next_id(end)?;
        let batch = reader.read_batch(end, 4 << 20, |p| {
            if id >= from_id {
                each(id, p);
                records += 1;
            }
            id += 1;
        })?;
        if batch.records == 0 {
            return Ok(records);
        }
    }
}

/// A cursor at the start of the newest segment whose first id is at or below `id` (`None`:
/// from the oldest).
fn first_segment_with(dir: &Path, id: u64) -> Result<Option<Cursor>, StorageError> {
    let mut start = None;
    for n in list_segments(dir)? {
        let header = match crate::segment::read_segment_header(dir, n) {
            Ok(h) => h,
            Err(_) => continue,
        };
        match parse_header(&header, n).map(|h| h.first_id) {
            Ok(first) if first <= id => {
                start = Some(Cursor {
                    position: Position {
                        segment: n,
                        offset: SEGMENT_HEADER_LEN,
                    },
                    next_id: first,
                })
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    Ok(start)
}
