//! `sluice-bench compare`: Sluice, rsyslog and syslog-ng, one after another, same load, same
//! machine, same run; a markdown table with ratios to Sluice, the targets checked, and plots.
//!
//! Every [`peers::VARIANTS`] entry (each system durable and not, file and relay scenario) runs
//! twice: with the server on both cores, and with the server confined to core 0 (affinity set
//! before exec, so every thread) and the loader, receiver and tailer on core 1. The rate is end
//! to end: first byte sent → last line out. Every output line is checked for its sequence
//! number (missing, duplicates) and timed from its send time (p99 at full load). Then latency
//! runs at fixed offered loads: every relay variant that can take it at `latency_rate`, and
//! Sluice at `sluice_latency_rate` with its own ingest → durable histogram (from its admin
//! API's `/metrics`).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::firehose::{self, Firehose, Format, Framing};
use crate::host::{
    best_disk_bytes_per_sec, describe_disk, disk_busy_percent, disk_ceiling_per_sec, least_stolen,
    read_disk, CpuTimes, DiskReading, DiskWrites, DISK_PROBE, DISK_STREAMS, MAX_ATTEMPTS,
    STEAL_LIMIT_PERCENT,
};
use crate::peers::{self, Durability, Scenario, ServerPlace, System, Variant, VARIANTS};
use crate::receive::{FileTailer, FileWatch, Percentiles, RelayReceiver, Tally};

pub struct CompareArgs {
    pub sluice: PathBuf,
    pub work_dir: PathBuf,
    pub count: u64,
    pub connections: usize,
    pub size: usize,
    pub format: Format,
    /// Where syslog-ng is (or will be) unpacked.
    pub peers_dir: PathBuf,
    /// Offered load of the peers' latency runs (relay scenario), events/s.
    pub latency_rate: u64,
    /// Offered load of Sluice's latency runs, events/s.
    pub sluice_latency_rate: u64,
    pub latency_seconds: u64,
    /// The systems to run (all three by default).
    pub systems: Vec<System>,
    /// Same-run rounds of the throughput runs (every system once per round); the table shows
    /// each set-up's median round and the targets the median of the rounds' ratios.
    pub rounds: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cores {
    Both,
    /// Server on core 0; loader, receiver and tailer on core 1.
    Split,
}

impl Cores {
    pub fn name(self) -> &'static str {
        match self {
            Cores::Both => "both",
            Cores::Split => "server on 1",
        }
    }
}

/// One run: a variant at a placement and an offered load (`None`: as fast as it takes).
#[derive(Debug, Clone)]
pub struct Row {
    pub variant: Variant,
    /// Which same-run round (0-based; latency runs are in round 0 only).
    pub round: usize,
    pub cores: Cores,
    pub offered_rate: Option<u64>,
    pub events: u64,
    pub events_per_sec: f64,
    /// Sluice only: events durable in its WAL per second (its own counter).
    pub durable_per_sec: Option<f64>,
    pub cpu_percent: f64,
    /// The server's CPU time (user + system, every thread) per event.
    pub cpu_ns_per_event: f64,
    pub peak_rss_mib: f64,
    pub missing: u64,
    pub duplicates: u64,
    /// Send → out, over every event.
    pub latency: Percentiles,
    /// Sluice only: socket read → durable, upper bucket bounds of its own histogram (µs).
    pub ingest_durable: Option<Percentiles>,
    /// Percent of the CPU the hypervisor stole during the run (`host`).
    pub steal_percent: f64,
    /// Bytes written to the work directory's disk during the run (/proc/diskstats: WAL,
    /// ready segment files, output, queues), per event; `None` where the device is unknown.
    pub disk_bytes_per_event: Option<f64>,
}

impl Row {
    pub fn system(&self) -> System {
        self.variant.system
    }
}

/// A whole comparison: every run, and the disk measured before and after them.
pub struct Comparison {
    pub rows: Vec<Row>,
    pub disk: Vec<DiskReading>,
}

/// Runs every variant at both placements, then the latency runs; returns the rows in order,
/// with the work directory's disk measured before the first run and after the last.
pub fn compare(args: &CompareArgs) -> Result<Comparison, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir).map_err(|e| e.to_string())?;
    let mut disk = vec![read_disk(&args.work_dir, DISK_PROBE, "before the runs")?];
    let rows = run_all(args);
    disk.push(read_disk(&args.work_dir, DISK_PROBE, "after the runs")?);
    Ok(Comparison { rows, disk })
}

