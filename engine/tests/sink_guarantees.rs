//! Sinks never lose or destroy data: a receiver killed mid-delivery, a foreign file at the
//! sink's path, the output directory deleted, logrotate's rename (the real binary, real
//! sockets and files).

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A receiver that "dies" like a killed process: after taking `die_after` frames on a
/// connection it closes it with unread bytes in its receive buffer (the kernel discards them
/// and resets the connection) and stops listening for a moment, `deaths` times; then it
/// reads everything.
struct DyingReceiver {
    seqs: Arc<Mutex<HashSet<u64>>>,
    done: Arc<AtomicBool>,
}

impl DyingReceiver {
    fn start(addr: SocketAddr, deaths: usize, die_after: usize) -> Self {
        let seqs: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let done = Arc::new(AtomicBool::new(false));
        let (seqs2, done2) = (Arc::clone(&seqs), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut lives = 0;
            while !done2.load(Ordering::Acquire) {
                let listener = listen_with_large_buffer(addr);
                let conn = loop {
                    match listener.accept() {
                        Ok((c, _)) => break Some(c),
                        Err(_) if done2.load(Ordering::Acquire) => break None,
                        Err(_) => std::thread::sleep(Duration::from_millis(2)),
                    }
                };
                let Some(mut conn) = conn else { return };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let limit = if lives < deaths {
                    die_after
                } else {
                    usize::MAX
                };
                read_frames(&mut conn, limit, &seqs2, &done2);
                lives += 1;
                drop(listener);
                // Dead for a moment: connects are refused.
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        DyingReceiver { seqs, done }
    }

    fn distinct(&self) -> usize {
        self.seqs.lock().unwrap().len()
    }
}

impl Drop for DyingReceiver {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Release);
    }
}

fn listen_with_large_buffer(addr: SocketAddr) -> TcpListener {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.set_recv_buffer_size(4 << 20).unwrap();
    socket.bind(&addr.into()).unwrap();
    socket.listen(16).unwrap();
    socket.set_nonblocking(true).unwrap();
    socket.into()
}

/// Newline-framed lines; slow small reads so the kernel's buffer holds data when it "dies".
fn read_frames(
    conn: &mut std::net::TcpStream,
    limit: usize,
    seqs: &Mutex<HashSet<u64>>,
    done: &AtomicBool,
) {
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut taken = 0;
    while taken < limit && !done.load(Ordering::Acquire) {
        let n = match conn.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            if let Some(seq) = seq_of(&pending[..end]) {
                seqs.lock().unwrap().insert(seq);
                taken += 1;
            }
            pending.drain(..=end);
        }
    }
}

#[test]
fn killing_the_receiver_three_times_costs_duplicates_never_loss() {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let receiver = DyingReceiver::start(addr, 3, 4_000);
    // (The receive buffer is large, so whole batches are acknowledged while the receiver
    // has read only part of them: what it holds unread when it dies was confirmed.)
    let sink = format!(
        "[sinks.fwd]\ntype = \"tcp\"\naddress = \"{addr}\"\nframing = \"newline\"\ninitial_backoff = \"10ms\"\nmax_backoff = \"100ms\"\n"
    );
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &sink));
    const N: u64 = 30_000;
    let mut payload = String::new();
    for seq in 0..N {
        payload.push_str(&rfc5424_line("kill", seq));
        payload.push('\n');
    }
    send_tcp(sluice.addr("tcp"), payload.as_bytes());
    let deadline = std::time::Instant::now() + PATIENCE;
    while (receiver.distinct() as u64) < N && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if (receiver.distinct() as u64) < N {
        let missing: Vec<u64> = (0..N)
            .filter(|s| !receiver.seqs.lock().unwrap().contains(s))
            .collect();
        panic!(
            "{} missing, first {:?}\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            sluice.log()
        );
    }
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("re-sending the replay window"), "{log}");
}

#[test]
fn a_foreign_file_at_the_sink_path_is_left_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(dir.path());
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let original = b"not Sluice's: a config, a binary, /etc/passwd...\nno newline at the end";
    std::fs::write(&out, original).unwrap();
    let config_path = dir.path().join("sluice.toml");
    std::fs::write(&config_path, config(dir.path(), 1, &file_sink(dir.path()))).unwrap();
    let run = std::process::Command::new(sluice_bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "refused at start: {stderr}");
    assert!(
        stderr.contains("not created by this sink") && stderr.contains("append_existing"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), original);
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing created beside it: {names:?}");
}

fn seqs_in(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| seq_of(l.as_bytes()))
        .collect()
}

fn send_lines(addr: SocketAddr, range: std::ops::Range<u64>) {
    let mut payload = String::new();
    for seq in range {
        payload.push_str(&rfc5424_line("f", seq));
        payload.push('\n');
    }
    send_tcp(addr, payload.as_bytes());
}

/// logrotate: `mv` then SIGHUP. Everything before is in the renamed file, everything after
/// in a new file at the path.
#[test]
fn rename_then_hup_sends_every_later_event_to_the_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(dir.path());
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &file_sink(dir.path())));
    send_lines(sluice.addr("tcp"), 0..1_000);
    wait_for("first events", || seqs_in(&out).len() == 1_000);
    let rotated = out.with_extension("ndjson.1");
    std::fs::rename(&out, &rotated).unwrap();
    signal(&sluice.child, libc::SIGHUP);
    send_lines(sluice.addr("tcp"), 1_000..3_000);
    wait_for("later events in the new file", || {
        seqs_in(&out).len() == 2_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert_eq!(seqs_in(&rotated), (0..1_000).collect::<Vec<_>>());
    assert_eq!(seqs_in(&out), (1_000..3_000).collect::<Vec<_>>());
}

/// The output directory deleted: recreated, and every event sent after it is in the new file.
#[test]
fn a_deleted_output_directory_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let out = out_path(dir.path());
    let sluice = Sluice::start(dir.path(), &config(dir.path(), 1, &file_sink(dir.path())));
    send_lines(sluice.addr("tcp"), 0..500);
    wait_for("first events", || seqs_in(&out).len() == 500);
    std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
    send_lines(sluice.addr("tcp"), 500..2_500);
    wait_for("later events in the new file", || {
        seqs_in(&out).len() == 2_000
    });
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert_eq!(seqs_in(&out), (500..2_500).collect::<Vec<_>>());
}
