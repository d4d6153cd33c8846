//! Every framing and both RFCs through a running Sluice with 2 shards, and bad input.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;

use common::*;

#[test]
fn every_framing_and_both_rfcs() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &file_sink(dir.path())));
    let tcp = sluice.addr("tcp");
    let udp = sluice.addr("udp");

    // Newline framing, CRLF, RFC 5424 with structured data and a BOM.
    send_tcp(tcp, b"<165>1 2003-10-11T22:14:15.003Z host1 app1 77 ID1 [ex@1 k=\"v\\\"q\"] \xEF\xBB\xBFnewline-5424\r\n");
    // Octet counting, several frames in one write, RFC 3164.
    let a = "<34>Oct 11 22:14:15 host2 su[230]: octet-3164";
    let b = "<13>1 - - - - - - octet-5424-nil";
    send_tcp(tcp, format!("{}{}", octet(a), octet(b)).as_bytes());
    // NUL-terminated, as Python's SysLogHandler sends it.
    send_tcp(tcp, b"<14>pyapp: nul-terminated\0");
    // UDP, one datagram one event.
    udp_send(
        udp,
        ["<30>Feb  5 10:01:02 host3 cron[9]: udp-3164\n".to_string()],
    );
    // A line without a header: PRI 13 assumed (RFC 3164 §4.3.3), flagged, the first word the tag.
    send_tcp(tcp, b"plain text line\n");
    // Real clients where the machine has them.
    let logger = Command::new("logger")
        .args([
            "--tcp",
            "--octet-count",
            "--rfc5424",
            "-n",
            "127.0.0.1",
            "-P",
        ])
        .arg(tcp.port().to_string())
        .args(["-t", "loggertag", "logger-5424"])
        .status();
    let have_logger = logger.map(|s| s.success()).unwrap_or(false);
    let expected = 6 + usize::from(have_logger);
    wait_for("all events", || read_events(dir.path()).len() >= expected);
    let parse_errors = metric_sum(sluice.addr("api"), dir.path(), "sluice_parse_errors_total");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");

    let events = read_events(dir.path());
    assert_eq!(events.len(), expected, "{events:#?}");
    let find = |msg: &str| {
        events
            .iter()
            .find(|e| e["message"] == msg)
            .unwrap_or_else(|| panic!("no event {msg:?} in {events:#?}"))
            .clone()
    };
    let e = find("newline-5424");
    assert_eq!(e["format"], "rfc5424");
    assert_eq!(e["hostname"], "host1");
    assert_eq!(e["appname"], "app1");
    assert_eq!(e["procid"], "77");
    assert_eq!(e["msgid"], "ID1");
    assert_eq!(e["facility"], "local4");
    assert_eq!(e["severity"], "notice");
    assert_eq!(e["version"], 1);
    assert_eq!(e["timestamp"], "2003-10-11T22:14:15.003Z");
    assert_eq!(e["structured_data"]["ex@1"]["k"], "v\"q");
    assert_eq!(e["source_ip"], "127.0.0.1");
    assert!(e["shard"].as_u64().unwrap() < 2);
    assert!(e["received_at"].as_str().unwrap().ends_with('Z'));

    let e = find("octet-3164");
    assert_eq!(e["format"], "rfc3164");
    assert_eq!(
        (
            e["hostname"].as_str(),
            e["appname"].as_str(),
            e["procid"].as_str()
        ),
        (Some("host2"), Some("su"), Some("230"))
    );
    assert_eq!(e["severity"], "crit");
    assert_eq!(e["facility"], "auth");

    let e = find("octet-5424-nil");
    for absent in [
        "hostname",
        "appname",
        "procid",
        "msgid",
        "timestamp",
        "structured_data",
    ] {
        assert!(e.get(absent).is_none(), "{absent} should be absent: {e}");
    }

    let e = find("nul-terminated");
    assert_eq!(e["appname"], "pyapp");
    let e = find("udp-3164");
    assert_eq!(
        (e["hostname"].as_str(), e["appname"].as_str()),
        (Some("host3"), Some("cron"))
    );
    let e = find("text line");
    assert_eq!(e["format"], "rfc3164");
    assert_eq!(
        (e["facility"].as_str(), e["severity"].as_str()),
        (Some("user"), Some("notice"))
    );
    assert_eq!(e["appname"], "plain");
    assert_eq!(e["parse_flags"], serde_json::json!(["no_pri"]));
    if have_logger {
        let e = find("logger-5424");
        assert_eq!(e["appname"], "loggertag");
        assert_eq!(e["format"], "rfc5424");
    }
    assert_eq!(parse_errors, 1.0);
}

