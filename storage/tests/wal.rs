//! The writer and reader together on a real glommio executor and real files.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use storage::io::GlommioFs;
use storage::segment::{list_segments, segment_path, SEGMENT_HEADER_LEN};
use storage::writer::AppendError;
use storage::RecoveryMode;
use storage::{
    recover_shard, CommitCompression, Cursor, DurableWatermark, FsyncPolicy, Position, WalAppender,
    WalFlusher, WalReader, WalStart,
};

/// Appends `payloads` through a real flusher and closes the WAL; returns the final watermark.
fn write_all(
    dir: &std::path::Path,
    payloads: Vec<Vec<u8>>,
    policy: FsyncPolicy,
    segment_size: u64,
) -> Position {
    let fs = GlommioFs::default();
    write_compressed(
        fs,
        dir,
        payloads,
        policy,
        segment_size,
        CommitCompression::None,
    )
    .0
}

/// A writer (4 KiB pending buffer) on `dir` from `start`, commits compressed or not, its
/// flusher running.
async fn start_writer<F: storage::io::SegmentFs + 'static>(
    fs: F,
    dir: &std::path::Path,
    start: WalStart,
    segment_size: u64,
    policy: FsyncPolicy,
    compression: CommitCompression,
) -> (
    Rc<WalAppender>,
    Arc<DurableWatermark>,
    glommio::Task<Result<(), storage::StorageError>>,
) {
    let appender = WalAppender::new(4096, policy);
    let watermark = Arc::new(DurableWatermark::new());
    let flusher = WalFlusher::open(
        fs,
        dir,
        start,
        segment_size,
        Rc::clone(&appender),
        Arc::clone(&watermark),
        Box::new(|_| {}),
    )
    .await
    .unwrap()
    .with_commit_compression(compression)
    .unwrap();
    let task = glommio::spawn_local(flusher.run());
    (appender, watermark, task)
}

/// Appends `payloads` through a real flusher, commits compressed or not, and closes the WAL;
/// returns the final watermark and the commits written as compressed blocks.
fn write_compressed(
    fs: GlommioFs,
    dir: &std::path::Path,
    payloads: Vec<Vec<u8>>,
    policy: FsyncPolicy,
    segment_size: u64,
    compression: CommitCompression,
) -> (Position, u64) {
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let report = recover_shard(&dir, RecoveryMode::default()).unwrap();
            let (appender, watermark, task) =
                start_writer(fs, &dir, report.start(), segment_size, policy, compression).await;
            for p in payloads {
                loop {
                    match appender.try_append(p.len(), |b| b.extend_from_slice(&p)) {
                        Ok(()) => break,
                        Err(AppendError::Full) => appender.wait_for_space().await,
                        Err(AppendError::Stopped) => panic!("stopped"),
                    }
                }
            }
            appender.wait_durable().await;
            assert_eq!(
                appender.stats.durable_records.get(),
                appender.stats.appended_records.get()
            );
            appender.close();
            task.await.unwrap();
            (watermark.load(), appender.stats.block_commits.get())
        })
        .unwrap()
        .join()
        .unwrap()
}

fn read_all(
    dir: &std::path::Path,
    from: Option<Cursor>,
    durable: Position,
) -> (Vec<Vec<u8>>, Cursor) {
    let mut reader = WalReader::open(dir, from).unwrap();
    let mut out = Vec::new();
    while reader
        .read_batch(durable, 1000, |p| out.push(p.to_vec()))
        .unwrap()
        .records
        > 0
    {}
    (out, reader.cursor())
}

/// Appends every payload, waiting for space (or for a blocked WAL to resume) as needed.
async fn append_all(appender: &WalAppender, all: &[Vec<u8>]) {
    for p in all {
        while appender
            .try_append(p.len(), |b| b.extend_from_slice(p))
            .is_err()
        {
            appender.wait_for_space().await;
        }
    }
}

fn payloads(n: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(i % 300)).into_bytes())
        .collect()
}

