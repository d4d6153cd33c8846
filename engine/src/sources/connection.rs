//! One TCP connection's read buffer and framer: a small buffer that grows (within the
//! `max_connection_memory` budget) while reads fill it and shrinks once drained, and the
//! idle and frame timeouts.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::TcpStream;
use ingest::framing::{EofRemainder, FrameFlags, Framer, FramingMode};

use super::limits::ConnectionMemory;
use super::SourceSpec;
use crate::metrics::{BatchTally, SourceCounters};
use crate::shard::ingest::{
    add_to_source, ingest_frame, ingest_parsed, parse_frame, BatchClock, Extras, FrameIn,
};
use crate::shard::Shard;

/// A TCP connection's read buffer starts this small; it doubles while a read fills it (up to
/// the source's `read_buffer`, at least one whole frame) and shrinks back once drained.
const INITIAL_READ_BUFFER: usize = 4 << 10;

/// One TCP connection's state: its buffer, framer and the frames of the current read.
pub(crate) struct Connection {
    pub(crate) buf: Vec<u8>,
    pub(crate) filled: usize,
    /// The largest the buffer may grow: `read_buffer`, at least one whole frame.
    max_buffer: usize,
    memory: Arc<ConnectionMemory>,
    framer: Framer,
    frames: Vec<(usize, usize, FrameFlags)>,
    peer: Option<IpAddr>,
    counters: Arc<SourceCounters>,
    /// How this source's frames are parsed.
    parser: ingest::ParserOptions,
    /// The source's name (its transforms and routing).
    source: std::rc::Rc<str>,
    /// When the partial frame now in the buffer began (`frame_timeout` counts from it).
    partial_since: Option<std::time::Instant>,
    /// Bytes the last read brought (a trickle lets a grown buffer shrink).
    last_read: usize,
    /// The last read filled all the room it was given: the sender is ahead, the next read
    /// gets a larger buffer (fewer, larger reads).
    read_was_full: bool,
    /// The read timeout last given to the stream, whole seconds (set again only on change).
    read_timeout_secs: u64,
    /// A `multiline` joining this connection's lines, with the pending event's frame flags
    /// and when it is due to be emitted without further lines.
    join: Option<Join>,
    /// Fields added to every event of the connection (a TLS client's certificate subject).
    extras: Option<Extras>,
}

struct Join {
    joiner: pipeline::multiline::Joiner,
    flags: FrameFlags,
    due: Option<std::time::Instant>,
}

/// Why a connection was closed by Sluice (each counted per source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    IdleTimeout,
    FrameTimeout,
    MemoryBudget,
}

impl Connection {
    /// A connection with the small initial buffer, or `None` when even that is over budget.
    pub(crate) fn new(
        source: &SourceSpec,
        peer: Option<IpAddr>,
        join: Option<std::sync::Arc<pipeline::multiline::JoinRule>>,
        extras: Option<Extras>,
        framing: FramingMode,
    ) -> Option<Connection> {
        let max_buffer = source
            .read_buffer
            .max(Framer::min_buffer_len(source.max_frame));
        let initial = INITIAL_READ_BUFFER.min(max_buffer);
        if !source.memory.reserve(initial as u64) {
            return None;
        }
        Some(Connection {
            buf: vec![0; initial],
            filled: 0,
            max_buffer,
            memory: Arc::clone(&source.memory),
            framer: Framer::with_mode(framing, source.max_frame),
            frames: Vec::new(),
            peer,
            counters: Arc::clone(&source.counters),
            parser: source.parser,
            source: std::rc::Rc::from(source.name.as_str()),
            partial_since: None,
            last_read: 0,
            read_was_full: false,
            read_timeout_secs: 0,
            join: join.map(|rule| Join {
                joiner: pipeline::multiline::Joiner::new(rule),
                flags: FrameFlags::default(),
                due: None,
            }),
            extras,
        })
    }

    /// Makes room for the next read: doubles the buffer (within the budget) when it is full
    /// or the last read filled it. `Err` when the budget refuses and the buffer has no room
    /// left.
    ///
    /// Growing only a buffer left full after processing (a partial frame as large as the
    /// buffer) kept a stream of small lines at 4 KiB reads for good: 20,000 `recv`s per
    /// second per shard at 400K events/s.
    pub(crate) fn make_room(&mut self) -> Result<(), CloseReason> {
        let full = self.filled == self.buf.len();
        if !full && !self.read_was_full {
            return Ok(());
        }
        self.read_was_full = false;
        let grown = (self.buf.len() * 2).min(self.max_buffer);
        if grown > self.buf.len() && self.memory.reserve((grown - self.buf.len()) as u64) {
            self.buf.resize(grown, 0);
            return Ok(());
        }
        if full {
            return Err(CloseReason::MemoryBudget);
        }
        Ok(())
    }

    /// A read brought `n` bytes into the buffer after what it held.
    pub(crate) fn note_read(&mut self, n: usize) {
        self.filled += n;
        self.last_read = n;
        self.read_was_full = n > 0 && self.filled == self.buf.len();
    }

