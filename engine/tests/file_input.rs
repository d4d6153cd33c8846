//! `type = "file"`: writers appending at full speed while their files are rotated (renamed,
//! and copied then truncated in place), Sluice killed with -9 and restarted in the middle:
//! every line arrives at least once, in order per file. Checkpoints resume where the durable
//! lines end; `read_from`; CRI and Docker container logs with the pod's metadata.

mod common;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use common::*;

fn file_source(dir: &Path, include: &str, extra: &str) -> String {
    format!(
        "[sources.local]\ntype = \"file\"\ninclude = [\"{}/{include}\"]\nscan_interval = \"50ms\"\n\
         poll_interval = \"20ms\"\nrotate_wait = \"500ms\"\n{extra}\n",
        dir.join("logs").display()
    )
}

fn file_config(dir: &Path, include: &str, extra: &str) -> String {
    format!(
        "data_dir = \"{}\"\nshards = 2\nshutdown_timeout = \"30s\"\n[wal]\nfsync = \"5ms\"\n\
         [api]\naddress = \"127.0.0.1:0\"\n{}{}",
        dir.join("data").display(),
        file_source(dir, include, extra),
        file_sink(dir)
    )
}

/// The seqs of the events tagged `tag`, in output order (read while the output is being
/// written: a line not yet whole is left for the next look).
fn seqs_tagged(dir: &Path, tag: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    for path in output_files(dir) {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let message = event["message"].as_str().unwrap_or_default();
            if message.starts_with(&format!("{tag} ")) {
                seqs.extend(seq_of(message.as_bytes()));
            }
        }
    }
    seqs
}

/// Each seq's first occurrence, in output order.
fn first_occurrences(seqs: &[u64]) -> Vec<u64> {
    let mut seen = HashSet::new();
    seqs.iter().copied().filter(|s| seen.insert(*s)).collect()
}

const PER_WRITER: u64 = 100_000;
/// Lines written before Sluice is killed (the rest is written at full speed across the kill).
const BEFORE_KILL: u64 = 20_000;
const ROTATE_AT: u64 = 50_000;

/// Appends `rfc5424_line(tag, seq)` lines as fast as it can (pausing once at BEFORE_KILL until
/// `go`); at ROTATE_AT, rotates: `rename` moves the file away and starts a new one (logrotate's
/// default); otherwise copies it and truncates it in place (copytruncate; the writer is held
/// meanwhile, which logrotate cannot guarantee: a real writer may lose lines there).
fn writer(path: &Path, tag: &'static str, rename: bool, go: std::sync::mpsc::Receiver<()>) {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap()
    };
    let mut file = open(path);
    let mut batch = String::new();
    for seq in 0..PER_WRITER {
        if seq == BEFORE_KILL || seq == ROTATE_AT {
            file.write_all(batch.as_bytes()).unwrap();
            batch.clear();
        }
        if seq == BEFORE_KILL {
            go.recv().unwrap();
        }
        if seq == ROTATE_AT {
            let rotated = path.with_extension("log.1");
            if rename {
                std::fs::rename(path, &rotated).unwrap();
                file = open(path);
            } else {
                std::fs::copy(path, &rotated).unwrap();
                file.set_len(0).unwrap();
            }
        }
        batch.push_str(&rfc5424_line(tag, seq));
        batch.push('\n');
        if batch.len() > 16 << 10 {
            file.write_all(batch.as_bytes()).unwrap();
            batch.clear();
        }
    }
    file.write_all(batch.as_bytes()).unwrap();
}

