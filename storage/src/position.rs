//! Positions in a shard's WAL and the durable watermark shared with readers.

use std::sync::atomic::{AtomicU64, Ordering};

/// A byte position in a shard's WAL: segment number and offset inside that segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

const OFFSET_BITS: u32 = 36;
/// Segment files are capped below this size so a position packs into one `u64`.
pub const MAX_SEGMENT_SIZE: u64 = 1 << OFFSET_BITS;
pub const MAX_SEGMENT_NUMBER: u64 = (1 << (64 - OFFSET_BITS)) - 1;

impl Position {
    fn pack(self) -> u64 {
        (self.segment << OFFSET_BITS) | self.offset
    }
    fn unpack(v: u64) -> Position {
        Position {
            segment: v >> OFFSET_BITS,
            offset: v & (MAX_SEGMENT_SIZE - 1),
        }
    }
}

/// The position up to which a shard's records are durable. One writer (the shard), any number
/// of readers on other threads; a single atomic word, no lock. Segment 0 means "nothing yet".
#[derive(Debug, Default)]
pub struct DurableWatermark(AtomicU64);

impl DurableWatermark {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn load(&self) -> Position {
        Position::unpack(self.0.load(Ordering::Acquire))
    }
    /// Publishes a new durable position; it must not move backwards.
    pub fn publish(&self, pos: Position) {
        debug_assert!(pos.segment <= MAX_SEGMENT_NUMBER && pos.offset < MAX_SEGMENT_SIZE);
        debug_assert!(pos >= self.load(), "watermark moved backwards");
        self.0.store(pos.pack(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_round_trip() {
        let w = DurableWatermark::new();
        let p = Position {
            segment: MAX_SEGMENT_NUMBER,
            offset: MAX_SEGMENT_SIZE - 1,
        };
        w.publish(p);
        assert_eq!(w.load(), p);
    }
}
