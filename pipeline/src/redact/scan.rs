//! The built-in detectors: each appends the byte ranges it finds to `hits`.

use memchr::{memchr_iter, memmem};

use super::{Builtin, Hit};

/// What the scanners build once (per redactor, not per event).
#[derive(Debug)]
pub(super) struct Scanners {
    bearer: memmem::Finder<'static>,
}

impl Scanners {
    pub(super) fn new() -> Scanners {
        Scanners {
            bearer: memmem::Finder::new(b"earer ").into_owned(),
        }
    }

    /// The digit-led built-ins (cards, SSNs, IPv4) in one pass: at each digit that starts a
    /// word, each of `wanted` (built-in, rule index) is tried in order; the first match counts.
    pub(super) fn find_digit_led(
        &self,
        wanted: &[(Builtin, usize)],
        input: &[u8],
        hits: &mut Vec<Hit>,
    ) {
        let matcher = |start: usize| {
            wanted.iter().find_map(|&(builtin, rule)| {
                let end = match builtin {
                    Builtin::CreditCard => card_end(input, start),
                    Builtin::Ssn => ssn_end(input, start),
                    Builtin::Ipv4 => ipv4_end(input, start),
                    _ => None,
                }?;
                Some((end, rule))
            })
        };
        digit_runs(input, matcher, &mut |start, end, rule| {
            hits.push(Hit { start, end, rule })
        });
    }