/// O_DIRECT writes whole blocks (the active segment's length is a multiple of 4096 while it
/// is written), yet the sealed segments are byte for byte those of buffered writes.
#[test]
fn direct_and_buffered_writes_leave_identical_segments() {
    use storage::io::WalIo;
    let all = payloads(1500, 3);
    let mut files = Vec::new();
    for io in [WalIo::Direct, WalIo::Buffered] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let payloads = all.clone();
        let active_lengths = LocalExecutorBuilder::new(Placement::Unbound)
            .spawn(move || async move {
                let start = WalStart {
                    segment: 1,
                    record_id: 1,
                };
                let (appender, watermark, task) = start_writer(
                    GlommioFs::new(io),
                    &path,
                    start,
                    64 * 1024,
                    FsyncPolicy::Always,
                    CommitCompression::None,
                )
                .await;
                let mut lengths = Vec::new();
                for chunk in payloads.chunks(97) {
                    append_all(&appender, chunk).await;
                    appender.wait_durable().await;
                    let wm = watermark.load();
                    let len = std::fs::metadata(segment_path(&path, wm.segment))
                        .unwrap()
                        .len();
                    lengths.push((wm.offset, len));
                }
                appender.close();
                task.await.unwrap();
                lengths
            })
            .unwrap()
            .join()
            .unwrap();
        for (offset, len) in active_lengths {
            match io {
                WalIo::Direct => assert!(len % 4096 == 0 && len >= offset, "{offset} {len}"),
                WalIo::Buffered => assert_eq!(len, offset),
            }
        }
        let segments: Vec<Vec<u8>> = list_segments(dir.path())
            .unwrap()
            .into_iter()
            .map(|n| std::fs::read(segment_path(dir.path(), n)).unwrap())
            .collect();
        assert!(segments.len() >= 3, "rotated");
        files.push(segments);
    }
    assert!(files[0] == files[1], "the same bytes either way");
}

fn wal_bytes(dir: &std::path::Path) -> u64 {
    list_segments(dir)
        .unwrap()
        .into_iter()
        .map(|n| std::fs::metadata(segment_path(dir, n)).unwrap().len())
        .sum()
}

/// Commits written as compressed blocks: fewer bytes on disk, the same records from every
/// cursor a reader stops at (never inside a block), the same ids, recovery after a torn
/// block keeps every whole commit before it.
#[test]
fn compressed_commits_read_the_same_from_every_cursor() {
    let all = payloads(3000, 4);
    let (plain, packed) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let policy = FsyncPolicy::Interval(Duration::from_millis(1));
    let none = CommitCompression::None;
    let zstd = CommitCompression::Zstd { level: 1 };
    let (_, no_blocks) = write_compressed(
        GlommioFs::default(),
        plain.path(),
        all.clone(),
        policy,
        16 * 1024,
        none,
    );
    let (wm, blocks) = write_compressed(
        GlommioFs::default(),
        packed.path(),
        all.clone(),
        policy,
        16 * 1024,
        zstd,
    );
    assert_eq!(no_blocks, 0);
    assert!(blocks > 10, "{blocks} blocks");
    let (plain_bytes, packed_bytes) = (wal_bytes(plain.path()), wal_bytes(packed.path()));
    assert!(
        packed_bytes * 3 < plain_bytes,
        "{packed_bytes} of {plain_bytes}"
    );
    let segments = list_segments(packed.path()).unwrap();
    assert!(segments.len() >= 2, "rotated");
    // Every sealed segment's footer chains the records inside its blocks.
    for n in &segments[..segments.len() - 1] {
        let scan = storage::segment::scan_segment(packed.path(), *n).unwrap();
        let footer = scan.footer.expect("sealed");
        assert_eq!(footer.covers, storage::segment::FooterChecksum::Records);
        assert_eq!(footer.checksum, scan.records_checksum);
    }

    // Batches smaller than any block: each takes one whole block; resuming from there reads
    // the rest.
    let mut reader = WalReader::open(packed.path(), None).unwrap();
    let mut got: Vec<Vec<u8>> = Vec::new();
    loop {
        let cursor = reader.cursor();
        if cursor.next_id != 0 {
            assert_eq!(
                cursor.next_id,
                got.len() as u64 + 1,
                "ids follow the records"
            );
            let (rest, _) = read_all(packed.path(), Some(cursor), wm);
            assert_eq!(rest[..], all[got.len()..], "from {cursor:?}");
        }
        if reader
            .read_batch(wm, 64, |p| got.push(p.to_vec()))
            .unwrap()
            .records
            == 0
        {
            break;
        }
    }
    assert_eq!(got, all);
    let mut from_id = Vec::new();
    storage::read_on_disk(packed.path(), Some(2500), |id, p| {
        from_id.push((id, p.to_vec()))
    })
    .unwrap();
    assert_eq!(from_id.first().map(|(id, _)| *id), Some(2500));
    assert_eq!(from_id.len(), 501);
    assert_eq!(
        recover_shard(packed.path(), RecoveryMode::default())
            .unwrap()
            .start()
            .record_id,
        3001
    );

    // Cut the newest segment inside its last block: recovery drops that commit only.
    let newest = *list_segments(packed.path()).unwrap().last().unwrap();
    let path = segment_path(packed.path(), newest);
    let len = std::fs::metadata(&path).unwrap().len();
    let footer_len = storage::segment::FOOTER_FRAME_LEN as u64;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len - footer_len - 5).unwrap();
    let report = recover_shard(packed.path(), RecoveryMode::default()).unwrap();
    let kept = report.start().record_id - 1;
    assert!(kept < 3000 && kept > 2000, "kept {kept}");
    let end = Position {
        segment: report.start().segment,
        offset: SEGMENT_HEADER_LEN,
    };
    let (read, _) = read_all(packed.path(), None, end);
    assert_eq!(read[..], all[..kept as usize]);
}

