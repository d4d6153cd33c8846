//! The record frame: `length u32 | crc32c(length ++ payload) u32 | payload`.
//!
//! The checksum covers the length so a torn or zeroed length is caught, not trusted. A zero
//! length is never written, so zero-filled space after a torn write reads as "end".
//! A length word with [`FOOTER_FLAG`] set marks a sealed segment's footer frame, one with
//! [`BLOCK_FLAG`] a compressed commit ([`crate::block`]), both under the same checksum rule;
//! records never have either (they are below 2^26 bytes).
//!
//! Salted frames (segment format 3): the stored checksum is XOR-ed with the segment's
//! [`salt`], a value no other segment number has. A segment file may be *recycled* (written
//! over a delivered segment's file, see `crate::ready`): the bytes behind its write position
//! are whole, checksummed frames of an older segment, and salting is what keeps them from
//! ever reading as records of this one. The XOR keeps CRC32C's error detection as it is
//! (a damaged frame fails under every salt) and costs the writer one pass over the frame
//! headers of a commit, done when the segment is known ([`salt_frames`]).

pub const FRAME_HEADER_LEN: usize = 8;
/// Upper bound on one payload; larger lengths are treated as damage, never allocated.
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// Set in the length word of a footer frame.
pub const FOOTER_FLAG: u32 = 1 << 31;
pub use crate::block::BLOCK_FLAG;
/// The flags of a length word that say what kind of frame it is (none: a record).
pub const KIND_FLAGS: u32 = FOOTER_FLAG | BLOCK_FLAG;

/// Starts a record in `buf`: reserves the frame header; the caller then appends the payload
/// and calls [`finish_record`] with the returned start.
pub fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    start
}

/// Fills in the header of the record started at `start`. Returns the payload length.
pub fn finish_record(buf: &mut [u8], start: usize) -> usize {
    finish_record_salted(buf, start, 0)
}

/// [`finish_record`] with checksum mask `salt` ([`salt`]).
pub fn finish_record_salted(buf: &mut [u8], start: usize, salt: u32) -> usize {
    finish_frame_salted(buf, start, 0, salt)
}

/// Fills in the header of the frame started at `start` (see [`begin_record`]) whose length
/// word carries `kind` (0 for a record, [`BLOCK_FLAG`]), checksum masked with `salt`.
/// Returns the payload length.
pub fn finish_frame_salted(buf: &mut [u8], start: usize, kind: u32, salt: u32) -> usize {
    let payload_len = buf.len() - start - FRAME_HEADER_LEN;
    let len_bytes = (payload_len as u32 | kind).to_le_bytes();
    let crc =
        crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &buf[start + FRAME_HEADER_LEN..]) ^ salt;
    buf[start..start + 4].copy_from_slice(&len_bytes);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    payload_len
}

/// Appends a whole record holding `payload`.
pub fn append_record(buf: &mut Vec<u8>, payload: &[u8]) {
    let start = begin_record(buf);
    buf.extend_from_slice(payload);
    finish_record(buf, start);
}

/// Appends a whole record holding `payload` with checksum mask `salt` (see [`salt`]).
pub fn append_record_salted(buf: &mut Vec<u8>, payload: &[u8], salt: u32) {
    let start = buf.len();
    append_record(buf, payload);
    salt_frames(&mut buf[start..], salt);
}

