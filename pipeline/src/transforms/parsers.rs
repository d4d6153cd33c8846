//! The parse transforms: `parse_json`, `parse_kv`, `parse_apache` / `parse_nginx`,
//! `parse_regex`, `parse_auto`. Each reads one input (the message by default), adds what it
//! found as fields (merged at the root, or under `target`), and on failure keeps the event
//! flagged (`parse_error`) or drops it (`on_error = "drop"`).

use regex::bytes::{CaptureLocations, Regex};
use simd_json::{Node, StaticNode};

use super::{failed, Input, OnError};
use crate::event::{Event, Fields, NewValue};
use crate::parse::{access, grok, kv};
use crate::{Context, Outcome, Transform};

/// Builds field paths under an optional `target` prefix (reused buffer).
#[derive(Debug, Default)]
struct Paths {
    prefix: Vec<u8>,
    path: Vec<u8>,
}

impl Paths {
    fn new(target: Option<&str>) -> Paths {
        Paths {
            prefix: target.map(|t| t.as_bytes().to_vec()).unwrap_or_default(),
            path: Vec::new(),
        }
    }
    fn reset(&mut self) {
        self.path.clear();
        self.path.extend_from_slice(&self.prefix);
    }
    /// Pushes one segment; returns the length to truncate back to.
    fn push(&mut self, segment: &[u8]) -> usize {
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push(b'.');
        }
        self.path.extend_from_slice(segment);
        len
    }
    fn set(&mut self, fields: &mut Fields, key: &[u8], value: NewValue<'_>) {
        let back = self.push(key);
        fields.set(&self.path, value);
        self.path.truncate(back);
    }
}

/// `parse_json`: a JSON object into fields (nested objects flattened to dotted paths, arrays
/// kept whole), with simd-json over a reused copy of the input.
pub struct ParseJson {
    name: String,
    input: Input,
    on_error: OnError,
    paths: Paths,
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
    array_text: Vec<u8>,
}

impl ParseJson {
    pub fn new(name: &str, input: Input, target: Option<&str>, on_error: OnError) -> ParseJson {
        ParseJson {
            name: name.to_string(),
            input,
            on_error,
            paths: Paths::new(target),
            scratch: Vec::new(),
            buffers: simd_json::Buffers::default(),
            tape: Some(simd_json::Tape::null().reset()),
            array_text: Vec::new(),
        }
    }

    /// Parses `self.scratch` into `fields`; false when it is not a JSON object (or, with a
    /// target, not JSON at all).
    fn parse_into(&mut self, fields: &mut Fields) -> bool {
        let tape = self
            .tape
            .take()
            .unwrap_or_else(|| simd_json::Tape::null().reset());
        let mut tape = tape.reset();
        let ok = simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape).is_ok()
            && flatten_root(&tape.0, &mut self.paths, fields, &mut self.array_text);
        self.tape = Some(tape.reset());
        ok
    }
}

