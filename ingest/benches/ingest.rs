//! ns/event for the per-event ingest work: framing a stream, parsing a frame, encoding the
//! WAL record. `cargo bench -p ingest` (numbers in docs/benchmarks.md).

use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ingest::record::{encode, encoded_len};
use ingest::{parse, EventHeader, FrameFlags, Framer};

const EVENTS: usize = 10_000;
const RFC5424: &str = "<165>1 2026-11-23T10:00:00.123456Z web-01.example.com nginx 4321 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\"] GET /index.html 200 1043 seq=";
const RFC3164: &str = "<34>Nov 23 10:00:00 web-01 sshd[4321]: Accepted publickey for deploy from 10.1.2.3 port 52144 ssh2: RSA SHA256:abcdefghijklmnop seq=";

/// About 200-byte lines, as the benchmarks' load uses.
fn line(prefix: &str, seq: usize) -> String {
    let mut l = format!("{prefix}{seq:08} ");
    while l.len() < 200 {
        l.push('x');
    }
    l
}

fn stream(octet_counted: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for seq in 0..EVENTS {
        let l = line(RFC5424, seq);
        if octet_counted {
            out.extend_from_slice(format!("{} {l}", l.len()).as_bytes());
        } else {
            out.extend_from_slice(l.as_bytes());
            out.push(b'\n');
        }
    }
    out
}

fn framing(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for (name, octet) in [("newline", false), ("octet_counting", true)] {
        let data = stream(octet);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut framer = Framer::new(64 << 10);
                let mut n = 0usize;
                framer.feed(&data, |f| n += f.bytes.len());
                n
            })
        });
    }
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for (name, prefix) in [("rfc5424", RFC5424), ("rfc3164", RFC3164)] {
        let lines: Vec<String> = (0..EVENTS).map(|s| line(prefix, s)).collect();
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0usize;
                for l in &lines {
                    n += parse(l.as_bytes(), 1_795_435_200).message.len as usize;
                }
                n
            })
        });
    }
    g.finish();
}

fn parse_and_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_and_encode_record");
    g.throughput(Throughput::Elements(EVENTS as u64));
    let lines: Vec<String> = (0..EVENTS).map(|s| line(RFC5424, s)).collect();
    let header = EventHeader {
        received_at_us: 1_795_435_200_000_000,
        source_ip: Some(IpAddr::from([10, 1, 2, 3])),
        frame_flags: FrameFlags::default(),
    };
    g.bench_function("rfc5424", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(EVENTS * 400),
            |out: &mut Vec<u8>| {
                for l in &lines {
                    let frame = l.as_bytes();
                    let parsed = parse(frame, 1_795_435_200);
                    out.reserve(encoded_len(&header, &parsed, frame.len()));
                    encode(out, &header, &parsed, frame);
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, framing, parsing, parse_and_encode);
criterion_main!(benches);
