//! The admin API against the real binary: metrics by their contract names, moving under load;
//! readiness; the bearer token; the running config.

mod common;

use std::net::SocketAddr;

use common::*;

fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    http_request(addr, method, path, token, "")
}

/// The value of the sample `name{labels}` (or `name` without labels) in a metrics page.
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const CONTRACT: [&str; 15] = [
    "sluice_events_received_total",
    "sluice_events_durable_total",
    "sluice_bytes_received_total",
    "sluice_parse_errors_total",
    "sluice_frames_oversize_total",
    "sluice_connections_active",
    "sluice_connections_rejected_total",
    "sluice_wal_bytes_total",
    "sluice_wal_fsync_seconds_bucket",
    "sluice_ingest_durable_seconds_bucket",
    "sluice_wal_disk_bytes",
    "sluice_output_events_sent_total",
    "sluice_output_errors_total",
    "sluice_output_lag_events",
    "sluice_events_dropped_total",
];

#[test]
fn metrics_follow_the_contract_and_move_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2, &file_sink(dir.path()))
        .replace("shards = 2\n", "shards = 2\nstatus_interval = \"50ms\"\n");
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    assert_eq!(http(api, "GET", "/health", None).0, 200);
    assert_eq!(
        http(api, "GET", "/ready", None).0,
        200,
        "ready once the ready line is out"
    );

    const EVENTS: u64 = 3000;
    let lines: String = (0..EVENTS)
        .map(|i| format!("{}\n", rfc5424_line("metrics", i)))
        .collect();
    send_tcp(sluice.addr("tcp"), lines.as_bytes());
    wait_for("every event delivered", || {
        count_output_lines(dir.path()) as u64 >= EVENTS
    });

    let mut page = String::new();
    wait_for("the counters to reach the API", || {
        page = http(api, "GET", "/metrics", None).1;
        let durable: f64 = (0..2)
            .filter_map(|s| {
                sample(
                    &page,
                    &format!("sluice_events_durable_total{{shard=\"{s}\"}}"),
                )
            })
            .sum();
        let sent = sample(&page, "sluice_output_events_sent_total{sink=\"out\"}").unwrap_or(0.0);
        durable >= EVENTS as f64 && sent >= EVENTS as f64
    });
    for name in CONTRACT {
        assert!(page.contains(name), "{name} missing from:\n{page}");
    }
    let received: f64 = (0..2)
        .filter_map(|s| {
            let series = format!("sluice_events_received_total{{shard=\"{s}\",source=\"tcp\"}}");
            sample(&page, &series)
        })
        .sum();
    assert_eq!(
        received, EVENTS as f64,
        "ingest counters carry the source:\n{page}"
    );
    for reason in [
        "wal_write_failed",
        "udp_while_blocked",
        "disk_full_drop_oldest",
        "wal_damaged",
        "udp_socket_buffer",
    ] {
        let series = format!("sluice_events_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(sample(&page, &series), Some(0.0), "{series}");
    }
    let fsyncs: f64 = (0..2)
        .filter_map(|s| {
            sample(
                &page,
                &format!("sluice_wal_fsync_seconds_count{{shard=\"{s}\"}}"),
            )
        })
        .sum();
    assert!(fsyncs >= 1.0, "fdatasyncs are timed:\n{page}");
    let timed: f64 = (0..2)
        .filter_map(|s| {
            sample(
                &page,
                &format!("sluice_ingest_durable_seconds_count{{shard=\"{s}\"}}"),
            )
        })
        .sum();
    assert_eq!(
        timed, EVENTS as f64,
        "every durable event is timed once from its socket read:\n{page}"
    );
    wait_for("the lag to reach zero", || {
        let page = http(api, "GET", "/metrics", None).1;
        (0..2).all(|s| {
            let series = format!("sluice_output_lag_events{{sink=\"out\",shard=\"{s}\"}}");
            sample(&page, &series) == Some(0.0)
        })
    });
    wait_for("a status line", || {
        sluice
            .log()
            .lines()
            .any(|l| l.contains(" status ") && l.contains("lag_events="))
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn token_config_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let token = "s3cret-token-for-tests";
    let cfg = config(dir.path(), 1, &file_sink(dir.path())).replace(
        "[api]\naddress = \"127.0.0.1:0\"",
        &format!("[api]\naddress = \"127.0.0.1:0\"\ntoken = \"{token}\""),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    assert_eq!(
        http(api, "GET", "/health", None).0,
        200,
        "health needs no token"
    );
    assert_eq!(http(api, "GET", "/metrics", None).0, 401);
    assert_eq!(
        http(api, "GET", "/metrics", Some("wrong-token-wrong-token")).0,
        401
    );
    assert_eq!(http(api, "GET", "/metrics", Some(token)).0, 200);
    let (status, body) = http(api, "GET", "/config", Some(token));
    assert_eq!(status, 200);
    assert_eq!(body, cfg, "the running config's text");
    assert_eq!(http(api, "GET", "/nope", Some(token)).0, 404);
    assert_eq!(http(api, "DELETE", "/metrics", Some(token)).0, 405);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn an_api_address_in_use_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = config(dir.path(), 1, &file_sink(dir.path())).replace(
        "[api]\naddress = \"127.0.0.1:0\"",
        &format!("[api]\naddress = \"127.0.0.1:{port}\""),
    );
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("api.address") && stderr.contains(&port.to_string()),
        "{stderr}"
    );
}

/// systemd's notify protocol, with the test as the service manager: READY=1 comes after the
/// ready line (bound, recovered, outputs running), STOPPING=1 when the drain starts.
#[test]
fn notifies_systemd_ready_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&socket_path).unwrap();
    manager
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config(dir.path(), 1, &file_sink(dir.path()))).unwrap();
    let mut child = std::process::Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = manager.recv(&mut buf).expect("READY=1 within a minute");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "READY=1");
    // SAFETY: SIGTERM to the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let n = manager.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(std::str::from_utf8(&buf[..n]).unwrap().trim(), "STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn connections_are_balanced_over_shards_at_accept() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &file_sink(dir.path())));
    let api = sluice.addr("api");
    // SO_REUSEPORT alone spreads by a hash: 16 connections split 8/8 ± 1 only about half
    // the time. With accept-time balancing the shards never differ by more than 2 (two
    // accepts deciding at the same moment).
    const CONNECTIONS: u64 = 16;
    let mut streams: Vec<std::net::TcpStream> = (0..CONNECTIONS)
        .map(|_| std::net::TcpStream::connect(sluice.addr("tcp")).unwrap())
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        use std::io::Write;
        writeln!(s, "{}", rfc5424_line("balanced", i as u64)).unwrap();
    }
    let active = |page: &str, shard: usize| {
        sample(
            page,
            &format!("sluice_connections_active{{shard=\"{shard}\",source=\"tcp\"}}"),
        )
        .unwrap_or(0.0)
    };
    let mut page = String::new();
    wait_for("every connection served", || {
        page = http(api, "GET", "/metrics", None).1;
        active(&page, 0) + active(&page, 1) == CONNECTIONS as f64
    });
    let (a, b) = (active(&page, 0), active(&page, 1));
    assert!((a - b).abs() <= 2.0, "shards serve {a} and {b} connections");
    drop(streams);
    wait_for("an event from every connection delivered", || {
        count_output_lines(dir.path()) as u64 >= CONNECTIONS
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn datagrams_the_kernel_drops_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    // A small receive buffer on the UDP source (the last section of the config).
    let cfg = config(dir.path(), 2, "receive_buffer = \"4KiB\"\n") + &file_sink(dir.path());
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    // Stopped, Sluice reads nothing: the kernel queues what fits in the buffer and drops the
    // rest. Every datagram is then either received or counted as dropped.
    const SENT: u64 = 2000;
    sluice.pause();
    udp_send(
        sluice.addr("udp"),
        (0..SENT).map(|i| rfc5424_line("flood", i)),
    );
    sluice.resume();
    let (mut received, mut dropped) = (0.0, 0.0);
    wait_for("every datagram received or counted as dropped", || {
        let page = http(api, "GET", "/metrics", None).1;
        received = (0..2)
            .filter_map(|s| {
                let series =
                    format!("sluice_events_received_total{{shard=\"{s}\",source=\"udp\"}}");
                sample(&page, &series)
            })
            .sum();
        dropped = sample(
            &page,
            "sluice_events_dropped_total{reason=\"udp_socket_buffer\"}",
        )
        .unwrap_or(0.0);
        received + dropped == SENT as f64
    });
    assert!(dropped > 0.0, "a 4 KiB buffer cannot hold {SENT} datagrams");
    assert!(
        received > 0.0,
        "what the buffer held was read after SIGCONT"
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// Every row of every metric table is exported (a counter with `_total`, units in the name),
/// histograms end in `le="+Inf"`, `sluice_build_info` names the version, and every loss
/// reason of the tables appears in `sluice_events_dropped_total`.
#[test]
fn every_table_metric_is_exported_by_its_contract_name() {
    use engine::metrics::table::{Family, Kind};
    use engine::metrics::{
        ApiCounters, OutputCounters, ProcessSnapshot, ShardCounters, SourceShardCounters,
    };

    fn check<T: Family>(page: &str) {
        for m in T::METRICS {
            match m.kind {
                Kind::Counter => assert!(
                    m.name.ends_with("_total"),
                    "{}: a counter ends in _total",
                    m.name
                ),
                Kind::Gauge => assert!(
                    !m.name.ends_with("_total"),
                    "{}: a gauge does not end in _total",
                    m.name
                ),
            }
            for unit in ["bytes", "seconds"] {
                if m.key.contains(unit) {
                    assert!(
                        m.name.contains(&format!("_{unit}")),
                        "{}: the unit is in the name",
                        m.name
                    );
                }
            }
            let mut labels: Vec<String> = T::LABELS.iter().map(|l| format!("{l}=\"")).collect();
            if let Some((k, v)) = m.label {
                labels.push(format!("{k}=\"{v}\""));
            }
            let found = page.lines().any(|l| {
                l.split(['{', ' ']).next() == Some(m.name)
                    && labels.iter().all(|want| l.contains(want.as_str()))
            });
            assert!(found, "{} ({:?}) is not exported:\n{page}", m.name, labels);
            if let Some(reason) = m.loss {
                let series = format!("sluice_events_dropped_total{{reason=\"{reason}\"}}");
                assert!(sample(page, &series).is_some(), "{series} missing");
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &file_sink(dir.path())));
    let api = sluice.addr("api");
    let token = api_token(dir.path());
    send_tcp(
        sluice.addr("tcp"),
        format!("{}\n", rfc5424_line("scrape", 1)).as_bytes(),
    );
    wait_for("the event delivered", || {
        count_output_lines(dir.path()) == 1
    });
    let (code, page) = http(api, "GET", "/metrics", Some(&token));
    assert_eq!(code, 200);
    check::<ShardCounters>(&page);
    check::<SourceShardCounters>(&page);
    check::<OutputCounters>(&page);
    check::<ApiCounters>(&page);
    check::<ProcessSnapshot>(&page);
    for family in ["sluice_wal_fsync_seconds", "sluice_ingest_durable_seconds"] {
        let inf = format!("{family}_bucket{{le=\"+Inf\",shard=\"0\"}}");
        assert!(sample(&page, &inf).is_some(), "{inf} missing:\n{page}");
    }
    assert!(!page.contains("le=\"inf\""), "scrapers reject le=\"inf\"");
    let info = format!(
        "sluice_build_info{{version=\"{}\",",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        page.lines()
            .any(|l| l.starts_with(&info) && l.ends_with(" 1")),
        "build info:\n{page}"
    );
    assert_eq!(
        sample(&page, "sluice_output_events_sent_total{sink=\"out\"}"),
        Some(1.0)
    );
    assert!(sample(&page, "sluice_process_resident_memory_bytes").unwrap_or(0.0) > 0.0);
    assert!(sample(&page, "sluice_process_open_fds").unwrap_or(0.0) > 0.0);
    sluice.stop();
}