/// Adds the root value of `nodes`: an object's members, or (with a target) any value.
fn flatten_root(
    nodes: &[Node<'_>],
    paths: &mut Paths,
    fields: &mut Fields,
    text: &mut Vec<u8>,
) -> bool {
    paths.reset();
    let fresh = fields.is_empty();
    match nodes.first() {
        Some(Node::Object { .. }) => {
            flatten(nodes, 0, paths, fields, text, fresh);
            true
        }
        Some(_) if !paths.prefix.is_empty() => {
            let prefix = std::mem::take(&mut paths.path);
            set_leaf(nodes, 0, &prefix, fields, text, fresh);
            paths.path = prefix;
            true
        }
        _ => false,
    }
}

/// Adds the object at `nodes[at]` under the current path; returns the index after it.
fn flatten(
    nodes: &[Node<'_>],
    at: usize,
    paths: &mut Paths,
    fields: &mut Fields,
    text: &mut Vec<u8>,
    fresh: bool,
) -> usize {
    let Some(Node::Object { len, .. }) = nodes.get(at) else {
        return at + 1;
    };
    let mut i = at + 1;
    for _ in 0..*len {
        let Some(Node::String(key)) = nodes.get(i) else {
            return nodes.len();
        };
        let back = paths.push(key.as_bytes());
        i += 1;
        if matches!(nodes.get(i), Some(Node::Object { len, .. }) if *len > 0) {
            i = flatten(nodes, i, paths, fields, text, fresh);
        } else {
            let path = std::mem::take(&mut paths.path);
            i = set_leaf(nodes, i, &path, fields, text, fresh);
            paths.path = path;
        }
        paths.path.truncate(back);
    }
    i
}

/// Sets a field; `fresh`: the store was empty before this parse (nothing to collide with).
fn put(fields: &mut Fields, fresh: bool, path: &[u8], value: NewValue<'_>) {
    if fresh {
        fields.push_new(path, value);
    } else {
        fields.set(path, value);
    }
}

/// Sets `path` to the value at `nodes[at]`; returns the index after it.
fn set_leaf(
    nodes: &[Node<'_>],
    at: usize,
    path: &[u8],
    fields: &mut Fields,
    text: &mut Vec<u8>,
    fresh: bool,
) -> usize {
    match nodes.get(at) {
        Some(Node::String(s)) => put(fields, fresh, path, NewValue::Str(s.as_bytes())),
        Some(Node::Static(StaticNode::I64(n))) => put(fields, fresh, path, NewValue::Int(*n)),
        Some(Node::Static(StaticNode::U64(n))) => match i64::try_from(*n) {
            Ok(n) => put(fields, fresh, path, NewValue::Int(n)),
            Err(_) => put(fields, fresh, path, NewValue::Float(*n as f64)),
        },
        Some(Node::Static(StaticNode::F64(f))) => put(fields, fresh, path, NewValue::Float(*f)),
        Some(Node::Static(StaticNode::Bool(b))) => put(fields, fresh, path, NewValue::Bool(*b)),
        Some(Node::Static(StaticNode::Null)) => put(fields, fresh, path, NewValue::Null),
        Some(Node::Array { .. } | Node::Object { .. }) => {
            text.clear();
            let next = write_json(nodes, at, text);
            put(fields, fresh, path, NewValue::Json(text));
            return next;
        }
        None => return nodes.len(),
    }
    at + 1
}

/// Writes the value at `nodes[at]` as JSON text; returns the index after it.
fn write_json(nodes: &[Node<'_>], at: usize, out: &mut Vec<u8>) -> usize {
    use std::io::Write as _;
    let leaf = |n: &Node<'_>, out: &mut Vec<u8>| match n {
        Node::String(s) => ingest::json::write_str(out, s.as_bytes()),
        Node::Static(StaticNode::I64(v)) => {
            let _ = write!(out, "{v}");
        }
        Node::Static(StaticNode::U64(v)) => {
            let _ = write!(out, "{v}");
        }
        Node::Static(StaticNode::F64(v)) if v.is_finite() => {
            let _ = write!(out, "{v}");
        }
        Node::Static(StaticNode::Bool(b)) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" })
        }
        _ => out.extend_from_slice(b"null"),
    };
    match nodes.get(at) {
        Some(Node::Array { len, .. }) => {
            out.push(b'[');
            let mut i = at + 1;
            for k in 0..*len {
                if k > 0 {
                    out.push(b',');
                }
                i = write_json(nodes, i, out);
            }
            out.push(b']');
            i
        }
        Some(Node::Object { len, .. }) => {
            out.push(b'{');
            let mut i = at + 1;
            for k in 0..*len {
                if k > 0 {
                    out.push(b',');
                }
                if let Some(key) = nodes.get(i) {
                    leaf(key, out);
                }
                out.push(b':');
                i = write_json(nodes, i + 1, out);
            }
            out.push(b'}');
            i
        }
        Some(n) => {
            leaf(n, out);
            at + 1
        }
        None => nodes.len(),
    }
}

impl Transform for ParseJson {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if !self.input.read_into(event, &mut self.scratch) {
            return failed(event, &self.name, "the field is missing", self.on_error);
        }
        if self.parse_into(&mut event.fields) {
            Outcome::Pass
        } else {
            failed(event, &self.name, "not a JSON object", self.on_error)
        }
    }
}

/// `parse_kv`: `key=value` pairs (quoted values unescaped) as string fields.
pub struct ParseKv {
    name: String,
    input: Input,
    on_error: OnError,
    options: kv::KvOptions,
    paths: Paths,
    scratch: Vec<u8>,
    pairs: Vec<kv::Pair>,
    value: Vec<u8>,
}

impl ParseKv {
    pub fn new(
        name: &str,
        input: Input,
        target: Option<&str>,
        options: kv::KvOptions,
        on_error: OnError,
    ) -> ParseKv {
        ParseKv {
            name: name.to_string(),
            input,
            on_error,
            options,
            paths: Paths::new(target),
            scratch: Vec::new(),
            pairs: Vec::new(),
            value: Vec::new(),
        }
    }
}

/// Adds the pairs of `input` as fields; how many.
fn add_pairs(
    input: &[u8],
    options: &kv::KvOptions,
    pairs: &mut Vec<kv::Pair>,
    paths: &mut Paths,
    value: &mut Vec<u8>,
    fields: &mut Fields,
) -> usize {
    pairs.clear();
    kv::parse(input, options, pairs);
    paths.reset();
    for pair in pairs.iter() {
        let raw = &input[pair.value.clone()];
        value.clear();
        if pair.quoted {
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'\\' && i + 1 < raw.len() {
                    i += 1;
                }
                value.push(raw[i]);
                i += 1;
            }
        } else {
            value.extend_from_slice(raw);
        }
        paths.set(fields, &input[pair.key.clone()], NewValue::Str(value));
    }
    pairs.len()
}

