//! The admin API's request heads (what a local user can send to it): any bytes give a
//! request, "need more", or an error status, never a panic; a parsed head never claims more
//! bytes than it was given, and a body never exceeds the limit.
#![no_main]

use engine::admin::server::{parse_request_head, ServerLimits};
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
});
