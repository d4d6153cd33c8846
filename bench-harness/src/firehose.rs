//! The firehose: pre-generated messages, only the zero-padded sequence number and send time
//! patched per message, large writes. Shared by `sluice-bench load` and `sluice-bench compare`.
//!
//! Every message carries `seq=<12 digits>` (unique across connections: connection `c` sends
//! `c * per_connection ..`) and `t=<16 digits>` (send time, µs since the Unix epoch), in the
//! free-text part of every format, so a receiver can check loss, duplicates and latency
//! whatever the server re-encodes around them.
//!
//! TCP: one thread per connection, 4096 messages per buffer, one `write` per step (all 4096
//! at full speed, `rate / 1000` per 1 ms step at a target rate). UDP: one datagram per
//! message (`sendmmsg` would save syscalls, but a UDP receiver is the bottleneck long before).

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Newline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
    /// One JSON object per line (`message`, `host`, `app`, `severity`).
    JsonLines,
    /// RFC 5424 at severity warning whose message is a JSON object (`http`, `user`, `msg`):
    /// what a processing chain parses (`sluice-bench processing`).
    Rfc5424JsonBody,
    /// RFC 5424 whose free text after `seq=`/`t=` is drawn at random per message (words,
    /// numbers, addresses; seeded): WAL compression sees what real logs give it.
    Rfc5424Varied,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    /// One datagram per message (framing does not apply).
    Udp,
}

/// Bytes per message (without framing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sizes {
    Fixed(usize),
    /// Uniform between the two bounds (inclusive); the same sequence every run (seeded).
    Uniform {
        min: usize,
        max: usize,
    },
}

/// What to send: `count` events split over `connections`, as fast as the receiver takes them
/// or at `rate` events/s in total, for at most `duration` if given.
#[derive(Clone, Copy, Debug)]
pub struct Firehose {
    pub address: SocketAddr,
    pub transport: Transport,
    pub connections: usize,
    pub count: u64,
    pub size: usize,
    /// Overrides `size` when set to a distribution.
    pub sizes: Option<Sizes>,
    pub framing: Framing,
    pub format: Format,
    pub rate: Option<u64>,
    pub duration: Option<Duration>,
}

impl Default for Firehose {
    fn default() -> Self {
        Firehose {
            address: ([127, 0, 0, 1], 5514).into(),
            transport: Transport::Tcp,
            connections: 4,
            count: 1_000_000,
            size: 200,
            sizes: None,
            framing: Framing::OctetCounting,
            format: Format::Rfc5424,
            rate: None,
            duration: None,
        }
    }
}

/// What went out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    pub sent: u64,
    pub bytes: u64,
    /// The sequence numbers sent, per connection: `[start, end)`.
    pub ranges: Vec<(u64, u64)>,
}

pub const SEQ_DIGITS: usize = 12;
/// Digits of the `t=` send time (microseconds since the Unix epoch).
pub const TIME_DIGITS: usize = 16;
const MESSAGES_PER_BUFFER: usize = 4096;
const SIZES_SEED: u64 = 0x5149_4345;

/// The smallest message that still holds the header and the `seq=`/`t=` fields.
pub fn min_size(format: Format) -> usize {
    template(format, 0).0.len()
}

/// One message of `size` bytes (or the minimum) with fixed-width `seq=` and `t=` (send time)
/// fields; returns the message and the offset of the sequence digits (the time digits follow
/// them after " t=").
pub fn template(format: Format, size: usize) -> (Vec<u8>, usize) {
    let (head, tail) = match format {
        Format::Rfc5424 | Format::Rfc5424Varied => (
            "<134>1 2026-11-23T08:00:00.123456Z web-01.example.net nginx 4242 ACCESS - ",
            "",
        ),
        Format::Rfc3164 => ("<134>Nov 23 08:00:00 web-01 nginx[4242]: ", ""),
        Format::JsonLines => (
            "{\"message\":\"",
            "\",\"host\":\"web-01\",\"app\":\"nginx\",\"severity\":\"info\"}",
        ),
        Format::Rfc5424JsonBody => (
            "<132>1 2026-11-23T08:00:00.123456Z web-01.example.net api 4242 - - {\"http\":{\"method\":\"GET\",\"status\":200},\"user\":\"u-1234\",\"msg\":\"",
            "\"}",
        ),
    };
    let fields = format!(
        "seq={} t={}",
        "0".repeat(SEQ_DIGITS),
        "0".repeat(TIME_DIGITS)
    );
    let text = " GET /api/v1/items?page=3 HTTP/1.1 200 1532 ";
    let fixed = head.len() + fields.len() + tail.len();
    let mut body = text.to_string();
    while fixed + body.len() < size {
        body.push('x');
    }
    body.truncate(size.saturating_sub(fixed));
    let message = format!("{head}{fields}{body}{tail}");
    (message.into_bytes(), head.len() + 4)
}

