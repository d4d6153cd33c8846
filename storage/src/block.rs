//! Compressed commit blocks (`[wal] commit_compression`): one group commit's records written
//! as a single zstd-compressed frame, so the disk carries fewer bytes per event.
//!
//! ```text
//! block    = length | 1<<30 (u32) | crc32c(length word ++ payload) ^ salt (u32) | payload
//! payload  = uncompressed length (u32) | one zstd frame
//! inside   = the commit's records, exactly as they would have been written plain (salted)
//! ```
//! Invariants:
//! - A block is one whole commit: it starts and ends where the commit does, so a position
//!   (and a cursor) is never inside a block. Readers deliver a block's records all at once.
//! - A block is written only when it is smaller than the plain records; otherwise the commit
//!   is written plain. Segments mix both freely; readers need no setting to read either.
//! - The outer checksum covers the compressed bytes (a torn or damaged block is refused whole,
//!   like a record); every record inside keeps its own salted checksum and is checked too,
//!   so a block is accepted only when all of it decodes: never a partial block.
//! - Decompression is bounded: the stated length is at most [`MAX_BLOCK_RAW`], equals the
//!   content size in the zstd frame's header (checked before anything is allocated) and must
//!   be exactly what the frame decompresses to.

use crate::frame::{self, Decoded, FRAME_HEADER_LEN};

/// Set in the length word of a block frame (records are below 2^26 bytes, footers set 1<<31).
pub const BLOCK_FLAG: u32 = 1 << 30;
/// Bytes before the zstd frame in a block's payload.
pub const BLOCK_PREFIX_LEN: usize = 4;
/// Largest commit written as a block (and largest uncompressed length a reader accepts).
pub const MAX_BLOCK_RAW: usize = frame::MAX_RECORD_LEN;
/// Commits smaller than this are written plain: too little to gain.
pub const MIN_BLOCK_RAW: usize = 256;

/// The writer's side: a zstd context kept across commits (no allocation per commit but the
/// block itself, which the file write takes).
pub struct BlockCompressor {
    ctx: zstd::bulk::Compressor<'static>,
    /// Where zstd writes (kept, so a commit costs no zero-filled buffer of its size).
    scratch: Vec<u8>,
}

impl BlockCompressor {
    /// A compressor at zstd `level` (negative levels are zstd's fast modes).
    pub fn new(level: i32) -> std::io::Result<Self> {
        Ok(BlockCompressor {
            ctx: zstd::bulk::Compressor::new(level)?,
            scratch: Vec::new(),
        })
    }

    /// The block frame holding `records` (whole frames salted with `salt`), or `None` when it
    /// would not be smaller (or `records` is out of the block bounds): write them plain.
    pub fn block_of(&mut self, records: &[u8], salt: u32) -> Option<Vec<u8>> {
        if records.len() < MIN_BLOCK_RAW || records.len() > MAX_BLOCK_RAW {
            return None;
        }
        self.scratch.clear();
        self.scratch
            .reserve(zstd::zstd_safe::compress_bound(records.len()));
        self.ctx
            .compress_to_buffer(records, &mut self.scratch)
            .ok()?;
        let frame_len = FRAME_HEADER_LEN + BLOCK_PREFIX_LEN + self.scratch.len();
        if frame_len >= records.len() {
            return None;
        }
        let mut out = Vec::with_capacity(frame_len);
        frame::begin_record(&mut out);
        out.extend_from_slice(&(records.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.scratch);
        frame::finish_frame_salted(&mut out, 0, BLOCK_FLAG, salt);
        Some(out)
    }
}

/// The uncompressed length a block's payload states (`None`: too short to say).
pub fn raw_len(payload: &[u8]) -> Option<usize> {
    let prefix = payload.get(..BLOCK_PREFIX_LEN)?;
    Some(u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize)
}

/// An opened block: its records' frames (whole, checked) and how many there are.
pub struct Opened<'a> {
    pub frames: &'a [u8],
    pub records: u64,
}

/// The reader's side: a zstd context and the buffer blocks are opened into.
#[derive(Default)]
pub struct BlockReader {
    ctx: Option<zstd::bulk::Decompressor<'static>>,
    raw: Vec<u8>,
}

impl BlockReader {
    /// Decompresses the block `payload` (checksummed already) and checks every record in it
    /// under `salt`; returns the records or why the block is refused.
    pub fn open(&mut self, payload: &[u8], salt: u32) -> Result<Opened<'_>, &'static str> {
        let raw_len = raw_len(payload).ok_or("block too short")?;
        if raw_len == 0 || raw_len > MAX_BLOCK_RAW {
            return Err("block length out of bounds");
        }
        // The zstd frame states its size too (the writer's frames always do): both must agree
        // before a buffer of that size is made.
        let frame = &payload[BLOCK_PREFIX_LEN..];
        match zstd::zstd_safe::get_frame_content_size(frame) {
            Ok(Some(n)) if n == raw_len as u64 => {}
            _ => return Err("block length differs from its zstd frame's"),
        }
        let ctx = match &mut self.ctx {
            Some(ctx) => ctx,
            None => self.ctx.insert(
                zstd::bulk::Decompressor::new().map_err(|_| "cannot start a zstd decoder")?,
            ),
        };
        self.raw.resize(raw_len, 0);
        let got = ctx
            .decompress_to_buffer(frame, &mut self.raw[..])
            .map_err(|_| "block does not decompress")?;
        if got != raw_len {
            return Err("block shorter than it states");
        }
        let records = check_records(&self.raw, salt)?;
        Ok(Opened {
            frames: &self.raw,
            records,
        })
    }
}

