//! Bytes from the network through the pipeline's byte parsers: key=value and access-line
//! parsing and every built-in redaction must never panic, ranges stay inside the input, and
//! redaction keeps every byte outside its replacements; condition text (from configs and the API) must compile or
//! fail with a column inside it. The transforms that parse bytes (JSON, grok, auto, time
//! conversion) run on the bytes as a message, and whatever fields they add must be written as
//! valid JSON (the routed record's fields area) and read back by a JSON parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::parse::kv::{self, KvOptions};
use pipeline::redact::{Builtin, Redactor};
use pipeline::transforms::{Input, OnError, ParseAuto, ParseGrok, ParseJson, Remap, RemapOp, Conversion};
use pipeline::{Context, Event, Transform};

const CTX: Context<'static> = Context { now_ns: 0, shard: 0, host: "h", source: "s" };

thread_local! {
    /// Built once (grok patterns compile in milliseconds).
    static STEPS: std::cell::RefCell<Vec<Box<dyn Transform>>> = std::cell::RefCell::new(steps());
}

fn steps() -> Vec<Box<dyn Transform>> {
    let grok = pipeline::parse::grok::compile(
        &["%{SYSLOGBASE} %{GREEDYDATA:msg}".to_string(), "%{COMBINEDAPACHELOG}".to_string(), "%{IP:ip} %{NUMBER:n:float} %{INT:i:int}".to_string()],
        &Default::default(),
    )
    .expect("bundled patterns compile");
    vec![
        Box::new(ParseJson::new("j", Input::Message, None, OnError::Keep)),
        Box::new(ParseAuto::new("a", Input::Message, Some("auto"), OnError::Keep)),
        Box::new(ParseGrok::new("g", Input::Message, Some("grok"), grok, OnError::Keep)),
        Box::new(Remap::new("r", vec![RemapOp::Convert("t".into(), Conversion::Timestamp("%Y-%m-%dT%H:%M:%S%z".into()))])),
    ]
}

/// Runs the byte-parsing transforms on `data` as a message; their fields must be valid JSON.
fn transforms(data: &[u8]) {
    let mut frame = b"<13>1 - h app - - - ".to_vec();
    frame.extend_from_slice(data);
    let parsed = ingest::parse(&frame, 0);
    let mut event = Event::default();
    event.load(&frame, &parsed, None);
    event.fields.set(b"t", pipeline::NewValue::Str(data));
    STEPS.with(|steps| {
        for step in steps.borrow_mut().iter_mut() {
            step.process(&mut event, &CTX);
        }
    });
    let mut json = b"{".to_vec();
    event.fields.write_json_members(&mut json);
    json.push(b'}');
    assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok(), "{}", String::from_utf8_lossy(&json));
    let _ = pipeline::transforms::parse_time(data, b"%d/%b/%Y:%H:%M:%S %z");
}

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
    transforms(data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = pipeline::condition::Condition::compile(text) {
            assert!(e.column >= 1 && e.column <= text.len() + 1);
        }
    }
});
