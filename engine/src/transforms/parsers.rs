//! The config of the parse transforms. Shared keys: `field` (what to parse: `"message"` by
//! default, `".frame"` for the whole frame, or a parsed field's path), `target` (put the result
//! under this path; default: merged at the event's root) and `on_error` (`"keep"` flagged, or
//! `"drop"`).

use serde::{Deserialize, Deserializer};

use super::{one_byte, OnErrorConfig, RegexText, TransformError, TransformSettings};
use crate::units::{render, TypeTag};
use pipeline::parse::kv::KvOptions;
use pipeline::transforms::{self as t, AccessFormat, Input};

fn message() -> String {
    "message".to_string()
}

/// The keys every parse transform has.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseCommon {
    pub field: String,
    pub target: Option<String>,
    pub on_error: OnErrorConfig,
}

impl ParseCommon {
    fn render_into(&self, table: &mut toml::Table) {
        table.insert("field".into(), render::text(&self.field));
        if let Some(target) = &self.target {
            table.insert("target".into(), render::text(target));
        }
        table.insert("on_error".into(), render::text(self.on_error.name()));
    }
    fn input(&self) -> Input {
        Input::from_name(&self.field)
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        let bad = |s: &str| s.is_empty() || s.split('.').any(str::is_empty);
        if self.field != ".frame" && bad(&self.field) {
            return Err((
                format!("transforms.{name}.field"),
                "must be `message`, `.frame` or a field path".into(),
            ));
        }
        if self.target.as_deref().is_some_and(bad) {
            return Err((
                format!("transforms.{name}.target"),
                "must be a field path (`http`, `parsed.body`)".into(),
            ));
        }
        Ok(())
    }
}

macro_rules! parse_transform {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty $(= $default:literal)?),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            #[serde(rename = "type")]
            pub tag: TypeTag,
            pub inputs: Vec<String>,
            #[serde(default = "message")]
            pub field: String,
            pub target: Option<String>,
            #[serde(default)]
            pub on_error: OnErrorConfig,
            $($(#[$fdoc])* $(#[serde(default = $default)])? pub $field: $ty,)*
        }

        impl $name {
            fn common(&self) -> ParseCommon {
                ParseCommon { field: self.field.clone(), target: self.target.clone(), on_error: self.on_error }
            }
        }
    };
}

parse_transform!(
    /// `type = "parse_json"`.
    ParseJsonTransform {}
);

impl TransformSettings for ParseJsonTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        Ok(Box::new(t::ParseJson::new(
            name,
            c.input(),
            c.target.as_deref(),
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_regex"`: `pattern` with named captures (`(?P<user>\w+)`).
    ParseRegexTransform { pattern: RegexText }
);

impl TransformSettings for ParseRegexTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)?;
        let regex = self
            .pattern
            .compile(name, "pattern")
            .map_err(|e| (format!("transforms.{name}.pattern"), e.to_string()))?;
        if regex.capture_names().flatten().next().is_none() {
            return Err((
                format!("transforms.{name}.pattern"),
                "has no named capture group (`(?P<name>...)`): it would add no field".into(),
            ));
        }
        Ok(())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        table.insert("pattern".into(), render::text(&self.pattern.0));
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        let regex = self.pattern.compile(name, "pattern")?;
        Ok(Box::new(t::ParseRegex::new(
            name,
            c.input(),
            c.target.as_deref(),
            regex,
            c.on_error.0,
        )))
    }
}

fn equals_sign() -> String {
    "=".to_string()
}

parse_transform!(
    /// `type = "parse_kv"`: `key=value` pairs (FortiGate, pfSense, logfmt).
    ParseKvTransform {
        /// Between pairs: one character; unset: any run of spaces and tabs.
        field_split: Option<String>,
        /// Between key and value.
        value_split: String = "equals_sign",
    }
);

impl ParseKvTransform {
    fn options(&self, name: &str) -> Result<KvOptions, (String, String)> {
        Ok(KvOptions {
            field_split: self
                .field_split
                .as_deref()
                .map(|s| one_byte(name, "field_split", s))
                .transpose()?,
            value_split: one_byte(name, "value_split", &self.value_split)?,
        })
    }
}

