//! Driver options: the 38 `[oslo_messaging_amqp]` options of oslo.messaging 14.9.3
//! (reference §6), the amqp1-rig extensions, and the oslo-style INI loader.
//!
//! * Durations are kept as **integer seconds**, exactly like oslo (`idle_timeout: u64`,
//!   `default_send_timeout: u64`, ...). Convert with `Duration::from_secs` at the use site.
//! * [`AmqpOptions::set`] converts a textual value with the option's oslo type and bounds.
//!   It is used for INI values and for URL query parameters (which override the INI file,
//!   as oslo's `ConfigOptsProxy` does).
//! * [`Config`] bundles the transport URL, the `[oslo_messaging_amqp]` options and the
//!   few `[DEFAULT]` / `[oslo_messaging_notifications]` options the driver needs.
//!
//! Known, deliberate differences from oslo 14.9.3:
//! * `?pre_settled=...` in a URL works here (repeat the parameter or separate values by
//!   commas). In oslo the value came back as a plain string whose characters were iterated,
//!   so nothing was pre-settled (reference §1).
//! * `addressing_mode` only accepts `dynamic`, `legacy`, `routable` (and the `rabbitmq` and
//!   `rabbitmq4` extensions); oslo accepted any string and silently treated unknown values as routable.
//! * `idle_timeout` must be >= 0 (oslo has no lower bound; negative values meant "off").
//! * Unknown keys in `[oslo_messaging_amqp]` are errors (oslo ignores them), so typos are
//!   reported with a did-you-mean suggestion.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::url::{Secret, TransportUrl, UrlError};

mod ini;

/// How addresses are built (option `addressing_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum AddressingMode {
    /// Pick legacy or routable from the peer's Open `product` property (oslo default).
    #[default]
    Dynamic,
    /// qpidd-style addresses (`exclusive.openstack.topic.server`).
    Legacy,
    /// qdrouterd-style addresses (`openstack.org/om/rpc/unicast/...`).
    Routable,
    /// amqp1-rig extension: RabbitMQ 3.x AMQP 1.0 plugin addresses (`/queue/...`, `/topic/...`).
    Rabbitmq,
    /// amqp1-rig extension: RabbitMQ 4.x v2 addresses (`/queues/<q>`, `/exchanges/<x>`), with the
    /// queues, exchanges and bindings declared through the broker's `/management` node.
    Rabbitmq4,
}

impl AddressingMode {
    /// Every mode, in the order documentation lists them.
    pub const ALL: [AddressingMode; 5] = [
        AddressingMode::Dynamic,
        AddressingMode::Legacy,
        AddressingMode::Routable,
        AddressingMode::Rabbitmq,
        AddressingMode::Rabbitmq4,
    ];

    /// The option value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AddressingMode::Dynamic => "dynamic",
            AddressingMode::Legacy => "legacy",
            AddressingMode::Routable => "routable",
            AddressingMode::Rabbitmq => "rabbitmq",
            AddressingMode::Rabbitmq4 => "rabbitmq4",
        }
    }
}

impl FromStr for AddressingMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "dynamic" => Ok(AddressingMode::Dynamic),
            "legacy" => Ok(AddressingMode::Legacy),
            "routable" => Ok(AddressingMode::Routable),
            "rabbitmq" => Ok(AddressingMode::Rabbitmq),
            "rabbitmq4" => Ok(AddressingMode::Rabbitmq4),
            _ => Err(()),
        }
    }
}

impl fmt::Display for AddressingMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the RPC client receives replies (amqp1-rig extension option `reply_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum ReplyMode {
    /// Picked per connection from the peer's Open properties: on RabbitMQ `named` (3.x, 4.0) or
    /// `temporary-queue` (4.1 and later), `dynamic` on every other broker (so qpidd and
    /// qdrouterd see exactly what the Python driver sends).
    #[default]
    Auto,
    /// A receiver link with a dynamic source (what the Python driver does).
    Dynamic,
    /// A receiver link on a named address chosen by the driver.
    Named,
    /// RabbitMQ 4.x "Direct Reply-To" (`rabbitmq:volatile-queue` capability).
    RabbitmqDirectReply,
    /// A dynamic source with the `temporary-queue` capability (RabbitMQ 4.1 and later).
    TemporaryQueue,
}

impl ReplyMode {
    /// Every mode, in the order documentation lists them.
    pub const ALL: [ReplyMode; 5] = [
        ReplyMode::Auto,
        ReplyMode::Dynamic,
        ReplyMode::Named,
        ReplyMode::RabbitmqDirectReply,
        ReplyMode::TemporaryQueue,
    ];

    /// The option value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyMode::Auto => "auto",
            ReplyMode::Dynamic => "dynamic",
            ReplyMode::Named => "named",
            ReplyMode::RabbitmqDirectReply => "rabbitmq-direct-reply",
            ReplyMode::TemporaryQueue => "temporary-queue",
        }
    }
}

impl FromStr for ReplyMode {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "auto" => Ok(ReplyMode::Auto),
            "dynamic" => Ok(ReplyMode::Dynamic),
            "named" => Ok(ReplyMode::Named),
            "rabbitmq-direct-reply" => Ok(ReplyMode::RabbitmqDirectReply),
            "temporary-queue" => Ok(ReplyMode::TemporaryQueue),
            _ => Err(()),
        }
    }
}

impl fmt::Display for ReplyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message type that can be sent pre-settled (option `pre_settled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreSettled {
    /// RPC call requests.
    RpcCall,
    /// RPC replies (and call-monitor heartbeats).
    RpcReply,
    /// RPC casts and fanouts.
    RpcCast,
    /// Notifications.
    Notify,
}

impl PreSettled {
    /// The option value spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PreSettled::RpcCall => "rpc-call",
            PreSettled::RpcReply => "rpc-reply",
            PreSettled::RpcCast => "rpc-cast",
            PreSettled::Notify => "notify",
        }
    }
}

