//! Request bodies of the HTTP source: decompression within a bound, JSON events, syslog
//! lines. Pure functions over bytes (fuzzed).
//!
//! A JSON event is an object: its `message` (a string) becomes the event's message, every
//! other member a field (nested objects as dotted paths, arrays kept as JSON), as
//! `parse_json` reads them. An object without a string `message` gets its own JSON text as
//! the message (so raw and syslog outputs still carry it) and keeps every member as a field.

use std::io::Read;

use pipeline::event::{Fields, NewValue};
use serde_json::Value;

/// Why a body was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Over `max_body_size`, compressed or not (413).
    #[error("the body is larger than max_body_size ({limit} bytes)")]
    TooLarge { limit: usize },
    /// A `Content-Encoding` Sluice does not read (415).
    #[error("Content-Encoding {0:?} is not supported (gzip, zstd or none)")]
    Encoding(String),
    /// Not what the endpoint takes (400); nothing of the request was taken.
    #[error("line {line}: {reason}")]
    Malformed { line: usize, reason: String },
}

/// The body decompressed as `Content-Encoding` says, at most `limit` bytes.
pub fn decompress<'b>(
    encoding: Option<&str>,
    body: &'b [u8],
    limit: usize,
) -> Result<std::borrow::Cow<'b, [u8]>, BodyError> {
    let too_large = BodyError::TooLarge { limit };
    let malformed = |e: std::io::Error| BodyError::Malformed {
        line: 1,
        reason: format!("cannot decompress the body: {e}"),
    };
    let mut out = Vec::new();
    match encoding.map(str::trim) {
        None | Some("") | Some("identity") => return Ok(std::borrow::Cow::Borrowed(body)),
        Some("gzip") | Some("x-gzip") => flate2::read::MultiGzDecoder::new(body)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(malformed)?,
        Some("zstd") => zstd::stream::read::Decoder::new(body)
            .map_err(malformed)?
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(malformed)?,
        Some(other) => return Err(BodyError::Encoding(other.to_string())),
    };
    if out.len() > limit {
        return Err(too_large);
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// One event of a `/v1/events` body.
#[derive(Debug, Default)]
pub struct JsonEvent {
    pub message: Vec<u8>,
    pub fields: Fields,
}

/// A `/v1/events` body: one object, objects one per line (NDJSON, or any whitespace between
/// them), or one array of objects. All of it or nothing: the first problem with its line.
pub fn decode_events(body: &[u8]) -> Result<Vec<JsonEvent>, BodyError> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let mut events = Vec::new();
    let mut first = true;
    loop {
        let start = values.byte_offset();
        let value = match values.next() {
            None => break,
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                // A value cut short is reported where it began, not at the end of the body.
                let line = match e.is_eof() {
                    true => line_at(body, start),
                    false => e.line().max(1),
                };
                return Err(BodyError::Malformed {
                    line,
                    reason: format!("not JSON: {e}"),
                });
            }
        };
        let line = line_at(body, start);
        match value {
            Value::Array(items) if first && trailing_whitespace(body, values.byte_offset()) => {
                for item in items {
                    events.push(event_of(item, line)?);
                }
            }
            Value::Array(_) => return Err(malformed(line, "an array must be the whole body")),
            other => events.push(event_of(other, line)?),
        }
        first = false;
    }
    Ok(events)
}

fn malformed(line: usize, reason: &str) -> BodyError {
    BodyError::Malformed {
        line,
        reason: reason.to_string(),
    }
}

