use super::*;
use crate::civil;
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

/// Every field that parses is kept; what does not is flagged, and its bytes stay in the frame
/// (the peers keep the PRI and the readable fields too).
#[test]
fn rfc5424_broken_header_keeps_what_parses() {
    let f = b"<34>1 2003-13-24T05:14:15Z h a p m - msg";
    let p = parse(f, NOW);
    assert_eq!(
        (p.format, p.pri, p.flags),
        (Format::Rfc5424, Some(34), ParseFlags::BAD_TIMESTAMP)
    );
    assert_eq!(
        (p.timestamp, field(f, p.hostname), p.message.get(f)),
        (None, Some("h"), &b"msg"[..])
    );

    let f = b"<34>1 2003-08-24T05:14:15Z h a p m [unterminated msg";
    let p = parse(f, NOW);
    assert_eq!((p.flags, p.structured_data), (ParseFlags::BAD_SD, None));
    assert_eq!(
        (field(f, p.msgid), p.message.get(f)),
        (Some("m"), &b"[unterminated msg"[..])
    );

    let f = b"<34>1 2003-08-24T05:14:15Z h a p m -msg";
    let p = parse(f, NOW);
    assert_eq!(
        (p.flags, p.message.get(f)),
        (ParseFlags::BAD_SD, &b"-msg"[..])
    );

    // Over-long, non-printable and empty fields: kept (or absent when empty) and flagged.
    let long_app = format!("<34>1 - host {} - - - m", "a".repeat(49));
    let p = parse(long_app.as_bytes(), NOW);
    assert_eq!(p.flags, ParseFlags::BAD_HEADER);
    assert_eq!(p.appname.unwrap().len, 49);
    let f = b"<1>1 - host\nname - - - -";
    let p = parse(f, NOW);
    assert_eq!(
        (p.flags, field(f, p.hostname)),
        (ParseFlags::BAD_HEADER, Some("host\nname"))
    );
    let f = b"<1>1 -   - - - - msg";
    let p = parse(f, NOW);
    assert_eq!(
        (p.flags, p.hostname, p.appname),
        (ParseFlags::BAD_HEADER, None, None)
    );

    // A frame that ends inside the header keeps its PRI.
    for f in [
        &b"<1>1 "[..],
        b"<1>1",
        b"<165>1 2003-10-11T22:14:15.003Z host",
    ] {
        let p = parse(f, NOW);
        assert_eq!(
            (p.format, p.pri),
            (
                Format::Rfc5424,
                Some(
                    f[1..f.iter().position(|&b| b == b'>').unwrap()]
                        .iter()
                        .fold(0, |v, b| v * 10 + (b - b'0'))
                )
            )
        );
        assert!(
            p.flags.contains(ParseFlags::BAD_HEADER),
            "{:?}",
            String::from_utf8_lossy(f)
        );
        assert!(p.message.get(f).is_empty());
    }

    // A leap second and a space for `T`: read; SD names over 32 bytes: kept, flagged.
    let p = parse(b"<1>1 2016-12-31T23:59:60Z h a p m - x", NOW);
    assert_eq!(
        (p.flags, p.timestamp.unwrap().secs % 60),
        (ParseFlags::default(), 59)
    );
    let f = b"<1>1 2003-10-11 22:14:15Z h a p m - x";
    let p = parse(f, NOW);
    assert_eq!(
        (p.flags, field(f, p.hostname)),
        (ParseFlags::BAD_TIMESTAMP, Some("h"))
    );
    assert!(p.timestamp.is_some());
    let f = b"<1>1 - h a p m [abcdefghijklmnopqrstuvwxyz0123456789 i=\"1\"] x";
    let p = parse(f, NOW);
    assert_eq!((p.flags, p.message.get(f)), (ParseFlags::BAD_SD, &b"x"[..]));
    assert!(p.structured_data.is_some());
    // Lower-case `t`/`z` (RFC 5424 §6.2.3 forbids them) and VERSION 2 (not RFC 5424: BSD).
    assert_eq!(
        parse(b"<1>1 2006-01-02t15:04:05Z - - - - -", NOW).flags,
        ParseFlags::BAD_TIMESTAMP
    );
    assert_eq!(
        parse(b"<1>2 2006-01-02T15:04:05Z - - - - -", NOW).format,
        Format::Rfc3164
    );
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
fn rfc3164_year_by_month() {
    // NOW is in November: December is next month, this year; October last month.
    let p = parse(b"<13>Dec 31 23:59:59 host app: x", NOW);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2026, 12, 31) * 86400 + 86399
    );
    // Received on January 1st: December was last year.
    let jan_1 = civil::days_from_civil(2027, 1, 1) * 86400;
    let p = parse(b"<13>Dec 31 23:59:59 host app: x", jan_1);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2026, 12, 31) * 86400 + 86399
    );
    // Received on December 31st by a slow clock: January is next year.
    let dec_31 = civil::days_from_civil(2026, 12, 31) * 86400;
    let p = parse(b"<13>Jan  1 00:00:01 host app: x", dec_31);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2027, 1, 1) * 86400 + 1
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
    // Year in the timestamp (Cisco style).
    let f = b"<13>Mar  1 2020 01:02:03 router %LINK-3-UPDOWN: down";
    let p = parse(f, NOW);
    assert_eq!(
        p.timestamp.unwrap().secs,
        civil::days_from_civil(2020, 3, 1) * 86400 + 3723
    );
    assert_eq!(field(f, p.hostname), Some("router"));
    assert_eq!(field(f, p.appname), Some("%LINK-3-UPDOWN"));
    assert_eq!(p.message.get(f), b"down");
}

