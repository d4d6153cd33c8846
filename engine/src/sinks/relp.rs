//! The RELP sink: syslog with application acknowledgements, as rsyslog's `omrelp` speaks it
//! to `imrelp` (librelp), for Sluice → rsyslog and Sluice → Sluice chains.
//!
//! Protocol (one frame each way per message):
//! ```text
//! frame = TXNR SP COMMAND SP DATALEN [SP DATA] LF      TXNR 1..=999,999,999, then 1 again
//! open  : "relp_version=0\nrelp_software=sluice,…\ncommands=syslog"  →  "rsp" "200 OK\n…"
//! syslog: the event                                                 →  "rsp" "200 OK"
//! close                                                             →  "rsp", then "serverclose"
//! ```
//! What "delivered" means: an event is confirmed only by the receiver's `rsp 200` for its
//! transaction (the receiver took it). Up to `window` messages are in flight at once; the
//! answers come in order. A non-200 answer has that event sent again; a broken connection
//! (or `serverclose`) confirms what was answered and sends the rest again on a new connection.
//! Duplicates are possible (an event the receiver took whose answer was lost), loss is not.

use std::io::{self, BufRead, BufReader, Write};
use std::time::Duration;

use serde::Deserialize;

use super::tls_client::Stream;
use super::{Reach, SinkError, SinkSettings, StartAt};
use crate::delivery::{
    Backoff, Batch, DeliveryResult, Encoding, Failure, LineBreaks, OpenedSink, RecordEncoding,
    Sink, Verdicts,
};
use crate::units::{de_duration, render, Bounds, TypeTag, DAY, HOUR};

/// Largest transaction number; the next is 1 (librelp's rule).
const MAX_TXNR: u64 = 999_999_999;
/// Longest answer frame read (an `open` answer lists the server's offers).
const MAX_ANSWER_BYTES: usize = 64 << 10;

fn raw() -> Encoding {
    Encoding::Raw
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn hundred_ms() -> Duration {
    Duration::from_millis(100)
}
fn default_window() -> u32 {
    128
}

/// `type = "relp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelpSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// `host:port` of the RELP receiver (rsyslog's imrelp listens where `port=` says).
    pub address: String,
    /// Sources, transforms or route outputs it takes; unset: every source.
    pub inputs: Option<Vec<String>>,
    #[serde(default)]
    pub start_at: StartAt,
    /// Deliveries failing in a row before the circuit breaker opens.
    #[serde(default = "super::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit makes no attempt before one probe.
    #[serde(default = "super::default_open_for", deserialize_with = "de_duration")]
    pub open_for: Duration,
    /// `batch.max_events`, `batch.max_bytes`, `batch.timeout`.
    #[serde(default)]
    pub batch: crate::delivery::StreamBatch,
    /// The dead-letter queue's budget (`data_dir/dlq/NAME`; RELP rejects nothing for good).
    #[serde(
        default = "super::default_dlq_max_size",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub dlq_max_size: u64,
    /// Messages sent and not yet answered, at most (librelp's default window: 128).
    #[serde(default = "default_window")]
    pub window: u32,
    #[serde(default = "raw")]
    pub encoding: Encoding,
    #[serde(default)]
    pub line_breaks: LineBreaks,
    /// With `encoding = "template"`.
    pub template: Option<String>,
    #[serde(default = "five_seconds", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// An answer not read within this counts as a broken connection.
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub ack_timeout: Duration,
    #[serde(default = "hundred_ms", deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// A `tls` table turns TLS on (as imrelp's `tls="on"`): `ca_file`, `crt_file`,
    /// `key_file`, `verify`.
    pub tls: Option<super::http_client::TlsKeys>,
}

/// One RELP session.
struct Session {
    /// Reads answers; writes go through `get_mut()` from `out`.
    stream: BufReader<Stream>,
    /// Frames written and not yet flushed to the stream.
    out: Vec<u8>,
    next_txnr: u64,
}

/// A frame the receiver sent.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    txnr: u64,
    command: String,
    data: Vec<u8>,
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Reads `buf` up to (not including) `stop`, at most `max` bytes.
fn read_token(reader: &mut impl BufRead, stop: u8, max: usize) -> io::Result<Vec<u8>> {
    let mut token = Vec::new();
    loop {
        let mut byte = [0u8];
        reader.read_exact(&mut byte)?;
        if byte[0] == stop {
            return Ok(token);
        }
        if token.len() >= max {
            return Err(protocol_error("a RELP header field is too long"));
        }
        token.push(byte[0]);
    }
}

