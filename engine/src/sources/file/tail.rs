//! One file source on one shard: scans, reads the files this shard owns, frames lines,
//! ingests them, and checkpoints what is durable. See the module docs of [`super`].

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use glommio::io::BufferedFile;
use ingest::framing::FrameFlags;

use super::checkpoint::{self, Checkpoint, FileId, Fingerprint};
use super::formats::{self, ContainerLine};
use super::{FileFormat, FileSettings, ReadFrom};
use crate::metrics::BatchTally;
use crate::shard::ingest::{
    add_to_source, ingest_frame, ingest_parsed, parse_frame, BatchClock, Extras, FrameIn,
};
use crate::shard::Shard;
use crate::sources::events::{ingest_json_line, Origin, RAW};
use crate::sources::{SourceRun, SourceSpec};

/// Bytes read from a file at a time.
const CHUNK: usize = 64 << 10;
/// Bytes of a file's start its fingerprint covers.
const FINGERPRINT_LEN: usize = 256;
/// Checkpoints are saved at most this often (and when the source stops).
const SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A file this shard reads.
struct Tailed {
    path: PathBuf,
    file: BufferedFile,
    fingerprint: Fingerprint,
    /// The next byte to read.
    read_at: u64,
    /// Offset after the last complete line taken (where the partial line starts).
    line_end: u64,
    /// The unterminated line so far (at most `max_frame`; more is dropped, flagged).
    partial: Vec<u8>,
    truncated: bool,
    /// Offset whose lines are durable (what a checkpoint says).
    committed: u64,
    /// (first append index, end append index, offset after the lines) not yet durable.
    pending: VecDeque<(u64, u64, u64)>,
    /// Matched by the last scan.
    seen: bool,
    /// When its last read found nothing new.
    quiet_since: Option<Instant>,
    /// `file` (its path) and a pod's metadata, on each of its events.
    extras: Extras,
    /// A container line continued by the next (CRI `P`, Docker without newline).
    joined: Option<Joined>,
    /// A `multiline` transform's pending event (format = "syslog").
    multiline: Option<Multiline>,
    /// Where the line being taken starts.
    line_start: u64,
}

/// A `multiline` join over a file's lines: the pending event, where its first line starts
/// (checkpoints stay before it until it is ingested), and when it is due without more lines.
struct Multiline {
    joiner: pipeline::multiline::Joiner,
    started_at: u64,
    flags: FrameFlags,
    due: Option<Instant>,
}

impl Tailed {
    /// The offset a checkpoint may say: past the lines taken, but not past a pending
    /// multiline event's first line.
    fn safe_offset(&self) -> u64 {
        match &self.multiline {
            Some(m) if m.joiner.pending().is_some() => m.started_at.min(self.line_end),
            _ => self.line_end,
        }
    }
}

struct Joined {
    message: Vec<u8>,
    stream: Vec<u8>,
    time: Vec<u8>,
}

/// A file a scan found.
struct Found {
    path: PathBuf,
    id: FileId,
    size: u64,
}

struct Tailer<'a> {
    shard: &'a Shard,
    spec: &'a SourceSpec,
    settings: Arc<FileSettings>,
    files: HashMap<FileId, Tailed>,
    /// Checkpoints loaded at start, taken when their file is found.
    loaded: HashMap<FileId, Checkpoint>,
    checkpoint_file: PathBuf,
    dirty: bool,
    saved_at: Instant,
    buf: Vec<u8>,
}

