//! `remap`: field operations in a fixed order — add, rename, remove, convert, then severity
//! and facility taken from a field.

use ingest::syslog::{FACILITY_NAMES, SEVERITY_NAMES};

use crate::event::{Event, FieldValue, NewValue};
use crate::{Context, Outcome, Transform};

/// A value `add` sets.
#[derive(Debug, Clone, PartialEq)]
pub enum RemapValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// `"%{host}"`: the receiving host's name.
    Host,
    /// `"%{shard}"`: the shard's number.
    Shard,
    /// `"%{source}"`: the source's name.
    Source,
}

/// What `convert` turns a field into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conversion {
    Int,
    Float,
    /// `true`/`false`, `yes`/`no`, `on`/`off`, `1`/`0` (any case).
    Bool,
    /// Read with a strftime-like format ([`parse_time`]), written as RFC 3339 UTC.
    Timestamp(String),
}

/// One operation.
#[derive(Debug, Clone, PartialEq)]
pub enum RemapOp {
    Add(String, RemapValue),
    Rename(String, String),
    Remove(String),
    Convert(String, Conversion),
    SeverityFrom(String),
    FacilityFrom(String),
}

/// `remap`: its operations in order; a conversion that fails leaves the field as it was and
/// counts as an error (`parse_error` says which).
pub struct Remap {
    name: String,
    ops: Vec<RemapOp>,
    scratch: Vec<u8>,
}

impl Remap {
    pub fn new(name: &str, ops: Vec<RemapOp>) -> Remap {
        Remap {
            name: name.to_string(),
            ops,
            scratch: Vec::new(),
        }
    }

    fn add(event: &mut Event, path: &str, value: &RemapValue, ctx: &Context<'_>) {
        let path = path.as_bytes();
        match value {
            RemapValue::Str(s) => event.fields.set(path, NewValue::Str(s.as_bytes())),
            RemapValue::Int(i) => event.fields.set(path, NewValue::Int(*i)),
            RemapValue::Float(f) => event.fields.set(path, NewValue::Float(*f)),
            RemapValue::Bool(b) => event.fields.set(path, NewValue::Bool(*b)),
            RemapValue::Host => event.fields.set(path, NewValue::Str(ctx.host.as_bytes())),
            RemapValue::Shard => event.fields.set(path, NewValue::Int(i64::from(ctx.shard))),
            RemapValue::Source => event.fields.set(path, NewValue::Str(ctx.source.as_bytes())),
        }
    }

