//! Syslog over TLS into Sluice (`mode = "tls"`, RFC 5425) from real senders: `openssl
//! s_client`, rsyslog's omfwd with its GnuTLS driver, and a rustls client; refused clients
//! (unknown CA, expired, no certificate) counted; a stalled handshake never holds the shard;
//! certificates reloaded on SIGHUP without dropping sessions.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::pki::Pki;
use common::rsyslog::Rsyslog;
use common::*;

/// A TLS syslog source `name` with this PKI's server certificate and `extra` tls keys.
fn tls_source(name: &str, pki: &Pki, extra: &str) -> String {
    format!(
        "[sources.{name}]\ntype = \"syslog\"\nmode = \"tls\"\naddress = \"127.0.0.1:0\"\n\
         [sources.{name}.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n{extra}\n",
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt"),
    )
}

/// Octet-counted (RFC 5425) events `range` tagged `tag`.
fn frames(tag: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    range
        .flat_map(|seq| octet(&rfc5424_line(tag, seq)).into_bytes())
        .collect()
}

/// `openssl s_client` to `addr` trusting `ca`, presenting `cert` (a name in the PKI) if
/// given, sending `payload` and closing at its end.
fn s_client(addr: SocketAddr, pki: &Pki, ca: &str, cert: Option<&str>, payload: &[u8]) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &addr.to_string(), "-CAfile"])
        .arg(pki.path(ca))
        .args(["-quiet", "-no_ign_eof"]);
    if let Some(who) = cert {
        cmd.arg("-cert")
            .arg(pki.path(&format!("{who}.crt")))
            .arg("-key")
            .arg(pki.path(&format!("{who}.key")));
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let _ = child.stdin.take().unwrap().write_all(payload);
    let _ = child.wait();
}

/// A rustls client session to `addr` trusting `ca`, with the client certificate `cert`.
fn rustls_client(
    addr: SocketAddr,
    pki: &Pki,
    ca: &str,
    cert: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(pki.path(ca)).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer> =
        CertificateDer::pem_file_iter(pki.path(&format!("{cert}.crt")))
            .unwrap()
            .map(Result::unwrap)
            .collect();
    let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{cert}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = TcpStream::connect(addr)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

fn tagged(dir: &std::path::Path, tag: &str) -> Vec<serde_json::Value> {
    read_events(dir)
        .into_iter()
        .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(tag)))
        .collect()
}

