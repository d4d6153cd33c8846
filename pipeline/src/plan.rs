//! A shard's compiled processing: the transform instances of one config and, per source, the
//! tree its events run through ([`crate::topology`]). Running an event fills, per *version* of
//! the event (a slot), the sinks that want it; the shard writes one record per version that some
//! sink wants.
//!
//! Slots: slot 0 is the event as parsed. A transform that changes events ([`Transform::mutates`])
//! works on a slot of its own, copied from its parent's, so a sibling branch still sees the
//! event unchanged — unless nothing else can read the parent's version any more (its only
//! consumer, and no sink takes that version), then it works in place and nothing is copied
//! (a plain chain `filter → redact → parse_json` copies nothing).

use crate::event::Event;
use crate::topology::{SourceTree, TreePort};
use crate::{Context, DropReason, Outcome, Transform};

/// What one transform did on this shard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransformStats {
    pub events_in: u64,
    pub events_out: u64,
    /// Parses that failed (kept flagged, or dropped).
    pub errors: u64,
    /// By [`DropReason::ALL`] order.
    pub dropped: [u64; 4],
    /// Per output port (`route`), events sent to it.
    pub ports: Vec<u64>,
}

struct Instance {
    name: String,
    transform: Box<dyn Transform>,
    stats: TransformStats,
}

struct Node {
    transform: usize,
    /// The slot it works on when it changes events (its own, or its parent's in place).
    slot: Option<usize>,
    ports: Vec<TreePort>,
}

struct SourcePlan {
    name: String,
    root: TreePort,
    nodes: Vec<Node>,
}

/// One shard's processing for one config.
pub struct Plan {
    instances: Vec<Instance>,
    sources: Vec<SourcePlan>,
    slots: Vec<Event>,
    masks: Vec<u64>,
    /// Whether records need a route mask (some sink does not take every event of every source).
    routing: bool,
    /// Sinks without `inputs` (they take every source).
    default_sinks: u64,
    /// A transform dropped the last event on some branch.
    dropped: bool,
}

impl Plan {
    /// `transforms` by name in the topology's order; `trees` from
    /// [`crate::topology::Topology::trees`]; `default_sinks`: the sinks without `inputs` (they
    /// take events of a source a reload removed while its connections drain).
    pub fn new(
        transforms: Vec<(String, Box<dyn Transform>)>,
        trees: Vec<SourceTree>,
        routing: bool,
        default_sinks: u64,
    ) -> Plan {
        let instances: Vec<Instance> = transforms
            .into_iter()
            .map(|(name, transform)| {
                let ports = transform.ports().len().max(1);
                Instance {
                    name,
                    transform,
                    stats: TransformStats {
                        ports: vec![0; ports],
                        ..TransformStats::default()
                    },
                }
            })
            .collect();
        let mut slots_needed = 1;
        let sources = trees
            .into_iter()
            .map(|tree| {
                let mut next_slot = 1;
                let nodes = assign_slots(&tree, &instances, &mut next_slot);
                slots_needed = slots_needed.max(next_slot);
                SourcePlan {
                    name: tree.source,
                    root: tree.root,
                    nodes,
                }
            })
            .collect();
        Plan {
            instances,
            sources,
            slots: (0..slots_needed).map(|_| Event::default()).collect(),
            masks: vec![0; slots_needed],
            routing,
            default_sinks,
            dropped: false,
        }
    }

    /// The sinks without `inputs`.
    pub fn default_sinks(&self) -> u64 {
        self.default_sinks
    }

    /// No transforms and no sink with `inputs`: events are written as parsed, for every sink.
    pub fn is_passthrough(&self) -> bool {
        !self.routing
    }

    /// The source's index by name.
    pub fn source(&self, name: &str) -> Option<usize> {
        self.sources.iter().position(|s| s.name == name)
    }

    /// Whether events of `source` run through no transform (then [`Plan::direct_sinks`] is all
    /// there is to know, and the event need not be copied).
    pub fn is_direct(&self, source: usize) -> bool {
        self.sources
            .get(source)
            .is_none_or(|s| s.root.children.is_empty())
    }

    /// The sinks that take `source`'s events as parsed.
    pub fn direct_sinks(&self, source: usize) -> u64 {
        self.sources.get(source).map_or(0, |s| s.root.sinks)
    }

    /// The event to load before [`Plan::run`] (slot 0).
    pub fn input(&mut self) -> &mut Event {
        &mut self.slots[0]
    }

