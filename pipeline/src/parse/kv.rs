//! `key=value` pairs, as FortiGate, Check Point, many appliances and logfmt write them:
//! `date=2024-03-01 devname="FGT 60F" action=deny msg='a \'quoted\' text'`.
//!
//! - Pairs are separated by `field_split` (default: any run of spaces or tabs); key and value by
//!   `value_split` (default `=`).
//! - A key is one or more bytes up to `value_split`, without separators or quotes.
//! - A value is quoted (`"…"` or `'…'`, a backslash escapes the next byte: the range excludes
//!   the quotes and keeps the escapes, see [`Pair::quoted`]) or runs to the next separator; it
//!   may be empty (`key=`).
//! - Text that is not a pair (a word without `=`) is skipped: `kv` finds pairs in free text.
//! - An unterminated quote runs to the end of the input.

use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvOptions {
    /// `None`: any run of spaces and tabs.
    pub field_split: Option<u8>,
    pub value_split: u8,
}

impl Default for KvOptions {
    fn default() -> Self {
        KvOptions {
            field_split: None,
            value_split: b'=',
        }
    }
}

/// One `key=value`: ranges into the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    pub key: Range<usize>,
    pub value: Range<usize>,
    /// The value was quoted: backslash escapes in it are still there.
    pub quoted: bool,
}

/// Appends the pairs of `input` to `out` (not cleared); returns how many were found.
pub fn parse(input: &[u8], options: &KvOptions, out: &mut Vec<Pair>) -> usize {
    let before = out.len();
    let mut pos = 0;
    while pos < input.len() {
        pos = skip_separators(input, pos, options);
        let token_end = token_end(input, pos, options);
        match memchr::memchr(options.value_split, &input[pos..token_end]) {
            Some(0) | None => pos = token_end.max(pos + 1),
            Some(eq) => {
                let key = pos..pos + eq;
                let (value, quoted, next) = value_at(input, pos + eq + 1, options);
                out.push(Pair { key, value, quoted });
                pos = next;
            }
        }
    }
    out.len() - before
}

fn is_separator(b: u8, options: &KvOptions) -> bool {
    match options.field_split {
        Some(sep) => b == sep,
        None => b == b' ' || b == b'\t',
    }
}

fn skip_separators(input: &[u8], mut pos: usize, options: &KvOptions) -> usize {
    while input.get(pos).is_some_and(|&b| is_separator(b, options)) {
        pos += 1;
    }
    pos
}

/// Where the word at `pos` ends (the next separator, or a quote after `value_split`).
fn token_end(input: &[u8], pos: usize, options: &KvOptions) -> usize {
    let mut i = pos;
    while let Some(&b) = input.get(i) {
        if is_separator(b, options) || b == options.value_split {
            break;
        }
        i += 1;
    }
    if input.get(i) == Some(&options.value_split) {
        // Include the split so the caller sees `key=`; the value is read by `value_at`.
        return i + 1;
    }
    i
}

/// The value starting at `start`: its range, whether quoted, and where scanning goes on.
fn value_at(input: &[u8], start: usize, options: &KvOptions) -> (Range<usize>, bool, usize) {
    match input.get(start) {
        Some(&q @ (b'"' | b'\'')) => {
            let mut i = start + 1;
            while let Some(&b) = input.get(i) {
                match b {
                    b'\\' => i += 2,
                    b if b == q => return (start + 1..i, true, i + 1),
                    _ => i += 1,
                }
            }
            let end = input.len();
            (start + 1..end, true, end)
        }
        _ => {
            let len = input[start.min(input.len())..]
                .iter()
                .take_while(|&&b| !is_separator(b, options))
                .count();
            (start..start + len, false, start + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs(input: &str, options: &KvOptions) -> Vec<(String, String)> {
        let mut out = Vec::new();
        parse(input.as_bytes(), options, &mut out);
        out.iter()
            .map(|p| {
                (
                    input[p.key.clone()].to_string(),
                    input[p.value.clone()].to_string(),
                )
            })
            .collect()
    }

    fn kv(input: &str) -> Vec<(String, String)> {
        pairs(input, &KvOptions::default())
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn fortigate_line() {
        let line = r#"date=2024-03-01 time=12:00:01 devname="FGT 60F" logid="0000000013" srcip=192.0.2.5 action="close" msg='a \'b\' c' empty="""#;
        assert_eq!(
            kv(line),
            owned(&[
                ("date", "2024-03-01"),
                ("time", "12:00:01"),
                ("devname", "FGT 60F"),
                ("logid", "0000000013"),
                ("srcip", "192.0.2.5"),
                ("action", "close"),
                ("msg", r"a \'b\' c"),
                ("empty", ""),
            ])
        );
    }

    #[test]
    fn free_text_around_pairs_and_odd_shapes() {
        assert_eq!(
            kv("connect from host=a.example port=22 ok"),
            owned(&[("host", "a.example"), ("port", "22")])
        );
        assert_eq!(
            kv("k= v=1 =x  \tq=\"open"),
            owned(&[("k", ""), ("v", "1"), ("q", "open")])
        );
        assert_eq!(kv("a=b=c"), owned(&[("a", "b=c")]));
        let semi = KvOptions {
            field_split: Some(b';'),
            value_split: b':',
        };
        assert_eq!(
            pairs("a:1;b:two words;c:", &semi),
            owned(&[("a", "1"), ("b", "two words"), ("c", "")])
        );
    }

    proptest! {
        /// Arbitrary bytes: never panics, ranges inside the input, keys never empty.
        #[test]
        fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            parse(&input, &KvOptions::default(), &mut out);
            for p in &out {
                prop_assert!(p.key.start < p.key.end && p.key.end <= input.len());
                prop_assert!(p.value.start <= p.value.end && p.value.end <= input.len());
            }
        }

        /// Generated pairs come back exactly.
        #[test]
        fn round_trip(items in proptest::collection::vec(("[a-z_]{1,8}", "[a-zA-Z0-9 ./:-]{0,12}"), 0..8)) {
            let line: Vec<String> = items.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            let line = line.join(" ");
            let expected: Vec<(String, String)> = items.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(kv(&line), expected);
        }
    }
}
