//! The Elasticsearch / OpenSearch sink: batches as `_bulk` requests, read back per item.
//!
//! - Every document gets `_id` = a 128-bit hash (xxh3) of its WAL record: the same event sent
//!   again (a retry, a restart after `kill -9`, a dead-letter replay) is the same document,
//!   never a duplicate. With `action = "create"` the second copy is answered 409, which
//!   counts as delivered; with `"index"` it overwrites itself.
//! - The index name is `index` with `{{field}}` filled from the event and strftime codes
//!   (`%Y %m %d %H %j %y %%`) from the event's time in UTC (its timestamp, else when it was
//!   received), lowercased (Elasticsearch refuses upper case).
//! - Per item: 2xx delivered; 409 on `create` delivered (already there); 429 and 5xx sent
//!   again (only those items); any other status → the dead-letter queue with the item's
//!   error type and reason. The whole request: as [`super::http_client`] says.
//! - Data streams take `action = "create"` only, and documents need `@timestamp`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::compression::Compression;
use super::http::{json_lines, request_backoff, HttpKeys};
use super::http_client::{self, Answer, Auth, Client, TlsKeys};
use super::{Reach, SinkError, SinkSettings, StartAt};
use crate::delivery::{
    event_seconds, render_record, Batch, DeliveryResult, Failure, FailureKind, OpenedSink, Sink,
    Template, Verdicts,
};
use crate::units::{de_duration, render, Bounds, TypeTag};

/// The bulk action (`action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Add the document unless one with its `_id` exists (also what data streams take).
    #[default]
    Create,
    /// Add or replace the document with its `_id`.
    Index,
}

impl BulkAction {
    fn name(self) -> &'static str {
        match self {
            BulkAction::Create => "create",
            BulkAction::Index => "index",
        }
    }
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn default_index() -> String {
    "sluice-%Y.%m.%d".into()
}

/// `type = "elasticsearch"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// The cluster's URL (`http://` or `https://`); requests go to `ENDPOINT/_bulk`.
    pub endpoint: String,
    /// Sources, transforms or route outputs it takes; unset: every source.
    pub inputs: Option<Vec<String>>,
    #[serde(default)]
    pub start_at: StartAt,
    /// Deliveries failing in a row before the circuit breaker opens.
    #[serde(default = "super::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit makes no attempt before one probe.
    #[serde(
        default = "super::default_open_for",
        deserialize_with = "crate::units::de_duration"
    )]
    pub open_for: std::time::Duration,
    /// `batch.max_events`, `batch.max_bytes`, `batch.timeout`.
    #[serde(default)]
    pub batch: crate::delivery::RequestBatch,
    /// The dead-letter queue's budget (`data_dir/dlq/NAME`).
    #[serde(
        default = "super::default_dlq_max_size",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub dlq_max_size: u64,
    /// Index name: strftime of the event's time (UTC) and `{{field}}`.
    #[serde(default = "default_index")]
    pub index: String,
    #[serde(default)]
    pub action: BulkAction,
    /// An ingest pipeline to run the documents through (`?pipeline=`).
    pub pipeline: Option<String>,
    /// `"none"` or `"gzip"`.
    #[serde(default)]
    pub compression: Compression,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsKeys,
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once (1: strictly in order).
    #[serde(default = "one")]
    pub concurrency: u32,
}

fn one() -> u32 {
    1
}

/// strftime codes an index name may use.
const TIME_CODES: &[char] = &['Y', 'y', 'm', 'd', 'H', 'j', '%'];

/// A compiled index name.
#[derive(Debug)]
struct IndexName {
    /// With `{{field}}` placeholders: rendered per event.
    fields: Option<Arc<Template>>,
    text: String,
    /// Without placeholders: the last hour's name (events mostly come in time order).
    cached: Option<(i64, String)>,
}

impl IndexName {
    fn new(text: &str) -> Result<IndexName, String> {
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c == '%' {
                match chars.next() {
                    Some(code) if TIME_CODES.contains(&code) => {}
                    other => {
                        return Err(format!(
                            "%{} is not a supported time code (use %Y %y %m %d %H %j %%)",
                            other.map(String::from).unwrap_or_default()
                        ))
                    }
                }
            }
        }
        let fields = if text.contains("{{") {
            Some(Arc::new(Template::parse(text)?))
        } else {
            None
        };
        Ok(IndexName {
            fields,
            text: text.to_string(),
            cached: None,
        })
    }

    /// The index for one record (`None`: not an event).
    fn for_record(&mut self, record: &[u8], shard: usize, scratch: &mut Vec<u8>) -> Option<String> {
        let secs = event_seconds(record)?;
        if let Some(template) = &self.fields {
            scratch.clear();
            render_record(record, shard, template, scratch);
            return Some(strftime(&String::from_utf8_lossy(scratch), secs).to_lowercase());
        }
        let hour = secs.div_euclid(3600);
        match &self.cached {
            Some((h, name)) if *h == hour => Some(name.clone()),
            _ => {
                let name = strftime(&self.text, secs).to_lowercase();
                self.cached = Some((hour, name.clone()));
                Some(name)
            }
        }
    }
}

