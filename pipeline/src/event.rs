//! The event as transforms see and change it: the frame and its parse (as offsets), the source
//! address, and the fields that parsing and remapping add.
//!
//! Invariants:
//! - `parsed`'s spans always lie inside `frame`. A transform that rewrites a syslog field
//!   (redaction of the message) rewrites the frame and moves the spans after it, so raw
//!   encoding still writes what the sender sent, with the rewrite applied.
//! - Fields are a flat list of dotted paths (`http.status`) with typed values; nested JSON
//!   objects are flattened into paths when they are parsed and nested again when written
//!   ([`Fields::write_json_members`]). Arrays are kept as their JSON text. Setting a path removes
//!   what it would collide with: the same path, its ancestors (a scalar `http` under `http.status`)
//!   and its descendants.
//! - Buffers are reused: an [`Event`] is loaded and copied with `clone_from`, so once its
//!   buffers have grown, processing allocates nothing.

use std::net::IpAddr;
use std::ops::Range;

use ingest::syslog::{Parsed, Span};

/// A field's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldValue {
    /// Bytes in the store's arena.
    Str(Range32),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    /// A JSON array (or any JSON value kept whole), its text in the arena.
    Json(Range32),
}

/// A byte range in a [`Fields`] arena (u32: events are bounded by `max_frame`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range32 {
    pub start: u32,
    pub end: u32,
}

impl Range32 {
    fn of(r: Range<usize>) -> Self {
        Range32 {
            start: r.start as u32,
            end: r.end as u32,
        }
    }
    fn get<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        arena
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Entry {
    name: Range32,
    value: FieldValue,
}

/// A value to set, borrowing its bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NewValue<'a> {
    Str(&'a [u8]),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Json(&'a [u8]),
}

/// The fields parsing and remapping added to an event.
#[derive(Debug, Default, Clone)]
pub struct Fields {
    arena: Vec<u8>,
    entries: Vec<Entry>,
    /// Scratch for writing nested JSON: entry order sorted by path, the open objects.
    order: Vec<u32>,
    open: Vec<Range32>,
    closed: Vec<Range32>,
}

/// Whether `name` is `path` or lies under it (`a.b` under `a`).
fn is_at_or_under(name: &[u8], path: &[u8]) -> bool {
    name.starts_with(path) && (name.len() == path.len() || name[path.len()] == b'.')
}

