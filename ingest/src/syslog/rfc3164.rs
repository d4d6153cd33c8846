//! RFC 3164 (BSD) lines as senders write them: `[<PRI>][SEQ: ][*|.]TIMESTAMP[:] HOSTNAME
//! TAG[PID]: MSG`, every part optional.
//!
//! The rules follow what rsyslog and syslog-ng agree on:
//! - a body that starts (after blanks) with `{` or `[` has no header: it is all message (JSON);
//! - a Cisco sequence number (`123: `) and clock mark (`*` unsynced, `.` synced) before the
//!   timestamp are skipped, as is a `:` right after it (`Apr 15 2007 21:28:13: %ASA-…`);
//! - the HOSTNAME follows a timestamp only: a word of letters, digits, `.`, `_`, `-` (plus `[]`,
//!   `/`, `@` where [`super::ParserOptions`] permits them) that ends in a letter or digit and is
//!   followed by a space or ends the line, or an IPv6 address. A lone word after the timestamp
//!   is the hostname and the message is empty (rsyslog; syslog-ng takes it as the tag);
//! - a Cisco time zone name after the time (`18:48:50.483 UTC:`) is skipped;
//! - the TAG is the next word up to a space, `:` or `[` (not a tab: in Snare's tab-separated
//!   lines both peers run the tag up to the first space), so `sshd(pam_unix)`, `%ASA-4-102030`
//!   and `--` are tags, with or without a colon after them (both peers), unless
//!   `force_tag_ending_by_colon` asks for the colon; `[PID]` after it is the PROCID;
//!   then a `:` and one space are skipped (the one space kept with `remove_msg_first_space =
//!   false`, rsyslog's default).

use super::time::{parse_bsd, parse_rfc3339, Now};
use super::{Format, ParseFlags, Parsed, ParserOptions, Span};

/// Parses the frame from `start` (after `<PRI>`, or 0 when it had none).
pub(crate) fn parse(
    frame: &[u8],
    pri: u8,
    start: usize,
    now: &Now,
    flags: ParseFlags,
    options: &ParserOptions,
) -> Parsed {
    let mut parsed = Parsed::headerless(frame, Format::Rfc3164, pri, start, flags);
    // A frame that starts with `<` but had no valid PRI (`<14 Mar…`, `<19000021>`): the
    // bytes that were meant as a header are not guessed at.
    if is_headerless(&frame[start..]) || (start == 0 && frame.first() == Some(&b'<')) {
        return parsed;
    }
    let mut pos = start;
    if let Some((timestamp, after)) = timestamp(frame, start, now) {
        parsed.timestamp = Some(timestamp);
        pos = skip_spaces(frame, after);
        if let Some(len) = hostname_len(&frame[pos..], options) {
            parsed.hostname = Some(Span::new(pos, pos + len));
            pos = (pos + len + 1).min(frame.len());
        }
    }
    let (appname, procid, message_start) = tag(frame, pos, options);
    parsed.appname = appname;
    parsed.procid = procid;
    parsed.message = Span::new(message_start, frame.len());
    parsed
}

/// rsyslog's rule: blanks then `{` or `[` is a JSON (or bracketed) body with no header.
fn is_headerless(body: &[u8]) -> bool {
    let first = body.iter().find(|&&b| b != b' ' && b != b'\t');
    matches!(first, Some(b'{' | b'['))
}

/// The timestamp (after an optional Cisco sequence number and clock mark) and the position
/// after it (and after a `:` that directly follows it).
fn timestamp(frame: &[u8], start: usize, now: &Now) -> Option<(super::Timestamp, usize)> {
    let mut pos = skip_spaces(frame, start + cisco_sequence_len(&frame[start..]));
    if matches!(frame.get(pos), Some(b'*' | b'.')) {
        pos += 1;
    }
    let rest = &frame[pos..];
    let (timestamp, used) = parse_bsd(rest, now).or_else(|| parse_rfc3339(rest))?;
    let mut after = pos + used;
    after += zone_name_len(&frame[after..]);
    if frame.get(after) == Some(&b':') {
        after += 1;
    }
    Some((timestamp, after))
}

