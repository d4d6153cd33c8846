//! The file sink: append, confirm (fdatasync by default), rotate by size, keep N.
//!
//! **It never truncates, renames or deletes a file it did not create.** Beside the output it
//! keeps a small state file, `.<name>.sluice-state`, naming (device, inode) of the file it
//! created at `path` and of each rotated file it made; it is replaced atomically (temp, fsync,
//! rename, fsync of the directory) whenever those change. At open:
//! - no file at `path`: Sluice creates it (`O_EXCL`, never through a symlink) and records it;
//! - the file Sluice recorded: a crash in the middle of a write can have left half a line at
//!   its end; every confirmed batch ends with a newline, so what follows the last newline was
//!   never confirmed (it is delivered again) and is cut off before anything is appended;
//! - any other file: refused with an error naming the path, or, with `append_existing = true`,
//!   appended to untouched: never cut, never rotated (it grows past `rotate_size`), never
//!   deleted; a failed write to it cannot be undone (a retry may leave half a line).
//!
//! **It follows its path.** Before each batch it compares the open file's (device, inode) with
//! the path's; after logrotate's `mv` (or anyone's) it creates a new file at the path, and
//! after the directory or the file was deleted it recreates both. After writing (and syncing)
//! a batch it checks the file still has a name: a batch written into a deleted file is not
//! confirmed, it is delivered again into the new one.
//!
//! Rotation is crash-safe: the full file is synced, renamed to `<name>.<n>` (n grows: higher is
//! newer), the directory synced, a new file created. A crash at any step leaves every delivered
//! line in exactly one file; the cursor is behind, so at worst a batch repeats. A rotation that
//! fails (a read-only directory, say) does not fail the batch that was already written: the
//! file grows past `rotate_size` and rotation is tried again after the next batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::compression::Compression;
use super::{Reach, SinkError, SinkSettings};
use crate::delivery::{Backoff, Encoding, LineBreaks, OpenedSink, RecordEncoding};
use crate::units::{de_bytes, render, Bounds, TypeTag};

use crate::delivery::{Batch, DeliveryResult, Sink, Verdicts};

/// A file's identity on its file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What Sluice created: the current file and its rotated files (by number).
#[derive(Debug, Default, PartialEq)]
struct Ownership {
    current: Option<FileId>,
    rotated: Vec<(u64, FileId)>,
}

impl Ownership {
    fn parse(text: &str) -> Self {
        let mut owned = Ownership::default();
        for line in text.lines() {
            let words: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|w| w.parse().ok())
                .collect();
            match (line.split_whitespace().next(), words.as_slice()) {
                (Some("current"), &[dev, ino]) => owned.current = Some(FileId { dev, ino }),
                (Some("rotated"), &[n, dev, ino]) => owned.rotated.push((n, FileId { dev, ino })),
                _ => {}
            }
        }
        owned
    }

    fn render(&self) -> String {
        let mut text = String::from("# Files this Sluice file sink created (device inode).\n");
        if let Some(c) = self.current {
            text.push_str(&format!("current {} {}\n", c.dev, c.ino));
        }
        for (n, id) in &self.rotated {
            text.push_str(&format!("rotated {n} {} {}\n", id.dev, id.ino));
        }
        text
    }
}

pub struct FileOutput {
    path: PathBuf,
    dir: PathBuf,
    file: Option<OpenFile>,
    owned: Ownership,
    rotate_size: u64,
    keep: u32,
    fsync: SinkFsync,
    append_existing: bool,
    /// When a failed rotation was last reported (they are retried after every batch).
    rotation_warned: Option<Instant>,
    rotate_every: Option<RotateEvery>,
    max_age: Option<Duration>,
    /// When rotated files were last checked against `max_age`.
    last_age_sweep: Option<Instant>,
    /// Rotated files are compressed (`<name>.<n>.gz` / `.zst`).
    compression: Compression,
    page_cache: PageCache,
}

struct OpenFile {
    file: File,
    id: FileId,
    size: u64,
    /// Sluice created it (it may cut, rotate and delete it).
    ours: bool,
    /// Unix seconds at which its time period ends (`rotate_every`): it is rotated then.
    period_end: Option<u64>,
    /// The page cache holds none of this file's bytes before this offset that Sluice wrote
    /// and synced (`page_cache = "drop_synced"`).
    dropped_to: u64,
}

impl OpenFile {
    /// Drops what the page cache holds of this file's synced bytes, in whole
    /// [`PAGE_CACHE_DROP_UNIT_BYTES`]: the unit the next batch appends into stays cached, so an
    /// append never reads it back from disk. Advice only: a refusal changes nothing but speed.
    fn drop_synced_pages(&mut self) {
        let keep_from = self.size / PAGE_CACHE_DROP_UNIT_BYTES * PAGE_CACHE_DROP_UNIT_BYTES;
        if keep_from <= self.dropped_to {
            return;
        }
        let len = keep_from - self.dropped_to;
        if let Err(error) = tuning::disk::drop_cached(&self.file, self.dropped_to, len) {
            tracing::debug!(%error, "posix_fadvise(DONTNEED) refused");
        }
        self.dropped_to = keep_from;
    }
}

