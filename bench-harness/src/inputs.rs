//! `sluice-bench inputs`: what the new inputs take per second next to plain TCP, and RELP
//! from rsyslog's omrelp into Sluice next to the same rsyslog sending to rsyslog's imrelp.
//!
//! Set-ups (both cores, Sluice durable with the default WAL settings: fsync 2 ms; a JSON file
//! sink; events/s = events / (first send → all durable); CPU = Sluice's only):
//! - `tcp`: newline-framed RFC 5424 lines written in 1,000-line buffers (the same sender
//!   shape as the TLS and HTTP rows, so the rows differ by protocol only);
//! - `tls`: the same lines over TLS 1.3 (rustls clients, one per connection);
//! - `http`: the same lines POSTed to `/v1/syslog`, 1,000 per request, each request answered
//!   once durable (keep-alive, one client per connection);
//! - `relp → sluice`: the load into an rsyslog (imtcp) that forwards it with omrelp to
//!   Sluice's RELP source, each message answered once durable;
//! - `relp → rsyslog`: the same rsyslog forwarding to a second rsyslog's imrelp writing a file
//!   (rsyslog answers on receipt, not durable; omfile writes at the end of each batch, so the
//!   last line is not held back by a flush interval); events/s to the last line in its file
//!   (read as it grows), CPU of the receiving rsyslog only. The sending rsyslog is the same in
//!   both RELP rows.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::compare::{free_port, process_cpu_seconds, stop};
use crate::firehose::{self, Firehose, Format, Framing};
use crate::processing::{median, ratio_line, start, timed_load, wait_ready, Load};

pub struct InputsArgs {
    pub sluice: PathBuf,
    pub count: u64,
    /// Events for the RELP set-ups (rsyslog relays them).
    pub relp_count: u64,
    pub connections: usize,
    pub size: usize,
    pub rounds: usize,
    pub work_dir: PathBuf,
    /// Where rsyslog-relp and librelp0 are unpacked.
    pub relp_root: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    Tcp,
    Tls,
    Http,
    RelpSluice,
    RelpRsyslog,
}

