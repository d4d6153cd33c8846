//! RELP input (`mode = "relp"`): rsyslog's acknowledged protocol as `omrelp` speaks it, plain
//! or over TLS. Frames are read with [`ingest::relp`]; each `syslog` command's data is one
//! event, parsed like any syslog frame.
//!
//! Invariants:
//! - A message is acknowledged (`rsp 200 OK`) only when every record it produced is durable in
//!   the shard's WAL: end-to-end at-least-once from the sending host. Answers go out in the
//!   order of the commands; a session waiting for them asks the WAL to commit now (many
//!   sessions still share one commit).
//! - A message that was taken is never answered 500 (librelp's sender would drop it). When the
//!   WAL has no room (disk budget, a failed disk), the session stops reading: the sender's
//!   window fills and it waits.
//! - A message the WAL did not make durable (a failed write, a stop while the disk refuses
//!   writes) is never acknowledged: the session is closed instead, and the sender sends it
//!   again on its next session.
//! - Data longer than `max_frame` is kept truncated and flagged (librelp's `oversizeMode =
//!   "truncate"`) and acknowledged; anything that is not RELP ends the session (counted).
//! - The read buffer starts small and grows (within `max_connection_memory`) to hold one
//!   frame of `max_frame`; `idle_timeout` and `frame_timeout` apply as on TCP.
//! - On stop: what was read is ingested, answered once durable, then `serverclose` is sent.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use ingest::framing::FrameFlags;
use ingest::relp::{self, Header, Scan};

use super::connection::CloseReason;
use super::limits::ConnectionMemory;
use super::tcp::{ActiveConnection, SourceStream};
use super::{is_timeout, SourceRun, SourceSpec};
use crate::metrics::BatchTally;
use crate::shard::ingest::{add_to_source, ingest_frame, BatchClock, Extras, FrameIn};
use crate::shard::Shard;

/// The read buffer starts this small and doubles up to one whole frame.
const INITIAL_BUFFER: usize = 4 << 10;
/// Room for a frame's header (TXNR, command, DATALEN, spaces) and trailer.
const HEADER_ROOM: usize = 64;

/// An answer waiting to be sent: once the records up to `end` are durable.
struct Answer {
    /// Append index after the command's records.
    end: u64,
    txnr: u64,
    what: AnswerKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AnswerKind {
    /// `rsp 200 OK` for a syslog message.
    Taken,
    /// The `open` answer with Sluice's offers.
    Opened,
    /// The empty `rsp` to `close`; the session ends after it.
    Closed,
    /// `rsp 500` for a command Sluice does not know (nothing was taken).
    Unknown,
}

/// Why a session ended early.
#[derive(Debug)]
enum End {
    /// The peer closed, or said `close` and got its answer.
    Peer,
    Io(std::io::Error),
    Closed(CloseReason),
    Protocol(&'static str),
    /// Records of an unanswered message were not made durable.
    NotDurable,
}

/// One RELP session's state.
struct Session<'a> {
    spec: &'a SourceSpec,
    shard: &'a Shard,
    peer: SocketAddr,
    extras: Option<Extras>,
    buf: Vec<u8>,
    filled: usize,
    max_buffer: usize,
    memory: Arc<ConnectionMemory>,
    /// Oversize data still to discard, and the txnr to answer when it is gone.
    skip: Option<(usize, u64)>,
    opened: bool,
    closing: bool,
    pending: VecDeque<Answer>,
    /// Append index where the records of the oldest unanswered message may begin.
    from: u64,
    partial_since: Option<Instant>,
    out: Vec<u8>,
}

/// Serves one RELP session until the peer closes it, it breaks or the source stops.
pub(super) async fn serve<S: SourceStream>(
    active: &ActiveConnection,
    mut stream: S,
    peer: SocketAddr,
    extras: Option<Extras>,
) {
    let (shard, run) = (&*active.shard, &*active.run);
    let spec = &run.spec;
    let Some(mut session) = Session::new(spec, shard, peer, extras) else {
        active.closed_by_us(CloseReason::MemoryBudget, peer);
        return;
    };
    let end = session.run(run, &mut stream).await;
    let end = match end {
        End::Peer | End::Closed(_) | End::Protocol(_) | End::NotDurable => {
            // Whatever was taken before the end is still answered once durable.
            match session.answer_all(&mut stream).await {
                Ok(()) => end,
                Err(e) => e,
            }
        }
        End::Io(_) => end,
    };
    session.finish(run, &mut stream, active, end).await;
}

impl<'a> Session<'a> {
    fn new(
        spec: &'a SourceSpec,
        shard: &'a Shard,
        peer: SocketAddr,
        extras: Option<Extras>,
    ) -> Option<Self> {
        let max_buffer = spec.read_buffer.max(spec.max_frame + HEADER_ROOM);
        let initial = INITIAL_BUFFER.min(max_buffer);
        if !spec.memory.reserve(initial as u64) {
            return None;
        }
        Some(Session {
            spec,
            shard,
            peer,
            extras,
            buf: vec![0; initial],
            filled: 0,
            max_buffer,
            memory: Arc::clone(&spec.memory),
            skip: None,
            opened: false,
            closing: false,
            pending: VecDeque::new(),
            from: shard.appender.appended(),
            partial_since: None,
            out: Vec::new(),
        })
    }