/// The patterns of issue 12, each as rsyslog and syslog-ng both read it.
#[test]
fn rfc3164_as_the_peers_read_it() {
    type Expect<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
    let cases: [(&[u8], Expect); 9] = [
        (
            b"<129>Mar 10 01:00:00 172.20.245.8 tag secure-default:a/b:payload",
            (
                Some("172.20.245.8"),
                Some("tag"),
                None,
                "secure-default:a/b:payload",
            ),
        ),
        (
            b"<167>Mar 27 19:06:53 source_server sshd(pam_unix)[12750]: session opened",
            (
                Some("source_server"),
                Some("sshd(pam_unix)"),
                Some("12750"),
                "session opened",
            ),
        ),
        (
            b"<14>May 21 2017 00:00:00: %ASA-4-102030: Deny udp",
            (None, Some("%ASA-4-102030"), None, "Deny udp"),
        ),
        (
            b"<14>Jan  6 2009 15:22:26 localhost",
            (Some("localhost"), None, None, ""),
        ),
        (
            b"<167>Feb 18 16:01:59 serverX -- MARK --",
            (Some("serverX"), Some("--"), None, "MARK --"),
        ),
        (
            b"<189>52: *Mar  1 18:48:50.483: %SYS-5-CONFIG_I: Configured",
            (None, Some("%SYS-5-CONFIG_I"), None, "Configured"),
        ),
        (
            b"<7> Aug 29 02:00:00. ctld snmpd[2499]: PTHREAD",
            (Some("ctld"), Some("snmpd"), Some("2499"), "PTHREAD"),
        ),
        (
            b"<6>AUG 10 22:18:24 host tag This msg",
            (Some("host"), Some("tag"), None, "This msg"),
        ),
        (
            b"<14>   { \"c1\":1 }",
            (None, None, None, "   { \"c1\":1 }"),
        ),
    ];
    for (f, (host, app, pid, msg)) in cases {
        let p = parse(f, NOW);
        let line = String::from_utf8_lossy(f);
        assert_eq!(field(f, p.hostname), host, "{line}");
        assert_eq!(field(f, p.appname), app, "{line}");
        assert_eq!(field(f, p.procid), pid, "{line}");
        assert_eq!(p.message.get(f), msg.as_bytes(), "{line}");
        assert!(p.flags.is_empty(), "{line}");
    }
    assert!(parse(b"<14>Jan  6 2009 15:22:26 localhost", NOW)
        .timestamp
        .is_some());
}

#[test]
fn no_pri_is_user_notice_and_flagged() {
    let f = b"Feb 18 16:01:59 serverX -- MARK --";
    let p = parse(f, NOW);
    assert_eq!(
        (p.format, p.pri, p.flags),
        (Format::Rfc3164, Some(13), ParseFlags::NO_PRI)
    );
    assert_eq!(field(f, p.hostname), Some("serverX"));
    assert!(p.timestamp.is_some());
    for f in [
        &b"<>Mar  3 03:03:52 web01 app: x"[..],
        b"<192>Mar  3 03:03:52 web01 app: x",
    ] {
        let p = parse(f, NOW);
        assert_eq!((p.pri, p.flags), (Some(13), ParseFlags::NO_PRI));
        assert_eq!(
            (field(f, p.hostname), p.message.get(f)),
            (Some("web01"), &b"x"[..])
        );
    }
    // Leading zeros are read as the number they write.
    assert_eq!(
        parse(b"<014>Mar  3 03:03:51 web01 app: x", NOW).pri,
        Some(14)
    );
}

