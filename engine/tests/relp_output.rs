//! The RELP output against rsyslog's imrelp (Debian's rsyslog-relp, unpacked privately like the
//! bench harness unpacks its peers; `.ci/run` does it): every event exactly once, and nothing
//! lost when the receiver restarts in the middle.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use common::pki::Pki;
use common::rsyslog::{relp_module, Rsyslog};
use common::*;

/// rsyslogd with imrelp on `port`, writing each message's text as one line to `out.log`;
/// `input_options`: more imrelp parameters (e.g. its TLS ones).
fn start_imrelp(dir: &Path, port: u16, input_options: &str) -> Rsyslog {
    Rsyslog::start_conf(
        dir,
        port,
        &format!(
            r#"module(load="{imrelp}")
input(type="imrelp" port="{port}" address="127.0.0.1" {input_options})
template(name="msgonly" type="string" string="%msg%\n")
*.* action(type="omfile" file="{out}" template="msgonly")
"#,
            imrelp = relp_module("imrelp"),
            out = dir.join("out.log").display(),
        ),
    )
}

fn send_range(addr: SocketAddr, range: std::ops::Range<u64>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    let mut buf = Vec::new();
    for seq in range {
        buf.extend_from_slice(octet(&rfc5424_line("relp", seq)).as_bytes());
    }
    conn.write_all(&buf).unwrap();
}

fn relp_sink(port: u16) -> String {
    format!(
        "[sinks.chain]\ntype = \"relp\"\naddress = \"127.0.0.1:{port}\"\nwindow = 64\n\
         initial_backoff = \"50ms\"\nmax_backoff = \"500ms\"\n"
    )
}

/// 20,000 events through RELP into rsyslog: each exactly once after a clean stop.
#[test]
fn relp_into_rsyslog_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let rsyslog = start_imrelp(&dir.path().join("rsyslog"), free_port(), "");
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &relp_sink(rsyslog.port)));
    send_range(sluice.addr("tcp"), 0..20_000);
    wait_for("20,000 events at rsyslog", || {
        rsyslog.counts().len() >= 20_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let counts = rsyslog.counts();
    rsyslog.stop();
    assert_eq!(counts.len(), 20_000);
    assert!(
        counts.values().all(|&n| n == 1),
        "no duplicates without a failure"
    );
}

/// rsyslog is stopped in the middle and started again on the same port: every event arrives
/// (duplicates allowed: a message taken whose answer was lost is sent again).
#[test]
fn relp_receiver_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rs_dir = dir.path().join("rsyslog");
    let rsyslog = start_imrelp(&rs_dir, port, "");
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &relp_sink(port)));
    send_range(sluice.addr("tcp"), 0..5_000);
    wait_for("the first part", || rsyslog.counts().len() >= 5_000);
    rsyslog.stop();
    send_range(sluice.addr("tcp"), 5_000..10_000);
    let api = sluice.addr("api");
    wait_for("a failed attempt while rsyslog is down", || {
        metric_sum(api, dir.path(), "sluice_output_errors_total") >= 1.0
    });
    let rsyslog = start_imrelp(&rs_dir, port, "");
    wait_for("every event after the restart", || {
        rsyslog.counts().len() >= 10_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let counts = rsyslog.counts();
    rsyslog.stop();
    assert_eq!(counts.len(), 10_000, "every event, none lost");
}

/// RELP over TLS into rsyslog's imrelp (librelp with GnuTLS): the receiver checks Sluice's
/// client certificate against its CA (`tls.authMode="certvalid"`), Sluice checks the
/// receiver's.
#[test]
fn relp_over_tls_into_rsyslog() {
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let tls = format!(
        r#"tls="on" tls.caCert="{}" tls.myCert="{}" tls.myPrivKey="{}" tls.authMode="certvalid""#,
        pki.path("ca.crt"),
        pki.path("server.crt"),
        pki.path("server.key")
    );
    let rsyslog = start_imrelp(&dir.path().join("rsyslog"), port, &tls);
    let sink = format!(
        "{}tls = {{ ca_file = \"{}\", crt_file = \"{}\", key_file = \"{}\" }}\n",
        relp_sink(port),
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    send_range(sluice.addr("tcp"), 0..2_000);
    wait_for("2,000 events at rsyslog over TLS", || {
        rsyslog.counts().len() >= 2_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let counts = rsyslog.counts();
    rsyslog.stop();
    assert_eq!(counts.len(), 2_000);
}
