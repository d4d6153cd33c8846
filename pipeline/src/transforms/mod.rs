//! The transform types (`[transforms.NAME] type = "..."`): each a [`crate::Transform`] built
//! once per config and shard from already-checked options. The engine owns the config keys;
//! what each option means is documented on the constructor and in docs/processing.md.

mod parsers;
mod remap;

use regex::bytes::Regex;

pub use parsers::{
    AccessFormat, ParseAccess, ParseAuto, ParseGrok, ParseJson, ParseKv, ParseRegex,
};
pub use remap::{parse_time, Conversion, Remap, RemapOp, RemapValue};

use crate::condition::Condition;
use crate::event::Event;
use crate::rate::{Sample as SampleState, Throttle as ThrottleState};
use crate::redact::{Builtin, Redactor, Rule};
use crate::{Context, DropReason, Outcome, Transform};

/// Where a parse transform reads from (`field = "..."`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The message (the default).
    Message,
    /// The whole frame as received (`field = ".frame"`): JSON sent without a syslog header.
    Frame,
    /// A parsed field by path.
    Field(Vec<u8>),
}

impl Input {
    pub fn from_name(name: &str) -> Input {
        match name {
            "message" => Input::Message,
            ".frame" => Input::Frame,
            other => Input::Field(other.as_bytes().to_vec()),
        }
    }

    /// Copies the input's bytes into `out` (cleared); false when the event lacks the field.
    fn read_into(&self, event: &Event, out: &mut Vec<u8>) -> bool {
        out.clear();
        match self {
            Input::Message => out.extend_from_slice(event.message()),
            Input::Frame => out.extend_from_slice(&event.frame),
            Input::Field(path) => match event.lookup(path) {
                Some(crate::condition::Value::Str(s)) => out.extend_from_slice(s),
                _ => return false,
            },
        }
        true
    }
}

/// What a parse transform does with an event it cannot parse (`on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Keep it as it was, flagged (`parse_error` field) and counted.
    #[default]
    Keep,
    /// Drop it, counted (`sluice_events_dropped_total{reason="transform_failed"}`).
    Drop,
}

/// The field a failed parse sets: `"<transform>: <why>"`.
pub const PARSE_ERROR_FIELD: &[u8] = b"parse_error";

/// Flags the event (kept) or drops it, as `on_error` says.
fn failed(event: &mut Event, name: &str, why: &str, on_error: OnError) -> Outcome {
    match on_error {
        OnError::Drop => Outcome::Drop(DropReason::Failed),
        OnError::Keep => {
            event.fields.set_with(PARSE_ERROR_FIELD, |out| {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b": ");
                out.extend_from_slice(why.as_bytes());
            });
            Outcome::PassFailed
        }
    }
}

/// `filter`: keeps the events its condition matches.
pub struct Filter {
    pub condition: Condition,
}

impl Transform for Filter {
    fn mutates(&self) -> bool {
        false
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        if self.condition.matches(event) {
            Outcome::Pass
        } else {
            Outcome::Drop(DropReason::Filtered)
        }
    }
}

/// `route`: sends each event to every route whose condition matches, or to `_unmatched`.
pub struct Route {
    pub routes: Vec<(String, Condition)>,
}

/// The port of events no route matched.
pub const UNMATCHED: &str = "_unmatched";

impl Transform for Route {
    fn mutates(&self) -> bool {
        false
    }
    fn ports(&self) -> Vec<String> {
        let mut names: Vec<String> = self.routes.iter().map(|(n, _)| n.clone()).collect();
        names.push(UNMATCHED.to_string());
        names
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        let mut ports = 0u64;
        for (i, (_, condition)) in self.routes.iter().enumerate() {
            if condition.matches(event) {
                ports |= 1 << i;
            }
        }
        if ports == 0 {
            ports = 1 << self.routes.len();
        }
        Outcome::Ports(ports)
    }
}

/// The most routes one `route` may have (ports are bits of a u64, `_unmatched` included).
pub const MAX_ROUTES: usize = 63;