#[test]
fn records_survive_rotation_and_reopen_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let first = payloads(2000, 1);
    let wm = write_all(
        dir.path(),
        first.clone(),
        FsyncPolicy::Interval(Duration::from_millis(2)),
        64 * 1024,
    );
    assert!(
        list_segments(dir.path()).unwrap().len() >= 4,
        "rotation happened"
    );
    let (got, pos) = read_all(dir.path(), None, wm);
    assert_eq!(got, first);

    // Reopen: a new segment starts; a reader resuming from its cursor sees only the new records.
    let second = payloads(300, 2);
    let wm2 = write_all(dir.path(), second.clone(), FsyncPolicy::Always, 64 * 1024);
    assert!(wm2.segment > wm.segment);
    let (got, _) = read_all(dir.path(), Some(pos), wm2);
    assert_eq!(got, second);
}

#[test]
fn reader_never_passes_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let wm = write_all(dir.path(), payloads(50, 3), FsyncPolicy::Never, 1 << 20);
    let (all, _) = read_all(dir.path(), None, wm);
    assert_eq!(all.len(), 50);
    // A watermark in the middle of the segment: only the records before it.
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let mut first_ten = 0usize;
    let mut positions = Vec::new();
    reader.read_batch(wm, 1 << 20, |_| first_ten += 1).unwrap();
    assert_eq!(first_ten, 50);
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let half = Position {
        segment: wm.segment,
        offset: SEGMENT_HEADER_LEN + 8 + all[0].len() as u64,
    };
    reader
        .read_batch(half, 1 << 20, |p| positions.push(p.to_vec()))
        .unwrap();
    assert_eq!(positions, vec![all[0].clone()]);
}

#[test]
fn torn_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = payloads(100, 4);
    write_all(dir.path(), first.clone(), FsyncPolicy::Always, 1 << 20);
    let last = *list_segments(dir.path()).unwrap().last().unwrap();
    let path = segment_path(dir.path(), last);
    let mut bytes = std::fs::read(&path).unwrap();
    // A crash: no footer yet, and half a record after the last whole one.
    let footer = storage::segment::scan_bytes(&bytes, last).footer.unwrap();
    assert_eq!((footer.records, footer.first_id), (100, 1));
    bytes.truncate(footer.data_end as usize);
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 5]);
    std::fs::write(&path, &bytes).unwrap();
    let report = recover_shard(dir.path(), RecoveryMode::default()).unwrap();
    assert_eq!(report.truncated_bytes, 9);
    assert!(
        report.sealed_newest,
        "recovery seals what the crash left open"
    );
    assert_eq!(report.next_record_id, 101);
    let rescanned = storage::segment::scan_segment(dir.path(), last).unwrap();
    assert_eq!((rescanned.footer, rescanned.damage), (Some(footer), None));
    let (got, _) = read_all(
        dir.path(),
        None,
        Position {
            segment: last + 1,
            offset: SEGMENT_HEADER_LEN,
        },
    );
    assert_eq!(got, first);
}

