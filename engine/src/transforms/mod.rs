//! Transforms: one config struct per `type` (its keys, defaults, checks and rendering:
//! [`TransformSettings`]) and how it becomes a [`pipeline::Transform`]; the `type_registry!`
//! list below is the registry. The processing itself lives in the `pipeline` crate (pure);
//! this module only reads config and builds.
//!
//! Conditions and regexes are compiled while the config is read ([`ConditionText`],
//! [`RegexText`]), so a bad one is reported at its key and line; each shard then builds its own
//! instances from the checked config ([`Compiled::build_plan`]), state (token buckets, scratch
//! buffers) included.

mod kinds;
mod parsers;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{de, Deserialize, Deserializer};

pub use kinds::{
    FilterTransform, MultilineTransform, RedactTransform, RemapTransform, RouteTransform,
    SampleTransform, ThrottleTransform,
};
pub use parsers::{
    ParseAccessTransform, ParseAutoTransform, ParseGrokTransform, ParseJsonTransform,
    ParseKvTransform, ParseRegexTransform,
};

use pipeline::plan::Plan;
use pipeline::topology::{SinkNode, SourceTree, Topology, TopologyError, TransformNode};

/// A transform type's configuration: everything the rest of Sluice needs to know of it.
pub trait TransformSettings {
    /// Its `inputs`.
    fn inputs(&self) -> &[String];
    /// Named outputs (`route`); empty for one unnamed output.
    fn ports(&self) -> Vec<String> {
        Vec::new()
    }
    /// Checks that span keys; the key (`transforms.NAME.KEY`) and why, when refused.
    fn check(&self, name: &str) -> Result<(), (String, String)>;
    /// Every key with its effective value (`sluice config`), `type` and `inputs` aside.
    fn render(&self) -> toml::Table;
    /// A fresh instance (for one shard).
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError>;
    /// `multiline`: how it joins lines (per connection, before the graph runs).
    fn join_rule(
        &self,
        _name: &str,
    ) -> Result<Option<pipeline::multiline::JoinRule>, TransformError> {
        Ok(None)
    }
}

/// A transform that cannot be built (the config reader normally refused it already).
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transforms.{name}.{key}: {message}")]
    Invalid {
        name: String,
        key: String,
        message: String,
    },
}

crate::registry::type_registry! {
    TransformType, TransformConfig, TransformSettings, "transform";
    Filter = "filter" => FilterTransform,
    Route = "route" => RouteTransform,
    Redact = "redact" => RedactTransform,
    ParseJson = "parse_json" => ParseJsonTransform,
    ParseRegex = "parse_regex" => ParseRegexTransform,
    ParseGrok = "parse_grok" => ParseGrokTransform,
    ParseKv = "parse_kv" => ParseKvTransform,
    ParseApache = "parse_apache" => ParseAccessTransform,
    ParseNginx = "parse_nginx" => ParseAccessTransform,
    ParseAuto = "parse_auto" => ParseAutoTransform,
    Remap = "remap" => RemapTransform,
    Multiline = "multiline" => MultilineTransform,
    Throttle = "throttle" => ThrottleTransform,
    Sample = "sample" => SampleTransform,
}

/// A condition, compiled while the config is read so an error names its line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionText(pub String);

impl<'de> Deserialize<'de> for ConditionText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        pipeline::condition::Condition::compile(&text)
            .map_err(|e| de::Error::custom(format!("condition {e}")))?;
        Ok(ConditionText(text))
    }
}

impl ConditionText {
    pub fn compile(&self) -> pipeline::condition::Condition {
        // Compiled once already when read: it cannot fail now; an always-false condition
        // stands in for the impossible.
        pipeline::condition::Condition::compile(&self.0)
            .unwrap_or_else(|_| pipeline::condition::Condition::never())
    }
}

/// A regex, compiled while the config is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexText(pub String);

impl<'de> Deserialize<'de> for RegexText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        pipeline::transforms::compile_regex(&text)
            .map_err(|e| de::Error::custom(format!("the regex does not compile: {e}")))?;
        Ok(RegexText(text))
    }
}

impl RegexText {
    pub fn compile(&self, name: &str, key: &str) -> Result<regex::bytes::Regex, TransformError> {
        pipeline::transforms::compile_regex(&self.0).map_err(|e| TransformError::Invalid {
            name: name.to_string(),
            key: key.to_string(),
            message: e.to_string(),
        })
    }
}

/// The most sinks a config with routing may have (a record's route mask is 64 bits).
pub const MAX_ROUTED_SINKS: usize = 64;

/// A config's processing, checked: what each shard builds its [`Plan`] from.
#[derive(Debug, Clone)]
pub struct Compiled {
    transforms: Vec<(String, TransformConfig)>,
    /// Per source joined by a `multiline`: its rule.
    joins: Vec<(String, Arc<pipeline::multiline::JoinRule>)>,
    trees: Vec<SourceTree>,
    routing: bool,
    default_sinks: u64,
    /// Per transform, the names of its own counts (`redact`: its rules), from the instances
    /// built to check the config.
    count_names: Vec<Vec<String>>,
    /// Transforms nobody reads.
    warnings: Vec<String>,
}

/// The graph of a config as the pipeline crate sees it (`bit_of` gives each sink's routing bit).
pub fn topology(
    sources: &BTreeMap<String, crate::sources::SourceConfig>,
    transforms: &BTreeMap<String, TransformConfig>,
    sinks: &BTreeMap<String, crate::sinks::SinkConfig>,
    bit_of: impl Fn(&str) -> u8,
) -> Topology {
    Topology {
        sources: sources.keys().cloned().collect(),
        transforms: transforms
            .iter()
            .map(|(name, t)| TransformNode {
                name: name.clone(),
                inputs: t.settings().inputs().to_vec(),
                ports: t.settings().ports(),
            })
            .collect(),
        sinks: sinks
            .iter()
            .map(|(name, s)| SinkNode {
                name: name.clone(),
                bit: bit_of(name),
                inputs: s.settings().common().inputs.map(<[String]>::to_vec),
            })
            .collect(),
    }
}