impl FromStr for PreSettled {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "rpc-call" => Ok(PreSettled::RpcCall),
            "rpc-reply" => Ok(PreSettled::RpcReply),
            "rpc-cast" => Ok(PreSettled::RpcCast),
            "notify" => Ok(PreSettled::Notify),
            _ => Err(()),
        }
    }
}

impl fmt::Display for PreSettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `[oslo_messaging_amqp]` options (oslo.messaging 14.9.3) plus amqp1-rig extensions.
///
/// Field names are the oslo option names. All durations are integer **seconds**.
/// `Default` gives the oslo defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    /// AMQP container-id; `None` => `openstack.org/om/container/<node>/<cmd>/<pid>/<uuid>`.
    pub container_name: Option<String>,
    /// Connection idle timeout in seconds (Open idle-time-out); 0 = off.
    pub idle_timeout: u64,
    /// Dump AMQP frames (debug aid).
    pub trace: bool,
    /// Use TLS.
    pub ssl: bool,
    /// CA PEM used to verify the server ('' = none).
    pub ssl_ca_file: String,
    /// Client certificate PEM ('' = none).
    pub ssl_cert_file: String,
    /// Client private key PEM ('' = none).
    pub ssl_key_file: String,
    /// Password of the client key file. Encrypted keys are not supported:
    /// connecting with an encrypted `ssl_key_file` fails with a `Tls` error.
    pub ssl_key_password: Option<Secret>,
    /// Check the server certificate against the vhost name instead of the host name.
    pub ssl_verify_vhost: bool,
    /// Space-separated acceptable SASL mechanisms ('' = any).
    pub sasl_mechanisms: String,
    /// Cyrus SASL config directory.
    pub sasl_config_dir: String,
    /// Cyrus SASL config file name (without `.conf`).
    pub sasl_config_name: String,
    /// Realm appended to user names that have none.
    pub sasl_default_realm: String,
    /// Seconds before the first reconnect attempt (>= 1).
    pub connection_retry_interval: u64,
    /// Factor applied to the retry interval after each failure (>= 0; multiplicative, as the code does).
    pub connection_retry_backoff: u64,
    /// Cap on the retry interval in seconds (>= 1).
    pub connection_retry_interval_max: u64,
    /// Seconds before re-attaching a failed link or resending a released message (>= 1).
    pub link_retry_delay: u64,
    /// Resend attempts for replies (-1 = infinite).
    pub default_reply_retry: i64,
    /// Deadline in seconds for delivering a reply (>= 5).
    pub default_reply_timeout: u64,
    /// Deadline in seconds for a cast or call without a timeout (>= 5).
    pub default_send_timeout: u64,
    /// Deadline in seconds for delivering a notification (>= 5).
    pub default_notify_timeout: u64,
    /// Idle sender links are purged after this many seconds (>= 1).
    pub default_sender_link_timeout: u64,
    /// Address syntax selection.
    pub addressing_mode: AddressingMode,
    /// Put the vhost in addresses (true) or in the Open hostname (false).
    pub pseudo_vhost: bool,
    /// Legacy prefix for unicast (one server).
    pub server_request_prefix: String,
    /// Legacy prefix for fanout.
    pub broadcast_prefix: String,
    /// Legacy prefix for anycast (any server of a group).
    pub group_request_prefix: String,
    /// Routable RPC prefix.
    pub rpc_address_prefix: String,
    /// Routable notification prefix.
    pub notify_address_prefix: String,
    /// Routable tag for fanout.
    pub multicast_address: String,
    /// Routable tag for one server.
    pub unicast_address: String,
    /// Routable tag for competing consumers.
    pub anycast_address: String,
    /// Notification exchange when the target has none (then control_exchange).
    pub default_notification_exchange: Option<String>,
    /// RPC exchange when the target has none (then control_exchange).
    pub default_rpc_exchange: Option<String>,
    /// Credit window of the reply link (>= 1).
    pub reply_link_credit: u32,
    /// Credit window per RPC server link (>= 1).
    pub rpc_server_credit: u32,
    /// Credit window per notification link (>= 1).
    pub notify_server_credit: u32,
    /// Message types sent pre-settled.
    pub pre_settled: Vec<PreSettled>,
    /// Extension: how replies are received.
    pub reply_mode: ReplyMode,
    /// Extension: timeout in seconds for TCP connect + open, begin and attach handshakes (>= 1).
    pub connect_timeout: u64,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        AmqpOptions {
            container_name: None,
            idle_timeout: 0,
            trace: false,
            ssl: false,
            ssl_ca_file: String::new(),
            ssl_cert_file: String::new(),
            ssl_key_file: String::new(),
            ssl_key_password: None,
            ssl_verify_vhost: false,
            sasl_mechanisms: String::new(),
            sasl_config_dir: String::new(),
            sasl_config_name: String::new(),
            sasl_default_realm: String::new(),
            connection_retry_interval: 1,
            connection_retry_backoff: 2,
            connection_retry_interval_max: 30,
            link_retry_delay: 10,
            default_reply_retry: 0,
            default_reply_timeout: 30,
            default_send_timeout: 30,
            default_notify_timeout: 30,
            default_sender_link_timeout: 600,
            addressing_mode: AddressingMode::Dynamic,
            pseudo_vhost: true,
            server_request_prefix: "exclusive".into(),
            broadcast_prefix: "broadcast".into(),
            group_request_prefix: "unicast".into(),
            rpc_address_prefix: "openstack.org/om/rpc".into(),
            notify_address_prefix: "openstack.org/om/notify".into(),
            multicast_address: "multicast".into(),
            unicast_address: "unicast".into(),
            anycast_address: "anycast".into(),
            default_notification_exchange: None,
            default_rpc_exchange: None,
            reply_link_credit: 200,
            rpc_server_credit: 100,
            notify_server_credit: 100,
            pre_settled: vec![PreSettled::RpcCast, PreSettled::RpcReply],
            reply_mode: ReplyMode::Auto,
            connect_timeout: 30,
        }
    }
}

