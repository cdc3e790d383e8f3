//! The broker core: listener, connections, sessions, links and node resolution.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerConnectionHandle,
    ListenerSessionHandle, SaslAcceptor, SessionAcceptor,
};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::definitions::{self, Fields, Role, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Modified, Outcome, Source, Target, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Array, Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use fe2o3_amqp::{Receiver, Sendable, Sender};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use regex::Regex;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerConfig, Flavour};
use crate::counters::{dec, inc, ConnStats, Counters};
use crate::faults::{FaultState, ForcedOutcome};
use crate::node::{amqp_error, Backlog, Node, NodeKind, Routed, Stored};
use crate::sniff::{SettledSet, Sniff};
use crate::stream::{BrokerStream, StreamCtl};
use crate::BrokerError;

/// Connection records kept in the counters (closed ones are dropped first).
const MAX_CONNECTION_RECORDS: usize = 10_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A queue consumer that holds a message without credit gives it back after this long
/// when another consumer is waiting.
const STRANDED_AFTER: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts live tasks so that shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    live: AtomicUsize,
    idle: Notify,
}

pub(crate) struct TaskGuard(Arc<Tasks>);

impl Tasks {
    fn guard(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    pub(crate) async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live.load(Ordering::Acquire) == 0;
            }
        }
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// SASL acceptor with several PLAIN users and optional ANONYMOUS.
#[derive(Debug, Clone)]
pub(crate) struct UsersSasl {
    users: Arc<Vec<(String, String)>>,
    anonymous: bool,
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for UsersSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        let mut m = Vec::new();
        if !self.users.is_empty() {
            m.push(Symbol::from("PLAIN"));
        }
        if self.anonymous {
            m.push(Symbol::from("ANONYMOUS"));
        }
        Array::from(m)
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.as_str() {
            "ANONYMOUS" if self.anonymous => outcome(SaslCode::Ok),
            "PLAIN" => {
                let Some(resp) = init.initial_response else {
                    return outcome(SaslCode::Auth);
                };
                let bytes = resp.into_vec();
                let mut parts = bytes.split(|b| *b == 0);
                let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
                let ok = match (user, pass) {
                    (Some(u), Some(p)) => self
                        .users
                        .iter()
                        .any(|(name, pw)| name.as_bytes() == u && pw.as_bytes() == p),
                    _ => false,
                };
                if ok {
                    outcome(SaslCode::Ok)
                } else {
                    tracing::info!("SASL PLAIN authentication failed");
                    outcome(SaslCode::Auth)
                }
            }
            other => {
                tracing::info!(mechanism = other, "SASL mechanism refused");
                outcome(SaslCode::Auth)
            }
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        outcome(SaslCode::Sys)
    }
}

type DynSourceFn = fn(Source) -> Option<Source>;
type DynTargetFn = fn(Target) -> Option<Target>;

/// Per-connection context shared by its sessions and links.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub stats: Arc<ConnStats>,
    pub settled: Arc<SettledSet>,
    pub tag: String,
}

/// Why an attach is refused.
#[derive(Debug)]
pub(crate) enum Refuse {
    /// Attach (with a null terminus) then detach with this error.
    Detach(definitions::Error),
    /// End the whole session with this error (RabbitMQ).
    EndSession(definitions::Error),
}

#[derive(Debug)]
struct Resolved {
    node: Option<Arc<Node>>,
    dynamic_address: Option<String>,
}

/// Shared broker state.
pub(crate) struct Core {
    pub flavour: Flavour,
    pub config: BrokerConfig,
    queue_res: Vec<Regex>,
    topic_res: Vec<Regex>,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    conns: Mutex<Vec<Arc<ConnStats>>>,
    refused: AtomicU64,
    pub faults: Arc<FaultState>,
    router_id: String,
    next_conn: AtomicU64,
    pub shutdown: CancellationToken,
    pub tasks: Arc<Tasks>,
    sasl_acceptor: ConnectionAcceptor<(), UsersSasl>,
    plain_acceptor: ConnectionAcceptor<(), ()>,
    link_acceptor: LinkAcceptor<DynSourceFn, DynTargetFn>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("flavour", &self.flavour)
            .finish_non_exhaustive()
    }
}