impl Transform for ParseKv {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if !self.input.read_into(event, &mut self.scratch) {
            return failed(event, &self.name, "the field is missing", self.on_error);
        }
        let found = add_pairs(
            &self.scratch,
            &self.options,
            &mut self.pairs,
            &mut self.paths,
            &mut self.value,
            &mut event.fields,
        );
        if found > 0 {
            Outcome::Pass
        } else {
            failed(event, &self.name, "no key=value pairs", self.on_error)
        }
    }
}

/// Which access-line shapes `parse_apache` / `parse_nginx` accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// Common Log Format only.
    Common,
    /// Combined only (referrer and user agent present).
    Combined,
    /// Either.
    Any,
}

/// `parse_apache` / `parse_nginx`: CLF and combined lines.
pub struct ParseAccess {
    name: String,
    input: Input,
    on_error: OnError,
    format: AccessFormat,
    paths: Paths,
    scratch: Vec<u8>,
}

impl ParseAccess {
    pub fn new(
        name: &str,
        input: Input,
        target: Option<&str>,
        format: AccessFormat,
        on_error: OnError,
    ) -> ParseAccess {
        ParseAccess {
            name: name.to_string(),
            input,
            on_error,
            format,
            paths: Paths::new(target),
            scratch: Vec::new(),
        }
    }
}

/// Adds an access line's fields: client, ident, user, timestamp, request, method, path,
/// protocol, status and size (numbers), referrer, agent.
fn add_access(line: &[u8], a: &access::AccessLine, paths: &mut Paths, fields: &mut Fields) {
    paths.reset();
    let mut text = |key: &[u8], r: &Option<std::ops::Range<usize>>, paths: &mut Paths| {
        if let Some(r) = r {
            paths.set(fields, key, NewValue::Str(&line[r.clone()]));
        }
    };
    text(b"client", &Some(a.client.clone()), paths);
    text(b"ident", &a.ident, paths);
    text(b"user", &a.user, paths);
    text(b"timestamp", &Some(a.timestamp.clone()), paths);
    text(b"request", &Some(a.request.clone()), paths);
    text(b"method", &a.method, paths);
    text(b"path", &a.path, paths);
    text(b"protocol", &a.protocol, paths);
    text(b"referrer", &a.referrer, paths);
    text(b"agent", &a.user_agent, paths);
    let number = |r: &std::ops::Range<usize>| {
        std::str::from_utf8(&line[r.clone()])
            .ok()?
            .parse::<i64>()
            .ok()
    };
    if let Some(status) = number(&a.status) {
        paths.set(fields, b"status", NewValue::Int(status));
    }
    if let Some(size) = a.bytes.as_ref().and_then(number) {
        paths.set(fields, b"size", NewValue::Int(size));
    }
}

impl Transform for ParseAccess {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if !self.input.read_into(event, &mut self.scratch) {
            return failed(event, &self.name, "the field is missing", self.on_error);
        }
        let line = trim_line(&self.scratch);
        match access::parse(line) {
            Some(a) if self.format != AccessFormat::Combined || a.combined => {
                if self.format == AccessFormat::Common && a.combined {
                    return failed(
                        event,
                        &self.name,
                        "a combined line, not common",
                        self.on_error,
                    );
                }
                add_access(line, &a, &mut self.paths, &mut event.fields);
                Outcome::Pass
            }
            _ => failed(event, &self.name, "not an access log line", self.on_error),
        }
    }
}

/// Without the line end a sender may have kept in the message.
fn trim_line(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    &bytes[..end]
}

/// `parse_regex`: the named captures of a regex as string fields.
pub struct ParseRegex {
    name: String,
    input: Input,
    on_error: OnError,
    regex: Regex,
    /// (capture index, name) of each named group.
    names: Vec<(usize, Vec<u8>)>,
    locations: CaptureLocations,
    paths: Paths,
    scratch: Vec<u8>,
}

impl ParseRegex {
    pub fn new(
        name: &str,
        input: Input,
        target: Option<&str>,
        regex: Regex,
        on_error: OnError,
    ) -> ParseRegex {
        let names = regex
            .capture_names()
            .enumerate()
            .filter_map(|(i, n)| n.map(|n| (i, n.as_bytes().to_vec())))
            .collect();
        ParseRegex {
            name: name.to_string(),
            input,
            on_error,
            locations: regex.capture_locations(),
            regex,
            names,
            paths: Paths::new(target),
            scratch: Vec::new(),
        }
    }