/// The 38 oslo option names of `[oslo_messaging_amqp]`, in reference §6 order.
pub const OSLO_OPTION_NAMES: [&str; 38] = [
    "container_name",
    "idle_timeout",
    "trace",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_key_password",
    "ssl_verify_vhost",
    "sasl_mechanisms",
    "sasl_config_dir",
    "sasl_config_name",
    "sasl_default_realm",
    "connection_retry_interval",
    "connection_retry_backoff",
    "connection_retry_interval_max",
    "link_retry_delay",
    "default_reply_retry",
    "default_reply_timeout",
    "default_send_timeout",
    "default_notify_timeout",
    "default_sender_link_timeout",
    "addressing_mode",
    "pseudo_vhost",
    "server_request_prefix",
    "broadcast_prefix",
    "group_request_prefix",
    "rpc_address_prefix",
    "notify_address_prefix",
    "multicast_address",
    "unicast_address",
    "anycast_address",
    "default_notification_exchange",
    "default_rpc_exchange",
    "reply_link_credit",
    "rpc_server_credit",
    "notify_server_credit",
    "pre_settled",
];

/// amqp1-rig extension option names accepted in `[oslo_messaging_amqp]` and URL queries.
pub const EXTENSION_OPTION_NAMES: [&str; 2] = ["reply_mode", "connect_timeout"];

/// Options that oslo also reads from the deprecated group `[amqp1]`.
pub const AMQP1_GROUP_OPTIONS: [&str; 13] = [
    "container_name",
    "idle_timeout",
    "trace",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "ssl_key_password",
    "sasl_mechanisms",
    "sasl_config_dir",
    "sasl_config_name",
    "server_request_prefix",
    "broadcast_prefix",
    "group_request_prefix",
];

/// Why an option could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// The option name does not exist.
    #[error("unknown option \"{name}\"{}", suggestion_text(.suggestion))]
    Unknown {
        /// The name as given.
        name: String,
        /// The closest valid name, if one is close enough.
        suggestion: Option<String>,
    },
    /// The value does not convert to the option's type or is out of bounds.
    #[error("{name}: invalid value \"{value}\": expected {expected}")]
    Invalid {
        /// Option name.
        name: String,
        /// The value as given (never a secret: secret options accept any string).
        value: String,
        /// The expected type or range, e.g. `an integer >= 0`.
        expected: String,
    },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean \"{s}\"?)"),
        None => String::new(),
    }
}

/// The closest valid option name, if it is within a small edit distance.
pub fn suggest_option(name: &str) -> Option<String> {
    let lname = name.to_ascii_lowercase();
    OSLO_OPTION_NAMES
        .iter()
        .chain(EXTENSION_OPTION_NAMES.iter())
        .map(|n| (strsim::levenshtein(&lname, n), *n))
        .filter(|(d, _)| *d <= 1.max(lname.len() / 3) && *d < lname.len())
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.to_string())
}

