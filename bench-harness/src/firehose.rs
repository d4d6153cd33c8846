//! The firehose: pre-generated messages, only the zero-padded sequence number patched per
//! message, large writes. Shared by `sluice-bench load` and `sluice-bench compare`.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Newline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
}

/// What to send: `count` events split over `connections`, `size` bytes per line; as fast as
/// the receiver takes them, or at `rate` events/s in total.
#[derive(Clone, Copy, Debug)]
pub struct Firehose {
    pub address: SocketAddr,
    pub connections: usize,
    pub count: u64,
    pub size: usize,
    pub framing: Framing,
    pub format: Format,
    pub rate: Option<u64>,
}

pub const SEQ_DIGITS: usize = 12;
/// Digits of the `t=` send time (microseconds since the Unix epoch).
pub const TIME_DIGITS: usize = 16;
const MESSAGES_PER_BUFFER: u64 = 4096;

/// One message of exactly `size` bytes with fixed-width `seq=` and `t=` (send time) fields;
/// returns the line and the offset of the sequence digits (the time digits follow them after
/// " t=").
pub fn template(format: Format, size: usize) -> (Vec<u8>, usize) {
    let head = match format {
        Format::Rfc5424 => {
            "<134>1 2026-11-23T08:00:00.123456Z web-01.example.net nginx 4242 ACCESS - ".to_string()
        }
        Format::Rfc3164 => "<134>Nov 23 08:00:00 web-01 nginx[4242]: ".to_string(),
    };
    let mut line = format!(
        "{head}seq={} t={} GET /api/v1/items?page=3 HTTP/1.1 200 1532 ",
        "0".repeat(SEQ_DIGITS),
        "0".repeat(TIME_DIGITS)
    );
    while line.len() < size {
        line.push('x');
    }
    line.truncate(size.max(head.len() + 4 + SEQ_DIGITS + 3 + TIME_DIGITS));
    (line.into_bytes(), head.len() + 4)
}

/// A buffer of framed messages and the offsets of their seq digits.
fn build_buffer(f: &Firehose) -> (Vec<u8>, Vec<usize>) {
    let (line, seq_at) = template(f.format, f.size);
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for _ in 0..MESSAGES_PER_BUFFER {
        if f.framing == Framing::OctetCounting {
            buf.extend_from_slice(format!("{} ", line.len()).as_bytes());
        }
        offsets.push(buf.len() + seq_at);
        buf.extend_from_slice(&line);
        if f.framing == Framing::Newline {
            buf.push(b'\n');
        }
    }
    (buf, offsets)
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

/// Sends `count` events numbered from `first_seq` over one connection, at `rate` events/s
/// if given (in 1 ms steps), each stamped with the time its write started.
fn send(f: &Firehose, first_seq: u64, count: u64, rate: Option<u64>) -> std::io::Result<()> {
    let (mut buf, offsets) = build_buffer(f);
    let per_message = buf.len() / MESSAGES_PER_BUFFER as usize;
    let mut stream = TcpStream::connect(f.address)?;
    stream.set_nodelay(true)?;
    let step = rate.map_or(MESSAGES_PER_BUFFER, |r| {
        (r / 1000).clamp(1, MESSAGES_PER_BUFFER)
    });
    let started = std::time::Instant::now();
    let mut sent = 0;
    while sent < count {
        if let Some(r) = rate {
            let due = started + std::time::Duration::from_secs_f64(sent as f64 / r as f64);
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let n = (count - sent).min(step);
        let now = now_micros();
        for (i, &at) in offsets.iter().take(n as usize).enumerate() {
            patch_seq(&mut buf, at, first_seq + sent + i as u64);
            patch_time(&mut buf, at, now);
        }
        stream.write_all(&buf[..n as usize * per_message])?;
        sent += n;
    }
    Ok(())
}

/// Sends everything (one thread per connection); returns the events sent. Sequence numbers
/// are `0..total`, unique across connections.
pub fn run(f: &Firehose) -> Result<u64, String> {
    let per_conn = f.count / f.connections as u64;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..f.connections)
            .map(|c| {
                let rate = f.rate.map(|r| (r / f.connections as u64).max(1));
                s.spawn(move || send(f, c as u64 * per_conn, per_conn, rate))
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| "sender panicked".to_string())?
                .map_err(|e| e.to_string())
        })
    })?;
    Ok(per_conn * f.connections as u64)
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
    let at = line.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_requested_size_and_patchable_seq() {
        for format in [Format::Rfc5424, Format::Rfc3164] {
            let (mut line, at) = template(format, 200);
            assert_eq!(line.len(), 200);
            patch_seq(&mut line, at, 42);
            patch_time(&mut line, at, 1_795_435_200_123_456);
            assert_eq!(seq_in(&line), Some(42));
            assert_eq!(time_in(&line), Some(1_795_435_200_123_456));
        }
    }
}