impl Setup {
    pub const ALL: [Setup; 5] = [
        Setup::Tcp,
        Setup::Tls,
        Setup::Http,
        Setup::RelpSluice,
        Setup::RelpRsyslog,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Setup::Tcp => "syslog over TCP",
            Setup::Tls => "syslog over TLS",
            Setup::Http => "HTTP /v1/syslog, 1,000 events per request",
            Setup::RelpSluice => "RELP: rsyslog omrelp → Sluice (answered once durable)",
            Setup::RelpRsyslog => "RELP: rsyslog omrelp → rsyslog imrelp → file (peer)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Setup::Tcp => "tcp",
            Setup::Tls => "tls",
            Setup::Http => "http",
            Setup::RelpSluice => "relp-sluice",
            Setup::RelpRsyslog => "relp-rsyslog",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Run {
    pub setup: Setup,
    pub round: usize,
    pub events: u64,
    pub events_per_sec: f64,
    pub cpu_ns_per_event: f64,
}

pub fn run(args: &InputsArgs) -> Result<Vec<Run>, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    let pki = args.work_dir.join("pki");
    make_pki(&pki)?;
    let mut runs = Vec::new();
    for round in 1..=args.rounds {
        for setup in Setup::ALL {
            let dir = args.work_dir.join(format!("{}-{round}", setup.slug()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let load = match setup {
                Setup::RelpRsyslog => relp_peer(args, &dir)?,
                _ => sluice_run(args, setup, &dir, &pki)?,
            };
            let _ = std::fs::remove_dir_all(&dir);
            let run = Run {
                setup,
                round,
                events: load.events,
                events_per_sec: load.events_per_sec(),
                cpu_ns_per_event: load.cpu_ns_per_event(),
            };
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

/// A CA and a server certificate for 127.0.0.1 (openssl).
fn make_pki(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n")
        .map_err(|e| e.to_string())?;
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    for args in [
        format!("req -x509 {ec} -keyout ca.key -out ca.crt -subj /CN=bench-ca -days 2"),
        format!("req {ec} -keyout server.key -out server.csr -subj /CN=server"),
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile server.ext".into(),
    ] {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("openssl {args}"))
            .current_dir(dir)
            .output()
            .map_err(|e| format!("openssl: {e}"))?;
        if !out.status.success() {
            return Err(format!("openssl {args}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(())
}

fn source(setup: Setup, port: u16, pki: &Path) -> String {
    let tls = format!(
        "[sources.input.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        pki.join("server.crt").display(),
        pki.join("server.key").display()
    );
    let head =
        |t: &str| format!("[sources.input]\ntype = \"{t}\"\naddress = \"127.0.0.1:{port}\"\n");
    match setup {
        Setup::Tcp => format!("{}mode = \"tcp\"\n", head("syslog")),
        Setup::Tls => format!("{}mode = \"tls\"\n{tls}", head("syslog")),
        Setup::Http => format!("{}max_body_size = \"64MiB\"\n", head("http")),
        _ => format!("{}mode = \"relp\"\n", head("syslog")),
    }
}

fn sluice_run(args: &InputsArgs, setup: Setup, dir: &Path, pki: &Path) -> Result<Load, String> {
    let (port, api) = (free_port()?, free_port()?);
    let config = format!(
        "data_dir = \"{data}\"\nstatus_interval = \"0s\"\nshutdown_timeout = \"1s\"\n\
         max_connection_memory = \"1GiB\"\n[api]\naddress = \"127.0.0.1:{api}\"\n\
         {source}[sinks.out]\ntype = \"file\"\npath = \"{out}\"\nencoding = \"json\"\n",
        data = dir.join("data").display(),
        source = source(setup, port, pki),
        out = dir.join("out.log").display(),
    );
    std::fs::write(dir.join("config"), config).map_err(|e| e.to_string())?;
    let mut child = start(&args.sluice, dir)?;
    let api: SocketAddr = ([127, 0, 0, 1], api).into();
    let result = measure(args, setup, &mut child, port, api, dir, pki);
    let _ = stop(&mut child, Duration::from_secs(60));
    result
}

fn firehose(args: &InputsArgs, port: u16, count: u64) -> Firehose {
    Firehose {
        address: ([127, 0, 0, 1], port).into(),
        connections: args.connections,
        count,
        size: args.size,
        framing: Framing::Newline,
        format: Format::Rfc5424,
        ..Firehose::default()
    }
}

fn measure(
    args: &InputsArgs,
    setup: Setup,
    child: &mut Child,
    port: u16,
    api: SocketAddr,
    dir: &Path,
    pki: &Path,
) -> Result<Load, String> {
    let durable = "sluice_events_durable_total";
    match setup {
        Setup::Tcp => {
            wait_ready(child, port, api)?;
            timed_custom(child, api, durable, |sent| send_tcp(args, port, sent))
        }
        Setup::RelpSluice => {
            wait_ready(child, port, api)?;
            let relay = Relay::start(args, &dir.join("sender"), port)?;
            let load = timed_load(
                child,
                api,
                &firehose(args, relay.port, args.relp_count),
                durable,
            );
            relay.stop();
            load
        }
        _ => {
            wait_ready(child, port, api)?;
            let send = |sent: &mut u64| match setup {
                Setup::Tls => send_tls(args, port, pki, sent),
                _ => send_http(args, port, sent),
            };
            timed_custom(child, api, durable, send)
        }
    }
}

/// Like `timed_load`, with the harness's own sender for the protocol.
fn timed_custom(
    child: &Child,
    api: SocketAddr,
    metric: &str,
    send: impl FnOnce(&mut u64) -> Result<(), String>,
) -> Result<Load, String> {
    let pid = child.id();
    let cpu_before = process_cpu_seconds(pid);
    let started = Instant::now();
    let mut sent = 0;
    send(&mut sent)?;
    wait_metric(api, metric, sent)?;
    Ok(Load {
        events: sent,
        seconds: started.elapsed().as_secs_f64(),
        cpu_seconds: process_cpu_seconds(pid) - cpu_before,
    })
}

fn wait_metric(api: SocketAddr, metric: &str, want: u64) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let page = crate::compare::scrape(api)?;
        if crate::compare::metric_sum(&page, metric) as u64 >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{metric} did not reach {want}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `per_conn` newline-framed RFC 5424 lines of `size` bytes, in one buffer.
fn lines(size: usize, count: usize) -> Vec<u8> {
    let (message, seq_at) = firehose::template(Format::Rfc5424, size);
    let mut buf = Vec::with_capacity((message.len() + 1) * count);
    for seq in 0..count {
        let start = buf.len();
        buf.extend_from_slice(&message);
        firehose::patch_seq(&mut buf[start..], seq_at, seq as u64);
        buf.push(b'\n');
    }
    buf
}

fn send_tcp(args: &InputsArgs, port: u16, sent: &mut u64) -> Result<(), String> {
    let per_conn = args.count / args.connections.max(1) as u64;
    let chunk = lines(args.size, 1_000);
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                let chunk = &chunk;
                s.spawn(move || -> Result<u64, String> {
                    let mut tcp =
                        TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    let mut n = 0;
                    while n < per_conn {
                        tcp.write_all(chunk).map_err(|e| e.to_string())?;
                        n += 1_000;
                    }
                    Ok(n)
                })
            })
            .collect();
        for s in senders {
            *sent += s.join().map_err(|_| "TCP sender panicked".to_string())??;
        }
        Ok(())
    })
}

fn send_tls(args: &InputsArgs, port: u16, pki: &Path, sent: &mut u64) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(pki.join("ca.crt"))
        .map_err(|e| e.to_string())?
    {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    let per_conn = args.count / args.connections.max(1) as u64;
    let chunk = lines(args.size, 1_000);
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                let (config, chunk) = (Arc::clone(&config), &chunk);
                s.spawn(move || -> Result<u64, String> {
                    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
                        .map_err(|e| e.to_string())?;
                    let conn =
                        rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
                    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    let mut tls = rustls::StreamOwned::new(conn, tcp);
                    let mut n = 0;
                    while n < per_conn {
                        tls.write_all(chunk).map_err(|e| e.to_string())?;
                        n += 1_000;
                    }
                    tls.conn.send_close_notify();
                    tls.flush().map_err(|e| e.to_string())?;
                    // Close as TLS clients should: our side first, then read to the end.
                    let _ = tls.sock.shutdown(std::net::Shutdown::Write);
                    let _ = std::io::Read::read_to_end(&mut tls.sock, &mut Vec::new());
                    Ok(n)
                })
            })
            .collect();
        for s in senders {
            *sent += s.join().map_err(|_| "TLS sender panicked".to_string())??;
        }
        Ok(())
    })
}

fn send_http(args: &InputsArgs, port: u16, sent: &mut u64) -> Result<(), String> {
    let per_conn = args.count / args.connections.max(1) as u64;
    let body = lines(args.size, 1_000);
    let url = format!("http://127.0.0.1:{port}/v1/syslog");
    std::thread::scope(|s| {
        let senders: Vec<_> = (0..args.connections.max(1))
            .map(|_| {
                let (body, url) = (&body, &url);
                s.spawn(move || -> Result<u64, String> {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut n = 0;
                    while n < per_conn {
                        let response =
                            agent.post(url).send(&body[..]).map_err(|e| e.to_string())?;
                        if response.status().as_u16() != 200 {
                            return Err(format!("POST answered {}", response.status()));
                        }
                        n += 1_000;
                    }
                    Ok(n)
                })
            })
            .collect();
        for s in senders {
            *sent += s.join().map_err(|_| "HTTP sender panicked".to_string())??;
        }
        Ok(())
    })
}

/// An rsyslogd with the unpacked RELP modules on `conf_body`; the pid file in `dir`.
fn rsyslogd(args: &InputsArgs, dir: &Path, conf_body: &str) -> Result<Child, String> {
    std::fs::create_dir_all(dir.join("work")).map_err(|e| e.to_string())?;
    let conf = dir.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{}\")\n{conf_body}",
            dir.join("work").display()
        ),
    )
    .map_err(|e| e.to_string())?;
    Command::new("/usr/sbin/rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .env(
            "LD_LIBRARY_PATH",
            args.relp_root.join("usr/lib/x86_64-linux-gnu"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("rsyslogd: {e}"))
}

