//! The connection loop: listener, sockets (TLS, protocol header, SASL), connections and sessions.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fe2o3_amqp::acceptor::{ListenerConnectionHandle, ListenerSessionHandle, SessionAcceptor};
use fe2o3_amqp::types::definitions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::{link, Core, CLOSE_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::counters::{inc, ConnStats};
use crate::faults::StreamCtl;
use crate::sniff::{PeerInfo, SettledSet, Sniff};
use crate::stream::BrokerStream;
use crate::util::{lock, random_suffix};

const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// Per-connection context shared by its sessions and links.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub stats: Arc<ConnStats>,
    /// Pre-settled incoming deliveries, as seen on the wire.
    pub settled: Arc<SettledSet>,
    /// The peer's container-id and SASL identity, as seen on the wire.
    pub peer: Arc<PeerInfo>,
    /// Unique per connection; names qpidd's temporary queues.
    pub tag: String,
    /// The broker's end of the socket (`127.0.0.1:PORT`).
    pub local: SocketAddr,
    /// Whether the connection runs over TLS.
    pub tls: bool,
    pub opened: Instant,
    close: CloseRequest,
}

/// A request to close the connection (management), with the error to send, if any.
#[derive(Debug, Default)]
struct CloseRequest {
    requested: Mutex<Option<Option<definitions::Error>>>,
    notify: Notify,
}

impl ConnCtx {
    /// Asks the connection to close (a Close frame, with this error if any).
    pub(crate) fn request_close(&self, error: Option<definitions::Error>) {
        lock(&self.close.requested).get_or_insert(error);
        self.close.notify.notify_one();
    }

    /// Waits for a close request; returns its error.
    async fn close_requested(&self) -> Option<definitions::Error> {
        loop {
            let notified = self.close.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = lock(&self.close.requested).take() {
                return e;
            }
            notified.await;
        }
    }
}

/// The socket a connection runs on.
struct Socket {
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    ctl: Arc<StreamCtl>,
    tls: bool,
}

pub(crate) async fn accept_loop(core: Arc<Core>, listener: TcpListener) {
    loop {
        tokio::select! {
            _ = core.shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((tcp, peer)) => {
                    let guard = core.tasks.guard();
                    let core = core.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        serve_socket(core, tcp, peer).await;
                    });
                }
                Err(e) => {
                    tracing::warn!(%e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

async fn serve_socket(core: Arc<Core>, tcp: TcpStream, peer: SocketAddr) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%e, "set_nodelay failed");
    }
    let id = core.next_conn.fetch_add(1, Ordering::Relaxed);
    let ctl = Arc::new(StreamCtl::default());
    core.faults.register_stream(id, ctl.clone());
    let socket = Socket {
        id,
        peer,
        local: tcp.local_addr().unwrap_or(core.config.bind),
        ctl: ctl.clone(),
        tls: core.tls.is_some(),
    };
    let stream = BrokerStream::new(tcp, ctl, core.faults.clone());
    match core.tls.clone() {
        Some(tls) => {
            let accepted = tokio::select! {
                _ = core.shutdown.cancelled() => None,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)) => Some(r),
            };
            match accepted {
                Some(Ok(Ok(tls_stream))) => serve_amqp(&core, socket, tls_stream).await,
                Some(Ok(Err(e))) => {
                    core.refuse_connection(peer, &format!("TLS handshake failed: {e}"))
                }
                Some(Err(_)) => core.refuse_connection(peer, "TLS handshake timed out"),
                None => {}
            }
        }
        None => serve_amqp(&core, socket, stream).await,
    }
    core.faults.unregister_stream(id);
}

