//! `sluice-bench compare`: Sluice, rsyslog and syslog-ng, one after another, same load, same
//! machine, same run; a markdown table with ratios to Sluice.
//!
//! Scenario `file`: TCP in (newline framing, N connections, fixed-size lines with `seq=`) →
//! a file. The rate is end to end: first byte sent → last line in the output file. Sluice
//! runs durable (WAL group commit every 5 ms, the file sink fdatasyncs before confirming);
//! the peers as packaged, which never fsync. After every run the output is checked for
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
}

#[derive(Debug, Clone)]
pub struct Row {
    pub system: String,
    pub scenario: &'static str,
    pub durable: &'static str,
    pub events_per_sec: f64,
    pub cpu_percent: f64,
    pub peak_rss_mib: f64,
    pub missing: u64,
    pub duplicates: u64,
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
            System::Rsyslog => "rsyslog 8 (imptcp → omfile)",
            System::SyslogNg => "syslog-ng 3 (network() → file())",
        }
    }
}

/// Runs every system; returns the rows (Sluice first).
pub fn compare(args: &CompareArgs) -> Result<Vec<Row>, String> {
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for system in [System::Sluice, System::Rsyslog, System::SyslogNg] {
        match run_one(system, args) {
            Ok(row) => rows.push(row),
            Err(e) => eprintln!("{}: skipped: {e}", system.name()),
        }
    }
    Ok(rows)
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn run_one(system: System, args: &CompareArgs) -> Result<Row, String> {
    let dir = args.work_dir.join(match system {
        System::Sluice => "sluice",
        System::Rsyslog => "rsyslog",
        System::SyslogNg => "syslog-ng",
    });
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let out = dir.join("out.log");
    let mut child = start(system, args, &dir, port, &out)?;
    let address: SocketAddr = ([127, 0, 0, 1], port).into();
    let result = measure(system, args, &mut child, address, &out);
    stop(&mut child);
    result
}

fn start(
    system: System,
    args: &CompareArgs,
    dir: &Path,
    port: u16,
    out: &Path,
) -> Result<Child, String> {
    let config = dir.join("config");
    let (text, mut command) = match system {
        System::Sluice => (
            format!(
                "data_dir = \"{data}\"\nstatus_interval = \"0s\"\n[api]\naddress = \"off\"\n[wal]\nfsync = \"5ms\"\n\
                 [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\
                 [sinks.file]\ntype = \"file\"\npath = \"{out}\"\nencoding = \"raw\"\nrotate_size = \"100GB\"\n",
                data = dir.join("data").display(),
                out = out.display()
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
                 template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
                 action(type=\"omfile\" file=\"{out}\" template=\"raw\" asyncWriting=\"on\" ioBufferSize=\"1m\" flushOnTXEnd=\"off\")\n",
                dir = dir.display(),
                out = out.display()
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
                 destination d {{ file(\"{out}\" template(\"${{MSG}}\\n\")); }};\n\
                 log {{ source(s); destination(d); }};\n",
                out = out.display()
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
    out: &Path,
) -> Result<Row, String> {
    let pid = child.id();
    let firehose = Firehose {
        address,
        connections: args.connections,
        count: args.count,
        size: args.size,
        framing: Framing::Newline,
        format: Format::Rfc5424,
    };
    let cpu_before = process_cpu_seconds(pid);
    let started = Instant::now();
    let total = firehose::run(&firehose)?;
    wait_for_lines(out, total, started + Duration::from_secs(300))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds(pid) - cpu_before;
    let (missing, duplicates) = check_output(out, total)?;
    Ok(Row {
        system: system.name().to_string(),
        scenario: "file",
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

/// Missing and duplicated sequence numbers in the output.
fn check_output(out: &Path, total: u64) -> Result<(u64, u64), String> {
    let text = std::fs::read(out).map_err(|e| format!("read {}: {e}", out.display()))?;
    let mut seen = HashSet::with_capacity(total as usize);
    let mut duplicates = 0;
    for line in text.split(|&b| b == b'\n') {
        if let Some(seq) = firehose::seq_in(line) {
            if !seen.insert(seq) {
                duplicates += 1;
            }
        }
    }
    let missing = (0..total).filter(|s| !seen.contains(s)).count() as u64;
    Ok((missing, duplicates))
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
        "| system | scenario | durable? | events/s | Sluice ÷ this | CPU % | peak RSS MiB | missing | duplicates |\n|---|---|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ratio = if r.events_per_sec > 0.0 {
            sluice / r.events_per_sec
        } else {
            0.0
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} |",
            r.system,
            r.scenario,
            r.durable,
            r.events_per_sec,
            ratio,
            r.cpu_percent,
            r.peak_rss_mib,
            r.missing,
            r.duplicates
        );
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
            durable: "no",
            events_per_sec: eps,
            cpu_percent: 100.0,
            peak_rss_mib: 10.0,
            missing,
            duplicates: 0,
        }
    }

    #[test]
    fn table_gives_ratios_to_sluice() {
        let t = table(&[row("Sluice", 1000.0, 0), row("peer", 250.0, 3)]);
        assert!(t.contains("| Sluice | file | no | 1000 | 1.00 |"), "{t}");
        assert!(
            t.contains("| peer | file | no | 250 | 4.00 | 100 | 10 | 3 | 0 |"),
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