#[test]
fn bad_input_leaves_server_healthy_and_loses_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}\n", file_sink(dir.path()));
    let cfg = config(dir.path(), 2, &extra).replace(
        "address = \"127.0.0.1:0\"\n[sources.udp]",
        "address = \"127.0.0.1:0\"\nmax_frame = 1024\n[sources.udp]",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let tcp = sluice.addr("tcp");

    // A steady connection that stays open across all the abuse.
    let mut steady = TcpStream::connect(tcp).unwrap();
    let mut good = Vec::new();
    let send_good = |s: &mut TcpStream, good: &mut Vec<String>| {
        let line = rfc5424_line("good", good.len() as u64);
        s.write_all(format!("{line}\n").as_bytes()).unwrap();
        good.push(line);
    };
    send_good(&mut steady, &mut good);

    // Oversize newline frame: truncated and flagged, the connection stays in sync.
    let mut c = TcpStream::connect(tcp).unwrap();
    c.write_all(format!("<13>1 - - - - - - {}\n", "A".repeat(5000)).as_bytes())
        .unwrap();
    send_good(&mut c, &mut good);
    drop(c);
    // Oversize octet-counted frame.
    let mut c = TcpStream::connect(tcp).unwrap();
    let big = format!("<13>1 - - - - - - {}", "B".repeat(3000));
    c.write_all(octet(&big).as_bytes()).unwrap();
    let after = rfc5424_line("good", 1000);
    c.write_all(octet(&after).as_bytes()).unwrap();
    good.push(after);
    drop(c);
    // Garbage bytes (binary, NULs, high bytes): kept as raw events, never a crash.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    send_tcp(tcp, &garbage);
    // A 20-digit octet count: not trusted, the line is kept and flagged.
    send_tcp(
        tcp,
        b"12345678901234567890 <13>1 - - - - - - twenty-digits\n",
    );
    // Abrupt disconnect mid-frame: the cut frame is counted, not delivered.
    let mut c = TcpStream::connect(tcp).unwrap();
    let whole = rfc5424_line("good", 2000);
    c.write_all(octet(&whole).as_bytes()).unwrap();
    good.push(whole);
    c.write_all(b"500 <13>1 - - - - - - cut off in the mid")
        .unwrap();
    c.shutdown(Shutdown::Both).unwrap();
    drop(c);
    // And a reset (SO_LINGER 0) mid-frame.
    let c = socket2::Socket::from(TcpStream::connect(tcp).unwrap());
    c.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    let mut c: TcpStream = c.into();
    c.write_all(b"300 <13>1 - - - - - - reset mid").unwrap();
    drop(c);

    send_good(&mut steady, &mut good);
    drop(steady);
    let good_count = good.len();
    wait_for("good events", || {
        let counts = message_counts(&read_events(dir.path()));
        good.iter()
            .all(|g| counts.contains_key(g.splitn(8, ' ').nth(7).unwrap()))
    });
    let (api, d) = (sluice.addr("api"), dir.path());
    // The FIN case is always counted; after a reset the kernel may discard unread bytes.
    wait_for("the cut-off frames counted", || {
        metric_sum(api, d, "sluice_frames_incomplete_total") >= 1.0
    });
    assert!(metric_sum(api, d, "sluice_frames_incomplete_total") <= 2.0);
    assert_eq!(metric_sum(api, d, "sluice_frames_oversize_total"), 2.0);
    assert_eq!(metric_sum(api, d, "sluice_frames_bad_length_total"), 1.0);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");

    let events = read_events(dir.path());
    let counts = message_counts(&events);
    for g in &good {
        let msg = g.splitn(8, ' ').nth(7).unwrap();
        assert_eq!(
            counts.get(msg),
            Some(&1),
            "good event {msg:?} delivered exactly once"
        );
    }
    assert_eq!(good_count, 5);
    let truncated: Vec<_> = events.iter().filter(|e| e["truncated"] == true).collect();
    assert_eq!(truncated.len(), 2, "{truncated:#?}");
    assert!(truncated
        .iter()
        .all(|e| e["message"].as_str().unwrap().len() < 1024));
    assert!(events
        .iter()
        .any(|e| e["message"].as_str().unwrap().contains("twenty-digits")));
    assert!(!events
        .iter()
        .any(|e| e["message"].as_str().unwrap().contains("cut off")));
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn connections_over_the_per_ip_limit_are_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path())).replace(
        "address = \"127.0.0.1:0\"\n[sources.udp]",
        "address = \"127.0.0.1:0\"\nmax_connections_per_ip = 2\n[sources.udp]",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let tcp = sluice.addr("tcp");
    let mut first = TcpStream::connect(tcp).unwrap();
    let mut second = TcpStream::connect(tcp).unwrap();
    // Prove both are being served before the third arrives.
    for (i, s) in [&mut first, &mut second].into_iter().enumerate() {
        s.write_all(format!("{}\n", rfc5424_line("limit", i as u64)).as_bytes())
            .unwrap();
    }
    wait_for("two events", || read_events(dir.path()).len() == 2);
    let mut third = TcpStream::connect(tcp).unwrap();
    let mut buf = [0u8; 1];
    use std::io::Read;
    third.set_read_timeout(Some(PATIENCE)).unwrap();
    let closed = matches!(third.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the third connection is closed by the server");
    drop((first, second));
    let rejected = metric_sum(
        sluice.addr("api"),
        dir.path(),
        "sluice_connections_rejected_total",
    );
    assert_eq!(rejected, 1.0);
    let (status, _log) = sluice.stop();
    assert!(status.success());
    assert_eq!(read_events(dir.path()).len(), 2);
}

/// `parser = "raw"` and rsyslog's vendor options on a source, and the parse errors by kind.
#[test]
fn parser_options_per_source_and_parse_errors_by_kind() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[sources.raw]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.2:0\"\nparser = \"raw\"\n\
         [sources.vendor]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.3:0\"\n\
         permit_square_brackets_in_hostname = true\nforce_tag_ending_by_colon = true\n{}",
        file_sink(dir.path())
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &extra));
    send_tcp(
        sluice.addr("raw"),
        b"<13>Feb  5 10:01:02 host app: raw-mode\n",
    );
    send_tcp(
        sluice.addr("vendor"),
        b"<13>Feb  5 10:01:02 [10.0.0.1] no colon vendor-mode\n",
    );
    let auto = sluice.addr("tcp");
    send_tcp(auto, b"Feb  5 10:01:02 host app: no-pri\n");
    send_tcp(
        auto,
        b"<13>1 2003-13-01T00:00:00Z host app - - - bad-timestamp\n",
    );
    send_tcp(auto, b"<13>1 - host app - - [unterminated bad-sd\n");
    send_tcp(auto, b"<13>1 - host  app - - - bad-header\n");
    wait_for("all events", || read_events(dir.path()).len() >= 6);
    let token = api_token(dir.path());
    let (_, page) = http_request(sluice.addr("api"), "GET", "/metrics", Some(&token), "");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");

    let events = read_events(dir.path());
    let find = |needle: &str| {
        events
            .iter()
            .find(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
            .unwrap_or_else(|| panic!("no event with {needle:?} in {events:#?}"))
            .clone()
    };
    let e = find("raw-mode");
    assert_eq!(e["format"], "raw");
    assert_eq!(e["message"], "<13>Feb  5 10:01:02 host app: raw-mode");
    let e = find("vendor-mode");
    assert_eq!(e["hostname"], "[10.0.0.1]");
    assert!(e.get("appname").is_none(), "{e}");
    assert_eq!(e["message"], "no colon vendor-mode");
    for (needle, kind) in [
        ("no-pri", "no_pri"),
        ("bad-timestamp", "bad_timestamp"),
        ("bad-sd", "bad_sd"),
        ("bad-header", "bad_header"),
    ] {
        assert_eq!(find(needle)["parse_flags"], serde_json::json!([kind]));
        let count: f64 = page
            .lines()
            .filter(|l| {
                l.starts_with("sluice_parse_errors_total{")
                    && l.contains(&format!("kind=\"{kind}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(count, 1.0, "{kind}:\n{page}");
    }
}
