//! A full disk under load: ingest blocks (TCP backpressure), nothing is lost, and ingest
//! resumes by itself once space returns. Runs on a real 16 MiB tmpfs (needs root to mount).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "this test mounts a tmpfs and needs root (CI runs as root)"
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn full_disk_blocks_ingest_then_resumes_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("mnt"), "16m");
    // Leave about 5 MiB: real bytes (tmpfs does not count holes).
    let filler = mnt.0.join("filler");
    std::fs::write(&filler, vec![7u8; 11 << 20]).unwrap();

    // The sink's destination does not listen yet: nothing is delivered, nothing deleted.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sink = format!(
        "[sinks.forward]\ntype = \"tcp\"\naddress = \"127.0.0.1:{port}\"\ninitial_backoff = \"10ms\"\nmax_backoff = \"100ms\"\n"
    );
    let cfg = config(dir.path(), 1, &sink)
        .replace(
            &format!("data_dir = \"{}\"", dir.path().join("data").display()),
            &format!("data_dir = \"{}\"", mnt.0.join("data").display()),
        )
        .replace(
            "segment_size = \"4MiB\"",
            // The file system's own ENOSPC is under test here, not the min_free_disk floor.
            "segment_size = \"1MiB\"\nbuffer_size = \"256KiB\"\nmin_free_disk = \"0\"",
        );
    let sluice = Sluice::start(dir.path(), &cfg);

    // ~30 MB of events: far more than the disk and every socket buffer on the way can hold.
    const TOTAL: u64 = 100_000;
    let addr = sluice.addr("tcp");
    let sender = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut batch = Vec::new();
        for seq in 0..TOTAL {
            batch.extend_from_slice(octet(&rfc5424_line("full", seq)).as_bytes());
            if batch.len() > 64 << 10 {
                s.write_all(&batch).unwrap();
                batch.clear();
            }
        }
        s.write_all(&batch).unwrap();
    });
    wait_for("the WAL to block on the full disk", || {
        sluice.log().contains("ingest blocked")
    });
    assert!(
        !sender.is_finished(),
        "a blocked WAL pushes back on the sender"
    );

    std::fs::remove_file(&filler).unwrap();
    wait_for("ingest to resume", || {
        sluice.log().contains("WAL writable again")
    });
    let receiver = Receiver::start_at(&format!("127.0.0.1:{port}"), 0);
    let deadline = std::time::Instant::now() + PATIENCE;
    while !sender.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sender never finished; sluice log:\n{}",
            sluice.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sender.join().unwrap();
    wait_for("every event delivered", || {
        receiver.distinct() as u64 >= TOTAL
    });
    // data_dir (and the API token in it) is on the small file system.
    let (api, d) = (sluice.addr("api"), mnt.0.as_path());
    wait_for_metric(api, d, "sluice_events_durable_total", TOTAL as f64);
    assert_eq!(metric_sum(api, d, "sluice_wal_lost_records_total"), 0.0);
    assert!(metric_sum(api, d, "sluice_wal_io_failures_total") >= 1.0);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    let seqs = receiver.seqs.lock().unwrap();
    assert!((0..TOTAL).all(|s| seqs.contains_key(&s)), "no event lost");
}
