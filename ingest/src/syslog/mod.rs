//! Syslog message parsing: RFC 5424, RFC 3164, and raw.
//!
//! The parser returns byte ranges ([`Span`]) into the frame, never owned strings, so parsing an
//! event allocates nothing. It reads what rsyslog and syslog-ng read wherever the two agree
//! (`sluice-bench parse-diff` measures it, docs/parsing.md lists every remaining difference),
//! and it never loses a byte: a field it cannot read stays in the message, and the event carries
//! [`ParseFlags`] saying what was wrong, so operators can find broken senders.
//!
//! - `<PRI>` then `1 `: RFC 5424, read field by field ([`rfc5424`]).
//! - `<PRI>` then anything else, or no PRI at all: RFC 3164 as devices write it ([`rfc3164`]).
//! - `parser = "raw"` on a source: no parsing, the frame is the message.
//!
//! Sluice's own choices where the RFC is explicit and the peers differ or do something else:
//! - A missing or invalid PRI (no `<`, `<>`, more than three digits, a value over 191) is PRI
//!   13, user.notice, as RFC 3164 §4.3.3 tells a relay, flagged `no_pri`; the rest is read as a
//!   BSD line (after the invalid `<…>`, which stays in the frame). Both peers also assume 13 when
//!   `<` is missing; for `<>` they use 0, kern.emerg, which pages people.
//! - RFC 5424 TIMESTAMPs need upper-case `T` and `Z` and a zone (§6.2.3; rsyslog agrees,
//!   syslog-ng guesses). Timestamps without a zone in BSD lines are taken as UTC (the peers take
//!   their local zone; an appliance should not depend on its own).
//! - Over-long RFC 5424 fields are kept whole, not truncated (syslog-ng truncates): flagged.

mod rfc3164;
mod rfc5424;
mod sd;
mod time;

pub use sd::{sd_elements, unescape_sd_value, SdElements, SdParams};
pub use time::{parse_rfc3339, Now};

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

/// What was wrong with a frame the parser still read (the event is kept either way).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ParseFlags(u16);

impl ParseFlags {
    /// No valid `<PRI>`: PRI 13 (user.notice) assumed.
    pub const NO_PRI: ParseFlags = ParseFlags(1);
    /// An RFC 5424 header field empty, over-long or not printable ASCII, or the frame ended
    /// inside the header (with `parser = "rfc5424"`: not RFC 5424 at all).
    pub const BAD_HEADER: ParseFlags = ParseFlags(2);
    /// A timestamp field that is not a timestamp (RFC 5424).
    pub const BAD_TIMESTAMP: ParseFlags = ParseFlags(4);
    /// STRUCTURED-DATA missing or malformed (its bytes stay in the message), or an SD name
    /// over 32 bytes (kept).
    pub const BAD_SD: ParseFlags = ParseFlags(8);

