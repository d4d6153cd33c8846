//! The event record: what a shard stores in its WAL for one event.
//!
//! A record is the parse result as offsets followed by the frame's bytes, so outputs can encode
//! JSON or raw without parsing again, and raw encoding returns exactly what the sender sent.
//!
//! Layout 3, *compact*, what [`encode`] writes (little endian; the parts in brackets only when
//! present, so a typical RFC 5424 event takes 56 bytes before its frame instead of layout 1's
//! 92: the WAL is what fills the disk's synced bandwidth, see docs/benchmarks.md):
//! ```text
//!  0  u8   layout version (3)
//!  1  u8   format (as layout 1)
//!  2  u8   flags: layout 1's, plus 32 source IP is IPv4, 64 wide spans
//!  3  u8   PRI;  4 u8 RFC 5424 version;  5 u8 present spans;  6 u16 parse flags
//!  8  i64  received_at, µs since the Unix epoch
//! 16  [i64 timestamp seconds, u32 nanoseconds]                       (flag 8)
//!     [source IP: 4 bytes (flag 32) or 16]                            (flag 16)
//!     per present span, in order: start, len: u16 each (u32 each with flag 64, used when
//!     the frame is longer than 65535 bytes)
//!     frame bytes
//! ```
//!
//! Layout 1 (written before layout 3 existed; still read: `HEADER_LEN` bytes, then the frame):
//! ```text
//!  0  u8   layout version (1)
//!  1  u8   format: 0 raw, 1 rfc3164, 2 rfc5424
//!  2  u8   flags: 1 truncated, 2 bad octet count, 4 has PRI, 8 has timestamp, 16 has source IP
//!  3  u8   PRI (facility << 3 | severity)
//!  4  u8   RFC 5424 version
//!  5  u8   present spans, bit i for span i (hostname, appname, procid, msgid, sd, message)
//!  6  u16  parse flags (ParseFlags bits: 1 no PRI, 2 bad header, 4 bad timestamp, 8 bad SD;
//!           0 in records written before they existed)
//!  8  i64  received_at, µs since the Unix epoch
//! 16  i64  timestamp seconds since the Unix epoch (UTC)
//! 24  u32  timestamp nanoseconds
//! 28  16B  source IP (IPv4 as ::ffff:a.b.c.d)
//! 44  6 × (u32 start, u32 len) spans into the frame
//! 92  frame bytes
//! ```
//!
//! Layout 2, a *routed* record (written when the config has transforms or sinks with `inputs`):
//! the same first 92 bytes with version 2, then
//! ```text
//! 92  u64  route mask: bit b set = the sink with routing bit b wants it (bits: data_dir/sink-bits)
//! 100 u32  frame length F
//! 104 u16  standard JSON keys the fields replace (bit i = json::STANDARD_KEYS[i])
//! 106 u16  reserved (0)
//! 108 F    frame bytes (rewritten by a transform if one changed the message)
//! 108+F    fields: the members of a JSON object, `"k":v,...` without braces (may be empty)
//! ```
//! Invariants: spans lie inside the frame; the fields are valid JSON members (written by the
//! pipeline's encoder); a layout 1 record is wanted by every sink. A sink tests its bit with
//! [`wanted_by`] without decoding the record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::framing::FrameFlags;
use crate::syslog::{Format, ParseFlags, Parsed, Span, Timestamp};

pub const LAYOUT_VERSION: u8 = 1;
pub const HEADER_LEN: usize = 92;
/// The compact plain layout (see the module docs): what [`encode`] writes.
pub const LAYOUT_COMPACT: u8 = 3;
/// Layout 3's bytes before its optional parts.
const COMPACT_FIXED_LEN: usize = 16;
/// The routed layout (see the module docs).
pub const LAYOUT_ROUTED: u8 = 2;
pub const ROUTED_HEADER_LEN: usize = 108;

