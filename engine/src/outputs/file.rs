//! The file sink: append, confirm (fdatasync by default), rotate by size, keep N.
//!
//! Rotation is crash-safe: the full file is synced, renamed to `<name>.<n>` (n grows: higher
//! is newer), the directory synced, and a new file created. A crash at any step leaves every
//! delivered line in exactly one file; the cursor is behind, so at worst a batch repeats.
//! A failed write is undone (the file is cut back to its size before the batch) so a retry
//! never leaves half a line behind. A crash in the middle of a write can leave half a line at
//! the end: every confirmed batch ends with a newline, so whatever follows the last newline
//! was never confirmed (it is delivered again); it is cut off when the file is opened, before
//! anything is appended to it.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::config::{FileSink, SinkFsync};

use super::Sink;

pub struct FileOutput {
    path: PathBuf,
    dir: PathBuf,
    file: Option<File>,
    size: u64,
    rotate_size: u64,
    keep: u32,
    fsync: SinkFsync,
}

/// Cuts the file back to just after its last newline (see the module docs); returns its size.
fn cut_unconfirmed_tail(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(at) = memchr::memrchr(b'\n', part) {
            end = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
        tracing::warn!(cut_bytes = len - end, "output file ended in half a line (a crash during a write): cut it; those events are delivered again");
    }
    Ok(end)
}

fn with_path(op: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
}

impl FileOutput {
    pub fn open(config: &FileSink) -> io::Result<Self> {
        let dir = match config.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| with_path("create directory", &dir, e))?;
        let mut output = FileOutput {
            path: config.path.clone(),
            dir,
            file: None,
            size: 0,
            rotate_size: config.rotate_size,
            keep: config.keep,
            fsync: config.fsync,
        };
        output.open_current()?;
        Ok(output)
    }

    fn open_current(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| with_path("open", &self.path, e))?;
            self.size =
                cut_unconfirmed_tail(&file).map_err(|e| with_path("repair", &self.path, e))?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        let fsync = self.fsync;
        let path = self.path.clone();
        let before = self.size;
        let file = self.open_current()?;
        let written = file.write_all(batch).and_then(|()| match fsync {
            SinkFsync::Always => file.sync_data(),
            SinkFsync::Never => Ok(()),
        });
        if let Err(e) = written {
            // Undo a partial batch so the retry does not leave half a line.
            let _ = file.set_len(before);
            return Err(with_path("write", &path, e));
        }
        self.size += batch.len() as u64;
        Ok(())
    }

    fn rotated_numbers(&self) -> io::Result<Vec<u64>> {
        let name = self.file_name();
        let prefix = format!("{name}.");
        let mut numbers = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| with_path("list", &self.dir, e))? {
            let entry = entry.map_err(|e| with_path("list", &self.dir, e))?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        Ok(numbers)
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn rotate(&mut self) -> io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()
                .map_err(|e| with_path("fsync", &self.path, e))?;
        }
        let numbers = self.rotated_numbers()?;
        let next = numbers.last().map_or(1, |n| n + 1);
        let target = self.dir.join(format!("{}.{next}", self.file_name()));
        std::fs::rename(&self.path, &target).map_err(|e| with_path("rename", &target, e))?;
        sync_dir(&self.dir)?;
        self.open_current()?;
        sync_dir(&self.dir)?;
        let excess = (numbers.len() + 1).saturating_sub(self.keep as usize);
        for n in numbers.iter().take(excess) {
            let old = self.dir.join(format!("{}.{n}", self.file_name()));
            std::fs::remove_file(&old).map_err(|e| with_path("remove", &old, e))?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&target).map_err(|e| with_path("remove", &target, e))?;
        }
        Ok(())
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path("fsync directory", dir, e))
}

impl Sink for FileOutput {
    fn deliver(&mut self, batch: &[u8]) -> io::Result<()> {
        self.write_batch(batch)?;
        if self.size >= self.rotate_size {
            self.rotate()?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.file = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.log");
        let mut out = FileOutput::open(&FileSink {
            path: path.clone(),
            encoding: crate::config::Encoding::Raw,
            rotate_size: 1024,
            keep: 2,
            fsync: SinkFsync::Always,
        })
        .unwrap();
        let line = [b'x'; 511];
        let mut batch = line.to_vec();
        batch.push(b'\n');
        for _ in 0..10 {
            out.deliver(&batch).unwrap();
        }
        let mut names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["events.log", "events.log.4", "events.log.5"]);
        assert_eq!(
            std::fs::metadata(path.with_extension("log.5"))
                .unwrap()
                .len(),
            1024
        );
    }

    #[test]
    fn half_a_line_left_by_a_crash_is_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let sink = |path: &Path| FileSink {
            path: path.to_path_buf(),
            encoding: crate::config::Encoding::Raw,
            rotate_size: 1 << 20,
            keep: 2,
            fsync: SinkFsync::Always,
        };
        // A long tail (over one read chunk) without a newline after two whole lines.
        let mut torn = b"one\ntwo\n".to_vec();
        torn.extend(std::iter::repeat_n(b'x', 100_000));
        std::fs::write(&path, &torn).unwrap();
        let mut out = FileOutput::open(&sink(&path)).unwrap();
        out.deliver(b"three\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
        // No newline at all: nothing in it was confirmed.
        let other = dir.path().join("other.log");
        std::fs::write(&other, b"half").unwrap();
        FileOutput::open(&sink(&other)).unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"");
    }
}
