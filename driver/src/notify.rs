//! Notifications: [`Notifier`] (sender) and [`NotificationListener`] (receiver).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::address::Target;
use crate::deliver::{deliver, Retry};
use crate::engine::links::{Inbound, Settle};
use crate::engine::{Command, Dest, ListenAddr, SendCmd, Shared};
use crate::error::{ListenError, ListenErrorKind, NotifyError};
use crate::options::PreSettled;
use crate::rpc::{map_send_err, subscribe};
use crate::wire::{self, Map, Notification, NotifyVersion, OutgoingMessage, Priority};
use crate::Transport;

/// Sends notifications to `<topic>.<priority>` for each configured topic.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use driver::{Config, Notifier, Priority, Transport};
/// let transport = Transport::connect(Config::from_url("amqp://127.0.0.1:5672")?).await?;
/// let notifier = Notifier::new(&transport, "compute.host1");
/// notifier
///     .notify(Default::default(), "compute.instance.create.end", Priority::Info, serde_json::json!({"id": 1}))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Notifier {
    transport: Transport,
    publisher_id: String,
    topics: Vec<String>,
    version: NotifyVersion,
    retry: Retry,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("publisher_id", &self.publisher_id)
            .field("topics", &self.topics)
            .field("version", &self.version)
            .finish()
    }
}

impl Notifier {
    /// A `messagingv2` notifier on the configured topics
    /// (`[oslo_messaging_notifications] topics`, default `notifications`) and retry.
    pub fn new(transport: &Transport, publisher_id: impl Into<String>) -> Self {
        let n = &transport.shared.config.notifications;
        Notifier {
            transport: transport.clone(),
            publisher_id: publisher_id.into(),
            topics: if n.topics.is_empty() {
                vec!["notifications".into()]
            } else {
                n.topics.clone()
            },
            version: NotifyVersion::V2,
            retry: Retry::from_i64(n.retry),
        }
    }

    /// Replaces the topics.
    pub fn topics<I, S>(mut self, topics: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Message format: `V2` (`messagingv2`, default) or `V1` (`messaging`).
    pub fn version(mut self, version: NotifyVersion) -> Self {
        self.version = version;
        self
    }

    /// Resends allowed after `released`/`modified`: `None` = infinite.
    pub fn retry(mut self, retry: Option<u32>) -> Self {
        self.retry = Retry(retry);
        self
    }

    /// Sends one notification to every topic; waits for the broker's
    /// disposition unless `notify` is in `pre_settled`.
    pub async fn notify(
        &self,
        ctx: Map,
        event_type: &str,
        priority: Priority,
        payload: Value,
    ) -> Result<(), NotifyError> {
        let shared = &self.transport.shared;
        let cfg = &shared.config;
        let settled = cfg.amqp.is_pre_settled(PreSettled::Notify);
        let delay = crate::limits::secs(cfg.amqp.link_retry_delay.max(1));
        let deadline =
            crate::limits::deadline(crate::limits::secs(cfg.amqp.default_notify_timeout));
        let n = Notification::new(self.publisher_id.clone(), event_type, priority, payload);
        for topic in &self.topics {
            let base = OutgoingMessage::notification(String::new(), &ctx, &n, self.version);
            let dest = Dest::Notify {
                topic: topic.clone(),
                priority: priority.as_lower().to_string(),
            };
            deliver(shared, deadline, self.retry, delay, |done| SendCmd {
                dest: dest.clone(),
                msg: base.clone(),
                settled,
                call: None,
                done,
            })
            .await
            .map_err(|e| map_send_err(e, (), ()).map_kind_notify())?;
        }
        Ok(())
    }
}

/// A received notification; settle it with [`ack`](Self::ack) or
/// [`requeue`](Self::requeue) (dropping it releases it).
#[derive(Debug)]
pub struct IncomingNotification {
    /// The request context.
    pub ctx: Map,
    /// The notification.
    pub notification: Notification,
    /// `V2` when it came in the `oslo.version` envelope.
    pub version: NotifyVersion,
    settle: Settle,
}

impl IncomingNotification {
    /// Accepts the delivery (the broker forgets it).
    pub async fn ack(mut self) {
        self.settle.accept().await;
    }

    /// Releases the delivery so the broker redelivers it.
    pub async fn requeue(mut self) {
        self.settle.release().await;
    }
}

/// Listens on one anycast link per `<topic>.<priority>`.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use driver::{Config, NotificationListener, Priority, Target, Transport};
/// let transport = Transport::connect(Config::from_url("amqp://127.0.0.1:5672")?).await?;
/// let mut listener = NotificationListener::start(
///     &transport, vec![Target::topic("notifications")], vec![Priority::Info], None).await?;
/// while let Some(n) = listener.recv().await {
///     println!("{} {}", n.notification.event_type, n.notification.payload);
///     n.ack().await;
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct NotificationListener {
    shared: Arc<Shared>,
    id: u64,
    rx: mpsc::Receiver<Inbound>,
    stopped: bool,
}

impl NotificationListener {
    /// Attaches the links. `pool` is not supported by the AMQP 1.0 driver
    /// (oslo raises `NotImplementedError`) and gives `InvalidTarget`.
    pub async fn start(
        transport: &Transport,
        targets: Vec<Target>,
        priorities: Vec<Priority>,
        pool: Option<String>,
    ) -> Result<NotificationListener, ListenError> {
        if pool.is_some() {
            return Err(ListenError::new(ListenErrorKind::InvalidTarget)
                .set_detail("listener pools are not supported by the amqp driver"));
        }
        if targets.is_empty() || priorities.is_empty() {
            return Err(ListenError::new(ListenErrorKind::InvalidTarget)
                .set_detail("need at least one target and one priority"));
        }
        let shared = transport.shared.clone();
        let mut addrs = Vec::new();
        for t in &targets {
            for p in &priorities {
                addrs.push(ListenAddr::Notify {
                    topic: t.topic.clone(),
                    priority: p.as_lower().to_string(),
                });
            }
        }
        let credit = shared.config.amqp.notify_server_credit;
        let (sink, rx) = mpsc::channel(crate::rpc::sink_capacity(credit, addrs.len()));
        let id = subscribe(&shared, addrs, credit, sink).await?;
        Ok(NotificationListener {
            shared,
            id,
            rx,
            stopped: false,
        })
    }

    /// The next notification; `None` once stopped or the transport closed.
    /// Malformed messages are rejected (with the reason) and skipped.
    pub async fn recv(&mut self) -> Option<IncomingNotification> {
        loop {
            let mut inbound = self.rx.recv().await?;
            match wire::decode_notification(&inbound.msg) {
                Ok((ctx, notification, version)) => {
                    return Some(IncomingNotification {
                        ctx,
                        notification,
                        version,
                        settle: inbound.settle,
                    })
                }
                Err(e) => {
                    tracing::warn!(reason = %e, "malformed notification rejected");
                    inbound.settle.reject(&e.to_string()).await;
                }
            }
        }
    }

    /// Detaches the links.
    pub async fn stop(mut self) {
        self.stopped = true;
        let _ = self.shared.cmd.send(Command::Unsubscribe(self.id)).await;
    }
}

impl Drop for NotificationListener {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.shared.cmd.try_send(Command::Unsubscribe(self.id));
        }
    }
}
