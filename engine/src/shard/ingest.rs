//! The ingest step every source shares: frame → parse → transforms ([`super::process`]) →
//! record → append to the shard's WAL. No allocation per event on the plain path: the parse
//! result lives on the stack and the record is encoded straight into the WAL's pending buffer;
//! processed events reuse the shard's buffers (only an append that must wait for WAL space
//! copies its staged records out).

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ingest::framing::FrameFlags;
use ingest::syslog::Parsed;
use ingest::{record, ParserOptions};
use storage::writer::{AppendError, WalStatus};

use super::process::Decision;
use super::Shard;
use crate::metrics::{BatchTally, SourceCounters};

/// Time taken once per read batch: every event of the batch gets the same `received_at`.
pub(crate) struct BatchClock {
    received_at_us: i64,
    /// Resolves RFC 3164's missing year.
    now: ingest::Now,
    /// Monotonic nanoseconds (throttle).
    mono_ns: u64,
}

/// The process's monotonic clock origin.
fn mono_origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl BatchClock {
    pub(crate) fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        BatchClock {
            received_at_us: d.as_micros() as i64,
            now: ingest::Now::at(d.as_secs() as i64),
            mono_ns: mono_origin().elapsed().as_nanos() as u64,
        }
    }
}

/// One frame as a source read it.
pub(crate) struct FrameIn<'a> {
    pub frame: &'a [u8],
    pub flags: FrameFlags,
    /// The sender (none for stdin and files).
    pub source_ip: Option<IpAddr>,
    pub parser: &'a ParserOptions,
    /// The source's name (its transforms and routing).
    pub source: &'a str,
    /// Fields the source adds to the event (its connection's or request's), if any.
    pub extras: Option<&'a Extras>,
}

/// Fields a source adds to an event: every event of a connection (a TLS client's
/// certificate subject) or of a request (an API key's name), or one event's own (the members
/// of a JSON event). Encoded once when built; an event pays only the copy into its record.
#[derive(Debug, Default, Clone)]
pub(crate) struct Extras {
    /// Loaded into the event when transforms run.
    fields: pipeline::event::Fields,
    /// The same as JSON members (a routed record's fields).
    members: Vec<u8>,
    /// The standard JSON keys they replace.
    overrides: u16,
}

impl Extras {
    pub(crate) fn of(mut fields: pipeline::event::Fields) -> Extras {
        let mut members = Vec::new();
        fields.write_json_members(&mut members);
        let overrides = ingest::json::override_bits(fields.top_level_names());
        Extras {
            fields,
            members,
            overrides,
        }
    }

    /// String fields at dotted paths (`tls.peer_subject`).
    pub(crate) fn strings(pairs: &[(&str, &[u8])]) -> Extras {
        let mut fields = pipeline::event::Fields::default();
        for (path, value) in pairs {
            fields.set(path.as_bytes(), pipeline::event::NewValue::Str(value));
        }
        Extras::of(fields)
    }

    /// Sets them on an event the transforms are about to run on.
    pub(crate) fn load_into(&self, fields: &mut pipeline::event::Fields) {
        fields.extend_from(&self.fields);
    }
}

/// Parses one frame, runs the transforms and appends its records, waiting for WAL space if
/// needed.
pub(crate) async fn ingest_frame(
    shard: &Shard,
    event: FrameIn<'_>,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let parsed = parse_frame(&event, clock, tally);
    ingest_parsed(shard, &event, &parsed, clock, tally).await;
}

/// Parses one frame and counts it.
pub(crate) fn parse_frame(
    event: &FrameIn<'_>,
    clock: &BatchClock,
    tally: &mut BatchTally,
) -> Parsed {
    let parsed = ingest::parse_with(event.frame, &clock.now, event.parser);
    tally.events += 1;
    tally.bytes += event.frame.len() as u64;
    tally.count_parse_flags(parsed.flags);
    tally.oversize += u64::from(event.flags.truncated());
    tally.bad_length += u64::from(event.flags.bad_length());
    parsed
}

