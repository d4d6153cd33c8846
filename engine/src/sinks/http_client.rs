//! What the HTTP-shaped outputs share: the client (ureq over rustls, no proxy), TLS, auth,
//! body compression, and how a response's status becomes a delivery verdict.
//!
//! Status classes (whole request):
//! - 2xx: the destination took the request (an Elasticsearch bulk answer is then read per
//!   item);
//! - 408, 429, 5xx, connection errors and timeouts: retried, never sooner than `Retry-After`
//!   (seconds) says;
//! - 413: too large, the batch is split in two (one event alone too large: dead-lettered);
//! - 400 and 422: the events are refused for good: dead-lettered with the response's text;
//! - any other 4xx (401, 403, 404, …): a configuration problem, not the events': retried (the
//!   circuit breaker opens), never dead-lettered.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::compression::Compression;
use crate::delivery::{Failure, FailureKind};

/// `tls = { ca_file, crt_file, key_file, verify }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsKeys {
    /// PEM certificates to trust instead of the bundled web roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM), with `key_file`.
    pub crt_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
    /// `false` accepts any server certificate (logged as a warning at every start).
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Default for TlsKeys {
    /// Certificates verified (against the bundled web roots).
    fn default() -> Self {
        TlsKeys {
            ca_file: None,
            crt_file: None,
            key_file: None,
            verify: true,
        }
    }
}

impl TlsKeys {
    pub(crate) fn render(&self) -> toml::Value {
        let mut t = toml::Table::new();
        let path = |p: &PathBuf| toml::Value::String(p.display().to_string());
        for (key, value) in [
            ("ca_file", &self.ca_file),
            ("crt_file", &self.crt_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(p) = value {
                t.insert(key.into(), path(p));
            }
        }
        t.insert("verify".into(), toml::Value::Boolean(self.verify()));
        toml::Value::Table(t)
    }

    pub fn verify(&self) -> bool {
        self.verify
    }

    /// `crt_file` and `key_file` go together.
    pub(crate) fn check(&self, name: &str) -> Result<(), (String, String)> {
        if self.crt_file.is_some() != self.key_file.is_some() {
            return Err((
                format!("sinks.{name}.tls.key_file"),
                "a client certificate needs both crt_file and key_file".into(),
            ));
        }
        Ok(())
    }
}

/// `auth = { strategy = "bearer", token }` or `{ strategy = "basic", user, password }`
/// (values may be `${ENV_VAR}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    Bearer { token: String },
    Basic { user: String, password: String },
}

/// Shown instead of a secret by `sluice config`.
pub const REDACTED: &str = "<redacted>";

impl Auth {
    fn header(&self) -> String {
        match self {
            Auth::Bearer { token } => format!("Bearer {token}"),
            Auth::Basic { user, password } => {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
        }
    }

    /// As `sluice config` writes it: the secrets are not shown.
    pub(crate) fn render(&self) -> toml::Value {
        let mut t = toml::Table::new();
        let text = |s: &str| toml::Value::String(s.to_string());
        match self {
            Auth::Bearer { .. } => {
                t.insert("strategy".into(), text("bearer"));
                t.insert("token".into(), text(REDACTED));
            }
            Auth::Basic { user, .. } => {
                t.insert("strategy".into(), text("basic"));
                t.insert("user".into(), text(user));
                t.insert("password".into(), text(REDACTED));
            }
        }
        toml::Value::Table(t)
    }
}

/// Standard base64 (RFC 4648, padded): a dozen lines, not worth a dependency.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What a client needs from its sink's config.
pub struct ClientSettings<'a> {
    pub uri: &'a str,
    pub tls: &'a TlsKeys,
    pub auth: Option<&'a Auth>,
    pub headers: &'a [(String, String)],
    pub compression: Compression,
    pub request_timeout: Duration,
}

/// A destination's answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// Longest response body read (an Elasticsearch bulk answer for 10,000 items is a few MB).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// An HTTP client for one destination (shared by concurrent requests: the agent pools
/// connections).
pub struct Client {
    agent: ureq::Agent,
    uri: String,
    headers: Vec<(String, String)>,
    authorization: Option<String>,
    compression: Compression,
}

