use super::*;
use proptest::prelude::*;

// 2026-11-23T08:00:00Z
const NOW: i64 = 1_795_420_800;

fn field(frame: &[u8], span: Option<Span>) -> Option<&str> {
    span.map(|s| std::str::from_utf8(s.get(frame)).unwrap())
}

#[test]
fn rfc5424_full() {
    let f = b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog 123 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appl\\\"ication\"][x@1 a=\"\\]\"] \xEF\xBB\xBFAn application event";
    let p = parse(f, NOW);
    assert_eq!(p.format, Format::Rfc5424);
    assert_eq!(p.pri, Some(165));
    assert_eq!(p.version, 1);
    assert_eq!(
        p.timestamp,
        Some(Timestamp {
            secs: 1_065_910_455,
            nanos: 3_000_000
        })
    );
    assert_eq!(field(f, p.hostname), Some("mymachine.example.com"));
    assert_eq!(field(f, p.appname), Some("evntslog"));
    assert_eq!(field(f, p.procid), Some("123"));
    assert_eq!(field(f, p.msgid), Some("ID47"));
    assert_eq!(p.message.get(f), b"An application event");
    let sd = p.structured_data.unwrap().get(f);
    let elements: Vec<_> = sd_elements(sd)
        .map(|(id, params)| {
            let params: Vec<_> = params
                .map(|(k, v)| {
                    let mut out = Vec::new();
                    unescape_sd_value(v, &mut out);
                    (
                        String::from_utf8(k.to_vec()).unwrap(),
                        String::from_utf8(out).unwrap(),
                    )
                })
                .collect();
            (String::from_utf8(id.to_vec()).unwrap(), params)
        })
        .collect();
    assert_eq!(elements.len(), 2);
    assert_eq!(elements[0].0, "exampleSDID@32473");
    assert_eq!(
        elements[0].1[1],
        ("eventSource".into(), "Appl\"ication".into())
    );
    assert_eq!(elements[1].1[0], ("a".into(), "]".into()));
}

#[test]
fn rfc5424_nilvalues_and_offset() {
    let f = b"<34>1 2003-08-24T05:14:15.000003-07:00 - - - - -";
    let p = parse(f, NOW);
    assert_eq!(p.format, Format::Rfc5424);
    assert_eq!(
        p.timestamp,
        Some(Timestamp {
            secs: 1_061_727_255,
            nanos: 3_000
        })
    );
    assert!(p.hostname.is_none() && p.appname.is_none() && p.procid.is_none());
    assert!(p.msgid.is_none() && p.structured_data.is_none());
    assert_eq!(p.message.len, 0);
    let p = parse(b"<34>1 - host app - - - msg", NOW);
    assert_eq!(p.timestamp, None);
    assert_eq!(p.message.get(b"<34>1 - host app - - - msg"), b"msg");
}

#[test]
fn rfc5424_broken_header_is_raw() {
    for f in [
        &b"<34>1 2003-13-24T05:14:15Z h a p m - msg"[..],
        b"<34>1 2003-08-24T05:14:15Z h a p m [unterminated msg",
        b"<34>1 2003-08-24T05:14:15Z h a p m -msg",
        b"<34>1 2003-02-30T05:14:15Z h a p m - msg",
    ] {
        let p = parse(f, NOW);
        assert_eq!(p.format, Format::Raw, "{}", String::from_utf8_lossy(f));
        assert_eq!(p.message.get(f), f);
    }
}

#[test]
fn rfc3164_classic() {
    let f = b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed";
    let p = parse(f, NOW);
    assert_eq!(p.format, Format::Rfc3164);
    assert_eq!(field(f, p.hostname), Some("mymachine"));
    assert_eq!(field(f, p.appname), Some("su"));
    assert_eq!(field(f, p.procid), Some("230"));
    assert_eq!(p.message.get(f), b"'su root' failed");
    // Oct 11 2026 is before NOW: current year.
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2026, 10, 11) * 86400 + 80055
    );
}

#[test]
fn rfc3164_year_rolls_back_when_in_future() {
    let p = parse(b"<13>Dec 31 23:59:59 host app: x", NOW);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2025, 12, 31) * 86400 + 86399
    );
    // Within a day of slack stays in the current year (clock skew).
    let p = parse(b"<13>Nov 23 12:00:00 host app: x", NOW);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2026, 11, 23) * 86400 + 43200
    );
}

