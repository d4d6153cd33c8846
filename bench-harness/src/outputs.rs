//! `sluice-bench outputs`: what the HTTP and Elasticsearch outputs deliver per second next to
//! the file sink, and whether an output that is down slows ingest.
//!
//! Delivery set-ups (each: the load is sent, then the harness waits until Sluice's own
//! `sluice_output_events_sent_total` reaches it; events/s = events / (first send → last
//! confirmed), CPU = Sluice's only):
//! - `file`: JSON lines, fdatasync per batch (the reference);
//! - `http`: NDJSON to a collector this harness runs on 127.0.0.1 (reads each request, counts
//!   the lines, answers 200; one thread per connection), concurrency 1 and 4;
//! - `elasticsearch`: `_bulk` into osmem-server (in-memory OpenSearch-compatible; PyPI), its
//!   own count checked afterwards. Its server's cost is part of the figure.
//!
//! Ingest set-ups: the same load with an HTTP output whose destination is down (connection
//! refused: the WAL grows, the output retries with backoff) next to the file sink; events/s =
//! events / (first send → all durable). Both cores, durable (the default WAL settings: fsync 2 ms).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::compare::{free_port, stop};
use crate::firehose::{Firehose, Format, Framing};
use crate::processing::{median, ratio_line, start, timed_load, wait_ready};

pub struct OutputsArgs {
    pub sluice: PathBuf,
    pub count: u64,
    /// Events for the Elasticsearch set-up (an in-memory server holds them all).
    pub es_count: u64,
    pub connections: usize,
    pub size: usize,
    pub rounds: usize,
    pub work_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    File,
    Http,
    Http4,
    Elasticsearch,
    /// `_bulk` requests into the harness's collector (answers "no errors"): the output's own
    /// capacity, without a search engine behind it.
    BulkCollector,
    /// Ingest only: the file sink.
    IngestFile,
    /// Ingest only: an HTTP output whose destination refuses connections.
    IngestHttpDown,
}

impl Setup {
    pub const ALL: [Setup; 7] = [
        Setup::File,
        Setup::Http,
        Setup::Http4,
        Setup::BulkCollector,
        Setup::Elasticsearch,
        Setup::IngestFile,
        Setup::IngestHttpDown,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setup::File => "delivery: file (JSON, fdatasync)",
            Setup::Http => "delivery: http (NDJSON), concurrency 1",
            Setup::Http4 => "delivery: http (NDJSON), concurrency 4",
            Setup::Elasticsearch => "delivery: elasticsearch into osmem-server",
            Setup::BulkCollector => "delivery: elasticsearch (_bulk) into the harness's endpoint",
            Setup::IngestFile => "ingest (durable) with the file sink",
            Setup::IngestHttpDown => "ingest (durable) with an http output that is down",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Setup::File => "file",
            Setup::Http => "http",
            Setup::Http4 => "http4",
            Setup::Elasticsearch => "es",
            Setup::BulkCollector => "bulk",
            Setup::IngestFile => "ingest-file",
            Setup::IngestHttpDown => "ingest-http-down",
        }
    }

    fn ingest_only(self) -> bool {
        matches!(self, Setup::IngestFile | Setup::IngestHttpDown)
    }
}

/// One run's result.
#[derive(Clone, Debug)]
pub struct Run {
    pub setup: Setup,
    pub round: usize,
    pub events: u64,
    pub events_per_sec: f64,
    pub cpu_ns_per_event: f64,
}

/// A collector: counts the NDJSON lines of every request, answers 200.
struct Collector {
    addr: SocketAddr,
    lines: Arc<AtomicU64>,
}

impl Collector {
    fn start() -> Result<Collector, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let lines = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&lines);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counted = Arc::clone(&counted);
                std::thread::spawn(move || collect(conn, &counted));
            }
        });
        Ok(Collector { addr, lines })
    }
}

