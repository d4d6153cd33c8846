//! TLS for the stream outputs (`tcp`, `relp`): rustls over a blocking `TcpStream`, with the
//! same `tls` keys as the HTTP outputs (`ca_file`, `crt_file`, `key_file`, `verify`).
//! Certificates are checked against `ca_file`, else the bundled web roots (webpki-roots);
//! TLS 1.2 at least.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::http_client::TlsKeys;

/// A connection, plain or TLS.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<rustls::ClientConnection>,
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// TLS over `tcp` to `host` (name or IP), the handshake completed (bounded by the socket's
    /// timeouts).
    pub fn tls(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        host: &str,
    ) -> io::Result<Stream> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?}: {e}")))?;
        let conn = rustls::ClientConnection::new(config, name)
            .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
        let mut stream = Stream {
            tcp,
            tls: Some(conn),
        };
        if let Some(conn) = stream.tls.as_mut() {
            while conn.is_handshaking() {
                conn.complete_io(&mut stream.tcp).map_err(|e| {
                    io::Error::new(e.kind(), format!("TLS handshake with {host}: {e}"))
                })?;
            }
        }
        Ok(stream)
    }

    /// The socket underneath (for its acknowledgement state).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(conn) => rustls::Stream::new(conn, &mut self.tcp).read(buf),
            None => self.tcp.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            Some(conn) => rustls::Stream::new(conn, &mut self.tcp).write(buf),
            None => self.tcp.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            Some(conn) => rustls::Stream::new(conn, &mut self.tcp).flush(),
            None => self.tcp.flush(),
        }
    }
}

/// Connects to the first address `address` (`host:port`, resolved now) that answers within
/// `timeout`; the error names the last address tried.
pub fn connect_any(address: &str, timeout: std::time::Duration) -> io::Result<TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{address}: no addresses"));
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = io::Error::new(e.kind(), format!("connect {addr}: {e}")),
        }
    }
    Err(last)
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn pem_error(path: &Path, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
    )
}

/// The client configuration the `tls` keys describe; an error names the file.
pub fn client_config(keys: &TlsKeys) -> io::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
    let builder = if keys.verify() {
        let mut roots = rustls::RootCertStore::empty();
        match &keys.ca_file {
            Some(ca) => {
                for cert in CertificateDer::pem_file_iter(ca).map_err(|e| pem_error(ca, e))? {
                    let cert = cert.map_err(|e| pem_error(ca, e))?;
                    roots.add(cert).map_err(|e| pem_error(ca, e))?;
                }
                if roots.is_empty() {
                    return Err(pem_error(ca, "no certificate in it"));
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots)
    } else {
        tracing::warn!("tls.verify = false: the receiver's certificate is not checked (anyone on the path can read and alter what is sent)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    };
    let config = match (&keys.crt_file, &keys.key_file) {
        (Some(crt), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(crt)
                .map_err(|e| pem_error(crt, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| pem_error(crt, e))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| pem_error(crt, e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `tls.verify = false`: any certificate is taken (its signatures still checked, so the
/// session is encrypted, not authenticated).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_an_address() {
        assert_eq!(host_of("collector.example:6514"), "collector.example");
        assert_eq!(host_of("[::1]:6514"), "::1");
        assert_eq!(host_of("127.0.0.1:6514"), "127.0.0.1");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let keys = TlsKeys {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..TlsKeys::default()
        };
        let e = client_config(&keys).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
