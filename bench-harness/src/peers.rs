//! The systems under comparison: where their binaries are (installing them if needed) and the
//! configuration each variant runs with.
//!
//! rsyslogd comes from Debian's package (installed with apt-get if missing). syslog-ng is
//! unpacked privately with `apt-get download` + `dpkg-deb -x` (the two Debian packages
//! conflict) and run from that tree. Every server runs in the foreground with its own config,
//! pid file and ports: never a system syslog.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Sluice,
    Rsyslog,
    SyslogNg,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Sluice => "Sluice",
            System::Rsyslog => "rsyslog 8",
            System::SyslogNg => "syslog-ng 3",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            System::Sluice => "sluice",
            System::Rsyslog => "rsyslog",
            System::SyslogNg => "syslog-ng",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// TCP in → a file.
    File,
    /// TCP in → TCP out to a receiver the harness runs.
    Relay,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::File => "file",
            Scenario::Relay => "relay",
        }
    }
}

/// How far an accepted event is from surviving a crash of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Held in memory until delivered.
    Memory,
    /// Written to a disk buffer, never fsynced: survives a crash of the process only.
    DiskNoFsync,
    /// fsynced before it counts as kept: survives power loss.
    Fsync,
}

/// One configuration of one system in one scenario.
#[derive(Clone, Copy, Debug)]
pub struct Variant {
    pub system: System,
    pub scenario: Scenario,
    pub durability: Durability,
    /// What the system is set up to do (the table's "durable?" column).
    pub setup: &'static str,
    /// The run sends `count / count_divisor` events (for set-ups that do a few hundred
    /// events/s, where the full count would take hours).
    pub count_divisor: u64,
}

const fn variant(
    system: System,
    scenario: Scenario,
    durability: Durability,
    setup: &'static str,
    count_divisor: u64,
) -> Variant {
    Variant {
        system,
        scenario,
        durability,
        setup,
        count_divisor,
    }
}

use Durability::{DiskNoFsync, Fsync, Memory};
use Scenario::{File, Relay};
use System::{Rsyslog, Sluice, SyslogNg};

/// Every variant, in table order.
pub const VARIANTS: &[Variant] = &[
    variant(
        Sluice,
        File,
        Fsync,
        "yes: WAL fsync 2 ms, file fdatasync",
        1,
    ),
    variant(Sluice, File, DiskNoFsync, "no: WAL and file, no fsync", 1),
    variant(Rsyslog, File, Memory, "no: memory, omfile no fsync", 1),
    variant(Rsyslog, File, Fsync, "yes: omfile sync=on", 10),
    variant(SyslogNg, File, Memory, "no: memory", 1),
    variant(SyslogNg, File, Fsync, "yes: file(fsync(yes))", 10),
    variant(Sluice, Relay, Fsync, "yes: WAL fsync 2 ms", 1),
    variant(Sluice, Relay, DiskNoFsync, "no: WAL, no fsync", 1),
    variant(Rsyslog, Relay, Memory, "no: memory queue", 1),
    variant(
        Rsyslog,
        Relay,
        DiskNoFsync,
        "no: disk-assisted queue, no fsync",
        1,
    ),
    variant(
        Rsyslog,
        Relay,
        Fsync,
        "yes: disk queue, syncQueueFiles",
        200,
    ),
    variant(SyslogNg, Relay, Memory, "no: memory", 1),
    variant(
        SyslogNg,
        Relay,
        DiskNoFsync,
        "no: disk-buffer(reliable(yes)), no fsync",
        1,
    ),
];

/// Where one server runs and sends its output.
pub struct ServerPlace<'a> {
    pub dir: &'a Path,
    pub port: u16,
    pub out_file: &'a Path,
    /// The relay scenario's receiver.
    pub relay_port: Option<u16>,
    /// Sluice's admin API (for its own counters and histograms).
    pub api: SocketAddr,
}

/// The config text and the command that runs the variant with it (config file:
/// `place.dir/config`).
pub fn server_command(
    v: &Variant,
    place: &ServerPlace,
    sluice: &Path,
    peers_dir: &Path,
) -> Result<(String, Command), String> {
    let config = place.dir.join("config");
    let text = match v.system {
        System::Sluice => sluice_config(v, place),
        System::Rsyslog => rsyslog_config(v, place),
        System::SyslogNg => syslog_ng_config(v, place),
    };
    Ok((
        text,
        launch(v.system, &config, place.dir, sluice, peers_dir)?,
    ))
}

