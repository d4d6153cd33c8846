//! The HTTP sink: batches POSTed as NDJSON or a JSON array to a collector.
//!
//! A batch is confirmed when the collector answers 2xx. Statuses as [`super::http_client`]
//! classifies them: 408/429/5xx retried (after `Retry-After`), 413 split, 400/422 to the
//! dead-letter queue (the whole request: HTTP says nothing per event), other 4xx retried (a
//! configuration problem). Requests go out one at a time, in WAL order per shard.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::compression::Compression;
use super::http_client::{self, Auth, Client, ClientSettings, TlsKeys};
use super::{Reach, SinkError, SinkSettings, StartAt};
use crate::delivery::{
    Backoff, Batch, DeliveryResult, Encoding, OpenedSink, RecordEncoding, Sink, Verdicts,
};
use crate::units::{de_duration, render, Bounds, TypeTag, HOUR};

/// How a batch is laid out in the body (`encoding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    /// One JSON event per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// `[event,event,…]` (`application/json`).
    JsonArray,
}

impl BodyEncoding {
    fn name(self) -> &'static str {
        match self {
            BodyEncoding::Ndjson => "ndjson",
            BodyEncoding::JsonArray => "json_array",
        }
    }
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

/// `type = "http"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// Where batches are POSTed (`http://` or `https://`).
    pub uri: String,
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
    #[serde(default)]
    pub encoding: BodyEncoding,
    #[serde(default)]
    pub compression: Compression,
    pub auth: Option<Auth>,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub tls: TlsKeys,
    /// One request (connect, send, answer) longer than this failed (retried).
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once (1: strictly in order).
    #[serde(default = "one")]
    pub concurrency: u32,
}

fn one() -> u32 {
    1
}

/// The keys both HTTP outputs share, as one view: checked, bounded, rendered and turned into a
/// client in one place.
pub(crate) struct HttpKeys<'a> {
    /// The key naming the URL (`uri` or `endpoint`) and its value.
    pub uri_key: &'static str,
    pub uri: &'a str,
    pub compression: Compression,
    pub concurrency: u32,
    pub auth: Option<&'a Auth>,
    pub headers: &'a BTreeMap<String, String>,
    pub tls: &'a TlsKeys,
    pub request_timeout: Duration,
}

impl HttpKeys<'_> {
    pub(crate) fn check(&self, name: &str) -> Result<(), (String, String)> {
        http_client::check_uri(format!("sinks.{name}.{}", self.uri_key), self.uri)?;
        http_client::check_headers(name, self.headers)?;
        self.tls.check(name)
    }

    pub(crate) fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        b.count(
            &format!("{prefix}.concurrency"),
            self.concurrency.into(),
            1..=64,
        );
        b.duration(
            &format!("{prefix}.request_timeout"),
            self.request_timeout,
            Duration::from_millis(10)..=HOUR,
        );
    }

    /// Adds the shared keys to `t` (`sluice config`; secrets redacted).
    pub(crate) fn render(&self, t: &mut toml::Table) {
        t.insert(self.uri_key.into(), render::text(self.uri));
        t.insert("compression".into(), render::text(self.compression.name()));
        t.insert(
            "concurrency".into(),
            toml::Value::Integer(self.concurrency.into()),
        );
        if let Some(auth) = self.auth {
            t.insert("auth".into(), auth.render());
        }
        if !self.headers.is_empty() {
            let h = self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), render::text(v)))
                .collect();
            t.insert("headers".into(), toml::Value::Table(h));
        }
        t.insert("tls".into(), self.tls.render());
        t.insert(
            "request_timeout".into(),
            render::duration(self.request_timeout),
        );
    }

    /// The client (reads the TLS files; a refusal fails the start or the reload).
    pub(crate) fn client(&self, sink_type: &'static str) -> Result<Client, SinkError> {
        let headers: Vec<_> = self.headers.clone().into_iter().collect();
        let settings = ClientSettings {
            uri: self.uri,
            tls: self.tls,
            auth: self.auth,
            headers: &headers,
            compression: self.compression,
            request_timeout: self.request_timeout,
        };
        Client::new(&settings).map_err(|source| SinkError::Open { sink_type, source })
    }
}

struct HttpOutput {
    client: Client,
    encoding: BodyEncoding,
    body: Vec<u8>,
}

/// The request body for `batch`.
fn build_body(encoding: BodyEncoding, batch: &Batch, body: &mut Vec<u8>) {
    body.clear();
    match encoding {
        BodyEncoding::Ndjson => body.extend_from_slice(batch.bytes()),
        BodyEncoding::JsonArray => {
            body.push(b'[');
            for (i, event) in batch.events().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(event.strip_suffix(b"\n").unwrap_or(event));
            }
            body.push(b']');
        }
    }
}

impl HttpOutput {
    fn content_type(&self) -> &'static str {
        match self.encoding {
            BodyEncoding::Ndjson => "application/x-ndjson",
            BodyEncoding::JsonArray => "application/json",
        }
    }
}

impl Sink for HttpOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        build_body(self.encoding, batch, &mut self.body);
        let answer = self.client.post(None, self.content_type(), &self.body)?;
        http_client::status_verdict(&answer, self.client.uri())?;
        Ok(Verdicts::all_confirmed())
    }

    fn deliver_all(&mut self, batches: &[Batch]) -> Vec<DeliveryResult> {
        let bodies: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| {
                let mut body = Vec::new();
                build_body(self.encoding, b, &mut body);
                body
            })
            .collect();
        let answers = http_client::post_all(&self.client, None, self.content_type(), &bodies);
        answers
            .into_iter()
            .map(|answer| {
                http_client::status_verdict(&answer?, self.client.uri())?;
                Ok(Verdicts::all_confirmed())
            })
            .collect()
    }
}

impl HttpSink {
    fn keys(&self) -> HttpKeys<'_> {
        HttpKeys {
            uri_key: "uri",
            uri: &self.uri,
            compression: self.compression,
            concurrency: self.concurrency,
            auth: self.auth.as_ref(),
            headers: &self.headers,
            tls: &self.tls,
            request_timeout: self.request_timeout,
        }
    }
}

impl SinkSettings for HttpSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        self.keys().check(name)
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
        t.insert("encoding".into(), render::text(self.encoding.name()));
        self.keys().render(&mut t);
        t
    }

    fn reach(&self) -> Reach<'_> {
        Reach::Destination(http_client::authority(&self.uri))
    }

    fn open(&self) -> Result<OpenedSink, SinkError> {
        let client = self.keys().client("http")?;
        Ok(OpenedSink {
            sink: Box::new(HttpOutput {
                client,
                encoding: self.encoding,
                body: Vec::new(),
            }),
            encoding: json_lines(),
            backoff: request_backoff(),
            rejects_events: true,
        })
    }
}

/// Events as JSON lines (what both HTTP outputs send).
pub(crate) fn json_lines() -> RecordEncoding {
    RecordEncoding::lines(Encoding::Json)
}

/// Backoff of the request-based outputs: 1 s doubling up to 60 s, full jitter.
pub(crate) fn request_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(60),
    }
}
