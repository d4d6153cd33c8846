//! Model-based property test of the WAL: random appends, syncs, output acks, injected I/O
//! faults, power-loss crashes (with torn tails) and reopens, against a simple model.
//!
//! Checked after every step:
//! - an output only ever reads records that were reported durable, in append order, once;
//! - after every reopen, what is deliverable from the output's cursor is exactly the durable,
//!   not yet acknowledged records, followed by at most a prefix of records that were written
//!   but never reported durable (a crash may keep some of those; it never reorders or corrupts).

use std::rc::Rc;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement, Task};
use proptest::prelude::*;
use storage::sim::{Fault, SimFs};
use storage::writer::{AppendError, WalStatus};
use storage::{
    read_cursor, recover_shard, write_cursor, DurableWatermark, FsyncPolicy, Position,
    StorageError, WalAppender, WalFlusher, WalReader,
};

#[derive(Clone, Debug)]
enum Op {
    Append(u8),
    Sync,
    Ack,
    Fail(Fault),
    Crash(u16),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..30).prop_map(Op::Append),
        3 => Just(Op::Sync),
        3 => Just(Op::Ack),
        1 => prop_oneof![Just(Fault::WriteEio), Just(Fault::WriteNoSpace), Just(Fault::FsyncEio)].prop_map(Op::Fail),
        1 => (0u16..600).prop_map(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

const SINK: &str = "out";

struct Wal {
    appender: Rc<WalAppender>,
    task: Task<Result<(), StorageError>>,
    watermark: Arc<DurableWatermark>,
}

async fn open(dir: &std::path::Path, sim: &SimFs) -> Wal {
    loop {
        let report = recover_shard(dir, storage::RecoveryMode::default())
            .expect("recovery never fails on torn tails");
        let appender = WalAppender::new(1024, FsyncPolicy::Always);
        let watermark = Arc::new(DurableWatermark::new());
        let opened = WalFlusher::open(
            sim.clone(),
            dir,
            report.next_segment(),
            2048,
            Rc::clone(&appender),
            Arc::clone(&watermark),
            Box::new(|| {}),
        )
        .await;
        match opened {
            Ok(flusher) => {
                return Wal {
                    appender,
                    task: glommio::spawn_local(flusher.run()),
                    watermark,
                }
            }
            // A queued fault hit segment creation: that start failed; power-cycle and retry.
            Err(_) => sim.crash(0).unwrap(),
        }
    }
}

fn payload(id: u64) -> Vec<u8> {
    let mut p = id.to_le_bytes().to_vec();
    p.extend(std::iter::repeat_n(b'p', (id % 97) as usize));
    p
}

fn id_of(p: &[u8]) -> u64 {
    assert_eq!(
        p,
        payload(u64::from_le_bytes(p[..8].try_into().unwrap())),
        "record corrupted"
    );
    u64::from_le_bytes(p[..8].try_into().unwrap())
}

/// Everything readable from the output's cursor up to `durable`.
fn read_from_cursor(dir: &std::path::Path, durable: Position) -> (Vec<u64>, Position) {
    let cursor = read_cursor(dir, SINK).unwrap();
    let mut reader = WalReader::open(dir, cursor).unwrap();
    let mut ids = Vec::new();
    while reader
        .read_batch(durable, 1500, |p| ids.push(id_of(p)))
        .unwrap()
        .records
        > 0
    {}
    (ids, reader.position())
}

#[derive(Default, Debug)]
struct Model {
    next_id: u64,
    /// Accepted by the appender, in order (after a crash: only what survived).
    appended: Vec<u64>,
    /// `appended[..durable]` was reported durable.
    durable: usize,
    /// `appended[..acked]` was delivered and its cursor written.
    acked: usize,
}

fn run_case(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path().to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let sim = SimFs::new();
            let mut wal = open(&dir, &sim).await;
            let mut model = Model::default();
            let mut base = 0; // durable records before this WAL instance
            for op in ops {
                match op {
                    Op::Append(n) => {
                        for _ in 0..n {
                            let p = payload(model.next_id);
                            let accepted = loop {
                                match wal
                                    .appender
                                    .try_append(p.len(), |b| b.extend_from_slice(&p))
                                {
                                    Ok(()) => break true,
                                    Err(AppendError::Full) => wal.appender.wait_for_space().await,
                                    Err(AppendError::Stopped) => break false,
                                }
                            };
                            if accepted {
                                model.appended.push(model.next_id);
                            }
                            model.next_id += 1;
                        }
                    }
                    Op::Sync => wal.appender.wait_durable().await,
                    Op::Fail(fault) => sim.inject(fault),
                    Op::Ack => {
                        let (ids, pos) = read_from_cursor(&dir, wal.watermark.load());
                        let durable = base + wal.appender.stats.durable_records.get() as usize;
                        assert!(
                            model.acked + ids.len() <= durable,
                            "read past the durable point"
                        );
                        assert_eq!(
                            ids,
                            model.appended[model.acked..model.acked + ids.len()],
                            "in order, once"
                        );
                        model.acked += ids.len();
                        write_cursor(&dir, SINK, pos).unwrap();
                    }
                    Op::Crash(torn) => {
                        model.durable = base + wal.appender.stats.durable_records.get() as usize;
                        drop(wal);
                        sim.crash(u64::from(torn)).unwrap();
                        wal = reopen_check(&dir, &sim, &mut model).await;
                        base = model.durable;
                    }
                    Op::Reopen => {
                        let closed_cleanly = wal.appender.status() == WalStatus::Running && {
                            wal.appender.close();
                            (&mut wal.task).await.is_ok()
                        };
                        model.durable = base + wal.appender.stats.durable_records.get() as usize;
                        if closed_cleanly {
                            assert_eq!(
                                model.durable,
                                model.appended.len(),
                                "a clean close makes everything durable"
                            );
                        } else {
                            // A failed WAL cannot close cleanly: it goes down like a crash.
                            drop(wal);
                            sim.crash(0).unwrap();
                        }
                        wal = reopen_check(&dir, &sim, &mut model).await;
                        base = model.durable;
                    }
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// Reopens and checks the deliverable records against the model; folds survivors in.
async fn reopen_check(dir: &std::path::Path, sim: &SimFs, model: &mut Model) -> Wal {
    let wal = open(dir, sim).await;
    let (ids, _) = read_from_cursor(dir, wal.watermark.load());
    let must = &model.appended[model.acked..model.durable];
    assert!(
        ids.len() >= must.len(),
        "durable records lost: have {ids:?}, need {must:?}"
    );
    assert_eq!(
        &ids[..must.len()],
        must,
        "durable records intact and in order"
    );
    let extra = &ids[must.len()..];
    let maybe = &model.appended[model.durable..];
    assert!(
        extra.len() <= maybe.len() && extra == &maybe[..extra.len()],
        "only a prefix of unsynced records may survive: {extra:?} of {maybe:?}"
    );
    model.appended.truncate(model.durable);
    model.appended.extend_from_slice(extra);
    // Recovery made the survivors durable (it syncs what it keeps).
    model.durable = model.appended.len();
    wal
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(proptest::test_runner::FileFailurePersistence::Direct(
            "tests/model.proptest-regressions",
        ))),
        ..ProptestConfig::default()
    })]
    #[test]
    fn wal_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        run_case(ops);
    }
}
