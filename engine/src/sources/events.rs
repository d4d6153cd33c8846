//! Ingest of events that are not syslog frames: JSON objects (HTTP `/v1/events`, `format =
//! "json"` on stdin and files), each its message as it came (no syslog parsing) and its
//! members as fields.

use std::net::IpAddr;

use crate::metrics::BatchTally;
use crate::shard::ingest::{ingest_frame, BatchClock, Extras, FrameIn};
use crate::shard::Shard;
use crate::sources::http::JsonEvent;

/// Events that are not syslog keep their message as it came.
pub(crate) const RAW: ingest::ParserOptions = ingest::ParserOptions {
    mode: ingest::ParserMode::Raw,
    permit_square_brackets_in_hostname: false,
    permit_slashes_in_hostname: false,
    permit_at_signs_in_hostname: false,
    force_tag_ending_by_colon: false,
    remove_msg_first_space: false,
};

/// Where non-syslog events come from.
pub(crate) struct Origin<'a> {
    pub source: &'a str,
    pub source_ip: Option<IpAddr>,
    /// Fields every event of the connection or request gets (set after the event's own, so
    /// they win: an API key's name cannot be forged by the body).
    pub context: Option<&'a Extras>,
}

/// Appends one JSON event (waits for WAL space like any frame).
pub(crate) async fn ingest_json_event(
    shard: &Shard,
    origin: &Origin<'_>,
    event: &JsonEvent,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let mut fields = event.fields.clone();
    if let Some(context) = origin.context {
        context.load_into(&mut fields);
    }
    let extras = Extras::of(fields);
    let input = FrameIn {
        frame: &event.message,
        flags: ingest::FrameFlags::default(),
        source_ip: origin.source_ip,
        parser: &RAW,
        source: origin.source,
        extras: Some(&extras),
    };
    ingest_frame(shard, input, clock, tally).await;
}

/// One line of a JSON input: its event, or (not a JSON object) the line itself as a raw
/// event, counted (`sluice_parse_errors_total{kind="bad_format"}`): never lost.
pub(crate) async fn ingest_json_line(
    shard: &Shard,
    origin: &Origin<'_>,
    line: &[u8],
    flags: ingest::FrameFlags,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    match crate::sources::http::decode_events(line) {
        Ok(events) if events.len() == 1 => {
            ingest_json_event(shard, origin, &events[0], clock, tally).await
        }
        _ => {
            tally.bad_format += 1;
            let input = FrameIn {
                frame: line,
                flags,
                source_ip: origin.source_ip,
                parser: &RAW,
                source: origin.source,
                extras: origin.context,
            };
            ingest_frame(shard, input, clock, tally).await;
        }
    }
}
