//! The file operations the WAL writer needs, behind a small trait.
//!
//! The production implementation is glommio's io_uring-backed [`BufferedFile`]: writes and
//! fdatasync go through the shard's ring, never blocking the shard thread. Buffered (not
//! O_DIRECT) so that outputs on other threads read fresh segments from the page cache. A
//! simulated implementation for fault injection (failed writes and fsyncs, ENOSPC, crashes that
//! keep only synced bytes) plugs in here.

use std::io;
use std::path::Path;

use glommio::io::{BufferedFile, Directory, OpenOptions};

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
    type File: SegmentFile;
    /// Creates a new file; fails if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for writing over it (a ready file, see `crate::ready`).
    async fn open_existing(&self, path: &Path) -> io::Result<Self::File>;
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// io_uring through the current glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct GlommioFs;

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
        match BufferedFile::pre_allocate(self, len, true).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = io::Error::from(e);
                // File systems without fallocate still work, just without the reservation.
                if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
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
    type File = BufferedFile;
    async fn create(&self, path: &Path) -> io::Result<BufferedFile> {
        Ok(OpenOptions::new()
            .write(true)
            .create_new(true)
            .buffered_open(path)
            .await?)
    }
    async fn open_existing(&self, path: &Path) -> io::Result<BufferedFile> {
        Ok(OpenOptions::new().write(true).buffered_open(path).await?)
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = Directory::open(dir).await?;
        d.sync().await?;
        Ok(d.close().await?)
    }
}
