//! Latency histograms of the WAL (single writer: the shard's thread) and the arrival log that
//! turns group commits into per-event ingest → durable latencies.
//!
//! Invariants:
//! - Fixed buckets (Prometheus style, upper bounds in seconds; one more bucket for slower),
//!   no allocation after construction.
//! - The arrival log is bounded ([`ARRIVALS_KEPT`] marks). When it is full, new arrivals fold
//!   into the last mark, whose time is earlier: latencies can then be over-reported, never
//!   under-reported.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the fdatasync latency histogram.
pub const FSYNC_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds (seconds) of the ingest → durable histogram: fine around the group-commit
/// interval (milliseconds), where the p99 target lies.
pub const DURABLE_BUCKETS_SECONDS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009, 0.01, 0.0125, 0.015,
    0.02, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Arrival marks kept between two commits.
pub const ARRIVALS_KEPT: usize = 1024;
/// Arrivals closer than this to the previous mark share it.
const ARRIVAL_GRANULARITY: Duration = Duration::from_micros(50);

/// A histogram with fixed upper bounds; counts per bucket (not cumulative) and the sum.
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds_seconds: &'static [f64],
    counts: Vec<Cell<u64>>,
    sum_nanos: Cell<u64>,
}

impl LatencyHistogram {
    pub fn new(bounds_seconds: &'static [f64]) -> Self {
        LatencyHistogram {
            bounds_seconds,
            counts: (0..=bounds_seconds.len()).map(|_| Cell::new(0)).collect(),
            sum_nanos: Cell::new(0),
        }
    }

    /// Counts `n` observations of `latency`.
    pub fn record(&self, latency: Duration, n: u64) {
        let seconds = latency.as_secs_f64();
        let bucket = self.bounds_seconds.partition_point(|&b| b < seconds);
        let cell = &self.counts[bucket];
        cell.set(cell.get() + n);
        let nanos = (latency.as_nanos() as u64).saturating_mul(n);
        self.sum_nanos
            .set(self.sum_nanos.get().saturating_add(nanos));
    }

    pub fn bounds_seconds(&self) -> &'static [f64] {
        self.bounds_seconds
    }

    /// Observations per bucket (the last one: slower than every bound).
    pub fn counts(&self) -> impl Iterator<Item = u64> + '_ {
        self.counts.iter().map(Cell::get)
    }

    pub fn count(&self) -> u64 {
        self.counts().sum()
    }

    pub fn sum_nanos(&self) -> u64 {
        self.sum_nanos.get()
    }
}

/// When appended records arrived: marks of (arrival time, append index of the first record
/// appended after it). The shard notes an arrival per socket read; the flusher settles the
/// marks a commit made durable into the ingest → durable histogram.
#[derive(Debug, Default)]
pub struct Arrivals {
    marks: RefCell<VecDeque<(Instant, u64)>>,
}

impl Arrivals {
    /// Records appended from append index `next_index` on arrived at `at` (or later).
    pub fn note(&self, at: Instant, next_index: u64) {
        let mut marks = self.marks.borrow_mut();
        if let Some(last) = marks.back_mut() {
            if last.1 == next_index {
                // The last mark covers no record yet (a read that completed no frame, or
                // every record it covered is settled): it starts now. Keeping its time would
                // count an idle gap before these records as their latency.
                last.0 = at;
                return;
            }
            // A mark very close in time, or no room: the earlier mark stands for these
            // records too.
            if at.saturating_duration_since(last.0) < ARRIVAL_GRANULARITY
                || marks.len() >= ARRIVALS_KEPT
            {
                return;
            }
        }
        if marks.capacity() == 0 {
            marks.reserve_exact(ARRIVALS_KEPT);
        }
        marks.push_back((at, next_index));
    }