impl Fields {
    pub fn clear(&mut self) {
        self.arena.clear();
        self.entries.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Range32 {
        let start = self.arena.len();
        self.arena.extend_from_slice(bytes);
        Range32::of(start..self.arena.len())
    }

    /// Sets `path` (dotted) to `value`, replacing what collides with it (see the module docs).
    pub fn set(&mut self, path: &[u8], value: NewValue<'_>) {
        self.remove_colliding(path);
        self.push_new(path, value);
    }

    /// Adds `path` without looking for what it collides with: for filling a store that was
    /// empty from one parsed object (whose paths cannot collide, except a key the object
    /// repeats: then both are kept and the later one wins, as in JSON).
    pub fn push_new(&mut self, path: &[u8], value: NewValue<'_>) {
        let name = self.push_bytes(path);
        let value = match value {
            NewValue::Str(s) => FieldValue::Str(self.push_bytes(s)),
            NewValue::Json(s) => FieldValue::Json(self.push_bytes(s)),
            NewValue::Int(i) => FieldValue::Int(i),
            NewValue::Float(f) => FieldValue::Float(f),
            NewValue::Bool(b) => FieldValue::Bool(b),
            NewValue::Null => FieldValue::Null,
        };
        self.entries.push(Entry { name, value });
    }

    /// Sets `path` to a string built by `write` straight into the arena.
    pub fn set_with(&mut self, path: &[u8], write: impl FnOnce(&mut Vec<u8>)) {
        self.remove_colliding(path);
        let name = self.push_bytes(path);
        let start = self.arena.len();
        write(&mut self.arena);
        let value = FieldValue::Str(Range32::of(start..self.arena.len()));
        self.entries.push(Entry { name, value });
    }

    fn remove_colliding(&mut self, path: &[u8]) {
        let arena = &self.arena;
        self.entries.retain(|e| {
            let name = e.name.get(arena);
            !(is_at_or_under(name, path) || is_at_or_under(path, name))
        });
    }

    /// Removes `path` and everything under it; whether anything was there.
    pub fn remove(&mut self, path: &[u8]) -> bool {
        let before = self.entries.len();
        let arena = &self.arena;
        self.entries
            .retain(|e| !is_at_or_under(e.name.get(arena), path));
        self.entries.len() != before
    }

    /// Moves `from` (and what lies under it) to `to`; whether anything was there.
    pub fn rename(&mut self, from: &[u8], to: &[u8]) -> bool {
        if from == to {
            return self.get(from).is_some();
        }
        self.remove_colliding(to);
        let mut moved = false;
        for i in 0..self.entries.len() {
            let name = self.entries[i].name.get(&self.arena);
            if !is_at_or_under(name, from) {
                continue;
            }
            let rest_start = self.entries[i].name.start as usize + from.len();
            let rest_end = self.entries[i].name.end as usize;
            let start = self.arena.len();
            self.arena.extend_from_slice(to);
            self.arena.extend_from_within(rest_start..rest_end);
            self.entries[i].name = Range32::of(start..self.arena.len());
            moved = true;
        }
        moved
    }

    /// The value at exactly `path`.
    pub fn get(&self, path: &[u8]) -> Option<FieldValue> {
        self.entries
            .iter()
            .rev()
            .find(|e| e.name.get(&self.arena) == path)
            .map(|e| e.value)
    }

    /// The value at the path `parts` joined by dots (no allocation).
    pub fn get_parts(&self, parts: &[String]) -> Option<FieldValue> {
        self.entries
            .iter()
            .rev()
            .find(|e| path_equals(e.name.get(&self.arena), parts))
            .map(|e| e.value)
    }

    /// The bytes of a `Str` or `Json` value.
    pub fn bytes(&self, value: &FieldValue) -> &[u8] {
        match value {
            FieldValue::Str(r) | FieldValue::Json(r) => r.get(&self.arena),
            _ => &[],
        }
    }

    /// Replaces the string at `path` by `bytes` (for redaction of a named field).
    pub fn replace_str(&mut self, path: &[u8], bytes: &[u8]) {
        let range = self.push_bytes(bytes);
        self.replace(path, FieldValue::Str(range));
    }

    /// Replaces the value at `path` (kept where it is).
    pub fn replace(&mut self, path: &[u8], value: FieldValue) {
        let arena = &self.arena;
        if let Some(e) = self
            .entries
            .iter_mut()
            .rev()
            .find(|e| e.name.get(arena) == path)
        {
            e.value = value;
        }
    }

    /// Sets every field of `other` here (later ones replace what they collide with).
    pub fn extend_from(&mut self, other: &Fields) {
        for e in &other.entries {
            let value = match e.value {
                FieldValue::Str(r) => NewValue::Str(r.get(&other.arena)),
                FieldValue::Json(r) => NewValue::Json(r.get(&other.arena)),
                FieldValue::Int(i) => NewValue::Int(i),
                FieldValue::Float(f) => NewValue::Float(f),
                FieldValue::Bool(b) => NewValue::Bool(b),
                FieldValue::Null => NewValue::Null,
            };
            self.set(e.name.get(&other.arena), value);
        }
    }

    /// Top-level names (the first path segment of each entry), possibly repeated.
    pub fn top_level_names(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().map(|e| {
            let name = e.name.get(&self.arena);
            let end = memchr::memchr(b'.', name).unwrap_or(name.len());
            &name[..end]
        })
    }

    /// Writes the fields as the members of a JSON object (`"a":1,"http":{"status":200}`),
    /// without braces, nesting dotted paths. Allocates nothing once the scratch has grown.
    pub fn write_json_members(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        self.order.clear();
        self.order.extend(0..self.entries.len() as u32);
        // In insertion order when entries under one prefix are adjacent (a parsed JSON object
        // always is); otherwise sorted by path, which makes them adjacent.
        if self.write_in_order(out) {
            return;
        }
        out.truncate(start);
        let (arena, entries) = (&self.arena, &self.entries);
        self.order.sort_unstable_by(|&a, &b| {
            entries[a as usize]
                .name
                .get(arena)
                .cmp(entries[b as usize].name.get(arena))
        });
        self.write_in_order(out);
    }

    /// Writes the entries in `self.order`; false (output incomplete) when an object it
    /// already closed would have to open again.
    fn write_in_order(&mut self, out: &mut Vec<u8>) -> bool {
        let (arena, entries) = (&self.arena, &self.entries);
        // Open objects and closed ones, as full prefixes (`http`, `http.request`).
        let (open, closed) = (&mut self.open, &mut self.closed);
        open.clear();
        closed.clear();
        let mut first = true;
        for &i in &self.order {
            let entry = &entries[i as usize];
            let name = entry.name.get(arena);
            let base = entry.name.start as usize;
            let leaf_start = memchr::memrchr(b'.', name).map_or(0, |d| d + 1);
            let parents = || segments(&name[..leaf_start.saturating_sub(1)], base, leaf_start);
            let prefix = |seg: Range32| Range32 {
                start: base as u32,
                end: seg.end,
            };
            let common = parents()
                .zip(open.iter())
                .take_while(|(seg, o)| o.get(arena) == prefix(*seg).get(arena))
                .count();
            while open.len() > common {
                if let Some(done) = open.pop() {
                    closed.push(done);
                }
                out.push(b'}');
            }
            for segment in parents().skip(common) {
                let full = prefix(segment);
                if closed.iter().any(|c| c.get(arena) == full.get(arena)) {
                    return false;
                }
                if !first {
                    out.push(b',');
                }
                ingest::json::write_str(out, segment.get(arena));
                out.extend_from_slice(b":{");
                first = true;
                open.push(full);
            }
            if !first {
                out.push(b',');
            }
            first = false;
            ingest::json::write_str(out, &name[leaf_start..]);
            out.push(b':');
            write_value(out, &entry.value, arena);
        }
        for _ in open.drain(..) {
            out.push(b'}');
        }
        true
    }
}

/// The dot-separated segments of `parents` (absolute ranges: it starts at `base` in the
/// arena); none when there is no parent (`leaf_start` 0).
fn segments(parents: &[u8], base: usize, leaf_start: usize) -> impl Iterator<Item = Range32> + '_ {
    let mut at = 0;
    let has_parents = leaf_start > 0;
    std::iter::from_fn(move || {
        if !has_parents || at > parents.len() {
            return None;
        }
        let end = memchr::memchr(b'.', &parents[at..]).map_or(parents.len(), |d| at + d);
        let seg = Range32::of(base + at..base + end);
        at = end + 1;
        Some(seg)
    })
}

