//! Parsers of message bodies (issue 13's `parse_*` transforms): each returns byte ranges into
//! the input, so the caller decides how fields are stored; none allocates per event beyond the
//! caller's reused output vector.

pub mod access;
pub mod grok;
pub mod kv;
