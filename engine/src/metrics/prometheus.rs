//! The Prometheus text of `/metrics`, generated from the metric tables ([`super::table`]):
//! every row of every family is exported, read at scrape time (relaxed atomics; nothing here
//! waits for a shard). Beside the tables: the WAL latency histograms, the outputs' lag, every
//! loss by reason (`sluice_events_dropped_total`) and `sluice_build_info`.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::table::{Family, Kind};
use super::{
    read_lock, Counters, OutputCounters, ProcessSnapshot, Published, ShardCounters,
    SharedHistogram, SourceShardCounters,
};

/// The version and commit this binary was built from.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("SLUICE_COMMIT");

/// Reads the counters at scrape time.
#[derive(Debug)]
pub struct SluiceCollector(pub Arc<Published>);

type Labels = Vec<(&'static str, String)>;
type Encoded = Result<(), std::fmt::Error>;

/// One set of a family's values with its label values (in `Family::LABELS` order).
struct Set<'a, T> {
    labels: Vec<String>,
    values: &'a T,
}

impl Collector for SluiceCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        encode_build_info(&mut encoder)?;
        let api = [Set {
            labels: vec![],
            values: self.0.api.as_ref(),
        }];
        encode_table(&mut encoder, &api)?;
        let Some(c) = self.0.counters.get() else {
            return Ok(()); // Still starting: nothing else to count yet.
        };
        let shards = shard_sets(c);
        let sources = read_lock(&c.sources);
        let source_sets = source_sets(&sources);
        let outputs = read_lock(&c.outputs);
        let output_sets = output_sets(&outputs);
        let transforms = read_lock(&c.transforms);
        let transform_sets = transform_sets(&transforms);
        let process = [Set {
            labels: vec![],
            values: &ProcessSnapshot::read(c, self.0.start_time_seconds),
        }];
        encode_table(&mut encoder, &shards)?;
        encode_table(&mut encoder, &source_sets)?;
        encode_table(&mut encoder, &output_sets)?;
        encode_table(&mut encoder, &transform_sets)?;
        encode_table(&mut encoder, &process)?;
        let mut losses = Vec::new();
        collect_losses(&shards, &mut losses);
        collect_losses(&source_sets, &mut losses);
        collect_losses(&output_sets, &mut losses);
        collect_losses(&transform_sets, &mut losses);
        collect_losses(&process, &mut losses);
        encode_losses(&mut encoder, &losses)?;
        encode_lag(c, &outputs, &mut encoder)?;
        encode_labelled(&ROUTE_EVENTS, &transforms, &mut encoder)?;
        encode_labelled(&RULE_MATCHES, &transforms, &mut encoder)?;
        encode_histograms(
            c,
            &mut encoder,
            "sluice_wal_fsync_seconds",
            "WAL fdatasync latency",
            |s| &s.wal_fsync,
        )?;
        encode_histograms(
            c,
            &mut encoder,
            "sluice_wal_write_seconds",
            "WAL commit write latency (the batch handed to the kernel)",
            |s| &s.wal_write,
        )?;
        encode_histograms(
            c,
            &mut encoder,
            "sluice_ingest_durable_seconds",
            "Per event: socket read to durable in the WAL (fdatasync done)",
            |s| &s.ingest_durable,
        )
    }
}

fn shard_sets(c: &Counters) -> Vec<Set<'_, ShardCounters>> {
    c.shards
        .iter()
        .enumerate()
        .map(|(i, s)| Set {
            labels: vec![i.to_string()],
            values: s.as_ref(),
        })
        .collect()
}

fn source_sets(
    sources: &[(String, Arc<super::SourceCounters>)],
) -> Vec<Set<'_, SourceShardCounters>> {
    sources
        .iter()
        .flat_map(|(name, c)| {
            c.per_shard
                .iter()
                .enumerate()
                .map(move |(shard, values)| Set {
                    labels: vec![shard.to_string(), name.clone()],
                    values,
                })
        })
        .collect()
}

fn transform_sets(
    transforms: &[Arc<super::TransformCounters>],
) -> Vec<Set<'_, super::TransformShardCounters>> {
    transforms
        .iter()
        .flat_map(|c| {
            c.per_shard
                .iter()
                .enumerate()
                .map(move |(shard, values)| Set {
                    labels: vec![shard.to_string(), c.name.clone()],
                    values,
                })
        })
        .collect()
}

/// A per-transform counter with one more label, from each transform's names and its
/// `[shard][i]` cells.
struct Labelled {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    names: fn(&super::TransformCounters) -> &[String],
    cells: fn(&super::TransformCounters) -> &[Vec<std::sync::atomic::AtomicU64>],
}