/// After recovery the watermark names the segment the writer makes next at offset 0. Until
/// the writer publishes it, its file may be mid-creation (a recycled ready file renamed,
/// still holding an older segment's bytes): a reader must not open it, or it would count
/// damage that is not there (and, idle, keep trying to open a file that is not there yet).
#[test]
fn the_next_segment_is_not_opened_before_the_writer_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = payloads(20, 6);
    write_all(dir.path(), first.clone(), FsyncPolicy::Always, 1 << 20);
    let report = recover_shard(dir.path(), RecoveryMode::default()).unwrap();
    let next = report.next_segment();
    let last = *list_segments(dir.path()).unwrap().last().unwrap();
    std::fs::copy(
        segment_path(dir.path(), last),
        segment_path(dir.path(), next),
    )
    .unwrap();
    let durable = Position {
        segment: next,
        offset: 0,
    };
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        reader
            .read_batch(durable, 1 << 20, |p| got.push(p.to_vec()))
            .unwrap();
    }
    assert_eq!(reader.next_id(durable).unwrap(), 0, "not known yet");
    assert_eq!(got, first);
    assert_eq!(reader.position().segment, next);
    assert_eq!(reader.damaged_skips, 0);
}

/// `"auto"` on a real writer: on a disk whose every fdatasync takes 5 ms, the 2 ms commits
/// keep it busy (each waits for the one before), so after the first ~100 ms window commits
/// go out as compressed blocks. (The rule's thresholds are unit-tested in
/// `storage::pressure`; that a fast disk stays plain depends on the host's fdatasync, so it is
/// not asserted here.)
#[test]
fn auto_compresses_commits_while_the_disk_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (blocks, commits) = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let fs = storage::sim::SimFs::new().with_fsync_delay(Duration::from_millis(5));
            let report = recover_shard(&path, RecoveryMode::default()).unwrap();
            let (appender, _, task) = start_writer(
                fs,
                &path,
                report.start(),
                64 << 20,
                FsyncPolicy::Interval(Duration::from_millis(2)),
                CommitCompression::Auto { level: 1 },
            )
            .await;
            // Load for ~0.4 s (four pressure windows), a burst every millisecond.
            let started = std::time::Instant::now();
            let mut n = 0;
            while started.elapsed() < Duration::from_millis(400) {
                append_all(&appender, &payloads(20, (n % 200) as u8)).await;
                n += 1;
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            appender.wait_durable().await;
            appender.close();
            task.await.unwrap();
            let stats = &appender.stats;
            (stats.block_commits.get(), stats.fsyncs.get())
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        blocks > 0,
        "no compressed commit among {commits} on a busy disk"
    );
}

#[test]
fn reader_skips_missing_segments_without_walking_every_number() {
    let dir = tempfile::tempdir().unwrap();
    let first = payloads(10, 5);
    let wm = write_all(dir.path(), first.clone(), FsyncPolicy::Always, 1 << 20);
    // A watermark far ahead (segments in between do not exist): returns promptly.
    let far = Position {
        segment: storage::position::MAX_SEGMENT_NUMBER,
        offset: 0,
    };
    let (got, pos) = read_all(dir.path(), None, far);
    assert_eq!(got, first);
    assert_eq!(pos.position.segment, far.segment);
    assert!(wm.segment < far.segment);
}

