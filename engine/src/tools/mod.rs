//! Operator tools over a data directory: `sluice wal inspect | verify | dump`.
//! Read-only; safe to run beside a running Sluice.

pub mod dlq;
pub mod preflight;

use std::io::Write;
use std::path::Path;

use storage::inspect::{inspect_shard, shard_dirs, ShardInfo};

use crate::config::Encoding;
use crate::delivery::encode_record;

/// Why a tool could not look at the data directory.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{}: no shard-<n> directories: not a Sluice data_dir?", data_dir.display())]
    NotADataDir { data_dir: std::path::PathBuf },
    #[error("{}: no such shard directory", dir.display())]
    NoShard { dir: std::path::PathBuf },
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    #[error("write: {0}")]
    Write(#[source] std::io::Error),
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Damaged,
}

fn shards(data_dir: &Path) -> Result<Vec<(usize, ShardInfo)>, ToolError> {
    let dirs = shard_dirs(data_dir)?;
    if dirs.is_empty() {
        return Err(ToolError::NotADataDir {
            data_dir: data_dir.to_path_buf(),
        });
    }
    dirs.into_iter()
        .map(|(n, dir)| Ok((n, inspect_shard(&dir)?)))
        .collect()
}

pub fn inspect(data_dir: &Path, out: &mut impl Write) -> Result<(), ToolError> {
    for (n, shard) in shards(data_dir)? {
        let bytes: u64 = shard.segments.iter().map(|s| s.bytes).sum();
        let records: u64 = shard.segments.iter().map(|s| s.records).sum();
        let _ = writeln!(
            out,
            "shard-{n}: {} segments, {bytes} bytes, {records} records",
            shard.segments.len()
        );
        for s in &shard.segments {
            let state = match (s.compressed, s.footer.is_some()) {
                (true, _) => "compressed",
                (false, true) => "sealed",
                (false, false) if s.newest => "active",
                (false, false) => "unsealed",
            };
            let ids = match (s.first_id, s.records) {
                (Some(first), n) if n > 0 => format!("  ids {first}..={}", first + n - 1),
                _ => String::new(),
            };
            let damage = match s.damage {
                None => String::new(),
                Some((at, why)) if s.torn_tail => format!("  torn tail at {at} ({why})"),
                Some((at, why)) => format!("  DAMAGED at {at}: {why}"),
            };
            let _ = writeln!(
                out,
                "  segment {:>20}  {state:<10} {:>12} bytes {:>10} records{ids}{damage}",
                s.number, s.bytes, s.records
            );
        }
        for c in &shard.cursors {
            match &c.position {
                Ok(p) => {
                    let lag = c.lag_records.unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "  cursor {:<20} at {}:{} (next id {})  lag {lag} records",
                        c.sink, p.position.segment, p.position.offset, p.next_id
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "  cursor {:<20} UNREADABLE: {e}", c.sink);
                }
            }
        }
    }
    Ok(())
}

/// Checks every record and footer of every segment (compressed ones decompressed) and every
/// cursor; prints each problem with its place.
pub fn verify(data_dir: &Path, out: &mut impl Write) -> Result<Verdict, ToolError> {
    let mut verdict = Verdict::Clean;
    let mut records = 0;
    for (n, shard) in shards(data_dir)? {
        for s in &shard.segments {
            records += s.records;
            match s.damage {
                Some((at, why)) if s.torn_tail => {
                    let _ = writeln!(out, "shard-{n}: {}: torn tail at offset {at} ({why}); recovery cuts it at start", s.path.display());
                }
                Some((at, why)) => {
                    verdict = Verdict::Damaged;
                    let _ = writeln!(
                        out,
                        "shard-{n}: {}: DAMAGED at offset {at}: {why}",
                        s.path.display()
                    );
                }
                None if s.footer.is_none() && !s.newest => {
                    let _ = writeln!(out, "shard-{n}: {}: not sealed (left open by a failed write); records checked one by one", s.path.display());
                }
                None => {}
            }
        }
        for c in &shard.cursors {
            if let Err(e) = &c.position {
                verdict = Verdict::Damaged;
                let _ = writeln!(out, "shard-{n}: cursor {}: {e}", c.sink);
            }
        }
    }
    let _ = writeln!(
        out,
        "{records} records checked: {}",
        if verdict == Verdict::Clean {
            "ok"
        } else {
            "DAMAGE FOUND"
        }
    );
    Ok(verdict)
}

/// Writes the records of one shard, from `from` (or the oldest), encoded, one per line.
pub fn dump(
    data_dir: &Path,
    shard: usize,
    from_id: Option<u64>,
    encoding: Encoding,
    out: &mut impl Write,
) -> Result<u64, ToolError> {
    let dir = data_dir.join(format!("shard-{shard}"));
    if !dir.is_dir() {
        return Err(ToolError::NoShard { dir });
    }
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut write_error = None;
    let count = storage::read_on_disk(&dir, from_id, |_, p| {
        let how = crate::delivery::RecordEncoding::lines(encoding);
        encode_record(p, shard, &how, &mut buf, &mut scratch);
        if buf.len() >= 1 << 20 && write_error.is_none() {
            write_error = out.write_all(&buf).err();
            buf.clear();
        }
    })?;
    match write_error {
        None => out.write_all(&buf).map_err(ToolError::Write)?,
        Some(e) => return Err(ToolError::Write(e)),
    }
    Ok(count)
}
