//! The condition language of `filter` and `route` (and, later, the live tail's filters).
//!
//! ```text
//! condition := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" or ")" | "exists" "(" FIELD ")" | FIELD test
//! test      := ("==" | "!=") VALUE | ("<" | "<=" | ">" | ">=") NUMBER
//!            | ("contains" | "startswith" | "endswith" | "matches") STRING
//!            | "in" "[" VALUE ("," VALUE)* "]"
//! VALUE     := STRING | NUMBER | a severity or facility name (after those two fields)
//! ```
//!
//! - FIELD: `message`, `hostname`, `appname`, `procid`, `msgid`, `facility`, `severity`,
//!   `source_ip`, `source` (the source's name), or a parsed field by its dotted path
//!   (`http.status`).
//! - STRING: `"…"` or `'…'`; `\"`, `\'`, `\\`, `\n`, `\t` are escapes, any other backslash is
//!   kept (so `matches "\d+"` is the regex `\d+`). NUMBER: `42`, `-1.5`.
//! - `severity` compares by rank: `severity >= warning` is warning, err, crit, alert or emerg;
//!   its operands are names (`emerg`/`panic`, `alert`, `crit`/`critical`, `err`/`error`,
//!   `warning`/`warn`, `notice`, `info`/`informational`, `debug`) or the numbers 0–7 (as in
//!   PRI: `severity >= 4` is `severity >= warning`). `facility` compares by its code (`kern` 0
//!   … `local7` 23), names or numbers.
//! - `<`, `<=`, `>`, `>=` compare numbers: a string field that is not a number is never less,
//!   greater or equal. `==` with a number compares numerically (`http.status == 500` matches
//!   `"500"`).
//! - A field the event does not have makes every test false, except `!=`, which is exactly
//!   `not ==`.
//! - Errors name the byte position (1-based column) in the condition.
//!
//! Compiled once per config (regexes and substring finders built then); evaluating allocates
//! nothing.

mod lex;
mod parse;

use ingest::syslog::FACILITY_NAMES;
use memchr::memmem;
use regex::bytes::Regex;

/// A compiled condition.
#[derive(Debug)]
pub struct Condition {
    expr: Expr,
}

/// A condition that does not compile: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ConditionError {
    /// 1-based column (byte offset + 1) in the condition text.
    pub column: usize,
    pub message: String,
}

impl ConditionError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        ConditionError {
            column: offset + 1,
            message: message.into(),
        }
    }
}

/// A field an event may have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Message,
    Hostname,
    Appname,
    Procid,
    Msgid,
    /// Its code, 0–23.
    Facility,
    /// Its code, 0 (emerg) – 7 (debug).
    Severity,
    SourceIp,
    /// The name of the source the event came from (`source == "syslog_tcp"`).
    Source,
    /// A parsed field by its path (`http.status` is `["http", "status"]`).
    Path(Vec<String>),
}

/// A field's value as an event gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Str(&'a [u8]),
    Num(f64),
}

/// What a condition reads from an event.
pub trait Fields {
    /// The value of `field`, `None` when the event does not have it.
    fn get(&self, field: &Field) -> Option<Value<'_>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Severity,
    Facility,
}

const SEVERITY_NAMES: [(&str, u8); 13] = [
    ("emerg", 0),
    ("panic", 0),
    ("alert", 1),
    ("crit", 2),
    ("critical", 2),
    ("err", 3),
    ("error", 3),
    ("warning", 4),
    ("warn", 4),
    ("notice", 5),
    ("info", 6),
    ("informational", 6),
    ("debug", 7),
];

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Severity => "severity",
            Level::Facility => "facility",
        }
    }
    fn max(self) -> u8 {
        match self {
            Level::Severity => 7,
            Level::Facility => 23,
        }
    }
    fn code_of(self, name: &str) -> Option<u8> {
        match self {
            Level::Severity => SEVERITY_NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| *c),
            Level::Facility => FACILITY_NAMES
                .iter()
                .position(|n| *n == name)
                .map(|c| c as u8),
        }
    }
    /// Severity ranks the other way round from its code: emerg (0) is the highest.
    fn rank(self, code: f64) -> f64 {
        match self {
            Level::Severity => 7.0 - code,
            Level::Facility => code,
        }
    }
}

