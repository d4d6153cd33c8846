//! Stream framing for syslog over TCP (RFC 6587).
//!
//! A connection's framing is detected on its first frame: a digit `1`–`9`, more digits and a
//! space mean octet counting (`LEN SP MSG`); anything else means delimited frames, ended by LF
//! or NUL (Python's `SysLogHandler` sends `<PRI>msg\0`). A trailing CR is stripped.
//!
//! Limits and what happens at them (each visible to the caller through [`FrameFlags`]):
//! - A frame longer than `max_frame` is cut to `max_frame` bytes and flagged `TRUNCATED`; the rest
//!   of it is skipped, the connection stays up and stays in sync.
//! - On the first frame, an octet count with more than [`MAX_LENGTH_DIGITS`] digits cannot be
//!   trusted: like rsyslog, the connection uses delimited framing, and that line is kept as
//!   an event flagged `BAD_LENGTH`. Nothing is allocated from the count.
//! - Later in an octet-counted stream, a header that is not `DIGITS SP` (a sender that
//!   miscounted, or garbage) does not switch the connection to lines for good (that would glue
//!   every following frame into one): the framer **resynchronises** to the next place where
//!   a frame visibly starts, `[1-9][0-9]{0,6} <` (a count, a space, a PRI). The bytes it skips
//!   are kept as an event flagged `BAD_LENGTH` (cut into `max_frame` pieces, flagged
//!   `TRUNCATED` too, when longer), so nothing is swallowed. The decision depends only on the
//!   bytes seen, so any split of the stream gives the same frames.
//!
//! The framer never allocates and never copies: it yields slices of the caller's buffer and
//! reports how many bytes it consumed; the caller keeps the rest (a partial frame) for the next
//! read. The caller's buffer must hold at least `max_frame + MAX_LENGTH_DIGITS + 1` bytes so a
//! whole frame always fits after the partial one is moved to the front.

use memchr::memchr2;

/// Octet counts longer than this are rejected before anything is read (9,999,999 bytes).
pub const MAX_LENGTH_DIGITS: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramingMode {
    /// Not decided yet: the connection has not sent a whole first frame header.
    Detect,
    OctetCounting,
    Delimited,
}

/// What happened to a frame on its way out of the framer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameFlags(pub u8);

impl FrameFlags {
    pub const TRUNCATED: u8 = 1;
    pub const BAD_LENGTH: u8 = 2;

    pub fn truncated(self) -> bool {
        self.0 & Self::TRUNCATED != 0
    }
    pub fn bad_length(self) -> bool {
        self.0 & Self::BAD_LENGTH != 0
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub bytes: &'a [u8],
    pub flags: FrameFlags,
}

/// What was left over when the peer closed the connection.
#[derive(Debug, PartialEq, Eq)]
pub enum EofRemainder {
    /// Nothing was pending.
    Clean,
    /// An octet-counted frame was cut off by the disconnect: its bytes are not an event.
    IncompleteFrame { bytes: usize },
}

#[derive(Debug)]
pub struct Framer {
    mode: FramingMode,
    max_frame: usize,
    /// Bytes still to discard from an oversize octet-counted frame.
    skip_bytes: usize,
    /// Discard until the next delimiter (the rest of an oversize delimited frame).
    discard_line: bool,
    /// Flags to put on the next delimited frame (set when a bad octet count switched modes).
    pending_flags: u8,
    /// In an octet-counted stream after a bad header: looking for the next frame start.
    resyncing: bool,
    /// Where the search for a frame start begins in the garbage (1: its first byte was the
    /// bad header itself; 0 for the pieces after a `max_frame` cut).
    resync_from: usize,
}

enum Header {
    NeedMore,
    /// Not an octet count at all (no leading digit, or digits not followed by a space).
    Invalid,
    /// More digits than [`MAX_LENGTH_DIGITS`]: meant as a count, but not one we trust.
    TooLong,
    Length {
        header_len: usize,
        frame_len: usize,
    },
}

impl Framer {
    pub fn new(max_frame: usize) -> Self {
        Self::with_mode(FramingMode::Detect, max_frame)
    }

    pub fn with_mode(mode: FramingMode, max_frame: usize) -> Self {
        Framer {
            mode,
            max_frame: max_frame.max(1),
            skip_bytes: 0,
            discard_line: false,
            pending_flags: 0,
            resyncing: false,
            resync_from: 0,
        }
    }

    pub fn mode(&self) -> FramingMode {
        self.mode
    }