fn parse_number(token: &[u8], what: &str) -> io::Result<u64> {
    std::str::from_utf8(token)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| {
            protocol_error(format!(
                "bad RELP {what}: {:?}",
                String::from_utf8_lossy(token)
            ))
        })
}

/// Reads one frame (`TXNR SP COMMAND SP DATALEN [SP DATA] LF`).
fn read_frame(reader: &mut impl BufRead) -> io::Result<Frame> {
    let txnr = parse_number(&read_token(reader, b' ', 10)?, "transaction number")?;
    let command = String::from_utf8_lossy(&read_token(reader, b' ', 32)?).into_owned();
    // DATALEN ends with SP (data follows) or LF (no data).
    let mut len_token = Vec::new();
    let mut ended_by_lf = false;
    loop {
        let mut byte = [0u8];
        reader.read_exact(&mut byte)?;
        match byte[0] {
            b' ' => break,
            b'\n' => {
                ended_by_lf = true;
                break;
            }
            b if len_token.len() < 10 => len_token.push(b),
            _ => return Err(protocol_error("a RELP length is too long")),
        }
    }
    let len = parse_number(&len_token, "data length")? as usize;
    if len > MAX_ANSWER_BYTES {
        return Err(protocol_error(format!("a RELP answer of {len} bytes")));
    }
    let mut data = vec![0; len];
    if !ended_by_lf {
        reader.read_exact(&mut data)?;
        let mut trailer = [0u8];
        reader.read_exact(&mut trailer)?;
        if trailer[0] != b'\n' {
            return Err(protocol_error("a RELP frame without its LF trailer"));
        }
    } else if len != 0 {
        return Err(protocol_error("a RELP frame with data but no separator"));
    }
    Ok(Frame {
        txnr,
        command,
        data,
    })
}

/// Reads frames from `data` until it ends or one is bad: each frame's (txnr, command, data
/// length). For the fuzz target: never panics, never allocates more than the answer limit.
pub fn read_answers(data: &[u8]) -> Vec<(u64, String, usize)> {
    let mut reader = std::io::Cursor::new(data);
    let mut frames = Vec::new();
    while let Ok(f) = read_frame(&mut reader) {
        assert!(f.data.len() <= MAX_ANSWER_BYTES);
        frames.push((f.txnr, f.command, f.data.len()));
    }
    frames
}

fn write_frame(out: &mut impl Write, txnr: u64, command: &str, data: &[u8]) -> io::Result<()> {
    write!(out, "{txnr} {command} {}", data.len())?;
    if !data.is_empty() {
        out.write_all(b" ")?;
        out.write_all(data)?;
    }
    out.write_all(b"\n")
}

/// Whether an answer's data starts with status 200.
fn is_ok(data: &[u8]) -> bool {
    data.starts_with(b"200")
}

impl Session {
    fn open(
        config: &RelpSink,
        tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    ) -> io::Result<Session> {
        let tcp = super::tls_client::connect_any(&config.address, config.connect_timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(Some(config.ack_timeout))?;
        tcp.set_write_timeout(Some(config.ack_timeout))?;
        let stream = match tls {
            Some(c) => Stream::tls(
                tcp,
                std::sync::Arc::clone(c),
                super::tls_client::host_of(&config.address),
            )?,
            None => Stream::plain(tcp),
        };
        let mut session = Session {
            stream: BufReader::new(stream),
            out: Vec::with_capacity(256 << 10),
            next_txnr: 1,
        };
        let offers = concat!(
            "relp_version=0\nrelp_software=sluice,",
            env!("CARGO_PKG_VERSION"),
            "\ncommands=syslog"
        );
        let txnr = session.send("open", offers.as_bytes())?;
        session.flush()?;
        let answer = read_frame(&mut session.stream)?;
        if answer.txnr != txnr || answer.command != "rsp" || !is_ok(&answer.data) {
            return Err(protocol_error(format!(
                "the receiver refused the RELP session: {}",
                String::from_utf8_lossy(&answer.data)
            )));
        }
        if !answer
            .data
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(b"commands=") && l.windows(6).any(|w| w == b"syslog"))
        {
            return Err(protocol_error(
                "the RELP receiver does not offer the syslog command",
            ));
        }
        tracing::info!(address = %config.address, "relp sink connected");
        Ok(session)
    }

