//! Disk probe: what sequential write + fdatasync costs on the file system of a directory.
//!
//! Two measurements on a scratch file (deleted afterwards), each bounded by time:
//! - bandwidth: `write_size` writes, each followed by fdatasync (the WAL's group commit at full
//!   load is exactly this pattern: one large write, one fdatasync);
//! - latency: 4 KiB write + fdatasync (the WAL's commit at low load).
//!
//! Blocking `std::fs` on purpose: this runs in a tool, never on a shard.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DiskProbe {
    pub write_size: usize,
    /// Bytes per second written with an fdatasync after every `write_size` write.
    pub synced_bytes_per_sec: f64,
    pub synced_writes_per_sec: f64,
    /// fdatasync latency of a 4 KiB write, microseconds.
    pub small_sync_p50_us: u64,
    pub small_sync_p99_us: u64,
    pub small_syncs_per_sec: f64,
}

/// Measures for about `2 × duration` in `dir`.
pub fn probe(dir: &Path, duration: Duration, write_size: usize) -> io::Result<DiskProbe> {
    let path = dir.join(".sluice-disk-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let result = (|| {
        let block: Vec<u8> = (0..write_size).map(|i| (i * 31 + 7) as u8).collect();
        let (bytes, writes, elapsed) = synced_writes(&file, &block, duration)?;
        file.set_len(0)?;
        let small = vec![0x5au8; 4096];
        let mut latencies = Vec::new();
        let started = Instant::now();
        let mut offset = 0;
        while started.elapsed() < duration || latencies.len() < 10 {
            let t = Instant::now();
            file.write_all_at(&small, offset)?;
            file.sync_data()?;
            latencies.push(t.elapsed().as_micros() as u64);
            offset += small.len() as u64;
        }
        let small_elapsed = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
        Ok(DiskProbe {
            write_size,
            synced_bytes_per_sec: bytes as f64 / elapsed,
            synced_writes_per_sec: writes as f64 / elapsed,
            small_sync_p50_us: pct(0.5),
            small_sync_p99_us: pct(0.99),
            small_syncs_per_sec: latencies.len() as f64 / small_elapsed,
        })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Bytes per second that `streams` writers together get for `duration`, each writing
/// `write_size` blocks to its own scratch file with an fdatasync after each (as a shard's WAL
/// and an output do side by side: a disk that queues several requests at once may carry more
/// than one stream measures).
pub fn parallel_synced_bandwidth(
    dir: &Path,
    streams: usize,
    duration: Duration,
    write_size: usize,
) -> io::Result<f64> {
    let paths: Vec<_> = (0..streams.max(1))
        .map(|i| dir.join(format!(".sluice-disk-probe-{i}")))
        .collect();
    let results: Vec<io::Result<(u64, u64, f64)>> = std::thread::scope(|scope| {
        let writers: Vec<_> = paths
            .iter()
            .map(|path| {
                scope.spawn(move || {
                    let file = OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .open(path)?;
                    let block: Vec<u8> = (0..write_size).map(|i| (i * 31 + 7) as u8).collect();
                    synced_writes(&file, &block, duration)
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(io::Error::other("probe thread")))
            })
            .collect()
    });
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    let mut bytes = 0;
    let mut longest = 0f64;
    for r in results {
        let (b, _, seconds) = r?;
        bytes += b;
        longest = longest.max(seconds);
    }
    Ok(bytes as f64 / longest.max(1e-9))
}

/// Sequential `block` writes with fdatasync after each, for `duration` (wrapping at 1 GiB so
/// the scratch file stays bounded). Returns (bytes, writes, seconds).
fn synced_writes(
    file: &std::fs::File,
    block: &[u8],
    duration: Duration,
) -> io::Result<(u64, u64, f64)> {
    const WRAP: u64 = 1 << 30;
    let started = Instant::now();
    let (mut bytes, mut writes, mut offset) = (0u64, 0u64, 0u64);
    while started.elapsed() < duration || writes < 3 {
        file.write_all_at(block, offset)?;
        file.sync_data()?;
        // Advice: a refusal only makes the figure the page cache's.
        let _ = drop_cached(file, offset, block.len() as u64);
        bytes += block.len() as u64;
        writes += 1;
        offset = (offset + block.len() as u64) % WRAP;
    }
    Ok((bytes, writes, started.elapsed().as_secs_f64()))
}

/// Drops `len` bytes of `file` from `offset` out of the page cache (`posix_fadvise`
/// DONTNEED; whole pages only, dirty ones stay). The probe drops each synced write so the next
/// one reuses those pages (as the WAL's recycled segments and the file sink's
/// `page_cache = "drop_synced"` do) instead of taking fresh memory: on a VM that hands free
/// memory back to its host, fresh pages cost a host fault each, and the probe measured that
/// (216 MiB/s here) instead of the disk.
pub fn drop_cached(file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: advice on a file descriptor the caller owns; no memory is passed.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(file),
            offset as libc::off_t,
            len as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    match rc {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn probe_reports_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("sluice-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = super::probe(&dir, std::time::Duration::from_millis(20), 64 << 10).unwrap();
        assert!(p.synced_bytes_per_sec > 0.0 && p.small_sync_p50_us <= p.small_sync_p99_us);
        let three = super::parallel_synced_bandwidth(
            &dir,
            3,
            std::time::Duration::from_millis(20),
            64 << 10,
        )
        .unwrap();
        assert!(three > 0.0);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "scratch file removed"
        );
        std::fs::remove_dir(&dir).unwrap();
    }
}
