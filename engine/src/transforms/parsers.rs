//! The config of the parse transforms. Shared keys: `field` (what to parse: `"message"` by
//! default, `".frame"` for the whole frame, or a parsed field's path), `target` (put the result
//! under this path; default: merged at the event's root) and `on_error` (`"keep"` flagged, or
//! `"drop"`). Each type adds its own keys ([`ParseKind`]); `parse_transform!` writes the struct
//! with the shared keys and its `TransformSettings`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::{one_byte, OnErrorConfig, RegexText, TransformError, TransformSettings};
use crate::units::{render, TypeTag};
use pipeline::parse::kv::KvOptions;
use pipeline::transforms::{self as t, AccessFormat, Input};
use pipeline::Transform;

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
    fn target(&self) -> Option<&str> {
        self.target.as_deref()
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

/// What one parse type adds to the shared keys.
trait ParseKind {
    /// Checks of its own keys.
    fn check_own(&self, _name: &str) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Its own keys, for `sluice config`.
    fn render_own(&self, _table: &mut toml::Table) {}
    /// A fresh instance.
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError>;
}

/// A `(key, message)` refusal as a build error.
fn invalid(name: &str) -> impl Fn((String, String)) -> TransformError + '_ {
    move |(key, message)| TransformError::Invalid {
        name: name.to_string(),
        key,
        message,
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

        impl TransformSettings for $name {
            fn inputs(&self) -> &[String] {
                &self.inputs
            }
            fn check(&self, name: &str) -> Result<(), (String, String)> {
                self.common().check(name)?;
                self.check_own(name)
            }
            fn render(&self) -> toml::Table {
                let mut table = toml::Table::new();
                self.common().render_into(&mut table);
                self.render_own(&mut table);
                table
            }
            fn build(&self, name: &str) -> Result<Box<dyn Transform>, TransformError> {
                self.transform(name, &self.common())
            }
        }
    };
}

parse_transform!(
    /// `type = "parse_json"`.
    ParseJsonTransform {}
);

impl ParseKind for ParseJsonTransform {
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        Ok(Box::new(t::ParseJson::new(
            name,
            c.input(),
            c.target(),
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_regex"`: `pattern` with named captures (`(?P<user>\w+)`).
    ParseRegexTransform { pattern: RegexText }
);

impl ParseKind for ParseRegexTransform {
    fn check_own(&self, name: &str) -> Result<(), (String, String)> {
        let key = format!("transforms.{name}.pattern");
        let regex = self
            .pattern
            .compile(name, "pattern")
            .map_err(|e| (key.clone(), e.to_string()))?;
        if regex.capture_names().flatten().next().is_none() {
            return Err((
                key,
                "has no named capture group (`(?P<name>...)`): it would add no field".into(),
            ));
        }
        Ok(())
    }
    fn render_own(&self, table: &mut toml::Table) {
        table.insert("pattern".into(), render::text(&self.pattern.0));
    }
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        let regex = self.pattern.compile(name, "pattern")?;
        Ok(Box::new(t::ParseRegex::new(
            name,
            c.input(),
            c.target(),
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

impl ParseKind for ParseKvTransform {
    fn check_own(&self, name: &str) -> Result<(), (String, String)> {
        self.options(name).map(|_| ())
    }
    fn render_own(&self, table: &mut toml::Table) {
        if let Some(s) = &self.field_split {
            table.insert("field_split".into(), render::text(s));
        }
        table.insert("value_split".into(), render::text(&self.value_split));
    }
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        let options = self.options(name).map_err(invalid(name))?;
        Ok(Box::new(t::ParseKv::new(
            name,
            c.input(),
            c.target(),
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

fn any_access_format() -> AccessFormatConfig {
    AccessFormatConfig(AccessFormat::Any)
}

parse_transform!(
    /// `type = "parse_apache"` / `"parse_nginx"`: access lines in the Common Log Format or the
    /// combined format (`format = "auto"` takes both).
    ParseAccessTransform { format: AccessFormatConfig = "any_access_format" }
);

impl ParseKind for ParseAccessTransform {
    fn render_own(&self, table: &mut toml::Table) {
        table.insert("format".into(), render::text(self.format.name()));
    }
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        let format = self.format.0;
        Ok(Box::new(t::ParseAccess::new(
            name,
            c.input(),
            c.target(),
            format,
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_auto"`: JSON, an access line or `key=value` pairs; `parsed_as` says which.
    ParseAutoTransform {}
);

impl ParseKind for ParseAutoTransform {
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        Ok(Box::new(t::ParseAuto::new(
            name,
            c.input(),
            c.target(),
            c.on_error.0,
        )))
    }
}

parse_transform!(
    /// `type = "parse_grok"`: `pattern` (or `patterns`, tried in order) in grok syntax, with
    /// the bundled library (docs/processing.md lists it) and `custom_patterns`.
    ParseGrokTransform {
        pattern: Option<String>,
        patterns: Option<Vec<String>>,
        /// NAME → regex (may use `%{OTHER}`); overrides a bundled pattern of the same name.
        custom_patterns: Option<BTreeMap<String, String>>,
    }
);

impl ParseGrokTransform {
    fn compile(&self, name: &str) -> Result<pipeline::parse::grok::GrokSet, (String, String)> {
        let patterns: Vec<String> = self
            .pattern
            .iter()
            .chain(self.patterns.iter().flatten())
            .cloned()
            .collect();
        let key = if self.pattern.is_some() {
            "pattern"
        } else {
            "patterns"
        };
        if patterns.is_empty() {
            return Err((
                format!("transforms.{name}.pattern"),
                "set `pattern` (or `patterns`)".into(),
            ));
        }
        let custom = self.custom_patterns.clone().unwrap_or_default();
        pipeline::parse::grok::compile(&patterns, &custom)
            .map_err(|e| (format!("transforms.{name}.{key}"), e.to_string()))
    }
}

impl ParseKind for ParseGrokTransform {
    fn check_own(&self, name: &str) -> Result<(), (String, String)> {
        self.compile(name).map(|_| ())
    }
    fn render_own(&self, table: &mut toml::Table) {
        let texts =
            |list: &[String]| toml::Value::Array(list.iter().map(|p| render::text(p)).collect());
        if let Some(p) = &self.pattern {
            table.insert("pattern".into(), render::text(p));
        }
        if let Some(list) = &self.patterns {
            table.insert("patterns".into(), texts(list));
        }
        if let Some(custom) = &self.custom_patterns {
            let t = custom
                .iter()
                .map(|(k, v)| (k.clone(), render::text(v)))
                .collect();
            table.insert("custom_patterns".into(), toml::Value::Table(t));
        }
    }
    fn transform(&self, name: &str, c: &ParseCommon) -> Result<Box<dyn Transform>, TransformError> {
        let patterns = self.compile(name).map_err(invalid(name))?;
        Ok(Box::new(t::ParseGrok::new(
            name,
            c.input(),
            c.target(),
            patterns,
            c.on_error.0,
        )))
    }
}