    /// The smallest read buffer that always holds one whole frame plus its header.
    pub fn min_buffer_len(max_frame: usize) -> usize {
        max_frame + MAX_LENGTH_DIGITS + 2
    }

    /// Emits every complete frame in `buf` and returns how many bytes were consumed.
    pub fn feed<'a>(&mut self, buf: &'a [u8], mut emit: impl FnMut(Frame<'a>)) -> usize {
        let mut pos = 0;
        loop {
            if self.skip_bytes > 0 {
                let n = self.skip_bytes.min(buf.len() - pos);
                pos += n;
                self.skip_bytes -= n;
                if self.skip_bytes > 0 {
                    return pos;
                }
            }
            if self.discard_line {
                match memchr2(b'\n', 0, &buf[pos..]) {
                    Some(i) => {
                        pos += i + 1;
                        self.discard_line = false;
                    }
                    None => return buf.len(),
                }
            }
            if pos == buf.len() {
                return pos;
            }
            let advanced = match self.mode {
                FramingMode::Detect => match parse_header(&buf[pos..]) {
                    Header::NeedMore => return pos,
                    Header::Invalid => {
                        self.mode = FramingMode::Delimited;
                        Some(0)
                    }
                    Header::TooLong => {
                        self.mode = FramingMode::Delimited;
                        self.pending_flags |= FrameFlags::BAD_LENGTH;
                        Some(0)
                    }
                    Header::Length { .. } => {
                        self.mode = FramingMode::OctetCounting;
                        Some(0)
                    }
                },
                FramingMode::OctetCounting if self.resyncing => {
                    self.resync_frame(&buf[pos..], &mut emit)
                }
                FramingMode::OctetCounting => self.octet_frame(&buf[pos..], &mut emit),
                FramingMode::Delimited => self.delimited_frame(&buf[pos..], &mut emit),
            };
            match advanced {
                Some(n) => pos += n,
                None => return pos,
            }
        }
    }

    /// Called when the peer closed: a pending delimited frame without its terminator is still an
    /// event (rsyslog does the same); a cut-off octet-counted frame is reported, not emitted.
    pub fn finish<'a>(&mut self, rest: &'a [u8], mut emit: impl FnMut(Frame<'a>)) -> EofRemainder {
        if self.skip_bytes > 0 || self.discard_line {
            // The kept part of that frame was already emitted as truncated.
            return EofRemainder::Clean;
        }
        match self.mode {
            FramingMode::OctetCounting if self.resyncing => {
                let mut rest = rest;
                while !rest.is_empty() {
                    let piece = rest.len().min(self.max_frame);
                    emit_garbage(&rest[..piece], piece < rest.len(), &mut emit);
                    rest = &rest[piece..];
                }
                EofRemainder::Clean
            }
            FramingMode::OctetCounting if !trim_separators(rest).is_empty() => {
                EofRemainder::IncompleteFrame { bytes: rest.len() }
            }
            FramingMode::OctetCounting => EofRemainder::Clean,
            FramingMode::Detect | FramingMode::Delimited => {
                self.emit_delimited(rest, &mut emit);
                EofRemainder::Clean
            }
        }
    }

    fn octet_frame<'a>(
        &mut self,
        buf: &'a [u8],
        emit: &mut impl FnMut(Frame<'a>),
    ) -> Option<usize> {
        // Tolerate line breaks between octet-counted frames (some senders add them).
        let lead = buf.len() - trim_separators(buf).len();
        if lead == buf.len() {
            return if lead > 0 { Some(lead) } else { None };
        }
        let body = &buf[lead..];
        match parse_header(body) {
            Header::NeedMore => None,
            Header::Invalid | Header::TooLong => {
                self.resyncing = true;
                self.resync_from = 1;
                Some(lead)
            }
            Header::Length {
                header_len,
                frame_len,
            } => {
                let kept = frame_len.min(self.max_frame);
                if body.len() - header_len < kept {
                    return None;
                }
                let start = header_len;
                let mut flags = 0;
                if frame_len > self.max_frame {
                    flags |= FrameFlags::TRUNCATED;
                    self.skip_bytes = frame_len - self.max_frame;
                }
                let bytes = trim_line_end(&body[start..start + kept]);
                emit(Frame {
                    bytes,
                    flags: FrameFlags(flags),
                });
                Some(lead + start + kept)
            }
        }
    }

