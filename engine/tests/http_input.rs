//! HTTP ingest (`type = "http"`) with real clients: `curl` and the ureq crate. Every event of
//! a 200 is durable (it survives `kill -9`); bad keys, bodies and sizes are refused whole and
//! counted; while the disk budget blocks, a request in flight waits for durability and new
//! ones are answered 429.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use common::pki::Pki;
use common::*;

const KEY: &str = "billing-0123456789abcdef";

fn http_source(extra: &str) -> String {
    format!(
        "[sources.apps]\ntype = \"http\"\naddress = \"127.0.0.1:0\"\n{extra}\n\
         [[sources.apps.api_keys]]\nname = \"billing\"\nkey = \"{KEY}\"\n"
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(PATIENCE))
        .build()
        .into()
}

/// NDJSON events `range` tagged `tag`.
fn ndjson(tag: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    range
        .flat_map(|seq| format!("{{\"message\":\"{tag} seq={seq}\",\"n\":{seq}}}\n").into_bytes())
        .collect()
}

/// POSTs `body` with the key; the status and the body of the answer.
fn post(agent: &ureq::Agent, url: &str, body: &[u8], encoding: Option<&str>) -> (u16, String) {
    let mut request = agent
        .post(url)
        .header("Authorization", &format!("Bearer {KEY}"));
    if let Some(e) = encoding {
        request = request.header("Content-Encoding", e);
    }
    let mut response = request.send(body).expect("POST");
    let status = response.status().as_u16();
    (
        status,
        response.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn seqs_tagged(dir: &Path, tag: &str) -> Vec<u64> {
    read_events(dir)
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(tag))
        .filter_map(|m| seq_of(m.as_bytes()))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// 100,000 events in batches of 1,000 from ureq over keep-alive (plain, gzip, zstd), and from
/// curl: each exactly once, every answer `{"accepted":1000}`.
#[test]
fn batches_from_ureq_and_curl_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        2,
        &format!("{}{}", http_source(""), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let url = format!("http://{}/v1/events", sluice.addr("apps"));
    let agent = agent();
    for batch in 0..95u64 {
        let body = ndjson("batch", batch * 1_000..(batch + 1) * 1_000);
        let (status, answer) = match batch % 3 {
            0 => post(&agent, &url, &body, None),
            1 => post(&agent, &url, &gzip(&body), Some("gzip")),
            _ => post(
                &agent,
                &url,
                &zstd::encode_all(&body[..], 1).unwrap(),
                Some("zstd"),
            ),
        };
        assert_eq!((status, answer.as_str()), (200, "{\"accepted\":1000}"));
    }
    for batch in 95..100u64 {
        let out = Command::new("curl")
            .args(["-sS", "-X", "POST", "--data-binary", "@-", "-H"])
            .arg(format!("X-API-Key: {KEY}"))
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin
                    .take()
                    .unwrap()
                    .write_all(&ndjson("batch", batch * 1_000..(batch + 1) * 1_000))?;
                c.wait_with_output()
            })
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"accepted\":1000}");
    }
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs = seqs_tagged(dir.path(), "batch");
    assert_eq!(seqs.len(), 100_000, "no duplicates");
    assert_eq!(seqs.into_iter().collect::<HashSet<_>>().len(), 100_000);
    let event = &read_events(dir.path())[0];
    assert_eq!(event["api_key_name"], "billing", "{event}");
    assert!(event["n"].is_u64(), "members are fields: {event}");
}

