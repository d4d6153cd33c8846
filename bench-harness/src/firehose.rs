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

/// What to send: `count` events split over `connections`, `size` bytes per line.
#[derive(Clone, Copy, Debug)]
pub struct Firehose {
    pub address: SocketAddr,
    pub connections: usize,
    pub count: u64,
    pub size: usize,
    pub framing: Framing,
    pub format: Format,
}

pub const SEQ_DIGITS: usize = 12;
const MESSAGES_PER_BUFFER: u64 = 4096;

/// One message of exactly `size` bytes with a `seq=` field of fixed width; returns the line and
/// the offset of the sequence digits.
pub fn template(format: Format, size: usize) -> (Vec<u8>, usize) {
    let head = match format {
        Format::Rfc5424 => {
            "<134>1 2026-11-23T08:00:00.123456Z web-01.example.net nginx 4242 ACCESS - ".to_string()
        }
        Format::Rfc3164 => "<134>Nov 23 08:00:00 web-01 nginx[4242]: ".to_string(),
    };
    let mut line = format!(
        "{head}seq={} GET /api/v1/items?page=3 HTTP/1.1 200 1532 ",
        "0".repeat(SEQ_DIGITS)
    );
    while line.len() < size {
        line.push('x');
    }
    line.truncate(size.max(head.len() + 4 + SEQ_DIGITS));
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

pub fn patch_seq(buf: &mut [u8], at: usize, mut seq: u64) {
    for slot in buf[at..at + SEQ_DIGITS].iter_mut().rev() {
        *slot = b'0' + (seq % 10) as u8;
        seq /= 10;
    }
}

/// Sends `count` events numbered from `first_seq` over one connection.
fn send(f: &Firehose, first_seq: u64, count: u64) -> std::io::Result<()> {
    let (mut buf, offsets) = build_buffer(f);
    let per_message = buf.len() / MESSAGES_PER_BUFFER as usize;
    let mut stream = TcpStream::connect(f.address)?;
    let mut sent = 0;
    while sent < count {
        let n = (count - sent).min(MESSAGES_PER_BUFFER);
        for (i, &at) in offsets.iter().take(n as usize).enumerate() {
            patch_seq(&mut buf, at, first_seq + sent + i as u64);
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
            .map(|c| s.spawn(move || send(f, c as u64 * per_conn, per_conn)))
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| "sender panicked".to_string())?
                .map_err(|e| e.to_string())
        })
    })?;
    Ok(per_conn * f.connections as u64)
}

/// `seq=<digits>` in a line.
pub fn seq_in(line: &[u8]) -> Option<u64> {
    let at = line.windows(4).position(|w| w == b"seq=")? + 4;
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
            assert_eq!(seq_in(&line), Some(42));
        }
    }
}
