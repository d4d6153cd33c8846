//! The writer and reader together on a real glommio executor and real files.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use storage::io::GlommioFs;
use storage::segment::{list_segments, segment_path, SEGMENT_HEADER_LEN};
use storage::writer::AppendError;
use storage::RecoveryMode;
use storage::{
    recover_shard, Cursor, DurableWatermark, FsyncPolicy, Position, WalAppender, WalFlusher,
    WalReader, WalStart,
};

/// Appends `payloads` through a real flusher and closes the WAL; returns the final watermark.
fn write_all(
    dir: &std::path::Path,
    payloads: Vec<Vec<u8>>,
    policy: FsyncPolicy,
    segment_size: u64,
) -> Position {
    let dir = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let report = recover_shard(&dir, RecoveryMode::default()).unwrap();
            let appender = WalAppender::new(4096, policy);
            let watermark = Arc::new(DurableWatermark::new());
            let flusher = WalFlusher::open(
                GlommioFs,
                &dir,
                report.start(),
                segment_size,
                Rc::clone(&appender),
                Arc::clone(&watermark),
                Box::new(|| {}),
            )
            .await
            .unwrap();
            let task = glommio::spawn_local(flusher.run());
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
            watermark.load()
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

fn payloads(n: usize, tag: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{tag}-{i}-{}", "x".repeat(i % 300)).into_bytes())
        .collect()
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
                Box::new(|| {}),
            )
            .await
            .unwrap()
            .with_retry_interval(Duration::from_millis(5));
            let task = glommio::spawn_local(flusher.run());
            // The next segment cannot reserve its space, twice: the disk is full.
            sim.inject(Fault::PreallocateNoSpace);
            sim.inject(Fault::PreallocateNoSpace);
            let all = payloads(300, 9);
            for p in &all {
                while appender
                    .try_append(p.len(), |b| b.extend_from_slice(p))
                    .is_err()
                {
                    appender.wait_for_space().await;
                }
            }
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
