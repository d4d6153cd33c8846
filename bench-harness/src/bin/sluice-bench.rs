//! `sluice-bench load`: a cheap syslog firehose for measuring Sluice (and its peers).
//!
//! Messages are pre-generated once per connection; per message only the zero-padded sequence
//! number is patched in place, and the buffer goes out in large writes, so the generator costs
//! far less CPU than the server it measures (it reports its own CPU time to show it).
//! Every message carries `seq=<n>` (unique across connections) for loss/duplicate checks.
//! With `--until-lines FILE` it also waits until FILE holds every event and reports the
//! end-to-end rate (first byte sent → last event in the output).

use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bench_harness::firehose;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "sluice-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send syslog over TCP as fast as the receiver takes it.
    Load(LoadArgs),
    /// kill -9 Sluice at random moments under load, N times, then check nothing durable was lost.
    CrashSoak(SoakCli),
    /// What the disk under a directory does: synced sequential bandwidth and fdatasync latency.
    Disk(DiskCli),
    /// Sluice next to rsyslog and syslog-ng: same load, one after another; writes a table.
    Compare(CompareCli),
    /// Sluice's syslog parser next to rsyslog's and syslog-ng's on a corpus, field by field.
    ParseDiff(ParseDiffCli),
    /// The plain path next to a typical processing chain (filter + every built-in redaction +
    /// JSON parse): events/s, CPU ns/event and the chain's share of the plain path's throughput.
    Processing(ProcessingCli),
    /// The HTTP and Elasticsearch outputs' delivery rate next to the file sink, and ingest
    /// while an output is down.
    Outputs(OutputsCli),
    /// TLS syslog and HTTP ingest next to plain TCP; RELP from rsyslog's omrelp into Sluice
    /// next to rsyslog → rsyslog RELP.
    Inputs(InputsCli),
    /// Sluice's ingest → durable latency against offered load (a table and a plot).
    Latency(LatencyCli),
}

#[derive(clap::Args)]
struct LatencyCli {
    #[arg(long, default_value = "target/release/sluice")]
    sluice: std::path::PathBuf,
    /// Offered loads, events/s.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "250000,500000,750000,1000000,1250000,1500000,1750000,2000000"
    )]
    rates: Vec<u64>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 200)]
    size: usize,
    #[arg(long, default_value = "/tmp/sluice-latency")]
    work_dir: std::path::PathBuf,
    /// `[wal] fsync` of the runs.
    #[arg(long, default_value = "2ms")]
    wal_fsync: String,
    /// `[wal] io` of the runs: buffered or direct.
    #[arg(long, default_value = "buffered")]
    wal_io: String,
    /// `[wal] commits_in_flight` of the runs (1: each commit waits for the previous fdatasync).
    #[arg(long, default_value_t = 1)]
    commits_in_flight: usize,
    /// `[wal] commit_compression` of the runs: none or zstd.
    #[arg(long, default_value = "none")]
    commit_compression: String,
    /// The lines sent (`rfc5424-varied`: free text that compresses like real logs).
    #[arg(long, value_enum, default_value = "rfc5424")]
    format: Format,
    /// Replace the table between `<!-- latency:start -->` and `<!-- latency:end -->` in this
    /// file, and write the plot beside it (`benchmarks-latency-curve.png`).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

const LATENCY_START: &str = "<!-- latency:start -->";
const LATENCY_END: &str = "<!-- latency:end -->";

fn latency(cli: LatencyCli) -> Result<(), String> {
    use bench_harness::latency;
    let args = latency::LatencyArgs {
        sluice: cli.sluice,
        rates: cli.rates,
        seconds: cli.seconds,
        connections: cli.connections,
        size: cli.size,
        work_dir: cli.work_dir,
        wal_fsync: cli.wal_fsync,
        wal_io: cli.wal_io,
        commits_in_flight: cli.commits_in_flight,
        commit_compression: cli.commit_compression,
        format: cli.format.into(),
    };
    let curve = latency::run(&args)?;
    let table = latency::table(&curve, &args);
    let points = curve.points;
    print!("{table}");
    if let Some(path) = cli.write {
        let png = path.with_file_name("benchmarks-latency-curve.png");
        bench_harness::plots::latency_curve_png(&points, &png)?;
        let table = format!(
            "{table}
![ingest → durable against offered load](benchmarks-latency-curve.png)
"
        );
        write_between(&path, &table, LATENCY_START, LATENCY_END)?;
    }
    Ok(())
}

