//! UDP syslog: one datagram is one event. UDP has no backpressure: what the WAL cannot take
//! while blocked is counted, and what the kernel dropped is read from /proc.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use glommio::net::UdpSocket;
use glommio::sync::Gate;
use ingest::framing::FrameFlags;
use storage::writer::WalStatus;

use super::{is_timeout, BoundSource, SourceRun, SourceSpec};
use crate::metrics::{BatchTally, ShardCounters};
use crate::shard::ingest::{add_to_source, ingest_frame, BatchClock, FrameIn};
use crate::shard::Shard;

/// How long a UDP receive waits before it looks at the stop flag again.
const UDP_POLL: Duration = Duration::from_millis(100);
/// The largest UDP datagram.
const UDP_MAX_DATAGRAM: usize = 65_535;

pub(super) fn bind(spec: &SourceSpec) -> std::io::Result<Box<dyn BoundSource>> {
    let socket = UdpSocket::bind(spec.address)?;
    set_receive_buffer(&socket, spec);
    Ok(Box::new(socket))
}

impl BoundSource for UdpSocket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        UdpSocket::local_addr(self).map_err(std::io::Error::from)
    }

    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool {
        gate.spawn(udp_loop(shard, run, *self))
            .map(|t| t.detach())
            .is_ok()
    }
}

/// SO_RCVBUFFORCE where permitted (it may exceed `net.core.rmem_max`), else SO_RCVBUF.
/// UDP only: on TCP a fixed buffer would switch off the kernel's receive-window autotuning.
fn set_receive_buffer(socket: &UdpSocket, source: &SourceSpec) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let size = source.receive_buffer.min(i32::MAX as usize) as libc::c_int;
    let set = |option| {
        // SAFETY: setsockopt on a socket we own, with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    if !set(libc::SO_RCVBUFFORCE) && !set(libc::SO_RCVBUF) {
        tracing::warn!(source = %source.name, size, "cannot set the socket receive buffer");
    }
}

async fn udp_loop(shard: Rc<Shard>, run: Rc<SourceRun>, socket: UdpSocket) {
    let _registered = KernelDropsWatch::register(&shard.counters, &socket);
    let source = &run.spec;
    if let Err(e) = socket.set_read_timeout(Some(UDP_POLL)) {
        tracing::error!(source = %source.name, error = %e, "cannot set UDP read timeout");
        return;
    }
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    while !run.is_stopping(&shard) {
        match socket.recv_from(&mut buf).await {
            Ok((n, peer)) => ingest_datagram(&shard, source, &buf[..n], peer.ip()).await,
            Err(e) => {
                let e = std::io::Error::from(e);
                if !is_timeout(&e) {
                    tracing::warn!(source = %source.name, error = %e, "UDP receive failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        glommio::yield_if_needed().await;
    }
    // Stopping: take what the kernel already queued, without waiting.
    use std::os::fd::AsRawFd;
    // SAFETY: the fd belongs to `socket`, which outlives this borrow.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) };
    let sock = socket2::SockRef::from(&fd);
    loop {
        let uninit = unsafe_uninit(&mut buf);
        match sock.recv_from_with_flags(uninit, libc::MSG_DONTWAIT) {
            Ok((n, peer)) => {
                let ip = peer
                    .as_socket()
                    .map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
                ingest_datagram(&shard, source, &buf[..n], ip).await;
            }
            Err(_) => return,
        }
    }
}

/// Lists a UDP socket's inode in the shard's counters while the socket is served, so the
/// metrics can count what the kernel dropped on it.
struct KernelDropsWatch {
    counters: Arc<ShardCounters>,
    inode: Option<u64>,
}

impl KernelDropsWatch {
    fn register(counters: &Arc<ShardCounters>, socket: &UdpSocket) -> Self {
        use std::os::fd::AsRawFd;
        let inode = crate::metrics::socket_inode(socket.as_raw_fd());
        if let (Some(inode), Ok(mut inodes)) = (inode, counters.udp_socket_inodes.lock()) {
            inodes.push(inode);
        }
        KernelDropsWatch {
            counters: Arc::clone(counters),
            inode,
        }
    }
}

impl Drop for KernelDropsWatch {
    fn drop(&mut self) {
        if let (Some(inode), Ok(mut inodes)) = (self.inode, self.counters.udp_socket_inodes.lock())
        {
            inodes.retain(|&i| i != inode);
        }
    }
}

/// Views an initialised byte buffer as `MaybeUninit` for socket2 (always sound: initialised
/// bytes are valid `MaybeUninit` bytes, and socket2 only writes into it).
fn unsafe_uninit(buf: &mut [u8]) -> &mut [std::mem::MaybeUninit<u8>] {
    // SAFETY: `u8` and `MaybeUninit<u8>` have the same layout; the callee never de-initialises.
    unsafe { &mut *(buf as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) }
}

/// One datagram is one event: trailing line ends are stripped, an oversize one is truncated.
async fn ingest_datagram(shard: &Shard, source: &SourceSpec, datagram: &[u8], ip: IpAddr) {
    shard.appender.note_arrival(std::time::Instant::now());
    if let Some(c) = source.counters.shard(shard.id) {
        c.udp_datagrams.fetch_add(1, Ordering::Relaxed);
    }
    if shard.appender.status() == WalStatus::Blocked {
        // Waiting would only move the loss into the kernel's socket buffer, uncounted.
        shard
            .counters
            .udp_dropped_blocked
            .fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut frame = datagram;
    while let [rest @ .., b'\n' | b'\r' | 0] = frame {
        frame = rest;
    }
    if frame.is_empty() {
        return;
    }
    let mut flags = FrameFlags::default();
    if frame.len() > source.max_frame {
        frame = &frame[..source.max_frame];
        flags.0 |= FrameFlags::TRUNCATED;
    }
    let mut tally = BatchTally::default();
    let event = FrameIn {
        frame,
        flags,
        source_ip: Some(ip),
        parser: &source.parser,
        source: &source.name,
        extras: None,
    };
    ingest_frame(shard, event, &BatchClock::now(), &mut tally).await;
    shard.counters.add(&tally);
    add_to_source(&source.counters, shard.id, &tally);
}
