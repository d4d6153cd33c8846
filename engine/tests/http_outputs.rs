//! The HTTP and Elasticsearch outputs against real servers: a scripted HTTP server the tests
//! start (failure cases, exact per-item answers) and osmem-server, an in-memory
//! OpenSearch-compatible server (PyPI `osmem-server`; `.ci/run` installs it).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::pki::Pki;
use common::*;

/// A request as the scripted server saw it (body decompressed).
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: body.into(),
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// An HTTP server on 127.0.0.1 answering with `handler`: tiny_http for plain HTTP, a small
/// HTTP/1.1 loop over rustls for HTTPS.
struct Scripted {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Scripted {
    /// A real HTTP server (tiny_http), one thread per request so that concurrent requests
    /// are answered concurrently.
    fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Scripted {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let (handler, counted) = (Arc::clone(&handler), Arc::clone(&counted));
                std::thread::spawn(move || answer(request, &*handler, &counted));
            }
        });
        Scripted { addr, requests }
    }

    /// Serves HTTPS with `tls` when given.
    fn start_with_tls(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (handler, counted) = (Arc::clone(&handler), Arc::clone(&counted));
                let tls = tls.clone();
                std::thread::spawn(move || match tls {
                    None => serve(conn, &*handler, &counted),
                    Some(config) => {
                        let Ok(session) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        serve(rustls::StreamOwned::new(session, conn), &*handler, &counted)
                    }
                });
            }
        });
        Scripted { addr, requests }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// The body as sent, decompressed per `Content-Encoding`.
fn decoded(headers: &HashMap<String, String>, body: Vec<u8>) -> Vec<u8> {
    match headers.get("content-encoding").map(String::as_str) {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(&body[..]).unwrap(),
        _ => body,
    }
}

fn answer(mut request: tiny_http::Request, handler: &Handler, counted: &AtomicUsize) {
    let headers: HashMap<String, String> = request
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let mut body = Vec::new();
    request.as_reader().read_to_end(&mut body).unwrap();
    counted.fetch_add(1, Ordering::SeqCst);
    let r = handler(&Request {
        path: request.url().to_string(),
        body: decoded(&headers, body),
        headers,
    });
    let mut response = tiny_http::Response::from_string(r.body).with_status_code(r.status);
    for (k, v) in r.headers {
        response.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
    }
    let _ = request.respond(response);
}