fn path_equals(name: &[u8], parts: &[String]) -> bool {
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            match rest.split_first() {
                Some((b'.', tail)) => rest = tail,
                _ => return false,
            }
        }
        match rest.strip_prefix(part.as_bytes()) {
            Some(tail) => rest = tail,
            None => return false,
        }
    }
    rest.is_empty()
}

/// One value as JSON.
pub fn write_value(out: &mut Vec<u8>, value: &FieldValue, arena: &[u8]) {
    use std::io::Write as _;
    match value {
        FieldValue::Str(r) => ingest::json::write_str(out, r.get(arena)),
        FieldValue::Json(r) => out.extend_from_slice(r.get(arena)),
        FieldValue::Int(i) => ingest::json::write_i64(out, *i),
        FieldValue::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f}");
        }
        FieldValue::Float(_) | FieldValue::Null => out.extend_from_slice(b"null"),
        FieldValue::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
    }
}

/// One event as the transforms of a shard process it.
#[derive(Debug, Clone)]
pub struct Event {
    pub frame: Vec<u8>,
    pub parsed: Parsed,
    pub source_ip: Option<IpAddr>,
    /// `source_ip` as text (conditions and throttle keys compare it).
    ip_text: Vec<u8>,
    /// The source's name (set by the shard before the graph runs).
    source: Vec<u8>,
    pub fields: Fields,
}

impl Default for Event {
    fn default() -> Self {
        Event {
            frame: Vec::new(),
            parsed: ingest::parse(b"", 0),
            source_ip: None,
            ip_text: Vec::new(),
            source: Vec::new(),
            fields: Fields::default(),
        }
    }
}

impl Event {
    /// Loads a freshly parsed frame (the buffers are reused).
    pub fn load(&mut self, frame: &[u8], parsed: &Parsed, source_ip: Option<IpAddr>) {
        self.frame.clear();
        self.frame.extend_from_slice(frame);
        self.parsed = *parsed;
        self.source_ip = source_ip;
        self.ip_text.clear();
        if let Some(ip) = source_ip {
            ingest::json::write_ip_text(&mut self.ip_text, ip);
        }
        self.fields.clear();
    }

