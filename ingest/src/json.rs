//! JSON encoding of an event record: one object per line, Vector's syslog field names.
//!
//! Absent fields are omitted, never `null`. `version` and `shard` are numbers, every other
//! field a string (`parse_flags`, present when the parser flagged something, an array of flag
//! names). Bytes that are not UTF-8 are replaced by U+FFFD rather than dropped.

use std::io::Write as _;

use crate::civil;
use crate::record::EventView;
use crate::syslog::{
    sd_elements, unescape_sd_value, Format, ParseFlags, SdParams, FACILITY_NAMES, SEVERITY_NAMES,
};

/// The keys Sluice writes for every event, in order. A routed record's fields may replace one
/// (a parsed JSON body with its own `message`): bit i of [`crate::EventView::overrides`] says
/// key i is written from the fields instead.
pub const STANDARD_KEYS: [&str; 16] = [
    "timestamp",
    "received_at",
    "hostname",
    "appname",
    "procid",
    "msgid",
    "facility",
    "severity",
    "version",
    "message",
    "structured_data",
    "source_ip",
    "format",
    "parse_flags",
    "truncated",
    "shard",
];

/// The override bits for fields with these top-level names.
pub fn override_bits<'a>(names: impl Iterator<Item = &'a [u8]>) -> u16 {
    let mut bits = 0u16;
    for name in names {
        if let Some(i) = STANDARD_KEYS.iter().position(|k| k.as_bytes() == name) {
            bits |= 1 << i;
        }
    }
    bits
}

/// Writes a standard key unless the record's fields replace it (see [`STANDARD_KEYS`]).
struct Keys {
    first: bool,
    overrides: u16,
}

impl Keys {
    /// Writes `"key":` for key `index`; false (nothing written) when the fields replace it.
    fn key(&mut self, out: &mut Vec<u8>, index: usize) -> bool {
        if self.overrides & (1 << index) != 0 {
            return false;
        }
        if !self.first {
            out.push(b',');
        }
        self.first = false;
        out.push(b'"');
        out.extend_from_slice(STANDARD_KEYS[index].as_bytes());
        out.extend_from_slice(b"\":");
        true
    }
}

/// Appends `event` as one JSON object and a newline to `out`.
pub fn write_event(out: &mut Vec<u8>, event: &EventView, shard: u32) {
    out.push(b'{');
    let mut keys = Keys {
        first: true,
        overrides: event.overrides,
    };
    write_header_keys(out, event, &mut keys);
    if keys.key(out, 9) {
        write_str(out, event.message());
    }
    if let Some(sd) = event.structured_data() {
        if keys.key(out, 10) {
            write_structured_data(out, sd);
        }
    }
    if let Some(ip) = event.source_ip {
        if keys.key(out, 11) {
            write_ip(out, ip);
        }
    }
    if keys.key(out, 12) {
        write_str(out, event.format.name().as_bytes());
    }
    if !event.parse_flags.is_empty() && keys.key(out, 13) {
        write_flag_names(out, event.parse_flags);
    }
    if event.truncated && keys.key(out, 14) {
        out.extend_from_slice(b"true");
    }
    if keys.key(out, 15) {
        write_u32(out, shard);
    }
    if !event.fields.is_empty() {
        out.push(b',');
        out.extend_from_slice(event.fields);
    }
    out.extend_from_slice(b"}\n");
}

/// The keys before the message: times, header fields, facility and severity, version.
fn write_header_keys(out: &mut Vec<u8>, event: &EventView, keys: &mut Keys) {
    if let Some(ts) = event.timestamp {
        if keys.key(out, 0) {
            out.push(b'"');
            civil::write_rfc3339(out, ts.secs, ts.nanos);
            out.push(b'"');
        }
    }
    if keys.key(out, 1) {
        out.push(b'"');
        civil::write_rfc3339_micros(out, event.received_at_us);
        out.push(b'"');
    }
    for (index, value) in [
        (2, event.hostname()),
        (3, event.appname()),
        (4, event.procid()),
        (5, event.msgid()),
    ] {
        if let Some(v) = value {
            if keys.key(out, index) {
                write_str(out, v);
            }
        }
    }
    if let Some(pri) = event.pri {
        if keys.key(out, 6) {
            write_str(out, FACILITY_NAMES[usize::from(pri >> 3) % 24].as_bytes());
        }
        if keys.key(out, 7) {
            write_str(out, SEVERITY_NAMES[usize::from(pri & 7)].as_bytes());
        }
    }
    if event.format == Format::Rfc5424 && keys.key(out, 8) {
        write_u32(out, u32::from(event.version));
    }
}

