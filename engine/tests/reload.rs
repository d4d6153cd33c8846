//! Reload against the real binary: SIGHUP under continuous load loses nothing and keeps
//! connections open; a bad config is refused and the old one runs on; the API's POST /config
//! and POST /reload.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use common::*;

fn file_sink_at(name: &str, path: &Path) -> String {
    format!(
        "[sinks.{name}]\ntype = \"file\"\npath = \"{}\"\nencoding = \"json\"\n",
        path.display()
    )
}

fn sighup(sluice: &Sluice) {
    // SAFETY: kill(2) on the PID of the child this test started.
    unsafe {
        libc::kill(sluice.child.id() as i32, libc::SIGHUP);
    }
}

/// Waits for the `n`th log line containing `text`.
fn wait_for_log(sluice: &Sluice, text: &str, n: usize) {
    wait_for(text, || sluice.log().matches(text).count() >= n);
}

fn send_range(conn: &mut TcpStream, tag: &str, range: std::ops::Range<u64>) {
    let mut batch = Vec::new();
    for seq in range {
        batch.extend_from_slice(octet(&rfc5424_line(tag, seq)).as_bytes());
        if batch.len() > 64 << 10 {
            conn.write_all(&batch).unwrap();
            batch.clear();
        }
    }
    conn.write_all(&batch).unwrap();
}

