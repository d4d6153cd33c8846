//! Bytes from disk: record frames, footers, whole segments, torn-tail classification.
//! Never a panic, never an endless loop, and a record is only accepted with its checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::frame::{decode, Decoded};
use storage::segment::{scan_bytes, segment_header, Footer};

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
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
    // As found, and behind a valid header (so the fuzzer reaches records and footers).
    let mut with_header = segment_header(1, 1).to_vec();
    with_header.extend_from_slice(data);
    for bytes in [data, &with_header[..]] {
        let scan = scan_bytes(bytes, 1);
        assert!(scan.valid_end <= bytes.len() as u64);
        if scan.footer.is_some() {
            assert_eq!(scan.damage, None);
        }
        if scan.valid_end >= 32 {
            let _ = storage::recovery::is_torn_tail(&bytes[scan.valid_end as usize..]);
        }
    }
});