    /// Gives a grown buffer back once drained and the sender slowed to a trickle (a read
    /// that brought under an eighth of it): the budget and, through the allocator, the system
    /// get the memory back. A busy connection keeps its buffer (and its large reads).
    pub(crate) fn shrink_when_drained(&mut self) {
        let trickle = self.last_read * 8 < self.buf.len();
        if self.filled > 0 || !trickle || self.buf.len() <= INITIAL_READ_BUFFER {
            return;
        }
        self.memory
            .release((self.buf.len() - INITIAL_READ_BUFFER) as u64);
        self.buf = vec![0; INITIAL_READ_BUFFER];
        self.frames = Vec::new();
    }

    /// How long the next read may wait: the idle timeout, or what is left of the frame
    /// timeout while a frame is partial.
    pub(crate) fn read_timeout(&self, source: &SourceSpec) -> (Duration, CloseReason) {
        match self.partial_since {
            Some(since) if self.filled > 0 => (
                source.frame_timeout.saturating_sub(since.elapsed()),
                CloseReason::FrameTimeout,
            ),
            _ => (source.idle_timeout, CloseReason::IdleTimeout),
        }
    }

    /// Gives the stream `timeout`, rounded up to whole seconds, when that changed (the
    /// deadline counts from when a read starts waiting; a second's slack is fine for both).
    pub(crate) fn apply_read_timeout(
        &mut self,
        stream: &TcpStream,
        timeout: Duration,
    ) -> std::io::Result<()> {
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        if secs != self.read_timeout_secs {
            stream.set_read_timeout(Some(Duration::from_secs(secs)))?;
            self.read_timeout_secs = secs;
        }
        Ok(())
    }

    /// Frames, parses and appends everything complete in the buffer; keeps the partial rest.
    pub(crate) async fn process(&mut self, shard: &Shard) {
        shard.appender.note_arrival(std::time::Instant::now());
        self.frames.clear();
        let base = self.buf.as_ptr() as usize;
        let frames = &mut self.frames;
        let consumed = self.framer.feed(&self.buf[..self.filled], |f| {
            frames.push(frame_ref(base, &f))
        });
        self.append_frames(shard).await;
        self.buf.copy_within(consumed..self.filled, 0);
        self.filled -= consumed;
        // A frame completed in this read: what is left began with this read.
        self.partial_since = match (self.filled, consumed) {
            (0, _) => None,
            (_, 0) => self
                .partial_since
                .or_else(|| Some(std::time::Instant::now())),
            _ => Some(std::time::Instant::now()),
        };
    }

    /// The peer closed (or we stop): a pending unterminated line is still an event.
    pub(crate) async fn finish(&mut self, shard: &Shard) {
        shard.appender.note_arrival(std::time::Instant::now());
        self.frames.clear();
        let base = self.buf.as_ptr() as usize;
        let frames = &mut self.frames;
        let remainder = self.framer.finish(&self.buf[..self.filled], |f| {
            frames.push(frame_ref(base, &f))
        });
        self.append_frames(shard).await;
        self.flush_join(shard).await;
        if let EofRemainder::IncompleteFrame { bytes } = remainder {
            if let Some(c) = self.counters.shard(shard.id) {
                c.frames_incomplete.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(shard = shard.id, peer = ?self.peer, bytes, "connection closed mid-frame");
        }
        self.filled = 0;
    }

    pub(crate) async fn append_frames(&mut self, shard: &Shard) {
        if self.frames.is_empty() {
            return;
        }
        if self.join.is_some() {
            return self.join_frames(shard).await;
        }
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        for &(start, len, flags) in &self.frames {
            let frame = &self.buf[start..start + len];
            let event = FrameIn {
                frame,
                flags,
                source_ip: self.peer,
                parser: &self.parser,
                source: &self.source,
                extras: self.extras.as_ref(),
            };
            ingest_frame(shard, event, &clock, &mut tally).await;
        }
        shard.counters.add(&tally);
        add_to_source(&self.counters, shard.id, &tally);
    }
}

impl Connection {
    /// When the pending multiline event is due (no line came for `timeout`).
    pub(crate) fn join_due(&self) -> Option<std::time::Instant> {
        self.join.as_ref().and_then(|j| j.due)
    }

    /// Frames through the multiline joiner: a line that begins an event emits the pending one.
    async fn join_frames(&mut self, shard: &Shard) {
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        let Some(join) = self.join.as_mut() else {
            return;
        };
        for &(start, len, flags) in &self.frames {
            let frame = &self.buf[start..start + len];
            let line = FrameIn {
                frame,
                flags,
                source_ip: self.peer,
                parser: &self.parser,
                source: &self.source,
                extras: None,
            };
            let parsed = parse_frame(&line, &clock, &mut tally);
            let message = parsed.message.get(frame);
            if join.joiner.offer(message) == pipeline::multiline::Offer::Begins {
                let origin = Origin {
                    peer: self.peer,
                    parser: &self.parser,
                    source: &self.source,
                    extras: self.extras.as_ref(),
                };
                emit_joined(shard, join, &origin, &clock, &mut tally).await;
                join.joiner.start(frame, &parsed);
                join.flags = flags;
            }
            join.due = Some(std::time::Instant::now() + join.joiner.timeout());
        }
        shard.counters.add(&tally);
        add_to_source(&self.counters, shard.id, &tally);
    }

