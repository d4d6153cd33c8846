//! The Prometheus text of `/metrics`: every counter the shards, sources and outputs publish,
//! read at scrape time (relaxed atomics; nothing here waits for a shard).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::{read_lock, AdminState, Counters};
use crate::metrics::{ShardCounters, SharedHistogram, SourceShardCounters};

/// Reads the counters at scrape time.
#[derive(Debug)]
pub(super) struct SluiceCollector(pub(super) Arc<AdminState>);

type Labels = Vec<(&'static str, String)>;
/// A per-shard counter: name (without `_total`), help, how to read it.
type ShardCounter = (&'static str, &'static str, fn(&ShardCounters) -> u64);
/// The same, per source and shard.
type SourceCounter = (&'static str, &'static str, fn(&SourceShardCounters) -> u64);

/// Ingest counters labelled `shard` and `source`.
fn encode_sources(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let sources = read_lock(&s.sources);
    let members = |f: fn(&SourceShardCounters) -> u64| {
        sources.iter().flat_map(move |(name, c)| {
            c.per_shard.iter().enumerate().map(move |(shard, c)| {
                let labels = vec![("shard", shard.to_string()), ("source", name.clone())];
                (labels, f(c))
            })
        })
    };
    let counters: [SourceCounter; 5] = [
        ("sluice_events_received", "Events read from sockets", |c| {
            c.events_received.load(Relaxed)
        }),
        (
            "sluice_bytes_received",
            "Frame bytes read from sockets",
            |c| c.bytes_received.load(Relaxed),
        ),
        (
            "sluice_parse_errors",
            "Events that fit neither RFC (kept as raw)",
            |c| c.parse_errors.load(Relaxed),
        ),
        (
            "sluice_frames_oversize",
            "Frames truncated at max_frame",
            |c| c.frames_oversize.load(Relaxed),
        ),
        (
            "sluice_connections_rejected",
            "Connections closed at accept (limits)",
            |c| c.connections_rejected.load(Relaxed),
        ),
    ];
    for (name, help, f) in counters {
        let values = members(f).map(|(l, v)| (l, ConstCounter::new(v)));
        family(encoder, name, help, MetricType::Counter, values)?;
    }
    encode_closed(&sources, encoder)?;
    ConstGauge::new(s.connection_memory.used() as i64).encode(encoder.encode_descriptor(
        "sluice_connection_buffer_bytes",
        "Bytes of TCP connection read buffers (bounded by max_connection_memory)",
        None,
        MetricType::Gauge,
    )?)?;
    let active = members(|c| c.connections_active.load(Relaxed).max(0) as u64)
        .map(|(l, v)| (l, ConstGauge::new(v as i64)));
    family(
        encoder,
        "sluice_connections_active",
        "Open TCP connections",
        MetricType::Gauge,
        active,
    )
}

/// `sluice_connections_closed_total{shard,source,reason}`.
fn encode_closed(
    sources: &[(String, Arc<crate::metrics::SourceCounters>)],
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let closed = sources.iter().flat_map(|(name, c)| {
        c.per_shard.iter().enumerate().flat_map(move |(shard, c)| {
            [
                ("idle_timeout", &c.closed_idle_timeout),
                ("frame_timeout", &c.closed_frame_timeout),
                ("memory_budget", &c.closed_memory_budget),
            ]
            .into_iter()
            .map(move |(reason, v)| {
                let labels = vec![
                    ("shard", shard.to_string()),
                    ("source", name.clone()),
                    ("reason", reason.to_string()),
                ];
                (labels, ConstCounter::new(v.load(Relaxed)))
            })
        })
    });
    family(
        encoder,
        "sluice_connections_closed",
        "TCP connections Sluice closed, by reason (timeouts, the connection memory budget)",
        MetricType::Counter,
        closed,
    )?;
    Ok(())
}

/// One metric family whose members are `(labels, value)`.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    members: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for (labels, metric) in members {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn shard_label(i: usize) -> Labels {
    vec![("shard", i.to_string())]
}

impl Collector for SluiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(s) = self.0.parts.get() else {
            return Ok(()); // Still starting: nothing to count yet.
        };
        let per_shard = |f: fn(&ShardCounters) -> u64| {
            s.shards
                .iter()
                .enumerate()
                .map(move |(i, c)| (shard_label(i), ConstCounter::new(f(c))))
        };
        let counters: [ShardCounter; 3] = [
            (
                "sluice_events_durable",
                "Events made durable in the WAL",
                |c| c.events_durable.load(Relaxed),
            ),
            ("sluice_wal_bytes", "Bytes written to the WAL", |c| {
                c.wal_bytes.load(Relaxed)
            }),
            (
                "sluice_connections_handed_off",
                "TCP connections this shard accepted and passed to a less loaded shard",
                |c| c.connections_handed_off.load(Relaxed),
            ),
        ];
        for (name, help, f) in counters {
            family(&mut encoder, name, help, MetricType::Counter, per_shard(f))?;
        }
        encode_sources(s, &mut encoder)?;
        encode_histograms(
            s,
            &mut encoder,
            "sluice_wal_fsync_seconds",
            "WAL fdatasync latency",
            |c| &c.wal_fsync,
        )?;
        encode_histograms(
            s,
            &mut encoder,
            "sluice_ingest_durable_seconds",
            "Per event: socket read to durable in the WAL (fdatasync done)",
            |c| &c.ingest_durable,
        )?;
        ConstGauge::new(s.budget.used() as i64).encode(encoder.encode_descriptor(
            "sluice_wal_disk_bytes",
            "Bytes of WAL segments in data_dir (reserved or on disk)",
            None,
            MetricType::Gauge,
        )?)?;
        encode_outputs(s, &mut encoder)?;
        encode_dropped(s, &mut encoder)?;
        encode_api(&self.0.server, &mut encoder)
    }
}

