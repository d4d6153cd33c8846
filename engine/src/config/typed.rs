//! Sources, transforms and sinks typed by their `type`, with errors that keep the key and the line.
//!
//! A serde-tagged enum would buffer each table and lose the positions of its errors. Instead
//! the file is read twice: the first pass ([`read_kinds`]) takes only every source's and
//! sink's `type`; the second deserializes each table straight from the text into the struct
//! its type names ([`de_sources`], [`de_sinks`]), so an unknown key or a wrong value is
//! reported at its line, as for every other key.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::sinks::{SinkConfig, SinkType};
use crate::sources::{SourceConfig, SourceType};
use crate::transforms::{TransformConfig, TransformType};

/// Every source's and sink's type, by name (the first pass).
#[derive(Debug, Default, Deserialize)]
pub(super) struct Kinds {
    #[serde(default)]
    sources: BTreeMap<String, Kind<SourceType>>,
    #[serde(default)]
    sinks: BTreeMap<String, Kind<SinkType>>,
    #[serde(default)]
    transforms: BTreeMap<String, Kind<TransformType>>,
}

#[derive(Debug, Deserialize)]
struct Kind<T> {
    #[serde(rename = "type")]
    kind: T,
}

thread_local! {
    /// The first pass's result while the second pass runs (on the same thread).
    static KINDS: RefCell<Kinds> = RefCell::new(Kinds::default());
}

/// The first pass: every source's and sink's `type` (missing or unknown: an error at its line).
pub(super) fn read_kinds(text: &str) -> Result<Kinds, toml::de::Error> {
    toml::from_str(text)
}

/// Runs the second pass `read` with the first pass's `kinds` in reach.
pub(super) fn with_kinds<R>(kinds: Kinds, read: impl FnOnce() -> R) -> R {
    KINDS.with(|k| *k.borrow_mut() = kinds);
    let result = read();
    KINDS.with(|k| *k.borrow_mut() = Kinds::default());
    result
}

/// A table read as the struct its type names.
trait Typed: Sized {
    const WHAT: &'static str;
    fn read<'de, A: MapAccess<'de>>(name: &str, map: &mut A) -> Result<Self, A::Error>;
}

fn missing_type<E: de::Error>(what: &str, name: &str) -> E {
    E::custom(format!("{what}.{name}: missing `type`"))
}

impl Typed for SourceConfig {
    const WHAT: &'static str = "sources";
    fn read<'de, A: MapAccess<'de>>(name: &str, map: &mut A) -> Result<Self, A::Error> {
        let kind = KINDS.with(|k| k.borrow().sources.get(name).map(|k| k.kind));
        SourceConfig::read(kind.ok_or_else(|| missing_type(Self::WHAT, name))?, map)
    }
}

impl Typed for SinkConfig {
    const WHAT: &'static str = "sinks";
    fn read<'de, A: MapAccess<'de>>(name: &str, map: &mut A) -> Result<Self, A::Error> {
        let kind = KINDS.with(|k| k.borrow().sinks.get(name).map(|k| k.kind));
        SinkConfig::read(kind.ok_or_else(|| missing_type(Self::WHAT, name))?, map)
    }
}

impl Typed for TransformConfig {
    const WHAT: &'static str = "transforms";
    fn read<'de, A: MapAccess<'de>>(name: &str, map: &mut A) -> Result<Self, A::Error> {
        let kind = KINDS.with(|k| k.borrow().transforms.get(name).map(|k| k.kind));
        TransformConfig::read(kind.ok_or_else(|| missing_type(Self::WHAT, name))?, map)
    }
}

struct TypedMap<T>(PhantomData<T>);

impl<'de, T: Typed> Visitor<'de> for TypedMap<T> {
    type Value = BTreeMap<String, T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "a table of {}", T::WHAT)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = T::read(&name, &mut map)?;
            out.insert(name, value);
        }
        Ok(out)
    }
}

pub(super) fn de_sources<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SourceConfig>, D::Error> {
    d.deserialize_map(TypedMap(PhantomData))
}

pub(super) fn de_sinks<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SinkConfig>, D::Error> {
    d.deserialize_map(TypedMap(PhantomData))
}

pub(super) fn de_transforms<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, TransformConfig>, D::Error> {
    d.deserialize_map(TypedMap(PhantomData))
}
