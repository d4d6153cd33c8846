//! Web server access lines for `parse_apache` / `parse_nginx`: the Common Log Format and the
//! combined format (Apache's `combined`, nginx's default `combined`), as ranges into the line:
//!
//! ```text
//! 127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 "http://example.com/" "Mozilla/4.08"
//! client    ident user timestamp                  method path          protocol status bytes referrer          user_agent
//! ```
//!
//! `-` is absent (ident, user, bytes, referrer, user agent). Quoted fields honour `\"`. A request
//! line that is not `METHOD PATH PROTOCOL` (a bare `-`, garbage from a scanner) keeps the whole
//! request and leaves method, path and protocol absent. Anything else not in this shape is not
//! an access line (`None`): the caller flags it and keeps the event as it was.

use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessLine {
    pub client: Range<usize>,
    pub ident: Option<Range<usize>>,
    pub user: Option<Range<usize>>,
    /// Inside the brackets: `10/Oct/2000:13:55:36 -0700`.
    pub timestamp: Range<usize>,
    /// Inside the quotes.
    pub request: Range<usize>,
    pub method: Option<Range<usize>>,
    pub path: Option<Range<usize>>,
    pub protocol: Option<Range<usize>>,
    pub status: Range<usize>,
    pub bytes: Option<Range<usize>>,
    /// Combined format only.
    pub referrer: Option<Range<usize>>,
    pub user_agent: Option<Range<usize>>,
    /// Both referrer and user agent were there (combined), not only the common fields.
    pub combined: bool,
}

struct Cursor<'a> {
    line: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn word(&mut self) -> Option<Range<usize>> {
        let start = self.pos;
        let len = self.line[start..]
            .iter()
            .take_while(|&&b| b != b' ')
            .count();
        if len == 0 {
            return None;
        }
        self.pos += len;
        Some(start..start + len)
    }

    fn space(&mut self) -> Option<()> {
        (self.line.get(self.pos) == Some(&b' ')).then(|| self.pos += 1)
    }

    /// `[…]`: the range inside.
    fn bracketed(&mut self) -> Option<Range<usize>> {
        if self.line.get(self.pos) != Some(&b'[') {
            return None;
        }
        let start = self.pos + 1;
        let len = memchr::memchr(b']', &self.line[start..])?;
        self.pos = start + len + 1;
        Some(start..start + len)
    }

    /// `"…"` with `\"` escapes: the range inside.
    fn quoted(&mut self) -> Option<Range<usize>> {
        if self.line.get(self.pos) != Some(&b'"') {
            return None;
        }
        let start = self.pos + 1;
        let mut i = start;
        loop {
            match self.line.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Some(start..i)
    }
}

fn present(line: &[u8], range: Range<usize>) -> Option<Range<usize>> {
    (&line[range.clone()] != b"-").then_some(range)
}

/// Parses a CLF or combined line (trailing spaces and extra fields after the combined ones are
/// allowed, as nginx configs often append some).
pub fn parse(line: &[u8]) -> Option<AccessLine> {
    let mut c = Cursor { line, pos: 0 };
    let client = c.word()?;
    c.space()?;
    let ident = c.word()?;
    c.space()?;
    let user = c.word()?;
    c.space()?;
    let timestamp = c.bracketed()?;
    c.space()?;
    let request = c.quoted()?;
    c.space()?;
    let status = c.word()?;
    if status.len() != 3 || !line[status.clone()].iter().all(u8::is_ascii_digit) {
        return None;
    }
    c.space()?;
    let bytes = c.word()?;
    let bytes_ok =
        &line[bytes.clone()] == b"-" || line[bytes.clone()].iter().all(u8::is_ascii_digit);
    if !bytes_ok {
        return None;
    }
    let mut access = AccessLine {
        client,
        ident: present(line, ident),
        user: present(line, user),
        timestamp,
        status,
        bytes: present(line, bytes),
        ..AccessLine::default()
    };
    split_request(line, request, &mut access);
    if c.space().is_some() {
        if let (Some(referrer), Some(_), Some(agent)) = (c.quoted(), c.space(), c.quoted()) {
            access.referrer = present(line, referrer);
            access.user_agent = present(line, agent);
            access.combined = true;
        }
    }
    Some(access)
}

