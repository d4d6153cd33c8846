//! Simulated storage for fault-injection tests: real files in a directory, plus a record of
//! how much of each file was fdatasync'd, and faults on demand.
//!
//! - [`Fault`]s make the next write or fdatasync fail (EIO, ENOSPC), as disks do.
//! - [`SimFs::crash`] simulates power loss: every file goes back to its contents at its last
//!   fdatasync (overwritten bytes return to their old values: what a ready file written over
//!   keeps), plus optionally a torn prefix of what was written after that point (which may
//!   end mid-record), as a kernel that wrote back some pages but not others would leave it.
//! - An fdatasync makes durable what was written when it was issued, and completes only after
//!   yielding once, so a writer that overlaps commits writes the next one meanwhile.
//!
//! - [`SimFs::with_fsync_delay`] makes every fdatasync that much slower (a busy disk, for
//!   `CommitCompression::Auto`).
//! - [`SimFs::direct`] writes as O_DIRECT does (`crate::direct`): whole blocks, the last
//!   partial block rewritten by the next append, zeros after the appended bytes.
//!
//! I/O here is blocking `std::fs`; it is for tests on a test executor, never a shard.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::direct::{AlignedWrite, TailBlock};
use crate::io::{SegmentFile, SegmentFs};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    WriteEio,
    WriteNoSpace,
    FsyncEio,
    /// The disk is full when a new segment reserves its space.
    PreallocateNoSpace,
}

#[derive(Debug, Default)]
struct FileState {
    /// The contents as of the last fdatasync (or as found when opened).
    durable: Vec<u8>,
    /// How far writes had reached at the last fdatasync: a torn write keeps bytes from here.
    durable_end: u64,
    /// How far writes have reached.
    write_end: u64,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<PathBuf, FileState>,
    faults: VecDeque<Fault>,
    /// Block size of direct writes; `None`: writes as they come (through a page cache).
    direct_block: Option<usize>,
    /// Crashes so far: an fdatasync a crash overtook makes nothing durable.
    crashes: u64,
    /// How long each fdatasync takes beyond the real one (a slow or busy disk).
    fsync_delay: std::time::Duration,
}

/// Cheap to clone; clones share state.
#[derive(Clone, Debug, Default)]
pub struct SimFs(Rc<RefCell<State>>);

pub struct SimFile {
    fs: SimFs,
    path: PathBuf,
    file: File,
    /// Direct writes: the file's last partial block.
    tail: Option<RefCell<TailBlock>>,
}

impl SimFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A disk written as with O_DIRECT, in blocks of `block` bytes.
    pub fn direct(block: usize) -> Self {
        let fs = Self::default();
        fs.0.borrow_mut().direct_block = Some(block);
        fs
    }

    /// A disk whose every fdatasync takes `delay` longer (on the glommio executor's timer).
    pub fn with_fsync_delay(self, delay: std::time::Duration) -> Self {
        self.0.borrow_mut().fsync_delay = delay;
        self
    }

    fn open_file(&self, path: &Path, file: File) -> SimFile {
        let block = self.0.borrow().direct_block;
        SimFile {
            fs: self.clone(),
            path: path.to_path_buf(),
            file,
            tail: block.map(|b| RefCell::new(TailBlock::new(b))),
        }
    }

    /// Queues a fault for the next matching operation.
    pub fn inject(&self, fault: Fault) {
        self.0.borrow_mut().faults.push_back(fault);
    }

    fn take_fault(&self, matches: impl Fn(Fault) -> bool) -> Option<Fault> {
        let mut state = self.0.borrow_mut();
        let at = state.faults.iter().position(|f| matches(*f))?;
        state.faults.remove(at)
    }

    /// Power loss: each file returns to its synced contents, plus up to `torn_bytes` of what
    /// was written after the synced write position.
    pub fn crash(&self, torn_bytes: u64) -> io::Result<()> {
        let mut state = self.0.borrow_mut();
        for (path, file) in state.files.drain() {
            let current = match std::fs::read(&path) {
                Ok(c) => c,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // Deleted.
                Err(e) => return Err(e),
            };
            let mut kept = file.durable;
            let from = file.durable_end as usize;
            let to = current.len().min(from + torn_bytes as usize);
            if from < to {
                if kept.len() < to {
                    kept.resize(to, 0);
                }
                kept[from..to].copy_from_slice(&current[from..to]);
            }
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(kept.len() as u64)?;
            f.write_all_at(&kept, 0)?;
        }
        state.faults.clear();
        state.crashes += 1;
        Ok(())
    }

    fn wrote(&self, path: &Path, end: u64) {
        let mut state = self.0.borrow_mut();
        let file = state.files.entry(path.to_path_buf()).or_default();
        file.write_end = file.write_end.max(end);
    }
}

