//! Bytes from disk: record frames (unsalted and salted), footers, whole segments of both
//! formats, torn-tail classification. Never a panic, never an endless loop, and a record is
//! only accepted with its checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::frame::{decode, decode_salted, salt, Decoded};
use storage::segment::{scan_bytes, segment_header, segment_header_v2, Footer};

fuzz_target!(|data: &[u8]| {
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
                _ => break,
            }
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