    /// Copies `other` into this event, reusing its buffers.
    pub fn copy_from(&mut self, other: &Event) {
        self.frame.clone_from(&other.frame);
        self.parsed = other.parsed;
        self.source_ip = other.source_ip;
        self.ip_text.clone_from(&other.ip_text);
        self.source.clone_from(&other.source);
        self.fields.arena.clone_from(&other.fields.arena);
        self.fields.entries.clone_from(&other.fields.entries);
    }

    pub fn message(&self) -> &[u8] {
        self.parsed.message.get(&self.frame)
    }

    /// The bytes of a syslog header field or the message.
    pub fn span(&self, span: Option<Span>) -> Option<&[u8]> {
        span.map(|s| s.get(&self.frame))
    }

    /// Replaces the message with `bytes`: the frame is rewritten, the spans after the message
    /// move (raw output writes the rewritten frame).
    pub fn set_message(&mut self, bytes: &[u8]) {
        let old = self.parsed.message;
        let start = old.start as usize;
        let end = (start + old.len as usize).min(self.frame.len());
        self.frame.splice(start..end, bytes.iter().copied());
        let delta = bytes.len() as i64 - (end - start) as i64;
        let moved = |s: &mut Option<Span>| {
            if let Some(span) = s {
                if span.start as usize >= end && end > start {
                    span.start = (span.start as i64 + delta) as u32;
                }
            }
        };
        let p = &mut self.parsed;
        for s in [
            &mut p.hostname,
            &mut p.appname,
            &mut p.procid,
            &mut p.msgid,
            &mut p.structured_data,
        ] {
            moved(s);
        }
        p.message = Span {
            start: old.start,
            len: bytes.len() as u32,
        };
    }

    /// Names the source the event came from (`source` in conditions).
    pub fn set_source(&mut self, name: &[u8]) {
        self.source.clear();
        self.source.extend_from_slice(name);
    }

    /// The source address as text (empty when unknown).
    pub fn source_ip_text(&self) -> &[u8] {
        &self.ip_text
    }

    /// The value of a field by name: the syslog fields, `source_ip`, then parsed fields.
    pub fn lookup(&self, name: &[u8]) -> Option<crate::condition::Value<'_>> {
        use crate::condition::Value;
        let p = &self.parsed;
        match name {
            b"message" => Some(Value::Str(self.message())),
            b"hostname" => self.span(p.hostname).map(Value::Str),
            b"appname" => self.span(p.appname).map(Value::Str),
            b"procid" => self.span(p.procid).map(Value::Str),
            b"msgid" => self.span(p.msgid).map(Value::Str),
            b"severity" => self.severity().map(|s| Value::Num(f64::from(s))),
            b"facility" => self.facility().map(|f| Value::Num(f64::from(f))),
            b"source_ip" => (!self.ip_text.is_empty()).then_some(Value::Str(&self.ip_text)),
            b"source" => (!self.source.is_empty()).then_some(Value::Str(&self.source)),
            path => self.fields.get(path).and_then(|v| self.value_of(v)),
        }
    }

    fn value_of(&self, value: FieldValue) -> Option<crate::condition::Value<'_>> {
        use crate::condition::Value;
        Some(match value {
            FieldValue::Str(_) | FieldValue::Json(_) => Value::Str(self.fields.bytes(&value)),
            FieldValue::Int(i) => Value::Num(i as f64),
            FieldValue::Float(f) => Value::Num(f),
            FieldValue::Bool(true) => Value::Str(b"true"),
            FieldValue::Bool(false) => Value::Str(b"false"),
            FieldValue::Null => return None,
        })
    }

    /// The severity code (PRI & 7), when the event has a PRI.
    pub fn severity(&self) -> Option<u8> {
        self.parsed.pri.map(|p| p & 7)
    }

    /// The facility code (PRI >> 3), when the event has a PRI.
    pub fn facility(&self) -> Option<u8> {
        self.parsed.pri.map(|p| p >> 3)
    }

    pub fn set_severity(&mut self, severity: u8) {
        let facility = self.facility().unwrap_or(1);
        self.parsed.pri = Some(facility << 3 | (severity & 7));
    }

    pub fn set_facility(&mut self, facility: u8) {
        let severity = self.severity().unwrap_or(5);
        self.parsed.pri = Some((facility.min(23)) << 3 | severity);
    }
}

