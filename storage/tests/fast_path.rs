//! The fast path (commits in memory, `storage::fast_path`) against the file path: a reader that
//! keeps up reads from memory, one that stalls past its ring falls back to the files and
//! switches back once caught up, one restarted from its cursor goes on from there; every one
//! yields exactly the records, ids and positions of a reader that only reads files.

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use storage::{CommitCompression, Cursor, FastPath, Position, WalReader};

const SEGMENT: u64 = 16 << 10;
const RING_COMMITS: usize = 4;

/// One output's reader and what it delivered: (record id, payload) in order.
struct Output {
    name: &'static str,
    reader: WalReader,
    delivered: Vec<(u64, Vec<u8>)>,
}

impl Output {
    /// Reads everything durable, `max_bytes` at a time (small reads split commits).
    fn catch_up(&mut self, durable: Position, max_bytes: usize) {
        loop {
            let mut id = self.reader.next_id(durable).unwrap();
            let delivered = &mut self.delivered;
            let batch = self
                .reader
                .read_batch(durable, max_bytes, |p| {
                    delivered.push((id, p.to_vec()));
                    id += 1;
                })
                .unwrap();
            if batch.records == 0 {
                return;
            }
        }
    }

    fn cursor(&self) -> Cursor {
        self.reader.cursor()
    }
}

/// A little deterministic generator (record sizes, read sizes): no timing, same every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn payload(i: u64, rng: &mut Lcg) -> Vec<u8> {
    let pad = rng.below(400) as usize;
    format!("event {i:08} {}", "p".repeat(pad)).into_bytes()
}

struct Run {
    fast: Output,
    stalled: Output,
    restarted: Output,
    files: Output,
    appended: u64,
    full: u64,
    /// Commits written as compressed blocks.
    blocks: u64,
}

/// Phases of 40 commits each: every output keeps up, then `stalled` stops reading (its ring
/// overflows), then it catches up and keeps up again; `restarted` is reopened from its cursor
/// (a new ring) half-way.
fn run_phases(dir: &std::path::Path, compression: CommitCompression) -> Run {
    let path = dir.to_path_buf();
    LocalExecutorBuilder::new(Placement::Unbound)
        .spawn(move || async move {
            let names = ["fast", "stalled", "restarted", "files"];
            let wal = common::open_recycling(&path, SEGMENT, 8192, &names).await;
            let (appender, watermark, retention) = (wal.appender, wal.watermark, wal.retention);
            let fast_path = FastPath::new(RING_COMMITS, 64 << 20);
            let open = |name: &'static str, from: Option<Cursor>, fast: bool| Output {
                name,
                reader: WalReader::open(&path, from)
                    .unwrap()
                    .with_fast_path(fast.then(|| fast_path.attach(name)).flatten()),
                delivered: Vec::new(),
            };
            let mut outputs = [
                open("fast", None, true),
                open("stalled", None, true),
                open("restarted", None, true),
                open("files", None, false),
            ];
            let flusher = wal
                .flusher
                .with_fast_path(Arc::clone(&fast_path))
                .with_commit_compression(compression)
                .unwrap();
            let task = glommio::spawn_local(flusher.run());
            let mut rng = Lcg(7);
            let mut next = 0u64;
            let mut restarted_from = Vec::new();
            for commit in 0..160u32 {
                for _ in 0..1 + rng.below(12) {
                    let p = payload(next, &mut rng);
                    next += 1;
                    while appender
                        .try_append(p.len(), |b| b.extend_from_slice(&p))
                        .is_err()
                    {
                        appender.wait_for_space().await;
                    }
                }
                appender.wait_durable().await;
                let durable = watermark.load();
                let stalling = (40..80).contains(&commit);
                for output in outputs.iter_mut() {
                    if output.name == "stalled" && stalling {
                        continue;
                    }
                    let max_bytes = 64 + rng.below(3000) as usize;
                    output.catch_up(durable, max_bytes);
                    let at = output.cursor().position.segment;
                    retention.advance(output.name, at, durable.segment).unwrap();
                }
                if commit == 100 {
                    // An output restarted: a new reader from its cursor, a new ring.
                    let [_, _, restarted, _] = &mut outputs;
                    restarted_from = std::mem::take(&mut restarted.delivered);
                    *restarted = open("restarted", Some(restarted.cursor()), true);
                }
            }
            appender.close();
            task.await.unwrap();
            let [fast, stalled, mut restarted, files] = outputs;
            restarted_from.append(&mut restarted.delivered);
            restarted.delivered = restarted_from;
            Run {
                fast,
                stalled,
                restarted,
                files,
                appended: next,
                full: fast_path.full.load(Relaxed),
                blocks: appender.stats.block_commits.get(),
            }
        })
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn fast_path_and_file_path_deliver_identical_streams() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_phases(dir.path(), CommitCompression::None);
    assert_eq!(run.blocks, 0);
    check_identical_streams(&run);
}

/// The same with commits written as compressed blocks: a reader takes a block whole, from
/// memory or from the file, so both paths still stop at the same positions.
#[test]
fn with_compressed_commits_both_paths_deliver_identical_streams() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_phases(dir.path(), CommitCompression::Zstd { level: 1 });
    assert!(run.blocks > 100, "{} of 160 commits compressed", run.blocks);
    check_identical_streams(&run);
}

fn check_identical_streams(run: &Run) {
    assert_eq!(run.files.delivered.len() as u64, run.appended);
    // The file path delivered exactly what was appended (ids dense from 1).
    for (i, (id, p)) in run.files.delivered.iter().enumerate() {
        assert_eq!(*id, i as u64 + 1);
        assert!(p.starts_with(format!("event {i:08} ").as_bytes()));
    }
    for output in [&run.fast, &run.stalled, &run.restarted] {
        let first_diff = (0..output.delivered.len().max(run.files.delivered.len()))
            .find(|&i| output.delivered.get(i) != run.files.delivered.get(i));
        if let Some(i) = first_diff {
            let show = |d: &[(u64, Vec<u8>)]| {
                d.get(i).map(|(id, p)| {
                    (
                        *id,
                        String::from_utf8_lossy(&p[..14.min(p.len())]).into_owned(),
                    )
                })
            };
            eprintln!(
                "{}: first difference at {i} of {}/{}: {:?} vs {:?}",
                output.name,
                output.delivered.len(),
                run.files.delivered.len(),
                show(&output.delivered),
                show(&run.files.delivered)
            );
        }
        assert!(
            output.delivered == run.files.delivered,
            "{}: the same records, ids and order as the file path",
            output.name
        );
        assert_eq!(output.cursor(), run.files.cursor(), "{}", output.name);
    }
    // Each path was really taken: memory while keeping up, files after the stall.
    assert_eq!(run.files.reader.read_memory_bytes, 0);
    assert_eq!(run.fast.reader.read_file_bytes, 0, "kept up: memory only");
    assert!(run.fast.reader.read_memory_bytes > 0);
    assert!(
        run.stalled.reader.read_file_bytes > 0,
        "fell behind its ring"
    );
    assert!(
        run.stalled.reader.read_memory_bytes > run.stalled.reader.read_file_bytes,
        "back in memory once caught up"
    );
    assert!(run.full > 0, "the stalled output's ring overflowed");
    assert!(run.restarted.reader.read_memory_bytes > 0);
}
