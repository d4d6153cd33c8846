use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::ConfigError;

/// Errors of the engine layer (what makes `sluice` exit non-zero).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("source {source_name}: cannot bind {address}: {error}")]
    Bind {
        source_name: String,
        address: SocketAddr,
        #[source]
        error: std::io::Error,
    },
    #[error(
        "the locked-memory limit (ulimit -l) is {limit_kib} KiB; Sluice's io_uring executors need at \
         least {needed_kib} KiB. Raise it: `ulimit -l {needed_kib}` (or `unlimited`) in the shell \
         that starts Sluice, `LimitMEMLOCK=infinity` in its systemd unit, or a `memlock` line in \
         /etc/security/limits.conf"
    )]
    MemlockTooLow { limit_kib: u64, needed_kib: u64 },
    #[error(transparent)]
    Source(#[from] crate::sources::SourceError),
    #[error("shard {shard}: cannot start its executor: {error}")]
    Executor {
        shard: usize,
        #[source]
        error: glommio::GlommioError<()>,
    },
    #[error("shard {shard}: {error}")]
    Shard {
        shard: usize,
        #[source]
        error: crate::shard::ShardError,
    },
    #[error("shard {shard}: its executor ended unexpectedly")]
    ShardEnded { shard: usize },
    #[error("admin API: {0}")]
    Admin(#[from] crate::admin::AdminError),
    #[error("sink {sink}: {error}")]
    Sink {
        sink: String,
        #[source]
        error: crate::sinks::SinkError,
    },
    #[error("routing: {0}")]
    Routing(#[from] crate::runtime::sink_bits::SinkBitsError),
    #[error("transforms: {0}")]
    Transforms(#[from] crate::transforms::CompileError),
    #[error("transforms: {0}")]
    Transform(#[from] crate::transforms::TransformError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
