//! Timestamps: RFC 3339 (RFC 5424's TIMESTAMP and many BSD senders) and the BSD `Mmm dd
//! hh:mm:ss` forms with their common extensions (a year before the time, a fraction, any case
//! of the month).

use super::Timestamp;
use crate::civil;

fn digits(buf: &[u8], n: usize) -> Option<u32> {
    let d = buf.get(..n)?;
    d.iter().try_fold(0u32, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    })
}

/// How strictly [`parse_rfc3339`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// RFC 5424 §6.2.3: `T` and `Z` upper case, a zone required.
    Rfc5424,
    /// Also `t`/`z` (RFC 3339 §5.6 allows them), a space for `T` (§5.6's note) and no zone
    /// (taken as UTC).
    Lenient,
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; returns the instant and the bytes used.
pub fn parse_rfc3339(b: &[u8]) -> Option<(Timestamp, usize)> {
    parse_rfc3339_with(b, Strictness::Lenient)
}

pub(crate) fn parse_rfc3339_with(b: &[u8], strictness: Strictness) -> Option<(Timestamp, usize)> {
    let strict = strictness == Strictness::Rfc5424;
    let year = digits(b, 4)?;
    let separator_ok = match b.get(10) {
        Some(b'T') => true,
        Some(b't') => !strict,
        Some(b' ') => !strict,
        _ => false,
    };
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') || !separator_ok {
        return None;
    }
    let month = digits(&b[5..], 2)?;
    let day = digits(&b[8..], 2)?;
    let (tod, mut pos) = parse_time_of_day(b, 11)?;
    let mut nanos = 0;
    if b.get(pos) == Some(&b'.') {
        let (n, used) = parse_fraction(&b[pos + 1..]);
        if used == 0 {
            return None;
        }
        nanos = n;
        pos += 1 + used;
    }
    let (offset_secs, used) = parse_offset(&b[pos..], strict)?;
    pos += used;
    let secs = civil_secs(i64::from(year), month, day, tod)? - offset_secs;
    Some((Timestamp { secs, nanos }, pos))
}

/// `Z`, `±HH:MM`, or (lenient only) `±HHMM`, `±HH` or nothing: the offset in seconds and the
/// bytes used.
fn parse_offset(b: &[u8], strict: bool) -> Option<(i64, usize)> {
    match b.first() {
        Some(b'Z') => Some((0, 1)),
        Some(b'z') if !strict => Some((0, 1)),
        Some(sign @ (b'+' | b'-')) => {
            let hh = digits(&b[1..], 2)?;
            let (mm, used) = match (b.get(3), strict) {
                (Some(b':'), _) => (digits(b.get(4..)?, 2)?, 6),
                (Some(b'0'..=b'9'), false) => (digits(&b[3..], 2)?, 5),
                (None | Some(b' '), false) => (0, 3),
                _ => return None,
            };
            if hh > 23 || mm > 59 {
                return None;
            }
            let secs = i64::from(hh * 3600 + mm * 60);
            Some((if *sign == b'-' { -secs } else { secs }, used))
        }
        None | Some(b' ') if !strict => Some((0, 0)),
        _ => None,
    }
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

/// Fraction digits (the first nine count, more are read and ignored); returns nanoseconds and
/// the digits used (0 when there are none).
fn parse_fraction(b: &[u8]) -> (u32, usize) {
    let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let nanos = (0..9).fold(0u32, |nanos, i| {
        let digit = b
            .get(i)
            .filter(|_| i < len)
            .map_or(0, |c| u32::from(c - b'0'));
        nanos * 10 + digit
    });
    (nanos, len)
}

fn civil_secs(year: i64, month: u32, day: u32, secs_of_day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > civil::days_in_month(year, month) {
        return None;
    }
    Some(civil::days_from_civil(year, month, day) * 86_400 + i64::from(secs_of_day))
}

/// The reception time's calendar year and month, which resolve a BSD timestamp's missing year
/// (taken once per batch of events, not per event).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    year: i64,
    month: u32,
}

impl Now {
    /// At `secs` (Unix time).
    pub fn at(secs: i64) -> Now {
        let (year, month, _) = civil::civil_from_days(secs.div_euclid(86_400));
        Now { year, month }
    }
}

/// Month abbreviations as lower-case 3-byte keys (`b"jan"` as a big-endian number).
const MONTHS: [u32; 12] = {
    let names = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let mut keys = [0u32; 12];
    let mut i = 0;
    while i < 12 {
        keys[i] = (names[i][0] as u32) << 16 | (names[i][1] as u32) << 8 | names[i][2] as u32;
        i += 1;
    }
    keys
};

/// The month of an abbreviation in any case (one compare per month: this runs per event).
fn month(b: &[u8]) -> Option<u32> {
    let m = b.get(..3)?;
    if !m.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    // ASCII letters: setting bit 5 lower-cases them.
    let key = u32::from(m[0] | 0x20) << 16 | u32::from(m[1] | 0x20) << 8 | u32::from(m[2] | 0x20);
    let position = MONTHS.iter().position(|&k| k == key)?;
    Some(position as u32 + 1)
}

/// BSD timestamp `Mmm dd hh:mm:ss` (month in any case, day space- or zero-padded), optionally
/// `Mmm dd yyyy hh:mm:ss`, and a fraction (`.` alone counts as none). Returns the instant and
/// the bytes used.
pub(crate) fn parse_bsd(b: &[u8], now: &Now) -> Option<(Timestamp, usize)> {
    let month = month(b)?;
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
        let (n, used) = parse_fraction(&b[end + 1..]);
        nanos = n;
        end += 1 + used;
    }
    let secs = match year {
        Some(y) => civil_secs(y, month, day, tod)?,
        None => infer_year(month, day, tod, now)?,
    };
    Some((Timestamp { secs, nanos }, end))
}

/// The year of a BSD timestamp, by its month against the current one (syslog-ng's rule, which
/// rsyslog's results match): a month more than one ahead of now is last year's (a December
/// event received in October), a month more than ten behind is next year's (a January event
/// received on December 31st by a slow clock), anything else this year's.
fn infer_year(month: u32, day: u32, tod: u32, now: &Now) -> Option<i64> {
    let (year, now_month) = (now.year, now.month);
    let year = if month > now_month + 1 {
        year - 1
    } else if month + 10 < now_month {
        year + 1
    } else {
        year
    };
    // Feb 29 only exists in some years: the nearest earlier year that has it.
    civil_secs(year, month, day, tod).or_else(|| civil_secs(year - 1, month, day, tod))
}
