//! ns per event for the pure processors other than conditions and redaction (`cargo bench -p
//! pipeline --bench processors`): key=value and access-line parsing, throttle, sample.

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline::parse::{access, kv};
use pipeline::rate::{Sample, Throttle};

const FORTIGATE: &[u8] = br#"date=2024-03-01 time=12:00:01 devname="FGT60F" devid="FGT60FTK0000000" logid="0000000013" type="traffic" subtype="forward" level="notice" vd="root" srcip=192.0.2.5 srcport=51000 dstip=198.51.100.8 dstport=443 action="close""#;
const COMBINED: &[u8] = br#"203.0.113.9 - - [03/Mar/2024:03:03:03 +0000] "GET /index.html?page=2 HTTP/1.1" 200 612 "https://example.com/start" "Mozilla/5.0 (X11; Linux x86_64) Firefox/123.0""#;

fn processors(c: &mut Criterion) {
    let mut g = c.benchmark_group("processors");
    let mut pairs = Vec::with_capacity(32);
    g.bench_function("kv_fortigate_14_pairs", |b| {
        b.iter(|| {
            pairs.clear();
            kv::parse(
                std::hint::black_box(FORTIGATE),
                &kv::KvOptions::default(),
                &mut pairs,
            )
        })
    });
    g.bench_function("access_combined", |b| {
        b.iter(|| access::parse(std::hint::black_box(COMBINED)).is_some())
    });
    let mut throttle = Throttle::new(1e9, 1_000_000, 10_000);
    let mut now = 0u64;
    g.bench_function("throttle_one_key", |b| {
        b.iter(|| {
            now += 1_000;
            throttle.allow(std::hint::black_box(b"web-01"), now)
        })
    });
    let mut sample = Sample::new(10);
    g.bench_function("sample_by_key", |b| {
        b.iter(|| sample.keep(Some(std::hint::black_box(b"web-01.example.com"))))
    });
    g.finish();
}

criterion_group!(benches, processors);
criterion_main!(benches);
