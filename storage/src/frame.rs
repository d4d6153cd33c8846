//! The record frame: `length u32 | crc32c(length ++ payload) u32 | payload`.
//!
//! The checksum covers the length so a torn or zeroed length is caught, not trusted. A zero
//! length is never written, so zero-filled space after a torn write reads as "end".
//! A length word with [`FOOTER_FLAG`] set marks a sealed segment's footer frame (same
//! checksum rule); records never have it (they are far below 2 GiB).

pub const FRAME_HEADER_LEN: usize = 8;
/// Upper bound on one payload; larger lengths are treated as damage, never allocated.
pub const MAX_RECORD_LEN: usize = 64 << 20;
/// Set in the length word of a footer frame.
pub const FOOTER_FLAG: u32 = 1 << 31;

/// Starts a record in `buf`: reserves the frame header; the caller then appends the payload
/// and calls [`finish_record`] with the returned start.
pub fn begin_record(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    start
}

/// Fills in the header of the record started at `start`. Returns the payload length.
pub fn finish_record(buf: &mut [u8], start: usize) -> usize {
    let payload_len = buf.len() - start - FRAME_HEADER_LEN;
    let len_bytes = (payload_len as u32).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), &buf[start + FRAME_HEADER_LEN..]);
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

/// Appends a footer frame holding `payload` (see `segment::Footer`).
pub fn append_footer(buf: &mut Vec<u8>, payload: &[u8]) {
    let len_bytes = (payload.len() as u32 | FOOTER_FLAG).to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len_bytes), payload);
    buf.extend_from_slice(&len_bytes);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(payload);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, checksummed record and the total bytes it took.
    Record { payload: &'a [u8], frame_len: usize },
    /// A whole, checksummed footer frame: the segment ends here.
    Footer { payload: &'a [u8], frame_len: usize },
    /// The buffer ends inside a record: read more (or, at the end of a file, a torn tail).
    Incomplete,
    /// Not a record: zero/oversize length or checksum mismatch.
    Damaged(&'static str),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < FRAME_HEADER_LEN {
        return Decoded::Incomplete;
    }
    let word = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let footer = word & FOOTER_FLAG != 0;
    let len = (word & !FOOTER_FLAG) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len == 0 {
        return Decoded::Damaged("zero length");
    }
    if len > MAX_RECORD_LEN {
        return Decoded::Damaged("length over the record limit");
    }
    let Some(payload) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + len) else {
        return Decoded::Incomplete;
    };
    if crc32c::crc32c_append(crc32c::crc32c(&buf[..4]), payload) != crc {
        return Decoded::Damaged("checksum mismatch");
    }
    let frame_len = FRAME_HEADER_LEN + len;
    if footer {
        Decoded::Footer { payload, frame_len }
    } else {
        Decoded::Record { payload, frame_len }
    }
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

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&data);
        }
    }
}