/// `sluice_route_events_total{shard,transform,route}`: events each route output received.
const ROUTE_EVENTS: Labelled = Labelled {
    name: "sluice_route_events",
    help: "Events a route sent to each of its outputs",
    label: "route",
    names: |t| &t.ports,
    cells: |t| &t.port_events,
};

/// `sluice_transform_rule_matches_total{shard,transform,rule}`: a transform's own counts
/// (`redact`: replacements per built-in and rule).
const RULE_MATCHES: Labelled = Labelled {
    name: "sluice_transform_rule_matches",
    help: "Matches of each rule of a transform (redact: replacements per built-in and rule)",
    label: "rule",
    names: |t| &t.count_names,
    cells: |t| &t.counts,
};

fn encode_labelled(
    what: &Labelled,
    transforms: &[Arc<super::TransformCounters>],
    encoder: &mut DescriptorEncoder<'_>,
) -> Encoded {
    let with: Vec<&Arc<super::TransformCounters>> = transforms
        .iter()
        .filter(|t| !(what.names)(t).is_empty())
        .collect();
    if with.is_empty() {
        return Ok(());
    }
    let mut family = encoder.encode_descriptor(what.name, what.help, None, MetricType::Counter)?;
    for t in with {
        for (shard, cells) in (what.cells)(t).iter().enumerate() {
            for (label, count) in (what.names)(t).iter().zip(cells) {
                let labels: Labels = vec![
                    ("shard", shard.to_string()),
                    ("transform", t.name.clone()),
                    (what.label, label.clone()),
                ];
                ConstCounter::new(count.load(std::sync::atomic::Ordering::Relaxed))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
    }
    Ok(())
}

fn output_sets(outputs: &[(String, Arc<OutputCounters>)]) -> Vec<Set<'_, OutputCounters>> {
    outputs
        .iter()
        .map(|(name, c)| Set {
            labels: vec![name.clone()],
            values: c.as_ref(),
        })
        .collect()
}

/// Every row of `T`'s table, one family per distinct name (rows sharing a name differ in
/// their fixed label).
fn encode_table<T: Family>(encoder: &mut DescriptorEncoder<'_>, sets: &[Set<'_, T>]) -> Encoded {
    let mut names: Vec<&'static str> = Vec::new();
    for m in T::METRICS {
        if !names.contains(&m.name) {
            names.push(m.name);
        }
    }
    for name in names {
        let rows: Vec<_> = T::METRICS.iter().filter(|m| m.name == name).collect();
        let Some(first) = rows.first() else { continue };
        let (base, metric_type) = match first.kind {
            // The encoder appends `_total` to a counter's samples.
            Kind::Counter => (
                name.strip_suffix("_total").unwrap_or(name),
                MetricType::Counter,
            ),
            Kind::Gauge => (name, MetricType::Gauge),
        };
        let family = encoder.encode_descriptor(base, first.help.trim(), None, metric_type)?;
        let mut samples = Vec::with_capacity(sets.len() * rows.len());
        for set in sets {
            for row in &rows {
                let mut labels: Labels = T::LABELS
                    .iter()
                    .copied()
                    .zip(set.labels.iter().cloned())
                    .collect();
                if let Some((k, v)) = row.label {
                    labels.push((k, v.to_string()));
                }
                samples.push((labels, row.kind, (row.read)(set.values)));
            }
        }
        encode_samples(family, samples)?;
    }
    Ok(())
}

/// Writes a family's samples; a lone sample without labels is written without `{}`.
fn encode_samples(
    mut family: prometheus_client::encoding::MetricEncoder<'_>,
    samples: Vec<(Labels, Kind, f64)>,
) -> Encoded {
    let encode =
        |kind: Kind, value: f64, to: prometheus_client::encoding::MetricEncoder<'_>| match kind {
            Kind::Counter => ConstCounter::new(value).encode(to),
            Kind::Gauge => ConstGauge::new(value).encode(to),
        };
    if let [(labels, kind, value)] = samples.as_slice() {
        if labels.is_empty() {
            return encode(*kind, *value, family);
        }
    }
    for (labels, kind, value) in &samples {
        encode(*kind, *value, family.encode_family(labels)?)?;
    }
    Ok(())
}

/// Adds every loss row of `T` (summed over its sets) to `losses`, by reason.
fn collect_losses<T: Family>(sets: &[Set<'_, T>], losses: &mut Vec<(&'static str, f64)>) {
    for row in T::METRICS {
        let Some(reason) = row.loss else { continue };
        let value: f64 = sets.iter().map(|s| (row.read)(s.values)).sum();
        match losses.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, total)) => *total += value,
            None => losses.push((reason, value)),
        }
    }
}