/// Every throughput round, then the latency runs.
fn run_all(args: &CompareArgs) -> Vec<Row> {
    let mut rows = Vec::new();
    // A latency run the host stole much of the CPU from is run again (`host`); a throughput
    // run is not: the median of the rounds stands for it.
    let mut run = |v: &Variant, cores: Cores, rate: Option<u64>, round: usize| {
        let attempts = if rate.is_some() { MAX_ATTEMPTS } else { 1 };
        let steal = |r: &Row| r.steal_percent;
        match least_stolen(attempts, steal, || logged_run(v, cores, args, rate, round)) {
            Ok(row) => rows.push(Row { round, ..row }),
            Err(e) => eprintln!(
                "{} {} {} {}: skipped: {e}",
                v.system.name(),
                v.scenario.name(),
                v.setup,
                cores.name()
            ),
        }
    };
    let chosen = |v: &&Variant| args.systems.contains(&v.system);
    // No rounds: the latency runs alone (they are short; their numbers vary more).
    for round in 0..args.rounds {
        for cores in [Cores::Both, Cores::Split] {
            for v in VARIANTS.iter().filter(chosen) {
                run(v, cores, None, round);
            }
        }
    }
    for v in VARIANTS
        .iter()
        .filter(chosen)
        .filter(|v| takes_latency_run(v))
    {
        let rate = if v.system == System::Sluice {
            args.sluice_latency_rate
        } else {
            args.latency_rate
        };
        run(v, Cores::Both, Some(rate), 0);
    }
    pin_self(None);
    rows
}

/// One run, its outcome logged.
fn logged_run(
    v: &Variant,
    cores: Cores,
    args: &CompareArgs,
    rate: Option<u64>,
    round: usize,
) -> Result<Row, String> {
    let row = run_one(v, cores, args, rate)?;
    let latency = match (rate, row.ingest_durable) {
        (Some(_), Some(d)) => format!(
            ", end to end p99 {} ms, ingest → durable p99 ≤ {} ms, max ≤ {} ms",
            ms(row.latency.p99),
            ms(d.p99),
            ms(d.max)
        ),
        (Some(_), None) => format!(", end to end p99 {} ms", ms(row.latency.p99)),
        _ => String::new(),
    };
    eprintln!(
        "round {} {} {} {} {}: {:.0} events/s, {} missing, host steal {:.1}%{latency}",
        round + 1,
        v.system.name(),
        v.scenario.name(),
        v.setup,
        cores.name(),
        row.events_per_sec,
        row.missing,
        row.steal_percent
    );
    Ok(row)
}

/// Latency runs: Sluice (both scenarios, durable), and the relay variants of the peers that
/// do more than a few hundred events/s.
fn takes_latency_run(v: &Variant) -> bool {
    match v.system {
        System::Sluice => v.durability == Durability::Fsync,
        _ => v.scenario == Scenario::Relay && v.count_divisor == 1,
    }
}

/// Restricts this process (the threads it starts afterwards) to `cpu`, or lifts that.
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

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Where a run's output is read from. Throughput runs read nothing while the system works
/// (a capturing receiver, a watched file); latency runs parse every line as it arrives.
enum Collector {
    Relay(RelayReceiver),
    File(FileTailer),
    Watch(FileWatch),
}

impl Collector {
    fn new(scenario: Scenario, out: &std::path::Path, rate: Option<u64>) -> Result<Self, String> {
        Ok(match (scenario, rate) {
            (Scenario::File, Some(_)) => Collector::File(FileTailer::start(out.to_path_buf())),
            (Scenario::File, None) => Collector::Watch(FileWatch::start(out.to_path_buf())),
            (Scenario::Relay, Some(_)) => Collector::Relay(RelayReceiver::start()?),
            (Scenario::Relay, None) => Collector::Relay(RelayReceiver::start_capturing()?),
        })
    }

    fn relay_port(&self) -> Option<u16> {
        match self {
            Collector::Relay(r) => Some(r.port),
            _ => None,
        }
    }

    /// How far the output got (lines, or bytes of a watched file): progress, for stalls.
    fn progress(&self) -> u64 {
        match self {
            Collector::Relay(r) => r.tally.lines(),
            Collector::File(t) => t.tally.lines(),
            Collector::Watch(w) => w.bytes_seen(),
        }
    }

    /// `Some` once all `total` lines are out: when the last landed, missing, duplicates and
    /// the send → out latency (none for throughput runs).
    fn done(&mut self, total: u64, started: Instant) -> Result<Option<Outcome>, String> {
        let tally: &Tally = match self {
            Collector::Watch(w) => {
                return Ok(w.poll(total)?.map(|d| Outcome {
                    elapsed: d.landed_at.saturating_duration_since(started),
                    missing: d.missing,
                    duplicates: d.duplicates,
                    latency: Percentiles::default(),
                }))
            }
            Collector::Relay(r) => &r.tally,
            Collector::File(t) => &t.tally,
        };
        if tally.lines() < total {
            return Ok(None);
        }
        let elapsed = started.elapsed();
        let (missing, duplicates) = tally.missing_and_duplicates(total);
        Ok(Some(Outcome {
            elapsed,
            missing,
            duplicates,
            latency: tally.latency(),
        }))
    }
}

/// What a run's output showed.
struct Outcome {
    elapsed: Duration,
    missing: u64,
    duplicates: u64,
    latency: Percentiles,
}

