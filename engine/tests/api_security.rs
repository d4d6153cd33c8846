//! The admin API is no root shell: what an unprivileged local user, a token holder and a
//! misbehaving client can and cannot do (the real binary, real sockets, a real unprivileged
//! user through `setpriv`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `script` with bash as user `nobody` (no groups), `BODY` in its environment; returns
/// its stdout.
fn as_nobody_with(script: &str, body: &str) -> String {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "bash",
            "-c",
            script,
        ])
        .env("BODY", body)
        .output()
        .expect("run setpriv");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn as_nobody(script: &str) -> String {
    as_nobody_with(script, "")
}

/// An HTTP request from bash's /dev/tcp, printing the status line's code.
fn nobody_request(api: SocketAddr, method: &str, path: &str, body: &str) -> String {
    let script = format!(
        "exec 3<>/dev/tcp/{}/{}; printf '{method} {path} HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: {}\\r\\n\\r\\n%s' \"$BODY\" >&3; head -n1 <&3 | cut -d' ' -f2",
        api.ip(),
        api.port(),
        body.len()
    );
    as_nobody_with(&script, body).trim().to_string()
}

#[test]
fn an_unprivileged_user_can_neither_change_nor_read_the_config_nor_the_token() {
    if !is_root() {
        eprintln!("skipped: needs root to run Sluice as root and a request as nobody (CI is root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Traversable by everyone: only the token file's own mode protects it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    let token_file = dir.path().join("data/api.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the generated token is private");
    assert!(
        as_nobody(&format!("cat {} && echo READ", token_file.display())).is_empty(),
        "nobody cannot read the token"
    );

    let evil = dir.path().join("evil.log");
    let posted = format!(
        "{cfg}[sinks.evil]\ntype = \"file\"\npath = \"{}\"\n",
        evil.display()
    );
    assert_eq!(nobody_request(api, "POST", "/config", &posted), "401");
    assert_eq!(nobody_request(api, "GET", "/config", ""), "401");
    assert_eq!(nobody_request(api, "POST", "/reload", ""), "401");
    assert_eq!(nobody_request(api, "GET", "/health", ""), "200");
    assert_eq!(nobody_request(api, "GET", "/ready", ""), "200");
    assert_eq!(
        nobody_request(api, "GET", "/metrics", ""),
        "200",
        "metrics are open while no token is configured"
    );
    udp_send(sluice.addr("udp"), [rfc5424_line("x", 1)]);
    wait_for("the event delivered", || {
        count_output_lines(dir.path()) >= 1
    });
    assert!(!evil.exists(), "no file was written for nobody");
    // The operator, with the token, is served.
    let token = api_token(dir.path());
    let (status, body) = http_request(api, "GET", "/config", Some(&token), "");
    assert_eq!((status, body), (200, cfg));
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_posted_config_cannot_widen_what_sluice_may_touch() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    let token = api_token(dir.path());
    let post = |text: &str| http_request(api, "POST", "/config", Some(&token), text);

    let outside = elsewhere.path().join("cron-like");
    let (status, body) = post(&format!(
        "{cfg}[sinks.evil]\ntype = \"file\"\npath = \"{}\"\n",
        outside.display()
    ));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allowed_paths"), "{body}");
    assert!(!outside.exists());

    let (status, body) = post(&cfg.replacen(
        "address = \"127.0.0.1:0\"\n[sources.udp]",
        "address = \"0.0.0.0:0\"\n[sources.udp]",
        1,
    ));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("loopback"), "{body}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (status, body) = post(&format!(
        "{cfg}[sinks.exfil]\ntype = \"tcp\"\naddress = \"{}\"\n",
        listener.local_addr().unwrap()
    ));
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("allowed_destinations"), "{body}");

    let (status, body) = post(&cfg.replace(
        "[api]\naddress = \"127.0.0.1:0\"",
        "[api]\naddress = \"127.0.0.1:0\"\ntoken = \"an-attackers-own-token\"",
    ));
    assert_eq!(status, 403, "{body}");

    // Inside the allowed directories a new sink is fine.
    let inside = dir.path().join("out/second.ndjson");
    let (status, body) = post(&format!(
        "{cfg}[sinks.second]\ntype = \"file\"\npath = \"{}\"\n",
        inside.display()
    ));
    assert_eq!(status, 200, "{body}");
    assert_eq!(http_request(api, "GET", "/config", Some(&token), "").0, 200);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_stalled_request_does_not_block_health_and_http2_gets_an_answer() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &file_sink(dir.path())));
    let api = sluice.addr("api");
    let mut stalled = TcpStream::connect(api).unwrap();
    stalled
        .write_all(b"POST /config HTTP/1.1\r\nContent-Length: 1000\r\n\r\nab")
        .unwrap();
    assert_eq!(http_request(api, "GET", "/health", None, "").0, 200);
    assert_eq!(http_request(api, "GET", "/ready", None, "").0, 200);
    let mut h2 = TcpStream::connect(api).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut answer = String::new();
    h2.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 505"), "{answer}");
    // The stalled one is answered 408 at the request timeout and closed.
    let mut answer = String::new();
    stalled.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}

/// A reload removing a sink whose destination is down answers at once (202, draining in the
/// background) and a SIGTERM right after it is handled while that sink still drains.
#[test]
fn a_reload_never_waits_for_a_draining_sink_and_sigterm_is_not_delayed() {
    let dir = tempfile::tempdir().unwrap();
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let forward = format!("[sinks.fwd]\ntype = \"tcp\"\naddress = \"{down}\"\n");
    let cfg = config(
        dir.path(),
        1,
        &format!("{}{forward}", file_sink(dir.path())),
    )
    .replace("shutdown_timeout = \"30s\"", "shutdown_timeout = \"10s\"");
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    let token = api_token(dir.path());
    send_tcp(
        sluice.addr("tcp"),
        format!("{}\n", rfc5424_line("x", 1)).as_bytes(),
    );
    wait_for("the file sink delivered", || {
        count_output_lines(dir.path()) >= 1
    });
    let without = cfg.replace(&forward, "");
    let (status, body) = http_request(api, "POST", "/config", Some(&token), &without);
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("-[fwd]"), "{body}");
    let (_, progress) = http_request(api, "GET", "/reload", Some(&token), "");
    assert!(progress.contains("draining: fwd"), "{progress}");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let line_of = |pred: &dyn Fn(&str) -> bool| log.lines().position(pred);
    let signal = line_of(&|l| l.contains("signal received")).expect("signal logged");
    let fwd_stopped =
        line_of(&|l| l.contains("sink stopped") && l.contains("fwd")).expect("fwd stopped");
    assert!(
        signal < fwd_stopped,
        "SIGTERM is handled while the removed sink still drains:\n{log}"
    );
}

/// `sluice reload` finds the generated token in data_dir/api.token (root can read it).
#[test]
fn the_reload_subcommand_uses_the_generated_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), 1, &file_sink(dir.path()));
    let sluice = Sluice::start(dir.path(), &cfg);
    // The config's API port is 0 (chosen at start): point the subcommand at the real one.
    let pinned = dir.path().join("pinned.toml");
    std::fs::write(
        &pinned,
        cfg.replace(
            "[api]\naddress = \"127.0.0.1:0\"",
            &format!("[api]\naddress = \"{}\"", sluice.addr("api")),
        ),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        let out = Command::new(sluice_bin())
            .args(["reload", "--config"])
            .arg(&pinned)
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = run(&[]);
    assert!(ok && text.contains("reloaded"), "{text}");
    let (ok, text) = run(&["--status"]);
    assert!(ok && text.contains("reload 1: done"), "{text}");
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
}