const BOOL_EXPECTED: &str = "a boolean (true/false, yes/no, on/off, 1/0)";

fn parse_bool(name: &str, value: &str) -> Result<bool, OptionError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(invalid(name, value, BOOL_EXPECTED)),
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> OptionError {
    OptionError::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        expected: expected.to_string(),
    }
}

fn parse_int(name: &str, value: &str, min: i64, max: i64) -> Result<i64, OptionError> {
    let expected = if max == i64::MAX {
        format!("an integer >= {min}")
    } else {
        format!("an integer from {min} to {max}")
    };
    match value.trim().parse::<i64>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(invalid(name, value, &expected)),
    }
}

/// A duration in seconds: an integer from `min` to [`crate::MAX_TIMEOUT_SECS`].
fn parse_secs(name: &str, value: &str, min: u64) -> Result<u64, OptionError> {
    // Both bounds are far below i64::MAX, so the casts are lossless.
    parse_int(name, value, min as i64, crate::MAX_TIMEOUT_SECS as i64).map(|v| v.unsigned_abs())
}

fn parse_u64(name: &str, value: &str, min: u64) -> Result<u64, OptionError> {
    // `min` is small, so the cast is lossless; the result is >= min >= 0.
    parse_int(name, value, min as i64, i64::MAX).map(|v| v.unsigned_abs())
}

fn parse_u32(name: &str, value: &str, min: u32) -> Result<u32, OptionError> {
    parse_int(name, value, i64::from(min), i64::from(u32::MAX))
        .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

fn opt_str(value: &str) -> Option<String> {
    if value.is_empty() {
        None
    } else {
        Some(value.to_string())
    }
}

/// Parses pre_settled values, warning about (and dropping) unknown ones as oslo does.
fn parse_pre_settled<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<PreSettled> {
    let mut out = Vec::new();
    for raw in values {
        for v in raw.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            match v.parse::<PreSettled>() {
                Ok(p) => {
                    if !out.contains(&p) {
                        out.push(p)
                    }
                }
                Err(()) => tracing::warn!(
                    value = v,
                    "ignoring unknown pre_settled value (expected rpc-call, rpc-reply, rpc-cast or notify)"
                ),
            }
        }
    }
    out
}

impl AmqpOptions {
    /// Whether `name` is a valid option name (oslo or extension).
    pub fn is_option(name: &str) -> bool {
        OSLO_OPTION_NAMES.contains(&name) || EXTENSION_OPTION_NAMES.contains(&name)
    }

