//! A shard directory holding arbitrary bytes as segment 1 (plain, behind a valid header or not)
//! and as compressed segment 2: the reader and the compressed-segment decoder never panic or
//! loop, and every record they deliver carries a valid checksum.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::segment::{compressed_path, segment_header, segment_path};

fuzz_target!(|data: &[u8]| {
    // A RAM file system where there is one: the disk's journal made every input cost ms.
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = base.join(format!("sluice-fuzz-read-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (flag, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut plain = Vec::new();
    if flag & 1 == 1 {
        plain.extend_from_slice(&segment_header(1, 1));
    }
    plain.extend_from_slice(rest);
    std::fs::write(segment_path(&dir, 1), &plain).unwrap();
    std::fs::write(compressed_path(&dir, 2), rest).unwrap();
    let mut records = 0u64;
    let read = storage::read_on_disk(&dir, None, |_, payload| {
        assert!(!payload.is_empty());
        records += 1;
    });
    if let Ok(n) = read {
        assert_eq!(n, records);
    }
    let _ = storage::compress::decompress_file(&compressed_path(&dir, 2));
    let _ = std::fs::remove_dir_all(&dir);
});
