//! The transform config: every type reads and renders back; what the graph refuses names the
//! key and its line.

use crate::config::Config;

const SOURCES: &str = r#"[sources.tcp]
type = "syslog"
mode = "tcp"
address = "127.0.0.1:1"
[sources.udp]
type = "syslog"
mode = "udp"
address = "127.0.0.1:2"
"#;

/// One of every transform type, chained, with sinks taking route outputs.
const EVERY_TYPE: &str = r#"
[transforms.joined]
type = "multiline"
inputs = ["tcp"]
start_pattern = '^\S'
[transforms.important]
type = "filter"
inputs = ["joined", "udp"]
condition = 'severity >= warning and not (appname == "cron")'
[transforms.scrub]
type = "redact"
inputs = ["important"]
builtins = ["credit_card", "email"]
rules = [{ pattern = "user=\\w+", replacement = "user=X" }]
fields = ["message", "user.email"]
[transforms.fields]
type = "parse_json"
inputs = ["scrub"]
target = "body"
on_error = "drop"
[transforms.re]
type = "parse_regex"
inputs = ["fields"]
pattern = 'id=(?P<id>\d+)'
[transforms.grok]
type = "parse_grok"
inputs = ["re"]
patterns = ['%{SYSLOGBASE} %{GREEDYDATA:msg}', '%{TICKET:t}']
custom_patterns = { TICKET = '[A-Z]+-\d+' }
[transforms.kv]
type = "parse_kv"
inputs = ["grok"]
field_split = ","
[transforms.web]
type = "parse_apache"
inputs = ["kv"]
format = "combined"
[transforms.nginx]
type = "parse_nginx"
inputs = ["web"]
[transforms.auto]
type = "parse_auto"
inputs = ["nginx"]
[transforms.shape]
type = "remap"
inputs = ["auto"]
add = { env = "prod", host = "%{host}", n = 2 }
rename = { a = "b" }
remove = ["c"]
convert = { code = "int", when = "timestamp" }
timestamp_formats = { when = "%s" }
severity_from = "level"
[transforms.cap]
type = "throttle"
inputs = ["shape"]
rate = 10.0
key_field = "hostname"
[transforms.some]
type = "sample"
inputs = ["cap"]
rate = 4
[transforms.split]
type = "route"
inputs = ["some"]
routes.security = 'appname == "sshd"'
[sinks.sec]
type = "file"
inputs = ["split.security"]
path = "x/sec.log"
encoding = "template"
template = "{{timestamp}} {{message}}"
[sinks.rest]
type = "tcp"
inputs = ["split._unmatched"]
address = "127.0.0.1:3"
"#;

fn error_of(text: &str) -> String {
    Config::parse(text, "t.toml").unwrap_err().to_string()
}

#[test]
fn every_type_reads_renders_and_reads_back() {
    let config = Config::parse(&format!("{SOURCES}{EVERY_TYPE}"), "t.toml").unwrap();
    assert_eq!(config.transforms.len(), 14);
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let rendered = crate::config::show::render(&config);
    let again = Config::parse(&rendered, "rendered").unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(again.transforms, config.transforms);
    assert_eq!(again.sinks, config.sinks);
}

#[test]
fn the_graph_refuses_with_key_and_line() {
    let base = format!("{SOURCES}{EVERY_TYPE}");
    let cases = [
        (
            base.replace("inputs = [\"scrub\"]", "inputs = [\"scrb\"]"),
            "transforms.fields.inputs (t.toml line 26)",
            "unknown input `scrb`",
        ),
        (
            base.replace("[\"split.security\"]", "[\"split\"]"),
            "sinks.sec.inputs",
            "name one of its outputs (split.security, split._unmatched)",
        ),
        (
            base.replace("[\"split._unmatched\"]", "[\"split.nope\"]"),
            "sinks.rest.inputs",
            "has no output `nope`",
        ),
        (
            base.replace(
                "inputs = [\"joined\", \"udp\"]",
                "inputs = [\"joined\", \"udp\", \"some\"]",
            ),
            "a cycle: ",
            "important → some",
        ),
        (
            base.replace("'severity >= warning and", "'severity >= warnin and"),
            "line 17",
            "condition column 13",
        ),
        (
            base.replace("'id=(?P<id>\\d+)'", "'id=(\\d+'"),
            "line 32",
            "regex does not compile",
        ),
        (
            base.replace("'%{TICKET:t}'", "'%{TICKT:t}'"),
            "transforms.grok.patterns",
            "unknown grok pattern `TICKT`",
        ),
        (
            base.replace(
                "inputs = [\"tcp\"]\nstart_pattern",
                "inputs = [\"udp\"]\nstart_pattern",
            )
            .replace("[\"joined\", \"udp\"]", "[\"joined\", \"tcp\"]"),
            "sources.udp.mode",
            "joins the lines of TCP or TLS connections and of files",
        ),
        (
            base.replace("[\"joined\", \"udp\"]", "[\"joined\", \"udp\", \"tcp\"]"),
            "transforms.joined.inputs",
            "feeds something else too",
        ),
        (
            base.replace(
                "template = \"{{timestamp}} {{message}}\"",
                "template = \"{{timestamp\"",
            ),
            "sinks.sec.template",
            "not closed",
        ),
        (
            base.replace("rate = 4", "rate = 0"),
            "transforms.some.rate",
            "at least 1",
        ),
    ];
    for (text, key, message) in cases {
        let e = error_of(&text);
        assert!(
            e.contains(key) && e.contains(message),
            "want {key} / {message}, got: {e}"
        );
    }
}

#[test]
fn a_transform_nobody_reads_is_a_warning() {
    let text = format!("{SOURCES}[transforms.lonely]\ntype = \"filter\"\ninputs = [\"tcp\"]\ncondition = 'severity >= err'\n[sinks.all]\ntype = \"file\"\npath = \"x/a.log\"\n");
    let config = Config::parse(&text, "t.toml").unwrap();
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].contains("transforms.lonely"));
}