    /// Sets option `name` from its textual `value`, converting with the option's oslo type
    /// and bounds. Booleans accept true/false, 1/0, yes/no, on/off (any case). For the
    /// multi-valued `pre_settled`, the value replaces the list (comma-separated values are
    /// accepted; use [`AmqpOptions::set_multi`] for repeated keys). An empty value for an
    /// optional string option (e.g. `default_rpc_exchange`) means "unset".
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), OptionError> {
        let v = value;
        match name {
            "container_name" => self.container_name = opt_str(v),
            "idle_timeout" => self.idle_timeout = parse_secs(name, v, 0)?,
            "trace" => self.trace = parse_bool(name, v)?,
            "ssl" => self.ssl = parse_bool(name, v)?,
            "ssl_ca_file" => self.ssl_ca_file = v.to_string(),
            "ssl_cert_file" => self.ssl_cert_file = v.to_string(),
            "ssl_key_file" => self.ssl_key_file = v.to_string(),
            "ssl_key_password" => self.ssl_key_password = opt_str(v).map(Secret::from),
            "ssl_verify_vhost" => self.ssl_verify_vhost = parse_bool(name, v)?,
            "sasl_mechanisms" => self.sasl_mechanisms = v.to_string(),
            "sasl_config_dir" => self.sasl_config_dir = v.to_string(),
            "sasl_config_name" => self.sasl_config_name = v.to_string(),
            "sasl_default_realm" => self.sasl_default_realm = v.to_string(),
            "connection_retry_interval" => self.connection_retry_interval = parse_secs(name, v, 1)?,
            "connection_retry_backoff" => self.connection_retry_backoff = parse_u64(name, v, 0)?,
            "connection_retry_interval_max" => {
                self.connection_retry_interval_max = parse_secs(name, v, 1)?
            }
            "link_retry_delay" => self.link_retry_delay = parse_secs(name, v, 1)?,
            "default_reply_retry" => self.default_reply_retry = parse_int(name, v, -1, i64::MAX)?,
            "default_reply_timeout" => self.default_reply_timeout = parse_secs(name, v, 5)?,
            "default_send_timeout" => self.default_send_timeout = parse_secs(name, v, 5)?,
            "default_notify_timeout" => self.default_notify_timeout = parse_secs(name, v, 5)?,
            "default_sender_link_timeout" => {
                self.default_sender_link_timeout = parse_secs(name, v, 1)?
            }
            "addressing_mode" => {
                self.addressing_mode = v.trim().parse().map_err(|()| {
                    invalid(
                        name,
                        v,
                        "one of dynamic, legacy, routable, rabbitmq, rabbitmq4",
                    )
                })?
            }
            "pseudo_vhost" => self.pseudo_vhost = parse_bool(name, v)?,
            "server_request_prefix" => self.server_request_prefix = v.to_string(),
            "broadcast_prefix" => self.broadcast_prefix = v.to_string(),
            "group_request_prefix" => self.group_request_prefix = v.to_string(),
            "rpc_address_prefix" => self.rpc_address_prefix = v.to_string(),
            "notify_address_prefix" => self.notify_address_prefix = v.to_string(),
            "multicast_address" => self.multicast_address = v.to_string(),
            "unicast_address" => self.unicast_address = v.to_string(),
            "anycast_address" => self.anycast_address = v.to_string(),
            "default_notification_exchange" => self.default_notification_exchange = opt_str(v),
            "default_rpc_exchange" => self.default_rpc_exchange = opt_str(v),
            "reply_link_credit" => self.reply_link_credit = parse_u32(name, v, 1)?,
            "rpc_server_credit" => self.rpc_server_credit = parse_u32(name, v, 1)?,
            "notify_server_credit" => self.notify_server_credit = parse_u32(name, v, 1)?,
            "pre_settled" => self.pre_settled = parse_pre_settled([v]),
            "reply_mode" => {
                self.reply_mode = v.trim().parse().map_err(|()| {
                    invalid(
                        name,
                        v,
                        "one of auto, dynamic, named, rabbitmq-direct-reply, temporary-queue",
                    )
                })?
            }
            "connect_timeout" => self.connect_timeout = parse_secs(name, v, 1)?,
            _ => {
                return Err(OptionError::Unknown {
                    name: name.to_string(),
                    suggestion: suggest_option(name),
                })
            }
        }
        Ok(())
    }

    /// Sets an option from several values (repeated INI keys or query parameters).
    /// For `pre_settled` all values are combined; for single-valued options the last one wins
    /// (every value is still validated).
    pub fn set_multi(&mut self, name: &str, values: &[&str]) -> Result<(), OptionError> {
        if name == "pre_settled" {
            self.pre_settled = parse_pre_settled(values.iter().copied());
            return Ok(());
        }
        if !Self::is_option(name) {
            return Err(OptionError::Unknown {
                name: name.to_string(),
                suggestion: suggest_option(name),
            });
        }
        for v in values {
            self.set(name, v)?;
        }
        Ok(())
    }

    /// Applies the query parameters of `url` (they override every other source).
    pub fn apply_query(&mut self, url: &TransportUrl) -> Result<(), OptionError> {
        for (name, values) in group_pairs(url.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
            self.set_multi(name, &values)?;
        }
        Ok(())
    }

    /// Whether messages of `kind` are sent pre-settled.
    pub fn is_pre_settled(&self, kind: PreSettled) -> bool {
        self.pre_settled.contains(&kind)
    }
}

/// Groups `(key, value)` pairs by key, keeping first-appearance order.
fn group_pairs<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
    for (k, v) in pairs {
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, vs)) => vs.push(v),
            None => out.push((k, vec![v])),
        }
    }
    out
}

/// A notification driver name (`[oslo_messaging_notifications] driver`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NotifyDriver {
    /// `messaging`: version 1.0 messages (no envelope).
    Messaging,
    /// `messagingv2`: version 2.0 messages (`oslo.version`/`oslo.message` envelope).
    MessagingV2,
    /// `noop`: notifications are dropped.
    Noop,
    /// Any other driver name (`log`, `routing`, `test`, ...): not sent over AMQP.
    Other(String),
}

impl NotifyDriver {
    /// Parses a driver name (never fails).
    pub fn parse(s: &str) -> NotifyDriver {
        match s.trim() {
            "messaging" => NotifyDriver::Messaging,
            "messagingv2" => NotifyDriver::MessagingV2,
            "noop" => NotifyDriver::Noop,
            other => NotifyDriver::Other(other.to_string()),
        }
    }

    /// The driver name.
    pub fn as_str(&self) -> &str {
        match self {
            NotifyDriver::Messaging => "messaging",
            NotifyDriver::MessagingV2 => "messagingv2",
            NotifyDriver::Noop => "noop",
            NotifyDriver::Other(s) => s,
        }
    }
}

/// `[oslo_messaging_notifications]` options used by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationConfig {
    /// Notification transport; `None` => the RPC transport URL is used.
    pub transport_url: Option<TransportUrl>,
    /// Notification drivers (oslo default: none, i.e. notifications are not sent).
    pub driver: Vec<NotifyDriver>,
    /// Topics (default `["notifications"]`).
    pub topics: Vec<String>,
    /// Send retries (-1 = infinite).
    pub retry: i64,
}