/// `redact`: built-ins and regex rules over the message and named fields.
pub struct Redact {
    redactor: Redactor,
    /// `message` and/or parsed field paths.
    fields: Vec<Input>,
    scratch: Vec<u8>,
    input: Vec<u8>,
}

impl Redact {
    pub fn new(
        builtins: &[Builtin],
        rules: Vec<Rule>,
        replacement: &str,
        fields: &[String],
    ) -> Redact {
        Redact {
            redactor: Redactor::new(builtins, rules, replacement),
            fields: fields.iter().map(|f| Input::from_name(f)).collect(),
            scratch: Vec::new(),
            input: Vec::new(),
        }
    }
}

impl Transform for Redact {
    fn mutates(&self) -> bool {
        true
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        for field in &self.fields {
            match field {
                Input::Message | Input::Frame => {
                    if self.redactor.redact(event.message(), &mut self.scratch) {
                        event.set_message(&self.scratch);
                    }
                }
                Input::Field(path) => {
                    if !field.read_into(event, &mut self.input) {
                        continue;
                    }
                    if self.redactor.redact(&self.input, &mut self.scratch) {
                        event.fields.replace_str(path, &self.scratch);
                    }
                }
            }
        }
        Outcome::Pass
    }
    fn counts(&self) -> Vec<(String, u64)> {
        self.redactor.counts().collect()
    }
}

/// Where throttle and sample take their key (`key_field`): its bytes, a number's text, the
/// empty key when the event lacks the field; `None` without a key field.
fn key_of<'a>(
    event: &'a Event,
    key_field: Option<&[u8]>,
    scratch: &'a mut Vec<u8>,
) -> Option<&'a [u8]> {
    use crate::condition::Value;
    let name = key_field?;
    match event.lookup(name) {
        Some(Value::Str(s)) => Some(s),
        Some(Value::Num(n)) => {
            use std::io::Write as _;
            scratch.clear();
            let _ = write!(scratch, "{n}");
            Some(scratch)
        }
        None => Some(b""),
    }
}

/// `throttle`: a token bucket per key (or one for all).
pub struct Throttle {
    pub state: ThrottleState,
    pub key_field: Option<Vec<u8>>,
    pub scratch: Vec<u8>,
}

impl Transform for Throttle {
    fn mutates(&self) -> bool {
        false
    }
    fn process(&mut self, event: &mut Event, ctx: &Context<'_>) -> Outcome {
        let key = key_of(event, self.key_field.as_deref(), &mut self.scratch).unwrap_or_default();
        if self.state.allow(key, ctx.now_ns) {
            Outcome::Pass
        } else {
            Outcome::Drop(DropReason::RateLimited)
        }
    }
}

/// `sample`: keeps 1 in N, by the hash of a key field when one is named (so every event of
/// one key is kept or dropped together), else by count.
pub struct Sample {
    pub state: SampleState,
    pub key_field: Option<Vec<u8>>,
    pub scratch: Vec<u8>,
}

impl Transform for Sample {
    fn mutates(&self) -> bool {
        false
    }
    fn process(&mut self, event: &mut Event, _: &Context<'_>) -> Outcome {
        let key = key_of(event, self.key_field.as_deref(), &mut self.scratch);
        if self.state.keep(key) {
            Outcome::Pass
        } else {
            Outcome::Drop(DropReason::Sampled)
        }
    }
}

/// `multiline` in the graph: the joining happened per connection before processing (see
/// [`crate::multiline`]); here it passes events on.
pub struct Joined;

impl Transform for Joined {
    fn mutates(&self) -> bool {
        false
    }
    fn process(&mut self, _: &mut Event, _: &Context<'_>) -> Outcome {
        Outcome::Pass
    }
}

/// Compiles a regex for a rule or a parse (the config reports the error at its key).
pub fn compile_regex(pattern: &str) -> Result<Regex, regex::Error> {
    regex::bytes::RegexBuilder::new(pattern)
        .size_limit(10 << 20)
        .build()
}

#[cfg(test)]
mod tests;