const FLAG_TRUNCATED: u8 = 1;
const FLAG_BAD_LENGTH: u8 = 2;
const FLAG_HAS_PRI: u8 = 4;
const FLAG_HAS_TS: u8 = 8;
const FLAG_HAS_SOURCE: u8 = 16;
const FLAG_SOURCE_V4: u8 = 32;
const FLAG_WIDE_SPANS: u8 = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    TooShort { len: usize },
    UnknownLayout { version: u8 },
    UnknownFormat { format: u8 },
    SpanOutOfFrame { span: usize },
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::TooShort { len } => write!(f, "event record of {len} bytes is too short"),
            RecordError::UnknownLayout { version } => write!(f, "unknown event layout {version}"),
            RecordError::UnknownFormat { format } => write!(f, "unknown event format {format}"),
            RecordError::SpanOutOfFrame { span } => write!(f, "field span {span} outside frame"),
        }
    }
}

impl std::error::Error for RecordError {}

/// Per-event facts that do not come from the frame.
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub received_at_us: i64,
    pub source_ip: Option<IpAddr>,
    pub frame_flags: FrameFlags,
}

/// Length of the record [`encode`] writes for this event.
pub fn encoded_len(header: &EventHeader, parsed: &Parsed, frame_len: usize) -> usize {
    let spans = spans_of(parsed).iter().flatten().count();
    let span_len = if wide_spans(frame_len) { 8 } else { 4 };
    let ip_len = match compact_ip(header.source_ip) {
        None => 0,
        Some(IpAddr::V4(_)) => 4,
        Some(IpAddr::V6(_)) => 16,
    };
    let ts_len = if parsed.timestamp.is_some() { 12 } else { 0 };
    COMPACT_FIXED_LEN + ts_len + ip_len + spans * span_len + frame_len
}

fn wide_spans(frame_len: usize) -> bool {
    frame_len > usize::from(u16::MAX)
}

/// The source address as layout 3 stores it: an IPv4-mapped IPv6 address as IPv4 (layout 1
/// reads them back so too).
fn compact_ip(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip {
        Some(IpAddr::V6(v6)) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        other => other,
    }
}

/// Length of a routed record.
pub fn routed_len(frame_len: usize, fields_len: usize) -> usize {
    ROUTED_HEADER_LEN + frame_len + fields_len
}

/// What a routed record adds to the plain one.
#[derive(Clone, Copy, Debug)]
pub struct Routing<'a> {
    /// Which sinks want it (by routing bit).
    pub sinks: u64,
    /// JSON members (`"k":v,...`) of the fields transforms added.
    pub fields: &'a [u8],
    /// Standard keys those fields replace ([`crate::json::override_bits`]).
    pub overrides: u16,
}