impl Default for NotificationConfig {
    fn default() -> Self {
        NotificationConfig {
            transport_url: None,
            driver: Vec::new(),
            topics: vec!["notifications".to_string()],
            retry: -1,
        }
    }
}

/// Everything the driver reads from configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[DEFAULT] transport_url` (default `amqp://localhost:5672/`).
    pub transport_url: TransportUrl,
    /// `[oslo_messaging_amqp]`, with the transport URL's query applied on top.
    pub amqp: AmqpOptions,
    /// `[DEFAULT] control_exchange` (default `openstack`).
    pub control_exchange: String,
    /// `[DEFAULT] rpc_response_timeout` in seconds (default 60).
    pub rpc_response_timeout: u64,
    /// `[oslo_messaging_notifications]`.
    pub notifications: NotificationConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport_url: TransportUrl::default(),
            amqp: AmqpOptions::default(),
            control_exchange: "openstack".to_string(),
            rpc_response_timeout: 60,
            notifications: NotificationConfig::default(),
        }
    }
}

/// What went wrong while loading configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigErrorKind {
    /// The file could not be read.
    #[error("cannot read file: {0}")]
    Io(String),
    /// A line is not `[section]`, `key = value` or a comment.
    #[error("{0}")]
    Syntax(String),
    /// A transport URL is invalid.
    #[error("{0}")]
    Url(UrlError),
    /// An option name or value is invalid.
    #[error("{0}")]
    Option(OptionError),
    /// A value of a non-driver option is invalid.
    #[error("invalid value \"{value}\": expected {expected}")]
    Value {
        /// The value as written.
        value: String,
        /// What was expected.
        expected: String,
    },
}

/// A configuration error with its location:
/// `nova.conf:12: [oslo_messaging_amqp] idle_timeout: invalid value "abc": expected an integer >= 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the error is in (`None` for a URL given directly).
    pub origin: Option<PathBuf>,
    /// 1-based line number in `origin`.
    pub line: Option<usize>,
    /// INI section, without brackets.
    pub section: Option<String>,
    /// Option name, if the error is about one option.
    pub option: Option<String>,
    /// The error itself (boxed to keep `Result<_, ConfigError>` small).
    pub kind: Box<ConfigErrorKind>,
}

impl ConfigError {
    fn new(kind: ConfigErrorKind) -> Self {
        ConfigError {
            origin: None,
            line: None,
            section: None,
            option: None,
            kind: Box::new(kind),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.origin, self.line) {
            (Some(o), Some(l)) => write!(f, "{}:{l}: ", o.display())?,
            (Some(o), None) => write!(f, "{}: ", o.display())?,
            (None, Some(l)) => write!(f, "line {l}: ")?,
            (None, None) => {}
        }
        if let Some(s) = &self.section {
            write!(f, "[{s}] ")?;
        }
        // Skip the option prefix when the message already names the option.
        let kind = self.kind.to_string();
        if let Some(o) = &self.option {
            let named = match &*self.kind {
                ConfigErrorKind::Syntax(_) => true,
                ConfigErrorKind::Option(OptionError::Unknown { name, .. }) => name == o,
                _ => kind.starts_with(&format!("{o}:")),
            };
            if !named {
                write!(f, "{o}: ")?;
            }
        }
        f.write_str(&kind)
    }
}

impl std::error::Error for ConfigError {}

/// Section names.
const DEFAULT_SECTION: &str = "DEFAULT";
const AMQP_SECTION: &str = "oslo_messaging_amqp";
const AMQP1_SECTION: &str = "amqp1";
const NOTIFY_SECTION: &str = "oslo_messaging_notifications";

fn parse_url_at(
    text: &str,
    origin: Option<&Path>,
    line: Option<usize>,
    section: Option<&str>,
    option: &str,
) -> Result<TransportUrl, ConfigError> {
    text.parse::<TransportUrl>().map_err(|e| ConfigError {
        origin: origin.map(Path::to_path_buf),
        line,
        section: section.map(str::to_string),
        option: Some(option.to_string()),
        kind: Box::new(ConfigErrorKind::Url(e)),
    })
}

impl Config {
    /// Configuration from a transport URL alone: oslo defaults, then the URL's query
    /// parameters applied as `[oslo_messaging_amqp]` options.
    pub fn from_url(url: &str) -> Result<Config, ConfigError> {
        let transport_url = parse_url_at(url, None, None, None, "transport_url")?;
        let mut cfg = Config {
            transport_url,
            ..Config::default()
        };
        cfg.apply_url_query()?;
        Ok(cfg)
    }