#[test]
fn disk_full_at_rotation_blocks_then_resumes_losing_nothing() {
    use storage::sim::{Fault, SimFs};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let sim = SimFs::new();
            let appender = WalAppender::new(4096, FsyncPolicy::Always);
            let watermark = Arc::new(DurableWatermark::new());
            let flusher = WalFlusher::open(
                sim.clone(),
                &path,
                WalStart {
                    segment: 1,
                    record_id: 1,
                },
                8192,
                Rc::clone(&appender),
                Arc::clone(&watermark),
                Box::new(|_| {}),
            )
            .await
            .unwrap()
            .with_retry_interval(Duration::from_millis(5));
            let task = glommio::spawn_local(flusher.run());
            // The next segment cannot reserve its space, twice: the disk is full.
            sim.inject(Fault::PreallocateNoSpace);
            sim.inject(Fault::PreallocateNoSpace);
            let all = payloads(300, 9);
            append_all(&appender, &all).await;
            appender.wait_durable().await;
            assert_eq!(
                appender.stats.io_failures.get(),
                1,
                "one blocking episode (two refused attempts)"
            );
            assert_eq!(appender.stats.lost_records.get(), 0, "nothing lost");
            assert_eq!(appender.stats.durable_records.get(), 300);
            appender.close();
            task.await.unwrap();
            let (got, _) = read_all(&path, None, watermark.load());
            assert_eq!(got, all);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn record_ids_continue_across_reopen_and_dump_from_an_id() {
    let dir = tempfile::tempdir().unwrap();
    let first = payloads(700, 6);
    write_all(dir.path(), first.clone(), FsyncPolicy::Always, 64 * 1024);
    let second = payloads(500, 7);
    write_all(dir.path(), second.clone(), FsyncPolicy::Always, 64 * 1024);
    let all = [first, second].concat();
    let mut ids = Vec::new();
    storage::read_on_disk(dir.path(), None, |id, p| {
        assert_eq!(p, &all[(id - 1) as usize][..]);
        ids.push(id);
    })
    .unwrap();
    assert_eq!(ids, (1..=1200).collect::<Vec<u64>>(), "dense, from 1");
    let mut from = Vec::new();
    let n = storage::read_on_disk(dir.path(), Some(1000), |id, _| from.push(id)).unwrap();
    assert_eq!((n, from), (201, (1000..=1200).collect::<Vec<u64>>()));
    // Every segment is sealed, and its footer's ids match what the reader numbered.
    for n in list_segments(dir.path()).unwrap() {
        let scan = storage::segment::scan_segment(dir.path(), n).unwrap();
        let footer = scan.footer.expect("a closed WAL seals its segments");
        assert_eq!(Some(footer.first_id), scan.first_id);
        assert_eq!(footer.covers, storage::segment::FooterChecksum::Records);
    }
}

#[test]
fn compressed_segments_read_the_same_from_any_cursor() {
    use storage::compress::{compress_segment, Compressed};
    let dir = tempfile::tempdir().unwrap();
    let all = payloads(2000, 8);
    let wm = write_all(dir.path(), all.clone(), FsyncPolicy::Always, 64 * 1024);
    // A reader part-way through, before compression: its cursor stays valid after.
    let mut reader = WalReader::open(dir.path(), None).unwrap();
    let mut head = Vec::new();
    reader
        .read_batch(wm, 20_000, |p| head.push(p.to_vec()))
        .unwrap();
    let cursor = reader.cursor();
    assert!(head.len() > 10 && cursor.position.segment == 1);
    let segments = list_segments(dir.path()).unwrap();
    for &n in &segments {
        match compress_segment(dir.path(), n, 3).unwrap() {
            Compressed::Done {
                plain_bytes,
                compressed_bytes,
            } => assert!(compressed_bytes < plain_bytes),
            other => panic!("segment {n}: {other:?}"),
        }
        assert!(!segment_path(dir.path(), n).exists());
    }
    assert_eq!(list_segments(dir.path()).unwrap(), segments);
    let (got, _) = read_all(dir.path(), None, wm);
    assert_eq!(got, all, "from the start");
    let (rest, _) = read_all(dir.path(), Some(cursor), wm);
    assert_eq!([head, rest].concat(), all, "from a cursor inside a segment");
    let info = storage::inspect::inspect_shard(dir.path()).unwrap();
    assert!(info
        .segments
        .iter()
        .all(|s| s.compressed && s.footer.is_some() && s.damage.is_none()));
}

#[test]
fn interrupted_compression_is_cleaned_up_by_recovery() {
    use storage::segment::compressed_path;
    let dir = tempfile::tempdir().unwrap();
    let all = payloads(300, 9);
    write_all(dir.path(), all.clone(), FsyncPolicy::Always, 1 << 20);
    let n = list_segments(dir.path()).unwrap()[0];
    let plain = std::fs::read(segment_path(dir.path(), n)).unwrap();
    // A crash between rename and delete (both forms), and one mid-write (a .tmp).
    let zst = storage::compress::compress_bytes(&plain, 1).unwrap();
    std::fs::write(compressed_path(dir.path(), n), &zst).unwrap();
    let tmp = dir.path().join(format!("{n:020}.wal.zst.tmp"));
    std::fs::write(&tmp, &zst[..zst.len() / 2]).unwrap();
    let report = recover_shard(dir.path(), RecoveryMode::default()).unwrap();
    assert_eq!(report.compression_leftovers, 2);
    assert!(!tmp.exists() && !compressed_path(dir.path(), n).exists());
    assert!(
        segment_path(dir.path(), n).exists(),
        "the plain segment stays"
    );
    let (got, _) = read_all(
        dir.path(),
        None,
        Position {
            segment: report.next_segment(),
            offset: 0,
        },
    );
    assert_eq!(got, all);
}

type Started = (
    Rc<WalAppender>,
    Arc<DurableWatermark>,
    glommio::Task<Result<(), storage::StorageError>>,
);

/// A running writer on real files whose segments count against `budget`.
async fn start_budgeted(
    path: &std::path::Path,
    segment_size: u64,
    budget: &Arc<storage::DiskBudget>,
) -> Started {
    let appender = WalAppender::new(4096, FsyncPolicy::Always);
    let watermark = Arc::new(DurableWatermark::new());
    let flusher = WalFlusher::open_with_budget(
        GlommioFs::default(),
        path,
        WalStart {
            segment: 1,
            record_id: 1,
        },
        segment_size,
        Rc::clone(&appender),
        Arc::clone(&watermark),
        Box::new(|_| {}),
        storage::writer::WalSpace {
            budget: Arc::clone(budget),
            ready: None,
        },
    )
    .await
    .unwrap()
    .with_retry_interval(Duration::from_millis(1));
    let task = glommio::spawn_local(flusher.run());
    (appender, watermark, task)
}

#[test]
fn budget_blocks_until_retention_frees_space_losing_nothing() {
    use storage::{DiskBudget, FullPolicy, Retention};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    const SEGMENT: u64 = 16 * 1024;
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let budget = Arc::new(
                DiskBudget::new(&path, Some(3 * SEGMENT), None, FullPolicy::Block).unwrap(),
            );
            let retention = Retention::new(&path, &["out"], Arc::clone(&budget));
            let (appender, watermark, task) = start_budgeted(&path, SEGMENT, &budget).await;
            let all = payloads(1500, 10);
            let writer = {
                let (appender, all) = (Rc::clone(&appender), all.clone());
                glommio::spawn_local(async move {
                    append_all(&appender, &all).await;
                    appender.wait_durable().await;
                })
            };
            // The output: only once the writer is blocked does it deliver and free space.
            while appender.status() != storage::WalStatus::Blocked {
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            let mut reader = WalReader::open(&path, None).unwrap();
            let mut got = Vec::new();
            while got.len() < all.len() {
                let wm = watermark.load();
                let batch = reader
                    .read_batch(wm, 1 << 20, |p| got.push(p.to_vec()))
                    .unwrap();
                retention
                    .advance("out", reader.position().segment, wm.segment)
                    .unwrap();
                if batch.records == 0 {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                }
                assert!(budget.used() <= 3 * SEGMENT, "over budget");
            }
            writer.await;
            assert_eq!(got, all, "every record, in order");
            let stats = &appender.stats;
            assert!(stats.budget_blocks.get() >= 1);
            assert_eq!(stats.lost_records.get(), 0);
            assert_eq!(stats.io_failures.get(), 0);
            appender.close();
            task.await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}

/// What a `drop_oldest` run left: every payload appended, what is still readable, the
/// records counted as dropped, the budget's use at the end.
struct DropRun {
    all: Vec<Vec<u8>>,
    left: Vec<Vec<u8>>,
    dropped: u64,
    used: u64,
}

const DROP_SEGMENT: u64 = 16 * 1024;

/// Appends 1,500 records into a shard whose budget holds three segments, under `drop_oldest`.
fn run_drop_oldest(path: std::path::PathBuf) -> DropRun {
    use storage::{DiskBudget, FullPolicy};
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let budget = Arc::new(
                DiskBudget::new(&path, Some(3 * DROP_SEGMENT), None, FullPolicy::DropOldest)
                    .unwrap(),
            );
            let (appender, watermark, task) = start_budgeted(&path, DROP_SEGMENT, &budget).await;
            let all = payloads(1500, 11);
            append_all(&appender, &all).await;
            appender.wait_durable().await;
            appender.close();
            task.await.unwrap();
            let (left, _) = read_all(&path, None, watermark.load());
            DropRun {
                all,
                left,
                dropped: budget
                    .dropped_records
                    .load(std::sync::atomic::Ordering::Relaxed),
                used: budget.used(),
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

/// Records an output already confirmed are not counted as dropped when their segment goes.
#[test]
fn drop_oldest_counts_only_records_no_output_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    const CONFIRMED_BELOW: u64 = 300;
    let position = storage::Position {
        segment: 0,
        offset: 0,
    };
    let cursor = storage::Cursor {
        position,
        next_id: CONFIRMED_BELOW,
    };
    storage::write_cursor(dir.path(), "out", cursor).unwrap();
    let run = run_drop_oldest(dir.path().to_path_buf());
    let deleted = (run.all.len() - run.left.len()) as u64;
    assert!(
        deleted > CONFIRMED_BELOW,
        "the test deletes past the cursor"
    );
    // Ids start at 1: ids 1..300 were confirmed.
    assert_eq!(run.dropped, deleted - (CONFIRMED_BELOW - 1));
}

#[test]
fn drop_oldest_deletes_whole_segments_and_counts_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_drop_oldest(dir.path().to_path_buf());
    assert!(run.dropped > 0);
    assert!(run.used <= 3 * DROP_SEGMENT);
    // What is left is exactly the newest records: a suffix, nothing else missing.
    assert_eq!(run.left.len() as u64 + run.dropped, run.all.len() as u64);
    assert_eq!(run.left, run.all[run.dropped as usize..]);
}

/// The disk budget (the `sluice_wal_disk_bytes` gauge) counts what is on disk: after a run of
/// many rotations, its use equals the segment files' sizes, footers included.
#[test]
fn the_budget_counts_exactly_what_is_on_disk() {
    use storage::{DiskBudget, FullPolicy};
    const SEGMENT: u64 = 8 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let used = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let budget = Arc::new(DiskBudget::new(&path, None, None, FullPolicy::Block).unwrap());
            let (appender, _watermark, task) = start_budgeted(&path, SEGMENT, &budget).await;
            append_all(&appender, &payloads(3000, 12)).await;
            appender.wait_durable().await;
            appender.close();
            task.await.unwrap();
            budget.used()
        })
        .unwrap()
        .join()
        .unwrap();
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    let segments = std::fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 20, "many rotations: {segments}");
    assert_eq!(used, on_disk);
}

