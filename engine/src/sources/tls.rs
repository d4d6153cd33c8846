//! TLS on a stream source: syslog over TLS (`mode = "tls"`, RFC 5425) and RELP over TLS
//! (`mode = "relp"` with a `tls` table). rustls over glommio's TCP stream (futures-rustls).
//!
//! Invariants:
//! - TLS 1.2 at least; the certificate chain and key come from files, client certificates
//!   are checked against `ca_file` when `client_auth` asks for them (expired ones refused).
//! - A handshake runs on its connection's own task, bounded by `handshake_timeout`: a stalled
//!   or failing handshake never holds the shard (its other connections keep being served) and
//!   is counted by reason (`sluice_tls_handshake_failures_total`).
//! - Every shard shares one [`TlsServer`]; a reload (SIGHUP) loads the files again and swaps
//!   the whole server config: new handshakes use the new certificates, established sessions
//!   keep theirs. Files that do not load leave the running certificates in place (logged).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_rustls::server::TlsStream;
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use serde::Deserialize;

use crate::units::{de_duration, render, Bounds};

/// `[sources.NAME.tls]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceTls {
    /// The server's certificate chain (PEM, leaf first).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CAs that client certificates are checked against (needed for `client_auth`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// A handshake not finished within this long closes the connection (counted).
    #[serde(
        default = "default_handshake_timeout",
        deserialize_with = "de_duration"
    )]
    pub handshake_timeout: Duration,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `client_auth`: whether a client must, may or need not present a certificate.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    Required,
    Optional,
    #[default]
    None,
}

impl ClientAuth {
    fn name(self) -> &'static str {
        match self {
            ClientAuth::Required => "required",
            ClientAuth::Optional => "optional",
            ClientAuth::None => "none",
        }
    }
}

impl SourceTls {
    /// Checks across keys and that the files load; the key and why when refused.
    pub fn check(&self, prefix: &str) -> Result<(), (String, String)> {
        if self.client_auth != ClientAuth::None && self.ca_file.is_none() {
            return Err((
                format!("{prefix}.ca_file"),
                format!(
                    "client_auth = \"{}\" needs the CAs to check client certificates against",
                    self.client_auth.name()
                ),
            ));
        }
        server_config(self).map(drop).map_err(|e| {
            let key = match &e {
                TlsError::File { key, .. } => key,
                TlsError::Config(_) => "cert_file",
            };
            (format!("{prefix}.{key}"), e.to_string())
        })
    }

    pub fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        b.duration(
            &format!("{prefix}.handshake_timeout"),
            self.handshake_timeout,
            Duration::from_millis(100)..=Duration::from_secs(300),
        );
    }

    pub fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        let path = |p: &Path| render::text(&p.display().to_string());
        t.insert("cert_file".into(), path(&self.cert_file));
        t.insert("key_file".into(), path(&self.key_file));
        if let Some(ca) = &self.ca_file {
            t.insert("ca_file".into(), path(ca));
        }
        t.insert("client_auth".into(), render::text(self.client_auth.name()));
        t.insert(
            "handshake_timeout".into(),
            render::duration(self.handshake_timeout),
        );
        t
    }
}

/// Why TLS could not be set up for a source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {reason}", path.display())]
    File {
        /// The key naming the file (`cert_file`, `key_file`, `ca_file`).
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("TLS: {0}")]
    Config(#[from] rustls::Error),
}