    /// Reads an oslo-style INI file (nova.conf shape). See [`Config::from_ini_str`].
    pub fn from_ini_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: Some(path.to_path_buf()),
            ..ConfigError::new(ConfigErrorKind::Io(e.to_string()))
        })?;
        Self::from_ini_str(&text, path)
    }

    /// Parses oslo-style INI text; `origin` is only used in error messages.
    ///
    /// Read sections: `[DEFAULT]` (transport_url, control_exchange, rpc_response_timeout),
    /// `[oslo_messaging_amqp]` (every key must be a known option), the deprecated
    /// `[amqp1]` (only options that oslo also reads there; `[oslo_messaging_amqp]` wins),
    /// and `[oslo_messaging_notifications]` (transport_url, driver (repeatable), topics
    /// (comma list), retry; the deprecated `[DEFAULT] notification_*` names are read too).
    /// Other sections and other keys are ignored, as oslo does. Without
    /// `[DEFAULT] transport_url` the default `amqp://localhost:5672/` is used (oslo's own
    /// default would select the rabbit driver).
    /// The transport URL's query parameters override the INI options.
    pub fn from_ini_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let doc = ini::parse(text).map_err(|e| ConfigError {
            origin: Some(origin.to_path_buf()),
            line: Some(e.line),
            ..ConfigError::new(ConfigErrorKind::Syntax(e.message))
        })?;
        let at = IniAt { origin };
        let mut cfg = Config::default();
        cfg.apply_amqp_sections(&doc, &at)?;
        let notify_url_entry = cfg.apply_default_and_notifications(&doc, &at)?;
        // URL query options override the INI options.
        cfg.apply_url_query().map_err(|mut err| {
            err.origin = Some(origin.to_path_buf());
            if let Some(e) = doc
                .iter()
                .rev()
                .find(|e| e.section == DEFAULT_SECTION && e.key == "transport_url")
            {
                err.line = Some(e.line);
                err.section = Some(DEFAULT_SECTION.to_string());
            }
            err
        })?;
        // Validate the notification URL's query too (it is applied by notification_options()).
        if let Some(u) = &cfg.notifications.transport_url {
            let mut probe = cfg.amqp.clone();
            if let Err(err) = probe.apply_query(u) {
                let e = notify_url_entry;
                return Err(ConfigError {
                    origin: Some(origin.to_path_buf()),
                    line: e.map(|e| e.line),
                    section: e.map(|e| e.section.clone()),
                    option: e.map(|e| e.key.clone()),
                    kind: Box::new(ConfigErrorKind::Option(err)),
                });
            }
        }
        Ok(cfg)
    }

    /// `[amqp1]` then `[oslo_messaging_amqp]` (so that the latter wins).
    fn apply_amqp_sections(
        &mut self,
        doc: &[ini::Entry],
        at: &IniAt<'_>,
    ) -> Result<(), ConfigError> {
        for section in [AMQP1_SECTION, AMQP_SECTION] {
            let entries: Vec<&ini::Entry> = doc.iter().filter(|e| e.section == section).collect();
            for (key, group) in group_entries(&entries) {
                let last = group[group.len() - 1];
                if section == AMQP1_SECTION
                    && AmqpOptions::is_option(key)
                    && !AMQP1_GROUP_OPTIONS.contains(&key)
                {
                    return Err(at.error(last, ConfigErrorKind::Syntax(format!(
                        "{key}: this option cannot be set in the deprecated group [amqp1]; move it to [oslo_messaging_amqp]"
                    ))));
                }
                if key == "pre_settled" {
                    let values: Vec<&str> = group.iter().map(|e| e.value.as_str()).collect();
                    self.amqp.pre_settled = parse_pre_settled(values);
                    continue;
                }
                for e in &group {
                    self.amqp
                        .set(key, &e.value)
                        .map_err(|err| at.error(e, ConfigErrorKind::Option(err)))?;
                }
            }
        }
        Ok(())
    }

    /// `[DEFAULT]` and `[oslo_messaging_notifications]` (with the deprecated
    /// `[DEFAULT] notification_*` and `[rpc_notifier2] topics` names; the
    /// `[oslo_messaging_notifications]` names win). Returns the entry the
    /// notification URL came from.
    fn apply_default_and_notifications<'d>(
        &mut self,
        doc: &'d [ini::Entry],
        at: &IniAt<'_>,
    ) -> Result<Option<&'d ini::Entry>, ConfigError> {
        let mut n = NotifyEntries::default();
        for e in doc {
            match (e.section.as_str(), e.key.as_str()) {
                (DEFAULT_SECTION, "transport_url") => {
                    self.transport_url = at.url(e)?;
                }
                (DEFAULT_SECTION, "control_exchange") => self.control_exchange = e.value.clone(),
                (DEFAULT_SECTION, "rpc_response_timeout") => {
                    self.rpc_response_timeout = e
                        .value
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|v| *v <= crate::MAX_TIMEOUT_SECS)
                        .ok_or_else(|| {
                            at.value(
                                e,
                                &format!("an integer from 0 to {}", crate::MAX_TIMEOUT_SECS),
                            )
                        })?
                }
                (NOTIFY_SECTION, "retry") => {
                    self.notifications.retry = e
                        .value
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .filter(|v| *v >= -1)
                        .ok_or_else(|| at.value(e, "an integer >= -1"))?
                }
                _ => n.note(e),
            }
        }
        if let Some(d) = n.drivers.or(n.drivers_dep) {
            self.notifications.driver = d;
        }
        if let Some(t) = n.topics.or(n.topics_dep) {
            self.notifications.topics = t;
        }
        let url_entry = n.url.or(n.url_dep);
        if let Some(e) = url_entry {
            if !e.value.trim().is_empty() {
                self.notifications.transport_url = Some(at.url(e)?);
            }
        }
        Ok(url_entry)
    }

    fn apply_url_query(&mut self) -> Result<(), ConfigError> {
        self.amqp
            .apply_query(&self.transport_url)
            .map_err(|err| ConfigError {
                option: Some("transport_url".to_string()),
                ..ConfigError::new(ConfigErrorKind::Option(err))
            })
    }

    /// The URL used for notifications: `[oslo_messaging_notifications] transport_url`,
    /// or the RPC URL when unset.
    pub fn notification_url(&self) -> &TransportUrl {
        self.notifications
            .transport_url
            .as_ref()
            .unwrap_or(&self.transport_url)
    }

    /// Options for the notification transport: the INI options with the notification
    /// URL's query applied (equal to `self.amqp` when no separate URL is set).
    pub fn notification_options(&self) -> Result<AmqpOptions, OptionError> {
        match &self.notifications.transport_url {
            None => Ok(self.amqp.clone()),
            Some(u) => {
                let mut o = self.amqp.clone();
                o.apply_query(u)?;
                Ok(o)
            }
        }
    }
}

