//! What a sink is handed (a [`Batch`] of encoded events) and what it answers (which events
//! it confirmed, which to send again, which it rejected for good), and the batch limits.

use std::time::Duration;

/// Encoded events back to back, each with its WAL record when the output keeps them (an
/// output with a dead-letter queue: a rejected event is stored as its record).
#[derive(Debug, Default, Clone)]
pub struct Batch {
    bytes: Vec<u8>,
    /// End of each event in `bytes`.
    ends: Vec<usize>,
    keep_records: bool,
    records: Vec<u8>,
    record_ends: Vec<usize>,
    /// Each event's shard.
    shards: Vec<u16>,
}

impl Batch {
    pub fn new(keep_records: bool) -> Self {
        Batch {
            keep_records,
            ..Batch::default()
        }
    }

    /// A batch of `events` (raw encoded bytes each), for tests and tools.
    pub fn of(events: &[&[u8]]) -> Self {
        let mut b = Batch::default();
        for e in events {
            b.bytes.extend_from_slice(e);
            b.end_event(&[], 0);
        }
        b
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every event's bytes, back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Event `i`'s encoded bytes.
    pub fn event(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn events(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(|i| self.event(i))
    }

    /// Event `i`'s WAL record (empty when the output does not keep records).
    pub fn record(&self, i: usize) -> &[u8] {
        if !self.keep_records {
            return &[];
        }
        let start = if i == 0 { 0 } else { self.record_ends[i - 1] };
        &self.records[start..self.record_ends[i]]
    }

    /// Event `i`'s shard.
    pub fn shard(&self, i: usize) -> usize {
        self.shards.get(i).copied().map_or(0, usize::from)
    }

    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.records.clear();
        self.record_ends.clear();
        self.shards.clear();
    }

    /// Where the next event's encoding goes (then [`end_event`](Self::end_event)).
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// The event written into [`buffer`](Self::buffer) since the last one is complete.
    pub(crate) fn end_event(&mut self, record: &[u8], shard: usize) {
        self.ends.push(self.bytes.len());
        self.shards.push(shard as u16);
        if self.keep_records {
            self.records.extend_from_slice(record);
            self.record_ends.push(self.records.len());
        }
    }

    /// A new batch of the events at `indices` (in that order).
    pub(crate) fn subset(&self, indices: impl IntoIterator<Item = usize>) -> Batch {
        let mut b = Batch::new(self.keep_records);
        for i in indices {
            b.bytes.extend_from_slice(self.event(i));
            b.end_event(self.record(i), self.shard(i));
        }
        b
    }
}

/// A sink's answer to a batch it could send: empty when every event is confirmed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdicts {
    /// Events (index in the batch) the destination asks to be sent again (e.g. 429).
    pub retry: Vec<usize>,
    /// Events the destination will never take, with its reason: to the dead-letter queue.
    pub rejected: Vec<(usize, String)>,
    /// What the destination asked to wait before sending again.
    pub retry_after: Option<Duration>,
}

impl Verdicts {
    /// Every event confirmed.
    pub fn all_confirmed() -> Self {
        Verdicts::default()
    }

    pub fn is_all_confirmed(&self) -> bool {
        self.retry.is_empty() && self.rejected.is_empty()
    }
}

/// What kind of failure: whether sending the same again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection error, timeout, 429, 5xx: the same batch again, after a backoff.
    Retriable,
    /// The destination refused the whole batch for good (e.g. HTTP 400): every event of it
    /// to the dead-letter queue.
    Rejected,
    /// The destination refused the request as too large (HTTP 413): the batch is split in
    /// two; a single event too large is rejected.
    TooLarge,
}

/// A batch the sink could not deliver as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened (logged; the reason stored with dead-lettered events).
    pub error: String,
    /// What the destination asked to wait before trying again (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn retriable(error: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Retriable,
            error: error.into(),
            retry_after: None,
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::retriable(e.to_string())
    }
}

/// What a sink's `deliver` returns.
pub type DeliveryResult = Result<Verdicts, Failure>;

/// `batch.max_events`, `batch.max_bytes`, `batch.timeout` of files, TCP and the console
/// (each optional; defaults [`BatchSettings::STREAM`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct StreamBatch(#[serde(deserialize_with = "stream_keys::deserialize")] pub BatchSettings);

/// `batch.*` of the request-based outputs (defaults [`BatchSettings::REQUEST`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct RequestBatch(#[serde(deserialize_with = "request_keys::deserialize")] pub BatchSettings);

impl Default for StreamBatch {
    fn default() -> Self {
        StreamBatch(BatchSettings::STREAM)
    }
}

impl Default for RequestBatch {
    fn default() -> Self {
        RequestBatch(BatchSettings::REQUEST)
    }
}