/// A buffer of framed messages: the bytes, and per message the offset of its seq digits and
/// the offset where it (with its framing) ends.
struct Batch {
    bytes: Vec<u8>,
    seq_at: Vec<usize>,
    ends: Vec<usize>,
}

fn build_batch(f: &Firehose, connection: usize) -> Batch {
    let mut rng = fastrand::Rng::with_seed(SIZES_SEED + connection as u64);
    let mut batch = Batch {
        bytes: Vec::new(),
        seq_at: Vec::with_capacity(MESSAGES_PER_BUFFER),
        ends: Vec::with_capacity(MESSAGES_PER_BUFFER),
    };
    for _ in 0..MESSAGES_PER_BUFFER {
        let size = match f.sizes.unwrap_or(Sizes::Fixed(f.size)) {
            Sizes::Fixed(n) => n,
            Sizes::Uniform { min, max } => rng.usize(min.min(max)..=max.max(min)),
        };
        let (mut message, seq_at) = template(f.format, size);
        // (After the space that ends the `t=` digits.)
        let text_at = seq_at + SEQ_DIGITS + " t=".len() + TIME_DIGITS + 1;
        if let (Format::Rfc5424Varied, Some(text)) = (f.format, message.get_mut(text_at..)) {
            vary_text(text, &mut rng);
        }
        let framed = f.transport == Transport::Tcp;
        if framed && f.framing == Framing::OctetCounting {
            batch
                .bytes
                .extend_from_slice(format!("{} ", message.len()).as_bytes());
        }
        batch.seq_at.push(batch.bytes.len() + seq_at);
        batch.bytes.extend_from_slice(&message);
        if framed && f.framing == Framing::Newline {
            batch.bytes.push(b'\n');
        }
        batch.ends.push(batch.bytes.len());
    }
    batch
}

/// Overwrites `text` with words and numbers drawn from `rng`, like an access or application
/// log's free text (about 3–8× under zstd, as real logs are; one repeated line is 30×+).
fn vary_text(text: &mut [u8], rng: &mut fastrand::Rng) {
    const WORDS: &[&str] = &[
        "GET",
        "POST",
        "PUT",
        "DELETE",
        "/api/v1/items",
        "/api/v2/orders",
        "/login",
        "/static/app.js",
        "/healthz",
        "/search",
        "HTTP/1.1",
        "HTTP/2.0",
        "user",
        "session",
        "request",
        "completed",
        "failed",
        "timeout",
        "retry",
        "connection",
        "reset",
        "by",
        "peer",
        "cache",
        "miss",
        "hit",
        "upstream",
        "backend",
        "db",
        "query",
        "took",
        "rows",
        "status",
        "bytes",
        "agent",
        "Mozilla/5.0",
        "curl/8.5.0",
        "okhttp/4.12",
        "warn",
        "error",
        "info",
        "debug",
        "shard",
    ];
    let mut out = String::with_capacity(text.len() + 32);
    while out.len() < text.len() {
        match rng.u8(0..6) {
            0 => out.push_str(&format!(
                "{}.{}.{}.{} ",
                rng.u8(1..=223),
                rng.u8(..),
                rng.u8(..),
                rng.u8(1..255)
            )),
            1 => out.push_str(&format!("id={} ", rng.u32(..))),
            2 => out.push_str(&format!("{}ms ", rng.u16(0..5000))),
            3 => out.push_str(&format!("req-{:08x} ", rng.u32(..))),
            _ => {
                out.push_str(WORDS[rng.usize(..WORDS.len())]);
                out.push(' ');
            }
        }
    }
    text.copy_from_slice(&out.as_bytes()[..text.len()]);
}

pub fn patch_seq(buf: &mut [u8], at: usize, seq: u64) {
    patch_digits(&mut buf[at..at + SEQ_DIGITS], seq);
}

