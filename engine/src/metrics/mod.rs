//! Counters, from one declarative table per family ([`table`]): shard, source, output, API
//! and process. Each shard, source-on-a-shard and output owns its own set (single writer,
//! relaxed atomics, updated once per read batch rather than per event); readers sum them.
//! [`prometheus`] exports every table row; the shutdown summary and `docs/metrics.md` come
//! from the same tables.

pub mod kernel;
pub mod process;
pub mod prometheus;
pub mod table;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, RwLock};

pub use kernel::{kernel_udp_drops, socket_inode, KernelUdpDrops};
pub use process::ProcessSnapshot;
use table::counter_family;

counter_family! {
    /// One shard's counters: its WAL and what it could not keep.
    pub struct ShardCounters ("shard", labels ["shard"]) {
        /// Events made durable in the WAL (fdatasync done).
        events_durable: counter "sluice_events_durable_total";
        /// Bytes written to the WAL (a compressed commit counts what it took on disk).
        wal_bytes: counter "sluice_wal_bytes_total";
        /// Commits written as one compressed block (`wal.commit_compression`).
        wal_block_commits: counter "sluice_wal_block_commits_total";
        /// Record bytes those compressed commits held before compression (divide by their
        /// share of `sluice_wal_bytes_total` for the ratio).
        wal_block_raw_bytes: counter "sluice_wal_block_raw_bytes_total";
        /// WAL fdatasync calls.
        wal_fsyncs: counter "sluice_wal_fsyncs_total";
        /// Events whose WAL write or fdatasync failed (never durable).
        wal_lost_records: counter "sluice_wal_lost_records_total" loss("wal_write_failed");
        /// WAL write or fdatasync failures (each blocked ingest until a new segment started).
        wal_io_failures: counter "sluice_wal_io_failures_total";
        /// Times the disk budget blocked this shard's ingest.
        wal_budget_blocks: counter "sluice_wal_budget_blocks_total";
        /// New WAL segments made from a ready file (`wal.ready_segments`): their commits
        /// write over written blocks, so fdatasync flushes data only.
        wal_segments_from_ready: counter "sluice_wal_segments_from_ready_total";
        /// New WAL segments created as new files because no ready file was there (the pool
        /// ran dry): their commits also pay file-system metadata updates.
        wal_ready_misses: counter "sluice_wal_ready_misses_total";
        /// WAL segments started as new files that were sealed early, at the first commit
        /// after a ready file was there again (their fdatasyncs commit metadata too).
        wal_ready_switches: counter "sluice_wal_ready_switches_total";
        /// WAL commits written while an earlier commit's fdatasync was still running
        /// (`wal.commits_in_flight` above 1).
        wal_overlapped_commits: counter "sluice_wal_overlapped_commits_total";
        /// Times the WAL flusher had records pending with `wal.commits_in_flight` fdatasyncs
        /// outstanding: their commit waited for the oldest to finish.
        wal_commits_in_flight_full: counter "sluice_wal_commits_in_flight_full_total";
        /// Delivered WAL segments recycled into ready files instead of being deleted.
        wal_segments_recycled: counter "sluice_wal_segments_recycled_total";
        /// Ready WAL segment files written full of zeros (nothing delivered to recycle).
        wal_segments_zero_filled: counter "sluice_wal_segments_zero_filled_total";
        /// Commits handed to outputs in memory (the fast path, `wal.fast_path_commits`).
        wal_fast_path_commits: counter "sluice_wal_fast_path_commits_total";
        /// Times an output's fast-path ring was full at a commit: that output reads that
        /// commit from the segment file instead (the shard never waits for an output).
        wal_fast_path_full: counter "sluice_wal_fast_path_full_total";
        /// Commits not kept in memory for the outputs because the shard's fast path already
        /// held `wal.fast_path_bytes`: every output reads them from the segment file.
        wal_fast_path_over_budget: counter "sluice_wal_fast_path_over_budget_total";
        /// Bytes of commit buffers the shard's fast path holds (at most `wal.fast_path_bytes`).
        wal_fast_path_bytes: gauge "sluice_wal_fast_path_bytes";
        /// Events read from a socket that the WAL could not take (blocked by a disk error
        /// while stopping, or already failed).
        events_dropped_wal: counter "sluice_events_dropped_wal_unavailable_total" loss("wal_unavailable");
        /// UDP datagrams read and dropped while the WAL was blocked (UDP has no
        /// backpressure: counted here rather than lost unseen in the kernel).
        udp_dropped_blocked: counter "sluice_udp_dropped_blocked_total" loss("udp_while_blocked");
        /// TCP connections this shard accepted and passed to a less loaded shard.
        connections_handed_off: counter "sluice_connections_handed_off_total";
        /// Events no sink takes (their source, or the route output they took, feeds no
        /// transform or sink): not written.
        events_unrouted: counter "sluice_events_unrouted_total" loss("unrouted");
        /// Processed events whose record would exceed the WAL's record limit (64 MiB: a
        /// redaction or parse that grew an event past it): not written.
        events_too_large: counter "sluice_events_too_large_total" loss("record_too_large");
    }
    extra {
        /// fdatasync latency.
        wal_fsync: SharedHistogram = SharedHistogram::new(storage::latency::FSYNC_BUCKETS_SECONDS);
        /// A commit's write (the batch handed to the kernel) latency.
        wal_write: SharedHistogram = SharedHistogram::new(storage::latency::FSYNC_BUCKETS_SECONDS);
        /// Socket read → durable in the WAL, per event.
        ingest_durable: SharedHistogram =
            SharedHistogram::new(storage::latency::DURABLE_BUCKETS_SECONDS);
        /// Inodes of this shard's UDP sockets: the kernel counts the datagrams it dropped on
        /// each (receive buffer full) in /proc/net/udp, which the metrics read.
        udp_socket_inodes: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
        /// When the shard last published its counters (Unix ms; 0: not running, i.e. not
        /// started yet or stopped on request): its heartbeat.
        last_beat_ms: AtomicU64 = AtomicU64::new(0);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ShardCounters {
    /// The shard is alive: its executor ran its publishing task just now.
    pub fn beat(&self) {
        self.last_beat_ms.store(unix_ms(), Relaxed);
    }

    /// The shard stopped on request: not beating any more is not being stuck.
    pub fn not_running(&self) {
        self.last_beat_ms.store(0, Relaxed);
    }

    /// Whether the shard beat within `limit` (a shard that is not running, before its start
    /// or after a requested stop, counts as alive: it is not stuck).
    pub fn is_alive(&self, limit: std::time::Duration) -> bool {
        match self.last_beat_ms.load(Relaxed) {
            0 => true,
            last => unix_ms().saturating_sub(last) <= limit.as_millis() as u64,
        }
    }
}

counter_family! {
    /// One source's counters on one shard (each written only by that shard's thread).
    pub struct SourceShardCounters ("source", labels ["shard", "source"]) {
        /// Events read from sockets.
        events_received: counter "sluice_events_received_total";
        /// Frame bytes read from sockets.
        bytes_received: counter "sluice_bytes_received_total";
        /// Events the parser flagged, by kind (kept either way; see docs/parsing.md).
        parse_no_pri: counter "sluice_parse_errors_total" label("kind" = "no_pri");
        /// Events the parser flagged, by kind (kept either way; see docs/parsing.md).
        parse_bad_header: counter "sluice_parse_errors_total" label("kind" = "bad_header");
        /// Events the parser flagged, by kind (kept either way; see docs/parsing.md).
        parse_bad_timestamp: counter "sluice_parse_errors_total" label("kind" = "bad_timestamp");
        /// Events the parser flagged, by kind (kept either way; see docs/parsing.md).
        parse_bad_sd: counter "sluice_parse_errors_total" label("kind" = "bad_sd");
        /// Lines not in their input's format (JSON, CRI, Docker json-file): kept as raw events.
        parse_bad_format: counter "sluice_parse_errors_total" label("kind" = "bad_format");
        /// Frames truncated at max_frame.
        frames_oversize: counter "sluice_frames_oversize_total";
        /// Octet counts that could not be trusted (resynchronised; the bytes kept, flagged).
        frames_bad_length: counter "sluice_frames_bad_length_total";
        /// Frames cut off by a disconnect (an octet-counted rest is not an event).
        frames_incomplete: counter "sluice_frames_incomplete_total";
        /// UDP datagrams received.
        udp_datagrams: counter "sluice_udp_datagrams_total";
        /// TCP connections accepted.
        connections_accepted: counter "sluice_connections_accepted_total";
        /// Open TCP connections.
        connections_active: gauge "sluice_connections_active";
        /// Connections closed at accept (max_connections_per_ip).
        connections_rejected: counter "sluice_connections_rejected_total";
        /// TCP connections Sluice closed, by reason.
        closed_idle_timeout: counter "sluice_connections_closed_total" label("reason" = "idle_timeout");
        /// TCP connections Sluice closed, by reason.
        closed_frame_timeout: counter "sluice_connections_closed_total" label("reason" = "frame_timeout");
        /// TCP connections Sluice closed, by reason.
        closed_memory_budget: counter "sluice_connections_closed_total" label("reason" = "memory_budget");
        /// TLS handshakes completed.
        tls_handshakes: counter "sluice_tls_handshakes_total";
        /// TLS handshakes that failed, by reason (the connection is closed).
        tls_failed_timeout: counter "sluice_tls_handshake_failures_total" label("reason" = "timeout");
        /// TLS handshakes that failed, by reason (the connection is closed).
        tls_failed_certificate: counter "sluice_tls_handshake_failures_total" label("reason" = "certificate");
        /// TLS handshakes that failed, by reason (the connection is closed).
        tls_failed_protocol: counter "sluice_tls_handshake_failures_total" label("reason" = "protocol");
        /// TLS handshakes that failed, by reason (the connection is closed).
        tls_failed_closed: counter "sluice_tls_handshake_failures_total" label("reason" = "closed");
        /// Files a file source reads now.
        files_open: gauge "sluice_files_open";
        /// Files matched but not opened: `max_open_files` was reached (tried again at the next scan).
        files_skipped_limit: counter "sluice_files_skipped_total" label("reason" = "max_open_files");
        /// Files truncated in place (copytruncate) and read again from their start.
        files_truncated: counter "sluice_files_truncated_total";
        /// RELP messages acknowledged (`rsp 200`, sent once durable).
        relp_acknowledged: counter "sluice_relp_acknowledged_total";
        /// RELP sessions ended because the peer did not speak RELP.
        relp_protocol_errors: counter "sluice_relp_protocol_errors_total";
        /// HTTP requests by answer (answered 200: every event durable).
        http_200: counter "sluice_http_requests_total" label("status" = "200");
        /// HTTP requests by answer (refused: the body does not decode (nothing taken)).
        http_400: counter "sluice_http_requests_total" label("status" = "400");
        /// HTTP requests by answer (refused: no API key).
        http_401: counter "sluice_http_requests_total" label("status" = "401");
        /// HTTP requests by answer (refused: an unknown API key).
        http_403: counter "sluice_http_requests_total" label("status" = "403");
        /// HTTP requests by answer (refused: no such endpoint or method).
        http_404: counter "sluice_http_requests_total" label("status" = "404");
        /// HTTP requests by answer (refused: the body did not arrive within request_timeout).
        http_408: counter "sluice_http_requests_total" label("status" = "408");
        /// HTTP requests by answer (refused: the body is over max_body_size).
        http_413: counter "sluice_http_requests_total" label("status" = "413");
        /// HTTP requests by answer (refused: a Content-Encoding Sluice does not read).
        http_415: counter "sluice_http_requests_total" label("status" = "415");
        /// HTTP requests by answer (refused: a key's rate_limit, or the disk budget blocks).
        http_429: counter "sluice_http_requests_total" label("status" = "429");
        /// HTTP requests by answer (refused: not durable, or no memory for the body).
        http_503: counter "sluice_http_requests_total" label("status" = "503");
    }
}

counter_family! {
    /// One transform's counters on one shard (published by that shard every 20 ms).
    pub struct TransformShardCounters ("transform", labels ["shard", "transform"]) {
        /// Events a transform received.
        events_in: counter "sluice_transform_events_in_total";
        /// Events a transform passed on.
        events_out: counter "sluice_transform_events_out_total";
        /// Events a transform failed on (a parse that did not match: kept flagged with
        /// `parse_error`, or dropped where `on_error = "drop"`).
        errors: counter "sluice_transform_errors_total";
        /// Events a transform dropped, by reason.
        dropped_filtered: counter "sluice_transform_events_dropped_total" label("reason" = "filtered") loss("filtered");
        /// Events a transform dropped, by reason.
        dropped_rate_limited: counter "sluice_transform_events_dropped_total" label("reason" = "rate_limited") loss("rate_limited");
        /// Events a transform dropped, by reason.
        dropped_sampled: counter "sluice_transform_events_dropped_total" label("reason" = "sampled") loss("sampled");
        /// Events a transform dropped, by reason.
        dropped_failed: counter "sluice_transform_events_dropped_total" label("reason" = "transform_failed") loss("transform_failed");
    }
}

/// One transform's counters, one set per shard, and per route output its events.
#[derive(Debug)]
pub struct TransformCounters {
    pub name: String,
    /// Output names (`route`); empty for one unnamed output.
    pub ports: Vec<String>,
    pub per_shard: Vec<TransformShardCounters>,
    /// `[shard][port]`: events sent to each output (`sluice_route_events_total`).
    pub port_events: Vec<Vec<AtomicU64>>,
    /// The transform's own counts by name (`redact`: replacements per rule).
    pub count_names: Vec<String>,
    /// `[shard][count]` (`sluice_transform_rule_matches_total`).
    pub counts: Vec<Vec<AtomicU64>>,
}

impl TransformCounters {
    pub fn new(name: &str, ports: Vec<String>, count_names: Vec<String>, shards: usize) -> Self {
        TransformCounters {
            counts: (0..shards)
                .map(|_| count_names.iter().map(|_| AtomicU64::new(0)).collect())
                .collect(),
            count_names,
            name: name.to_string(),
            port_events: (0..shards)
                .map(|_| ports.iter().map(|_| AtomicU64::new(0)).collect())
                .collect(),
            ports,
            per_shard: (0..shards)
                .map(|_| TransformShardCounters::default())
                .collect(),
        }
    }

    /// Adds shard `shard`'s own counts since `before` (then `before` = `now`).
    pub fn add_counts(&self, shard: usize, now: &[(String, u64)], before: &mut [u64]) {
        let Some(cells) = self.counts.get(shard) else {
            return;
        };
        for ((cell, (_, n)), b) in cells.iter().zip(now).zip(before.iter_mut()) {
            add(cell, n.saturating_sub(*b));
            *b = *n;
        }
    }

    /// Adds what shard `shard`'s plan did since `before` (counters stay monotonic across
    /// reloads, which start new plans at zero).
    pub fn add_delta(
        &self,
        shard: usize,
        now: &pipeline::plan::TransformStats,
        before: &pipeline::plan::TransformStats,
    ) {
        let Some(c) = self.per_shard.get(shard) else {
            return;
        };
        let delta = |a: u64, b: u64| a.saturating_sub(b);
        add(&c.events_in, delta(now.events_in, before.events_in));
        add(&c.events_out, delta(now.events_out, before.events_out));
        add(&c.errors, delta(now.errors, before.errors));
        let cells = [
            &c.dropped_filtered,
            &c.dropped_rate_limited,
            &c.dropped_sampled,
            &c.dropped_failed,
        ];
        for (i, cell) in cells.into_iter().enumerate() {
            add(cell, delta(now.dropped[i], before.dropped[i]));
        }
        if let Some(ports) = self.port_events.get(shard) {
            for (p, cell) in ports.iter().enumerate() {
                let (n, b) = (
                    now.ports.get(p).copied().unwrap_or(0),
                    before.ports.get(p).copied().unwrap_or(0),
                );
                add(cell, delta(n, b));
            }
        }
    }
}

counter_family! {
    /// One output's counters (written by its thread).
    pub struct OutputCounters ("output", labels ["sink"]) {
        /// Events an output delivered (confirmed).
        events_sent: counter "sluice_output_events_sent_total";
        /// Encoded bytes an output delivered (confirmed).
        bytes_sent: counter "sluice_output_bytes_sent_total";
        /// Output delivery, read and cursor errors (each retried).
        errors: counter "sluice_output_errors_total";
        /// Deliveries attempted again after the destination failed.
        retries: counter "sluice_output_retries_total";
        /// WAL records that did not decode as events (skipped, never delivered).
        undecodable: counter "sluice_output_undecodable_total";
        /// Routed WAL records meant for other sinks (skipped without decoding).
        skipped_not_routed: counter "sluice_output_skipped_records_total";
        /// The output's circuit breaker: 0 closed (delivering), 1 open (not trying until
        /// `open_for` passed), 2 half-open (one probe in flight).
        circuit_state: gauge "sluice_output_circuit_state";
        /// Times the circuit breaker opened (after `failure_threshold` failures in a row).
        circuit_opened: counter "sluice_output_circuit_opened_total";
        /// Events the destination rejected for good, written to the output's dead-letter
        /// queue (durable there before the cursor passed them; `sluice dlq`).
        dead_lettered: counter "sluice_output_dead_lettered_total";
        /// Dead-letter writes refused (the queue's `dlq_max_size` reached, or an I/O error):
        /// the events stay in the WAL and the write is tried again.
        dead_letter_failures: counter "sluice_output_dead_letter_failures_total";
        /// Events the destination asked to be sent again (e.g. a bulk item answered 429).
        items_retried: counter "sluice_output_items_retried_total";
        /// Requests the destination refused as too large: the batch was split in two.
        batches_split: counter "sluice_output_batches_split_total";
        /// Requests (batches) sent to the destination, successful or not.
        requests: counter "sluice_output_requests_total";
        /// Damaged places in the WAL this output skipped (each logged with segment, offset).
        wal_damaged_skips: counter "sluice_output_wal_damaged_skips_total";
        /// Records a sealed segment's footer says were there but damage made unreadable.
        wal_damaged_records: counter "sluice_output_wal_damaged_records_total" loss("wal_damaged");
        /// WAL bytes this output read from the shards' commits in memory (the fast path,
        /// `wal.fast_path_commits`).
        wal_read_memory_bytes: counter "sluice_output_wal_read_bytes_total" label("from" = "memory");
        /// WAL bytes this output read from segment files (it was behind what memory holds,
        /// restarted, or replays a backlog).
        wal_read_file_bytes: counter "sluice_output_wal_read_bytes_total" label("from" = "file");
    }
    extra {
        /// Per shard: the record id after the last persisted cursor (0: unknown).
        cursor_next_ids: Vec<AtomicU64> = Vec::new();
    }
}

counter_family! {
    /// The admin API's own bounds: what hit them.
    pub struct ApiCounters ("api", labels []) {
        /// Admin API requests read.
        requests: counter "sluice_api_requests_total";
        /// Admin API connections answered 503 (too many at once, or no thread started).
        connections_rejected: counter "sluice_api_connections_rejected_total";
        /// Admin API requests that did not arrive in time (answered 408).
        requests_timed_out: counter "sluice_api_requests_timed_out_total";
        /// Admin API requests that were not HTTP/1.x or broke a bound.
        requests_malformed: counter "sluice_api_requests_malformed_total";
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

/// One source's counters, one set per shard.
#[derive(Debug)]
pub struct SourceCounters {
    pub per_shard: Vec<SourceShardCounters>,
}

impl SourceCounters {
    pub fn new(shards: usize) -> Self {
        SourceCounters {
            per_shard: (0..shards)
                .map(|_| SourceShardCounters::default())
                .collect(),
        }
    }

    /// Shard `shard`'s set (`None` if the index is out of range, never a panic).
    pub fn shard(&self, shard: usize) -> Option<&SourceShardCounters> {
        self.per_shard.get(shard)
    }
}

/// Per-read-batch tallies, added to the counters in one go.
#[derive(Debug, Default, Clone, Copy)]
pub struct BatchTally {
    pub events: u64,
    pub bytes: u64,
    /// Flagged events by kind, in [`ingest::ParseFlags::ALL`] order.
    pub parse_errors: [u64; 4],
    pub oversize: u64,
    pub bad_length: u64,
    pub dropped_wal: u64,
    pub unrouted: u64,
    pub too_large: u64,
    /// Lines not in their input's format (kept as raw events).
    pub bad_format: u64,
}

impl BatchTally {
    /// Counts each flag the parser set on one event.
    pub fn count_parse_flags(&mut self, flags: ingest::ParseFlags) {
        if flags.is_empty() {
            return;
        }
        for (count, (flag, _)) in self.parse_errors.iter_mut().zip(ingest::ParseFlags::ALL) {
            *count += u64::from(flags.contains(flag));
        }
    }
}

fn add(counter: &AtomicU64, value: u64) {
    if value > 0 {
        counter.fetch_add(value, Relaxed);
    }
}

impl SourceShardCounters {
    pub fn add(&self, t: &BatchTally) {
        add(&self.events_received, t.events);
        add(&self.bytes_received, t.bytes);
        let [no_pri, bad_header, bad_timestamp, bad_sd] = t.parse_errors;
        add(&self.parse_no_pri, no_pri);
        add(&self.parse_bad_header, bad_header);
        add(&self.parse_bad_timestamp, bad_timestamp);
        add(&self.parse_bad_sd, bad_sd);
        add(&self.frames_oversize, t.oversize);
        add(&self.frames_bad_length, t.bad_length);
        add(&self.parse_bad_format, t.bad_format);
    }
}

impl ShardCounters {
    pub fn add(&self, t: &BatchTally) {
        add(&self.events_dropped_wal, t.dropped_wal);
        add(&self.events_unrouted, t.unrouted);
        add(&self.events_too_large, t.too_large);
    }
}

impl OutputCounters {
    pub fn new(shards: usize) -> Self {
        OutputCounters {
            cursor_next_ids: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            ..OutputCounters::default()
        }
    }

    pub fn summary(&self) -> String {
        format_summary(&table::summary(&[self]))
    }
}

/// `key=value` pairs, space-separated (the shutdown summary's format).
fn format_summary(pairs: &[(&str, f64)]) -> String {
    let fields: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    fields.join(" ")
}

/// Every counter the API, the status line and the shutdown summary read.
#[derive(Debug)]
pub struct Counters {
    pub shards: Vec<Arc<ShardCounters>>,
    /// The id each WAL's next durable record gets (all shard logs, running or retired).
    pub next_record_ids: Vec<Arc<AtomicU64>>,
    /// By sink name; a reload adds and removes entries.
    pub outputs: RwLock<Vec<(String, Arc<OutputCounters>)>>,
    /// By source name; a reload adds and removes entries.
    pub sources: RwLock<Vec<(String, Arc<SourceCounters>)>>,
    /// By transform, in the running config's order (a reload replaces the list; a transform
    /// that stays keeps its counters).
    pub transforms: RwLock<Vec<Arc<TransformCounters>>>,
    pub budget: Arc<storage::DiskBudget>,
    /// What the kernel dropped on the UDP sockets (read from /proc at each scrape).
    pub kernel_udp_drops: std::sync::Mutex<KernelUdpDrops>,
    /// The budget of every TCP connection's read buffer.
    pub connection_memory: Arc<crate::sources::limits::ConnectionMemory>,
}

/// What `/metrics` reads: the counters (once everything runs; the API answers before), the
/// API's own and the process's.
#[derive(Debug)]
pub struct Published {
    pub counters: OnceLock<Counters>,
    pub api: Arc<ApiCounters>,
    /// Unix time the process started, seconds.
    pub start_time_seconds: f64,
}

impl Default for Published {
    fn default() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Published {
            counters: OnceLock::new(),
            api: Arc::default(),
            start_time_seconds: now.as_secs_f64(),
        }
    }
}

pub(crate) fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

impl Counters {
    /// Datagrams the kernel dropped on Sluice's UDP sockets so far (receive buffers full).
    pub fn kernel_udp_drops(&self) -> u64 {
        let open: Vec<u64> = self
            .shards
            .iter()
            .flat_map(|c| {
                c.udp_socket_inodes
                    .lock()
                    .map(|i| i.clone())
                    .unwrap_or_default()
            })
            .collect();
        let now = kernel_udp_drops();
        match self.kernel_udp_drops.lock() {
            Ok(mut tally) => tally.update(&open, &now),
            Err(_) => 0,
        }
    }

    /// Shards that have not beaten within `limit` (their executor is stuck).
    pub fn stuck_shards(&self, limit: std::time::Duration) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| !self.shards[i].is_alive(limit))
            .collect()
    }

    pub fn events_durable(&self) -> u64 {
        self.shards
            .iter()
            .map(|c| c.events_durable.load(Relaxed))
            .sum()
    }

    pub fn events_sent(&self) -> u64 {
        read_lock(&self.outputs)
            .iter()
            .map(|(_, c)| c.events_sent.load(Relaxed))
            .sum()
    }

    /// Durable events not yet confirmed, summed over outputs and shards (where known).
    pub fn lag_events(&self) -> u64 {
        read_lock(&self.outputs)
            .iter()
            .flat_map(|(_, c)| c.cursor_next_ids.iter().zip(&self.next_record_ids))
            .map(|(cursor, next)| match cursor.load(Relaxed) {
                0 => 0,
                cursor => next.load(Relaxed).saturating_sub(cursor),
            })
            .sum()
    }

    /// The shutdown summary: every source, shard and process table row, summed.
    pub fn summary(&self, start_time_seconds: f64) -> String {
        let sources = read_lock(&self.sources);
        let source_sets: Vec<&SourceShardCounters> = sources
            .iter()
            .flat_map(|(_, c)| c.per_shard.iter())
            .collect();
        let shard_sets: Vec<&ShardCounters> = self.shards.iter().map(Arc::as_ref).collect();
        let process = ProcessSnapshot::read(self, start_time_seconds);
        let mut pairs = table::summary(&source_sets);
        pairs.extend(table::summary(&shard_sets));
        pairs.extend(table::summary(&[&process]));
        format_summary(&pairs)
    }
}