#[test]
fn parser_modes_and_vendor_options() {
    let raw = ParserOptions {
        mode: ParserMode::Raw,
        ..ParserOptions::default()
    };
    let f = b"<13>Feb  5 10:01:02 host app: x";
    let p = parse_with(f, &Now::at(NOW), &raw);
    assert_eq!(
        (p.format, p.pri, p.message.get(f)),
        (Format::Raw, None, &f[..])
    );
    let bsd = ParserOptions {
        mode: ParserMode::Rfc3164,
        ..ParserOptions::default()
    };
    assert_eq!(
        parse_with(b"<13>1 - h a - - - x", &Now::at(NOW), &bsd).format,
        Format::Rfc3164
    );
    let strict = ParserOptions {
        mode: ParserMode::Rfc5424,
        ..ParserOptions::default()
    };
    let p = parse_with(f, &Now::at(NOW), &strict);
    assert_eq!(
        (p.format, p.pri, p.flags),
        (Format::Rfc5424, Some(13), ParseFlags::BAD_HEADER)
    );
    assert_eq!(p.message.get(f), &f[4..]);

    let f = b"<14>Mar  3 03:03:31 [web01] app: x";
    assert_eq!(parse(f, NOW).hostname, None);
    let brackets = ParserOptions {
        permit_square_brackets_in_hostname: true,
        ..ParserOptions::default()
    };
    assert_eq!(
        field(f, parse_with(f, &Now::at(NOW), &brackets).hostname),
        Some("[web01]")
    );
    let f = b"<14>Mar  3 03:03:31 web01/sub app: x";
    let slashes = ParserOptions {
        permit_slashes_in_hostname: true,
        ..ParserOptions::default()
    };
    assert_eq!(
        field(f, parse_with(f, &Now::at(NOW), &slashes).hostname),
        Some("web01/sub")
    );
    let f = b"<14>Mar  3 03:03:31 user@web01 app: x";
    let at = ParserOptions {
        permit_at_signs_in_hostname: true,
        ..ParserOptions::default()
    };
    assert_eq!(
        field(f, parse_with(f, &Now::at(NOW), &at).hostname),
        Some("user@web01")
    );

    let f = b"<14>Mar  3 03:03:31 web01 tag message";
    let colon = ParserOptions {
        force_tag_ending_by_colon: true,
        ..ParserOptions::default()
    };
    let p = parse_with(f, &Now::at(NOW), &colon);
    assert_eq!((p.appname, p.message.get(f)), (None, &b"tag message"[..]));
    let f = b"<14>Mar  3 03:03:31 web01 app: x";
    let keep = ParserOptions {
        remove_msg_first_space: false,
        ..ParserOptions::default()
    };
    assert_eq!(parse_with(f, &Now::at(NOW), &keep).message.get(f), b" x");
}

#[test]
fn raw_lines() {
    // Without a PRI: 13 assumed, flagged; a lone word is the tag (both peers), JSON is message.
    let p = parse(b"hello", NOW);
    assert_eq!(
        (p.flags, p.pri, p.appname.map(|a| a.len)),
        (ParseFlags::NO_PRI, Some(13), Some(5))
    );
    assert_eq!(parse(b"", NOW).message.len, 0);
    let f = b"{\"a\": 1}";
    assert_eq!(parse(f, NOW).message.get(f), f);
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
        // The message always runs to the end of the frame: nothing after the header is dropped.
        prop_assert_eq!((p.message.start + p.message.len) as usize, data.len());
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

/// Device timestamp forms the peers do not both read; Sluice reads them.
#[test]
fn device_timestamps() {
    for (f, offset_secs) in [
        (
            &b"<190>2018-06-19T02:13:38.635322-0700 super mon message"[..],
            -7 * 3600,
        ),
        (
            b"<190>2018-06-19T02:13:38.635322-07 super mon message",
            -7 * 3600,
        ),
        (
            b"<190>2018-06-19T02:13:38.635322-07:10 super mon message",
            -(7 * 3600 + 600),
        ),
        (b"<190>2018-06-19 02:13:38 super mon message", 0),
    ] {
        let p = parse(f, NOW);
        let local = civil::days_from_civil(2018, 6, 19) * 86400 + 2 * 3600 + 13 * 60 + 38;
        assert_eq!(
            p.timestamp.unwrap().secs,
            local - offset_secs,
            "{}",
            String::from_utf8_lossy(f)
        );
        assert_eq!(
            (field(f, p.hostname), field(f, p.appname)),
            (Some("super"), Some("mon"))
        );
        assert_eq!(p.message.get(f), b"message");
    }
    // Unpadded day with a Cisco sequence number and milliseconds.
    let f = b"<190>589265: Feb 8 18:55:31.306: %SEC-11-IPACCESSLOGP: list 177 denied";
    let p = parse(f, NOW);
    assert_eq!(p.timestamp.unwrap().nanos, 306_000_000);
    assert_eq!(field(f, p.appname), Some("%SEC-11-IPACCESSLOGP"));
}
