//! `type = "stdin"`: lines from Sluice's standard input (`journalctl -f -o json | sluice run
//! …`), on shard 0.
//!
//! A thread reads fd 0 (a pipe or a file: whatever it is, blocking reads work) and writes what
//! it read into a socket pair; shard 0 reads the other end through its io_uring like a
//! connection. When the WAL cannot take more, shard 0 stops reading, the socket pair fills,
//! the thread blocks on its write and stops reading stdin: the writer upstream is pushed back.
//!
//! Invariants:
//! - Lines are newline-framed (never octet-counted), at most `max_frame` (longer ones
//!   truncated and flagged). `format = "syslog"` parses them like a syslog source's frames;
//!   `format = "json"` takes each line as a JSON object (its `message`, its members as fields;
//!   a line that is not one is kept raw and counted as `bad_format`).
//! - End of input: the last unterminated line is an event; if stdin is the config's only
//!   source, Sluice then stops as on SIGTERM (everything durable is delivered within
//!   `shutdown_timeout`), so `producer | sluice run` ends when the producer does.
//! - One reader per process: a reload that adds a stdin source again gets nothing more to read.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_lite::AsyncReadExt;
use glommio::net::UnixStream;
use glommio::sync::Gate;
use ingest::framing::{FrameFlags, Framer, FramingMode};
use serde::Deserialize;

use super::events::{ingest_json_line, Origin};
use super::limits::ConnectionLimits;
use super::syslog::ParserKind;
use super::{BoundSource, SharedLimits, SourceError, SourceMode, SourceRun, SourceSettings};
use super::{SourceSpec, SpecContext, MAX_FRAME_LIMIT};
use crate::metrics::{BatchTally, SourceCounters};
use crate::shard::ingest::{add_to_source, ingest_frame, BatchClock, FrameIn};
use crate::shard::Shard;
use crate::units::{de_bytes, render, Bounds, TypeTag};

/// `type = "stdin"`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdinSource {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    /// How each line is read.
    #[serde(default)]
    pub format: LineFormat,
    /// `format = "syslog"`: how lines are parsed.
    #[serde(default)]
    pub parser: ParserKind,
    /// Longer lines are truncated and flagged.
    #[serde(default = "default_max_frame", deserialize_with = "de_bytes")]
    pub max_frame: u64,
}

/// `format`: what a line of a local input is.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// A syslog message (or any text: `parser = "raw"`).
    #[default]
    Syslog,
    /// A JSON object: its `message` and its members as fields.
    Json,
}

impl LineFormat {
    pub(crate) fn name(self) -> &'static str {
        match self {
            LineFormat::Syslog => "syslog",
            LineFormat::Json => "json",
        }
    }
}

fn default_max_frame() -> u64 {
    64 << 10
}

/// The read buffer: room for one whole line and more.
const READ_BUFFER: usize = 256 << 10;
/// Set once a stdin reader has started (there is one standard input).
static STDIN_TAKEN: AtomicBool = AtomicBool::new(false);

impl SourceSettings for StdinSource {
    fn address(&self) -> Option<SocketAddr> {
        None
    }

    fn mode(&self) -> SourceMode {
        SourceMode::Stdin
    }

    fn check(&self, name: &str, shared: &SharedLimits) -> Result<(), (String, String)> {
        let invalid = |msg: &str| Err((format!("sources.{name}.max_frame"), msg.to_string()));
        if !(1..=MAX_FRAME_LIMIT).contains(&self.max_frame) {
            return invalid("must be between 1 byte and 16MiB");
        }
        if self.max_frame > shared.wal_buffer_size / 2 {
            return invalid("must be at most half of wal.buffer_size");
        }
        Ok(())
    }

    fn check_bounds(&self, _prefix: &str, _bounds: &mut Bounds) {}

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("format".into(), render::text(self.format.name()));
        t.insert("parser".into(), render::text(self.parser.name()));
        t.insert("max_frame".into(), render::bytes(self.max_frame));
        t
    }

    fn spec(&self, name: &str, context: &SpecContext<'_>) -> Result<SourceSpec, SourceError> {
        let (shards, memory) = (context.shards, context.memory);
        Ok(SourceSpec {
            name: name.to_string(),
            mode: SourceMode::Stdin,
            bind,
            address: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            max_frame: self.max_frame as usize,
            read_buffer: READ_BUFFER.max(Framer::min_buffer_len(self.max_frame as usize)),
            receive_buffer: 0,
            idle_timeout: std::time::Duration::ZERO,
            frame_timeout: std::time::Duration::ZERO,
            parser: self.parser.options(),
            limits: ConnectionLimits::with_prefixes(1, 1, 32, 64),
            memory: Arc::clone(memory),
            counters: Arc::new(SourceCounters::new(shards)),
            tls: None,
            http: None,
            json: self.format == LineFormat::Json,
            only_source: false,
            file: None,
        })
    }
}

