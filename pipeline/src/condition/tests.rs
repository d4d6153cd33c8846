use std::collections::HashMap;

use super::*;
use proptest::prelude::*;

/// An event as a map of field paths to values.
#[derive(Default)]
struct Event {
    fields: HashMap<String, Vec<u8>>,
    severity: Option<u8>,
    facility: Option<u8>,
}

impl Event {
    fn with(mut self, key: &str, value: &str) -> Self {
        self.fields.insert(key.into(), value.as_bytes().to_vec());
        self
    }
    fn severity(mut self, code: u8) -> Self {
        self.severity = Some(code);
        self
    }
    fn facility(mut self, code: u8) -> Self {
        self.facility = Some(code);
        self
    }
}

impl Fields for Event {
    fn get(&self, field: &Field) -> Option<Value<'_>> {
        let key = match field {
            Field::Severity => return self.severity.map(|c| Value::Num(c.into())),
            Field::Facility => return self.facility.map(|c| Value::Num(c.into())),
            Field::Message => "message".to_string(),
            Field::Hostname => "hostname".to_string(),
            Field::Appname => "appname".to_string(),
            Field::Procid => "procid".to_string(),
            Field::Msgid => "msgid".to_string(),
            Field::SourceIp => "source_ip".to_string(),
            Field::Source => "source".to_string(),
            Field::Path(parts) => parts.join("."),
        };
        self.fields.get(&key).map(|v| Value::Str(v))
    }
}

fn check(condition: &str, event: &Event) -> bool {
    Condition::compile(condition)
        .unwrap_or_else(|e| panic!("{condition}: {e}"))
        .matches(event)
}

#[test]
fn the_issues_examples() {
    let cron = Event::default().with("appname", "cron").severity(3);
    let sshd = Event::default()
        .with("appname", "sshd")
        .with("message", "Failed password for root")
        .severity(6);
    let important = r#"severity >= warning and not (appname == "cron")"#;
    assert!(!check(important, &cron));
    assert!(!check(important, &sshd));
    assert!(check(
        important,
        &Event::default().with("appname", "kernel").severity(2)
    ));
    let security = r#"appname == "sshd" or message contains "Failed password""#;
    assert!(check(security, &sshd));
    assert!(check(
        security,
        &Event::default()
            .with("appname", "x")
            .with("message", "a Failed password b")
    ));
    assert!(!check(security, &cron));
}

#[test]
fn severity_ranks_and_facility_codes() {
    for (code, at_least_warning) in [(0, true), (3, true), (4, true), (5, false), (7, false)] {
        let e = Event::default().severity(code);
        assert_eq!(
            check("severity >= warning", &e),
            at_least_warning,
            "code {code}"
        );
        assert_eq!(check("severity >= 4", &e), at_least_warning, "code {code}");
        assert_eq!(
            check("severity < warning", &e),
            !at_least_warning,
            "code {code}"
        );
    }
    let e = Event::default().severity(3);
    assert!(check("severity == err", &e) && check("severity == error", &e));
    assert!(check("severity == 'ERR'", &e));
    assert!(check("severity in [crit, err]", &e) && !check("severity in [debug]", &e));
    assert!(check("severity <= err", &e) && !check("severity <= notice", &e));
    let e = Event::default().facility(16);
    assert!(check("facility == local0", &e) && check("facility >= 16", &e));
    assert!(check("facility in [local0, local1]", &e) && !check("facility == kern", &e));
}

