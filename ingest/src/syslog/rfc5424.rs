//! RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [SP MSG]`, field by field.
//!
//! Each header field is the bytes up to the next space. A field that breaks the RFC's rules is
//! still read as far as it can be and the event flagged, never turned into a `raw` event:
//! - over-long or non-PRINTUSASCII fields (an LF inside a header, a 60-byte APP-NAME) are kept
//!   whole, flagged `bad_header` (rsyslog keeps them whole too; syslog-ng truncates);
//! - an empty field (a double space) is absent, flagged `bad_header`;
//! - a frame that ends inside the header leaves the remaining fields absent, flagged
//!   `bad_header`, with an empty message;
//! - an unreadable TIMESTAMP is absent (the reception time stands in), flagged
//!   `bad_timestamp`; §6.2.3 requires upper-case `T`/`Z` and a zone, and so does Sluice;
//! - STRUCTURED-DATA that is not `-` and not valid elements is not parsed: the message starts
//!   where it starts, so its bytes stay in the message, flagged `bad_sd`.

use super::sd;
use super::time::{parse_rfc3339_with, Strictness};
use super::{Format, ParseFlags, Parsed, Span};

/// RFC 5424's field limits (§6): HOSTNAME, APP-NAME, PROCID, MSGID.
const MAX_LEN: [usize; 4] = [255, 48, 128, 32];

/// `1 ` right after the PRI: the only VERSION RFC 5424 defines (§6.2.2). Both peers read any
/// other VERSION as a BSD line, and so does Sluice.
pub(crate) fn looks_like(rest: &[u8]) -> bool {
    rest.starts_with(b"1 ") || rest == b"1"
}

struct Header<'a> {
    buf: &'a [u8],
    pos: usize,
    flags: ParseFlags,
}

impl Header<'_> {
    /// The next space-delimited field (`None` at the end of the frame).
    fn token(&mut self) -> Option<Span> {
        if self.pos >= self.buf.len() {
            self.flags |= ParseFlags::BAD_HEADER;
            return None;
        }
        let start = self.pos;
        let len = memchr::memchr(b' ', &self.buf[start..]).unwrap_or(self.buf.len() - start);
        self.pos = (start + len + 1).min(self.buf.len());
        Some(Span::new(start, start + len))
    }

    /// A header field: `-` (NILVALUE) and empty are absent.
    fn field(&mut self, max_len: usize) -> Option<Span> {
        let span = self.token()?;
        let bytes = span.get(self.buf);
        if bytes == b"-" {
            return None;
        }
        if bytes.is_empty() {
            self.flags |= ParseFlags::BAD_HEADER;
            return None;
        }
        if bytes.len() > max_len || !all_printusascii(bytes) {
            self.flags |= ParseFlags::BAD_HEADER;
        }
        Some(span)
    }
}

/// Whether every byte is PRINTUSASCII (33 ..= 126), eight bytes at a time: the byte loop
/// was a tenth of a shard's time at full load.
fn all_printusascii(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(word);
        let x = u64::from_le_bytes(b);
        // Some byte is below 33 (the subtraction borrows into a byte whose high bit was clear),
        // or above 126 (adding 1 sets a high bit, or it was set). Exact for "some byte", which
        // is all that is asked; borrows and carries only ever add false alarms to bytes after
        // one that is itself out of range.
        let below = x.wrapping_sub(ONES * 33) & !x;
        let above = x.wrapping_add(ONES) | x;
        if (below | above) & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|b| (33..=126).contains(b))
}

/// Parses the frame after `<PRI>` (at `after_pri`, which holds `1 `).
pub(crate) fn parse(frame: &[u8], pri: u8, after_pri: usize, flags: ParseFlags) -> Parsed {
    // A frame that is only `<PRI>1` starts at its end: reading the TIMESTAMP flags it.
    let mut h = Header {
        buf: frame,
        pos: (after_pri + 2).min(frame.len()),
        flags,
    };
    let timestamp = timestamp(&mut h);
    let [hostname, appname, procid, msgid] = MAX_LEN.map(|max| h.field(max));
    let (structured_data, message_start) = structured_data(&mut h);
    Parsed {
        format: Format::Rfc5424,
        pri: Some(pri),
        version: 1,
        flags: h.flags,
        timestamp,
        hostname,
        appname,
        procid,
        msgid,
        structured_data,
        message: Span::new(message_start, frame.len()),
    }
}