/// 1,000 octet-counted events from `openssl s_client` with a client certificate: each
/// arrives once, with the certificate's subject.
#[test]
fn openssl_s_client_with_a_client_certificate() {
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let source = tls_source("secure", &pki, "client_auth = \"required\"");
    let cfg = config(dir.path(), 2, &format!("{source}{}", file_sink(dir.path())));
    let sluice = Sluice::start(dir.path(), &cfg);
    s_client(
        sluice.addr("secure"),
        &pki,
        "ca.crt",
        Some("client"),
        &frames("s_client", 0..1_000),
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = tagged(dir.path(), "s_client");
    let counts = message_counts(&events);
    assert_eq!(counts.len(), 1_000, "every event once");
    assert!(counts.values().all(|&n| n == 1));
    for e in &events {
        assert_eq!(e["tls"]["peer_subject"], "CN=client", "{e}");
        assert_eq!(e["format"], "rfc5424");
    }
}

/// A client certificate from another CA, an expired one, none at all: each handshake
/// refused and counted as a certificate failure; nothing ingested. `client_auth =
/// "optional"` takes the client without a certificate (and records no subject).
#[test]
fn refused_client_certificates_are_counted() {
    let pki = Pki::make().with_extras();
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "{}{}",
        tls_source("strict", &pki, "client_auth = \"required\""),
        tls_source("lenient", &pki, "client_auth = \"optional\"")
    );
    let cfg = config(
        dir.path(),
        1,
        &format!("{sources}{}", file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let strict = sluice.addr("strict");
    s_client(
        strict,
        &pki,
        "ca.crt",
        Some("stranger"),
        &frames("refused", 0..10),
    );
    s_client(
        strict,
        &pki,
        "ca.crt",
        Some("expired"),
        &frames("refused", 10..20),
    );
    s_client(strict, &pki, "ca.crt", None, &frames("refused", 20..30));
    s_client(
        sluice.addr("lenient"),
        &pki,
        "ca.crt",
        None,
        &frames("anonymous", 0..10),
    );
    let (api, d) = (sluice.addr("api"), dir.path());
    let failures = "sluice_tls_handshake_failures_total";
    wait_for("three refused certificates counted", || {
        metric_labeled(api, d, failures, "reason=\"certificate\"") == 3.0
    });
    wait_for("the anonymous client's events", || {
        tagged(d, "anonymous").len() == 10
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(
        tagged(dir.path(), "refused").is_empty(),
        "nothing from a refused client"
    );
    assert!(tagged(dir.path(), "anonymous")
        .iter()
        .all(|e| e.get("tls").is_none()));
}

/// rsyslog's omfwd with the GnuTLS stream driver (Debian's rsyslog-gnutls) sends 5,000 events
/// over TLS, checking Sluice's certificate and presenting its own.
#[test]
fn rsyslog_omfwd_over_tls() {
    assert!(
        std::path::Path::new("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so").exists(),
        "rsyslog's GnuTLS driver is missing: apt-get install rsyslog-gnutls"
    );
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let source = tls_source("secure", &pki, "client_auth = \"required\"");
    let cfg = config(dir.path(), 2, &format!("{source}{}", file_sink(dir.path())));
    let sluice = Sluice::start(dir.path(), &cfg);
    let relay_port = free_port();
    let rsyslog = Rsyslog::start_conf(
        &dir.path().join("rsyslog"),
        relay_port,
        &format!(
            r#"global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{crt}" DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
input(type="imtcp" port="{relay_port}" address="127.0.0.1")
*.* action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="octet-counted"
     StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/certvalid"
     template="RSYSLOG_SyslogProtocol23Format")
"#,
            ca = pki.path("ca.crt"),
            crt = pki.path("client.crt"),
            key = pki.path("client.key"),
            port = sluice.addr("secure").port(),
        ),
    );
    let mut relay = TcpStream::connect(("127.0.0.1", relay_port)).unwrap();
    relay.write_all(&frames("gtls", 0..5_000)).unwrap();
    drop(relay);
    wait_for("5,000 events through rsyslog over TLS", || {
        tagged(dir.path(), "gtls").len() >= 5_000
    });
    rsyslog.stop();
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = tagged(dir.path(), "gtls");
    assert_eq!(message_counts(&events).len(), 5_000);
    assert!(events
        .iter()
        .all(|e| e["tls"]["peer_subject"] == "CN=client"));
}

/// A connection that never starts its handshake holds neither the shard nor anyone else:
/// with one shard, a client behind it is served while it stalls; where the timeout is short,
/// Sluice closes it (counted). Bytes that are not TLS are counted as a protocol failure.
#[test]
fn a_stalled_handshake_never_holds_the_shard() {
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let sources = format!(
        "{}{}",
        tls_source("patient", &pki, "handshake_timeout = \"5min\""),
        tls_source("brisk", &pki, "handshake_timeout = \"200ms\"")
    );
    let cfg = config(
        dir.path(),
        1,
        &format!("{sources}{}", file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let stalled = TcpStream::connect(sluice.addr("patient")).unwrap();
    s_client(
        sluice.addr("patient"),
        &pki,
        "ca.crt",
        None,
        &frames("behind", 0..100),
    );
    let d = dir.path();
    wait_for("the client behind the stalled one", || {
        tagged(d, "behind").len() == 100
    });
    let mut brisk = TcpStream::connect(sluice.addr("brisk")).unwrap();
    let mut byte = [0u8; 1];
    // Sluice closes it: the read ends (0 bytes or a reset), bounded by the test's patience.
    brisk.set_read_timeout(Some(PATIENCE)).unwrap();
    assert!(matches!(brisk.read(&mut byte), Ok(0) | Err(_)));
    let mut garbage = TcpStream::connect(sluice.addr("brisk")).unwrap();
    garbage.write_all(b"<13>this is not TLS\n").unwrap();
    let (api, failures) = (sluice.addr("api"), "sluice_tls_handshake_failures_total");
    wait_for("the timeout and the protocol failure counted", || {
        metric_labeled(api, d, failures, "reason=\"timeout\"") == 1.0
            && metric_labeled(api, d, failures, "reason=\"protocol\"") == 1.0
    });
    drop(stalled);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// SIGHUP loads new certificate files: a session opened before keeps working, new
/// handshakes present the new certificate (a client trusting only the old CA is refused).
#[test]
fn certificates_reload_on_sighup_without_dropping_sessions() {
    let pki = Pki::make().with_extras();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    std::fs::copy(pki.path("server.crt"), &crt).unwrap();
    std::fs::copy(pki.path("server.key"), &key).unwrap();
    let source = format!(
        "[sources.secure]\ntype = \"syslog\"\nmode = \"tls\"\naddress = \"127.0.0.1:0\"\n\
         [sources.secure.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        crt.display(),
        key.display()
    );
    let cfg = config(dir.path(), 1, &format!("{source}{}", file_sink(dir.path())));
    let sluice = Sluice::start(dir.path(), &cfg);
    let addr = sluice.addr("secure");
    let mut old = rustls_client(addr, &pki, "ca.crt", "client").unwrap();
    old.write_all(&frames("before", 0..5)).unwrap();
    old.flush().unwrap();
    std::fs::copy(pki.path("server2.crt"), &crt).unwrap();
    std::fs::copy(pki.path("server2.key"), &key).unwrap();
    signal(&sluice.child, libc::SIGHUP);
    wait_for("the reload", || {
        sluice.log().contains("TLS certificates reloaded")
    });
    old.write_all(&frames("kept", 0..5)).unwrap();
    old.flush().unwrap();
    let refused = rustls_client(addr, &pki, "ca.crt", "client");
    assert!(
        refused.is_err(),
        "the new certificate is not from the old CA"
    );
    let mut new = rustls_client(addr, &pki, "ca2.crt", "client").unwrap();
    new.write_all(&frames("after", 0..5)).unwrap();
    new.flush().unwrap();
    let d = dir.path();
    wait_for("every event of both sessions", || {
        tagged(d, "before").len() == 5
            && tagged(d, "kept").len() == 5
            && tagged(d, "after").len() == 5
    });
    drop((old, new));
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}
