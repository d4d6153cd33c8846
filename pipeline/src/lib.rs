//! Transforms: what runs on a shard between parsing an event and appending its record to the
//! WAL (filter, route, redact, parse, remap, throttle, sample).
//!
//! Like `ingest`, this crate is pure: no I/O, no clocks, no threads, no dependency on the
//! engine (the caller passes the time in a [`Context`]). A [`plan::Plan`] is built once per
//! config and shard (conditions and regexes compiled then) and owned by that shard; it runs each
//! event through the transform graph of its source and says which sinks want which version of
//! it. Per-event work allocates nothing once buffers have grown: a transform keeps its scratch
//! space in itself, events are reused ([`event::Event`]).

pub mod condition;
pub mod event;
pub mod multiline;
pub mod parse;
pub mod plan;
pub mod rate;
pub mod redact;
pub mod topology;
pub mod transforms;

pub use event::{Event, FieldValue, Fields, NewValue};

/// What a transform may need besides the event.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Monotonic nanoseconds (throttle).
    pub now_ns: u64,
    pub shard: u32,
    /// The receiving host's name (`remap`'s `%{host}`).
    pub host: &'a str,
    /// The source the event came from.
    pub source: &'a str,
}

/// Why a transform dropped an event (`sluice_events_dropped_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `filter`'s condition was false.
    Filtered,
    /// `throttle`: over the rate.
    RateLimited,
    /// `sample`: not the 1 in N.
    Sampled,
    /// A parse failed and the transform says `on_error = "drop"`.
    Failed,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::Filtered,
        DropReason::RateLimited,
        DropReason::Sampled,
        DropReason::Failed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Filtered => "filtered",
            DropReason::RateLimited => "rate_limited",
            DropReason::Sampled => "sampled",
            DropReason::Failed => "transform_failed",
        }
    }
}

/// What a transform decided about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Pass the (possibly changed) event on.
    Pass,
    /// Pass it on unchanged, but the transform failed on it (a parse that did not match:
    /// counted as an error, the event flagged).
    PassFailed,
    /// Drop it: no later transform sees it and no record is written for this branch.
    Drop(DropReason),
    /// `route`: bit i set for each output port the event goes to.
    Ports(u64),
}

/// One processing step.
pub trait Transform: Send {
    /// Whether it changes events (then it works on its own copy, so sibling branches of the
    /// graph still see the event as it was).
    fn mutates(&self) -> bool;
    /// Its output port names beyond the default one (`route`: the route names, then
    /// `_unmatched`); empty for a single-output transform.
    fn ports(&self) -> Vec<String> {
        Vec::new()
    }
    /// Processes `event` in place.
    fn process(&mut self, event: &mut Event, ctx: &Context<'_>) -> Outcome;
    /// Counts of its own, by name (`redact`: replacements per rule).
    fn counts(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reasons_have_distinct_names() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.dedup();
        assert_eq!(names.len(), 4);
    }
}