/// Appends a footer frame holding `payload` (see `segment::Footer`).
pub fn append_footer(buf: &mut Vec<u8>, payload: &[u8]) {
    let len_bytes = (payload.len() as u32 | FOOTER_FLAG).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The checksum mask of segment `number` (format 3): distinct for every segment number below
/// 2^32 (a multiplication by an odd constant is a bijection of `u32`) and never 0 for the
/// numbers segments use (1 ..= `MAX_SEGMENT_NUMBER`); 0 is "unsalted" (format 2, dead letters).
pub fn salt(number: u64) -> u32 {
    (number as u32).wrapping_mul(0x9E37_79B1)
}

/// XORs `salt` into the checksum of every frame in `buf` (whole frames from its start, as the
/// appender wrote them). Applying the same salt again undoes it.
pub fn salt_frames(buf: &mut [u8], salt: u32) {
    if salt == 0 {
        return;
    }
    let mut at = 0;
    while at + FRAME_HEADER_LEN <= buf.len() {
        let (frame_len, crc) = header_at(buf, at);
        buf[at + 4..at + 8].copy_from_slice(&(crc ^ salt).to_le_bytes());
        at += frame_len;
    }
    debug_assert_eq!(at, buf.len(), "salt_frames over a buffer of whole frames");
}

/// The frame whose header starts at `at` (the caller checked the header is there): its whole
/// length (header included, kind flags masked) and its stored checksum (salted as written).
pub fn header_at(buf: &[u8], at: usize) -> (usize, u32) {
    let word = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
    (FRAME_HEADER_LEN + (word & !KIND_FLAGS) as usize, crc)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record and the total bytes it took.
    Record { payload: &'a [u8], frame_len: usize },
    /// A whole, checksummed footer frame: the segment ends here.
    Footer { payload: &'a [u8], frame_len: usize },
    /// A whole, checksummed compressed commit ([`crate::block`]): records inside.
    Block { payload: &'a [u8], frame_len: usize },
    /// The buffer ends inside a record: read more (or, at the end of a file, a torn tail).
    Incomplete,
    /// Not a record: zero/oversize length or checksum mismatch.
    Damaged(&'static str),
}

/// Decodes the (unsalted) record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    decode_salted(buf, 0)
}

/// Decodes the record at the start of `buf`, written with checksum mask `salt` ([`salt`]; 0:
/// unsalted). A frame written under another salt is `Damaged`, never a record.
pub fn decode_salted(buf: &[u8], salt: u32) -> Decoded<'_> {
    if buf.len() < FRAME_HEADER_LEN {
        return Decoded::Incomplete;
    }
    let word = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let footer = word & FOOTER_FLAG != 0;
    let block = word & BLOCK_FLAG != 0;
    let len = (word & !KIND_FLAGS) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Decoded::Damaged("zero length");
    }
    if footer && block {
        return Decoded::Damaged("footer and block flags both set");
    }
    if len > MAX_RECORD_LEN {
        return Decoded::Damaged("length over the record limit");
    }
    let Some(payload) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&buf[..4]), payload) ^ salt != crc {
        return Decoded::Damaged("checksum mismatch");
    }
    let frame_len = FRAME_HEADER_LEN + len;
    if footer {
        Decoded::Footer { payload, frame_len }
    } else if block {
        Decoded::Block { payload, frame_len }
    } else {
        Decoded::Record { payload, frame_len }
    }
}

/// The record at the start of `buf` without checking its checksum: only for bytes that never
/// left memory (the fast path's commits, made by the writer of this process), where the
/// checksum protects against nothing and costs most of an output's decoding. `None` at a
/// footer, a zero or oversize length, or a frame that does not fit in `buf`.
pub fn decode_in_memory(buf: &[u8]) -> Option<(&[u8], usize)> {
    let word = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
    let len = word as usize;
    if word & KIND_FLAGS != 0 || len == 0 || len > MAX_RECORD_LEN {
        return None;
    }
    let payload = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len)?;
    Some((payload, FRAME_HEADER_LEN + len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..10)) {
            let mut buf = Vec::new();
            for p in &payloads { append_record(&mut buf, p); }
            let mut at = 0;
            for p in &payloads {
                match decode(&buf[at..]) {
                    Decoded::Record { payload, frame_len } => { prop_assert_eq!(payload, &p[..]); at += frame_len; }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
            prop_assert_eq!(at, buf.len());
        }

        /// Any single flipped bit is caught: never a wrong record.
        #[test]
        fn bit_flip_detected(payload in proptest::collection::vec(any::<u8>(), 1..100), bit in 0usize..800) {
            let mut buf = Vec::new();
            append_record(&mut buf, &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            if let Decoded::Record { payload: got, .. } = decode(&buf) { prop_assert!(false, "accepted {:?}", got) }
        }

        /// A frame salted for one segment never reads as a record of another (what keeps a
        /// recycled file's old bytes from passing as new records), and reads back under its own.
        #[test]
        fn salted_frames_read_only_under_their_own_segment(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..100), 1..5),
            written in 1u64..(1 << 28), other in 1u64..(1 << 28),
        ) {
            prop_assume!(written != other);
            let mut buf = Vec::new();
            for p in &payloads { append_record(&mut buf, p); }
            salt_frames(&mut buf, salt(written));
            let mut at = 0;
            for p in &payloads {
                prop_assert!(matches!(decode_salted(&buf[at..], salt(other)), Decoded::Damaged(_)));
                prop_assert!(matches!(decode(&buf[at..]), Decoded::Damaged(_)));
                match decode_salted(&buf[at..], salt(written)) {
                    Decoded::Record { payload, frame_len } => { prop_assert_eq!(payload, &p[..]); at += frame_len; }
                    other => prop_assert!(false, "{:?}", other),
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&data);
            let _ = decode_in_memory(&data);
        }

        /// In memory, whole frames read back as `decode` reads them (minus the checksum).
        #[test]
        fn in_memory_reads_what_decode_reads(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 1..10), number in 1u64..(1 << 28)) {
            let mut buf = Vec::new();
            for p in &payloads { append_record(&mut buf, p); }
            salt_frames(&mut buf, salt(number));
            let mut at = 0;
            while at < buf.len() {
                let Decoded::Record { payload, frame_len } = decode_salted(&buf[at..], salt(number)) else {
                    return Err(TestCaseError::fail("not a record"));
                };
                prop_assert_eq!(decode_in_memory(&buf[at..]), Some((payload, frame_len)));
                at += frame_len;
            }
        }
    }
}
