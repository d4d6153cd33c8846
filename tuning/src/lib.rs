//! Host preflight and tuning (`sluice tune`): what this machine offers Sluice, a verdict per
//! item, a recommended config and the sysctl lines to apply. `shards = "auto"` uses
//! [`recommended_shards`], the same rule the report recommends.
//!
//! Everything here reads the host (files under /proc and /sys, rlimits, an io_uring probe, a
//! few seconds of disk writes in a scratch file); nothing is changed.

pub mod disk;
pub mod host;
pub mod report;

/// Shards for `available` CPUs: one per CPU. The outputs and the kernel's network work share
/// those CPUs; on large hosts an operator may isolate some instead (the report says how).
pub fn recommended_shards(available: usize) -> usize {
    available.max(1)
}

/// The group-commit interval that keeps ingest → durable under `target` given the disk's
/// fdatasync p99: an event waits up to one interval, then one fdatasync (which may queue
/// behind the previous one). At least 1 ms.
pub fn fsync_interval_for(
    target: std::time::Duration,
    fsync_p99: std::time::Duration,
) -> std::time::Duration {
    let floor = std::time::Duration::from_millis(1);
    target.saturating_sub(fsync_p99 * 2).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fsync_interval_leaves_room_for_two_syncs() {
        let ms = Duration::from_millis;
        assert_eq!(
            fsync_interval_for(ms(10), Duration::from_micros(400)),
            Duration::from_micros(9200)
        );
        assert_eq!(
            fsync_interval_for(ms(10), ms(20)),
            ms(1),
            "slow disks get the floor"
        );
        assert_eq!(recommended_shards(0), 1);
    }
}
