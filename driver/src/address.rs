//! Address resolution, as oslo.messaging's `amqp1_driver/addressing.py` (reference §3),
//! plus the amqp1-rig RabbitMQ 3.x extension.
//!
//! | kind | unicast (server) | multicast (fanout) | anycast (group) |
//! |---|---|---|---|
//! | legacy | `exclusive[.vhost].exch.topic.server` | `broadcast[.vhost].exch.topic.all` | `unicast[.vhost].exch.topic` |
//! | routable | `openstack.org/om/rpc/unicast[/vhost]/exch/topic/server` | `.../rpc/multicast[/vhost]/exch/topic` | `.../rpc/anycast[/vhost]/exch/topic` |
//! | rabbitmq | `/queue/<legacy unicast>` | `/topic/<legacy multicast>` | `/queue/<legacy anycast>` |
//!
//! Notifications are anycast to topic `<topic>.<priority>` (`notify` prefix in routable mode).
//!
//! Exchange precedence:
//! * legacy (and rabbitmq): `Target.exchange`, then `control_exchange` (the
//!   `default_*_exchange` options are not used, exactly like oslo's `LegacyAddresser`);
//! * routable: `Target.exchange`, then `default_rpc_exchange` / `default_notification_exchange`,
//!   then `control_exchange`, then `"openstack"`.
//!
//! Notifications never use a target exchange: oslo's `send_notification` ignores it.
//! Empty parts are dropped when joining, so an empty exchange or vhost leaves no `..` or `//`.

use serde::{Deserialize, Serialize};

use crate::options::{AddressingMode, AmqpOptions};

/// The address syntax in use on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressingKind {
    /// qpidd-style dotted addresses.
    Legacy,
    /// qdrouterd-style `/` separated addresses.
    Routable,
    /// RabbitMQ 3.x AMQP 1.0 plugin (`/queue/...`, `/topic/...`), amqp1-rig extension.
    Rabbitmq,
}

impl AddressingKind {
    /// Lower-case name (`legacy`, `routable`, `rabbitmq`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingKind::Legacy => "legacy",
            AddressingKind::Routable => "routable",
            AddressingKind::Rabbitmq => "rabbitmq",
        }
    }
}

impl std::fmt::Display for AddressingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chooses the addressing kind from the option and the peer's Open `product` property
/// (reference §3.1). In `dynamic` mode a missing product or `qpid-cpp` gives legacy,
/// `RabbitMQ` gives the rabbitmq extension, anything else routable.
pub fn resolve_kind(mode: AddressingMode, product: Option<&str>) -> AddressingKind {
    match mode {
        AddressingMode::Legacy => AddressingKind::Legacy,
        AddressingMode::Routable => AddressingKind::Routable,
        AddressingMode::Rabbitmq => AddressingKind::Rabbitmq,
        AddressingMode::Dynamic => match product {
            None | Some("qpid-cpp") => AddressingKind::Legacy,
            Some("RabbitMQ") => AddressingKind::Rabbitmq,
            Some(_) => AddressingKind::Routable,
        },
    }
}

/// Address of a named reply queue for `kind`: `/queue/<name>` for RabbitMQ, `<name>` otherwise.
pub fn named_reply_address(kind: AddressingKind, name: &str) -> String {
    match kind {
        AddressingKind::Rabbitmq => format!("/queue/{name}"),
        AddressingKind::Legacy | AddressingKind::Routable => name.to_string(),
    }
}

/// An oslo.messaging target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Target {
    /// Exchange; `None` => the configured default.
    pub exchange: Option<String>,
    /// Topic.
    pub topic: String,
    /// Server name, for directed calls and casts.
    pub server: Option<String>,
    /// Fanout to every server on the topic (casts only).
    pub fanout: bool,
    /// RPC API version (`"1.0"`); travels in the request body.
    pub version: Option<String>,
    /// RPC namespace; travels in the request body.
    pub namespace: Option<String>,
}

