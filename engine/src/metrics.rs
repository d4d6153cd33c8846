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
    /// Inodes of this shard's UDP sockets: the kernel counts the datagrams it dropped on each
    /// (receive buffer full) in /proc/net/udp, which the metrics read.
    pub udp_socket_inodes: std::sync::Mutex<Vec<u64>>,
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
            udp_socket_inodes: std::sync::Mutex::new(Vec::new()),
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
    /// Connections Sluice closed, by reason.
    pub closed_idle_timeout: AtomicU64,
    pub closed_frame_timeout: AtomicU64,
    pub closed_memory_budget: AtomicU64,
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

/// Datagrams the kernel dropped on Sluice's UDP sockets (receive buffer full), kept monotonic
/// across sockets that close (a reload removing a UDP source): their last count stays in.
#[derive(Debug, Default)]
pub struct KernelUdpDrops {
    last: std::collections::HashMap<u64, u64>,
    closed: u64,
}

impl KernelUdpDrops {
    /// Updates from the open sockets' current counts (inode → drops); returns the total.
    pub fn update(
        &mut self,
        open: &[u64],
        drops_by_inode: &std::collections::HashMap<u64, u64>,
    ) -> u64 {
        let gone: Vec<u64> = self
            .last
            .keys()
            .filter(|inode| !open.contains(inode))
            .copied()
            .collect();
        for inode in gone {
            self.closed += self.last.remove(&inode).unwrap_or(0);
        }
        for inode in open {
            if let Some(&drops) = drops_by_inode.get(inode) {
                let seen = self.last.entry(*inode).or_insert(0);
                *seen = (*seen).max(drops);
            }
        }
        self.closed + self.last.values().sum::<u64>()
    }
}

/// `inode → drops` of every UDP socket in /proc/net/udp and /proc/net/udp6 (the last column).
pub fn kernel_udp_drops() -> std::collections::HashMap<u64, u64> {
    let mut by_inode = std::collections::HashMap::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            by_inode.extend(parse_udp_table(&text));
        }
    }
    by_inode
}

fn parse_udp_table(text: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let inode = fields.get(9)?.parse().ok()?;
        let drops = fields.last()?.parse().ok()?;
        Some((inode, drops))
    })
}

/// The inode of a socket (from /proc/self/fd), to find it in /proc/net/udp.
pub fn socket_inode(fd: std::os::fd::RawFd) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    let text = link.to_str()?;
    text.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod udp_tests {
    use super::*;

    #[test]
    fn udp_table_drops_by_inode() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  123: 0100007F:14F2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 17\n\
  124: 0100007F:14F3 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0\n";
        let map: std::collections::HashMap<u64, u64> = parse_udp_table(text).collect();
        assert_eq!(map.get(&4242), Some(&17));
        assert_eq!(map.get(&4243), Some(&0));
    }

    #[test]
    fn drops_stay_counted_after_a_socket_closes() {
        let mut t = KernelUdpDrops::default();
        let now = |pairs: &[(u64, u64)]| pairs.iter().copied().collect();
        assert_eq!(t.update(&[1, 2], &now(&[(1, 5), (2, 3)])), 8);
        // Socket 2 closed (a reload removed its source): its 3 drops stay counted.
        assert_eq!(t.update(&[1], &now(&[(1, 6)])), 9);
        assert_eq!(t.update(&[1, 3], &now(&[(1, 6), (3, 1)])), 10);
    }

    #[test]
    fn a_udp_socket_is_found_by_its_inode() {
        use std::os::fd::AsRawFd;
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = socket_inode(socket.as_raw_fd()).expect("a socket inode");
        assert_eq!(kernel_udp_drops().get(&inode), Some(&0));
    }
}
