//! Dead-letter queues: events a destination rejected for good, kept durably with its reason.
//!
//! One queue per output, written by that output's thread (std I/O, never a shard's ring) and
//! read by `sluice dlq`. The records use the WAL's frame (length, crc32c, payload), so a torn
//! or damaged letter is detected, never returned.
//!
//! # On-disk layout
//! ```text
//! data_dir/dlq/<sink>/
//!   .lock                       flock'd by every writer and by `sluice dlq replay|drop`
//!   00000000000000000001.dlq    oldest file
//!   00000000000000000002.dlq    newest file (appended to until FILE_BYTES)
//!
//! file    = "SLDLQ001" record*
//! record  = length (u32) | crc32c(length bytes ++ payload) (u32) | payload    (the WAL frame)
//! payload = dead-lettered at, unix ms (i64) | shard (u16) | reason length (u16) | reason (UTF-8)
//!           | the WAL record of the event, unchanged
//! ```
//! # Invariants
//! - [`DeadLetters::append`] returns only after the letters are fdatasync'd (a new file's
//!   directory entry too): the caller may then advance the output's cursor past them.
//! - The queue never grows past its byte budget: an append that does not fit is refused as a
//!   whole ([`DeadLetterError::Full`]), so the events stay in the WAL, never dropped.
//! - Every change (append, rewrite after a replay, drop) happens under the directory's
//!   exclusive `flock`, so a running Sluice and `sluice dlq` never interleave.
//! - Nothing here depends on the engine.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::frame::{self, Decoded};

/// First bytes of every dead-letter file.
pub const FILE_MAGIC: &[u8; 8] = b"SLDLQ001";
/// A file is closed to appends once it holds this many bytes.
pub const FILE_BYTES: u64 = 64 << 20;
/// Longest reason kept (longer ones are cut at a character boundary).
pub const MAX_REASON_BYTES: usize = 4096;
const LETTER_HEADER_LEN: usize = 12;

/// One dead-lettered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    /// When it was dead-lettered (unix milliseconds).
    pub at_ms: i64,
    /// The shard whose WAL held it.
    pub shard: u16,
    /// The destination's reason (its status and error text).
    pub reason: String,
    /// The event's WAL record, unchanged.
    pub record: Vec<u8>,
}

/// Why letters could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter queue {} is full: {used} of {max} bytes used, {need} more needed (replay or drop it: `sluice dlq`)", dir.display())]
    Full {
        dir: PathBuf,
        used: u64,
        need: u64,
        max: u64,
    },
    #[error("{}: not a dead-letter file", path.display())]
    NotDeadLetters { path: PathBuf },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DeadLetterError + 'a {
    move |source| DeadLetterError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The dead-letter directory of output `sink` under `data_dir`.
pub fn queue_dir(data_dir: &Path, sink: &str) -> PathBuf {
    data_dir.join("dlq").join(sink)
}

/// The outputs that have a dead-letter directory under `data_dir`, by name.
pub fn queues(data_dir: &Path) -> Result<Vec<String>, DeadLetterError> {
    let dir = data_dir.join("dlq");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("read directory", &dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io("read directory", &dir))?;
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// An output's dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
}

/// The queue's exclusive lock, held until dropped.
pub struct QueueLock {
    _file: File,
}

/// What a queue holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueSummary {
    pub files: usize,
    pub letters: u64,
    pub bytes: u64,
    pub oldest_ms: Option<i64>,
    pub newest_ms: Option<i64>,
    /// Damaged places met (each skipped).
    pub damaged: u64,
}

/// The letters of one file, and damaged places skipped.
#[derive(Debug, Default)]
pub struct FileLetters {
    pub letters: Vec<Letter>,
    pub damaged: u64,
}

impl DeadLetters {
    /// The queue in `dir` (created on the first append), at most `max_bytes` on disk.
    pub fn new(dir: &Path, max_bytes: u64) -> Self {
        DeadLetters {
            dir: dir.to_path_buf(),
            max_bytes,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the queue's exclusive lock (waits while another process holds it).
    pub fn lock(&self) -> Result<QueueLock, DeadLetterError> {
        std::fs::create_dir_all(&self.dir).map_err(io("create directory", &self.dir))?;
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        use std::os::fd::AsRawFd;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(QueueLock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("lock", &path)(e));
            }
        }
    }

