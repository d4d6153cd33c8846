//! The fast path (issue 16) against the real binary: an output whose destination stalls falls
//! behind its in-memory ring, reads the segment files, catches up and returns to memory; what
//! it delivered is exactly the WAL's sequence read from the files. Both with WAL writes through
//! the page cache and with O_DIRECT (`wal.io`), and an output reading recycled O_DIRECT
//! segments from disk.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// A receiver of octet-counted frames that keeps every frame's `seq=` in arrival order and
/// can stop reading. Its receive buffer is small, so a pause stalls the sender at once
/// (the sink confirms only what the receiver's kernel acknowledged).
struct OrderedReceiver {
    addr: SocketAddr,
    seqs: Arc<Mutex<Vec<u64>>>,
    paused: Arc<AtomicBool>,
}

impl OrderedReceiver {
    fn start() -> Self {
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        socket.bind(&any.into()).unwrap();
        socket.listen(4).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let (seqs2, paused2) = (Arc::clone(&seqs), Arc::clone(&paused));
        std::thread::spawn(move || {
            // One connection at a time, in order (a reconnect would show as duplicates).
            for conn in listener.incoming().flatten() {
                read_frames(conn, &seqs2, &paused2);
            }
        });
        OrderedReceiver { addr, seqs, paused }
    }

    fn received(&self) -> Vec<u64> {
        self.seqs.lock().unwrap().clone()
    }
}

fn read_frames(mut conn: TcpStream, seqs: &Mutex<Vec<u64>>, paused: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 << 10];
    loop {
        while paused.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let n = match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        take_octet_frames(&mut buf, |frame| {
            let seq = seq_of(frame).expect("a frame with seq=");
            seqs.lock().unwrap().push(seq);
        });
    }
}

fn send(conn: &mut TcpStream, range: std::ops::Range<u64>) {
    let mut bytes = Vec::new();
    for seq in range {
        bytes.extend_from_slice(octet(&rfc5424_line("fast", seq)).as_bytes());
    }
    conn.write_all(&bytes).unwrap();
}

/// Sends `range` and waits until the WAL holds it (so every chunk is at least one commit).
fn send_durable(
    conn: &mut TcpStream,
    range: std::ops::Range<u64>,
    api: SocketAddr,
    dir: &std::path::Path,
) {
    let end = range.end;
    send(conn, range);
    wait_for_metric(api, dir, "sluice_events_durable_total", end as f64);
}

#[test]
fn a_stalled_output_falls_back_to_the_files_and_delivers_exactly_the_wal_sequence() {
    let blocks = stalled_output_delivers_the_wal_sequence("io = \"buffered\"");
    assert_eq!(blocks, 0.0, "commits are written plain unless configured");
}

#[test]
fn with_direct_writes_a_stalled_output_reads_them_back_from_disk_in_sequence() {
    stalled_output_delivers_the_wal_sequence("io = \"direct\"");
}

/// Commits written as compressed blocks: the output reads them whole from memory while it
/// keeps up and from the files (decompressing) when it fell behind; the same sequence.
#[test]
fn with_compressed_commits_a_stalled_output_delivers_exactly_the_wal_sequence() {
    let blocks = stalled_output_delivers_the_wal_sequence("commit_compression = \"zstd\"");
    assert!(blocks > 0.0, "commits were written as compressed blocks");
}

