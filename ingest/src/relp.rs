//! RELP frames as a receiver reads them (rsyslog's librelp is the reference):
//!
//! ```text
//! frame   = TXNR SP COMMAND SP DATALEN [SP DATA] LF
//! TXNR    = 1–9 digits        COMMAND = 1–32 ASCII letters      DATALEN = 1–9 digits
//! ```
//! `DATALEN = 0` has no space and no data: the LF follows the digits. Anything else (a
//! missing LF after the data, a letter in a number) is a broken session: librelp aborts it,
//! and so does Sluice (the sender re-sends what was not acknowledged on a new session).
//!
//! [`scan`] looks at the start of a buffer without copying; the caller decides what to do with
//! data longer than it keeps (Sluice truncates it to `max_frame`, flagged, like librelp's
//! `oversizeMode = "truncate"`).

/// The header of one frame: everything before its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub txnr: u64,
    pub command: &'a [u8],
    pub data_len: usize,
    /// Bytes before the data (through the space after DATALEN; through the digits when
    /// there is no data).
    pub header_len: usize,
}

impl Header<'_> {
    /// Bytes of the whole frame, trailer included.
    pub fn frame_len(&self) -> usize {
        self.header_len + self.data_len + 1
    }
}

/// What the start of a buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan<'a> {
    /// Not a whole header yet.
    Need,
    Header(Header<'a>),
    /// Not RELP: the session cannot continue.
    Invalid(&'static str),
}

const MAX_DIGITS: usize = 9;
const MAX_COMMAND: usize = 32;

/// Reads the header at the start of `buf`.
pub fn scan(buf: &[u8]) -> Scan<'_> {
    let (txnr, at) = match number(buf, 0) {
        Ok(Some(n)) => n,
        Ok(None) => return Scan::Need,
        Err(why) => return Scan::Invalid(why),
    };
    let command_start = at;
    let mut at = at;
    loop {
        match buf.get(at) {
            None => return Scan::Need,
            Some(b' ') if at > command_start => break,
            Some(c) if c.is_ascii_alphabetic() && at - command_start < MAX_COMMAND => at += 1,
            Some(_) => return Scan::Invalid("bad command"),
        }
    }
    let command = &buf[command_start..at];
    let (data_len, at) = match number(buf, at + 1) {
        Ok(Some(n)) => n,
        Ok(None) => return Scan::Need,
        Err(why) => return Scan::Invalid(why),
    };
    // `number` stopped after the byte that ended the digits: the space before data, or the
    // LF of a frame without data (librelp takes nothing else after a zero length).
    let header_len = match (data_len, buf[at - 1]) {
        (0, b'\n') => at - 1,
        (0, _) => return Scan::Invalid("no LF after a zero length"),
        _ => at,
    };
    Scan::Header(Header {
        txnr,
        command,
        data_len: data_len as usize,
        header_len,
    })
}

/// The digits from `start` and the index after the byte that ended them (which must be a
/// space, or an LF for a zero-length DATALEN). `Ok(None)`: more bytes needed.
fn number(buf: &[u8], start: usize) -> Result<Option<(u64, usize)>, &'static str> {
    let mut n = 0u64;
    let mut at = start;
    loop {
        let Some(&c) = buf.get(at) else {
            return Ok(None);
        };
        match c {
            b'0'..=b'9' if at - start < MAX_DIGITS => n = n * 10 + u64::from(c - b'0'),
            b'0'..=b'9' => return Err("number too long"),
            b' ' if at > start => return Ok(Some((n, at + 1))),
            b'\n' if at > start && n == 0 => return Ok(Some((n, at + 1))),
            _ => return Err("bad number"),
        }
        at += 1;
    }
}

/// Appends a frame (`rsp` answers and `serverclose` are what a receiver sends).
pub fn write_frame(out: &mut Vec<u8>, txnr: u64, command: &str, data: &[u8]) {
    use std::io::Write as _;
    let _ = write!(out, "{txnr} {command} {}", data.len());
    if !data.is_empty() {
        out.push(b' ');
        out.extend_from_slice(data);
    }
    out.push(b'\n');
}

/// Whether an `open` command's offers include the `syslog` command.
pub fn offers_syslog(data: &[u8]) -> bool {
    data.split(|&c| c == b'\n').any(|line| {
        line.strip_prefix(b"commands=")
            .is_some_and(|v| v.split(|&c| c == b',').any(|c| c == b"syslog"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(buf: &[u8]) -> Header<'_> {
        match scan(buf) {
            Scan::Header(h) => h,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(buf)),
        }
    }

    #[test]
    fn frames_as_librelp_sends_them() {
        let offers = "relp_version=0\nrelp_software=librelp,1.11.0,https://libr\ncommands=syslog";
        let open = format!("1 open {} {offers}\n", offers.len());
        let h = header(open.as_bytes());
        assert_eq!(
            (h.txnr, h.command, h.data_len, h.header_len),
            (1, &b"open"[..], 72, 10)
        );
        assert_eq!(h.frame_len(), open.len());
        let h = header(b"2 syslog 5 hello\n");
        assert_eq!((h.txnr, h.command, h.data_len), (2, &b"syslog"[..], 5));
        assert_eq!(
            &b"2 syslog 5 hello\n"[h.header_len..h.header_len + 5],
            b"hello"
        );
        let close = b"3 close 0\n";
        let h = header(close);
        assert_eq!(
            (h.txnr, h.command, h.data_len, h.header_len),
            (3, &b"close"[..], 0, 9)
        );
        assert_eq!(h.frame_len(), close.len());
    }

    #[test]
    fn partial_headers_need_more() {
        for cut in [
            "",
            "1",
            "12 ",
            "12 sys",
            "12 syslog",
            "12 syslog 1",
            "12 syslog 0",
        ] {
            assert_eq!(scan(cut.as_bytes()), Scan::Need, "{cut:?}");
        }
    }

    #[test]
    fn broken_frames_are_invalid() {
        for bad in [
            "x syslog 1 a\n",
            "1  syslog 1 a\n",
            "1 sys1og 1 a\n",
            "1 syslog 1a a\n",
            "1 syslog 0 \n",
            "1234567890 syslog 1 a\n",
            "1 syslog 1234567890 a\n",
            "1 abcdefghijklmnopqrstuvwxyzabcdefg 1 a\n",
        ] {
            assert!(
                matches!(scan(bad.as_bytes()), Scan::Invalid(_)),
                "{bad:?}: {:?}",
                scan(bad.as_bytes())
            );
        }
    }

    #[test]
    fn answers_are_written_as_librelp_reads_them() {
        let mut out = Vec::new();
        write_frame(&mut out, 7, "rsp", b"200 OK");
        write_frame(&mut out, 8, "rsp", b"");
        write_frame(&mut out, 0, "serverclose", b"");
        assert_eq!(out, b"7 rsp 6 200 OK\n8 rsp 0\n0 serverclose 0\n");
    }

    #[test]
    fn offers_are_read() {
        assert!(offers_syslog(
            b"relp_version=0\nrelp_software=x\ncommands=syslog"
        ));
        assert!(offers_syslog(b"commands=foo,syslog\n"));
        assert!(!offers_syslog(b"relp_version=0\ncommands=other"));
    }

    proptest::proptest! {
        #[test]
        fn scanning_any_bytes_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Scan::Header(h) = scan(&data) {
                proptest::prop_assert!(h.header_len <= data.len());
            }
        }
    }
}