    /// Reads, ingests and answers until the session ends.
    async fn run<S: SourceStream>(&mut self, run: &SourceRun, stream: &mut S) -> End {
        loop {
            if self.closing {
                return End::Peer;
            }
            if let Err(reason) = self.make_room() {
                return End::Closed(reason);
            }
            let (timeout, on_timeout) = self.read_timeout();
            if timeout.is_zero() || set_timeouts(stream, timeout).is_err() {
                return End::Closed(on_timeout);
            }
            let read = match self.next_read(run, stream).await {
                Next::Read(r) => r,
                Next::Settled => match self.answer_ready(stream).await {
                    Ok(()) => continue,
                    Err(end) => return end,
                },
                Next::Stop => return self.drain_ready(stream).await,
            };
            match read {
                Ok(0) => return End::Peer,
                Ok(n) => self.filled += n,
                Err(e) if is_timeout(&e) => return End::Closed(on_timeout),
                Err(e) => return End::Io(e),
            }
            if let Err(end) = self.take_frames().await {
                return end;
            }
            if let Err(end) = self.answer_ready(stream).await {
                return end;
            }
            glommio::yield_if_needed().await;
        }
    }

    /// The next read, raced against the source's stop and the oldest answer becoming due.
    async fn next_read<S: SourceStream>(&mut self, run: &SourceRun, stream: &mut S) -> Next {
        let filled = self.filled;
        let appender = &self.shard.appender;
        let oldest = self.pending.front().map(|a| a.end);
        let from = self.from;
        let read = futures_lite::future::or(
            async { Next::Read(stream.read(&mut self.buf[filled..]).await) },
            async {
                run.stopped(self.shard).await;
                Next::Stop
            },
        );
        futures_lite::future::or(read, async {
            match oldest {
                // Settled either way: `answer_ready` finds out which.
                Some(end) => {
                    let _ = appender.wait_settled(from, end).await;
                    Next::Settled
                }
                None => std::future::pending().await,
            }
        })
        .await
    }

    /// On stop: take in what the kernel already holds, without waiting for more.
    async fn drain_ready<S: SourceStream>(&mut self, stream: &mut S) -> End {
        loop {
            if self.closing || self.make_room().is_err() {
                return End::Peer;
            }
            let filled = self.filled;
            match futures_lite::future::poll_once(stream.read(&mut self.buf[filled..])).await {
                Some(Ok(n)) if n > 0 => {
                    self.filled += n;
                    if let Err(end) = self.take_frames().await {
                        return end;
                    }
                }
                _ => return End::Peer,
            }
        }
    }
}

enum Next {
    Read(std::io::Result<usize>),
    Settled,
    Stop,
}

/// The socket's read and write timeouts (a peer that stops reading our answers is idle too).
fn set_timeouts<S: SourceStream>(stream: &S, timeout: Duration) -> std::io::Result<()> {
    let secs = Duration::from_secs(timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0));
    stream.tcp().set_read_timeout(Some(secs))?;
    stream.tcp().set_write_timeout(Some(secs))?;
    Ok(())
}

