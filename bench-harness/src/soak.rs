//! Crash soak: continuous sequence-numbered load, `kill -9` at random moments, restart, and
//! at the end the check that every event that was durable reached the output.
//!
//! "Durable" is read from the WAL itself: after each kill, before the restart, every complete
//! record in the shard directories is a record that survived the crash (recovery keeps all of
//! them), so its event must be delivered eventually. Events deleted from the WAL by retention
//! had been delivered already. At the end Sluice is stopped gracefully and the file output is
//! compared: every survivor present (duplicates allowed), nothing that was never sent.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct SoakArgs {
    pub sluice: PathBuf,
    pub iterations: u32,
    pub work_dir: PathBuf,
    pub seed: u64,
    pub connections: usize,
    /// Longest run between kills.
    pub max_run: Duration,
    /// Offered load, events per second over all connections (0: as fast as accepted).
    pub rate: u64,
    /// `[wal] io` of each run.
    pub wal_io: SoakWalIo,
    /// `[wal] commit_compression` of each run.
    pub commit_compression: SoakCompression,
    /// `[wal] commits_in_flight` of the runs, in turn, four runs each (empty: the default).
    pub commits_in_flight: Vec<usize>,
}

/// The `commits_in_flight` of run `run`: each value for four runs in turn (so each meets both
/// io modes and both compressions); 1 when none is given.
fn in_flight_for_run(values: &[usize], run: u32) -> usize {
    match values.len() {
        0 => 1,
        n => values[(run / 4) as usize % n],
    }
}

/// Whether the runs write compressed commits: never, always, or in turn (two runs with, two
/// without, so that with `SoakWalIo::Alternate` every pair of settings follows every other).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SoakCompression {
    None,
    Zstd,
    Alternate,
}

impl SoakCompression {
    fn for_run(self, run: u32) -> &'static str {
        match self {
            SoakCompression::None => "none",
            SoakCompression::Zstd => "zstd",
            SoakCompression::Alternate if run % 4 < 2 => "zstd",
            SoakCompression::Alternate => "none",
        }
    }
}

/// How the WAL writes during the soak: one mode, or direct and buffered in turn (each
/// restart recovers what the other mode wrote).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SoakWalIo {
    Direct,
    Buffered,
    Alternate,
}

impl SoakWalIo {
    fn for_run(self, run: u32) -> &'static str {
        match self {
            SoakWalIo::Direct => "direct",
            SoakWalIo::Buffered => "buffered",
            SoakWalIo::Alternate if run.is_multiple_of(2) => "direct",
            SoakWalIo::Alternate => "buffered",
        }
    }
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub kills: u32,
    pub sent: u64,
    pub durable_at_kills: u64,
    pub delivered_distinct: u64,
    pub duplicates: u64,
    pub missing: Vec<u64>,
    pub unknown: u64,
}

struct Running {
    child: Child,
    addr: SocketAddr,
}

