//! Test harness: runs the real `sluice` binary on a temp config with real sockets and files.
#![allow(dead_code)]

pub mod pki;
pub mod relp;
pub mod rsyslog;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bound for anything a test waits for; tests never depend on it for correctness.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Sluice {
    pub child: Child,
    pub addresses: HashMap<String, SocketAddr>,
    pub log: Arc<Mutex<String>>,
    pub config_path: PathBuf,
}

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

impl Sluice {
    /// Writes `config` to `dir/sluice.toml` and starts Sluice on it; returns once it is ready.
    pub fn start(dir: &Path, config: &str) -> Sluice {
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::start_with(&config_path)
    }

    pub fn start_with(config_path: &Path) -> Sluice {
        Self::start_args(&["--config".as_ref(), config_path.as_os_str()], config_path)
    }

    /// Starts `sluice run ARGS`; `config_path` is what the test edits to reload.
    pub fn start_args(args: &[&std::ffi::OsStr], config_path: &Path) -> Sluice {
        Self::spawn(args, config_path, Stdio::null())
    }

    /// Like [`Sluice::start`], with its standard output a pipe the test reads
    /// (`child.stdout`).
    pub fn start_capturing_stdout(dir: &Path, config: &str) -> Sluice {
        let config_path = dir.join("sluice.toml");
        std::fs::write(&config_path, config).unwrap();
        Self::spawn(
            &["--config".as_ref(), config_path.as_os_str()],
            &config_path,
            Stdio::piped(),
        )
    }

    fn spawn(args: &[&std::ffi::OsStr], config_path: &Path, stdout: Stdio) -> Sluice {
        let mut child = Command::new(sluice_bin())
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sluice");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(list) = line.split("listening on ").nth(1) {
                    let _ = ready_tx.send(list.to_string());
                }
                let mut log = log2.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let list = match ready_rx.recv_timeout(PATIENCE) {
            Ok(list) => list,
            Err(_) => {
                let _ = child.kill();
                panic!("sluice did not become ready:\n{}", log.lock().unwrap());
            }
        };
        let mut addresses = HashMap::new();
        for item in list.split_whitespace() {
            if let Some((name, url)) = item.split_once('=') {
                if let Some((_, addr)) = url.split_once("://") {
                    if let Ok(addr) = addr.parse() {
                        addresses.insert(name.to_string(), addr);
                    }
                }
            }
        }
        Sluice {
            child,
            addresses,
            log,
            config_path: config_path.to_path_buf(),
        }
    }

    pub fn addr(&self, source: &str) -> SocketAddr {
        self.addresses[source]
    }

    /// SIGTERM, then wait for exit; returns the status.
    pub fn stop(mut self) -> (ExitStatus, String) {
        signal(&self.child, libc::SIGTERM);
        let status = wait_exit(&mut self.child);
        // Let the log thread take the last lines.
        std::thread::sleep(Duration::from_millis(50));
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }

    /// `kill -9`: no chance to flush or drain.
    pub fn kill9(mut self) {
        signal(&self.child, libc::SIGKILL);
        wait_exit(&mut self.child);
    }

    /// SIGSTOP: the process stops reading its sockets (the kernel keeps or drops for it).
    /// Returns once every thread is stopped.
    pub fn pause(&self) {
        signal(&self.child, libc::SIGSTOP);
        let pid = self.child.id();
        wait_for("every thread stopped", || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                // The state follows the command name, which ends with the last ')'.
                stat.rsplit(')')
                    .next()
                    .map(str::trim_start)
                    .is_some_and(|r| r.starts_with('T'))
            })
        });
    }

    /// SIGCONT after [`Self::pause`].
    pub fn resume(&self) {
        signal(&self.child, libc::SIGCONT);
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn signal(child: &Child, sig: i32) {
    // SAFETY: plain kill(2) on the PID of a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A config with a TCP and a UDP source on ephemeral ports and a JSON file sink.
pub fn config(dir: &Path, shards: usize, extra: &str) -> String {
    format!(
        r#"data_dir = "{data}"
shards = {shards}
shutdown_timeout = "30s"
[wal]
fsync = "5ms"
segment_size = "4MiB"
[api]
address = "127.0.0.1:0"
[sources.tcp]
type = "syslog"
mode = "tcp"
address = "127.0.0.1:0"
[sources.udp]
type = "syslog"
mode = "udp"
address = "127.0.0.1:0"
{extra}
"#,
        data = dir.join("data").display(),
    )
}

pub fn file_sink(dir: &Path) -> String {
    format!(
        "[sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"json\"\n",
        out_path(dir).display()
    )
}

pub fn out_path(dir: &Path) -> PathBuf {
    dir.join("out/events.ndjson")
}

/// Every JSON event in the file sink's output (current and rotated files). Only whole lines:
/// a test polling while Sluice writes may see the end of a batch half written (the sink
/// confirms a batch only once all of it, newline included, is in the file).
pub fn read_events(dir: &Path) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for path in output_files(dir) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in whole.lines() {
            events.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}")),
            );
        }
    }
    events
}

