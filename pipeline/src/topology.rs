//! The transform graph of a config, by name: which input names exist, no cycles, and, per
//! source, the tree of transforms and sinks its events flow through (Vector's topology:
//! `inputs` name a source, a transform, or a route's output `ROUTE.NAME`).
//!
//! A sink without `inputs` takes every source. Two consumers of one output both get every
//! event (fan-out); a transform reached on two paths runs once per path, as in Vector.

use std::collections::BTreeMap;

/// One transform as the graph sees it.
#[derive(Debug, Clone)]
pub struct TransformNode {
    pub name: String,
    pub inputs: Vec<String>,
    /// Named output ports (`route`: its routes and `_unmatched`); empty: one unnamed output.
    pub ports: Vec<String>,
}

/// One sink: its routing bit and inputs (`None`: every source).
#[derive(Debug, Clone)]
pub struct SinkNode {
    pub name: String,
    pub bit: u8,
    pub inputs: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Topology {
    pub sources: Vec<String>,
    pub transforms: Vec<TransformNode>,
    pub sinks: Vec<SinkNode>,
}

/// Why a graph is refused: `at` is the config table (`transforms.NAME`, `sinks.NAME`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("{at}.inputs: unknown input `{input}` (not a source, a transform or a route output)")]
    UnknownInput { at: String, input: String },
    #[error("{at}.inputs: `{input}` is a route: name one of its outputs ({ports})")]
    RouteNeedsOutput {
        at: String,
        input: String,
        ports: String,
    },
    #[error("{at}.inputs: `{input}` has no output `{port}` (it has {ports})")]
    UnknownPort {
        at: String,
        input: String,
        port: String,
        ports: String,
    },
    #[error("{at}.inputs: a transform needs at least one input")]
    NoInputs { at: String },
    #[error("transforms.{name}: the name is already a source's")]
    NameTaken { name: String },
    #[error("transforms: a cycle: {}", path.join(" → "))]
    Cycle { path: Vec<String> },
    #[error("source {source_name}: its events would pass through more than {MAX_NODES} transform steps (fan-out of fan-outs); simplify the graph")]
    TooLarge { source_name: String },
}

/// The most transform steps one source's tree may have.
pub const MAX_NODES: usize = 256;

/// One step of a source's tree: a transform, and per output port its consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeNode {
    pub transform: usize,
    pub ports: Vec<TreePort>,
}

/// What one output of a step (or a source) feeds: sinks (bits) and further steps (indices into
/// [`SourceTree::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TreePort {
    pub sinks: u64,
    pub children: Vec<usize>,
}

/// Where one source's events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceTree {
    pub source: String,
    pub root: TreePort,
    /// Steps in depth-first order (a child always after its parent).
    pub nodes: Vec<TreeNode>,
}

/// What an input name refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ref {
    Source(usize),
    /// A transform's output: (transform, port).
    Output(usize, usize),
}

impl Topology {
    /// Checks names and cycles; the transforms nobody consumes (a warning, not an error).
    pub fn check(&self) -> Result<Vec<String>, TopologyError> {
        for t in &self.transforms {
            if self.sources.contains(&t.name) {
                return Err(TopologyError::NameTaken {
                    name: t.name.clone(),
                });
            }
            if t.inputs.is_empty() {
                return Err(TopologyError::NoInputs {
                    at: format!("transforms.{}", t.name),
                });
            }
            for input in &t.inputs {
                self.resolve(&format!("transforms.{}", t.name), input)?;
            }
        }
        for s in &self.sinks {
            for input in s.inputs.iter().flatten() {
                self.resolve(&format!("sinks.{}", s.name), input)?;
            }
        }
        self.find_cycle()?;
        Ok(self.unconsumed())
    }