    /// The other built-ins, one scan each.
    pub(super) fn find(&self, builtin: Builtin, input: &[u8], rule: usize, hits: &mut Vec<Hit>) {
        let push = &mut |start: usize, end: usize| hits.push(Hit { start, end, rule });
        match builtin {
            // Scanned together: see `find_digit_led`.
            Builtin::CreditCard | Builtin::Ssn | Builtin::Ipv4 => {}
            Builtin::Email => emails(input, push),
            Builtin::Ipv6 => ipv6s(input, push),
            Builtin::SecretValues => secret_values(input, push),
            Builtin::BearerToken => bearer_tokens(&self.bearer, input, push),
        }
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Calls `matcher` at every digit that starts a word (no letter, digit, `_` or `.` before it);
/// a match (its end and rule) is pushed and scanning resumes after it, else after the digits.
fn digit_runs(
    input: &[u8],
    mut matcher: impl FnMut(usize) -> Option<(usize, usize)>,
    push: &mut impl FnMut(usize, usize, usize),
) {
    let mut i = 0;
    while let Some(start) = next_digit(input, i) {
        if start > 0 && (is_word(input[start - 1]) || input[start - 1] == b'.') {
            i = skip_digits(input, start);
            continue;
        }
        match matcher(start) {
            Some((end, rule)) => {
                push(start, end, rule);
                i = end;
            }
            None => i = skip_digits(input, start),
        }
    }
}

/// The first ASCII digit at or after `from`, eight bytes at a time (most log text has few
/// digits, and this scan is most of the cost of a message with nothing to redact).
fn next_digit(input: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while i + 8 <= input.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&input[i..i + 8]);
        let x = u64::from_le_bytes(word);
        // Bytes b with 0x2F < b < 0x3A ('0'..='9'), exact per byte for b < 0x80 (the `!x`
        // term drops bytes with the high bit set): the "hasbetween" bit trick.
        let low7 = x & (LO * 127);
        let between =
            (LO * (127 + 0x3A)).wrapping_sub(low7) & !x & low7.wrapping_add(LO * (127 - 0x2F)) & HI;
        if between != 0 {
            return Some(i + between.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    input[i.min(input.len())..]
        .iter()
        .position(u8::is_ascii_digit)
        .map(|p| i + p)
}

fn skip_digits(input: &[u8], start: usize) -> usize {
    start
        + input[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
}

/// The end of a word: nothing word-like, and no `.`/`-` followed by a digit, right after it.
fn ends_word(input: &[u8], end: usize) -> bool {
    match input.get(end) {
        None => true,
        Some(&b) if is_word(b) => false,
        Some(b'.' | b'-') => !input.get(end + 1).is_some_and(u8::is_ascii_digit),
        Some(_) => true,
    }
}

/// 13–19 digits with single spaces or dashes between them, passing the Luhn check.
fn card_end(input: &[u8], start: usize) -> Option<usize> {
    let mut digits = 0;
    let mut sum = 0u32;
    let mut end = start;
    let mut i = start;
    // Luhn runs from the right; collect the digits first (at most 19).
    let mut values = [0u8; 19];
    while let Some(&b) = input.get(i) {
        if b.is_ascii_digit() {
            if digits == 19 {
                return None; // Longer than any card number.
            }
            values[digits] = b - b'0';
            digits += 1;
            i += 1;
            end = i;
        } else if matches!(b, b' ' | b'-') && input.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
        } else {
            break;
        }
    }
    if !(13..=19).contains(&digits) || !ends_word(input, end) {
        return None;
    }
    for (k, &d) in values[..digits].iter().rev().enumerate() {
        let d = u32::from(d);
        let doubled = d * 2;
        sum += match k % 2 {
            1 if doubled > 9 => doubled - 9,
            1 => doubled,
            _ => d,
        };
    }
    sum.is_multiple_of(10).then_some(end)
}

/// `ddd-dd-dddd`.
fn ssn_end(input: &[u8], start: usize) -> Option<usize> {
    let shape = b"ddd-dd-dddd";
    let candidate = input.get(start..start + shape.len())?;
    let fits = candidate.iter().zip(shape).all(|(&b, &s)| {
        if s == b'd' {
            b.is_ascii_digit()
        } else {
            b == b'-'
        }
    });
    let end = start + shape.len();
    (fits && ends_word(input, end)).then_some(end)
}

/// Four decimal octets ≤ 255 separated by dots.
fn ipv4_end(input: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    for octet in 0..4 {
        if octet > 0 {
            if input.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let len = input[i.min(input.len())..]
            .iter()
            .take(4)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=3).contains(&len) {
            return None;
        }
        let value = input[i..i + len]
            .iter()
            .fold(0u32, |v, b| v * 10 + u32::from(b - b'0'));
        if value > 255 {
            return None;
        }
        i += len;
    }
    ends_word(input, i).then_some(i)
}

fn is_local_part(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// `local@domain.tld`: found from each `@`.
fn emails(input: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut after_last = 0;
    for at in memchr_iter(b'@', input) {
        if at < after_last {
            continue;
        }
        let local = input[after_last..at]
            .iter()
            .rev()
            .take_while(|&&b| is_local_part(b))
            .count();
        let mut domain = input[at + 1..]
            .iter()
            .take_while(|&&b| is_domain(b))
            .count();
        // A sentence's full stop is not part of the domain.
        while domain > 0 && matches!(input[at + domain], b'.' | b'-') {
            domain -= 1;
        }
        let host = &input[at + 1..at + 1 + domain];
        let tld_ok = host
            .rsplit(|&b| b == b'.')
            .next()
            .is_some_and(|tld| tld.len() >= 2 && tld.iter().all(u8::is_ascii_alphabetic));
        if local > 0 && host.contains(&b'.') && tld_ok {
            push(at - local, at + 1 + domain);
            after_last = at + 1 + domain;
        }
    }
}

fn is_ipv6_byte(b: u8) -> bool {
    b.is_ascii_hexdigit() || matches!(b, b':' | b'.')
}

/// What `std::net::Ipv6Addr` parses, found from each `:` (at least two in the candidate).
fn ipv6s(input: &[u8], push: &mut impl FnMut(usize, usize)) {
    let mut next = 0;
    for colon in memchr_iter(b':', input) {
        if colon < next {
            continue;
        }
        let start = colon
            - input[..colon]
                .iter()
                .rev()
                .take_while(|&&b| is_ipv6_byte(b))
                .count();
        let mut end = colon
            + input[colon..]
                .iter()
                .take_while(|&&b| is_ipv6_byte(b))
                .count();
        next = end.max(colon + 1);
        while end > start && matches!(input[end - 1], b'.') {
            end -= 1;
        }
        let candidate = &input[start..end];
        let colons = candidate.iter().filter(|&&b| b == b':').count();
        let bounded = start == 0 || !is_word(input[start - 1]);
        if colons >= 2 && bounded && ends_word(input, end) && parses_as_ipv6(candidate) {
            push(start, end);
        }
    }
}

fn parses_as_ipv6(candidate: &[u8]) -> bool {
    std::str::from_utf8(candidate)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
        .is_some()
}

const SECRET_KEYS: [&[u8]; 6] = [
    b"password",
    b"passwd",
    b"secret",
    b"token",
    b"api_key",
    b"apikey",
];

/// The value after `KEY=` where KEY ends with a secret key name (any case).
fn secret_values(input: &[u8], push: &mut impl FnMut(usize, usize)) {
    for eq in memchr_iter(b'=', input) {
        let key_len = input[..eq]
            .iter()
            .rev()
            .take_while(|&&b| is_word(b) || b == b'-')
            .count();
        let key = &input[eq - key_len..eq];
        let secret = SECRET_KEYS.iter().any(|name| {
            key.len() >= name.len() && key[key.len() - name.len()..].eq_ignore_ascii_case(name)
        });
        if secret {
            if let Some((start, end)) = value_span(input, eq + 1) {
                push(start, end);
            }
        }
    }
}

/// A value at `start`: quoted (the quotes stay), or up to a space, `&`, `,`, `;` or a quote.
fn value_span(input: &[u8], start: usize) -> Option<(usize, usize)> {
    let (from, stop): (usize, &[u8]) = match input.get(start) {
        Some(&q @ (b'"' | b'\'')) => (start + 1, if q == b'"' { b"\"" } else { b"'" }),
        _ => (start, b" \t&,;\"'"),
    };
    let len = input[from.min(input.len())..]
        .iter()
        .take_while(|b| !stop.contains(b))
        .count();
    (len > 0).then_some((from, from + len))
}

/// The token after `Bearer ` (any case): at least 8 bytes of token characters, not all letters.
fn bearer_tokens(finder: &memmem::Finder, input: &[u8], push: &mut impl FnMut(usize, usize)) {
    for at in finder.find_iter(input) {
        let Some(b_pos) = at.checked_sub(1) else {
            continue;
        };
        let word_start = b_pos == 0 || !is_word(input[b_pos - 1]);
        if !matches!(input[b_pos], b'B' | b'b') || !word_start {
            continue;
        }
        let start = at + 6;
        let len = input[start..]
            .iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
            .count();
        // A token, not prose ("the bearer said"): 8 bytes or more, not letters only.
        let token = &input[start..start + len];
        if len >= 8 && !token.iter().all(u8::is_ascii_alphabetic) {
            push(start, start + len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The eight-at-a-time digit search finds what a byte-by-byte search finds.
        #[test]
        fn next_digit_is_the_first_digit(input in proptest::collection::vec(any::<u8>(), 0..64), from in 0usize..70) {
            let from = from.min(input.len());
            let naive = input[from..].iter().position(u8::is_ascii_digit).map(|p| from + p);
            prop_assert_eq!(next_digit(&input, from), naive);
        }
    }
}
