//! The TCP forward sink: to another Sluice or any syslog receiver.
//!
//! What "delivered" means here, exactly:
//! - A batch is confirmed (and the cursor may pass it) only once the receiver's TCP has
//!   acknowledged every byte of it: after writing, the sink waits until the socket's send queue
//!   is empty (`SIOCOUTQ` = 0), bounded by `write_timeout`. Bytes still in Sluice's send queue
//!   are never counted as sent.
//! - An acknowledgement only says the receiver's kernel has the bytes, not that the receiving
//!   program read them: if it dies, what sat unread in its receive buffer is gone. So the sink
//!   keeps the last `replay_window` bytes it confirmed (whole batches) and, after every
//!   reconnect, sends them again before anything new. Killing the receiver costs duplicates,
//!   never loss, as long as the window is larger than what the receiver may hold unread (its
//!   receive buffer plus its own buffers; the default 8 MiB exceeds Linux's largest autotuned
//!   receive buffer).
//! - Not covered: the receiver dying *and* Sluice restarting before it reconnected (the window
//!   lives in memory), or a receiver that loses what it read into its own memory and has
//!   already been sent past the window. Only an acknowledged protocol (RELP, where the receiver
//!   says a message was processed) closes those gaps.
//! - After any error the connection is dropped and the whole batch resent on a new one. While
//!   idle, the sink watches its connection: when the receiver went away after everything was
//!   confirmed, it reconnects and sends the window again without waiting for a new batch.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{Reach, SinkError, SinkSettings};
use crate::delivery::{Backoff, Encoding, LineBreaks, OpenedSink, RecordEncoding, TcpFraming};
use crate::units::{de_bytes, de_duration, render, Bounds, TypeTag, DAY, HOUR};

use super::tls_client::Stream;
use crate::delivery::{Batch, DeliveryResult, Sink, Verdicts};

pub struct TcpOutput {
    config: TcpSink,
    /// Set with `tls`: every connection speaks TLS (RFC 5425).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    conn: Option<Stream>,
    /// Confirmed batches, newest last, at most `replay_window` bytes (plus one batch).
    replay: VecDeque<Vec<u8>>,
    replay_bytes: usize,
    /// A buffer dropped from the window, reused for the next batch kept (a fresh allocation
    /// of a batch's size per batch cost page faults and an munmap each).
    spare: Option<Vec<u8>>,
    /// A connection broke after batches were confirmed on it: the window is owed to the next.
    replay_owed: bool,
}

/// How often the send queue is looked at while waiting for the receiver's acknowledgement.
const ACK_POLL: Duration = Duration::from_micros(200);

impl TcpOutput {
    /// Reads the TLS files (an error names the file).
    pub fn new(config: &TcpSink) -> io::Result<Self> {
        let tls = config
            .tls
            .as_ref()
            .map(super::tls_client::client_config)
            .transpose()?;
        Ok(TcpOutput {
            tls,
            config: config.clone(),
            conn: None,
            replay: VecDeque::new(),
            replay_bytes: 0,
            spare: None,
            replay_owed: false,
        })
    }

    /// The connection, made anew (and the replay window sent on it) when there is none.
    fn connection(&mut self) -> io::Result<&mut Stream> {
        if self.conn.is_none() {
            let mut stream = self.connect()?;
            self.send_replay(&mut stream)?;
            self.replay_owed = false;
            self.conn = Some(stream);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn connect(&self) -> io::Result<Stream> {
        let tcp = self.connect_tcp()?;
        match &self.tls {
            Some(config) => {
                let host = super::tls_client::host_of(&self.config.address);
                Stream::tls(tcp, std::sync::Arc::clone(config), host)
            }
            None => Ok(Stream::plain(tcp)),
        }
    }

    fn connect_tcp(&self) -> io::Result<TcpStream> {
        let stream =
            super::tls_client::connect_any(&self.config.address, self.config.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(self.config.write_timeout))?;
        if let Ok(addr) = stream.peer_addr() {
            tracing::info!(%addr, "tcp sink connected");
        }
        Ok(stream)
    }

    /// What a receiver that died may not have read: sent again, first thing on a new
    /// connection.
    fn send_replay(&self, stream: &mut Stream) -> io::Result<()> {
        if self.replay_bytes == 0 {
            return Ok(());
        }
        tracing::info!(
            bytes = self.replay_bytes,
            "tcp sink: re-sending the replay window on the new connection"
        );
        for batch in &self.replay {
            stream.write_all(batch)?;
        }
        stream.flush()?;
        wait_acknowledged(stream.tcp(), self.config.write_timeout)
    }

    fn remember(&mut self, batch: &[u8]) {
        let window = self.config.replay_window as usize;
        if window == 0 {
            return;
        }
        let mut kept = self.spare.take().unwrap_or_default();
        kept.clear();
        kept.extend_from_slice(batch);
        self.replay.push_back(kept);
        self.replay_bytes += batch.len();
        // Keep whole batches; drop the oldest while the rest still cover the window.
        while let Some(oldest) = self.replay.front() {
            if self.replay_bytes - oldest.len() < window {
                break;
            }
            self.replay_bytes -= oldest.len();
            self.spare = self.replay.pop_front();
        }
    }
}

/// Waits until the socket's send queue is empty: every byte written is acknowledged by the
/// receiver's TCP. Fails after `timeout`, or when the connection broke (a reset purges the
/// send queue too: an empty queue alone proves nothing).
fn wait_acknowledged(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        let queued = unacknowledged_bytes(stream)?;
        if !matches!(tcp_state(stream)?, TCP_ESTABLISHED | TCP_CLOSE_WAIT) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the connection closed before the receiver acknowledged the batch",
            ));
        }
        if queued == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the receiver did not acknowledge the batch in time",
            ));
        }
        std::thread::sleep(ACK_POLL);
    }
}

