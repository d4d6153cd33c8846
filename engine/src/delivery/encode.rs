//! Turning WAL records into bytes for a destination (no allocation per event, except a
//! template that names parsed fields: those are looked up in the record's fields JSON).

use std::sync::Arc;

use ingest::json;
use ingest::EventView;

use serde::{Deserialize, Deserializer};

use crate::units::snake_case;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON object per line.
    Json,
    /// The frame's bytes as received (as rewritten, when a transform redacted it).
    Raw,
    /// `template = "{{timestamp}} {{hostname}} {{message}}"`: fields by name, nested with dots.
    Template,
}

/// What raw encoding does with line breaks (LF, CR) and NULs inside a frame: a frame that
/// carries them (octet-counted, or a UDP datagram) would otherwise forge whole lines in a raw
/// file or a newline-framed forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineBreaks {
    /// As rsyslog's control-character escaping does: LF → `#012`, CR → `#015`, NUL → `#000`.
    #[default]
    Escape,
    /// Each replaced by a space.
    Space,
    /// Written verbatim (only for receivers that frame by octet count and trust the sender).
    Keep,
}

/// How the TCP sink frames events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TcpFraming {
    /// RFC 6587 octet counting: `<length> <frame>`.
    #[default]
    OctetCounting,
    /// One event per line.
    Newline,
}

impl<'de> Deserialize<'de> for TcpFraming {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        snake_case(
            d,
            &[
                ("octet_counting", TcpFraming::OctetCounting),
                ("newline", TcpFraming::Newline),
            ],
        )
    }
}

impl Encoding {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Raw => "raw",
            Encoding::Template => "template",
        }
    }
}

impl LineBreaks {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            LineBreaks::Escape => "escape",
            LineBreaks::Space => "space",
            LineBreaks::Keep => "keep",
        }
    }
}

/// How a sink encodes records.
#[derive(Debug, Clone)]
pub struct RecordEncoding {
    pub encoding: Encoding,
    /// Set for stream sinks (how frames are delimited), `None` for files (one line per event).
    pub framing: Option<TcpFraming>,
    /// Raw and template encodings (JSON escapes every control character anyway).
    pub line_breaks: LineBreaks,
    /// With `Encoding::Template`.
    pub template: Option<Arc<Template>>,
}

impl RecordEncoding {
    /// `encoding` without framing or template (one line per event, line breaks escaped): what
    /// the HTTP outputs send and the tools print.
    pub fn lines(encoding: Encoding) -> Self {
        RecordEncoding {
            encoding,
            framing: None,
            line_breaks: LineBreaks::Escape,
            template: None,
        }
    }
}

/// A standard event field a template can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standard {
    Timestamp,
    ReceivedAt,
    Hostname,
    Appname,
    Procid,
    Msgid,
    Facility,
    Severity,
    Pri,
    Message,
    SourceIp,
    Format,
    Shard,
}

const STANDARD_NAMES: [(&str, Standard); 13] = [
    ("timestamp", Standard::Timestamp),
    ("received_at", Standard::ReceivedAt),
    ("hostname", Standard::Hostname),
    ("appname", Standard::Appname),
    ("procid", Standard::Procid),
    ("msgid", Standard::Msgid),
    ("facility", Standard::Facility),
    ("severity", Standard::Severity),
    ("pri", Standard::Pri),
    ("message", Standard::Message),
    ("source_ip", Standard::SourceIp),
    ("format", Standard::Format),
    ("shard", Standard::Shard),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    Standard(Standard),
    /// A parsed field by its dotted path (also a standard name a transform replaced).
    Path(Vec<String>),
}

/// A compiled `template`: literal text and `{{field}}` placeholders. A field the event lacks
/// renders as nothing; a string field as its text; numbers, booleans, objects and arrays as
/// JSON. Fields transforms added win over the standard ones of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    /// Whether any placeholder may need the record's fields.
    needs_fields: bool,
}