/// `page_cache = "drop_synced"` drops synced output in units of this size: whole pages of any
/// page size (the kernel keeps a page a range covers only in part).
const PAGE_CACHE_DROP_UNIT_BYTES: u64 = 64 << 10;

/// `rotate_every`: a period (`"1h"`, aligned to the epoch: whole hours) or `"daily"` (at
/// midnight UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateEvery {
    Period(Duration),
    Daily,
}

impl RotateEvery {
    fn seconds(self) -> u64 {
        match self {
            RotateEvery::Period(d) => d.as_secs().max(1),
            RotateEvery::Daily => 86_400,
        }
    }

    /// The end of the period that `at` (Unix seconds) lies in.
    pub fn period_end(self, at: u64) -> u64 {
        let len = self.seconds();
        (at / len + 1) * len
    }

    fn name(self) -> String {
        match self {
            RotateEvery::Daily => "daily".into(),
            RotateEvery::Period(d) => humantime::format_duration(d).to_string(),
        }
    }
}

impl<'de> Deserialize<'de> for RotateEvery {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "daily" {
            return Ok(RotateEvery::Daily);
        }
        humantime::parse_duration(&text)
            .map(RotateEvery::Period)
            .map_err(|e| {
                serde::de::Error::custom(format!("expected \"daily\" or a duration (\"1h\"): {e}"))
            })
    }
}