/// `tcpi_state` values (linux/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

fn tcp_state(stream: &TcpStream) -> io::Result<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: tcp_info is plain old data; zeroed is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_state)
}

/// Bytes in the send queue not yet acknowledged by the peer (`SIOCOUTQ`).
fn unacknowledged_bytes(stream: &TcpStream) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one c_int into the pointer we pass.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(queued.max(0) as usize)
}

impl TcpOutput {
    /// Writes the batch's bytes; `Ok` once confirmed.
    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let address = self.config.address.clone();
        let timeout = self.config.write_timeout;
        let conn = self.connection()?;
        conn.write_all(batch)
            .and_then(|()| conn.flush())
            .and_then(|()| wait_acknowledged(conn.tcp(), timeout))
            .map_err(|e| io::Error::new(e.kind(), format!("deliver to {address}: {e}")))?;
        self.remember(batch);
        Ok(())
    }
}

impl Sink for TcpOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        self.write_batch(batch.bytes())?;
        Ok(Verdicts::all_confirmed())
    }

    fn reset(&mut self) {
        self.conn = None;
        self.replay_owed = self.replay_bytes > 0;
    }

    fn idle(&mut self) {
        let broken = self
            .conn
            .as_ref()
            .is_some_and(|c| !receiver_still_there(c.tcp()));
        if broken {
            tracing::info!(address = %self.config.address, "tcp sink: the receiver went away while idle: reconnecting to send the replay window");
            self.reset();
        }
        if self.conn.is_none() && self.replay_owed {
            if let Err(e) = self.connection() {
                tracing::debug!(error = %e, "tcp sink: reconnect while idle failed; trying again");
                self.conn = None;
            }
        }
    }
}

/// The connection is up and the receiver has not closed or reset it.
fn receiver_still_there(stream: &TcpStream) -> bool {
    matches!(stream.take_error(), Ok(None)) && matches!(tcp_state(stream), Ok(TCP_ESTABLISHED))
}

// ---- Configuration: `[sinks.NAME]` with `type = "tcp"` ----

/// The default TCP sink replay window: more than a loopback receive buffer can hold (Linux
/// autotunes up to `net.ipv4.tcp_rmem`'s maximum, 6 MiB by default).
pub const DEFAULT_REPLAY_WINDOW: u64 = 8 << 20;

/// `type = "tcp"`: forwards to another syslog receiver (another Sluice, rsyslog, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// `host:port` of the receiver (resolved at each connect).
    pub address: String,
    /// Sources, transforms or route outputs it takes; unset: every source.
    pub inputs: Option<Vec<String>>,
    /// Without a cursor yet: `"end"` (default) or `"oldest"` (back-fill what the WAL holds).
    #[serde(default)]
    pub start_at: super::StartAt,
    /// Deliveries failing in a row before the circuit breaker opens.
    #[serde(default = "super::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit makes no attempt before one probe.
    #[serde(
        default = "super::default_open_for",
        deserialize_with = "crate::units::de_duration"
    )]
    pub open_for: std::time::Duration,
    /// `batch.max_events`, `batch.max_bytes`, `batch.timeout`.
    #[serde(default)]
    pub batch: crate::delivery::StreamBatch,
    /// The dead-letter queue's budget (`data_dir/dlq/NAME`).
    #[serde(
        default = "super::default_dlq_max_size",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub dlq_max_size: u64,
    #[serde(default)]
    pub framing: TcpFraming,
    #[serde(default = "raw")]
    pub encoding: Encoding,
    #[serde(default = "five_seconds", deserialize_with = "de_duration")]
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles per failure (with full jitter) up to `max_backoff`.
    #[serde(default = "hundred_ms", deserialize_with = "de_duration")]
    pub initial_backoff: Duration,
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub max_backoff: Duration,
    /// A write blocked longer than this counts as failed (the batch is resent).
    #[serde(default = "thirty_seconds", deserialize_with = "de_duration")]
    pub write_timeout: Duration,
    #[serde(default)]
    pub line_breaks: LineBreaks,
    /// With `encoding = "template"`: `"{{timestamp}} {{hostname}} {{message}}"`.
    pub template: Option<String>,
    /// Bytes already confirmed (acknowledged by the receiver's TCP) that are sent again after
    /// every reconnect: what a receiver that died may have held unread.
    #[serde(default = "default_replay_window", deserialize_with = "de_bytes")]
    pub replay_window: u64,
    /// A `tls` table turns TLS on (RFC 5425): `ca_file`, `crt_file`, `key_file`, `verify`.
    pub tls: Option<super::http_client::TlsKeys>,
}