    /// After a bad header: emits the garbage up to the next visible frame start (module docs).
    fn resync_frame<'a>(
        &mut self,
        buf: &'a [u8],
        emit: &mut impl FnMut(Frame<'a>),
    ) -> Option<usize> {
        match find_frame_start(buf, self.resync_from, self.max_frame) {
            Resync::At(start) => {
                emit_garbage(&buf[..start], false, emit);
                self.resyncing = false;
                Some(start)
            }
            // No frame starts in the first max_frame bytes: emit them and search on.
            Resync::NoneBefore(limit) if limit >= self.max_frame => {
                emit_garbage(&buf[..self.max_frame], true, emit);
                self.resync_from = 0;
                Some(self.max_frame)
            }
            Resync::NoneBefore(_) => None,
        }
    }

    fn delimited_frame<'a>(
        &mut self,
        buf: &'a [u8],
        emit: &mut impl FnMut(Frame<'a>),
    ) -> Option<usize> {
        match memchr2(b'\n', 0, buf) {
            Some(end) => {
                self.emit_delimited(&buf[..end], emit);
                Some(end + 1)
            }
            // Only a line known to be longer than max_frame (line-end CRs aside, as when the
            // delimiter is there) is oversize: otherwise the delimiter may come next read.
            None if trim_line_end(buf).len() > self.max_frame => {
                self.emit_delimited(buf, emit);
                self.discard_line = true;
                Some(buf.len())
            }
            None => None,
        }
    }

    fn emit_delimited<'a>(&mut self, line: &'a [u8], emit: &mut impl FnMut(Frame<'a>)) {
        let mut flags = std::mem::take(&mut self.pending_flags);
        let mut line = trim_line_end(line);
        if line.len() > self.max_frame {
            line = &line[..self.max_frame];
            flags |= FrameFlags::TRUNCATED;
        }
        if !line.is_empty() || flags != 0 {
            emit(Frame {
                bytes: line,
                flags: FrameFlags(flags),
            });
        }
    }
}

/// Where a resynchronising framer finds the next frame start.
enum Resync {
    /// A frame visibly starts here.
    At(usize),
    /// No frame starts before this offset; past it the bytes cannot tell yet.
    NoneBefore(usize),
}

/// The first offset at or after `from`, below `limit`, where `[1-9][0-9]{0,6} <` begins.
fn find_frame_start(buf: &[u8], from: usize, limit: usize) -> Resync {
    let end = buf.len().min(limit);
    for at in from..end {
        if !matches!(buf[at], b'1'..=b'9') {
            continue;
        }
        match parse_header(&buf[at..]) {
            // Digits (and a space) running into the end may still become a frame start.
            Header::NeedMore => return Resync::NoneBefore(at),
            Header::Length { header_len, .. } => match buf.get(at + header_len) {
                None => return Resync::NoneBefore(at),
                Some(b'<') => return Resync::At(at),
                Some(_) => {}
            },
            Header::Invalid | Header::TooLong => {}
        }
    }
    Resync::NoneBefore(end)
}

/// Skipped bytes as an event flagged `BAD_LENGTH` (nothing is swallowed), unless they are
/// only line breaks.
fn emit_garbage<'a>(bytes: &'a [u8], cut: bool, emit: &mut impl FnMut(Frame<'a>)) {
    let bytes = trim_line_end(trim_separators(bytes));
    if bytes.is_empty() {
        return;
    }
    let mut flags = FrameFlags::BAD_LENGTH;
    if cut {
        flags |= FrameFlags::TRUNCATED;
    }
    emit(Frame {
        bytes,
        flags: FrameFlags(flags),
    });
}

fn parse_header(buf: &[u8]) -> Header {
    match buf.first() {
        None => return Header::NeedMore,
        Some(b'1'..=b'9') => {}
        Some(_) => return Header::Invalid,
    }
    let mut value = 0usize;
    for (i, &b) in buf.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < MAX_LENGTH_DIGITS => value = value * 10 + usize::from(b - b'0'),
            b'0'..=b'9' => return Header::TooLong,
            b' ' => {
                return Header::Length {
                    header_len: i + 1,
                    frame_len: value,
                }
            }
            _ => return Header::Invalid,
        }
    }
    Header::NeedMore
}

fn trim_line_end(mut line: &[u8]) -> &[u8] {
    while let [rest @ .., b'\r' | b'\n'] = line {
        line = rest;
    }
    line
}

