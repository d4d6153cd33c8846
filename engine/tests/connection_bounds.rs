//! TCP connections are bounded in memory and time: idle and half-frame connections are
//! closed by `idle_timeout` and `frame_timeout` (counted), 10,000 idle connections cost little
//! memory, and a bad octet count does not swallow the frames after it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

/// Raises this process's open-file limit (Sluice, its child, inherits it).
fn raise_fd_limit(to: u64) {
    let limit = libc::rlimit {
        rlim_cur: to,
        rlim_max: to,
    };
    // SAFETY: setrlimit reads the struct we pass.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The sum of a family's series that carry `label` (e.g. `reason="idle_timeout"`).
fn metric(api: std::net::SocketAddr, family: &str, label: &str) -> u64 {
    let page = http_request(api, "GET", "/metrics", None, "").1;
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn ten_thousand_idle_connections_stay_small_and_are_closed_by_the_idle_timeout() {
    const IDLE: usize = 10_000;
    const HALF_FRAME: usize = 500;
    raise_fd_limit(40_000);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2, &file_sink(dir.path())).replace(
        "address = \"127.0.0.1:0\"\n[sources.udp]",
        "address = \"127.0.0.1:0\"\nmax_connections = 20000\nmax_connections_per_ip = 20000\nidle_timeout = \"20s\"\nframe_timeout = \"20s\"\n[sources.udp]",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let (tcp, api) = (sluice.addr("tcp"), sluice.addr("api"));
    let baseline = rss_kib(sluice.child.id());
    let mut idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(tcp).unwrap())
        .collect();
    let half: Vec<TcpStream> = (0..HALF_FRAME)
        .map(|i| {
            let mut s = TcpStream::connect(tcp).unwrap();
            // Half of a 60 KiB line: a frame begun and never finished.
            let mut part = format!("<13>1 - h a - - - half {i} ").into_bytes();
            part.resize(30 << 10, b'x');
            s.write_all(&part).unwrap();
            s
        })
        .collect();
    wait_for("every connection open", || {
        metric(api, "sluice_connections_active", "source=\"tcp\"") as usize == IDLE + HALF_FRAME
    });
    let held = rss_kib(sluice.child.id());
    eprintln!(
        "RSS: {baseline} KiB before, {held} KiB with {IDLE} idle and {HALF_FRAME} half-frame connections"
    );
    assert!(held < 128 << 10, "RSS {held} KiB ≥ 128 MiB");
    wait_for("the timeouts closed them", || {
        metric(api, "sluice_connections_active", "source=\"tcp\"") == 0
    });
    assert_eq!(
        metric(
            api,
            "sluice_connections_closed_total",
            "reason=\"idle_timeout\""
        ),
        IDLE as u64
    );
    assert_eq!(
        metric(
            api,
            "sluice_connections_closed_total",
            "reason=\"frame_timeout\""
        ),
        HALF_FRAME as u64
    );
    // The half frames were kept as events (flagged), as at any close.
    wait_for("half frames delivered", || {
        count_output_lines(dir.path()) == HALF_FRAME
    });
    for s in idle.iter_mut().take(10) {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).unwrap_or(0), 0, "closed by Sluice");
    }
    // The memory goes back to the system once they are closed (buffers, tasks).
    let pid = sluice.child.id();
    wait_for("memory returned after the flood", || {
        rss_kib(pid) < baseline + (held - baseline) / 3
    });
    eprintln!("RSS after they closed: {} KiB", rss_kib(pid));
    drop((idle, half));
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// One bad octet count costs one event (kept, flagged), not the 2,000 frames after it.
#[test]
fn a_bad_octet_count_resynchronises_to_the_next_frame() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &file_sink(dir.path())));
    let mut wire = octet(&rfc5424_line("ok", 0)).into_bytes();
    let miscounted = rfc5424_line("bad", 1);
    wire.extend_from_slice(format!("{} {miscounted}", miscounted.len() - 40).as_bytes());
    for seq in 2..2_002 {
        wire.extend_from_slice(octet(&rfc5424_line("ok", seq)).as_bytes());
    }
    send_tcp(sluice.addr("tcp"), &wire);
    wait_for("every frame delivered", || {
        count_output_lines(dir.path()) >= 2_003
    });
    let api = sluice.addr("api");
    assert_eq!(
        metric_sum(api, dir.path(), "sluice_frames_bad_length_total"),
        1.0
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(dir.path());
    assert_eq!(
        events.len(),
        2_003,
        "the miscounted frame is two events, no more"
    );
    let whole: Vec<u64> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with("ok "))
        .filter_map(|m| seq_of(m.as_bytes()))
        .collect();
    let expected: Vec<u64> = std::iter::once(0).chain(2..2_002).collect();
    assert_eq!(
        whole, expected,
        "every valid frame after the bad count is whole"
    );
}

/// At max_connections a new sender waits in the kernel's backlog (pushed back) instead of
/// being accepted and reset: what it sent meanwhile is taken once a slot frees.
#[test]
fn a_full_source_pushes_new_senders_back_instead_of_resetting_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path())).replace(
        "address = \"127.0.0.1:0\"\n[sources.udp]",
        "address = \"127.0.0.1:0\"\nmax_connections = 3\n[sources.udp]",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let (tcp, api) = (sluice.addr("tcp"), sluice.addr("api"));
    let mut held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(tcp).unwrap()).collect();
    wait_for("three connections served", || {
        metric(api, "sluice_connections_active", "source=\"tcp\"") == 3
    });
    let mut waiting = TcpStream::connect(tcp).unwrap();
    waiting
        .write_all(format!("{}\n", rfc5424_line("waited", 1)).as_bytes())
        .unwrap();
    waiting.shutdown(std::net::Shutdown::Write).unwrap();
    held.pop();
    wait_for("the waiting sender's event", || {
        count_output_lines(dir.path()) == 1
    });
    assert_eq!(
        metric(api, "sluice_connections_rejected_total", "source=\"tcp\""),
        0
    );
    drop(held);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}
