//! Syslog message parsing: RFC 5424, RFC 3164, and raw fallback.
//!
//! The parser returns byte ranges ([`Span`]) into the frame, never owned strings, so parsing an
//! event allocates nothing. It is lenient in what it accepts and strict in what it claims:
//! - RFC 5424: `<PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`, NILVALUE `-`
//!   anywhere, structured data with escapes `\"` `\\` `\]` checked, fractional seconds, `Z` or
//!   offset, a UTF-8 BOM before the message stripped. A header that breaks the grammar (bad
//!   timestamp, unterminated SD) makes the line `raw`, not a half-parsed event.
//! - RFC 3164: `<PRI>` then an optional timestamp (`Mmm dd hh:mm:ss`, optionally with a year or
//!   fraction, or RFC 3339), an optional hostname, an optional `tag[pid]:`. Without a year the
//!   current year is used, moved back one year if that would put the event more than a day in
//!   the future (a day of slack absorbs clock skew). Such timestamps are taken as UTC.
//! - Anything else is `raw`: the whole frame is the message. Parsing never drops an event.

use crate::civil;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Format {
    Raw = 0,
    Rfc3164 = 1,
    Rfc5424 = 2,
}

impl Format {
    pub fn from_u8(v: u8) -> Option<Format> {
        match v {
            0 => Some(Format::Raw),
            1 => Some(Format::Rfc3164),
            2 => Some(Format::Rfc5424),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Rfc3164 => "rfc3164",
            Format::Rfc5424 => "rfc5424",
        }
    }
}

/// A byte range inside a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            len: (end - start) as u32,
        }
    }
    pub fn get<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = self.start as usize;
        frame
            .get(start..start + self.len as usize)
            .unwrap_or_default()
    }
}

/// An instant as Unix seconds and nanoseconds, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub format: Format,
    /// `facility << 3 | severity`, when the frame had a valid `<PRI>`.
    pub pri: Option<u8>,
    /// RFC 5424 VERSION (0 for other formats).
    pub version: u8,
    pub timestamp: Option<Timestamp>,
    pub hostname: Option<Span>,
    pub appname: Option<Span>,
    pub procid: Option<Span>,
    pub msgid: Option<Span>,
    pub structured_data: Option<Span>,
    pub message: Span,
}

impl Parsed {
    pub fn raw(frame: &[u8]) -> Parsed {
        Parsed {
            format: Format::Raw,
            pri: None,
            version: 0,
            timestamp: None,
            hostname: None,
            appname: None,
            procid: None,
            msgid: None,
            structured_data: None,
            message: Span::new(0, frame.len()),
        }
    }
}

/// Parses one frame. `now_secs` (Unix time) resolves RFC 3164's missing year.
pub fn parse(frame: &[u8], now_secs: i64) -> Parsed {
    if frame.len() > u32::MAX as usize {
        return Parsed::raw(&frame[..0]);
    }
    let Some((pri, after_pri)) = parse_pri(frame) else {
        return Parsed::raw(frame);
    };
    if looks_like_5424(&frame[after_pri..]) {
        return parse_5424(frame, pri, after_pri).unwrap_or_else(|| Parsed::raw(frame));
    }
    parse_3164(frame, pri, after_pri, now_secs)
}

fn parse_pri(frame: &[u8]) -> Option<(u8, usize)> {
    if frame.first() != Some(&b'<') {
        return None;
    }
    let mut value: u32 = 0;
    for (i, &b) in frame.iter().enumerate().skip(1).take(4) {
        match b {
            b'0'..=b'9' if i <= 3 => value = value * 10 + u32::from(b - b'0'),
            b'>' if i > 1 && value <= 191 => {
                // RFC 5424: no leading zeros, except "<0>".
                if frame[1] == b'0' && i > 2 {
                    return None;
                }
                return Some((value as u8, i + 1));
            }
            _ => return None,
        }
    }
    None
}

/// `VERSION SP` right after the PRI: a nonzero number of one or two digits.
fn looks_like_5424(rest: &[u8]) -> bool {
    matches!(
        rest,
        [b'1'..=b'9', b' ', ..] | [b'1'..=b'9', b'0'..=b'9', b' ', ..]
    )
}