/// `text` with the time codes replaced by `secs`' UTC date.
fn strftime(text: &str, secs: i64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let _ = match chars.next() {
            Some('Y') => write!(out, "{:04}", t.year()),
            Some('y') => write!(out, "{:02}", t.year().rem_euclid(100)),
            Some('m') => write!(out, "{:02}", u8::from(t.month())),
            Some('d') => write!(out, "{:02}", t.day()),
            Some('H') => write!(out, "{:02}", t.hour()),
            Some('j') => write!(out, "{:03}", t.ordinal()),
            Some(other) => write!(out, "{other}"),
            None => Ok(()),
        };
    }
    out
}

/// The document id of a WAL record: its xxh3-128 in hex.
fn document_id(record: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(record))
}

struct ElasticsearchOutput {
    client: Client,
    bulk_uri: String,
    action: BulkAction,
    index: IndexName,
    body: Vec<u8>,
    scratch: Vec<u8>,
}

/// A `_bulk` answer: only what the verdicts need.
#[derive(Deserialize)]
struct BulkAnswer {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

#[derive(Deserialize)]
struct BulkItem {
    status: u16,
    error: Option<serde_json::Value>,
}

impl ElasticsearchOutput {
    /// The bulk body: an action line and the document per event.
    fn build_body(&mut self, batch: &Batch) {
        self.body.clear();
        for i in 0..batch.len() {
            let record = batch.record(i);
            let index = self
                .index
                .for_record(record, batch.shard(i), &mut self.scratch)
                .unwrap_or_else(|| "sluice-undecodable".into());
            let b = &mut self.body;
            b.extend_from_slice(b"{\"");
            b.extend_from_slice(self.action.name().as_bytes());
            b.extend_from_slice(b"\":{\"_index\":");
            ingest::json::write_str(b, index.as_bytes());
            b.extend_from_slice(b",\"_id\":\"");
            b.extend_from_slice(document_id(record).as_bytes());
            b.extend_from_slice(b"\"}}\n");
            b.extend_from_slice(batch.event(i));
        }
    }
}

/// Per item: what to do with each event of the batch.
fn item_verdicts(
    answer: &BulkAnswer,
    events: usize,
    action: BulkAction,
) -> Result<Verdicts, Failure> {
    let mut verdicts = Verdicts::all_confirmed();
    if !answer.errors {
        return Ok(verdicts);
    }
    if answer.items.len() != events {
        return Err(Failure::retriable(format!(
            "the bulk answer has {} items for {events} documents",
            answer.items.len()
        )));
    }
    for (i, item) in answer.items.iter().enumerate() {
        let Some(item) = item.values().next() else {
            return Err(Failure::retriable("a bulk answer item is empty"));
        };
        match item.status {
            200..=299 => {}
            409 if action == BulkAction::Create => {} // Already there: this very event.
            429 | 500.. => verdicts.retry.push(i),
            status => verdicts.rejected.push((i, item_reason(status, item))),
        }
    }
    Ok(verdicts)
}

/// A `_bulk` answer body for `events` documents as verdicts (`None`: not a bulk answer, or
/// its items do not match). For the fuzz target: never panics; indices are in the batch.
pub fn bulk_answer_verdicts(body: &[u8], events: usize) -> Option<Verdicts> {
    let bulk: BulkAnswer = serde_json::from_slice(body).ok()?;
    let v = item_verdicts(&bulk, events, BulkAction::Create).ok()?;
    assert!(v
        .retry
        .iter()
        .chain(v.rejected.iter().map(|(i, _)| i))
        .all(|&i| i < events));
    Some(v)
}

fn item_reason(status: u16, item: &BulkItem) -> String {
    let Some(error) = &item.error else {
        return format!("{status}");
    };
    let field = |k: &str| error.get(k).and_then(|v| v.as_str()).unwrap_or("");
    match (field("type"), field("reason")) {
        ("", "") => format!("{status} {error}"),
        (kind, reason) => format!("{status} {kind}: {reason}"),
    }
}

impl ElasticsearchOutput {
    /// The verdicts from a `_bulk` answer to `events` documents.
    fn verdicts(&self, answer: Result<Answer, Failure>, events: usize) -> DeliveryResult {
        let answer = answer?;
        http_client::status_verdict(&answer, &self.bulk_uri)?;
        let bulk: BulkAnswer = serde_json::from_str(&answer.body).map_err(|e| Failure {
            kind: FailureKind::Retriable,
            error: format!(
                "POST {}: the answer is not a bulk response: {e}",
                self.bulk_uri
            ),
            retry_after: None,
        })?;
        let mut verdicts = item_verdicts(&bulk, events, self.action)?;
        verdicts.retry_after = answer.retry_after;
        Ok(verdicts)
    }
}

impl Sink for ElasticsearchOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        self.build_body(batch);
        let answer = self
            .client
            .post(Some(&self.bulk_uri), "application/x-ndjson", &self.body);
        self.verdicts(answer, batch.len())
    }

    fn deliver_all(&mut self, batches: &[Batch]) -> Vec<DeliveryResult> {
        let bodies: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| {
                self.build_body(b);
                std::mem::take(&mut self.body)
            })
            .collect();
        let uri = self.bulk_uri.clone();
        let answers =
            http_client::post_all(&self.client, Some(&uri), "application/x-ndjson", &bodies);
        answers
            .into_iter()
            .zip(batches)
            .map(|(answer, batch)| self.verdicts(answer, batch.len()))
            .collect()
    }
}