/// One histogram family with a series per shard.
fn encode_histograms(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    of_shard: impl Fn(&ShardCounters) -> &SharedHistogram,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (i, c) in s.shards.iter().enumerate() {
        let h = of_shard(c);
        let counts = h.counts();
        let buckets: Vec<(f64, u64)> = h
            .bounds_seconds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        family
            .encode_family(&shard_label(i))?
            .encode_histogram::<Labels>(h.sum_seconds(), count, &buckets, None)?;
    }
    Ok(())
}

fn encode_outputs(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let outputs = read_lock(&s.outputs);
    let sink = |name: &str| vec![("sink", name.to_string())];
    family(
        encoder,
        "sluice_output_events_sent",
        "Events an output delivered (confirmed)",
        MetricType::Counter,
        outputs
            .iter()
            .map(|(n, c)| (sink(n), ConstCounter::new(c.events_sent.load(Relaxed)))),
    )?;
    family(
        encoder,
        "sluice_output_errors",
        "Output delivery, read and cursor errors (each retried)",
        MetricType::Counter,
        outputs
            .iter()
            .map(|(n, c)| (sink(n), ConstCounter::new(c.errors.load(Relaxed)))),
    )?;
    let lags = outputs.iter().flat_map(|(n, c)| {
        c.cursor_next_ids
            .iter()
            .zip(&s.next_record_ids)
            .enumerate()
            .filter_map(move |(shard, (cursor, next))| {
                let cursor = cursor.load(Relaxed);
                // 0: the cursor's id is not known (after damage), no honest figure.
                (cursor != 0).then(|| {
                    let lag = next.load(Relaxed).saturating_sub(cursor);
                    let labels = vec![("sink", n.clone()), ("shard", shard.to_string())];
                    (labels, ConstGauge::new(lag as i64))
                })
            })
    });
    family(
        encoder,
        "sluice_output_lag_events",
        "Durable events an output has not confirmed yet",
        MetricType::Gauge,
        lags,
    )
}

fn encode_dropped(
    s: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let sum = |f: fn(&ShardCounters) -> u64| s.shards.iter().map(|c| f(c)).sum::<u64>();
    let damaged: u64 = read_lock(&s.outputs)
        .iter()
        .map(|(_, c)| c.wal_damaged_records.load(Relaxed))
        .sum();
    let reasons: [(&str, u64); 6] = [
        (
            "wal_write_failed",
            sum(|c| c.wal_lost_records.load(Relaxed)),
        ),
        (
            "wal_unavailable",
            sum(|c| c.events_dropped_wal.load(Relaxed)),
        ),
        (
            "udp_while_blocked",
            sum(|c| c.udp_dropped_blocked.load(Relaxed)),
        ),
        (
            "disk_full_drop_oldest",
            s.budget.dropped_records.load(Relaxed),
        ),
        ("wal_damaged", damaged),
        ("udp_socket_buffer", s.kernel_udp_drops()),
    ];
    family(
        encoder,
        "sluice_events_dropped",
        "Events lost, by reason (every loss is counted here)",
        MetricType::Counter,
        reasons
            .iter()
            .map(|(reason, v)| (vec![("reason", reason.to_string())], ConstCounter::new(*v))),
    )
}

/// The admin API's own bounds: what hit them.
fn encode_api(
    c: &super::ServerCounters,
    encoder: &mut DescriptorEncoder<'_>,
) -> Result<(), std::fmt::Error> {
    let counters: [(&str, &str, &std::sync::atomic::AtomicU64); 4] = [
        (
            "sluice_api_requests",
            "Admin API requests read",
            &c.requests,
        ),
        (
            "sluice_api_connections_rejected",
            "Admin API connections answered 503 (too many at once)",
            &c.connections_rejected,
        ),
        (
            "sluice_api_requests_timed_out",
            "Admin API requests that did not arrive in time (answered 408)",
            &c.requests_timed_out,
        ),
        (
            "sluice_api_requests_malformed",
            "Admin API requests that were not HTTP/1.x or broke a bound",
            &c.requests_malformed,
        ),
    ];
    for (name, help, value) in counters {
        let metric = ConstCounter::new(value.load(Relaxed));
        metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)?;
    }
    Ok(())
}