/// A cursor over the frame for the RFC 5424 header fields.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    /// A space-free token (PRINTUSASCII) up to the next space, of at most `max` bytes.
    fn token(&mut self, max: usize) -> Option<Span> {
        let start = self.pos;
        let len = self.rest().iter().position(|&b| b == b' ')?;
        if len == 0 || len > max || !self.rest()[..len].iter().all(|b| (33..=126).contains(b)) {
            return None;
        }
        self.pos += len + 1;
        Some(Span::new(start, start + len))
    }
    /// A header field: `-` is NILVALUE (absent).
    fn field(&mut self, max: usize) -> Option<Option<Span>> {
        let span = self.token(max)?;
        Some((span.get(self.buf) != b"-").then_some(span))
    }
}

fn parse_5424(frame: &[u8], pri: u8, after_pri: usize) -> Option<Parsed> {
    let mut c = Cursor {
        buf: frame,
        pos: after_pri,
    };
    let version_span = c.token(2)?;
    let version_bytes = version_span.get(frame);
    if version_bytes[0] == b'0' || !version_bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let version = version_bytes.iter().fold(0u8, |v, &b| v * 10 + (b - b'0'));
    let ts_span = c.token(64)?;
    let ts_bytes = ts_span.get(frame);
    let timestamp = if ts_bytes == b"-" {
        None
    } else {
        let (ts, used) = parse_rfc3339(ts_bytes)?;
        if used != ts_bytes.len() {
            return None;
        }
        Some(ts)
    };
    let hostname = c.field(255)?;
    let appname = c.field(48)?;
    let procid = c.field(128)?;
    let msgid = c.field(32)?;
    let structured_data = parse_sd(&mut c)?;
    let message_start = match c.rest() {
        [] => c.pos,
        [b' ', rest @ ..] if rest.starts_with(b"\xEF\xBB\xBF") => c.pos + 4,
        [b' ', ..] => c.pos + 1,
        _ => return None,
    };
    Some(Parsed {
        format: Format::Rfc5424,
        pri: Some(pri),
        version,
        timestamp,
        hostname,
        appname,
        procid,
        msgid,
        structured_data,
        message: Span::new(message_start, frame.len()),
    })
}

/// STRUCTURED-DATA: `-` or one or more `[SD-ID *(SP PARAM="VALUE")]`.
fn parse_sd(c: &mut Cursor) -> Option<Option<Span>> {
    let start = c.pos;
    if c.rest().first() == Some(&b'-') {
        c.pos += 1;
        return Some(None);
    }
    let mut elements = 0;
    while c.rest().first() == Some(&b'[') {
        c.pos = start + sd_element_len(&c.buf[start..], c.pos - start)?;
        elements += 1;
    }
    (elements > 0).then(|| Some(Span::new(start, c.pos)))
}

/// Validates one SD-ELEMENT starting at `pos` (at `[`); returns the position after its `]`.
fn sd_element_len(buf: &[u8], mut pos: usize) -> Option<usize> {
    pos += 1;
    pos += sd_name_len(&buf[pos..])?;
    loop {
        match buf.get(pos)? {
            b']' => return Some(pos + 1),
            b' ' => {
                pos += 1;
                pos += sd_name_len(&buf[pos..])?;
                if buf.get(pos..pos + 2)? != b"=\"" {
                    return None;
                }
                pos += 2;
                pos = sd_value_end(buf, pos)? + 1;
            }
            _ => return None,
        }
    }
}

fn sd_name_len(buf: &[u8]) -> Option<usize> {
    let len = buf
        .iter()
        .take(33)
        .position(|&b| !(33..=126).contains(&b) || matches!(b, b'=' | b']' | b'"' | b' '))?;
    (1..=32).contains(&len).then_some(len)
}

/// Finds the closing quote of a PARAM-VALUE starting at `pos`, honouring backslash escapes.
fn sd_value_end(buf: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        match buf.get(pos)? {
            b'\\' => pos += 2,
            b'"' => return Some(pos),
            _ => pos += 1,
        }
    }
}

/// Iterates the elements of a validated STRUCTURED-DATA span: `(sd_id, params)` where params
/// yields `(name, raw_value)`; values still carry their escapes (see [`unescape_sd_value`]).
pub fn sd_elements(sd: &[u8]) -> SdElements<'_> {
    SdElements { buf: sd, pos: 0 }
}

