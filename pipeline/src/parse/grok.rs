//! Grok: named patterns (`%{IP:client}`) expanded into one regex, as Logstash and Vector's
//! `parse_grok` read them.
//!
//! - `%{NAME}` matches pattern NAME without keeping it; `%{NAME:field}` keeps what it matched as
//!   `field` (a dotted path, or Logstash's `[http][status]`); `%{NAME:field:int}` /
//!   `%{NAME:field:float}` converts it (a value that does not convert is kept as text).
//! - Patterns may use other patterns; fields named inside them are kept too (`SYSLOGBASE`
//!   yields `timestamp`, `logsource`, `program`, `pid`). Custom patterns from the config
//!   override or extend the bundled library ([`LIBRARY`]: the common Logstash names, written
//!   for Rust's regex engine, which has no look-around: boundaries use `\b`).
//! - Errors (compile time only): an unknown pattern name, a cycle, a regex that does not compile.
//!
//! Compiled once per config; matching allocates nothing (capture locations are reused).

use std::collections::BTreeMap;

use regex::bytes::{CaptureLocations, Regex};

/// The bundled patterns: `NAME definition` per line.
pub const LIBRARY: &str = r#"USERNAME [a-zA-Z0-9._-]+
USER %{USERNAME}
EMAILLOCALPART [a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-zA-Z0-9!#$%&'*+/=?^_`{|}~-]+)*
EMAILADDRESS %{EMAILLOCALPART}@%{HOSTNAME}
INT [+-]?[0-9]+
BASE10NUM [+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)
NUMBER %{BASE10NUM}
BASE16NUM [+-]?(?:0[xX])?[0-9A-Fa-f]+
POSINT \b[1-9][0-9]*\b
NONNEGINT \b[0-9]+\b
WORD \b\w+\b
NOTSPACE \S+
SPACE \s*
DATA .*?
GREEDYDATA .*
QUOTEDSTRING "(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`
QS %{QUOTEDSTRING}
UUID [A-Fa-f0-9]{8}-(?:[A-Fa-f0-9]{4}-){3}[A-Fa-f0-9]{12}
MAC (?:[A-Fa-f0-9]{2}[:-]){5}[A-Fa-f0-9]{2}|(?:[A-Fa-f0-9]{4}\.){2}[A-Fa-f0-9]{4}
IPV4 \b(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}\b
IPV6 (?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|(?:[0-9A-Fa-f]{1,4}:){1,6}(?::[0-9A-Fa-f]{1,4}){1,1}|(?:[0-9A-Fa-f]{1,4}:){0,5}(?::[0-9A-Fa-f]{1,4}){1,6}|::(?:[Ff]{4}:)?%{IPV4}|(?:[0-9A-Fa-f]{1,4}:){6}%{IPV4}|::
IP %{IPV6}|%{IPV4}
HOSTNAME \b[0-9A-Za-z][0-9A-Za-z_-]{0,62}(?:\.[0-9A-Za-z][0-9A-Za-z_-]{0,62})*\.?\b
HOST %{HOSTNAME}
IPORHOST %{IP}|%{HOSTNAME}
HOSTPORT %{IPORHOST}:%{POSINT}
UNIXPATH (?:/[^/\s]*)+
WINPATH [A-Za-z]+:(?:\\[^\\\s]*)+
PATH %{UNIXPATH}|%{WINPATH}
URIPROTO [A-Za-z][A-Za-z0-9+.-]*
URIHOST %{IPORHOST}(?::%{POSINT})?
URIPATH (?:/[A-Za-z0-9$.+!*'(){},~:;=@#%&_\-]*)+
URIPARAM \?[A-Za-z0-9$.+!*'|(){},~@#%&/=:;_?\-\[\]<>]*
URIPATHPARAM %{URIPATH}(?:%{URIPARAM})?
URI %{URIPROTO}://(?:%{USER}(?::[^@]*)?@)?(?:%{URIHOST})?(?:%{URIPATHPARAM})?
MONTH \b(?:[Jj]an(?:uary|uar)?|[Ff]eb(?:ruary|ruar)?|[Mm](?:a|ä)?r(?:ch|z)?|[Aa]pr(?:il)?|[Mm]a(?:y|i)?|[Jj]un(?:e|i)?|[Jj]ul(?:y|i)?|[Aa]ug(?:ust)?|[Ss]ep(?:tember)?|[Oo](?:c|k)?t(?:ober)?|[Nn]ov(?:ember)?|[Dd]e(?:c|z)(?:ember)?)\b
MONTHNUM 0?[1-9]|1[0-2]
MONTHNUM2 0[1-9]|1[0-2]
MONTHDAY (?:0[1-9])|(?:[12][0-9])|(?:3[01])|[1-9]
DAY \b(?:Mon(?:day)?|Tue(?:sday)?|Wed(?:nesday)?|Thu(?:rsday)?|Fri(?:day)?|Sat(?:urday)?|Sun(?:day)?)\b
YEAR [0-9]{2}(?:[0-9]{2})?
HOUR 2[0123]|[01]?[0-9]
MINUTE [0-5][0-9]
SECOND (?:[0-5]?[0-9]|60)(?:[:.,][0-9]+)?
TIME %{HOUR}:%{MINUTE}(?::%{SECOND})?
DATE_US %{MONTHNUM}[/-]%{MONTHDAY}[/-]%{YEAR}
DATE_EU %{MONTHDAY}[./-]%{MONTHNUM}[./-]%{YEAR}
DATE %{DATE_US}|%{DATE_EU}
DATESTAMP %{DATE}[- ]%{TIME}
TZ [A-Z]{3}
ISO8601_TIMEZONE Z|[+-]%{HOUR}(?::?%{MINUTE})
ISO8601_SECOND %{SECOND}
TIMESTAMP_ISO8601 %{YEAR}-%{MONTHNUM}-%{MONTHDAY}[T ]%{HOUR}:?%{MINUTE}(?::?%{SECOND})?%{ISO8601_TIMEZONE}?
DATESTAMP_RFC822 %{DAY} %{MONTH} %{MONTHDAY} %{YEAR} %{TIME} %{TZ}
DATESTAMP_OTHER %{DAY} %{MONTH} %{MONTHDAY} %{TIME} %{TZ} %{YEAR}
SYSLOGTIMESTAMP %{MONTH} +%{MONTHDAY} %{TIME}
PROG [\x21-\x5a\x5c\x5e-\x7e]+
SYSLOGPROG %{PROG:program}(?:\[%{POSINT:pid}\])?
SYSLOGHOST %{IPORHOST}
SYSLOGFACILITY <%{NONNEGINT:facility}.%{NONNEGINT:priority}>
SYSLOGBASE %{SYSLOGTIMESTAMP:timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:logsource} %{SYSLOGPROG}:
HTTPDATE %{MONTHDAY}/%{MONTH}/%{YEAR}:%{TIME} %{INT}
HTTPDUSER %{EMAILADDRESS}|%{USER}
COMMONAPACHELOG %{IPORHOST:clientip} %{HTTPDUSER:ident} %{USER:auth} \[%{HTTPDATE:timestamp}\] "(?:%{WORD:verb} %{NOTSPACE:request}(?: HTTP/%{NUMBER:httpversion})?|%{DATA:rawrequest})" %{NUMBER:response} (?:%{NUMBER:bytes}|-)
COMBINEDAPACHELOG %{COMMONAPACHELOG} %{QS:referrer} %{QS:agent}
LOGLEVEL [Aa]lert|ALERT|[Tt]race|TRACE|[Dd]ebug|DEBUG|[Nn]otice|NOTICE|[Ii]nfo|INFO|[Ww]arn?(?:ing)?|WARN?(?:ING)?|[Ee]rr?(?:or)?|ERR?(?:OR)?|[Cc]rit?(?:ical)?|CRIT?(?:ICAL)?|[Ff]atal|FATAL|[Ss]evere|SEVERE|EMERG(?:ENCY)?|[Ee]merg(?:ency)?
"#;

/// How deep patterns may nest (a cycle is an error before this).
const MAX_DEPTH: usize = 32;

/// What a kept field is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Int,
    Float,
}

/// A grok pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrokError {
    #[error("unknown grok pattern `{0}`")]
    UnknownPattern(String),
    #[error("grok patterns refer to each other in a cycle through `{0}`")]
    Cycle(String),
    #[error("`%{{{0}}}`: expected %{{NAME}}, %{{NAME:field}} or %{{NAME:field:int|float}}")]
    BadReference(String),
    #[error("the expanded pattern does not compile: {0}")]
    Regex(String),
}

/// One compiled pattern: its regex and the fields its groups fill.
#[derive(Debug, Clone)]
pub struct Grok {
    regex: Regex,
    /// (capture group index, field path, type).
    fields: Vec<(usize, Vec<u8>, FieldType)>,
}

/// Patterns tried in order; the first that matches gives the fields.
#[derive(Debug, Clone)]
pub struct GrokSet {
    patterns: Vec<Grok>,
    locations: Vec<CaptureLocations>,
}

/// The bundled library plus `custom` (which wins on a name both define).
pub fn library(custom: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut lib: BTreeMap<String, String> = LIBRARY
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect();
    lib.extend(custom.iter().map(|(k, v)| (k.clone(), v.clone())));
    lib
}

/// Compiles `patterns` against the bundled library and `custom` patterns.
pub fn compile(
    patterns: &[String],
    custom: &BTreeMap<String, String>,
) -> Result<GrokSet, GrokError> {
    let lib = library(custom);
    let mut compiled = Vec::with_capacity(patterns.len());
    for pattern in patterns {
        let mut expander = Expander {
            lib: &lib,
            fields: Vec::new(),
            stack: Vec::new(),
        };
        let text = expander.expand(pattern)?;
        let regex = regex::bytes::RegexBuilder::new(&format!("^(?:{text})"))
            .size_limit(20 << 20)
            .build()
            .map_err(|e| GrokError::Regex(e.to_string()))?;
        let fields = expander
            .fields
            .into_iter()
            .filter_map(|(group, path, ty)| {
                Some((
                    regex
                        .capture_names()
                        .position(|n| n == Some(group.as_str()))?,
                    path,
                    ty,
                ))
            })
            .collect();
        compiled.push(Grok { regex, fields });
    }
    let locations = compiled
        .iter()
        .map(|g| g.regex.capture_locations())
        .collect();
    Ok(GrokSet {
        patterns: compiled,
        locations,
    })
}

struct Expander<'a> {
    lib: &'a BTreeMap<String, String>,
    /// (group name, field path, type) of every kept field, in order.
    fields: Vec<(String, Vec<u8>, FieldType)>,
    /// Pattern names being expanded (cycle detection).
    stack: Vec<String>,
}

impl Expander<'_> {
    fn expand(&mut self, pattern: &str) -> Result<String, GrokError> {
        let mut out = String::with_capacity(pattern.len() * 2);
        let mut rest = pattern;
        while let Some(at) = rest.find("%{") {
            out.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| GrokError::BadReference(after.to_string()))?;
            out.push_str(&self.reference(&after[..end])?);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// `NAME`, `NAME:field` or `NAME:field:type` as a regex group.
    fn reference(&mut self, inner: &str) -> Result<String, GrokError> {
        let mut parts = inner.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let field = parts.next();
        let ty = match parts.next() {
            None => FieldType::Text,
            Some("int") => FieldType::Int,
            Some("float") => FieldType::Float,
            Some(_) => return Err(GrokError::BadReference(inner.to_string())),
        };
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name || field == Some("") {
            return Err(GrokError::BadReference(inner.to_string()));
        }
        if self.stack.iter().any(|n| n == name) || self.stack.len() >= MAX_DEPTH {
            return Err(GrokError::Cycle(name.to_string()));
        }
        let definition = self
            .lib
            .get(name)
            .ok_or_else(|| GrokError::UnknownPattern(name.to_string()))?
            .clone();
        self.stack.push(name.to_string());
        let body = self.expand(&definition)?;
        self.stack.pop();
        Ok(match field {
            None => format!("(?:{body})"),
            Some(field) => {
                let group = format!("g{}", self.fields.len());
                self.fields.push((group.clone(), field_path(field), ty));
                format!("(?P<{group}>{body})")
            }
        })
    }
}

/// `[http][status]` or `http.status` → `http.status`.
fn field_path(field: &str) -> Vec<u8> {
    if field.starts_with('[') {
        field
            .trim_start_matches('[')
            .trim_end_matches(']')
            .replace("][", ".")
            .into_bytes()
    } else {
        field.as_bytes().to_vec()
    }
}

/// A field a match found: its path, type and the matched bytes' range.
pub struct Match<'a> {
    pub path: &'a [u8],
    pub ty: FieldType,
    pub range: std::ops::Range<usize>,
}

impl GrokSet {
    /// The first pattern that matches `input` calls `found` for each field it captured;
    /// false when none matched.
    pub fn matches(&mut self, input: &[u8], mut found: impl FnMut(Match<'_>)) -> bool {
        for (grok, locations) in self.patterns.iter().zip(&mut self.locations) {
            if grok.regex.captures_read(locations, input).is_none() {
                continue;
            }
            for (group, path, ty) in &grok.fields {
                if let Some((start, end)) = locations.get(*group) {
                    found(Match {
                        path,
                        ty: *ty,
                        range: start..end,
                    });
                }
            }
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pattern: &str, input: &str) -> Option<Vec<(String, String, FieldType)>> {
        let mut set = compile(&[pattern.to_string()], &BTreeMap::new()).unwrap();
        let mut out = Vec::new();
        let matched = set.matches(input.as_bytes(), |m| {
            out.push((
                String::from_utf8_lossy(m.path).into_owned(),
                input[m.range].to_string(),
                m.ty,
            ))
        });
        matched.then_some(out)
    }

    fn value<'a>(found: &'a [(String, String, FieldType)], name: &str) -> &'a str {
        &found
            .iter()
            .find(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {found:?}"))
            .1
    }

    #[test]
    fn every_bundled_pattern_compiles() {
        for name in library(&BTreeMap::new()).keys() {
            compile(&[format!("%{{{name}}}")], &BTreeMap::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn combined_apache_log() {
        let line = r#"83.149.9.216 - - [17/May/2015:10:05:03 +0000] "GET /presentations/logstash-monitorama-2013/images/kibana-search.png HTTP/1.1" 200 203023 "http://semicomplete.com/presentations/logstash-monitorama-2013/" "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1)""#;
        let found = fields("%{COMBINEDAPACHELOG}", line).unwrap();
        assert_eq!(value(&found, "clientip"), "83.149.9.216");
        assert_eq!(value(&found, "timestamp"), "17/May/2015:10:05:03 +0000");
        assert_eq!(value(&found, "verb"), "GET");
        assert_eq!(value(&found, "response"), "200");
        assert_eq!(value(&found, "bytes"), "203023");
        assert_eq!(
            value(&found, "agent"),
            "\"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_1)\""
        );
    }

    #[test]
    fn syslogbase_and_types() {
        let found = fields(
            "%{SYSLOGBASE} %{GREEDYDATA:msg}",
            "Mar  7 10:00:01 web-1 sshd[4321]: Accepted publickey for bob",
        )
        .unwrap();
        assert_eq!(value(&found, "timestamp"), "Mar  7 10:00:01");
        assert_eq!(value(&found, "logsource"), "web-1");
        assert_eq!(value(&found, "program"), "sshd");
        assert_eq!(value(&found, "pid"), "4321");
        assert_eq!(value(&found, "msg"), "Accepted publickey for bob");
        let found = fields("%{IP:[client][ip]} %{NUMBER:took:float} %{INT:[http][status]:int} %{TIMESTAMP_ISO8601:at}", "2001:db8::1 0.25 404 2024-02-29T01:02:03.5Z").unwrap();
        assert_eq!(found[0].0, "client.ip");
        assert_eq!(value(&found, "client.ip"), "2001:db8::1");
        assert_eq!(found[1].2, FieldType::Float);
        assert_eq!(
            found[2],
            ("http.status".to_string(), "404".to_string(), FieldType::Int)
        );
        assert_eq!(value(&found, "at"), "2024-02-29T01:02:03.5Z");
        assert!(fields("%{IPV4:ip}", "999.1.1.1").is_none());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = compile(&["%{NOPE:x}".to_string()], &BTreeMap::new()).unwrap_err();
        assert_eq!(e, GrokError::UnknownPattern("NOPE".into()));
        let custom: BTreeMap<String, String> = [
            ("A".to_string(), "%{B}".to_string()),
            ("B".to_string(), "%{A}".to_string()),
        ]
        .into();
        assert!(matches!(
            compile(&["%{A}".to_string()], &custom),
            Err(GrokError::Cycle(_))
        ));
        assert!(matches!(
            compile(&["%{WORD:x:bool}".to_string()], &BTreeMap::new()),
            Err(GrokError::BadReference(_))
        ));
        let custom: BTreeMap<String, String> =
            [("TICKET".to_string(), "[A-Z]+-[0-9]+".to_string())].into();
        let mut set = compile(&["%{WORD:verb} %{TICKET:ticket}".to_string()], &custom).unwrap();
        assert!(set.matches(b"closed ABC-12", |_| {}));
    }
}