impl Session<'_> {
    /// Frames everything complete in the buffer: ingests messages, queues answers; keeps a
    /// partial frame for the next read.
    async fn take_frames(&mut self) -> Result<(), End> {
        self.shard.appender.note_arrival(Instant::now());
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        let mut at = 0;
        let result = loop {
            if self.closing {
                break Ok(());
            }
            if let Some(skipped) = self.skip_oversize(at) {
                at += skipped;
                if self.skip.is_some() {
                    break Ok(());
                }
                continue;
            }
            match self.next_frame(at, &clock, &mut tally).await {
                Ok(Some(len)) => at += len,
                Ok(None) => break Ok(()),
                Err(end) => break Err(end),
            }
        };
        self.shard.counters.add(&tally);
        add_to_source(&self.spec.counters, self.shard.id, &tally);
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        self.partial_since = match (self.filled, at) {
            (0, _) => None,
            (_, 0) => self.partial_since.or_else(|| Some(Instant::now())),
            _ => Some(Instant::now()),
        };
        if tally.dropped_wal > 0 {
            return Err(End::NotDurable);
        }
        result
    }

    /// Discards what is left of an oversize message's data at `at`; its answer is queued once
    /// the whole frame is gone. `None` when nothing is being skipped.
    fn skip_oversize(&mut self, at: usize) -> Option<usize> {
        let (left, txnr) = self.skip?;
        let here = left.min(self.filled - at);
        if here == left {
            self.skip = None;
            self.queue(txnr, AnswerKind::Taken);
        } else {
            self.skip = Some((left - here, txnr));
        }
        Some(here)
    }

    /// Takes the frame at `at`: its length, `None` when it is not complete yet.
    async fn next_frame(
        &mut self,
        at: usize,
        clock: &BatchClock,
        tally: &mut BatchTally,
    ) -> Result<Option<usize>, End> {
        let max_frame = self.spec.max_frame;
        let h = match relp::scan(&self.buf[at..self.filled]) {
            Scan::Need => return Ok(None),
            Scan::Invalid(why) => return Err(End::Protocol(why)),
            Scan::Header(h) => OwnedHeader::of(&h),
        };
        let available = self.filled - at - h.header_len;
        let data_at = at + h.header_len;
        if h.data_len > max_frame {
            if available < max_frame {
                return Ok(None);
            }
            if h.command != Command::Syslog {
                return Err(End::Protocol("oversize command"));
            }
            self.ingest(data_at..data_at + max_frame, true, clock, tally)
                .await;
            self.skip = Some((h.data_len - max_frame + 1, h.txnr));
            return Ok(Some(h.header_len + max_frame));
        }
        if available <= h.data_len {
            return Ok(None);
        }
        if self.buf[data_at + h.data_len] != b'\n' {
            return Err(End::Protocol("no LF after the data"));
        }
        self.command(&h, data_at, clock, tally).await?;
        Ok(Some(h.header_len + h.data_len + 1))
    }
}

/// A frame's header without its borrow of the buffer.
struct OwnedHeader {
    txnr: u64,
    command: Command,
    data_len: usize,
    header_len: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Command {
    Open,
    Syslog,
    Close,
    Other,
}

impl OwnedHeader {
    fn of(h: &Header<'_>) -> Self {
        let command = match h.command {
            b"open" => Command::Open,
            b"syslog" => Command::Syslog,
            b"close" => Command::Close,
            _ => Command::Other,
        };
        OwnedHeader {
            txnr: h.txnr,
            command,
            data_len: h.data_len,
            header_len: h.header_len,
        }
    }
}

impl Session<'_> {
    /// Carries out one complete command whose data starts at `data_at`.
    async fn command(
        &mut self,
        h: &OwnedHeader,
        data_at: usize,
        clock: &BatchClock,
        tally: &mut BatchTally,
    ) -> Result<(), End> {
        let data = data_at..data_at + h.data_len;
        match (h.command, self.opened) {
            (Command::Open, false) => {
                if !relp::offers_syslog(&self.buf[data]) {
                    return Err(End::Protocol(
                        "the client does not offer the syslog command",
                    ));
                }
                self.opened = true;
                self.queue(h.txnr, AnswerKind::Opened);
            }
            (Command::Open, true) => return Err(End::Protocol("open on an open session")),
            (_, false) => return Err(End::Protocol("a command before open")),
            (Command::Syslog, true) => {
                self.ingest(data, false, clock, tally).await;
                self.queue(h.txnr, AnswerKind::Taken);
            }
            (Command::Close, true) => {
                self.queue(h.txnr, AnswerKind::Closed);
                self.closing = true;
            }
            (Command::Other, true) => self.queue(h.txnr, AnswerKind::Unknown),
        }
        Ok(())
    }

    /// Parses and appends one message (waits for WAL space: backpressure).
    async fn ingest(
        &self,
        data: std::ops::Range<usize>,
        truncated: bool,
        clock: &BatchClock,
        tally: &mut BatchTally,
    ) {
        let flags = FrameFlags(if truncated { FrameFlags::TRUNCATED } else { 0 });
        let event = FrameIn {
            frame: &self.buf[data],
            flags,
            source_ip: Some(self.peer.ip()),
            parser: &self.spec.parser,
            source: &self.spec.name,
            extras: self.extras.as_ref(),
        };
        ingest_frame(self.shard, event, clock, tally).await;
    }

    fn queue(&mut self, txnr: u64, what: AnswerKind) {
        self.pending.push_back(Answer {
            end: self.shard.appender.appended(),
            txnr,
            what,
        });
    }

