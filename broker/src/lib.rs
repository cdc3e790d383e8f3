//! Embedded AMQP 1.0 broker for tests and fault injection.
//!
//! It imitates the node semantics of the Qpid C++ broker (`qpidd`), the Qpid
//! Dispatch Router (`router`) and RabbitMQ 3.x (`rabbitmq3`) on top of
//! fe2o3-amqp's acceptor, over a real TCP listener on 127.0.0.1.
//!
//! # Flavours
//!
//! * `qpidd` (default): Open `product=qpid-cpp`, offers `ANONYMOUS-RELAY`. Nodes are created
//!   on attach when the address matches a `queue_patterns` regex (queue: store and forward,
//!   round robin between consumers, accepted on enqueue) or a `topic_patterns` regex (topic:
//!   a pre-settled copy to every current subscriber). `amq.topic` and `amq.fanout` exist.
//!   Anything else is refused with `amqp:not-found` "Node not found: ADDR" (attach with a null
//!   terminus, then detach). Dynamic sources get a temporary queue named
//!   `<connection-tag>_<link-name>`, deleted when the link goes.
//! * `router`: Open `product=qpid-dispatch-router`. No store: addresses under
//!   `openstack.org/om/{rpc,notify}/multicast`, `broadcast` and `multicast` copy to every
//!   consumer; every other address goes to one consumer (balanced). No consumer: `released`.
//!   Unsettled deliveries are settled end to end (the producer gets the consumer's outcome).
//!   A consumer whose backlog reaches `router_drop_threshold` loses its queued pre-settled
//!   deliveries (counted as `dropped`). Dynamic sources get `amqp:/_topo/0/<id>/temp.<rand>`.
//! * `rabbitmq3`: Open `product=RabbitMQ`. `/queue/N`, `/amq/queue/N` and plain names are
//!   queues; `/topic/K`, `/exchange/E/K` and `/exchange/amq.fanout` are topics (unsettled
//!   copies). Dynamic sources, `openstack.org/om/...`, unknown `/...` addresses and
//!   anonymous relay end the *session* with the error RabbitMQ 3.10 sends; the connection
//!   survives.
//!
//! # Management
//!
//! Each flavour answers its real broker's management protocol (a subset), so that one
//! client works here and against the real broker:
//!
//! * `qpidd`: QMF v2 on `qmf.default.direct` (subject `broker`, application properties
//!   `x-amqp-0-10.app-id=qmf2`, `qmf.opcode`, a `reply-to`): `_query_request` for `queue`,
//!   `exchange`, `connection` and `broker` objects (queues carry `msgDepth`,
//!   `msgTotalEnqueues`, `msgTotalDequeues`), `_method_request` `close` on a connection.
//! * `router`: AMQP management on `$management`: `QUERY` of
//!   `org.apache.qpid.dispatch.router.address` and `...connection`, `UPDATE` of a
//!   connection's `adminStatus` to `deleted` (closes it with `amqp:connection:forced`).
//!
//! Management nodes do not appear in [`Counters`].
//!
//! Every accepted socket has TCP_NODELAY. No idle timeout is advertised. The producer's
//! pre-settled flag (not exposed by fe2o3's `Delivery`) is read from the transfer frames.
//!
//! ```no_run
//! # async fn demo() -> Result<(), broker::BrokerError> {
//! let broker = broker::Broker::start(broker::BrokerConfig::default()).await?;
//! println!("listening on {}", broker.url());
//! broker.shutdown().await;
//! # Ok(()) }
//! ```

mod config;
mod core;
mod counters;
mod faults;
mod inject;
mod node;
mod sniff;
mod stream;
mod tls;
mod util;

pub use config::{BrokerConfig, Flavour, TlsConfig, UnknownFlavour};
pub use counters::{ConnectionCounters, Counters, NodeCounters};
pub use faults::Faults;
pub use inject::{InjectBody, InjectError, InjectedMessage};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Errors starting a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid (names the field and value).
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// TLS material could not be loaded or generated.
    #[error("TLS: {0}")]
    Tls(String),
}

