//! WAL writes with O_DIRECT: the segment's bytes go from the shard's buffer to the disk without
//! a copy into the page cache (and without the io_uring worker thread that buffered writes to
//! a regular file need).
//!
//! O_DIRECT writes whole blocks at block-aligned offsets. The writer appends records of any
//! length, so this layer turns each append into an aligned write:
//!
//! ```text
//!   block_start            pos                       pos+len          padded end
//!   |── head (kept tail) ──|── the appended bytes ──|── zeros ──|
//! ```
//! - The bytes of the last, partial block are kept in memory ([`TailBlock`]) and written again,
//!   unchanged, in front of the next append. A torn rewrite (power loss mid-write) leaves each
//!   sector either old or new; both hold the same earlier bytes, so earlier records survive it.
//! - What follows the appended bytes up to the block's end is zeros: in a recycled file it
//!   covers part of an older segment's bytes, which is harmless either way (salted checksums,
//!   `crate::frame::salt`; zeros end a segment's records like a zero-filled ready file's do).
//! - A new (not recycled) file grows to the padded end; sealing cuts it to its footer as before.
//! - When the kept tail is not the block in front of a write (after a short write, a cut, or a
//!   write that is not an append), the head is read back from the file.
//!
//! The block size is the larger of 4096 and the device's logical block size. [`TailBlock`] is
//! plain data, shared by the glommio file here and by the simulated disk (`crate::sim`), so
//! the fault-injection tests write exactly the blocks production writes.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use glommio::io::DmaFile;

use crate::io::SegmentFile;

/// Smallest block a direct write covers.
pub const MIN_BLOCK: usize = 4096;

/// Where an append of `len` bytes at `pos` lands once aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlignedWrite {
    /// Offset of the block that holds `pos`.
    pub block_start: u64,
    /// Bytes of that block in front of `pos` (written again).
    pub head_len: usize,
    /// `head_len` + the appended bytes.
    pub data_len: usize,
    /// `data_len` rounded up to whole blocks: the length of the write.
    pub padded_len: usize,
}

impl AlignedWrite {
    pub fn plan(pos: u64, len: usize, block: usize) -> Self {
        let head_len = (pos % block as u64) as usize;
        let data_len = head_len + len;
        AlignedWrite {
            block_start: pos - head_len as u64,
            head_len,
            data_len,
            padded_len: data_len.div_ceil(block) * block,
        }
    }

    /// How many of the appended bytes a write that wrote `written` bytes covered.
    pub fn appended(&self, written: usize) -> usize {
        written
            .saturating_sub(self.head_len)
            .min(self.data_len - self.head_len)
    }
}

/// The file's last partial block as this process last wrote it.
#[derive(Debug)]
pub struct TailBlock {
    block: usize,
    /// Offset of the block; `None`: not known (read it back before writing in front of it).
    start: Option<u64>,
    /// Its bytes up to the end of what was written (shorter than a block).
    bytes: Vec<u8>,
}

impl TailBlock {
    pub fn new(block: usize) -> Self {
        TailBlock {
            block,
            start: None,
            bytes: Vec::with_capacity(block),
        }
    }

    pub fn block(&self) -> usize {
        self.block
    }

    /// The bytes in front of `plan`'s position, if this is the block they are in.
    pub fn head(&self, plan: &AlignedWrite) -> Option<&[u8]> {
        if plan.head_len == 0 {
            return Some(&[]);
        }
        match self.start {
            Some(start) if start == plan.block_start && self.bytes.len() >= plan.head_len => {
                Some(&self.bytes[..plan.head_len])
            }
            _ => None,
        }
    }

    /// Lays out the aligned write into `out` (`plan.padded_len` bytes): head, appended bytes,
    /// zeros; and remembers its last partial block. Call [`Self::forget`] if the write then
    /// fails or is short.
    pub fn fill(&mut self, out: &mut [u8], plan: &AlignedWrite, head: &[u8], appended: &[u8]) {
        out[..plan.head_len].copy_from_slice(head);
        out[plan.head_len..plan.data_len].copy_from_slice(appended);
        out[plan.data_len..].fill(0);
        let last = plan.data_len / self.block * self.block;
        self.start = Some(plan.block_start + last as u64);
        self.bytes.clear();
        self.bytes.extend_from_slice(&out[last..plan.data_len]);
    }

    pub fn forget(&mut self) {
        self.start = None;
    }

    /// The file was cut to `len` bytes.
    pub fn cut(&mut self, len: u64) {
        match self.start {
            Some(start) if len >= start && len - start <= self.bytes.len() as u64 => {
                self.bytes.truncate((len - start) as usize);
            }
            _ => self.forget(),
        }
    }
}

/// A segment file written with O_DIRECT through the shard's io_uring (glommio's [`DmaFile`]).
pub struct DirectFile {
    file: DmaFile,
    tail: RefCell<TailBlock>,
}