/// Appends a routed record (layout 2) for one processed event to `out`.
pub fn encode_routed(
    out: &mut Vec<u8>,
    header: &EventHeader,
    parsed: &Parsed,
    frame: &[u8],
    routing: &Routing<'_>,
) {
    out.reserve(routed_len(frame.len(), routing.fields.len()));
    write_header(out, LAYOUT_ROUTED, header, parsed);
    out.extend_from_slice(&routing.sinks.to_le_bytes());
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(&routing.overrides.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(frame);
    out.extend_from_slice(routing.fields);
}

/// Whether the sink with routing bit `bit` wants this record (read from its header only; a
/// record too short to tell is passed on, for the decoder to refuse and count).
pub fn wanted_by(rec: &[u8], bit: u8) -> bool {
    if rec.first() != Some(&LAYOUT_ROUTED) || rec.len() < ROUTED_HEADER_LEN {
        return true;
    }
    let mut mask = [0u8; 8];
    mask.copy_from_slice(&rec[92..100]);
    u64::from_le_bytes(mask) & (1u64 << (bit & 63)) != 0
}

/// Appends the record (layout 3) for one parsed frame to `out` (no other allocation).
pub fn encode(out: &mut Vec<u8>, header: &EventHeader, parsed: &Parsed, frame: &[u8]) {
    // Layout 3's header is at most layout 1's 92 bytes (16 + 12 + 16 + 6 × 8): a bound that
    // needs no second pass over the spans (the caller already computed the exact length).
    out.reserve(HEADER_LEN + frame.len());
    let ip = compact_ip(header.source_ip);
    let wide = wide_spans(frame.len());
    let mut flags = event_flags(header, parsed);
    if matches!(ip, Some(IpAddr::V4(_))) {
        flags |= FLAG_SOURCE_V4;
    }
    if wide {
        flags |= FLAG_WIDE_SPANS;
    }
    let spans = spans_of(parsed);
    out.extend_from_slice(&[
        LAYOUT_COMPACT,
        parsed.format as u8,
        flags,
        parsed.pri.unwrap_or(0),
        parsed.version,
        present_bits(&spans),
    ]);
    out.extend_from_slice(&parsed.flags.bits().to_le_bytes());
    out.extend_from_slice(&header.received_at_us.to_le_bytes());
    if let Some(ts) = parsed.timestamp {
        out.extend_from_slice(&ts.secs.to_le_bytes());
        out.extend_from_slice(&ts.nanos.to_le_bytes());
    }
    match ip {
        Some(IpAddr::V4(v4)) => out.extend_from_slice(&v4.octets()),
        Some(IpAddr::V6(v6)) => out.extend_from_slice(&v6.octets()),
        None => {}
    }
    for span in spans.iter().flatten() {
        if wide {
            out.extend_from_slice(&span.start.to_le_bytes());
            out.extend_from_slice(&span.len.to_le_bytes());
        } else {
            // Narrow: the frame is at most 65535 bytes, so are offsets into it.
            out.extend_from_slice(&(span.start as u16).to_le_bytes());
            out.extend_from_slice(&(span.len as u16).to_le_bytes());
        }
    }
    out.extend_from_slice(frame);
}

/// Layout 1, as written before layout 3 (kept to test that old WALs still read).
#[cfg(test)]
fn encode_layout1(out: &mut Vec<u8>, header: &EventHeader, parsed: &Parsed, frame: &[u8]) {
    write_header(out, LAYOUT_VERSION, header, parsed);
    out.extend_from_slice(frame);
}

/// Flag bits every layout has.
fn event_flags(header: &EventHeader, parsed: &Parsed) -> u8 {
    let mut flags = 0;
    if header.frame_flags.truncated() {
        flags |= FLAG_TRUNCATED;
    }
    if header.frame_flags.bad_length() {
        flags |= FLAG_BAD_LENGTH;
    }
    if parsed.pri.is_some() {
        flags |= FLAG_HAS_PRI;
    }
    if parsed.timestamp.is_some() {
        flags |= FLAG_HAS_TS;
    }
    if header.source_ip.is_some() {
        flags |= FLAG_HAS_SOURCE;
    }
    flags
}

fn present_bits(spans: &[Option<Span>; 6]) -> u8 {
    let mut present = 0u8;
    for (i, span) in spans.iter().enumerate() {
        if span.is_some() {
            present |= 1 << i;
        }
    }
    present
}

/// The first 92 bytes of layouts 1 and 2.
fn write_header(out: &mut Vec<u8>, layout: u8, header: &EventHeader, parsed: &Parsed) {
    let flags = event_flags(header, parsed);
    let spans = spans_of(parsed);
    let present = present_bits(&spans);
    let ts = parsed.timestamp.unwrap_or(Timestamp { secs: 0, nanos: 0 });
    let ip = match header.source_ip {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
        Some(IpAddr::V6(v6)) => v6,
        None => Ipv6Addr::UNSPECIFIED,
    };
    out.extend_from_slice(&[
        layout,
        parsed.format as u8,
        flags,
        parsed.pri.unwrap_or(0),
        parsed.version,
        present,
    ]);
    out.extend_from_slice(&parsed.flags.bits().to_le_bytes());
    out.extend_from_slice(&header.received_at_us.to_le_bytes());
    out.extend_from_slice(&ts.secs.to_le_bytes());
    out.extend_from_slice(&ts.nanos.to_le_bytes());
    out.extend_from_slice(&ip.octets());
    for span in spans {
        let span = span.unwrap_or_default();
        out.extend_from_slice(&span.start.to_le_bytes());
        out.extend_from_slice(&span.len.to_le_bytes());
    }
}

/// Splits a routed record: (frame, route mask, fields, overrides).
#[allow(clippy::type_complexity)]
fn routed_parts(rec: &[u8]) -> Result<(&[u8], Option<u64>, &[u8], u16), RecordError> {
    if rec.len() < ROUTED_HEADER_LEN {
        return Err(RecordError::TooShort { len: rec.len() });
    }
    let mut mask = [0u8; 8];
    mask.copy_from_slice(&rec[92..100]);
    let frame_len = u32::from_le_bytes([rec[100], rec[101], rec[102], rec[103]]) as usize;
    let overrides = u16::from_le_bytes([rec[104], rec[105]]);
    let body = &rec[ROUTED_HEADER_LEN..];
    if frame_len > body.len() {
        return Err(RecordError::TooShort { len: rec.len() });
    }
    let (frame, fields) = body.split_at(frame_len);
    Ok((frame, Some(u64::from_le_bytes(mask)), fields, overrides))
}

fn spans_of(p: &Parsed) -> [Option<Span>; 6] {
    [
        p.hostname,
        p.appname,
        p.procid,
        p.msgid,
        p.structured_data,
        Some(p.message),
    ]
}

/// A decoded event record, borrowing the record's bytes.
#[derive(Clone, Copy, Debug)]
pub struct EventView<'a> {
    pub format: Format,
    pub truncated: bool,
    pub bad_length: bool,
    pub parse_flags: ParseFlags,
    pub pri: Option<u8>,
    pub version: u8,
    pub received_at_us: i64,
    pub timestamp: Option<Timestamp>,
    pub source_ip: Option<IpAddr>,
    pub frame: &'a [u8],
    spans: [Option<Span>; 6],
    /// Routed records: the sinks that want it (`None`: every sink).
    pub route: Option<u64>,
    /// Routed records: the fields as JSON members (empty when none).
    pub fields: &'a [u8],
    /// Routed records: the standard JSON keys the fields replace.
    pub overrides: u16,
}