/// The keys as given (each optional).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchKeys {
    max_events: Option<u32>,
    #[serde(default, deserialize_with = "crate::units::de_opt_bytes")]
    max_bytes: Option<u64>,
    #[serde(default, deserialize_with = "crate::units::de_opt_duration")]
    timeout: Option<Duration>,
}

impl BatchKeys {
    fn resolve(self, defaults: BatchSettings) -> BatchSettings {
        BatchSettings {
            max_events: self.max_events.unwrap_or(defaults.max_events),
            max_bytes: self.max_bytes.unwrap_or(defaults.max_bytes),
            timeout: self.timeout.unwrap_or(defaults.timeout),
        }
    }
}

mod stream_keys {
    use super::{BatchKeys, BatchSettings};
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BatchSettings, D::Error> {
        <BatchKeys as serde::Deserialize>::deserialize(d).map(|k| k.resolve(BatchSettings::STREAM))
    }
}

mod request_keys {
    use super::{BatchKeys, BatchSettings};
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BatchSettings, D::Error> {
        <BatchKeys as serde::Deserialize>::deserialize(d).map(|k| k.resolve(BatchSettings::REQUEST))
    }
}

/// How much one request (one write, for files) carries, and how long a batch that is not
/// full waits for more events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    pub max_events: u32,
    pub max_bytes: u64,
    pub timeout: Duration,
}

impl BatchSettings {
    /// Files, TCP and the console: everything available at once, no waiting.
    pub const STREAM: BatchSettings = BatchSettings {
        max_events: 100_000,
        max_bytes: 10 << 20,
        timeout: Duration::ZERO,
    };
    /// Request-based outputs (HTTP, Elasticsearch): Vector's defaults (10 MB, 1 s), and at
    /// most 10,000 events per request.
    pub const REQUEST: BatchSettings = BatchSettings {
        max_events: 10_000,
        max_bytes: 10_000_000,
        timeout: Duration::from_secs(1),
    };

    /// The keys against their bounds (under `prefix`).
    pub(crate) fn check_bounds(&self, prefix: &str, b: &mut crate::units::Bounds) {
        b.count(
            &format!("{prefix}.batch.max_events"),
            self.max_events.into(),
            1..=1_000_000,
        );
        b.size(
            &format!("{prefix}.batch.max_bytes"),
            self.max_bytes,
            1024..=(256 << 20),
        );
        b.duration(
            &format!("{prefix}.batch.timeout"),
            self.timeout,
            Duration::ZERO..=crate::units::HOUR,
        );
    }

    pub(crate) fn render(&self) -> toml::Value {
        let mut t = toml::Table::new();
        t.insert(
            "max_events".into(),
            toml::Value::Integer(self.max_events.into()),
        );
        t.insert(
            "max_bytes".into(),
            crate::units::render::bytes(self.max_bytes),
        );
        t.insert(
            "timeout".into(),
            crate::units::render::duration(self.timeout),
        );
        toml::Value::Table(t)
    }

    /// Splits `batch` into consecutive runs of events within the limits (each at least one
    /// event): the end index of each run.
    pub(crate) fn runs(&self, batch: &Batch) -> Vec<usize> {
        let mut runs = Vec::new();
        let (mut events, mut bytes) = (0u64, 0u64);
        for i in 0..batch.len() {
            let len = batch.event(i).len() as u64;
            let full = events >= u64::from(self.max_events) || bytes + len > self.max_bytes;
            if events > 0 && full {
                runs.push(i);
                events = 0;
                bytes = 0;
            }
            events += 1;
            bytes += len;
        }
        if events > 0 {
            runs.push(batch.len());
        }
        runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_respect_events_and_bytes_and_take_an_oversize_event_alone() {
        let settings = BatchSettings {
            max_events: 3,
            max_bytes: 10,
            timeout: Duration::ZERO,
        };
        let batch = Batch::of(&[b"aa", b"bb", b"cc", b"dd", b"0123456789ab", b"ee"]);
        assert_eq!(settings.runs(&batch), vec![3, 4, 5, 6]);
        assert!(settings.runs(&Batch::default()).is_empty());
    }

    #[test]
    fn a_subset_keeps_events_records_and_shards() {
        let mut b = Batch::new(true);
        for (i, e) in ["a", "bb", "ccc"].iter().enumerate() {
            b.buffer().extend_from_slice(e.as_bytes());
            b.end_event(format!("rec{i}").as_bytes(), i);
        }
        let s = b.subset([2, 0]);
        assert_eq!(s.events().collect::<Vec<_>>(), vec![&b"ccc"[..], b"a"]);
        assert_eq!((s.record(0), s.shard(0)), (&b"rec2"[..], 2));
        assert_eq!((s.record(1), s.shard(1)), (&b"rec0"[..], 0));
    }
}