/// Builds errors that point at an INI entry of one file.
struct IniAt<'a> {
    origin: &'a Path,
}

impl IniAt<'_> {
    fn error(&self, e: &ini::Entry, kind: ConfigErrorKind) -> ConfigError {
        ConfigError {
            origin: Some(self.origin.to_path_buf()),
            line: Some(e.line),
            section: Some(e.section.clone()),
            option: Some(e.key.clone()),
            kind: Box::new(kind),
        }
    }

    fn value(&self, e: &ini::Entry, expected: &str) -> ConfigError {
        self.error(
            e,
            ConfigErrorKind::Value {
                value: e.value.clone(),
                expected: expected.into(),
            },
        )
    }

    fn url(&self, e: &ini::Entry) -> Result<TransportUrl, ConfigError> {
        parse_url_at(
            &e.value,
            Some(self.origin),
            Some(e.line),
            Some(&e.section),
            &e.key,
        )
    }
}

/// The notification entries of an INI file, current and deprecated names.
#[derive(Default)]
struct NotifyEntries<'d> {
    url: Option<&'d ini::Entry>,
    url_dep: Option<&'d ini::Entry>,
    drivers: Option<Vec<NotifyDriver>>,
    drivers_dep: Option<Vec<NotifyDriver>>,
    topics: Option<Vec<String>>,
    topics_dep: Option<Vec<String>>,
}

impl<'d> NotifyEntries<'d> {
    fn note(&mut self, e: &'d ini::Entry) {
        let list = |v: &str| -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let drivers = |v: &str| {
            list(v)
                .iter()
                .map(|d| NotifyDriver::parse(d))
                .collect::<Vec<_>>()
        };
        match (e.section.as_str(), e.key.as_str()) {
            (NOTIFY_SECTION, "transport_url") => self.url = Some(e),
            (DEFAULT_SECTION, "notification_transport_url") => self.url_dep = Some(e),
            (NOTIFY_SECTION, "driver") => self
                .drivers
                .get_or_insert_with(Vec::new)
                .extend(drivers(&e.value)),
            (DEFAULT_SECTION, "notification_driver") => self
                .drivers_dep
                .get_or_insert_with(Vec::new)
                .extend(drivers(&e.value)),
            (NOTIFY_SECTION, "topics") => self.topics = Some(list(&e.value)),
            (DEFAULT_SECTION, "notification_topics") | ("rpc_notifier2", "topics") => {
                self.topics_dep = Some(list(&e.value))
            }
            _ => {}
        }
    }
}

/// Groups INI entries by key, keeping first-appearance order.
fn group_entries<'a>(entries: &[&'a ini::Entry]) -> Vec<(&'a str, Vec<&'a ini::Entry>)> {
    let mut out: Vec<(&'a str, Vec<&'a ini::Entry>)> = Vec::new();
    for e in entries {
        match out.iter_mut().find(|(k, _)| *k == e.key) {
            Some((_, v)) => v.push(e),
            None => out.push((e.key.as_str(), vec![e])),
        }
    }
    out
}

#[cfg(test)]
mod tests;
