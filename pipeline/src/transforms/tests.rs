use super::*;
use crate::event::{FieldValue, NewValue};
use crate::parse::kv::KvOptions;
use crate::plan::Plan;
use crate::topology::{SinkNode, Topology, TransformNode};

const CTX: Context<'static> = Context {
    now_ns: 0,
    shard: 1,
    host: "box1",
    source: "tcp",
};

fn event(frame: &[u8]) -> Event {
    let mut e = Event::default();
    e.load(
        frame,
        &ingest::parse(frame, 1_700_000_000),
        Some("10.0.0.9".parse().unwrap()),
    );
    e
}

fn json(e: &mut Event) -> serde_json::Value {
    let mut out = b"{".to_vec();
    e.fields.write_json_members(&mut out);
    out.push(b'}');
    serde_json::from_slice(&out).unwrap()
}

fn cond(text: &str) -> Condition {
    Condition::compile(text).unwrap()
}

#[test]
fn filter_and_route() {
    let mut f = Filter {
        condition: cond("severity >= warning and not (appname == \"cron\")"),
    };
    let mut warn = event(b"<12>Jan  1 00:00:00 h sshd[1]: x");
    assert_eq!(f.process(&mut warn, &CTX), Outcome::Pass);
    let mut cron = event(b"<12>Jan  1 00:00:00 h cron[1]: x");
    assert_eq!(
        f.process(&mut cron, &CTX),
        Outcome::Drop(DropReason::Filtered)
    );
    let mut r = Route {
        routes: vec![
            ("security".into(), cond("appname == \"sshd\"")),
            ("errors".into(), cond("severity >= err")),
        ],
    };
    assert_eq!(r.ports(), vec!["security", "errors", "_unmatched"]);
    assert_eq!(r.process(&mut warn, &CTX), Outcome::Ports(1));
    assert_eq!(r.process(&mut cron, &CTX), Outcome::Ports(4));
    let mut both = event(b"<11>Jan  1 00:00:00 h sshd[1]: x");
    assert_eq!(r.process(&mut both, &CTX), Outcome::Ports(3));
}