fn start(args: &SoakArgs, config: &Path) -> Result<Running, String> {
    let mut child = Command::new(&args.sluice)
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", args.sluice.display()))?;
    let stderr = child.stderr.take().ok_or("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    // Every run's log, appended, for post-mortems: work_dir/sluice.log.
    let log_path = args.work_dir.join("sluice.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("open {}: {e}", log_path.display()))?;
    std::thread::spawn(move || {
        use std::io::Write;
        let _ = writeln!(log, "---- sluice started ----");
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(list) = line.split("tcp=tcp://").nth(1) {
                let _ = tx.send(list.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .map_err(|_| "sluice did not become ready".to_string())?;
    let addr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    Ok(Running { child, addr })
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on the PID of a child we started and have not reaped yet.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

const BATCH: u64 = 200;

/// Sends numbered events until `stop`, at about `rate` per second (0: unpaced); every event
/// gets a fresh number and is sent at most once.
fn load(addr: SocketAddr, next: Arc<AtomicU64>, stop: Arc<AtomicBool>, rate: u64) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let mut buf = Vec::with_capacity(64 << 10);
    let started = Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if rate > 0 {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        sent += BATCH;
        buf.clear();
        let first = next.fetch_add(BATCH, Ordering::Relaxed);
        for seq in first..first + BATCH {
            let line = format!("<134>1 2026-11-23T08:00:00Z soak app - - - seq={seq} payload");
            let _ = write!(buf, "{} {line}", line.len());
        }
        if stream.write_all(&buf).is_err() {
            return; // Sluice died: the rest of this batch was never acknowledged.
        }
    }
}

use crate::firehose::seq_in;

/// Sequence numbers of every complete record in the data directory's WALs.
fn wal_seqs(data_dir: &Path, into: &mut HashSet<u64>) -> Result<(), String> {
    for (_, dir) in storage::inspect::shard_dirs(data_dir).map_err(|e| e.to_string())? {
        storage::read_on_disk(&dir, None, |_, p| {
            if let Some(seq) = ingest::EventView::decode(p)
                .ok()
                .and_then(|v| seq_in(v.frame))
            {
                into.insert(seq);
            }
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn output_seqs(out_dir: &Path, report: &mut SoakReport) -> HashSet<u64> {
    let mut seen = HashSet::new();
    for entry in std::fs::read_dir(out_dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // The file sink's own state file.
        }
        let Ok(text) = std::fs::read(entry.path()) else {
            continue;
        };
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            // A line holding two events (half a line glued to the next) is damage, not one
            // event: it must never happen, so it is counted, not parsed.
            let events = line.windows(4).filter(|w| w == b"seq=").count();
            match seq_in(line).filter(|_| events == 1) {
                Some(seq) if !seen.insert(seq) => report.duplicates += 1,
                Some(_) => {}
                None => report.unknown += 1,
            }
        }
    }
    seen
}

/// Two shards, small segments (so they rotate and are recycled), WAL fsync every 5 ms, a
/// JSON file output that is fdatasync'd.
fn soak_config(
    data: &Path,
    out_dir: &Path,
    wal_io: &str,
    compression: &str,
    in_flight: usize,
) -> String {
    format!(
        "data_dir = \"{}\"\nshards = 2\nshutdown_timeout = \"600s\"\n[api]\naddress = \"off\"\n[wal]\nfsync = \"5ms\"\nsegment_size = \"1MiB\"\nbuffer_size = \"256KiB\"\nio = \"{wal_io}\"\ncommit_compression = \"{compression}\"\ncommits_in_flight = {in_flight}\n\
         [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.out]\ntype = \"file\"\npath = \"{}\"\nencoding = \"json\"\nrotate_size = \"64MiB\"\nkeep = 100000\n",
        data.display(),
        out_dir.join("events.ndjson").display()
    )
}

pub fn crash_soak(args: &SoakArgs) -> Result<SoakReport, String> {
    let data = args.work_dir.join("data");
    let out_dir = args.work_dir.join("out");
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir).map_err(|e| e.to_string())?;
    let config = args.work_dir.join("sluice.toml");
    fastrand::seed(args.seed);
    let next = Arc::new(AtomicU64::new(0));
    let mut durable = HashSet::new();
    let mut report = SoakReport::default();
    for i in 0..=args.iterations {
        let text = soak_config(
            &data,
            &out_dir,
            args.wal_io.for_run(i),
            args.commit_compression.for_run(i),
            in_flight_for_run(&args.commits_in_flight, i),
        );
        std::fs::write(&config, text).map_err(|e| e.to_string())?;
        let running = start(args, &config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..args.connections)
            .map(|_| {
                let (next, stop) = (Arc::clone(&next), Arc::clone(&stop));
                let rate = args.rate / args.connections.max(1) as u64;
                std::thread::spawn(move || load(running.addr, next, stop, rate))
            })
            .collect();
        let run_for = args.max_run.mul_f64(fastrand::f64().max(0.05));
        std::thread::sleep(run_for);
        let mut child = running.child;
        if i < args.iterations {
            signal(&child, libc::SIGKILL);
            let _ = child.wait();
            stop.store(true, Ordering::Relaxed);
            for l in loaders {
                let _ = l.join();
            }
            wal_seqs(&data, &mut durable)?;
            report.kills += 1;
        } else {
            // Last round: stop the load, then stop Sluice gracefully so it delivers all.
            stop.store(true, Ordering::Relaxed);
            for l in loaders {
                let _ = l.join();
            }
            let status = crate::compare::stop(&mut child, Duration::from_secs(120))?;
            if !status.success() {
                return Err(format!("final stop exited with {status}"));
            }
        }
    }
    report.sent = next.load(Ordering::Relaxed);
    report.durable_at_kills = durable.len() as u64;
    let delivered = output_seqs(&out_dir, &mut report);
    report.delivered_distinct = delivered.len() as u64;
    let mut missing: Vec<u64> = durable.difference(&delivered).copied().collect();
    missing.sort_unstable();
    report.missing = missing;
    Ok(report)
}