#[derive(clap::Args)]
struct InputsCli {
    #[arg(long, default_value = "target/release/sluice")]
    sluice: std::path::PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Events for the RELP set-ups (relayed by rsyslog).
    #[arg(long, default_value_t = 300_000)]
    relp_count: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 250)]
    size: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "/tmp/sluice-inputs")]
    work_dir: std::path::PathBuf,
    /// Where Debian's rsyslog-relp and librelp0 are unpacked.
    #[arg(long, default_value = "/tmp/sluice-peers/relp")]
    relp_root: std::path::PathBuf,
    /// Also write the table into this markdown file (between its inputs markers).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct OutputsCli {
    #[arg(long, default_value = "target/release/sluice")]
    sluice: std::path::PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Events for the Elasticsearch set-up (osmem-server holds them in memory).
    #[arg(long, default_value_t = 200_000)]
    es_count: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 250)]
    size: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "/tmp/sluice-outputs")]
    work_dir: std::path::PathBuf,
    /// Also write the table into this markdown file (between its outputs markers).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct ProcessingCli {
    #[arg(long, default_value = "target/release/sluice")]
    sluice: std::path::PathBuf,
    #[arg(long, default_value_t = 2_000_000)]
    count: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 250)]
    size: usize,
    /// Rounds of the three set-ups (the table gives medians).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = "/tmp/sluice-processing")]
    work_dir: std::path::PathBuf,
    /// Also write the table into this markdown file (between its processing markers).
    #[arg(long)]
    write: Option<std::path::PathBuf>,
    /// Another sluice binary (a build before a change): its plain path runs in the same rounds.
    #[arg(long)]
    baseline: Option<std::path::PathBuf>,
}

#[derive(clap::Args)]
struct ParseDiffCli {
    /// Corpus files (format: bench-harness/corpus/README.md).
    #[arg(long, default_values = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/upstream.txt"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/collected.txt"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/devices.txt"),
    ])]
    corpus: Vec<PathBuf>,
    #[arg(long, default_value = "target/release/sluice")]
    sluice: PathBuf,
    #[arg(long, default_value = "/tmp/sluice-parse-diff")]
    work_dir: PathBuf,
    #[arg(long, default_value = "/tmp/sluice-peers")]
    peers_dir: PathBuf,
    /// Fail when Sluice differs from the agreeing peers on more than this share of lines.
    #[arg(long, default_value_t = 1.0)]
    max_differ_percent: f64,
    /// Also write the report to this file.
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CompareCli {
    #[arg(long, default_value = "target/release/sluice")]
    sluice: PathBuf,
    /// Events per full-speed run (set-ups that do a few hundred events/s send fewer; the
    /// table shows each run's count).
    #[arg(long, default_value_t = 2_000_000)]
    count: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 200)]
    size: usize,
    #[arg(long, value_enum, default_value = "rfc5424")]
    format: Format,
    /// Scratch directory (emptied first).
    #[arg(long, default_value = "/tmp/sluice-compare")]
    work_dir: PathBuf,
    /// Where syslog-ng is unpacked (downloaded with apt-get the first time).
    #[arg(long, default_value = "/tmp/sluice-peers")]
    peers_dir: PathBuf,
    /// Also write the tables into this markdown file (between its markers), and the plots
    /// (`benchmarks-throughput.png`, `benchmarks-latency.png`) next to it.
    #[arg(long)]
    write: Option<PathBuf>,
    /// Offered load of the peers' latency runs (relay scenario), events/s.
    #[arg(long, default_value_t = 100_000)]
    latency_rate: u64,
    /// Offered load of Sluice's latency runs, events/s.
    #[arg(long, default_value_t = 1_000_000)]
    sluice_latency_rate: u64,
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Same-run rounds of the throughput runs (the table shows medians); 0: the latency runs
    /// alone.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only these systems (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sluice,rsyslog,syslog-ng"
    )]
    systems: Vec<SystemName>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SystemName {
    Sluice,
    Rsyslog,
    SyslogNg,
}

const TABLE_START: &str = "<!-- compare:start -->";
const TABLE_END: &str = "<!-- compare:end -->";
const PROCESSING_START: &str = "<!-- processing:start -->";
const PROCESSING_END: &str = "<!-- processing:end -->";