impl TransformSettings for ParseKvTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)?;
        self.options(name).map(|_| ())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        if let Some(s) = &self.field_split {
            table.insert("field_split".into(), render::text(s));
        }
        table.insert("value_split".into(), render::text(&self.value_split));
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        let options = self
            .options(name)
            .map_err(|(key, message)| TransformError::Invalid {
                name: name.to_string(),
                key,
                message,
            })?;
        Ok(Box::new(t::ParseKv::new(
            name,
            c.input(),
            c.target.as_deref(),
            options,
            c.on_error.0,
        )))
    }
}

/// `format` of `parse_apache` / `parse_nginx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessFormatConfig(pub AccessFormat);

impl<'de> Deserialize<'de> for AccessFormatConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::units::snake_case(
            d,
            &[
                ("auto", AccessFormat::Any),
                ("common", AccessFormat::Common),
                ("combined", AccessFormat::Combined),
            ],
        )
        .map(AccessFormatConfig)
    }
}

impl AccessFormatConfig {
    fn name(self) -> &'static str {
        match self.0 {
            AccessFormat::Any => "auto",
            AccessFormat::Common => "common",
            AccessFormat::Combined => "combined",
        }
    }
}

parse_transform!(
    /// `type = "parse_apache"` / `"parse_nginx"`: access lines in the Common Log Format or the
    /// combined format (`format = "auto"` takes both).
    ParseAccessTransform { format: AccessFormatConfig = "any_access_format" }
);

fn any_access_format() -> AccessFormatConfig {
    AccessFormatConfig(AccessFormat::Any)
}

impl TransformSettings for ParseAccessTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        table.insert("format".into(), render::text(self.format.name()));
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        Ok(Box::new(t::ParseAccess::new(
            name,
            c.input(),
            c.target.as_deref(),
            self.format.0,
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_auto"`: JSON, an access line or `key=value` pairs; `parsed_as` says which.
    ParseAutoTransform {}
);

impl TransformSettings for ParseAutoTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        Ok(Box::new(t::ParseAuto::new(
            name,
            c.input(),
            c.target.as_deref(),
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_grok"`: `pattern` (or `patterns`, tried in order) in grok syntax, with
    /// the bundled library (`sluice` docs/processing.md lists it) and `custom_patterns`.
    ParseGrokTransform {
        pattern: Option<String>,
        patterns: Option<Vec<String>>,
        /// NAME → regex (may use `%{OTHER}`); overrides a bundled pattern of the same name.
        custom_patterns: Option<std::collections::BTreeMap<String, String>>,
    }
);

impl ParseGrokTransform {
    fn all_patterns(&self) -> Vec<String> {
        self.pattern
            .iter()
            .chain(self.patterns.iter().flatten())
            .cloned()
            .collect()
    }

    fn compile(&self, name: &str) -> Result<pipeline::parse::grok::GrokSet, (String, String)> {
        let patterns = self.all_patterns();
        if patterns.is_empty() {
            return Err((
                format!("transforms.{name}.pattern"),
                "set `pattern` (or `patterns`)".into(),
            ));
        }
        let custom = self.custom_patterns.clone().unwrap_or_default();
        pipeline::parse::grok::compile(&patterns, &custom).map_err(|e| {
            let key = if self.pattern.is_some() {
                "pattern"
            } else {
                "patterns"
            };
            (format!("transforms.{name}.{key}"), e.to_string())
        })
    }
}

impl TransformSettings for ParseGrokTransform {
    fn inputs(&self) -> &[String] {
        &self.inputs
    }
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.common().check(name)?;
        self.compile(name).map(|_| ())
    }
    fn render(&self) -> toml::Table {
        let mut table = toml::Table::new();
        self.common().render_into(&mut table);
        if let Some(p) = &self.pattern {
            table.insert("pattern".into(), render::text(p));
        }
        if let Some(list) = &self.patterns {
            table.insert(
                "patterns".into(),
                toml::Value::Array(list.iter().map(|p| render::text(p)).collect()),
            );
        }
        if let Some(custom) = &self.custom_patterns {
            let t = custom
                .iter()
                .map(|(k, v)| (k.clone(), render::text(v)))
                .collect();
            table.insert("custom_patterns".into(), toml::Value::Table(t));
        }
        table
    }
    fn build(&self, name: &str) -> Result<Box<dyn pipeline::Transform>, TransformError> {
        let c = self.common();
        let patterns = self
            .compile(name)
            .map_err(|(key, message)| TransformError::Invalid {
                name: name.to_string(),
                key,
                message,
            })?;
        Ok(Box::new(t::ParseGrok::new(
            name,
            c.input(),
            c.target.as_deref(),
            patterns,
            c.on_error.0,
        )))
    }
}