    /// Writes (buffered) one frame with the next transaction number; returns the number.
    fn send(&mut self, command: &str, data: &[u8]) -> io::Result<u64> {
        let txnr = self.next_txnr;
        self.next_txnr = if txnr >= MAX_TXNR { 1 } else { txnr + 1 };
        write_frame(&mut self.out, txnr, command, data)?;
        Ok(txnr)
    }

    /// Sends what was written.
    fn flush(&mut self) -> io::Result<()> {
        let stream = self.stream.get_mut();
        stream.write_all(&self.out)?;
        self.out.clear();
        stream.flush()
    }
}

struct RelpOutput {
    config: RelpSink,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    session: Option<Session>,
}

/// Where a batch stands while its messages are in flight.
struct Exchange {
    /// (transaction number, event index), oldest first.
    in_flight: std::collections::VecDeque<(u64, usize)>,
    next_event: usize,
    verdicts: Verdicts,
    answered: usize,
}

impl RelpOutput {
    /// Sends the batch in a window and reads the answers; an I/O error leaves what was
    /// answered in `ex`.
    fn exchange(&mut self, batch: &Batch, ex: &mut Exchange) -> io::Result<()> {
        if self.session.is_none() {
            self.session = Some(Session::open(&self.config, self.tls.as_ref())?);
        }
        let Some(session) = self.session.as_mut() else {
            return Err(protocol_error("no RELP session"));
        };
        let window = self.config.window.max(1) as usize;
        while ex.next_event < batch.len() || !ex.in_flight.is_empty() {
            while ex.in_flight.len() < window && ex.next_event < batch.len() {
                let event = batch.event(ex.next_event);
                let data = event.strip_suffix(b"\n").unwrap_or(event);
                let txnr = session.send("syslog", data)?;
                ex.in_flight.push_back((txnr, ex.next_event));
                ex.next_event += 1;
            }
            session.flush()?;
            let frame = read_frame(&mut session.stream)?;
            match frame.command.as_str() {
                "rsp" => {
                    let Some(&(txnr, index)) = ex.in_flight.front() else {
                        return Err(protocol_error("an answer to nothing in flight"));
                    };
                    if frame.txnr != txnr {
                        return Err(protocol_error(format!(
                            "answer for transaction {} while {txnr} was due",
                            frame.txnr
                        )));
                    }
                    ex.in_flight.pop_front();
                    ex.answered += 1;
                    if !is_ok(&frame.data) {
                        ex.verdicts.retry.push(index);
                    }
                }
                "serverclose" => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the RELP receiver closed the session",
                    ))
                }
                other => return Err(protocol_error(format!("unexpected RELP command {other}"))),
            }
        }
        Ok(())
    }
}

impl Sink for RelpOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        let mut ex = Exchange {
            in_flight: Default::default(),
            next_event: 0,
            verdicts: Verdicts::all_confirmed(),
            answered: 0,
        };
        match self.exchange(batch, &mut ex) {
            Ok(()) => Ok(ex.verdicts),
            Err(e) => {
                self.session = None;
                let error = format!("relp {}: {e}", self.config.address);
                if ex.answered == 0 {
                    return Err(Failure::retriable(error));
                }
                // What was answered stands; the rest goes again on a new session.
                tracing::warn!(%error, answered = ex.answered, "relp session broke mid-batch");
                let mut verdicts = ex.verdicts;
                verdicts.retry.extend(ex.in_flight.iter().map(|&(_, i)| i));
                verdicts.retry.extend(ex.next_event..batch.len());
                verdicts.retry.sort_unstable();
                Ok(verdicts)
            }
        }
    }

    fn reset(&mut self) {
        self.session = None;
    }
}

impl Drop for RelpOutput {
    /// Closes the session politely (best effort: the receiver copes with a dropped one).
    fn drop(&mut self) {
        if let Some(mut s) = self.session.take() {
            let _ = s
                .stream
                .get_ref()
                .tcp()
                .set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.send("close", b"").and_then(|_| s.flush());
            let _ = read_frame(&mut s.stream);
        }
    }
}

