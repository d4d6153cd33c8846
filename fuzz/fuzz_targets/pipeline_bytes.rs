//! Bytes from the network through the pipeline's byte parsers: key=value and access-line
//! parsing and every built-in redaction must never panic, ranges stay inside the input, and
//! redaction keeps every byte outside its replacements; condition text (from configs and the API) must compile or
//! fail with a column inside it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::parse::kv::{self, KvOptions};
use pipeline::redact::{Builtin, Redactor};

fuzz_target!(|data: &[u8]| {
    let mut pairs = Vec::new();
    kv::parse(data, &KvOptions::default(), &mut pairs);
    for p in &pairs {
        assert!(p.key.start < p.key.end && p.key.end <= data.len());
        assert!(p.value.start <= p.value.end && p.value.end <= data.len());
    }
    if let Some(access) = pipeline::parse::access::parse(data) {
        assert!(access.client.end <= data.len() && access.request.end <= data.len());
    }
    let mut redactor = Redactor::new(&Builtin::ALL, Vec::new(), "\u{1}");
    let mut out = Vec::new();
    if redactor.redact(data, &mut out) {
        // Removing the replacement marks leaves a subsequence of the input, in order.
        let kept: Vec<u8> = out.iter().copied().filter(|&b| b != 1).collect();
        let mut rest = data.iter();
        assert!(kept.iter().all(|b| rest.any(|d| d == b)));
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = pipeline::condition::Condition::compile(text) {
            assert!(e.column >= 1 && e.column <= text.len() + 1);
        }
    }
});
