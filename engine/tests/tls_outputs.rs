//! TLS on the stream outputs: the `tcp` sink (syslog over TLS, RFC 5425) and the `relp` sink,
//! each to a TLS receiver the test runs with rustls on a throwaway PKI made by `openssl`.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use common::pki::Pki;
use common::*;

type Seen = Arc<Mutex<Vec<u64>>>;

/// Accepts TLS connections and hands each decrypted stream to `serve`.
fn tls_receiver(
    config: Arc<rustls::ServerConfig>,
    serve: impl Fn(rustls::StreamOwned<rustls::ServerConnection, TcpStream>, &Seen)
        + Send
        + Sync
        + 'static,
) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let seen_in = Arc::clone(&seen);
    let serve = Arc::new(serve);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (config, seen, serve) = (
                Arc::clone(&config),
                Arc::clone(&seen_in),
                Arc::clone(&serve),
            );
            std::thread::spawn(move || {
                let Ok(session) = rustls::ServerConnection::new(config) else {
                    return;
                };
                serve(rustls::StreamOwned::new(session, conn), &seen);
            });
        }
    });
    (addr, seen)
}

fn send_range(addr: SocketAddr, range: std::ops::Range<u64>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    for seq in range {
        conn.write_all(octet(&rfc5424_line("tls", seq)).as_bytes())
            .unwrap();
    }
}

/// Syslog lines, one per event.
fn read_lines(stream: impl Read, seen: &Seen) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if let Some(seq) = seq_of(line.as_bytes()) {
            seen.lock().unwrap().push(seq);
        }
    }
}

/// A minimal RELP receiver: answers `open`, each `syslog` (200) and `close`.
fn relp_receiver(stream: impl Read + Write, seen: &Seen) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut head = Vec::new();
        for _ in 0..3 {
            let mut field = Vec::new();
            loop {
                let mut b = [0u8];
                if reader.read_exact(&mut b).is_err() {
                    return;
                }
                if b[0] == b' ' || b[0] == b'\n' {
                    break;
                }
                field.push(b[0]);
            }
            head.push(String::from_utf8(field).unwrap());
        }
        let len: usize = head[2].parse().unwrap();
        let mut data = vec![0; len];
        if len > 0 {
            reader.read_exact(&mut data).unwrap();
            let mut lf = [0u8];
            reader.read_exact(&mut lf).unwrap();
        }
        let txnr = &head[0];
        let answer = match head[1].as_str() {
            "open" => {
                let offers = "200 OK\nrelp_version=0\ncommands=syslog";
                format!("{txnr} rsp {} {offers}\n", offers.len())
            }
            "syslog" => {
                if let Some(seq) = seq_of(&data) {
                    seen.lock().unwrap().push(seq);
                }
                format!("{txnr} rsp 6 200 OK\n")
            }
            "close" => format!("{txnr} rsp 0\n"),
            other => panic!("unexpected RELP command {other}"),
        };
        let w = reader.get_mut();
        w.write_all(answer.as_bytes()).unwrap();
        w.flush().unwrap();
    }
}

fn deliver_and_count(sink: &str, seen: &Seen, events: u64) {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, sink));
    send_range(sluice.addr("tcp"), 0..events);
    wait_for("every event over TLS", || {
        seen.lock().unwrap().len() as u64 >= events
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let distinct: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
    assert_eq!(distinct, (0..events).collect());
}

/// The tcp sink over TLS, with the receiver's CA and a client certificate it requires.
#[test]
fn tcp_over_tls_with_a_client_certificate() {
    let pki = Pki::make();
    let (addr, seen) = tls_receiver(pki.server(true), read_lines);
    let sink = format!(
        "[sinks.fwd]\ntype = \"tcp\"\naddress = \"{addr}\"\nframing = \"newline\"\n\
         tls = {{ ca_file = \"{}\", crt_file = \"{}\", key_file = \"{}\" }}\n",
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    deliver_and_count(&sink, &seen, 2000);
}

/// The relp sink over TLS: every message answered over the encrypted session.
#[test]
fn relp_over_tls() {
    let pki = Pki::make();
    let (addr, seen) = tls_receiver(pki.server(false), relp_receiver);
    let sink = format!(
        "[sinks.chain]\ntype = \"relp\"\naddress = \"{addr}\"\ntls = {{ ca_file = \"{}\" }}\n",
        pki.path("ca.crt")
    );
    deliver_and_count(&sink, &seen, 2000);
}

/// A receiver whose certificate the configured CA did not sign gets nothing: the handshake
/// fails and is retried (logged with the reason).
#[test]
fn tcp_over_tls_refuses_an_unknown_receiver() {
    let pki = Pki::make();
    let other = Pki::make();
    let (addr, seen) = tls_receiver(pki.server(false), read_lines);
    let sink = format!(
        "[sinks.fwd]\ntype = \"tcp\"\naddress = \"{addr}\"\nframing = \"newline\"\n\
         tls = {{ ca_file = \"{}\" }}\n",
        other.path("ca.crt")
    );
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    let api = sluice.addr("api");
    send_range(sluice.addr("tcp"), 0..10);
    wait_for("a failed handshake", || {
        metric_sum(api, dir.path(), "sluice_output_errors_total") >= 1.0
    });
    let log = sluice.log();
    sluice.kill9();
    assert!(seen.lock().unwrap().is_empty());
    assert!(log.contains("TLS handshake"), "{log}");
}