/// A first start: the pool is still empty at the first commit, so the first segment is a new
/// file (a miss). Once ready files are there, the next commit seals it and goes on in a ready
/// file (one switch, never a second for the same segment), and every record reads back in
/// order across the switch.
#[test]
fn a_new_file_segment_gives_way_to_a_ready_file_at_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    const SEGMENT: u64 = 1 << 20;
    let all = payloads(300, 21);
    let expected = all.clone();
    let (read, stats, segments) = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let wal = common::open_recycling_filled(&path, SEGMENT, 4096, &["out"], false).await;
            let (appender, watermark) = (wal.appender, wal.watermark);
            let task = glommio::spawn_local(wal.flusher.run());
            append_all(&appender, &all[..100]).await;
            appender.wait_durable().await;
            let before = watermark.load().segment;
            wal.ready.fill().unwrap();
            append_all(&appender, &all[100..]).await;
            appender.wait_durable().await;
            let after = watermark.load().segment;
            let stats = ready_stats(&appender);
            appender.close();
            task.await.unwrap();
            let (read, _) = read_all(&path, None, watermark.load());
            (read, stats, (before, after))
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(segments, (1, 2), "the switch started the next segment");
    assert_eq!(stats, (1, 1, 1), "(misses, switches, from ready)");
    assert!(
        read == expected,
        "every record, in order, across the switch"
    );
}