pub(super) async fn run(shard: Rc<Shard>, run: Rc<SourceRun>) {
    let spec = &run.spec;
    let Some(settings) = spec.file.clone() else {
        return;
    };
    let checkpoint_file = checkpoint::path(&settings.checkpoint_dir, shard.id);
    let load_from = checkpoint_file.clone();
    let loaded = blocking(move || checkpoint::load(&load_from)).await;
    let mut tailer = Tailer {
        shard: &shard,
        spec,
        settings: Arc::clone(&settings),
        files: HashMap::new(),
        loaded: loaded.into_iter().map(|c| (c.id, c)).collect(),
        checkpoint_file,
        dirty: false,
        saved_at: Instant::now(),
        buf: Vec::new(),
    };
    let mut first_scan = true;
    let mut next_scan = Instant::now();
    while !run.is_stopping(&shard) {
        if Instant::now() >= next_scan {
            tailer.scan(first_scan).await;
            first_scan = false;
            next_scan = Instant::now() + settings.scan_interval;
        }
        let progressed = tailer.read_all().await;
        tailer.flush_joins(false).await;
        tailer.settle();
        tailer.close_finished().await;
        tailer.save(false).await;
        if !progressed {
            let wait = settings
                .poll_interval
                .min(next_scan.saturating_duration_since(Instant::now()));
            futures_lite::future::or(glommio::timer::sleep(wait), run.stopped(&shard)).await;
        }
        glommio::yield_if_needed().await;
    }
    tailer.finish().await;
}

/// Runs blocking file-system work (globs, opens, checkpoint writes) off the executor.
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Whether this shard owns the file (files spread over shards by identity).
fn owner(id: FileId, shards: usize) -> usize {
    let h = (id.dev.rotate_left(32) ^ id.ino).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) % shards.max(1) as u64) as usize
}

fn expand(include: &[String], exclude: &[glob::Pattern]) -> Vec<Found> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    for pattern in include {
        let Ok(paths) = glob::glob(pattern) else {
            continue;
        };
        for path in paths.flatten() {
            if exclude.iter().any(|x| x.matches_path(&path)) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_file() {
                let id = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                found.push(Found {
                    path,
                    id,
                    size: meta.size(),
                });
            }
        }
    }
    found
}

/// An opened file: the handle, its identity (checked again on the handle), its first bytes.
fn open(path: &std::path::Path, id: FileId) -> std::io::Result<(std::fs::File, Vec<u8>)> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if (meta.dev(), meta.ino()) != (id.dev, id.ino) {
        return Err(std::io::Error::other("replaced while being opened"));
    }
    let mut first = vec![0; FINGERPRINT_LEN];
    let n = file.read_at(&mut first, 0)?;
    first.truncate(n);
    Ok((file, first))
}

impl Tailer<'_> {
    /// Finds the files this shard owns; opens the new ones (within `max_open_files`).
    async fn scan(&mut self, first_scan: bool) {
        let (include, exclude) = (self.settings.include.clone(), self.settings.exclude.clone());
        let found = blocking(move || expand(&include, &exclude)).await;
        for t in self.files.values_mut() {
            t.seen = false;
        }
        for f in found {
            if owner(f.id, self.settings.shards) != self.shard.id {
                continue;
            }
            if let Some(t) = self.files.get_mut(&f.id) {
                t.seen = true;
                t.path = f.path;
                continue;
            }
            if self.files.len() >= self.settings.max_open_files {
                self.count(|c| &c.files_skipped_limit, 1);
                continue;
            }
            self.start(f, first_scan).await;
        }
        self.count_open();
    }

    async fn start(&mut self, f: Found, first_scan: bool) {
        let (path, id) = (f.path.clone(), f.id);
        let opened = blocking(move || open(&path, id)).await;
        let (file, first) = match opened {
            Ok(o) => o,
            Err(e) => {
                tracing::debug!(path = %f.path.display(), error = %e, "cannot open a matched file");
                return;
            }
        };
        let fingerprint = Fingerprint::of(&first);
        let offset = match self.loaded.remove(&id) {
            Some(cp)
                if first.len() >= cp.fingerprint.len as usize
                    && Fingerprint::of(&first[..cp.fingerprint.len as usize]) == cp.fingerprint
                    && cp.offset <= f.size =>
            {
                cp.offset
            }
            _ if first_scan && self.settings.read_from == ReadFrom::End => f.size,
            _ => 0,
        };
        tracing::debug!(source = %self.spec.name, path = %f.path.display(), offset, "reading a file");
        // SAFETY: the descriptor is an open file whose ownership moves into the glommio file.
        let file = unsafe { BufferedFile::from_raw_fd(file.into_raw_fd()) };
        let extras = file_extras(&f.path);
        let rule = match self.settings.format {
            FileFormat::Syslog => self.shard.processing.borrow().join_rule(&self.spec.name),
            _ => None,
        };
        let multiline = rule.map(|rule| Multiline {
            joiner: pipeline::multiline::Joiner::new(rule),
            started_at: offset,
            flags: FrameFlags::default(),
            due: None,
        });
        self.files.insert(
            id,
            Tailed {
                path: f.path,
                file,
                fingerprint,
                read_at: offset,
                line_end: offset,
                partial: Vec::new(),
                truncated: false,
                committed: offset,
                pending: VecDeque::new(),
                seen: true,
                quiet_since: None,
                extras,
                joined: None,
                multiline,
                line_start: offset,
            },
        );
        self.dirty = true;
    }

    fn count(
        &self,
        counter: impl Fn(&crate::metrics::SourceShardCounters) -> &std::sync::atomic::AtomicU64,
        n: u64,
    ) {
        if let Some(c) = self.spec.counters.shard(self.shard.id) {
            counter(c).fetch_add(n, Ordering::Relaxed);
        }
    }

    fn count_open(&self) {
        if let Some(c) = self.spec.counters.shard(self.shard.id) {
            c.files_open
                .store(self.files.len() as i64, Ordering::Relaxed);
        }
    }
}