/// Whether `frames` is whole records (no footer, no block) checked under `salt`; their count.
pub fn check_records(frames: &[u8], salt: u32) -> Result<u64, &'static str> {
    let (mut at, mut records) = (0, 0);
    while at < frames.len() {
        match frame::decode_salted(&frames[at..], salt) {
            Decoded::Record { frame_len, .. } => {
                at += frame_len;
                records += 1;
            }
            Decoded::Incomplete => return Err("record cut short inside a block"),
            Decoded::Damaged(reason) => return Err(reason),
            Decoded::Footer { .. } | Decoded::Block { .. } => {
                return Err("footer or block inside a block")
            }
        }
    }
    Ok(records)
}

/// Calls `each(payload)` for every record of checked frames (see [`BlockReader::open`]).
pub fn each_record(frames: &[u8], mut each: impl FnMut(&[u8])) -> u64 {
    let (mut at, mut records) = (0, 0);
    while let Some((payload, frame_len)) = frames.get(at..).and_then(frame::decode_in_memory) {
        each(payload);
        at += frame_len;
        records += 1;
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{append_record, salt_frames};
    use proptest::prelude::*;

    fn records(payloads: &[Vec<u8>], salt: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        for p in payloads {
            append_record(&mut buf, p);
        }
        salt_frames(&mut buf, salt);
        buf
    }

    fn log_lines(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                format!("<13>1 2026-12-01T04:00:00Z host app - - - event {i} of many").into_bytes()
            })
            .collect()
    }

    #[test]
    fn a_block_reads_back_as_its_records() {
        let salt = frame::salt(7);
        let plain = records(&log_lines(200), salt);
        let block = BlockCompressor::new(1)
            .unwrap()
            .block_of(&plain, salt)
            .unwrap();
        assert!(
            block.len() < plain.len() / 3,
            "{} of {}",
            block.len(),
            plain.len()
        );
        let Decoded::Block { payload, frame_len } = frame::decode_salted(&block, salt) else {
            panic!("not a block")
        };
        assert_eq!(frame_len, block.len());
        let mut reader = BlockReader::default();
        let opened = reader.open(payload, salt).unwrap();
        let frames = opened.frames;
        assert_eq!(frames, &plain[..]);
        assert_eq!(opened.records, 200);
        let mut got = Vec::new();
        assert_eq!(each_record(frames, |p| got.push(p.to_vec())), 200);
        assert_eq!(got, log_lines(200));
        // Under another segment's salt it is not a block at all.
        assert!(matches!(
            frame::decode_salted(&block, frame::salt(8)),
            Decoded::Damaged(_)
        ));
    }

    #[test]
    fn small_or_incompressible_commits_stay_plain() {
        let mut c = BlockCompressor::new(1).unwrap();
        assert!(c.block_of(&records(&log_lines(3), 1), 1).is_none());
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<Vec<u8>> = (0..64)
            .map(|_| {
                (0..200)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    })
                    .collect()
            })
            .collect();
        assert!(c.block_of(&records(&noise, 1), 1).is_none());
    }

    #[test]
    fn a_record_damaged_inside_a_valid_block_refuses_the_block() {
        // A writer bug, not disk damage (the outer checksum would catch that): still refused.
        let salt = frame::salt(3);
        let mut plain = records(&log_lines(100), salt);
        plain[100] ^= 1;
        let block = BlockCompressor::new(1)
            .unwrap()
            .block_of(&plain, salt)
            .unwrap();
        let Decoded::Block { payload, .. } = frame::decode_salted(&block, salt) else {
            panic!("not a block")
        };
        assert!(BlockReader::default().open(payload, salt).is_err());
    }

    proptest! {
        /// Any flipped bit of a block is refused whole: never a wrong record.
        #[test]
        fn bit_flip_refused(bit in 0usize..100_000) {
            let salt = frame::salt(5);
            let plain = records(&log_lines(150), salt);
            let mut block = BlockCompressor::new(1).unwrap().block_of(&plain, salt).unwrap();
            let bit = bit % (block.len() * 8);
            block[bit / 8] ^= 1 << (bit % 8);
            let accepted = match frame::decode_salted(&block, salt) {
                Decoded::Block { payload, .. } => BlockReader::default().open(payload, salt).is_ok(),
                Decoded::Record { .. } | Decoded::Footer { .. } => true,
                _ => false,
            };
            prop_assert!(!accepted);
        }

        #[test]
        fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = BlockReader::default().open(&data, 0);
        }
    }
}
