//! At-least-once delivery: bulk exactly-once after a clean stop, Sluice → Sluice chaining,
//! and `kill -9` during delivery.

mod common;

use std::io::Write;
use std::net::TcpStream;

use common::*;

/// Sends `per_conn` RFC 5424 lines on each of `conns` connections (alternating newline and
/// octet-counting framing), tag `c<i>`, seq numbers unique across connections.
fn send_bulk(addr: std::net::SocketAddr, conns: usize, per_conn: u64) {
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let mut payload = Vec::with_capacity(per_conn as usize * 240);
                for i in 0..per_conn {
                    let line = rfc5424_line(&format!("c{c}"), c as u64 * per_conn + i);
                    if c % 2 == 0 {
                        payload.extend_from_slice(line.as_bytes());
                        payload.push(b'\n');
                    } else {
                        payload.extend_from_slice(octet(&line).as_bytes());
                    }
                }
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(&payload).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

const UDP_EVENTS: u64 = 2_000;
const UDP_SEQ_BASE: u64 = 1_000_000;
const CONNS: usize = 8;
const PER_CONN: u64 = 12_500;
const TOTAL: u64 = CONNS as u64 * PER_CONN + UDP_EVENTS;

/// The standard workload: 2,000 UDP datagrams (in bursts the kernel's buffer certainly holds,
/// each awaited in `out_dir`'s file sink), then 100,000 events over 8 TCP connections.
fn send_workload(sluice: &Sluice, out_dir: &std::path::Path) {
    for burst in 0..(UDP_EVENTS / 250) {
        let lines = (0..250).map(|i| rfc5424_line("udp", UDP_SEQ_BASE + burst * 250 + i));
        udp_send(sluice.addr("udp"), lines);
        wait_for("udp burst", || {
            count_output_lines(out_dir) as u64 >= (burst + 1) * 250
        });
    }
    send_bulk(sluice.addr("tcp"), CONNS, PER_CONN);
}

/// Asserts every workload event is in `events` exactly once; returns events per shard.
fn assert_exactly_once(events: &[serde_json::Value]) -> [usize; 2] {
    assert_eq!(
        events.len() as u64,
        TOTAL,
        "exactly once: no duplicates, no loss"
    );
    let mut seen = vec![false; (CONNS as u64 * PER_CONN) as usize];
    let mut udp_seen = vec![false; UDP_EVENTS as usize];
    let mut shards = [0usize; 2];
    for e in events {
        let seq = seq_of(e["message"].as_str().unwrap().as_bytes()).unwrap();
        let slot = if seq >= UDP_SEQ_BASE {
            &mut udp_seen[(seq - UDP_SEQ_BASE) as usize]
        } else {
            &mut seen[seq as usize]
        };
        assert!(!*slot, "duplicate seq {seq}");
        *slot = true;
        // The frame went through unchanged and was parsed (again, after a chain).
        assert_eq!(e["format"], "rfc5424");
        assert_eq!(e["appname"], "nginx");
        assert_eq!(e["msgid"], "ACCESS");
        assert_eq!(e["timestamp"], "2026-11-23T08:00:00.123456Z");
        assert!(e["hostname"].as_str().unwrap().ends_with(".example.net"));
        shards[e["shard"].as_u64().unwrap() as usize] += 1;
    }
    assert!(seen.iter().all(|&s| s) && udp_seen.iter().all(|&s| s));
    shards
}

#[test]
fn hundred_thousand_events_over_tcp_and_udp_delivered_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &file_sink(dir.path())));
    send_workload(&sluice, dir.path());
    wait_for("all events in the file", || {
        count_output_lines(dir.path()) as u64 >= TOTAL
    });
    let api = sluice.addr("api");
    wait_for_metric(api, dir.path(), "sluice_events_durable_total", TOTAL as f64);
    assert_eq!(
        metric_sum(api, dir.path(), "sluice_events_received_total"),
        TOTAL as f64
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let shards = assert_exactly_once(&read_events(dir.path()));
    eprintln!("events per shard: {shards:?}");
}

