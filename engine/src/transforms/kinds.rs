//! The config of `filter`, `route`, `redact`, `remap`, `throttle` and `sample`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConditionText, RegexText, TransformError, TransformSettings};
use crate::units::{render, TypeTag};
use pipeline::redact::{Builtin, Rule};
use pipeline::transforms::{self as t, Conversion, RemapOp, RemapValue};

/// `type = "filter"`: keeps the events `condition` matches.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    pub condition: ConditionText,
}

impl TransformSettings for FilterTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, _: &str) -> Result<(), (String, String)> {
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert("condition".into(), render::text(&self.condition.0));
        table
    }
    fn build(&self, _: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        Ok(Box::new(t::Filter {
            condition: self.condition.compile(),
        }))
    }
}

/// `type = "route"`: `routes.NAME = "condition"`; outputs `ROUTE.NAME` and `ROUTE._unmatched`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    pub routes: BTreeMap<String, ConditionText>,
}

impl TransformSettings for RouteTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn ports(&self) -> Vec<String> {
        let mut ports: Vec<String> = self.routes.keys().cloned().collect();
        ports.push(t::UNMATCHED.to_string());
        ports
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("transforms.{name}.routes{k}");
        if self.routes.is_empty() {
            return Err((key(""), "a route needs at least one named condition".into()));
        }
        if self.routes.len() > t::MAX_ROUTES {
            return Err((key(""), format!("at most {} routes", t::MAX_ROUTES)));
        }
        for route in self.routes.keys() {
            let plain = !route.is_empty()
                && route
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !plain || route == t::UNMATCHED {
                return Err((
                    key(&format!(".{route}")),
                    format!(
                        "route names use letters, digits, '_' and '-', and `{}` is taken",
                        t::UNMATCHED
                    ),
                ));
            }
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let routes: toml::Table = self
            .routes
            .iter()
            .map(|(k, v)| (k.clone(), render::text(&v.0)))
            .collect();
        let mut table = toml::Table::new();
        table.insert("routes".into(), toml::Value::Table(routes));
        table
    }
    fn build(&self, _: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        Ok(Box::new(t::Route {
            routes: self
                .routes
                .iter()
                .map(|(n, c)| (n.clone(), c.compile()))
                .collect(),
        }))
    }
}

/// A `redact` built-in by its config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinName(pub Builtin);

impl<'de> Deserialize<'de> for BuiltinName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let choices: Vec<(&str, Builtin)> = Builtin::ALL.iter().map(|b| (b.name(), *b)).collect();
        crate::units::snake_case(d, &choices).map(BuiltinName)
    }
}

/// One `rules = [{ pattern = "...", replacement = "..." }]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub pattern: RegexText,
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    pipeline::redact::DEFAULT_REPLACEMENT.to_string()
}

fn message_only() -> Vec<String> {
    vec!["message".to_string()]
}

/// `type = "redact"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    #[serde(default)]
    pub builtins: Vec<BuiltinName>,
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// What a built-in's match becomes.
    #[serde(default = "default_replacement")]
    pub replacement: String,
    /// `message` and/or parsed field paths.
    #[serde(default = "message_only")]
    pub fields: Vec<String>,
}