    /// Converts the field in place; false when its value does not convert.
    fn convert(&mut self, event: &mut Event, path: &str, to: &Conversion) -> bool {
        let path = path.as_bytes();
        let Some(value) = event.fields.get(path) else {
            return true; // Nothing to convert.
        };
        self.scratch.clear();
        match value {
            FieldValue::Str(_) => self.scratch.extend_from_slice(event.fields.bytes(&value)),
            FieldValue::Int(i) => self.scratch.extend_from_slice(i.to_string().as_bytes()),
            FieldValue::Float(f) => self.scratch.extend_from_slice(f.to_string().as_bytes()),
            FieldValue::Bool(b) => {
                self.scratch
                    .extend_from_slice(if b { b"true" } else { b"false" })
            }
            FieldValue::Null | FieldValue::Json(_) => return false,
        }
        let text = std::str::from_utf8(&self.scratch).unwrap_or("").trim();
        let converted = match to {
            Conversion::Int => text.parse::<i64>().ok().map(FieldValue::Int),
            Conversion::Float => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(FieldValue::Float),
            Conversion::Bool => parse_bool(text).map(FieldValue::Bool),
            Conversion::Timestamp(format) => {
                let Some((secs, nanos)) = parse_time(text.as_bytes(), format.as_bytes()) else {
                    return false;
                };
                event
                    .fields
                    .set_with(path, |out| ingest::civil::write_rfc3339(out, secs, nanos));
                return true;
            }
        };
        match converted {
            Some(v) => {
                event.fields.replace(path, v);
                true
            }
            None => false,
        }
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A severity from a name (`err`, `error`, `warning`, `warn`, …) or a number 0–7.
pub fn severity_code(text: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(text).ok()?.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<u8>() {
        return (n <= 7).then_some(n);
    }
    let alias = match text.as_str() {
        "panic" => "emerg",
        "critical" => "crit",
        "error" => "err",
        "warn" => "warning",
        "informational" => "info",
        other => other,
    };
    SEVERITY_NAMES
        .iter()
        .position(|n| *n == alias)
        .map(|c| c as u8)
}

/// A facility from its name or a number 0–23.
pub fn facility_code(text: &[u8]) -> Option<u8> {
    let text = std::str::from_utf8(text).ok()?.trim().to_ascii_lowercase();
    if let Ok(n) = text.parse::<u8>() {
        return (n <= 23).then_some(n);
    }
    FACILITY_NAMES
        .iter()
        .position(|n| *n == text)
        .map(|c| c as u8)
}

impl Transform for Remap {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, ctx: &Context<'_>) -> Outcome {
        let mut outcome = Outcome::Pass;
        let ops = std::mem::take(&mut self.ops);
        for op in &ops {
            let ok = match op {
                RemapOp::Add(path, value) => {
                    Self::add(event, path, value, ctx);
                    true
                }
                RemapOp::Rename(from, to) => {
                    event.fields.rename(from.as_bytes(), to.as_bytes());
                    true
                }
                RemapOp::Remove(path) => {
                    event.fields.remove(path.as_bytes());
                    true
                }
                RemapOp::Convert(path, to) => self.convert(event, path, to),
                RemapOp::SeverityFrom(path) => {
                    match level_text(event, path).and_then(severity_code) {
                        Some(code) => {
                            event.set_severity(code);
                            true
                        }
                        None => false,
                    }
                }
                RemapOp::FacilityFrom(path) => {
                    match level_text(event, path).and_then(facility_code) {
                        Some(code) => {
                            event.set_facility(code);
                            true
                        }
                        None => false,
                    }
                }
            };
            if !ok {
                outcome = super::failed(event, &self.name, op_failure(op), super::OnError::Keep);
            }
        }
        self.ops = ops;
        outcome
    }
}

fn op_failure(op: &RemapOp) -> &'static str {
    match op {
        RemapOp::Convert(..) => "a value did not convert",
        RemapOp::SeverityFrom(_) => "no severity in the field",
        RemapOp::FacilityFrom(_) => "no facility in the field",
        _ => "failed",
    }
}

/// A field's value as text for severity/facility (a number's digits).
fn level_text<'a>(event: &'a Event, path: &str) -> Option<&'a [u8]> {
    static DIGITS: [&[u8]; 24] = [
        b"0", b"1", b"2", b"3", b"4", b"5", b"6", b"7", b"8", b"9", b"10", b"11", b"12", b"13",
        b"14", b"15", b"16", b"17", b"18", b"19", b"20", b"21", b"22", b"23",
    ];
    match event.fields.get(path.as_bytes())? {
        v @ FieldValue::Str(_) => Some(event.fields.bytes(&v)),
        FieldValue::Int(i) => usize::try_from(i).ok().and_then(|i| DIGITS.get(i).copied()),
        _ => None,
    }
}

const MONTHS: [&[u8]; 12] = [
    b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov", b"dec",
];

/// Reads `input` with a strftime-like `format`: `%Y %m %d %e %H %M %S %f` (fraction digits)
/// `%b`/`%B` (month name, any case) `%z` (`Z`, `+hh`, `+hhmm`, `+hh:mm`) `%s` (Unix seconds)
/// `%T` (`%H:%M:%S`) `%%`; a space matches any run of spaces; other bytes match themselves.
/// Returns (seconds since the epoch UTC, nanoseconds); missing date parts default to
/// 1970-01-01, the time to 00:00:00, the zone to UTC.
pub fn parse_time(input: &[u8], format: &[u8]) -> Option<(i64, u32)> {
    let mut t = TimeParts {
        year: 1970,
        month: 1,
        day: 1,
        ..TimeParts::default()
    };
    let mut at = 0;
    let mut f = 0;
    while f < format.len() {
        match format[f] {
            b'%' => {
                let spec = *format.get(f + 1)?;
                f += 2;
                if spec == b'T' {
                    at = t.read(input, at, b'H')?;
                    at = expect(input, at, b':')?;
                    at = t.read(input, at, b'M')?;
                    at = expect(input, at, b':')?;
                    at = t.read(input, at, b'S')?;
                } else {
                    at = t.read(input, at, spec)?;
                }
            }
            b' ' => {
                f += 1;
                while input.get(at) == Some(&b' ') {
                    at += 1;
                }
            }
            c => {
                f += 1;
                at = expect(input, at, c)?;
            }
        }
    }
    if at != input.len() {
        return None;
    }
    t.finish()
}

