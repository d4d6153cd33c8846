//! Accept-time balancing of TCP connections over shards (cross-core traffic once per
//! connection, never per event).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};

use glommio::net::TcpStream;

use super::{CommandSender, Shard, ShardCommand};
use crate::sources::limits::ConnectionSlot;

/// Accept-time balancing of TCP connections over shards. SO_REUSEPORT spreads connections by
/// a hash of their addresses, so a few busy senders can all land on one shard while another
/// idles. A shard that accepts a connection while it serves more than the least loaded shard
/// hands it over (the socket, before anything was read from it) through that shard's command
/// channel. Cross-core traffic once per connection, never per event.
pub struct Balance {
    /// Connections each shard serves or has been handed (all TCP sources).
    load: Vec<AtomicI64>,
    shards: Vec<CommandSender>,
}

impl Balance {
    pub fn new(shards: Vec<CommandSender>) -> Self {
        Balance {
            load: shards.iter().map(|_| AtomicI64::new(0)).collect(),
            shards,
        }
    }

    /// The shard that should serve a connection `me` just accepted: the least loaded one if
    /// `me` serves more; counts the connection there.
    pub(crate) fn assign(&self, me: usize) -> usize {
        let load = |i: usize| {
            self.load
                .get(i)
                .map_or(i64::MAX, |l| l.load(Ordering::Acquire))
        };
        let least = (0..self.load.len()).min_by_key(|&i| load(i)).unwrap_or(me);
        let target = if load(me) > load(least) { least } else { me };
        self.count(target);
        target
    }

    /// Counts a connection on `shard`.
    pub(crate) fn count(&self, shard: usize) {
        if let Some(l) = self.load.get(shard) {
            l.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn release(&self, shard: usize) {
        if let Some(l) = self.load.get(shard) {
            l.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A connection accepted by one shard for another to serve.
pub struct HandedOff {
    pub(crate) source: String,
    pub(crate) socket: std::os::fd::OwnedFd,
    pub(crate) peer: SocketAddr,
    pub(crate) slot: ConnectionSlot,
}

/// Passes the connection to a less loaded shard if there is one (`None`: handed off);
/// otherwise, or if the handover fails, gives it back to be served here.
pub(crate) fn hand_off_if_busier(
    shard: &Shard,
    source: &str,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) -> Option<(TcpStream, ConnectionSlot)> {
    let target = shard.balance.assign(shard.id);
    if target == shard.id {
        return Some((stream, slot));
    }
    let serve_here = || {
        shard.balance.release(target);
        shard.balance.count(shard.id);
    };
    // A duplicate of the socket travels; dropping ours closes only our descriptor.
    let socket = match dup_socket(&stream) {
        Ok(socket) => socket,
        Err(e) => {
            tracing::debug!(shard = shard.id, %peer, error = %e, "cannot hand the connection over: served here");
            serve_here();
            return Some((stream, slot));
        }
    };
    let conn = HandedOff {
        source: source.to_string(),
        socket,
        peer,
        slot,
    };
    let sent = match shard.balance.shards.get(target) {
        Some(to) => to.send(ShardCommand::Adopt(conn)),
        None => Err(ShardCommand::Adopt(conn)),
    };
    match sent {
        Ok(()) => {
            shard
                .counters
                .connections_handed_off
                .fetch_add(1, Ordering::Relaxed);
            None
        }
        Err(refused) => {
            // The target shard has stopped: served here (the duplicate is dropped).
            serve_here();
            match refused {
                ShardCommand::Adopt(conn) => Some((stream, conn.slot)),
                _ => None,
            }
        }
    }
}

fn dup_socket(stream: &TcpStream) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `stream`, which outlives this borrow.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    borrowed.try_clone_to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_keeps_a_connection_only_while_it_is_among_the_least_loaded() {
        let (txs, _rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| super::super::command_channel().unwrap())
            .unzip();
        let b = Balance::new(txs);
        // Every connection lands on shard 0 (the worst a hash can do).
        let placed: Vec<usize> = (0..6).map(|_| b.assign(0)).collect();
        assert_eq!(placed, vec![0, 1, 2, 0, 1, 2]);
        // A connection on shard 1 ends: the next one accepted anywhere goes there.
        b.release(1);
        assert_eq!(b.assign(2), 1);
        assert_eq!(b.assign(2), 2, "all equal again: served where accepted");
    }
}