    /// Emits the pending multiline event (its timeout passed, or the connection ends).
    pub(crate) async fn flush_join(&mut self, shard: &Shard) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        let origin = Origin {
            peer: self.peer,
            parser: &self.parser,
            source: &self.source,
            extras: self.extras.as_ref(),
        };
        emit_joined(shard, join, &origin, &clock, &mut tally).await;
        shard.counters.add(&tally);
        add_to_source(&self.counters, shard.id, &tally);
    }
}

/// Where a connection's lines come from (what a joined event is ingested with).
struct Origin<'a> {
    peer: Option<IpAddr>,
    parser: &'a ingest::ParserOptions,
    source: &'a str,
    extras: Option<&'a Extras>,
}

/// Ingests the joiner's pending event, if any, and clears it.
async fn emit_joined(
    shard: &Shard,
    join: &mut Join,
    origin: &Origin<'_>,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    if let Some((frame, parsed)) = join.joiner.pending() {
        let event = FrameIn {
            frame,
            flags: join.flags,
            source_ip: origin.peer,
            parser: origin.parser,
            source: origin.source,
            extras: origin.extras,
        };
        let parsed = *parsed;
        ingest_parsed(shard, &event, &parsed, clock, tally).await;
    }
    join.joiner.clear();
    join.due = None;
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.memory.release(self.buf.len() as u64);
    }
}

/// A frame as (offset in the connection's buffer, length, flags): the framer's slices borrow
/// the buffer, which the appends that follow need back.
fn frame_ref(buffer_start: usize, frame: &ingest::Frame) -> (usize, usize, FrameFlags) {
    (
        frame.bytes.as_ptr() as usize - buffer_start,
        frame.bytes.len(),
        frame.flags,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::limits::ConnectionLimits;
    use crate::sources::{SourceMode, SourceSpec};

    fn spec(read_buffer: usize, memory: Arc<ConnectionMemory>) -> SourceSpec {
        SourceSpec {
            name: "t".into(),
            mode: SourceMode::Tcp,
            bind: crate::sources::tcp::bind,
            address: "127.0.0.1:0".parse().unwrap(),
            max_frame: 1024,
            read_buffer,
            receive_buffer: 0,
            idle_timeout: Duration::from_secs(60),
            frame_timeout: Duration::from_secs(60),
            parser: ingest::ParserOptions::default(),
            limits: ConnectionLimits::new(10, 10),
            memory,
            counters: Arc::new(SourceCounters::new(1)),
            tls: None,
            http: None,
            json: false,
            only_source: false,
            file: None,
        }
    }

    fn connection(read_buffer: usize, memory: &Arc<ConnectionMemory>) -> Connection {
        let spec = spec(read_buffer, Arc::clone(memory));
        Connection::new(&spec, None, None, None, FramingMode::Detect).unwrap()
    }

    /// A read that fills the buffer means the sender is ahead: the next read gets twice the
    /// room, up to `read_buffer`, even though processing left the buffer empty (whole lines).
    /// A read that leaves room grows nothing; a budget that refuses only stops the growth.
    #[test]
    fn reads_that_fill_the_buffer_grow_it_up_to_read_buffer() {
        let memory = ConnectionMemory::new(1 << 20);
        let mut conn = connection(32 << 10, &memory);
        let mut sizes = vec![conn.buf.len()];
        for _ in 0..5 {
            let room = conn.buf.len() - conn.filled;
            conn.note_read(room);
            conn.filled = 0; // processed: only whole lines
            conn.make_room().unwrap();
            sizes.push(conn.buf.len());
        }
        assert_eq!(
            sizes,
            [4 << 10, 8 << 10, 16 << 10, 32 << 10, 32 << 10, 32 << 10]
        );
        assert_eq!(memory.used(), 32 << 10);

        let mut small = connection(32 << 10, &memory);
        small.note_read(100);
        small.make_room().unwrap();
        assert_eq!(small.buf.len(), 4 << 10, "a read with room left: no growth");

        let tight = ConnectionMemory::new(4 << 10);
        let mut refused = connection(32 << 10, &tight);
        refused.note_read(4 << 10);
        refused.filled = 10;
        assert_eq!(
            refused.make_room(),
            Ok(()),
            "room left: the read goes on in the buffer it has"
        );
        assert_eq!(refused.buf.len(), 4 << 10);
        refused.filled = 4 << 10;
        assert_eq!(
            refused.make_room(),
            Err(CloseReason::MemoryBudget),
            "full and refused"
        );
    }
}
