//! ns/event for the WAL's part of ingest: appending one ~290-byte event record (a 200-byte line
//! plus the event header) into the shard's group-commit buffer, CRC32C included. The write
//! and fdatasync are per batch (group commit), measured by the load benchmarks instead.
//! `cargo bench -p storage`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use storage::{FsyncPolicy, WalAppender};

const EVENTS: usize = 10_000;
const RECORD: usize = 292;

fn append(c: &mut Criterion) {
    let payload: Vec<u8> = (0..RECORD).map(|i| b'a' + (i % 26) as u8).collect();
    let mut g = c.benchmark_group("wal_append");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("292B_record", |b| {
        b.iter_batched(
            // A fresh buffer per batch, as the flusher leaves one after each take.
            || WalAppender::new(EVENTS * (RECORD + 8), FsyncPolicy::Never),
            |appender| {
                for _ in 0..EVENTS {
                    let _ = appender.try_append(RECORD, |buf| buf.extend_from_slice(&payload));
                }
                appender
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// What sealing a segment costs per record at commit time: the footer's checksum as written
/// before (`SLFOOTR1`: CRC32C over every byte of the commit, a second pass over memory the
/// shard wrote a while ago) and now (`SLFOOTR2`: the records' own checksums chained).
fn segment_checksum(c: &mut Criterion) {
    let payload: Vec<u8> = (0..RECORD).map(|i| b'a' + (i % 26) as u8).collect();
    let mut commit = Vec::new();
    for _ in 0..EVENTS {
        storage::frame::append_record_salted(&mut commit, &payload, 7);
    }
    let checksums: Vec<u32> = (0..EVENTS as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    let mut g = c.benchmark_group("segment_checksum");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("bytes_crc32c", |b| {
        b.iter(|| crc32c::crc32c_append(1, std::hint::black_box(&commit)))
    });
    g.bench_function("records_chained", |b| {
        b.iter(|| {
            std::hint::black_box(&checksums)
                .iter()
                .fold(1, |acc, &crc| storage::segment::chain_record(acc, crc))
        })
    });
    g.finish();
}

criterion_group!(benches, append, segment_checksum);
criterion_main!(benches);
