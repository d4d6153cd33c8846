//! The RELP output against rsyslog's imrelp (Debian's rsyslog-relp, unpacked privately like the
//! bench harness unpacks its peers; `.ci/run` does it): every event exactly once, and nothing
//! lost when the receiver restarts in the middle.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use common::pki::Pki;
use common::*;

/// Where rsyslog-relp and librelp0 are unpacked (`SLUICE_RELP_ROOT`, default
/// `/tmp/sluice-peers/relp`).
fn relp_root() -> PathBuf {
    let root = PathBuf::from(
        std::env::var("SLUICE_RELP_ROOT").unwrap_or_else(|_| "/tmp/sluice-peers/relp".into()),
    );
    assert!(
        root.join("usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so").exists(),
        "rsyslog's imrelp is not unpacked under {} (apt-get download rsyslog-relp librelp0; dpkg-deb -x each there)",
        root.display()
    );
    root
}

/// rsyslogd with imrelp on `port`, writing each message's text as one line to `out`.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Rsyslog {
        Self::start_with(dir, port, "")
    }

    /// `input_options`: more imrelp parameters (e.g. its TLS ones).
    fn start_with(dir: &Path, port: u16, input_options: &str) -> Rsyslog {
        let root = relp_root();
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="{root}/usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so")
input(type="imrelp" port="{port}" address="127.0.0.1" {input_options})
template(name="msgonly" type="string" string="%msg%\n")
*.* action(type="omfile" file="{out}" template="msgonly")
"#,
                work = work.display(),
                root = root.display(),
                out = dir.join("out.log").display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .env("LD_LIBRARY_PATH", root.join("usr/lib/x86_64-linux-gnu"))
            .spawn()
            .expect("rsyslogd");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        wait_for("rsyslog's imrelp to listen", || {
            TcpStream::connect(addr).is_ok()
        });
        Rsyslog {
            child,
            dir: dir.to_path_buf(),
            port,
        }
    }

    /// SIGTERM (rsyslog writes out its queue) and wait.
    fn stop(mut self) {
        signal(&self.child, libc::SIGTERM);
        let _ = self.child.wait();
    }

    fn counts(&self) -> HashMap<u64, usize> {
        let text = std::fs::read_to_string(self.dir.join("out.log")).unwrap_or_default();
        let mut counts = HashMap::new();
        for line in text.lines() {
            if let Some(seq) = seq_of(line.as_bytes()) {
                *counts.entry(seq).or_insert(0) += 1;
            }
        }
        counts
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    let rsyslog = Rsyslog::start(&dir.path().join("rsyslog"), free_port());
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
    let rsyslog = Rsyslog::start(&rs_dir, port);
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &relp_sink(port)));
    send_range(sluice.addr("tcp"), 0..5_000);
    wait_for("the first part", || rsyslog.counts().len() >= 5_000);
    rsyslog.stop();
    send_range(sluice.addr("tcp"), 5_000..10_000);
    let api = sluice.addr("api");
    wait_for("a failed attempt while rsyslog is down", || {
        metric_sum(api, dir.path(), "sluice_output_errors_total") >= 1.0
    });
    let rsyslog = Rsyslog::start(&rs_dir, port);
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
    let rsyslog = Rsyslog::start_with(&dir.path().join("rsyslog"), port, &tls);
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