fn processing(cli: ProcessingCli) -> Result<(), String> {
    use bench_harness::processing;
    let args = processing::ProcessingArgs {
        sluice: cli.sluice,
        count: cli.count,
        connections: cli.connections,
        size: cli.size,
        rounds: cli.rounds,
        work_dir: cli.work_dir,
        baseline: cli.baseline,
    };
    let runs = processing::run(&args)?;
    let table = processing::table(&runs, &args);
    print!("{table}");
    if let Some(path) = cli.write {
        write_between(&path, &table, PROCESSING_START, PROCESSING_END)?;
    }
    Ok(())
}

const INPUTS_START: &str = "<!-- inputs:start -->";
const INPUTS_END: &str = "<!-- inputs:end -->";

fn inputs(cli: InputsCli) -> Result<(), String> {
    use bench_harness::inputs;
    let args = inputs::InputsArgs {
        sluice: cli.sluice,
        count: cli.count,
        relp_count: cli.relp_count,
        connections: cli.connections,
        size: cli.size,
        rounds: cli.rounds,
        work_dir: cli.work_dir,
        relp_root: cli.relp_root,
    };
    let runs = inputs::run(&args)?;
    let table = inputs::table(&runs, &args);
    print!("{table}");
    if let Some(path) = cli.write {
        write_between(&path, &table, INPUTS_START, INPUTS_END)?;
    }
    Ok(())
}

const OUTPUTS_START: &str = "<!-- outputs:start -->";
const OUTPUTS_END: &str = "<!-- outputs:end -->";

fn outputs(cli: OutputsCli) -> Result<(), String> {
    use bench_harness::outputs;
    let args = outputs::OutputsArgs {
        sluice: cli.sluice,
        count: cli.count,
        es_count: cli.es_count,
        connections: cli.connections,
        size: cli.size,
        rounds: cli.rounds,
        work_dir: cli.work_dir,
    };
    let runs = outputs::run(&args)?;
    let table = outputs::table(&runs, &args);
    print!("{table}");
    if let Some(path) = cli.write {
        write_between(&path, &table, OUTPUTS_START, OUTPUTS_END)?;
    }
    Ok(())
}

fn compare(cli: CompareCli) -> Result<(), String> {
    let comparison = bench_harness::compare::compare(&bench_harness::compare::CompareArgs {
        sluice: cli.sluice,
        work_dir: cli.work_dir,
        count: cli.count,
        connections: cli.connections,
        size: cli.size,
        format: cli.format.into(),
        peers_dir: cli.peers_dir,
        latency_rate: cli.latency_rate,
        sluice_latency_rate: cli.sluice_latency_rate,
        latency_seconds: cli.latency_seconds,
        rounds: cli.rounds,
        systems: cli
            .systems
            .iter()
            .map(|s| match s {
                SystemName::Sluice => bench_harness::peers::System::Sluice,
                SystemName::Rsyslog => bench_harness::peers::System::Rsyslog,
                SystemName::SyslogNg => bench_harness::peers::System::SyslogNg,
            })
            .collect(),
    })?;
    let rows = comparison.rows;
    let table = bench_harness::compare::table(&rows, cli.size, &comparison.disk);
    print!("{table}");
    if let Some(path) = cli.write {
        write_between(&path, &table, TABLE_START, TABLE_END)?;
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        let medians = bench_harness::compare::median_rows(&rows);
        bench_harness::plots::throughput_png(&medians, &dir.join("benchmarks-throughput.png"))?;
        bench_harness::plots::latency_png(&rows, &dir.join("benchmarks-latency.png"))?;
    }
    if rows.iter().any(|r| r.missing > 0) {
        return Err("a system lost events: see the missing column".into());
    }
    Ok(())
}

fn write_between(
    path: &std::path::Path,
    table: &str,
    start: &str,
    end: &str,
) -> Result<(), String> {
    let doc = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (Some(a), Some(b)) = (doc.find(start), doc.find(end)) else {
        return Err(format!("{}: no {start} … {end} markers", path.display()));
    };
    let updated = format!("{}{start}\n{table}{}", &doc[..a], &doc[b..]);
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}

#[derive(clap::Args)]
struct DiskCli {
    /// A directory on the file system to measure (e.g. the data_dir's parent).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Seconds per measurement (two measurements).
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Bytes per write in the bandwidth measurement (each followed by fdatasync).
    #[arg(long, default_value = "1MiB")]
    write_size: bytesize::ByteSize,
}

