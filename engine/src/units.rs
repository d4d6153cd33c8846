//! How config values are read (sizes, durations, `FromStr` policies, snake_case enum spellings) and
//! bounded ([`Bounds`]). Every reader reports through serde, so errors carry the key's line.

use std::cell::RefCell;
use std::str::FromStr;
use std::time::Duration;

use serde::{de, Deserialize, Deserializer};

pub(crate) const MIB: u64 = 1 << 20;
pub(crate) const HOUR: Duration = Duration::from_secs(3600);
pub(crate) const DAY: Duration = Duration::from_secs(86_400);

thread_local! {
    /// Deprecated spellings met while the current file was read (drained by the caller).
    static DEPRECATIONS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Notes a deprecated spelling (reported as a warning once the file is read).
pub(crate) fn deprecated(message: String) {
    DEPRECATIONS.with(|d| d.borrow_mut().push(message));
}

/// The deprecations noted since the last call.
pub(crate) fn take_deprecations() -> Vec<String> {
    DEPRECATIONS.with(|d| std::mem::take(&mut *d.borrow_mut()))
}

/// Reads one of `choices` (snake_case, as Vector spells enum values). The kebab-case
/// spelling earlier versions used (`octet-counting`) is still accepted, with a warning.
pub(crate) fn snake_case<'de, D, T: Copy>(d: D, choices: &[(&str, T)]) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let s = String::deserialize(d)?;
    let snake = s.replace('-', "_");
    match choices.iter().find(|(name, _)| *name == snake) {
        Some((name, value)) => {
            if snake != s {
                deprecated(format!("{s:?} is deprecated: write {name:?}"));
            }
            Ok(*value)
        }
        None => {
            let names: Vec<String> = choices.iter().map(|(n, _)| format!("{n:?}")).collect();
            Err(de::Error::custom(format!(
                "expected one of {}, got {s:?}",
                names.join(", ")
            )))
        }
    }
}

pub(crate) fn de_from_str<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let s = String::deserialize(d)?;
    s.parse().map_err(de::Error::custom)
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| de::Error::custom(format!("expected a duration like \"5s\", got {s:?} ({e})")))
}

pub(crate) fn de_opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(Some)
}

pub(crate) fn de_opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_bytes(d).map(Some)
}

/// A size: `"64KiB"`, `"100MB"`, `"128 MiB"` or a plain number of bytes.
pub(crate) fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(s) => s
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                de::Error::custom(format!("expected a size like \"64KiB\", got {s:?} ({e})"))
            }),
    }
}

/// Values checked against their bounds; keeps the first one outside them.
#[derive(Default)]
pub struct Bounds {
    first_violation: Option<(String, String)>,
}

impl Bounds {
    fn check<T: PartialOrd + Copy>(
        &mut self,
        key: &str,
        value: T,
        range: std::ops::RangeInclusive<T>,
        show: impl Fn(T) -> String,
    ) {
        if self.first_violation.is_none() && !range.contains(&value) {
            let message = format!(
                "must be between {} and {} (got {})",
                show(*range.start()),
                show(*range.end()),
                show(value)
            );
            self.first_violation = Some((key.to_string(), message));
        }
    }

    pub fn size(&mut self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) {
        self.check(key, value, range, |b| bytesize::ByteSize(b).to_string());
    }

    pub fn duration(
        &mut self,
        key: &str,
        value: Duration,
        range: std::ops::RangeInclusive<Duration>,
    ) {
        self.check(key, value, range, |d| {
            humantime::format_duration(d).to_string()
        });
    }

    pub fn count(&mut self, key: &str, value: u64, range: std::ops::RangeInclusive<u64>) {
        self.check(key, value, range, |n| n.to_string());
    }

    pub fn into_result(self) -> Result<(), (String, String)> {
        self.first_violation.map_or(Ok(()), Err)
    }
}

/// The `type` key of a typed table (its value was checked by the first pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeTag;

impl<'de> Deserialize<'de> for TypeTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d).map(|_| TypeTag)
    }
}

/// Values as `sluice config` writes them (they read back to the same config).
pub(crate) mod render {
    use toml::Value;

    pub(crate) fn duration(d: std::time::Duration) -> Value {
        Value::String(humantime::format_duration(d).to_string())
    }

    pub(crate) fn bytes(b: u64) -> Value {
        Value::Integer(b.min(i64::MAX as u64) as i64)
    }

    pub(crate) fn text(s: &str) -> Value {
        Value::String(s.to_string())
    }
}
