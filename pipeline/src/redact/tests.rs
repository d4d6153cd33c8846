use super::*;
use proptest::prelude::*;

fn redact_with(builtins: &[Builtin], input: &str) -> String {
    let mut r = Redactor::new(builtins, Vec::new(), DEFAULT_REPLACEMENT);
    let mut out = Vec::new();
    if r.redact(input.as_bytes(), &mut out) {
        String::from_utf8(out).unwrap()
    } else {
        input.to_string()
    }
}

fn all(input: &str) -> String {
    redact_with(&Builtin::ALL, input)
}

#[test]
fn card_numbers_are_luhn_checked() {
    // Test card numbers (Visa, Mastercard, Amex) pass Luhn.
    assert_eq!(all("card 4111111111111111 ok"), "card [REDACTED] ok");
    assert_eq!(all("card 4111 1111 1111 1111."), "card [REDACTED].");
    assert_eq!(all("mc=5500-0000-0000-0004"), "mc=[REDACTED]");
    assert_eq!(all("amex 378282246310005"), "amex [REDACTED]");
    // One digit changed: fails Luhn, left alone.
    assert_eq!(
        all("order 4111111111111112 shipped"),
        "order 4111111111111112 shipped"
    );
    // Too short, too long, or part of a longer word: left alone.
    assert_eq!(all("id 411111111111"), "id 411111111111");
    assert_eq!(
        all("n 41111111111111111111111"),
        "n 41111111111111111111111"
    );
    assert_eq!(all("x4111111111111111"), "x4111111111111111");
}

#[test]
fn ssn_email_ip_addresses() {
    assert_eq!(all("ssn 078-05-1120 filed"), "ssn [REDACTED] filed");
    assert_eq!(all("not 078-05-11201"), "not 078-05-11201");
    assert_eq!(
        all("mail alice.smith+logs@example.co.uk."),
        "mail [REDACTED]."
    );
    assert_eq!(all("at user@localhost only"), "at user@localhost only");
    assert_eq!(
        all("from 192.0.2.1:514 to 10.0.0.255"),
        "from [REDACTED]:514 to [REDACTED]"
    );
    assert_eq!(all("version 1.2.3.4.5"), "version 1.2.3.4.5");
    assert_eq!(all("bad 256.1.1.1"), "bad 256.1.1.1");
    assert_eq!(
        all("v6 2001:db8::1 and ::1"),
        "v6 [REDACTED] and [REDACTED]"
    );
    assert_eq!(all("mapped ::ffff:192.0.2.1 ok"), "mapped [REDACTED] ok");
    // Times and MAC addresses are not IPv6 addresses.
    assert_eq!(
        all("at 12:34:56 mac 00:00:5e:00:53:01"),
        "at 12:34:56 mac 00:00:5e:00:53:01"
    );
}

#[test]
fn secrets_and_bearer_tokens() {
    assert_eq!(
        all("login password=hunter2 user=bob"),
        "login password=[REDACTED] user=bob"
    );
    assert_eq!(
        all("DB_PASSWORD='s3 cr3t' next"),
        "DB_PASSWORD='[REDACTED]' next"
    );
    assert_eq!(
        all("url ?api_key=abc123&x=1"),
        "url ?api_key=[REDACTED]&x=1"
    );
    assert_eq!(all("Token=xyz;"), "Token=[REDACTED];");
    // `PWD=` in sudo lines is a directory, not a password.
    assert_eq!(
        all("PWD=/home/alice ; USER=root"),
        "PWD=/home/alice ; USER=root"
    );
    assert_eq!(
        all("Authorization: Bearer eyJhbGciOi.J9-_x~+/= rest"),
        "Authorization: Bearer [REDACTED] rest"
    );
    assert_eq!(all("the bearer said hi"), "the bearer said hi");
    assert_eq!(all("auth bearer abc123def456"), "auth bearer [REDACTED]");
}

#[test]
fn only_the_chosen_builtins_run_and_counts_are_per_rule() {
    let text = "a@example.com 192.0.2.1";
    assert_eq!(redact_with(&[Builtin::Email], text), "[REDACTED] 192.0.2.1");
    let mut r = Redactor::new(
        &[Builtin::Ipv4],
        vec![Rule {
            pattern: regex::bytes::Regex::new(r"user=\w+").unwrap(),
            replacement: b"user=[USER]".to_vec(),
        }],
        "<ip>",
    );
    let mut out = Vec::new();
    assert!(r.redact(b"user=bob from 192.0.2.1 and 192.0.2.2", &mut out));
    assert_eq!(out, b"user=[USER] from <ip> and <ip>");
    let counts: Vec<(String, u64)> = r.counts().collect();
    assert_eq!(counts, vec![("ipv4".into(), 2), ("rule[0]".into(), 1)]);
    assert!(!r.redact(b"nothing here", &mut out));
    assert!(out.is_empty());
}

#[test]
fn overlapping_matches_take_the_earliest() {
    // The e-mail's domain is not an IPv4 address, but `secret=` and an e-mail overlap here.
    assert_eq!(all("token=a@example.com done"), "token=[REDACTED] done");
}

proptest! {
    /// Arbitrary bytes never panic; without matches the input comes back; every byte outside
    /// the replacements is kept in order.
    #[test]
    fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut r = Redactor::new(&Builtin::ALL, Vec::new(), "#");
        let mut out = Vec::new();
        if r.redact(&input, &mut out) {
            prop_assert!(out.contains(&b'#'));
        } else {
            prop_assert!(out.is_empty());
        }
    }

    /// Text with no digits, `@`, `:`, `=` or "earer " is never changed.
    #[test]
    fn plain_words_are_untouched(input in "[a-zA-Z ,.!?]{0,200}") {
        let mut r = Redactor::new(&Builtin::ALL, Vec::new(), DEFAULT_REPLACEMENT);
        let mut out = Vec::new();
        prop_assert!(!r.redact(input.as_bytes(), &mut out));
    }

    /// Valid card numbers (Luhn check digit computed) are always redacted.
    #[test]
    fn generated_cards_are_found(body in proptest::collection::vec(0u8..10, 12..18)) {
        let check = luhn_check_digit(&body);
        let number: String = body.iter().chain([check].iter()).map(|d| char::from(b'0' + d)).collect();
        prop_assert_eq!(all(&format!("pay {number} now")), "pay [REDACTED] now");
    }
}

fn luhn_check_digit(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .rev()
        .enumerate()
        .map(|(k, &d)| {
            let d = u32::from(d);
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}