impl<'a> EventView<'a> {
    pub fn decode(rec: &'a [u8]) -> Result<EventView<'a>, RecordError> {
        if rec.first() == Some(&LAYOUT_COMPACT) {
            return Self::decode_compact(rec);
        }
        if rec.len() < HEADER_LEN {
            return Err(RecordError::TooShort { len: rec.len() });
        }
        let (frame, route, fields, overrides) = match rec[0] {
            LAYOUT_VERSION => (&rec[HEADER_LEN..], None, &rec[..0], 0),
            LAYOUT_ROUTED => routed_parts(rec)?,
            version => return Err(RecordError::UnknownLayout { version }),
        };
        let format =
            Format::from_u8(rec[1]).ok_or(RecordError::UnknownFormat { format: rec[1] })?;
        let flags = rec[2];
        let le_u32 =
            |at: usize| u32::from_le_bytes([rec[at], rec[at + 1], rec[at + 2], rec[at + 3]]);
        let le_i64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&rec[at..at + 8]);
            i64::from_le_bytes(b)
        };
        let mut spans = [None; 6];
        for (i, slot) in spans.iter_mut().enumerate() {
            if rec[5] & (1 << i) == 0 {
                continue;
            }
            let span = Span {
                start: le_u32(44 + i * 8),
                len: le_u32(48 + i * 8),
            };
            *slot = Some(within(span, frame, i)?);
        }
        let mut ip = [0u8; 16];
        ip.copy_from_slice(&rec[28..44]);
        let ip = Ipv6Addr::from(ip);
        let parts = Parts {
            format,
            timestamp: (flags & FLAG_HAS_TS != 0).then(|| Timestamp {
                secs: le_i64(16),
                nanos: le_u32(24),
            }),
            source_ip: (flags & FLAG_HAS_SOURCE != 0)
                .then(|| ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4)),
            frame,
            spans,
            route,
            fields,
            overrides,
        };
        Ok(Self::with_common_bytes(rec, parts))
    }

    /// The view of `parts` and the first 16 bytes, which every layout has in the same places
    /// (the caller checked there are 16).
    fn with_common_bytes(rec: &'a [u8], parts: Parts<'a>) -> EventView<'a> {
        let flags = rec[2];
        let mut received_at = [0u8; 8];
        received_at.copy_from_slice(&rec[8..16]);
        EventView {
            format: parts.format,
            truncated: flags & FLAG_TRUNCATED != 0,
            bad_length: flags & FLAG_BAD_LENGTH != 0,
            parse_flags: ParseFlags::from_bits(u16::from_le_bytes([rec[6], rec[7]])),
            pri: (flags & FLAG_HAS_PRI != 0).then_some(rec[3]),
            version: rec[4],
            received_at_us: i64::from_le_bytes(received_at),
            timestamp: parts.timestamp,
            source_ip: parts.source_ip,
            frame: parts.frame,
            spans: parts.spans,
            route: parts.route,
            fields: parts.fields,
            overrides: parts.overrides,
        }
    }

    /// Layout 3: the optional parts in order, each checked against the record's length.
    fn decode_compact(rec: &'a [u8]) -> Result<EventView<'a>, RecordError> {
        if rec.len() < COMPACT_FIXED_LEN {
            return Err(RecordError::TooShort { len: rec.len() });
        }
        let format =
            Format::from_u8(rec[1]).ok_or(RecordError::UnknownFormat { format: rec[1] })?;
        let (flags, present) = (rec[2], rec[5]);
        let mut r = Fields {
            rec,
            at: COMPACT_FIXED_LEN,
        };
        let timestamp = if flags & FLAG_HAS_TS != 0 {
            Some(Timestamp {
                secs: i64::from_le_bytes(r.take()?),
                nanos: u32::from_le_bytes(r.take()?),
            })
        } else {
            None
        };
        let source_ip = match (flags & FLAG_HAS_SOURCE != 0, flags & FLAG_SOURCE_V4 != 0) {
            (false, _) => None,
            (true, true) => Some(IpAddr::V4(Ipv4Addr::from(r.take::<4>()?))),
            (true, false) => Some(IpAddr::V6(Ipv6Addr::from(r.take::<16>()?))),
        };
        let mut spans = [None; 6];
        for (i, slot) in spans.iter_mut().enumerate() {
            if present & (1 << i) != 0 {
                *slot = Some(r.span(flags & FLAG_WIDE_SPANS != 0)?);
            }
        }
        let frame = &rec[r.at..];
        for (i, slot) in spans.iter_mut().enumerate() {
            if let Some(span) = *slot {
                *slot = Some(within(span, frame, i)?);
            }
        }
        let parts = Parts {
            format,
            timestamp,
            source_ip,
            frame,
            spans,
            route: None,
            fields: &rec[..0],
            overrides: 0,
        };
        Ok(Self::with_common_bytes(rec, parts))
    }

    fn span(&self, i: usize) -> Option<&'a [u8]> {
        self.spans[i].map(|s| s.get(self.frame))
    }
    pub fn hostname(&self) -> Option<&'a [u8]> {
        self.span(0)
    }
    pub fn appname(&self) -> Option<&'a [u8]> {
        self.span(1)
    }
    pub fn procid(&self) -> Option<&'a [u8]> {
        self.span(2)
    }
    pub fn msgid(&self) -> Option<&'a [u8]> {
        self.span(3)
    }
    pub fn structured_data(&self) -> Option<&'a [u8]> {
        self.span(4)
    }
    pub fn message(&self) -> &'a [u8] {
        self.span(5).unwrap_or(self.frame)
    }
}