fn unix_secs(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn with_path(op: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", path.display()))
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

/// How often a failed rotation is logged (it is retried after every batch).
const ROTATION_WARN_INTERVAL: Duration = Duration::from_secs(10);

impl FileOutput {
    pub fn open(config: &FileSink) -> io::Result<Self> {
        let dir = match config.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut output = FileOutput {
            path: config.path.clone(),
            dir,
            file: None,
            owned: Ownership::default(),
            rotate_size: config.rotate_size,
            keep: config.keep,
            fsync: config.fsync,
            append_existing: config.append_existing,
            rotation_warned: None,
            rotate_every: config.rotate_every,
            max_age: config.max_age,
            last_age_sweep: None,
            compression: config.compression,
            page_cache: config.page_cache,
        };
        output.load_state()?;
        output.open_current()?;
        // Rotated before a crash or a config change, not compressed yet.
        output.compress_rotated();
        Ok(output)
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join(format!(".{}.sluice-state", self.file_name()))
    }

    fn load_state(&mut self) -> io::Result<()> {
        let path = self.state_path();
        self.owned = match std::fs::read_to_string(&path) {
            Ok(text) => Ownership::parse(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ownership::default(),
            Err(e) => return Err(with_path("read", &path, e)),
        };
        Ok(())
    }

    fn save_state(&self) -> io::Result<()> {
        let path = self.state_path();
        // 0666 less the umask, as any file the sink creates.
        crate::atomic_file::replace(&path, self.owned.render().as_bytes(), 0o666)
            .map_err(|e| with_path("write", &path, e))
    }

    /// Opens (or creates) the file at `path`, deciding whether it is ours (module docs).
    fn open_current(&mut self) -> io::Result<&mut OpenFile> {
        if self.file.is_none() {
            std::fs::create_dir_all(&self.dir)
                .map_err(|e| with_path("create directory", &self.dir, e))?;
            let opened = match std::fs::symlink_metadata(&self.path) {
                Ok(meta) => self.open_existing(&meta)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.create()?,
                Err(e) => return Err(with_path("stat", &self.path, e)),
            };
            self.file = Some(opened);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    fn open_existing(&self, meta: &std::fs::Metadata) -> io::Result<OpenFile> {
        let ours = self.owned.current == Some(FileId::of(meta));
        if !ours && !self.append_existing {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and was not created by this sink: refusing to write to, cut, rotate or delete it (move it away, or set append_existing = true to append to it untouched)",
                    self.path.display()
                ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|e| with_path("open", &self.path, e))?;
        let id = FileId::of(&file.metadata()?);
        let size = if ours && id == FileId::of(meta) {
            cut_unconfirmed_tail(&file).map_err(|e| with_path("repair", &self.path, e))?
        } else {
            file.metadata()?.len()
        };
        if !ours {
            tracing::info!(path = %self.path.display(), "appending to a file Sluice did not create (append_existing): it is never cut, rotated or deleted");
        }
        // The period it began in: its creation time where the file system keeps one.
        let born = meta
            .created()
            .or_else(|_| meta.modified())
            .map(unix_secs)
            .unwrap_or(0);
        Ok(OpenFile {
            file,
            id,
            size,
            ours,
            period_end: self.rotate_every.map(|r| r.period_end(born)),
            // What was there before was not synced by us: left to the kernel.
            dropped_to: size,
        })
    }

    fn create(&mut self) -> io::Result<OpenFile> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.path)
            .map_err(|e| with_path("create", &self.path, e))?;
        let id = FileId::of(&file.metadata()?);
        self.owned.current = Some(id);
        if let Err(e) = self.save_state() {
            // Unrecorded, it would look foreign at the next open: take it back (it is empty).
            self.owned.current = None;
            let _ = std::fs::remove_file(&self.path);
            return Err(e);
        }
        let now = unix_secs(std::time::SystemTime::now());
        Ok(OpenFile {
            file,
            id,
            size: 0,
            ours: true,
            period_end: self.rotate_every.map(|r| r.period_end(now)),
            dropped_to: 0,
        })
    }

    /// Drops the open file when the path no longer names it (renamed, deleted, replaced).
    fn follow_path(&mut self) {
        let Some(open) = &self.file else { return };
        let moved = match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => FileId::of(&meta) != open.id,
            Err(_) => true,
        };
        if moved {
            tracing::info!(path = %self.path.display(), "the output file was moved or deleted: writing to a new one");
            self.file = None;
        }
    }

    fn write_batch(&mut self, batch: &[u8]) -> io::Result<()> {
        self.follow_path();
        self.write_to_current(batch)
    }

    /// Writes (and syncs) `batch` into the open file; not confirmed if the file lost its name
    /// meanwhile.
    fn write_to_current(&mut self, batch: &[u8]) -> io::Result<()> {
        let fsync = self.fsync;
        let page_cache = self.page_cache;
        let path = self.path.clone();
        let open = self.open_current()?;
        let before = open.size;
        let written = open.file.write_all(batch).and_then(|()| match fsync {
            SinkFsync::Always => open.file.sync_data(),
            SinkFsync::Never => Ok(()),
        });
        if let Err(e) = written {
            if open.ours {
                // Undo a partial batch so the retry does not leave half a line.
                let _ = open.file.set_len(before);
            }
            return Err(with_path("write", &path, e));
        }
        open.size += batch.len() as u64;
        if open.file.metadata()?.nlink() == 0 {
            // Deleted (with its directory, perhaps) before the batch was confirmed.
            self.file = None;
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} was deleted while being written: delivering the batch again",
                    path.display()
                ),
            ));
        }
        if fsync == SinkFsync::Always && page_cache == PageCache::DropSynced {
            open.drop_synced_pages();
        }
        Ok(())
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The highest number any file `<name>.<n>` in the directory has (ours or not).
    fn highest_rotated(&self) -> io::Result<u64> {
        let prefix = format!("{}.", self.file_name());
        let mut highest = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(|e| with_path("list", &self.dir, e))? {
            let entry = entry.map_err(|e| with_path("list", &self.dir, e))?;
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|f| f.strip_prefix(&prefix))
                .map(|n| n.trim_end_matches(".tmp"))
                .map(|n| n.trim_end_matches(".gz").trim_end_matches(".zst"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                highest = highest.max(n);
            }
        }
        Ok(highest)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let Some(open) = &self.file else {
            return Ok(());
        };
        let id = open.id;
        open.file
            .sync_all()
            .map_err(|e| with_path("fsync", &self.path, e))?;
        let next = self.highest_rotated()? + 1;
        let target = self.dir.join(format!("{}.{next}", self.file_name()));
        std::fs::rename(&self.path, &target).map_err(|e| with_path("rename", &target, e))?;
        self.file = None;
        self.owned.current = None;
        self.owned.rotated.push((next, id));
        self.save_state()?;
        self.open_current()?;
        self.compress_rotated();
        self.remove_excess_rotated()
    }

    /// Rotated file `n` of ours, under whichever name it has (plain or compressed).
    fn rotated_path(&self, n: u64, id: FileId) -> Option<PathBuf> {
        ["", ".gz", ".zst"].iter().find_map(|suffix| {
            let path = self.dir.join(format!("{}.{n}{suffix}", self.file_name()));
            let meta = std::fs::symlink_metadata(&path).ok()?;
            (FileId::of(&meta) == id).then_some(path)
        })
    }

    /// Compresses our rotated files that are still plain (`compression`); a failure is logged
    /// and tried again at the next rotation or start (the plain file stays meanwhile).
    fn compress_rotated(&mut self) {
        if self.compression == Compression::None {
            return;
        }
        let mut changed = false;
        for i in 0..self.owned.rotated.len() {
            let (n, id) = self.owned.rotated[i];
            let plain = self.dir.join(format!("{}.{n}", self.file_name()));
            if self.rotated_path(n, id).as_ref() != Some(&plain) {
                continue;
            }
            let compressed = super::compression::compress_file(&plain, self.compression)
                .and_then(|path| std::fs::symlink_metadata(&path));
            match compressed {
                Ok(meta) => {
                    self.owned.rotated[i].1 = FileId::of(&meta);
                    changed = true;
                }
                Err(e) => {
                    tracing::warn!(path = %plain.display(), error = %e, "cannot compress the rotated file; it stays plain for now");
                }
            }
        }
        if changed {
            if let Err(e) = self.save_state() {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot save which rotated files are ours");
            }
        }
    }

    /// Deletes the oldest rotated files beyond `keep`, only those Sluice made (same inode).
    fn remove_excess_rotated(&mut self) -> io::Result<()> {
        self.owned.rotated.sort_unstable_by_key(|(n, _)| *n);
        let excess = self.owned.rotated.len().saturating_sub(self.keep as usize);
        let doomed: Vec<(u64, FileId)> = self.owned.rotated.drain(..excess).collect();
        for (n, id) in doomed {
            // Gone, or replaced by a file that is not ours: left alone.
            if let Some(old) = self.rotated_path(n, id) {
                std::fs::remove_file(&old).map_err(|e| with_path("remove", &old, e))?
            }
        }
        self.save_state()
    }

    fn rotate_if_due(&mut self) {
        self.rotate_if_due_at(unix_secs(std::time::SystemTime::now()));
    }

    /// Rotates when the file reached `rotate_size`, or its period ended (`rotate_every`; an
    /// empty file is not rotated, its period moves on).
    fn rotate_if_due_at(&mut self, now: u64) {
        let every = self.rotate_every;
        let Some(f) = self.file.as_mut().filter(|f| f.ours) else {
            return;
        };
        let period_over = f.period_end.is_some_and(|end| now >= end);
        if period_over && f.size == 0 {
            f.period_end = every.map(|r| r.period_end(now));
            return;
        }
        if f.size < self.rotate_size && !period_over {
            return;
        }
        if let Err(e) = self.rotate() {
            let quiet = self
                .rotation_warned
                .is_some_and(|t| t.elapsed() < ROTATION_WARN_INTERVAL);
            if !quiet {
                tracing::warn!(path = %self.path.display(), error = %e, "rotation failed: appending on and trying again after the next batch");
                self.rotation_warned = Some(Instant::now());
            }
        }
    }
}

