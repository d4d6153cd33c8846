//! Outputs against the real binary (issue 14, first part): the console sink, where a sink
//! without a cursor starts (`start_at`).

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use common::*;

fn send(addr: std::net::SocketAddr, tag: &str, range: std::ops::Range<u64>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    for seq in range {
        conn.write_all(octet(&rfc5424_line(tag, seq)).as_bytes())
            .unwrap();
    }
}

/// `type = "console"` writes each event as a JSON line on Sluice's standard output.
#[test]
fn the_console_sink_writes_json_lines_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let text = config(dir.path(), 1, "[sinks.screen]\ntype = \"console\"\n");
    let mut sluice = Sluice::start_capturing_stdout(dir.path(), &text);
    let stdout = sluice.child.stdout.take().unwrap();
    send(sluice.addr("tcp"), "console", 0..3);
    let lines: Vec<serde_json::Value> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs: Vec<u64> = lines
        .iter()
        .map(|e| seq_of(e["message"].as_str().unwrap().as_bytes()).unwrap())
        .collect();
    assert_eq!(seqs, vec![0, 1, 2]);
    assert_eq!(lines[0]["appname"], "nginx");
}

/// A sink added by a reload starts at the end of the WAL (it gets what arrives after the
/// reload); with `start_at = "oldest"` it back-fills what the WAL holds.
#[test]
fn a_sink_added_later_starts_at_the_end_unless_asked_for_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(format!("{name}.ndjson"));
    let sink = |name: &str, extra: &str| {
        format!(
            "[sinks.{name}]\ntype = \"file\"\npath = \"{}\"\n{extra}",
            path(name).display()
        )
    };
    let base = config(dir.path(), 2, "");
    let sluice = Sluice::start(dir.path(), &format!("{base}{}", sink("first", "")));
    send(sluice.addr("tcp"), "before", 0..100);
    wait_for("the first part", || seqs_in(&path("first")).len() == 100);
    let reloaded = format!(
        "{base}{}{}{}",
        sink("first", ""),
        sink("later", ""),
        sink("history", "start_at = \"oldest\"\n")
    );
    std::fs::write(&sluice.config_path, reloaded).unwrap();
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(sluice.child.id() as i32, libc::SIGHUP) };
    wait_for("the reload", || sluice.log().contains("+[history,later]"));
    send(sluice.addr("tcp"), "after", 100..200);
    wait_for("every sink", || {
        seqs_in(&path("first")).len() == 200
            && seqs_in(&path("history")).len() == 200
            && seqs_in(&path("later")).len() >= 100
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let later = seqs_in(&path("later"));
    assert_eq!(
        later,
        (100..200).collect::<HashSet<u64>>(),
        "only what arrived after it started"
    );
    assert_eq!(
        seqs_in(&path("history")),
        (0..200).collect::<HashSet<u64>>()
    );
}

/// A destination that is down opens the circuit after `failure_threshold` failures (gauge 1,
/// counted); once it is back, the half-open probe succeeds, the circuit closes (gauge 0) and
/// everything is delivered.
#[test]
fn the_circuit_opens_while_the_destination_is_down_and_closes_when_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = format!(
        "[sinks.fwd]\ntype = \"tcp\"\naddress = \"127.0.0.1:{port}\"\nframing = \"octet_counting\"\nencoding = \"raw\"\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\nfailure_threshold = 3\nopen_for = \"300ms\"\n"
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    let api = sluice.addr("api");
    send(sluice.addr("tcp"), "circuit", 0..50);
    wait_for_metric(api, dir.path(), "sluice_output_circuit_state", 1.0);
    assert!(metric_sum(api, dir.path(), "sluice_output_circuit_opened_total") >= 1.0);
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), 0);
    wait_for("every event delivered", || receiver.distinct() == 50);
    wait_for_metric(api, dir.path(), "sluice_output_circuit_state", 0.0);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("circuit open")
            && log.contains("circuit half-open")
            && log.contains("circuit closed"),
        "{log}"
    );
}
