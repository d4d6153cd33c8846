//! Counters. Each shard and each output owns its own set (single writer, relaxed atomics,
//! updated once per read batch rather than per event); readers sum them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// One shard's counters. Names follow the Prometheus contract of the operations issue.
#[derive(Debug)]
pub struct ShardCounters {
    pub events_received: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Events kept as `raw` because they fit neither RFC.
    pub parse_errors: AtomicU64,
    pub frames_oversize: AtomicU64,
    /// Octet counts that could not be trusted (fell back to line framing).
    pub frames_bad_length: AtomicU64,
    /// Octet-counted frames cut off by a disconnect (their bytes are not an event).
    pub frames_incomplete: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_active: AtomicI64,
    pub connections_rejected: AtomicU64,
    /// Accepted here, served by a less loaded shard (accept-time balancing).
    pub connections_handed_off: AtomicU64,
    pub udp_datagrams: AtomicU64,
    /// Events read from a socket that the WAL could not take: it was blocked on a disk error
    /// while the shard was stopping, or had already failed.
    pub events_dropped_wal: AtomicU64,
    /// UDP datagrams read and dropped while the WAL was blocked (disk full, budget, I/O
    /// error): UDP has no backpressure, so they are counted here rather than lost unseen.
    pub udp_dropped_blocked: AtomicU64,
    pub events_durable: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_fsyncs: AtomicU64,
    /// Events whose WAL write or fdatasync failed (never durable).
    pub wal_lost_records: AtomicU64,
    /// WAL write/fdatasync failures (each blocked ingest until a new segment was started).
    pub wal_io_failures: AtomicU64,
    /// Times the disk budget blocked this shard's ingest.
    pub wal_budget_blocks: AtomicU64,
    /// fdatasync latency.
    pub wal_fsync: SharedHistogram,
    /// Socket read → durable in the WAL, per event.
    pub ingest_durable: SharedHistogram,
}

impl Default for ShardCounters {
    fn default() -> Self {
        ShardCounters {
            events_received: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            parse_errors: AtomicU64::new(0),
            frames_oversize: AtomicU64::new(0),
            frames_bad_length: AtomicU64::new(0),
            frames_incomplete: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_active: AtomicI64::new(0),
            connections_rejected: AtomicU64::new(0),
            connections_handed_off: AtomicU64::new(0),
            udp_datagrams: AtomicU64::new(0),
            events_dropped_wal: AtomicU64::new(0),
            udp_dropped_blocked: AtomicU64::new(0),
            events_durable: AtomicU64::new(0),
            wal_bytes: AtomicU64::new(0),
            wal_fsyncs: AtomicU64::new(0),
            wal_lost_records: AtomicU64::new(0),
            wal_io_failures: AtomicU64::new(0),
            wal_budget_blocks: AtomicU64::new(0),
            wal_fsync: SharedHistogram::new(storage::latency::FSYNC_BUCKETS_SECONDS),
            ingest_durable: SharedHistogram::new(storage::latency::DURABLE_BUCKETS_SECONDS),
        }
    }
}

/// A shard's latency histogram, copied for the admin thread (relaxed atomics).
#[derive(Debug)]
pub struct SharedHistogram {
    pub bounds_seconds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl SharedHistogram {
    pub fn new(bounds_seconds: &'static [f64]) -> Self {
        SharedHistogram {
            bounds_seconds,
            counts: (0..=bounds_seconds.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn publish(&self, from: &storage::latency::LatencyHistogram) {
        for (to, count) in self.counts.iter().zip(from.counts()) {
            to.store(count, Relaxed);
        }
        self.sum_nanos.store(from.sum_nanos(), Relaxed);
    }

    /// Counts per bucket (not cumulative; the last: slower than every bound).
    pub fn counts(&self) -> Vec<u64> {
        self.counts.iter().map(|c| c.load(Relaxed)).collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Relaxed) as f64 / 1e9
    }
}

/// One source's counters, one set per shard (each written only by its shard's thread).
#[derive(Debug)]
pub struct SourceCounters {
    pub per_shard: Vec<SourceShardCounters>,
}

#[derive(Debug, Default)]
pub struct SourceShardCounters {
    pub events_received: AtomicU64,
    pub bytes_received: AtomicU64,
    pub parse_errors: AtomicU64,
    pub frames_oversize: AtomicU64,
    pub connections_active: AtomicI64,
    pub connections_rejected: AtomicU64,
}

impl SourceCounters {
    pub fn new(shards: usize) -> Self {
        SourceCounters {
            per_shard: (0..shards)
                .map(|_| SourceShardCounters::default())
                .collect(),
        }
    }

    /// Shard `shard`'s set (a spare set if the index is out of range, never a panic).
    pub fn shard(&self, shard: usize) -> Option<&SourceShardCounters> {
        self.per_shard.get(shard)
    }
}

impl SourceShardCounters {
    pub fn add(&self, t: &BatchTally) {
        for (c, v) in [
            (&self.events_received, t.events),
            (&self.bytes_received, t.bytes),
            (&self.parse_errors, t.parse_errors),
            (&self.frames_oversize, t.oversize),
        ] {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        }
    }
}

/// Per-read-batch tallies, added to the shard's counters in one go.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchTally {
    pub events: u64,
    pub bytes: u64,
    pub parse_errors: u64,
    pub oversize: u64,
    pub bad_length: u64,
    pub dropped_wal: u64,
}

impl ShardCounters {
    pub fn add(&self, t: &BatchTally) {
        let add = |c: &AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Relaxed);
            }
        };
        add(&self.events_received, t.events);
        add(&self.bytes_received, t.bytes);
        add(&self.parse_errors, t.parse_errors);
        add(&self.frames_oversize, t.oversize);
        add(&self.frames_bad_length, t.bad_length);
        add(&self.events_dropped_wal, t.dropped_wal);
    }
}