fn compile(patterns: &[String], what: &str) -> Result<Vec<Regex>, BrokerError> {
    patterns
        .iter()
        .map(|p| {
            Regex::new(p).map_err(|e| {
                BrokerError::Config(format!(
                    "{what} `{p}` is not a valid regular expression: {e}"
                ))
            })
        })
        .collect()
}

fn open_properties(flavour: Flavour) -> Fields {
    let mut f = Fields::new();
    f.insert(
        Symbol::from("product"),
        Value::String(flavour.product().to_string()),
    );
    f.insert(
        Symbol::from("version"),
        Value::String(flavour.version().to_string()),
    );
    f
}

fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

fn pass_source(s: Source) -> Option<Source> {
    Some(s)
}

fn pass_target(t: Target) -> Option<Target> {
    Some(t)
}

#[allow(irrefutable_let_patterns)]
fn target_of(attach: &Attach) -> Option<&Target> {
    match attach.target.as_deref() {
        Some(t) => {
            if let TargetArchetype::Target(t) = t {
                Some(t)
            } else {
                None
            }
        }
        None => None,
    }
}

#[allow(irrefutable_let_patterns)]
fn target_of_mut(attach: &mut Attach) -> Option<&mut Target> {
    match attach.target.as_deref_mut() {
        Some(t) => {
            if let TargetArchetype::Target(t) = t {
                Some(t)
            } else {
                None
            }
        }
        None => None,
    }
}

