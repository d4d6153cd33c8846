//! Bytes from the network: RELP frame headers, framing (both modes, any split), parsing, the event record round
//! trip and JSON encoding must never panic, under every parser mode and option, every span must
//! stay inside its frame, and the message must run to the frame's end.
#![no_main]

use ingest::framing::Framer;
use ingest::record::{encode, EventHeader, EventView};
use ingest::{ParserMode, ParserOptions};
use libfuzzer_sys::fuzz_target;

/// Every parser mode and vendor option, chosen by the knob's bits.
fn options(knob: u8) -> ParserOptions {
    let bit = |i: u8| knob & (1 << i) != 0;
    ParserOptions {
        mode: [ParserMode::Auto, ParserMode::Rfc5424, ParserMode::Rfc3164, ParserMode::Raw]
            [usize::from(knob >> 6)],
        permit_square_brackets_in_hostname: bit(0),
        permit_slashes_in_hostname: bit(1),
        permit_at_signs_in_hostname: bit(2),
        force_tag_ending_by_colon: bit(3),
        remove_msg_first_space: bit(4),
    }
}

fuzz_target!(|data: &[u8]| {
    let (&knob, data) = match data.split_first() {
        Some(x) => x,
        None => return,
    };
    let max_frame = 1 + usize::from(knob) * 4;
    let cut = usize::from(knob) % (data.len() + 1);
    let mut framer = Framer::new(max_frame);
    let mut frames = Vec::new();
    let mut carry = data[..cut].to_vec();
    let used = framer.feed(&carry, |f| frames.push((f.bytes.to_vec(), f.flags)));
    carry.drain(..used);
    carry.extend_from_slice(&data[cut..]);
    let used = framer.feed(&carry, |f| frames.push((f.bytes.to_vec(), f.flags)));
    framer.finish(&carry[used..], |f| frames.push((f.bytes.to_vec(), f.flags)));
    let mut record = Vec::new();
    let mut json = Vec::new();
    for (frame, flags) in frames {
        assert!(frame.len() <= max_frame);
        let parsed = ingest::parse_with(&frame, &ingest::Now::at(1_795_420_800), &options(knob));
        // The message always runs to the end of the frame: parsing never drops a byte.
        assert_eq!((parsed.message.start + parsed.message.len) as usize, frame.len());
        record.clear();
        let header = EventHeader { received_at_us: 0, source_ip: None, frame_flags: flags };
        encode(&mut record, &header, &parsed, &frame);
        let view = EventView::decode(&record).expect("own records decode");
        assert_eq!(view.frame, &frame[..]);
        json.clear();
        ingest::json::write_event(&mut json, &view, 0);
        assert!(std::str::from_utf8(&json).is_ok());
    }
    // Arbitrary bytes as a stored record: decode may refuse, never panic.
    if let Ok(view) = EventView::decode(data) {
        json.clear();
        ingest::json::write_event(&mut json, &view, 0);
    }
    // The same bytes as a RELP session: headers stay inside what was read.
    let mut at = 0;
    while let ingest::relp::Scan::Header(h) = ingest::relp::scan(&data[at..]) {
        assert!(h.header_len <= data.len() - at);
        assert!(h.command.len() <= 32 && !h.command.is_empty());
        at += h.frame_len().min(data.len() - at);
        if at == data.len() {
            break;
        }
    }
    let _ = ingest::relp::offers_syslog(data);
});
