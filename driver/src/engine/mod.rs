//! The connection engine: one task owns the fe2o3 connection.
//!
//! API handles ([`crate::Transport`], [`crate::RpcClient`], ...) talk to the
//! task over an mpsc channel of [`Command`]s with oneshot answers. The task:
//!
//! * connects through the [`connector`] (TCP with `TCP_NODELAY`, optional
//!   TLS, SASL, Open) and reads the peer's Open to choose the addressing kind
//!   (spec §3.1);
//! * attaches the reply link on its own session (spec §4.2, [`reply`]) when
//!   the first call needs it (so notifiers, listeners and cast-only clients
//!   never attach one), in the reply mode `reply_mode` names or, for `auto`,
//!   the one the peer's product and version allow; routes replies by
//!   message-id through the shared [`CallRegistry`];
//! * on RabbitMQ 4.x (v2 addresses) declares the queues, exchanges and
//!   bindings an address needs through the broker's management node before
//!   it attaches a link to it ([`management`]);
//! * keeps one cached sender link per address, each served by its own task
//!   ([`links::sender_task`]), purged after `default_sender_link_timeout`
//!   ([`send`]);
//! * attaches server receiver links for every live subscription and
//!   re-attaches them after a reconnect or a link loss ([`attach`]);
//! * reconnects with backoff and round-robin failover (spec §5), emitting
//!   [`Event`]s on a broadcast channel.

mod attach;
pub(crate) mod backoff;
pub(crate) mod calls;
pub(crate) mod command;
pub(crate) mod connector;
pub(crate) mod links;
pub(crate) mod management;
pub(crate) mod msg;
mod reply;
mod send;
pub(crate) mod stream;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::address::{resolve_kind, resolve_reply_mode, Addresser, AddressingKind};
use crate::error::{Condition, ConnectError, ConnectErrorKind, ManagementError};
use crate::options::{Config, ReplyMode};

use backoff::{Backoff, HostRing};
pub(crate) use calls::CallRegistry;
pub(crate) use command::{
    Command, Dest, Internal, ListenAddr, ReplyEvent, SendCmd, SendFail, SendOk, SubFail, SubSpec,
};
use connector::host_label;
use links::LinkJob;

/// Something that happened to the transport's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The connection is open and the subscriptions are re-attached (the reply
    /// link is attached when the first call needs it).
    Connected {
        /// `host:port` of the peer.
        host: String,
        /// The peer's Open `product` property, if any.
        product: Option<String>,
        /// The addressing kind chosen for this connection.
        addressing: AddressingKind,
        /// The reply mode of this connection (`auto` resolved from the peer).
        reply_mode: ReplyMode,
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

/// What a connection chose from the peer's Open properties
/// ([`crate::Transport::connection_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// `host:port` of the peer.
    pub host: String,
    /// The peer's Open `product` property, if any.
    pub product: Option<String>,
    /// The peer's Open `version` property, if any.
    pub version: Option<String>,
    /// The addressing kind in use.
    pub addressing: AddressingKind,
    /// The reply mode in use (never `auto`: that is resolved per connection).
    pub reply_mode: ReplyMode,
}

/// State shared between the API handles and the engine.
pub(crate) struct Shared {
    pub cmd: mpsc::Sender<Command>,
    pub events: broadcast::Sender<Event>,
    pub calls: Arc<CallRegistry>,
    pub config: Arc<Config>,
    pub closed: Arc<AtomicBool>,
    pub info: Arc<Mutex<Option<ConnectionInfo>>>,
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
    /// No call needed it yet.
    NotAttached,
    Ready(String),
    Refused(Option<Condition>, String),
    /// The named reply queue could not be declared (RabbitMQ 4.x).
    Management(ManagementError),
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
    /// The reply mode of this connection (`auto` resolved).
    reply_mode: ReplyMode,
    reply: ReplyState,
    reply_stop: CancellationToken,
    /// The host of this connection (management connections go there too).
    host_spec: crate::url::HostSpec,
    /// Declarations already answered on this connection (RabbitMQ 4.x).
    declared: HashSet<management::Decl>,
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

    /// Stops the reply link and every receiver link of this connection.
    fn stop_receivers(&self) {
        self.reply_stop.cancel();
        for s in self.sub_stops.values() {
            s.cancel();
        }
    }
}

/// How long [`Engine::shutdown`] waits for the link tasks to write what they
/// accepted, detach and end their sessions before it closes the connection.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the engine needs from [`Shared`], without the command sender (so
/// that dropping every handle closes the command channel and stops the task).
struct EngineShared {
    events: broadcast::Sender<Event>,
    calls: Arc<CallRegistry>,
    closed: Arc<AtomicBool>,
    info: Arc<Mutex<Option<ConnectionInfo>>>,
}

pub(crate) struct Engine {
    shared: EngineShared,
    config: Arc<Config>,
    rx: mpsc::Receiver<Command>,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    conn: Option<Conn>,
    subs: BTreeMap<u64, SubSpec>,
    /// Per subscription and fanout exchange, the queue it consumes from (RabbitMQ 4.x): kept
    /// across reconnects so that a reconnected server finds its queue again.
    fanout_queues: HashMap<(u64, String), String>,
    next_sub: u64,
    next_sender_gen: u64,
    conn_gen: u64,
    waiting: VecDeque<Command>,
    ring: HostRing,
    attempt: u32,
    backoff: Backoff,
}

/// What the run loop does next.
enum Step {
    Continue,
    Stop,
}