impl Core {
    pub(crate) fn new(
        config: BrokerConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Arc<Core>, BrokerError> {
        if !config.bind.ip().is_loopback() {
            return Err(BrokerError::Config(format!(
                "bind address {} is not a loopback address; the embedded broker only listens on loopback",
                config.bind
            )));
        }
        if config.users.is_empty() && !config.allow_anonymous {
            return Err(BrokerError::Config(
                "no SASL users and allow_anonymous=false: nobody could log in".to_string(),
            ));
        }
        let queue_res = compile(&config.queue_patterns, "queue pattern")?;
        let topic_res = compile(&config.topic_patterns, "topic pattern")?;
        let flavour = config.flavour;
        let container_id = config
            .container_id
            .clone()
            .unwrap_or_else(|| match flavour {
                Flavour::Qpidd => format!("qpidd-{}", random_suffix(8)),
                Flavour::Router => format!("router-{}", random_suffix(8)),
                Flavour::Rabbitmq3 => "rabbit@localhost".to_string(),
            });
        let router_id = container_id.clone();

        let make_builder = || {
            let b = ConnectionAcceptor::builder()
                .container_id(container_id.clone())
                .properties(open_properties(flavour));
            if flavour != Flavour::Rabbitmq3 {
                b.add_offered_capabilities("ANONYMOUS-RELAY")
            } else {
                b
            }
        };
        let plain_acceptor = make_builder().build();
        let sasl_acceptor = make_builder()
            .sasl_acceptor(UsersSasl {
                users: Arc::new(config.users.clone()),
                anonymous: config.allow_anonymous,
            })
            .build();

        let link_acceptor = LinkAcceptor::builder()
            .verify_incoming_source(false)
            .verify_incoming_target(false)
            .on_dynamic_source(pass_source as DynSourceFn)
            .on_dynamic_target(pass_target as DynTargetFn)
            .build();

        let core = Core {
            flavour,
            queue_res,
            topic_res,
            nodes: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
            faults: Arc::new(FaultState::default()),
            router_id,
            next_conn: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: Arc::new(Tasks::default()),
            sasl_acceptor,
            plain_acceptor,
            link_acceptor,
            tls,
            config,
        };
        if flavour == Flavour::Qpidd {
            for name in ["amq.topic", "amq.fanout"] {
                core.insert_node(Node::new(
                    name.to_string(),
                    NodeKind::Topic,
                    false,
                    true,
                    None,
                ));
            }
        }
        Ok(Arc::new(core))
    }

    fn insert_node(&self, node: Arc<Node>) -> Arc<Node> {
        lock(&self.nodes)
            .entry(node.name.clone())
            .or_insert(node)
            .clone()
    }

    fn remove_node(&self, node: &Arc<Node>) {
        let mut nodes = lock(&self.nodes);
        if nodes.get(&node.name).is_some_and(|n| Arc::ptr_eq(n, node)) {
            nodes.remove(&node.name);
        }
    }

    pub(crate) fn counters(&self) -> Counters {
        let nodes: Vec<Arc<Node>> = lock(&self.nodes).values().cloned().collect();
        let mut c = Counters {
            flavour: self.flavour.to_string(),
            refused_connections: self.refused.load(Ordering::Relaxed),
            ..Counters::default()
        };
        for n in nodes {
            n.sweep_expired();
            c.nodes
                .insert(n.name.clone(), n.stats.snapshot(n.kind_name(), n.depth()));
        }
        c.connections = lock(&self.conns).iter().map(|s| s.snapshot()).collect();
        c
    }

    /// Finds or creates the node for a non-dynamic address.
    fn lookup(&self, address: &str) -> Result<Arc<Node>, Refuse> {
        if let Some(n) = lock(&self.nodes).get(address) {
            return Ok(n.clone());
        }
        match self.flavour {
            Flavour::Qpidd => {
                let kind = if self.queue_res.iter().any(|r| r.is_match(address)) {
                    NodeKind::Queue
                } else if self.topic_res.iter().any(|r| r.is_match(address)) {
                    NodeKind::Topic
                } else {
                    return Err(Refuse::Detach(amqp_error(
                        "amqp:not-found",
                        &format!("Node not found: {address}"),
                    )));
                };
                Ok(self.insert_node(Node::new(address.to_string(), kind, false, true, None)))
            }
            Flavour::Router => {
                let multicast = [
                    "openstack.org/om/rpc/multicast",
                    "openstack.org/om/notify/multicast",
                    "broadcast",
                    "multicast",
                ]
                .iter()
                .any(|p| address.starts_with(p));
                let kind = if multicast {
                    NodeKind::Multicast
                } else {
                    NodeKind::Anycast
                };
                Ok(self.insert_node(Node::new(
                    address.to_string(),
                    kind,
                    false,
                    false,
                    Some(self.config.router_drop_threshold),
                )))
            }
            Flavour::Rabbitmq3 => {
                let unknown = || {
                    Refuse::EndSession(amqp_error(
                        "amqp:invalid-field",
                        &format!("Attach rejected: {{unknown_destination,\"{address}\"}}"),
                    ))
                };
                let (name, kind) = if address.starts_with("openstack.org/om/") {
                    return Err(unknown());
                } else if let Some(q) = address
                    .strip_prefix("/queue/")
                    .or_else(|| address.strip_prefix("/amq/queue/"))
                {
                    if q.is_empty() {
                        return Err(unknown());
                    }
                    (q.to_string(), NodeKind::Queue)
                } else if let Some(k) = address.strip_prefix("/topic/") {
                    (format!("amq.topic/{k}"), NodeKind::Topic)
                } else if let Some(rest) = address.strip_prefix("/exchange/") {
                    let (ex, key) = rest.split_once('/').unwrap_or((rest, ""));
                    if ex.is_empty() {
                        return Err(unknown());
                    }
                    if ex == "amq.fanout" || key.is_empty() {
                        (ex.to_string(), NodeKind::Topic)
                    } else {
                        (format!("{ex}/{key}"), NodeKind::Topic)
                    }
                } else if address.starts_with('/') {
                    return Err(unknown());
                } else {
                    (address.to_string(), NodeKind::Queue)
                };
                if let Some(n) = lock(&self.nodes).get(&name) {
                    return Ok(n.clone());
                }
                Ok(self.insert_node(Node::new(name, kind, false, false, None)))
            }
        }
    }

    fn refuse(&self, error: definitions::Error) -> Refuse {
        match self.flavour {
            Flavour::Rabbitmq3 => Refuse::EndSession(error),
            _ => Refuse::Detach(error),
        }
    }

    fn resolve(&self, attach: &Attach, conn: &ConnCtx) -> Result<Resolved, Refuse> {
        let consumer = attach.role == Role::Receiver;
        let (address, dynamic) = if consumer {
            match attach.source.as_deref() {
                Some(s) => (s.address.clone(), s.dynamic),
                None => (None, false),
            }
        } else {
            match target_of(attach) {
                Some(t) => (t.address.clone(), t.dynamic),
                None => (None, false),
            }
        };
        if dynamic {
            let name = match self.flavour {
                Flavour::Rabbitmq3 => {
                    let what = if consumer { "sources" } else { "targets" };
                    return Err(Refuse::EndSession(amqp_error(
                        "amqp:not-implemented",
                        &format!("Dynamic {what} not supported"),
                    )));
                }
                Flavour::Qpidd => {
                    let mut name = format!("{}_{}", conn.tag, attach.name);
                    if lock(&self.nodes).contains_key(&name) {
                        name = format!("{name}_{}", random_suffix(6));
                    }
                    name
                }
                Flavour::Router => {
                    format!(
                        "amqp:/_topo/0/{}/temp.{}",
                        self.router_id,
                        random_suffix(12)
                    )
                }
            };
            let node = match self.flavour {
                Flavour::Router => Node::new(
                    name.clone(),
                    NodeKind::Anycast,
                    true,
                    false,
                    Some(self.config.router_drop_threshold),
                ),
                _ => Node::new(name.clone(), NodeKind::Queue, true, false, None),
            };
            let node = self.insert_node(node);
            return Ok(Resolved {
                node: Some(node),
                dynamic_address: Some(name),
            });
        }
        let Some(address) = address else {
            if !consumer && self.flavour != Flavour::Rabbitmq3 {
                // Anonymous relay: routed per message by its `to`.
                return Ok(Resolved {
                    node: None,
                    dynamic_address: None,
                });
            }
            let err = if consumer {
                amqp_error("amqp:invalid-field", "Attach rejected: no source address")
            } else {
                amqp_error(
                    "amqp:invalid-field",
                    "Attach rejected: {address_not_utf8_string,undefined}",
                )
            };
            return Err(self.refuse(err));
        };
        if let Some(err) = self.faults.refusal(&address) {
            return Err(self.refuse(err));
        }
        let node = self.lookup(&address)?;
        Ok(Resolved {
            node: Some(node),
            dynamic_address: None,
        })
    }
}

// ---------------------------------------------------------------------------
// Listener and connections
// ---------------------------------------------------------------------------

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
                    tracing::info!(%peer, %e, "TLS handshake failed");
                    core.refused.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(_)) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    core.refused.fetch_add(1, Ordering::Relaxed);
                }
                None => {}
            }
        }
        None => serve_amqp(&core, id, peer, &ctl, stream).await,
    }
    core.faults.unregister_stream(id);
}