/// Writes the send time into the message whose seq digits start at `seq_at`.
fn patch_time(buf: &mut [u8], seq_at: usize, micros: u64) {
    let at = seq_at + SEQ_DIGITS + 3;
    patch_digits(&mut buf[at..at + TIME_DIGITS], micros);
}

fn patch_digits(slots: &mut [u8], mut value: u64) {
    for slot in slots.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Microseconds since the Unix epoch.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

enum Wire {
    Tcp(TcpStream),
    Udp(UdpSocket),
}

impl Wire {
    fn open(f: &Firehose) -> std::io::Result<Wire> {
        match f.transport {
            Transport::Tcp => {
                let s = TcpStream::connect(f.address)?;
                s.set_nodelay(true)?;
                Ok(Wire::Tcp(s))
            }
            Transport::Udp => {
                let local: SocketAddr = if f.address.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let s = UdpSocket::bind(local)?;
                s.connect(f.address)?;
                Ok(Wire::Udp(s))
            }
        }
    }

    /// Sends messages `from..to` of the batch.
    fn send(&mut self, batch: &Batch, from: usize, to: usize) -> std::io::Result<()> {
        let start = if from == 0 { 0 } else { batch.ends[from - 1] };
        match self {
            Wire::Tcp(s) => s.write_all(&batch.bytes[start..batch.ends[to - 1]]),
            Wire::Udp(s) => {
                let mut at = start;
                for &end in &batch.ends[from..to] {
                    s.send(&batch.bytes[at..end])?;
                    at = end;
                }
                Ok(())
            }
        }
    }
}

/// Sends up to `count` events numbered from `first_seq` over one connection, at `rate`
/// events/s if given (in 1 ms steps), until `deadline`; each stamped with the time its write
/// started. Returns (events, bytes) sent.
fn send(
    f: &Firehose,
    connection: usize,
    first_seq: u64,
    count: u64,
    rate: Option<u64>,
    deadline: Option<Instant>,
) -> std::io::Result<(u64, u64)> {
    let mut batch = build_batch(f, connection);
    let mut wire = Wire::open(f)?;
    let step = rate.map_or(MESSAGES_PER_BUFFER as u64, |r| {
        (r / 1000).clamp(1, MESSAGES_PER_BUFFER as u64)
    });
    let started = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    // The first step always goes out, so a bounded run never sends nothing.
    while sent < count && (sent == 0 || deadline.is_none_or(|d| Instant::now() < d)) {
        if let Some(r) = rate {
            let due = started + Duration::from_secs_f64(sent as f64 / r as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let n = (count - sent).min(step) as usize;
        let now = now_micros();
        for (i, &at) in batch.seq_at.iter().take(n).enumerate() {
            patch_seq(&mut batch.bytes, at, first_seq + sent + i as u64);
            patch_time(&mut batch.bytes, at, now);
        }
        wire.send(&batch, 0, n)?;
        sent += n as u64;
        bytes += batch.ends[n - 1] as u64;
    }
    Ok((sent, bytes))
}

/// Sends everything (one thread per connection). Sequence numbers are unique across
/// connections: connection `c` starts at `c * (count / connections)`.
pub fn run(f: &Firehose) -> Result<Sent, String> {
    let connections = f.connections.max(1);
    let per_conn = f.count / connections as u64;
    let deadline = f.duration.map(|d| Instant::now() + d);
    let results = std::thread::scope(|s| {
        let handles: Vec<_> = (0..connections)
            .map(|c| {
                let rate = f.rate.map(|r| (r / connections as u64).max(1));
                s.spawn(move || send(f, c, c as u64 * per_conn, per_conn, rate, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| "sender panicked".to_string())?
                    .map_err(|e| format!("send to {}: {e}", f.address))
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut out = Sent::default();
    for (c, (events, bytes)) in results.into_iter().enumerate() {
        let start = c as u64 * per_conn;
        out.sent += events;
        out.bytes += bytes;
        out.ranges.push((start, start + events));
    }
    Ok(out)
}

/// `t=<digits>` (send time, µs) in a line.
pub fn time_in(line: &[u8]) -> Option<u64> {
    number_after(line, b" t=")
}

/// `seq=<digits>` in a line.
pub fn seq_in(line: &[u8]) -> Option<u64> {
    number_after(line, b"seq=")
}

/// The decimal number right after the first `marker` in `line`.
fn number_after(line: &[u8], marker: &[u8]) -> Option<u64> {
    let at = memchr::memmem::find(line, marker)? + marker.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn messages_have_the_requested_size_and_patchable_seq() {
        for format in [
            Format::Rfc5424,
            Format::Rfc3164,
            Format::JsonLines,
            Format::Rfc5424JsonBody,
            Format::Rfc5424Varied,
        ] {
            let (mut line, at) = template(format, 200);
            assert_eq!(line.len(), 200);
            patch_seq(&mut line, at, 42);
            patch_time(&mut line, at, 1_795_435_200_123_456);
            assert_eq!(seq_in(&line), Some(42));
            assert_eq!(time_in(&line), Some(1_795_435_200_123_456));
            let (short, _) = template(format, 10);
            assert_eq!(
                short.len(),
                min_size(format),
                "never shorter than its fields"
            );
        }
        let (json, _) = template(Format::JsonLines, 300);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.starts_with("{\"message\":\"seq=") && text.ends_with("\"info\"}"));
    }

    #[test]
    fn varied_messages_differ_and_keep_their_fields() {
        let f = Firehose {
            format: Format::Rfc5424Varied,
            framing: Framing::Newline,
            ..Firehose::default()
        };
        let mut batch = build_batch(&f, 0);
        for (i, &at) in batch.seq_at.iter().enumerate() {
            patch_seq(&mut batch.bytes, at, i as u64);
            patch_time(&mut batch.bytes, at, 1_795_435_200_123_456);
        }
        let lines: Vec<&[u8]> = batch
            .bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), MESSAGES_PER_BUFFER);
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line.len(), 200);
            assert_eq!(seq_in(line), Some(i as u64));
            assert_eq!(time_in(line), Some(1_795_435_200_123_456));
        }
        let texts: std::collections::HashSet<&[u8]> = lines.iter().map(|l| &l[120..]).collect();
        assert!(
            texts.len() > MESSAGES_PER_BUFFER * 9 / 10,
            "the free text varies"
        );
    }

    #[test]
    fn size_distribution_stays_within_bounds_and_varies() {
        let f = Firehose {
            sizes: Some(Sizes::Uniform { min: 150, max: 400 }),
            framing: Framing::Newline,
            ..Firehose::default()
        };
        let batch = build_batch(&f, 0);
        let mut start = 0;
        let mut sizes = std::collections::HashSet::new();
        for &end in &batch.ends {
            let len = end - start - 1;
            assert!((150..=400).contains(&len), "{len}");
            sizes.insert(len);
            start = end;
        }
        assert!(sizes.len() > 100, "sizes vary: {}", sizes.len());
    }

    #[test]
    fn udp_sends_one_datagram_per_message_and_stops_at_count() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let f = Firehose {
            address: receiver.local_addr().unwrap(),
            transport: Transport::Udp,
            connections: 2,
            count: 10,
            format: Format::Rfc3164,
            ..Firehose::default()
        };
        let sent = run(&f).unwrap();
        assert_eq!(sent.sent, 10);
        assert_eq!(sent.ranges, vec![(0, 5), (5, 10)]);
        let mut seqs = Vec::new();
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(n, 200);
            seqs.push(seq_in(&buf[..n]).unwrap());
        }
        seqs.sort();
        assert_eq!(seqs, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn tcp_octet_counting_frames_and_a_duration_bound_stops_early() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let f = Firehose {
            address: listener.local_addr().unwrap(),
            connections: 1,
            count: u64::MAX / 2,
            rate: Some(10_000),
            duration: Some(Duration::from_millis(50)),
            ..Firehose::default()
        };
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            s.read_to_end(&mut all).unwrap();
            all
        });
        let sent = run(&f).unwrap();
        let bytes = reader.join().unwrap();
        assert!(sent.sent > 0 && sent.sent < 10_000, "{}", sent.sent);
        assert_eq!(bytes.len() as u64, sent.bytes);
        // Every frame is "200 " + 200 bytes; the seqs are 0.. in order.
        for (i, frame) in bytes.chunks(204).enumerate() {
            assert!(frame.starts_with(b"200 <134>1 "));
            assert_eq!(seq_in(frame), Some(i as u64));
        }
    }
}