    /// Every flag with its name, in bit order (the names are the `kind` label of
    /// `sluice_parse_errors_total` and the JSON `parse_flags` values).
    pub const ALL: [(ParseFlags, &'static str); 4] = [
        (ParseFlags::NO_PRI, "no_pri"),
        (ParseFlags::BAD_HEADER, "bad_header"),
        (ParseFlags::BAD_TIMESTAMP, "bad_timestamp"),
        (ParseFlags::BAD_SD, "bad_sd"),
    ];

    pub fn bits(self) -> u16 {
        self.0
    }
    /// Unknown bits are dropped.
    pub fn from_bits(bits: u16) -> ParseFlags {
        ParseFlags(bits & 0xF)
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn contains(self, other: ParseFlags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The names of the flags set.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        ParseFlags::ALL
            .into_iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| name)
    }
}

impl std::ops::BitOr for ParseFlags {
    type Output = ParseFlags;
    fn bitor(self, rhs: ParseFlags) -> ParseFlags {
        ParseFlags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for ParseFlags {
    fn bitor_assign(&mut self, rhs: ParseFlags) {
        self.0 |= rhs.0;
    }
}

/// Which grammar a source's frames are read with (`parser = "..."`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ParserMode {
    /// RFC 5424 when `<PRI>1 ` starts the frame, RFC 3164 otherwise.
    #[default]
    Auto,
    /// Every frame as RFC 5424; a frame that is not is flagged `bad_header`, its PRI kept and
    /// the rest the message.
    Rfc5424,
    /// Every frame as RFC 3164, even one that looks like RFC 5424.
    Rfc3164,
    /// No parsing: the frame is the message.
    Raw,
}

/// How a source's frames are parsed: the grammar, and the vendor quirks rsyslog has options
/// for (same names, snake_case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserOptions {
    pub mode: ParserMode,
    /// `[host]` is a hostname (rsyslog `permit.squareBracketsInHostname`).
    pub permit_square_brackets_in_hostname: bool,
    /// `host/sub` is a hostname (rsyslog `permit.slashesInHostname`).
    pub permit_slashes_in_hostname: bool,
    /// `user@host` is a hostname (rsyslog `permit.AtSignsInHostname`).
    pub permit_at_signs_in_hostname: bool,
    /// A tag needs its colon; without one the word is message (rsyslog
    /// `force.tagEndingByColon`).
    pub force_tag_ending_by_colon: bool,
    /// Drop the one space after `TAG:` (syslog-ng always does; rsyslog's
    /// `remove.msgFirstSpace`, off by default there).
    pub remove_msg_first_space: bool,
}

impl Default for ParserOptions {
    fn default() -> Self {
        ParserOptions {
            mode: ParserMode::Auto,
            permit_square_brackets_in_hostname: false,
            permit_slashes_in_hostname: false,
            permit_at_signs_in_hostname: false,
            force_tag_ending_by_colon: false,
            remove_msg_first_space: true,
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub format: Format,
    /// `facility << 3 | severity` (13 when the frame had none: see [`ParseFlags::NO_PRI`]).
    pub pri: Option<u8>,
    /// RFC 5424 VERSION (0 for other formats).
    pub version: u8,
    pub flags: ParseFlags,
    pub timestamp: Option<Timestamp>,
    pub hostname: Option<Span>,
    pub appname: Option<Span>,
    pub procid: Option<Span>,
    pub msgid: Option<Span>,
    pub structured_data: Option<Span>,
    pub message: Span,
}

impl Parsed {
    /// A PRI and the message from `message_start`; no other field (yet).
    fn headerless(
        frame: &[u8],
        format: Format,
        pri: u8,
        message_start: usize,
        flags: ParseFlags,
    ) -> Parsed {
        Parsed {
            format,
            pri: Some(pri),
            flags,
            message: Span::new(message_start, frame.len()),
            ..Parsed::raw(frame)
        }
    }

    pub fn raw(frame: &[u8]) -> Parsed {
        Parsed {
            format: Format::Raw,
            pri: None,
            version: 0,
            flags: ParseFlags::default(),
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

/// PRI 13 (user.notice): what RFC 3164 §4.3.3 has a relay add to a frame without a PRI.
pub const DEFAULT_PRI: u8 = 13;

/// Parses one frame with the default options. `now_secs` (Unix time) resolves RFC 3164's
/// missing year.
pub fn parse(frame: &[u8], now_secs: i64) -> Parsed {
    parse_with(frame, &Now::at(now_secs), &ParserOptions::default())
}

/// Parses one frame as `options` say; `now` resolves RFC 3164's missing year.
pub fn parse_with(frame: &[u8], now: &Now, options: &ParserOptions) -> Parsed {
    if frame.len() > u32::MAX as usize || options.mode == ParserMode::Raw {
        return Parsed::raw(&frame[..frame.len().min(u32::MAX as usize)]);
    }
    let (pri, after_pri, flags) = match parse_pri(frame) {
        Pri::Valid(pri, after) => (pri, after, ParseFlags::default()),
        Pri::Invalid(after) => (DEFAULT_PRI, after, ParseFlags::NO_PRI),
        Pri::Missing => (DEFAULT_PRI, 0, ParseFlags::NO_PRI),
    };
    let rest = &frame[after_pri..];
    match options.mode {
        ParserMode::Auto | ParserMode::Rfc5424 if rfc5424::looks_like(rest) => {
            rfc5424::parse(frame, pri, after_pri, flags)
        }
        ParserMode::Rfc5424 => {
            let flags = flags | ParseFlags::BAD_HEADER;
            Parsed::headerless(frame, Format::Rfc5424, pri, after_pri, flags)
        }
        _ => rfc3164::parse(frame, pri, after_pri, now, flags, options),
    }
}

/// `<PRI>` at the start of a frame.
enum Pri {
    /// One to three digits, at most 191: the value and the position after `>`.
    Valid(u8, usize),
    /// `<` and `>` around something else (`<>`, `<192>`, `<1a>`): the position after `>`.
    Invalid(usize),
    Missing,
}

/// Leading zeros (`<014>`) are read as the number they write: RFC 5424 §6.2.1 forbids them,
/// but the value is unambiguous and both peers read it.
fn parse_pri(frame: &[u8]) -> Pri {
    if frame.first() != Some(&b'<') {
        return Pri::Missing;
    }
    let Some(close) = frame.iter().take(6).position(|&b| b == b'>') else {
        return Pri::Missing;
    };
    let digits = &frame[1..close];
    let value = digits.iter().try_fold(0u32, |v, &b| {
        b.is_ascii_digit().then(|| v * 10 + u32::from(b - b'0'))
    });
    match value {
        Some(v) if (1..=3).contains(&digits.len()) && v <= 191 => Pri::Valid(v as u8, close + 1),
        _ => Pri::Invalid(close + 1),
    }
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