/// The writer's (ready misses, ready switches, segments from ready files).
fn ready_stats(appender: &storage::writer::WalAppender) -> (u64, u64, u64) {
    let s = &appender.stats;
    (
        s.ready_misses.get(),
        s.ready_switches.get(),
        s.segments_from_ready.get(),
    )
}

/// With an empty ready pool at open (a first start: the pool is zero-filled meanwhile) the
/// writer makes no segment yet, but publishes the recovered end; its first commit then takes a
/// ready file that arrived in between: no new file, no switch.
#[test]
fn an_empty_pool_at_open_defers_the_first_segment_to_the_first_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    const SEGMENT: u64 = 1 << 20;
    let all = payloads(50, 13);
    let expected = all.clone();
    let (read, stats, at_open, files_at_open) = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let wal = common::open_recycling_filled(&path, SEGMENT, 4096, &["out"], false).await;
            let (appender, watermark) = (wal.appender, wal.watermark);
            let at_open = watermark.load();
            let files_at_open = list_segments(&path).unwrap().len();
            wal.ready.fill().unwrap();
            let task = glommio::spawn_local(wal.flusher.run());
            append_all(&appender, &all).await;
            appender.wait_durable().await;
            let stats = ready_stats(&appender);
            appender.close();
            task.await.unwrap();
            let (read, _) = read_all(&path, None, watermark.load());
            (read, stats, at_open, files_at_open)
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(
        (at_open.segment, at_open.offset),
        (1, 0),
        "recovered end published"
    );
    assert_eq!(files_at_open, 0, "no segment made at open");
    assert_eq!(stats, (0, 0, 1), "(misses, switches, from ready)");
    assert!(read == expected, "every record, in order");
}