/// The fields each event of the file gets: its path, and its pod for `/var/log/pods`.
fn file_extras(path: &std::path::Path) -> Extras {
    let text = path.to_string_lossy();
    let mut pairs: Vec<(&str, &[u8])> = vec![("file", text.as_bytes())];
    if let Some(pod) = formats::pod_of(&text) {
        pairs.push(("kubernetes.namespace", pod.namespace.as_bytes()));
        pairs.push(("kubernetes.pod_name", pod.pod_name.as_bytes()));
        pairs.push(("kubernetes.pod_uid", pod.pod_uid.as_bytes()));
        pairs.push(("kubernetes.container_name", pod.container_name.as_bytes()));
    }
    Extras::strings(&pairs)
}

impl Tailer<'_> {
    /// Reads one chunk of every file; whether any brought new bytes.
    async fn read_all(&mut self) -> bool {
        let ids: Vec<FileId> = self.files.keys().copied().collect();
        let mut progressed = false;
        for id in ids {
            progressed |= self.read_one(id).await;
        }
        progressed
    }

    async fn read_one(&mut self, id: FileId) -> bool {
        let Some(t) = self.files.get_mut(&id) else {
            return false;
        };
        let chunk = match t.file.read_at(t.read_at, CHUNK).await {
            Ok(chunk) => chunk,
            Err(e) => {
                tracing::warn!(path = %t.path.display(), error = %e, "reading a file failed");
                return false;
            }
        };
        if chunk.is_empty() {
            self.at_end(id);
            return false;
        }
        self.buf.clear();
        self.buf.extend_from_slice(&chunk);
        t.read_at += chunk.len() as u64;
        t.quiet_since = None;
        let from = self.shard.appender.appended();
        let mut tally = BatchTally::default();
        self.take_lines(id, &mut tally).await;
        self.shard.counters.add(&tally);
        add_to_source(&self.spec.counters, self.shard.id, &tally);
        if let Some(t) = self.files.get_mut(&id) {
            let offset = t.safe_offset();
            t.pending
                .push_back((from, self.shard.appender.appended(), offset));
        }
        true
    }

    /// At the end of what a file holds: notes since when, and whether it was truncated.
    fn at_end(&mut self, id: FileId) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        t.quiet_since.get_or_insert_with(Instant::now);
        // SAFETY: fstat on a descriptor this file owns, into a zeroed stat buffer.
        let size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            (libc::fstat(t.file.as_raw_fd(), &mut st) == 0).then_some(st.st_size as u64)
        };
        if size.is_some_and(|s| s < t.read_at) {
            tracing::info!(path = %t.path.display(), "file truncated in place (copytruncate): reading it again from its start");
            t.read_at = 0;
            t.line_end = 0;
            t.committed = 0;
            t.partial.clear();
            t.truncated = false;
            t.pending.clear();
            t.joined = None;
            t.quiet_since = None;
            self.dirty = true;
            self.count(|c| &c.files_truncated, 1);
        }
    }
}

