//! Processing on the shard: the config's transforms run between parse and append
//! ([`pipeline::plan::Plan`]), and each record says which sinks want it.
//!
//! - No transforms and no sink with `inputs` (*passthrough*): the record is written as
//!   before (layout 1, every sink), nothing else happens: the plain path stays as fast.
//! - A source whose events run through no transform (*direct*): one routed record with the
//!   sinks that take the source, encoded straight into the WAL buffer.
//! - Otherwise the plan runs; each version of the event some sink wants is encoded (frame,
//!   fields as JSON members, route mask) into a staging buffer, then appended. Staging lets
//!   the processing finish before any wait for WAL space, so each event is processed exactly
//!   once by one plan even when a reload swaps plans while it waits.
//!
//! A reload replaces the whole [`Processing`] between two events (`ShardCommand::SetProcessing`);
//! the old plan's last counts are published first.

use std::sync::Arc;

use ingest::record::{self, EventHeader, Routing};
use ingest::syslog::Parsed;
use pipeline::multiline::JoinRule;
use pipeline::plan::{Plan, TransformStats};

use super::ingest::Extras;
use crate::metrics::{BatchTally, TransformCounters};

/// A shard's processing for one config.
pub struct Processing {
    plan: Plan,
    /// One per transform, in the plan's order.
    counters: Vec<Arc<TransformCounters>>,
    /// What was published of each transform's stats and own counts.
    published: Vec<TransformStats>,
    published_counts: Vec<Vec<u64>>,
    staged: Vec<u8>,
    staged_lens: Vec<usize>,
    fields: Vec<u8>,
    /// Sources whose connections a `multiline` joins, with its rule.
    joins: Vec<(String, Arc<JoinRule>)>,
}

/// What [`Processing::process`] decided for one event.
pub(crate) enum Decision {
    /// Write the layout 1 record (no routing configured).
    Plain,
    /// Write one routed record of the event as parsed, for these sinks.
    Direct(u64),
    /// The records to write are staged ([`Processing::staged`]); possibly none.
    Staged,
}

impl Processing {
    pub fn new(
        plan: Plan,
        counters: Vec<Arc<TransformCounters>>,
        joins: Vec<(String, Arc<JoinRule>)>,
    ) -> Self {
        let published: Vec<TransformStats> = plan
            .stats()
            .map(|(_, s)| TransformStats {
                ports: vec![0; s.ports.len()],
                ..s.clone()
            })
            .collect();
        let published_counts = (0..published.len())
            .map(|i| vec![0; plan.counts(i).len()])
            .collect();
        Processing {
            plan,
            counters,
            published_counts,
            published,
            staged: Vec::new(),
            staged_lens: Vec::new(),
            fields: Vec::new(),
            joins,
        }
    }

    /// The rule joining `source`'s connections (read when a connection opens: a reload that
    /// changes it applies to new connections).
    pub(crate) fn join_rule(&self, source: &str) -> Option<Arc<JoinRule>> {
        self.joins
            .iter()
            .find(|(s, _)| s == source)
            .map(|(_, r)| Arc::clone(r))
    }

    /// Runs one parsed event; `ctx` is built by the caller per batch; `extras`: fields its
    /// source adds (a routed record carries them even without transforms).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process(
        &mut self,
        source: &str,
        frame: &[u8],
        parsed: &Parsed,
        header: &EventHeader,
        ctx: &pipeline::Context<'_>,
        extras: Option<&Extras>,
        tally: &mut BatchTally,
    ) -> Decision {
        if self.plan.is_passthrough() {
            return match extras {
                None => Decision::Plain,
                Some(_) => Decision::Direct(self.plan.default_sinks()),
            };
        }
        let Some(index) = self.plan.source(source) else {
            // A source a reload removed, still draining: the sinks that take every source.
            return Decision::Direct(self.plan.default_sinks());
        };
        if self.plan.is_direct(index) {
            let sinks = self.plan.direct_sinks(index);
            if sinks == 0 {
                tally.unrouted += 1;
            }
            return Decision::Direct(sinks);
        }
        self.staged.clear();
        self.staged_lens.clear();
        let input = self.plan.input();
        input.load(frame, parsed, header.source_ip);
        if let Some(extras) = extras {
            extras.load_into(&mut input.fields);
        }
        let dropped = self.plan.run(index, ctx);
        let Processing {
            plan,
            staged,
            staged_lens,
            fields,
            ..
        } = self;
        let mut too_large = 0;
        plan.for_each_output(|event, sinks| {
            fields.clear();
            event.fields.write_json_members(fields);
            let overrides = ingest::json::override_bits(event.fields.top_level_names());
            let routing = Routing {
                sinks,
                fields,
                overrides,
            };
            if record::routed_len(event.frame.len(), fields.len()) > storage::frame::MAX_RECORD_LEN
            {
                too_large += 1;
                return;
            }
            let before = staged.len();
            record::encode_routed(staged, header, &event.parsed, &event.frame, &routing);
            staged_lens.push(staged.len() - before);
        });
        tally.too_large += too_large;
        if self.staged_lens.is_empty() && !dropped && too_large == 0 {
            tally.unrouted += 1;
        }
        Decision::Staged
    }

    /// The records [`Decision::Staged`] left: the bytes and each record's length.
    pub(crate) fn staged(&self) -> (&[u8], &[usize]) {
        (&self.staged, &self.staged_lens)
    }

    /// Adds what the transforms did since the last call to their counters.
    pub(crate) fn publish(&mut self, shard: usize) {
        let stats = self
            .counters
            .iter()
            .zip(&mut self.published)
            .zip(self.plan.stats());
        for (i, ((counters, published), (_, now))) in stats.enumerate() {
            if now == published {
                continue; // Nothing ran through it: its own counts did not move either.
            }
            counters.add_delta(shard, now, published);
            published.clone_from(now);
            if let Some(before) = self.published_counts.get_mut(i) {
                counters.add_counts(shard, &self.plan.counts(i), before);
            }
        }
    }
}