impl DirectFile {
    pub fn new(file: DmaFile) -> Self {
        let block = (file.alignment() as usize).max(MIN_BLOCK);
        DirectFile {
            file,
            tail: RefCell::new(TailBlock::new(block)),
        }
    }

    /// The block in front of an append whose head is not kept (read from the file; zeros
    /// past its end).
    async fn read_head(&self, plan: &AlignedWrite) -> io::Result<Vec<u8>> {
        let block = self.tail.borrow().block();
        let read = self.file.read_at_aligned(plan.block_start, block).await?;
        let mut head = vec![0; plan.head_len];
        let n = read.len().min(plan.head_len);
        head[..n].copy_from_slice(&read[..n]);
        Ok(head)
    }
}

impl SegmentFile for DirectFile {
    async fn write_at(&self, buf: Vec<u8>, pos: u64) -> io::Result<usize> {
        let plan = AlignedWrite::plan(pos, buf.len(), self.tail.borrow().block());
        let kept = self.tail.borrow().head(&plan).map(<[u8]>::to_vec);
        let head = match kept {
            Some(head) => head,
            None => self.read_head(&plan).await?,
        };
        let mut out = self.file.alloc_dma_buffer(plan.padded_len);
        self.tail
            .borrow_mut()
            .fill(out.as_bytes_mut(), &plan, &head, &buf);
        let written = match self.file.write_at(out, plan.block_start).await {
            Ok(n) => n,
            Err(e) => {
                self.tail.borrow_mut().forget();
                return Err(e.into());
            }
        };
        if written < plan.padded_len {
            self.tail.borrow_mut().forget();
        }
        Ok(plan.appended(written))
    }
    async fn fdatasync(&self) -> io::Result<()> {
        Ok(self.file.fdatasync().await?)
    }
    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.tail.borrow_mut().cut(len);
        Ok(self.file.truncate(len).await?)
    }
    async fn preallocate(&self, len: u64) -> io::Result<()> {
        crate::io::unsupported_is_ok(self.file.pre_allocate(len, true).await)
    }
    async fn remove(&self) -> io::Result<()> {
        Ok(self.file.remove().await?)
    }
    async fn rename(&mut self, to: &Path) -> io::Result<()> {
        Ok(self.file.rename(to).await?)
    }
    async fn close(self) -> io::Result<()> {
        Ok(self.file.close().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies appends through the tail block to a byte image of the file, as the disk sees
    /// aligned writes, and checks the image equals the appended bytes followed by zeros.
    #[test]
    fn aligned_appends_rebuild_the_logical_bytes() {
        let block = 512;
        let mut tail = TailBlock::new(block);
        let mut disk = vec![0xEEu8; 8192]; // a recycled file's old bytes
        let mut logical = Vec::new();
        let mut seed = 7u32;
        while logical.len() < 6000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (seed >> 16) as usize % 700 + 1;
            let data: Vec<u8> = (0..len).map(|i| (logical.len() + i) as u8 | 1).collect();
            let plan = AlignedWrite::plan(logical.len() as u64, len, block);
            let head = tail.head(&plan).expect("appends keep their tail").to_vec();
            let mut out = vec![0xAA; plan.padded_len];
            tail.fill(&mut out, &plan, &head, &data);
            assert_eq!(plan.block_start % block as u64, 0);
            assert_eq!(out.len() % block, 0);
            let at = plan.block_start as usize;
            if disk.len() < at + out.len() {
                disk.resize(at + out.len(), 0);
            }
            disk[at..at + out.len()].copy_from_slice(&out);
            logical.extend_from_slice(&data);
            assert_eq!(&disk[..logical.len()], &logical[..]);
            let padded_end = at + out.len();
            assert!(disk[logical.len()..padded_end].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn the_tail_is_forgotten_when_it_no_longer_matches() {
        let mut tail = TailBlock::new(512);
        let plan = AlignedWrite::plan(0, 700, 512);
        let mut out = vec![0; plan.padded_len];
        tail.fill(&mut out, &plan, &[], &[1; 700]);
        // Kept: block 512, 188 bytes. A cut inside it keeps a prefix.
        tail.cut(600);
        assert_eq!(
            tail.head(&AlignedWrite::plan(600, 1, 512)),
            Some(&[1u8; 88][..])
        );
        tail.cut(100);
        assert_eq!(tail.head(&AlignedWrite::plan(100, 1, 512)), None);
        assert_eq!(tail.head(&AlignedWrite::plan(1024, 1, 512)), Some(&[][..]));
    }

    #[test]
    fn a_short_write_covers_only_what_passed_the_head() {
        let plan = AlignedWrite::plan(1000, 3000, 512);
        assert_eq!(plan.block_start, 512);
        assert_eq!(plan.head_len, 488);
        assert_eq!(plan.padded_len, 3584);
        assert_eq!(plan.appended(0), 0);
        assert_eq!(plan.appended(512), 24);
        assert_eq!(plan.appended(3584), 3000);
    }
}