#[derive(Clone)]
pub struct SdElements<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SdElements<'a> {
    type Item = (&'a [u8], SdParams<'a>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.get(self.pos) != Some(&b'[') {
            return None;
        }
        let start = self.pos + 1;
        let end = sd_element_len(self.buf, self.pos)?;
        self.pos = end;
        let name_len = sd_name_len(&self.buf[start..])?;
        Some((
            &self.buf[start..start + name_len],
            SdParams {
                buf: &self.buf[..end - 1],
                pos: start + name_len,
            },
        ))
    }
}

#[derive(Clone)]
pub struct SdParams<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SdParams<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.get(self.pos) != Some(&b' ') {
            return None;
        }
        let name_start = self.pos + 1;
        let name_len = sd_name_len(&self.buf[name_start..])?;
        let value_start = name_start + name_len + 2;
        let value_end = sd_value_end(self.buf, value_start)?;
        self.pos = value_end + 1;
        Some((
            &self.buf[name_start..name_start + name_len],
            &self.buf[value_start..value_end],
        ))
    }
}

/// Appends a PARAM-VALUE with RFC 5424's escapes (`\"`, `\\`, `\]`) resolved; any other
/// backslash is kept as written, as the RFC requires.
pub fn unescape_sd_value(raw: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && matches!(raw.get(i + 1), Some(b'"' | b'\\' | b']')) {
            out.push(raw[i + 1]);
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
}

fn digits(buf: &[u8], n: usize) -> Option<u32> {
    let d = buf.get(..n)?;
    d.iter().try_fold(0u32, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    })
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; returns the instant and the bytes used.
pub fn parse_rfc3339(b: &[u8]) -> Option<(Timestamp, usize)> {
    let year = digits(b, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !matches!(b.get(10), Some(b'T' | b't'))
    {
        return None;
    }
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let (tod, mut pos) = parse_time_of_day(b, 11)?;
    let mut nanos = 0;
    if b.get(pos) == Some(&b'.') {
        let (n, used) = parse_fraction(&b[pos + 1..])?;
        nanos = n;
        pos += 1 + used;
    }
    let offset_secs: i64 = match b.get(pos)? {
        b'Z' | b'z' => {
            pos += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let hh = digits(&b[pos + 1..], 2)?;
            let mm = digits(b.get(pos + 4..)?, 2)?;
            if b.get(pos + 3) != Some(&b':') || hh > 23 || mm > 59 {
                return None;
            }
            pos += 6;
            let secs = i64::from(hh * 3600 + mm * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let secs = civil_secs(i64::from(year), month, day, tod)? - offset_secs;
    Some((Timestamp { secs, nanos }, pos))
}

/// `HH:MM:SS` at `pos`; returns seconds of the day (a leap second counts as :59) and the end.
fn parse_time_of_day(b: &[u8], pos: usize) -> Option<(u32, usize)> {
    let t = b.get(pos..pos + 8)?;
    let (h, m, s) = (digits(t, 2)?, digits(&t[3..], 2)?, digits(&t[6..], 2)?);
    if t[2] != b':' || t[5] != b':' || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((h * 3600 + m * 60 + s.min(59), pos + 8))
}

/// 1 to 9 fraction digits (more are read and ignored); returns nanoseconds and digits used.
fn parse_fraction(b: &[u8]) -> Option<(u32, usize)> {
    let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let mut nanos = 0u32;
    for i in 0..9 {
        nanos = nanos * 10
            + b.get(i)
                .filter(|_| i < len)
                .map_or(0, |c| u32::from(c - b'0'));
    }
    Some((nanos, len))
}

fn civil_secs(year: i64, month: u32, day: u32, secs_of_day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > civil::days_in_month(year, month) {
        return None;
    }
    Some(civil::days_from_civil(year, month, day) * 86_400 + i64::from(secs_of_day))
}

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// BSD timestamp `Mmm dd hh:mm:ss` (day space- or zero-padded), optionally `Mmm dd yyyy hh:mm:ss`
/// and a fraction. Returns the instant and the bytes used.
fn parse_bsd_timestamp(b: &[u8], now_secs: i64) -> Option<(Timestamp, usize)> {
    let month = MONTHS.iter().position(|m| b.get(..3) == Some(&m[..]))? as u32 + 1;
    let mut pos = 3;
    while b.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let day_len = b[pos..]
        .iter()
        .take(3)
        .take_while(|c| c.is_ascii_digit())
        .count();
    if !(1..=2).contains(&day_len) || b.get(pos + day_len) != Some(&b' ') {
        return None;
    }
    let day = digits(&b[pos..], day_len)?;
    pos += day_len + 1;
    let mut year = None;
    if b.get(pos + 4) == Some(&b' ') {
        year = Some(i64::from(digits(&b[pos..], 4)?));
        pos += 5;
    }
    let (tod, mut end) = parse_time_of_day(b, pos)?;
    let mut nanos = 0;
    if b.get(end) == Some(&b'.') {
        let (n, used) = parse_fraction(&b[end + 1..])?;
        nanos = n;
        end += 1 + used;
    }
    let secs = match year {
        Some(y) => civil_secs(y, month, day, tod)?,
        None => infer_year(month, day, tod, now_secs)?,
    };
    Some((Timestamp { secs, nanos }, end))
}

/// The current year, or the previous one if the current would put the event more than a day
/// ahead of `now_secs` (a December event received in January).
fn infer_year(month: u32, day: u32, tod: u32, now_secs: i64) -> Option<i64> {
    const SKEW_SECS: i64 = 86_400;
    let (year, _, _) = civil::civil_from_days(now_secs.div_euclid(86_400));
    match civil_secs(year, month, day, tod) {
        Some(secs) if secs <= now_secs + SKEW_SECS => Some(secs),
        // Feb 29 only exists in some years: try the year before either way.
        _ => civil_secs(year - 1, month, day, tod),
    }
}

fn parse_3164(frame: &[u8], pri: u8, after_pri: usize, now_secs: i64) -> Parsed {
    let mut pos = after_pri;
    let rest = &frame[pos..];
    let timestamp = parse_bsd_timestamp(rest, now_secs).or_else(|| parse_rfc3339(rest));
    let mut hostname = None;
    if let Some((_, used)) = timestamp {
        pos += used;
        while frame.get(pos) == Some(&b' ') {
            pos += 1;
        }
        // The next word is the hostname unless it is already the tag (`app:` / `app[1]:`).
        let word_len = frame[pos..].iter().position(|&b| b == b' ');
        if let Some(len) = word_len {
            let word = &frame[pos..pos + len];
            let looks_like_tag = word.ends_with(b":") || word.contains(&b'[');
            if len > 0 && !looks_like_tag && word.iter().all(|b| (33..=126).contains(b)) {
                hostname = Some(Span::new(pos, pos + len));
                pos += len + 1;
            }
        }
    }
    let (appname, procid, msg_start) = parse_tag(frame, pos);
    Parsed {
        format: Format::Rfc3164,
        pri: Some(pri),
        version: 0,
        timestamp: timestamp.map(|(ts, _)| ts),
        hostname,
        appname,
        procid,
        msgid: None,
        structured_data: None,
        message: Span::new(msg_start, frame.len()),
    }
}

/// `TAG[PID]: ` or `TAG: ` at `pos`; a tag is 1–48 bytes of `[A-Za-z0-9._/-]`.
fn parse_tag(frame: &[u8], pos: usize) -> (Option<Span>, Option<Span>, usize) {
    let rest = &frame[pos..];
    let tag_len = rest
        .iter()
        .take(49)
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'))
        .count();
    if tag_len == 0 || tag_len > 48 {
        return (None, None, pos);
    }
    let app = Span::new(pos, pos + tag_len);
    let mut after = tag_len;
    let mut procid = None;
    if rest.get(after) == Some(&b'[') {
        let Some(close) = rest[after..].iter().take(130).position(|&b| b == b']') else {
            return (None, None, pos);
        };
        if close > 1 {
            procid = Some(Span::new(pos + after + 1, pos + after + close));
        }
        after += close + 1;
    }
    if rest.get(after) != Some(&b':') {
        return (None, None, pos);
    }
    after += 1;
    if rest.get(after) == Some(&b' ') {
        after += 1;
    }
    (Some(app), procid, pos + after)
}

pub const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

#[cfg(test)]
mod tests;