fn disk(cli: DiskCli) -> Result<(), String> {
    let p = tuning::disk::probe(
        &cli.dir,
        std::time::Duration::from_secs(cli.seconds),
        cli.write_size.as_u64() as usize,
    )
    .map_err(|e| format!("{}: {e}", cli.dir.display()))?;
    println!(
        "{}: {}-byte writes + fdatasync: {:.0} MiB/s ({:.0} fdatasyncs/s); 4KiB write + fdatasync: p50 {} us, p99 {} us ({:.0}/s)",
        cli.dir.display(),
        cli.write_size.as_u64(),
        p.synced_bytes_per_sec / (1 << 20) as f64,
        p.synced_writes_per_sec,
        p.small_sync_p50_us,
        p.small_sync_p99_us,
        p.small_syncs_per_sec
    );
    Ok(())
}

#[derive(clap::Args)]
struct SoakCli {
    /// The sluice binary to run.
    #[arg(long, default_value = "target/release/sluice")]
    sluice: PathBuf,
    #[arg(long, default_value_t = 100)]
    iterations: u32,
    /// Scratch directory (emptied first).
    #[arg(long, default_value = "/tmp/sluice-crash-soak")]
    work_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Longest run between two kills, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    max_run_ms: u64,
    /// Offered load in events per second over all connections (0: as fast as accepted).
    #[arg(long, default_value_t = 200_000)]
    rate: u64,
    /// `[wal] io` of the runs: direct, buffered, or alternate (direct and buffered in turn).
    #[arg(long, value_enum, default_value_t = bench_harness::soak::SoakWalIo::Alternate)]
    wal_io: bench_harness::soak::SoakWalIo,
    /// `[wal] commit_compression` of the runs: none, zstd, or alternate (two runs each in turn).
    #[arg(long, value_enum, default_value_t = bench_harness::soak::SoakCompression::Alternate)]
    commit_compression: bench_harness::soak::SoakCompression,
    /// `[wal] commits_in_flight` of the runs, in turn (four runs each, so every pairing with
    /// the alternating io and compression comes up).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    commits_in_flight: Vec<usize>,
}