fn collect(conn: TcpStream, lines: &AtomicU64) {
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::with_capacity(1 << 20, conn);
    let mut body = Vec::new();
    loop {
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let n = body.iter().filter(|&&b| b == b'\n').count();
        lines.fetch_add(n as u64, Ordering::Relaxed);
        // A `_bulk` answer without errors also serves as an HTTP collector's (any JSON).
        let answer =
            b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"errors\":false,\"items\":[]}";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

/// osmem-server on an ephemeral port (`OSMEM_SERVER_BIN`, or the PyPI package's binary).
struct Osmem {
    child: Child,
    url: String,
}

impl Osmem {
    fn start() -> Result<Osmem, String> {
        let bin = match std::env::var("OSMEM_SERVER_BIN") {
            Ok(b) => b,
            Err(_) => {
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import osmem_server; print(osmem_server.resolve_binary())",
                    ])
                    .output()
                    .map_err(|e| format!("python3: {e}"))?;
                if !out.status.success() {
                    return Err("osmem-server is not installed (pip install osmem-server)".into());
                }
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
        };
        let mut child = Command::new(bin)
            .args(["-addr", "127.0.0.1:0", "-no-ja"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("osmem-server: {e}"))?;
        let mut first = String::new();
        let stdout = child.stdout.take().ok_or("osmem-server: no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut first)
            .map_err(|e| e.to_string())?;
        let url = first
            .split("\"url\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or_else(|| format!("osmem-server said {first:?}"))?
            .to_string();
        Ok(Osmem { child, url })
    }

    fn count(&self) -> u64 {
        let addr = self.url.trim_start_matches("http://");
        let Ok(mut s) = TcpStream::connect(addr) else {
            return 0;
        };
        let request = "GET /bench/_count HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut text = String::new();
        if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut text).is_err() {
            return 0;
        }
        text.split("\"count\":")
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Osmem {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The request outputs' `batch.timeout` here (default 1 s): a throughput run should not end
/// with its last, partial batch waiting a second for events that will not come.
const TIMEOUT: &str = "batch.timeout = \"50ms\"\n";

fn sink(setup: Setup, dir: &Path, collector: SocketAddr, es: &str, down: u16) -> String {
    match setup {
        Setup::File | Setup::IngestFile => format!(
            "[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"json\"\nrotate_size = \"100GB\"\n",
            dir.join("out.log").display()
        ),
        Setup::Http => format!("[sinks.out]\ntype = \"http\"\nuri = \"http://{collector}/\"\n{TIMEOUT}"),
        Setup::Http4 => format!(
            "[sinks.out]\ntype = \"http\"\nuri = \"http://{collector}/\"\nconcurrency = 4\n{TIMEOUT}"
        ),
        Setup::BulkCollector => format!(
            "[sinks.out]\ntype = \"elasticsearch\"\nendpoint = \"http://{collector}\"\nindex = \"bench\"\n{TIMEOUT}"
        ),
        Setup::Elasticsearch => format!(
            "[sinks.out]\ntype = \"elasticsearch\"\nendpoint = \"{es}\"\nindex = \"bench\"\nbatch.max_events = 5000\n{TIMEOUT}"
        ),
        Setup::IngestHttpDown => {
            format!("[sinks.out]\ntype = \"http\"\nuri = \"http://127.0.0.1:{down}/\"\n")
        }
    }
}

fn config(dir: &Path, port: u16, api: SocketAddr, sink: &str) -> String {
    format!(
        "data_dir = \"{data}\"\nstatus_interval = \"0s\"\nshutdown_timeout = \"1s\"\n[api]\naddress = \"{api}\"\n\
         [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{sink}",
        data = dir.join("data").display(),
    )
}

pub fn run(args: &OutputsArgs) -> Result<Vec<Run>, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    let collector = Collector::start()?;
    let osmem = Osmem::start()?;
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for setup in Setup::ALL {
            let run = run_one(setup, round, args, &collector, &osmem)?;
            eprintln!(
                "round {round}: {}: {:.0} events/s, {:.0} CPU ns/event",
                setup.name(),
                run.events_per_sec,
                run.cpu_ns_per_event
            );
            runs.push(run);
        }
    }
    Ok(runs)
}

fn run_one(
    setup: Setup,
    round: usize,
    args: &OutputsArgs,
    collector: &Collector,
    osmem: &Osmem,
) -> Result<Run, String> {
    let dir = args.work_dir.join(format!("{}-{round}", setup.slug()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let api: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
    let down = free_port()?; // Nothing listens there.
    let es_before = osmem.count();
    let lines_before = collector.lines.load(Ordering::Relaxed);
    let text = config(
        &dir,
        port,
        api,
        &sink(setup, &dir, collector.addr, &osmem.url, down),
    );
    std::fs::write(dir.join("config"), &text).map_err(|e| e.to_string())?;
    let mut child = start(&args.sluice, &dir)?;
    let count = if setup == Setup::Elasticsearch {
        args.es_count
    } else {
        args.count
    };
    let result = measure(&mut child, port, api, args, setup, round, count);
    let _ = stop(&mut child, Duration::from_secs(60));
    let _ = std::fs::remove_dir_all(dir.join("data"));
    let _ = std::fs::remove_file(dir.join("out.log"));
    let run = result?;
    let arrived = match setup {
        Setup::Http | Setup::Http4 => collector.lines.load(Ordering::Relaxed) - lines_before,
        // An action line and a document line per event.
        Setup::BulkCollector => (collector.lines.load(Ordering::Relaxed) - lines_before) / 2,
        Setup::Elasticsearch => osmem.count() - es_before,
        _ => run.events,
    };
    if arrived != run.events {
        return Err(format!(
            "{}: {} events sent, {arrived} arrived",
            setup.name(),
            run.events
        ));
    }
    Ok(run)
}

fn measure(
    child: &mut Child,
    port: u16,
    api: SocketAddr,
    args: &OutputsArgs,
    setup: Setup,
    round: usize,
    count: u64,
) -> Result<Run, String> {
    wait_ready(child, port, api)?;
    let firehose = Firehose {
        address: ([127, 0, 0, 1], port).into(),
        connections: args.connections,
        count,
        size: args.size,
        framing: Framing::Newline,
        format: Format::Rfc5424,
        ..Firehose::default()
    };
    let metric = if setup.ingest_only() {
        "sluice_events_durable_total"
    } else {
        "sluice_output_events_sent_total"
    };
    let load =
        timed_load(child, api, &firehose, metric).map_err(|e| format!("{}: {e}", setup.name()))?;
    Ok(Run {
        setup,
        round,
        events: load.events,
        events_per_sec: load.events_per_sec(),
        cpu_ns_per_event: load.cpu_ns_per_event(),
    })
}

/// The markdown table (medians) and the ratios against the file sink.
pub fn table(runs: &[Run], args: &OutputsArgs) -> String {
    let mut t = format!(
        "{} events of {} bytes ({} for Elasticsearch) over {} connections, both cores, durable \
         (WAL fsync 2 ms, the default), {} rounds; medians. Each output's events/s runs from the first send to \
         the last confirmed delivery; ingest rows to the last durable event.\n\n\
         | set-up | events/s | CPU ns/event |\n|---|---|---|\n",
        args.count, args.size, args.es_count, args.connections, args.rounds
    );
    let rate = |s: Setup, round: usize| {
        runs.iter()
            .find(|r| r.setup == s && r.round == round)
            .map(|r| r.events_per_sec)
    };
    for setup in Setup::ALL {
        let of =
            |f: fn(&Run) -> f64| median(runs.iter().filter(|r| r.setup == setup).map(f).collect());
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} |\n",
            setup.name(),
            of(|r| r.events_per_sec),
            of(|r| r.cpu_ns_per_event)
        ));
    }
    for (a, b, what) in [
        (Setup::Http, Setup::File, "http (concurrency 1) / file"),
        (Setup::Http4, Setup::File, "http (concurrency 4) / file"),
        (
            Setup::BulkCollector,
            Setup::File,
            "elasticsearch (_bulk, harness endpoint) / file",
        ),
        (
            Setup::Elasticsearch,
            Setup::File,
            "elasticsearch (osmem-server) / file",
        ),
        (
            Setup::IngestHttpDown,
            Setup::IngestFile,
            "ingest with an output down / ingest with the file sink",
        ),
    ] {
        t.push_str(&ratio_line(what, args.rounds, |round| {
            Some(rate(a, round)? / rate(b, round)?)
        }));
    }
    t.push('\n');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_down_output_points_at_a_port_nobody_listens_on() {
        let text = sink(
            Setup::IngestHttpDown,
            Path::new("/tmp/x"),
            ([127, 0, 0, 1], 1).into(),
            "http://127.0.0.1:2",
            3,
        );
        assert!(text.contains("uri = \"http://127.0.0.1:3/\""), "{text}");
        let es = sink(
            Setup::Elasticsearch,
            Path::new("/tmp/x"),
            ([127, 0, 0, 1], 1).into(),
            "http://127.0.0.1:2",
            3,
        );
        assert!(es.contains("endpoint = \"http://127.0.0.1:2\""), "{es}");
    }

    #[test]
    fn the_collector_counts_lines_of_each_request() {
        let c = Collector::start().unwrap();
        let mut s = TcpStream::connect(c.addr).unwrap();
        for _ in 0..2 {
            s.write_all(b"POST / HTTP/1.1\r\nContent-Length: 6\r\n\r\na\nb\nc\n")
                .unwrap();
            let mut answer = Vec::new();
            while !answer.ends_with(b"[]}") {
                let mut chunk = [0u8; 64];
                let n = s.read(&mut chunk).unwrap();
                answer.extend_from_slice(&chunk[..n]);
            }
        }
        assert_eq!(c.lines.load(Ordering::Relaxed), 6);
    }
}
