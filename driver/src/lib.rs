//! amqp1-rig driver: an async AMQP 1.0 driver with oslo.messaging semantics,
//! wire-compatible with the `amqp` driver of oslo.messaging 14.9.3.
//!
//! * [`Transport`] owns one AMQP connection (one engine task), reconnects
//!   with backoff and fails over between the URL's hosts.
//! * [`RpcClient`] calls and casts; [`RpcServer`] + [`Dispatcher`] serve.
//! * [`Notifier`] and [`NotificationListener`] send and receive notifications.
//!
//! Modules: [`url`] (transport URL), [`options`] (the `[oslo_messaging_amqp]`
//! options and the INI loader), [`address`] (legacy / routable / rabbitmq /
//! rabbitmq4 addressing), [`wire`] (message encoding), [`error`].
//!
//! On RabbitMQ the driver goes beyond the Python driver, chosen per connection
//! from the broker's Open properties ([`Transport::connection_info`]):
//!
//! | broker | addressing (`addressing_mode: dynamic`) | reply link (`reply_mode: auto`) |
//! |---|---|---|
//! | qpidd, no product | legacy | dynamic (as oslo) |
//! | qdrouterd, others | routable | dynamic (as oslo) |
//! | RabbitMQ 3.x | rabbitmq (`/queue/`, `/topic/`) | named reply queue |
//! | RabbitMQ 4.0 | rabbitmq4 (v2 `/queues/`, `/exchanges/`, declared through `/management`) | named reply queue |
//! | RabbitMQ 4.1+ | rabbitmq4 | `temporary-queue` dynamic source |
//!
//! The reply link is attached by the first call of a connection, so servers,
//! listeners, notifiers and cast-only clients never attach one.
//!
//! # Quick start
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use driver::{Config, Dispatcher, Endpoint, RpcClient, RpcServer, Target, Transport};
//!
//! let transport = Transport::connect(Config::from_url("amqp://127.0.0.1:5672")?).await?;
//! let dispatcher = Dispatcher::new().endpoint(
//!     Endpoint::new().method("echo", |_ctx, args| async move { Ok(serde_json::Value::Object(args)) }),
//! );
//! let server = RpcServer::start(&transport, Target::topic("demo").with_server("s1"), dispatcher).await?;
//! let client = RpcClient::new(&transport, Target::topic("demo"));
//! let reply = client.call(Default::default(), "echo", serde_json::Map::new()).await?;
//! println!("{reply}");
//! server.stop().await;
//! transport.close().await;
//! # Ok(()) }
//! ```

pub mod address;
mod deliver;
pub(crate) mod engine;
pub mod error;
pub mod limits;
pub mod notify;
pub mod options;
pub mod rpc;
mod tls;
pub mod url;
pub mod wire;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};

pub use address::{AddressingKind, Target};
pub use engine::{ConnectionInfo, Event};
pub use error::{
    CallError, CallErrorKind, CastError, CastErrorKind, ConnectError, ConnectErrorKind, Error,
    ListenError, ListenErrorKind, ManagementError, NotifyError, NotifyErrorKind,
};
pub use limits::{MAX_BODY_BYTES, MAX_TIMEOUT, MAX_TIMEOUT_SECS};
pub use notify::{IncomingNotification, NotificationListener, Notifier};
pub use options::{AmqpOptions, Config};
pub use rpc::{Dispatcher, Endpoint, Handler, RpcClient, RpcServer};
pub use wire::{Map, Notification, NotifyVersion, Priority, RemoteError};

/// A connection to the messaging bus. Cheap to clone; clones share the connection.
///
/// Connecting is **eager**: [`Transport::connect`] tries each host of the URL
/// once (starting from a random one) and returns the error of the last
/// attempt if none could be opened, so a wrong URL, bad credentials or a
/// TLS problem is reported at once. After that the transport reconnects on
/// its own (spec §5) and reports what happens through [`Transport::events`].
#[derive(Clone)]
pub struct Transport {
    pub(crate) shared: Arc<engine::Shared>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("url", &self.shared.config.transport_url.to_string())
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Transport {
    /// Connects to the first reachable host of `config.transport_url`.
    ///
    /// Errors: `InvalidUrl`, `Auth` (SASL refused, `amqp:unauthorized-access`),
    /// `Tls`, `Io`, `TimedOut` (`connect_timeout`), `Refused`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use driver::{Config, Transport};
    /// let config = Config::from_url("amqp://user:secret@broker1:5672,broker2:5672/")?;
    /// let transport = Transport::connect(config).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: Config) -> Result<Transport, ConnectError> {
        let shared = engine::Engine::start(config).await?;
        Ok(Transport { shared })
    }

    /// Subscribes to connection events (connected, disconnected, reconnecting).
    ///
    /// The `Connected` event of the first (eager) connect is sent before
    /// [`connect`](Self::connect) returns, so a new subscriber sees only later
    /// events. Slow subscribers may miss events (broadcast channel of 256).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn f(transport: driver::Transport) {
    /// let mut events = transport.events();
    /// while let Ok(ev) = events.recv().await {
    ///     println!("{ev:?}");
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// What the current (or last) connection chose from the peer's Open properties: the
    /// addressing kind and the reply mode (`reply_mode: auto` resolved), with the peer's product
    /// and version. `None` before the first connection.
    pub fn connection_info(&self) -> Option<ConnectionInfo> {
        self.shared
            .info
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The configuration this transport was created with.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Closes the connection gracefully. Idempotent.
    ///
    /// Messages the API already handed to the engine (e.g. casts that
    /// returned `Ok`) are written first: every link writes what it accepted,
    /// detaches and ends its session, and only then is the connection closed
    /// (each step bounded, a few seconds at most). Operations issued after
    /// the close fail with `Closed`. Dropping the last handle does the same.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .shared
            .cmd
            .send(engine::Command::Close(tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Whether [`close`](Self::close) has completed.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }
}