impl TransformSettings for RedactTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        if self.builtins.is_empty() && self.rules.is_empty() {
            return Err((
                format!("transforms.{name}.builtins"),
                "name at least one built-in or one rule".into(),
            ));
        }
        if self.fields.is_empty() {
            return Err((
                format!("transforms.{name}.fields"),
                "name at least one field (\"message\" by default)".into(),
            ));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        let builtins = self
            .builtins
            .iter()
            .map(|b| render::text(b.0.name()))
            .collect();
        table.insert("builtins".into(), toml::Value::Array(builtins));
        let rules = self
            .rules
            .iter()
            .map(|r| {
                let mut rule = toml::Table::new();
                rule.insert("pattern".into(), render::text(&r.pattern.0));
                rule.insert("replacement".into(), render::text(&r.replacement));
                toml::Value::Table(rule)
            })
            .collect();
        table.insert("rules".into(), toml::Value::Array(rules));
        table.insert("replacement".into(), render::text(&self.replacement));
        table.insert(
            "fields".into(),
            toml::Value::Array(self.fields.iter().map(|f| render::text(f)).collect()),
        );
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let builtins: Vec<Builtin> = self.builtins.iter().map(|b| b.0).collect();
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rule {
                    pattern: r.pattern.compile(name, &format!("rules[{i}].pattern"))?,
                    replacement: r.replacement.as_bytes().to_vec(),
                })
            })
            .collect::<Result<Vec<_>, TransformError>>()?;
        Ok(Box::new(t::Redact::new(
            &builtins,
            rules,
            &self.replacement,
            &self.fields,
        )))
    }
}

/// `type = "remap"`: `add`, `rename`, `remove`, `convert`, `severity_from`, `facility_from`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemapTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    /// Field → value (string, number, bool; `"%{host}"`, `"%{shard}"`, `"%{source}"`).
    #[serde(default)]
    pub add: toml::Table,
    /// Old path → new path.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
    /// Field → `"int"`, `"float"`, `"bool"` or `"timestamp"` (with `timestamp_formats`).
    #[serde(default)]
    pub convert: BTreeMap<String, String>,
    /// Field → strftime-like format for `convert = "timestamp"`.
    #[serde(default)]
    pub timestamp_formats: BTreeMap<String, String>,
    pub severity_from: Option<String>,
    pub facility_from: Option<String>,
}

impl RemapTransform {
    fn ops(&self, name: &str) -> Result<Vec<RemapOp>, (String, String)> {
        let key = |k: &str| format!("transforms.{name}.{k}");
        let mut ops = Vec::new();
        for (field, value) in &self.add {
            let v = match value {
                toml::Value::String(s) if s == "%{host}" => RemapValue::Host,
                toml::Value::String(s) if s == "%{shard}" => RemapValue::Shard,
                toml::Value::String(s) if s == "%{source}" => RemapValue::Source,
                toml::Value::String(s) => RemapValue::Str(s.clone()),
                toml::Value::Integer(i) => RemapValue::Int(*i),
                toml::Value::Float(f) => RemapValue::Float(*f),
                toml::Value::Boolean(b) => RemapValue::Bool(*b),
                _ => {
                    return Err((
                        key(&format!("add.{field}")),
                        "must be a string, a number or a boolean".into(),
                    ))
                }
            };
            ops.push(RemapOp::Add(field.clone(), v));
        }
        ops.extend(
            self.rename
                .iter()
                .map(|(from, to)| RemapOp::Rename(from.clone(), to.clone())),
        );
        ops.extend(self.remove.iter().map(|f| RemapOp::Remove(f.clone())));
        for (field, to) in &self.convert {
            let conversion = match to.as_str() {
                "int" => Conversion::Int,
                "float" => Conversion::Float,
                "bool" => Conversion::Bool,
                "timestamp" => match self.timestamp_formats.get(field) {
                    Some(format) => Conversion::Timestamp(format.clone()),
                    None => return Err((key(&format!("timestamp_formats.{field}")), "converting to a timestamp needs its format (e.g. \"%d/%b/%Y:%H:%M:%S %z\")".into())),
                },
                other => return Err((key(&format!("convert.{field}")), format!("expected \"int\", \"float\", \"bool\" or \"timestamp\", got {other:?}"))),
            };
            ops.push(RemapOp::Convert(field.clone(), conversion));
        }
        ops.extend(
            self.severity_from
                .iter()
                .map(|f| RemapOp::SeverityFrom(f.clone())),
        );
        ops.extend(
            self.facility_from
                .iter()
                .map(|f| RemapOp::FacilityFrom(f.clone())),
        );
        Ok(ops)
    }
}

