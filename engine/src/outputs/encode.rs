//! Turning WAL records into bytes for a destination (no allocation per event).

use std::io::Write as _;

use ingest::json;
use ingest::EventView;

use crate::config::{Encoding, TcpFraming};

/// Appends the encoding of one WAL record to `out`. `framing` is set for stream sinks (how
/// frames are delimited), `None` for files (one line per event). Returns false, appending
/// nothing, when the record is not a valid event.
pub fn encode_record(
    payload: &[u8],
    shard: usize,
    encoding: Encoding,
    framing: Option<TcpFraming>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let Ok(event) = EventView::decode(payload) else {
        return false;
    };
    match (encoding, framing) {
        (Encoding::Json, None | Some(TcpFraming::Newline)) => {
            json::write_event(out, &event, shard as u32);
        }
        (Encoding::Raw, None | Some(TcpFraming::Newline)) => {
            out.extend_from_slice(event.frame);
            out.push(b'\n');
        }
        (Encoding::Raw, Some(TcpFraming::OctetCounting)) => {
            let _ = write!(out, "{} ", event.frame.len());
            out.extend_from_slice(event.frame);
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

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::framing::FrameFlags;
    use ingest::record::{encode, EventHeader};

    #[test]
    fn framings() {
        let frame = b"<13>1 - h a - - - hi";
        let mut rec = Vec::new();
        let header = EventHeader {
            received_at_us: 0,
            source_ip: None,
            frame_flags: FrameFlags::default(),
        };
        encode(&mut rec, &header, &ingest::parse(frame, 0), frame);
        let run = |enc, framing| {
            let (mut out, mut scratch) = (Vec::new(), Vec::new());
            assert!(encode_record(&rec, 0, enc, framing, &mut out, &mut scratch));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            run(Encoding::Raw, Some(TcpFraming::OctetCounting)),
            "20 <13>1 - h a - - - hi"
        );
        assert_eq!(run(Encoding::Raw, None), "<13>1 - h a - - - hi\n");
        let json = run(Encoding::Json, Some(TcpFraming::OctetCounting));
        let (len, body) = json.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), body.len());
        assert!(!encode_record(
            b"junk",
            0,
            Encoding::Raw,
            None,
            &mut Vec::new(),
            &mut Vec::new()
        ));
    }
}