impl ElasticsearchSink {
    fn keys(&self) -> HttpKeys<'_> {
        HttpKeys {
            uri_key: "endpoint",
            uri: &self.endpoint,
            compression: self.compression,
            concurrency: self.concurrency,
            auth: self.auth.as_ref(),
            headers: &self.headers,
            tls: &self.tls,
            request_timeout: self.request_timeout,
        }
    }
}

impl SinkSettings for ElasticsearchSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        let key = |k: &str| format!("sinks.{name}.{k}");
        self.keys().check(name)?;
        IndexName::new(&self.index).map_err(|e| (key("index"), e))?;
        if self.compression == Compression::Zstd {
            return Err((
                key("compression"),
                "Elasticsearch takes \"none\" or \"gzip\"".into(),
            ));
        }
        Ok(())
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        self.keys().check_bounds(prefix, b);
    }

    fn common(&self) -> super::SinkCommon<'_> {
        super::SinkCommon {
            inputs: self.inputs.as_deref(),
            start_at: self.start_at,
            circuit: crate::delivery::CircuitSettings {
                failure_threshold: self.failure_threshold,
                open_for: self.open_for,
            },
            batch: self.batch.0,
            dlq_max_size: self.dlq_max_size,
            concurrency: self.concurrency as usize,
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("index".into(), render::text(&self.index));
        t.insert("action".into(), render::text(self.action.name()));
        if let Some(p) = &self.pipeline {
            t.insert("pipeline".into(), render::text(p));
        }
        self.keys().render(&mut t);
        t
    }

    fn reach(&self) -> Reach<'_> {
        Reach::Destination(http_client::authority(&self.endpoint))
    }

    fn open(&self) -> Result<OpenedSink, SinkError> {
        let client = self.keys().client("elasticsearch")?;
        let mut bulk_uri = format!("{}/_bulk", self.endpoint.trim_end_matches('/'));
        if let Some(p) = &self.pipeline {
            bulk_uri.push_str("?pipeline=");
            bulk_uri.push_str(p);
        }
        let index = IndexName::new(&self.index).map_err(|e| SinkError::Open {
            sink_type: "elasticsearch",
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        })?;
        Ok(OpenedSink {
            sink: Box::new(ElasticsearchOutput {
                client,
                bulk_uri,
                action: self.action,
                index,
                body: Vec::new(),
                scratch: Vec::new(),
            }),
            encoding: json_lines(),
            backoff: request_backoff(),
            rejects_events: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_takes_the_utc_date() {
        // 2026-11-30T23:59:59Z
        let secs = 1_796_083_199;
        assert_eq!(strftime("logs-%Y.%m.%d", secs), "logs-2026.11.30");
        assert_eq!(strftime("%y/%j/%H %%", secs), "26/334/23 %");
        assert!(IndexName::new("logs-%Q").is_err());
        assert!(IndexName::new("logs-{{hostname}}-%Y").is_ok());
    }

    #[test]
    fn bulk_items_become_verdicts() {
        let body = r#"{"errors":true,"items":[
            {"create":{"status":201}},
            {"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},
            {"create":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"create":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}},
            {"create":{"status":503}}]}"#;
        let answer: BulkAnswer = serde_json::from_str(body).unwrap();
        let v = item_verdicts(&answer, 5, BulkAction::Create).unwrap();
        assert_eq!(v.retry, vec![2, 4]);
        assert_eq!(
            v.rejected,
            vec![(3, "400 mapper_parsing_exception: bad field".to_string())]
        );
        let v = item_verdicts(&answer, 5, BulkAction::Index).unwrap();
        assert_eq!(v.rejected.len(), 2, "409 on index is a real conflict");
        assert!(item_verdicts(&answer, 4, BulkAction::Create).is_err());
        let ok: BulkAnswer = serde_json::from_str(r#"{"errors":false,"items":[]}"#).unwrap();
        assert!(item_verdicts(&ok, 3, BulkAction::Create)
            .unwrap()
            .is_all_confirmed());
    }

    #[test]
    fn the_same_record_gets_the_same_id() {
        assert_eq!(document_id(b"event"), document_id(b"event"));
        assert_ne!(document_id(b"event"), document_id(b"event2"));
        assert_eq!(document_id(b"x").len(), 32);
    }
}