/// Whether checkpoints past their start are saved for both files (on whichever shards).
fn checkpoints_saved(dir: &Path) -> bool {
    let past_start = (0..2).map(|shard| {
        let path = dir.join(format!("data/files/local/shard-{shard}.json"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let stored: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        stored["files"].as_array().map_or(0, |files| {
            files
                .iter()
                .filter(|f| f["offset"].as_u64() > Some(0))
                .count()
        })
    });
    past_start.sum::<usize>() == 2
}

#[test]
fn rotation_and_copytruncate_under_fast_writers_with_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cfg = file_config(dir.path(), "*.log*", "read_from = \"beginning\"");
    let sluice = Sluice::start(dir.path(), &cfg);
    let mut gos = Vec::new();
    let writers: Vec<_> = [("renamed", true), ("copied", false)]
        .into_iter()
        .map(|(tag, rename)| {
            let (go_tx, go) = std::sync::mpsc::channel();
            gos.push(go_tx);
            let path = logs.join(format!("{tag}.log"));
            std::thread::spawn(move || writer(&path, tag, rename, go))
        })
        .collect();
    let d = dir.path();
    wait_for("the first lines delivered and checkpointed", || {
        seqs_tagged(d, "renamed").len() as u64 == BEFORE_KILL
            && seqs_tagged(d, "copied").len() as u64 == BEFORE_KILL
            && checkpoints_saved(d)
    });
    for go in gos {
        go.send(()).unwrap();
    }
    let config_path = sluice.config_path.clone();
    sluice.kill9();
    let sluice = Sluice::start_with(&config_path);
    for w in writers {
        w.join().unwrap();
    }
    for tag in ["renamed", "copied"] {
        wait_for(&format!("every {tag} line"), || {
            seqs_tagged(d, tag)
                .into_iter()
                .collect::<HashSet<_>>()
                .len()
                == PER_WRITER as usize
        });
    }
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    // One file per inode is read in order: the lines before the rotation (the renamed file)
    // and after it (the new file) each arrive in the order written.
    let renamed = first_occurrences(&seqs_tagged(d, "renamed"));
    for part in [
        renamed
            .iter()
            .filter(|&&s| s < ROTATE_AT)
            .copied()
            .collect::<Vec<_>>(),
        renamed
            .iter()
            .filter(|&&s| s >= ROTATE_AT)
            .copied()
            .collect(),
    ] {
        let disorder: Vec<_> = part.windows(2).filter(|w| w[0] >= w[1]).take(5).collect();
        assert!(disorder.is_empty(), "in order per file: {disorder:?}");
    }
    eprintln!(
        "{} events for the {PER_WRITER} renamed lines, {} for the {PER_WRITER} copied ones",
        seqs_tagged(d, "renamed").len(),
        seqs_tagged(d, "copied").len()
    );
}

/// `read_from = "end"` skips what a file held at the first scan; lines appended while Sluice
/// is stopped are read at the restart from the checkpoint: each exactly once.
#[test]
fn checkpoints_resume_where_the_durable_lines_end() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let path = logs.join("app.log");
    let append = |range: std::ops::Range<u64>| {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        for seq in range {
            writeln!(f, "{}", rfc5424_line("app", seq)).unwrap();
        }
    };
    append(0..100);
    let cfg = file_config(dir.path(), "*.log", "");
    let sluice = Sluice::start(dir.path(), &cfg);
    let api = sluice.addr("api");
    wait_for("the file opened", || {
        metric_sum(api, dir.path(), "sluice_files_open") == 1.0
    });
    append(100..200);
    let d = dir.path();
    wait_for("the new lines", || seqs_tagged(d, "app").len() == 100);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    append(200..300);
    let sluice = Sluice::start(dir.path(), &cfg);
    wait_for("the lines appended while stopped", || {
        seqs_tagged(d, "app").len() == 200
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        seqs_tagged(d, "app"),
        (100..300).collect::<Vec<_>>(),
        "each once, in order"
    );
}

/// Kubernetes container logs: CRI lines (partials joined) under a `/var/log/pods` layout,
/// and Docker json-file lines: the message, `stream`, `timestamp` and the pod's metadata.
#[test]
fn container_logs_with_pod_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let pod_dir = dir
        .path()
        .join("logs/var/log/pods/shop_cart-7d9f_1b2c-3d4e/cart");
    std::fs::create_dir_all(&pod_dir).unwrap();
    std::fs::write(
        pod_dir.join("0.log"),
        "2026-11-30T10:00:00.000000001Z stdout F first line seq=1\n\
         2026-11-30T10:00:01.000000001Z stderr P a long line \n\
         2026-11-30T10:00:01.000000002Z stderr F continued seq=2\n\
         not a cri line seq=3\n",
    )
    .unwrap();
    let docker = dir.path().join("logs/docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("c-json.log"),
        "{\"log\":\"docker part \",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:00:02Z\"}\n\
         {\"log\":\"end seq=4\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-30T10:00:02.5Z\"}\n",
    )
    .unwrap();
    let sources = format!(
        "{}{}",
        file_source(
            dir.path(),
            "var/log/pods/*/*/*.log",
            "read_from = \"beginning\"\nformat = \"cri\""
        ),
        file_source(
            dir.path(),
            "docker/*.log",
            "read_from = \"beginning\"\nformat = \"docker_json\""
        )
        .replace("[sources.local]", "[sources.docker]")
    );
    let cfg = format!(
        "data_dir = \"{}\"\n[api]\naddress = \"127.0.0.1:0\"\n{sources}{}",
        dir.path().join("data").display(),
        file_sink(dir.path())
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let d = dir.path();
    wait_for("four events", || read_events(d).len() == 4);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(d);
    let by_seq = |n: u64| {
        events
            .iter()
            .find(|e| e["message"].as_str().and_then(|m| seq_of(m.as_bytes())) == Some(n))
            .unwrap_or_else(|| panic!("seq {n} in {events:?}"))
    };
    let joined = by_seq(2);
    assert_eq!(joined["message"], "a long line continued seq=2");
    assert_eq!(joined["stream"], "stderr");
    assert_eq!(joined["timestamp"], "2026-11-30T10:00:01.000000001Z");
    assert_eq!(joined["kubernetes"]["namespace"], "shop");
    assert_eq!(joined["kubernetes"]["pod_name"], "cart-7d9f");
    assert_eq!(joined["kubernetes"]["container_name"], "cart");
    assert_eq!(by_seq(3)["message"], "not a cri line seq=3", "kept raw");
    let docker_event = by_seq(4);
    assert_eq!(docker_event["message"], "docker part end seq=4");
    assert_eq!(docker_event["stream"], "stdout");
    assert!(log.contains("parse_bad_format=1"), "{log}");
}

/// A `multiline` transform joins a file's stack traces (the last event is emitted by its
/// timeout), each event with the file it came from.
#[test]
fn multiline_joins_a_files_stack_traces() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut trace = String::new();
    for seq in 0..50 {
        trace.push_str(&format!("ERROR request failed seq={seq}\n"));
        trace.push_str("  at com.example.Handler.run(Handler.java:42)\n");
        trace.push_str("  at java.base/java.lang.Thread.run(Thread.java:833)\n");
    }
    trace.push_str("INFO done seq=50\n");
    std::fs::write(logs.join("app.log"), trace).unwrap();
    let transform = "[transforms.joined]\ntype = \"multiline\"\ninputs = [\"local\"]\n\
                     continuation_pattern = '^\\s+at '\ntimeout = \"200ms\"\n";
    let cfg = file_config(
        dir.path(),
        "*.log",
        "read_from = \"beginning\"\nparser = \"raw\"",
    )
    .replace(
        "[sinks.out]",
        &format!("{transform}[sinks.out]\ninputs = [\"joined\"]"),
    );
    let sluice = Sluice::start(dir.path(), &cfg);
    let d = dir.path();
    wait_for("51 events", || read_events(d).len() == 51);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let events = read_events(d);
    let first = events
        .iter()
        .find(|e| e["message"].as_str().is_some_and(|m| m.contains("seq=0\n")))
        .unwrap();
    assert_eq!(
        first["message"],
        "ERROR request failed seq=0\n  at com.example.Handler.run(Handler.java:42)\n  at java.base/java.lang.Thread.run(Thread.java:833)"
    );
    assert_eq!(first["file"], logs.join("app.log").display().to_string());
}