    /// The queue's files, oldest first: (number, path).
    pub fn files(&self) -> Result<Vec<(u64, PathBuf)>, DeadLetterError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read directory", &self.dir)(e)),
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("read directory", &self.dir))?;
            let name = entry.file_name();
            let Some(number) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".dlq"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            files.push((number, entry.path()));
        }
        files.sort();
        Ok(files)
    }

    /// Bytes the queue's files take.
    pub fn used_bytes(&self) -> Result<u64, DeadLetterError> {
        let mut used = 0;
        for (_, path) in self.files()? {
            used += std::fs::metadata(&path).map_err(io("stat", &path))?.len();
        }
        Ok(used)
    }

    /// Appends `letters` durably (fdatasync'd before it returns), or refuses them all when
    /// they do not fit the budget. Takes the queue's lock for the time of the write.
    pub fn append(&self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let _lock = self.lock()?;
        self.append_locked(letters)
    }

    /// [`append`](Self::append) for a caller that holds the lock.
    pub fn append_locked(&self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        let mut buf = Vec::new();
        for letter in letters {
            let start = frame::begin_record(&mut buf);
            encode_letter(&mut buf, letter);
            frame::finish_record(&mut buf, start);
        }
        let used = self.used_bytes()?;
        let need = buf.len() as u64 + FILE_MAGIC.len() as u64;
        if used + need > self.max_bytes {
            return Err(DeadLetterError::Full {
                dir: self.dir.clone(),
                used,
                need,
                max: self.max_bytes,
            });
        }
        let files = self.files()?;
        let newest = files.last().cloned();
        let open = match newest {
            Some((_, path)) if file_len(&path)? < FILE_BYTES => (path, false),
            Some((n, _)) => (self.file_path(n + 1), true),
            None => (self.file_path(1), true),
        };
        let (path, new) = open;
        write_letters(&path, new, &buf)?;
        if new {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn file_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:020}.dlq"))
    }

    /// The number the next file would get.
    pub fn next_file_number(&self) -> Result<u64, DeadLetterError> {
        Ok(self.files()?.last().map_or(1, |(n, _)| n + 1))
    }

    /// Reads one file's letters (damaged places skipped and counted).
    pub fn read_file(path: &Path) -> Result<FileLetters, DeadLetterError> {
        let data = std::fs::read(path).map_err(io("read", path))?;
        Self::decode_file(&data).ok_or_else(|| DeadLetterError::NotDeadLetters {
            path: path.to_path_buf(),
        })
    }

    /// A file's bytes as letters (damaged places skipped and counted); `None` when it is not
    /// a dead-letter file.
    pub fn decode_file(data: &[u8]) -> Option<FileLetters> {
        if data.len() < FILE_MAGIC.len() || &data[..FILE_MAGIC.len()] != FILE_MAGIC {
            return None;
        }
        let mut out = FileLetters::default();
        let mut at = FILE_MAGIC.len();
        while at < data.len() {
            match frame::decode(&data[at..]) {
                Decoded::Record { payload, frame_len } => {
                    match decode_letter(payload) {
                        Some(letter) => out.letters.push(letter),
                        None => out.damaged += 1,
                    }
                    at += frame_len;
                }
                // A torn tail (a crash mid-append, never confirmed) or damage: stop here.
                _ => {
                    out.damaged += 1;
                    break;
                }
            }
        }
        Some(out)
    }

    /// What the queue holds.
    pub fn summary(&self) -> Result<QueueSummary, DeadLetterError> {
        let mut s = QueueSummary::default();
        for (_, path) in self.files()? {
            s.files += 1;
            s.bytes += file_len(&path)?;
            let read = Self::read_file(&path)?;
            s.damaged += read.damaged;
            for l in &read.letters {
                s.letters += 1;
                s.oldest_ms = Some(s.oldest_ms.map_or(l.at_ms, |o| o.min(l.at_ms)));
                s.newest_ms = Some(s.newest_ms.map_or(l.at_ms, |o| o.max(l.at_ms)));
            }
        }
        Ok(s)
    }

    /// Writes `letters` as a new file (the newest), durably; for a replay's leftovers.
    pub fn write_new_file(&self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for letter in letters {
            let start = frame::begin_record(&mut buf);
            encode_letter(&mut buf, letter);
            frame::finish_record(&mut buf, start);
        }
        let path = self.file_path(self.next_file_number()?);
        write_letters(&path, true, &buf)?;
        sync_dir(&self.dir)
    }

    /// Deletes one file (after its letters were replayed or moved), durably.
    pub fn remove_file(&self, path: &Path) -> Result<(), DeadLetterError> {
        std::fs::remove_file(path).map_err(io("remove", path))?;
        sync_dir(&self.dir)
    }
}

fn file_len(path: &Path) -> Result<u64, DeadLetterError> {
    Ok(std::fs::metadata(path).map_err(io("stat", path))?.len())
}