#[test]
fn sighup_under_load_keeps_connections_adds_and_drains_sinks_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        dir.path().join("first.ndjson"),
        dir.path().join("second.ndjson"),
    );
    let base = config(dir.path(), 2, "");
    let config_path = dir.path().join("sluice.toml");
    let sluice = Sluice::start(
        dir.path(),
        &format!("{base}{}", file_sink_at("first", &first)),
    );
    assert_eq!(sluice.config_path, config_path);

    // One connection for the whole test: a reload must not close it.
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    const PART: u64 = 20_000;
    send_range(&mut conn, "reload", 0..PART);

    // Reload 1 (while the first part is still being taken in): add a sink.
    let both = format!(
        "{base}{}{}",
        file_sink_at("first", &first),
        file_sink_at("second", &second)
    );
    std::fs::write(&config_path, &both).unwrap();
    sighup(&sluice);
    wait_for_log(&sluice, "reloaded: sources -[] +[], sinks -[] +[second]", 1);
    send_range(&mut conn, "reload", PART..2 * PART);

    // Reload 2: remove the first sink. Everything up to 2 × PART is durable once the second
    // sink has it; the first must deliver all of that before it stops.
    wait_for("the second part delivered by the new sink", || {
        let got = seqs_in(&second);
        (PART..2 * PART).all(|s| got.contains(&s))
    });
    std::fs::write(
        &config_path,
        format!("{base}{}", file_sink_at("second", &second)),
    )
    .unwrap();
    sighup(&sluice);
    wait_for_log(&sluice, "sinks -[first] +[]", 1);
    let got_first = seqs_in(&first);
    assert!(
        (0..2 * PART).all(|s| got_first.contains(&s)),
        "a removed sink delivers what was durable before it stops"
    );
    send_range(&mut conn, "reload", 2 * PART..3 * PART);
    drop(conn);

    wait_for("the third part in the second sink", || {
        let got = seqs_in(&second);
        (2 * PART..3 * PART).all(|s| got.contains(&s))
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    // Nothing lost across both reloads: every event is in one sink or the other.
    let all: HashSet<u64> = seqs_in(&first).union(&seqs_in(&second)).copied().collect();
    assert!((0..3 * PART).all(|s| all.contains(&s)), "events lost");
    assert!(log.contains("sink stopped sink=first"), "{log}");
}

#[test]
fn a_bad_config_on_sighup_is_refused_and_the_old_one_runs_on() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    let path = dir.path().join("sluice.toml");
    std::fs::write(
        &path,
        cfg.replace("fsync = \"5ms\"", "fsync = \"sometimes\""),
    )
    .unwrap();
    sighup(&sluice);
    wait_for_log(&sluice, "reload refused", 1);
    // A config that changes what only a restart can change is refused too.
    std::fs::write(&path, cfg.replace("fsync = \"5ms\"", "fsync = \"always\"")).unwrap();
    sighup(&sluice);
    wait_for_log(&sluice, "reload refused", 2);
    assert!(sluice.log().contains("wal cannot change while running"));
    send_tcp(
        sluice.addr("tcp"),
        format!("{}\n", rfc5424_line("after", 1)).as_bytes(),
    );
    wait_for("delivery goes on", || count_output_lines(dir.path()) >= 1);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// A request with the token Sluice wrote to `data_dir/api.token` (none is configured).
fn http(dir: &Path, addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let token = api_token(dir);
    http_request(addr, method, path, Some(&token), body)
}

#[test]
fn post_config_validates_then_applies_and_post_reload_rereads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");

    let (status, body) = http(dir.path(), api, "POST", "/config", "this is = not [toml");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        http(dir.path(), api, "GET", "/config", "").1,
        cfg,
        "the old config still runs"
    );

    // Under the file sink's directory: a posted config may write there (api.allowed_paths).
    let extra = dir.path().join("out/extra.ndjson");
    let added = format!("{cfg}{}", file_sink_at("extra", &extra));
    let (status, body) = http(dir.path(), api, "POST", "/config", &added);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("+[extra]"), "{body}");
    assert_eq!(http(dir.path(), api, "GET", "/config", "").1, added);
    send_tcp(
        sluice.addr("tcp"),
        format!("{}\n", rfc5424_line("api", 7)).as_bytes(),
    );
    wait_for("the new sink delivers", || seqs_in(&extra).contains(&7));

    // The posted config was written to the file (a SIGHUP or restart keeps it) ...
    let path = dir.path().join("sluice.toml");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), added);
    let (status, body) = http(dir.path(), api, "POST", "/reload", "");
    assert_eq!(status, 200, "{body}");
    assert!(
        !body.contains("[extra]"),
        "the file holds what runs: {body}"
    );
    // ... and an edit of the file is what POST /reload applies.
    // The removed sink drains in the background: 202 until it stopped, then "done".
    std::fs::write(&path, &cfg).unwrap();
    let (status, body) = http(dir.path(), api, "POST", "/reload", "");
    assert!(matches!(status, 200 | 202), "{status} {body}");
    assert!(body.contains("-[extra]"), "{body}");
    wait_for("the removed sink stopped", || {
        http(dir.path(), api, "GET", "/reload", "")
            .1
            .contains("reload 3: done")
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn sigterm_under_load_drains_and_exits_zero_with_every_received_event_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.ndjson");
    let sluice = Sluice::start(
        dir.path(),
        &format!(
            "{}{}rotate_size = \"10GB\"\n",
            config(dir.path(), 2, ""),
            file_sink_at("out", &out)
        ),
    );
    // Four senders that would go on for a while (bounded): Sluice stops in the middle.
    let senders: Vec<_> = (0..4u64)
        .map(|c| {
            let addr = sluice.addr("tcp");
            std::thread::spawn(move || {
                let Ok(mut conn) = TcpStream::connect(addr) else {
                    return;
                };
                for chunk in 0..150u64 {
                    let mut batch = Vec::new();
                    for i in 0..1000 {
                        let seq = c * 1_000_000 + chunk * 1000 + i;
                        batch.extend_from_slice(octet(&rfc5424_line("term", seq)).as_bytes());
                    }
                    if conn.write_all(&batch).is_err() {
                        return; // Sluice stopped reading and closed: expected.
                    }
                }
            })
        })
        .collect();
    wait_for("load flowing", || seqs_in(&out).len() >= 20_000);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    for s in senders {
        s.join().unwrap();
    }
    // Sluice has exited: the final count is the shutdown summary's (the same table rows as
    // /metrics), after every connection was drained.
    let received = summary_value(&log, "events_received");
    assert!(received >= 20_000);
    let lines = std::fs::read_to_string(&out).unwrap().lines().count() as u64;
    assert_eq!(
        seqs_in(&out).len() as u64,
        received,
        "every received event delivered"
    );
    assert_eq!(lines, received, "and each once (a clean stop)");
}

#[test]
fn a_source_added_by_reload_listens_on_every_shard_and_a_removed_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 2, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let added = format!(
        "{cfg}[sources.extra]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n"
    );
    let (status, body) = http(dir.path(), api, "POST", "/config", &added);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sources -[] +[extra]"), "{body}");
    let extra: SocketAddr = ([127, 0, 0, 1], port).into();
    // Several connections: SO_REUSEPORT spreads them over both shards' listeners.
    for i in 0..8 {
        send_tcp(extra, format!("{}\n", rfc5424_line("extra", i)).as_bytes());
    }
    wait_for("events through the new source", || {
        count_output_lines(dir.path()) >= 8
    });
    let (status, body) = http(dir.path(), api, "POST", "/config", &cfg);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("sources -[extra] +[]"), "{body}");
    // The shards close the listeners as their accept loops see the stop.
    wait_for(
        "the removed source's listeners closed on every shard",
        || TcpStream::connect(extra).is_err(),
    );
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// `--config-dir`: every `*.toml` merged (a name defined twice is refused, naming both
/// files); `sluice config` prints the merged effective config; a posted config cannot be
/// written back to several files, so `POST /config` is refused (409) rather than diverge.
#[test]
fn a_config_dir_merges_and_a_posted_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    let cfg = config(dir.path(), 1, "");
    std::fs::write(conf.join("10-main.toml"), &cfg).unwrap();
    std::fs::write(conf.join("20-out.toml"), file_sink(dir.path())).unwrap();
    std::fs::write(conf.join("notes.txt"), "not a config").unwrap();

    let shown = std::process::Command::new(sluice_bin())
        .args(["config", "--config-dir"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let shown = String::from_utf8(shown.stdout).unwrap();
    assert!(
        shown.contains("[sinks.out]") && shown.contains("[sources.tcp]"),
        "{shown}"
    );
    assert!(
        shown.contains("max_connection_memory = "),
        "defaults filled in: {shown}"
    );

    let sluice = Sluice::start_args(&["--config-dir".as_ref(), conf.as_os_str()], &conf);
    let api = sluice.addr("api");
    send_tcp(
        sluice.addr("tcp"),
        format!("{}\n", rfc5424_line("dir", 1)).as_bytes(),
    );
    wait_for("delivered through the merged config", || {
        count_output_lines(dir.path()) == 1
    });
    let (status, body) = http(
        dir.path(),
        api,
        "POST",
        "/config",
        &format!("{cfg}{}", file_sink(dir.path())),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("several config files"), "{body}");
    let (status, body) = http(dir.path(), api, "POST", "/reload", "");
    assert_eq!(status, 200, "re-reading the directory works: {body}");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");

    std::fs::write(conf.join("30-dup.toml"), file_sink(dir.path())).unwrap();
    let out = std::process::Command::new(sluice_bin())
        .args(["validate", "--no-environment", "--config-dir"])
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sinks.out is defined in both")
            && err.contains("20-out.toml")
            && err.contains("30-dup.toml"),
        "{err}"
    );
}