/// `line` cut to `max` bytes (and a trailing `\r` dropped); whether it was cut.
fn cut(line: &[u8], max: usize) -> (&[u8], bool) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match line.len() > max {
        true => (&line[..max], true),
        false => (line, false),
    }
}

impl Tailer<'_> {
    /// Frames the chunk in `self.buf` (read at `read_at - len`) into lines and ingests them;
    /// an unterminated rest waits in the file's `partial`.
    async fn take_lines(&mut self, id: FileId, tally: &mut BatchTally) {
        self.shard.appender.note_arrival(Instant::now());
        let clock = BatchClock::now();
        let max = self.spec.max_frame;
        let buf = std::mem::take(&mut self.buf);
        let Some(chunk_start) = self.files.get(&id).map(|t| t.read_at - buf.len() as u64) else {
            return;
        };
        let mut at = 0;
        while at < buf.len() {
            let Some(t) = self.files.get_mut(&id) else {
                break;
            };
            let Some(nl) = memchr::memchr(b'\n', &buf[at..]) else {
                if t.partial.is_empty() && !t.truncated {
                    t.line_start = chunk_start + at as u64;
                }
                keep_partial(t, &buf[at..], max);
                break;
            };
            let piece = &buf[at..at + nl];
            if t.partial.is_empty() && !t.truncated {
                t.line_start = chunk_start + at as u64;
            }
            t.line_end = chunk_start + (at + nl + 1) as u64;
            at += nl + 1;
            if t.partial.is_empty() && !t.truncated {
                let (line, truncated) = cut(piece, max);
                self.emit(id, line, truncated, &clock, tally).await;
            } else {
                keep_partial(t, piece, max);
                let line = std::mem::take(&mut t.partial);
                let truncated = std::mem::take(&mut t.truncated);
                let (line_cut, cut_more) = cut(&line, max);
                self.emit(id, line_cut, truncated || cut_more, &clock, tally)
                    .await;
            }
        }
        self.buf = buf;
    }
}

/// Adds `piece` to the file's unterminated line, keeping at most `max` bytes (flagged).
fn keep_partial(t: &mut Tailed, piece: &[u8], max: usize) {
    let room = max.saturating_sub(t.partial.len());
    t.partial.extend_from_slice(&piece[..piece.len().min(room)]);
    t.truncated |= piece.len() > room;
}

impl Tailer<'_> {
    /// Ingests one line as the source's `format` says.
    async fn emit(
        &mut self,
        id: FileId,
        line: &[u8],
        truncated: bool,
        clock: &BatchClock,
        tally: &mut BatchTally,
    ) {
        let flags = FrameFlags(if truncated { FrameFlags::TRUNCATED } else { 0 });
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        let (shard, spec) = (self.shard, self.spec);
        match self.settings.format {
            FileFormat::Syslog if t.multiline.is_some() => {
                join_line(shard, spec, t, line, flags, clock, tally).await;
            }
            FileFormat::Syslog => {
                let input = FrameIn {
                    frame: line,
                    flags,
                    source_ip: None,
                    parser: &spec.parser,
                    source: &spec.name,
                    extras: Some(&t.extras),
                };
                ingest_frame(shard, input, clock, tally).await;
            }
            FileFormat::Json => {
                let origin = Origin {
                    source: &spec.name,
                    source_ip: None,
                    context: Some(&t.extras),
                };
                ingest_json_line(shard, &origin, line, flags, clock, tally).await;
            }
            FileFormat::Cri | FileFormat::DockerJson => {
                let decoded = match self.settings.format {
                    FileFormat::Cri => formats::cri(line),
                    _ => formats::docker_json(line),
                };
                emit_container(shard, spec, t, decoded, line, flags, clock, tally).await;
            }
        }
    }
}

/// A syslog line through the file's `multiline` join: a line that begins an event emits the
/// pending one and starts the next.
async fn join_line(
    shard: &Shard,
    spec: &SourceSpec,
    t: &mut Tailed,
    line: &[u8],
    flags: FrameFlags,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let input = FrameIn {
        frame: line,
        flags,
        source_ip: None,
        parser: &spec.parser,
        source: &spec.name,
        extras: Some(&t.extras),
    };
    let parsed = parse_frame(&input, clock, tally);
    let line_start = t.line_start;
    let Some(m) = t.multiline.as_mut() else {
        return;
    };
    if m.joiner.offer(parsed.message.get(line)) == pipeline::multiline::Offer::Begins {
        emit_joined(shard, spec, &t.extras, m, clock, tally).await;
        m.joiner.start(line, &parsed);
        m.started_at = line_start;
        m.flags = flags;
    }
    m.due = Some(Instant::now() + m.joiner.timeout());
}