impl Template {
    /// Compiles `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest.as_bytes()[..open].to_vec()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or_else(|| {
                format!(
                    "`{{{{` at byte {} is not closed by `}}}}`",
                    text.len() - rest.len() + open
                )
            })?;
            let name = after[..close].trim();
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(format!(
                    "`{{{{{}}}}}` does not name a field",
                    &after[..close]
                ));
            }
            parts.push(match STANDARD_NAMES.iter().find(|(n, _)| *n == name) {
                Some((_, s)) => Part::Standard(*s),
                None => Part::Path(name.split('.').map(str::to_string).collect()),
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.as_bytes().to_vec()));
        }
        let needs_fields = parts.iter().any(|p| !matches!(p, Part::Text(_)));
        Ok(Template {
            parts,
            needs_fields,
        })
    }

    /// Renders `event` into `out` (line breaks not yet treated).
    fn render(&self, event: &EventView, shard: usize, out: &mut Vec<u8>) {
        let fields = match (self.needs_fields, event.fields.is_empty()) {
            (true, false) => parse_fields(event.fields),
            _ => None,
        };
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Standard(s) => {
                    let name = STANDARD_NAMES
                        .iter()
                        .find(|(_, x)| x == s)
                        .map_or("", |(n, _)| *n);
                    if let Some(v) = fields.as_ref().and_then(|f| f.get(name)) {
                        write_json_value(out, v);
                    } else {
                        write_standard(out, *s, event, shard);
                    }
                }
                Part::Path(path) => {
                    let mut value = fields.as_ref().and_then(|f| f.get(path[0].as_str()));
                    for key in &path[1..] {
                        value = value.and_then(|v| v.get(key.as_str()));
                    }
                    if let Some(v) = value {
                        write_json_value(out, v);
                    }
                }
            }
        }
    }
}

fn parse_fields(members: &[u8]) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut text = Vec::with_capacity(members.len() + 2);
    text.push(b'{');
    text.extend_from_slice(members);
    text.push(b'}');
    serde_json::from_slice(&text).ok()
}