fn serve(conn: impl Read + Write, handler: &Handler, counted: &AtomicUsize) {
    let mut reader = BufReader::new(conn);
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut lines = head.lines();
        let path = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("/")
            .to_string();
        let headers: HashMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = decoded(&headers, body);
        counted.fetch_add(1, Ordering::SeqCst);
        let r = handler(&Request {
            path,
            headers,
            body,
        });
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            r.status,
            r.body.len()
        );
        for (k, v) in &r.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&r.body);
        let conn = reader.get_mut();
        if conn
            .write_all(out.as_bytes())
            .and_then(|()| conn.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The sequence numbers in NDJSON or JSON-array event bodies.
fn seqs_of_body(body: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(body);
    text.match_indices("seq=")
        .filter_map(|(at, _)| seq_of(text[at..].as_bytes()))
        .collect()
}

fn send_range(addr: SocketAddr, tag: &str, range: std::ops::Range<u64>) {
    let mut conn = TcpStream::connect(addr).unwrap();
    let mut buf = Vec::new();
    for seq in range {
        buf.extend_from_slice(octet(&rfc5424_line(tag, seq)).as_bytes());
        if buf.len() > 1 << 16 {
            conn.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    conn.write_all(&buf).unwrap();
}

fn dlq(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(sluice_bin())
        .arg("dlq")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 100,000 events POSTed as gzip NDJSON with a bearer token and a custom header: every
/// event exactly once after a clean stop.
#[test]
fn http_delivers_100k_events_exactly_once() {
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let seen_in = Arc::clone(&seen);
    let server = Scripted::start(move |r| {
        let authorized = r.headers.get("authorization").map(String::as_str)
            == Some("Bearer s3cret")
            && r.headers.get("x-scope").map(String::as_str) == Some("fleet");
        if !authorized
            || r.headers.get("content-type").map(String::as_str) != Some("application/x-ndjson")
        {
            return reply(401, "who are you");
        }
        seen_in.lock().unwrap().extend(seqs_of_body(&r.body));
        reply(200, "{}")
    });
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("SLUICE_TEST_TOKEN", "s3cret");
    let sink = format!(
        "[sinks.collector]\ntype = \"http\"\nuri = \"{}/ingest\"\ncompression = \"gzip\"\n\
         auth = {{ strategy = \"bearer\", token = \"${{SLUICE_TEST_TOKEN}}\" }}\n\
         headers = {{ X-Scope = \"fleet\" }}\nbatch.max_events = 2000\nbatch.timeout = \"50ms\"\nconcurrency = 4\n",
        server.url()
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 2, &sink));
    let addr = sluice.addr("tcp");
    std::thread::scope(|s| {
        s.spawn(|| send_range(addr, "http", 0..50_000));
        s.spawn(|| send_range(addr, "http", 50_000..100_000));
    });
    wait_for("100,000 events at the collector", || {
        seen.lock().unwrap().len() >= 100_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seen = seen.lock().unwrap();
    let distinct: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 100_000);
    assert_eq!(seen.len(), 100_000, "no duplicates after a clean stop");
    assert!(
        server.requests.load(Ordering::SeqCst) >= 50,
        "batches of at most 2,000"
    );
}

/// The collector fails (503 with Retry-After), the circuit opens, then the collector comes
/// back: nothing lost, the retries and the circuit's opening in the metrics, the circuit
/// closed again. A JSON-array body.
#[test]
fn a_collector_down_then_back_loses_nothing() {
    let up = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let refused_at = Arc::new(Mutex::new(Vec::<std::time::Instant>::new()));
    let (up_in, seen_in, refused_in) =
        (Arc::clone(&up), Arc::clone(&seen), Arc::clone(&refused_at));
    let server = Scripted::start(move |r| {
        if !up_in.load(Ordering::SeqCst) {
            refused_in.lock().unwrap().push(std::time::Instant::now());
            let mut down = reply(503, "maintenance");
            down.headers.push(("Retry-After", "1".into()));
            return down;
        }
        let array: Vec<serde_json::Value> = serde_json::from_slice(&r.body).unwrap();
        seen_in.lock().unwrap().extend(
            array
                .iter()
                .filter_map(|e| seq_of(e["message"].as_str()?.as_bytes())),
        );
        reply(204, "")
    });
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.collector]\ntype = \"http\"\nuri = \"{}/\"\nencoding = \"json_array\"\n\
         failure_threshold = 2\nopen_for = \"1s\"\nbatch.timeout = \"10ms\"\n",
        server.url()
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    let api = sluice.addr("api");
    send_range(sluice.addr("tcp"), "down", 0..1000);
    wait_for_metric(api, dir.path(), "sluice_output_circuit_state", 1.0);
    assert!(metric_sum(api, dir.path(), "sluice_output_retries_total") >= 2.0);
    // The second attempt came no sooner than the Retry-After (1 s) the first answer asked for
    // (a lower bound: it holds however slow the machine is).
    {
        let refused = refused_at.lock().unwrap();
        assert!(refused.len() >= 2);
        assert!(refused[1] - refused[0] >= std::time::Duration::from_secs(1));
    }
    up.store(true, Ordering::SeqCst);
    wait_for("every event", || seen.lock().unwrap().len() >= 1000);
    wait_for_metric(api, dir.path(), "sluice_output_circuit_state", 0.0);
    assert_eq!(
        metric_sum(api, dir.path(), "sluice_output_circuit_opened_total"),
        1.0
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("circuit open") && log.contains("circuit closed"),
        "{log}"
    );
    let distinct: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
    assert_eq!(distinct, (0..1000).collect());
}

/// A scripted `_bulk` endpoint: per document, `ok` → 201, `dup` → 409, `busy` → 429 the
/// first time, `bad` → 400 (until `fixed`). Returns the documents it took, by message tag.
fn scripted_bulk(fixed: Arc<AtomicBool>, took: Arc<Mutex<Vec<String>>>) -> Scripted {
    let busy_seen = Arc::new(Mutex::new(HashSet::<String>::new()));
    Scripted::start(move |r| {
        if !r.path.starts_with("/_bulk") {
            return reply(404, "no");
        }
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        let mut items = Vec::new();
        for pair in lines.chunks(2) {
            let action: serde_json::Value = serde_json::from_str(pair[0]).unwrap();
            assert!(action["create"]["_id"].as_str().unwrap().len() == 32);
            let doc: serde_json::Value = serde_json::from_str(pair[1]).unwrap();
            let message = doc["message"].as_str().unwrap().to_string();
            let kind = message.split_whitespace().next().unwrap_or("").to_string();
            let status = match kind.as_str() {
                "dup" => 409,
                "busy" if busy_seen.lock().unwrap().insert(message.clone()) => 429,
                "bad" if !fixed.load(Ordering::SeqCst) => 400,
                _ => 201,
            };
            if status == 201 {
                took.lock().unwrap().push(message);
            }
            let error = match status {
                400 => {
                    r#","error":{"type":"mapper_parsing_exception","reason":"failed to parse field [x]"}"#
                }
                429 => {
                    r#","error":{"type":"es_rejected_execution_exception","reason":"queue full"}"#
                }
                409 => r#","error":{"type":"version_conflict_engine_exception","reason":"exists"}"#,
                _ => "",
            };
            items.push(format!(r#"{{"create":{{"status":{status}{error}}}}}"#));
        }
        reply(
            200,
            format!(
                r#"{{"took":1,"errors":true,"items":[{}]}}"#,
                items.join(",")
            ),
        )
    })
}

/// Mixed per-item answers: the 400s (and only they) land in the dead-letter queue with the
/// item's reason, the 429s are sent again, the 409s count as delivered; `sluice dlq replay`
/// re-delivers the dead letters once the destination is fixed.
#[test]
fn bulk_items_ok_conflict_busy_bad_and_a_replay() {
    let fixed = Arc::new(AtomicBool::new(false));
    let took = Arc::new(Mutex::new(Vec::new()));
    let server = scripted_bulk(Arc::clone(&fixed), Arc::clone(&took));
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.search]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\nindex = \"logs-{{{{hostname}}}}-%Y.%m.%d\"\n\
         batch.timeout = \"200ms\"\n",
        server.url()
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    let api = sluice.addr("api");
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    for (i, kind) in ["ok", "dup", "busy", "bad", "ok", "bad", "busy", "ok"]
        .iter()
        .enumerate()
    {
        let line = format!("<134>1 2026-11-30T08:00:00Z Web-1 app - - - {kind} seq={i}");
        conn.write_all(octet(&line).as_bytes()).unwrap();
    }
    drop(conn);
    wait_for_metric(api, dir.path(), "sluice_output_dead_lettered_total", 2.0);
    wait_for_metric(api, dir.path(), "sluice_output_events_sent_total", 6.0);
    assert_eq!(
        metric_sum(api, dir.path(), "sluice_output_items_retried_total"),
        2.0
    );
    let config_path = sluice.config_path.clone();
    let (ok, list, err) = dlq(&["list"], &config_path);
    assert!(ok, "{err}");
    assert!(list.starts_with("search: 2 events"), "{list}");
    let (ok, shown, err) = dlq(&["show", "--sink", "search"], &config_path);
    assert!(ok, "{err}");
    let letters: Vec<serde_json::Value> = shown
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seqs: Vec<&str> = letters
        .iter()
        .map(|l| l["event"]["message"].as_str().unwrap())
        .collect();
    assert_eq!(seqs, vec!["bad seq=3", "bad seq=5"]);
    assert_eq!(
        letters[0]["reason"],
        "400 mapper_parsing_exception: failed to parse field [x]"
    );
    let mut delivered: Vec<String> = took.lock().unwrap().clone();
    delivered.sort();
    assert_eq!(
        delivered,
        vec![
            "busy seq=2",
            "busy seq=6",
            "ok seq=0",
            "ok seq=4",
            "ok seq=7"
        ]
    );
    // The mapping is fixed: a replay sends the two again and empties the queue.
    fixed.store(true, Ordering::SeqCst);
    let (ok, replayed, err) = dlq(&["replay", "--sink", "search"], &config_path);
    assert!(ok, "{err}");
    assert!(
        replayed.contains("2 delivered, 0 rejected again"),
        "{replayed}"
    );
    let (_, list, _) = dlq(&["list"], &config_path);
    assert!(list.starts_with("search: 0 events"), "{list}");
    assert!(took.lock().unwrap().contains(&"bad seq=5".to_string()));
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// osmem-server: started on an ephemeral port, its URL read from its first line.
struct Osmem {
    child: Child,
    url: String,
}

impl Osmem {
    fn start() -> Osmem {
        let bin = std::env::var("OSMEM_SERVER_BIN").unwrap_or_else(|_| {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import osmem_server; print(osmem_server.resolve_binary())",
                ])
                .output()
                .expect("python3");
            assert!(
                out.status.success(),
                "osmem-server is not installed (pip install osmem-server): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        });
        let mut child = Command::new(bin)
            .args(["-addr", "127.0.0.1:0", "-no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let ready: serde_json::Value = serde_json::from_str(&first).unwrap();
        Osmem {
            url: ready["url"].as_str().unwrap().to_string(),
            child,
        }
    }

    fn count(&self, index: &str) -> u64 {
        let addr: SocketAddr = self.url.trim_start_matches("http://").parse().unwrap();
        let (status, body) = http_request(addr, "GET", &format!("/{index}/_count"), None, "");
        if status == 404 {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["count"].as_u64().unwrap_or(0)
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        // The server this test started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Into an OpenSearch-compatible server: 30,000 events exactly once after a clean stop;
/// then 15,000 more with Sluice killed (-9) while delivering and started again: every
/// durable event is in the index and none twice (the `_id` is the event's hash, so what was
/// sent again before the kill is answered 409, not indexed twice). (100,000 + 50,000 before:
/// osmem-server indexed ~1,500 documents/s on a slow day, past the 60 s patience.)
#[test]
fn opensearch_gets_every_event_once_across_a_kill9() {
    let osmem = Osmem::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.search]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\nindex = \"logs-%Y.%m.%d\"\n\
         batch.max_events = 1000\nbatch.timeout = \"20ms\"\n",
        osmem.url
    );
    let text = config(dir.path(), 2, &sink);
    let index = "logs-2026.11.23";
    let sluice = Sluice::start(dir.path(), &text);
    let addr = sluice.addr("tcp");
    std::thread::scope(|s| {
        s.spawn(|| send_range(addr, "first", 0..15_000));
        s.spawn(|| send_range(addr, "first", 15_000..30_000));
    });
    wait_for("30,000 documents", || osmem.count(index) >= 30_000);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert_eq!(osmem.count(index), 30_000);

    let sluice = Sluice::start(dir.path(), &text);
    send_range(sluice.addr("tcp"), "second", 30_000..45_000);
    let api = sluice.addr("api");
    wait_for_metric(api, dir.path(), "sluice_events_durable_total", 15_000.0);
    let at_kill = osmem.count(index);
    sluice.kill9();
    eprintln!("killed with {at_kill} of 45000 documents indexed");
    let sluice = Sluice::start(dir.path(), &text);
    wait_for("45,000 documents", || osmem.count(index) >= 45_000);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert_eq!(osmem.count(index), 45_000, "no duplicate documents");
}

/// `concurrency = 2`: two requests are in flight at once. The server holds each request until
/// a second one arrives (or 10 s pass): with concurrency the pair meets, without it every
/// request would wait out the 10 s alone.
#[test]
fn concurrency_puts_two_requests_in_flight_at_once() {
    let state = Arc::new((
        std::sync::Mutex::new((0usize, 0usize)),
        std::sync::Condvar::new(),
    ));
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let (state_in, seen_in) = (Arc::clone(&state), Arc::clone(&seen));
    let server = Scripted::start(move |r| {
        let (lock, cvar) = &*state_in;
        let mut s = lock.lock().unwrap();
        s.0 += 1; // Arrived.
        let pair = s.0.div_ceil(2);
        cvar.notify_all();
        let (mut s, timeout) = cvar
            .wait_timeout_while(s, std::time::Duration::from_secs(10), |s| s.0 < pair * 2)
            .unwrap();
        if !timeout.timed_out() {
            s.1 += 1; // Met its partner.
        }
        drop(s);
        seen_in.lock().unwrap().extend(seqs_of_body(&r.body));
        reply(200, "{}")
    });
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.collector]\ntype = \"http\"\nuri = \"{}/\"\nconcurrency = 2\n\
         batch.max_events = 500\nbatch.timeout = \"5s\"\n",
        server.url()
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    send_range(sluice.addr("tcp"), "pair", 0..1000);
    wait_for("1,000 events", || seen.lock().unwrap().len() >= 1000);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let met = state.0.lock().unwrap().1;
    assert_eq!(met, 2, "both requests of the round were in flight together");
    let distinct: HashSet<u64> = seen.lock().unwrap().iter().copied().collect();
    assert_eq!(distinct, (0..1000).collect());
}

fn https_collector(pki: &Pki, client_auth: bool) -> (Scripted, Arc<Mutex<Vec<u64>>>) {
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let seen_in = Arc::clone(&seen);
    let server = Scripted::start_with_tls(Some(pki.server(client_auth)), move |r| {
        seen_in.lock().unwrap().extend(seqs_of_body(&r.body));
        reply(200, "{}")
    });
    (server, seen)
}

/// HTTPS with the collector's CA (`tls.ca_file`) and a client certificate the collector
/// requires (`tls.crt_file`, `tls.key_file`): delivered.
#[test]
fn https_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::make();
    let (server, seen) = https_collector(&pki, true);
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.collector]\ntype = \"http\"\nuri = \"https://{}/in\"\nbatch.timeout = \"10ms\"\n\
         tls = {{ ca_file = \"{}\", crt_file = \"{}\", key_file = \"{}\" }}\n",
        server.addr,
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    send_range(sluice.addr("tcp"), "tls", 0..100);
    wait_for("100 events over TLS", || seen.lock().unwrap().len() >= 100);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// A collector whose certificate no trusted CA signed is not delivered to (retried, the error
/// names the certificate); `tls.verify = false` delivers, with a warning in the log.
#[test]
fn an_unknown_ca_is_refused_unless_verify_is_off() {
    let pki = Pki::make();
    let (server, seen) = https_collector(&pki, false);
    let dir = tempfile::tempdir().unwrap();
    let base = format!(
        "[sinks.collector]\ntype = \"http\"\nuri = \"https://{}/in\"\nbatch.timeout = \"10ms\"\n",
        server.addr
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &base));
    let api = sluice.addr("api");
    send_range(sluice.addr("tcp"), "tls", 0..10);
    wait_for_metric(api, dir.path(), "sluice_events_durable_total", 10.0);
    wait_for("a failed attempt", || {
        metric_sum(api, dir.path(), "sluice_output_errors_total") >= 1.0
    });
    let log = sluice.log();
    // (Stopping would wait out shutdown_timeout for a destination that never takes them.)
    sluice.kill9();
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing sent to an unverified server"
    );
    assert!(log.to_lowercase().contains("certificate"), "{log}");
    // The same WAL and cursor, verification off: the ten events arrive.
    let unverified = format!("{base}tls = {{ verify = false }}\n");
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &unverified));
    wait_for("10 events", || seen.lock().unwrap().len() >= 10);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("tls.verify = false"), "{log}");
}

/// A dead-letter queue at its budget holds the output back (the events stay in the WAL, the
/// failure is counted and logged as "full"); `sluice dlq drop` makes room and delivery goes
/// on: every rejected event ends up dead-lettered, none dropped silently.
#[test]
fn a_full_dead_letter_queue_holds_delivery_back_until_dropped() {
    let fixed = Arc::new(AtomicBool::new(false));
    let took = Arc::new(Mutex::new(Vec::new()));
    let server = scripted_bulk(Arc::clone(&fixed), Arc::clone(&took));
    let dir = tempfile::tempdir().unwrap();
    let sink = format!(
        "[sinks.search]\ntype = \"elasticsearch\"\nendpoint = \"{}\"\ndlq_max_size = \"64KiB\"\n\
         batch.max_events = 50\nbatch.timeout = \"10ms\"\n",
        server.url()
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    let api = sluice.addr("api");
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    for i in 0..400 {
        let line = format!(
            "<134>1 2026-11-30T08:00:00Z web-1 app - - - bad seq={i} {}",
            "x".repeat(150)
        );
        conn.write_all(octet(&line).as_bytes()).unwrap();
    }
    drop(conn);
    wait_for("the queue to fill", || {
        metric_sum(api, dir.path(), "sluice_output_dead_letter_failures_total") >= 1.0
    });
    assert!(sluice.log().contains("is full"), "{}", sluice.log());
    let held = metric_sum(api, dir.path(), "sluice_output_dead_lettered_total");
    assert!(held < 400.0, "{held}");
    let config_path = sluice.config_path.clone();
    let mut dropped = 0u64;
    wait_for(
        "every event dead-lettered, dropping as the queue fills",
        || {
            let (ok, out, err) = dlq(&["drop", "--sink", "search"], &config_path);
            assert!(ok, "{err}");
            dropped += out
                .trim()
                .strip_prefix("dropped ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            metric_sum(api, dir.path(), "sluice_output_dead_lettered_total") == 400.0
        },
    );
    let (_, shown, _) = dlq(&["show", "--sink", "search"], &config_path);
    dropped += shown.lines().count() as u64;
    assert_eq!(
        dropped, 400,
        "each rejected event dead-lettered once, then dropped by the operator"
    );
    assert!(took.lock().unwrap().is_empty());
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}
