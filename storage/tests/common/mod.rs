//! What the storage integration tests share.
#![allow(dead_code)] // Each test crate uses its part.

use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use storage::io::GlommioFs;
use storage::{
    recover_shard, DiskBudget, DurableWatermark, FsyncPolicy, ReadySegments, RecoveryMode,
    Retention, WalAppender, WalFlusher,
};

/// A shard's WAL in `dir` as the runtime opens it with ready segment files: recovered, a pool
/// of two ready files (filled), retention for `outputs` recycling into it, and a writer
/// (`fsync = always`, a pending buffer of `buffer` bytes) not yet running.
pub struct RecyclingWal {
    pub appender: Rc<WalAppender>,
    pub watermark: Arc<DurableWatermark>,
    pub ready: Arc<ReadySegments>,
    pub retention: Retention,
    pub flusher: WalFlusher<GlommioFs>,
}

pub async fn open_recycling(
    dir: &Path,
    segment_size: u64,
    buffer: usize,
    outputs: &[&str],
) -> RecyclingWal {
    open_recycling_filled(dir, segment_size, buffer, outputs, true).await
}

/// [`open_recycling`], with the pool filled before the writer opens or left empty (`filled`
/// false: as at a first start, where the pool is filled in the background).
pub async fn open_recycling_filled(
    dir: &Path,
    segment_size: u64,
    buffer: usize,
    outputs: &[&str],
    filled: bool,
) -> RecyclingWal {
    let report = recover_shard(dir, RecoveryMode::Strict).unwrap();
    let budget = Arc::new(DiskBudget::unlimited(dir));
    let ready = ReadySegments::open(dir, segment_size, 2, Arc::clone(&budget), None).unwrap();
    if filled {
        ready.fill().unwrap();
    }
    let retention =
        Retention::new(dir, outputs, Arc::clone(&budget)).with_ready(Arc::clone(&ready));
    let appender = WalAppender::new(buffer, FsyncPolicy::Always);
    let watermark = Arc::new(DurableWatermark::new());
    let flusher = WalFlusher::open_with_budget(
        // O_DIRECT: the recycled files are written in whole blocks, as with `wal.io = "direct"`.
        GlommioFs::new(storage::io::WalIo::Direct),
        dir,
        report.start(),
        segment_size,
        Rc::clone(&appender),
        Arc::clone(&watermark),
        Box::new(|_| {}),
        storage::writer::WalSpace {
            budget,
            ready: Some(Arc::clone(&ready)),
        },
    )
    .await
    .unwrap();
    RecyclingWal {
        appender,
        watermark,
        ready,
        retention,
        flusher,
    }
}
