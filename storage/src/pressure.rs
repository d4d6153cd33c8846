//! When `commit_compression = "auto"` compresses a commit: while the disk, not the CPU, is
//! what holds the WAL back.
//!
//! zstd commits carry 4–5× fewer bytes for typical logs but cost the shard ~350 ns of CPU per
//! 200-byte event. Where the disk is the limit that trade wins (on a VM whose disk synced
//! 305 MiB/s: 0.80M instead of 0.68M durable events/s into a file); where the CPU is, it
//! loses. So the writer measures, per window of about [`WINDOW`], the share of wall time its
//! disk work took (each commit's write and its fdatasync: the flusher does nothing else while
//! it waits on them with one commit in flight). Invariants:
//! - a window written plain whose disk work took at least [`BUSY_TO_COMPRESS_PERMILLE`] of it starts
//!   [`COMPRESSED_WINDOWS`] windows of compressed commits;
//! - after those, one window is written plain again to measure the disk without compression
//!   (compressed commits hide how busy plain ones would keep it), and the rule repeats: a
//!   disk that stays saturated is compressed 10 windows of 11, one that recovered is not;
//! - a window closes at the first commit after it ended, so an idle WAL measures nothing and
//!   its next window reads as idle.
//!
//! Readers need no setting either way: a segment may mix plain and compressed commits.

use std::time::{Duration, Instant};

/// How long a measuring window lasts (closed at the first commit after it).
pub const WINDOW: Duration = Duration::from_millis(100);
/// The share of a plain window (per mille) the disk work must take for compression to start.
pub const BUSY_TO_COMPRESS_PERMILLE: u128 = 800;
/// Windows compressed before the next plain (measuring) one.
pub const COMPRESSED_WINDOWS: u32 = 10;

/// The disk's recent load, and whether commits are being compressed.
#[derive(Debug)]
pub struct DiskPressure {
    window_start: Instant,
    /// Disk work (writes, fdatasyncs) in the current window.
    busy: Duration,
    /// Compressed windows left (0: writing plain, measuring).
    compressed_left: u32,
}

impl DiskPressure {
    pub fn new(now: Instant) -> Self {
        DiskPressure {
            window_start: now,
            busy: Duration::ZERO,
            compressed_left: 0,
        }
    }

    /// A write or fdatasync of this WAL took `took`.
    pub fn add_busy(&mut self, took: Duration) {
        self.busy += took;
    }

    /// Whether the commit being made `now` is compressed (closing the window first if it
    /// ended).
    pub fn compress(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let saturated =
                self.busy.as_nanos() * 1000 >= elapsed.as_nanos() * BUSY_TO_COMPRESS_PERMILLE;
            self.compressed_left = match self.compressed_left {
                0 if saturated => COMPRESSED_WINDOWS,
                0 => 0,
                n => n - 1,
            };
            self.window_start = now;
            self.busy = Duration::ZERO;
        }
        self.compressed_left > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One window of `busy_ms` disk work in `WINDOW`, then the decision for its next commit.
    fn window(p: &mut DiskPressure, now: &mut Instant, busy_ms: u64) -> bool {
        p.add_busy(Duration::from_millis(busy_ms));
        *now += WINDOW;
        p.compress(*now)
    }

    #[test]
    fn a_saturated_disk_is_compressed_ten_windows_of_eleven() {
        let mut now = Instant::now();
        let mut p = DiskPressure::new(now);
        assert!(!p.compress(now), "starts plain");
        assert!(!window(&mut p, &mut now, 50), "half busy: plain");
        assert!(!window(&mut p, &mut now, 79), "just under the threshold");
        assert!(window(&mut p, &mut now, 80), "80% busy: compress");
        // Compressed windows do not measure: even an idle one keeps compressing.
        for _ in 0..COMPRESSED_WINDOWS - 1 {
            assert!(window(&mut p, &mut now, 0));
        }
        assert!(
            !window(&mut p, &mut now, 0),
            "then one plain window measures"
        );
        assert!(
            window(&mut p, &mut now, 95),
            "still saturated: compress again"
        );
        let compressed = (0..COMPRESSED_WINDOWS).filter(|_| window(&mut p, &mut now, 100));
        assert_eq!(compressed.count(), COMPRESSED_WINDOWS as usize - 1);
    }

    #[test]
    fn a_recovered_disk_goes_back_to_plain_and_windows_close_only_when_over() {
        let mut now = Instant::now();
        let mut p = DiskPressure::new(now);
        assert!(window(&mut p, &mut now, 100));
        for _ in 0..COMPRESSED_WINDOWS - 1 {
            window(&mut p, &mut now, 100);
        }
        assert!(!window(&mut p, &mut now, 10), "measuring window");
        assert!(!window(&mut p, &mut now, 10), "10% busy: stays plain");
        // Commits within one window do not close it: busy time adds up across them.
        p.add_busy(Duration::from_millis(60));
        now += WINDOW / 2;
        assert!(!p.compress(now));
        p.add_busy(Duration::from_millis(30));
        now += WINDOW / 2;
        assert!(p.compress(now), "90 ms busy in one window");
        // An idle stretch (one window closing late) reads as its true share.
        let mut q = DiskPressure::new(now);
        q.add_busy(Duration::from_millis(90));
        assert!(!q.compress(now + WINDOW * 10), "90 ms in a second: 9%");
    }
}
