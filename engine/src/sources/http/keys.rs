//! API keys of an HTTP source: which key a request presents, and each key's rate limit.

use std::sync::Mutex;
use std::time::Instant;

use serde::Deserialize;

use crate::units::render;

/// `[[sources.NAME.api_keys]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Recorded on each event as `api_key_name` (the key itself never is).
    pub name: String,
    /// The secret (from the environment: `key = "${BILLING_KEY}"`).
    pub key: String,
    /// Events per second this key may send, summed over every shard; unset: no limit.
    #[serde(default)]
    pub rate_limit: Option<u32>,
}

/// Shortest key accepted (a guessable key is no key).
const MIN_KEY_LEN: usize = 16;

pub(super) fn check(keys: &[ApiKey]) -> Result<(), (String, String)> {
    for (i, k) in keys.iter().enumerate() {
        let key = |field: &str| format!("api_keys[{i}].{field}");
        if k.name.is_empty() || !k.name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err((key("name"), "must be printable ASCII without spaces".into()));
        }
        if k.key.len() < MIN_KEY_LEN {
            return Err((
                key("key"),
                format!("must be at least {MIN_KEY_LEN} characters"),
            ));
        }
        if k.rate_limit == Some(0) {
            return Err((
                key("rate_limit"),
                "must be at least 1 event per second".into(),
            ));
        }
        if keys[..i].iter().any(|o| o.name == k.name) {
            return Err((key("name"), "another key has this name".into()));
        }
        if keys[..i].iter().any(|o| o.key == k.key) {
            return Err((key("key"), "another key has the same secret".into()));
        }
    }
    Ok(())
}

/// The keys as `sluice config` shows them: secrets redacted (to a text that still reads back
/// as a distinct key of the allowed length).
pub(super) fn render(keys: &[ApiKey]) -> toml::Value {
    toml::Value::Array(
        keys.iter()
            .map(|k| {
                let mut t = toml::Table::new();
                t.insert("name".into(), render::text(&k.name));
                let redacted = format!("<redacted key of {}>", k.name);
                t.insert("key".into(), render::text(&redacted));
                if let Some(rate) = k.rate_limit {
                    t.insert("rate_limit".into(), toml::Value::Integer(rate.into()));
                }
                toml::Value::Table(t)
            })
            .collect(),
    )
}

/// The keys as the shards check them (shared by every shard of the source).
#[derive(Debug)]
pub struct ApiKeys {
    keys: Vec<(ApiKey, Option<Mutex<Bucket>>)>,
}

/// What a request's credentials come to.
#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// No keys configured: anyone may send.
    Open,
    /// The key with this index.
    Key(usize),
    /// No key presented (401).
    Missing,
    /// A key nobody has (403).
    Unknown,
}

impl ApiKeys {
    pub fn new(keys: &[ApiKey]) -> ApiKeys {
        ApiKeys {
            keys: keys
                .iter()
                .map(|k| (k.clone(), k.rate_limit.map(|r| Mutex::new(Bucket::new(r)))))
                .collect(),
        }
    }

    /// Checks a presented key (`None`: none) against every key, in constant time per key.
    pub fn access(&self, presented: Option<&[u8]>) -> Access {
        use subtle::ConstantTimeEq;
        if self.keys.is_empty() {
            return Access::Open;
        }
        let Some(presented) = presented else {
            return Access::Missing;
        };
        let mut found = None;
        for (i, (k, _)) in self.keys.iter().enumerate() {
            if bool::from(k.key.as_bytes().ct_eq(presented)) {
                found = Some(i);
            }
        }
        found.map_or(Access::Unknown, Access::Key)
    }

    pub fn name(&self, key: usize) -> Option<&str> {
        self.keys.get(key).map(|(k, _)| k.name.as_str())
    }

    /// Takes `events` from the key's rate limit: `Err(seconds)` to wait when it is spent.
    pub fn take(&self, key: usize, events: u64) -> Result<(), u64> {
        match self.keys.get(key).and_then(|(_, b)| b.as_ref()) {
            Some(bucket) => bucket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(events, Instant::now()),
            None => Ok(()),
        }
    }
}

/// A token bucket of one second's worth of events that may run into debt: a request larger
/// than a second's worth still passes when the bucket is not empty, and the next ones wait
/// until the debt is paid (so no request size is refused forever).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Bucket {
        Bucket {
            rate: rate.into(),
            tokens: rate.into(),
            at: Instant::now(),
        }
    }

    fn take(&mut self, events: u64, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens <= 0.0 {
            return Err((-self.tokens / self.rate).ceil().max(1.0) as u64);
        }
        self.tokens -= events as f64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str, key: &str, rate: Option<u32>) -> ApiKey {
        ApiKey {
            name: name.into(),
            key: key.into(),
            rate_limit: rate,
        }
    }

    #[test]
    fn keys_are_told_apart() {
        let keys = ApiKeys::new(&[
            key("billing", "0123456789abcdef-b", None),
            key("web", "0123456789abcdef-w", None),
        ]);
        assert_eq!(keys.access(Some(b"0123456789abcdef-w")), Access::Key(1));
        assert_eq!(keys.access(Some(b"0123456789abcdef-x")), Access::Unknown);
        assert_eq!(keys.access(None), Access::Missing);
        assert_eq!(ApiKeys::new(&[]).access(None), Access::Open);
        assert_eq!(keys.name(0), Some("billing"));
    }

    #[test]
    fn short_duplicate_and_nameless_keys_are_refused() {
        let long = "0123456789abcdef";
        assert_eq!(
            check(&[key("a", "short", None)]).unwrap_err().0,
            "api_keys[0].key"
        );
        assert_eq!(
            check(&[key("a", long, None), key("a", "other-0123456789", None)])
                .unwrap_err()
                .0,
            "api_keys[1].name"
        );
        assert_eq!(
            check(&[key("", long, None)]).unwrap_err().0,
            "api_keys[0].name"
        );
        assert_eq!(
            check(&[key("a", long, Some(0))]).unwrap_err().0,
            "api_keys[0].rate_limit"
        );
    }

    #[test]
    fn the_bucket_refills_and_lets_debt_be_paid() {
        let start = Instant::now();
        let mut b = Bucket::new(100);
        b.at = start;
        assert_eq!(
            b.take(250, start),
            Ok(()),
            "a full bucket takes a large request"
        );
        assert_eq!(b.take(1, start), Err(2), "150 events of debt: two seconds");
        let later = start + Duration::from_secs(2);
        assert_eq!(b.take(1, later), Ok(()));
    }
}
