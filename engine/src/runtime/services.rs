//! Services beside the shards and outputs: the disk budget and the compaction thread.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use storage::compress::{CompactShard, Compactor};
use storage::DiskBudget;

use crate::config::{Compression, Config};
use crate::delivery::ShardLog;
use crate::error::EngineError;

/// The data directory's disk budget; warns when `max_disk` cannot give every shard a segment
/// plus one to rotate into.
pub(super) fn disk_budget(
    config: &Config,
    data_dir: &Path,
    shards: usize,
) -> Result<Arc<DiskBudget>, EngineError> {
    let wal = &config.wal;
    config.check_min_free_disk(data_dir)?;
    if let Some(max) = wal.max_disk {
        let needed = (shards as u64 + 1) * wal.segment_size;
        if max < needed {
            tracing::warn!(max_disk = max, needed, "wal.max_disk is below (shards + 1) × segment_size: some shards will block until outputs free space");
        }
    }
    let budget = DiskBudget::new(
        data_dir,
        wal.max_disk,
        Some(wal.min_free_disk),
        wal.when_full,
    )?;
    Ok(Arc::new(budget))
}

/// The background thread compressing backlog segments (none with `compression = "none"`).
pub(super) struct CompactorThread {
    stop: crossbeam_channel::Sender<()>,
    handle: std::thread::JoinHandle<()>,
}

const COMPACT_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn start_compactor(
    config: &Config,
    logs: &[ShardLog],
) -> Result<Option<CompactorThread>, EngineError> {
    if config.wal.compression == Compression::None {
        return Ok(None);
    }
    let shards = logs
        .iter()
        .map(|l| CompactShard {
            watermark: Arc::clone(&l.watermark),
            retention: Arc::clone(&l.retention),
        })
        .collect();
    let mut compactor = Compactor::new(
        shards,
        config.wal.compression_level,
        config.wal.compress_after,
    );
    let (stop, stopped) = crossbeam_channel::bounded::<()>(1);
    let handle = std::thread::Builder::new()
        .name("wal-compress".into())
        .spawn(move || loop {
            let stop_now = || !stopped.is_empty();
            if let Err(e) = compactor.run_once(&stop_now) {
                tracing::warn!(error = %e, "compressing backlog segments failed; retrying later");
            }
            match stopped.recv_timeout(COMPACT_INTERVAL) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        })
        .map_err(|source| EngineError::Io {
            op: "start thread",
            path: "wal-compress".into(),
            source,
        })?;
    Ok(Some(CompactorThread { stop, handle }))
}

pub(super) fn stop_compactor(compactor: Option<CompactorThread>) {
    if let Some(c) = compactor {
        let _ = c.stop.send(());
        if c.handle.join().is_err() {
            tracing::error!("compression thread panicked");
        }
    }
}