impl Client {
    /// Reads the TLS files and builds the client; an error names the file.
    pub fn new(s: &ClientSettings) -> io::Result<Client> {
        let tls = tls_config(s.tls)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(s.request_timeout))
            .proxy(None)
            .tls_config(tls)
            .user_agent(concat!("sluice/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            agent: config.into(),
            uri: s.uri.to_string(),
            headers: s.headers.to_vec(),
            authorization: s.auth.map(Auth::header),
            compression: s.compression,
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// POSTs `body` to `uri` (the client's own when `None`); a transport error is retriable.
    pub fn post(
        &self,
        uri: Option<&str>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Answer, Failure> {
        let uri = uri.unwrap_or(&self.uri).to_string();
        let mut compressed = Vec::new();
        let (body, encoding) = self
            .compression
            .apply(body, &mut compressed)
            .map_err(|e| Failure::retriable(format!("compress the request body: {e}")))?;
        let mut request = self.agent.post(&uri).header("Content-Type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        for (k, v) in &self.headers {
            request = request.header(k, v);
        }
        let mut response = request
            .send(body)
            .map_err(|e| Failure::retriable(format!("POST {uri}: {e}")))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|secs| Duration::from_secs(secs.min(3600)));
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_string()
            .map_err(|e| Failure::retriable(format!("POST {uri}: reading the response: {e}")))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }
}

/// POSTs every body at once, one thread each (`concurrency`); the answers in order.
pub fn post_all(
    client: &Client,
    uri: Option<&str>,
    content_type: &str,
    bodies: &[Vec<u8>],
) -> Vec<Result<Answer, Failure>> {
    std::thread::scope(|scope| {
        let requests: Vec<_> = bodies
            .iter()
            .map(|body| scope.spawn(move || client.post(uri, content_type, body)))
            .collect();
        requests
            .into_iter()
            .map(|r| {
                r.join()
                    .unwrap_or_else(|_| Err(Failure::retriable("a request thread panicked")))
            })
            .collect()
    })
}

/// The verdict on a whole request from its status (2xx: `Ok`).
pub fn status_verdict(answer: &Answer, uri: &str) -> Result<(), Failure> {
    let status = answer.status;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let kind = match status {
        413 => FailureKind::TooLarge,
        400 | 422 => FailureKind::Rejected,
        _ => FailureKind::Retriable,
    };
    let mut text: String = answer.body.chars().take(512).collect();
    text = text.trim().to_string();
    Err(Failure {
        kind,
        error: format!("POST {uri}: HTTP {status}: {text}"),
        retry_after: answer.retry_after,
    })
}

fn tls_config(keys: &TlsKeys) -> io::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, ClientCert, PemItem, RootCerts, TlsConfig};
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| io::Error::new(e.kind(), format!("read {}: {e}", p.display())))
    };
    let bad = |p: &PathBuf, e: ureq::Error| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not PEM: {e}", p.display()),
        )
    };
    let certs = |p: &PathBuf| -> io::Result<Vec<Certificate<'static>>> {
        let pem = read(p)?;
        let mut out = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let PemItem::Certificate(c) = item.map_err(|e| bad(p, e))? {
                out.push(c);
            }
        }
        if out.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no certificate in it", p.display()),
            ));
        }
        Ok(out)
    };
    let mut builder = TlsConfig::builder();
    if let Some(ca) = &keys.ca_file {
        builder = builder.root_certs(RootCerts::new_with_certs(&certs(ca)?));
    }
    if let (Some(crt), Some(key)) = (&keys.crt_file, &keys.key_file) {
        let key_pem = read(key)?;
        let key_der = ureq::tls::PrivateKey::from_pem(&key_pem).map_err(|e| bad(key, e))?;
        builder = builder.client_cert(Some(ClientCert::new_with_certs(&certs(crt)?, key_der)));
    }
    if !keys.verify() {
        tracing::warn!("tls.verify = false: the destination's certificate is not checked (anyone on the path can read and alter what is sent)");
        builder = builder.disable_verification(true);
    }
    Ok(builder.build())
}

/// `headers = { "X-Scope" = "fleet" }`: names and values as HTTP allows them.
pub(crate) fn check_headers(
    name: &str,
    headers: &std::collections::BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    for (k, v) in headers {
        let token = !k.is_empty()
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err((
                format!("sinks.{name}.headers"),
                format!("{k:?} is not a valid header name"),
            ));
        }
        if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err((
                format!("sinks.{name}.headers.{k}"),
                "a header value cannot hold a line break".into(),
            ));
        }
        if k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("content-encoding") {
            return Err((
                format!("sinks.{name}.headers.{k}"),
                "set by Sluice (see `compression`)".into(),
            ));
        }
    }
    Ok(())
}

/// `uri` / `endpoint` must be http(s).
pub(crate) fn check_uri(key: String, uri: &str) -> Result<(), (String, String)> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(()),
        _ => Err((key, format!("{uri:?} is not an http:// or https:// URL"))),
    }
}

/// The `host:port` a URL reaches (for the admin API's reach checks).
pub(crate) fn authority(uri: &str) -> &str {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
        .unwrap_or(uri);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn statuses_become_verdicts() {
        let answer = |status| Answer {
            status,
            retry_after: Some(Duration::from_secs(3)),
            body: "nope".into(),
        };
        assert!(status_verdict(&answer(204), "u").is_ok());
        let kind = |s| status_verdict(&answer(s), "u").unwrap_err().kind;
        assert_eq!(kind(400), FailureKind::Rejected);
        assert_eq!(kind(413), FailureKind::TooLarge);
        assert_eq!(kind(429), FailureKind::Retriable);
        assert_eq!(kind(503), FailureKind::Retriable);
        assert_eq!(
            kind(401),
            FailureKind::Retriable,
            "a config problem is not the events'"
        );
        let f = status_verdict(&answer(429), "u").unwrap_err();
        assert_eq!(f.retry_after, Some(Duration::from_secs(3)));
        assert!(f.error.contains("HTTP 429: nope"), "{}", f.error);
    }

    #[test]
    fn authority_is_host_and_port() {
        assert_eq!(
            authority("https://u:p@es.example:9200/x?y"),
            "es.example:9200"
        );
        assert_eq!(authority("http://127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