/// The command that runs `system` in the foreground with the config file `config`; its pid,
/// state and control files go into `dir`.
pub fn launch(
    system: System,
    config: &Path,
    dir: &Path,
    sluice: &Path,
    peers_dir: &Path,
) -> Result<Command, String> {
    match system {
        System::Sluice => {
            let mut c = Command::new(sluice);
            c.args(["run", "--config"]).arg(config);
            Ok(c)
        }
        System::Rsyslog => {
            let mut c = Command::new(locate_rsyslogd()?);
            c.args(["-n", "-f"])
                .arg(config)
                .arg("-i")
                .arg(dir.join("rsyslog.pid"));
            Ok(c)
        }
        System::SyslogNg => {
            let root = locate_syslog_ng(peers_dir)?;
            let lib = root.join("usr/lib/syslog-ng");
            let mut c = Command::new(root.join("usr/sbin/syslog-ng"));
            c.args(["-F", "-f"])
                .arg(config)
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
            Ok(c)
        }
    }
}

fn sluice_config(v: &Variant, place: &ServerPlace) -> String {
    let fsync = v.durability == Fsync;
    let sink = match place.relay_port {
        None => format!(
            "[sinks.file]\ntype = \"file\"\npath = \"{}\"\nencoding = \"raw\"\nrotate_size = \"100GB\"\nfsync = \"{}\"\n",
            place.out_file.display(),
            if fsync { "always" } else { "never" }
        ),
        Some(p) => format!(
            "[sinks.relay]\ntype = \"tcp\"\naddress = \"127.0.0.1:{p}\"\nframing = \"newline\"\nencoding = \"raw\"\n"
        ),
    };
    format!(
        "data_dir = \"{data}\"\nstatus_interval = \"0s\"\n[api]\naddress = \"{api}\"\n\
         [wal]\nfsync = \"{wal_fsync}\"\n\
         [sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n{sink}",
        data = place.dir.join("data").display(),
        api = place.api,
        wal_fsync = if fsync { "2ms" } else { "never" },
        port = place.port,
    )
}

fn rsyslog_config(v: &Variant, place: &ServerPlace) -> String {
    let out = place.out_file.display();
    let action = match (v.scenario, v.durability, place.relay_port) {
        (File, Fsync, _) => format!(
            "action(type=\"omfile\" file=\"{out}\" template=\"raw\" ioBufferSize=\"1m\" flushOnTXEnd=\"on\" sync=\"on\")"
        ),
        (File, _, _) => format!(
            "action(type=\"omfile\" file=\"{out}\" template=\"raw\" ioBufferSize=\"1m\" flushOnTXEnd=\"on\")"
        ),
        (Relay, durability, p) => {
            let queue = match durability {
                Memory => "queue.type=\"LinkedList\"",
                DiskNoFsync => "queue.type=\"LinkedList\" queue.filename=\"fwdq\" queue.maxDiskSpace=\"4g\" queue.saveOnShutdown=\"on\"",
                Fsync => "queue.type=\"Disk\" queue.filename=\"fwdq\" queue.maxDiskSpace=\"4g\" queue.syncQueueFiles=\"on\"",
            };
            format!(
                "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{}\" protocol=\"tcp\" template=\"raw\" {queue})",
                p.unwrap_or(0)
            )
        }
    };
    // rsyslog at its best here. Swept on this machine (2026-12-03, quiet; 4M 200-byte RFC 5424
    // lines over 4 connections, newline framing as the harness sends; two rounds each; rate =
    // first send to the output's last growth). Into omfile without fsync: imtcp + tuned main
    // queue + omfile asyncWriting="on" flushOnTXEnd="off" (the harness's choice before)
    // 0.81–0.84M/s, its last lines waiting up to a second for the async writer's timed flush
    // (flushInterval, 1 s; the earlier sweep counted that tail as throughput; imptcp with it
    // 0.86–0.87M/s); omfile writing at each batch's end (flushOnTXEnd="on", no async writer):
    // imtcp 1.08–1.10M/s (tuned queue), 1.12–1.15M/s (default queue); imptcp 1.17M/s (tuned),
    // **1.20–1.22M/s (default queue)**. Into omfwd (memory action queue; a Python receiver):
    // imtcp 0.73M/s (tuned main queue), 0.69–0.71M/s (default); imptcp **0.74–0.77M/s
    // (tuned)**, 0.65M/s (default). Octet-counted framing, which the harness does not send to
    // anyone, made rsyslog faster still (imptcp into omfile 1.44–1.54M/s). omfile sync="on"
    // (400K lines): tuned main queue 0.78–0.81M/s (imtcp or imptcp), default queue
    // 0.41–0.47M/s. Kept: imptcp; the main queue tuned (documented performance settings:
    // queue.size, queue.dequeueBatchSize, queue.workerThreads) except into a file without
    // fsync, where the default queue was the faster.
    let main_queue = match (v.scenario, v.durability) {
        (File, Memory) => "",
        _ => "main_queue(queue.size=\"200000\" queue.dequeueBatchSize=\"1024\" queue.workerThreads=\"2\")\n",
    };
    format!(
        "global(workDirectory=\"{dir}\")\n{main_queue}\
         module(load=\"imptcp\")\n\
         input(type=\"imptcp\" port=\"{port}\" address=\"127.0.0.1\")\n\
         template(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\n{action}\n",
        dir = place.dir.display(),
        port = place.port,
    )
}