#[test]
fn rfc3164_variants() {
    // No hostname: the word after the timestamp is the tag.
    let f = b"<13>Feb  5 10:01:02 sshd[99]: hello";
    let p = parse(f, NOW);
    assert_eq!(p.hostname, None);
    assert_eq!(field(f, p.appname), Some("sshd"));
    // Python SysLogHandler: no timestamp, no hostname.
    let f = b"<14>myapp: hello world";
    let p = parse(f, NOW);
    assert_eq!(p.format, Format::Rfc3164);
    assert_eq!(p.timestamp, None);
    assert_eq!(field(f, p.appname), Some("myapp"));
    assert_eq!(p.message.get(f), b"hello world");
    // RFC 3339 timestamp in a BSD-style line (rsyslog's forward format).
    let f = b"<13>2024-01-02T03:04:05.5+01:00 web1 nginx: GET /";
    let p = parse(f, NOW);
    assert_eq!(p.timestamp.unwrap().nanos, 500_000_000);
    assert_eq!(field(f, p.hostname), Some("web1"));
    // Year in the timestamp (Cisco style), no tag.
    let f = b"<13>Mar  1 2020 01:02:03 router %LINK-3-UPDOWN: down";
    let p = parse(f, NOW);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2020, 3, 1) * 86400 + 3723
    );
    assert_eq!(field(f, p.hostname), Some("router"));
    assert_eq!(p.appname, None);
    assert_eq!(p.message.get(f), b"%LINK-3-UPDOWN: down");
}

#[test]
fn raw_lines() {
    for f in [
        &b"hello"[..],
        b"",
        b"<999>x",
        b"<13",
        b"<013>x",
        b"\xff\xfe",
    ] {
        let p = parse(f, NOW);
        assert_eq!(p.format, Format::Raw);
        assert_eq!(p.message.get(f), f);
    }
}

fn token() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[!-~&&[^ \\-]][!-~&&[^ ]]{0,20}")
}

fn sd_value() -> impl Strategy<Value = String> {
    "[a-z \"\\\\\\]é]{0,12}"
}

prop_compose! {
    fn sd_element()(id in "[a-zA-Z][a-zA-Z0-9@.]{0,15}",
                    params in proptest::collection::vec(("[a-z][a-z0-9]{0,8}", sd_value()), 0..4))
                    -> (String, Vec<(String, String)>) { (id, params) }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), now in any::<i64>()) {
        let p = parse(&data, now.clamp(-1 << 40, 1 << 40));
        for span in [p.hostname, p.appname, p.procid, p.msgid, p.structured_data].into_iter().flatten() {
            prop_assert!((span.start + span.len) as usize <= data.len());
        }
        if let Some(sd) = p.structured_data {
            for (_, params) in sd_elements(sd.get(&data)) { for _ in params {} }
        }
    }

    #[test]
    fn syslog_like_bytes_never_panic(s in "<[0-9]{1,3}>[0-9 A-Za-z:\\[\\]\"=.\\-+\\\\]{0,80}") {
        let p = parse(s.as_bytes(), NOW);
        prop_assert!((p.message.start + p.message.len) as usize <= s.len());
    }

    /// Generated RFC 5424 messages parse back to the fields they were built from.
    #[test]
    fn rfc5424_round_trip(
        pri in 0u8..=191,
        secs in 0i64..4_000_000_000,
        micros in proptest::option::of(0u32..1_000_000),
        host in token(), app in token(), procid in token(), msgid in token(),
        sd in proptest::collection::vec(sd_element(), 0..3),
        msg in proptest::option::of("[ -~é]{0,40}"),
    ) {
        let nil = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        let mut ts = Vec::new();
        civil::write_rfc3339(&mut ts, secs, micros.map_or(0, |u| u * 1000));
        let mut line = format!("<{pri}>1 {} {} {} {} {} ", String::from_utf8(ts).unwrap(),
            nil(&host), nil(&app), nil(&procid), nil(&msgid));
        if sd.is_empty() { line.push('-'); }
        for (id, params) in &sd {
            line.push('[');
            line.push_str(id);
            for (k, v) in params {
                let escaped = v.replace('\\', "\\\\").replace('"', "\\\"").replace(']', "\\]");
                line.push_str(&format!(" {k}=\"{escaped}\""));
            }
            line.push(']');
        }
        if let Some(m) = &msg { line.push(' '); line.push_str(m); }
        let f = line.as_bytes();
        let p = parse(f, NOW);
        prop_assert_eq!(p.format, Format::Rfc5424);
        prop_assert_eq!(p.pri, Some(pri));
        prop_assert_eq!(p.timestamp, Some(Timestamp { secs, nanos: micros.map_or(0, |u| u * 1000) }));
        prop_assert_eq!(field(f, p.hostname), host.as_deref());
        prop_assert_eq!(field(f, p.appname), app.as_deref());
        prop_assert_eq!(field(f, p.procid), procid.as_deref());
        prop_assert_eq!(field(f, p.msgid), msgid.as_deref());
        prop_assert_eq!(p.message.get(f), msg.as_deref().unwrap_or("").as_bytes());
        let parsed_sd: Vec<(String, Vec<(String, String)>)> = p.structured_data
            .map(|s| sd_elements(s.get(f)).map(|(id, params)| (
                String::from_utf8(id.to_vec()).unwrap(),
                params.map(|(k, v)| {
                    let mut out = Vec::new();
                    unescape_sd_value(v, &mut out);
                    (String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(out).unwrap())
                }).collect())).collect())
            .unwrap_or_default();
        prop_assert_eq!(parsed_sd, sd);
    }
}