impl Compiled {
    /// Checks the graph (`bit_of`: each sink's routing bit) and builds one set of instances to
    /// be sure every shard can.
    pub fn new(
        topology: &Topology,
        transforms: &BTreeMap<String, TransformConfig>,
    ) -> Result<Compiled, CompileError> {
        let warnings = topology.check()?;
        let trees = topology.trees()?;
        let routing = !transforms.is_empty() || topology.sinks.iter().any(|s| s.inputs.is_some());
        if routing && topology.sinks.len() > MAX_ROUTED_SINKS {
            return Err(CompileError::TooManySinks {
                count: topology.sinks.len(),
            });
        }
        let joins = join_rules(topology, transforms)?;
        let mut compiled = Compiled {
            joins,
            transforms: transforms
                .iter()
                .map(|(n, t)| (n.clone(), t.clone()))
                .collect(),
            trees,
            routing,
            default_sinks: topology
                .sinks
                .iter()
                .filter(|s| s.inputs.is_none())
                .fold(0, |m, s| m | 1 << s.bit),
            count_names: Vec::new(),
            warnings,
        };
        // Every shard will build the same: built once here, so a failure refuses the config.
        let plan = compiled.build_plan()?;
        compiled.count_names = (0..transforms.len())
            .map(|i| plan.counts(i).into_iter().map(|(name, _)| name).collect())
            .collect();
        Ok(compiled)
    }

    /// The graph's warnings (transforms whose output nobody takes).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// A shard's own plan.
    pub fn build_plan(&self) -> Result<Plan, TransformError> {
        let instances = self
            .transforms
            .iter()
            .map(|(name, t)| Ok((name.clone(), t.settings().build(name)?)))
            .collect::<Result<Vec<_>, TransformError>>()?;
        Ok(Plan::new(
            instances,
            self.trees.clone(),
            self.routing,
            self.default_sinks,
        ))
    }

    /// The multiline rule joining `source`'s connections, if one does.
    pub fn joins(&self) -> &[(String, Arc<pipeline::multiline::JoinRule>)] {
        &self.joins
    }

    /// Transform names with their output port names (for the metrics).
    /// Each transform's name, output names and own counts' names (`redact`: its rules).
    pub fn names(&self) -> Vec<TransformNames> {
        self.transforms
            .iter()
            .zip(&self.count_names)
            .map(|((n, t), counts)| TransformNames {
                name: n.clone(),
                ports: t.settings().ports(),
                counts: counts.clone(),
            })
            .collect()
    }
}

/// What a transform's metrics are labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformNames {
    pub name: String,
    pub ports: Vec<String>,
    pub counts: Vec<String>,
}

/// Each `multiline` joins the connections of its input sources, which must feed nothing else
/// (they are joined before any other transform sees them).
fn join_rules(
    topology: &Topology,
    transforms: &BTreeMap<String, TransformConfig>,
) -> Result<Vec<(String, Arc<pipeline::multiline::JoinRule>)>, CompileError> {
    let mut joins = Vec::new();
    for (name, t) in transforms {
        let Some(rule) = t.settings().join_rule(name)? else {
            continue;
        };
        let rule = Arc::new(rule);
        for input in t.settings().inputs() {
            let refuse = |why: &str| CompileError::Multiline {
                name: name.clone(),
                input: input.clone(),
                why: why.to_string(),
            };
            if !topology.sources.contains(input) {
                return Err(refuse(
                    "is not a source (multiline joins a source's connections before anything else)",
                ));
            }
            let readers = topology
                .transforms
                .iter()
                .filter(|o| o.inputs.contains(input))
                .count()
                + topology
                    .sinks
                    .iter()
                    .filter(|s| s.inputs.as_ref().is_none_or(|i| i.contains(input)))
                    .count();
            if readers > 1 {
                return Err(refuse("feeds something else too (a sink without inputs takes every source): a joined source feeds only its multiline"));
            }
            joins.push((input.clone(), Arc::clone(&rule)));
        }
    }
    Ok(joins)
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("transforms.{name}.inputs: `{input}` {why}")]
    Multiline {
        name: String,
        input: String,
        why: String,
    },
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error("sinks: {count} sinks, but a config with transforms or sink inputs may have at most {MAX_ROUTED_SINKS}")]
    TooManySinks { count: usize },
}

/// Reads an optional single-byte separator.
fn one_byte(name: &str, key: &str, text: &str) -> Result<u8, (String, String)> {
    match text.as_bytes() {
        [b] => Ok(*b),
        _ => Err((
            format!("transforms.{name}.{key}"),
            "must be a single character".to_string(),
        )),
    }
}

/// `on_error`: what a parse transform does with what it cannot parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnErrorConfig(pub pipeline::transforms::OnError);

impl<'de> Deserialize<'de> for OnErrorConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use pipeline::transforms::OnError;
        crate::units::snake_case(d, &[("keep", OnError::Keep), ("drop", OnError::Drop)])
            .map(OnErrorConfig)
    }
}

impl OnErrorConfig {
    fn name(self) -> &'static str {
        match self.0 {
            pipeline::transforms::OnError::Keep => "keep",
            pipeline::transforms::OnError::Drop => "drop",
        }
    }
}

#[cfg(test)]
mod tests;
