//! One shard's WAL as an output reads it: the reader, and where its cursor is persisted.
//!
//! Cursor writes are synced when forced, when the cursor enters a new segment, or when the
//! last sync is [`CURSOR_SYNC_INTERVAL`] old; retention follows synced positions only. A failed
//! write (a full disk, say) is counted and retried later: the output keeps delivering,
//! retention waits for the persisted position, and a crash meanwhile only means duplicates.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use storage::{Position, WalReader};

use super::{DeliveryError, OutputSpec, ShardLog, CURSOR_SYNC_INTERVAL};

/// Where an output without a cursor starts on shard `shard`: the durable end it was started
/// at (`start_at = "end"`; the record id is learnt at the next segment start), or the oldest
/// record (`None`).
fn start_cursor(spec: &OutputSpec, shard: usize) -> Option<storage::Cursor> {
    let at = *spec.start_positions.as_ref()?.get(shard)?;
    Some(cursor_at(at))
}

/// The cursor of an output that starts at durable position `at`.
pub fn cursor_at(at: Position) -> storage::Cursor {
    let offset = at.offset.max(storage::segment::SEGMENT_HEADER_LEN);
    storage::Cursor {
        position: Position {
            segment: at.segment,
            offset,
        },
        next_id: 0,
    }
}

/// When a shard's cursor was last synced, and whether a newer position is written unsynced.
struct CursorSyncState {
    segment: u64,
    at: Instant,
    dirty: bool,
}

impl CursorSyncState {
    fn new(segment: u64) -> Self {
        CursorSyncState {
            segment,
            at: Instant::now(),
            dirty: false,
        }
    }
}

/// A shard's reader and cursor state, as one output sees it.
pub(super) struct ShardCursor {
    pub(super) log: ShardLog,
    pub(super) reader: WalReader,
    /// The latest confirmed position is not persisted yet (a cursor write failed).
    pub(super) unsaved: bool,
    /// The position last handed to [`ShardCursor::save`].
    pub(super) saved: Position,
    sync: CursorSyncState,
    /// (damaged skips, damaged records) already added to the counters.
    damage_seen: (u64, u64),
    /// (bytes read from memory, bytes read from files) already added to the counters.
    reads_seen: (u64, u64),
}

impl ShardCursor {
    /// Opens the shard's WAL at the output's cursor; without one, where `start_at` says; the
    /// oldest record when the cursor is unreadable (at-least-once means re-delivering rather
    /// than skipping).
    pub(super) fn open(spec: &OutputSpec, log: &ShardLog) -> Result<Self, DeliveryError> {
        let (cursor, fresh) = match storage::read_cursor(&log.dir, &spec.name) {
            Ok(None) => (start_cursor(spec, log.id), true),
            Ok(c) => (c, false),
            Err(e) => {
                tracing::error!(sink = %spec.name, shard = log.id, error = %e, "cursor unreadable: starting from the oldest record");
                (None, true)
            }
        };
        let reader = WalReader::open(&log.dir, cursor)
            .map_err(|source| DeliveryError::OpenWal {
                shard: log.id,
                source,
            })?
            .with_fast_path(log.fast_path.attach(&spec.name));
        let position = reader.position();
        let mut shard = ShardCursor {
            log: log.clone(),
            reader,
            unsaved: false,
            saved: position,
            sync: CursorSyncState::new(position.segment),
            damage_seen: (0, 0),
            reads_seen: (0, 0),
        };
        if fresh {
            // Create the cursor file now, while there is disk space: later updates overwrite
            // it in place and never need a new block, even on a full disk. It also pins where
            // a sink that starts at the end began: a crash before its first delivery must not
            // move that start past what was accepted meanwhile.
            shard.save(spec, true);
        }
        shard.retain(spec, position.segment);
        Ok(shard)
    }

    /// Persists the reader's cursor (after a confirmed batch); synced when `force`, when it
    /// entered a new segment or when the last sync is old. Sets `unsaved` when it failed.
    pub(super) fn save(&mut self, spec: &OutputSpec, force: bool) {
        let cursor = self.reader.cursor();
        let sync = force
            || cursor.position.segment != self.sync.segment
            || self.sync.at.elapsed() >= CURSOR_SYNC_INTERVAL;
        let how = if sync {
            storage::CursorSync::Now
        } else {
            storage::CursorSync::Later
        };
        match storage::write_cursor_with(&self.log.dir, &spec.name, cursor, how) {
            Ok(()) => {
                if let Some(slot) = spec.counters.cursor_next_ids.get(self.log.id) {
                    slot.store(cursor.next_id, Relaxed);
                }
                if sync {
                    self.sync = CursorSyncState::new(cursor.position.segment);
                    self.retain(spec, cursor.position.segment);
                } else {
                    self.sync.dirty = true;
                }
                self.unsaved = false;
            }
            Err(e) => {
                spec.counters.errors.fetch_add(1, Relaxed);
                tracing::warn!(sink = %spec.name, shard = self.log.id, error = %e, "cannot save the cursor; will retry");
                self.unsaved = true;
            }
        }
    }

