//! The `sluice` command line: validate's exit codes and start-up refusals.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;

#[test]
fn validate_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, config(dir.path(), 2, &file_sink(dir.path()))).unwrap();
    let out = Command::new(sluice_bin())
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = dir.path().join("bad.toml");
    let text = config(dir.path(), 2, &file_sink(dir.path()))
        .replace("fsync = \"5ms\"", "fsync = \"sometimes\"");
    std::fs::write(&bad, text).unwrap();
    let out = Command::new(sluice_bin())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains("line 5") && stderr.contains("fsync") && stderr.contains("sometimes"),
        "{stderr}"
    );

    let unknown = dir.path().join("unknown.toml");
    std::fs::write(
        &unknown,
        format!(
            "colour = \"blue\"\n{}",
            config(dir.path(), 1, &file_sink(dir.path()))
        ),
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .arg("validate")
        .arg(&unknown)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr.contains("colour") && stderr.contains("line 1"),
        "{stderr}"
    );

    let out = Command::new(sluice_bin())
        .arg("validate")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));

    // `run` refuses a bad config the same way.
    let out = Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn embedded_default_config_is_printed_and_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(sluice_bin())
        .arg("default-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let path = dir.path().join("default.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    // The file only: its ports and relative data_dir are not this test's to take.
    let out = Command::new(sluice_bin())
        .args(["validate", "--no-environment"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn validate_checks_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file").unwrap();
    let text = config(dir.path(), 1, &file_sink(dir.path()))
        .replace(
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
            &format!("data_dir = \"{}\"", blocker.join("data").display()),
        )
        .replacen(
            "mode = \"tcp\"\naddress = \"127.0.0.1:0\"",
            &format!("mode = \"tcp\"\naddress = \"127.0.0.1:{port}\""),
            1,
        );
    let path = dir.path().join("env.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sluice_bin())
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("data_dir") && stderr.contains("cannot create"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sources.tcp.address 127.0.0.1:{port}"))
            && stderr.contains("another process"),
        "{stderr}"
    );
    let out = Command::new(sluice_bin())
        .args(["validate", "--no-environment"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the file itself is valid");
}

#[test]
fn too_little_locked_memory_fails_with_instructions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, config(dir.path(), 1, &file_sink(dir.path()))).unwrap();
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--config"]).arg(&path);
    // SAFETY: only setrlimit (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 64 << 10,
                rlim_max: 64 << 10,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("ulimit -l") && stderr.contains("LimitMEMLOCK"),
        "{stderr}"
    );
}

#[test]
fn wal_tools_inspect_dump_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &file_sink(dir.path())));
    let lines: Vec<String> = (0..50).map(|i| rfc5424_line("tools", i)).collect();
    send_tcp(
        sluice.addr("tcp"),
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    wait_for("events", || count_output_lines(dir.path()) >= 50);
    let (status, _) = sluice.stop();
    assert!(status.success());
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let out = Command::new(sluice_bin())
            .args(["wal"])
            .args(args)
            .arg(&data)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (code, text) = run(&["inspect"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("shard-0: 1 segments") && text.contains("50 records"),
        "{text}"
    );
    assert!(
        text.contains("sealed") && text.contains("ids 1..=50"),
        "a clean stop seals the segment with its footer: {text}"
    );
    assert!(
        text.contains("cursor out") && text.contains("lag 0 records"),
        "{text}"
    );

    let (code, text) = run(&["dump", "--shard", "0", "--encoding", "raw"]);
    assert_eq!(code, Some(0));
    assert_eq!(text.lines().collect::<Vec<_>>(), lines);
    let (code, text) = run(&["dump", "--shard", "0", "--encoding", "raw", "--from", "41"]);
    assert_eq!(code, Some(0));
    assert_eq!(text.lines().collect::<Vec<_>>(), lines[40..]);
    let (_, text) = run(&["dump", "--shard", "0"]);
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["appname"], "nginx");

    let (code, text) = run(&["verify"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("50 records checked: ok"), "{text}");

    // Damage one byte in the middle: verify says where and fails.
    let segment = storage::segment::segment_path(&data.join("shard-0"), 1);
    let mut bytes = std::fs::read(&segment).unwrap();
    // (The file may go on after the segment's footer: a ready file's old bytes.)
    let middle = storage::segment::scan_bytes(&bytes, 1).end() as usize / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    let (code, text) = run(&["verify"]);
    assert_eq!(code, Some(65), "{text}");
    assert!(
        text.contains("DAMAGED at offset") && text.contains("00000000000000000001.wal"),
        "{text}"
    );
}

#[test]
fn tune_reports_every_item_and_a_config_that_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(sluice_bin())
        .args(["tune", "--probe-seconds", "0.05", "--data-dir"])
        .arg(dir.path().join("probe"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for item in [
        "io_uring",
        "locked memory",
        "net.core.rmem_max",
        "disk",
        "file system",
    ] {
        assert!(text.contains(item), "{item}:\n{text}");
    }
    let recommended = text
        .split("# recommended config\n")
        .nth(1)
        .and_then(|t| t.split("# sysctls").next())
        .unwrap();
    // Top-level keys first, then the recommendation (shards, [wal]), then the rest.
    let config_text = format!(
        "data_dir = \"{}\"\n{recommended}\n[sources.tcp]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:0\"\n{}",
        dir.path().join("data").display(),
        file_sink(dir.path())
    );
    let path = dir.path().join("tuned.toml");
    std::fs::write(&path, &config_text).unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--no-environment"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{config_text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A min_free_disk the data_dir's file system cannot give: validate says so (69) and run
/// refuses to start (78) instead of running with ingest blocked forever.
#[test]
fn min_free_disk_larger_than_the_file_system_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "data_dir = \"{}\"\n[wal]\nmin_free_disk = \"1PiB\"\n[api]\naddress = \"127.0.0.1:0\"\n[sources.t]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:0\"\n[sinks.f]\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("data").display(),
        dir.path().join("out/x.log").display()
    );
    let path = dir.path().join("sluice.toml");
    std::fs::write(&path, cfg).unwrap();
    let validate = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("validate")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(69));
    assert!(String::from_utf8_lossy(&validate.stderr).contains("min_free_disk"));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// `docs/metrics.md` is what the binary generates from its metric tables (regenerate with
/// `sluice metrics-reference > docs/metrics.md`).
#[test]
fn the_metrics_reference_in_docs_is_generated_from_the_tables() {
    let out = Command::new(sluice_bin())
        .arg("metrics-reference")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md"))
        .unwrap();
    assert!(
        generated == docs,
        "docs/metrics.md is stale: run `sluice metrics-reference > docs/metrics.md`"
    );
}

/// `--log-format json`: every log line Sluice writes is one JSON object.
#[test]
fn log_format_json_writes_one_object_per_line() {
    let out = Command::new(sluice_bin())
        .args([
            "--log-format",
            "json",
            "validate",
            "/nonexistent/sluice.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let error: serde_json::Value = serde_json::from_slice(&out.stderr).expect("the error as JSON");
    assert_eq!(error["level"], "ERROR");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sluice.toml");
    std::fs::write(&cfg, config(dir.path(), 1, &file_sink(dir.path()))).unwrap();
    let mut child = Command::new(sluice_bin())
        .args(["--log-format", "json", "run", "--config"])
        .arg(&cfg)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ready = value["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ready"));
        seen.push(value);
        if ready {
            break;
        }
    }
    common::signal(&child, libc::SIGTERM);
    for line in lines {
        let line = line.unwrap();
        serde_json::from_str::<serde_json::Value>(&line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen.iter().all(|v| v["level"].is_string()), "{seen:?}");
}
