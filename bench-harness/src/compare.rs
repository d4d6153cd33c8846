//! `sluice-bench compare`: Sluice, rsyslog and syslog-ng, one after another, same load, same
//! machine, same run; a markdown table with ratios to Sluice.
//!
//! Scenarios: `file` — TCP in (newline framing, N connections, fixed-size lines with `seq=`) →
//! a file; `relay` — TCP in → TCP out to a receiver the harness runs (rsyslog through a
//! disk-assisted queue, syslog-ng through `disk-buffer(reliable(yes))`, Sluice through its
//! WAL). The rate is end to end: first byte sent → last line out. Each runs with the server on
//! both cores, then with the server pinned to core 0 and the loader to core 1. Sluice runs
//! durable (WAL group commit every 5 ms; the file sink fdatasyncs before confirming); the
//! peers as packaged, which never fsync. After every run the output is checked for
//! missing and duplicated sequence numbers; a run that lost events says so first.
//!
//! Peers: rsyslogd from Debian's package (installed with apt-get if missing and root);
//! syslog-ng unpacked privately with `apt-get download` + `dpkg-deb -x` (the two Debian
//! packages conflict), run from that tree. Each peer runs in the foreground with its own
//! config, pid file and port: never a system syslog.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::firehose::{self, Firehose, Format, Framing};

pub struct CompareArgs {
    pub sluice: PathBuf,
    pub work_dir: PathBuf,
    pub count: u64,
    pub connections: usize,
    pub size: usize,
    /// Where syslog-ng is (or will be) unpacked.
    pub peers_dir: PathBuf,
    /// Offered load of the latency runs (relay scenario), events/s.
    pub latency_rate: u64,
    pub latency_seconds: u64,
}

/// End-to-end latency (send → received downstream), microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    File,
    Relay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    Both,
    /// Server on core 0, loader (and relay receiver) on core 1.
    Split,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub system: String,
    pub scenario: &'static str,
    pub cores: &'static str,
    pub durable: &'static str,
    pub events_per_sec: f64,
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
    pub missing: u64,
    pub duplicates: u64,
    /// For runs at a fixed offered load: that load and the latency seen.
    pub latency: Option<(u64, Latency)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum System {
    Sluice,
    Rsyslog,
    SyslogNg,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Sluice => "Sluice",
            System::Rsyslog => "rsyslog 8",
            System::SyslogNg => "syslog-ng 3",
        }
    }
}

/// Runs every system; returns the rows (Sluice first).
pub fn compare(args: &CompareArgs) -> Result<Vec<Row>, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for cores in [Cores::Both, Cores::Split] {
        for scenario in [Scenario::File, Scenario::Relay] {
            for system in [System::Sluice, System::Rsyslog, System::SyslogNg] {
                match run_one(system, scenario, cores, args, None) {
                    Ok(row) => rows.push(row),
                    Err(e) => eprintln!("{} {scenario:?} {cores:?}: skipped: {e}", system.name()),
                }
            }
        }
    }
    // Latency at a fixed offered load, relay scenario (the receiver times each event).
    for system in [System::Sluice, System::Rsyslog, System::SyslogNg] {
        match run_one(
            system,
            Scenario::Relay,
            Cores::Both,
            args,
            Some(args.latency_rate),
        ) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{} latency: skipped: {e}", system.name()),
        }
    }
    pin_self(None);
    Ok(rows)
}

/// Restricts this process (the loader and receiver threads it starts afterwards) to `cpu`, or
/// lifts the restriction.
fn pin_self(cpu: Option<usize>) {
    let cpus = match cpu {
        Some(c) => vec![c],
        None => (0..std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .max(64))
            .collect(),
    };
    set_affinity(0, &cpus);
}