impl Target {
    /// A target for `topic` with everything else unset.
    pub fn topic(topic: impl Into<String>) -> Self {
        Target {
            topic: topic.into(),
            ..Target::default()
        }
    }

    /// Sets the server.
    pub fn with_server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// Sets the exchange.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = Some(exchange.into());
        self
    }

    /// Sets fanout.
    pub fn with_fanout(mut self, fanout: bool) -> Self {
        self.fanout = fanout;
        self
    }
}

/// RPC or notification traffic (routable addresses differ; legacy ones do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// RPC requests.
    Rpc,
    /// Notifications.
    Notify,
}

/// Builds addresses for one connection (kind, options, control exchange and vhost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresser {
    kind: AddressingKind,
    vhost: Option<String>,
    control_exchange: String,
    // legacy
    server_request_prefix: String,
    broadcast_prefix: String,
    group_request_prefix: String,
    // routable
    rpc_prefix: String,
    notify_prefix: String,
    unicast_tag: String,
    multicast_tag: String,
    anycast_tag: String,
    rpc_exchange: String,
    notify_exchange: String,
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Joins the non-empty parts with `sep` (oslo's `_concatenate`).
fn join(sep: &str, parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts.iter().filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push_str(sep);
        }
        out.push_str(p);
    }
    out
}

impl Addresser {
    /// An addresser for `kind`. `vhost` is the transport URL's virtual host; it is inserted
    /// in addresses only when `opts.pseudo_vhost` is true (otherwise it goes in the Open hostname).
    pub fn new(
        kind: AddressingKind,
        opts: &AmqpOptions,
        control_exchange: &str,
        vhost: Option<&str>,
    ) -> Self {
        let vhost = if opts.pseudo_vhost {
            non_empty(vhost).map(str::to_string)
        } else {
            None
        };
        // Routable forces "openstack" when the default exchange is empty (so the
        // 'rpc'/'notify' fallbacks of oslo are dead code).
        let routable_default = if control_exchange.is_empty() {
            "openstack"
        } else {
            control_exchange
        };
        Addresser {
            kind,
            vhost,
            control_exchange: control_exchange.to_string(),
            server_request_prefix: opts.server_request_prefix.clone(),
            broadcast_prefix: opts.broadcast_prefix.clone(),
            group_request_prefix: opts.group_request_prefix.clone(),
            rpc_prefix: opts.rpc_address_prefix.clone(),
            notify_prefix: opts.notify_address_prefix.clone(),
            unicast_tag: opts.unicast_address.clone(),
            multicast_tag: opts.multicast_address.clone(),
            anycast_tag: opts.anycast_address.clone(),
            rpc_exchange: non_empty(opts.default_rpc_exchange.as_deref())
                .unwrap_or(routable_default)
                .to_string(),
            notify_exchange: non_empty(opts.default_notification_exchange.as_deref())
                .unwrap_or(routable_default)
                .to_string(),
        }
    }

    /// The addressing kind.
    pub fn kind(&self) -> AddressingKind {
        self.kind
    }

    /// The vhost inserted in addresses (None unless pseudo_vhost and a non-empty vhost).
    pub fn vhost(&self) -> Option<&str> {
        self.vhost.as_deref()
    }

    fn legacy_exchange<'a>(&'a self, target: &'a Target) -> &'a str {
        non_empty(target.exchange.as_deref()).unwrap_or(&self.control_exchange)
    }

    fn routable_exchange<'a>(&'a self, target: &'a Target, service: Service) -> &'a str {
        non_empty(target.exchange.as_deref()).unwrap_or(match service {
            Service::Rpc => &self.rpc_exchange,
            Service::Notify => &self.notify_exchange,
        })
    }

    fn vh(&self) -> &str {
        self.vhost.as_deref().unwrap_or("")
    }

