//! ns per event for evaluating conditions (`cargo bench -p pipeline`): the issue's filter and
//! route examples on an event that matches neither early.

use criterion::{criterion_group, criterion_main, Criterion};
use pipeline::condition::{Condition, Field, Fields, Value};

struct Event {
    appname: &'static [u8],
    message: &'static [u8],
    severity: u8,
}

impl Fields for Event {
    fn get(&self, field: &Field) -> Option<Value<'_>> {
        match field {
            Field::Appname => Some(Value::Str(self.appname)),
            Field::Message => Some(Value::Str(self.message)),
            Field::Severity => Some(Value::Num(self.severity.into())),
            _ => None,
        }
    }
}

fn conditions(c: &mut Criterion) {
    let event = Event {
        appname: b"nginx",
        message: b"192.0.2.1 - - [03/Mar/2024:03:03:03 +0000] \"GET /index.html HTTP/1.1\" 200 612 \"-\" \"curl/8.0\" request_time=0.004 upstream=10.0.0.5:8080",
        severity: 3,
    };
    let mut g = c.benchmark_group("condition");
    for (name, text) in [
        (
            "severity_and_not_appname",
            r#"severity >= warning and not (appname == "cron")"#,
        ),
        (
            "appname_or_message_contains",
            r#"appname == "sshd" or message contains "Failed password""#,
        ),
        (
            "message_matches",
            r#"message matches "HTTP/1\.[01]\" 5\d\d""#,
        ),
    ] {
        let condition = Condition::compile(text).expect("compiles");
        g.bench_function(name, |b| {
            b.iter(|| condition.matches(std::hint::black_box(&event)))
        });
    }
    g.finish();
}

criterion_group!(benches, conditions);
criterion_main!(benches);