fn set_affinity(pid: libc::pid_t, cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn run_one(
    system: System,
    scenario: Scenario,
    cores: Cores,
    args: &CompareArgs,
    rate: Option<u64>,
) -> Result<Row, String> {
    let dir = args.work_dir.join(format!(
        "{}-{scenario:?}-{cores:?}{}",
        match system {
            System::Sluice => "sluice",
            System::Rsyslog => "rsyslog",
            System::SyslogNg => "syslog-ng",
        },
        if rate.is_some() { "-latency" } else { "" }
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    pin_self(match cores {
        Cores::Both => None,
        Cores::Split => Some(1),
    });
    let receiver = match scenario {
        Scenario::File => None,
        Scenario::Relay => Some(RelayReceiver::start()?),
    };
    let port = free_port()?;
    let out = dir.join("out.log");
    let target = Target {
        file: &out,
        relay_port: receiver.as_ref().map(|r| r.port),
    };
    let server_cpus = match cores {
        Cores::Both => None,
        Cores::Split => Some(0),
    };
    let mut child = start(system, args, &dir, port, &target, server_cpus)?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let result = measure(
        system,
        args,
        &mut child,
        address,
        &target,
        receiver.as_ref(),
        rate,
    );
    stop(&mut child);
    result.map(|mut row| {
        row.scenario = match scenario {
            Scenario::File => "file",
            Scenario::Relay => "relay",
        };
        row.cores = match cores {
            Cores::Both => "both",
            Cores::Split => "server on 1",
        };
        if scenario == Scenario::Relay && system != System::Sluice {
            row.durable = "disk queue, no fsync";
        }
        row
    })
}

/// Where a server's output goes.
struct Target<'a> {
    file: &'a Path,
    relay_port: Option<u16>,
}

/// The relay scenario's downstream: accepts connections, counts newline-terminated lines and
/// keeps their sequence numbers for the loss check.
struct RelayReceiver {
    port: u16,
    lines: std::sync::Arc<std::sync::atomic::AtomicU64>,
    seqs: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    /// Send → receive, microseconds, over every event received.
    latency: std::sync::Arc<std::sync::Mutex<hdrhistogram::Histogram<u64>>>,
}

fn new_histogram() -> hdrhistogram::Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits: always valid bounds.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl RelayReceiver {
    fn start() -> Result<Self, String> {
        use std::io::Read;
        use std::sync::atomic::Ordering::Relaxed;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let lines = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seqs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let latency = std::sync::Arc::new(std::sync::Mutex::new(new_histogram()));
        let (lines2, seqs2, latency2) = (lines.clone(), seqs.clone(), latency.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (lines, seqs, latency) = (lines2.clone(), seqs2.clone(), latency2.clone());
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = vec![0u8; 1 << 20];
                    let (mut filled, mut mine) = (0usize, Vec::new());
                    let mut local = new_histogram();
                    loop {
                        let n = match conn.read(&mut buf[filled..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        filled += n;
                        let now = firehose::now_micros();
                        let mut start = 0;
                        let mut count = 0;
                        while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
                            let line = &buf[start..start + end];
                            if let Some(seq) = firehose::seq_in(line) {
                                mine.push(seq);
                            }
                            if let Some(sent) = firehose::time_in(line) {
                                let _ = local.record(now.saturating_sub(sent).max(1));
                            }
                            start += end + 1;
                            count += 1;
                        }
                        buf.copy_within(start..filled, 0);
                        filled -= start;
                        lines.fetch_add(count, Relaxed);
                        if filled == buf.len() {
                            filled = 0; // A line longer than the buffer: not ours.
                        }
                        // Handed over per read: the check may come before the server closes.
                        seqs.lock().map(|mut s| s.append(&mut mine)).ok();
                        if let Ok(mut h) = latency.lock() {
                            let _ = h.add(&local);
                        }
                        local.reset();
                    }
                    seqs.lock().map(|mut s| s.append(&mut mine)).ok();
                });
            }
        });
        Ok(RelayReceiver {
            port,
            lines,
            seqs,
            latency,
        })
    }
}

