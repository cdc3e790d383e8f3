//! The connection engine: one task owns the fe2o3 connection.
//!
//! API handles ([`crate::Transport`], [`crate::RpcClient`], ...) talk to the
//! task over an mpsc channel of [`Command`]s with oneshot answers. The task:
//!
//! * connects (TCP with `TCP_NODELAY`, optional TLS, SASL, Open) and reads
//!   the peer's `product` to choose the addressing kind (spec §3.1);
//! * attaches the reply link on its own session (spec §4.2) and routes
//!   replies by message-id through the shared [`Calls`] map;
//! * keeps one cached sender link per address, each served by its own task
//!   ([`links::sender_task`]), purged after `default_sender_link_timeout`;
//! * attaches server receiver links for every live subscription and
//!   re-attaches them after a reconnect or a link loss;
//! * reconnects with backoff and round-robin failover (spec §5), emitting
//!   [`Event`]s on a broadcast channel.

pub(crate) mod backoff;
pub(crate) mod links;
pub(crate) mod msg;
pub(crate) mod stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Session};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::address::{resolve_kind, Addresser, AddressingKind, Target};
use crate::error::{Condition, ConnectError, ConnectErrorKind};
use crate::options::{Config, ReplyMode};
use crate::tls::TlsSettings;
use crate::wire::{IncomingMessage, OutgoingMessage};

use backoff::{Backoff, HostRing};
use links::{LinkJob, ReplySpec, Sink};
use stream::{MaybeTls, PeerOpen, Sniffer};

/// Something that happened to the transport's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection is open and the reply link is in place.
    Connected {
        /// `host:port` of the peer.
        host: String,
        /// The peer's Open `product` property, if any.
        product: Option<String>,
        /// The addressing kind chosen for this connection.
        addressing: AddressingKind,
    },
    /// The connection was lost.
    Disconnected {
        /// `host:port` of the peer.
        host: String,
        /// Why (I/O error, peer close, ...).
        reason: String,
    },
    /// A reconnect attempt is scheduled.
    Reconnecting {
        /// `host:port` that will be tried.
        host: String,
        /// Attempt number since the last successful connect (1-based).
        attempt: u32,
        /// Delay before the attempt.
        delay: Duration,
    },
}

/// What a waiting call receives on its reply channel.
#[derive(Debug)]
pub(crate) enum ReplyEvent {
    /// A call-monitor heartbeat (no body).
    Heartbeat,
    /// The reply.
    Reply(Box<IncomingMessage>),
    /// The connection was lost; the reply can no longer arrive.
    Disconnected(String),
}

/// Waiting calls by message-id.
pub(crate) type Calls = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<ReplyEvent>>>>;

/// A written message: await it for the broker's outcome.
pub(crate) struct SendOk(pub DeliveryFut<Result<Outcome, SendError>>);

/// Why a message could not be written.
#[derive(Clone, Debug)]
pub(crate) enum SendFail {
    /// The broker refused the sender link (or the reply link, for calls).
    Refused {
        address: String,
        condition: Option<Condition>,
        reason: String,
    },
    /// The link or connection went away before the message was written; safe to retry.
    NotWritten(String),
    /// The transport is closed.
    Closed,
}

/// Where a message goes.
#[derive(Clone, Debug)]
pub(crate) enum Dest {
    /// An RPC target (fanout => multicast, server => unicast, else anycast).
    Rpc(Target),
    /// A notification topic and lower-case priority.
    Notify { topic: String, priority: String },
    /// A literal address (reply-to).
    Address(String),
}

/// A message to send.
pub(crate) struct SendCmd {
    pub dest: Dest,
    pub msg: OutgoingMessage,
    pub settled: bool,
    /// For calls: register this message-id for replies and set reply-to.
    pub call: Option<(String, mpsc::UnboundedSender<ReplyEvent>)>,
    pub done: oneshot::Sender<Result<SendOk, SendFail>>,
}