    fn resolve(&self, at: &str, input: &str) -> Result<Ref, TopologyError> {
        if let Some(i) = self.sources.iter().position(|s| s == input) {
            return Ok(Ref::Source(i));
        }
        let (name, port) = match input.split_once('.') {
            Some((name, port)) => (name, Some(port)),
            None => (input, None),
        };
        let unknown = || TopologyError::UnknownInput {
            at: at.to_string(),
            input: input.to_string(),
        };
        let t = self
            .transforms
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(unknown)?;
        let ports = &self.transforms[t].ports;
        match (port, ports.is_empty()) {
            (None, true) => Ok(Ref::Output(t, 0)),
            (None, false) => Err(TopologyError::RouteNeedsOutput {
                at: at.to_string(),
                input: input.to_string(),
                ports: ports
                    .iter()
                    .map(|p| format!("{name}.{p}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            (Some(_), true) => Err(unknown()),
            (Some(port), false) => ports
                .iter()
                .position(|p| p == port)
                .map(|p| Ref::Output(t, p))
                .ok_or_else(|| TopologyError::UnknownPort {
                    at: at.to_string(),
                    input: name.to_string(),
                    port: port.to_string(),
                    ports: ports.join(", "),
                }),
        }
    }

    /// Transforms each transform reads from (resolved; only after the names checked out).
    fn upstream(&self, t: usize) -> impl Iterator<Item = usize> + '_ {
        let at = format!("transforms.{}", self.transforms[t].name);
        self.transforms[t]
            .inputs
            .iter()
            .filter_map(move |i| match self.resolve(&at, i) {
                Ok(Ref::Output(u, _)) => Some(u),
                _ => None,
            })
    }

    fn find_cycle(&self) -> Result<(), TopologyError> {
        // 0 unvisited, 1 on the stack, 2 done.
        let mut state = vec![0u8; self.transforms.len()];
        let mut stack = Vec::new();
        for t in 0..self.transforms.len() {
            self.visit(t, &mut state, &mut stack)?;
        }
        Ok(())
    }

    fn visit(
        &self,
        t: usize,
        state: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Result<(), TopologyError> {
        match state[t] {
            2 => return Ok(()),
            1 => {
                let from = stack.iter().position(|&s| s == t).unwrap_or(0);
                let mut path: Vec<String> = stack[from..]
                    .iter()
                    .map(|&s| self.transforms[s].name.clone())
                    .collect();
                path.push(self.transforms[t].name.clone());
                return Err(TopologyError::Cycle { path });
            }
            _ => {}
        }
        state[t] = 1;
        stack.push(t);
        let ups: Vec<usize> = self.upstream(t).collect();
        for u in ups {
            self.visit(u, state, stack)?;
        }
        stack.pop();
        state[t] = 2;
        Ok(())
    }

    /// Warnings for transforms (or route outputs) no transform or sink reads.
    fn unconsumed(&self) -> Vec<String> {
        let mut read: BTreeMap<(usize, usize), bool> = BTreeMap::new();
        let inputs = self
            .transforms
            .iter()
            .map(|t| (format!("transforms.{}", t.name), &t.inputs))
            .chain(
                self.sinks
                    .iter()
                    .filter_map(|s| Some((format!("sinks.{}", s.name), s.inputs.as_ref()?))),
            );
        for (at, list) in inputs {
            for input in list {
                if let Ok(Ref::Output(t, p)) = self.resolve(&at, input) {
                    read.insert((t, p), true);
                }
            }
        }
        let mut warnings = Vec::new();
        for (t, node) in self.transforms.iter().enumerate() {
            let any_read = (0..node.ports.len().max(1)).any(|p| read.contains_key(&(t, p)));
            if !any_read {
                warnings.push(format!(
                    "transforms.{}: no transform or sink takes its output: its events go nowhere",
                    node.name
                ));
            }
        }
        warnings
    }

    /// What reads `target`: transforms (indices) and sinks (bits). A sink without inputs
    /// reads every source.
    fn consumers(&self, target: Ref) -> (Vec<usize>, u64) {
        let reads = |at: String, inputs: &[String]| {
            inputs
                .iter()
                .any(|i| self.resolve(&at, i).ok() == Some(target))
        };
        let transforms = self
            .transforms
            .iter()
            .enumerate()
            .filter(|(_, t)| reads(format!("transforms.{}", t.name), &t.inputs))
            .map(|(i, _)| i)
            .collect();
        let mut sinks = 0u64;
        for s in &self.sinks {
            let wants = match &s.inputs {
                None => matches!(target, Ref::Source(_)),
                Some(inputs) => reads(format!("sinks.{}", s.name), inputs),
            };
            if wants {
                sinks |= 1 << s.bit;
            }
        }
        (transforms, sinks)
    }

    /// Per source, its tree (after [`Topology::check`] passed).
    pub fn trees(&self) -> Result<Vec<SourceTree>, TopologyError> {
        let mut trees = Vec::with_capacity(self.sources.len());
        for (i, source) in self.sources.iter().enumerate() {
            let mut nodes = Vec::new();
            let root = self.port(Ref::Source(i), &mut nodes, source)?;
            trees.push(SourceTree {
                source: source.clone(),
                root,
                nodes,
            });
        }
        Ok(trees)
    }

    fn port(
        &self,
        target: Ref,
        nodes: &mut Vec<TreeNode>,
        source: &str,
    ) -> Result<TreePort, TopologyError> {
        let (transforms, sinks) = self.consumers(target);
        let mut children = Vec::with_capacity(transforms.len());
        for t in transforms {
            if nodes.len() >= MAX_NODES {
                return Err(TopologyError::TooLarge {
                    source_name: source.to_string(),
                });
            }
            let at = nodes.len();
            nodes.push(TreeNode {
                transform: t,
                ports: Vec::new(),
            });
            children.push(at);
            let ports = (0..self.transforms[t].ports.len().max(1))
                .map(|p| self.port(Ref::Output(t, p), nodes, source))
                .collect::<Result<Vec<_>, _>>()?;
            nodes[at].ports = ports;
        }
        Ok(TreePort { sinks, children })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, inputs: &[&str], ports: &[&str]) -> TransformNode {
        TransformNode {
            name: name.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn sink(name: &str, bit: u8, inputs: Option<&[&str]>) -> SinkNode {
        SinkNode {
            name: name.into(),
            bit,
            inputs: inputs.map(|i| i.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn routes_and_fan_out_expand_per_source() {
        let topo = Topology {
            sources: vec!["tcp".into(), "udp".into()],
            transforms: vec![
                t("important", &["tcp"], &[]),
                t("split", &["important", "udp"], &["security", "_unmatched"]),
            ],
            sinks: vec![
                sink("all", 0, None),
                sink("sec", 1, Some(&["split.security"])),
                sink("rest", 2, Some(&["split._unmatched", "important"])),
            ],
        };
        assert!(topo.check().unwrap().is_empty());
        let trees = topo.trees().unwrap();
        assert_eq!(
            trees[0].root,
            TreePort {
                sinks: 1,
                children: vec![0]
            }
        );
        assert_eq!(
            trees[0].nodes[0].ports,
            vec![TreePort {
                sinks: 4,
                children: vec![1]
            }]
        );
        assert_eq!(
            trees[0].nodes[1].ports,
            vec![
                TreePort {
                    sinks: 2,
                    children: vec![]
                },
                TreePort {
                    sinks: 4,
                    children: vec![]
                }
            ]
        );
        assert_eq!(
            trees[1].root,
            TreePort {
                sinks: 1,
                children: vec![0]
            }
        );
        assert_eq!(trees[1].nodes[0].transform, 1);
    }

    #[test]
    fn refusals_name_the_table() {
        let base = |transforms, sinks| Topology {
            sources: vec!["src".into()],
            transforms,
            sinks,
        };
        let e = base(vec![t("a", &["nope"], &[])], vec![])
            .check()
            .unwrap_err();
        assert_eq!(e.to_string(), "transforms.a.inputs: unknown input `nope` (not a source, a transform or a route output)");
        let e = base(
            vec![t("r", &["src"], &["x", "_unmatched"])],
            vec![sink("s", 0, Some(&["r"]))],
        )
        .check()
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("name one of its outputs (r.x, r._unmatched)"),
            "{e}"
        );
        let e = base(
            vec![t("r", &["src"], &["x", "_unmatched"])],
            vec![sink("s", 0, Some(&["r.y"]))],
        )
        .check()
        .unwrap_err();
        assert!(matches!(e, TopologyError::UnknownPort { .. }), "{e}");
        let e = base(vec![t("a", &["b"], &[]), t("b", &["a"], &[])], vec![])
            .check()
            .unwrap_err();
        assert_eq!(e.to_string(), "transforms: a cycle: a → b → a");
        let e = base(vec![t("src", &["src"], &[])], vec![])
            .check()
            .unwrap_err();
        assert!(matches!(e, TopologyError::NameTaken { .. }));
        let warnings = base(vec![t("lonely", &["src"], &[])], vec![sink("s", 0, None)])
            .check()
            .unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].starts_with("transforms.lonely"));
    }
}