/// Polls `check` until it returns true; panics with `what` after PATIENCE.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port nobody listens on now (a receiver or a restarted process binds it later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An RFC 5424 line of about 200 bytes carrying `tag` and `seq` in its message.
pub fn rfc5424_line(tag: &str, seq: u64) -> String {
    format!(
        "<134>1 2026-11-23T08:00:00.123456Z web-{:02}.example.net nginx 4242 ACCESS - {tag} seq={seq} GET /api/v1/items?page=3 HTTP/1.1 200 1532 0.004 \"Mozilla/5.0 (X11; Linux x86_64)\"",
        seq % 50
    )
}

pub fn send_tcp(addr: SocketAddr, payload: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(payload).unwrap();
}

pub fn octet(line: &str) -> String {
    format!("{} {line}", line.len())
}

pub fn udp_send(addr: SocketAddr, datagrams: impl IntoIterator<Item = String>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in datagrams {
        sock.send_to(d.as_bytes(), addr).unwrap();
    }
}

/// The value of `key=N` in Sluice's final summary line.
pub fn summary_value(log: &str, key: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("summary=events_received="))
        .unwrap_or_else(|| panic!("no summary in log:\n{log}"));
    let pat = format!("{key}=");
    let at = line
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + pat.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Messages (the `message` field) of events, counted.
pub fn message_counts(events: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in events {
        *counts
            .entry(e["message"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    counts
}

/// Lines in the file sink's output (current and rotated files); cheap enough to poll.
pub fn count_output_lines(dir: &Path) -> usize {
    output_files(dir)
        .into_iter()
        .map(|p| std::fs::read(p).map_or(0, |b| memchr_count(&b)))
        .sum()
}

/// The file sink's output files (current and rotated), without its hidden state file.
pub fn output_files(dir: &Path) -> Vec<PathBuf> {
    let out = out_path(dir);
    let Ok(entries) = std::fs::read_dir(out.parent().unwrap()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

fn memchr_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// Complete records in every shard's WAL under `data_dir`, read as the files stand.
pub fn wal_record_count(data_dir: &Path) -> usize {
    storage::inspect::shard_dirs(data_dir)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, dir)| storage::read_on_disk(&dir, None, |_, _| {}).unwrap_or(0) as usize)
        .sum()
}

/// The distinct `seq=N` numbers in a file's lines.
pub fn seqs_in(path: &Path) -> std::collections::HashSet<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| seq_of(l.as_bytes()))
        .collect()
}

/// The `seq=N` number in a message or frame.
pub fn seq_of(text: &[u8]) -> Option<u64> {
    let at = text.windows(4).position(|w| w == b"seq=")? + 4;
    let digits: Vec<u8> = text[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Calls `each` with every whole octet-counted frame (`LEN SP MSG`) at the start of `buf` and
/// removes them, leaving a partial frame for the next read.
pub fn take_octet_frames(buf: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
    let mut at = 0;
    while let Some(sp) = buf[at..].iter().position(|&b| b == b' ') {
        let len: usize = std::str::from_utf8(&buf[at..at + sp])
            .unwrap()
            .parse()
            .unwrap();
        let start = at + sp + 1;
        if buf.len() < start + len {
            break;
        }
        each(&buf[start..start + len]);
        at = start + len;
    }
    buf.drain(..at);
}

/// A syslog receiver for octet-counted frames that records `seq=N` of each frame. It can be
/// told to stop reading (the kernel's buffers then fill and the sender blocks).
pub struct Receiver {
    pub addr: SocketAddr,
    pub seqs: Arc<Mutex<HashMap<u64, usize>>>,
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    /// Pause by itself after this many frames (0: never).
    pub pause_after: usize,
}

impl Receiver {
    pub fn start(pause_after: usize) -> Receiver {
        Self::start_at("127.0.0.1:0", pause_after)
    }

    pub fn start_at(addr: &str, pause_after: usize) -> Receiver {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let seqs: Arc<Mutex<HashMap<u64, usize>>> = Arc::default();
        let paused = Arc::new(AtomicBool::new(false));
        let (seqs2, paused2) = (Arc::clone(&seqs), Arc::clone(&paused));
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (seqs, paused) = (Arc::clone(&seqs2), Arc::clone(&paused2));
                std::thread::spawn(move || {
                    use std::io::Read;
                    let mut conn = conn;
                    let mut buf = Vec::new();
                    let mut chunk = vec![0u8; 64 << 10];
                    loop {
                        while paused.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        let n = match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        take_octet_frames(&mut buf, |frame| {
                            let mut seqs = seqs.lock().unwrap();
                            *seqs.entry(seq_of(frame).unwrap()).or_insert(0) += 1;
                            // (Summing all counts per frame would be quadratic.)
                            if pause_after > 0 && seqs.values().sum::<usize>() == pause_after {
                                paused.store(true, Ordering::Release);
                            }
                        });
                    }
                });
            }
        });
        Receiver {
            addr,
            seqs,
            paused,
            pause_after,
        }
    }

    pub fn resume(&self) {
        self.paused
            .store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn distinct(&self) -> usize {
        self.seqs.lock().unwrap().len()
    }

    pub fn frames(&self) -> usize {
        self.seqs.lock().unwrap().values().sum()
    }
}

/// One HTTP/1.1 request (connection closed after): returns status and body.
/// The API token Sluice generated (no `api.token` configured) for a [`config`] in `dir`.
pub fn api_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("data/api.token"))
        .expect("sluice writes data_dir/api.token")
        .trim()
        .to_string()
}

pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::Read;
    let mut s = TcpStream::connect(addr).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: sluice\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The sum of every sample of metric `name` (whatever its labels) on the running Sluice's
/// `/metrics` (Sluice in `dir` made up the token).
pub fn metric_sum(api: SocketAddr, dir: &Path, name: &str) -> f64 {
    let token = api_token(dir);
    let (status, page) = http_request(api, "GET", "/metrics", Some(&token), "");
    assert_eq!(status, 200, "{page}");
    bench_harness::compare::metric_sum(&page, name)
}

/// Waits until metric `name` reaches `want` (counters are published every few ms).
pub fn wait_for_metric(api: SocketAddr, dir: &Path, name: &str, want: f64) {
    wait_for(&format!("{name} = {want}"), || {
        metric_sum(api, dir, name) == want
    });
}

/// The sum of the samples of metric `name` whose labels include `label` (`reason="timeout"`).
pub fn metric_labeled(api: SocketAddr, dir: &Path, name: &str, label: &str) -> f64 {
    let token = api_token(dir);
    let (status, page) = http_request(api, "GET", "/metrics", Some(&token), "");
    assert_eq!(status, 200, "{page}");
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