    /// Runs the loaded event through `source`'s tree; whether a transform dropped it on some
    /// branch (filtered, rate-limited, sampled, failed: counted there).
    pub fn run(&mut self, source: usize, ctx: &Context<'_>) -> bool {
        self.masks.fill(0);
        let Some(plan) = self.sources.get(source) else {
            return false;
        };
        self.masks[0] = plan.root.sinks;
        self.slots[0].set_source(plan.name.as_bytes());
        let mut run = Run {
            nodes: &plan.nodes,
            instances: &mut self.instances,
            slots: &mut self.slots,
            masks: &mut self.masks,
            ctx,
            dropped: false,
        };
        for &child in &plan.root.children {
            run.visit(child, 0);
        }
        self.dropped = run.dropped;
        self.dropped
    }

    /// Each version of the last event some sink wants, with the sinks' bits.
    pub fn for_each_output(&mut self, mut f: impl FnMut(&mut Event, u64)) {
        for (slot, &mask) in self.slots.iter_mut().zip(&self.masks) {
            if mask != 0 {
                f(slot, mask);
            }
        }
    }

    /// Every transform's name and what it did so far.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &TransformStats)> {
        self.instances.iter().map(|i| (i.name.as_str(), &i.stats))
    }

    /// A transform's own counts (`redact`: per rule).
    pub fn counts(&self, transform: usize) -> Vec<(String, u64)> {
        self.instances
            .get(transform)
            .map(|i| i.transform.counts())
            .unwrap_or_default()
    }
}

/// Gives every changing step a slot: its parent's when nothing else reads that version (see
/// the module docs), else a new one.
fn assign_slots(tree: &SourceTree, instances: &[Instance], next_slot: &mut usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = tree
        .nodes
        .iter()
        .map(|n| Node {
            transform: n.transform,
            slot: None,
            ports: n.ports.clone(),
        })
        .collect();
    // `exclusive`: the slot's current version is read only along this path from here on.
    fn walk(
        port: &TreePort,
        slot: usize,
        exclusive: bool,
        nodes: &mut [Node],
        instances: &[Instance],
        next_slot: &mut usize,
    ) {
        let sole = exclusive && port.sinks == 0 && port.children.len() == 1;
        for &child in &port.children {
            let mutates = instances
                .get(nodes[child].transform)
                .is_some_and(|i| i.transform.mutates());
            let (child_slot, child_exclusive) = if !mutates {
                (slot, sole)
            } else if sole {
                (slot, true)
            } else {
                let s = *next_slot;
                *next_slot += 1;
                (s, true)
            };
            if mutates {
                nodes[child].slot = Some(child_slot);
            }
            let ports = nodes[child].ports.clone();
            // A route with several outputs shares its version between them.
            let single = ports.len() == 1;
            for p in &ports {
                walk(
                    p,
                    child_slot,
                    child_exclusive && single,
                    nodes,
                    instances,
                    next_slot,
                );
            }
        }
    }
    walk(&tree.root, 0, true, &mut nodes, instances, next_slot);
    nodes
}

struct Run<'a, 'c> {
    nodes: &'a [Node],
    instances: &'a mut [Instance],
    slots: &'a mut [Event],
    masks: &'a mut [u64],
    ctx: &'a Context<'c>,
    dropped: bool,
}

impl Run<'_, '_> {
    fn visit(&mut self, node: usize, parent_slot: usize) {
        let n = &self.nodes[node];
        let slot = match n.slot {
            Some(own) if own != parent_slot => {
                let (lower, upper) = self.slots.split_at_mut(own);
                upper[0].copy_from(&lower[parent_slot]);
                own
            }
            Some(own) => own,
            None => parent_slot,
        };
        let instance = &mut self.instances[n.transform];
        instance.stats.events_in += 1;
        let outcome = instance.transform.process(&mut self.slots[slot], self.ctx);
        let ports = match outcome {
            Outcome::Pass => 1,
            Outcome::PassFailed => {
                instance.stats.errors += 1;
                1
            }
            Outcome::Drop(reason) => {
                if reason == DropReason::Failed {
                    instance.stats.errors += 1;
                }
                let i = DropReason::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(0);
                instance.stats.dropped[i] += 1;
                self.dropped = true;
                return;
            }
            Outcome::Ports(bits) => bits,
        };
        instance.stats.events_out += 1;
        for (p, port) in n.ports.iter().enumerate() {
            if ports & (1 << p) == 0 {
                continue;
            }
            if let Some(count) = self.instances[n.transform].stats.ports.get_mut(p) {
                *count += 1;
            }
            self.masks[slot] |= port.sinks;
            for &child in &port.children {
                self.visit(child, slot);
            }
        }
    }
}