/// Runs the transforms on a parsed frame (a joined multiline event too) and appends its
/// records.
pub(crate) async fn ingest_parsed(
    shard: &Shard,
    event: &FrameIn<'_>,
    parsed: &Parsed,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let &FrameIn {
        frame,
        flags,
        source_ip,
        source,
        extras,
        ..
    } = event;
    let parsed = *parsed;
    let header = record::EventHeader {
        received_at_us: clock.received_at_us,
        source_ip,
        frame_flags: flags,
    };
    let ctx = pipeline::Context {
        now_ns: clock.mono_ns,
        shard: shard.id as u32,
        host: &shard.host,
        source,
    };
    let decision = shard
        .processing
        .borrow_mut()
        .process(source, frame, &parsed, &header, &ctx, extras, tally);
    match decision {
        Decision::Plain => {
            let len = record::encoded_len(&header, &parsed, frame.len());
            append(
                shard,
                len,
                &|buf| record::encode(buf, &header, &parsed, frame),
                tally,
            )
            .await;
        }
        Decision::Direct(0) => {}
        Decision::Direct(sinks) => {
            let (fields, overrides) =
                extras.map_or((&[][..], 0), |x| (&x.members[..], x.overrides));
            let routing = record::Routing {
                sinks,
                fields,
                overrides,
            };
            let len = record::routed_len(frame.len(), fields.len());
            if len > storage::frame::MAX_RECORD_LEN {
                tally.too_large += 1;
                return;
            }
            let encode =
                |buf: &mut Vec<u8>| record::encode_routed(buf, &header, &parsed, frame, &routing);
            append(shard, len, &encode, tally).await;
        }
        Decision::Staged => append_staged(shard, tally).await,
    }
}

/// Appends the staged records: straight from the shard's buffer while the WAL takes them;
/// what is left when it is full is copied out, so the wait holds no borrow of the shard.
async fn append_staged(shard: &Shard, tally: &mut BatchTally) {
    let rest = {
        let processing = shard.processing.borrow();
        let (bytes, lens) = processing.staged();
        let mut at = 0;
        let mut left = None;
        for (i, &len) in lens.iter().enumerate() {
            let rec = &bytes[at..at + len];
            match shard
                .appender
                .try_append(len, |buf| buf.extend_from_slice(rec))
            {
                Ok(()) => at += len,
                Err(AppendError::Full) => {
                    left = Some((bytes[at..].to_vec(), lens[i..].to_vec()));
                    break;
                }
                Err(AppendError::Stopped) => {
                    tally.dropped_wal += (lens.len() - i) as u64;
                    return;
                }
            }
        }
        left
    };
    let Some((bytes, lens)) = rest else {
        return;
    };
    let mut at = 0;
    for len in lens {
        let rec = &bytes[at..at + len];
        append(shard, len, &|buf| buf.extend_from_slice(rec), tally).await;
        at += len;
    }
}

/// Appends one record of `len` bytes that `encode` writes, waiting for WAL space if needed.
async fn append(shard: &Shard, len: usize, encode: &dyn Fn(&mut Vec<u8>), tally: &mut BatchTally) {
    loop {
        match shard.appender.try_append(len, encode) {
            Ok(()) => return,
            Err(AppendError::Full) if shard.stop.is_stopping() => {
                if shard.appender.status() == WalStatus::Blocked {
                    // Stopping while the disk refuses writes: this event cannot be kept.
                    tally.dropped_wal += 1;
                    return;
                }
                shard.appender.wait_for_space().await;
            }
            Err(AppendError::Full) => {
                futures_lite::future::or(shard.appender.wait_for_space(), shard.stop.stopped())
                    .await;
            }
            Err(AppendError::Stopped) => {
                tally.dropped_wal += 1;
                return;
            }
        }
    }
}

/// Adds a batch's tally to the source's counters on this shard.
pub(crate) fn add_to_source(counters: &SourceCounters, shard: usize, tally: &BatchTally) {
    if let Some(c) = counters.shard(shard) {
        c.add(tally);
    }
}