    /// Sends the answers whose messages are durable now, in order.
    async fn answer_ready<S: SourceStream>(&mut self, stream: &mut S) -> Result<(), End> {
        self.out.clear();
        let mut result = Ok(());
        let mut answered = 0u64;
        while let Some(answer) = self.pending.front() {
            match self.shard.appender.settled(self.from, answer.end) {
                None => break,
                Some(Err(_)) => {
                    result = Err(End::NotDurable);
                    break;
                }
                Some(Ok(())) => {}
            }
            answered += u64::from(answer.what == AnswerKind::Taken);
            write_answer(&mut self.out, answer.txnr, answer.what);
            self.from = answer.end;
            self.pending.pop_front();
        }
        if !self.out.is_empty() {
            let sent = async {
                stream.write_all(&self.out).await?;
                stream.flush().await
            };
            sent.await.map_err(End::Io)?;
            if let Some(c) = self.spec.counters.shard(self.shard.id) {
                c.relp_acknowledged.fetch_add(answered, Ordering::Relaxed);
            }
        }
        result
    }

    /// Waits until every queued answer is settled and sends what was made durable.
    async fn answer_all<S: SourceStream>(&mut self, stream: &mut S) -> Result<(), End> {
        while let Some(end) = self.pending.back().map(|a| a.end) {
            let _ = self.shard.appender.wait_settled(self.from, end).await;
            self.answer_ready(stream).await?;
            if self.pending.back().is_some_and(|a| a.end == end) {
                return Err(End::NotDurable);
            }
        }
        Ok(())
    }
}

fn write_answer(out: &mut Vec<u8>, txnr: u64, what: AnswerKind) {
    match what {
        AnswerKind::Taken => relp::write_frame(out, txnr, "rsp", b"200 OK"),
        AnswerKind::Opened => relp::write_frame(
            out,
            txnr,
            "rsp",
            b"200 OK\nrelp_version=0\nrelp_software=sluice\ncommands=syslog",
        ),
        AnswerKind::Closed => relp::write_frame(out, txnr, "rsp", b""),
        AnswerKind::Unknown => relp::write_frame(out, txnr, "rsp", b"500 command not supported"),
    }
}

impl Session<'_> {
    /// Grows a full buffer (within `max_buffer` and the memory budget).
    fn make_room(&mut self) -> Result<(), CloseReason> {
        if self.filled < self.buf.len() {
            return Ok(());
        }
        let grown = (self.buf.len() * 2).min(self.max_buffer);
        if grown > self.buf.len() && self.memory.reserve((grown - self.buf.len()) as u64) {
            self.buf.resize(grown, 0);
            return Ok(());
        }
        Err(CloseReason::MemoryBudget)
    }

    /// The idle timeout, or what is left of the frame timeout while a frame is partial.
    fn read_timeout(&self) -> (Duration, CloseReason) {
        match self.partial_since {
            Some(since) if self.filled > 0 => (
                self.spec.frame_timeout.saturating_sub(since.elapsed()),
                CloseReason::FrameTimeout,
            ),
            _ => (self.spec.idle_timeout, CloseReason::IdleTimeout),
        }
    }

    /// Counts and logs how the session ended; `serverclose` when Sluice ends it.
    async fn finish<S: SourceStream>(
        &mut self,
        run: &SourceRun,
        stream: &mut S,
        active: &ActiveConnection,
        end: End,
    ) {
        let counters = self.spec.counters.shard(self.shard.id);
        match &end {
            End::Peer if !run.is_stopping(self.shard) || self.closing => {}
            End::Peer => self.server_close(stream).await,
            End::Closed(reason) => {
                active.closed_by_us(*reason, self.peer);
                self.server_close(stream).await;
            }
            End::Protocol(why) => {
                if let Some(c) = counters {
                    c.relp_protocol_errors.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(source = %self.spec.name, peer = %self.peer, error = why,
                    "RELP session closed: not RELP as librelp speaks it");
                self.server_close(stream).await;
            }
            End::NotDurable => {
                tracing::warn!(source = %self.spec.name, peer = %self.peer,
                    "RELP session closed without acknowledging: the WAL did not make its messages durable; the sender sends them again");
            }
            End::Io(e) => {
                tracing::debug!(source = %self.spec.name, peer = %self.peer, error = %e, "RELP session broken");
            }
        }
    }

    async fn server_close<S: SourceStream>(&mut self, stream: &mut S) {
        self.out.clear();
        relp::write_frame(&mut self.out, 0, "serverclose", b"");
        let _ = stream.write_all(&self.out).await;
        let _ = stream.flush().await;
        let _ = stream.close().await;
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.memory.release(self.buf.len() as u64);
    }
}
