//! The broker core: shared state (nodes, connections, faults) and the modules that serve it.
//!
//! | module | concern |
//! |---|---|
//! | [`sasl`] | SASL PLAIN / ANONYMOUS acceptor |
//! | [`resolve`] | attach → node, per flavour (`qpidd`, `router`, `rabbitmq`) |
//! | [`conn`] | listener, sockets, connections, sessions |
//! | [`link`] | one attach: refuse it, or start a producer or a consumer |
//! | [`producer`] | links where the broker receives |
//! | [`consumer`] | links where the broker sends |
//! | [`mgmt`] | management requests (QMF, AMQP management) |

mod conn;
mod consumer;
mod link;
mod mgmt;
mod producer;
mod resolve;
mod sasl;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, LinkAcceptor};

/// The channel-max the broker offers (sessions per connection, minus one).
const CHANNEL_MAX: u16 = 0x7fff;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::messaging::{Source, Target};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use regex::Regex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerConfig, Flavour};
use crate::counters::inc;
use crate::counters::{ConnStats, Counters};
use crate::faults::FaultState;
use crate::inject::{InjectError, InjectedMessage};
use crate::node::{Management, Node, NodeKind, Routed, Stored};
use crate::util::{condition_text, lock, random_suffix};
use crate::BrokerError;

pub(crate) use conn::accept_loop;
use sasl::UsersSasl;

/// Connection records kept in the counters (closed ones are dropped first).
const MAX_CONNECTION_RECORDS: usize = 10_000;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts live tasks so that shutdown can wait for them.
#[derive(Debug, Default)]
pub(crate) struct Tasks {
    live: AtomicUsize,
    idle: Notify,
}

/// Held by a task while it runs.
pub(crate) struct TaskGuard(Arc<Tasks>);

impl Tasks {
    fn guard(self: &Arc<Self>) -> TaskGuard {
        self.live.fetch_add(1, Ordering::AcqRel);
        TaskGuard(self.clone())
    }