fn start(
    system: System,
    args: &CompareArgs,
    dir: &Path,
    port: u16,
    target: &Target,
    cpu: Option<usize>,
) -> Result<Child, String> {
    let config = dir.join("config");
    let out = target.file;
    let (text, mut command) = match system {
        System::Sluice => (
            format!(
                "data_dir = \"{data}\"\nstatus_interval = \"0s\"\n[api]\naddress = \"off\"\n[wal]\nfsync = \"5ms\"\n\
                 [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
                 {sink}",
                data = dir.join("data").display(),
                sink = match target.relay_port {
                    None => format!("[sinks.file]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"\nrotate_size = \"100GB\"\n", out.display()),
                    Some(p) => format!("[sinks.relay]\ntype = \"tcp\"\naddress = \"127.0.0.1:{p}\"\nframing = \"newline\"\nencoding = \"raw\"\n"),
                }
            ),
            {
                let mut c = Command::new(&args.sluice);
                c.args(["run", "--config"]).arg(&config);
                c
            },
        ),
        System::Rsyslog => {
            let rsyslogd = locate_rsyslogd()?;
            let text = format!(
                "global(workDirectory=\"{dir}\")\nmodule(load=\"imptcp\")\n\
                 input(type=\"imptcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n{action}\n",
                dir = dir.display(),
                action = match target.relay_port {
                    None => format!("action(type=\"omfile\" file=\"{}\" template=\"raw\" asyncWriting=\"on\" ioBufferSize=\"1m\" flushOnTXEnd=\"off\")", out.display()),
                    Some(p) => format!("action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{p}\" protocol=\"tcp\" template=\"raw\" queue.type=\"LinkedList\" queue.filename=\"fwdq\" queue.maxDiskSpace=\"4g\" queue.saveOnShutdown=\"on\")"),
                }
            );
            let mut c = Command::new(rsyslogd);
            c.args(["-n", "-f"])
                .arg(&config)
                .arg("-i")
                .arg(dir.join("rsyslog.pid"));
            (text, c)
        }
        System::SyslogNg => {
            let root = locate_syslog_ng(&args.peers_dir)?;
            let text = format!(
                "@version: 3.38\noptions {{ flush_lines(1000); stats_freq(0); }};\n\
                 source s {{ network(ip(\"127.0.0.1\") port({port}) transport(\"tcp\") flags(no-parse) max-connections(64) log_iw_size(100000) log_fetch_limit(1000)); }};\n\
                 destination d {{ {destination} }};\n\
                 log {{ source(s); destination(d); }};\n",
                destination = match target.relay_port {
                    None => format!("file(\"{}\" template(\"${{MSG}}\\n\"));", out.display()),
                    Some(p) => format!("network(\"127.0.0.1\" port({p}) transport(\"tcp\") template(\"${{MSG}}\\n\") disk-buffer(reliable(yes) disk-buf-size(4294967296) dir(\"{}\")));", dir.display()),
                }
            );
            let lib = root.join("usr/lib/syslog-ng");
            let mut c = Command::new(root.join("usr/sbin/syslog-ng"));
            c.args(["-F", "-f"])
                .arg(&config)
                .arg(format!("--module-path={}", lib.join("3.38").display()))
                .arg("-p")
                .arg(dir.join("syslog-ng.pid"))
                .arg("-R")
                .arg(dir.join("syslog-ng.persist"))
                .arg("-c")
                .arg(dir.join("syslog-ng.ctl"))
                .env(
                    "LD_LIBRARY_PATH",
                    format!(
                        "{}:{}:{}",
                        lib.display(),
                        root.join("usr/lib/x86_64-linux-gnu").display(),
                        root.join("lib/x86_64-linux-gnu").display()
                    ),
                );
            (text, c)
        }
    };
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
    if let Some(cpu) = cpu {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec; sched_setaffinity is async-signal-safe
        // and every thread the server starts inherits the mask.
        unsafe {
            command.pre_exec(move || {
                set_affinity(0, &[cpu]);
                Ok(())
            });
        }
    }
    let child = command
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "did not listen on {port}; see {}",
                dir.join("server.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn measure(
    system: System,
    args: &CompareArgs,
    child: &mut Child,
    address: SocketAddr,
    target: &Target,
    receiver: Option<&RelayReceiver>,
    rate: Option<u64>,
) -> Result<Row, String> {
    let pid = child.id();
    let firehose = Firehose {
        address,
        connections: args.connections,
        count: rate.map_or(args.count, |r| r * args.latency_seconds),
        size: args.size,
        framing: Framing::Newline,
        format: Format::Rfc5424,
        rate,
    };
    let cpu_before = process_cpu_seconds(pid);
    let started = Instant::now();
    let total = firehose::run(&firehose)?;
    let deadline = started + Duration::from_secs(300);
    match receiver {
        None => wait_for_lines(target.file, total, deadline)?,
        Some(r) => wait_for_relay(r, total, deadline)?,
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(pid) - cpu_before;
    let (missing, duplicates) = match receiver {
        None => check_output(target.file, total)?,
        Some(r) => {
            let seqs = r.seqs.lock().map(|s| s.clone()).unwrap_or_default();
            count_missing(seqs.into_iter(), total)
        }
    };
    Ok(Row {
        system: system.name().to_string(),
        scenario: "file",
        cores: "both",
        durable: if system == System::Sluice {
            "yes (fsync)"
        } else {
            "no"
        },
        events_per_sec: total as f64 / elapsed,
        cpu_percent: 100.0 * cpu / elapsed,
        peak_rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
        missing,
        duplicates,
        latency: rate.zip(receiver).map(|(r, receiver)| {
            let h = receiver
                .latency
                .lock()
                .map(|h| h.clone())
                .unwrap_or_else(|_| new_histogram());
            let latency = Latency {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            };
            (r, latency)
        }),
    })
}

fn stop(child: &mut Child) {
    // SAFETY: SIGTERM to a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_for_lines(out: &Path, total: u64, deadline: Instant) -> Result<(), String> {
    use std::io::Read;
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = 0u64;
    let mut offset = 0u64;
    loop {
        if let Ok(mut f) = std::fs::File::open(out) {
            use std::io::Seek;
            if f.seek(std::io::SeekFrom::Start(offset)).is_ok() {
                while let Ok(n) = f.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
                    offset += n as u64;
                }
            }
        }
        if seen >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {total} lines arrived"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_relay(r: &RelayReceiver, total: u64, deadline: Instant) -> Result<(), String> {
    loop {
        let seen = r.lines.load(std::sync::atomic::Ordering::Relaxed);
        if seen >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {total} lines arrived"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Missing and duplicated sequence numbers in the output.
fn check_output(out: &Path, total: u64) -> Result<(u64, u64), String> {
    let text = std::fs::read(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    let seqs = text.split(|&b| b == b'\n').filter_map(firehose::seq_in);
    Ok(count_missing(seqs, total))
}

fn count_missing(seqs: impl Iterator<Item = u64>, total: u64) -> (u64, u64) {
    let mut seen = HashSet::with_capacity(total as usize);
    let mut duplicates = 0;
    for seq in seqs {
        if !seen.insert(seq) {
            duplicates += 1;
        }
    }
    let missing = (0..total).filter(|s| !seen.contains(s)).count() as u64;
    (missing, duplicates)
}

/// User + system CPU seconds of a process (from /proc).
fn process_cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn locate_rsyslogd() -> Result<PathBuf, String> {
    let path = PathBuf::from("/usr/sbin/rsyslogd");
    if path.exists() {
        return Ok(path);
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", "rsyslog"])
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() && path.exists() {
        Ok(path)
    } else {
        Err("rsyslogd not found and `apt-get install rsyslog` failed".into())
    }
}

/// syslog-ng unpacked under `peers_dir/syslog-ng` (downloaded with apt-get if not there yet).
fn locate_syslog_ng(peers_dir: &Path) -> Result<PathBuf, String> {
    let root = peers_dir.join("syslog-ng");
    if root.join("usr/sbin/syslog-ng").exists() {
        return Ok(root);
    }
    let debs = peers_dir.join("debs");
    std::fs::create_dir_all(&debs).map_err(|e| e.to_string())?;
    let status = Command::new("apt-get")
        .args([
            "download",
            "syslog-ng-core",
            "libivykis0",
            "libpcre3",
            "libnet1",
            "libwrap0",
        ])
        .current_dir(&debs)
        .status()
        .map_err(|e| format!("apt-get download: {e}"))?;
    if !status.success() {
        return Err("apt-get download syslog-ng-core failed".into());
    }
    for entry in std::fs::read_dir(&debs)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let ok = Command::new("dpkg-deb")
            .arg("-x")
            .arg(entry.path())
            .arg(&root)
            .status()
            .map_err(|e| format!("dpkg-deb: {e}"))?
            .success();
        if !ok {
            return Err(format!("dpkg-deb -x {} failed", entry.path().display()));
        }
    }
    Ok(root)
}

/// The markdown table (ratios to the Sluice row).
pub fn table(rows: &[Row]) -> String {
    let sluice = rows
        .iter()
        .find(|r| r.system == "Sluice")
        .map_or(0.0, |r| r.events_per_sec);
    let mut t = String::from(
        "| system | scenario | cores | durable? | events/s | Sluice ÷ this | CPU % | peak RSS MiB | missing | duplicates |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows.iter().filter(|r| r.latency.is_none()) {
        // The ratio is to Sluice in the same scenario and core placement.
        let sluice = rows
            .iter()
            .find(|s| s.system == "Sluice" && s.scenario == r.scenario && s.cores == r.cores)
            .map_or(sluice, |s| s.events_per_sec);
        let ratio = if r.events_per_sec > 0.0 {
            sluice / r.events_per_sec
        } else {
            0.0
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} |",
            r.system,
            r.scenario,
            r.cores,
            r.durable,
            r.events_per_sec,
            ratio,
            r.cpu_percent,
            r.peak_rss_mib,
            r.missing,
            r.duplicates
        );
    }
    let latency_rows: Vec<&Row> = rows.iter().filter(|r| r.latency.is_some()).collect();
    if let Some((rate, _)) = latency_rows.first().and_then(|r| r.latency) {
        let _ = write!(
            t,
            "\nEnd-to-end latency, relay scenario, {rate} events/s offered (send → received downstream):\n\n\
             | system | durable? | p50 ms | p99 ms | p99.9 ms | max ms | missing |\n|---|---|---:|---:|---:|---:|---:|\n"
        );
        let ms = |us: u64| us as f64 / 1000.0;
        for r in latency_rows {
            if let Some((_, l)) = r.latency {
                let _ = writeln!(
                    t,
                    "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                    r.system,
                    r.durable,
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max),
                    r.missing
                );
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(system: &str, eps: f64, missing: u64) -> Row {
        Row {
            system: system.into(),
            scenario: "file",
            cores: "both",
            durable: "no",
            events_per_sec: eps,
            cpu_percent: 100.0,
            peak_rss_mib: 10.0,
            missing,
            duplicates: 0,
            latency: None,
        }
    }

    #[test]
    fn table_gives_ratios_to_sluice() {
        let t = table(&[row("Sluice", 1000.0, 0), row("peer", 250.0, 3)]);
        assert!(
            t.contains("| Sluice | file | both | no | 1000 | 1.00 |"),
            "{t}"
        );
        assert!(
            t.contains("| peer | file | both | no | 250 | 4.00 | 100 | 10 | 3 | 0 |"),
            "{t}"
        );
    }

    #[test]
    fn output_check_counts_missing_and_duplicates() {
        let dir = std::env::temp_dir().join(format!("sluice-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out.log");
        std::fs::write(&out, "a seq=0 x\nb seq=2 x\nc seq=2 y\nnoise\n").unwrap();
        assert_eq!(check_output(&out, 3).unwrap(), (1, 1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