/// Runs the stall-and-catch-up scenario with `wal_lines` added to `[wal]`; returns
/// `sluice_wal_block_commits_total` at the end.
fn stalled_output_delivers_the_wal_sequence(wal_lines: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let receiver = OrderedReceiver::start();
    let sink = format!(
        "[sinks.relay]\ntype = \"tcp\"\naddress = \"{}\"\nframing = \"octet_counting\"\nencoding = \"raw\"\nwrite_timeout = \"10m\"\n",
        receiver.addr
    );
    // One shard: the output's stream is the shard's WAL order. One segment holds it all
    // (nothing recycled), so the files can be read back at the end.
    let text = config(dir.path(), 1, &sink).replace(
        "segment_size = \"4MiB\"",
        &format!(
            "segment_size = \"64MiB\"\nready_segments = 0\nfast_path_commits = 4\n{wal_lines}"
        ),
    );
    let sluice = Sluice::start(dir.path(), &text);
    let api = sluice.addr("api");
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    let wait_received =
        |n: usize| wait_for("the receiver got them", || receiver.received().len() == n);
    // Keeping up: from memory.
    let mut next = 0u64;
    for _ in 0..5 {
        send_durable(&mut conn, next..next + 200, api, dir.path());
        next += 200;
        wait_received(next as usize);
    }
    // The destination stalls: commits go on, its ring (4 commits) overflows.
    receiver.paused.store(true, Ordering::Release);
    let mut chunks = 0;
    while chunks < 8 || metric_sum(api, dir.path(), "sluice_wal_fast_path_full_total") < 4.0 {
        send_durable(&mut conn, next..next + 500, api, dir.path());
        next += 500;
        chunks += 1;
        assert!(chunks < 200, "the ring never overflowed");
    }
    // It catches up (from the files), then keeps up again (from memory).
    receiver.paused.store(false, Ordering::Release);
    wait_received(next as usize);
    let file_bytes_after_catch_up = metric_labeled(
        api,
        dir.path(),
        "sluice_output_wal_read_bytes_total",
        "from=\"file\"",
    );
    let memory_before = metric_labeled(
        api,
        dir.path(),
        "sluice_output_wal_read_bytes_total",
        "from=\"memory\"",
    );
    for _ in 0..5 {
        send_durable(&mut conn, next..next + 200, api, dir.path());
        next += 200;
        wait_received(next as usize);
    }
    let memory_after = metric_labeled(
        api,
        dir.path(),
        "sluice_output_wal_read_bytes_total",
        "from=\"memory\"",
    );
    let blocks = metric_sum(api, dir.path(), "sluice_wal_block_commits_total");
    drop(conn);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");

    assert!(
        file_bytes_after_catch_up > 0.0,
        "the stalled output read the files"
    );
    assert!(memory_before > 0.0, "it read memory before the stall");
    assert!(memory_after > memory_before, "and again after catching up");
    // The file path's sequence: the shard's WAL as the files stand.
    let mut from_files = Vec::new();
    storage::read_on_disk(&dir.path().join("data/shard-0"), None, |_, payload| {
        from_files.push(seq_of(payload).unwrap());
    })
    .unwrap();
    assert_eq!(from_files, (0..next).collect::<Vec<_>>());
    let delivered = receiver.received();
    assert!(
        delivered == from_files,
        "the output delivered exactly the WAL's sequence ({} vs {} events)",
        delivered.len(),
        from_files.len()
    );
    blocks
}

/// O_DIRECT into recycled segment files, read back by an output that only reads files
/// (`fast_path_commits = 0`): every event arrives once, in order, although each recycled file
/// still holds an older segment's records behind the write position.
#[test]
fn recycled_direct_segments_deliver_every_event_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = OrderedReceiver::start();
    let sink = format!(
        "[sinks.relay]\ntype = \"tcp\"\naddress = \"{}\"\nframing = \"octet_counting\"\nencoding = \"raw\"\n",
        receiver.addr
    );
    let text = config(dir.path(), 1, &sink).replace(
        "segment_size = \"4MiB\"",
        "segment_size = \"1MiB\"\nbuffer_size = \"256KiB\"\nready_segments = 2\nfast_path_commits = 0\nio = \"direct\"",
    );
    let sluice = Sluice::start(dir.path(), &text);
    let api = sluice.addr("api");
    let mut conn = TcpStream::connect(sluice.addr("tcp")).unwrap();
    let mut next = 0u64;
    // Until delivered segments came back as ready files and were written again.
    while metric_sum(api, dir.path(), "sluice_wal_segments_recycled_total") < 2.0 || next < 60_000 {
        send_durable(&mut conn, next..next + 5_000, api, dir.path());
        next += 5_000;
        wait_for("the receiver got them", || {
            receiver.received().len() == next as usize
        });
        assert!(next < 2_000_000, "no segment was ever recycled");
    }
    let from_ready = metric_sum(api, dir.path(), "sluice_wal_segments_from_ready_total");
    drop(conn);
    let (status, log) = sluice.stop();
    assert!(status.success(), "{log}");
    assert!(from_ready >= 2.0, "new segments came from ready files");
    assert!(
        receiver.received() == (0..next).collect::<Vec<_>>(),
        "every event once, in order"
    );
}