/// Segments written over recycled and zero-filled ready files, on real files through
/// glommio: an output reading as the writer goes delivers exactly the appended stream (never
/// a record an older segment left in a recycled file), retention hands delivered segments
/// back as ready files, and after a restart the same holds (recovery seals the newest segment
/// at its last record, ignoring the old bytes after it).
#[test]
fn recycled_segments_deliver_exactly_the_new_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    const SEGMENT: u64 = 16 << 10;
    let payload = |i: u64| format!("event {i:08} {}", "r".repeat((i % 50) as usize)).into_bytes();
    let (delivered, stats) = LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let mut delivered = Vec::new();
            let mut cursor = None;
            let mut stats = (0, 0, 0);
            let mut next = 0u64;
            for _run in 0..2 {
                let wal = common::open_recycling(&path, SEGMENT, 4096, &["out"]).await;
                let (appender, watermark) = (wal.appender, wal.watermark);
                let (ready, retention, flusher) = (wal.ready, wal.retention, wal.flusher);
                let task = glommio::spawn_local(flusher.run());
                for _ in 0..3000 {
                    let p = payload(next);
                    next += 1;
                    while appender
                        .try_append(p.len(), |b| b.extend_from_slice(&p))
                        .is_err()
                    {
                        appender.wait_for_space().await;
                    }
                    if next.is_multiple_of(200) {
                        appender.wait_durable().await;
                        let (got, at) = read_all(&path, cursor, watermark.load());
                        delivered.extend(got);
                        cursor = Some(at);
                        retention
                            .advance("out", at.position.segment, watermark.load().segment)
                            .unwrap();
                    }
                }
                appender.wait_durable().await;
                let (got, at) = read_all(&path, cursor, watermark.load());
                delivered.extend(got);
                cursor = Some(at);
                stats.0 += appender.stats.segments_from_ready.get();
                stats.1 += ready.recycled.load(std::sync::atomic::Ordering::Relaxed);
                stats.2 += appender.stats.ready_misses.get();
                // The second run starts after a crash: the task is dropped unsealed.
                drop(task);
            }
            (delivered, stats)
        })
        .unwrap()
        .join()
        .unwrap();
    let expected: Vec<Vec<u8>> = (0..6000).map(payload).collect();
    assert_eq!(delivered.len(), expected.len());
    assert!(
        delivered == expected,
        "exactly the appended stream, in order"
    );
    let (from_ready, recycled, misses) = stats;
    assert!(
        recycled >= 10,
        "delivered segments were recycled: {recycled}"
    );
    assert!(
        from_ready >= 20,
        "segments came from ready files: {from_ready}"
    );
    assert_eq!(
        misses, 0,
        "the pool never ran dry with recycling keeping up"
    );
}
