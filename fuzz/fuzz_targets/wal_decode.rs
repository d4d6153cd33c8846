//! Bytes from disk: record frames (unsalted and salted), footers, compressed commit blocks,
//! whole segments of both formats, torn-tail classification. Never a panic, never an endless loop, and a record is
//! only accepted with its checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::block::{each_record, BlockCompressor, BlockReader};
use storage::frame::{decode, decode_salted, salt, Decoded};
use storage::segment::{scan_bytes, segment_header, segment_header_v2, Footer};

fuzz_target!(|data: &[u8]| {
    let mut blocks = BlockReader::default();
    for mask in [0, salt(1)] {
        let mut at = 0;
        while at < data.len() {
            let decoded = if mask == 0 {
                decode(&data[at..])
            } else {
                decode_salted(&data[at..], mask)
            };
            match decoded {
                Decoded::Record { frame_len, .. } => {
                    assert!(frame_len > 8);
                    at += frame_len;
                }
                Decoded::Footer { payload, .. } => {
                    let _ = Footer::decode(payload);
                    break;
                }
                Decoded::Block { payload, frame_len } => {
                    if let Ok(opened) = blocks.open(payload, mask) {
                        let delivered = each_record(opened.frames, |p| assert!(!p.is_empty()));
                        assert_eq!(delivered, opened.records);
                    }
                    at += frame_len;
                }
                _ => break,
            }
        }
    }
    // The bytes as a block's payload, and as the records inside a block the writer made: a
    // block reads back only when it holds whole, checksummed records, and then exactly them.
    let _ = blocks.open(data, salt(1));
    if let Some(block) = BlockCompressor::new(1)
        .ok()
        .and_then(|mut c| c.block_of(data, salt(1)))
    {
        let valid = storage::block::check_records(data, salt(1)).is_ok();
        match decode_salted(&block, salt(1)) {
            Decoded::Block { payload, .. } => match blocks.open(payload, salt(1)) {
                Ok(opened) => assert!(valid && opened.frames == data),
                Err(_) => assert!(!valid),
            },
            other => panic!("a written block decodes as {other:?}"),
        }
    }
    // As found, and behind a valid header of each format (so the fuzzer reaches records and
    // footers).
    let mut v3 = segment_header(1, 1).to_vec();
    v3.extend_from_slice(data);
    let mut v2 = segment_header_v2(1, 1).to_vec();
    v2.extend_from_slice(data);
    for bytes in [data, &v3[..], &v2[..]] {
        let scan = scan_bytes(bytes, 1);
        assert!(scan.valid_end <= bytes.len() as u64);
        assert!(scan.end() <= bytes.len() as u64);
        if scan.footer.is_some() {
            assert_eq!(scan.damage, None);
        }
        if scan.valid_end >= 32 {
            let _ = scan.tail_is_torn(bytes);
        }
    }
});