fn bind(_spec: &SourceSpec) -> std::io::Result<Box<dyn BoundSource>> {
    Ok(Box::new(StdinBound))
}

/// Nothing to bind: shard 0 starts the reader when it serves the source.
struct StdinBound;

impl BoundSource for StdinBound {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool {
        if shard.id != 0 {
            return true;
        }
        if STDIN_TAKEN.swap(true, Ordering::AcqRel) {
            tracing::error!(source = %run.spec.name, "stdin is already read by an earlier source: this one gets nothing");
            return true;
        }
        let pipe = match start_reader() {
            Ok(pipe) => pipe,
            Err(e) => {
                tracing::error!(source = %run.spec.name, error = %e, "cannot start reading stdin");
                return true;
            }
        };
        gate.spawn(read_lines(shard, run, pipe))
            .map(|t| t.detach())
            .is_ok()
    }
}

/// The thread copying stdin into a socket pair; the shard's end of it.
fn start_reader() -> std::io::Result<UnixStream> {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    std::thread::Builder::new()
        .name("sluice-stdin".into())
        .spawn(move || copy_stdin(theirs))?;
    // SAFETY: the descriptor is one end of a socket pair whose ownership moves into the stream.
    Ok(unsafe { UnixStream::from_raw_fd(ours.into_raw_fd()) })
}

fn copy_stdin(mut to: std::os::unix::net::UnixStream) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => return, // End of input: dropping `to` tells the shard.
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!(error = %e, "reading stdin failed: treated as its end");
                return;
            }
        };
        if to.write_all(&buf[..n]).is_err() {
            return; // Sluice is stopping.
        }
    }
}

/// Reads lines from the socket pair until its end or the source stops.
async fn read_lines(shard: Rc<Shard>, run: Rc<SourceRun>, mut pipe: UnixStream) {
    let spec = &run.spec;
    let size = spec.read_buffer;
    if !spec.memory.reserve(size as u64) {
        tracing::error!(source = %spec.name, "max_connection_memory has no room for stdin's buffer");
        return;
    }
    let mut lines = Lines {
        buf: vec![0; size],
        filled: 0,
        framer: Framer::with_mode(FramingMode::Delimited, spec.max_frame),
        frames: Vec::new(),
    };
    let ended = loop {
        let filled = lines.filled;
        if filled == lines.buf.len() {
            // The framer always leaves room (the buffer holds a whole line and more).
            tracing::error!(source = %spec.name, "stdin's buffer is full without a line");
            break false;
        }
        let read = futures_lite::future::or(
            async { Some(pipe.read(&mut lines.buf[filled..]).await) },
            async {
                run.stopped(&shard).await;
                None
            },
        );
        match read.await {
            Some(Ok(0)) | Some(Err(_)) => break true,
            Some(Ok(n)) => lines.filled += n,
            None => break false,
        }
        lines.take(&shard, spec, false).await;
    };
    lines.take(&shard, spec, true).await;
    spec.memory.release(size as u64);
    if ended && spec.only_source && !shard.stop.is_stopping() {
        tracing::info!(source = %spec.name, "stdin ended and it is the only source: stopping");
        // SAFETY: kill(2) on our own PID: the same graceful stop as an operator's SIGTERM.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
}

/// The read buffer and its framer.
struct Lines {
    buf: Vec<u8>,
    filled: usize,
    framer: Framer,
    frames: Vec<(usize, usize, FrameFlags)>,
}

impl Lines {
    /// Ingests the complete lines (and, at the end, the unterminated last one).
    async fn take(&mut self, shard: &Shard, spec: &SourceSpec, at_end: bool) {
        shard.appender.note_arrival(std::time::Instant::now());
        self.frames.clear();
        let base = self.buf.as_ptr() as usize;
        let frames = &mut self.frames;
        let emit = |f: ingest::Frame<'_>| {
            frames.push((f.bytes.as_ptr() as usize - base, f.bytes.len(), f.flags))
        };
        let consumed = match at_end {
            false => self.framer.feed(&self.buf[..self.filled], emit),
            true => {
                self.framer.finish(&self.buf[..self.filled], emit);
                self.filled
            }
        };
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        for &(start, len, flags) in &self.frames {
            ingest_line(
                shard,
                spec,
                &self.buf[start..start + len],
                flags,
                &clock,
                &mut tally,
            )
            .await;
        }
        shard.counters.add(&tally);
        add_to_source(&spec.counters, shard.id, &tally);
        self.buf.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
    }
}

async fn ingest_line(
    shard: &Shard,
    spec: &SourceSpec,
    line: &[u8],
    flags: FrameFlags,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    if spec.json {
        let origin = Origin {
            source: &spec.name,
            source_ip: None,
            context: None,
        };
        return ingest_json_line(shard, &origin, line, flags, clock, tally).await;
    }
    let input = FrameIn {
        frame: line,
        flags,
        source_ip: None,
        parser: &spec.parser,
        source: &spec.name,
        extras: None,
    };
    ingest_frame(shard, input, clock, tally).await;
}
