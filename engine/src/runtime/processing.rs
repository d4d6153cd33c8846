//! The transforms and routing of a config, prepared on the control plane: routing bits
//! assigned and saved, the graph compiled and checked, then one [`Processing`] built per
//! shard (at start, and on a reload that changes sources, transforms or sinks).

use std::path::Path;
use std::sync::Arc;

use super::write_lock;
use super::SinkBits;
use crate::config::{Compiled, Config};
use crate::error::EngineError;
use crate::metrics::{Counters, TransformCounters};
use crate::shard::Processing;

/// Gives every configured sink its routing bit (kept in `data_dir/sink-bits`) and compiles the
/// config's processing with them. Nothing is applied yet: an error leaves everything as it was
/// (except new bits saved, which are harmless).
pub(super) fn prepare(
    config: &Config,
    data_dir: &Path,
    bits: &mut SinkBits,
) -> Result<Compiled, EngineError> {
    if bits.assign(config.sinks.keys())? {
        bits.save(data_dir)?;
    }
    Ok(config.compile(bits)?)
}

/// The transform counters for `compiled`: a transform that was already counted (same name and
/// outputs) keeps its counters; the list replaces what `/metrics` reads.
pub(super) fn register_counters(
    compiled: &Compiled,
    counters: &Counters,
) -> Vec<Arc<TransformCounters>> {
    let shards = counters.shards.len();
    let mut registry = write_lock(&counters.transforms);
    let list: Vec<Arc<TransformCounters>> = compiled
        .names()
        .into_iter()
        .map(|names| {
            registry
                .iter()
                .find(|c| {
                    c.name == names.name && c.ports == names.ports && c.count_names == names.counts
                })
                .cloned()
                .unwrap_or_else(|| {
                    Arc::new(TransformCounters::new(
                        &names.name,
                        names.ports,
                        names.counts,
                        shards,
                    ))
                })
        })
        .collect();
    *registry = list.clone();
    list
}

/// One shard's processing.
pub(super) fn for_shard(
    compiled: &Compiled,
    counters: &[Arc<TransformCounters>],
) -> Result<Processing, EngineError> {
    Ok(Processing::new(
        compiled.build_plan()?,
        counters.to_vec(),
        compiled.joins().to_vec(),
    ))
}