impl Engine {
    fn new(config: Arc<Config>, rx: mpsc::Receiver<Command>, shared: &Shared) -> Engine {
        let (internal_tx, internal_rx) = mpsc::unbounded_channel();
        let n = config.transport_url.hosts.len();
        let start = rand::random::<usize>() % n.max(1);
        let o = &config.amqp;
        let backoff = Backoff {
            interval: o
                .connection_retry_interval
                .clamp(1, crate::MAX_TIMEOUT_SECS),
            backoff: o.connection_retry_backoff,
            max: o
                .connection_retry_interval_max
                .clamp(1, crate::MAX_TIMEOUT_SECS),
        };
        Engine {
            shared: EngineShared {
                events: shared.events.clone(),
                calls: shared.calls.clone(),
                closed: shared.closed.clone(),
                info: shared.info.clone(),
            },
            config,
            rx,
            internal_tx,
            internal_rx,
            conn: None,
            subs: BTreeMap::new(),
            fanout_queues: HashMap::new(),
            next_sub: 1,
            next_sender_gen: 1,
            conn_gen: 0,
            waiting: VecDeque::new(),
            ring: HostRing::new(n, start),
            attempt: 0,
            backoff,
        }
    }

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
            calls: Arc::new(CallRegistry::default()),
            config: config.clone(),
            closed: Arc::new(AtomicBool::new(false)),
            info: Arc::new(Mutex::new(None)),
        });
        let mut engine = Engine::new(config.clone(), cmd_rx, &shared);
        let n = config.transport_url.hosts.len();
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

    /// Opens a connection to host `idx`, chooses its addressing kind and reply
    /// mode from the peer's Open, and replays subscriptions (the reply link
    /// waits for the first call).
    async fn connect_to(&mut self, idx: usize) -> Result<(), ConnectError> {
        let hosts = &self.config.transport_url.hosts;
        let host = hosts[idx % hosts.len()].clone();
        let label = host_label(&host);
        let opened = connector::open(&self.config, &host).await?;
        let product = opened.peer.product.clone();
        let version = opened.peer.version.clone();
        let kind = resolve_kind(
            self.config.amqp.addressing_mode,
            product.as_deref(),
            version.as_deref(),
        );
        let reply_mode = resolve_reply_mode(
            self.config.amqp.reply_mode,
            product.as_deref(),
            version.as_deref(),
        );
        let addresser = Addresser::new(
            kind,
            &self.config.amqp,
            &self.config.control_exchange,
            self.config.transport_url.virtual_host.as_deref(),
        );
        self.conn_gen += 1;
        let conn = Conn {
            handle: opened.handle,
            host: label.clone(),
            addresser,
            gen: self.conn_gen,
            reply_mode,
            reply: ReplyState::NotAttached,
            reply_stop: CancellationToken::new(),
            host_spec: host.clone(),
            declared: HashSet::new(),
            senders: HashMap::new(),
            sub_stops: HashMap::new(),
            tasks: Vec::new(),
        };
        self.conn = Some(conn);
        let ids: Vec<u64> = self.subs.keys().copied().collect();
        for id in ids {
            self.attach_sub(id, None).await;
        }
        if self.config.amqp.reply_mode == ReplyMode::Auto {
            tracing::info!(
                host = %label,
                product = ?product,
                version = ?version,
                %reply_mode,
                "reply_mode auto picked {reply_mode}"
            );
        }
        tracing::info!(host = %label, product = ?product, version = ?version, addressing = %kind, %reply_mode, "connected");
        if let Ok(mut info) = self.shared.info.lock() {
            *info = Some(ConnectionInfo {
                host: label.clone(),
                product: product.clone(),
                version,
                addressing: kind,
                reply_mode,
            });
        }
        let _ = self.shared.events.send(Event::Connected {
            host: label,
            product,
            addressing: kind,
            reply_mode,
        });
        Ok(())
    }

    async fn run(mut self) {
        loop {
            let step = if self.conn.is_some() {
                self.serve_connection().await
            } else {
                self.reconnect().await
            };
            if let Step::Stop = step {
                return;
            }
        }
    }

    /// Handles one event of the open connection.
    async fn serve_connection(&mut self) -> Step {
        let Some(conn) = self.conn.as_mut() else {
            return Step::Continue;
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
            cmd = self.rx.recv() => return self.command_or_stop(cmd).await,
        }
        Step::Continue
    }

    /// `Close`, or the end of the command channel, stops the engine.
    async fn command_or_stop(&mut self, cmd: Option<Command>) -> Step {
        match cmd {
            None => {
                self.shutdown().await;
                Step::Stop
            }
            Some(Command::Close(tx)) => {
                self.shutdown().await;
                let _ = tx.send(());
                Step::Stop
            }
            Some(c) => {
                self.command(c).await;
                Step::Continue
            }
        }
    }

    /// Waits the backoff delay (parking commands) and tries the next host.
    async fn reconnect(&mut self) -> Step {
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
                    Some(c @ (Command::Send(_) | Command::Subscribe { .. } | Command::Unsubscribe(_))) => self.park(c),
                    other => return self.command_or_stop(other).await,
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
        Step::Continue
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
        conn.stop_receivers();
        // Calls waiting for a reply can no longer get one (new reply link).
        self.shared.calls.fail_all(&reason);
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
            conn.stop_receivers();
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
        self.shared.calls.fail_all("transport closed");
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            if let Command::Send(s) = c {
                let _ = s.done.send(Err(SendFail::Closed));
            }
        }
    }

    /// Sends `ev` to the engine after `link_retry_delay`.
    fn after_retry_delay(&self, ev: Internal) {
        let delay = crate::limits::secs(self.config.amqp.link_retry_delay.max(1));
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(ev);
        });
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
                    self.after_retry_delay(Internal::Reattach { sub, conn_gen });
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
                self.shared.calls.fail_all(&reason);
                self.after_retry_delay(Internal::ReplyReattach { conn_gen });
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
                self.fanout_queues.retain(|(sub, _), _| *sub != id);
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
}