    /// Whether the regex matched; its named captures added to `fields`.
    pub(super) fn apply(&mut self, input: &[u8], fields: &mut Fields) -> bool {
        if self
            .regex
            .captures_read(&mut self.locations, input)
            .is_none()
        {
            return false;
        }
        self.paths.reset();
        for (i, name) in &self.names {
            if let Some((start, end)) = self.locations.get(*i) {
                self.paths
                    .set(fields, name, NewValue::Str(&input[start..end]));
            }
        }
        true
    }
}

impl Transform for ParseRegex {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        let mut input = std::mem::take(&mut self.scratch);
        let outcome = if !self.input.read_into(event, &mut input) {
            failed(event, &self.name, "the field is missing", self.on_error)
        } else if self.apply(&input, &mut event.fields) {
            Outcome::Pass
        } else {
            failed(
                event,
                &self.name,
                "the pattern did not match",
                self.on_error,
            )
        };
        self.scratch = input;
        outcome
    }
}

/// `parse_auto`: JSON if the input is a JSON object, else an access line, else `key=value`
/// pairs (two or more); the field `parsed_as` says which (`json`, `apache_combined`,
/// `apache_common`, `kv`).
pub struct ParseAuto {
    name: String,
    on_error: OnError,
    json: ParseJson,
    kv: ParseKv,
}

/// The field `parse_auto` sets to what it recognised.
pub const PARSED_AS_FIELD: &[u8] = b"parsed_as";

impl ParseAuto {
    pub fn new(name: &str, input: Input, target: Option<&str>, on_error: OnError) -> ParseAuto {
        ParseAuto {
            name: name.to_string(),
            on_error,
            json: ParseJson::new(name, input.clone(), target, OnError::Keep),
            kv: ParseKv::new(name, input, target, kv::KvOptions::default(), OnError::Keep),
        }
    }
}

impl Transform for ParseAuto {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if !self.json.input.read_into(event, &mut self.json.scratch) {
            return failed(event, &self.name, "the field is missing", self.on_error);
        }
        let input = &self.json.scratch;
        let first = input.iter().find(|b| !b.is_ascii_whitespace());
        self.kv.scratch.clone_from(input);
        let line = trim_line(&self.kv.scratch);
        let kind: &[u8] = if first == Some(&b'{') && self.json.parse_into(&mut event.fields) {
            b"json"
        } else if let Some(a) = access::parse(line) {
            add_access(line, &a, &mut self.kv.paths, &mut event.fields);
            if a.combined {
                b"apache_combined"
            } else {
                b"apache_common"
            }
        } else {
            let mut probe = std::mem::take(&mut self.kv.pairs);
            probe.clear();
            let found = kv::parse(line, &self.kv.options, &mut probe);
            self.kv.pairs = probe;
            if found < 2 {
                return failed(
                    event,
                    &self.name,
                    "neither JSON, an access line nor key=value pairs",
                    self.on_error,
                );
            }
            let ParseKv {
                scratch,
                options,
                pairs,
                paths,
                value,
                ..
            } = &mut self.kv;
            add_pairs(
                trim_line(scratch),
                options,
                pairs,
                paths,
                value,
                &mut event.fields,
            );
            b"kv"
        };
        event.fields.set(PARSED_AS_FIELD, NewValue::Str(kind));
        Outcome::Pass
    }
}

/// `parse_grok`: the first of its grok patterns that matches gives the fields.
pub struct ParseGrok {
    name: String,
    input: Input,
    on_error: OnError,
    patterns: grok::GrokSet,
    paths: Paths,
    scratch: Vec<u8>,
}

impl ParseGrok {
    pub fn new(
        name: &str,
        input: Input,
        target: Option<&str>,
        patterns: grok::GrokSet,
        on_error: OnError,
    ) -> ParseGrok {
        ParseGrok {
            name: name.to_string(),
            input,
            on_error,
            patterns,
            paths: Paths::new(target),
            scratch: Vec::new(),
        }
    }
}

impl Transform for ParseGrok {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if !self.input.read_into(event, &mut self.scratch) {
            return failed(event, &self.name, "the field is missing", self.on_error);
        }
        let input = trim_line(&self.scratch);
        let paths = &mut self.paths;
        paths.reset();
        let fields = &mut event.fields;
        let matched = self.patterns.matches(input, |m| {
            let text = &input[m.range];
            let number = std::str::from_utf8(text).ok();
            let value = match m.ty {
                grok::FieldType::Int => number.and_then(|t| t.parse().ok()).map(NewValue::Int),
                grok::FieldType::Float => number.and_then(|t| t.parse().ok()).map(NewValue::Float),
                grok::FieldType::Text => None,
            };
            paths.set(fields, m.path, value.unwrap_or(NewValue::Str(text)));
        });
        if matched {
            Outcome::Pass
        } else {
            failed(event, &self.name, "no grok pattern matched", self.on_error)
        }
    }
}