/// ` UTC:` / ` CEST:` after a Cisco IOS timestamp (`service timestamps log datetime
/// show-timezone`): a zone name from [`ZONE_NAMES`] and a colon (a list, so that a hostname
/// such as `WEB:` is not taken for a zone). The zone is skipped, not applied (a name is not an
/// offset); the time is read as UTC like every BSD time without an offset.
fn zone_name_len(rest: &[u8]) -> usize {
    // Cheap test first (this runs per event): a space, a capital, and a colon within six bytes.
    let Some(after_space) = rest.strip_prefix(b" ") else {
        return 0;
    };
    let plausible = after_space.first().is_some_and(u8::is_ascii_uppercase)
        && after_space.iter().take(6).any(|&b| b == b':');
    if !plausible {
        return 0;
    }
    ZONE_NAMES
        .iter()
        .find(|zone| {
            after_space.starts_with(zone.as_bytes()) && after_space.get(zone.len()) == Some(&b':')
        })
        .map_or(0, |zone| 1 + zone.len())
}

/// The zone names Cisco devices are configured with most (`clock timezone NAME …`).
const ZONE_NAMES: [&str; 24] = [
    "UTC", "GMT", "CET", "CEST", "EET", "EEST", "WET", "WEST", "BST", "IST", "MSK", "EST", "EDT",
    "CST", "CDT", "MST", "MDT", "PST", "PDT", "AKST", "JST", "KST", "AEST", "AEDT",
];

/// `123: ` (digits, a colon, a space): a Cisco IOS sequence number.
fn cisco_sequence_len(body: &[u8]) -> usize {
    let digits = body.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits > 0 && body.get(digits..digits + 2) == Some(b": ") {
        digits + 2
    } else {
        0
    }
}

fn skip_spaces(frame: &[u8], mut pos: usize) -> usize {
    while frame.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

/// The length of the hostname at the start of `rest`, if the first word is one.
fn hostname_len(rest: &[u8], options: &ParserOptions) -> Option<usize> {
    // A plain scan: hostnames are short, and memchr's setup costs more than it saves here.
    let len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
    let word = &rest[..len];
    let last = *word.last()?;
    let bracketed = options.permit_square_brackets_in_hostname
        && word.first() == Some(&b'[')
        && last == b']'
        && word.len() > 2;
    let inner = if bracketed { &word[1..len - 1] } else { word };
    let allowed = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(b, b'.' | b'_' | b'-')
            || (*b == b'/' && options.permit_slashes_in_hostname)
            || (*b == b'@' && options.permit_at_signs_in_hostname)
    };
    let plain = inner.iter().all(allowed) && (bracketed || last.is_ascii_alphanumeric());
    (plain || is_ipv6(word)).then_some(len)
}

/// Hex digits and colons, two to seven colons, groups of at most four digits.
fn is_ipv6(word: &[u8]) -> bool {
    let colons = word.iter().filter(|&&b| b == b':').count();
    (2..=7).contains(&colons)
        && word.iter().all(|b| b.is_ascii_hexdigit() || *b == b':')
        && word.split(|&b| b == b':').all(|group| group.len() <= 4)
}

/// `TAG[PID]:` at `pos`: appname, procid and where the message starts.
fn tag(frame: &[u8], pos: usize, options: &ParserOptions) -> (Option<Span>, Option<Span>, usize) {
    let rest = &frame[pos..];
    let tag_len = rest
        .iter()
        .position(|&b| matches!(b, b' ' | b':' | b'['))
        .unwrap_or(rest.len());
    let mut after = tag_len;
    let mut procid = None;
    if rest.get(after) == Some(&b'[') {
        let pid_len = rest[after + 1..]
            .iter()
            .position(|&b| matches!(b, b' ' | b']' | b':'))
            .unwrap_or(rest.len() - after - 1);
        if pid_len > 0 {
            procid = Some(Span::new(pos + after + 1, pos + after + 1 + pid_len));
        }
        after += 1 + pid_len;
        if rest.get(after) == Some(&b']') {
            after += 1;
        }
    }
    let colon = rest.get(after) == Some(&b':');
    if tag_len == 0 && procid.is_none() && !colon {
        return (None, None, pos); // No tag: the message starts here, untouched.
    }
    if options.force_tag_ending_by_colon && !colon {
        return (None, None, pos);
    }
    if colon {
        after += 1;
    }
    if options.remove_msg_first_space && rest.get(after) == Some(&b' ') {
        after += 1;
    }
    let appname = (tag_len > 0).then(|| Span::new(pos, pos + tag_len));
    (appname, procid, pos + after)
}
