//! The connection loop: listener, sockets (TLS, protocol header, SASL), connections and sessions.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ListenerConnectionHandle, ListenerSessionHandle, SessionAcceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{link, Core, CLOSE_TIMEOUT, HANDSHAKE_TIMEOUT};
use crate::counters::{inc, ConnStats};
use crate::faults::StreamCtl;
use crate::sniff::{SettledSet, Sniff};
use crate::stream::BrokerStream;
use crate::util::random_suffix;

const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// Per-connection context shared by its sessions and links.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub stats: Arc<ConnStats>,
    /// Pre-settled incoming deliveries, as seen on the wire.
    pub settled: Arc<SettledSet>,
    /// Unique per connection; names qpidd's temporary queues.
    pub tag: String,
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
    let stream = BrokerStream::new(tcp, ctl.clone(), core.faults.clone());
    match core.tls.clone() {
        Some(tls) => {
            let accepted = tokio::select! {
                _ = core.shutdown.cancelled() => None,
                r = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)) => Some(r),
            };
            match accepted {
                Some(Ok(Ok(tls_stream))) => serve_amqp(&core, id, peer, &ctl, tls_stream).await,
                Some(Ok(Err(e))) => {
                    core.refuse_connection(peer, &format!("TLS handshake failed: {e}"))
                }
                Some(Err(_)) => core.refuse_connection(peer, "TLS handshake timed out"),
                None => {}
            }
        }
        None => serve_amqp(&core, id, peer, &ctl, stream).await,
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
        settled: &Arc<SettledSet>,
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
            let s = Sniff::new(stream, header.to_vec(), settled.clone());
            tokio::time::timeout(HANDSHAKE_TIMEOUT, self.sasl_acceptor.accept(s)).await
        } else if header == AMQP_HEADER && self.config.allow_anonymous {
            let s = Sniff::new(stream, header.to_vec(), settled.clone());
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

async fn serve_amqp<S>(core: &Arc<Core>, id: u64, peer: SocketAddr, ctl: &Arc<StreamCtl>, stream: S)
where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let settled = Arc::new(SettledSet::default());
    let Some(mut conn) = core.open_connection(peer, stream, &settled).await else {
        return;
    };
    let stats = Arc::new(ConnStats::new(id, peer.to_string()));
    core.record_connection(stats.clone());
    let ctx = Arc::new(ConnCtx {
        stats: stats.clone(),
        settled,
        tag: format!("{}-{}", id, random_suffix(6)),
    });
    tracing::debug!(%peer, id, "connection open");
    run_connection(core, &ctx, &mut conn).await;
    if !ctl.is_killed() {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, conn.close()).await;
    }
    stats.open.store(false, Ordering::Relaxed);
    tracing::debug!(%peer, id, "connection closed");
}

async fn run_connection(core: &Arc<Core>, ctx: &Arc<ConnCtx>, conn: &mut ListenerConnectionHandle) {
    let session_acceptor = SessionAcceptor::new();
    loop {
        let incoming = tokio::select! {
            _ = core.shutdown.cancelled() => return,
            s = conn.next_incoming_session() => s,
        };
        let Some(incoming) = incoming else { return };
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
                return;
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