fn trim_separators(mut buf: &[u8]) -> &[u8] {
    while let [b'\r' | b'\n', rest @ ..] = buf {
        buf = rest;
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(framer: &mut Framer, input: &[u8]) -> (Vec<(Vec<u8>, u8)>, usize) {
        let mut out = Vec::new();
        let used = framer.feed(input, |f| out.push((f.bytes.to_vec(), f.flags.0)));
        (out, used)
    }

    #[test]
    fn newline_and_nul_and_crlf() {
        let mut f = Framer::new(1024);
        let (out, used) = frames(&mut f, b"<13>a\n<13>b\0<13>c\r\n<13>part");
        assert_eq!(f.mode(), FramingMode::Delimited);
        let texts: Vec<_> = out.iter().map(|(b, _)| b.as_slice()).collect();
        assert_eq!(texts, [&b"<13>a"[..], b"<13>b", b"<13>c"]);
        assert_eq!(used, 19);
        let mut last = Vec::new();
        assert_eq!(
            f.finish(b"<13>part", |fr| last.push(fr.bytes.to_vec())),
            EofRemainder::Clean
        );
        assert_eq!(last, [b"<13>part".to_vec()]);
    }

    #[test]
    fn octet_counting_across_reads() {
        let mut f = Framer::new(1024);
        let input = b"5 hello11 <13>world!!3 ab";
        let (out, used) = frames(&mut f, input);
        assert_eq!(f.mode(), FramingMode::OctetCounting);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].0, b"<13>world!!");
        assert_eq!(&input[used..], b"3 ab");
        assert_eq!(
            f.finish(&input[used..], |_| panic!("no event from a cut frame")),
            EofRemainder::IncompleteFrame { bytes: 4 }
        );
    }

    #[test]
    fn oversize_octet_frame_is_truncated_and_stream_stays_in_sync() {
        let mut f = Framer::new(4);
        let (out, used) = frames(&mut f, b"10 0123456789");
        assert_eq!(out, [(b"0123".to_vec(), FrameFlags::TRUNCATED)]);
        assert_eq!(used, 13);
        let (out, _) = frames(&mut f, b"2 ok");
        assert_eq!(out, [(b"ok".to_vec(), 0)]);
    }

    #[test]
    fn oversize_delimited_frame_is_truncated_then_resyncs() {
        let mut f = Framer::with_mode(FramingMode::Delimited, 4);
        let (out, used) = frames(&mut f, b"abcd");
        assert!(
            out.is_empty() && used == 0,
            "exactly max_frame: wait for the delimiter"
        );
        let (out, used) = frames(&mut f, b"abcdefgh");
        assert_eq!(out, [(b"abcd".to_vec(), FrameFlags::TRUNCATED)]);
        assert_eq!(used, 8);
        let (out, _) = frames(&mut f, b"ij\nok\n");
        assert_eq!(out, [(b"ok".to_vec(), 0)]);
    }

    #[test]
    fn twenty_digit_count_falls_back_to_lines() {
        let mut f = Framer::new(1024);
        let (out, _) = frames(&mut f, b"12345678901234567890 <13>x\n<13>next\n");
        assert_eq!(f.mode(), FramingMode::Delimited);
        assert_eq!(
            out[0],
            (
                b"12345678901234567890 <13>x".to_vec(),
                FrameFlags::BAD_LENGTH
            )
        );
        assert_eq!(out[1], (b"<13>next".to_vec(), 0));
    }

    #[test]
    fn bad_count_mid_stream_keeps_earlier_frames() {
        let mut f = Framer::new(1024);
        let (out, used) = frames(&mut f, b"2 ok99999999 x\nafter\n");
        assert_eq!(out[0], (b"ok".to_vec(), 0));
        assert_eq!(f.mode(), FramingMode::OctetCounting);
        let mut rest = Vec::new();
        f.finish(&b"2 ok99999999 x\nafter\n"[used..], |fr| {
            rest.push((fr.bytes.to_vec(), fr.flags.0))
        });
        assert_eq!(
            rest,
            [(b"99999999 x\nafter".to_vec(), FrameFlags::BAD_LENGTH)],
            "kept, flagged, at the close"
        );
    }

    /// One miscounted frame costs only itself: the framer resynchronises to the next
    /// `DIGITS SP <` and every frame after it is whole.
    #[test]
    fn a_bad_count_resynchronises_to_the_next_frame() {
        let mut wire = b"13 <13>1 - a b - - - x".to_vec(); // Counted 13, is 22 bytes.
        for i in 0..2_000 {
            let msg = format!("<14>1 - host app - - - frame {i}");
            wire.extend_from_slice(format!("{} {msg}", msg.len()).as_bytes());
        }
        let mut f = Framer::new(1024);
        let (out, used) = frames(&mut f, &wire);
        assert_eq!(used, wire.len());
        assert_eq!(out.len(), 2_002);
        assert_eq!(out[0], (b"<13>1 - a b -".to_vec(), 0));
        assert_eq!(out[1], (b" - - x".to_vec(), FrameFlags::BAD_LENGTH));
        for (i, (bytes, flags)) in out[2..].iter().enumerate() {
            assert_eq!(*flags, 0);
            assert_eq!(
                bytes,
                format!("<14>1 - host app - - - frame {i}").as_bytes()
            );
        }
    }

    #[test]
    fn garbage_longer_than_max_frame_is_kept_in_pieces() {
        let mut f = Framer::new(8);
        let mut wire = b"2 ok".to_vec();
        wire.extend_from_slice(b"x abcdefghijklmnopqrst");
        wire.extend_from_slice(b"3 <1>");
        let (out, used) = frames(&mut f, &wire);
        assert_eq!(used, wire.len());
        let both = FrameFlags::BAD_LENGTH | FrameFlags::TRUNCATED;
        assert_eq!(
            out,
            [
                (b"ok".to_vec(), 0),
                (b"x abcdef".to_vec(), both),
                (b"ghijklmn".to_vec(), both),
                (b"opqrst".to_vec(), FrameFlags::BAD_LENGTH),
                (b"<1>".to_vec(), 0),
            ]
        );
    }

    proptest! {
        /// Any split of any byte stream yields the same frames as feeding it whole, never panics,
        /// and never yields a frame longer than max_frame.
        #[test]
        fn split_invariance(data in proptest::collection::vec(any::<u8>(), 0..600), cut in 0usize..600, max in 1usize..64) {
            let whole = {
                let mut f = Framer::new(max);
                let mut out = Vec::new();
                let used = f.feed(&data, |fr| out.push((fr.bytes.to_vec(), fr.flags)));
                f.finish(&data[used..], |fr| out.push((fr.bytes.to_vec(), fr.flags)));
                out
            };
            let cut = cut.min(data.len());
            let mut f = Framer::new(max);
            let mut out = Vec::new();
            let mut carry: Vec<u8> = data[..cut].to_vec();
            let used = f.feed(&carry, |fr| out.push((fr.bytes.to_vec(), fr.flags)));
            carry.drain(..used);
            carry.extend_from_slice(&data[cut..]);
            let used = f.feed(&carry, |fr| out.push((fr.bytes.to_vec(), fr.flags)));
            f.finish(&carry[used..], |fr| out.push((fr.bytes.to_vec(), fr.flags)));
            prop_assert!(out.iter().all(|(b, _)| b.len() <= max));
            prop_assert_eq!(out, whole);
        }

        /// Octet-counted streams with a corrupted byte somewhere (counts included): any split
        /// gives the same frames (recovery itself: the unit tests above).
        #[test]
        fn corrupted_octet_streams_split_invariantly(
            msgs in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..40), 2..20),
            corrupt_at in 0usize..400, corrupt_to in any::<u8>(), cut in 0usize..600, max in 8usize..64,
        ) {
            let mut data = Vec::new();
            for m in &msgs {
                data.extend_from_slice(format!("{} <1>", m.len() + 3).as_bytes());
                data.extend_from_slice(m);
            }
            let at = corrupt_at % data.len();
            data[at] = corrupt_to;
            let run = |pieces: &[&[u8]]| {
                let mut f = Framer::new(max);
                let mut out = Vec::new();
                let mut carry = Vec::new();
                for piece in pieces {
                    carry.extend_from_slice(piece);
                    let used = f.feed(&carry, |fr| out.push((fr.bytes.to_vec(), fr.flags)));
                    carry.drain(..used);
                }
                f.finish(&carry, |fr| out.push((fr.bytes.to_vec(), fr.flags)));
                out
            };
            let cut = cut.min(data.len());
            let whole = run(&[&data]);
            prop_assert_eq!(run(&[&data[..cut], &data[cut..]]), whole.clone());
        }

        #[test]
        fn octet_round_trip(msgs in proptest::collection::vec(proptest::collection::vec(b'a'..=b'z', 1..50), 1..20)) {
            let mut wire = Vec::new();
            for m in &msgs {
                wire.extend_from_slice(format!("{} ", m.len()).as_bytes());
                wire.extend_from_slice(m);
            }
            let mut f = Framer::new(1024);
            let mut out = Vec::new();
            let used = f.feed(&wire, |fr| out.push(fr.bytes.to_vec()));
            prop_assert_eq!(used, wire.len());
            prop_assert_eq!(out, msgs);
        }
    }
}
