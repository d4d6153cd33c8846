//! `type = "stdin"`: Sluice at the end of a shell pipeline (`producer | sluice run`). The
//! input's end stops Sluice when stdin is its only source, after every line is delivered.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn stdin_config(dir: &std::path::Path, format: &str, more_sources: &str) -> String {
    format!(
        "data_dir = \"{data}\"\nshutdown_timeout = \"30s\"\n[api]\naddress = \"127.0.0.1:0\"\n\
         [sources.pipe]\ntype = \"stdin\"\nformat = \"{format}\"\n{more_sources}{sink}",
        data = dir.join("data").display(),
        sink = file_sink(dir)
    )
}

/// `cat events.json | sluice run`: 20,000 JSON lines (one not JSON, one unterminated at the
/// end): every one an event, members as fields, the bad one kept raw and counted; Sluice
/// exits 0 by itself when the input ends.
#[test]
fn a_pipeline_of_json_lines_ends_sluice_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, stdin_config(dir.path(), "json", "")).unwrap();
    let mut input = String::new();
    for seq in 0..20_000 {
        input.push_str(&format!(
            "{{\"MESSAGE\":\"x\",\"message\":\"pipe seq={seq}\",\"_PID\":\"{}\",\"PRIORITY\":\"6\"}}\n",
            seq % 7
        ));
    }
    input.push_str("not json at all seq=20000\n");
    input.push_str("{\"message\":\"unterminated seq=20001\"}");
    let events = dir.path().join("events.json");
    std::fs::write(&events, input).unwrap();
    let run = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cat '{}' | RUST_LOG=info '{}' run --config '{}'",
            events.display(),
            sluice_bin(),
            config.display()
        ))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{log}");
    assert!(
        log.contains("stdin ended and it is the only source"),
        "{log}"
    );
    assert!(log.contains("parse_bad_format=1"), "{log}");
    let events = read_events(dir.path());
    let counts = message_counts(&events);
    assert_eq!(counts.len(), 20_002);
    assert!(counts.values().all(|&n| n == 1));
    let first = events
        .iter()
        .find(|e| e["message"] == "pipe seq=0")
        .unwrap();
    assert_eq!(first["_PID"], "0", "{first}");
    assert_eq!(first["format"], "raw");
}

/// With another source, stdin's end does not stop Sluice; SIGTERM does, and every line
/// written before it is delivered (syslog lines, parsed).
#[test]
fn with_other_sources_the_input_end_does_not_stop_sluice() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = "[sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:0\"\n";
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, stdin_config(dir.path(), "syslog", tcp)).unwrap();
    let mut child = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for seq in 0..1_000 {
        writeln!(stdin, "{}", rfc5424_line("piped", seq)).unwrap();
    }
    drop(stdin);
    wait_for("every line delivered", || {
        message_counts(&read_events(dir.path())).len() == 1_000
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running: the tcp source remains"
    );
    signal(&child, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
    let events = read_events(dir.path());
    assert_eq!(events.len(), 1_000);
    assert_eq!(
        events[0]["appname"], "nginx",
        "parsed as syslog: {}",
        events[0]
    );
}
