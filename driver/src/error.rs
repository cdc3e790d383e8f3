//! Error types of the public API.
//!
//! Every operation has its own error kind (`CallErrorKind`, `CastErrorKind`,
//! ...) wrapped in the generic [`Error<K>`]. Match on [`Error::kind`], never on
//! the message text. Extra structured details ride along:
//!
//! * [`Error::remote`]: the exception raised by the remote RPC endpoint
//!   (`CallErrorKind::Remote`);
//! * [`Error::condition`] / [`Error::description`]: the AMQP error condition and
//!   description the broker sent when it refused something (for example
//!   `amqp:not-implemented` / `Dynamic sources not supported` from RabbitMQ 3.x);
//! * [`Error::management`]: the request the broker's management node refused and its answer
//!   (`Management` kinds: RabbitMQ 4.x declarations of queues, exchanges and bindings);
//! * [`std::error::Error::source`]: the lower-level cause (fe2o3, I/O, TLS, ...).

use std::fmt;

use crate::wire::RemoteError;

/// Boxed lower-level cause of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An AMQP error condition and description sent by the peer (broker or router).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// The AMQP error condition symbol, e.g. `amqp:not-implemented`.
    pub condition: String,
    /// The human readable description, e.g. `Dynamic sources not supported`.
    pub description: Option<String>,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.description {
            Some(d) => write!(f, "{}: {}", self.condition, d),
            None => f.write_str(&self.condition),
        }
    }
}

impl From<&fe2o3_amqp_types::definitions::Error> for Condition {
    fn from(e: &fe2o3_amqp_types::definitions::Error) -> Self {
        Condition {
            condition: condition_symbol(&e.condition),
            description: e.description.clone(),
        }
    }
}

/// The string form of an AMQP error condition (`amqp:not-implemented`, ...).
pub(crate) fn condition_symbol(c: &fe2o3_amqp_types::definitions::ErrorCondition) -> String {
    // Every variant serializes as a symbol; this covers feature-gated variants too.
    serde_amqp::to_vec(c)
        .ok()
        .and_then(|b| serde_amqp::from_slice::<fe2o3_amqp_types::primitives::Symbol>(&b).ok())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| format!("{c:?}"))
}

/// A request to the broker's management node (RabbitMQ 4.x, HTTP over AMQP on `/management`)
/// that failed: the request line, the status the node answered (none when no answer came) and its
/// description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagementError {
    /// `METHOD path`, e.g. `PUT /queues/exclusive.openstack.compute.host1`.
    pub request: String,
    /// The response status (`409`, `403`, ...), when the node answered.
    pub status: Option<u16>,
    /// The node's description, or why no answer came (link refused, timed out, ...).
    pub description: String,
}

impl fmt::Display for ManagementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} answered {s}: {}", self.request, self.description),
            None => write!(f, "{}: {}", self.request, self.description),
        }
    }
}

impl std::error::Error for ManagementError {}

/// Generic error of one driver operation: a kind plus optional details.
pub struct Error<K> {
    kind: K,
    source: Option<BoxError>,
    condition: Option<Condition>,
    remote: Option<Box<RemoteError>>,
    detail: Option<String>,
    management: Option<Box<ManagementError>>,
}

impl<K: Copy> Error<K> {
    /// A new error of this kind with no further detail.
    pub fn new(kind: K) -> Self {
        Error {
            kind,
            source: None,
            condition: None,
            remote: None,
            detail: None,
            management: None,
        }
    }

    /// A new error of this kind caused by `source`.
    pub fn with_source(kind: K, source: impl Into<BoxError>) -> Self {
        Error {
            source: Some(source.into()),
            ..Error::new(kind)
        }
    }

    /// The kind of error; stable, match on this.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The exception raised by the remote endpoint, for remote failures.
    pub fn remote(&self) -> Option<&RemoteError> {
        self.remote.as_deref()
    }

    /// The AMQP error condition the broker sent, when it refused something.
    pub fn condition(&self) -> Option<&str> {
        self.condition.as_ref().map(|c| c.condition.as_str())
    }

    /// The AMQP error description the broker sent, when it refused something.
    pub fn description(&self) -> Option<&str> {
        self.condition
            .as_ref()
            .and_then(|c| c.description.as_deref())
    }

    /// The management request that failed, for `Management` kinds.
    pub fn management(&self) -> Option<&ManagementError> {
        self.management.as_deref()
    }