/// Ingests a file's pending multiline event, if any, and clears it.
async fn emit_joined(
    shard: &Shard,
    spec: &SourceSpec,
    extras: &Extras,
    m: &mut Multiline,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    if let Some((frame, parsed)) = m.joiner.pending() {
        let input = FrameIn {
            frame,
            flags: m.flags,
            source_ip: None,
            parser: &spec.parser,
            source: &spec.name,
            extras: Some(extras),
        };
        let parsed = *parsed;
        ingest_parsed(shard, &input, &parsed, clock, tally).await;
    }
    m.joiner.clear();
    m.due = None;
}

/// A container log line: joined to the ones it continues, ingested when complete (its time
/// as `timestamp`, its `stream`); a line not in the format is kept raw (counted).
#[allow(clippy::too_many_arguments)]
async fn emit_container(
    shard: &Shard,
    spec: &SourceSpec,
    t: &mut Tailed,
    decoded: Option<ContainerLine<'_>>,
    line: &[u8],
    flags: FrameFlags,
    clock: &BatchClock,
    tally: &mut BatchTally,
) {
    let Some(decoded) = decoded else {
        tally.bad_format += 1;
        let input = FrameIn {
            frame: line,
            flags,
            source_ip: None,
            parser: &RAW,
            source: &spec.name,
            extras: Some(&t.extras),
        };
        return ingest_frame(shard, input, clock, tally).await;
    };
    let joined = t.joined.get_or_insert_with(|| Joined {
        message: Vec::new(),
        stream: decoded.stream.to_vec(),
        time: decoded.time.to_vec(),
    });
    let room = spec.max_frame.saturating_sub(joined.message.len());
    let truncated = flags.truncated() || decoded.message.len() > room;
    joined
        .message
        .extend_from_slice(&decoded.message[..decoded.message.len().min(room)]);
    if decoded.partial {
        return;
    }
    let Some(joined) = t.joined.take() else {
        return;
    };
    let mut fields = pipeline::event::Fields::default();
    t.extras.load_into(&mut fields);
    use pipeline::event::NewValue;
    fields.set(b"stream", NewValue::Str(&joined.stream));
    if !joined.time.is_empty() {
        fields.set(b"timestamp", NewValue::Str(&joined.time));
    }
    let extras = Extras::of(fields);
    let input = FrameIn {
        frame: &joined.message,
        flags: FrameFlags(if truncated { FrameFlags::TRUNCATED } else { 0 }),
        source_ip: None,
        parser: &RAW,
        source: &spec.name,
        extras: Some(&extras),
    };
    ingest_frame(shard, input, clock, tally).await;
}

