//! `throttle` and `sample` (issue 13): which events to keep, decided per key without I/O or
//! clocks (the caller passes the time), so both are deterministic and testable.
//!
//! - [`Throttle`]: a token bucket (`rate` events per second, `burst` at most) per key (a source
//!   IP, hostname, appname or any field; one key for a whole pipeline). Keys are bounded by
//!   `max_keys`: when the table is full, buckets that have refilled completely (idle keys) are
//!   evicted (at most once a second); a key that still finds no room shares one overflow
//!   bucket, counted in [`Throttle::overflowed`].
//! - [`Sample`]: keeps 1 in `rate`: by a stable hash of the key when there is one (the same key
//!   is always kept or always dropped, across shards and restarts), else every `rate`-th event.

use std::collections::HashMap;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ns: u64,
}

impl Bucket {
    fn full(burst: f64, now_ns: u64) -> Bucket {
        Bucket {
            tokens: burst,
            last_ns: now_ns,
        }
    }

    /// Refills for the time since the last event, then takes a token if there is one.
    fn take(&mut self, rate_per_sec: f64, burst: f64, now_ns: u64) -> bool {
        let elapsed_secs = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed_secs * rate_per_sec).min(burst);
        self.last_ns = self.last_ns.max(now_ns);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full_at(&self, rate_per_sec: f64, burst: f64, now_ns: u64) -> bool {
        let elapsed_secs = now_ns.saturating_sub(self.last_ns) as f64 / 1e9;
        self.tokens + elapsed_secs * rate_per_sec >= burst
    }
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Throttle {
    rate_per_sec: f64,
    burst: f64,
    max_keys: usize,
    buckets: HashMap<u64, Bucket>,
    overflow: Option<Bucket>,
    last_sweep_ns: u64,
    dropped: u64,
    overflowed: u64,
}

impl Throttle {
    /// `rate_per_sec` > 0, `burst` ≥ 1, `max_keys` ≥ 1 (the config checks them).
    pub fn new(rate_per_sec: f64, burst: u32, max_keys: usize) -> Throttle {
        Throttle {
            rate_per_sec,
            burst: f64::from(burst.max(1)),
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
            overflow: None,
            last_sweep_ns: 0,
            dropped: 0,
            overflowed: 0,
        }
    }

    /// Whether an event with `key` at `now_ns` (monotonic nanoseconds) is kept.
    pub fn allow(&mut self, key: &[u8], now_ns: u64) -> bool {
        let (rate, burst) = (self.rate_per_sec, self.burst);
        let id = stable_hash(key);
        if !self.buckets.contains_key(&id) && self.buckets.len() >= self.max_keys {
            self.sweep(now_ns);
        }
        let kept = if self.buckets.len() < self.max_keys || self.buckets.contains_key(&id) {
            let bucket = self
                .buckets
                .entry(id)
                .or_insert_with(|| Bucket::full(burst, now_ns));
            bucket.take(rate, burst, now_ns)
        } else {
            self.overflowed += 1;
            let overflow = self
                .overflow
                .get_or_insert_with(|| Bucket::full(burst, now_ns));
            overflow.take(rate, burst, now_ns)
        };
        self.dropped += u64::from(!kept);
        kept
    }

    /// Drops idle keys (buckets refilled to full), at most once a second.
    fn sweep(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < 1_000_000_000 {
            return;
        }
        self.last_sweep_ns = now_ns;
        let (rate, burst) = (self.rate_per_sec, self.burst);
        self.buckets
            .retain(|_, b| !b.is_full_at(rate, burst, now_ns));
    }

    /// Events dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events whose key found no room in the table (they shared the overflow bucket).
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }
}

/// Keeps 1 in `rate`.
#[derive(Debug)]
pub struct Sample {
    rate: u64,
    seen: u64,
    dropped: u64,
}