    /// A short human readable detail (address, host, ...), if any.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub(crate) fn set_condition(mut self, c: Option<Condition>) -> Self {
        self.condition = c;
        self
    }

    pub(crate) fn set_remote(mut self, r: RemoteError) -> Self {
        self.remote = Some(Box::new(r));
        self
    }

    pub(crate) fn set_management(mut self, m: ManagementError) -> Self {
        self.management = Some(Box::new(m));
        self
    }

    pub(crate) fn set_detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    /// Re-labels the error with another kind type, keeping every detail.
    pub(crate) fn map_kind<K2: Copy>(self, kind: K2) -> Error<K2> {
        Error {
            kind,
            source: self.source,
            condition: self.condition,
            remote: self.remote,
            detail: self.detail,
            management: self.management,
        }
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(d) = &self.detail {
            write!(f, " ({d})")?;
        }
        if let Some(r) = &self.remote {
            write!(f, ": {}.{}: {}", r.module, r.class, r.message)?;
        }
        if let Some(m) = &self.management {
            write!(f, ": {m}")?;
        }
        if let Some(c) = &self.condition {
            write!(f, ": {c}")?;
        }
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(x) = &self.detail {
            d.field("detail", x);
        }
        if let Some(r) = &self.remote {
            d.field("remote_class", &r.class)
                .field("remote_module", &r.module)
                .field("remote_message", &r.message);
        }
        if let Some(m) = &self.management {
            d.field("management", m);
        }
        if let Some(c) = &self.condition {
            d.field("condition", c);
        }
        if let Some(s) = &self.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl<K: fmt::Debug + fmt::Display> std::error::Error for Error<K> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

macro_rules! kinds {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $var),+
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$var => $text),+ })
            }
        }
        impl $name {
            /// A stable snake_case name for reports (`timed_out`, `remote`, ...).
            pub fn as_str(&self) -> &'static str {
                match self { $(Self::$var => kinds!(@snake $var)),+ }
            }
        }
    };
    (@snake TimedOut) => { "timed_out" };
    (@snake Remote) => { "remote" };
    (@snake DeliveryFailed) => { "delivery_failed" };
    (@snake Disconnected) => { "disconnected" };
    (@snake InvalidTarget) => { "invalid_target" };
    (@snake Refused) => { "refused" };
    (@snake InvalidUrl) => { "invalid_url" };
    (@snake Auth) => { "auth" };
    (@snake Tls) => { "tls" };
    (@snake Io) => { "io" };
    (@snake Closed) => { "closed" };
    (@snake Config) => { "config" };
    (@snake MalformedReply) => { "malformed_reply" };
    (@snake Management) => { "management" };
}

kinds!(
    /// Why an RPC call failed.
    CallErrorKind {
        /// No reply (or call-monitor heartbeat) arrived in time.
        TimedOut => "call timed out",
        /// The remote endpoint raised an exception; see [`Error::remote`].
        Remote => "remote endpoint raised an exception",
        /// The broker did not accept the request (rejected, released with no
        /// retries left, lost with the connection before settlement).
        DeliveryFailed => "request delivery failed",
        /// The connection was lost while waiting for the reply.
        Disconnected => "connection lost while waiting for the reply",
        /// The target cannot be called (fanout, empty topic, ...).
        InvalidTarget => "invalid call target",
        /// The broker refused a link the call needs; see [`Error::condition`].
        Refused => "broker refused the link",
        /// The transport was closed.
        Closed => "transport closed",
        /// The reply arrived but its body cannot be decoded (not JSON, not
        /// an amqp-value string, wrong types); [`Error::detail`] says why.
        MalformedReply => "malformed reply",
        /// The broker's management node refused a declaration the target needs (RabbitMQ
        /// 4.x); see [`Error::management`].
        Management => "broker management request failed",
    }
);

kinds!(
    /// Why an RPC cast (or fanout) failed.
    CastErrorKind {
        /// The send deadline (`default_send_timeout`) passed.
        TimedOut => "cast timed out",
        /// The broker did not accept the message.
        DeliveryFailed => "cast delivery failed",
        /// The connection was lost before the message was settled.
        Disconnected => "connection lost during cast",
        /// The target cannot be cast to.
        InvalidTarget => "invalid cast target",
        /// The broker refused the sender link; see [`Error::condition`].
        Refused => "broker refused the link",
        /// The transport was closed.
        Closed => "transport closed",
        /// The broker's management node refused a declaration the target needs (RabbitMQ
        /// 4.x); see [`Error::management`].
        Management => "broker management request failed",
    }
);

