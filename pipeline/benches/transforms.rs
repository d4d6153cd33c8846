//! ns per event for the transforms as the shard runs them (`cargo bench -p pipeline --bench
//! transforms`): each transform on a loaded event, the JSON writing of the fields, and the
//! typical chain (severity filter + every built-in redaction + JSON parse of the message) through
//! a plan, event load and record-side JSON of the fields included.

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline::condition::Condition;
use pipeline::plan::Plan;
use pipeline::redact::Builtin;
use pipeline::topology::{SinkNode, Topology, TransformNode};
use pipeline::transforms::{
    AccessFormat, Filter, Input, OnError, ParseAccess, ParseGrok, ParseJson, Redact, Remap,
    RemapOp, RemapValue,
};
use pipeline::{Context, Event, Transform};

const JSON: &[u8] = br#"<134>1 2026-11-30T10:00:00.123Z web-01.example.net api 4242 - - {"http":{"method":"GET","path":"/api/v1/items","status":200,"took_ms":4.2},"user":"u-1234","trace":"4bf92f3577b34da6a3ce929d0e0e4736","tags":["a","b"]}"#;
const PLAIN: &[u8] = b"<134>1 2026-11-30T10:00:00.123Z web-01.example.net nginx 4242 ACCESS - GET /api/v1/items?page=3 HTTP/1.1 200 1532 0.004 Mozilla/5.0 (X11; Linux x86_64) upstream=backend-7 cache=MISS";
const COMBINED: &[u8] = br#"<134>1 2026-11-30T10:00:00Z web1 httpd - - - 203.0.113.9 - - [03/Mar/2024:03:03:03 +0000] "GET /index.html?page=2 HTTP/1.1" 200 612 "https://example.com/start" "Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0""#;

const CTX: Context<'static> = Context {
    now_ns: 0,
    shard: 0,
    host: "box",
    source: "tcp",
};

fn loaded(frame: &[u8]) -> Event {
    let mut e = Event::default();
    e.load(
        frame,
        &ingest::parse(frame, 0),
        Some("10.0.0.1".parse().unwrap()),
    );
    e
}

/// Runs `t` on a fresh copy of `frame`'s event each iteration (the copy is part of the cost,
/// as on the shard where a changing transform may copy its parent's version).
fn bench_one(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    frame: &[u8],
    mut t: impl Transform,
) {
    let source = loaded(frame);
    let mut event = Event::default();
    g.bench_function(name, |b| {
        b.iter(|| {
            event.copy_from(&source);
            t.process(std::hint::black_box(&mut event), &CTX)
        })
    });
}

fn transforms(c: &mut Criterion) {
    let mut g = c.benchmark_group("transforms");
    bench_one(
        &mut g,
        "filter_severity",
        PLAIN,
        Filter {
            condition: Condition::compile("severity >= warning").unwrap(),
        },
    );
    bench_one(
        &mut g,
        "redact_all_builtins_nothing_found",
        PLAIN,
        Redact::new(&Builtin::ALL, vec![], "[REDACTED]", &["message".into()]),
    );
    bench_one(
        &mut g,
        "parse_json_nested_200b",
        JSON,
        ParseJson::new("j", Input::Message, None, OnError::Keep),
    );
    bench_one(
        &mut g,
        "parse_apache_combined",
        COMBINED,
        ParseAccess::new("a", Input::Message, None, AccessFormat::Any, OnError::Keep),
    );
    let grok =
        pipeline::parse::grok::compile(&["%{COMBINEDAPACHELOG}".to_string()], &Default::default())
            .unwrap();
    bench_one(
        &mut g,
        "parse_grok_combinedapachelog",
        COMBINED,
        ParseGrok::new("g", Input::Message, None, grok, OnError::Keep),
    );
    let ops = vec![
        RemapOp::Add("env".into(), RemapValue::Str("prod".into())),
        RemapOp::Add("meta.shard".into(), RemapValue::Shard),
        RemapOp::Rename("user".into(), "account".into()),
    ];
    bench_one(&mut g, "remap_add_add_rename", JSON, Remap::new("r", ops));
    let mut parsed = loaded(JSON);
    ParseJson::new("j", Input::Message, None, OnError::Keep).process(&mut parsed, &CTX);
    let mut out = Vec::with_capacity(1024);
    g.bench_function("fields_to_json_7_fields", |b| {
        b.iter(|| {
            out.clear();
            parsed.fields.write_json_members(&mut out);
            out.len()
        })
    });
    g.finish();
}

/// The typical chain of the issue through a plan: load, filter, redact, parse, then the JSON
/// members of the fields as the shard writes them into the record.
fn chain(c: &mut Criterion) {
    let node = |name: &str, input: &str| TransformNode {
        name: name.into(),
        inputs: vec![input.into()],
        ports: vec![],
    };
    let topology = Topology {
        sources: vec!["tcp".into()],
        transforms: vec![
            node("important", "tcp"),
            node("scrub", "important"),
            node("fields", "scrub"),
        ],
        sinks: vec![SinkNode {
            name: "out".into(),
            bit: 0,
            inputs: Some(vec!["fields".into()]),
        }],
    };
    let transforms: Vec<(String, Box<dyn Transform>)> = vec![
        (
            "important".into(),
            Box::new(Filter {
                condition: Condition::compile("severity >= warning").unwrap(),
            }),
        ),
        (
            "scrub".into(),
            Box::new(Redact::new(
                &Builtin::ALL,
                vec![],
                "[REDACTED]",
                &["message".into()],
            )),
        ),
        (
            "fields".into(),
            Box::new(ParseJson::new(
                "fields",
                Input::Message,
                None,
                OnError::Keep,
            )),
        ),
    ];
    let mut plan = Plan::new(transforms, topology.trees().unwrap(), true, 0);
    let mut warning = JSON.to_vec();
    warning.splice(1..4, b"132".iter().copied());
    let parsed = ingest::parse(&warning, 0);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("chain_filter_redact_parse_json", |b| {
        b.iter(|| {
            plan.input()
                .load(std::hint::black_box(&warning), &parsed, None);
            plan.run(0, &CTX);
            out.clear();
            plan.for_each_output(|e, _| e.fields.write_json_members(&mut out));
            assert!(!out.is_empty());
            out.len()
        })
    });
}

criterion_group!(benches, transforms, chain);
criterion_main!(benches);
