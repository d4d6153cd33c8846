//! Process-wide values, read at scrape time: the WAL's disk budget, the kernel's UDP drops,
//! the connection buffer budget, and the process itself (CPU, memory, descriptors).

use std::sync::atomic::Ordering::Relaxed;

use super::table::{Family, Kind, Metric};
use super::Counters;

/// One reading of the process-wide values.
#[derive(Debug, Default, Clone)]
pub struct ProcessSnapshot {
    pub wal_disk_bytes: f64,
    pub wal_dropped_segments: f64,
    pub wal_dropped_records: f64,
    pub kernel_udp_drops: f64,
    pub connection_buffer_bytes: f64,
    pub cpu_seconds: f64,
    pub resident_memory_bytes: f64,
    pub open_fds: f64,
    pub start_time_seconds: f64,
}

impl ProcessSnapshot {
    pub fn read(counters: &Counters, start_time_seconds: f64) -> Self {
        ProcessSnapshot {
            wal_disk_bytes: counters.budget.used() as f64,
            wal_dropped_segments: counters.budget.dropped_segments.load(Relaxed) as f64,
            wal_dropped_records: counters.budget.dropped_records.load(Relaxed) as f64,
            kernel_udp_drops: counters.kernel_udp_drops() as f64,
            connection_buffer_bytes: counters.connection_memory.used() as f64,
            cpu_seconds: cpu_seconds(),
            resident_memory_bytes: resident_memory_bytes(),
            open_fds: open_fds(),
            start_time_seconds,
        }
    }
}

/// Builds a row of the hand-written process table.
const fn row(
    key: &'static str,
    name: &'static str,
    help: &'static str,
    kind: Kind,
    loss: Option<&'static str>,
    read: fn(&ProcessSnapshot) -> f64,
) -> Metric<ProcessSnapshot> {
    Metric {
        key,
        name,
        help,
        kind,
        label: None,
        loss,
        read,
    }
}

impl Family for ProcessSnapshot {
    const NAME: &'static str = "process";
    const LABELS: &'static [&'static str] = &[];
    const METRICS: &'static [Metric<Self>] = &[
        row("wal_disk_bytes", "sluice_wal_disk_bytes", "Bytes of WAL segments (and ready segment files) in data_dir: on disk, or reserved for the segment being written if more", Kind::Gauge, None, |p| p.wal_disk_bytes),
        row("wal_dropped_segments", "sluice_wal_dropped_segments_total", "Undelivered WAL segments deleted to make room (when_full = drop_oldest)", Kind::Counter, None, |p| p.wal_dropped_segments),
        row("wal_dropped_records", "sluice_wal_dropped_records_total", "Undelivered events in the segments deleted to make room", Kind::Counter, Some("disk_full_drop_oldest"), |p| p.wal_dropped_records),
        row("kernel_udp_drops", "sluice_udp_kernel_drops_total", "UDP datagrams the kernel dropped on Sluice's sockets (receive buffer full)", Kind::Counter, Some("udp_socket_buffer"), |p| p.kernel_udp_drops),
        row("connection_buffer_bytes", "sluice_connection_buffer_bytes", "Bytes of TCP connection read buffers (bounded by max_connection_memory)", Kind::Gauge, None, |p| p.connection_buffer_bytes),
        row("cpu_seconds", "sluice_process_cpu_seconds_total", "CPU time the process used, user and system", Kind::Counter, None, |p| p.cpu_seconds),
        row("resident_memory_bytes", "sluice_process_resident_memory_bytes", "Resident memory of the process", Kind::Gauge, None, |p| p.resident_memory_bytes),
        row("open_fds", "sluice_process_open_fds", "Open file descriptors of the process", Kind::Gauge, None, |p| p.open_fds),
        row("start_time_seconds", "sluice_process_start_time_seconds", "When the process started, Unix time", Kind::Gauge, None, |p| p.start_time_seconds),
    ];
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Resident pages (second field of /proc/self/statm) × page size.
fn resident_memory_bytes() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(0) as f64;
    pages * page_size
}

fn open_fds() -> f64 {
    std::fs::read_dir("/proc/self/fd").map_or(0.0, |d| d.count() as f64)
}