kinds!(
    /// Why sending a notification failed.
    NotifyErrorKind {
        /// The notify deadline (`default_notify_timeout`) passed.
        TimedOut => "notification timed out",
        /// The broker did not accept the notification.
        DeliveryFailed => "notification delivery failed",
        /// The connection was lost before the notification was settled.
        Disconnected => "connection lost during notification",
        /// The broker refused the sender link; see [`Error::condition`].
        Refused => "broker refused the link",
        /// The transport was closed.
        Closed => "transport closed",
        /// The broker's management node refused a declaration the target needs (RabbitMQ
        /// 4.x); see [`Error::management`].
        Management => "broker management request failed",
    }
);

kinds!(
    /// Why starting an RPC server or notification listener failed.
    ListenErrorKind {
        /// The links were not attached in time.
        TimedOut => "listener attach timed out",
        /// The broker refused a receiver link; see [`Error::condition`].
        Refused => "broker refused the link",
        /// The target is not valid for listening.
        InvalidTarget => "invalid listen target",
        /// The connection was lost while attaching.
        Disconnected => "connection lost while attaching",
        /// The transport was closed.
        Closed => "transport closed",
        /// The broker's management node refused a declaration the target needs (RabbitMQ
        /// 4.x); see [`Error::management`].
        Management => "broker management request failed",
    }
);

kinds!(
    /// Why connecting failed.
    ConnectErrorKind {
        /// The transport URL or an option is invalid.
        InvalidUrl => "invalid transport url or option",
        /// SASL authentication failed (`amqp:unauthorized-access`).
        Auth => "authentication failed",
        /// The TLS handshake or TLS configuration failed.
        Tls => "tls failed",
        /// The TCP connection or the AMQP handshake failed.
        Io => "i/o error",
        /// The connection was not open within `connect_timeout`.
        TimedOut => "connect timed out",
        /// The peer closed the connection during the open handshake.
        Refused => "connection refused by peer",
    }
);

/// Error of [`crate::RpcClient::call`].
pub type CallError = Error<CallErrorKind>;
/// Error of [`crate::RpcClient::cast`].
pub type CastError = Error<CastErrorKind>;
/// Error of [`crate::Notifier::notify`].
pub type NotifyError = Error<NotifyErrorKind>;
/// Error of starting an [`crate::RpcServer`] or [`crate::NotificationListener`].
pub type ListenError = Error<ListenErrorKind>;
/// Error of [`crate::Transport::connect`].
pub type ConnectError = Error<ConnectErrorKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_shows_condition_and_description() {
        let e = CallError::new(CallErrorKind::Refused).set_condition(Some(Condition {
            condition: "amqp:not-implemented".into(),
            description: Some("Dynamic sources not supported".into()),
        }));
        assert_eq!(e.kind(), CallErrorKind::Refused);
        assert_eq!(e.condition(), Some("amqp:not-implemented"));
        assert_eq!(e.description(), Some("Dynamic sources not supported"));
        assert_eq!(
            e.to_string(),
            "broker refused the link: amqp:not-implemented: Dynamic sources not supported"
        );
    }

    #[test]
    fn management_failure_names_the_request_and_the_answer() {
        let e = CastError::new(CastErrorKind::Management).set_management(ManagementError {
            request: "PUT /queues/q1".into(),
            status: Some(409),
            description: "inequivalent arg 'durable'".into(),
        });
        assert_eq!(e.kind().as_str(), "management");
        let m = e.management().expect("management detail");
        assert_eq!(m.status, Some(409));
        assert_eq!(
            e.to_string(),
            "broker management request failed: PUT /queues/q1 answered 409: inequivalent arg 'durable'"
        );
    }

    #[test]
    fn kind_names_are_snake_case() {
        assert_eq!(CallErrorKind::TimedOut.as_str(), "timed_out");
        assert_eq!(ConnectErrorKind::InvalidUrl.as_str(), "invalid_url");
        assert_eq!(CastErrorKind::DeliveryFailed.as_str(), "delivery_failed");
    }
}
