//! TCP syslog: the accept loop (connection limits, balancing) and one task per connection;
//! the same loop serves syslog over TLS once the handshake is done ([`super::tls`]) and hands
//! RELP connections to [`super::relp`].

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Gate;

use super::connection::{CloseReason, Connection};
use super::limits::ConnectionSlot;
use super::tls::HandshakeFailure;
use super::{is_timeout, BoundSource, SourceMode, SourceRun, SourceSpec};
use crate::metrics::SourceShardCounters;
use crate::shard::balance::hand_off_if_busier;
use crate::shard::ingest::Extras;
use crate::shard::Shard;

pub(super) fn bind(spec: &SourceSpec) -> std::io::Result<Box<dyn BoundSource>> {
    Ok(Box::new(TcpListener::bind(spec.address)?))
}

impl BoundSource for TcpListener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        TcpListener::local_addr(self).map_err(std::io::Error::from)
    }

    fn serve(self: Box<Self>, shard: Rc<Shard>, run: Rc<SourceRun>, gate: &Rc<Gate>) -> bool {
        let task = accept_loop(shard, run, *self, Rc::clone(gate));
        gate.spawn(task).map(|t| t.detach()).is_ok()
    }
}

async fn accept_loop(shard: Rc<Shard>, run: Rc<SourceRun>, listener: TcpListener, gate: Rc<Gate>) {
    let source = &run.spec;
    loop {
        // At max_connections: leave new connections in the kernel's backlog (the sender is
        // pushed back) rather than accept and reset them, losing what they already sent.
        if source.limits.is_full() {
            futures_lite::future::or(source.limits.slot_freed(), run.stopped(&shard)).await;
        }
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            run.stopped(&shard).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(stream)) => stream,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(source = %source.name, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let peer = match stream.peer_addr() {
            Ok(p) => p,
            Err(_) => continue, // Already gone.
        };
        let slot = match source.limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                if let Some(c) = source.counters.shard(shard.id) {
                    c.connections_rejected.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(source = %source.name, %peer, ?refusal, "connection refused by limit");
                continue; // Dropping the stream closes it.
            }
        };
        if let Some(c) = source.counters.shard(shard.id) {
            c.connections_accepted.fetch_add(1, Ordering::Relaxed);
        }
        let Some((stream, slot)) = hand_off_if_busier(&shard, &source.name, stream, peer, slot)
        else {
            continue;
        };
        let task = serve_accepted(Rc::clone(&shard), Rc::clone(&run), stream, peer, slot);
        match gate.spawn(task) {
            Ok(t) => t.detach(),
            Err(_) => {
                shard.balance.release(shard.id);
                return; // The gate is closing: we are stopping.
            }
        };
    }
}

pub(super) enum ReadOutcome {
    Data(std::io::Result<usize>),
    Stop,
    /// The pending multiline event's timeout passed.
    JoinDue,
}

/// Counts a connection on its source (and in the shard's balance) for as long as it lives.
pub(super) struct ActiveConnection<'a> {
    shard: &'a Shard,
    source: Option<&'a SourceShardCounters>,
}

impl<'a> ActiveConnection<'a> {
    pub(super) fn open(shard: &'a Shard, source: Option<&'a SourceShardCounters>) -> Self {
        if let Some(c) = source {
            c.connections_active.fetch_add(1, Ordering::Relaxed);
        }
        ActiveConnection { shard, source }
    }