impl TransformSettings for RemapTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        if self.ops(name)?.is_empty() {
            return Err((
                format!("transforms.{name}"),
                "a remap needs at least one operation".into(),
            ));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        let strings = |m: &BTreeMap<String, String>| {
            toml::Value::Table(
                m.iter()
                    .map(|(k, v)| (k.clone(), render::text(v)))
                    .collect(),
            )
        };
        table.insert("add".into(), toml::Value::Table(self.add.clone()));
        table.insert("rename".into(), strings(&self.rename));
        table.insert(
            "remove".into(),
            toml::Value::Array(self.remove.iter().map(|f| render::text(f)).collect()),
        );
        table.insert("convert".into(), strings(&self.convert));
        table.insert("timestamp_formats".into(), strings(&self.timestamp_formats));
        if let Some(f) = &self.severity_from {
            table.insert("severity_from".into(), render::text(f));
        }
        if let Some(f) = &self.facility_from {
            table.insert("facility_from".into(), render::text(f));
        }
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let ops = self
            .ops(name)
            .map_err(|(key, message)| TransformError::Invalid {
                name: name.to_string(),
                key,
                message,
            })?;
        Ok(Box::new(t::Remap::new(name, ops)))
    }
}

/// The largest key table one throttle keeps (per shard).
pub const MAX_THROTTLE_KEYS: u64 = 1_000_000;

fn default_max_keys() -> u64 {
    10_000
}

/// `type = "throttle"`: a token bucket of `rate` events per second and `burst`, per key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    /// Events per second (per key, per shard).
    pub rate: f64,
    /// Events allowed at once (default: one second's worth).
    pub burst: Option<u32>,
    /// `hostname`, `appname`, `source_ip`, any field; unset: one bucket for all.
    pub key_field: Option<String>,
    /// Keys tracked at once; events of further keys share one overflow bucket.
    #[serde(default = "default_max_keys")]
    pub max_keys: u64,
}

impl ThrottleTransform {
    fn burst(&self) -> u32 {
        self.burst
            .unwrap_or_else(|| self.rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
    }
}

impl TransformSettings for ThrottleTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("transforms.{name}.{k}");
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 1e9) {
            return Err((
                key("rate"),
                "must be above 0 and at most 1e9 events per second".into(),
            ));
        }
        if self.burst == Some(0) {
            return Err((key("burst"), "must be at least 1".into()));
        }
        if !(1..=MAX_THROTTLE_KEYS).contains(&self.max_keys) {
            return Err((
                key("max_keys"),
                format!("must be between 1 and {MAX_THROTTLE_KEYS}"),
            ));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert("rate".into(), toml::Value::Float(self.rate));
        // Unset, the burst follows the rate (one second's worth).
        if let Some(burst) = self.burst {
            table.insert("burst".into(), toml::Value::Integer(burst.into()));
        }
        if let Some(k) = &self.key_field {
            table.insert("key_field".into(), render::text(k));
        }
        table.insert(
            "max_keys".into(),
            toml::Value::Integer(self.max_keys as i64),
        );
        table
    }
    fn build(&self, _: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        Ok(Box::new(t::Throttle {
            state: pipeline::rate::Throttle::new(self.rate, self.burst(), self.max_keys as usize),
            key_field: self.key_field.as_ref().map(|k| k.as_bytes().to_vec()),
            scratch: Vec::new(),
        }))
    }
}

/// `type = "sample"`: keeps 1 in `rate`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    pub rate: u64,
    /// Keep or drop all events of one key value together (by a stable hash).
    pub key_field: Option<String>,
}

impl TransformSettings for SampleTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        if self.rate == 0 {
            return Err((
                format!("transforms.{name}.rate"),
                "must be at least 1 (1 keeps every event)".into(),
            ));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert(
            "rate".into(),
            toml::Value::Integer(self.rate.min(i64::MAX as u64) as i64),
        );
        if let Some(k) = &self.key_field {
            table.insert("key_field".into(), render::text(k));
        }
        table
    }
    fn build(&self, _: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        Ok(Box::new(t::Sample {
            state: pipeline::rate::Sample::new(self.rate),
            key_field: self.key_field.as_ref().map(|k| k.as_bytes().to_vec()),
            scratch: Vec::new(),
        }))
    }
}

