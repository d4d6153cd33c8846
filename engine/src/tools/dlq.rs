//! `sluice dlq list | show | replay | drop`: the outputs' dead-letter queues
//! (`data_dir/dlq/NAME`, see [`storage::dead_letter`]).
//!
//! `list` and `show` only read. `replay` and `drop` hold the queue's lock while they work: a
//! running Sluice that rejects more events meanwhile waits for it (its events stay in the WAL).
//! `replay` sends every letter again to its output as the config now describes it; what the
//! destination confirms leaves the queue, what it rejects again stays (with the new reason),
//! and a destination that is down stops the replay with everything still queued.

use std::io::Write;
use std::time::Duration;

use storage::dead_letter::{queue_dir, queues, DeadLetterError, DeadLetters, Letter};

use crate::config::Config;
use crate::delivery::{encode_record, Batch, FailureKind, OpenedSink, RecordEncoding};

/// Why a `sluice dlq` command failed.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Queue(#[from] DeadLetterError),
    #[error("no sink {0:?} in the config")]
    UnknownSink(String),
    #[error("sink {sink}: {error}")]
    Open {
        sink: String,
        #[source]
        error: crate::sinks::SinkError,
    },
    #[error(
        "sink {sink}: the destination is not taking deliveries ({error}); the rest stays queued"
    )]
    Unavailable { sink: String, error: String },
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
}

/// Attempts per request before a replay gives up on a destination that fails.
const REPLAY_ATTEMPTS: u32 = 5;

/// The queues the command works on: `sink`, or every one under data_dir.
fn selected(config: &Config, sink: Option<&str>) -> Result<Vec<String>, DlqError> {
    match sink {
        Some(s) => Ok(vec![s.to_string()]),
        None => Ok(queues(&config.data_dir)?),
    }
}

fn queue(config: &Config, sink: &str) -> DeadLetters {
    let max = config
        .sinks
        .get(sink)
        .map_or(1 << 30, |s| s.settings().common().dlq_max_size);
    DeadLetters::new(&queue_dir(&config.data_dir, sink), max)
}

fn unix_ms_text(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => ms.to_string(),
    }
}

/// `sluice dlq list`: per queue, letters, bytes, files, oldest and newest.
pub fn list(config: &Config, sink: Option<&str>, out: &mut impl Write) -> Result<(), DlqError> {
    let names = selected(config, sink)?;
    if names.is_empty() {
        writeln!(
            out,
            "no dead-letter queues under {}",
            config.data_dir.display()
        )
        .map_err(DlqError::Write)?;
    }
    for name in names {
        let s = queue(config, &name).summary()?;
        let when = |ms: Option<i64>| ms.map_or_else(|| "-".to_string(), unix_ms_text);
        writeln!(
            out,
            "{name}: {} events, {} bytes in {} files, oldest {}, newest {}{}",
            s.letters,
            s.bytes,
            s.files,
            when(s.oldest_ms),
            when(s.newest_ms),
            if s.damaged > 0 {
                format!(", {} damaged places skipped", s.damaged)
            } else {
                String::new()
            }
        )
        .map_err(DlqError::Write)?;
    }
    Ok(())
}

/// `sluice dlq show`: every letter as one JSON line (the event, the reason, when).
pub fn show(config: &Config, sink: Option<&str>, out: &mut impl Write) -> Result<(), DlqError> {
    let json = RecordEncoding::lines(crate::config::Encoding::Json);
    let (mut event, mut scratch) = (Vec::new(), Vec::new());
    for name in selected(config, sink)? {
        for (_, path) in queue(config, &name).files()? {
            for letter in DeadLetters::read_file(&path)?.letters {
                event.clear();
                let mut line = Vec::new();
                line.extend_from_slice(b"{\"sink\":");
                ingest::json::write_str(&mut line, name.as_bytes());
                line.extend_from_slice(b",\"dead_lettered_at\":");
                ingest::json::write_str(&mut line, unix_ms_text(letter.at_ms).as_bytes());
                line.extend_from_slice(b",\"reason\":");
                ingest::json::write_str(&mut line, letter.reason.as_bytes());
                line.extend_from_slice(b",\"event\":");
                let shard = usize::from(letter.shard);
                if encode_record(&letter.record, shard, &json, &mut event, &mut scratch) {
                    line.extend_from_slice(event.strip_suffix(b"\n").unwrap_or(&event));
                } else {
                    line.extend_from_slice(b"null");
                }
                line.extend_from_slice(b"}\n");
                out.write_all(&line).map_err(DlqError::Write)?;
            }
        }
    }
    Ok(())
}