    pub(super) fn closed_by_us(&self, reason: CloseReason, peer: SocketAddr) {
        if let Some(c) = self.source {
            let counter = match reason {
                CloseReason::IdleTimeout => &c.closed_idle_timeout,
                CloseReason::FrameTimeout => &c.closed_frame_timeout,
                CloseReason::MemoryBudget => &c.closed_memory_budget,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(shard = self.shard.id, %peer, ?reason, "connection closed");
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        self.shard.balance.release(self.shard.id);
        if let Some(c) = self.source {
            c.connections_active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
pub(crate) trait SourceStream: AsyncRead + AsyncWrite + Unpin {
    /// The socket underneath (its read timeout).
    fn tcp(&self) -> &TcpStream;
}

impl SourceStream for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl SourceStream for futures_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Serves a connection this shard accepted or adopted, as its source's mode says; it counts
/// as active (and holds its slot) from here, handshake included.
pub(crate) async fn serve_accepted(
    shard: Rc<Shard>,
    run: Rc<SourceRun>,
    stream: TcpStream,
    peer: SocketAddr,
    _slot: ConnectionSlot,
) {
    let active = ActiveConnection::open(&shard, run.spec.counters.shard(shard.id));
    let tls = run.spec.tls.clone();
    match (run.spec.mode, tls) {
        (SourceMode::Relp, None) => {
            super::relp::serve(&shard, &run, stream, peer, &active, None).await
        }
        (SourceMode::Relp, Some(tls)) => {
            let Some((stream, extras)) = handshake(&shard, &run, &tls, stream, peer).await else {
                return;
            };
            super::relp::serve(&shard, &run, stream, peer, &active, extras).await
        }
        (SourceMode::Http, None) => {
            super::http::serve(&shard, &run, stream, peer, &active, None).await
        }
        (SourceMode::Http, Some(tls)) => {
            let Some((stream, extras)) = handshake(&shard, &run, &tls, stream, peer).await else {
                return;
            };
            super::http::serve(&shard, &run, stream, peer, &active, extras).await
        }
        (_, Some(tls)) => {
            let Some((stream, extras)) = handshake(&shard, &run, &tls, stream, peer).await else {
                return;
            };
            serve_tcp(&shard, &run, stream, peer, &active, extras).await
        }
        (_, None) => serve_tcp(&shard, &run, stream, peer, &active, None).await,
    }
}

/// The TLS handshake (bounded by its timeout; failures counted by reason), and the client
/// certificate's subject as the events' `tls.peer_subject` when it presented one.
async fn handshake(
    shard: &Shard,
    run: &SourceRun,
    tls: &super::tls::TlsServer,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(futures_rustls::server::TlsStream<TcpStream>, Option<Extras>)> {
    let counters = run.spec.counters.shard(shard.id);
    match super::tls::accept(tls, stream).await {
        Ok(stream) => {
            if let Some(c) = counters {
                c.tls_handshakes.fetch_add(1, Ordering::Relaxed);
            }
            let extras = super::tls::peer_subject(&stream)
                .map(|subject| Extras::strings(&[("tls.peer_subject", subject.as_bytes())]));
            Some((stream, extras))
        }
        Err((failure, why)) => {
            if let Some(c) = counters {
                let counter = match failure {
                    HandshakeFailure::Timeout => &c.tls_failed_timeout,
                    HandshakeFailure::Certificate => &c.tls_failed_certificate,
                    HandshakeFailure::Protocol => &c.tls_failed_protocol,
                    HandshakeFailure::Closed => &c.tls_failed_closed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(source = %run.spec.name, %peer, ?failure, error = %why, "TLS handshake failed");
            None
        }
    }
}

/// Syslog frames from a plain or TLS stream until it ends, times out or the source stops.
async fn serve_tcp<S: SourceStream>(
    shard: &Shard,
    run: &SourceRun,
    mut stream: S,
    peer: SocketAddr,
    active: &ActiveConnection<'_>,
    extras: Option<Extras>,
) {
    let source = &run.spec;
    let join = shard.processing.borrow().join_rule(&source.name);
    let Some(mut conn) = Connection::new(source, peer.ip(), join, extras) else {
        active.closed_by_us(CloseReason::MemoryBudget, peer);
        return;
    };
    loop {
        if let Err(reason) = conn.make_room() {
            active.closed_by_us(reason, peer);
            break;
        }
        let (timeout, on_timeout) = conn.read_timeout(source);
        if timeout.is_zero() || conn.apply_read_timeout(stream.tcp(), timeout).is_err() {
            active.closed_by_us(on_timeout, peer);
            break;
        }
        match next_read(shard, run, &mut stream, &mut conn).await {
            ReadOutcome::Data(Ok(0)) => break,
            ReadOutcome::Data(Ok(n)) => {
                conn.filled += n;
                conn.last_read = n;
            }
            ReadOutcome::Data(Err(e)) if is_timeout(&e) => {
                active.closed_by_us(on_timeout, peer);
                break;
            }
            ReadOutcome::Data(Err(e)) => {
                tracing::debug!(shard = shard.id, %peer, error = %e, "connection read failed");
                break;
            }
            ReadOutcome::Stop => {
                drain_ready(shard, &mut stream, &mut conn).await;
                break;
            }
            ReadOutcome::JoinDue => {
                conn.flush_join(shard).await;
                continue;
            }
        }
        conn.process(shard).await;
        conn.shrink_when_drained();
        glommio::yield_if_needed().await;
    }
    conn.finish(shard).await;
}

/// The next read, raced against the source's stop and a pending multiline event's timeout
/// (TCP reads wait for readiness, so racing one loses nothing).
async fn next_read<S: SourceStream>(
    shard: &Shard,
    run: &SourceRun,
    stream: &mut S,
    conn: &mut Connection,
) -> ReadOutcome {
    let filled = conn.filled;
    let join_due = conn.join_due();
    let read = futures_lite::future::or(
        async { ReadOutcome::Data(stream.read(&mut conn.buf[filled..]).await) },
        async {
            run.stopped(shard).await;
            ReadOutcome::Stop
        },
    );
    futures_lite::future::or(read, async {
        match join_due {
            Some(due) => {
                glommio::timer::sleep(due.saturating_duration_since(std::time::Instant::now()))
                    .await;
                ReadOutcome::JoinDue
            }
            None => std::future::pending().await,
        }
    })
    .await
}

/// On stop: take in whatever the kernel already holds for this connection, without waiting.
/// (glommio's read tries a non-blocking `recv` first, so polling it once never loses data.)
async fn drain_ready<S: SourceStream>(shard: &Shard, stream: &mut S, conn: &mut Connection) {
    loop {
        if conn.make_room().is_err() {
            return;
        }
        let filled = conn.filled;
        match futures_lite::future::poll_once(stream.read(&mut conn.buf[filled..])).await {
            Some(Ok(n)) if n > 0 => {
                conn.filled += n;
                conn.process(shard).await;
            }
            _ => return,
        }
    }
}