    /// Waits until no task runs, for at most `limit`; returns whether that happened.
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

type DynSourceFn = fn(Source) -> Option<Source>;
type DynTargetFn = fn(Target) -> Option<Target>;

/// Shared broker state.
pub(crate) struct Core {
    pub flavour: Flavour,
    pub config: BrokerConfig,
    queue_res: Vec<Regex>,
    topic_res: Vec<Regex>,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    conns: Mutex<Vec<Arc<ConnStats>>>,
    /// Open connections by id (management lists and closes them).
    live: Mutex<HashMap<u64, Arc<conn::ConnCtx>>>,
    refused: AtomicU64,
    pub faults: Arc<FaultState>,
    router_id: String,
    /// qpidd's QMF agent name, `apache.org:qpidd:<uuid>`.
    qmf_agent: String,
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

fn pass_source(s: Source) -> Option<Source> {
    Some(s)
}

fn pass_target(t: Target) -> Option<Target> {
    Some(t)
}

fn check_config(config: &BrokerConfig) -> Result<(), BrokerError> {
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
    Ok(())
}

fn default_container_id(flavour: Flavour) -> String {
    match flavour {
        Flavour::Qpidd => format!("qpidd-{}", random_suffix(8)),
        Flavour::Router => format!("router-{}", random_suffix(8)),
        Flavour::Rabbitmq3 => "rabbit@localhost".to_string(),
    }
}

impl Core {
    pub(crate) fn new(
        config: BrokerConfig,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Arc<Core>, BrokerError> {
        check_config(&config)?;
        let queue_res = compile(&config.queue_patterns, "queue pattern")?;
        let topic_res = compile(&config.topic_patterns, "topic pattern")?;
        let flavour = config.flavour;
        let container_id = config
            .container_id
            .clone()
            .unwrap_or_else(|| default_container_id(flavour));
        let make_builder = || {
            // Proton-based brokers (qpidd, qdrouterd) offer channel-max 0x7fff, as the oslo driver
            // does; each link has a session of its own, so fe2o3's default of 255 would cap a
            // connection at 85 RPC servers.
            let b = ConnectionAcceptor::builder()
                .container_id(container_id.clone())
                .channel_max(CHANNEL_MAX)
                .properties(open_properties(flavour));
            if flavour != Flavour::Rabbitmq3 {
                b.add_offered_capabilities("ANONYMOUS-RELAY")
            } else {
                b
            }
        };
        let sasl_acceptor = make_builder()
            .sasl_acceptor(UsersSasl::new(config.users.clone(), config.allow_anonymous))
            .build();
        let core = Core {
            flavour,
            queue_res,
            topic_res,
            nodes: Mutex::new(HashMap::new()),
            conns: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            faults: Arc::new(FaultState::default()),
            router_id: container_id.clone(),
            qmf_agent: format!("apache.org:qpidd:{}", uuid::Uuid::new_v4()),
            next_conn: AtomicU64::new(1),
            shutdown: CancellationToken::new(),
            tasks: Arc::new(Tasks::default()),
            sasl_acceptor,
            plain_acceptor: make_builder().build(),
            link_acceptor: LinkAcceptor::builder()
                .verify_incoming_source(false)
                .verify_incoming_target(false)
                .on_dynamic_source(pass_source as DynSourceFn)
                .on_dynamic_target(pass_target as DynTargetFn)
                .build(),
            tls,
            config,
        };
        core.predeclare();
        Ok(Arc::new(core))
    }

    /// The nodes every broker of the flavour has from the start.
    fn predeclare(&self) {
        match self.flavour {
            Flavour::Qpidd => {
                for name in ["amq.topic", "amq.fanout"] {
                    let topic = Node::new(name.to_string(), NodeKind::Topic, false, true, None);
                    self.insert_node(topic);
                }
                self.insert_node(Node::management(mgmt::QMF_ADDRESS, Management::Qmf));
            }
            Flavour::Router => {
                let agent =
                    Node::management(mgmt::AMQP_MANAGEMENT_ADDRESS, Management::AmqpManagement);
                self.insert_node(agent);
            }
            Flavour::Rabbitmq3 => {}
        }
    }

    /// Inserts a node unless one of that name exists; returns the one in the map.
    fn insert_node(&self, node: Arc<Node>) -> Arc<Node> {
        lock(&self.nodes)
            .entry(node.name.clone())
            .or_insert(node)
            .clone()
    }

    /// Takes the messages stored in queues (not temporary ones), by queue name.
    pub(crate) fn take_store(&self) -> Vec<(String, Vec<crate::node::Stored>)> {
        let nodes: Vec<Arc<Node>> = lock(&self.nodes).values().cloned().collect();
        let mut out: Vec<(String, Vec<crate::node::Stored>)> = nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Queue && !n.temporary && n.management.is_none())
            .map(|n| (n.name.clone(), n.take_stored()))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Declares the queues of a kept store and puts their messages back.
    pub(crate) fn restore_store(&self, store: Vec<(String, Vec<crate::node::Stored>)>) {
        for (name, items) in store {
            let node = self.insert_node(Node::new(name, NodeKind::Queue, false, false, None));
            node.restore(items);
        }
    }

    fn node(&self, name: &str) -> Option<Arc<Node>> {
        lock(&self.nodes).get(name).cloned()
    }

    /// Counts a new link on `node` and returns the node the link must use: the one registered
    /// under its name. The link was resolved before its attach handshake; if the last link of that
    /// node detached meanwhile and removed it, the name is registered again (or the node another
    /// link created under it is used), so a consumer and a producer of one address never end up on
    /// two different nodes. Counting and removal both happen under the node map's lock.
    pub(crate) fn attach_link(&self, node: Arc<Node>) -> Arc<Node> {
        let mut nodes = lock(&self.nodes);
        let n = if node.management.is_some() {
            node
        } else {
            nodes.entry(node.name.clone()).or_insert(node).clone()
        };
        n.link_attached();
        n
    }

    /// Uncounts a link of `node`; removes the node when `remove(unused)` says so (`unused`: no link
    /// uses it any more). Returns whether it was removed.
    pub(crate) fn detach_link(&self, node: &Arc<Node>, remove: impl FnOnce(bool) -> bool) -> bool {
        let mut nodes = lock(&self.nodes);
        let unused = node.link_detached();
        if !remove(unused) {
            return false;
        }
        if nodes.get(&node.name).is_some_and(|n| Arc::ptr_eq(n, node)) {
            nodes.remove(&node.name);
        }
        true
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
        for n in nodes.into_iter().filter(|n| n.management.is_none()) {
            n.sweep_expired();
            c.nodes
                .insert(n.name.clone(), n.stats.snapshot(n.kind_name(), n.depth()));
        }
        c.connections = lock(&self.conns).iter().map(|s| s.snapshot()).collect();
        c
    }

    /// Routes a message of the broker's making to `address` (the `inject` fault).
    pub(crate) fn inject(
        &self,
        address: &str,
        message: InjectedMessage,
    ) -> Result<(), InjectError> {
        let node = self
            .relay_target(Some(address))
            .map_err(|e| InjectError::Refused {
                condition: condition_text(&e.condition),
                description: e.description.unwrap_or_default(),
            })?;
        if node.management.is_some() {
            return Err(InjectError::Refused {
                condition: "amqp:not-allowed".into(),
                description: format!("{address} is a management node"),
            });
        }
        let presettled = message.presettled;
        let item = Stored::new(message.into_message(address), 0, presettled);
        match node.route(item).0 {
            Routed::NoRoute => {
                if presettled {
                    inc(&node.stats.dropped);
                } else {
                    inc(&node.stats.released);
                }
                Err(InjectError::NoRoute)
            }
            Routed::Accepted | Routed::Pending(_) => Ok(()),
        }
    }

    /// Records a new connection, dropping the oldest closed record when there are too many.
    fn record_connection(&self, stats: Arc<ConnStats>) {
        let mut conns = lock(&self.conns);
        if conns.len() >= MAX_CONNECTION_RECORDS {
            if let Some(i) = conns.iter().position(|c| !c.open.load(Ordering::Relaxed)) {
                conns.remove(i);
            }
        }
        conns.push(stats);
    }
}