const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

async fn serve_amqp<S>(
    core: &Arc<Core>,
    id: u64,
    peer: SocketAddr,
    ctl: &Arc<StreamCtl>,
    mut stream: S,
) where
    S: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    let read = tokio::select! {
        _ = core.shutdown.cancelled() => return,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut header)) => r,
    };
    match read {
        Ok(Ok(_)) => {}
        _ => {
            tracing::debug!(%peer, "no protocol header");
            return;
        }
    }
    let settled = Arc::new(SettledSet::default());
    let conn = if header == SASL_HEADER {
        let s = Sniff::new(stream, header.to_vec(), settled.clone());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, core.sasl_acceptor.accept(s)).await
    } else if header == AMQP_HEADER && core.config.allow_anonymous {
        let s = Sniff::new(stream, header.to_vec(), settled.clone());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, core.plain_acceptor.accept(s)).await
    } else {
        tracing::info!(%peer, ?header, "unsupported protocol header");
        core.refused.fetch_add(1, Ordering::Relaxed);
        let _ = stream.write_all(&SASL_HEADER).await;
        let _ = stream.shutdown().await;
        return;
    };
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::info!(%peer, %e, "connection refused during open");
            core.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "open timed out");
            core.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let stats = Arc::new(ConnStats::new(id, peer.to_string()));
    {
        // Keep closed connections for transcripts, but not forever.
        let mut conns = lock(&core.conns);
        if conns.len() >= MAX_CONNECTION_RECORDS {
            if let Some(i) = conns.iter().position(|c| !c.open.load(Ordering::Relaxed)) {
                conns.remove(i);
            }
        }
        conns.push(stats.clone());
    }
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
        if let Err(err) = handle_attach(&core, &ctx, &mut session, remote_channel, attach).await {
            tracing::info!(?err, "ending session after refused attach");
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.end_with_error(err)).await;
            return;
        }
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.end()).await;
}