fn file_error(key: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The rustls server config `keys` describe (files read now).
pub fn server_config(keys: &SourceTls) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    let builder = match (&keys.ca_file, keys.client_auth) {
        (Some(ca), ClientAuth::Required | ClientAuth::Optional) => {
            let roots = Arc::new(read_roots(ca)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = match keys.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| file_error("ca_file", ca, e))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let chain = read_chain(&keys.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&keys.key_file)
        .map_err(|e| file_error("key_file", &keys.key_file, e))?;
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| file_error("key_file", &keys.key_file, e))?;
    // No TLS 1.3 session tickets: a syslog sender never reads, and data it has not read when
    // it closes makes its kernel reset the connection, discarding what Sluice had not read
    // yet. Sluice sends nothing unasked (RELP and HTTP answers are read by their clients).
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error("cert_file", path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error("cert_file", path, e))?;
    if chain.is_empty() {
        return Err(file_error("cert_file", path, "no certificate in it"));
    }
    Ok(chain)
}

fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error("ca_file", path, e))? {
        let cert = cert.map_err(|e| file_error("ca_file", path, e))?;
        roots
            .add(cert)
            .map_err(|e| file_error("ca_file", path, e))?;
    }
    if roots.is_empty() {
        return Err(file_error("ca_file", path, "no certificate in it"));
    }
    Ok(roots)
}

/// A source's TLS, shared by every shard; [`TlsServer::reload`] swaps the certificates.
#[derive(Debug)]
pub struct TlsServer {
    keys: SourceTls,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsServer {
    pub fn load(keys: &SourceTls) -> Result<Arc<TlsServer>, TlsError> {
        Ok(Arc::new(TlsServer {
            keys: keys.clone(),
            current: RwLock::new(server_config(keys)?),
        }))
    }

    /// Reads the files again; on success new handshakes use them (sessions keep theirs).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.keys)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn handshake_timeout(&self) -> Duration {
        self.keys.handshake_timeout
    }
}

/// Why a handshake failed (the `reason` label of `sluice_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within `handshake_timeout`.
    Timeout,
    /// The client's certificate was refused (unknown CA, expired, none where required), or
    /// the client refused ours.
    Certificate,
    /// Anything else TLS refused (no common version or cipher, not TLS at all).
    Protocol,
    /// The client went away mid-handshake.
    Closed,
}

/// The TLS handshake on an accepted connection, bounded by the handshake timeout.
pub async fn accept(
    server: &TlsServer,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, (HandshakeFailure, String)> {
    let acceptor = futures_rustls::TlsAcceptor::from(server.config());
    let timeout = server.handshake_timeout();
    let handshake = async { Some(acceptor.accept(stream).await) };
    let expired = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    match futures_lite::future::or(handshake, expired).await {
        Some(Ok(tls)) => Ok(tls),
        Some(Err(e)) => Err((classify(&e), e.to_string())),
        None => Err((
            HandshakeFailure::Timeout,
            format!(
                "no handshake within {}",
                humantime::format_duration(timeout)
            ),
        )),
    }
}

fn classify(e: &io::Error) -> HandshakeFailure {
    let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match tls {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateExpired
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::CertificateRequired,
            ),
        ) => HandshakeFailure::Certificate,
        Some(_) => HandshakeFailure::Protocol,
        None if e.kind() == io::ErrorKind::InvalidData => HandshakeFailure::Protocol,
        None => HandshakeFailure::Closed,
    }
}

/// The subject of the client's certificate (`CN=…, O=…`), when it presented one.
pub fn peer_subject(stream: &TlsStream<TcpStream>) -> Option<String> {
    let der = stream.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SourceTls {
        SourceTls {
            cert_file: "/nonexistent/cert.pem".into(),
            key_file: "/nonexistent/key.pem".into(),
            ca_file: None,
            client_auth: ClientAuth::None,
            handshake_timeout: default_handshake_timeout(),
        }
    }

    #[test]
    fn a_missing_file_is_named_with_its_key() {
        let (key, why) = keys().check("sources.s.tls").unwrap_err();
        assert_eq!(key, "sources.s.tls.cert_file");
        assert!(why.contains("/nonexistent/cert.pem"), "{why}");
    }

    #[test]
    fn client_auth_needs_a_ca_file() {
        let k = SourceTls {
            client_auth: ClientAuth::Required,
            ..keys()
        };
        let (key, why) = k.check("sources.s.tls").unwrap_err();
        assert_eq!(key, "sources.s.tls.ca_file");
        assert!(why.contains("required"), "{why}");
    }
}