    /// Idle: sync a position written unsynced, so retention can follow it.
    pub(super) fn sync_if_dirty(&mut self, spec: &OutputSpec) {
        if self.sync.dirty && !self.unsaved {
            self.save(spec, true);
        }
    }

    /// Nothing to deliver: the reader may still have moved over empty or damaged segments.
    /// Persist that too, or retention would keep them (and their reserved space) forever.
    pub(super) fn persist_progress(&mut self, spec: &OutputSpec) {
        if self.reader.position() != self.saved && !self.unsaved {
            self.save(spec, true);
            self.saved = self.reader.position();
        }
        if !self.unsaved {
            self.publish_caught_up(spec);
        }
    }

    /// Caught up and persisted: the lag metric needs the id of the next record, which a
    /// reader that has read nothing yet learns from the segment header (or, before the
    /// segment exists, from the shard: [`caught_up_next_id`]).
    fn publish_caught_up(&mut self, spec: &OutputSpec) {
        let durable = self.log.watermark.load();
        let from_reader = self.reader.next_id(durable).ok();
        let shard_next = self
            .log
            .next_record_id
            .load(std::sync::atomic::Ordering::Acquire);
        if let (Some(id), Some(slot)) = (
            caught_up_next_id(from_reader, durable, shard_next),
            spec.counters.cursor_next_ids.get(self.log.id),
        ) {
            slot.store(id, Relaxed);
        }
    }

    /// Adds what the reader read since last time (from memory, from files) and its new damage
    /// findings to the output's counters.
    pub(super) fn publish_reader_counts(&mut self, spec: &OutputSpec) {
        let reads = (self.reader.read_memory_bytes, self.reader.read_file_bytes);
        if reads != self.reads_seen {
            let c = &spec.counters;
            c.wal_read_memory_bytes
                .fetch_add(reads.0 - self.reads_seen.0, Relaxed);
            c.wal_read_file_bytes
                .fetch_add(reads.1 - self.reads_seen.1, Relaxed);
            self.reads_seen = reads;
        }
        let now = (self.reader.damaged_skips, self.reader.damaged_records);
        if now != self.damage_seen {
            let c = &spec.counters;
            c.wal_damaged_skips
                .fetch_add(now.0 - self.damage_seen.0, Relaxed);
            c.wal_damaged_records
                .fetch_add(now.1 - self.damage_seen.1, Relaxed);
            self.damage_seen = now;
        }
    }

    /// Tells the shard's retention where this output's cursor is; deletion failures are
    /// logged (they cost disk, not data) and retried at the next advance.
    fn retain(&self, spec: &OutputSpec, cursor_segment: u64) {
        let active = self.log.watermark.load().segment;
        if let Err(e) = self
            .log
            .retention
            .advance(&spec.name, cursor_segment, active)
        {
            tracing::warn!(sink = %spec.name, shard = self.log.id, error = %e, "cannot delete delivered segments");
        }
    }
}

/// The next record id of a caught-up output: what its reader knows (0: not known yet), else,
/// when the writer published a segment with nothing durable in it (`offset` 0: a first
/// segment deferred to the first commit, or none for want of disk budget, so there is no
/// header to read), the id the shard's next durable record gets. `None`: not known.
fn caught_up_next_id(from_reader: Option<u64>, durable: Position, shard_next: u64) -> Option<u64> {
    match from_reader {
        Some(id @ 1..) => Some(id),
        _ if durable.segment != 0 && durable.offset == 0 && shard_next >= 1 => Some(shard_next),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn a_caught_up_output_knows_its_next_id_before_the_first_segment_exists() {
        // The reader read a header: its id.
        assert_eq!(caught_up_next_id(Some(7), at(1, 500), 9), Some(7));
        // A segment published with nothing in it (no file yet): the shard's next id, so the
        // lag of an idle shard reads 0 instead of being left out.
        assert_eq!(caught_up_next_id(Some(0), at(1, 0), 1), Some(1));
        assert_eq!(caught_up_next_id(None, at(3, 0), 42), Some(42));
        // Records are durable in the segment but the reader has no id: not known.
        assert_eq!(caught_up_next_id(Some(0), at(1, 500), 9), None);
        // Nothing published yet.
        assert_eq!(caught_up_next_id(Some(0), at(0, 0), 1), None);
    }
}