#[derive(Debug, Default)]
pub struct OutputCounters {
    pub events_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub errors: AtomicU64,
    /// WAL records that did not decode as events (never delivered, counted).
    pub undecodable: AtomicU64,
    /// Damaged places in the WAL this output skipped (each logged with segment and offset).
    pub wal_damaged_skips: AtomicU64,
    /// Records a sealed segment's footer says were there but damage made unreadable.
    pub wal_damaged_records: AtomicU64,
    /// Per shard: the record id after the last persisted cursor (0: unknown).
    pub cursor_next_ids: Vec<AtomicU64>,
}

impl OutputCounters {
    pub fn new(shards: usize) -> Self {
        OutputCounters {
            cursor_next_ids: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            ..OutputCounters::default()
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "events_sent={} bytes_sent={} errors={} undecodable={} wal_damaged_skips={} wal_damaged_records={}",
            self.events_sent.load(Relaxed),
            self.bytes_sent.load(Relaxed),
            self.errors.load(Relaxed),
            self.undecodable.load(Relaxed),
            self.wal_damaged_skips.load(Relaxed),
            self.wal_damaged_records.load(Relaxed),
        )
    }
}

/// A plain snapshot for logs and tests.
pub fn shard_summary(
    shards: &[std::sync::Arc<ShardCounters>],
    budget: &storage::DiskBudget,
) -> String {
    let sum = |f: fn(&ShardCounters) -> u64| shards.iter().map(|s| f(s)).sum::<u64>();
    format!(
        "events_received={} events_durable={} bytes_received={} parse_errors={} frames_oversize={} \
         frames_bad_length={} frames_incomplete={} connections_accepted={} connections_rejected={} \
         udp_datagrams={} events_dropped_wal={} wal_bytes={} wal_fsyncs={} wal_lost_records={} \
         wal_io_failures={} udp_dropped_blocked={} wal_budget_blocks={} wal_dropped_segments={} \
         wal_dropped_records={} wal_disk_bytes={}",
        sum(|s| s.events_received.load(Relaxed)),
        sum(|s| s.events_durable.load(Relaxed)),
        sum(|s| s.bytes_received.load(Relaxed)),
        sum(|s| s.parse_errors.load(Relaxed)),
        sum(|s| s.frames_oversize.load(Relaxed)),
        sum(|s| s.frames_bad_length.load(Relaxed)),
        sum(|s| s.frames_incomplete.load(Relaxed)),
        sum(|s| s.connections_accepted.load(Relaxed)),
        sum(|s| s.connections_rejected.load(Relaxed)),
        sum(|s| s.udp_datagrams.load(Relaxed)),
        sum(|s| s.events_dropped_wal.load(Relaxed)),
        sum(|s| s.wal_bytes.load(Relaxed)),
        sum(|s| s.wal_fsyncs.load(Relaxed)),
        sum(|s| s.wal_lost_records.load(Relaxed)),
        sum(|s| s.wal_io_failures.load(Relaxed)),
        sum(|s| s.udp_dropped_blocked.load(Relaxed)),
        sum(|s| s.wal_budget_blocks.load(Relaxed)),
        budget.dropped_segments.load(Relaxed),
        budget.dropped_records.load(Relaxed),
        budget.used(),
    )
}