fn write_json_value(out: &mut Vec<u8>, value: &serde_json::Value) {
    match value {
        serde_json::Value::String(s) => out.extend_from_slice(s.as_bytes()),
        serde_json::Value::Null => {}
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_standard(out: &mut Vec<u8>, s: Standard, event: &EventView, shard: usize) {
    use ingest::syslog::{FACILITY_NAMES, SEVERITY_NAMES};
    let text = |out: &mut Vec<u8>, v: Option<&[u8]>| out.extend_from_slice(v.unwrap_or_default());
    match s {
        Standard::Timestamp => {
            if let Some(ts) = event.timestamp {
                ingest::civil::write_rfc3339(out, ts.secs, ts.nanos);
            }
        }
        Standard::ReceivedAt => ingest::civil::write_rfc3339_micros(out, event.received_at_us),
        Standard::Hostname => text(out, event.hostname()),
        Standard::Appname => text(out, event.appname()),
        Standard::Procid => text(out, event.procid()),
        Standard::Msgid => text(out, event.msgid()),
        Standard::Facility => {
            if let Some(pri) = event.pri {
                out.extend_from_slice(FACILITY_NAMES[usize::from(pri >> 3) % 24].as_bytes());
            }
        }
        Standard::Severity => {
            if let Some(pri) = event.pri {
                out.extend_from_slice(SEVERITY_NAMES[usize::from(pri & 7)].as_bytes());
            }
        }
        Standard::Pri => {
            if let Some(pri) = event.pri {
                write_decimal(out, pri);
            }
        }
        Standard::Message => out.extend_from_slice(event.message()),
        Standard::SourceIp => {
            if let Some(ip) = event.source_ip {
                ingest::json::write_ip_text(out, ip);
            }
        }
        Standard::Format => out.extend_from_slice(event.format.name().as_bytes()),
        Standard::Shard => {
            write_decimal(out, shard);
        }
    }
}

/// The event's time in unix seconds (its timestamp, else when it was received); `None` when
/// the record is not an event.
pub fn event_seconds(payload: &[u8]) -> Option<i64> {
    let event = EventView::decode(payload).ok()?;
    Some(
        event
            .timestamp
            .map_or(event.received_at_us.div_euclid(1_000_000), |t| t.secs),
    )
}

/// Renders `template` for one WAL record into `out`; false when it is not an event.
pub fn render_record(payload: &[u8], shard: usize, template: &Template, out: &mut Vec<u8>) -> bool {
    match EventView::decode(payload) {
        Ok(event) => {
            template.render(&event, shard, out);
            true
        }
        Err(_) => false,
    }
}

/// Appends the encoding of one WAL record to `out`. Returns false, appending nothing, when
/// the record is not a valid event.
pub fn encode_record(
    payload: &[u8],
    shard: usize,
    how: &RecordEncoding,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
) -> bool {
    let Ok(event) = EventView::decode(payload) else {
        return false;
    };
    if let (Encoding::Template, Some(template)) = (how.encoding, &how.template) {
        scratch.clear();
        template.render(&event, shard, scratch);
        match how.framing {
            Some(TcpFraming::OctetCounting) => write_counted_raw(out, scratch, how.line_breaks),
            _ => {
                write_raw(out, scratch, how.line_breaks);
                out.push(b'\n');
            }
        }
        return true;
    }
    match (how.encoding, how.framing) {
        (Encoding::Json, None | Some(TcpFraming::Newline)) => {
            json::write_event(out, &event, shard as u32);
        }
        (Encoding::Raw | Encoding::Template, None | Some(TcpFraming::Newline)) => {
            write_raw(out, event.frame, how.line_breaks);
            out.push(b'\n');
        }
        (Encoding::Raw | Encoding::Template, Some(TcpFraming::OctetCounting)) => {
            write_counted_raw(out, event.frame, how.line_breaks);
        }
        (Encoding::Json, Some(TcpFraming::OctetCounting)) => {
            scratch.clear();
            json::write_event(scratch, &event, shard as u32);
            scratch.pop(); // The newline: the octet count delimits.
            write_octet_count(out, scratch.len());
            out.extend_from_slice(scratch);
        }
    }
    true
}

/// RFC 6587 octet counting: the frame's length in decimal and a space.
fn write_octet_count(out: &mut Vec<u8>, len: usize) {
    write_decimal(out, len);
    out.push(b' ');
}

/// A number in decimal (`itoa`: `write!` through `fmt` took a tenth of a relay sink's time).
fn write_decimal(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `frame` as [`write_raw`] writes it, octet counted. The count is known before writing:
/// escaping turns each LF, CR or NUL into four bytes, the other treatments keep the length
/// (no copy of the line to measure it).
fn write_counted_raw(out: &mut Vec<u8>, frame: &[u8], line_breaks: LineBreaks) {
    let escaped = match line_breaks {
        LineBreaks::Escape => memchr::memchr3_iter(b'\n', b'\r', 0, frame).count(),
        LineBreaks::Space | LineBreaks::Keep => 0,
    };
    write_octet_count(out, frame.len() + 3 * escaped);
    write_raw(out, frame, line_breaks);
}

/// The frame's bytes, with LF, CR and NUL treated as `line_breaks` says.
fn write_raw(out: &mut Vec<u8>, frame: &[u8], line_breaks: LineBreaks) {
    if line_breaks == LineBreaks::Keep {
        out.extend_from_slice(frame);
        return;
    }
    let mut rest = frame;
    while let Some(at) = memchr::memchr3(b'\n', b'\r', 0, rest) {
        out.extend_from_slice(&rest[..at]);
        match (line_breaks, rest[at]) {
            (LineBreaks::Space, _) => out.push(b' '),
            (_, b'\n') => out.extend_from_slice(b"#012"),
            (_, b'\r') => out.extend_from_slice(b"#015"),
            _ => out.extend_from_slice(b"#000"),
        }
        rest = &rest[at + 1..];
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest::framing::FrameFlags;
    use ingest::record::{encode, EventHeader};

    /// The WAL record of `frame`, as a shard stores it.
    fn record_of(frame: &[u8]) -> Vec<u8> {
        let mut rec = Vec::new();
        let header = EventHeader {
            received_at_us: 0,
            source_ip: None,
            frame_flags: FrameFlags::default(),
        };
        encode(&mut rec, &header, &ingest::parse(frame, 0), frame);
        rec
    }

    /// Encodes `rec` as `how` says.
    fn encoded(rec: &[u8], how: RecordEncoding) -> Vec<u8> {
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert!(encode_record(rec, 0, &how, &mut out, &mut scratch));
        out
    }

    #[test]
    fn framings() {
        let frame = b"<13>1 - h a - - - hi";
        let rec = record_of(frame);
        let run = |encoding, framing| {
            let how = RecordEncoding {
                encoding,
                framing,
                line_breaks: LineBreaks::Escape,
                template: None,
            };
            String::from_utf8(encoded(&rec, how)).unwrap()
        };
        assert_eq!(
            run(Encoding::Raw, Some(TcpFraming::OctetCounting)),
            "20 <13>1 - h a - - - hi"
        );
        assert_eq!(run(Encoding::Raw, None), "<13>1 - h a - - - hi\n");
        let json = run(Encoding::Json, Some(TcpFraming::OctetCounting));
        let (len, body) = json.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), body.len());
        let how = RecordEncoding {
            encoding: Encoding::Raw,
            framing: None,
            line_breaks: LineBreaks::Escape,
            template: None,
        };
        assert!(!encode_record(
            b"junk",
            0,
            &how,
            &mut Vec::new(),
            &mut Vec::new()
        ));
    }

    /// A frame with line breaks inside (octet-counted, or a datagram) never forges lines.
    #[test]
    fn raw_line_breaks_are_escaped_replaced_or_kept() {
        let frame = b"<13>1 - h a - - - hi\n<0>forged line\r\x00end";
        let rec = record_of(frame);
        let run = |line_breaks, framing| {
            let how = RecordEncoding {
                encoding: Encoding::Raw,
                framing,
                line_breaks,
                template: None,
            };
            encoded(&rec, how)
        };
        assert_eq!(
            run(LineBreaks::Escape, None),
            b"<13>1 - h a - - - hi#012<0>forged line#015#000end\n"
        );
        assert_eq!(
            run(LineBreaks::Space, Some(TcpFraming::Newline)),
            b"<13>1 - h a - - - hi <0>forged line  end\n"
        );
        let counted = run(LineBreaks::Escape, Some(TcpFraming::OctetCounting));
        assert_eq!(
            counted,
            b"49 <13>1 - h a - - - hi#012<0>forged line#015#000end"
        );
        let kept = run(LineBreaks::Keep, Some(TcpFraming::OctetCounting));
        assert_eq!(&kept[..3], b"40 ");
        assert_eq!(&kept[3..], frame);
    }
}

#[cfg(test)]
mod template_tests {
    use super::*;
    use ingest::framing::FrameFlags;
    use ingest::record::{encode_routed, EventHeader, Routing};

    fn render(template: &str, frame: &[u8], fields: &[u8], framing: Option<TcpFraming>) -> String {
        let mut rec = Vec::new();
        let header = EventHeader {
            received_at_us: 0,
            source_ip: Some("10.0.0.1".parse().unwrap()),
            frame_flags: FrameFlags::default(),
        };
        let overrides = ingest::json::override_bits(
            [&b"hostname"[..]]
                .into_iter()
                .filter(|_| fields.starts_with(b"\"hostname\"")),
        );
        encode_routed(
            &mut rec,
            &header,
            &ingest::parse(frame, 0),
            frame,
            &Routing {
                sinks: 1,
                fields,
                overrides,
            },
        );
        let how = RecordEncoding {
            encoding: Encoding::Template,
            framing,
            line_breaks: LineBreaks::Escape,
            template: Some(Arc::new(Template::parse(template).unwrap())),
        };
        let (mut out, mut scratch) = (Vec::new(), Vec::new());
        assert!(encode_record(&rec, 2, &how, &mut out, &mut scratch));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn templates_name_standard_and_parsed_fields() {
        let frame = b"<11>1 2026-11-30T10:00:00Z web1 app - - - two\nlines";
        let fields = br#""http":{"status":500,"path":"/x"},"user":"bob""#;
        assert_eq!(
            render("{{timestamp}} {{hostname}} {{severity}} [{{http.status}} {{ http.path }} {{user}}{{missing}}] {{message}} #{{shard}}", frame, fields, None),
            "2026-11-30T10:00:00Z web1 err [500 /x bob] two#012lines #2\n"
        );
        assert_eq!(
            render("{{http}}", frame, fields, Some(TcpFraming::OctetCounting)),
            r#"26 {"path":"/x","status":500}"#
        );
        assert_eq!(
            render("{{hostname}}", frame, br#""hostname":"renamed""#, None),
            "renamed\n"
        );
        assert!(Template::parse("{{unclosed").is_err());
        assert!(Template::parse("{{}}").is_err());
        assert!(Template::parse("{{a..b}}").is_err());
    }
}