/// One address a subscription listens on.
#[derive(Clone, Debug)]
pub(crate) enum ListenAddr {
    /// The three RPC server addresses of a target.
    Rpc(Target),
    /// One notification address.
    Notify { topic: String, priority: String },
}

/// A live subscription (RPC server or listener), replayed after reconnects.
pub(crate) struct SubSpec {
    pub addrs: Vec<ListenAddr>,
    pub credit: u32,
    pub sink: Sink,
}

/// Answer to a subscription: its id, or the refusal (condition, reason).
pub(crate) type SubDone = oneshot::Sender<Result<u64, (Option<Condition>, String)>>;

/// Commands from API handles to the connection task.
// `Send` is by far the most frequent command; boxing it would cost an
// allocation per message for no gain.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Send(SendCmd),
    Subscribe { spec: SubSpec, done: SubDone },
    Unsubscribe(u64),
    Close(oneshot::Sender<()>),
}

/// Events from link tasks back to the connection task.
#[derive(Debug)]
pub(crate) enum Internal {
    SenderGone {
        address: String,
        gen: u64,
    },
    SenderIdle {
        address: String,
        gen: u64,
    },
    ReceiverDown {
        sub: u64,
        conn_gen: u64,
    },
    Reattach {
        sub: u64,
        conn_gen: u64,
    },
    ReplyDown {
        conn_gen: u64,
        condition: Option<Condition>,
    },
    ReplyReattach {
        conn_gen: u64,
    },
}

/// State shared between the API handles and the engine.
pub(crate) struct Shared {
    pub cmd: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Event>,
    pub calls: Calls,
    pub config: Arc<Config>,
    pub closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// State of the reply link on the current connection.
#[derive(Clone, Debug)]
enum ReplyState {
    Ready(String),
    Refused(Option<Condition>, String),
    Down,
}

struct SenderEntry {
    tx: mpsc::Sender<LinkJob>,
    gen: u64,
}

/// One open connection and everything attached to it.
struct Conn {
    handle: ConnectionHandle<()>,
    host: String,
    addresser: Addresser,
    gen: u64,
    reply: ReplyState,
    reply_stop: CancellationToken,
    senders: HashMap<String, SenderEntry>,
    sub_stops: HashMap<u64, CancellationToken>,
    /// Every link task of this connection (senders, receivers, reply link);
    /// [`Engine::shutdown`] waits for them so that queued transfers, detaches
    /// and session ends go out before the connection's Close.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Conn {
    /// Keeps a link task's handle (and forgets the finished ones).
    fn track(&mut self, task: tokio::task::JoinHandle<()>) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(task);
    }
}

/// How long [`Engine::shutdown`] waits for the link tasks to write what they
/// accepted, detach and end their sessions before it closes the connection.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the engine needs from [`Shared`], without the command sender (so
/// that dropping every handle closes the command channel and stops the task).
struct EngineShared {
    events: broadcast::Sender<Event>,
    calls: Calls,
    closed: Arc<AtomicBool>,
}

pub(crate) struct Engine {
    shared: EngineShared,
    config: Arc<Config>,
    rx: mpsc::Receiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    conn: Option<Conn>,
    subs: BTreeMap<u64, SubSpec>,
    next_sub: u64,
    next_sender_gen: u64,
    conn_gen: u64,
    waiting: VecDeque<Command>,
    ring: HostRing,
    attempt: u32,
    backoff: Backoff,
    last_host: String,
}

fn host_label(h: &crate::url::HostSpec) -> String {
    if h.host.contains(':') && !h.host.starts_with('[') {
        format!("[{}]:{}", h.host, h.port)
    } else {
        format!("{}:{}", h.host, h.port)
    }
}

fn connect_timeout(cfg: &Config) -> Duration {
    Duration::from_secs(cfg.amqp.connect_timeout.max(1))
}

