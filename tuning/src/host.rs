//! Reading the host: CPUs, NUMA nodes, isolated CPUs, io_uring opcodes, rlimits, network
//! sysctls, file system type.

use std::path::Path;

/// CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// NUMA nodes and their CPU lists (`/sys/devices/system/node/node*/cpulist`).
pub fn numa_nodes() -> Vec<(usize, String)> {
    let mut nodes: Vec<(usize, String)> = std::fs::read_dir("/sys/devices/system/node")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix("node")?.parse().ok()?;
            let cpus = std::fs::read_to_string(e.path().join("cpulist")).ok()?;
            Some((n, cpus.trim().to_string()))
        })
        .collect();
    nodes.sort();
    nodes
}

/// The kernel's isolated CPUs (`isolcpus=`), empty when none.
pub fn isolated_cpus() -> String {
    std::fs::read_to_string("/sys/devices/system/cpu/isolated")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The io_uring operations Sluice uses, and whether this kernel supports each; `Err` when
/// io_uring itself is unavailable (old kernel, seccomp, `io_uring_disabled`).
pub fn io_uring_opcodes() -> Result<Vec<(&'static str, bool)>, String> {
    use io_uring::opcode;
    let ring = io_uring::IoUring::new(4).map_err(|e| e.to_string())?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| format!("probe: {e}"))?;
    Ok([
        ("read", opcode::Read::CODE),
        ("write", opcode::Write::CODE),
        ("fsync", opcode::Fsync::CODE),
        ("fallocate", opcode::Fallocate::CODE),
        ("accept", opcode::Accept::CODE),
        ("recv", opcode::Recv::CODE),
        ("recvmsg", opcode::RecvMsg::CODE),
        ("send", opcode::Send::CODE),
        ("openat", opcode::OpenAt::CODE),
        ("close", opcode::Close::CODE),
        ("statx", opcode::Statx::CODE),
    ]
    .into_iter()
    .map(|(name, code)| (name, probe.is_supported(code)))
    .collect())
}

/// `(soft, hard)` of an rlimit; `u64::MAX` is unlimited.
pub fn rlimit(resource: libc::__rlimit_resource_t) -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(resource, &mut limit) } == 0)
        .then_some((limit.rlim_cur, limit.rlim_max))
}

pub fn memlock_limit() -> Option<(u64, u64)> {
    rlimit(libc::RLIMIT_MEMLOCK)
}

pub fn open_files_limit() -> Option<(u64, u64)> {
    rlimit(libc::RLIMIT_NOFILE)
}

/// A numeric sysctl under /proc/sys (`net.core.rmem_max` → /proc/sys/net/core/rmem_max).
pub fn sysctl(name: &str) -> Option<u64> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The file system type of `dir` by its magic number.
pub fn file_system(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a properly sized out-parameter.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        _ => "other",
    }
    .into()
}