/// Handles one attach. `Err` means: end the session with that error.
async fn handle_attach(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    session: &mut ListenerSessionHandle,
    remote_channel: u16,
    mut attach: Attach,
) -> Result<(), definitions::Error> {
    inc(&ctx.stats.links);
    let consumer = attach.role == Role::Receiver;
    let resolved = match core.resolve(&attach, ctx) {
        Ok(r) => r,
        Err(Refuse::EndSession(e)) => {
            inc(&ctx.stats.refused_links);
            return Err(e);
        }
        Err(Refuse::Detach(e)) => {
            inc(&ctx.stats.refused_links);
            tracing::info!(link = %attach.name, error = ?e.description, "refusing attach");
            if consumer {
                attach.source = None;
            } else {
                attach.target = None;
            }
            match core
                .link_acceptor
                .accept_incoming_attach(attach, session)
                .await
            {
                Ok(LinkEndpoint::Sender(s)) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.close_with_error(e)).await;
                }
                Ok(LinkEndpoint::Receiver(r)) => {
                    let _ = tokio::time::timeout(CLOSE_TIMEOUT, r.close_with_error(e)).await;
                }
                Err(err) => tracing::debug!(%err, "accepting a refused link failed"),
            }
            return Ok(());
        }
    };
    if let Some(addr) = &resolved.dynamic_address {
        let echo_dynamic = core.flavour == Flavour::Router;
        if consumer {
            if let Some(s) = attach.source.as_deref_mut() {
                s.address = Some(addr.clone());
                s.dynamic = echo_dynamic;
            }
        } else if let Some(t) = target_of_mut(&mut attach) {
            t.address = Some(addr.clone());
            t.dynamic = echo_dynamic;
        }
    }
    let remote_handle = attach.handle.0;
    let presettled_link = attach.snd_settle_mode == SenderSettleMode::Settled;
    let address = resolved
        .node
        .as_ref()
        .map(|n| n.name.clone())
        .unwrap_or_default();
    let endpoint = match core
        .link_acceptor
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(ep) => ep,
        Err(e) => {
            tracing::info!(%e, "link attach failed");
            if let Some(node) = resolved.node.as_ref().filter(|n| n.temporary) {
                core.remove_node(node);
            }
            return Ok(());
        }
    };
    let link_address = match (&resolved.dynamic_address, &endpoint) {
        (Some(a), _) => a.clone(),
        _ => address,
    };
    let (link_id, close_rx) = core.faults.register_link(link_address);
    let guard = core.tasks.guard();
    let core = core.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _guard = guard;
        match endpoint {
            LinkEndpoint::Sender(sender) => {
                if let Some(node) = resolved.node {
                    run_consumer(&core, &ctx, sender, node, close_rx).await;
                }
            }
            LinkEndpoint::Receiver(receiver) => {
                run_producer(
                    &core,
                    &ctx,
                    receiver,
                    resolved.node,
                    presettled_link,
                    (remote_channel, remote_handle),
                    close_rx,
                )
                .await;
                ctx.settled.forget_link(remote_channel, remote_handle);
            }
        }
        core.faults.unregister_link(link_id);
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// Producers: the broker receives
// ---------------------------------------------------------------------------

type PendingReply =
    Pin<Box<dyn Future<Output = (DeliveryInfo, Arc<Node>, Option<Outcome>)> + Send>>;

const RECV_BATCH: usize = 64;

enum Action {
    Accept(DeliveryInfo),
    Wait(PendingReply),
    Done,
}

