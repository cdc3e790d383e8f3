//! Address resolution, as oslo.messaging's `amqp1_driver/addressing.py` (reference §3),
//! plus the amqp1-rig RabbitMQ 3.x and 4.x extensions.
//!
//! | kind | unicast (server) | multicast (fanout) | anycast (group) |
//! |---|---|---|---|
//! | legacy | `exclusive[.vhost].exch.topic.server` | `broadcast[.vhost].exch.topic.all` | `unicast[.vhost].exch.topic` |
//! | routable | `openstack.org/om/rpc/unicast[/vhost]/exch/topic/server` | `.../rpc/multicast[/vhost]/exch/topic` | `.../rpc/anycast[/vhost]/exch/topic` |
//! | rabbitmq | `/queue/<legacy unicast>` | `/topic/<legacy multicast>` | `/queue/<legacy anycast>` |
//! | rabbitmq4 | `/queues/<legacy unicast>` | `/exchanges/<legacy multicast>` (fanout) | `/queues/<legacy anycast>` |
//!
//! RabbitMQ 4.x v2 addresses name queues and exchanges that must exist; the engine declares them
//! through the broker's `/management` node before it attaches (see `engine/management.rs`). A
//! server's fanout copy arrives on its own exclusive queue bound to the fanout exchange.
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

use crate::options::{AddressingMode, AmqpOptions, ReplyMode};

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
    /// RabbitMQ 4.x v2 addresses (`/queues/...`, `/exchanges/...`), amqp1-rig extension.
    Rabbitmq4,
}

impl AddressingKind {
    /// Lower-case name (`legacy`, `routable`, `rabbitmq`, `rabbitmq4`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingKind::Legacy => "legacy",
            AddressingKind::Routable => "routable",
            AddressingKind::Rabbitmq => "rabbitmq",
            AddressingKind::Rabbitmq4 => "rabbitmq4",
        }
    }
}

impl std::fmt::Display for AddressingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `(major, minor)` of a RabbitMQ peer, from its Open `version` property (`4.3.6`, `3.10.8`).
pub fn rabbitmq_version(product: Option<&str>, version: Option<&str>) -> Option<(u32, u32)> {
    if product != Some("RabbitMQ") {
        return None;
    }
    let mut parts = version?.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Chooses the addressing kind from the option and the peer's Open `product` and `version`
/// properties (reference §3.1). In `dynamic` mode a missing product or `qpid-cpp` gives legacy,
/// `RabbitMQ` gives the rabbitmq extension (`rabbitmq4`, v2 addresses, from version 4 on), anything
/// else routable.
pub fn resolve_kind(
    mode: AddressingMode,
    product: Option<&str>,
    version: Option<&str>,
) -> AddressingKind {
    match mode {
        AddressingMode::Legacy => AddressingKind::Legacy,
        AddressingMode::Routable => AddressingKind::Routable,
        AddressingMode::Rabbitmq => AddressingKind::Rabbitmq,
        AddressingMode::Rabbitmq4 => AddressingKind::Rabbitmq4,
        AddressingMode::Dynamic => match product {
            None | Some("qpid-cpp") => AddressingKind::Legacy,
            Some("RabbitMQ") => match rabbitmq_version(product, version) {
                Some((major, _)) if major >= 4 => AddressingKind::Rabbitmq4,
                _ => AddressingKind::Rabbitmq,
            },
            Some(_) => AddressingKind::Routable,
        },
    }
}

/// The reply mode a connection uses: `mode` itself unless it is `auto`, which picks from the peer's
/// Open properties: on RabbitMQ 4.1 and later a `temporary-queue` dynamic source, on older RabbitMQ
/// (which refuses dynamic sources) a `named` reply queue, and oslo's `dynamic` reply link anywhere
/// else. `rabbitmq-direct-reply` is never picked: RabbitMQ refuses a sender link to a Direct
/// Reply-To address on the connection that owns it, so an RPC server sharing the caller's
/// transport could not answer.
pub fn resolve_reply_mode(
    mode: ReplyMode,
    product: Option<&str>,
    version: Option<&str>,
) -> ReplyMode {
    if mode != ReplyMode::Auto {
        return mode;
    }
    if product != Some("RabbitMQ") {
        return ReplyMode::Dynamic;
    }
    match rabbitmq_version(product, version) {
        Some((major, minor)) if (major, minor) >= (4, 1) => ReplyMode::TemporaryQueue,
        _ => ReplyMode::Named,
    }
}

/// Address of a named reply queue for `kind`: `/queue/<name>` (RabbitMQ 3.x), `/queues/<name>`
/// (RabbitMQ 4.x), `<name>` otherwise.
pub fn named_reply_address(kind: AddressingKind, name: &str) -> String {
    match kind {
        AddressingKind::Rabbitmq => format!("/queue/{name}"),
        AddressingKind::Rabbitmq4 => v2_queue(name),
        AddressingKind::Legacy | AddressingKind::Routable => name.to_string(),
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, as RabbitMQ's v2 addresses
/// and management paths want (`uri_string:quote`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`percent_encode`] (invalid escapes are kept as they are).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The v2 address of queue `name` (`/queues/<name>`).
pub fn v2_queue(name: &str) -> String {
    format!("/queues/{}", percent_encode(name))
}

/// The v2 address of exchange `name` with an empty routing key (`/exchanges/<name>`).
pub fn v2_exchange(name: &str) -> String {
    format!("/exchanges/{}", percent_encode(name))
}

/// What a v2 address names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Node {
    /// `/queues/<name>`.
    Queue(String),
    /// `/exchanges/<name>` or `/exchanges/<name>/<key>`.
    Exchange {
        /// Exchange name.
        name: String,
        /// Routing key (empty when the address has none).
        key: String,
    },
}

/// Parses a v2 address (`None` for anything else, e.g. a v1 or dynamic address).
pub fn parse_v2(address: &str) -> Option<V2Node> {
    if let Some(q) = address.strip_prefix("/queues/") {
        return (!q.is_empty() && !q.contains('/')).then(|| V2Node::Queue(percent_decode(q)));
    }
    let x = address.strip_prefix("/exchanges/")?;
    let (name, key) = x.split_once('/').unwrap_or((x, ""));
    (!name.is_empty() && !key.contains('/')).then(|| V2Node::Exchange {
        name: percent_decode(name),
        key: percent_decode(key),
    })
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
            AddressingKind::Rabbitmq4 => v2_queue(&self.legacy_unicast(target)),
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
            AddressingKind::Rabbitmq4 => v2_exchange(&self.legacy_multicast(target)),
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
            AddressingKind::Rabbitmq4 => v2_queue(&self.legacy_anycast(target)),
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
            AddressingKind::Rabbitmq4 => v2_queue(&self.legacy_anycast(&t)),
        }
    }
}

#[cfg(test)]
mod tests;
