//! Processing pipelines against the real binary (issue 13): two pipelines from one source
//! with exact expected output, a JSON body parsed into fields, access lines parsed, throttle
//! drops counted, and a reload that swaps a filter under load losing nothing.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use common::*;

fn file_sink(name: &str, inputs: &str, path: &Path) -> String {
    format!(
        "[sinks.{name}]\ntype = \"file\"\ninputs = [{inputs}]\npath = \"{}\"\nencoding = \"json\"\n",
        path.display()
    )
}

fn events_in(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Sends `lines` octet-counted on one connection.
fn send_lines(addr: std::net::SocketAddr, lines: &[String]) {
    let mut conn = TcpStream::connect(addr).unwrap();
    for line in lines {
        conn.write_all(octet(line).as_bytes()).unwrap();
    }
}

fn line(pri: u8, app: &str, host: &str, msg: &str) -> String {
    format!("<{pri}>1 2026-11-30T10:00:00Z {host} {app} - - - {msg}")
}

const TWO_PIPELINES: &str = r#"
[transforms.split]
type = "route"
inputs = ["tcp"]
routes.security = 'appname == "sshd" or message contains "Failed password"'

[transforms.scrub]
type = "redact"
inputs = ["split.security"]
builtins = ["credit_card", "ssn", "email", "ipv4", "ipv6", "secret_values", "bearer_token"]

[transforms.important]
type = "filter"
inputs = ["split._unmatched"]
condition = 'severity >= warning and not (appname == "cron")'
"#;

/// Security events → redacted JSON file; everything else → severity ≥ warning → another
/// file. Exact messages in each; what the filter dropped is counted.
#[test]
fn two_pipelines_route_redact_and_filter() {
    let dir = tempfile::tempdir().unwrap();
    let (security, rest) = (
        dir.path().join("security.ndjson"),
        dir.path().join("rest.ndjson"),
    );
    let extra = format!(
        "{TWO_PIPELINES}{}{}",
        file_sink("security_file", "\"scrub\"", &security),
        file_sink("rest_file", "\"important\"", &rest)
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &extra));
    let lines = [
        line(
            38,
            "sshd",
            "h1",
            "Failed password for bob from 10.1.2.3 port 22",
        ),
        line(
            14,
            "app",
            "h1",
            "payment card 4111 1111 1111 1111 Failed password",
        ),
        line(11, "app", "h2", "disk error on sda, mail admin@example.com"),
        line(11, "cron", "h2", "cron job failed"),
        line(14, "app", "h2", "just info"),
        line(12, "kernel", "h3", "temperature high"),
    ];
    send_lines(sluice.addr("tcp"), &lines);
    wait_for("both files", || {
        lines_in(&security) == 2 && lines_in(&rest) == 2
    });
    let api = sluice.addr("api");
    wait_for_metric(
        api,
        dir.path(),
        "sluice_transform_events_dropped_total",
        2.0,
    );
    assert_eq!(
        metric_sum(api, dir.path(), "sluice_route_events_total"),
        6.0
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let messages = |path: &PathBuf| -> Vec<String> {
        let mut m: Vec<String> = events_in(path)
            .iter()
            .map(|e| e["message"].as_str().unwrap().to_string())
            .collect();
        m.sort();
        m
    };
    assert_eq!(
        messages(&security),
        vec![
            "Failed password for bob from [REDACTED] port 22".to_string(),
            "payment card [REDACTED] Failed password".to_string(),
        ]
    );
    assert_eq!(
        messages(&rest),
        vec![
            "disk error on sda, mail admin@example.com".to_string(),
            "temperature high".to_string()
        ],
        "the rest is not redacted, and only severity >= warning without cron"
    );
    assert_eq!(summary_value(&log, "events_unrouted"), 0);
}

/// A JSON body becomes fields (nested objects nested, numbers numbers); a body that is not
/// JSON is kept, flagged and counted; an access line is parsed by `parse_apache`.
#[test]
fn json_bodies_and_access_lines_become_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (json_out, web_out) = (
        dir.path().join("json.ndjson"),
        dir.path().join("web.ndjson"),
    );
    let extra = format!(
        r#"
[transforms.fields]
type = "parse_json"
inputs = ["tcp"]

[transforms.only_web]
type = "filter"
inputs = ["tcp"]
condition = 'appname == "httpd"'

[transforms.web]
type = "parse_apache"
inputs = ["only_web"]
target = "http"
format = "combined"

[transforms.typed]
type = "remap"
inputs = ["web"]
add = {{ site = "shop", receiver = "%{{host}}" }}
convert = {{ "http.timestamp" = "timestamp" }}
timestamp_formats = {{ "http.timestamp" = "%d/%b/%Y:%H:%M:%S %z" }}
{}{}"#,
        file_sink("json_file", "\"fields\"", &json_out),
        file_sink("web_file", "\"typed\"", &web_out)
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &extra));
    send_lines(
        sluice.addr("tcp"),
        &[
            line(
                14,
                "api",
                "h1",
                r#"{"http":{"status":503,"path":"/pay"},"user":"bob","tags":["a","b"],"message":"inner"}"#,
            ),
            line(14, "api", "h1", "not json at all"),
            line(
                14,
                "httpd",
                "web1",
                r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)""#,
            ),
        ],
    );
    wait_for("outputs", || {
        lines_in(&json_out) == 3 && lines_in(&web_out) == 1
    });
    let api = sluice.addr("api");
    wait_for_metric(api, dir.path(), "sluice_transform_errors_total", 2.0);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let json = events_in(&json_out);
    let parsed = json
        .iter()
        .find(|e| e["user"] == "bob")
        .expect("the JSON event");
    assert_eq!(
        parsed["http"],
        serde_json::json!({"status": 503, "path": "/pay"})
    );
    assert_eq!(parsed["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        parsed["message"], "inner",
        "a parsed field replaces the standard key"
    );
    assert_eq!(parsed["appname"], "api");
    let flagged = json
        .iter()
        .find(|e| e["message"] == "not json at all")
        .expect("kept");
    assert_eq!(flagged["parse_error"], "fields: not a JSON object");
    let web = &events_in(&web_out)[0];
    assert_eq!(web["http"]["status"], 200);
    assert_eq!(web["http"]["size"], 2326);
    assert_eq!(web["http"]["method"], "GET");
    assert_eq!(web["http"]["agent"], "Mozilla/4.08 [en] (Win98; I ;Nav)");
    assert_eq!(web["http"]["timestamp"], "2000-10-10T20:55:36Z");
    assert_eq!(web["site"], "shop");
    assert!(web["receiver"].as_str().is_some_and(|h| !h.is_empty()));
}

