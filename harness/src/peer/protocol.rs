//! The control channel's messages: one JSON object per line each way (documented at the top of
//! `harness/peers/oslo_peer.py`). Requests are typed here; replies and events keep their raw fields
//! beside the typed ones.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

/// What kind of failure a peer reply reports (the `kind` of its `error` object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// The remote endpoint raised (`class`/`module` say what).
    Remote,
    /// oslo raised `MessagingTimeout`.
    Timeout,
    /// oslo raised `MessageDeliveryFailure`.
    Delivery,
    /// oslo raised `InvalidTarget`.
    InvalidTarget,
    /// Another `MessagingException`.
    Messaging,
    /// The configuration was refused.
    Config,
    /// A service is not ready yet.
    NotReady,
    /// The request names a service the peer does not have.
    UnknownService,
    /// The request is malformed.
    BadRequest,
    /// The control channel broke.
    Protocol,
    /// The peer itself failed.
    Internal,
    /// A kind this harness does not know (newer peer), as written.
    Other(String),
}

impl FailureKind {
    /// From the wire spelling.
    pub fn parse(s: &str) -> FailureKind {
        match s {
            "remote" => FailureKind::Remote,
            "timeout" => FailureKind::Timeout,
            "delivery" => FailureKind::Delivery,
            "invalid_target" => FailureKind::InvalidTarget,
            "messaging" => FailureKind::Messaging,
            "config" => FailureKind::Config,
            "not_ready" => FailureKind::NotReady,
            "unknown_service" => FailureKind::UnknownService,
            "bad_request" => FailureKind::BadRequest,
            "protocol" => FailureKind::Protocol,
            "internal" => FailureKind::Internal,
            other => FailureKind::Other(other.to_string()),
        }
    }

    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            FailureKind::Remote => "remote",
            FailureKind::Timeout => "timeout",
            FailureKind::Delivery => "delivery",
            FailureKind::InvalidTarget => "invalid_target",
            FailureKind::Messaging => "messaging",
            FailureKind::Config => "config",
            FailureKind::NotReady => "not_ready",
            FailureKind::UnknownService => "unknown_service",
            FailureKind::BadRequest => "bad_request",
            FailureKind::Protocol => "protocol",
            FailureKind::Internal => "internal",
            FailureKind::Other(s) => s,
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` object of a failed reply: `{"kind", "class", "module", "message", ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerFailure {
    /// What failed.
    pub kind: FailureKind,
    /// Exception class (for `remote`: exactly as on the wire).
    pub class: Option<String>,
    /// Exception module (for `remote`: exactly as on the wire).
    pub module: Option<String>,
    /// Message (for `remote`: the failure's `message`, without traceback).
    pub message: String,
    /// The whole error object, including extra fields such as `raised` and `tb`.
    pub raw: Value,
}

impl PeerFailure {
    /// From an `error` object.
    pub fn from_value(v: &Value) -> PeerFailure {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        PeerFailure {
            kind: FailureKind::parse(s("kind").as_deref().unwrap_or("internal")),
            class: s("class"),
            module: s("module"),
            message: s("message").unwrap_or_default(),
            raw: v.clone(),
        }
    }
}

impl fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.module, &self.class) {
            (Some(m), Some(c)) => write!(f, " {m}.{c}")?,
            (None, Some(c)) => write!(f, " {c}")?,
            _ => {}
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// One reply line: `ok` plus every other field of the object (without `id`/`ok`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request id this reply answers.
    pub id: u64,
    /// Whether the op succeeded.
    pub ok: bool,
    /// The reply's other fields (`result`, `event`, `addresses`, `error`, ...).
    pub fields: Map<String, Value>,
}

impl Reply {
    /// The error object when `ok` is false.
    pub fn failure(&self) -> Option<PeerFailure> {
        if self.ok {
            None
        } else {
            Some(PeerFailure::from_value(
                self.fields.get("error").unwrap_or(&Value::Null),
            ))
        }
    }

    /// `Ok(fields)` or `Err(failure)`.
    pub fn into_result(self) -> Result<Map<String, Value>, Box<PeerFailure>> {
        match self.failure() {
            None => Ok(self.fields),
            Some(f) => Err(Box::new(f)),
        }
    }
}

/// An asynchronous event line (no `id`): `{"event": "call" | "notification" | ..., "service": ..., ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerEvent {
    /// The event name.
    pub event: String,
    /// The service that produced it, when it names one.
    pub service: Option<String>,
    /// The whole line.
    pub raw: Value,
}

/// A service's oslo target as the peer takes it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetJson {
    /// Topic.
    pub topic: String,
    /// Server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl From<&driver::Target> for TargetJson {
    fn from(t: &driver::Target) -> Self {
        TargetJson {
            topic: t.topic.clone(),
            server: t.server.clone(),
            exchange: t.exchange.clone(),
            version: t.version.clone(),
            namespace: t.namespace.clone(),
        }
    }
}

/// The requests the runner sends (`op` is the variant name in snake_case).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start an RPC server.
    RpcServer {
        /// Service name.
        service: String,
        /// Transport URL (passwords in clear: the channel is a pipe, never logged).
        url: String,
        /// Target.
        target: TargetJson,
        /// Endpoints in the scenario format.
        endpoints: Vec<Value>,
        /// `{"oslo_messaging_amqp": ..., "DEFAULT": ...}`.
        config: Value,
    },
    /// Start a notification listener.
    Listener {
        /// Service name.
        service: String,
        /// Transport URL.
        url: String,
        /// Targets.
        targets: Vec<TargetJson>,
        /// Requeue the first N deliveries.
        requeue: usize,
        /// Priorities (all when absent).
        #[serde(skip_serializing_if = "Option::is_none")]
        priorities: Option<Vec<String>>,
        /// Pool.
        #[serde(skip_serializing_if = "Option::is_none")]
        pool: Option<String>,
        /// Configuration.
        config: Value,
    },
    /// An RPC call.
    Call(CallRequest),
    /// An RPC cast.
    Cast(CallRequest),
    /// An RPC fanout.
    Fanout(CallRequest),
    /// Create a notifier (an error containing "already exists" means it is there).
    Notifier {
        /// Its service name.
        service: String,
        /// Transport URL.
        url: String,
        /// `v1` or `v2`.
        driver: String,
        /// Topics.
        topics: Vec<String>,
        /// Publisher id.
        publisher_id: String,
    },
    /// Send a notification through a notifier.
    Notify {
        /// The notifier's service name.
        service: String,
        /// Priority (lower case).
        priority: String,
        /// Event type.
        event_type: String,
        /// Payload.
        payload: Value,
        /// Context.
        ctxt: Map<String, Value>,
    },
    /// Stop every service.
    Stop {},
}

impl Request {
    /// The `op` name.
    pub fn op(&self) -> &'static str {
        match self {
            Request::RpcServer { .. } => "rpc_server",
            Request::Listener { .. } => "listener",
            Request::Call(_) => "call",
            Request::Cast(_) => "cast",
            Request::Fanout(_) => "fanout",
            Request::Notifier { .. } => "notifier",
            Request::Notify { .. } => "notify",
            Request::Stop {} => "stop",
        }
    }
}

/// A call, cast or fanout.
#[derive(Debug, Clone, Serialize)]
pub struct CallRequest {
    /// Transport URL of the sending service.
    pub url: String,
    /// Target.
    pub target: TargetJson,
    /// Method.
    pub method: String,
    /// Arguments.
    pub args: Map<String, Value>,
    /// Context.
    pub ctxt: Map<String, Value>,
    /// Call timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Call monitor timeout in whole seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_monitor_timeout: Option<u64>,
}