/// How often rotated files are checked against `max_age`.
const AGE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl FileOutput {
    /// Deletes the rotated files this sink made whose last write is older than `max_age`.
    fn remove_aged(&mut self, now: std::time::SystemTime) -> io::Result<()> {
        let Some(max_age) = self.max_age else {
            return Ok(());
        };
        let before = self.owned.rotated.len();
        let mut rotated = std::mem::take(&mut self.owned.rotated);
        rotated.retain(|&(n, id)| {
            let Some(path) = self.rotated_path(n, id) else {
                return false; // Gone: forget it.
            };
            let aged = std::fs::symlink_metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|age| age > max_age));
            if aged {
                return std::fs::remove_file(&path).is_err();
            }
            true
        });
        self.owned.rotated = rotated;
        if self.owned.rotated.len() != before {
            self.save_state()?;
        }
        Ok(())
    }

    /// At most every [`AGE_SWEEP_INTERVAL`]: [`FileOutput::remove_aged`].
    fn sweep_aged(&mut self) {
        if self.max_age.is_none()
            || self
                .last_age_sweep
                .is_some_and(|t| t.elapsed() < AGE_SWEEP_INTERVAL)
        {
            return;
        }
        self.last_age_sweep = Some(Instant::now());
        if let Err(e) = self.remove_aged(std::time::SystemTime::now()) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove rotated files past max_age; trying again later");
        }
    }

    /// Bytes the current file may still take before it is due for rotation (unbounded for a
    /// file Sluice does not own, which it never rotates).
    fn room(&self) -> usize {
        match &self.file {
            Some(f) if !f.ours => usize::MAX,
            Some(f) => self.rotate_size.saturating_sub(f.size) as usize,
            None => self.rotate_size as usize,
        }
    }
}

/// Where to cut `rest` so the part fits in `room`: after the last whole line that fits, or after
/// the first line when none does (a line longer than the room goes whole into one file).
fn cut_at(rest: &[u8], room: usize) -> usize {
    if rest.len() <= room {
        return rest.len();
    }
    match memchr::memrchr(b'\n', &rest[..room]) {
        Some(at) => at + 1,
        None => memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1),
    }
}

impl FileOutput {
    /// Writes the batch, rotating at `rotate_size` to within one line: the batch is cut at
    /// line boundaries where the file fills. A failure after some parts were written has the
    /// whole batch delivered again (duplicates, never loss: at-least-once).
    fn write_rotating(&mut self, batch: &[u8]) -> io::Result<()> {
        let mut rest = batch;
        while !rest.is_empty() {
            let cut = cut_at(rest, self.room());
            self.write_batch(&rest[..cut])?;
            rest = &rest[cut..];
            // Written and confirmed so far: a rotation failing now must not write it again.
            self.rotate_if_due();
            if self.room() == 0 {
                // The rotation failed (it is retried after the next batch): the rest goes
                // into this file at once rather than a line at a time.
                self.write_batch(rest)?;
                break;
            }
        }
        Ok(())
    }
}