    fn legacy_unicast(&self, t: &Target) -> String {
        join(
            ".",
            &[
                &self.server_request_prefix,
                self.vh(),
                self.legacy_exchange(t),
                &t.topic,
                t.server.as_deref().unwrap_or(""),
            ],
        )
    }

    fn legacy_multicast(&self, t: &Target) -> String {
        join(
            ".",
            &[
                &self.broadcast_prefix,
                self.vh(),
                self.legacy_exchange(t),
                &t.topic,
                "all",
            ],
        )
    }

    fn legacy_anycast(&self, t: &Target) -> String {
        join(
            ".",
            &[
                &self.group_request_prefix,
                self.vh(),
                self.legacy_exchange(t),
                &t.topic,
            ],
        )
    }

    fn routable(&self, t: &Target, service: Service, tag: &str, server: bool) -> String {
        // oslo builds "<prefix>/<tag>" as one part, so an empty tag leaves a trailing "/".
        let prefix = match service {
            Service::Rpc => format!("{}/{tag}", self.rpc_prefix),
            Service::Notify => format!("{}/{tag}", self.notify_prefix),
        };
        let server = if server {
            t.server.as_deref().unwrap_or("")
        } else {
            ""
        };
        join(
            "/",
            &[
                &prefix,
                self.vh(),
                self.routable_exchange(t, service),
                &t.topic,
                server,
            ],
        )
    }

    /// Unicast (one named server) address of an RPC target.
    pub fn unicast(&self, target: &Target) -> String {
        match self.kind {
            AddressingKind::Legacy => self.legacy_unicast(target),
            AddressingKind::Routable => {
                self.routable(target, Service::Rpc, &self.unicast_tag, true)
            }
            AddressingKind::Rabbitmq => format!("/queue/{}", self.legacy_unicast(target)),
        }
    }

    /// Multicast (fanout) address of an RPC target.
    pub fn multicast(&self, target: &Target) -> String {
        match self.kind {
            AddressingKind::Legacy => self.legacy_multicast(target),
            AddressingKind::Routable => {
                self.routable(target, Service::Rpc, &self.multicast_tag, false)
            }
            AddressingKind::Rabbitmq => format!("/topic/{}", self.legacy_multicast(target)),
        }
    }

    /// Anycast (shared, competing consumers) address of an RPC target.
    pub fn anycast(&self, target: &Target) -> String {
        match self.kind {
            AddressingKind::Legacy => self.legacy_anycast(target),
            AddressingKind::Routable => {
                self.routable(target, Service::Rpc, &self.anycast_tag, false)
            }
            AddressingKind::Rabbitmq => format!("/queue/{}", self.legacy_anycast(target)),
        }
    }

    /// Address a sender uses for `target`: fanout => multicast, server => unicast, else anycast.
    pub fn resolve(&self, target: &Target) -> String {
        if target.fanout {
            self.multicast(target)
        } else if target.server.is_some() {
            self.unicast(target)
        } else {
            self.anycast(target)
        }
    }

    /// The three addresses an RPC server listens on, in oslo's order:
    /// unicast (its server name), multicast, anycast.
    pub fn rpc_listener_addresses(&self, target: &Target) -> [String; 3] {
        [
            self.unicast(target),
            self.multicast(target),
            self.anycast(target),
        ]
    }

    /// Notification address for `topic` and `priority` (lower-case, e.g. `info`):
    /// anycast to topic `<topic>.<priority>` with the default notification exchange.
    pub fn notify(&self, topic: &str, priority: &str) -> String {
        let t = Target::topic(format!("{topic}.{priority}"));
        match self.kind {
            AddressingKind::Legacy => self.legacy_anycast(&t),
            AddressingKind::Routable => {
                self.routable(&t, Service::Notify, &self.anycast_tag, false)
            }
            AddressingKind::Rabbitmq => format!("/queue/{}", self.legacy_anycast(&t)),
        }
    }
}

#[cfg(test)]
mod tests;