impl SinkSettings for RelpSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        super::check_template(name, self.encoding, self.template.as_deref())?;
        let invalid = |key: &str, msg: &str| Err((format!("sinks.{name}.{key}"), msg.to_string()));
        if !self.address.contains(':') {
            return invalid("address", "must be host:port");
        }
        if self.max_backoff < self.initial_backoff {
            return invalid("max_backoff", "must be at least initial_backoff");
        }
        match &self.tls {
            Some(tls) => tls.check(name),
            None => Ok(()),
        }
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let some = Duration::from_millis(1);
        b.count(&key("window"), self.window.into(), 1..=65_536);
        b.duration(&key("connect_timeout"), self.connect_timeout, some..=HOUR);
        b.duration(&key("ack_timeout"), self.ack_timeout, some..=HOUR);
        b.duration(&key("initial_backoff"), self.initial_backoff, some..=HOUR);
        b.duration(&key("max_backoff"), self.max_backoff, some..=DAY);
    }

    fn common(&self) -> super::SinkCommon<'_> {
        super::SinkCommon {
            inputs: self.inputs.as_deref(),
            start_at: self.start_at,
            circuit: crate::delivery::CircuitSettings {
                failure_threshold: self.failure_threshold,
                open_for: self.open_for,
            },
            batch: self.batch.0,
            dlq_max_size: self.dlq_max_size,
            concurrency: 1,
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("address".into(), render::text(&self.address));
        t.insert("window".into(), toml::Value::Integer(self.window.into()));
        t.insert("encoding".into(), render::text(self.encoding.name()));
        t.insert("line_breaks".into(), render::text(self.line_breaks.name()));
        if let Some(template) = &self.template {
            t.insert("template".into(), render::text(template));
        }
        for (key, d) in [
            ("connect_timeout", self.connect_timeout),
            ("ack_timeout", self.ack_timeout),
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
        ] {
            t.insert(key.into(), render::duration(d));
        }
        if let Some(tls) = &self.tls {
            t.insert("tls".into(), tls.render());
        }
        t
    }

    fn reach(&self) -> Reach<'_> {
        Reach::Destination(&self.address)
    }

    fn open(&self) -> Result<OpenedSink, SinkError> {
        Ok(OpenedSink {
            sink: Box::new(RelpOutput {
                config: self.clone(),
                tls: self
                    .tls
                    .as_ref()
                    .map(super::tls_client::client_config)
                    .transpose()
                    .map_err(|source| SinkError::Open {
                        sink_type: "relp",
                        source,
                    })?,
                session: None,
            }),
            encoding: RecordEncoding {
                encoding: self.encoding,
                framing: None,
                line_breaks: self.line_breaks,
                template: super::compile_template(self.template.as_deref()),
            },
            backoff: Backoff {
                initial: self.initial_backoff,
                max: self.max_backoff,
            },
            rejects_events: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_as_librelp_writes_them() {
        let open = b"1 rsp 39 200 OK\nrelp_version=0\ncommands=syslog,x\n";
        let f = read_frame(&mut std::io::Cursor::new(&open[..])).unwrap();
        assert_eq!((f.txnr, f.data.len()), (1, 39));
        let mut out = Vec::new();
        write_frame(&mut out, 7, "syslog", b"<13>hello").unwrap();
        assert_eq!(out, b"7 syslog 9 <13>hello\n");
        let mut r = std::io::Cursor::new(&b"2 rsp 6 200 OK\n4 rsp 0\n0 serverclose 0\n"[..]);
        let f = read_frame(&mut r).unwrap();
        assert_eq!(
            (f.txnr, f.command.as_str(), &f.data[..]),
            (2, "rsp", &b"200 OK"[..])
        );
        assert!(is_ok(&f.data));
        let f = read_frame(&mut r).unwrap();
        assert_eq!((f.txnr, f.command.as_str(), f.data.len()), (4, "rsp", 0));
        assert_eq!(read_frame(&mut r).unwrap().command, "serverclose");
        assert!(read_frame(&mut std::io::Cursor::new(&b"x rsp 0\n"[..])).is_err());
        assert!(read_frame(&mut std::io::Cursor::new(&b"1 rsp 3 abcX"[..])).is_err());
    }
}