/// `METHOD PATH PROTOCOL` inside the request, when it has that shape.
fn split_request(line: &[u8], request: Range<usize>, access: &mut AccessLine) {
    access.request = request.clone();
    let text = &line[request.clone()];
    let mut parts = text.split(|&b| b == b' ');
    let (Some(method), Some(path), Some(protocol), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let method_ok = !method.is_empty() && method.iter().all(u8::is_ascii_uppercase);
    if !method_ok || path.is_empty() || !protocol.starts_with(b"HTTP/") {
        return;
    }
    let start = request.start;
    access.method = Some(start..start + method.len());
    let path_start = start + method.len() + 1;
    access.path = Some(path_start..path_start + path.len());
    let protocol_start = path_start + path.len() + 1;
    access.protocol = Some(protocol_start..protocol_start + protocol.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(line: &str, r: &Option<Range<usize>>) -> Option<String> {
        r.clone().map(|r| line[r].to_string())
    }

    #[test]
    fn common_and_combined() {
        let clf = r#"127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326"#;
        let a = parse(clf.as_bytes()).expect("CLF");
        assert_eq!(&clf[a.client.clone()], "127.0.0.1");
        assert_eq!(
            (text(clf, &a.ident), text(clf, &a.user)),
            (None, Some("frank".into()))
        );
        assert_eq!(&clf[a.timestamp.clone()], "10/Oct/2000:13:55:36 -0700");
        assert_eq!(text(clf, &a.method).as_deref(), Some("GET"));
        assert_eq!(text(clf, &a.path).as_deref(), Some("/apache_pb.gif"));
        assert_eq!(text(clf, &a.protocol).as_deref(), Some("HTTP/1.0"));
        assert_eq!(
            (&clf[a.status.clone()], text(clf, &a.bytes)),
            ("200", Some("2326".into()))
        );
        assert!(!a.combined && a.referrer.is_none());

        let combined = r#"203.0.113.9 - - [03/Mar/2024:03:03:03 +0000] "POST /api?q=\"x\" HTTP/1.1" 502 - "-" "curl/8.0 (x86_64)" rt=0.004"#;
        let a = parse(combined.as_bytes()).expect("combined");
        assert!(a.combined);
        assert_eq!(text(combined, &a.path).as_deref(), Some(r#"/api?q=\"x\""#));
        assert_eq!(
            (text(combined, &a.bytes), text(combined, &a.referrer)),
            (None, None)
        );
        assert_eq!(
            text(combined, &a.user_agent).as_deref(),
            Some("curl/8.0 (x86_64)")
        );
    }

    #[test]
    fn odd_requests_and_non_access_lines() {
        let scanner = r#"198.51.100.7 - - [03/Mar/2024:03:03:04 +0000] "\x16\x03\x01" 400 157"#;
        let a = parse(scanner.as_bytes()).expect("still an access line");
        assert_eq!(&scanner[a.request.clone()], r"\x16\x03\x01");
        assert!(a.method.is_none() && a.path.is_none());
        for line in [
            "Mar  3 03:03:03 web01 sshd[1]: hello",
            r#"1.2.3.4 - - [date] "GET / HTTP/1.1" 2000 1"#,
            r#"1.2.3.4 - - [date "GET / HTTP/1.1" 200 1"#,
            r#"1.2.3.4 - - [date] "GET / HTTP/1.1 200 1"#,
            "",
        ] {
            assert!(parse(line.as_bytes()).is_none(), "{line}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some(a) = parse(&line) {
                for r in [Some(a.client), Some(a.timestamp), Some(a.request), Some(a.status), a.path, a.user_agent].into_iter().flatten() {
                    prop_assert!(r.end <= line.len());
                }
            }
        }
    }
}