impl Tailer<'_> {
    /// Moves each file's checkpoint past the lines now durable. Lines the WAL lost are read
    /// again from the last checkpoint.
    fn settle(&mut self) {
        let appender = &self.shard.appender;
        for t in self.files.values_mut() {
            while let Some(&(from, end, offset)) = t.pending.front() {
                match appender.settled(from, end) {
                    None => break,
                    Some(Ok(())) => {
                        t.pending.pop_front();
                        if t.committed != offset {
                            t.committed = offset;
                            self.dirty = true;
                        }
                    }
                    Some(Err(_)) => {
                        tracing::warn!(path = %t.path.display(), "lines not made durable: reading them again");
                        t.pending.clear();
                        t.read_at = t.committed;
                        t.line_end = t.committed;
                        t.partial.clear();
                        t.truncated = false;
                        t.joined = None;
                        break;
                    }
                }
            }
        }
    }

    /// Closes files rotated away or deleted, once read to their end, durable and quiet for
    /// `rotate_wait` (an unterminated last line is then an event).
    async fn close_finished(&mut self) {
        let wait = self.settings.rotate_wait;
        let done: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, t)| {
                let gone = !t.seen || is_unlinked(&t.file);
                gone && t.pending.is_empty() && t.quiet_since.is_some_and(|q| q.elapsed() >= wait)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            self.flush_partial(id).await;
            self.flush_join(id).await;
            if self.files.get(&id).is_some_and(|t| t.pending.is_empty()) {
                if let Some(t) = self.files.remove(&id) {
                    tracing::debug!(path = %t.path.display(), "file done: closed");
                    let _ = t.file.close().await;
                }
                self.dirty = true;
            }
        }
        self.count_open();
    }

    /// Ingests a file's unterminated last line (its writer is done with it).
    async fn flush_partial(&mut self, id: FileId) {
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        if t.partial.is_empty() {
            return;
        }
        let line = std::mem::take(&mut t.partial);
        let truncated = std::mem::take(&mut t.truncated);
        t.line_end = t.read_at;
        let from = self.shard.appender.appended();
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        self.emit(id, &line, truncated, &clock, &mut tally).await;
        self.shard.counters.add(&tally);
        add_to_source(&self.spec.counters, self.shard.id, &tally);
        if let Some(t) = self.files.get_mut(&id) {
            t.pending
                .push_back((from, self.shard.appender.appended(), t.line_end));
        }
    }
}

impl Tailer<'_> {
    /// Ingests the pending multiline events that are due (`all`: every one).
    async fn flush_joins(&mut self, all: bool) {
        let now = Instant::now();
        let due: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, t)| {
                t.multiline
                    .as_ref()
                    .is_some_and(|m| m.due.is_some_and(|d| all || d <= now))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.flush_join(id).await;
        }
    }

    /// Ingests a file's pending multiline event now.
    async fn flush_join(&mut self, id: FileId) {
        let from = self.shard.appender.appended();
        let clock = BatchClock::now();
        let mut tally = BatchTally::default();
        let (shard, spec) = (self.shard, self.spec);
        let Some(t) = self.files.get_mut(&id) else {
            return;
        };
        let Tailed {
            extras, multiline, ..
        } = t;
        let Some(m) = multiline.as_mut().filter(|m| m.joiner.pending().is_some()) else {
            return;
        };
        emit_joined(shard, spec, extras, m, &clock, &mut tally).await;
        shard.counters.add(&tally);
        add_to_source(&spec.counters, shard.id, &tally);
        let offset = t.safe_offset();
        t.pending
            .push_back((from, shard.appender.appended(), offset));
    }
}

fn is_unlinked(file: &BufferedFile) -> bool {
    // SAFETY: fstat on a descriptor the file owns, into a zeroed stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(file.as_raw_fd(), &mut st) == 0 && st.st_nlink == 0
    }
}

impl Tailer<'_> {
    /// Saves the checkpoints when they changed (at most every second unless `now`).
    async fn save(&mut self, now: bool) {
        if !self.dirty || (!now && self.saved_at.elapsed() < SAVE_INTERVAL) {
            return;
        }
        let checkpoints: Vec<Checkpoint> = self
            .files
            .iter()
            .map(|(id, t)| Checkpoint {
                id: *id,
                fingerprint: t.fingerprint,
                offset: t.committed,
                path: t.path.clone(),
            })
            .collect();
        let file = self.checkpoint_file.clone();
        match blocking(move || checkpoint::save(&file, checkpoints)).await {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::error!(path = %self.checkpoint_file.display(), error = %e,
                "cannot save file checkpoints: a restart reads again from the last saved ones"),
        }
        self.saved_at = Instant::now();
    }

    /// On stop: ingests pending multiline events, waits until what was read is durable, then
    /// saves the checkpoints.
    async fn finish(&mut self) {
        self.flush_joins(true).await;
        let appender = &self.shard.appender;
        let pending = self
            .files
            .values()
            .filter_map(|t| Some((t.pending.front()?.0, t.pending.back()?.1)));
        let (from, end) = pending.fold((u64::MAX, 0), |(f, e), (a, b)| (f.min(a), e.max(b)));
        if end > 0 {
            let _ = appender.wait_settled(from.min(end), end).await;
        }
        self.settle();
        self.save(true).await;
    }
}