fn run_one(
    v: &Variant,
    cores: Cores,
    args: &CompareArgs,
    rate: Option<u64>,
) -> Result<Row, String> {
    let dir = args.work_dir.join(format!(
        "{}-{}-{:?}-{}{}",
        v.system.slug(),
        v.scenario.name(),
        v.durability,
        match cores {
            Cores::Both => "both",
            Cores::Split => "split",
        },
        if rate.is_some() { "-latency" } else { "" }
    ));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    pin_self(match cores {
        Cores::Both => None,
        Cores::Split => Some(1),
    });
    let out = dir.join("out.log");
    let mut collector = Collector::new(v.scenario, &out, rate)?;
    let place = ServerPlace {
        dir: &dir,
        port: free_port()?,
        out_file: &out,
        relay_port: collector.relay_port(),
        api: ([127, 0, 0, 1], free_port()?).into(),
    };
    let mut child = start(v, &place, args, cores)?;
    let result = measure(v, args, &mut child, &place, &mut collector, rate);
    let _ = stop(&mut child, STOP_TIMEOUT);
    drop(collector);
    remove_bulk(&dir);
    result.map(|row| Row { cores, ..row })
}

/// Deletes a finished run's output and queues (gigabytes over a whole comparison, which would
/// also crowd the page cache of the runs after it); keeps its config and log.
fn remove_bulk(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if matches!(
            path.file_name().and_then(|n| n.to_str()),
            Some("config" | "server.log")
        ) {
            continue;
        }
        let _ = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
    }
}