fn expect(input: &[u8], at: usize, c: u8) -> Option<usize> {
    (input.get(at) == Some(&c)).then_some(at + 1)
}

#[derive(Default)]
struct TimeParts {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
    offset_secs: i64,
    epoch: Option<i64>,
}

/// Up to `max` digits at `at` (at least one): (value, next index).
fn digits(input: &[u8], at: usize, max: usize) -> Option<(i64, usize)> {
    let n = input[at.min(input.len())..]
        .iter()
        .take(max)
        .take_while(|b| b.is_ascii_digit())
        .count();
    if n == 0 {
        return None;
    }
    let v = input[at..at + n]
        .iter()
        .fold(0i64, |v, b| v * 10 + i64::from(b - b'0'));
    Some((v, at + n))
}

impl TimeParts {
    fn read(&mut self, input: &[u8], at: usize, spec: u8) -> Option<usize> {
        let small = |v: i64| u32::try_from(v).ok();
        Some(match spec {
            b'Y' => {
                let (v, next) = digits(input, at, 4)?;
                self.year = v;
                next
            }
            b'm' => {
                let (v, next) = digits(input, at, 2)?;
                self.month = small(v)?;
                next
            }
            b'd' | b'e' => {
                let at = if input.get(at) == Some(&b' ') {
                    at + 1
                } else {
                    at
                };
                let (v, next) = digits(input, at, 2)?;
                self.day = small(v)?;
                next
            }
            b'H' => {
                let (v, next) = digits(input, at, 2)?;
                self.hour = small(v)?;
                next
            }
            b'M' => {
                let (v, next) = digits(input, at, 2)?;
                self.minute = small(v)?;
                next
            }
            b'S' => {
                let (v, next) = digits(input, at, 2)?;
                self.second = small(v)?;
                next
            }
            b'f' => {
                let (v, next) = digits(input, at, 9)?;
                let scale = 10u32.pow(9 - (next - at) as u32);
                self.nanos = small(v)? * scale;
                next
            }
            b's' => {
                let (v, next) = digits(input, at, 12)?;
                self.epoch = Some(v);
                next
            }
            b'b' | b'B' => {
                let word = input.get(at..at + 3)?.to_ascii_lowercase();
                let month = MONTHS.iter().position(|m| *m == word.as_slice())?;
                self.month = month as u32 + 1;
                let len = input[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphabetic())
                    .count();
                at + len
            }
            b'z' => self.read_zone(input, at)?,
            b'%' => expect(input, at, b'%')?,
            _ => return None,
        })
    }

    fn read_zone(&mut self, input: &[u8], at: usize) -> Option<usize> {
        match input.get(at)? {
            b'Z' | b'z' => Some(at + 1),
            sign @ (b'+' | b'-') => {
                let (hh, mut next) = digits(input, at + 1, 2)?;
                if input.get(next) == Some(&b':') {
                    next += 1;
                }
                let (mm, next) = digits(input, next, 2).unwrap_or((0, next));
                let offset = hh * 3600 + mm * 60;
                self.offset_secs = if *sign == b'-' { -offset } else { offset };
                Some(next)
            }
            _ => None,
        }
    }

    fn finish(self) -> Option<(i64, u32)> {
        if let Some(epoch) = self.epoch {
            return Some((epoch, self.nanos));
        }
        let valid = (1..=12).contains(&self.month)
            && self.day >= 1
            && self.day <= ingest::civil::days_in_month(self.year, self.month)
            && self.hour < 24
            && self.minute < 60
            && self.second <= 60;
        if !valid {
            return None;
        }
        let days = ingest::civil::days_from_civil(self.year, self.month, self.day);
        let secs = days * 86_400 + i64::from(self.hour * 3600 + self.minute * 60 + self.second)
            - self.offset_secs;
        Some((secs, self.nanos))
    }
}
