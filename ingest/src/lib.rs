//! Syslog ingest codecs: framing, parsing and the event record, as pure functions over `&[u8]`.
//!
//! Nothing here does I/O or knows about executors; the engine owns sockets and feeds bytes in.
//!
//! Invariants:
//! - No allocation per event: the framer yields slices of the caller's buffer, the parser yields
//!   byte ranges into the frame, and the record encoder appends into a caller-owned buffer.
//! - Never panics on any input (property-tested and fuzzed); bad input becomes a flagged event or
//!   a counted framing error, never a lost neighbour.
//! - Parsing never drops an event or a byte: the message always runs to the end of the frame, a
//!   field the parser could not read stays in it, and what it had to guess is in the event's
//!   `ParseFlags`. (`raw` events are those of sources with `parser = "raw"`.)

pub mod civil;
pub mod framing;
pub mod json;
pub mod record;
pub mod relp;
pub mod syslog;

pub use framing::{Frame, FrameFlags, Framer, FramingMode};
pub use record::{EventHeader, EventView, RecordError};
pub use syslog::{
    parse, parse_with, Format, Now, ParseFlags, Parsed, ParserMode, ParserOptions, Span, Timestamp,
};
