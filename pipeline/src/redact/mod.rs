//! Redaction (issue 13's `redact` transform): built-in detectors and regex rules that replace
//! sensitive values in a message, counted per rule.
//!
//! Built-ins (config names in brackets), each a hand-written scanner rather than a regex,
//! because most messages contain none of them and the "nothing to redact" pass must stay cheap
//! (a 200-byte message: see `benches/redact.rs`):
//! - payment card numbers [`credit_card`]: 13–19 digits, single spaces or dashes allowed between
//!   digits, **Luhn-checked** (a number failing Luhn is left alone);
//! - US social security numbers [`ssn`]: `ddd-dd-dddd`;
//! - e-mail addresses [`email`];
//! - IPv4 [`ipv4`] (four octets ≤ 255) and IPv6 [`ipv6`] addresses (what `std::net` parses);
//! - secret values [`secret_values`]: the value after `password=`, `passwd=`, `secret=`,
//!   `token=`, `api_key=`, `apikey=` (any case, also as the end of a longer key such as
//!   `db_password=`), up to a space, `&`, `,`, `;` or its closing quote; the key stays;
//! - bearer tokens [`bearer_token`]: the token after `Bearer ` (any case), 8 bytes or more and
//!   not letters only (so "the bearer said" stays prose).
//!
//! Matches never overlap: where two rules match overlapping bytes the earlier start wins (the
//! longer one on a tie). Every byte outside a match is copied unchanged.

mod scan;

use regex::bytes::Regex;

/// A built-in detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    CreditCard,
    Ssn,
    Email,
    Ipv4,
    Ipv6,
    SecretValues,
    BearerToken,
}

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::CreditCard,
        Builtin::Ssn,
        Builtin::Email,
        Builtin::Ipv4,
        Builtin::Ipv6,
        Builtin::SecretValues,
        Builtin::BearerToken,
    ];

    /// The config name (`builtins = ["credit_card", …]`).
    pub fn name(self) -> &'static str {
        match self {
            Builtin::CreditCard => "credit_card",
            Builtin::Ssn => "ssn",
            Builtin::Email => "email",
            Builtin::Ipv4 => "ipv4",
            Builtin::Ipv6 => "ipv6",
            Builtin::SecretValues => "secret_values",
            Builtin::BearerToken => "bearer_token",
        }
    }

    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// A regex rule: what matches is replaced by `replacement`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub pattern: Regex,
    pub replacement: Vec<u8>,
}

/// One place to replace: bytes `start..end` by rule `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
}

/// Built-ins and rules compiled once; scratch space reused, so redacting allocates nothing
/// once its buffers have grown.
#[derive(Debug)]
pub struct Redactor {
    builtins: Vec<Builtin>,
    rules: Vec<Rule>,
    /// What a built-in's match becomes.
    replacement: Vec<u8>,
    /// Per rule: built-ins first, then `rules`, in order.
    counts: Vec<u64>,
    hits: Vec<Hit>,
    scanners: scan::Scanners,
    /// The chosen digit-led built-ins with their rule index (scanned in one pass).
    digit_led: Vec<(Builtin, usize)>,
}

pub const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

impl Redactor {
    pub fn new(builtins: &[Builtin], rules: Vec<Rule>, replacement: &str) -> Redactor {
        Redactor {
            counts: vec![0; builtins.len() + rules.len()],
            builtins: builtins.to_vec(),
            rules,
            replacement: replacement.as_bytes().to_vec(),
            hits: Vec::new(),
            scanners: scan::Scanners::new(),
            digit_led: builtins
                .iter()
                .enumerate()
                .filter(|(_, b)| matches!(b, Builtin::CreditCard | Builtin::Ssn | Builtin::Ipv4))
                .map(|(i, b)| (*b, i))
                .collect(),
        }
    }

    /// Writes `input` with every match replaced into `out` (cleared first); returns whether
    /// anything was replaced (when not, `out` is left empty: use `input`).
    pub fn redact(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        self.hits.clear();
        if !self.digit_led.is_empty() {
            self.scanners
                .find_digit_led(&self.digit_led, input, &mut self.hits);
        }
        for (i, builtin) in self.builtins.iter().enumerate() {
            self.scanners.find(*builtin, input, i, &mut self.hits);
        }
        let first_rule = self.builtins.len();
        for (i, rule) in self.rules.iter().enumerate() {
            for m in rule.pattern.find_iter(input).filter(|m| !m.is_empty()) {
                self.hits.push(Hit {
                    start: m.start(),
                    end: m.end(),
                    rule: first_rule + i,
                });
            }
        }
        if self.hits.is_empty() {
            return false;
        }
        self.hits
            .sort_unstable_by_key(|h| (h.start, usize::MAX - h.end));
        self.apply(input, out);
        true
    }

    fn apply(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut copied = 0;
        for hit in &self.hits {
            if hit.start < copied {
                continue; // Overlaps an earlier match.
            }
            out.extend_from_slice(&input[copied..hit.start]);
            let replacement = match hit.rule.checked_sub(self.builtins.len()) {
                Some(r) => &self.rules[r].replacement,
                None => &self.replacement,
            };
            out.extend_from_slice(replacement);
            self.counts[hit.rule] += 1;
            copied = hit.end;
        }
        out.extend_from_slice(&input[copied..]);
    }

    /// Replacements per rule so far: built-ins by name, then `rule[i]`.
    pub fn counts(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        let names = self
            .builtins
            .iter()
            .map(|b| b.name().to_string())
            .chain((0..self.rules.len()).map(|i| format!("rule[{i}]")));
        names.zip(self.counts.iter().copied())
    }
}

#[cfg(test)]
mod tests;