fn container_id(cfg: &Config) -> String {
    if let Some(c) = cfg.amqp.container_name.as_deref().filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    format!(
        "openstack.org/om/container/{}/{}/{}/{}",
        node_name(),
        process_name(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn process_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "amqp1-rig".into())
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn tls_settings(cfg: &Config) -> TlsSettings {
    let o = &cfg.amqp;
    let nz = |s: &str| (!s.is_empty()).then(|| s.to_string());
    TlsSettings {
        enabled: o.ssl
            || !o.ssl_ca_file.is_empty()
            || !o.ssl_cert_file.is_empty()
            || cfg.transport_url.scheme.ends_with('s') && cfg.transport_url.scheme != "amqp",
        ca_file: nz(&o.ssl_ca_file),
        cert_file: nz(&o.ssl_cert_file),
        key_file: nz(&o.ssl_key_file),
        key_password_set: o
            .ssl_key_password
            .as_ref()
            .is_some_and(|p| !p.expose().is_empty()),
        verify_vhost: o.ssl_verify_vhost,
    }
}

/// The SASL profile for a host (spec §5): PLAIN with a user, ANONYMOUS when
/// `sasl_mechanisms` asks for it, none otherwise.
fn sasl_profile(cfg: &Config, host: &crate::url::HostSpec) -> Option<SaslProfile> {
    let mechs: Vec<String> = cfg
        .amqp
        .sasl_mechanisms
        .split_whitespace()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if let Some(user) = host.username.as_deref() {
        if mechs.is_empty() || mechs.iter().any(|m| m == "PLAIN") {
            let mut username = user.to_string();
            let realm = cfg.amqp.sasl_default_realm.as_str();
            if !realm.is_empty() && !username.contains('@') {
                username = format!("{username}@{realm}");
            }
            let password = host
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default();
            return Some(SaslProfile::Plain { username, password });
        }
    }
    if mechs.iter().any(|m| m == "ANONYMOUS") {
        return Some(SaslProfile::Anonymous);
    }
    None
}

/// Result of opening a connection (before links).
struct Opened {
    handle: ConnectionHandle<()>,
    product: Option<String>,
}

async fn open_connection(
    cfg: &Config,
    host: &crate::url::HostSpec,
) -> Result<Opened, ConnectError> {
    let label = host_label(host);
    let timeout = connect_timeout(cfg);
    let host_for_dial = host.host.trim_start_matches('[').trim_end_matches(']');
    let tcp = match tokio::time::timeout(
        timeout,
        tokio::net::TcpStream::connect((host_for_dial, host.port)),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ConnectError::with_source(ConnectErrorKind::Io, e).set_detail(label));
        }
        Err(_) => return Err(ConnectError::new(ConnectErrorKind::TimedOut).set_detail(label)),
    };
    // fe2o3 never sets TCP_NODELAY; without it a request/reply takes ~88 ms.
    let _ = tcp.set_nodelay(true);
    let tls = tls_settings(cfg);
    let io = if tls.enabled {
        let connector = tls.connector().map_err(|e| {
            ConnectError::with_source(ConnectErrorKind::Tls, e).set_detail(label.clone())
        })?;
        let name = tls
            .server_name(host_for_dial, cfg.transport_url.virtual_host.as_deref())
            .map_err(|e| {
                ConnectError::with_source(ConnectErrorKind::Tls, e).set_detail(label.clone())
            })?;
        match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            Ok(Ok(s)) => MaybeTls::Tls(Box::new(s)),
            Ok(Err(e)) => {
                return Err(ConnectError::with_source(ConnectErrorKind::Tls, e).set_detail(label))
            }
            Err(_) => return Err(ConnectError::new(ConnectErrorKind::TimedOut).set_detail(label)),
        }
    } else {
        MaybeTls::Plain(tcp)
    };
    let peer = Arc::new(OnceLock::<PeerOpen>::new());
    let io = Sniffer::new(io, peer.clone());

    let mut props = Fields::new();
    props.insert(Symbol::from("process"), Value::String(process_name()));
    props.insert(Symbol::from("pid"), Value::Int(std::process::id() as i32));
    props.insert(Symbol::from("node"), Value::String(node_name()));
    let container = container_id(cfg);
    let vhost = cfg
        .transport_url
        .virtual_host
        .as_deref()
        .filter(|v| !v.is_empty());
    let mut builder = Connection::builder()
        .container_id(container)
        .scheme("amqp")
        .channel_max(0x7fffu16)
        .properties(props)
        .sasl_hostname(Some(host_for_dial));
    if !cfg.amqp.pseudo_vhost {
        builder = builder.hostname(vhost);
    }
    if cfg.amqp.idle_timeout > 0 {
        builder = builder.idle_time_out((cfg.amqp.idle_timeout * 1000) as u32);
    }
    if let Some(p) = sasl_profile(cfg, host) {
        builder = builder.sasl_profile(p);
    }
    let handle = match tokio::time::timeout(timeout, builder.open_with_stream(io)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(map_open_error(e).set_detail(label)),
        Err(_) => return Err(ConnectError::new(ConnectErrorKind::TimedOut).set_detail(label)),
    };
    let product = peer.get().and_then(|p| p.product.clone());
    Ok(Opened { handle, product })
}