/// Routes one incoming delivery; returns what to do with its disposition.
async fn on_delivery(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    receiver: &Receiver,
    node: Option<&Arc<Node>>,
    presettled_link: bool,
    (channel, handle): (u16, u32),
    delivery: fe2o3_amqp::Delivery<Body<Value>>,
) -> Result<Action, fe2o3_amqp::link::DispositionError> {
    inc(&ctx.stats.received);
    let presettled = presettled_link || ctx.settled.take(channel, handle, *delivery.delivery_id());
    let format = delivery.message_format().unwrap_or(0u32);
    let (info, msg) = delivery.into_parts();
    let target = match node {
        Some(n) => Ok(n.clone()),
        None => match msg.properties.as_ref().and_then(|p| p.to.clone()) {
            Some(to) => match core.faults.refusal(&to) {
                Some(e) => Err(e),
                None => core.lookup(&to).map_err(|r| match r {
                    Refuse::Detach(e) | Refuse::EndSession(e) => e,
                }),
            },
            None => Err(amqp_error(
                "amqp:invalid-field",
                "message has no `to` address for the anonymous relay",
            )),
        },
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            receiver.reject(info, e).await?;
            return Ok(Action::Done);
        }
    };
    if !presettled {
        if let Some(forced) = core.faults.forced_outcome() {
            match forced {
                ForcedOutcome::Release => {
                    inc(&target.stats.released);
                    receiver.release(info).await?;
                }
                ForcedOutcome::Reject => {
                    inc(&target.stats.rejected);
                    receiver
                        .reject(
                            info,
                            amqp_error("amqp:internal-error", "rejected by fault injection"),
                        )
                        .await?;
                }
            }
            return Ok(Action::Done);
        }
    }
    let (routed, _) = target.route(Stored::new(msg, format, presettled));
    match routed {
        Routed::Accepted => Ok(Action::Accept(info)),
        Routed::NoRoute => {
            if presettled {
                inc(&target.stats.dropped);
            } else {
                inc(&target.stats.released);
            }
            receiver.release(info).await?;
            Ok(Action::Done)
        }
        Routed::Pending(rx) => {
            let n = target.clone();
            Ok(Action::Wait(Box::pin(
                async move { (info, n, rx.await.ok()) },
            )))
        }
    }
}

async fn run_producer(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    mut receiver: Receiver,
    node: Option<Arc<Node>>,
    presettled_link: bool,
    (channel, handle): (u16, u32),
    mut close_rx: mpsc::UnboundedReceiver<definitions::Error>,
) {
    if let Some(n) = &node {
        n.link_attached();
        inc(&n.stats.producers);
    }
    let mut pending: FuturesUnordered<PendingReply> = FuturesUnordered::new();
    let mut close_error = None;
    loop {
        tokio::select! {
            biased;
            err = close_rx.recv() => {
                close_error = err;
                break;
            }
            _ = core.shutdown.cancelled() => break,
            Some((info, n, outcome)) = pending.next(), if !pending.is_empty() => {
                let r = match outcome {
                    Some(Outcome::Accepted(_)) => receiver.accept(info).await,
                    Some(Outcome::Rejected(r)) => receiver.reject(info, r.error).await,
                    Some(Outcome::Modified(m)) => receiver.modify(info, m).await,
                    Some(Outcome::Released(_)) | None => {
                        if outcome.is_none() {
                            inc(&n.stats.released);
                        }
                        receiver.release(info).await
                    }
                    #[allow(unreachable_patterns)]
                    Some(_) => receiver.release(info).await,
                };
                if let Err(e) = r {
                    tracing::debug!(%e, "disposition failed");
                    break;
                }
            }
            r = receiver.recv::<Body<Value>>() => {
                let first = match r {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::debug!(%e, "producer link ended");
                        break;
                    }
                };
                // Take whatever else has already arrived (recv is cancel safe), so that
                // contiguous accepts go out as one disposition range.
                let mut batch = vec![first];
                let mut deferred_end = false;
                while batch.len() < RECV_BATCH {
                    match receiver.recv::<Body<Value>>().now_or_never() {
                        Some(Ok(d)) => batch.push(d),
                        Some(Err(e)) => {
                            tracing::debug!(%e, "producer link ended");
                            deferred_end = true;
                            break;
                        }
                        None => break,
                    }
                }
                let mut accepts = Vec::with_capacity(batch.len());
                let mut failed = false;
                for delivery in batch {
                    match on_delivery(core, ctx, &receiver, node.as_ref(), presettled_link, (channel, handle), delivery).await {
                        Ok(Action::Accept(info)) => accepts.push(info),
                        Ok(Action::Wait(fut)) => pending.push(fut),
                        Ok(Action::Done) => {}
                        Err(e) => {
                            tracing::debug!(%e, "disposition failed");
                            failed = true;
                            break;
                        }
                    }
                }
                if !accepts.is_empty() {
                    if let Err(e) = receiver.accept_all(accepts).await {
                        tracing::debug!(%e, "disposition failed");
                        failed = true;
                    }
                }
                if failed || deferred_end {
                    break;
                }
            }
        }
    }
    let close = match close_error {
        Some(e) => receiver.close_with_error(e).await,
        None => receiver.close().await,
    };
    if let Err(e) = close {
        tracing::debug!(%e, "producer link close");
    }
    if let Some(n) = &node {
        dec(&n.stats.producers);
        if n.link_detached() && n.kind != NodeKind::Queue && n.kind != NodeKind::Topic {
            core.remove_node(n);
        }
    }
}

