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
use ingest::framing::FramingMode;

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

/// A connection's hold on its shard and source: counted active (and in the shard's
/// balance), its connection slot taken, for as long as it lives.
pub(super) struct ActiveConnection {
    pub(super) shard: Rc<Shard>,
    pub(super) run: Rc<SourceRun>,
    _slot: ConnectionSlot,
}

impl ActiveConnection {
    pub(super) fn open(shard: Rc<Shard>, run: Rc<SourceRun>, slot: ConnectionSlot) -> Self {
        if let Some(c) = run.spec.counters.shard(shard.id) {
            c.connections_active.fetch_add(1, Ordering::Relaxed);
        }
        ActiveConnection {
            shard,
            run,
            _slot: slot,
        }
    }

    fn counters(&self) -> Option<&SourceShardCounters> {
        self.run.spec.counters.shard(self.shard.id)
    }

    pub(super) fn closed_by_us(&self, reason: CloseReason, peer: SocketAddr) {
        if let Some(c) = self.counters() {
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

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.shard.balance.release(self.shard.id);
        if let Some(c) = self.counters() {
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

/// The task serving a connection this shard accepted or adopted, as its source's mode says;
/// it counts as active (and holds its slot) from its start, handshake included. Boxed per
/// mode: a task is as large as its future, and thousands of idle plain TCP connections should
/// carry neither TLS, RELP nor hyper state.
pub(crate) fn serve_accepted(
    shard: Rc<Shard>,
    run: Rc<SourceRun>,
    stream: TcpStream,
    peer: SocketAddr,
    slot: ConnectionSlot,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    let plain = run.spec.mode == SourceMode::Tcp && run.spec.tls.is_none();
    let active = ActiveConnection::open(shard, run, slot);
    if plain {
        Box::pin(serve_tcp(active, stream, peer, None))
    } else {
        Box::pin(serve_other(active, stream, peer))
    }
}

/// The modes other than plain TCP syslog: TLS (handshake first), RELP, HTTP.
async fn serve_other(active: ActiveConnection, stream: TcpStream, peer: SocketAddr) {
    let Some(tls) = active.run.spec.tls.clone() else {
        return match active.run.spec.mode {
            SourceMode::Relp => super::relp::serve(&active, stream, peer, None).await,
            _ => super::http::serve(&active, stream, peer, None).await,
        };
    };
    let Some((stream, extras)) = handshake(&active, &tls, stream, peer).await else {
        return;
    };
    match active.run.spec.mode {
        SourceMode::Relp => super::relp::serve(&active, stream, peer, extras).await,
        SourceMode::Http => super::http::serve(&active, stream, peer, extras).await,
        _ => serve_tcp(active, stream, peer, extras).await,
    }
}

/// The TLS handshake (bounded by its timeout; failures counted by reason), and the client
/// certificate's subject as the events' `tls.peer_subject` when it presented one.
async fn handshake(
    active: &ActiveConnection,
    tls: &super::tls::TlsServer,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<(futures_rustls::server::TlsStream<TcpStream>, Option<Extras>)> {
    let (run, counters) = (&active.run, active.counters());
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
    active: ActiveConnection,
    mut stream: S,
    peer: SocketAddr,
    extras: Option<Extras>,
) {
    let (shard, run) = (&*active.shard, &*active.run);
    let source = &run.spec;
    let join = shard.processing.borrow().join_rule(&source.name);
    let Some(mut conn) =
        Connection::new(source, Some(peer.ip()), join, extras, FramingMode::Detect)
    else {
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
                conn.note_read(n);
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
                conn.note_read(n);
                conn.process(shard).await;
            }
            _ => return,
        }
    }
}