fn write_letters(path: &Path, new: bool, frames: &[u8]) -> Result<(), DeadLetterError> {
    let mut file = OpenOptions::new()
        .create(new)
        .append(true)
        .open(path)
        .map_err(io("open", path))?;
    if new {
        file.write_all(FILE_MAGIC).map_err(io("write", path))?;
    }
    file.write_all(frames).map_err(io("write", path))?;
    file.sync_data().map_err(io("fdatasync", path))
}

fn sync_dir(dir: &Path) -> Result<(), DeadLetterError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync directory", dir))
}

fn encode_letter(buf: &mut Vec<u8>, letter: &Letter) {
    let mut reason = letter.reason.as_str();
    if reason.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason = &reason[..cut];
    }
    buf.extend_from_slice(&letter.at_ms.to_le_bytes());
    buf.extend_from_slice(&letter.shard.to_le_bytes());
    buf.extend_from_slice(&(reason.len() as u16).to_le_bytes());
    buf.extend_from_slice(reason.as_bytes());
    buf.extend_from_slice(&letter.record);
}

fn decode_letter(payload: &[u8]) -> Option<Letter> {
    let header = payload.get(..LETTER_HEADER_LEN)?;
    let at_ms = i64::from_le_bytes(header[..8].try_into().ok()?);
    let shard = u16::from_le_bytes([header[8], header[9]]);
    let reason_len = usize::from(u16::from_le_bytes([header[10], header[11]]));
    let reason = payload.get(LETTER_HEADER_LEN..LETTER_HEADER_LEN + reason_len)?;
    Some(Letter {
        at_ms,
        shard,
        reason: String::from_utf8_lossy(reason).into_owned(),
        record: payload[LETTER_HEADER_LEN + reason_len..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn letter(n: u8) -> Letter {
        Letter {
            at_ms: 1_700_000_000_000 + i64::from(n),
            shard: u16::from(n % 3),
            reason: format!("400 mapper_parsing_exception {n}"),
            record: vec![n; 50 + usize::from(n)],
        }
    }

    #[test]
    fn letters_come_back_in_order_with_their_reason() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeadLetters::new(&dir.path().join("dlq/search"), 1 << 20);
        q.append(&[letter(1), letter(2)]).unwrap();
        q.append(&[letter(3)]).unwrap();
        let files = q.files().unwrap();
        assert_eq!(files.len(), 1);
        let read = DeadLetters::read_file(&files[0].1).unwrap();
        assert_eq!(read.letters, vec![letter(1), letter(2), letter(3)]);
        assert_eq!(read.damaged, 0);
        let s = q.summary().unwrap();
        assert_eq!((s.letters, s.files), (3, 1));
        assert_eq!(queues(dir.path()).unwrap(), vec!["search".to_string()]);
    }

    #[test]
    fn a_full_queue_refuses_the_whole_append() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeadLetters::new(dir.path(), 300);
        q.append(&[letter(1), letter(2)]).unwrap();
        let before = q.summary().unwrap();
        let err = q.append(&[letter(3), letter(4)]).unwrap_err();
        assert!(matches!(err, DeadLetterError::Full { .. }), "{err}");
        assert_eq!(q.summary().unwrap(), before, "nothing half-written");
    }

    #[test]
    fn a_torn_tail_is_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeadLetters::new(dir.path(), 1 << 20);
        q.append(&[letter(1), letter(2)]).unwrap();
        let path = q.files().unwrap()[0].1.clone();
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let read = DeadLetters::read_file(&path).unwrap();
        assert_eq!(read.letters, vec![letter(1)]);
        assert_eq!(read.damaged, 1);
    }

    #[test]
    fn a_replay_rewrites_leftovers_into_a_newer_file() {
        let dir = tempfile::tempdir().unwrap();
        let q = DeadLetters::new(dir.path(), 1 << 20);
        q.append(&[letter(1), letter(2)]).unwrap();
        let old = q.files().unwrap()[0].1.clone();
        q.write_new_file(&[letter(2)]).unwrap();
        q.remove_file(&old).unwrap();
        let files = q.files().unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].0, 2);
        assert_eq!(
            DeadLetters::read_file(&files[0].1).unwrap().letters,
            vec![letter(2)]
        );
    }

    proptest! {
        #[test]
        fn any_letter_round_trips(at_ms in any::<i64>(), shard in any::<u16>(),
                                  reason in ".{0,300}", record in proptest::collection::vec(any::<u8>(), 0..400)) {
            let l = Letter { at_ms, shard, reason, record };
            let mut buf = Vec::new();
            encode_letter(&mut buf, &l);
            prop_assert_eq!(decode_letter(&buf), Some(l));
        }
    }
}