#[test]
fn string_operators() {
    let e = Event::default()
        .with("message", "GET /index.html 200")
        .with("hostname", "web-01");
    assert!(check(r#"message startswith "GET ""#, &e));
    assert!(check(r#"message endswith "200""#, &e));
    assert!(check(r#"message contains "/index""#, &e));
    assert!(check(r#"message matches "\d{3}$""#, &e));
    assert!(!check(r#"message matches "^POST""#, &e));
    assert!(check(r#"hostname in ["db-01", "web-01"]"#, &e));
    assert!(check(r#"hostname != "db-01""#, &e));
    assert!(check(r#"hostname == 'web-01'"#, &e));
    assert!(check(
        r#"message contains "say \"hi\"""#,
        &Event::default().with("message", r#"say "hi" twice"#)
    ));
}

#[test]
fn numbers_and_parsed_fields() {
    let e = Event::default()
        .with("http.status", "503")
        .with("http.bytes", " 12.5 ");
    assert!(check("http.status >= 500 and http.status < 600", &e));
    assert!(check("http.status == 503", &e));
    assert!(check("http.bytes > 12", &e));
    assert!(check("http.status in [500, 503]", &e));
    let text = Event::default().with("http.status", "oops");
    assert!(!check("http.status > 0", &text) && !check("http.status <= 0", &text));
}

#[test]
fn missing_fields_fail_every_test_but_not_equal() {
    let e = Event::default();
    for condition in [
        r#"appname == "x""#,
        r#"appname contains "x""#,
        "http.status > 1",
        "severity >= debug",
        r#"appname in ["x"]"#,
        "exists(appname)",
    ] {
        assert!(!check(condition, &e), "{condition}");
    }
    assert!(check(r#"appname != "x""#, &e));
    assert!(check("not exists(http.status)", &e));
    assert!(check(
        "exists(http.status)",
        &Event::default().with("http.status", "1")
    ));
}

#[test]
fn precedence_not_and_or_parentheses() {
    let a = Event::default().with("a", "1");
    // `or` binds loosest: true or (false and false).
    assert!(check(r#"a == "1" or a == "2" and a == "3""#, &a));
    assert!(!check(r#"(a == "1" or a == "2") and a == "3""#, &a));
    assert!(check(r#"not a == "2" and a == "1""#, &a));
    assert!(!check(r#"not (a == "2" or a == "1")"#, &a));
}

#[test]
fn errors_name_the_column() {
    for (condition, column, contains) in [
        ("", 1, "empty"),
        ("appname = \"x\"", 9, "`==`"),
        ("appname == ", 12, "string or a number"),
        ("appname >= \"x\"", 12, "compares numbers"),
        ("severity >= loud", 13, "not a severity name"),
        ("severity >= 9", 13, "0 to 7"),
        ("severity contains \"x\"", 10, "severity and facility"),
        ("(appname == \"x\"", 16, "`)`"),
        ("appname == \"x\" nonsense", 16, "`and`, `or`"),
        ("message matches \"(\"", 17, "bad regex"),
        ("message contains 'open", 18, "never closed"),
        ("and == 1", 1, "field name"),
        ("appname frobs \"x\"", 9, "expected an operator"),
        ("http..status == 1", 1, "field path"),
        ("exists appname", 8, "`(`"),
        ("appname in [\"a\" \"b\"]", 17, "`,` or `]`"),
        ("x == 1 # y", 8, "unexpected `#`"),
    ] {
        let err = Condition::compile(condition).expect_err(condition);
        assert_eq!(err.column, column, "{condition}: {err}");
        assert!(err.message.contains(contains), "{condition}: {err}");
    }
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("appname".to_string()),
        Just("message".to_string()),
        Just("severity".to_string()),
        Just("==".to_string()),
        Just(">=".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("not".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("contains".to_string()),
        Just("in".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("warning".to_string()),
        "\"[a-z\\\\]{0,3}\"",
        "[0-9]{1,3}",
    ]
}

proptest! {
    /// Arbitrary text never panics the compiler; an error's column is inside the text (or
    /// just after it).
    #[test]
    fn arbitrary_text_compiles_or_names_a_column(text in "\\PC{0,40}") {
        if let Err(e) = Condition::compile(&text) {
            prop_assert!(e.column >= 1 && e.column <= text.len() + 1, "{e}");
        }
    }

    /// Token soup near the grammar: compiles or fails with a column, never panics; what
    /// compiles evaluates without panicking, and `not C` is the negation of `C`.
    #[test]
    fn grammar_soup(words in proptest::collection::vec(word(), 1..12), code in 0u8..8) {
        let text = words.join(" ");
        let event = Event::default().with("appname", "cron").with("message", "x").severity(code);
        match Condition::compile(&text) {
            Ok(c) => {
                let negated = Condition::compile(&format!("not ({text})")).unwrap();
                prop_assert_eq!(negated.matches(&event), !c.matches(&event));
            }
            Err(e) => prop_assert!(e.column <= text.len() + 1),
        }
    }
}

/// `or` of several `matches` on one field is one RegexSet, with the same answers.
#[test]
fn several_regexes_on_one_field_match_as_one_set() {
    let c = Condition::compile(r#"message matches "^a\d" or hostname == "h" or message matches "z$" or message matches "mid""#).unwrap();
    let text = format!("{:?}", c);
    assert!(text.contains("MatchesAny"), "{text}");
    for (message, hostname, want) in [
        ("a1 x", "x", true),
        ("xx z", "x", true),
        ("a mid b", "x", true),
        ("nothing", "h", true),
        ("nothing", "x", false),
    ] {
        let event = Event::default()
            .with("message", message)
            .with("hostname", hostname);
        assert_eq!(c.matches(&event), want, "{message} {hostname}");
    }
}