impl Sample {
    /// `rate` ≥ 1 (1 keeps everything).
    pub fn new(rate: u64) -> Sample {
        Sample {
            rate: rate.max(1),
            seen: 0,
            dropped: 0,
        }
    }

    /// Whether the event is kept: by `key`'s hash when given, else by count.
    pub fn keep(&mut self, key: Option<&[u8]>) -> bool {
        let kept = match key {
            Some(key) => stable_hash(key).is_multiple_of(self.rate),
            None => {
                self.seen += 1;
                self.seen % self.rate == 1 || self.rate == 1
            }
        };
        self.dropped += u64::from(!kept);
        kept
    }

    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// FNV-1a, 64 bits: stable across processes and versions (std's hasher is seeded per process).
pub fn stable_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h: u64, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let mut t = Throttle::new(10.0, 5, 100);
        let kept = (0..20).filter(|_| t.allow(b"host-a", 0)).count();
        assert_eq!(kept, 5, "the burst");
        // Half a second later: 5 more tokens.
        let kept = (0..20).filter(|_| t.allow(b"host-a", SEC / 2)).count();
        assert_eq!(kept, 5);
        assert_eq!(t.dropped(), 30);
        // Another key has its own bucket.
        assert!(t.allow(b"host-b", SEC / 2));
    }

    #[test]
    fn keys_are_bounded_idle_ones_evicted_then_overflow_shared() {
        let mut t = Throttle::new(1.0, 1, 2);
        assert!(t.allow(b"a", 0) && t.allow(b"b", 0));
        // Table full, no idle key yet (a and b are empty): c shares the overflow bucket.
        assert!(t.allow(b"c", 0));
        assert!(!t.allow(b"d", 0));
        assert_eq!(t.overflowed(), 2);
        // Two seconds later a and b have refilled: the sweep evicts them, e gets a bucket.
        assert!(t.allow(b"e", 2 * SEC));
        assert_eq!(t.overflowed(), 2);
    }

    #[test]
    fn sampling_by_key_is_stable_and_by_count_exact() {
        let mut a = Sample::new(4);
        let mut b = Sample::new(4);
        for i in 0..100 {
            let key = format!("host-{i}");
            assert_eq!(a.keep(Some(key.as_bytes())), b.keep(Some(key.as_bytes())));
        }
        let mut c = Sample::new(3);
        let kept: Vec<bool> = (0..6).map(|_| c.keep(None)).collect();
        assert_eq!(kept, [true, false, false, true, false, false]);
        assert_eq!(c.dropped(), 4);
        assert!(Sample::new(1).keep(None) && Sample::new(1).keep(Some(b"x")));
    }

    proptest! {
        /// Over any schedule, a key never gets more than burst + rate × elapsed events.
        #[test]
        fn never_more_than_the_bucket_allows(gaps_ms in proptest::collection::vec(0u64..300, 1..300), rate in 1u32..50, burst in 1u32..20) {
            let mut t = Throttle::new(f64::from(rate), burst, 10);
            let mut now = 0;
            let mut kept = 0u64;
            for gap in &gaps_ms {
                now += gap * 1_000_000;
                kept += u64::from(t.allow(b"k", now));
            }
            let allowed = f64::from(burst) + f64::from(rate) * now as f64 / 1e9;
            prop_assert!(kept as f64 <= allowed + 1e-6, "{kept} > {allowed}");
            prop_assert_eq!(kept + t.dropped(), gaps_ms.len() as u64);
        }

        /// Keyed sampling keeps about 1 in N of many distinct keys.
        #[test]
        fn keyed_sampling_keeps_about_one_in_n(n in 2u64..10, seed in any::<u32>()) {
            let mut s = Sample::new(n);
            let kept = (0..4000u32).filter(|i| s.keep(Some(&(seed ^ i).to_le_bytes()))).count() as f64;
            let expected = 4000.0 / n as f64;
            prop_assert!((kept - expected).abs() < expected * 0.25, "{kept} vs {expected}");
        }
    }
}