fn encode_losses(encoder: &mut DescriptorEncoder<'_>, losses: &[(&'static str, f64)]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "sluice_events_dropped",
        "Events lost, by reason (every loss is counted here)",
        None,
        MetricType::Counter,
    )?;
    for (reason, value) in losses {
        let labels: Labels = vec![("reason", reason.to_string())];
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_build_info(encoder: &mut DescriptorEncoder<'_>) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "sluice_build_info",
        "The version and commit Sluice was built from (always 1)",
        None,
        MetricType::Gauge,
    )?;
    let labels: Labels = vec![
        ("version", VERSION.to_string()),
        ("commit", COMMIT.to_string()),
    ];
    ConstGauge::new(1i64).encode(family.encode_family(&labels)?)
}

/// `sluice_output_lag_events{sink,shard}`: durable events an output has not confirmed.
fn encode_lag(
    c: &Counters,
    outputs: &[(String, Arc<OutputCounters>)],
    encoder: &mut DescriptorEncoder<'_>,
) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "sluice_output_lag_events",
        "Durable events an output has not confirmed yet",
        None,
        MetricType::Gauge,
    )?;
    for (name, o) in outputs {
        for (shard, (cursor, next)) in o.cursor_next_ids.iter().zip(&c.next_record_ids).enumerate()
        {
            let cursor = cursor.load(std::sync::atomic::Ordering::Relaxed);
            if cursor == 0 {
                continue; // The cursor's id is not known (after damage): no honest figure.
            }
            let lag = next
                .load(std::sync::atomic::Ordering::Relaxed)
                .saturating_sub(cursor);
            let labels: Labels = vec![("sink", name.clone()), ("shard", shard.to_string())];
            ConstGauge::new(lag as i64).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// One histogram family with a series per shard (the last bucket is `le="+Inf"`).
fn encode_histograms(
    c: &Counters,
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    of_shard: impl Fn(&ShardCounters) -> &SharedHistogram,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (i, s) in c.shards.iter().enumerate() {
        let h = of_shard(s);
        let counts = h.counts();
        let buckets: Vec<(f64, u64)> = h
            .bounds_seconds
            .iter()
            .copied()
            // prometheus-client writes `le="+Inf"` for f64::MAX (f64::INFINITY would print
            // `le="inf"`, which scrapers reject).
            .chain([f64::MAX])
            .zip(counts.iter().copied())
            .collect();
        let count = counts.iter().sum();
        let labels: Labels = vec![("shard", i.to_string())];
        family.encode_family(&labels)?.encode_histogram::<Labels>(
            h.sum_seconds(),
            count,
            &buckets,
            None,
        )?;
    }
    Ok(())
}

/// The metrics reference (`docs/metrics.md`), generated from the tables.
pub fn reference() -> String {
    let mut out = String::from(
        "# Metrics reference\n\nGenerated from the metric tables in `engine/src/metrics/` by \
         `sluice metrics-reference`; a test fails when this file differs from what the binary \
         generates. Every counter ends in `_total`; units are last in the name.\n",
    );
    super::table::reference::<ShardCounters>(&mut out);
    super::table::reference::<SourceShardCounters>(&mut out);
    super::table::reference::<OutputCounters>(&mut out);
    super::table::reference::<super::TransformShardCounters>(&mut out);
    super::table::reference::<super::ApiCounters>(&mut out);
    super::table::reference::<ProcessSnapshot>(&mut out);
    out.push_str(
        "\n### Beside the tables\n\n\
         | name | type | labels | meaning |\n|---|---|---|---|\n\
         | `sluice_build_info` | gauge | version, commit | always 1 |\n\
         | `sluice_events_dropped_total` | counter | reason | every loss, by the reasons in the tables' loss column |\n\
         | `sluice_output_lag_events` | gauge | sink, shard | durable events an output has not confirmed |\n\
         | `sluice_route_events_total` | counter | shard, transform, route | events a route sent to each of its outputs (`_unmatched` included) |\n\
         | `sluice_transform_rule_matches_total` | counter | shard, transform, rule | matches of each rule of a transform (`redact`: replacements per built-in and rule) |\n\
         | `sluice_wal_fsync_seconds` | histogram | shard | WAL fdatasync latency |\n\
         | `sluice_wal_write_seconds` | histogram | shard | WAL commit write latency (the batch handed to the kernel) |\n\
         | `sluice_ingest_durable_seconds` | histogram | shard | per event: socket read to durable in the WAL |\n",
    );
    out
}
