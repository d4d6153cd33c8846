//! RELP into Sluice (`mode = "relp"`) from rsyslog's omrelp (Debian's rsyslog-relp, unpacked
//! privately) and from a test client that watches the protocol: every message exactly once;
//! `kill -9` in the middle loses nothing (rsyslog sends again what was not answered); an
//! answer means durable, so while the disk budget blocks the sender's window fills and waits.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;

use common::pki::Pki;
use common::relp::RelpClient;
use common::rsyslog::{relp_module, Rsyslog};
use common::*;

fn relp_source(port: u16, extra: &str) -> String {
    format!(
        "[sources.relp]\ntype = \"syslog\"\nmode = \"relp\"\naddress = \"127.0.0.1:{port}\"\n{extra}\n"
    )
}

/// rsyslogd taking octet-counted syslog on `relay_port` (imtcp) and forwarding it with
/// omrelp to Sluice on `port`, retrying forever (`action_options`: more omrelp parameters).
fn rsyslog_relay(dir: &Path, relay_port: u16, port: u16, action_options: &str) -> Rsyslog {
    Rsyslog::start_conf(
        dir,
        relay_port,
        &format!(
            r#"module(load="imtcp")
module(load="{omrelp}")
input(type="imtcp" port="{relay_port}" address="127.0.0.1")
*.* action(type="omrelp" target="127.0.0.1" port="{port}" template="RSYSLOG_SyslogProtocol23Format"
     action.resumeRetryCount="-1" action.resumeInterval="1"
     queue.type="LinkedList" queue.size="500000" {action_options})
"#,
            omrelp = relp_module("omrelp"),
        ),
    )
}

fn send_to_relay(relay_port: u16, tag: &str, range: std::ops::Range<u64>) {
    let mut conn = TcpStream::connect(("127.0.0.1", relay_port)).unwrap();
    let mut buf = Vec::new();
    for seq in range {
        buf.extend_from_slice(octet(&rfc5424_line(tag, seq)).as_bytes());
    }
    conn.write_all(&buf).unwrap();
}

fn seqs_tagged(dir: &Path, tag: &str) -> Vec<u64> {
    read_events(dir)
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.contains(tag))
        .filter_map(|m| seq_of(m.as_bytes()))
        .collect()
}

/// 100,000 messages from rsyslog's omrelp: each exactly once, all acknowledged.
#[test]
fn omrelp_100k_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        2,
        &format!("{}{}", relp_source(port, ""), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let relay_port = free_port();
    let rsyslog = rsyslog_relay(&dir.path().join("rsyslog"), relay_port, port, "");
    send_to_relay(relay_port, "omrelp", 0..100_000);
    let (api, d) = (sluice.addr("api"), dir.path());
    wait_for_metric(api, d, "sluice_relp_acknowledged_total", 100_000.0);
    rsyslog.stop();
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs = seqs_tagged(dir.path(), "omrelp");
    assert_eq!(seqs.len(), 100_000, "no duplicates without a failure");
    assert_eq!(seqs.into_iter().collect::<HashSet<_>>().len(), 100_000);
}