impl Sink for FileOutput {
    fn deliver(&mut self, batch: &Batch) -> DeliveryResult {
        self.write_rotating(batch.bytes())?;
        Ok(Verdicts::all_confirmed())
    }

    fn reset(&mut self) {
        self.file = None;
    }

    /// Between batches: a period that ended rotates the file, and old rotated files go.
    fn idle(&mut self) {
        self.rotate_if_due();
        self.sweep_aged();
    }
}

// ---- Configuration: `[sinks.NAME]` with `type = "file"` ----

/// When the file sink confirms a batch (and so when its cursor may advance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFsync {
    /// After the batch was written and fdatasync'd: survives power loss.
    #[default]
    Always,
    /// After the batch was written: survives a crash of Sluice, not of the machine.
    Never,
}

/// What the file sink does with the page cache holding output it wrote and synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageCache {
    /// Drops each batch's pages once it is synced (with `fsync = "always"`; the last
    /// partly written 64 KiB stay): the next batch is written into the pages just freed,
    /// instead of the output taking fresh memory as it grows until the kernel reclaims. On a
    /// VM that hands free memory back to its host (virtio-balloon free page reporting) fresh
    /// pages cost a host fault each: the file sink's thread spent 2.5× the CPU per event
    /// writing into them (docs/benchmarks.md). A reader following the file reads from disk.
    #[default]
    DropSynced,
    /// Leaves them to the kernel (as rsyslog and syslog-ng do).
    Keep,
}

impl PageCache {
    fn name(self) -> &'static str {
        match self {
            PageCache::DropSynced => "drop_synced",
            PageCache::Keep => "keep",
        }
    }
}

/// `type = "file"`: newline-delimited events in a file Sluice owns, rotated by size.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSink {
    #[serde(rename = "type")]
    pub tag: TypeTag,
    pub path: PathBuf,
    /// Sources, transforms or route outputs it takes; unset: every source.
    pub inputs: Option<Vec<String>>,
    /// Without a cursor yet: `"end"` (default) or `"oldest"` (back-fill what the WAL holds).
    #[serde(default)]
    pub start_at: super::StartAt,
    /// Deliveries failing in a row before the circuit breaker opens.
    #[serde(default = "super::default_failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit makes no attempt before one probe.
    #[serde(
        default = "super::default_open_for",
        deserialize_with = "crate::units::de_duration"
    )]
    pub open_for: std::time::Duration,
    /// `batch.max_events`, `batch.max_bytes`, `batch.timeout`.
    #[serde(default)]
    pub batch: crate::delivery::StreamBatch,
    /// The dead-letter queue's budget (`data_dir/dlq/NAME`).
    #[serde(
        default = "super::default_dlq_max_size",
        deserialize_with = "crate::units::de_bytes"
    )]
    pub dlq_max_size: u64,
    #[serde(default = "json")]
    pub encoding: Encoding,
    /// Rotate once the file reaches this size (default 100MB).
    #[serde(default = "default_rotate_size", deserialize_with = "de_bytes")]
    pub rotate_size: u64,
    /// Rotated files kept; older ones are deleted (default 10).
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Also rotate when a time period ends: a duration (`"1h"`, whole hours) or `"daily"`
    /// (midnight UTC).
    pub rotate_every: Option<RotateEvery>,
    /// Delete rotated files whose last write is older than this (`"7d"`), besides `keep`.
    #[serde(default, deserialize_with = "crate::units::de_opt_duration")]
    pub max_age: Option<Duration>,
    /// Rotated files compressed: `"gzip"` (`<name>.<n>.gz`) or `"zstd"` (`.zst`).
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub fsync: SinkFsync,
    /// `"drop_synced"` (default) or `"keep"`: see [`PageCache`].
    #[serde(default)]
    pub page_cache: PageCache,
    /// A file at `path` that Sluice did not create: append to it (never cut, rotate or delete
    /// it) instead of refusing to start.
    #[serde(default)]
    pub append_existing: bool,
    #[serde(default)]
    pub line_breaks: LineBreaks,
    /// With `encoding = "template"`: `"{{timestamp}} {{hostname}} {{message}}"`.
    pub template: Option<String>,
}

fn json() -> Encoding {
    Encoding::Json
}
fn default_rotate_size() -> u64 {
    100_000_000
}
fn default_keep() -> u32 {
    10
}

impl SinkSettings for FileSink {
    fn check(&self, name: &str) -> Result<(), (String, String)> {
        super::check_template(name, self.encoding, self.template.as_deref())?;
        let invalid = |key: &str, msg: &str| Err((format!("sinks.{name}.{key}"), msg.to_string()));
        if self.path.as_os_str().is_empty() || self.path.file_name().is_none() {
            return invalid("path", "must name a file");
        }
        if self.rotate_size < 1024 {
            return invalid("rotate_size", "must be at least 1KiB");
        }
        Ok(())
    }