/// `["no_pri","bad_sd"]`: the names of the flags set.
fn write_flag_names(out: &mut Vec<u8>, flags: ParseFlags) {
    out.push(b'[');
    for (i, name) in flags.names().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, name.as_bytes());
    }
    out.push(b']');
}

/// `{"sd-id":{"param":"value",...},...}`, losing nothing:
/// - an SD-ID that appears more than once (RFC 5424 §6.3.2 says it must not; devices send it,
///   and rsyslog and syslog-ng keep every element) becomes an array of its elements' parameter
///   maps, in order: `"id":[{"a":"1"},{"b":"2"}]`;
/// - a PARAM-NAME repeated inside one element (allowed, §6.3.3) becomes an array of its values,
///   in order: `"p":["1","2"]`.
///
/// Everything else keeps the plain shape. No allocation beyond the reused value buffer: the
/// elements are scanned again to find repeats (an SD holds a handful of elements).
fn write_structured_data(out: &mut Vec<u8>, sd: &[u8]) {
    let mut value = Vec::new();
    write_grouped(out, sd_elements(sd), &mut |out, params: SdParams<'_>| {
        write_grouped(out, params, &mut |out, raw: &[u8]| {
            write_value(out, raw, &mut value)
        })
    });
}

/// Writes `(key, item)` pairs as a JSON map with each key once, in first-seen order: a key
/// seen once maps to its item, a repeated key to an array of its items in order.
fn write_grouped<'a, T, I>(
    out: &mut Vec<u8>,
    items: I,
    write_item: &mut impl FnMut(&mut Vec<u8>, T),
) where
    I: Iterator<Item = (&'a [u8], T)> + Clone,
{
    out.push(b'{');
    let mut first_key = true;
    for (i, (key, _)) in items.clone().enumerate() {
        if items.clone().take(i).any(|(earlier, _)| earlier == key) {
            continue; // Written with its first occurrence.
        }
        if !first_key {
            out.push(b',');
        }
        first_key = false;
        write_str(out, key);
        out.push(b':');
        let repeated = items.clone().skip(i + 1).any(|(later, _)| later == key);
        let mut same_key = items
            .clone()
            .skip(i)
            .filter(|(other, _)| *other == key)
            .map(|(_, item)| item);
        if !repeated {
            if let Some(item) = same_key.next() {
                write_item(out, item);
            }
            continue;
        }
        out.push(b'[');
        for (k, item) in same_key.enumerate() {
            if k > 0 {
                out.push(b',');
            }
            write_item(out, item);
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn write_value(out: &mut Vec<u8>, raw: &[u8], value: &mut Vec<u8>) {
    value.clear();
    unescape_sd_value(raw, value);
    write_str(out, value);
}

/// A JSON string literal for `bytes` (invalid UTF-8 replaced by U+FFFD).
pub fn write_str(out: &mut Vec<u8>, bytes: &[u8]) {
    // Short printable ASCII (field names, host and app names) needs neither validation nor
    // escaping: copied as it is.
    if bytes.len() <= 32
        && bytes
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.reserve(bytes.len() + 2);
        out.push(b'"');
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    out.push(b'"');
    match std::str::from_utf8(bytes) {
        Ok(s) => escape_into(out, s),
        Err(_) => escape_into(out, &String::from_utf8_lossy(bytes)),
    }
    out.push(b'"');
}

/// True if any byte of the 8 in `word` is `"`, `\\` or below 0x20 (exact as a yes/no answer:
/// the classic "has byte less than / has zero byte" bit tricks).
#[inline]
fn word_needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quote = word ^ (ONES * u64::from(b'"'));
    let backslash = word ^ (ONES * u64::from(b'\\'));
    let is_quote = quote.wrapping_sub(ONES) & !quote;
    let is_backslash = backslash.wrapping_sub(ONES) & !backslash;
    (below_space | is_quote | is_backslash) & HIGH != 0
}

fn escape_into(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut run_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        // Skip 8 clean bytes at a time: most log text needs no escaping at all.
        if let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !word_needs_escape(word) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        i += 1;
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[run_start..i - 1]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.extend_from_slice(escape);
        }
        run_start = i;
    }
    out.extend_from_slice(&bytes[run_start..]);
}

/// Decimal digits of `v` without going through `fmt`.
fn write_u32(out: &mut Vec<u8>, v: u32) {
    write_i64(out, i64::from(v));
}

/// Decimal digits of `v` (a sign when negative) without going through `fmt`.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    out.push(b'"');
    write_ip_text(out, ip);
    out.push(b'"');
}

