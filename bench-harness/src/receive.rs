//! The receiving end of a benchmark run: every output line is checked for its `seq=` (loss and
//! duplicates) and timed from its `t=` send time (end-to-end latency).
//!
//! Two feeders share one [`Tally`]: a TCP receiver (the relay scenario's downstream) and a file
//! tailer (the file scenario: it reads the output file as it grows, polling every millisecond,
//! so latency there has that resolution on top of the system's own).
//!
//! Throughput runs must not compete with the system measured (two cores): there the relay
//! receiver only captures what arrives (counting lines with memchr) and parses it after the
//! run ([`RelayReceiver::start_capturing`]), and the file scenario runs no tailer at all
//! ([`wait_for_file`]: the file's size is polled, its lines counted once it stops growing).

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
    /// Capturing (throughput runs): complete lines kept as received, parsed only when asked
    /// for loss and duplicates; no latency.
    captured: Option<Mutex<Vec<u8>>>,
}

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Tally {
            lines: AtomicU64::new(0),
            seqs: Mutex::new(Vec::new()),
            latency: Mutex::new(new_histogram()),
            captured: None,
        })
    }

    fn capturing() -> Arc<Self> {
        Arc::new(Tally {
            lines: AtomicU64::new(0),
            seqs: Mutex::new(Vec::new()),
            latency: Mutex::new(new_histogram()),
            captured: Some(Mutex::new(Vec::new())),
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
        if let Some(captured) = &self.captured {
            let bytes = captured.lock().map(|c| c.clone()).unwrap_or_default();
            return count_missing(seqs_of_lines(&bytes), total);
        }
        let seqs = self.seqs.lock().map(|s| s.clone()).unwrap_or_default();
        count_missing(seqs.into_iter(), total)
    }
}

/// The `seq=` of every line in `bytes`.
pub fn seqs_of_lines(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.split(|&b| b == b'\n').filter_map(firehose::seq_in)
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
        if let Some(captured) = &self.tally.captured {
            let Some(end) = memchr::memrchr(b'\n', buf).map(|i| i + 1) else {
                return 0;
            };
            let lines = memchr::memchr_iter(b'\n', &buf[..end]).count() as u64;
            if let Ok(mut c) = captured.lock() {
                c.extend_from_slice(&buf[..end]);
            }
            self.tally.lines.fetch_add(lines, Relaxed);
            return end;
        }
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
    /// Parses every line as it arrives (seq and send time: latency runs).
    pub fn start() -> Result<Self, String> {
        Self::start_with(Tally::new())
    }

    /// Keeps what arrives and counts its lines, nothing more while the run goes (throughput
    /// runs); loss and duplicates are found afterwards.
    pub fn start_capturing() -> Result<Self, String> {
        Self::start_with(Tally::capturing())
    }

    fn start_with(tally: Arc<Tally>) -> Result<Self, String> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
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

/// Watches the file scenario's output in throughput runs without reading it while it grows:
/// a thread `stat`s it every 2 ms and notes when it last grew; [`FileWatch::poll`] counts its
/// lines only once it has not grown for 50 ms, and then only the bytes added since it last
/// counted (a peer whose writes pause mid-run, e.g. a timed flush, is not made to share the
/// cores with a re-read of everything it wrote so far).
pub struct FileWatch {
    path: PathBuf,
    /// (length, when it was last seen growing).
    last: Arc<Mutex<(u64, Instant)>>,
    /// Bytes counted so far and the lines in them.
    counted_len: u64,
    counted_lines: u64,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A finished file: when its last line landed, and its tally.
pub struct FileDone {
    pub landed_at: Instant,
    pub missing: u64,
    pub duplicates: u64,
}

impl FileWatch {
    pub fn start(path: PathBuf) -> Self {
        let last = Arc::new(Mutex::new((0u64, Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping, watched) = (last.clone(), stop.clone(), path.clone());
        let thread = std::thread::spawn(move || {
            while !stopping.load(Relaxed) {
                let len = std::fs::metadata(&watched).map_or(0, |m| m.len());
                if let Ok(mut l) = seen.lock() {
                    if l.0 != len {
                        *l = (len, Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        FileWatch {
            path,
            last,
            counted_len: 0,
            counted_lines: 0,
            stop,
            thread: Some(thread),
        }
    }

    /// `Some` once the file holds `total` lines and has stopped growing.
    pub fn poll(&mut self, total: u64) -> Result<Option<FileDone>, String> {
        let (len, grew_at) = self.last.lock().map(|l| *l).map_err(|e| e.to_string())?;
        if len <= self.counted_len || grew_at.elapsed() < Duration::from_millis(50) {
            return Ok(None);
        }
        let added = self.read_from(self.counted_len)?;
        self.counted_len += added.len() as u64;
        self.counted_lines += memchr::memchr_iter(b'\n', &added).count() as u64;
        if self.counted_lines < total {
            return Ok(None);
        }
        let bytes = self.read_from(0)?;
        let (missing, duplicates) = count_missing(seqs_of_lines(&bytes), total);
        Ok(Some(FileDone {
            landed_at: grew_at,
            missing,
            duplicates,
        }))
    }

    fn read_from(&self, offset: u64) -> Result<Vec<u8>, String> {
        let context = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let mut file = std::fs::File::open(&self.path).map_err(context)?;
        file.seek(SeekFrom::Start(offset)).map_err(context)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(context)?;
        Ok(bytes)
    }

    /// The file's length as last seen (progress, for a stall's message).
    pub fn bytes_seen(&self) -> u64 {
        self.last.lock().map_or(0, |l| l.0)
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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

    /// Throughput runs: the capturing receiver only counts lines while they arrive; loss and
    /// duplicates come out the same afterwards.
    #[test]
    fn capturing_receiver_counts_then_finds_loss_and_duplicates() {
        let r = RelayReceiver::start_capturing().unwrap();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", r.port)).unwrap();
        for seq in (0..100).filter(|&i| i != 7).chain([5]) {
            writeln!(s, "<13>1 - h a - - - seq={seq} t=5 x").unwrap();
        }
        drop(s);
        wait_for_lines(&r.tally, 100, Instant::now() + Duration::from_secs(30)).unwrap();
        assert_eq!(r.tally.missing_and_duplicates(100), (1, 1));
        assert_eq!(
            r.tally.latency(),
            Percentiles::default(),
            "no per-line work"
        );
    }

    /// The file scenario's watch: done only once the file holds every line (and stopped
    /// growing), with its loss and duplicates.
    #[test]
    fn file_watch_finishes_when_every_line_landed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let started = Instant::now();
        let mut w = FileWatch::start(path.clone());
        let mut f = std::fs::File::create(&path).unwrap();
        for seq in 0..50 {
            writeln!(f, "x seq={seq} t=1").unwrap();
        }
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(120));
        assert!(w.poll(60).unwrap().is_none(), "50 of 60 lines");
        for seq in 50..60 {
            writeln!(f, "x seq={seq} t=1").unwrap();
        }
        f.flush().unwrap();
        let done = loop {
            if let Some(d) = w.poll(60).unwrap() {
                break d;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!((done.missing, done.duplicates), (0, 0));
        assert!(done.landed_at >= started);
    }
}
