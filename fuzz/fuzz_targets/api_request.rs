//! The admin API's request heads (what a local user can send to it): any bytes give a
//! request, "need more", or an error status, never a panic; a parsed head never claims more
//! bytes than it was given, and a body never exceeds the limit. The same bytes as the HTTP
//! source's request bodies (JSON events, syslog lines, compressed): events or a refusal
//! with a line, never a panic, never more than the limit decompressed.
#![no_main]

use engine::admin::server::{parse_request_head, ServerLimits};
use engine::sources::http::{decode_events, decode_syslog, decompress, BodyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = ServerLimits::default();
    match parse_request_head(data, &limits) {
        Ok(Some((head_len, request, body_len))) => {
            assert!(head_len <= data.len());
            assert!(body_len <= limits.max_body_bytes);
            assert!(!request.path.contains('?'));
        }
        Ok(None) => {}
        Err((status, why)) => {
            assert!((400..600).contains(&status));
            assert!(!why.is_empty());
        }
    }
    let lines = decode_syslog(data, 64);
    assert!(lines.iter().all(|(l, _)| l.len() <= 64 && !l.is_empty()));
    if let Err(BodyError::Malformed { line, .. }) = decode_events(data) {
        assert!(line >= 1 && line <= 1 + data.iter().filter(|&&b| b == b'\n').count());
    }
    for encoding in ["gzip", "zstd"] {
        if let Ok(plain) = decompress(Some(encoding), data, 1 << 16) {
            assert!(plain.len() <= 1 << 16);
        }
    }
});