#[test]
fn sluice_to_sluice_chain_delivers_exactly_once() {
    let down_dir = tempfile::tempdir().unwrap();
    let downstream = Sluice::start(
        down_dir.path(),
        &config(down_dir.path(), 2, &file_sink(down_dir.path())),
    );
    let up_dir = tempfile::tempdir().unwrap();
    let forward = format!(
        "[sinks.forward]\ntype = \"tcp\"\naddress = \"{}\"\nframing = \"octet_counting\"\nencoding = \"raw\"\n",
        downstream.addr("tcp")
    );
    let upstream = Sluice::start(up_dir.path(), &config(up_dir.path(), 2, &forward));
    send_workload(&upstream, down_dir.path());
    wait_for("events through the chain", || {
        count_output_lines(down_dir.path()) as u64 >= TOTAL
    });
    let (status, log) = upstream.stop();
    assert!(status.success(), "{log}");
    let (status, log) = downstream.stop();
    assert!(status.success(), "{log}");
    assert_exactly_once(&read_events(down_dir.path()));
}

#[test]
fn kill_9_during_delivery_loses_no_durable_event() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver stops reading after 1,000 frames: delivery is stuck mid-way when we kill.
    let receiver = Receiver::start(1_000);
    let forward = format!(
        "[sinks.forward]\ntype = \"tcp\"\naddress = \"{}\"\nframing = \"octet_counting\"\nencoding = \"raw\"\ninitial_backoff = \"10ms\"\nmax_backoff = \"200ms\"\n",
        receiver.addr
    );
    // One segment holds everything, so retention cannot delete delivered records before the
    // kill and the WAL alone tells what was durable.
    let cfg = config(dir.path(), 2, &forward)
        .replace("segment_size = \"4MiB\"", "segment_size = \"64MiB\"");
    let sluice = Sluice::start(dir.path(), &cfg);
    let total = 4 * 15_000;
    send_bulk(sluice.addr("tcp"), 4, 15_000);
    let data = dir.path().join("data");
    wait_for("every event in the WAL", || {
        wal_record_count(&data) as u64 >= total
    });
    assert!(
        receiver.frames() < total as usize,
        "delivery must still be in progress"
    );
    sluice.kill9();
    let before_restart = receiver.frames();

    let sluice = Sluice::start_with(&dir.path().join("sluice.toml"));
    receiver.resume();
    wait_for("every event delivered after the restart", || {
        receiver.distinct() as u64 >= total
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs = receiver.seqs.lock().unwrap();
    for seq in 0..total {
        assert!(
            seqs.contains_key(&seq),
            "event {seq} was durable before the kill and is missing"
        );
    }
    let duplicates: usize = seqs.values().map(|n| n - 1).sum();
    eprintln!("received before restart: {before_restart}, duplicates after restart: {duplicates}");
}

#[test]
fn delivered_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2, &file_sink(dir.path())).replace(
        "segment_size = \"4MiB\"",
        "segment_size = \"1MiB\"\nbuffer_size = \"256KiB\"",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    // About 12 MiB of WAL: several segments per shard.
    send_bulk(sluice.addr("tcp"), 4, 10_000);
    wait_for("all events in the file", || {
        count_output_lines(dir.path()) >= 40_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let data = dir.path().join("data");
    let mut deleted_somewhere = false;
    for shard in ["shard-0", "shard-1"] {
        let segments = storage::segment::list_segments(&data.join(shard)).unwrap();
        assert!(
            segments.len() <= 2,
            "{shard} keeps only the active segment (and one just passed): {segments:?}"
        );
        deleted_somewhere |= segments[0] > 1;
    }
    // 12 MiB over two shards: at least one shard filled several 1 MiB segments.
    assert!(deleted_somewhere, "delivered segments were deleted");
    assert_eq!(read_events(dir.path()).len(), 40_000);
}
