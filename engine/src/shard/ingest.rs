//! The ingest step every source shares: frame → parse → record → append to the shard's WAL
//! (transforms will sit between parse and record). No allocation per event: the parse result
//! lives on the stack and the record is encoded straight into the WAL's pending buffer.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use ingest::framing::FrameFlags;
use ingest::{record, ParserOptions};
use storage::writer::{AppendError, WalStatus};

use super::Shard;
use crate::metrics::{BatchTally, SourceCounters};

/// Time taken once per read batch: every event of the batch gets the same `received_at`.
pub(crate) struct BatchClock {
    received_at_us: i64,
    /// Resolves RFC 3164's missing year.
    now: ingest::Now,
}

impl BatchClock {
    pub(crate) fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        BatchClock {
            received_at_us: d.as_micros() as i64,
            now: ingest::Now::at(d.as_secs() as i64),
        }
    }
}

/// One frame as a source read it.
pub(crate) struct FrameIn<'a> {
    pub frame: &'a [u8],
    pub flags: FrameFlags,
    pub source_ip: IpAddr,
    pub parser: &'a ParserOptions,
}

/// Parses one frame and appends its record, waiting for WAL space if needed.
pub(crate) async fn ingest_frame(
    shard: &Shard,
    event: FrameIn<'_>,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let FrameIn {
        frame,
        flags,
        source_ip,
        parser,
    } = event;
    let parsed = ingest::parse_with(frame, &clock.now, parser);
    tally.events += 1;
    tally.bytes += frame.len() as u64;
    tally.count_parse_flags(parsed.flags);
    tally.oversize += u64::from(flags.truncated());
    tally.bad_length += u64::from(flags.bad_length());
    let header = record::EventHeader {
        received_at_us: clock.received_at_us,
        source_ip: Some(source_ip),
        frame_flags: flags,
    };
    let len = record::encoded_len(frame.len());
    loop {
        match shard
            .appender
            .try_append(len, |buf| record::encode(buf, &header, &parsed, frame))
        {
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
