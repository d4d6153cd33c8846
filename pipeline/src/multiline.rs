//! `multiline`: joins the lines of one stream (a TCP connection) that belong to one event —
//! a Java or Python stack trace sent line by line — before any other transform sees them.
//!
//! - `start_pattern`: a line whose message matches begins a new event; other lines continue
//!   the current one. `continuation_pattern`: a line whose message matches continues the
//!   current event; other lines begin a new one. (Exactly one of the two.)
//! - The joined event is the first line's frame with each continuation's message appended
//!   after a `\n`; its header fields (timestamp, host, PRI) are the first line's.
//! - Bounded: an event stops growing at `max_lines` lines or `max_bytes` bytes (the next line
//!   then begins a new event), and a pending event is emitted `timeout` after its last line
//!   (the caller times it) or when the stream ends.

use std::sync::Arc;

use ingest::syslog::{Parsed, Span};
use regex::bytes::Regex;

/// Which lines a pattern finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// The pattern matches the first line of an event.
    Start,
    /// The pattern matches the lines that continue an event.
    Continuation,
}

/// A multiline rule, compiled once per config.
#[derive(Debug)]
pub struct JoinRule {
    pub pattern: Regex,
    pub mode: JoinMode,
    pub max_lines: usize,
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
}

impl JoinRule {
    fn continues(&self, message: &[u8]) -> bool {
        match self.mode {
            JoinMode::Start => !self.pattern.is_match(message),
            JoinMode::Continuation => self.pattern.is_match(message),
        }
    }
}

/// One stream's pending event.
#[derive(Debug)]
pub struct Joiner {
    rule: Arc<JoinRule>,
    frame: Vec<u8>,
    parsed: Option<Parsed>,
    lines: usize,
}

/// What [`Joiner::offer`] did with a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Joined to the pending event.
    Joined,
    /// It begins a new event: emit the pending one ([`Joiner::pending`]), if any, then call
    /// [`Joiner::start`] with the line.
    Begins,
}

impl Joiner {
    pub fn new(rule: Arc<JoinRule>) -> Joiner {
        Joiner {
            rule,
            frame: Vec::new(),
            parsed: None,
            lines: 0,
        }
    }

    pub fn timeout(&self) -> std::time::Duration {
        self.rule.timeout
    }

    /// Joins `message` (a line's message) to the pending event when it continues it and the
    /// limits allow.
    pub fn offer(&mut self, message: &[u8]) -> Offer {
        let Some(parsed) = self.parsed.as_mut() else {
            return Offer::Begins;
        };
        let fits = self.lines < self.rule.max_lines
            && self.frame.len() + 1 + message.len() <= self.rule.max_bytes;
        if !fits || !self.rule.continues(message) {
            return Offer::Begins;
        }
        self.frame.push(b'\n');
        self.frame.extend_from_slice(message);
        let start = parsed.message.start;
        parsed.message = Span {
            start,
            len: self.frame.len() as u32 - start,
        };
        self.lines += 1;
        Offer::Joined
    }

    /// The pending event, if any.
    pub fn pending(&self) -> Option<(&[u8], &Parsed)> {
        self.parsed.as_ref().map(|p| (self.frame.as_slice(), p))
    }

    /// Makes `frame` the pending event. Its message must run to the frame's end (the
    /// parser's invariant), so appended lines extend it.
    pub fn start(&mut self, frame: &[u8], parsed: &Parsed) {
        self.frame.clear();
        self.frame.extend_from_slice(frame);
        let mut parsed = *parsed;
        let end = (parsed.message.start + parsed.message.len) as usize;
        if end != frame.len() {
            // Not at the end (cannot happen with Sluice's parser): the message becomes the rest.
            parsed.message = Span {
                start: parsed.message.start,
                len: frame.len() as u32 - parsed.message.start,
            };
        }
        self.parsed = Some(parsed);
        self.lines = 1;
    }

    /// Forgets the pending event (after it was emitted).
    pub fn clear(&mut self) {
        self.parsed = None;
        self.lines = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined(rule: JoinRule, lines: &[&str]) -> Vec<String> {
        let mut joiner = Joiner::new(Arc::new(rule));
        let mut out = Vec::new();
        for line in lines {
            let frame = format!("<11>1 2026-01-01T00:00:00Z h app - - - {line}");
            let parsed = ingest::parse(frame.as_bytes(), 0);
            if joiner.offer(parsed.message.get(frame.as_bytes())) == Offer::Begins {
                if let Some((f, p)) = joiner.pending() {
                    out.push(String::from_utf8_lossy(p.message.get(f)).into_owned());
                }
                joiner.start(frame.as_bytes(), &parsed);
            }
        }
        if let Some((f, p)) = joiner.pending() {
            out.push(String::from_utf8_lossy(p.message.get(f)).into_owned());
        }
        out
    }

    fn rule(pattern: &str, mode: JoinMode, max_lines: usize) -> JoinRule {
        JoinRule {
            pattern: Regex::new(pattern).unwrap(),
            mode,
            max_lines,
            max_bytes: 1 << 20,
            timeout: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn a_java_stack_trace_is_one_event() {
        let lines = [
            "Exception in thread \"main\" java.lang.IllegalStateException: boom",
            "\tat com.example.App.run(App.java:10)",
            "\tat com.example.App.main(App.java:5)",
            "Caused by: java.io.IOException: disk",
            "\t... 2 more",
            "next event",
        ];
        let events = joined(
            rule(
                r"^\s+at |^\s*\.\.\. \d+ more|^Caused by:",
                JoinMode::Continuation,
                500,
            ),
            &lines,
        );
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], lines[..5].join("\n"));
        assert_eq!(events[1], "next event");
    }

    #[test]
    fn a_python_traceback_is_one_event_and_limits_cut() {
        let lines = [
            "Traceback (most recent call last):",
            "  File \"app.py\", line 3, in <module>",
            "    main()",
            "ValueError: invalid literal",
            "INFO all good",
        ];
        let by_start = joined(
            rule(r"^(Traceback|INFO|WARN|ERROR) ", JoinMode::Start, 500),
            &lines,
        );
        assert_eq!(
            by_start,
            vec![lines[..4].join("\n"), "INFO all good".to_string()]
        );
        let cut = joined(
            rule(r"^(Traceback|INFO|WARN|ERROR) ", JoinMode::Start, 2),
            &lines,
        );
        assert_eq!(cut.len(), 3, "max_lines cuts the trace: {cut:?}");
    }
}