impl Field {
    fn named(name: &str, pos: usize) -> Result<Field, ConditionError> {
        Ok(match name {
            "message" => Field::Message,
            "hostname" => Field::Hostname,
            "appname" => Field::Appname,
            "procid" => Field::Procid,
            "msgid" => Field::Msgid,
            "facility" => Field::Facility,
            "severity" => Field::Severity,
            "source_ip" => Field::SourceIp,
            "source" => Field::Source,
            path => {
                let parts: Vec<String> = path.split('.').map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(ConditionError::at(
                        pos,
                        format!("`{path}` is not a field path"),
                    ));
                }
                Field::Path(parts)
            }
        })
    }
    fn level(&self) -> Option<Level> {
        match self {
            Field::Severity => Some(Level::Severity),
            Field::Facility => Some(Level::Facility),
            _ => None,
        }
    }
    fn is_level(&self) -> bool {
        self.level().is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(Vec<u8>),
    Num(f64),
}

/// `==`, `!=`, `<`, `<=`, `>`, `>=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Test {
    /// The ordered comparisons only with numbers.
    Compare(Cmp, Literal),
    Contains(Box<memmem::Finder<'static>>),
    StartsWith(Vec<u8>),
    EndsWith(Vec<u8>),
    Matches(Regex),
    /// Several `matches` on one field joined by `or` (see `parse::merge_regexes`).
    MatchesAny(regex::bytes::RegexSet),
    In(Vec<Literal>),
}

#[derive(Debug)]
enum Expr {
    Any(Vec<Expr>),
    All(Vec<Expr>),
    Not(Box<Expr>),
    Exists(Field),
    Test(Field, Test),
}

impl Condition {
    /// Compiles `text`; the error names the column.
    pub fn compile(text: &str) -> Result<Condition, ConditionError> {
        let tokens = lex::tokenize(text)?;
        if tokens.is_empty() {
            return Err(ConditionError::at(0, "the condition is empty"));
        }
        let expr = parse::Parser::new(&tokens, text.len()).condition()?;
        Ok(Condition { expr })
    }

    /// A condition no event satisfies.
    pub fn never() -> Condition {
        Condition {
            expr: Expr::Any(Vec::new()),
        }
    }

    /// Whether `event` satisfies the condition.
    pub fn matches(&self, event: &impl Fields) -> bool {
        eval(&self.expr, event)
    }
}

fn eval(expr: &Expr, event: &impl Fields) -> bool {
    match expr {
        Expr::Any(terms) => terms.iter().any(|t| eval(t, event)),
        Expr::All(terms) => terms.iter().all(|t| eval(t, event)),
        Expr::Not(inner) => !eval(inner, event),
        Expr::Exists(field) => event.get(field).is_some(),
        Expr::Test(field, Test::Compare(Cmp::Ne, literal)) => {
            !event.get(field).is_some_and(|v| equals(v, literal))
        }
        Expr::Test(field, test) => event.get(field).is_some_and(|v| passes(field, v, test)),
    }
}

fn passes(field: &Field, value: Value, test: &Test) -> bool {
    match (test, value) {
        (Test::Compare(Cmp::Eq, literal), v) => equals(v, literal),
        (Test::Compare(op, Literal::Num(n)), v) => {
            number(v).is_some_and(|x| ordered(field, op, x, *n))
        }
        (Test::Compare(..), _) => false,
        (Test::Contains(finder), Value::Str(s)) => finder.find(s).is_some(),
        (Test::StartsWith(prefix), Value::Str(s)) => s.starts_with(prefix),
        (Test::EndsWith(suffix), Value::Str(s)) => s.ends_with(suffix),
        (Test::Matches(regex), Value::Str(s)) => regex.is_match(s),
        (Test::MatchesAny(set), Value::Str(s)) => set.is_match(s),
        (Test::In(items), v) => items.iter().any(|l| equals(v, l)),
        (_, Value::Num(_)) => false,
    }
}

fn equals(value: Value, literal: &Literal) -> bool {
    match (value, literal) {
        (Value::Str(s), Literal::Str(l)) => s == l.as_slice(),
        (v, Literal::Num(n)) => number(v) == Some(*n),
        (Value::Num(_), Literal::Str(_)) => false,
    }
}

fn ordered(field: &Field, op: &Cmp, value: f64, literal: f64) -> bool {
    let (a, b) = match field.level() {
        Some(level) => (level.rank(value), level.rank(literal)),
        None => (value, literal),
    };
    match op {
        Cmp::Lt => a < b,
        Cmp::Le => a <= b,
        Cmp::Gt => a > b,
        Cmp::Ge => a >= b,
        Cmp::Eq | Cmp::Ne => false, // Handled by `equals`.
    }
}

fn number(value: Value) -> Option<f64> {
    match value {
        Value::Num(n) => Some(n),
        Value::Str(s) => std::str::from_utf8(s).ok()?.trim().parse().ok(),
    }
}

#[cfg(test)]
mod tests;