fn raw() -> Encoding {
    Encoding::Raw
}
fn five_seconds() -> Duration {
    Duration::from_secs(5)
}
fn hundred_ms() -> Duration {
    Duration::from_millis(100)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}
fn default_replay_window() -> u64 {
    DEFAULT_REPLAY_WINDOW
}

impl SinkSettings for TcpSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        super::check_template(name, self.encoding, self.template.as_deref())?;
        if let Some(tls) = &self.tls {
            tls.check(name)?;
        }
        let invalid = |key: &str, msg: &str| Err((format!("sinks.{name}.{key}"), msg.to_string()));
        if !self.address.contains(':') {
            return invalid("address", "must be host:port");
        }
        if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            return invalid(
                "max_backoff",
                "backoffs must be positive and max_backoff >= initial_backoff",
            );
        }
        Ok(())
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        let some = Duration::from_millis(1);
        b.size(&key("replay_window"), self.replay_window, 0..=1 << 30);
        b.duration(&key("connect_timeout"), self.connect_timeout, some..=HOUR);
        b.duration(&key("write_timeout"), self.write_timeout, some..=HOUR);
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
        let framing = match self.framing {
            TcpFraming::OctetCounting => "octet_counting",
            TcpFraming::Newline => "newline",
        };
        t.insert("framing".into(), render::text(framing));
        t.insert("encoding".into(), render::text(self.encoding.name()));
        t.insert(
            "connect_timeout".into(),
            render::duration(self.connect_timeout),
        );
        t.insert(
            "initial_backoff".into(),
            render::duration(self.initial_backoff),
        );
        t.insert("max_backoff".into(), render::duration(self.max_backoff));
        t.insert("write_timeout".into(), render::duration(self.write_timeout));
        t.insert("line_breaks".into(), render::text(self.line_breaks.name()));
        if let Some(template) = &self.template {
            t.insert("template".into(), render::text(template));
        }
        t.insert("replay_window".into(), render::bytes(self.replay_window));
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
            sink: Box::new(TcpOutput::new(self).map_err(|source| SinkError::Open {
                sink_type: "tcp",
                source,
            })?),
            encoding: RecordEncoding {
                encoding: self.encoding,
                framing: Some(self.framing),
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
    use crate::config::{Encoding, LineBreaks, TcpFraming};

    fn config(address: String, replay_window: u64) -> TcpSink {
        TcpSink {
            tag: crate::config::TypeTag,
            address,
            inputs: None,
            start_at: crate::sinks::StartAt::End,
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            batch: Default::default(),
            dlq_max_size: 1 << 30,
            framing: TcpFraming::Newline,
            encoding: Encoding::Raw,
            connect_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(100),
            write_timeout: Duration::from_secs(30),
            line_breaks: LineBreaks::Escape,
            replay_window,
            template: None,
            tls: None,
        }
    }

    #[test]
    fn the_replay_window_keeps_whole_recent_batches() {
        let mut out = TcpOutput::new(&config("127.0.0.1:1".into(), 10)).unwrap();
        for batch in [&b"aaaa\n"[..], b"bbbb\n", b"cccc\n", b"dd\n"] {
            out.remember(batch);
        }
        let kept: Vec<&[u8]> = out.replay.iter().map(Vec::as_slice).collect();
        assert_eq!(kept, [&b"bbbb\n"[..], b"cccc\n", b"dd\n"]);
        assert_eq!(out.replay_bytes, 13);
    }

    /// A reconnect sends the window again before the new batch.
    #[test]
    fn a_new_connection_starts_with_the_replay_window() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut out =
            TcpOutput::new(&config(listener.local_addr().unwrap().to_string(), 1 << 20)).unwrap();
        let reader = std::thread::spawn(move || {
            let mut texts = Vec::new();
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut text = String::new();
                conn.read_to_string(&mut text).unwrap();
                texts.push(text);
            }
            texts
        });
        out.write_batch(b"one\n").unwrap();
        out.write_batch(b"two\n").unwrap();
        out.reset();
        out.write_batch(b"three\n").unwrap();
        out.reset();
        let texts = reader.join().unwrap();
        assert_eq!(texts, ["one\ntwo\n", "one\ntwo\nthree\n"]);
    }
}
