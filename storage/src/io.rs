//! The file operations the WAL writer needs, behind a small trait.
//!
//! The production implementation is glommio's io_uring: writes and fdatasync go through the
//! shard's ring, never blocking the shard thread. [`WalIo::Buffered`] (the default) writes
//! through the page cache ([`BufferedFile`]; io_uring hands the copy to a kernel worker).
//! [`WalIo::Direct`] writes with O_DIRECT ([`crate::direct`]): no copy into the page cache,
//! but the block submission runs on the shard thread, and an output that falls behind the
//! commits in memory (`crate::fast_path`) reads the files from disk. A file system that
//! refuses O_DIRECT gets buffered writes (logged once).
//! A simulated implementation for fault injection (failed writes and fsyncs, ENOSPC, crashes
//! that keep only synced bytes) plugs in here.

use std::io;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};

use glommio::io::{BufferedFile, Directory, OpenOptions};

use crate::direct::DirectFile;

#[allow(async_fn_in_trait)] // Used on one thread: shard executors are single-threaded.
pub trait SegmentFile {
    /// Writes `buf` at `pos`; may write less than all of it (the caller loops).
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize>;
    async fn fdatasync(&self) -> io::Result<()>;
    /// Cuts the file to `len` bytes (used to drop what a failed commit left behind).
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Reserves `len` bytes of disk without changing the file size (FALLOC_FL_KEEP_SIZE), so
    /// a full disk shows at segment creation, not in the middle of a commit.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Deletes the file (a segment whose creation failed half-way).
    async fn remove(&self) -> io::Result<()>;
    /// Renames the file (a ready file becoming a segment; the directory is synced after).
    async fn rename(&mut self, to: &Path) -> io::Result<()>;
    async fn close(self) -> io::Result<()>;
}

#[allow(async_fn_in_trait)]
pub trait SegmentFs {
    type File: SegmentFile + 'static;
    /// Creates a new file; fails if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for writing over it (a ready file, see `crate::ready`).
    async fn open_existing(&self, path: &Path) -> io::Result<Self::File>;
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// How the WAL writes its segment files (`[wal] io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WalIo {
    /// O_DIRECT, block-aligned writes ([`crate::direct`]).
    Direct,
    /// Through the page cache: the default, because it measured faster on the reference
    /// machine (a VM whose virtio disk makes each direct submission on the shard thread
    /// costly; docs/benchmarks.md).
    #[default]
    Buffered,
}

impl FromStr for WalIo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(WalIo::Direct),
            "buffered" => Ok(WalIo::Buffered),
            other => Err(format!(
                "unknown WAL io {other:?}: expected \"direct\" or \"buffered\""
            )),
        }
    }
}

impl std::fmt::Display for WalIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WalIo::Direct => "direct",
            WalIo::Buffered => "buffered",
        })
    }
}

/// io_uring through the current glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioFs {
    pub io: WalIo,
}

impl GlommioFs {
    pub fn new(io: WalIo) -> Self {
        GlommioFs { io }
    }

    /// Opens for reading and writing (a direct write in front of a block that is not kept
    /// reads it back); `create`: a new file, failing if it exists.
    async fn open(&self, path: &Path, create: bool) -> io::Result<GlommioFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create_new(create);
        if self.io == WalIo::Direct {
            match options.dma_open(path).await {
                Ok(file) => return Ok(GlommioFile::Direct(DirectFile::new(file))),
                Err(e) => {
                    let e = io::Error::from(e);
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e);
                    }
                    warn_no_direct_io(path);
                    // O_DIRECT is set after the open: a new file exists by now, and is ours.
                    options.create_new(false);
                }
            }
        }
        Ok(GlommioFile::Buffered(options.buffered_open(path).await?))
    }
}

/// The file system refused O_DIRECT (EINVAL): buffered writes instead, said once.
fn warn_no_direct_io(path: &Path) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(path = %path.display(), "the file system refuses O_DIRECT: WAL writes go through the page cache (wal.io = \"buffered\")");
    }
}

/// A segment file as [`GlommioFs`] opened it.
pub enum GlommioFile {
    Direct(DirectFile),
    Buffered(BufferedFile),
}

impl SegmentFile for GlommioFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        match self {
            GlommioFile::Direct(f) => f.write_at(buf, pos).await,
            GlommioFile::Buffered(f) => SegmentFile::write_at(f, buf, pos).await,
        }
    }
    async fn fdatasync(&self) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.fdatasync().await,
            GlommioFile::Buffered(f) => SegmentFile::fdatasync(f).await,
        }
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.truncate(len).await,
            GlommioFile::Buffered(f) => SegmentFile::truncate(f, len).await,
        }
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.preallocate(len).await,
            GlommioFile::Buffered(f) => SegmentFile::preallocate(f, len).await,
        }
    }
    async fn remove(&self) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.remove().await,
            GlommioFile::Buffered(f) => SegmentFile::remove(f).await,
        }
    }
    async fn rename(&mut self, to: &Path) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.rename(to).await,
            GlommioFile::Buffered(f) => SegmentFile::rename(f, to).await,
        }
    }
    async fn close(self) -> io::Result<()> {
        match self {
            GlommioFile::Direct(f) => f.close().await,
            GlommioFile::Buffered(f) => SegmentFile::close(f).await,
        }
    }
}

/// A reservation the file system cannot make (no fallocate) is not an error: writes still
/// work, just without it.
pub(crate) fn unsupported_is_ok<T>(result: glommio::Result<(), T>) -> io::Result<()>
where
    io::Error: From<glommio::GlommioError<T>>,
{
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = io::Error::from(e);
            if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

impl SegmentFile for BufferedFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        Ok(BufferedFile::write_at(self, buf, pos).await?)
    }
    async fn fdatasync(&self) -> io::Result<()> {
        Ok(BufferedFile::fdatasync(self).await?)
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        Ok(BufferedFile::truncate(self, len).await?)
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        unsupported_is_ok(BufferedFile::pre_allocate(self, len, true).await)
    }
    async fn remove(&self) -> io::Result<()> {
        Ok(BufferedFile::remove(self).await?)
    }
    async fn rename(&mut self, to: &Path) -> io::Result<()> {
        Ok(BufferedFile::rename(self, to).await?)
    }
    async fn close(self) -> io::Result<()> {
        Ok(BufferedFile::close(self).await?)
    }
}

impl SegmentFs for GlommioFs {
    type File = GlommioFile;
    async fn create(&self, path: &Path) -> io::Result<GlommioFile> {
        self.open(path, true).await
    }
    async fn open_existing(&self, path: &Path) -> io::Result<GlommioFile> {
        self.open(path, false).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = Directory::open(dir).await?;
        d.sync().await?;
        Ok(d.close().await?)
    }
}