/// The 1-based line of byte `offset` (a value starts after the whitespace before it).
fn line_at(body: &[u8], offset: usize) -> usize {
    let start = offset
        + body[offset.min(body.len())..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
    1 + memchr::memchr_iter(b'\n', &body[..start.min(body.len())]).count()
}

fn trailing_whitespace(body: &[u8], offset: usize) -> bool {
    body[offset.min(body.len())..]
        .iter()
        .all(|b| b.is_ascii_whitespace())
}

fn event_of(value: Value, line: usize) -> Result<JsonEvent, BodyError> {
    let Value::Object(mut members) = value else {
        return Err(malformed(line, "an event must be a JSON object"));
    };
    let message = match members.get("message") {
        Some(Value::String(_)) => match members.remove("message") {
            Some(Value::String(s)) => s.into_bytes(),
            _ => Vec::new(),
        },
        _ => serde_json::to_vec(&members).unwrap_or_default(),
    };
    let mut fields = Fields::default();
    let mut path = Vec::new();
    for (key, value) in &members {
        add_field(&mut fields, &mut path, key, value);
    }
    Ok(JsonEvent { message, fields })
}

/// Adds `value` at `path.key`: objects flattened into dotted paths, arrays as JSON text.
fn add_field(fields: &mut Fields, path: &mut Vec<u8>, key: &str, value: &Value) {
    let back = path.len();
    if !path.is_empty() {
        path.push(b'.');
    }
    path.extend_from_slice(key.as_bytes());
    match value {
        Value::Object(members) if !members.is_empty() => {
            for (k, v) in members {
                add_field(fields, path, k, v);
            }
        }
        Value::String(s) => fields.set(path, NewValue::Str(s.as_bytes())),
        Value::Bool(b) => fields.set(path, NewValue::Bool(*b)),
        Value::Null => fields.set(path, NewValue::Null),
        Value::Number(n) => match n.as_i64() {
            Some(i) => fields.set(path, NewValue::Int(i)),
            None => fields.set(path, NewValue::Float(n.as_f64().unwrap_or(0.0))),
        },
        other => {
            let text = serde_json::to_vec(other).unwrap_or_default();
            fields.set(path, NewValue::Json(&text));
        }
    }
    path.truncate(back);
}

/// A `/v1/syslog` body: one event per line (`\n`, an `\r` before it dropped; empty lines
/// skipped); a line over `max_frame` is cut there (flagged truncated).
pub fn decode_syslog(body: &[u8], max_frame: usize) -> Vec<(&[u8], bool)> {
    body.split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter(|line| !line.is_empty())
        .map(|line| match line.len() > max_frame {
            true => (&line[..max_frame], true),
            false => (line, false),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &mut JsonEvent) -> String {
        let mut out = Vec::new();
        e.fields.write_json_members(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn one_object_ndjson_and_an_array_decode_alike() {
        let one = decode_events(b"{\n  \"message\": \"a\",\n  \"level\": \"info\"\n}\n").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].message, b"a");
        let nd = decode_events(b"{\"message\":\"a\"}\n{\"message\":\"b\",\"n\":2}\n").unwrap();
        assert_eq!(nd.len(), 2);
        let mut arr =
            decode_events(b" [{\"message\":\"a\"},{\"message\":\"b\",\"n\":2}] ").unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(json(&mut arr[1]), "\"n\":2");
        assert!(decode_events(b"").unwrap().is_empty());
    }

    #[test]
    fn members_become_fields_as_parse_json_reads_them() {
        let mut e = decode_events(
            br#"{"message":"m","http":{"status":200,"ok":true},"tags":["a"],"x":1.5,"n":null}"#,
        )
        .unwrap();
        // (Members in name order: serde_json's map.)
        assert_eq!(
            json(&mut e[0]),
            r#""http":{"ok":true,"status":200},"n":null,"tags":["a"],"x":1.5"#
        );
        let e = decode_events(br#"{"level":"warn"}"#).unwrap();
        assert_eq!(
            e[0].message, br#"{"level":"warn"}"#,
            "no message: its JSON text"
        );
    }

    #[test]
    fn a_bad_line_is_named_and_refuses_the_body() {
        let e = decode_events(b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n{\"message\":\n")
            .unwrap_err();
        assert!(matches!(e, BodyError::Malformed { line: 3, .. }), "{e:?}");
        let e = decode_events(b"{\"message\":\"a\"}\n42\n").unwrap_err();
        assert_eq!(e, malformed(2, "an event must be a JSON object"));
        let e = decode_events(b"[{\"message\":\"a\"}]\n[]").unwrap_err();
        assert!(matches!(e, BodyError::Malformed { line: 1, .. }), "{e:?}");
        let e = decode_events(b"[1]").unwrap_err();
        assert_eq!(e, malformed(1, "an event must be a JSON object"));
    }

    #[test]
    fn bodies_decompress_within_the_limit() {
        use std::io::Write;
        let plain = b"{\"message\":\"a\"}\n".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(Some("gzip"), &gz, 1 << 20).unwrap().as_ref(),
            &plain[..]
        );
        let zst = zstd::encode_all(&plain[..], 1).unwrap();
        assert_eq!(
            decompress(Some("zstd"), &zst, 1 << 20).unwrap().as_ref(),
            &plain[..]
        );
        assert_eq!(
            decompress(Some("gzip"), &gz, 100).unwrap_err(),
            BodyError::TooLarge { limit: 100 }
        );
        assert!(matches!(
            decompress(Some("br"), &gz, 100),
            Err(BodyError::Encoding(_))
        ));
        assert!(matches!(
            decompress(Some("gzip"), b"nope", 100),
            Err(BodyError::Malformed { .. })
        ));
    }

    #[test]
    fn syslog_lines_split_and_truncate() {
        let lines = decode_syslog(b"<13>a\r\n\n<13>bbbbbbbb\n<13>c", 6);
        assert_eq!(
            lines,
            vec![
                (&b"<13>a"[..], false),
                (&b"<13>bb"[..], true),
                (&b"<13>c"[..], false)
            ]
        );
    }
}