fn wait_listening(port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err(format!("rsyslog did not listen on {port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The sending rsyslog: imtcp on its own port, omrelp to `target`.
struct Relay {
    child: Child,
    port: u16,
}

impl Relay {
    fn start(args: &InputsArgs, dir: &Path, target: u16) -> Result<Relay, String> {
        let port = free_port()?;
        let omrelp = args
            .relp_root
            .join("usr/lib/x86_64-linux-gnu/rsyslog/omrelp.so");
        let body = format!(
            "main_queue(queue.size=\"1000000\" queue.dequeueBatchSize=\"1024\")\n\
             module(load=\"imtcp\")\nmodule(load=\"{omrelp}\")\n\
             input(type=\"imtcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
             *.* action(type=\"omrelp\" target=\"127.0.0.1\" port=\"{target}\" windowSize=\"1024\"\n\
             template=\"RSYSLOG_SyslogProtocol23Format\" queue.type=\"LinkedList\" queue.size=\"1000000\"\n\
             queue.dequeueBatchSize=\"1024\" action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\")\n",
            omrelp = omrelp.display()
        );
        let mut child = rsyslogd(args, dir, &body)?;
        wait_listening(port, &mut child)?;
        Ok(Relay { child, port })
    }

    fn stop(mut self) {
        let _ = stop(&mut self.child, Duration::from_secs(30));
    }
}

/// rsyslog → rsyslog over RELP: the receiver writes each message as a line; done when its
/// file holds every line (its size: fixed-size lines).
fn relp_peer(args: &InputsArgs, dir: &Path) -> Result<Load, String> {
    let port = free_port()?;
    let out = dir.join("received.log");
    let imrelp = args
        .relp_root
        .join("usr/lib/x86_64-linux-gnu/rsyslog/imrelp.so");
    let body = format!(
        "main_queue(queue.size=\"1000000\" queue.dequeueBatchSize=\"1024\")\n\
         module(load=\"{imrelp}\")\ninput(type=\"imrelp\" port=\"{port}\" address=\"127.0.0.1\")\n\
         template(name=\"line\" type=\"string\" string=\"%msg%\\n\")\n\
         *.* action(type=\"omfile\" file=\"{out}\" template=\"line\" ioBufferSize=\"256k\" flushOnTXEnd=\"on\")\n",
        imrelp = imrelp.display(),
        out = out.display()
    );
    let mut receiver = rsyslogd(args, &dir.join("receiver"), &body)?;
    wait_listening(port, &mut receiver)?;
    let relay = Relay::start(args, &dir.join("sender"), port)?;
    let result = (|| {
        let pid = receiver.id();
        let cpu_before = process_cpu_seconds(pid);
        let started = Instant::now();
        let sent = firehose::run(&firehose(args, relay.port, args.relp_count))?.sent;
        wait_lines(&out, sent)?;
        Ok(Load {
            events: sent,
            seconds: started.elapsed().as_secs_f64(),
            cpu_seconds: process_cpu_seconds(pid) - cpu_before,
        })
    })();
    relay.stop();
    let _ = stop(&mut receiver, Duration::from_secs(30));
    result
}

/// Waits until `path` holds `want` lines (read as it grows: each byte once).
fn wait_lines(path: &Path, want: u64) -> Result<(), String> {
    use std::io::Read;
    let mut last = Instant::now();
    let (mut lines, mut buf) = (0u64, vec![0u8; 1 << 20]);
    let mut file = None;
    loop {
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        let n = match file.as_mut() {
            Some(f) => f.read(&mut buf).map_err(|e| e.to_string())?,
            None => 0,
        };
        if n > 0 {
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            last = Instant::now();
            if lines >= want {
                return Ok(());
            }
            continue;
        }
        if last.elapsed() > Duration::from_secs(60) {
            return Err(format!("rsyslog's file stalled at {lines} of {want} lines"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The markdown table (medians) and the ratios.
pub fn table(runs: &[Run], args: &InputsArgs) -> String {
    let mut t = format!(
        "{} events of {} bytes ({} for RELP) over {} connections, both cores; Sluice durable (WAL \
         fsync 2 ms (the default), JSON file sink), {} rounds, medians. events/s from the first send to the last \
         durable event (the peer: to the last line in its file); CPU of the receiver only.\n\n\
         | set-up | events/s | CPU ns/event |\n|---|---|---|\n",
        args.count, args.size, args.relp_count, args.connections, args.rounds
    );
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
    let rate = |s: Setup, round: usize| {
        runs.iter()
            .find(|r| r.setup == s && r.round == round)
            .map(|r| r.events_per_sec)
    };
    for (a, b, what) in [
        (Setup::Tls, Setup::Tcp, "TLS / TCP"),
        (Setup::Http, Setup::Tcp, "HTTP / TCP"),
        (
            Setup::RelpSluice,
            Setup::RelpRsyslog,
            "RELP into Sluice / RELP into rsyslog",
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
    fn lines_are_framed_and_numbered() {
        let buf = lines(200, 3);
        let text = String::from_utf8(buf).unwrap();
        let l: Vec<&str> = text.lines().collect();
        assert_eq!(l.len(), 3);
        assert!(l.iter().all(|x| x.len() == 200), "{l:?}");
        assert_eq!(firehose::seq_in(l[2].as_bytes()), Some(2));
    }

    #[test]
    fn every_setup_has_its_source() {
        let pki = Path::new("/p");
        assert!(source(Setup::Tls, 1, pki).contains("mode = \"tls\""));
        assert!(source(Setup::Http, 1, pki).contains("type = \"http\""));
        assert!(source(Setup::RelpSluice, 1, pki).contains("mode = \"relp\""));
    }
}