fn start(
    v: &Variant,
    place: &ServerPlace,
    args: &CompareArgs,
    cores: Cores,
) -> Result<Child, String> {
    let (text, mut command) = peers::server_command(v, place, &args.sluice, &args.peers_dir)?;
    std::fs::write(place.dir.join("config"), text).map_err(|e| e.to_string())?;
    let log_path = place.dir.join("server.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    if cores == Cores::Split {
        use std::os::unix::process::CommandExt;
        // SAFETY: runs in the forked child before exec; sched_setaffinity is async-signal-safe
        // and every thread the server starts inherits the mask.
        unsafe {
            command.pre_exec(|| {
                set_affinity(0, &[0]);
                Ok(())
            });
        }
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", place.port)).is_err() {
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            let _ = stop(&mut child, STOP_TIMEOUT);
            return Err(format!(
                "did not listen on {}; see {}",
                place.port,
                log_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child)
}

fn measure(
    v: &Variant,
    args: &CompareArgs,
    child: &mut Child,
    place: &ServerPlace,
    collector: &mut Collector,
    rate: Option<u64>,
) -> Result<Row, String> {
    let pid = child.id();
    let count = match rate {
        Some(r) => r * args.latency_seconds,
        None => (args.count / v.count_divisor).max(1000),
    };
    let firehose = Firehose {
        address: ([127, 0, 0, 1], place.port).into(),
        connections: args.connections,
        count,
        size: args.size,
        framing: Framing::Newline,
        format: args.format,
        rate,
        ..Firehose::default()
    };
    let sluice = v.system == System::Sluice;
    if sluice {
        // The default `wal.ready_segments`.
        wait_for_ready_segments(place.api, 2)?;
    }
    let cpu_before = process_cpu_seconds(pid);
    let disk_writes = DiskWrites::start(place.dir);
    let host_before = CpuTimes::now();
    let started = Instant::now();
    let total = firehose::run(&firehose)?.sent;
    let (outcome, durable_at) =
        wait_for_outcome(collector, total, started, sluice.then_some(place.api))?;
    // The output's own time, not when the (polled) durable counter was seen.
    let elapsed = outcome.elapsed.as_secs_f64();
    let cpu = process_cpu_seconds(pid) - cpu_before;
    let steal_percent = CpuTimes::now().steal_percent_since(&host_before);
    let (missing, duplicates, latency) = (outcome.missing, outcome.duplicates, outcome.latency);
    Ok(Row {
        variant: *v,
        round: 0,
        cores: Cores::Both,
        offered_rate: rate,
        events: total,
        events_per_sec: total as f64 / elapsed,
        durable_per_sec: durable_at.map(|d| total as f64 / d.as_secs_f64()),
        cpu_percent: 100.0 * cpu / elapsed,
        peak_rss_mib: peak_rss_kib(pid) as f64 / 1024.0,
        missing,
        duplicates,
        cpu_ns_per_event: cpu * 1e9 / total.max(1) as f64,
        latency,
        ingest_durable: if sluice {
            Some(ingest_durable_percentiles(place.api)?)
        } else {
            None
        },
        steal_percent,
        disk_bytes_per_event: disk_writes.per_event(total),
    })
}

/// Waits (up to 60 s) until each shard of the Sluice answering at `api` has written its
/// `per_shard` ready segment files (a first start zero-fills them in the background: measured
/// runs start in the steady state, where new segments are recycled).
pub(crate) fn wait_for_ready_segments(api: SocketAddr, per_shard: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let page = scrape(api)?;
        let name = "sluice_wal_segments_zero_filled_total";
        let shards = page
            .lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .count();
        // (A build without ready files has no such series: nothing to wait for.)
        if !page.contains(name) || metric_sum(&page, name) >= (shards * per_shard) as f64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("the ready segment files were not written within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the output holds all `total` lines (and, for Sluice at `api`, until its WAL
/// counted them durable: when, after `started`). The durable counter is watched on a thread
/// of its own: the collector's last step (parsing every line a receiver stored) takes seconds,
/// and a poll behind it saw the count that late ("in WAL/s" read 0.4–0.76M for a relay that
/// delivered 1.1–2.2M/s end to end).
fn wait_for_outcome(
    collector: &mut Collector,
    total: u64,
    started: Instant,
    api: Option<SocketAddr>,
) -> Result<(Outcome, Option<Duration>), String> {
    let watch = api.map(|api| std::thread::spawn(move || watch_durable(api, total, started)));
    let mut outcome = None;
    // Gives up once nothing arrived for STALL (a slow set-up still progresses).
    let mut progress = (collector.progress(), Instant::now());
    while outcome.is_none() {
        outcome = collector.done(total, started)?;
        let now = collector.progress();
        if now != progress.0 {
            progress = (now, Instant::now());
        } else if outcome.is_none() && progress.1.elapsed() > STALL {
            return Err(format!(
                "stalled at {now} of {total} (lines, or bytes of the file), none in the last {}s",
                STALL.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let durable_at = match watch {
        Some(thread) => Some(thread.join().map_err(|_| "durable watcher panicked")??),
        None => None,
    };
    Ok((outcome.ok_or("no outcome")?, durable_at))
}

/// When (after `started`) Sluice at `api` counted `total` events durable, polled every 10 ms.
fn watch_durable(api: SocketAddr, total: u64, started: Instant) -> Result<Duration, String> {
    wait_for_counter(
        api,
        "sluice_events_durable_total",
        total,
        Duration::from_millis(10),
    )?;
    Ok(started.elapsed())
}

/// A run whose output has not grown for this long has failed.
const STALL: Duration = Duration::from_secs(60);

/// `GET /metrics` from Sluice's admin API.
pub(crate) fn scrape(api: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect(api).map_err(|e| format!("admin API {api}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: sluice\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut page = String::new();
    s.read_to_string(&mut page)
        .map_err(|e| format!("admin API {api}: {e}"))?;
    Ok(page)
}

/// Sum over every series of a metric (`name{...} value` lines) in a `/metrics` page (the
/// engine's tests read their counters with it too).
pub fn metric_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls Sluice's counter `metric` (summed over its series) every `poll` until it reaches
/// `total`; an error once it has not moved for STALL.
pub(crate) fn wait_for_counter(
    api: SocketAddr,
    metric: &str,
    total: u64,
    poll: Duration,
) -> Result<(), String> {
    let mut last = (0.0, Instant::now());
    loop {
        let done = metric_sum(&scrape(api)?, metric);
        if done as u64 >= total {
            return Ok(());
        }
        if done != last.0 {
            last = (done, Instant::now());
        } else if last.1.elapsed() > STALL {
            return Err(format!("stalled at {done} of {total} events"));
        }
        std::thread::sleep(poll);
    }
}

fn ingest_durable_percentiles(api: SocketAddr) -> Result<Percentiles, String> {
    let page = scrape(api)?;
    Ok(bucket_percentiles(&page, "sluice_ingest_durable_seconds"))
}

/// p50/p99/p99.9/max of a Prometheus histogram (summed over its series) as the upper bound of
/// the bucket each falls in, in µs (`u64::MAX` when it is in the +Inf bucket).
pub fn bucket_percentiles(page: &str, name: &str) -> Percentiles {
    let cumulative = buckets(page, name);
    Percentiles {
        p50: bucket_bound_us(&cumulative, 0.5),
        p99: bucket_bound_us(&cumulative, 0.99),
        p999: bucket_bound_us(&cumulative, 0.999),
        max: bucket_bound_us(&cumulative, 1.0),
    }
}

/// The upper bound (µs; `u64::MAX` for the +Inf bucket, 0 when empty) of the bucket the
/// quantile `q` of `cumulative` (from [`buckets`]) falls in.
pub(crate) fn bucket_bound_us(cumulative: &[(f64, f64)], q: f64) -> u64 {
    let total = cumulative.last().map_or(0.0, |&(_, c)| c);
    let bound = cumulative
        .iter()
        .find(|&&(_, c)| total > 0.0 && c >= q * total)
        .map_or(0.0, |&(b, _)| b);
    if bound.is_finite() {
        (bound * 1e6).round() as u64
    } else {
        u64::MAX
    }
}

/// `(upper bound, cumulative count)` of a Prometheus histogram's buckets summed over its
/// series, ascending.
pub(crate) fn buckets(page: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut cumulative: Vec<(f64, f64)> = Vec::new();
    for line in page.lines().filter(|l| l.starts_with(&prefix)) {
        let le = line
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| match v {
                "+Inf" => Some(f64::INFINITY),
                v => v.parse::<f64>().ok(),
            });
        let count = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let (Some(le), Some(count)) = (le, count) {
            match cumulative.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += count,
                None => cumulative.push((le, count)),
            }
        }
    }
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    cumulative
}

/// How long a server under full load gets to drain and exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// SIGTERM to a server we started, then SIGKILL if it has not exited within `timeout`: its
/// exit status, or why it had to be killed.
pub(crate) fn stop(child: &mut Child, timeout: Duration) -> Result<ExitStatus, String> {
    // SAFETY: SIGTERM to a child we started and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for pid {}: {e}", child.id())),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "did not stop within {timeout:?} of SIGTERM: killed"
    ))
}

/// User + system CPU seconds of a process (from /proc).
pub(crate) fn process_cpu_seconds(pid: u32) -> f64 {
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

/// Sluice's durable full-speed row for a scenario and placement (the ratios' reference).
fn sluice_durable(rows: &[Row], scenario: Scenario, cores: Cores) -> Option<&Row> {
    rows.iter().find(|s| {
        s.system() == System::Sluice
            && s.variant.durability == Durability::Fsync
            && s.variant.scenario == scenario
            && s.cores == cores
            && s.offered_rate.is_none()
    })
}

fn ms(us: u64) -> String {
    if us == u64::MAX {
        "> 2500".into()
    } else {
        format!("{:.2}", us as f64 / 1000.0)
    }
}

/// The markdown tables: throughput (ratios to Sluice), latency at fixed loads, targets.
/// One row per set-up (variant, cores, offered rate): the round with the median events/s, with
/// the missing and duplicated counts of every round added up.
pub fn median_rows(rows: &[Row]) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for r in rows {
        let same = |o: &Row| {
            o.variant.system == r.variant.system
                && o.variant.scenario == r.variant.scenario
                && o.variant.setup == r.variant.setup
                && o.cores == r.cores
                && o.offered_rate == r.offered_rate
        };
        if out.iter().any(same) {
            continue;
        }
        let mut group: Vec<&Row> = rows.iter().filter(|o| same(o)).collect();
        group.sort_by(|a, b| a.events_per_sec.total_cmp(&b.events_per_sec));
        let mut median = group[group.len() / 2].clone();
        median.missing = group.iter().map(|g| g.missing).sum();
        median.duplicates = group.iter().map(|g| g.duplicates).sum();
        out.push(median);
    }
    out
}

pub fn table(all_rows: &[Row], size: usize, disk: &[DiskReading]) -> String {
    let rows = &median_rows(all_rows)[..];
    let mut t = String::from(
        "| system | scenario | cores | durable? | events | events/s | in WAL/s (own counter) | MB/s in | Sluice ÷ this | CPU ns/event | disk bytes/event | CPU % | peak RSS MiB | missing | dups | host steal % |\n\
         |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows.iter().filter(|r| r.offered_rate.is_none()) {
        let ratio = sluice_durable(rows, r.variant.scenario, r.cores)
            .filter(|_| r.events_per_sec > 0.0)
            .map_or("–".to_string(), |s| {
                format!("{:.2}", s.events_per_sec / r.events_per_sec)
            });
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {:.0} | {} | {:.0} | {ratio} | {:.0} | {} | {:.0} | {:.0} | {} | {} | {:.1} |",
            r.system().name(),
            r.variant.scenario.name(),
            r.cores.name(),
            r.variant.setup,
            r.events,
            r.events_per_sec,
            r.durable_per_sec
                .map_or("–".to_string(), |d| format!("{d:.0}")),
            r.events_per_sec * size as f64 / 1e6,
            r.cpu_ns_per_event,
            r.disk_bytes_per_event
                .map_or("–".to_string(), |b| format!("{b:.0}")),
            r.cpu_percent,
            r.peak_rss_mib,
            r.missing,
            r.duplicates,
            r.steal_percent
        );
    }
    disk_note(&mut t, rows, disk);
    latency_table(&mut t, rows);
    targets(&mut t, all_rows, best_disk_bytes_per_sec(disk));
    t
}

/// The disk readings of the run, and what they let a durable Sluice run carry at the bytes it
/// wrote per event.
fn disk_note(t: &mut String, rows: &[Row], disk: &[DiskReading]) {
    if disk.is_empty() {
        return;
    }
    let _ = write!(
        t,
        "\nDisk of this run (the work directory's file system, 1 MiB writes each followed by \
         fdatasync, {DISK_STREAMS} files written side by side as Sluice's two WALs and its output \
         are, and one alone): {}. \"disk bytes/event\": what reached that disk during the run \
         (/proc/diskstats: WAL, ready segment files, output, queues); a set-up that does not \
         sync may leave part of its output in the page cache when the run ends.",
        describe_disk(disk)
    );
    let best = best_disk_bytes_per_sec(disk);
    let ceilings: Vec<String> = rows
        .iter()
        .filter(|r| {
            r.system() == System::Sluice
                && r.variant.durability == Durability::Fsync
                && r.cores == Cores::Both
                && r.offered_rate.is_none()
        })
        .filter_map(|r| {
            let bytes = r.disk_bytes_per_event?;
            disk_ceiling_per_sec(best, bytes).map(|c| {
                format!(
                    "{} {c:.0}/s at {bytes:.0} bytes/event",
                    r.variant.scenario.name()
                )
            })
        })
        .collect();
    if !ceilings.is_empty() {
        let _ = write!(
            t,
            " The best {DISK_STREAMS}-writer reading ÷ the bytes Sluice's durable runs wrote per \
             event (both cores), about the most events/s this disk syncs at that cost: {}.",
            ceilings.join(", ")
        );
    }
    t.push('\n');
}

fn latency_table(t: &mut String, rows: &[Row]) {
    let _ = write!(
        t,
        "\nLatency at a fixed offered load (both cores). End to end: send → line out (file: read by a \
         tailer polling every 1 ms). Ingest → durable: Sluice's own histogram \
         (`sluice_ingest_durable_seconds`), shown as the upper bound of the bucket the percentile \
         falls in. A run the hypervisor stole over {STEAL_LIMIT_PERCENT}% of the CPU from is run again \
         (up to {MAX_ATTEMPTS} runs; the one with the least steal is shown).\n\n\
         | system | scenario | durable? | offered/s | end-to-end p50 / p99 / p99.9 / max ms | ingest → durable p50 / p99 / p99.9 ms | missing | host steal % |\n\
         |---|---|---|---:|---|---|---:|---:|\n"
    );
    for r in rows.iter().filter(|r| r.offered_rate.is_some()) {
        let l = r.latency;
        let own = r.ingest_durable.map_or("–".to_string(), |d| {
            format!("≤ {} / ≤ {} / ≤ {}", ms(d.p50), ms(d.p99), ms(d.p999))
        });
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} / {} / {} / {} | {own} | {} | {:.1} |",
            r.system().name(),
            r.variant.scenario.name(),
            r.variant.setup,
            r.offered_rate.unwrap_or(0),
            ms(l.p50),
            ms(l.p99),
            ms(l.p999),
            ms(l.max),
            r.missing,
            r.steal_percent
        );
    }
}

/// The targets, checked against this run.
/// One checked target: what, what this run measured, whether it is met.
type Target = (String, String, bool);

fn targets(t: &mut String, rows: &[Row], disk_bytes_per_sec: f64) {
    let _ = write!(
        t,
        "\nTargets, checked against this run:\n\n| target | measured | met? |\n|---|---|---|\n"
    );
    let mut all = throughput_targets_over_rounds(rows, disk_bytes_per_sec);
    all.extend(latency_targets(rows, disk_bytes_per_sec));
    let lost: u64 = rows.iter().map(|r| r.missing).sum();
    all.push((
        "zero loss in every run".into(),
        format!("{lost} missing over {} runs", rows.len()),
        lost == 0,
    ));
    let rss = rows
        .iter()
        .filter(|r| r.system() == System::Sluice)
        .map(|r| r.peak_rss_mib)
        .fold(0.0f64, f64::max);
    all.push((
        "Sluice peak RSS ≤ 128 MiB (default settings)".into(),
        format!("{rss:.0} MiB"),
        rss <= 128.0,
    ));
    for (name, measured, met) in all {
        let _ = writeln!(
            t,
            "| {name} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
}

/// The best events/s of `system`'s full-load runs in `scenario` on `cores` with one of
/// `durability` (0 without such a run).
fn best(
    rows: &[Row],
    system: System,
    scenario: Scenario,
    cores: Cores,
    durability: &[Durability],
) -> f64 {
    rows.iter()
        .filter(|r| {
            r.system() == system
                && r.variant.scenario == scenario
                && r.cores == cores
                && r.offered_rate.is_none()
                && durability.contains(&r.variant.durability)
        })
        .map(|r| r.events_per_sec)
        .fold(0.0f64, f64::max)
}

/// A throughput target in one round: what, the value, the least value that meets it, and
/// whether it is a ratio (shown as `N.NN×`) or events/s.
struct Check {
    name: String,
    value: f64,
    at_least: f64,
    ratio: bool,
    /// An events/s target's row: bytes it wrote per event (its disk ceiling).
    disk_bytes_per_event: Option<f64>,
}

impl Check {
    fn show(&self, v: f64) -> String {
        if self.ratio {
            format!("{v:.2}×")
        } else {
            format!("{v:.0}")
        }
    }
}

/// Each throughput target as the median of its value over the same-run rounds (every round
/// shown beside it).
/// An events/s target also shows the disk's ceiling (the median over the rounds) when it was
/// not met.
fn throughput_targets_over_rounds(rows: &[Row], disk_bytes_per_sec: f64) -> Vec<Target> {
    let mut rounds: Vec<usize> = rows.iter().map(|r| r.round).collect();
    rounds.sort_unstable();
    rounds.dedup();
    let per_round: Vec<Vec<Check>> = rounds
        .iter()
        .map(|&n| {
            let of_round: Vec<Row> = rows.iter().filter(|r| r.round == n).cloned().collect();
            throughput_targets(&of_round)
        })
        .collect();
    let Some(first) = per_round.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|c| {
            let values: Vec<f64> = per_round
                .iter()
                .filter_map(|checks| checks.iter().find(|o| o.name == c.name))
                .map(|o| o.value)
                .collect();
            let median = crate::processing::median(values.clone());
            let mut measured = if values.len() > 1 {
                let each: Vec<String> = values.iter().map(|&v| c.show(v)).collect();
                format!("{} (rounds: {})", c.show(median), each.join(", "))
            } else {
                c.show(median)
            };
            let ceilings: Vec<f64> = per_round
                .iter()
                .filter_map(|checks| checks.iter().find(|o| o.name == c.name))
                .filter_map(|o| disk_ceiling_per_sec(disk_bytes_per_sec, o.disk_bytes_per_event?))
                .collect();
            if median < c.at_least && !ceilings.is_empty() {
                let ceiling = crate::processing::median(ceilings);
                let _ = write!(
                    measured,
                    "; disk ceiling ({DISK_STREAMS}-writer synced bandwidth ÷ bytes written per event): {ceiling:.0}/s"
                );
            }
            (c.name.clone(), measured, median >= c.at_least)
        })
        .collect()
}

/// Issue 16: durable ≥ 2M/s on both cores, ≥ 1.5× rsyslog's best non-durable on both cores
/// and pinned; and wave 1's ≥ 8× syslog-ng's reliable disk-buffer (relay). One round's rows.
fn throughput_targets(rows: &[Row]) -> Vec<Check> {
    let mut out = Vec::new();
    let sluice = |scenario, cores| sluice_durable(rows, scenario, cores);
    let not_durable = [Durability::Memory, Durability::DiskNoFsync];
    for scenario in [Scenario::File, Scenario::Relay] {
        let name = scenario.name();
        if let Some(s) = sluice(scenario, Cores::Both) {
            out.push(Check {
                name: format!("Sluice durable, {name}, both cores ≥ 2M events/s"),
                value: s.events_per_sec,
                at_least: 2e6,
                ratio: false,
                disk_bytes_per_event: s.disk_bytes_per_event,
            });
        }
        for cores in [Cores::Both, Cores::Split] {
            let rsyslog = best(rows, System::Rsyslog, scenario, cores, &not_durable);
            if let (Some(s), true) = (sluice(scenario, cores), rsyslog > 0.0) {
                out.push(Check {
                    name: format!(
                        "{name}, {}: Sluice durable ≥ 1.5× rsyslog's best non-durable",
                        cores.name()
                    ),
                    value: s.events_per_sec / rsyslog,
                    at_least: 1.5,
                    ratio: true,
                    disk_bytes_per_event: None,
                });
            }
        }
    }
    let disk_buffer = best(
        rows,
        System::SyslogNg,
        Scenario::Relay,
        Cores::Both,
        &[Durability::DiskNoFsync],
    );
    if let (Some(s), true) = (sluice(Scenario::Relay, Cores::Both), disk_buffer > 0.0) {
        out.push(Check {
            name: "relay: ≥ 8× syslog-ng's reliable disk-buffer".into(),
            value: s.events_per_sec / disk_buffer,
            at_least: 8.0,
            ratio: true,
            disk_bytes_per_event: None,
        });
    }
    out
}

/// Issue 16: p99 ingest → durable ≤ 5 ms up to 1M/s offered, ≤ 10 ms up to 1.5M/s; nothing
/// over 100 ms. A p99 target also shows how much of the disk's best synced bandwidth the run's
/// writes took.
fn latency_targets(rows: &[Row], disk_bytes_per_sec: f64) -> Vec<Target> {
    let mut out = Vec::new();
    for r in rows.iter().filter(|r| r.system() == System::Sluice) {
        let (Some(rate), Some(d)) = (r.offered_rate, r.ingest_durable) else {
            continue;
        };
        let target_ms = if rate <= 1_000_000 { 5 } else { 10 };
        let scenario = r.variant.scenario.name();
        let mut measured = format!("≤ {} ms", ms(d.p99));
        let busy = r
            .disk_bytes_per_event
            .and_then(|b| disk_busy_percent(r.events_per_sec, b, disk_bytes_per_sec));
        if let Some(busy) = busy {
            let _ = write!(
                measured,
                " (its writes: {busy:.0}% of the disk's synced bandwidth)"
            );
        }
        out.push((
            format!(
                "p99 ingest → durable ≤ {target_ms} ms at {rate} events/s offered ({scenario})"
            ),
            measured,
            d.p99 <= target_ms * 1000,
        ));
        out.push((
            format!("no event over 100 ms ingest → durable at {rate} events/s ({scenario})"),
            format!("max ≤ {} ms", ms(d.max)),
            d.max <= 100_000,
        ));
    }
    out
}

#[cfg(test)]
impl Row {
    /// A row for tests of the tables and plots: `VARIANTS[variant]`, fixed latencies, and
    /// Sluice's own histogram for the fixed-load runs.
    pub(crate) fn sample(
        variant: usize,
        cores: Cores,
        offered_rate: Option<u64>,
        events_per_sec: f64,
        missing: u64,
    ) -> Row {
        Row {
            variant: VARIANTS[variant],
            round: 0,
            cores,
            offered_rate,
            events: 1000,
            events_per_sec,
            durable_per_sec: None,
            cpu_percent: 100.0,
            cpu_ns_per_event: 1000.0,
            peak_rss_mib: 10.0,
            missing,
            duplicates: 0,
            latency: Percentiles {
                p50: 1000,
                p99: 2500,
                p999: 3000,
                max: 4000,
            },
            ingest_durable: offered_rate.map(|_| Percentiles {
                p50: 2000,
                p99: 7000,
                p999: 9000,
                max: 10_000,
            }),
            steal_percent: 0.0,
            disk_bytes_per_event: Some(460.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(v: usize, cores: Cores, eps: f64, missing: u64) -> Row {
        Row::sample(v, cores, None, eps, missing)
    }

    /// Three same-run rounds: the table shows each set-up's median round (loss of every round
    /// added up), a target the median of the rounds' ratios, each round beside it.
    #[test]
    fn rounds_give_median_rows_and_median_ratios() {
        let round = |n: usize, sluice: f64, rsyslog: f64, missing: u64| {
            [
                Row {
                    round: n,
                    ..row(0, Cores::Both, sluice, 0)
                },
                Row {
                    round: n,
                    ..row(2, Cores::Both, rsyslog, missing)
                },
            ]
        };
        let mut rows = Vec::new();
        rows.extend(round(0, 1_000_000.0, 500_000.0, 0));
        rows.extend(round(1, 3_000_000.0, 1_000_000.0, 1));
        rows.extend(round(2, 2_000_000.0, 2_000_000.0, 0));
        let medians = median_rows(&rows);
        assert_eq!(medians.len(), 2);
        assert_eq!(medians[0].events_per_sec, 2_000_000.0);
        assert_eq!(
            (medians[1].events_per_sec, medians[1].missing),
            (1_000_000.0, 1)
        );
        let t = table(&rows, 200, &[]);
        assert!(
            t.contains("| file, both: Sluice durable ≥ 1.5× rsyslog's best non-durable | 2.00× (rounds: 2.00×, 3.00×, 1.00×) | yes |"),
            "{t}"
        );
    }

    #[test]
    fn table_gives_ratios_to_sluice_durable_and_checks_targets() {
        // VARIANTS[0]: Sluice file fsync; [2]: rsyslog file memory.
        let disk = [DiskReading {
            when: "before the runs",
            synced_mib_per_sec: 300.0,
            parallel_mib_per_sec: 460.0,
            small_sync_p99_us: 1500,
        }];
        let t = table(
            &[
                row(0, Cores::Both, 1_000_000.0, 0),
                row(2, Cores::Both, 250_000.0, 3),
                Row::sample(0, Cores::Both, Some(1_000_000), 1_000_000.0, 0),
            ],
            200,
            &disk,
        );
        assert!(
            t.contains("| Sluice | file | both | yes: WAL fsync 2 ms, file fdatasync | 1000 | 1000000 | – | 200 | 1.00 | 1000 |"),
            "{t}"
        );
        assert!(
            t.contains("| rsyslog 8 | file | both | no: memory, omfile no fsync | 1000 | 250000 | – | 50 | 4.00 | 1000 | 460 | 100 | 10 | 3 | 0 |"),
            "{t}"
        );
        // 460 MiB/s synced at 460 bytes per event: 2^20 events/s at most.
        assert!(
            t.contains("| Sluice durable, file, both cores ≥ 2M events/s | 1000000; disk ceiling (3-writer synced bandwidth ÷ bytes written per event): 1048576/s | **no** |"),
            "{t}"
        );
        assert!(
            t.contains("before the runs 460 MiB/s with 3 writers, 300 MiB/s with one (4 KiB write + fdatasync p99 1.5 ms)"),
            "{t}"
        );
        assert!(
            t.contains("at that cost: file 1048576/s at 460 bytes/event."),
            "{t}"
        );
        assert!(
            t.contains("| p99 ingest → durable ≤ 5 ms at 1000000 events/s offered (file) | ≤ 7.00 ms (its writes: 95% of the disk's synced bandwidth) | **no** |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| file, both: Sluice durable ≥ 1.5× rsyslog's best non-durable | 4.00× | yes |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| zero loss in every run | 3 missing over 3 runs | **no** |"),
            "{t}"
        );
    }

    #[test]
    fn histogram_percentiles_are_bucket_bounds_summed_over_shards() {
        let page = "\
# TYPE sluice_ingest_durable_seconds histogram
sluice_ingest_durable_seconds_bucket{shard=\"0\",le=\"0.001\"} 50
sluice_ingest_durable_seconds_bucket{shard=\"0\",le=\"0.005\"} 99
sluice_ingest_durable_seconds_bucket{shard=\"0\",le=\"+Inf\"} 100
sluice_ingest_durable_seconds_bucket{shard=\"1\",le=\"0.001\"} 50
sluice_ingest_durable_seconds_bucket{shard=\"1\",le=\"0.005\"} 100
sluice_ingest_durable_seconds_bucket{shard=\"1\",le=\"+Inf\"} 100
sluice_events_durable_total{shard=\"0\"} 100
sluice_events_durable_total{shard=\"1\"} 100
";
        let p = bucket_percentiles(page, "sluice_ingest_durable_seconds");
        assert_eq!(p.p50, 1000);
        assert_eq!(p.p99, 5000);
        assert_eq!(
            p.p999,
            u64::MAX,
            "one event of 200 is slower than every bound"
        );
        assert_eq!(metric_sum(page, "sluice_events_durable_total"), 200.0);
    }
}
