//! The `sluice tune` report: one line per item with a verdict, then a recommended `[wal]` and
//! shard setting, then the sysctl lines that would lift what is below par.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::host;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but below what a busy aggregator wants.
    Warn,
    /// Sluice will not start or will lose performance badly.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub name: &'static str,
    pub value: String,
    pub verdict: Verdict,
    pub advice: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub items: Vec<Item>,
    pub recommended_config: String,
    pub sysctls: Vec<String>,
}

impl Report {
    pub fn worst(&self) -> Verdict {
        if self.items.iter().any(|i| i.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if self.items.iter().any(|i| i.verdict == Verdict::Warn) {
            Verdict::Warn
        } else {
            Verdict::Ok
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let verdict = match i.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            let _ = writeln!(out, "[{verdict}] {:<28} {}", i.name, i.value);
            if let Some(advice) = &i.advice {
                let _ = writeln!(out, "       {advice}");
            }
        }
        let _ = writeln!(out, "\n# recommended config\n{}", self.recommended_config);
        if self.sysctls.is_empty() {
            let _ = writeln!(out, "# sysctls: nothing to change");
        } else {
            let _ = writeln!(
                out,
                "# sysctls (e.g. /etc/sysctl.d/90-sluice.conf, then `sysctl --system`)"
            );
            for line in &self.sysctls {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

/// What a busy syslog endpoint wants of the network stack.
const WANT_RMEM_MAX: u64 = 32 << 20;
const WANT_SOMAXCONN: u64 = 4096;
const WANT_BACKLOG: u64 = 16384;
const WANT_OPEN_FILES: u64 = 65536;
/// glommio's minimum (newer kernels); older kernels charge the rings too.
const MIN_MEMLOCK: u64 = 512 << 10;

/// Builds the report; measures the disk under `data_dir` for about `2 × probe`.
pub fn build(data_dir: &Path, probe: Duration, target_latency: Duration) -> Report {
    let mut items = Vec::new();
    let mut sysctls = Vec::new();
    // The probe and the file system check need it; Sluice would create it anyway.
    let _ = std::fs::create_dir_all(data_dir);
    let cpus = host::available_cpus();
    let shards = crate::recommended_shards(cpus);
    items.push(item(
        "cpus",
        format!("{cpus} available → shards = {shards}"),
        Verdict::Ok,
        None,
    ));
    let nodes = host::numa_nodes();
    let numa = if nodes.is_empty() {
        "not reported".to_string()
    } else {
        nodes
            .iter()
            .map(|(n, c)| format!("node{n}: {c}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let numa_advice = (nodes.len() > 1).then(|| {
        "several NUMA nodes: keep the NIC's node CPUs for shards (pin with taskset/CPUAffinity=)".into()
    });
    items.push(item("numa", numa, Verdict::Ok, numa_advice));
    let isolated = host::isolated_cpus();
    items.push(item(
        "isolated cpus",
        if isolated.is_empty() {
            "none".into()
        } else {
            isolated
        },
        Verdict::Ok,
        None,
    ));
    items.push(io_uring_item());
    items.push(memlock_item());
    items.push(limit_item(
        "open files",
        host::open_files_limit(),
        WANT_OPEN_FILES,
        "raise it: LimitNOFILE=1048576 in the unit (one descriptor per connection)",
    ));
    for (name, want) in [
        ("net.core.rmem_max", WANT_RMEM_MAX),
        ("net.core.somaxconn", WANT_SOMAXCONN),
        ("net.core.netdev_max_backlog", WANT_BACKLOG),
    ] {
        match host::sysctl(name) {
            Some(v) if v >= want => items.push(item(name, v.to_string(), Verdict::Ok, None)),
            Some(v) => {
                sysctls.push(format!("{name} = {want}"));
                items.push(item(
                    name,
                    v.to_string(),
                    Verdict::Warn,
                    Some(format!("below {want}: see the sysctl lines")),
                ));
            }
            None => items.push(item(name, "unreadable".into(), Verdict::Warn, None)),
        }
    }
    items.push(item(
        "file system",
        host::file_system(data_dir),
        Verdict::Ok,
        None,
    ));
    let (disk, fsync_interval) = disk_item(data_dir, probe, target_latency);
    items.push(disk);
    let recommended_config = format!(
        "shards = {shards}\n[wal]\nfsync = \"{}\"   # keeps ingest → durable under {} on this disk\nbuffer_size = \"4MiB\"\nsegment_size = \"128MiB\"\n# in each UDP source:\n# receive_buffer = \"{}\"",
        humantime_ms(fsync_interval),
        humantime_ms(target_latency),
        udp_buffer(host::sysctl("net.core.rmem_max")),
    );
    Report {
        items,
        recommended_config,
        sysctls,
    }
}

fn item(name: &'static str, value: String, verdict: Verdict, advice: Option<String>) -> Item {
    Item {
        name,
        value,
        verdict,
        advice,
    }
}

fn io_uring_item() -> Item {
    match host::io_uring_opcodes() {
        Ok(ops) => {
            let missing: Vec<&str> = ops.iter().filter(|(_, ok)| !ok).map(|(n, _)| *n).collect();
            if missing.is_empty() {
                item(
                    "io_uring",
                    format!("available, all {} opcodes Sluice uses", ops.len()),
                    Verdict::Ok,
                    None,
                )
            } else {
                item(
                    "io_uring",
                    format!("available; missing: {}", missing.join(", ")),
                    Verdict::Warn,
                    Some("a newer kernel (5.19+) supports every operation Sluice uses".into()),
                )
            }
        }
        Err(e) => item(
            "io_uring",
            format!("unavailable: {e}"),
            Verdict::Fail,
            Some(
                "Sluice needs io_uring: check kernel.io_uring_disabled and seccomp profiles".into(),
            ),
        ),
    }
}

fn memlock_item() -> Item {
    match host::memlock_limit() {
        Some((soft, _)) if soft == u64::MAX || soft >= MIN_MEMLOCK => {
            item("locked memory", show_limit(soft), Verdict::Ok, None)
        }
        Some((soft, _)) => item(
            "locked memory",
            show_limit(soft),
            Verdict::Fail,
            Some("Sluice will refuse to start: LimitMEMLOCK=infinity in the unit, or ulimit -l unlimited".into()),
        ),
        None => item("locked memory", "unknown".into(), Verdict::Warn, None),
    }
}

fn limit_item(name: &'static str, limit: Option<(u64, u64)>, want: u64, advice: &str) -> Item {
    match limit {
        Some((soft, _)) if soft >= want => item(name, show_limit(soft), Verdict::Ok, None),
        Some((soft, _)) => item(name, show_limit(soft), Verdict::Warn, Some(advice.into())),
        None => item(name, "unknown".into(), Verdict::Warn, None),
    }
}

fn show_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn disk_item(data_dir: &Path, probe: Duration, target: Duration) -> (Item, Duration) {
    if std::fs::create_dir_all(data_dir).is_err() {
        let it = item(
            "disk",
            format!("{}: cannot create", data_dir.display()),
            Verdict::Fail,
            None,
        );
        return (it, Duration::from_millis(5));
    }
    match crate::disk::probe(data_dir, probe, 1 << 20) {
        Ok(p) => {
            let p99 = Duration::from_micros(p.small_sync_p99_us);
            // Whole milliseconds read better in a config and change nothing that matters.
            let exact = crate::fsync_interval_for(target, p99);
            let interval = Duration::from_millis((exact.as_millis() as u64).max(1));
            let value = format!(
                "{:.0} MiB/s with fdatasync per 1 MiB; 4 KiB fdatasync p50 {} us, p99 {} us",
                p.synced_bytes_per_sec / (1 << 20) as f64,
                p.small_sync_p50_us,
                p.small_sync_p99_us
            );
            let verdict = if p99 * 2 >= target {
                Verdict::Warn
            } else {
                Verdict::Ok
            };
            let advice = (verdict == Verdict::Warn)
                .then(|| "fdatasync alone takes most of the latency target: a faster disk, or a looser target".into());
            (item("disk", value, verdict, advice), interval)
        }
        Err(e) => (
            item(
                "disk",
                format!("{}: {e}", data_dir.display()),
                Verdict::Fail,
                None,
            ),
            Duration::from_millis(5),
        ),
    }
}

fn humantime_ms(d: Duration) -> String {
    let us = d.as_micros();
    if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// As large as the kernel lets a process ask for (within 64 MiB), at least 4 MiB.
fn udp_buffer(rmem_max: Option<u64>) -> String {
    let bytes = rmem_max.unwrap_or(4 << 20).clamp(4 << 20, 64 << 20);
    format!("{}MiB", bytes >> 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_has_every_item_and_a_config() {
        let dir = std::env::temp_dir().join(format!("sluice-tune-{}", std::process::id()));
        let r = build(&dir, Duration::from_millis(20), Duration::from_millis(10));
        let text = r.render();
        for name in [
            "cpus",
            "numa",
            "isolated cpus",
            "io_uring",
            "locked memory",
            "open files",
            "net.core.rmem_max",
            "net.core.somaxconn",
            "net.core.netdev_max_backlog",
            "file system",
            "disk",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
        assert!(
            text.contains("shards = ") && text.contains("fsync = \""),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn durations_print_as_config_values() {
        assert_eq!(humantime_ms(Duration::from_millis(5)), "5ms");
        assert_eq!(humantime_ms(Duration::from_micros(9200)), "9200us");
        assert_eq!(udp_buffer(Some(212_992)), "4MiB");
        assert_eq!(udp_buffer(Some(32 << 20)), "32MiB");
    }
}