/// A throttle per host keeps `burst` events of each host (the rate is too small to refill
/// during the test) and counts the rest as rate_limited.
#[test]
fn throttle_drops_are_counted_per_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let extra = format!(
        "[transforms.cap]\ntype = \"throttle\"\ninputs = [\"tcp\"]\nrate = 0.0001\nburst = 5\nkey_field = \"hostname\"\n{}",
        file_sink("out", "\"cap\"", &out)
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &extra));
    let mut lines: Vec<String> = (0..20)
        .map(|i| line(14, "app", "chatty", &format!("n={i}")))
        .collect();
    lines.extend((0..3).map(|i| line(14, "app", "quiet", &format!("q={i}"))));
    send_lines(sluice.addr("tcp"), &lines);
    let api = sluice.addr("api");
    wait_for_metric(api, dir.path(), "sluice_transform_events_in_total", 23.0);
    wait_for("8 events", || lines_in(&out) == 8);
    let page_dropped = metric_sum(api, dir.path(), "sluice_transform_events_dropped_total");
    assert_eq!(page_dropped, 15.0);
    let token = api_token(dir.path());
    let (_, page) = http_request(api, "GET", "/metrics", Some(&token), "");
    assert!(
        page.contains("sluice_events_dropped_total{reason=\"rate_limited\"} 15"),
        "{}",
        page.lines()
            .filter(|l| l.contains("dropped"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let hosts: Vec<String> = events_in(&out)
        .iter()
        .map(|e| e["hostname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts.iter().filter(|h| *h == "chatty").count(), 5);
    assert_eq!(hosts.iter().filter(|h| *h == "quiet").count(), 3);
}

/// SIGHUP swaps the filter while one connection keeps sending: every event is written once
/// or counted as filtered once (never lost, never twice), and after the reload the new
/// condition holds.
#[test]
fn a_reload_swaps_a_filter_under_load_losing_nothing() {
    const PART: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let filter = |tag: &str| {
        format!(
            "[transforms.pick]\ntype = \"filter\"\ninputs = [\"tcp\"]\ncondition = 'message contains \"{tag}\"'\n{}",
            file_sink("out", "\"pick\"", &out)
        )
    };
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &filter("even")));
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    let send = |conn: &mut TcpStream, range: std::ops::Range<u64>| {
        let mut batch = Vec::new();
        for seq in range {
            let tag = if seq % 2 == 0 { "even" } else { "odd" };
            batch.extend_from_slice(octet(&rfc5424_line(tag, seq)).as_bytes());
        }
        conn.write_all(&batch).unwrap();
    };
    send(&mut conn, 0..PART);
    std::fs::write(&sluice.config_path, config(dir.path(), 2, &filter("odd"))).unwrap();
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe { libc::kill(sluice.child.id() as i32, libc::SIGHUP) };
    send(&mut conn, PART..2 * PART);
    wait_for("the reload", || {
        sluice.log().contains("transforms changed [pick]")
    });
    send(&mut conn, 2 * PART..3 * PART);
    drop(conn);
    let api = sluice.addr("api");
    wait_for_metric(
        api,
        dir.path(),
        "sluice_transform_events_in_total",
        (3 * PART) as f64,
    );
    let dropped = metric_sum(api, dir.path(), "sluice_transform_events_dropped_total") as u64;
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut seen = HashSet::new();
    for l in text.lines() {
        let seq = seq_of(l.as_bytes()).unwrap();
        assert!(seen.insert(seq), "seq {seq} written twice");
        if seq >= 2 * PART {
            assert_eq!(seq % 2, 1, "after the reload only the new filter's events");
        }
    }
    assert_eq!(
        seen.len() as u64 + dropped,
        3 * PART,
        "every event written once or filtered once"
    );
    assert!(
        seen.iter().any(|s| s % 2 == 0) && seen.iter().any(|s| s % 2 == 1),
        "both filters ran"
    );
}

/// A Java stack trace sent line by line over TCP arrives as one event (joined per
/// connection; the next line after the trace begins the next event; the last pending event is
/// emitted when its timeout passes, with the connection still open).
#[test]
fn a_java_stack_trace_over_tcp_is_joined_into_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let extra = format!(
        r#"
[transforms.traces]
type = "multiline"
inputs = ["tcp"]
continuation_pattern = '^\s+at |^\s*\.\.\. \d+ more|^Caused by:'
timeout = "200ms"
{}"#,
        file_sink("out", "\"traces\"", &out)
    );
    let text = config(dir.path(), 2, &extra).replace(
        "[sources.udp]\ntype = \"syslog\"\nmode = \"udp\"\naddress = \"127.0.0.1:0\"\n",
        "",
    );
    let sluice = Sluice::start(dir.path(), &text);
    let trace = [
        "Exception in thread \"main\" java.lang.IllegalStateException: boom",
        "\tat com.example.App.run(App.java:10)",
        "\tat com.example.App.main(App.java:5)",
        "Caused by: java.io.IOException: disk full",
        "\t... 2 more",
    ];
    let mut lines: Vec<String> = trace.iter().map(|l| line(11, "app", "h1", l)).collect();
    lines.push(line(14, "app", "h1", "service started"));
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    for l in &lines {
        conn.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    // The connection stays open: the last event is emitted by the timeout.
    wait_for("two events", || lines_in(&out) == 2);
    drop(conn);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = events_in(&out);
    assert_eq!(events[0]["message"], trace.join("\n"));
    assert_eq!(events[0]["severity"], "err");
    assert_eq!(events[1]["message"], "service started");
    assert_eq!(summary_value(&log, "events_received"), 6);
}

/// `parse_grok` with the bundled COMBINEDAPACHELOG and a typed field; an unknown pattern is
/// refused by `sluice validate` with the key and line (exit 78).
#[test]
fn grok_parses_apache_combined_lines_and_unknown_patterns_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let grok = |pattern: &str| {
        format!(
            "[transforms.web]\ntype = \"parse_grok\"\ninputs = [\"tcp\"]\npattern = '{pattern}'\n{}",
            file_sink("out", "\"web\"", &out)
        )
    };
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, config(dir.path(), 1, &grok("%{COMBINEDAPACHELOGG}"))).unwrap();
    let validate = std::process::Command::new(sluice_bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&validate.stderr);
    assert_eq!(validate.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("transforms.web.pattern")
            && stderr.contains("line 20")
            && stderr.contains("unknown grok pattern `COMBINEDAPACHELOGG`"),
        "{stderr}"
    );

    let sluice = Sluice::start(
        dir.path(),
        &config(
            dir.path(),
            1,
            &grok("%{COMBINEDAPACHELOG} %{NUMBER:took:float}"),
        ),
    );
    send_lines(
        sluice.addr("tcp"),
        &[line(
            14,
            "httpd",
            "web1",
            r#"10.0.0.7 - alice [30/Nov/2026:10:00:00 +0100] "POST /api/v1/orders HTTP/1.1" 201 512 "https://shop.example/cart" "curl/8.5.0" 0.042"#,
        )],
    );
    wait_for("one event", || lines_in(&out) == 1);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let e = &events_in(&out)[0];
    assert_eq!(e["clientip"], "10.0.0.7");
    assert_eq!(e["auth"], "alice");
    assert_eq!(e["verb"], "POST");
    assert_eq!(e["request"], "/api/v1/orders");
    assert_eq!(e["response"], "201");
    assert_eq!(e["referrer"], "\"https://shop.example/cart\"");
    assert_eq!(e["took"], 0.042);
}