fn map_open_error(e: fe2o3_amqp::connection::OpenError) -> ConnectError {
    use fe2o3_amqp::connection::OpenError as E;
    match e {
        E::SaslError { code, .. } => {
            let cond = Condition {
                condition: "amqp:unauthorized-access".into(),
                description: Some(format!("SASL outcome {code:?}")),
            };
            ConnectError::new(ConnectErrorKind::Auth).set_condition(Some(cond))
        }
        E::Io(e) => ConnectError::with_source(ConnectErrorKind::Io, e),
        E::RemoteClosedWithError(err) => {
            let cond = Condition::from(&err);
            let kind = if cond.condition == "amqp:unauthorized-access" {
                ConnectErrorKind::Auth
            } else {
                ConnectErrorKind::Refused
            };
            ConnectError::new(kind).set_condition(Some(cond))
        }
        E::RemoteClosed => ConnectError::new(ConnectErrorKind::Refused),
        other => ConnectError::with_source(ConnectErrorKind::Io, other),
    }
}

impl Engine {
    /// Connects eagerly (each host once, from a random one) and spawns the task.
    pub(crate) async fn start(config: Config) -> Result<Arc<Shared>, ConnectError> {
        if config.transport_url.hosts.is_empty() {
            return Err(ConnectError::new(ConnectErrorKind::InvalidUrl)
                .set_detail("transport url has no host"));
        }
        let config = Arc::new(config);
        let (cmd_tx, cmd_rx) = mpsc::channel(4096);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            cmd: cmd_tx,
            events,
            calls: Arc::new(Mutex::new(HashMap::new())),
            config: config.clone(),
            closed: Arc::new(AtomicBool::new(false)),
        });
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let n = config.transport_url.hosts.len();
        let start = rand::random::<usize>() % n;
        let o = &config.amqp;
        let mut engine = Engine {
            shared: EngineShared {
                events: shared.events.clone(),
                calls: shared.calls.clone(),
                closed: shared.closed.clone(),
            },
            config: config.clone(),
            rx: cmd_rx,
            internal_tx,
            internal_rx,
            conn: None,
            subs: BTreeMap::new(),
            next_sub: 1,
            next_sender_gen: 1,
            conn_gen: 0,
            waiting: VecDeque::new(),
            ring: HostRing::new(n, start),
            attempt: 0,
            backoff: Backoff {
                interval: o.connection_retry_interval.max(1),
                backoff: o.connection_retry_backoff,
                max: o.connection_retry_interval_max.max(1),
            },
            last_host: String::new(),
        };
        let mut last_err = None;
        for _ in 0..n {
            let idx = engine.ring.advance();
            match engine.connect_to(idx).await {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => {
                    let fatal = matches!(e.kind(), ConnectErrorKind::Auth | ConnectErrorKind::Tls);
                    last_err = Some(e);
                    if fatal && n == 1 {
                        break;
                    }
                }
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        tokio::spawn(engine.run());
        Ok(shared)
    }

    /// Opens a connection to host `idx`, attaches the reply link and replays subscriptions.
    async fn connect_to(&mut self, idx: usize) -> Result<(), ConnectError> {
        let hosts = &self.config.transport_url.hosts;
        let host = hosts[idx % hosts.len()].clone();
        let label = host_label(&host);
        self.last_host = label.clone();
        let opened = open_connection(&self.config, &host).await?;
        let kind = resolve_kind(self.config.amqp.addressing_mode, opened.product.as_deref());
        let addresser = Addresser::new(
            kind,
            &self.config.amqp,
            &self.config.control_exchange,
            self.config.transport_url.virtual_host.as_deref(),
        );
        self.conn_gen += 1;
        let mut conn = Conn {
            handle: opened.handle,
            host: label.clone(),
            addresser,
            gen: self.conn_gen,
            reply: ReplyState::Down,
            reply_stop: CancellationToken::new(),
            senders: HashMap::new(),
            sub_stops: HashMap::new(),
            tasks: Vec::new(),
        };
        self.attach_reply(&mut conn).await;
        self.conn = Some(conn);
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for id in ids {
            self.attach_sub(id, None).await;
        }
        tracing::info!(host = %label, product = ?opened.product, addressing = %kind, "connected");
        let _ = self.shared.events.send(Event::Connected {
            host: label,
            product: opened.product,
            addressing: kind,
        });
        Ok(())
    }

    fn reply_spec(&self, kind: AddressingKind) -> ReplySpec {
        match self.config.amqp.reply_mode {
            ReplyMode::Dynamic => ReplySpec::Dynamic {
                capability: None,
                settled: false,
                expiry_link_detach: false,
            },
            ReplyMode::RabbitmqDirectReply => ReplySpec::Dynamic {
                capability: Some("rabbitmq:volatile-queue"),
                settled: true,
                expiry_link_detach: true,
            },
            ReplyMode::TemporaryQueue => ReplySpec::Dynamic {
                capability: Some("temporary-queue"),
                settled: false,
                expiry_link_detach: false,
            },
            ReplyMode::Named => {
                let name = format!("reply.{}", uuid::Uuid::new_v4().simple());
                ReplySpec::Named(crate::address::named_reply_address(kind, &name))
            }
        }
    }

    /// Attaches the reply link of `conn` (own session) and spawns its task.
    async fn attach_reply(&mut self, conn: &mut Conn) {
        let spec = self.reply_spec(conn.addresser.kind());
        let timeout = connect_timeout(&self.config);
        let mut session =
            match tokio::time::timeout(timeout, Session::begin(&mut conn.handle)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    conn.reply = ReplyState::Refused(None, format!("reply session: {e}"));
                    return;
                }
                Err(_) => {
                    conn.reply = ReplyState::Refused(None, "reply session begin timed out".into());
                    return;
                }
            };
        let credit = self.config.amqp.reply_link_credit;
        let res =
            tokio::time::timeout(timeout, links::attach_reply(&mut session, &spec, credit)).await;
        match res {
            Ok(Ok((receiver, address))) => {
                tracing::debug!(%address, "reply link attached");
                conn.reply = ReplyState::Ready(address);
                let stop = CancellationToken::new();
                conn.reply_stop = stop.clone();
                let internal = self.internal_tx.clone();
                let gen = conn.gen;
                let task = tokio::spawn(links::reply_task(
                    session,
                    receiver,
                    credit,
                    self.shared.calls.clone(),
                    stop,
                    move |condition| {
                        let _ = internal.send(Internal::ReplyDown {
                            conn_gen: gen,
                            condition,
                        });
                    },
                ));
                conn.track(task);
            }
            Ok(Err(e)) => {
                let cond = links::receiver_attach_condition(&e);
                tracing::warn!(error = %e, condition = ?cond, "reply link refused");
                conn.reply = ReplyState::Refused(cond, e.to_string());
            }
            Err(_) => {
                conn.reply = ReplyState::Refused(None, "reply link attach timed out".into());
            }
        }
    }

    /// Attaches the links of subscription `id` on the current connection.
    async fn attach_sub(&mut self, id: u64, done: Option<SubDone>) {
        let Some(conn) = self.conn.as_mut() else {
            if let Some(d) = done {
                // Will be attached on reconnect.
                let _ = d.send(Ok(id));
            }
            return;
        };
        let Some(spec) = self.subs.get(&id) else {
            return;
        };
        if let Some(old) = conn.sub_stops.remove(&id) {
            old.cancel();
        }
        let stop = CancellationToken::new();
        conn.sub_stops.insert(id, stop.clone());
        let mut addresses = Vec::new();
        for a in &spec.addrs {
            match a {
                ListenAddr::Rpc(t) => addresses.extend(conn.addresser.rpc_listener_addresses(t)),
                ListenAddr::Notify { topic, priority } => {
                    addresses.push(conn.addresser.notify(topic, priority))
                }
            }
        }
        let timeout = connect_timeout(&self.config);
        let mut readies = Vec::new();
        let mut failed: Option<(Option<Condition>, String)> = None;
        for address in addresses {
            let session =
                match tokio::time::timeout(timeout, Session::begin(&mut conn.handle)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        failed = Some((None, format!("session for {address}: {e}")));
                        break;
                    }
                    Err(_) => {
                        failed = Some((None, format!("session for {address} timed out")));
                        break;
                    }
                };
            let (rtx, rrx) = oneshot::channel();
            readies.push(rrx);
            let internal = self.internal_tx.clone();
            let gen = conn.gen;
            let task = tokio::spawn(links::receiver_task(
                session,
                address,
                spec.credit,
                spec.sink.clone(),
                stop.clone(),
                rtx,
                move || {
                    let _ = internal.send(Internal::ReceiverDown {
                        sub: id,
                        conn_gen: gen,
                    });
                },
                timeout,
            ));
            conn.track(task);
        }
        if let Some(d) = done {
            if let Some(f) = failed {
                stop.cancel();
                let _ = d.send(Err(f));
                return;
            }
            let stop2 = stop.clone();
            tokio::spawn(async move {
                for r in readies {
                    match r.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            stop2.cancel();
                            let _ = d.send(Err(e));
                            return;
                        }
                        Err(_) => {
                            let _ = d.send(Err((None, "listener stopped while attaching".into())));
                            return;
                        }
                    }
                }
                let _ = d.send(Ok(id));
            });
        }
    }

    async fn run(mut self) {
        loop {
            if self.conn.is_some() {
                let Some(conn) = self.conn.as_mut() else {
                    continue;
                };
                let handle = &mut conn.handle;
                tokio::select! {
                    biased;
                    res = handle.on_close() => {
                        let reason = match res {
                            Ok(()) => "connection closed by peer".to_string(),
                            Err(e) => e.to_string(),
                        };
                        self.lost(reason);
                    }
                    Some(ev) = self.internal_rx.recv() => self.internal(ev).await,
                    cmd = self.rx.recv() => match cmd {
                        None => { self.shutdown().await; return; }
                        Some(Command::Close(tx)) => { self.shutdown().await; let _ = tx.send(()); return; }
                        Some(c) => self.command(c).await,
                    },
                }
            } else {
                self.attempt += 1;
                let delay = self.backoff.delay(self.attempt);
                let idx = self.ring.advance();
                let hosts = &self.config.transport_url.hosts;
                let label = host_label(&hosts[idx % hosts.len()]);
                let _ = self.shared.events.send(Event::Reconnecting {
                    host: label.clone(),
                    attempt: self.attempt,
                    delay,
                });
                let sleep = tokio::time::sleep(delay);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = &mut sleep => break,
                        cmd = self.rx.recv() => match cmd {
                            None => { self.shutdown().await; return; }
                            Some(Command::Close(tx)) => { self.shutdown().await; let _ = tx.send(()); return; }
                            Some(c) => self.park(c),
                        },
                        Some(_) = self.internal_rx.recv() => {}
                    }
                }
                match self.connect_to(idx).await {
                    Ok(()) => {
                        self.attempt = 0;
                        let waiting: Vec<Command> = self.waiting.drain(..).collect();
                        for c in waiting {
                            self.command(c).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(host = %label, error = %e, "reconnect failed");
                        let _ = self.shared.events.send(Event::Disconnected {
                            host: label,
                            reason: e.to_string(),
                        });
                    }
                }
            }
        }
    }

    /// Keeps a command for the next connection (drops it if its caller gave up).
    fn park(&mut self, c: Command) {
        if let Command::Send(s) = &c {
            if s.done.is_closed() {
                return;
            }
        }
        self.waiting.push_back(c);
    }

    fn lost(&mut self, reason: String) {
        let Some(conn) = self.conn.take() else { return };
        tracing::warn!(host = %conn.host, %reason, "connection lost");
        conn.reply_stop.cancel();
        for s in conn.sub_stops.values() {
            s.cancel();
        }
        // Calls waiting for a reply can no longer get one (new reply link).
        let waiters: Vec<_> = {
            let mut map = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(_, v)| v).collect()
        };
        for w in waiters {
            let _ = w.send(ReplyEvent::Disconnected(reason.clone()));
        }
        let _ = self.shared.events.send(Event::Disconnected {
            host: conn.host.clone(),
            reason,
        });
        // Dropping the handle drops the senders' job channels and the connection.
        drop(conn);
    }

    async fn shutdown(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        for c in self.waiting.drain(..) {
            if let Command::Send(s) = c {
                let _ = s.done.send(Err(SendFail::Closed));
            }
        }
        if let Some(mut conn) = self.conn.take() {
            // Dropping the job channels lets every sender task write the jobs
            // it already accepted, then detach and end its session; a session
            // End goes out only after the link frames queued before it (fe2o3
            // drains them), so nothing accepted is cut off by the Close.
            conn.senders.clear();
            conn.reply_stop.cancel();
            for s in conn.sub_stops.values() {
                s.cancel();
            }
            let tasks = std::mem::take(&mut conn.tasks);
            if tokio::time::timeout(DRAIN_TIMEOUT, futures::future::join_all(tasks))
                .await
                .is_err()
            {
                tracing::warn!(
                    timeout = ?DRAIN_TIMEOUT,
                    "links did not finish detaching in time; closing the connection anyway"
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.handle.close()).await;
        }
        let waiters: Vec<_> = {
            let mut map = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
            map.drain().map(|(_, v)| v).collect()
        };
        for w in waiters {
            let _ = w.send(ReplyEvent::Disconnected("transport closed".into()));
        }
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Command::Send(s) = c {
                let _ = s.done.send(Err(SendFail::Closed));
            }
        }
    }

    async fn internal(&mut self, ev: Internal) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        match ev {
            Internal::SenderGone { address, gen } | Internal::SenderIdle { address, gen } => {
                if conn.senders.get(&address).map(|e| e.gen) == Some(gen) {
                    conn.senders.remove(&address);
                }
            }
            Internal::ReceiverDown { sub, conn_gen } => {
                if conn_gen == conn.gen && self.subs.contains_key(&sub) {
                    let delay = Duration::from_secs(self.config.amqp.link_retry_delay.max(1));
                    let tx = self.internal_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await;
                        let _ = tx.send(Internal::Reattach { sub, conn_gen });
                    });
                }
            }
            Internal::Reattach { sub, conn_gen } => {
                if conn_gen == conn.gen && self.subs.contains_key(&sub) {
                    self.attach_sub(sub, None).await;
                }
            }
            Internal::ReplyDown {
                conn_gen,
                condition,
            } => {
                if conn_gen != conn.gen {
                    return;
                }
                conn.reply = ReplyState::Down;
                let reason = condition
                    .as_ref()
                    .map(|c| format!("reply link lost: {c}"))
                    .unwrap_or_else(|| "reply link lost".into());
                let waiters: Vec<_> = {
                    let mut map = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
                    map.drain().map(|(_, v)| v).collect()
                };
                for w in waiters {
                    let _ = w.send(ReplyEvent::Disconnected(reason.clone()));
                }
                let delay = Duration::from_secs(self.config.amqp.link_retry_delay.max(1));
                let tx = self.internal_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Internal::ReplyReattach { conn_gen });
                });
            }
            Internal::ReplyReattach { conn_gen } => {
                if conn_gen == conn.gen && matches!(conn.reply, ReplyState::Down) {
                    let Some(mut c) = self.conn.take() else {
                        return;
                    };
                    self.attach_reply(&mut c).await;
                    self.conn = Some(c);
                }
            }
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Send(s) => self.send(s).await,
            Command::Subscribe { spec, done } => {
                let id = self.next_sub;
                self.next_sub += 1;
                self.subs.insert(id, spec);
                self.attach_sub(id, Some(done)).await;
            }
            Command::Unsubscribe(id) => {
                self.subs.remove(&id);
                if let Some(conn) = self.conn.as_mut() {
                    if let Some(stop) = conn.sub_stops.remove(&id) {
                        stop.cancel();
                    }
                }
            }
            Command::Close(tx) => {
                self.shutdown().await;
                let _ = tx.send(());
            }
        }
    }

    async fn send(&mut self, mut s: SendCmd) {
        if s.done.is_closed() {
            return; // the caller gave up already
        }
        let Some(conn) = self.conn.as_mut() else {
            self.waiting.push_back(Command::Send(s));
            return;
        };
        let address = match &s.dest {
            Dest::Rpc(t) => conn.addresser.resolve(t),
            Dest::Notify { topic, priority } => conn.addresser.notify(topic, priority),
            Dest::Address(a) => a.clone(),
        };
        if let Some((id, tx)) = s.call.take() {
            match &conn.reply {
                ReplyState::Ready(reply_to) => {
                    msg::set_reply_to(&mut s.msg, reply_to);
                    let mut map = self.shared.calls.lock().unwrap_or_else(|p| p.into_inner());
                    map.insert(id, tx);
                }
                ReplyState::Refused(cond, reason) => {
                    let _ = s.done.send(Err(SendFail::Refused {
                        address: "rpc-response (reply link)".into(),
                        condition: cond.clone(),
                        reason: reason.clone(),
                    }));
                    return;
                }
                ReplyState::Down => {
                    let _ = s
                        .done
                        .send(Err(SendFail::NotWritten("reply link is down".into())));
                    return;
                }
            }
        }
        msg::set_to(&mut s.msg, &address);
        let job = LinkJob {
            sendable: msg::sendable(s.msg, s.settled),
            done: s.done,
        };
        let job = match conn.senders.get(&address) {
            Some(entry) => match entry.tx.try_send(job) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(job)) => {
                    let tx = entry.tx.clone();
                    // Back-pressure: wait for room without blocking other links for long.
                    if let Err(e) = tx.send(job).await {
                        let _ =
                            e.0.done
                                .send(Err(SendFail::NotWritten("sender link lost".into())));
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(job)) => {
                    conn.senders.remove(&address);
                    job
                }
            },
            None => job,
        };
        // Attach a new sender link on its own session.
        let timeout = connect_timeout(&self.config);
        let session = match tokio::time::timeout(timeout, Session::begin(&mut conn.handle)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = job
                    .done
                    .send(Err(SendFail::NotWritten(format!("session: {e}"))));
                return;
            }
            Err(_) => {
                let _ = job
                    .done
                    .send(Err(SendFail::NotWritten("session begin timed out".into())));
                return;
            }
        };
        let (tx, rx) = mpsc::channel(1024);
        let gen = self.next_sender_gen;
        self.next_sender_gen += 1;
        let _ = tx.try_send(job);
        conn.senders
            .insert(address.clone(), SenderEntry { tx, gen });
        let idle = Duration::from_secs(self.config.amqp.default_sender_link_timeout.max(1));
        let task = tokio::spawn(links::sender_task(
            session,
            address,
            gen,
            rx,
            self.internal_tx.clone(),
            self.shared.closed.clone(),
            idle,
            timeout,
        ));
        conn.track(task);
    }
}