    fn check_bounds(&self, prefix: &str, b: &mut Bounds) {
        b.size(
            &format!("{prefix}.rotate_size"),
            self.rotate_size,
            1024..=1 << 40,
        );
        b.count(&format!("{prefix}.keep"), self.keep.into(), 0..=100_000);
        if let Some(RotateEvery::Period(d)) = self.rotate_every {
            b.duration(
                &format!("{prefix}.rotate_every"),
                d,
                Duration::from_secs(1)..=30 * crate::units::DAY,
            );
        }
        if let Some(age) = self.max_age {
            b.duration(
                &format!("{prefix}.max_age"),
                age,
                Duration::from_secs(1)..=3650 * crate::units::DAY,
            );
        }
    }

    fn common(&self) -> super::SinkCommon<'_> {
        super::SinkCommon {
            inputs: self.inputs.as_deref(),
            start_at: self.start_at,
            circuit: crate::delivery::CircuitSettings {
                failure_threshold: self.failure_threshold,
                open_for: self.open_for,
            },
            batch: self.batch.0,
            dlq_max_size: self.dlq_max_size,
            concurrency: 1,
        }
    }

    fn render(&self) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert(
            "path".into(),
            render::text(&self.path.display().to_string()),
        );
        t.insert("encoding".into(), render::text(self.encoding.name()));
        t.insert("rotate_size".into(), render::bytes(self.rotate_size));
        t.insert("keep".into(), toml::Value::Integer(self.keep.into()));
        if let Some(every) = self.rotate_every {
            t.insert("rotate_every".into(), render::text(&every.name()));
        }
        t.insert("compression".into(), render::text(self.compression.name()));
        if let Some(age) = self.max_age {
            t.insert("max_age".into(), render::duration(age));
        }
        let fsync = match self.fsync {
            SinkFsync::Always => "always",
            SinkFsync::Never => "never",
        };
        t.insert("fsync".into(), render::text(fsync));
        t.insert("page_cache".into(), render::text(self.page_cache.name()));
        t.insert(
            "append_existing".into(),
            toml::Value::Boolean(self.append_existing),
        );
        t.insert("line_breaks".into(), render::text(self.line_breaks.name()));
        if let Some(template) = &self.template {
            t.insert("template".into(), render::text(template));
        }
        t
    }

    fn reach(&self) -> Reach<'_> {
        Reach::File(&self.path)
    }

    fn open(&self) -> Result<OpenedSink, SinkError> {
        Ok(OpenedSink {
            sink: Box::new(FileOutput::open(self).map_err(|source| SinkError::Open {
                sink_type: "file",
                source,
            })?),
            encoding: RecordEncoding {
                encoding: self.encoding,
                framing: None,
                line_breaks: self.line_breaks,
                template: super::compile_template(self.template.as_deref()),
            },
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
            rejects_events: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Encoding, LineBreaks};

    fn sink(path: &Path, rotate_size: u64, keep: u32) -> FileSink {
        FileSink {
            tag: crate::config::TypeTag,
            path: path.to_path_buf(),
            inputs: None,
            start_at: crate::sinks::StartAt::End,
            failure_threshold: 5,
            open_for: Duration::from_secs(30),
            batch: Default::default(),
            dlq_max_size: 1 << 30,
            encoding: Encoding::Raw,
            rotate_size,
            keep,
            rotate_every: None,
            max_age: None,
            compression: Compression::None,
            fsync: SinkFsync::Always,
            page_cache: PageCache::DropSynced,
            append_existing: false,
            line_breaks: LineBreaks::Escape,
            template: None,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    }

    /// A batch larger than the room left is cut at line boundaries: every file but the last
    /// holds at most `rotate_size` plus one line, and every line is in exactly one file, in order.
    #[test]
    fn rotates_within_one_line_not_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut out = FileOutput::open(&sink(&path, 1024, 100)).unwrap();
        let lines: Vec<String> = (0..200)
            .map(|i| format!("line {i:04} {}\n", "x".repeat(i % 40)))
            .collect();
        out.write_rotating(lines.concat().as_bytes()).unwrap();
        let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let n = name.strip_prefix("out.log.")?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        files.sort();
        assert!(files.len() >= 5, "{files:?}");
        let longest = lines.iter().map(String::len).max().unwrap() as u64;
        let mut all = String::new();
        for (_, f) in &files {
            let size = std::fs::metadata(f).unwrap().len();
            assert!(
                size <= 1024 + longest && size >= 1024 - longest,
                "{f:?}: {size}"
            );
            all.push_str(&std::fs::read_to_string(f).unwrap());
        }
        all.push_str(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(all, lines.concat());
    }

    /// Which of the file's pages the page cache holds, in `[from, to)` (mincore over a
    /// mapping, which faults nothing in): (resident, pages).
    fn resident_pages(path: &Path, from: u64, to: u64) -> (usize, usize) {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let page = 4096u64;
        let len = (to - from) as usize;
        // SAFETY: a read-only shared mapping of a file we opened, unmapped below; mincore
        // writes one byte per page into a vector of that many bytes.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                from as libc::off_t,
            );
            assert_ne!(map, libc::MAP_FAILED);
            let mut vec = vec![0u8; len.div_ceil(page as usize)];
            assert_eq!(libc::mincore(map, len, vec.as_mut_ptr()), 0);
            libc::munmap(map, len);
            (vec.iter().filter(|&&b| b & 1 == 1).count(), vec.len())
        }
    }

    /// A directory on a disk file system (a tmpfs keeps every page: nothing to drop there).
    fn disk_dir() -> tempfile::TempDir {
        let tmp = std::env::temp_dir();
        // SAFETY: statfs fills the struct we pass; the path is a valid C string.
        let on_tmpfs = unsafe {
            let c = std::ffi::CString::new(tmp.as_os_str().as_encoded_bytes()).unwrap();
            let mut st: libc::statfs = std::mem::zeroed();
            libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
        };
        if on_tmpfs {
            tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        }
    }

    /// With `page_cache = "drop_synced"` synced output leaves the page cache, except the last
    /// partly written unit (the next append goes there); with `"keep"` it all stays (which
    /// also shows the residency check sees written pages).
    #[test]
    fn synced_output_leaves_the_page_cache_but_its_last_unit() {
        let dir = disk_dir();
        let batch = format!("{}\n", "x".repeat(1023)).repeat(1024); // 1 MiB of lines
        let whole = 16 * batch.len() as u64;
        for policy in [PageCache::DropSynced, PageCache::Keep] {
            let path = dir.path().join(format!("{}.log", policy.name()));
            let mut config = sink(&path, 1 << 40, 1);
            config.page_cache = policy;
            let mut out = FileOutput::open(&config).unwrap();
            for _ in 0..16 {
                out.write_rotating(batch.as_bytes()).unwrap();
            }
            out.write_rotating(b"a short line\n").unwrap();
            let (behind, pages) = resident_pages(&path, 0, whole);
            let (tail, tail_pages) = resident_pages(&path, whole, whole + 13);
            assert_eq!(
                (tail, tail_pages),
                (1, 1),
                "{policy:?}: the last page stays"
            );
            match policy {
                PageCache::DropSynced => assert_eq!(behind, 0, "of {pages} pages"),
                PageCache::Keep => assert!(behind * 10 >= pages * 9, "{behind} of {pages}"),
            }
        }
    }

    #[test]
    fn periods_align_to_the_epoch() {
        let hour = RotateEvery::Period(Duration::from_secs(3600));
        assert_eq!(hour.period_end(7_200), 10_800);
        assert_eq!(hour.period_end(7_199), 7_200);
        assert_eq!(RotateEvery::Daily.period_end(86_400 * 3 + 5), 86_400 * 4);
    }

    /// A file whose period ended is rotated (an empty one is not: its period moves on), and
    /// rotated files older than `max_age` are deleted (only those this sink made).
    #[test]
    fn rotates_when_the_period_ends_and_removes_aged_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.log");
        let mut config = sink(&path, 1 << 30, 100);
        config.rotate_every = Some(RotateEvery::Period(Duration::from_secs(3600)));
        config.max_age = Some(Duration::from_secs(7 * 86_400));
        let mut out = FileOutput::open(&config).unwrap();
        let end = out.file.as_ref().unwrap().period_end.unwrap();
        out.rotate_if_due_at(end);
        assert!(
            !dir.path().join("out.log.1").exists(),
            "an empty file is not rotated"
        );
        out.write_rotating(b"one\n").unwrap();
        out.rotate_if_due_at(end + 3600 - 1);
        assert!(
            !dir.path().join("out.log.1").exists(),
            "its period has not ended"
        );
        out.rotate_if_due_at(end + 3600);
        assert_eq!(
            std::fs::read(dir.path().join("out.log.1")).unwrap(),
            b"one\n"
        );
        out.write_rotating(b"two\n").unwrap();
        out.rotate().unwrap();
        let foreign = dir.path().join("out.log.9");
        std::fs::write(&foreign, "not ours").unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(8 * 86_400);
        for f in ["out.log.1", "out.log.9"] {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join(f))
                .unwrap();
            file.set_modified(old).unwrap();
        }
        out.remove_aged(std::time::SystemTime::now()).unwrap();
        assert!(
            !dir.path().join("out.log.1").exists(),
            "ours and older than max_age"
        );
        assert!(dir.path().join("out.log.2").exists(), "ours but recent");
        assert!(foreign.exists(), "never deleted: not ours");
    }

    #[test]
    fn rotates_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.log");
        let mut out = FileOutput::open(&sink(&path, 1024, 2)).unwrap();
        let mut batch = [b'x'; 511].to_vec();
        batch.push(b'\n');
        for _ in 0..10 {
            out.write_rotating(&batch).unwrap();
        }
        let out_dir = path.parent().unwrap();
        assert_eq!(
            names(out_dir),
            ["events.log", "events.log.4", "events.log.5"]
        );
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
        FileOutput::open(&sink(&path, 1 << 20, 2))
            .unwrap()
            .write_rotating(b"one\ntwo\n")
            .unwrap();
        // A crash mid-write: a long tail (over one read chunk) without a newline.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&vec![b'x'; 100_000]).unwrap();
        let mut out = FileOutput::open(&sink(&path, 1 << 20, 2)).unwrap();
        out.write_rotating(b"three\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
    }

    /// A file Sluice did not create is refused, or appended to untouched: never cut, never
    /// rotated, never deleted (with keep = 0 too).
    #[test]
    fn a_foreign_file_is_refused_or_appended_to_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        let original = b"root:x:0:0:root:/root:/bin/bash\nhalf a line".to_vec();
        std::fs::write(&path, &original).unwrap();
        let e = FileOutput::open(&sink(&path, 1024, 0)).err().unwrap();
        assert!(e.to_string().contains("append_existing"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), original);
        let mut config = sink(&path, 16, 0);
        config.append_existing = true;
        let mut out = FileOutput::open(&config).unwrap();
        out.write_rotating(b"event one\n").unwrap();
        out.write_rotating(b"event two\n").unwrap();
        let mut expected = original.clone();
        expected.extend_from_slice(b"event one\nevent two\n");
        assert_eq!(std::fs::read(&path).unwrap(), expected);
        assert_eq!(names(dir.path()), ["passwd"], "nothing renamed or deleted");
        // Restarting with the same config: still not cut (it is not ours).
        drop(out);
        FileOutput::open(&config).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }

    /// Rotated files that are not Sluice's (same name pattern) are never deleted.
    #[test]
    fn only_rotated_files_sluice_made_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        std::fs::write(dir.path().join("events.log.1"), b"someone else's\n").unwrap();
        let mut out = FileOutput::open(&sink(&path, 8, 0)).unwrap();
        for _ in 0..3 {
            out.write_rotating(b"0123456789\n").unwrap();
        }
        assert_eq!(names(dir.path()), ["events.log", "events.log.1"]);
        assert_eq!(
            std::fs::read(dir.path().join("events.log.1")).unwrap(),
            b"someone else's\n"
        );
    }

    /// logrotate's `mv`: the next batch goes into a new file at the path; deleting the
    /// directory: it is recreated.
    #[test]
    fn follows_its_path_after_rename_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.log");
        let mut out = FileOutput::open(&sink(&path, 1 << 20, 2)).unwrap();
        out.write_rotating(b"before\n").unwrap();
        std::fs::rename(&path, dir.path().join("out/events.log.old")).unwrap();
        out.write_rotating(b"after\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"after\n");
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
        out.write_rotating(b"recreated\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"recreated\n");
    }

    /// A batch that went into a file deleted after the path was checked is not confirmed: it
    /// is delivered again, into a new file.
    #[test]
    fn a_batch_written_into_a_deleted_file_is_delivered_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/events.log");
        let mut out = FileOutput::open(&sink(&path, 1 << 20, 2)).unwrap();
        std::fs::remove_dir_all(dir.path().join("out")).unwrap();
        let e = out.write_to_current(b"lost?\n").unwrap_err();
        assert!(e.to_string().contains("deleted"), "{e}");
        out.reset();
        out.write_rotating(b"lost?\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"lost?\n");
    }

    /// A rotation that fails does not have the batch written again.
    #[test]
    fn a_failed_rotation_does_not_rewrite_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.log");
        let mut out = FileOutput::open(&sink(&path, 8, 2)).unwrap();
        // The rotated name is taken by a directory: every rename fails (as in a read-only
        // directory, which root would not notice).
        std::fs::create_dir_all(dir.path().join("events.log.1/x")).unwrap();
        out.write_rotating(b"0123456789\n").unwrap();
        out.write_rotating(b"abcdefghij\n").unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"0123456789\nabcdefghij\n",
            "each batch written once"
        );
    }

    /// With `compression`, rotated files become `<name>.<n>.zst` (or `.gz`), still counted by
    /// `keep` and numbered on.
    #[test]
    fn rotated_files_are_compressed_and_still_kept_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        let mut config = sink(&path, 10, 2);
        config.compression = Compression::Zstd;
        let mut out = FileOutput::open(&config).unwrap();
        for i in 0..4 {
            out.write_rotating(format!("event-{i}-xx\n").as_bytes())
                .unwrap();
        }
        assert_eq!(
            names(dir.path()),
            vec![
                "events.ndjson",
                "events.ndjson.3.zst",
                "events.ndjson.4.zst"
            ]
        );
        let data = std::fs::read(dir.path().join("events.ndjson.4.zst")).unwrap();
        assert_eq!(zstd::decode_all(&data[..]).unwrap(), b"event-3-xx\n");
        // A restart numbers on past the compressed files.
        drop(out);
        let mut out = FileOutput::open(&config).unwrap();
        out.write_rotating(b"event-4-xx\n").unwrap();
        assert!(names(dir.path()).contains(&"events.ndjson.5.zst".to_string()));
    }
}