// ---------------------------------------------------------------------------
// Consumers: the broker sends
// ---------------------------------------------------------------------------

enum Source2 {
    Queue(Arc<Backlog>),
    Backlog(Arc<Backlog>),
}

type PendingOutcome = Pin<Box<dyn Future<Output = (Result<Outcome, SendError>, u64)> + Send>>;

enum SendStep {
    Close(Option<definitions::Error>),
    Stop,
    Stranded,
    Sent(Result<fe2o3_amqp::link::delivery::DeliveryFut<Result<Outcome, SendError>>, SendError>),
}

fn settle_outcome(node: &Node, outcome: Result<Outcome, SendError>, item: Option<Stored>) {
    match outcome {
        Ok(Outcome::Accepted(a)) => {
            inc(&node.stats.acked);
            if let Some(tx) = item.and_then(|s| s.reply) {
                let _ = tx.send(Outcome::Accepted(a));
            }
        }
        Ok(Outcome::Rejected(r)) => {
            inc(&node.stats.rejected);
            if let Some(tx) = item.and_then(|s| s.reply) {
                let _ = tx.send(Outcome::Rejected(r));
            }
        }
        Ok(o) => {
            // released or modified
            inc(&node.stats.released);
            give_back(node, item, Some(o));
        }
        Err(e) => {
            tracing::debug!(%e, "delivery not settled by consumer");
            give_back(node, item, None);
        }
    }
}

fn give_back(node: &Node, item: Option<Stored>, outcome: Option<Outcome>) {
    let Some(mut item) = item else { return };
    if node.kind == NodeKind::Queue {
        node.requeue(item);
    } else if let Some(tx) = item.reply.take() {
        let o = outcome.unwrap_or(Outcome::Modified(Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        }));
        let _ = tx.send(o);
    }
}