fn crash_soak(cli: SoakCli) -> Result<(), String> {
    let args = bench_harness::soak::SoakArgs {
        sluice: cli.sluice,
        iterations: cli.iterations,
        work_dir: cli.work_dir,
        seed: cli.seed,
        connections: cli.connections,
        max_run: Duration::from_millis(cli.max_run_ms),
        rate: cli.rate,
        wal_io: cli.wal_io,
        commit_compression: cli.commit_compression,
        commits_in_flight: cli.commits_in_flight,
    };
    let started = Instant::now();
    let r = bench_harness::soak::crash_soak(&args)?;
    println!(
        "crash soak: {} kills in {:.0}s; {} events sent, {} in the WAL at kill times, {} delivered (distinct), {} duplicates, {} missing, {} unrecognised lines",
        r.kills,
        started.elapsed().as_secs_f64(),
        r.sent,
        r.durable_at_kills,
        r.delivered_distinct,
        r.duplicates,
        r.missing.len(),
        r.unknown
    );
    if !r.missing.is_empty() || r.unknown > 0 {
        let shown: Vec<_> = r.missing.iter().take(20).collect();
        return Err(format!("durable events missing from the output: {shown:?}"));
    }
    if r.durable_at_kills == 0 {
        return Err("no event was ever durable: the soak tested nothing".into());
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
enum Framing {
    OctetCounting,
    Newline,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Rfc5424,
    Rfc3164,
    JsonLines,
    /// RFC 5424 at severity warning with a JSON object as the message.
    Rfc5424JsonBody,
    /// RFC 5424 whose free text varies per message (words, ids, addresses, timings drawn at
    /// random): compresses like real logs, not like one repeated line.
    Rfc5424Varied,
}

impl From<Format> for firehose::Format {
    fn from(f: Format) -> Self {
        match f {
            Format::Rfc5424 => firehose::Format::Rfc5424,
            Format::Rfc3164 => firehose::Format::Rfc3164,
            Format::JsonLines => firehose::Format::JsonLines,
            Format::Rfc5424JsonBody => firehose::Format::Rfc5424JsonBody,
            Format::Rfc5424Varied => firehose::Format::Rfc5424Varied,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Transport {
    Tcp,
    Udp,
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Where to send: loopback unless you give another address.
    #[arg(long, default_value = "127.0.0.1:5514")]
    address: SocketAddr,
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// TCP connections (UDP: sending sockets), one thread each.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Events in total (split evenly over the connections).
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Stop after this long even if not all events went out (e.g. "30s").
    #[arg(long)]
    duration: Option<humantime::Duration>,
    /// Bytes per message (the syslog line, without framing).
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// A size distribution instead: uniform between MIN and MAX bytes ("100-2000").
    #[arg(long, value_parser = parse_size_range)]
    size_range: Option<(usize, usize)>,
    #[arg(long, value_enum, default_value = "octet-counting")]
    framing: Framing,
    #[arg(long, value_enum, default_value = "rfc5424")]
    format: Format,
    /// Wait until this file has the sent events as more lines than at the start, and report
    /// that rate.
    #[arg(long)]
    until_lines: Option<PathBuf>,
    /// Give up waiting for the output after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Offered load in events/s over all connections (default: as fast as accepted).
    #[arg(long)]
    rate: Option<u64>,
}

fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    let (min, max) = s
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    let (min, max) = (parse(min)?, parse(max)?);
    if min > max || max > 64 * 1024 {
        return Err(format!("need MIN <= MAX <= 65536, got {min}-{max}"));
    }
    Ok((min, max))
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn count_lines_from(file: &mut std::fs::File, offset: &mut u64, buf: &mut [u8]) -> u64 {
    let mut lines = 0;
    if file.seek(SeekFrom::Start(*offset)).is_err() {
        return 0;
    }
    while let Ok(n) = file.read(buf) {
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        *offset += n as u64;
    }
    lines
}

fn load(args: LoadArgs) -> Result<(), String> {
    let mut output = match &args.until_lines {
        Some(path) => {
            let mut file =
                std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
            let mut offset = 0;
            count_lines_from(&mut file, &mut offset, &mut vec![0; 1 << 20]);
            Some((file, offset))
        }
        None => None,
    };
    let firehose = firehose::Firehose {
        address: args.address,
        transport: match args.transport {
            Transport::Tcp => firehose::Transport::Tcp,
            Transport::Udp => firehose::Transport::Udp,
        },
        connections: args.connections,
        count: args.count,
        size: args.size,
        sizes: args
            .size_range
            .map(|(min, max)| firehose::Sizes::Uniform { min, max }),
        framing: match args.framing {
            Framing::OctetCounting => firehose::Framing::OctetCounting,
            Framing::Newline => firehose::Framing::Newline,
        },
        format: args.format.into(),
        rate: args.rate,
        duration: args.duration.map(Into::into),
    };
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let sent = firehose::run(&firehose)?;
    let total = sent.sent;
    let send_secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    println!(
        "sent {total} events ({} bytes, {:.0} bytes/event framed) over {} connections in {send_secs:.3}s: {:.0} events/s, {:.1} MB/s; loader CPU {cpu:.2}s ({:.0}% of one core)",
        sent.bytes,
        sent.bytes as f64 / total.max(1) as f64,
        args.connections,
        total as f64 / send_secs,
        sent.bytes as f64 / send_secs / 1e6,
        100.0 * cpu / send_secs
    );
    if let Some((file, offset)) = output.as_mut() {
        let deadline = started + Duration::from_secs(args.timeout_secs);
        let mut seen = 0;
        let mut buf = vec![0; 1 << 20];
        while seen < total {
            seen += count_lines_from(file, offset, &mut buf);
            if Instant::now() > deadline {
                return Err(format!(
                    "output has {seen} of {total} events after {}s",
                    args.timeout_secs
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "output has all {total} events after {secs:.3}s: {:.0} events/s end to end",
            total as f64 / secs
        );
    }
    Ok(())
}

fn parse_diff(args: ParseDiffCli) -> Result<(), String> {
    use bench_harness::parsediff;
    let diff = parsediff::DiffArgs {
        corpus: args.corpus,
        sluice: args.sluice,
        work_dir: args.work_dir,
        peers_dir: args.peers_dir,
        timeout: Duration::from_secs(60),
    };
    let (entries, readings) = parsediff::run(&diff)?;
    let report = parsediff::report::compare(&readings);
    let text = parsediff::report::render(&report, &entries);
    print!("{text}");
    if let Some(path) = args.write {
        std::fs::write(&path, &text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    if report.differ_percent() > args.max_differ_percent {
        return Err(format!(
            "Sluice differs from the agreeing peers on {:.2}% of the lines (limit {}%)",
            report.differ_percent(),
            args.max_differ_percent
        ));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => load(args),
        Command::CrashSoak(args) => crash_soak(args),
        Command::Disk(args) => disk(args),
        Command::Compare(args) => compare(args),
        Command::ParseDiff(args) => parse_diff(args),
        Command::Processing(args) => processing(args),
        Command::Outputs(args) => outputs(args),
        Command::Inputs(args) => inputs(args),
        Command::Latency(args) => latency(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
