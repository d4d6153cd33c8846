//! Bytes from disk: record frames, whole segments, torn-tail classification and cursors.
//! Never a panic, never an endless loop, and a record is only accepted with its checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::frame::{decode, Decoded};
use storage::segment::scan_bytes;

fuzz_target!(|data: &[u8]| {
    let mut at = 0;
    while at < data.len() {
        match decode(&data[at..]) {
            Decoded::Record { frame_len, .. } => {
                assert!(frame_len > 8);
                at += frame_len;
            }
            _ => break,
        }
    }
    let scan = scan_bytes(data, 1);
    assert!(scan.valid_end <= data.len() as u64);
    if scan.valid_end >= 16 {
        let _ = storage::recovery::is_torn_tail(&data[scan.valid_end as usize..]);
    }
});