impl Core {
    fn refuse_connection(&self, peer: SocketAddr, why: &str) {
        tracing::info!(%peer, why, "connection refused");
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads the protocol header and opens the connection (SASL or plain).
    async fn open_connection<S>(
        &self,
        peer: SocketAddr,
        mut stream: S,
        wire: (&Arc<SettledSet>, &Arc<PeerInfo>),
    ) -> Option<ListenerConnectionHandle>
    where
        S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
    {
        let mut header = [0u8; 8];
        let read = tokio::select! {
            _ = self.shutdown.cancelled() => return None,
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut header)) => r,
        };
        if !matches!(read, Ok(Ok(_))) {
            tracing::debug!(%peer, "no protocol header");
            return None;
        }
        let opened = if header == SASL_HEADER {
            let s = Sniff::new(stream, header.to_vec(), wire.0.clone(), wire.1.clone());
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.sasl_acceptor.accept(s)).await
        } else if header == AMQP_HEADER && self.config.allow_anonymous {
            let s = Sniff::new(stream, header.to_vec(), wire.0.clone(), wire.1.clone());
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.plain_acceptor.accept(s)).await
        } else {
            self.refuse_connection(peer, &format!("unsupported protocol header {header:?}"));
            let _ = stream.write_all(&SASL_HEADER).await;
            let _ = stream.shutdown().await;
            return None;
        };
        match opened {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => {
                self.refuse_connection(peer, &format!("refused during open: {e}"));
                None
            }
            Err(_) => {
                self.refuse_connection(peer, "open timed out");
                None
            }
        }
    }
}

async fn serve_amqp<S>(core: &Arc<Core>, socket: Socket, stream: S)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let settled = Arc::new(SettledSet::default());
    let peer_info = Arc::new(PeerInfo::default());
    let Some(mut conn) = core
        .open_connection(socket.peer, stream, (&settled, &peer_info))
        .await
    else {
        return;
    };
    let (id, peer) = (socket.id, socket.peer);
    let stats = Arc::new(ConnStats::new(id, peer.to_string()));
    core.record_connection(stats.clone());
    let ctx = Arc::new(ConnCtx {
        stats: stats.clone(),
        settled,
        peer: peer_info,
        tag: format!("{}-{}", id, random_suffix(6)),
        local: socket.local,
        tls: socket.tls,
        opened: Instant::now(),
        close: CloseRequest::default(),
    });
    lock(&core.live).insert(id, ctx.clone());
    tracing::debug!(%peer, id, "connection open");
    let close_error = run_connection(core, &ctx, &mut conn).await;
    if !socket.ctl.is_killed() {
        let close = async {
            match close_error {
                Some(e) => conn.close_with_error(e).await,
                None => conn.close().await,
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
    lock(&core.live).remove(&id);
    stats.open.store(false, Ordering::Relaxed);
    tracing::debug!(%peer, id, "connection closed");
}

/// Accepts sessions until the peer closes, the broker stops or management asks to close;
/// returns the error to close with.
async fn run_connection(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    conn: &mut ListenerConnectionHandle,
) -> Option<definitions::Error> {
    let session_acceptor = SessionAcceptor::new();
    loop {
        let incoming = tokio::select! {
            _ = core.shutdown.cancelled() => return None,
            e = ctx.close_requested() => {
                tracing::info!(id = ctx.stats.id, "closing the connection on request");
                return e;
            }
            s = conn.next_incoming_session() => s,
        };
        let incoming = incoming?;
        let remote_channel = incoming.channel;
        match session_acceptor
            .accept_incoming_session(incoming, conn)
            .await
        {
            Ok(session) => {
                inc(&ctx.stats.sessions);
                let guard = core.tasks.guard();
                let core = core.clone();
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    run_session(core, ctx, session, remote_channel).await;
                });
            }
            Err(e) => {
                tracing::info!(%e, "session begin failed");
                return None;
            }
        }
    }
}

async fn run_session(
    core: Arc<Core>,
    ctx: Arc<ConnCtx>,
    mut session: ListenerSessionHandle,
    remote_channel: u16,
) {
    loop {
        let attach = tokio::select! {
            _ = core.shutdown.cancelled() => break,
            a = session.next_incoming_attach() => a,
        };
        let Some(attach) = attach else { break };
        if let Err(err) =
            link::handle_attach(&core, &ctx, &mut session, remote_channel, attach).await
        {
            tracing::info!(?err, "ending session after refused attach");
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.end_with_error(err)).await;
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.end()).await;
}
