//! Connection limits of a TCP source, shared by all shards, and the memory budget of every
//! connection's read buffer.
//!
//! Touched once at accept and once at close (limits), or when a buffer grows or shrinks
//! (memory), never per event. The per-client table takes a short lock at accept and close
//! only; it holds one entry per client with open connections. A client is an address masked
//! to a prefix (IPv4 /32 and IPv6 /64 by default: one IPv6 host can use a whole /64).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ConnectionLimits {
    max_total: u32,
    max_per_ip: u32,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
    total: AtomicU32,
    per_ip: Mutex<HashMap<IpAddr, u32>>,
    /// Notified when a slot comes free: the accept loops of a full source wait on it (from
    /// any shard: glommio takes wakes from other threads).
    freed: event_listener::Event,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    SourceFull,
    IpFull,
}

/// An admitted connection; releases its slots when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_total: u32, max_per_ip: u32) -> Arc<Self> {
        Self::with_prefixes(max_total, max_per_ip, 32, 64)
    }

    pub fn with_prefixes(
        max_total: u32,
        max_per_ip: u32,
        ipv4_prefix: u8,
        ipv6_prefix: u8,
    ) -> Arc<Self> {
        Arc::new(ConnectionLimits {
            max_total,
            max_per_ip,
            ipv4_prefix: ipv4_prefix.min(32),
            ipv6_prefix: ipv6_prefix.min(128),
            total: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
            freed: event_listener::Event::new(),
        })
    }

    /// Every slot taken: the accept loop waits (the kernel's backlog pushes senders back)
    /// instead of accepting and resetting connections whose data would be lost.
    pub fn is_full(&self) -> bool {
        self.total.load(Ordering::Acquire) >= self.max_total
    }

    /// Waits until a slot is free (returns at once when one is).
    pub async fn slot_freed(&self) {
        loop {
            let listener = self.freed.listen();
            if !self.is_full() {
                return;
            }
            listener.await;
        }
    }

    /// The client an address belongs to: the address masked to the configured prefix.
    fn client(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.ipv4_prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(v4) & mask).into())
            }
            IpAddr::V6(v6) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.ipv6_prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        }
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refusal> {
        let ip = self.client(ip);
        let admitted = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            });
        if admitted.is_err() {
            return Err(Refusal::SourceFull);
        }
        let mut table = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            drop(table);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::IpFull);
        }
        *count += 1;
        Ok(ConnectionSlot {
            limits: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = self.limits.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
        drop(table);
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        self.limits.freed.notify(usize::MAX);
    }
}

/// The budget of all connections' read buffers (`max_connection_memory`), shared by every
/// shard and source.
#[derive(Debug)]
pub struct ConnectionMemory {
    limit: u64,
    used: std::sync::atomic::AtomicU64,
}

impl ConnectionMemory {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(ConnectionMemory {
            limit,
            used: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Takes `bytes` from the budget; false (nothing taken) when it would go over.
    pub fn reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| n <= self.limit)
            })
            .is_ok()
    }

    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full source's accept loop (on a shard's executor) wakes when a connection on another
    /// thread (another shard) closes: no polling, and no missed wake.
    #[test]
    fn a_slot_freed_on_another_thread_wakes_the_waiting_shard() {
        let limits = ConnectionLimits::new(1, 1);
        let slot = limits.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert!(limits.is_full());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let waiting = Arc::clone(&limits);
        let shard = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let _ = started_tx.send(());
                waiting.slot_freed().await;
                waiting.is_full()
            })
            .unwrap();
        started_rx.recv().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::thread::spawn(move || drop(slot)).join().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || done_tx.send(shard.join().unwrap()));
        let full = done_rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the waiting shard was woken");
        assert!(!full, "woken with the slot free");
    }

    #[test]
    fn limits_per_ip_and_total() {
        let limits = ConnectionLimits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = limits.admit(a).unwrap();
        let _s2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), Refusal::IpFull);
        let _s3 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), Refusal::SourceFull);
        drop(s1);
        assert!(limits.admit(a).is_ok());
    }

    #[test]
    fn clients_are_counted_by_prefix() {
        let limits = ConnectionLimits::with_prefixes(100, 2, 24, 64);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let _a = limits.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = limits.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(
            limits.admit(ip("2001:db8:1:2:aaaa::3")).unwrap_err(),
            Refusal::IpFull,
            "one /64 is one client"
        );
        assert!(limits.admit(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        let _c = limits.admit(ip("10.0.0.1")).unwrap();
        let _d = limits.admit(ip("10.0.0.200")).unwrap();
        assert!(limits.admit(ip("10.0.0.7")).is_err(), "one /24");
        assert!(limits.admit(ip("10.0.1.7")).is_ok());
        assert!(!limits.is_full());
    }

    #[test]
    fn the_memory_budget_is_never_exceeded() {
        let m = ConnectionMemory::new(10_000);
        assert!(m.reserve(6_000));
        assert!(!m.reserve(6_000));
        assert!(m.reserve(4_000));
        m.release(6_000);
        assert_eq!(m.used(), 4_000);
        assert!(m.reserve(6_000));
    }
}

/// The connection-limit keys of every network source (`max_connections`,
/// `max_connections_per_ip`, `ipv4_prefix_length`, `ipv6_prefix_length`): checked, bounded,
/// rendered and turned into limits in one place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionKeys {
    pub max_connections: u32,
    pub max_connections_per_ip: u32,
    pub ipv4_prefix_length: u8,
    pub ipv6_prefix_length: u8,
}

pub(crate) fn default_max_connections() -> u32 {
    10_000
}
pub(crate) fn default_max_connections_per_ip() -> u32 {
    1_000
}
pub(crate) fn default_ipv4_prefix_length() -> u8 {
    32
}
pub(crate) fn default_ipv6_prefix_length() -> u8 {
    64
}

impl ConnectionKeys {
    /// The key (under the source) and why, when refused.
    pub(crate) fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err(("max_connections", "connection limits must be at least 1"));
        }
        Ok(())
    }

    pub(crate) fn check_bounds(&self, prefix: &str, b: &mut crate::units::Bounds) {
        let key = |k: &str| format!("{prefix}.{k}");
        b.count(
            &key("ipv4_prefix_length"),
            self.ipv4_prefix_length.into(),
            0..=32,
        );
        b.count(
            &key("ipv6_prefix_length"),
            self.ipv6_prefix_length.into(),
            0..=128,
        );
        b.count(
            &key("max_connections"),
            self.max_connections.into(),
            1..=1_000_000,
        );
    }

    pub(crate) fn render(&self, t: &mut toml::Table) {
        let count = |n: u32| toml::Value::Integer(n.into());
        t.insert("max_connections".into(), count(self.max_connections));
        t.insert(
            "max_connections_per_ip".into(),
            count(self.max_connections_per_ip),
        );
        t.insert(
            "ipv4_prefix_length".into(),
            count(self.ipv4_prefix_length.into()),
        );
        t.insert(
            "ipv6_prefix_length".into(),
            count(self.ipv6_prefix_length.into()),
        );
    }

    pub(crate) fn limits(&self) -> Arc<ConnectionLimits> {
        ConnectionLimits::with_prefixes(
            self.max_connections,
            self.max_connections_per_ip,
            self.ipv4_prefix_length,
            self.ipv6_prefix_length,
        )
    }
}