/// TIMESTAMP: `-` or RFC 3339 as §6.2.3 restricts it. A date and a time split by a space
/// (`2003-10-11 22:14:15Z`) is read and flagged, so the fields after it stay in place.
fn timestamp(h: &mut Header) -> Option<super::Timestamp> {
    let span = h.token()?;
    let bytes = span.get(h.buf);
    if bytes == b"-" {
        return None;
    }
    let whole = |b: &[u8], strictness| {
        parse_rfc3339_with(b, strictness).filter(|(_, used)| *used == b.len() || b[*used] == b' ')
    };
    if let Some((ts, _)) = whole(bytes, Strictness::Rfc5424) {
        return Some(ts);
    }
    h.flags |= ParseFlags::BAD_TIMESTAMP;
    let start = span.start as usize;
    if bytes.len() == 10 {
        if let Some((ts, used)) = whole(&h.buf[start..], Strictness::Lenient) {
            h.pos = (start + used + 1).min(h.buf.len());
            return Some(ts);
        }
    }
    None
}

/// STRUCTURED-DATA and where the message starts (after one space and a UTF-8 BOM).
fn structured_data(h: &mut Header) -> (Option<Span>, usize) {
    let start = h.pos;
    let rest = &h.buf[start..];
    let (sd, after) = match rest.first() {
        None => {
            // The frame ended before the (required) STRUCTURED-DATA.
            if !h.flags.contains(ParseFlags::BAD_HEADER) {
                h.flags |= ParseFlags::BAD_SD;
            }
            (None, start)
        }
        Some(b'-') if matches!(rest.get(1), None | Some(b' ')) => (None, start + 1),
        Some(b'[') => match sd::scan(rest) {
            Some(scan) => {
                if scan.long_name {
                    h.flags |= ParseFlags::BAD_SD;
                }
                (Some(Span::new(start, start + scan.len)), start + scan.len)
            }
            None => {
                h.flags |= ParseFlags::BAD_SD;
                return (None, start);
            }
        },
        Some(_) => {
            h.flags |= ParseFlags::BAD_SD;
            return (None, start);
        }
    };
    let message_start = match &h.buf[after..] {
        [] => after,
        [b' ', rest @ ..] if rest.starts_with(b"\xEF\xBB\xBF") => after + 4,
        [b' ', ..] => after + 1,
        _ => {
            // Bytes straight after the SD: not a well-formed message separator.
            h.flags |= ParseFlags::BAD_SD;
            after
        }
    };
    (sd, message_start)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time check says what the byte-by-byte rule says, for any bytes
        /// (biased towards the edges 32/33, 126/127, 0 and 255).
        #[test]
        fn printusascii_check_matches_the_rule(
            bytes in proptest::collection::vec(
                prop_oneof![
                    1 => any::<u8>(),
                    1 => prop_oneof![Just(32u8), Just(33u8), Just(126u8), Just(127u8)],
                    60 => 33u8..=126,
                ],
                0..40,
            )
        ) {
            let rule = bytes.iter().all(|b| (33..=126).contains(b));
            prop_assert_eq!(super::all_printusascii(&bytes), rule);
        }
    }

    #[test]
    fn every_single_byte_at_every_position_of_a_word() {
        for at in 0..16 {
            for b in 0..=255u8 {
                let mut bytes = vec![b'a'; 16];
                bytes[at] = b;
                assert_eq!(
                    super::all_printusascii(&bytes),
                    (33..=126).contains(&b),
                    "{b} at {at}"
                );
            }
        }
    }
}