fn default_max_lines() -> u64 {
    500
}
fn default_max_bytes() -> u64 {
    1 << 20
}
fn one_second() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

/// The largest joined event (a WAL record must stay under the storage limit).
pub const MAX_JOINED_BYTES: u64 = 16 << 20;

/// `type = "multiline"`: joins the lines of one TCP connection that form one event. Its
/// inputs must be TCP sources that feed nothing else (the join happens per connection, before
/// any other transform).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineTransform {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub inputs: Vec<String>,
    /// A line whose message matches begins an event.
    pub start_pattern: Option<RegexText>,
    /// A line whose message matches continues the event.
    pub continuation_pattern: Option<RegexText>,
    #[serde(default = "default_max_lines")]
    pub max_lines: u64,
    #[serde(
        default = "default_max_bytes",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub max_bytes: u64,
    /// A pending event is emitted this long after its last line.
    #[serde(default = "one_second", deserialize_with = "crate::units::de_duration")]
    pub timeout: std::time::Duration,
}

impl MultilineTransform {
    fn rule(&self, name: &str) -> Result<pipeline::multiline::JoinRule, TransformError> {
        use pipeline::multiline::JoinMode;
        let (pattern, mode) = match (&self.start_pattern, &self.continuation_pattern) {
            (Some(p), None) => (p.compile(name, "start_pattern")?, JoinMode::Start),
            (None, Some(p)) => (
                p.compile(name, "continuation_pattern")?,
                JoinMode::Continuation,
            ),
            _ => {
                return Err(TransformError::Invalid {
                    name: name.to_string(),
                    key: "start_pattern".into(),
                    message: "set exactly one of start_pattern and continuation_pattern".into(),
                })
            }
        };
        Ok(pipeline::multiline::JoinRule {
            pattern,
            mode,
            max_lines: self.max_lines as usize,
            max_bytes: self.max_bytes as usize,
            timeout: self.timeout,
        })
    }
}

impl TransformSettings for MultilineTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.rule(name).map_err(|e| match e {
            TransformError::Invalid { key, message, .. } => {
                (format!("transforms.{name}.{key}"), message)
            }
        })?;
        let key = |k: &str| format!("transforms.{name}.{k}");
        if !(1..=100_000).contains(&self.max_lines) {
            return Err((key("max_lines"), "must be between 1 and 100000".into()));
        }
        if !(1024..=MAX_JOINED_BYTES).contains(&self.max_bytes) {
            return Err((
                key("max_bytes"),
                format!("must be between 1KiB and {}MiB", MAX_JOINED_BYTES >> 20),
            ));
        }
        if self.timeout < std::time::Duration::from_millis(10)
            || self.timeout > std::time::Duration::from_secs(3600)
        {
            return Err((key("timeout"), "must be between 10ms and 1h".into()));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        if let Some(p) = &self.start_pattern {
            table.insert("start_pattern".into(), render::text(&p.0));
        }
        if let Some(p) = &self.continuation_pattern {
            table.insert("continuation_pattern".into(), render::text(&p.0));
        }
        table.insert(
            "max_lines".into(),
            toml::Value::Integer(self.max_lines as i64),
        );
        table.insert("max_bytes".into(), render::bytes(self.max_bytes));
        table.insert("timeout".into(), render::duration(self.timeout));
        table
    }
    fn build(&self, _: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        Ok(Box::new(t::Joined))
    }
    fn join_rule(
        &self,
        name: &str,
    ) -> Result<Option<pipeline::multiline::JoinRule>, TransformError> {
        self.rule(name).map(Some)
    }
}
