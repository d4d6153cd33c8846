//! The fields compared, read from each system's JSON output and normalized so that only a
//! difference in parsing shows:
//! - a field a system leaves empty, `-` (rsyslog's NILVALUE) or fills with the sender's
//!   address (both peers' stand-in for a missing hostname) is absent;
//! - a timestamp within an hour of the run is the reception time (both peers' stand-in for a
//!   missing one): absent; timestamps compare as instants at microsecond precision;
//! - PRI compares as the number (Sluice writes facility and severity names);
//! - the message compares without leading spaces and a leading UTF-8 BOM (rsyslog keeps the
//!   space after a tag's colon, syslog-ng and Sluice do not);
//! - structured data compares as Sluice's JSON shape (an SD-ID or PARAM-NAME that repeats
//!   becomes an array), built from the peers' SD text.

use serde_json::{Map, Value};

/// A system's reading of one message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fields {
    pub pri: Option<u32>,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: Option<i64>,
    pub hostname: Option<String>,
    pub appname: Option<String>,
    pub procid: Option<String>,
    pub msgid: Option<String>,
    pub structured_data: Option<Value>,
    pub message: String,
}

pub const FIELD_NAMES: [&str; 8] = [
    "pri",
    "timestamp",
    "hostname",
    "appname",
    "procid",
    "msgid",
    "structured_data",
    "message",
];

impl Fields {
    /// The field named `FIELD_NAMES[i]`, rendered for comparison and display.
    pub fn field(&self, i: usize) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        match i {
            0 => self.pri.map_or("(none)".into(), |p| p.to_string()),
            1 => self.timestamp_us.map_or("(none)".into(), |t| {
                format!("{}.{:06}", t.div_euclid(1_000_000), t.rem_euclid(1_000_000))
            }),
            2 => opt(&self.hostname),
            3 => opt(&self.appname),
            4 => opt(&self.procid),
            5 => opt(&self.msgid),
            6 => self
                .structured_data
                .as_ref()
                .map_or("(none)".into(), Value::to_string),
            _ => format!("{:?}", self.message),
        }
    }
}

/// What a run needs to tell a stand-in from a parsed value.
pub struct Context {
    pub run_started_us: i64,
    pub sender_address: &'static str,
}

/// Sluice's JSON encoding.
pub fn from_sluice(v: &Value, cx: &Context) -> Fields {
    let facility = text(v, "facility").and_then(|f| position(&ingest::syslog::FACILITY_NAMES, &f));
    let severity = text(v, "severity").and_then(|s| position(&ingest::syslog::SEVERITY_NAMES, &s));
    Fields {
        pri: facility.zip(severity).map(|(f, s)| f * 8 + s),
        timestamp_us: text(v, "timestamp").and_then(|t| instant_us(&t, cx)),
        hostname: present(text(v, "hostname"), cx),
        appname: present(text(v, "appname"), cx),
        procid: present(text(v, "procid"), cx),
        msgid: present(text(v, "msgid"), cx),
        structured_data: v.get("structured_data").cloned(),
        message: message(text(v, "message")),
    }
}