/// `kill -9` of Sluice while omrelp sends 100,000 messages, then a restart on the same port:
/// rsyslog sends again what was not answered; every message arrives (duplicates allowed).
#[test]
fn kill_9_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(
        dir.path(),
        2,
        &format!("{}{}", relp_source(port, ""), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let relay_port = free_port();
    let rsyslog = rsyslog_relay(&dir.path().join("rsyslog"), relay_port, port, "");
    send_to_relay(relay_port, "crash", 0..100_000);
    let (api, d) = (sluice.addr("api"), dir.path());
    wait_for("part of the stream acknowledged", || {
        metric_sum(api, d, "sluice_relp_acknowledged_total") >= 20_000.0
    });
    let config_path = sluice.config_path.clone();
    sluice.kill9();
    let sluice = Sluice::start_with(&config_path);
    wait_for("every message after the restart", || {
        seqs_tagged(d, "crash")
            .into_iter()
            .collect::<HashSet<_>>()
            .len()
            == 100_000
    });
    rsyslog.stop();
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs = seqs_tagged(dir.path(), "crash");
    eprintln!(
        "{} events for 100000 messages ({} sent again after the crash)",
        seqs.len(),
        seqs.len() - 100_000
    );
}

/// An answer means durable. The WAL's disk budget blocks (the only output cannot deliver):
/// the sender's whole window goes unanswered and it waits. Sluice is then killed with -9
/// while blocked: after a restart (the receiver back), every message that was answered is
/// delivered; what was never answered may be missing (the sender still holds it).
#[test]
fn answers_wait_for_durability_while_the_disk_budget_blocks() {
    const WINDOW: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let sink_port = free_port();
    let sink = format!(
        "[sinks.forward]\ntype = \"tcp\"\naddress = \"127.0.0.1:{sink_port}\"\n\
         initial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n"
    );
    let cfg = config(dir.path(), 1, &format!("{}{sink}", relp_source(0, ""))).replace(
        "segment_size = \"4MiB\"",
        "segment_size = \"1MiB\"\nbuffer_size = \"256KiB\"\nmin_free_disk = \"0\"\nmax_disk = \"3MiB\"",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let (api, d) = (sluice.addr("api"), dir.path());
    let mut client = RelpClient::open(sluice.addr("relp"), WINDOW);
    let answers = std::sync::Arc::clone(&client.answers);
    let sender = std::thread::spawn(move || {
        let mut seq = 0;
        while client.send(seq, rfc5424_line("budget", seq).as_bytes()) {
            seq += 1;
        }
        client
    });
    wait_for("the disk budget to block", || {
        metric_sum(api, d, "sluice_wal_budget_blocks_total") >= 1.0
    });
    // Nothing is answered any more: the sender's window fills and it waits.
    wait_for("a full window waiting", || {
        answers.0.lock().unwrap().in_flight.len() == WINDOW
    });
    let acked: HashSet<u64> = answers.0.lock().unwrap().acked.iter().copied().collect();
    assert!(!acked.is_empty());
    let config_path = sluice.config_path.clone();
    sluice.kill9();
    let _client = sender.join().unwrap();
    let receiver = Receiver::start_at(&format!("127.0.0.1:{sink_port}"), 0);
    let sluice = Sluice::start_with(&config_path);
    wait_for("every answered message delivered", || {
        let seqs = receiver.seqs.lock().unwrap();
        acked.iter().all(|s| seqs.contains_key(s))
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    eprintln!("{} messages answered before the block", acked.len());
}

/// A message over `max_frame` is kept truncated, flagged and answered (librelp's
/// `oversizeMode = "truncate"`); a client that does not speak RELP is closed and counted.
#[test]
fn oversize_messages_are_truncated_and_garbage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        1,
        &format!(
            "{}{}",
            relp_source(0, "max_frame = \"1KiB\""),
            file_sink(dir.path())
        ),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let mut client = RelpClient::open(sluice.addr("relp"), 8);
    let long = format!("{} {}", rfc5424_line("long", 1), "x".repeat(5_000));
    assert!(client.send(1, long.as_bytes()));
    assert!(client.send(2, rfc5424_line("short", 2).as_bytes()));
    client.wait("both answered", |a| a.acked == [1, 2]);
    let mut garbage = TcpStream::connect(sluice.addr("relp")).unwrap();
    garbage
        .write_all(b"<13>plain syslog is not RELP\n")
        .unwrap();
    let (api, d) = (sluice.addr("api"), dir.path());
    wait_for_metric(api, d, "sluice_relp_protocol_errors_total", 1.0);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(dir.path());
    let long = events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.contains("long")))
        .unwrap();
    assert_eq!(long["truncated"], true, "{long}");
    assert!(events
        .iter()
        .any(|e| e["message"].as_str().is_some_and(|m| m.contains("short"))));
}

/// RELP over TLS from omrelp (librelp with GnuTLS), each side checking the other's
/// certificate; the events carry the client certificate's subject.
#[test]
fn omrelp_over_tls() {
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tls = format!(
        "[sources.relp.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_auth = \"required\"\n",
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt")
    );
    let cfg = config(
        dir.path(),
        1,
        &format!("{}{}", relp_source(port, &tls), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let relay_port = free_port();
    let options = format!(
        r#"tls="on" tls.caCert="{}" tls.myCert="{}" tls.myPrivKey="{}" tls.authMode="certvalid""#,
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let rsyslog = rsyslog_relay(&dir.path().join("rsyslog"), relay_port, port, &options);
    send_to_relay(relay_port, "relptls", 0..2_000);
    let (api, d) = (sluice.addr("api"), dir.path());
    wait_for_metric(api, d, "sluice_relp_acknowledged_total", 2_000.0);
    rsyslog.stop();
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(dir.path());
    assert_eq!(seqs_tagged(dir.path(), "relptls").len(), 2_000);
    assert!(events
        .iter()
        .all(|e| e["tls"]["peer_subject"] == "CN=client"));
}