fn syslog_ng_config(v: &Variant, place: &ServerPlace) -> String {
    let destination = match (v.scenario, v.durability, place.relay_port) {
        (File, durability, _) => format!(
            "file(\"{}\" template(\"${{MSG}}\\n\"){});",
            place.out_file.display(),
            if durability == Fsync {
                " fsync(yes)"
            } else {
                ""
            }
        ),
        (Relay, durability, p) => format!(
            "network(\"127.0.0.1\" port({}) transport(\"tcp\") template(\"${{MSG}}\\n\"){});",
            p.unwrap_or(0),
            if durability == Memory {
                String::new()
            } else {
                format!(
                    " disk-buffer(reliable(yes) disk-buf-size(4294967296) dir(\"{}\"))",
                    place.dir.display()
                )
            }
        ),
    };
    // flow-control: an operator who wants no loss sets it (without it a full destination
    // queue drops messages).
    format!(
        "@version: 3.38\noptions {{ flush_lines(1000); stats_freq(0); }};\n\
         source s {{ network(ip(\"127.0.0.1\") port({port}) transport(\"tcp\") flags(no-parse) max-connections(64) log_iw_size(100000) log_fetch_limit(1000)); }};\n\
         destination d {{ {destination} }};\n\
         log {{ source(s); destination(d); flags(flow-control); }};\n",
        port = place.port,
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn place(dir: &Path, relay: Option<u16>) -> ServerPlace<'_> {
        ServerPlace {
            dir,
            port: 5514,
            out_file: Path::new("/tmp/out.log"),
            relay_port: relay,
            api: ([127, 0, 0, 1], 9514).into(),
        }
    }

    #[test]
    fn durable_variants_ask_for_fsync_and_the_others_do_not() {
        let dir = Path::new("/tmp/x");
        for v in VARIANTS {
            let relay = (v.scenario == Relay).then_some(6000);
            let text = match v.system {
                Sluice => sluice_config(v, &place(dir, relay)),
                Rsyslog => rsyslog_config(v, &place(dir, relay)),
                SyslogNg => syslog_ng_config(v, &place(dir, relay)),
            };
            let asks_fsync = text.contains("fsync = \"2ms\"")
                || text.contains("sync=\"on\"")
                || text.contains("syncQueueFiles=\"on\"")
                || text.contains("fsync(yes)");
            assert_eq!(asks_fsync, v.durability == Fsync, "{v:?}:\n{text}");
            assert_eq!(v.setup.starts_with("yes"), v.durability == Fsync, "{v:?}");
            if v.scenario == Relay {
                assert!(
                    text.contains("6000"),
                    "{v:?} sends to the receiver:\n{text}"
                );
            }
        }
    }

    #[test]
    fn every_system_has_a_durable_and_a_non_durable_variant_per_scenario() {
        for system in [Sluice, Rsyslog, SyslogNg] {
            for scenario in [File, Relay] {
                let of = |d: fn(&Durability) -> bool| {
                    VARIANTS
                        .iter()
                        .any(|v| v.system == system && v.scenario == scenario && d(&v.durability))
                };
                assert!(of(|d| *d != Fsync), "{system:?} {scenario:?}");
                // syslog-ng's disk-buffer cannot fsync: its relay has no durable variant.
                if !(system == SyslogNg && scenario == Relay) {
                    assert!(of(|d| *d == Fsync), "{system:?} {scenario:?}");
                }
            }
        }
    }
}