/// Refusals, each answered with its status and nothing of the request taken: no key (401),
/// an unknown key (403), a malformed line (400 naming it), an oversize body and a gzip bomb
/// (413), an unknown encoding (415), no such endpoint (404), a spent rate limit (429 with
/// Retry-After).
#[test]
fn bad_requests_are_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let source = http_source("max_body_size = \"64KiB\"").replace(
        "key = \"billing-0123456789abcdef\"\n",
        "key = \"billing-0123456789abcdef\"\nrate_limit = 10\n",
    );
    let cfg = config(dir.path(), 1, &format!("{source}{}", file_sink(dir.path())));
    let sluice = Sluice::start(dir.path(), &cfg);
    let base = format!("http://{}", sluice.addr("apps"));
    let events = format!("{base}/v1/events");
    let agent = agent();
    let send = |url: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut r = agent.post(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        let mut response = r.send(body).unwrap();
        let retry = response.headers().get("retry-after").is_some();
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap(), retry)
    };
    let key = || ("X-API-Key", KEY.to_string());
    let (s, _, _) = send(&events, &[], &ndjson("refused", 0..1));
    assert_eq!(s, 401);
    let (s, _, _) = send(
        &events,
        &[("X-API-Key", "nope".into())],
        &ndjson("refused", 0..1),
    );
    assert_eq!(s, 403);
    let mut bad = ndjson("refused", 0..3);
    bad.extend_from_slice(b"{\"message\": oops}\n");
    let (s, why, _) = send(&events, &[key()], &bad);
    assert_eq!(s, 400);
    assert!(why.contains("line 4"), "{why}");
    let (s, _, _) = send(&events, &[key()], &ndjson("refused", 0..2_000));
    assert_eq!(s, 413, "over max_body_size");
    let bomb = gzip(&vec![b' '; 10 << 20]);
    let (s, _, _) = send(
        &events,
        &[key(), ("Content-Encoding", "gzip".into())],
        &bomb,
    );
    assert_eq!(s, 413, "over max_body_size once decompressed");
    let (s, _, _) = send(&events, &[key(), ("Content-Encoding", "br".into())], b"x");
    assert_eq!(s, 415);
    let (s, _, _) = send(&format!("{base}/v2/x"), &[key()], b"{}");
    assert_eq!(s, 404);
    let (s, _, _) = send(&events, &[key()], &ndjson("limited", 0..50));
    assert_eq!(s, 200, "a full bucket takes the request");
    let (s, _, retry) = send(&events, &[key()], &ndjson("refused", 0..1));
    assert_eq!((s, retry), (429, true), "the key's rate is spent");
    let api = sluice.addr("api");
    let d = dir.path();
    let answered = |code: &str| {
        metric_labeled(
            api,
            d,
            "sluice_http_requests_total",
            &format!("status=\"{code}\""),
        )
    };
    wait_for("every answer counted", || {
        answered("200") == 1.0
            && answered("400") == 1.0
            && answered("401") == 1.0
            && answered("403") == 1.0
            && answered("404") == 1.0
            && answered("413") == 2.0
            && answered("415") == 1.0
            && answered("429") == 1.0
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(
        seqs_tagged(dir.path(), "refused").is_empty(),
        "nothing of a refused request"
    );
    assert_eq!(seqs_tagged(dir.path(), "limited").len(), 50);
}

/// `kill -9` right after 200s: every acknowledged event is delivered after the restart.
#[test]
fn kill_9_after_a_200_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        2,
        &format!("{}{}", http_source(""), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let url = format!("http://{}/v1/events", sluice.addr("apps"));
    let agent = agent();
    for batch in 0..20u64 {
        let (status, _) = post(
            &agent,
            &url,
            &ndjson("acked", batch * 500..(batch + 1) * 500),
            None,
        );
        assert_eq!(status, 200);
    }
    let config_path = sluice.config_path.clone();
    sluice.kill9();
    let sluice = Sluice::start_with(&config_path);
    wait_for("every acknowledged event", || {
        seqs_tagged(dir.path(), "acked")
            .into_iter()
            .collect::<HashSet<_>>()
            .len()
            == 10_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// The only output cannot deliver and the disk budget blocks the WAL in the middle of a
/// request: that request waits (no answer) while the block lasts, a new one is answered 429
/// with Retry-After. Sluice is then killed with -9: after a restart (the receiver back), every
/// event of every 200 is delivered.
#[test]
fn a_request_waits_for_durability_while_the_disk_budget_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let sink_port = free_port();
    let sink = format!(
        "[sinks.forward]\ntype = \"tcp\"\naddress = \"127.0.0.1:{sink_port}\"\n\
         initial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n"
    );
    let cfg = config(dir.path(), 1, &format!("{}{sink}", http_source(""))).replace(
        "segment_size = \"4MiB\"",
        "segment_size = \"1MiB\"\nbuffer_size = \"256KiB\"\nmin_free_disk = \"0\"\nmax_disk = \"3MiB\"",
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let url = format!("http://{}/v1/syslog", sluice.addr("apps"));
    let client = Arc::new(Mutex::new(Client::default()));
    let sender = {
        let (client, url) = (Arc::clone(&client), url.clone());
        std::thread::spawn(move || send_until_refused(&client, &url))
    };
    let (api, d) = (sluice.addr("api"), dir.path());
    wait_for("the disk budget to block a request in flight", || {
        metric_sum(api, d, "sluice_wal_budget_blocks_total") >= 1.0
            && client.lock().unwrap().outstanding.is_some()
    });
    let mut probe = agent()
        .post(&url)
        .header("X-API-Key", KEY)
        .send(&syslog_lines(u64::MAX - 1..u64::MAX)[..])
        .unwrap();
    assert_eq!(probe.status().as_u16(), 429);
    assert!(probe.headers().get("retry-after").is_some());
    let _ = probe.body_mut().read_to_string();
    let waiting = client.lock().unwrap().outstanding.clone();
    assert!(
        waiting.is_some(),
        "the request in flight is still unanswered"
    );
    let acked = client.lock().unwrap().acked.clone();
    let config_path = sluice.config_path.clone();
    sluice.kill9();
    sender.join().unwrap();
    let receiver = Receiver::start_at(&format!("127.0.0.1:{sink_port}"), 0);
    let sluice = Sluice::start_with(&config_path);
    wait_for("every acknowledged event delivered", || {
        let seqs = receiver.seqs.lock().unwrap();
        acked.iter().all(|s| seqs.contains_key(s))
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    eprintln!("{} events acknowledged before the block", acked.len());
}

#[derive(Default)]
struct Client {
    acked: Vec<u64>,
    outstanding: Option<std::ops::Range<u64>>,
}

fn syslog_lines(range: std::ops::Range<u64>) -> Vec<u8> {
    range
        .flat_map(|seq| format!("{}\n", rfc5424_line("blocked", seq)).into_bytes())
        .collect()
}

/// Sends 1,000 events per request until a request fails (Sluice killed) or is refused.
fn send_until_refused(client: &Mutex<Client>, url: &str) {
    let agent = agent();
    for batch in 0u64.. {
        let range = batch * 1_000..(batch + 1) * 1_000;
        client.lock().unwrap().outstanding = Some(range.clone());
        let answer = agent
            .post(url)
            .header("X-API-Key", KEY)
            .send(&syslog_lines(range.clone())[..]);
        let mut c = client.lock().unwrap();
        match answer {
            Ok(r) if r.status().as_u16() == 200 => {
                c.acked.extend(range);
                c.outstanding = None;
            }
            _ => return,
        }
    }
}

/// HTTPS with a client certificate (curl): the events carry its subject and the key's name.
#[test]
fn https_with_a_client_certificate() {
    let pki = Pki::make();
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "[sources.apps.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\nclient_auth = \"required\"\n",
        pki.path("server.crt"),
        pki.path("server.key"),
        pki.path("ca.crt")
    );
    let cfg = config(
        dir.path(),
        1,
        &format!("{}{tls}{}", http_source(""), file_sink(dir.path())),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let addr: SocketAddr = sluice.addr("apps");
    let out = Command::new("curl")
        .args(["-sS", "--cacert", &pki.path("ca.crt")])
        .args([
            "--cert",
            &pki.path("client.crt"),
            "--key",
            &pki.path("client.key"),
        ])
        .args(["-H", &format!("X-API-Key: {KEY}"), "--data-binary"])
        .arg("{\"message\":\"over tls seq=1\"}")
        .arg(format!("https://{addr}/v1/events"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"accepted\":1}",
        "{out:?}"
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(dir.path());
    assert_eq!(events[0]["tls"]["peer_subject"], "CN=client");
    assert_eq!(events[0]["api_key_name"], "billing");
}
