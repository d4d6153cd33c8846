//! Turning WAL records into bytes for a destination (no allocation per event).

use std::io::Write as _;

use ingest::json;
use ingest::EventView;

use serde::{Deserialize, Deserializer};

use crate::units::snake_case;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON object per line.
    Json,
    /// The frame's bytes as received.
    Raw,
}

/// What raw encoding does with line breaks (LF, CR) and NULs inside a frame: a frame that
/// carries them (octet-counted, or a UDP datagram) would otherwise forge whole lines in a raw
/// file or a newline-framed forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineBreaks {
    /// As rsyslog's control-character escaping does: LF → `#012`, CR → `#015`, NUL → `#000`.
    #[default]
    Escape,
    /// Each replaced by a space.
    Space,
    /// Written verbatim (only for receivers that frame by octet count and trust the sender).
    Keep,
}

/// How the TCP sink frames events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpFraming {
    /// RFC 6587 octet counting: `<length> <frame>`.
    #[default]
    OctetCounting,
    /// One event per line.
    Newline,
}

impl<'de> Deserialize<'de> for TcpFraming {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        snake_case(
            d,
            &[
                ("octet_counting", TcpFraming::OctetCounting),
                ("newline", TcpFraming::Newline),
            ],
        )
    }
}

impl Encoding {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Raw => "raw",
        }
    }
}

impl LineBreaks {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            LineBreaks::Escape => "escape",
            LineBreaks::Space => "space",
            LineBreaks::Keep => "keep",
        }
    }
}

/// How a sink encodes records.
#[derive(Debug, Clone, Copy)]
pub struct RecordEncoding {
    pub encoding: Encoding,
    /// Set for stream sinks (how frames are delimited), `None` for files (one line per event).
    pub framing: Option<TcpFraming>,
    /// Raw encoding only (JSON escapes every control character anyway).
    pub line_breaks: LineBreaks,
}

/// Appends the encoding of one WAL record to `out`. Returns false, appending nothing, when
/// the record is not a valid event.
pub fn encode_record(
    payload: &[u8],
    shard: usize,
    how: RecordEncoding,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let Ok(event) = EventView::decode(payload) else {
        return false;
    };
    match (how.encoding, how.framing) {
        (Encoding::Json, None | Some(TcpFraming::Newline)) => {
            json::write_event(out, &event, shard as u32);
        }
        (Encoding::Raw, None | Some(TcpFraming::Newline)) => {
            write_raw(out, event.frame, how.line_breaks);
            out.push(b'\n');
        }
        (Encoding::Raw, Some(TcpFraming::OctetCounting)) => {
            scratch.clear();
            write_raw(scratch, event.frame, how.line_breaks);
            let _ = write!(out, "{} ", scratch.len());
            out.extend_from_slice(scratch);
        }
        (Encoding::Json, Some(TcpFraming::OctetCounting)) => {
            scratch.clear();
            json::write_event(scratch, &event, shard as u32);
            scratch.pop(); // The newline: the octet count delimits.
            let _ = write!(out, "{} ", scratch.len());
            out.extend_from_slice(scratch);
        }
    }
    true
}

/// The frame's bytes, with LF, CR and NUL treated as `line_breaks` says.
fn write_raw(out: &mut Vec<u8>, frame: &[u8], line_breaks: LineBreaks) {
    if line_breaks == LineBreaks::Keep {
        out.extend_from_slice(frame);
        return;
    }
    let mut rest = frame;
    while let Some(at) = memchr::memchr3(b'\n', b'\r', 0, rest) {
        out.extend_from_slice(&rest[..at]);
        match (line_breaks, rest[at]) {
            (LineBreaks::Space, _) => out.push(b' '),
            (_, b'\n') => out.extend_from_slice(b"#012"),
            (_, b'\r') => out.extend_from_slice(b"#015"),
            _ => out.extend_from_slice(b"#000"),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::framing::FrameFlags;
    use ingest::record::{encode, EventHeader};

    /// The WAL record of `frame`, as a shard stores it.
    fn record_of(frame: &[u8]) -> Vec<u8> {
        let mut rec = Vec::new();
        let header = EventHeader {
            received_at_us: 0,
            source_ip: None,
            frame_flags: FrameFlags::default(),
        };
        encode(&mut rec, &header, &ingest::parse(frame, 0), frame);
        rec
    }

    /// Encodes `rec` as `how` says.
    fn encoded(rec: &[u8], how: RecordEncoding) -> Vec<u8> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert!(encode_record(rec, 0, how, &mut out, &mut scratch));
        out
    }

    #[test]
    fn framings() {
        let frame = b"<13>1 - h a - - - hi";
        let rec = record_of(frame);
        let run = |encoding, framing| {
            let how = RecordEncoding {
                encoding,
                framing,
                line_breaks: LineBreaks::Escape,
            };
            String::from_utf8(encoded(&rec, how)).unwrap()
        };
        assert_eq!(
            run(Encoding::Raw, Some(TcpFraming::OctetCounting)),
            "20 <13>1 - h a - - - hi"
        );
        assert_eq!(run(Encoding::Raw, None), "<13>1 - h a - - - hi\n");
        let json = run(Encoding::Json, Some(TcpFraming::OctetCounting));
        let (len, body) = json.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), body.len());
        let how = RecordEncoding {
            encoding: Encoding::Raw,
            framing: None,
            line_breaks: LineBreaks::Escape,
        };
        assert!(!encode_record(
            b"junk",
            0,
            how,
            &mut Vec::new(),
            &mut Vec::new()
        ));
    }

    /// A frame with line breaks inside (octet-counted, or a datagram) never forges lines.
    #[test]
    fn raw_line_breaks_are_escaped_replaced_or_kept() {
        let frame = b"<13>1 - h a - - - hi\n<0>forged line\r\x00end";
        let rec = record_of(frame);
        let run = |line_breaks, framing| {
            let how = RecordEncoding {
                encoding: Encoding::Raw,
                framing,
                line_breaks,
            };
            encoded(&rec, how)
        };
        assert_eq!(
            run(LineBreaks::Escape, None),
            b"<13>1 - h a - - - hi#012<0>forged line#015#000end\n"
        );
        assert_eq!(
            run(LineBreaks::Space, Some(TcpFraming::Newline)),
            b"<13>1 - h a - - - hi <0>forged line  end\n"
        );
        let counted = run(LineBreaks::Escape, Some(TcpFraming::OctetCounting));
        assert_eq!(
            counted,
            b"49 <13>1 - h a - - - hi#012<0>forged line#015#000end"
        );
        let kept = run(LineBreaks::Keep, Some(TcpFraming::OctetCounting));
        assert_eq!(&kept[..3], b"40 ");
        assert_eq!(&kept[3..], frame);
    }
}