/// The messages a broker held in its queues when it stopped, for a restart that keeps them
/// ([`Broker::shutdown_keeping_store`], [`Broker::start_with_store`]): what a broker with a
/// persistent store (qpidd with its store module, RabbitMQ's durable queues) gives back after a
/// restart. Unsettled deliveries are in it too: their consumers gave them back when the
/// connections closed.
#[derive(Default)]
pub struct Store {
    queues: Vec<(String, Vec<node::Stored>)>,
}

impl Store {
    /// How many messages it holds.
    pub fn messages(&self) -> usize {
        self.queues.iter().map(|(_, m)| m.len()).sum()
    }

    /// How many queues it holds messages of.
    pub fn queues(&self) -> usize {
        self.queues.len()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("queues", &self.queues())
            .field("messages", &self.messages())
            .finish()
    }
}

/// A running broker. Dropping it stops it (without waiting); prefer [`Broker::shutdown`].
#[derive(Debug)]
pub struct Broker {
    local_addr: SocketAddr,
    tls: bool,
    core: Arc<core::Core>,
    accept_task: Option<tokio::task::JoinHandle<()>>,
}

impl Broker {
    /// Binds the listener (loopback only) and starts serving.
    pub async fn start(config: BrokerConfig) -> Result<Broker, BrokerError> {
        Broker::start_with_store(config, &mut Store::default()).await
    }

    /// Like [`Broker::start`], with the queues and messages of `store` declared before the first
    /// connection is accepted. `store` is emptied only when the broker started: a failed start
    /// (the port still taken) can be retried with it.
    pub async fn start_with_store(
        config: BrokerConfig,
        store: &mut Store,
    ) -> Result<Broker, BrokerError> {
        let tls = match &config.tls {
            Some(t) => Some(tls::acceptor(t)?),
            None => None,
        };
        let bind = config.bind;
        let core = core::Core::new(config, tls)?;
        let listener = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|source| BrokerError::Bind { addr: bind, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr: bind, source })?;
        core.restore_store(std::mem::take(&mut store.queues));
        tracing::info!(flavour = %core.flavour, %local_addr, "embedded broker listening");
        let accept_task = tokio::spawn(core::accept_loop(core.clone(), listener));
        Ok(Broker {
            local_addr,
            tls: core.config.tls.is_some(),
            core,
            accept_task: Some(accept_task),
        })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `amqp://127.0.0.1:PORT` (`amqps` with TLS); never contains credentials.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The flavour being imitated.
    pub fn flavour(&self) -> Flavour {
        self.core.flavour
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &BrokerConfig {
        &self.core.config
    }

    /// A snapshot of all counters (expired messages are swept first).
    pub fn counters(&self) -> Counters {
        self.core.counters()
    }

    /// The fault controls.
    pub fn faults(&self) -> Faults {
        Faults {
            state: self.core.faults.clone(),
            core: Arc::downgrade(&self.core),
        }
    }

    /// Shuts down as [`Broker::shutdown`] does and returns what its queues held (consumers give
    /// their unsettled deliveries back first), for [`Broker::start_with_store`].
    pub async fn shutdown_keeping_store(self) -> Store {
        let core = self.core.clone();
        self.shutdown().await;
        Store {
            queues: core.take_store(),
        }
    }

    /// Closes the listener and every connection, and waits (up to 5 s) for all tasks.
    pub async fn shutdown(mut self) {
        self.core.shutdown.cancel();
        if let Some(t) = self.accept_task.take() {
            let _ = t.await;
        }
        if !self.core.tasks.wait_idle(Duration::from_secs(5)).await {
            tracing::warn!(
                "embedded broker: some tasks did not stop within 5 s; dropping connections"
            );
            self.core.faults.kill_all();
            let _ = self.core.tasks.wait_idle(Duration::from_secs(2)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.core.shutdown.cancel();
    }
}