/// `sluice dlq drop`: deletes the queues' letters; how many were dropped.
pub fn drop_letters(config: &Config, sink: Option<&str>) -> Result<u64, DlqError> {
    let mut dropped = 0;
    for name in selected(config, sink)? {
        let q = queue(config, &name);
        let _lock = q.lock()?;
        for (_, path) in q.files()? {
            dropped += DeadLetters::read_file(&path)?.letters.len() as u64;
            q.remove_file(&path)?;
        }
    }
    Ok(dropped)
}

/// What a replay did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub delivered: u64,
    pub rejected_again: u64,
}

/// `sluice dlq replay`: sends the letters again to their outputs (as configured now).
pub fn replay(config: &Config, sink: Option<&str>) -> Result<Replayed, DlqError> {
    let mut total = Replayed::default();
    for name in selected(config, sink)? {
        let sink_config = config
            .sinks
            .get(&name)
            .ok_or_else(|| DlqError::UnknownSink(name.clone()))?;
        let mut opened = crate::sinks::open(sink_config).map_err(|error| DlqError::Open {
            sink: name.clone(),
            error,
        })?;
        let limits = sink_config.settings().common().batch;
        let q = queue(config, &name);
        let _lock = q.lock()?;
        for (_, path) in q.files()? {
            let letters = DeadLetters::read_file(&path)?.letters;
            let mut left = Vec::new();
            for chunk in letters.chunks(limits.max_events.max(1) as usize) {
                let done = replay_chunk(&name, &mut opened, chunk, &mut left)?;
                total.delivered += done;
            }
            total.rejected_again += left.len() as u64;
            q.write_new_file(&left)?;
            q.remove_file(&path)?;
        }
    }
    Ok(total)
}

/// Sends `letters` until each is confirmed or rejected again (into `left`); the number
/// confirmed. A destination that keeps failing stops the replay (the file stays as it was).
fn replay_chunk(
    name: &str,
    opened: &mut OpenedSink,
    letters: &[Letter],
    left: &mut Vec<Letter>,
) -> Result<u64, DlqError> {
    let mut batch = Batch::new(true);
    let mut scratch = Vec::new();
    let mut pending: Vec<&Letter> = Vec::new();
    for l in letters {
        if encode_record(
            &l.record,
            usize::from(l.shard),
            &opened.encoding,
            batch.buffer(),
            &mut scratch,
        ) {
            batch.end_event(&l.record, usize::from(l.shard));
            pending.push(l);
        } else {
            left.push(l.clone()); // Not an event: kept, never dropped by a replay.
        }
    }
    let mut confirmed = 0u64;
    let mut attempts = 0;
    while !pending.is_empty() {
        attempts += 1;
        match opened.sink.deliver(&batch) {
            Ok(v) => {
                confirmed += (pending.len() - v.retry.len() - v.rejected.len()) as u64;
                for (i, reason) in &v.rejected {
                    let mut l = pending[*i].clone();
                    l.reason = reason.clone();
                    left.push(l);
                }
                pending = v.retry.iter().map(|&i| pending[i]).collect();
                batch = batch.subset(v.retry.iter().copied());
                if !pending.is_empty() && attempts >= REPLAY_ATTEMPTS {
                    left.extend(pending.drain(..).cloned());
                }
            }
            Err(f) if f.kind == FailureKind::Retriable && attempts < REPLAY_ATTEMPTS => {
                opened.sink.reset();
                std::thread::sleep(Duration::from_millis(200 << attempts.min(5)));
            }
            Err(f) if f.kind == FailureKind::Retriable => {
                return Err(DlqError::Unavailable {
                    sink: name.to_string(),
                    error: f.error,
                })
            }
            Err(f) => {
                for l in pending.drain(..) {
                    let mut l = l.clone();
                    l.reason = f.error.clone();
                    left.push(l);
                }
            }
        }
    }
    Ok(confirmed)
}