    /// Records with append index below `end` are settled. `durable`: they became durable at
    /// that instant (recorded into `histogram`); `None`: they were lost (not recorded).
    pub fn settle(&self, end: u64, durable: Option<(Instant, &LatencyHistogram)>) {
        let mut marks = self.marks.borrow_mut();
        while let Some(&(at, first)) = marks.front() {
            if first >= end {
                break;
            }
            let covered_end = marks.get(1).map_or(end, |&(_, next)| next.min(end));
            if let Some((now, histogram)) = durable {
                histogram.record(now.saturating_duration_since(at), covered_end - first);
            }
            // Fully settled once the next mark starts at or before `end`.
            if marks.get(1).is_some_and(|&(_, next)| next <= end) {
                marks.pop_front();
            } else {
                // The mark also covers records not settled yet.
                marks[0].1 = end;
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_count_by_upper_bound() {
        let h = LatencyHistogram::new(DURABLE_BUCKETS_SECONDS);
        h.record(Duration::from_micros(400), 2);
        h.record(Duration::from_millis(5), 1);
        h.record(Duration::from_secs(10), 1);
        let counts: Vec<u64> = h.counts().collect();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[5], 1, "5 ms is in the ≤ 5 ms bucket");
        assert_eq!(counts[DURABLE_BUCKETS_SECONDS.len()], 1);
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_nanos(), 800_000 + 5_000_000 + 10_000_000_000);
    }

    #[test]
    fn each_record_is_settled_once_at_its_own_arrival_time() {
        let h = LatencyHistogram::new(DURABLE_BUCKETS_SECONDS);
        let a = Arrivals::default();
        let t0 = Instant::now();
        a.note(t0, 0); // records 0..3 arrive at t0
        a.note(t0 + Duration::from_millis(4), 3); // records 3..10 at t0 + 4 ms
                                                  // A commit of records 0..5 at t0 + 6 ms: 3 waited 6 ms, 2 waited 2 ms.
        a.settle(5, Some((t0 + Duration::from_millis(6), &h)));
        let counts: Vec<u64> = h.counts().collect();
        assert_eq!(counts[2], 2, "{counts:?}");
        assert_eq!(counts[6], 3, "{counts:?}");
        // Records 5..7 lost: not recorded. Then 7..10 durable at t0 + 9 ms: 5 ms each.
        a.settle(7, None);
        a.settle(10, Some((t0 + Duration::from_millis(9), &h)));
        let counts: Vec<u64> = h.counts().collect();
        assert_eq!(counts[5], 3, "{counts:?}");
        assert_eq!(h.count(), 8);
        // Nothing left to settle twice.
        a.settle(10, Some((t0 + Duration::from_millis(20), &h)));
        assert_eq!(h.count(), 8);
    }

    /// After a commit settled everything, a connection idle for seconds sends again: its
    /// records are timed from their own read, not from the last read before the gap (that was
    /// the cause of the rare events counted over 2.5 s in idle-then-busy runs).
    #[test]
    fn an_idle_gap_after_everything_settled_is_not_latency() {
        let h = LatencyHistogram::new(DURABLE_BUCKETS_SECONDS);
        let a = Arrivals::default();
        let t0 = Instant::now();
        a.note(t0, 0);
        a.settle(10, Some((t0 + Duration::from_millis(1), &h)));
        let later = t0 + Duration::from_secs(3);
        a.note(later, 10);
        a.settle(20, Some((later + Duration::from_millis(2), &h)));
        let counts: Vec<u64> = h.counts().collect();
        assert_eq!(counts[1], 10, "{counts:?}");
        assert_eq!(
            counts[2], 10,
            "the second batch waited 2 ms, not 3 s: {counts:?}"
        );
        // A read that completed no frame (a partial one) is superseded the same way.
        let b = Arrivals::default();
        b.note(t0, 0);
        b.note(later, 0);
        b.settle(5, Some((later + Duration::from_millis(1), &h)));
        assert_eq!(h.counts().nth(1), Some(15));
    }

    #[test]
    fn a_full_log_over_reports_rather_than_under_reports() {
        let h = LatencyHistogram::new(DURABLE_BUCKETS_SECONDS);
        let a = Arrivals::default();
        let t0 = Instant::now();
        for i in 0..(ARRIVALS_KEPT as u64 + 10) {
            a.note(t0 + Duration::from_millis(i), i);
        }
        let end = ARRIVALS_KEPT as u64 + 10;
        a.settle(end, Some((t0 + Duration::from_millis(end), &h)));
        assert_eq!(h.count(), end, "every record settled exactly once");
        // The last records really waited 1..=10 ms, but the last kept mark (11 ms before the
        // commit) stands for them: nothing shows as faster than 10 ms.
        let counts: Vec<u64> = h.counts().collect();
        assert_eq!(counts[..=10].iter().sum::<u64>(), 0, "{counts:?}");
        // ≤ 12.5 ms: the 11 records of the last mark (11 ms) and the one before it (12 ms).
        assert_eq!(counts[11], 12, "{counts:?}");
    }
}