async fn run_consumer(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    mut sender: Sender,
    node: Arc<Node>,
    mut close_rx: mpsc::UnboundedReceiver<definitions::Error>,
) {
    node.link_attached();
    let source = if node.kind == NodeKind::Queue {
        Source2::Queue(node.add_queue_consumer())
    } else {
        Source2::Backlog(node.subscribe())
    };
    let mut pending: FuturesUnordered<PendingOutcome> = FuturesUnordered::new();
    let mut inflight: HashMap<u64, Stored> = HashMap::new();
    let mut seq: u64 = 0;
    let mut close_error = None;
    let mut resume_at: Option<tokio::time::Instant> = None;
    'outer: loop {
        // Fast path first: fault/shutdown checks, ready outcomes and a ready message
        // without building a select (this loop runs once per delivery).
        if let Ok(err) = close_rx.try_recv() {
            close_error = Some(err);
            break;
        }
        if core.shutdown.is_cancelled() {
            break;
        }
        while let Some(Some((o, id))) = pending.next().now_or_never() {
            settle_outcome(&node, o, inflight.remove(&id));
        }
        let ready = if resume_at.is_none() {
            match &source {
                Source2::Queue(me) => node.try_next_from_queue(me),
                Source2::Backlog(b) => b.try_pop(),
            }
        } else {
            None
        };
        // 1. the next message
        let item = if let Some(item) = ready {
            item
        } else {
            tokio::select! {
                biased;
                err = close_rx.recv() => { close_error = err; break }
                _ = core.shutdown.cancelled() => break,
                Some((o, id)) = pending.next(), if !pending.is_empty() => {
                    settle_outcome(&node, o, inflight.remove(&id));
                    continue;
                }
                _ = sender.on_detach() => break,
                _ = async { if let Some(t) = resume_at { tokio::time::sleep_until(t).await } }, if resume_at.is_some() => {
                    resume_at = None;
                    continue;
                }
                item = async {
                    match &source {
                        Source2::Queue(me) => node.next_from_queue(me).await,
                        Source2::Backlog(b) => b.next().await,
                    }
                }, if resume_at.is_none() => item,
            }
        };
        let mut item = item;
        if item.is_expired(Instant::now()) {
            inc(&node.stats.expired);
            continue;
        }
        let presettled_out = match node.kind {
            NodeKind::Queue => false,
            NodeKind::Topic => item.presettled || node.presettled_copies,
            NodeKind::Anycast | NodeKind::Multicast => item.presettled,
        };
        let reply = item.reply.take();
        let sendable = Sendable {
            message: item.msg,
            message_format: item.format,
            settled: Some(presettled_out),
        };
        let started = tokio::time::Instant::now();
        let step = {
            let fut = sender.send_batchable_ref(&sendable);
            tokio::pin!(fut);
            let first = futures::poll!(&mut fut);
            if let std::task::Poll::Ready(r) = first {
                SendStep::Sent(r)
            } else {
                loop {
                    let stranded_check = async {
                        if node.kind == NodeKind::Queue {
                            tokio::time::sleep_until(started + STRANDED_AFTER).await;
                            if node.has_waiters() {
                                return;
                            }
                        }
                        std::future::pending::<()>().await
                    };
                    tokio::select! {
                        biased;
                        err = close_rx.recv() => break SendStep::Close(err),
                        _ = core.shutdown.cancelled() => break SendStep::Stop,
                        Some((o, id)) = pending.next(), if !pending.is_empty() => {
                            settle_outcome(&node, o, inflight.remove(&id));
                        }
                        r = &mut fut => break SendStep::Sent(r),
                        _ = stranded_check => break SendStep::Stranded,
                    }
                }
            }
        };
        let item = Stored {
            msg: sendable.message,
            format: sendable.message_format,
            presettled: item.presettled,
            expires: item.expires,
            reply,
        };
        match step {
            SendStep::Sent(Ok(delivery)) => {
                inc(&node.stats.delivered);
                inc(&ctx.stats.sent);
                if presettled_out {
                    inc(&node.stats.acked);
                    if let Some(tx) = item.reply {
                        let _ =
                            tx.send(Outcome::Accepted(fe2o3_amqp::types::messaging::Accepted {}));
                    }
                } else {
                    seq += 1;
                    let id = seq;
                    inflight.insert(id, item);
                    pending.push(Box::pin(async move { (delivery.await, id) }));
                }
            }
            SendStep::Sent(Err(e)) => {
                tracing::debug!(%e, "consumer link send failed");
                give_back(&node, Some(item), None);
                break 'outer;
            }
            SendStep::Stranded => {
                tracing::trace!(node = %node.name, "consumer without credit gives its message back");
                give_back(&node, Some(item), None);
                resume_at = Some(tokio::time::Instant::now() + STRANDED_AFTER);
            }
            SendStep::Close(err) => {
                give_back(&node, Some(item), None);
                close_error = err;
                break 'outer;
            }
            SendStep::Stop => {
                give_back(&node, Some(item), None);
                break 'outer;
            }
        }
    }
    // Detach, then collect the outcomes that will never come (the unsettled map is gone).
    let close = match close_error {
        Some(e) => tokio::time::timeout(CLOSE_TIMEOUT, sender.close_with_error(e)).await,
        None => tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await,
    };
    if let Ok(Err(e)) = close {
        tracing::debug!(%e, "consumer link close");
    }
    let drain = async {
        while let Some((o, id)) = pending.next().await {
            settle_outcome(&node, o, inflight.remove(&id));
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
    drop(pending);
    for (_, item) in inflight.drain() {
        give_back(&node, Some(item), None);
    }
    match &source {
        Source2::Queue(me) => node.remove_queue_consumer(me),
        Source2::Backlog(b) => {
            for item in node.unsubscribe(b) {
                if item.reply.is_some() {
                    inc(&node.stats.released);
                }
                give_back(&node, Some(item), None);
            }
        }
    }
    let unused = node.link_detached();
    if node.temporary || (unused && matches!(node.kind, NodeKind::Anycast | NodeKind::Multicast)) {
        node.drain();
        core.remove_node(&node);
    }
}