/// `ip` as text, as `std` writes it (IPv4 without going through `fmt`).
pub fn write_ip_text(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_u32(out, u32::from(octet));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameFlags;
    use crate::record::{encode, EventHeader};
    use crate::syslog::parse;
    use proptest::prelude::*;

    fn to_json(frame: &[u8]) -> serde_json::Value {
        let mut rec = Vec::new();
        let header = EventHeader {
            received_at_us: 1_700_000_000_123_456,
            source_ip: Some("127.0.0.1".parse().unwrap()),
            frame_flags: FrameFlags::default(),
        };
        encode(&mut rec, &header, &parse(frame, 1_795_420_800), frame);
        let mut out = Vec::new();
        write_event(&mut out, &EventView::decode(&rec).unwrap(), 3);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
    }

    /// A repeated SD-ID keeps every element (an array of maps, in order) and a repeated
    /// PARAM-NAME every value (an array); a plain SD keeps the plain shape. The raw bytes
    /// parsed back by a JSON parser show nothing dropped.
    #[test]
    fn repeated_sd_ids_and_params_lose_nothing() {
        let v = to_json(
            b"<165>1 2003-10-11T22:14:15.003Z host app - - [exampleSDID@32473 iut=\"3\" eventSource=\"App\"][exampleSDID@32473 class=\"high\"][origin ip=\"10.0.0.1\" ip=\"10.0.0.2\"] msg\n",
        );
        let sd = &v["structured_data"];
        assert_eq!(
            sd["exampleSDID@32473"],
            serde_json::json!([{"iut": "3", "eventSource": "App"}, {"class": "high"}])
        );
        assert_eq!(
            sd["origin"],
            serde_json::json!({"ip": ["10.0.0.1", "10.0.0.2"]})
        );
        assert_eq!(sd.as_object().unwrap().len(), 2);
    }

    #[test]
    fn rfc5424_fields() {
        let v = to_json(
            b"<165>1 2003-10-11T22:14:15.003Z host app 77 ID47 [ex@1 a=\"x\\\"y\"] hi \"there\"\n",
        );
        assert_eq!(v["timestamp"], "2003-10-11T22:14:15.003Z");
        assert_eq!(v["received_at"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["hostname"], "host");
        assert_eq!(v["appname"], "app");
        assert_eq!(v["procid"], "77");
        assert_eq!(v["msgid"], "ID47");
        assert_eq!(v["facility"], "local4");
        assert_eq!(v["severity"], "notice");
        assert_eq!(v["version"], 1);
        assert_eq!(v["message"], "hi \"there\"\n");
        assert_eq!(v["structured_data"]["ex@1"]["a"], "x\"y");
        assert_eq!(v["source_ip"], "127.0.0.1");
        assert_eq!(v["format"], "rfc5424");
        assert_eq!(v["shard"], 3);
    }

    #[test]
    fn a_line_without_header_omits_absent_fields_and_says_what_it_lacked() {
        let v = to_json(b"just text \xff");
        let obj = v.as_object().unwrap();
        let keys: Vec<_> = obj.keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
        assert_eq!(v["appname"], "just");
        assert_eq!(v["message"], "text \u{fffd}");
        assert_eq!(
            (&v["facility"], &v["severity"]),
            (&"user".into(), &"notice".into())
        );
        assert_eq!(v["parse_flags"], serde_json::json!(["no_pri"]));
        assert_eq!(v["format"], "rfc3164");
    }

    proptest! {
        /// The word-at-a-time escaper agrees with serde_json on every string.
        #[test]
        fn escaping_matches_serde(s in "[\\x00-\\x7f\"\\\\é\\u{2028}]{0,40}") {
            let mut out = Vec::new();
            write_str(&mut out, s.as_bytes());
            let back: String = serde_json::from_slice(&out).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn integers_format_like_std(v in any::<i64>()) {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            prop_assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }

        #[test]
        fn ips_format_like_std(a in any::<[u8; 4]>(), b in any::<[u16; 8]>()) {
            for ip in [std::net::IpAddr::from(a), std::net::IpAddr::from(b)] {
                let mut out = Vec::new();
                write_ip(&mut out, ip);
                prop_assert_eq!(String::from_utf8(out).unwrap(), format!("\"{ip}\""));
            }
        }

        #[test]
        fn always_valid_json(frame in proptest::collection::vec(any::<u8>(), 0..200)) {
            to_json(&frame);
        }
    }
}