impl SimFile {
    /// Writes `buf` at `pos` as the disk gets it, faults included.
    fn write_raw(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        match self
            .fs
            .take_fault(|f| matches!(f, Fault::WriteEio | Fault::WriteNoSpace))
        {
            Some(Fault::WriteNoSpace) => {
                // A real disk may take part of the buffer before it fills up.
                let part = buf.len() / 2;
                self.file.write_all_at(&buf[..part], pos)?;
                self.fs.wrote(&self.path, pos + part as u64);
                return Err(io::Error::from_raw_os_error(libc_enospc()));
            }
            Some(_) => return Err(io::Error::from_raw_os_error(libc_eio())),
            None => {}
        }
        self.file.write_all_at(buf, pos)?;
        self.fs.wrote(&self.path, pos + buf.len() as u64);
        Ok(buf.len())
    }

    /// The aligned write an append becomes under O_DIRECT (see `crate::direct`).
    fn write_direct(&self, tail: &RefCell<TailBlock>, buf: &[u8], pos: u64) -> io::Result<usize> {
        let plan = AlignedWrite::plan(pos, buf.len(), tail.borrow().block());
        let kept = tail.borrow().head(&plan).map(<[u8]>::to_vec);
        let head = match kept {
            Some(head) => head,
            None => {
                let mut head = vec![0; plan.head_len];
                let n = self.file.read_at(&mut head, plan.block_start)?;
                head[n..].fill(0);
                head
            }
        };
        let mut out = vec![0; plan.padded_len];
        tail.borrow_mut().fill(&mut out, &plan, &head, buf);
        match self.write_raw(&out, plan.block_start) {
            Ok(n) => Ok(plan.appended(n)),
            Err(e) => {
                tail.borrow_mut().forget();
                Err(e)
            }
        }
    }
}

impl SegmentFile for SimFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        match &self.tail {
            Some(tail) => self.write_direct(tail, &buf, pos),
            None => self.write_raw(&buf, pos),
        }
    }

    async fn fdatasync(&self) -> io::Result<()> {
        if self.fs.take_fault(|f| f == Fault::FsyncEio).is_some() {
            // fsyncgate: the failed pages may already be dropped; nothing becomes durable.
            return Err(io::Error::from_raw_os_error(libc_eio()));
        }
        self.file.sync_data()?;
        let delay = self.fs.0.borrow().fsync_delay;
        if !delay.is_zero() {
            glommio::timer::sleep(delay).await;
        }
        // What is durable is what was written when the fdatasync was issued; it completes
        // later (the writer may write its next commit meanwhile), unless a crash came first.
        let contents = std::fs::read(&self.path)?;
        let (epoch, write_end) = {
            let state = self.fs.0.borrow();
            let end = state.files.get(&self.path).map_or(0, |f| f.write_end);
            (state.crashes, end)
        };
        futures_lite::future::yield_now().await;
        let mut state = self.fs.0.borrow_mut();
        if state.crashes == epoch {
            let file = state.files.entry(self.path.clone()).or_default();
            file.durable = contents;
            file.durable_end = write_end;
        }
        Ok(())
    }

    async fn preallocate(&self, _len: u64) -> io::Result<()> {
        if self
            .fs
            .take_fault(|f| f == Fault::PreallocateNoSpace)
            .is_some()
        {
            return Err(io::Error::from_raw_os_error(libc_enospc()));
        }
        Ok(())
    }

    async fn remove(&self) -> io::Result<()> {
        std::fs::remove_file(&self.path)?;
        self.fs.0.borrow_mut().files.remove(&self.path);
        Ok(())
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        if let Some(tail) = &self.tail {
            tail.borrow_mut().cut(len);
        }
        self.file.set_len(len)?;
        let mut state = self.fs.0.borrow_mut();
        let file = state.files.entry(self.path.clone()).or_default();
        file.durable.truncate(len as usize);
        file.durable_end = file.durable_end.min(len);
        file.write_end = file.write_end.min(len);
        Ok(())
    }

    async fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        let mut state = self.fs.0.borrow_mut();
        if let Some(file) = state.files.remove(&self.path) {
            state.files.insert(to.to_path_buf(), file);
        }
        self.path = to.to_path_buf();
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

impl SegmentFs for SimFs {
    type File = SimFile;

    async fn create(&self, path: &Path) -> io::Result<SimFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        self.0
            .borrow_mut()
            .files
            .insert(path.to_path_buf(), FileState::default());
        Ok(self.open_file(path, file))
    }

    async fn open_existing(&self, path: &Path) -> io::Result<SimFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let durable = std::fs::read(path)?;
        self.0.borrow_mut().files.insert(
            path.to_path_buf(),
            FileState {
                durable,
                ..FileState::default()
            },
        );
        Ok(self.open_file(path, file))
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

const fn libc_eio() -> i32 {
    5
}
const fn libc_enospc() -> i32 {
    28
}
