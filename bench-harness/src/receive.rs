//! The receiving end of a benchmark run: every output line is checked for its `seq=` (loss and
//! duplicates) and timed from its `t=` send time (end-to-end latency).
//!
//! Two feeders share one [`Tally`]: a TCP receiver (the relay scenario's downstream) and a file
//! tailer (the file scenario: it reads the output file as it grows, polling every millisecond,
//! so latency there has that resolution on top of the system's own).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::firehose;

/// 1 µs .. 1 hour at 3 significant digits.
pub fn new_histogram() -> hdrhistogram::Histogram<u64> {
    // The bounds are valid constants; the fallback only satisfies the type.
    hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| hdrhistogram::Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(h: &hdrhistogram::Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What arrived so far.
pub struct Tally {
    lines: AtomicU64,
    seqs: Mutex<Vec<u64>>,
    latency: Mutex<hdrhistogram::Histogram<u64>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Tally {
            lines: AtomicU64::new(0),
            seqs: Mutex::new(Vec::new()),
            latency: Mutex::new(new_histogram()),
        })
    }

    pub fn lines(&self) -> u64 {
        self.lines.load(Relaxed)
    }

    pub fn latency(&self) -> Percentiles {
        self.latency
            .lock()
            .map(|h| Percentiles::of(&h))
            .unwrap_or_default()
    }

    /// Missing and duplicated sequence numbers among `0..total`.
    pub fn missing_and_duplicates(&self, total: u64) -> (u64, u64) {
        let seqs = self.seqs.lock().map(|s| s.clone()).unwrap_or_default();
        count_missing(seqs.into_iter(), total)
    }
}

/// Parses complete lines for one feeder and hands them to the tally in batches.
struct LineParser {
    tally: Arc<Tally>,
    seqs: Vec<u64>,
    latency: hdrhistogram::Histogram<u64>,
}

impl LineParser {
    fn new(tally: Arc<Tally>) -> Self {
        LineParser {
            tally,
            seqs: Vec::new(),
            latency: new_histogram(),
        }
    }

    /// Consumes the complete lines at the start of `buf`, received at `now_us`; returns the
    /// bytes consumed.
    fn feed(&mut self, buf: &[u8], now_us: u64) -> usize {
        let mut start = 0;
        let mut lines = 0;
        while let Some(end) = memchr::memchr(b'\n', &buf[start..]) {
            let line = &buf[start..start + end];
            if let Some(seq) = firehose::seq_in(line) {
                self.seqs.push(seq);
            }
            if let Some(sent) = firehose::time_in(line) {
                let _ = self.latency.record(now_us.saturating_sub(sent).max(1));
            }
            start += end + 1;
            lines += 1;
        }
        // The tally's lines count last: once it shows all lines, their seqs are in.
        if let Ok(mut s) = self.tally.seqs.lock() {
            s.append(&mut self.seqs);
        }
        if let Ok(mut h) = self.tally.latency.lock() {
            let _ = h.add(&self.latency);
        }
        self.latency.reset();
        self.tally.lines.fetch_add(lines, Relaxed);
        start
    }
}

/// Reads `source` into a 1 MiB buffer, feeding complete lines; a line longer than the buffer
/// is not one of ours and is skipped.
struct Feeder {
    buf: Vec<u8>,
    filled: usize,
    parser: LineParser,
}

impl Feeder {
    fn new(tally: Arc<Tally>) -> Self {
        Feeder {
            buf: vec![0; 1 << 20],
            filled: 0,
            parser: LineParser::new(tally),
        }
    }

    /// One read; `Ok(0)` at the end of what `source` has now.
    fn read_from(&mut self, source: &mut impl Read) -> std::io::Result<usize> {
        let n = source.read(&mut self.buf[self.filled..])?;
        if n > 0 {
            self.filled += n;
            let used = self
                .parser
                .feed(&self.buf[..self.filled], firehose::now_micros());
            self.buf.copy_within(used..self.filled, 0);
            self.filled -= used;
            if self.filled == self.buf.len() {
                self.filled = 0;
            }
        }
        Ok(n)
    }
}

/// The relay scenario's downstream: accepts connections on 127.0.0.1 and tallies their lines.
pub struct RelayReceiver {
    pub port: u16,
    pub tally: Arc<Tally>,
}

impl RelayReceiver {
    pub fn start() -> Result<Self, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        let tally = Tally::new();
        let shared = tally.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let tally = shared.clone();
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut feeder = Feeder::new(tally);
                    while let Ok(n) = feeder.read_from(&mut conn) {
                        if n == 0 {
                            break;
                        }
                    }
                });
            }
        });
        Ok(RelayReceiver { port, tally })
    }
}

/// The file scenario's reader: follows the output file until stopped.
pub struct FileTailer {
    pub tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FileTailer {
    pub fn start(path: PathBuf) -> Self {
        let tally = Tally::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (feeder_tally, stopping) = (tally.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut feeder = Feeder::new(feeder_tally);
            let mut offset = 0u64;
            while !stopping.load(Relaxed) {
                if let Ok(mut file) = std::fs::File::open(&path) {
                    if file.seek(SeekFrom::Start(offset)).is_ok() {
                        while let Ok(n) = feeder.read_from(&mut file) {
                            if n == 0 {
                                break;
                            }
                            offset += n as u64;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        FileTailer {
            tally,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FileTailer {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `total` lines arrived.
pub fn wait_for_lines(tally: &Tally, total: u64, deadline: Instant) -> Result<(), String> {
    loop {
        let seen = tally.lines();
        if seen >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("only {seen} of {total} lines arrived"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn count_missing(seqs: impl Iterator<Item = u64>, total: u64) -> (u64, u64) {
    let mut seen = HashSet::with_capacity(total as usize);
    let mut duplicates = 0;
    for seq in seqs {
        if !seen.insert(seq) {
            duplicates += 1;
        }
    }
    let missing = (0..total).filter(|s| !seen.contains(s)).count() as u64;
    (missing, duplicates)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tailer_counts_missing_duplicates_and_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.log");
        let tailer = FileTailer::start(out.clone());
        let mut f = std::fs::File::create(&out).unwrap();
        // seq 1 is missing, 2 is duplicated; the last line arrives in two writes.
        let t = firehose::now_micros();
        write!(
            f,
            "a seq=0 t={t} x\nb seq=2 t={t} x\nnoise\nc seq=2 t={t} y\nd seq="
        )
        .unwrap();
        f.flush().unwrap();
        wait_for_lines(&tailer.tally, 4, Instant::now() + Duration::from_secs(30)).unwrap();
        writeln!(f, "3 t={t} z").unwrap();
        wait_for_lines(&tailer.tally, 5, Instant::now() + Duration::from_secs(30)).unwrap();
        assert_eq!(tailer.tally.missing_and_duplicates(4), (1, 1));
        assert!(
            tailer.tally.latency().max >= 1,
            "every line timed from its t="
        );
    }

    #[test]
    fn relay_receiver_tallies_every_connection() {
        let r = RelayReceiver::start().unwrap();
        for c in 0..3u64 {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
            for i in 0..100 {
                writeln!(s, "<13>1 - h a - - - seq={} t=5 x", c * 100 + i).unwrap();
            }
        }
        wait_for_lines(&r.tally, 300, Instant::now() + Duration::from_secs(30)).unwrap();
        assert_eq!(r.tally.missing_and_duplicates(300), (0, 0));
    }
}