#[test]
fn redact_rewrites_the_message_and_named_fields() {
    let mut r = Redact::new(
        &[Builtin::CreditCard, Builtin::Email],
        vec![],
        "[REDACTED]",
        &["message".into(), "user.mail".into()],
    );
    let mut e = event(b"<13>1 2024-01-01T00:00:00Z h app - - - paid with 4111 1111 1111 1111 ok");
    e.fields
        .set(b"user.mail", NewValue::Str(b"bob@example.com"));
    assert_eq!(r.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(e.message(), b"paid with [REDACTED] ok");
    assert!(e.frame.ends_with(b"- - - paid with [REDACTED] ok"));
    assert_eq!(
        json(&mut e),
        serde_json::json!({"user": {"mail": "[REDACTED]"}})
    );
    assert_eq!(
        r.counts(),
        vec![("credit_card".to_string(), 1), ("email".to_string(), 1)]
    );
}

#[test]
fn parse_json_flattens_objects_keeps_arrays_and_flags_failures() {
    let mut p = ParseJson::new("fields", Input::Message, None, OnError::Keep);
    let mut e = event(br#"<13>1 - h app - - - {"http":{"status":500,"method":"GET"},"tags":["a",{"b":1}],"ok":true,"n":null,"f":1.5}"#);
    assert_eq!(p.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(
        json(&mut e),
        serde_json::json!({"http": {"status": 500, "method": "GET"}, "tags": ["a", {"b": 1}], "ok": true, "n": null, "f": 1.5})
    );
    assert_eq!(e.fields.get(b"http.status"), Some(FieldValue::Int(500)));
    let mut bad = event(b"<13>1 - h app - - - not json");
    assert_eq!(p.process(&mut bad, &CTX), Outcome::PassFailed);
    assert_eq!(
        json(&mut bad),
        serde_json::json!({"parse_error": "fields: not a JSON object"})
    );
    let mut drop = ParseJson::new("fields", Input::Message, Some("body"), OnError::Drop);
    assert_eq!(
        drop.process(&mut bad, &CTX),
        Outcome::Drop(DropReason::Failed)
    );
    let mut e = event(br#"<13>1 - h app - - - {"a":"x"}"#);
    let mut target = ParseJson::new("fields", Input::Message, Some("body"), OnError::Keep);
    assert_eq!(target.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(json(&mut e), serde_json::json!({"body": {"a": "x"}}));
}

#[test]
fn parse_kv_access_regex_and_auto() {
    let mut kv = ParseKv::new(
        "kv",
        Input::Message,
        None,
        KvOptions::default(),
        OnError::Keep,
    );
    let mut e =
        event(br#"<13>Jan  1 00:00:00 fw1 fgt: action=deny devname="FGT \"60F\"" srcip=10.1.1.1"#);
    assert_eq!(kv.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(
        json(&mut e),
        serde_json::json!({"action": "deny", "devname": "FGT \"60F\"", "srcip": "10.1.1.1"})
    );

    let line = br#"<13>Jan  1 00:00:00 web httpd: 127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /a.gif HTTP/1.0" 200 2326 "http://x/" "Mozilla/4.08""#;
    let mut access = ParseAccess::new(
        "web",
        Input::Message,
        Some("http"),
        AccessFormat::Combined,
        OnError::Keep,
    );
    let mut e = event(line);
    assert_eq!(access.process(&mut e, &CTX), Outcome::Pass);
    let v = json(&mut e);
    assert_eq!(v["http"]["status"], 200);
    assert_eq!(v["http"]["size"], 2326);
    assert_eq!(v["http"]["agent"], "Mozilla/4.08");
    assert_eq!(v["http"]["method"], "GET");

    let regex = compile_regex(r"user=(?P<user>\w+) from (?P<ip>\S+)").unwrap();
    let mut re = ParseRegex::new("re", Input::Message, None, regex, OnError::Keep);
    let mut e = event(b"<13>Jan  1 00:00:00 h sshd: login user=bob from 10.0.0.1");
    assert_eq!(re.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(
        json(&mut e),
        serde_json::json!({"user": "bob", "ip": "10.0.0.1"})
    );

    let mut auto = ParseAuto::new("auto", Input::Message, None, OnError::Keep);
    for (frame, kind) in [
        (&br#"<13>1 - h a - - - {"x":1}"#[..], "json"),
        (line, "apache_combined"),
        (&b"<13>1 - h a - - - a=1 b=2"[..], "kv"),
    ] {
        let mut e = event(frame);
        assert_eq!(auto.process(&mut e, &CTX), Outcome::Pass);
        assert_eq!(json(&mut e)["parsed_as"], kind);
    }
    let mut e = event(b"<13>1 - h a - - - plain words");
    assert_eq!(auto.process(&mut e, &CTX), Outcome::PassFailed);
}

#[test]
fn remap_operations_in_order() {
    let ops = vec![
        RemapOp::Add("env".into(), RemapValue::Str("prod".into())),
        RemapOp::Add("meta.host".into(), RemapValue::Host),
        RemapOp::Add("meta.shard".into(), RemapValue::Shard),
        RemapOp::Rename("lvl".into(), "level".into()),
        RemapOp::Remove("junk".into()),
        RemapOp::Convert("code".into(), Conversion::Int),
        RemapOp::Convert(
            "when".into(),
            Conversion::Timestamp("%d/%b/%Y:%H:%M:%S %z".into()),
        ),
        RemapOp::SeverityFrom("level".into()),
    ];
    let mut r = Remap::new("fix", ops);
    let mut e = event(b"<13>1 - h a - - - x");
    e.fields.set(b"lvl", NewValue::Str(b"error"));
    e.fields.set(b"junk", NewValue::Int(1));
    e.fields.set(b"code", NewValue::Str(b" 42 "));
    e.fields
        .set(b"when", NewValue::Str(b"10/Oct/2000:13:55:36 -0700"));
    assert_eq!(r.process(&mut e, &CTX), Outcome::Pass);
    assert_eq!(
        json(&mut e),
        serde_json::json!({"env": "prod", "meta": {"host": "box1", "shard": 1}, "level": "error", "code": 42, "when": "2000-10-10T20:55:36Z"})
    );
    assert_eq!(e.severity(), Some(3));
    let mut bad = Remap::new(
        "fix",
        vec![RemapOp::Convert("code".into(), Conversion::Int)],
    );
    let mut e = event(b"<13>1 - h a - - - x");
    e.fields.set(b"code", NewValue::Str(b"abc"));
    assert_eq!(bad.process(&mut e, &CTX), Outcome::PassFailed);
    assert_eq!(parse_time(b"1700000000", b"%s"), Some((1_700_000_000, 0)));
    assert_eq!(parse_time(b"2024-02-30 00:00:00", b"%Y-%m-%d %T"), None);
    assert_eq!(
        parse_time(b"2024-02-29T01:02:03.5Z", b"%Y-%m-%dT%H:%M:%S.%f%z"),
        Some((1_709_168_523, 500_000_000))
    );
}

#[test]
fn throttle_and_sample_drop_with_their_reason() {
    let mut t = Throttle {
        state: crate::rate::Throttle::new(1.0, 2, 100),
        key_field: Some(b"hostname".to_vec()),
        scratch: Vec::new(),
    };
    let mut a = event(b"<13>Jan  1 00:00:00 hosta app: x");
    let mut b = event(b"<13>Jan  1 00:00:00 hostb app: x");
    let outcomes: Vec<Outcome> = (0..3).map(|_| t.process(&mut a, &CTX)).collect();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Pass,
            Outcome::Pass,
            Outcome::Drop(DropReason::RateLimited)
        ]
    );
    assert_eq!(
        t.process(&mut b, &CTX),
        Outcome::Pass,
        "another key has its own bucket"
    );
    let mut s = Sample {
        state: crate::rate::Sample::new(4),
        key_field: None,
        scratch: Vec::new(),
    };
    let kept = (0..100)
        .filter(|_| s.process(&mut a, &CTX) == Outcome::Pass)
        .count();
    assert_eq!(kept, 25);
}

fn node(name: &str, inputs: &[&str], ports: &[&str]) -> TransformNode {
    TransformNode {
        name: name.into(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ports: ports.iter().map(|s| s.to_string()).collect(),
    }
}

/// Two pipelines from one source: security events redacted to one sink, everything else
/// filtered by severity to another; plus a sink taking the source as is.
#[test]
fn a_plan_writes_one_version_per_branch_that_changed_it() {
    let topo = Topology {
        sources: vec!["tcp".into()],
        transforms: vec![
            node("split", &["tcp"], &["security", "_unmatched"]),
            node("scrub", &["split.security"], &[]),
            node("important", &["split._unmatched"], &[]),
        ],
        sinks: vec![
            SinkNode {
                name: "sec".into(),
                bit: 0,
                inputs: Some(vec!["scrub".into()]),
            },
            SinkNode {
                name: "rest".into(),
                bit: 1,
                inputs: Some(vec!["important".into()]),
            },
            SinkNode {
                name: "all".into(),
                bit: 2,
                inputs: Some(vec!["tcp".into()]),
            },
        ],
    };
    topo.check().unwrap();
    let transforms: Vec<(String, Box<dyn Transform>)> = vec![
        (
            "split".into(),
            Box::new(Route {
                routes: vec![("security".into(), cond("appname == \"sshd\""))],
            }),
        ),
        (
            "scrub".into(),
            Box::new(Redact::new(
                &[Builtin::Ipv4],
                vec![],
                "[IP]",
                &["message".into()],
            )),
        ),
        (
            "important".into(),
            Box::new(Filter {
                condition: cond("severity >= warning"),
            }),
        ),
    ];
    let mut plan = Plan::new(transforms, topo.trees().unwrap(), true, 0);
    let outputs = |frame: &[u8], plan: &mut Plan| {
        let parsed = ingest::parse(frame, 0);
        plan.input().load(frame, &parsed, None);
        plan.run(0, &CTX);
        let mut got = Vec::new();
        plan.for_each_output(|e, mask| {
            got.push((String::from_utf8_lossy(e.message()).into_owned(), mask))
        });
        got
    };
    assert_eq!(
        outputs(
            b"<38>Jan  1 00:00:00 h sshd[1]: Failed password from 10.0.0.1",
            &mut plan
        ),
        vec![
            ("Failed password from 10.0.0.1".to_string(), 4),
            ("Failed password from [IP]".to_string(), 1)
        ]
    );
    assert_eq!(
        outputs(b"<12>Jan  1 00:00:00 h kernel: disk 10.0.0.1", &mut plan),
        vec![("disk 10.0.0.1".to_string(), 6)]
    );
    assert_eq!(
        outputs(b"<15>Jan  1 00:00:00 h kernel: debug", &mut plan),
        vec![("debug".to_string(), 4)]
    );
    let stats: Vec<_> = plan
        .stats()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .collect();
    assert_eq!(stats[0].1.ports, vec![1, 2]);
    assert_eq!(stats[2].1.dropped, [1, 0, 0, 0]);
}

/// A plain chain works in place: no copy, one version.
#[test]
fn a_chain_changes_the_event_in_place() {
    let topo = Topology {
        sources: vec!["tcp".into()],
        transforms: vec![node("a", &["tcp"], &[]), node("b", &["a"], &[])],
        sinks: vec![SinkNode {
            name: "out".into(),
            bit: 5,
            inputs: Some(vec!["b".into()]),
        }],
    };
    let transforms: Vec<(String, Box<dyn Transform>)> = vec![
        (
            "a".into(),
            Box::new(Remap::new(
                "a",
                vec![RemapOp::Add("x".into(), RemapValue::Int(1))],
            )),
        ),
        (
            "b".into(),
            Box::new(Remap::new(
                "b",
                vec![RemapOp::Add("y".into(), RemapValue::Source)],
            )),
        ),
    ];
    let mut plan = Plan::new(transforms, topo.trees().unwrap(), true, 0);
    let frame = b"<13>1 - h a - - - x";
    plan.input().load(frame, &ingest::parse(frame, 0), None);
    plan.run(0, &CTX);
    let mut versions = Vec::new();
    plan.for_each_output(|e, mask| versions.push((json(e), mask)));
    assert_eq!(
        versions,
        vec![(serde_json::json!({"x": 1, "y": "tcp"}), 1 << 5)]
    );
}

/// A parsed JSON object is written in its own order (no sort needed), and equal to the
/// sorted writing when an object would reopen.
#[test]
fn fields_keep_document_order_when_grouped() {
    let mut p = ParseJson::new("j", Input::Message, None, OnError::Keep);
    let mut e = event(br#"<13>1 - h app - - - {"z":1,"http":{"b":2,"a":3},"c":"x"}"#);
    p.process(&mut e, &CTX);
    let mut out = Vec::new();
    e.fields.write_json_members(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#""z":1,"http":{"b":2,"a":3},"c":"x""#
    );
    e.fields.set(b"http.new", NewValue::Bool(true));
    let mut out = Vec::new();
    e.fields.write_json_members(&mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        r#""c":"x","http":{"a":3,"b":2,"new":true},"z":1"#
    );
}

/// `source` in a condition is the name of the source the plan runs the event for.
#[test]
fn conditions_see_the_source_name() {
    let topo = Topology {
        sources: vec!["tcp".into(), "udp".into()],
        transforms: vec![node("only_tcp", &["tcp", "udp"], &[])],
        sinks: vec![SinkNode {
            name: "out".into(),
            bit: 0,
            inputs: Some(vec!["only_tcp".into()]),
        }],
    };
    let transforms: Vec<(String, Box<dyn Transform>)> = vec![(
        "only_tcp".into(),
        Box::new(Filter {
            condition: cond("source == \"tcp\""),
        }),
    )];
    let mut plan = Plan::new(transforms, topo.trees().unwrap(), true, 0);
    let frame = b"<13>1 - h a - - - x";
    let mut written = Vec::new();
    for source in [0, 1] {
        plan.input().load(frame, &ingest::parse(frame, 0), None);
        plan.run(source, &CTX);
        plan.for_each_output(|_, mask| written.push((source, mask)));
    }
    assert_eq!(written, vec![(0, 1)]);
}

proptest::proptest! {
    /// Any bytes as a message through the parsing transforms: never a panic, the event keeps
    /// its message, and whatever fields they add write as valid JSON.
    #[test]
    fn parsers_take_any_bytes(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), json_like in "\\{(\"[a-z.]{1,3}\":(1|\"x\"|\\[1\\]|\\{\"b\":2\\}|null|true|-2.5e3),?){0,4}\\}") {
        let grok = crate::parse::grok::compile(&["%{SYSLOGBASE} %{GREEDYDATA:msg}".to_string(), "%{IP:ip} %{NUMBER:n:float}".to_string()], &Default::default()).unwrap();
        let mut steps: Vec<Box<dyn Transform>> = vec![
            Box::new(ParseJson::new("j", Input::Message, None, OnError::Keep)),
            Box::new(ParseJson::new("t", Input::Message, Some("body"), OnError::Keep)),
            Box::new(ParseAuto::new("a", Input::Message, Some("auto"), OnError::Keep)),
            Box::new(ParseKv::new("k", Input::Message, Some("kv"), KvOptions::default(), OnError::Keep)),
            Box::new(ParseAccess::new("w", Input::Message, Some("web"), AccessFormat::Any, OnError::Keep)),
            Box::new(ParseGrok::new("g", Input::Message, Some("grok"), grok, OnError::Keep)),
        ];
        for message in [body.as_slice(), json_like.as_bytes()] {
            let mut frame = b"<13>1 - h app - - - ".to_vec();
            frame.extend_from_slice(message);
            let mut e = event(&frame);
            let before = e.message().to_vec();
            for step in &mut steps {
                step.process(&mut e, &CTX);
            }
            proptest::prop_assert_eq!(e.message(), before.as_slice());
            let mut out = b"{".to_vec();
            e.fields.write_json_members(&mut out);
            out.push(b'}');
            proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok(), "{}", String::from_utf8_lossy(&out));
        }
    }
}