impl crate::condition::Fields for Event {
    fn get(&self, field: &crate::condition::Field) -> Option<crate::condition::Value<'_>> {
        use crate::condition::{Field, Value};
        let p = &self.parsed;
        match field {
            Field::Message => Some(Value::Str(self.message())),
            Field::Hostname => self.span(p.hostname).map(Value::Str),
            Field::Appname => self.span(p.appname).map(Value::Str),
            Field::Procid => self.span(p.procid).map(Value::Str),
            Field::Msgid => self.span(p.msgid).map(Value::Str),
            Field::Severity => self.severity().map(|s| Value::Num(f64::from(s))),
            Field::Facility => self.facility().map(|f| Value::Num(f64::from(f))),
            Field::SourceIp => (!self.ip_text.is_empty()).then_some(Value::Str(&self.ip_text)),
            Field::Source => (!self.source.is_empty()).then_some(Value::Str(&self.source)),
            Field::Path(parts) => self.fields.get_parts(parts).and_then(|v| self.value_of(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json_of(fields: &mut Fields) -> serde_json::Value {
        let mut out = b"{".to_vec();
        fields.write_json_members(&mut out);
        out.push(b'}');
        serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)))
    }

    #[test]
    fn dotted_paths_nest_and_collisions_replace() {
        let mut f = Fields::default();
        f.set(b"http.status", NewValue::Int(200));
        f.set(b"user", NewValue::Str(b"bob"));
        f.set(b"http.method", NewValue::Str(b"GET"));
        f.set(b"tags", NewValue::Json(b"[\"a\",1]"));
        assert_eq!(
            json_of(&mut f),
            serde_json::json!({"http": {"method": "GET", "status": 200}, "user": "bob", "tags": ["a", 1]})
        );
        f.set(b"http", NewValue::Bool(true));
        assert_eq!(f.get(b"http.status"), None);
        f.set(b"user.name", NewValue::Str(b"x"));
        assert_eq!(f.get(b"user"), None);
        assert!(f.rename(b"user", b"account"));
        assert_eq!(
            json_of(&mut f),
            serde_json::json!({"http": true, "account": {"name": "x"}, "tags": ["a", 1]})
        );
        assert!(f.remove(b"account"));
        assert_eq!(
            f.get_parts(&["http".to_string()]),
            Some(FieldValue::Bool(true))
        );
    }

    proptest::proptest! {
        /// Whatever paths are set, removed and renamed, the fields write as valid JSON in which
        /// every remaining path holds the value it was last given.
        #[test]
        fn fields_always_write_valid_nested_json(
            ops in proptest::collection::vec((0u8..4, "[ab\"é.]{1,2}(\\.[ab]{1,2}){0,2}", 0i64..100), 0..24)
        ) {
            let mut f = Fields::default();
            for (op, path, n) in &ops {
                let path = path.trim_matches('.').replace("..", ".");
                if path.is_empty() {
                    continue;
                }
                match op {
                    0 => f.set(path.as_bytes(), NewValue::Int(*n)),
                    1 => f.set(path.as_bytes(), NewValue::Str(path.as_bytes())),
                    2 => { f.remove(path.as_bytes()); }
                    _ => { f.rename(path.as_bytes(), b"renamed"); }
                }
            }
            let mut out = b"{".to_vec();
            f.write_json_members(&mut out);
            out.push(b'}');
            let value: serde_json::Value = serde_json::from_slice(&out).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&out))))?;
            for e in &f.entries {
                let name = String::from_utf8_lossy(e.name.get(&f.arena)).into_owned();
                let mut at = &value;
                for seg in name.split('.') {
                    at = &at[seg];
                }
                let want = match e.value {
                    FieldValue::Int(i) => serde_json::json!(i),
                    FieldValue::Str(r) => serde_json::json!(String::from_utf8_lossy(r.get(&f.arena))),
                    _ => continue,
                };
                proptest::prop_assert_eq!(at, &want, "{}", name);
            }
        }
    }

    #[test]
    fn rewriting_the_message_keeps_spans_inside_the_frame() {
        let frame = b"<13>1 2024-01-01T00:00:00Z host app - - - card 4111";
        let parsed = ingest::parse(frame, 0);
        let mut e = Event::default();
        e.load(frame, &parsed, None);
        e.set_message(b"card [REDACTED]");
        assert_eq!(e.message(), b"card [REDACTED]");
        assert_eq!(e.span(e.parsed.hostname), Some(&b"host"[..]));
        assert!(e.frame.ends_with(b"- card [REDACTED]"));
        e.set_severity(3);
        assert_eq!(e.parsed.pri, Some(11));
    }
}