/// The peers' outputs: both write the same keys (see the templates in `parsediff::peer_config`),
/// each a string: `pri`, `timestamp` (RFC 3339), `hostname`, `appname`, `procid`, `msgid`,
/// `sd` (RFC 5424 text), `message`.
pub fn from_peer(v: &Value, cx: &Context) -> Fields {
    Fields {
        pri: text(v, "pri").and_then(|p| p.trim().parse().ok()),
        timestamp_us: text(v, "timestamp").and_then(|t| instant_us(&t, cx)),
        hostname: present(text(v, "hostname"), cx),
        appname: present(text(v, "appname"), cx),
        procid: present(text(v, "procid"), cx),
        msgid: present(text(v, "msgid"), cx),
        structured_data: present(text(v, "sd"), cx).map(|sd| structured_data(&sd)),
        message: message(text(v, "message")),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn position(names: &[&str], name: &str) -> Option<u32> {
    names.iter().position(|n| *n == name).map(|i| i as u32)
}

fn present(value: Option<String>, cx: &Context) -> Option<String> {
    value.filter(|v| !v.is_empty() && v != "-" && v != cx.sender_address)
}

fn message(value: Option<String>) -> String {
    let value = value.unwrap_or_default();
    let trimmed = value.trim_start_matches(' ');
    trimmed
        .strip_prefix('\u{feff}')
        .unwrap_or(trimmed)
        .to_string()
}

fn instant_us(text: &str, cx: &Context) -> Option<i64> {
    let (ts, used) = ingest::syslog::parse_rfc3339(text.as_bytes())?;
    if used != text.len() {
        return None;
    }
    let us = ts.secs * 1_000_000 + i64::from(ts.nanos / 1_000);
    const HOUR_US: i64 = 3_600_000_000;
    ((us - cx.run_started_us).abs() > HOUR_US).then_some(us)
}

/// RFC 5424 SD text as Sluice's JSON shape; text that is not SD stays a string.
pub fn structured_data(text: &str) -> Value {
    match sd_elements(text) {
        Some(elements) => group(elements.into_iter().map(|(id, params)| {
            let params = group(params.into_iter().map(|(k, v)| (k, Value::String(v))));
            (id, params)
        })),
        None => Value::String(text.to_string()),
    }
}

type Element = (String, Vec<(String, String)>);

fn sd_elements(text: &str) -> Option<Vec<Element>> {
    let mut rest = text;
    let mut elements = Vec::new();
    while let Some(after) = rest.strip_prefix('[') {
        let id_len = after.find([' ', ']'])?;
        let (id, mut body) = after.split_at(id_len);
        let mut params = Vec::new();
        while let Some(param) = body.strip_prefix(' ') {
            let eq = param.find("=\"")?;
            let (value, after_value) = quoted_value(&param[eq + 2..])?;
            params.push((param[..eq].to_string(), value));
            body = after_value;
        }
        rest = body.strip_prefix(']')?;
        elements.push((id.to_string(), params));
    }
    (rest.is_empty() && !elements.is_empty()).then_some(elements)
}

/// The value up to the closing quote, escapes resolved, and the text after the quote.
fn quoted_value(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &s[i + 1..])),
            '\\' => match chars.next()? {
                (_, e @ ('"' | '\\' | ']')) => value.push(e),
                (_, other) => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

/// A key that repeats becomes an array of its values, in order (Sluice's JSON shape).
fn group(items: impl Iterator<Item = (String, Value)>) -> Value {
    let mut map = Map::new();
    let mut repeated: Vec<String> = Vec::new();
    for (key, value) in items {
        match map.get_mut(&key) {
            None => {
                map.insert(key, value);
            }
            Some(existing) => {
                if !repeated.contains(&key) {
                    *existing = Value::Array(vec![existing.take()]);
                    repeated.push(key);
                }
                if let Value::Array(values) = existing {
                    values.push(value);
                }
            }
        }
    }
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sd_text_takes_sluices_json_shape() {
        assert_eq!(
            structured_data(r#"[a x="1" x="2"][b y="q\"uote\]"][a z="3"]"#),
            json!({"a": [{"x": ["1", "2"]}, {"z": "3"}], "b": {"y": "q\"uote]"}})
        );
        assert_eq!(structured_data("[broken"), json!("[broken"));
    }

    #[test]
    fn stand_ins_for_missing_fields_are_absent() {
        let cx = Context {
            run_started_us: 1_700_000_000_000_000,
            sender_address: "127.0.0.1",
        };
        let peer = from_peer(
            &json!({"pri": "13", "timestamp": "2023-11-14T22:13:20.5+00:00", "hostname": "127.0.0.1",
                    "appname": "-", "message": " \u{feff}hi"}),
            &cx,
        );
        assert_eq!(
            peer,
            Fields {
                pri: Some(13),
                message: "hi".into(),
                ..Fields::default()
            }
        );
        let sluice = from_sluice(
            &json!({"facility": "user", "severity": "notice", "timestamp": "2001-01-01T00:00:00Z",
                    "message": "hi"}),
            &cx,
        );
        assert_eq!(sluice.pri, Some(13));
        assert_eq!(sluice.timestamp_us, Some(978_307_200_000_000));
    }
}