/// What a layout stores in its own places (the rest is in the first 16 bytes).
struct Parts<'a> {
    format: Format,
    timestamp: Option<Timestamp>,
    source_ip: Option<IpAddr>,
    frame: &'a [u8],
    spans: [Option<Span>; 6],
    route: Option<u64>,
    fields: &'a [u8],
    overrides: u16,
}

/// `span` (number `i`) if it lies inside `frame`.
fn within(span: Span, frame: &[u8], i: usize) -> Result<Span, RecordError> {
    if span.start as u64 + span.len as u64 > frame.len() as u64 {
        return Err(RecordError::SpanOutOfFrame { span: i });
    }
    Ok(span)
}

/// Reads layout 3's variable part front to back.
struct Fields<'a> {
    rec: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let bytes = self
            .rec
            .get(self.at..self.at + N)
            .ok_or(RecordError::TooShort {
                len: self.rec.len(),
            })?;
        self.at += N;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn span(&mut self, wide: bool) -> Result<Span, RecordError> {
        Ok(if wide {
            Span {
                start: u32::from_le_bytes(self.take()?),
                len: u32::from_le_bytes(self.take()?),
            }
        } else {
            Span {
                start: u16::from_le_bytes(self.take()?).into(),
                len: u16::from_le_bytes(self.take()?).into(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syslog::parse;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let frame = b"<165>1 2003-10-11T22:14:15.003Z host app 1 ID [a b=\"c\"] msg";
        let parsed = parse(frame, 0);
        let header = EventHeader {
            received_at_us: 42,
            source_ip: Some("10.1.2.3".parse().unwrap()),
            frame_flags: FrameFlags(FrameFlags::TRUNCATED),
        };
        let mut out = Vec::new();
        encode(&mut out, &header, &parsed, frame);
        assert_eq!(out.len(), encoded_len(&header, &parsed, frame.len()));
        assert_eq!(
            out.len() - frame.len(),
            56,
            "compact: 56 bytes before the frame"
        );
        let v = EventView::decode(&out).unwrap();
        assert_eq!(v.format, Format::Rfc5424);
        assert!(v.truncated && !v.bad_length);
        assert_eq!(v.source_ip, header.source_ip);
        assert_eq!(v.hostname(), Some(&b"host"[..]));
        assert_eq!(v.structured_data(), Some(&b"[a b=\"c\"]"[..]));
        assert_eq!(v.message(), b"msg");
        assert_eq!(v.frame, frame);
        assert_eq!(v.timestamp, parsed.timestamp);
        assert!(v.parse_flags.is_empty());
        let no_pri = b"Feb 18 16:01:59 serverX -- MARK --";
        out.clear();
        encode(&mut out, &header, &parse(no_pri, 0), no_pri);
        let v = EventView::decode(&out).unwrap();
        assert_eq!(v.parse_flags, ParseFlags::NO_PRI);
        assert_eq!(v.pri, Some(13));
    }

    /// A routed record carries its sinks, a rewritten frame and fields; JSON writes the fields
    /// and lets them replace a standard key.
    #[test]
    fn routed_round_trip() {
        let frame = b"<13>1 - host app - - - {\"message\":\"inner\",\"n\":1}";
        let parsed = parse(frame, 0);
        let header = EventHeader {
            received_at_us: 0,
            source_ip: None,
            frame_flags: FrameFlags::default(),
        };
        let fields = br#""message":"inner","n":1"#;
        let overrides = crate::json::override_bits([&b"message"[..], b"n"].into_iter());
        let routing = Routing {
            sinks: 0b101,
            fields,
            overrides,
        };
        let mut out = Vec::new();
        encode_routed(&mut out, &header, &parsed, frame, &routing);
        assert_eq!(out.len(), routed_len(frame.len(), fields.len()));
        assert!(wanted_by(&out, 0) && !wanted_by(&out, 1) && wanted_by(&out, 2));
        let v = EventView::decode(&out).unwrap();
        assert_eq!(
            (v.route, v.fields, v.frame),
            (Some(0b101), &fields[..], &frame[..])
        );
        assert_eq!(v.hostname(), Some(&b"host"[..]));
        let mut json = Vec::new();
        crate::json::write_event(&mut json, &v, 0);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["message"], "inner");
        assert_eq!(value["n"], 1);
        assert_eq!(value["hostname"], "host");
        let mut plain = Vec::new();
        encode(&mut plain, &header, &parsed, frame);
        assert!(wanted_by(&plain, 7), "a plain record is for every sink");
        out.truncate(ROUTED_HEADER_LEN + 3);
        assert!(
            EventView::decode(&out).is_err(),
            "a frame longer than the record"
        );
    }

    /// Everything a reader can ask a view, to compare two.
    #[allow(clippy::type_complexity)]
    fn seen<'a>(
        v: &EventView<'a>,
    ) -> (
        (Format, bool, bool, u16, Option<u8>, u8, i64),
        (Option<Timestamp>, Option<IpAddr>, &'a [u8]),
        [Option<&'a [u8]>; 5],
        &'a [u8],
    ) {
        (
            (
                v.format,
                v.truncated,
                v.bad_length,
                v.parse_flags.bits(),
                v.pri,
                v.version,
                v.received_at_us,
            ),
            (v.timestamp, v.source_ip, v.frame),
            [
                v.hostname(),
                v.appname(),
                v.procid(),
                v.msgid(),
                v.structured_data(),
            ],
            v.message(),
        )
    }

    /// A frame longer than 65535 bytes needs wide spans; an IPv6 source takes 16 bytes.
    #[test]
    fn a_long_frame_and_an_ipv6_source_round_trip() {
        let frame = format!("<13>1 - host app - - - {}", "m".repeat(70_000));
        let parsed = parse(frame.as_bytes(), 0);
        let header = EventHeader {
            received_at_us: -5,
            source_ip: Some("2001:db8::7".parse().unwrap()),
            frame_flags: FrameFlags::default(),
        };
        let mut out = Vec::new();
        encode(&mut out, &header, &parsed, frame.as_bytes());
        assert_eq!(out.len(), encoded_len(&header, &parsed, frame.len()));
        let v = EventView::decode(&out).unwrap();
        assert_eq!(v.source_ip, header.source_ip);
        assert_eq!(v.message().len(), 70_000);
        assert_eq!(v.hostname(), Some(&b"host"[..]));
        assert_eq!(v.received_at_us, -5);
    }

    fn header_strategy() -> impl Strategy<Value = EventHeader> {
        let ip = prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|o| Some(IpAddr::from(o))),
            any::<[u8; 16]>().prop_map(|o| Some(IpAddr::from(o))),
            any::<[u8; 4]>().prop_map(|o| Some(IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped()))),
        ];
        (any::<i64>(), ip, 0u8..4).prop_map(|(received_at_us, source_ip, f)| EventHeader {
            received_at_us,
            source_ip,
            frame_flags: FrameFlags(f),
        })
    }

    proptest! {
        /// Layout 3 reads back exactly what layout 1 (old WALs) reads back, for syslog-like
        /// and arbitrary frames; its length is what `encoded_len` said.
        #[test]
        fn compact_reads_like_layout_1(
            header in header_strategy(),
            frame in prop_oneof![
                "<[0-9]{1,3}>1 [0-9T:.Z-]{0,30} [a-z]{0,8} [a-z]{0,8} [0-9-]{1,5} [A-Z-]{1,4} (-|\\[a b=\"c\"\\]) .{0,60}",
                "<[0-9]{1,3}>[A-Z][a-z]{2} [ 0-9]{2} [0-9:]{8} [a-z]{1,8} [a-z]{1,8}(\\[[0-9]{1,5}\\])?: .{0,60}",
                ".{0,120}",
            ],
            now in 0i64..4_000_000_000,
        ) {
            let frame = frame.as_bytes();
            let parsed = parse(frame, now);
            let mut compact = Vec::new();
            encode(&mut compact, &header, &parsed, frame);
            prop_assert_eq!(compact.len(), encoded_len(&header, &parsed, frame.len()));
            let mut old = Vec::new();
            encode_layout1(&mut old, &header, &parsed, frame);
            let (a, b) = (EventView::decode(&compact).unwrap(), EventView::decode(&old).unwrap());
            prop_assert_eq!(seen(&a), seen(&b));
            // Every cut of a compact record is refused or reads within its bytes.
            for cut in 0..compact.len() {
                if let Ok(v) = EventView::decode(&compact[..cut]) {
                    let _ = seen(&v);
                }
            }
        }

        #[test]
        fn decode_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(v) = EventView::decode(&data) {
                let _ = (v.hostname(), v.appname(), v.procid(), v.msgid(), v.structured_data(), v.message());
            }
            let mut compact = data.clone();
            if let Some(first) = compact.first_mut() {
                *first = LAYOUT_COMPACT;
            }
            if let Ok(v) = EventView::decode(&compact) {
                let _ = seen(&v);
            }
            let mut routed = data.clone();
            if let Some(first) = routed.first_mut() {
                *first = LAYOUT_ROUTED;
            }
            let _ = wanted_by(&routed, 3);
            if let Ok(v) = EventView::decode(&routed) {
                let _ = (v.hostname(), v.message(), v.fields);
            }
        }
    }
}
