//! ns per event for the built-in redaction (`cargo bench -p pipeline`): a 200-byte message with
//! nothing to redact (issue 13's target: ≤ 150 ns with every built-in), and one with a card
//! number, an e-mail address and a password.

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline::redact::{Builtin, Redactor, DEFAULT_REPLACEMENT};

const CLEAN: &[u8] = b"Accepted publickey for deploy from web-frontend port fifty two ssh2: RSA SHA256 fingerprint abcdefghijklmnopqrstuvwxyz session opened for user deploy by systemd as requested by the operator ok";
const DIRTY: &[u8] = b"payment from alice@example.com card 4111 1111 1111 1111 declined; retry with password=hunter2 from 192.0.2.10 at 12:00:01 via Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x done";

fn redaction(c: &mut Criterion) {
    assert!(CLEAN.len() >= 190 && CLEAN.len() <= 210, "{}", CLEAN.len());
    let mut g = c.benchmark_group("redact");
    let mut redactor = Redactor::new(&Builtin::ALL, Vec::new(), DEFAULT_REPLACEMENT);
    let mut out = Vec::with_capacity(512);
    g.bench_function("all_builtins_nothing_to_redact_200b", |b| {
        b.iter(|| redactor.redact(std::hint::black_box(CLEAN), &mut out))
    });
    g.bench_function("all_builtins_five_matches", |b| {
        b.iter(|| redactor.redact(std::hint::black_box(DIRTY), &mut out))
    });
    g.finish();
}

criterion_group!(benches, redaction);
criterion_main!(benches);
