//! The oslo message types: ids, requests, replies, remote errors, notifications and
//! priorities, plus [`Malformed`], why an incoming message could not be decoded.

use std::fmt;
use std::str::FromStr;

use fe2o3_amqp_types::messaging::MessageId as AmqpMessageId;

use super::json::{to_python_json, write_map, write_str, write_value, Map, Value};

/// The envelope version oslo implements (`_RPC_ENVELOPE_VERSION`).
pub const ENVELOPE_VERSION: &str = "2.0";

/// JSON key of the envelope version.
pub const ENVELOPE_VERSION_KEY: &str = "oslo.version";

/// JSON key of the enveloped message string.
pub const ENVELOPE_MESSAGE_KEY: &str = "oslo.message";

// ---------------------------------------------------------------------------------------
// Message ids
// ---------------------------------------------------------------------------------------

/// An AMQP message-id / correlation-id. A reply echoes the request's id with the same type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MessageId {
    /// AMQP string (what oslo sends: 32 lower-case hex characters).
    String(String),
    /// AMQP uuid.
    Uuid(uuid::Uuid),
    /// AMQP ulong.
    Ulong(u64),
    /// AMQP binary.
    Binary(Vec<u8>),
}

impl MessageId {
    /// A fresh id like oslo's `uuid.uuid4().hex` (string, 32 lower-case hex characters).
    pub fn random() -> Self {
        MessageId::String(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The fe2o3 representation.
    pub fn to_amqp(&self) -> AmqpMessageId {
        match self {
            MessageId::String(s) => AmqpMessageId::String(s.clone()),
            MessageId::Uuid(u) => AmqpMessageId::Uuid(u.into_bytes().into()),
            MessageId::Ulong(n) => AmqpMessageId::Ulong(*n),
            MessageId::Binary(b) => AmqpMessageId::Binary(b.clone().into()),
        }
    }

    /// From the fe2o3 representation.
    pub fn from_amqp(id: &AmqpMessageId) -> Self {
        match id {
            AmqpMessageId::String(s) => MessageId::String(s.clone()),
            AmqpMessageId::Uuid(u) => MessageId::Uuid(uuid::Uuid::from_bytes(*u.as_inner())),
            AmqpMessageId::Ulong(n) => MessageId::Ulong(*n),
            AmqpMessageId::Binary(b) => MessageId::Binary(b.to_vec()),
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MessageId::String(s) => f.write_str(s),
            MessageId::Uuid(u) => write!(f, "{u}"),
            MessageId::Ulong(n) => write!(f, "{n}"),
            MessageId::Binary(b) => {
                for x in b {
                    write!(f, "{x:02x}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        MessageId::String(s.to_string())
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        MessageId::String(s)
    }
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why an incoming message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The message has no body section (only heartbeats have none).
    #[error("message has no body")]
    NoBody,
    /// The body is not an amqp-value string (e.g. a data section or an amqp-value map).
    #[error("body is not an amqp-value string: {0}")]
    NotText(String),
    /// The body string is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// A required key is missing.
    #[error("missing key \"{0}\"")]
    MissingKey(String),
    /// A key has a value of the wrong JSON type.
    #[error("key \"{key}\" has the wrong type: expected {expected}, found {found}")]
    WrongType {
        /// The key (dotted path for nested keys).
        key: String,
        /// What was expected.
        expected: &'static str,
        /// The JSON type found.
        found: &'static str,
    },
    /// The `oslo.version` of an envelope is not compatible with 2.0.
    #[error("unsupported envelope version \"{0}\" (this driver implements 2.0)")]
    UnsupportedEnvelopeVersion(String),
    /// A notification priority is unknown.
    #[error("unknown notification priority \"{0}\"")]
    BadPriority(String),
    /// The transfer payload is not a valid AMQP message.
    #[error("invalid AMQP message encoding: {0}")]
    Amqp(String),
    /// The body is larger than [`crate::MAX_BODY_BYTES`]; it is not parsed.
    #[error("body of {bytes} bytes is larger than the {max} bytes this driver decodes")]
    TooLarge {
        /// The body's size.
        bytes: usize,
        /// The limit ([`crate::MAX_BODY_BYTES`]).
        max: usize,
    },
}

/// At most this many characters of a peer's text are kept in a [`Malformed`].
const CLIP_CHARS: usize = 64;

/// `s`, cut to [`CLIP_CHARS`] characters (with `...` when cut), so that an
/// error about a peer's value never carries a huge string into a log line.
pub(super) fn clip(s: &str) -> String {
    if s.chars().count() <= CLIP_CHARS {
        return s.to_string();
    }
    let mut out: String = s.chars().take(CLIP_CHARS).collect();
    out.push_str("...");
    out
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn wrong(key: &str, expected: &'static str, v: &Value) -> Malformed {
    Malformed::WrongType {
        key: key.to_string(),
        expected,
        found: type_name(v),
    }
}

// ---------------------------------------------------------------------------------------
// Payload types
// ---------------------------------------------------------------------------------------

/// An exception raised by a remote RPC endpoint (the `failure` of a reply).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteError {
    /// Exception class name, e.g. `ValueError`.
    pub class: String,
    /// Module of the class, e.g. `builtins`.
    pub module: String,
    /// `str(exception)`.
    pub message: String,
    /// Formatted traceback lines.
    pub tb: Vec<String>,
    /// Exception args.
    pub args: Vec<Value>,
    /// Exception kwargs.
    pub kwargs: Map,
}

impl RemoteError {
    /// A remote error with `args = [message]` and no traceback.
    pub fn new(
        class: impl Into<String>,
        module: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        RemoteError {
            class: class.into(),
            module: module.into(),
            args: vec![Value::String(message.clone())],
            message,
            tb: Vec::new(),
            kwargs: Map::new(),
        }
    }

    /// The JSON string carried as the value of `{"failure": ...}` (oslo's
    /// `serialize_remote_exception`): keys class, module, message, tb, args, kwargs. A
    /// `_Remote` suffix is removed from class and module when both have it.
    pub fn to_failure_json(&self) -> String {
        const SUFFIX: &str = "_Remote";
        let (class, module) = match (
            self.class.strip_suffix(SUFFIX),
            self.module.strip_suffix(SUFFIX),
        ) {
            (Some(c), Some(m)) => (c, m),
            _ => (self.class.as_str(), self.module.as_str()),
        };
        let mut out = String::with_capacity(128);
        out.push_str("{\"class\": ");
        write_str(&mut out, class);
        out.push_str(", \"module\": ");
        write_str(&mut out, module);
        out.push_str(", \"message\": ");
        write_str(&mut out, &self.message);
        out.push_str(", \"tb\": [");
        for (i, line) in self.tb.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_str(&mut out, line);
        }
        out.push_str("], \"args\": [");
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            write_value(&mut out, a);
        }
        out.push_str("], \"kwargs\": ");
        write_map(&mut out, &self.kwargs);
        out.push('}');
        out
    }

    /// Parses the failure JSON string (inverse of [`RemoteError::to_failure_json`]).
    /// Missing keys default to empty values, as oslo's `deserialize_remote_exception` does.
    pub fn from_failure_json(s: &str) -> Result<RemoteError, Malformed> {
        let v: Value = serde_json::from_str(s).map_err(|e| Malformed::NotJson(e.to_string()))?;
        Self::from_failure_value(&v)
    }

    pub(super) fn from_failure_value(v: &Value) -> Result<RemoteError, Malformed> {
        let m = v.as_object().ok_or_else(|| wrong("failure", "object", v))?;
        let s = |k: &str| -> Result<String, Malformed> {
            match m.get(k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(wrong(&format!("failure.{k}"), "string", other)),
            }
        };
        let tb = match m.get("tb") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => to_python_json(other),
                })
                .collect(),
            Some(other) => return Err(wrong("failure.tb", "array", other)),
        };
        let args = match m.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(other) => return Err(wrong("failure.args", "array", other)),
        };
        let kwargs = match m.get("kwargs") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(other) => return Err(wrong("failure.kwargs", "object", other)),
        };
        Ok(RemoteError {
            class: s("class")?,
            module: s("module")?,
            message: s("message")?,
            tb,
            args,
            kwargs,
        })
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.module.is_empty() {
            write!(f, "{}: {}", self.class, self.message)
        } else {
            write!(f, "{}.{}: {}", self.module, self.class, self.message)
        }
    }
}

impl std::error::Error for RemoteError {}

/// An RPC request (`{"method", "args", ["namespace"], ["version"]}`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// Method name.
    pub method: String,
    /// Keyword arguments.
    pub args: Map,
    /// Target API version.
    pub version: Option<String>,
    /// Target namespace.
    pub namespace: Option<String>,
}

impl Request {
    /// A request for `method` with `args`.
    pub fn new(method: impl Into<String>, args: Map) -> Self {
        Request {
            method: method.into(),
            args,
            version: None,
            namespace: None,
        }
    }
}

/// Writes the request dict in oslo's key order: method, args, namespace, version.
pub(super) fn write_request(out: &mut String, r: &Request) {
    out.push_str("{\"method\": ");
    write_str(out, &r.method);
    out.push_str(", \"args\": ");
    write_map(out, &r.args);
    if let Some(ns) = &r.namespace {
        out.push_str(", \"namespace\": ");
        write_str(out, ns);
    }
    if let Some(v) = &r.version {
        out.push_str(", \"version\": ");
        write_str(out, v);
    }
    out.push('}');
}

/// The body of an RPC reply.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyBody {
    /// `{"response": <value>}`.
    Response(Value),
    /// `{"failure": "<json string>"}`.
    Failure(RemoteError),
}

/// Notification priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// `debug`
    Debug,
    /// `audit`
    Audit,
    /// `info`
    Info,
    /// `warn` (also parsed from `warning`)
    Warn,
    /// `error`
    Error,
    /// `critical`
    Critical,
    /// `sample`
    Sample,
}

impl Priority {
    /// Every priority.
    pub const ALL: [Priority; 7] = [
        Priority::Debug,
        Priority::Audit,
        Priority::Info,
        Priority::Warn,
        Priority::Error,
        Priority::Critical,
        Priority::Sample,
    ];

    /// Lower-case name, used in address topics (`notifications.info`).
    pub fn as_lower(self) -> &'static str {
        match self {
            Priority::Debug => "debug",
            Priority::Audit => "audit",
            Priority::Info => "info",
            Priority::Warn => "warn",
            Priority::Error => "error",
            Priority::Critical => "critical",
            Priority::Sample => "sample",
        }
    }

    /// Upper-case name, used in the notification body (`"priority": "INFO"`).
    pub fn as_upper(self) -> &'static str {
        match self {
            Priority::Debug => "DEBUG",
            Priority::Audit => "AUDIT",
            Priority::Info => "INFO",
            Priority::Warn => "WARN",
            Priority::Error => "ERROR",
            Priority::Critical => "CRITICAL",
            Priority::Sample => "SAMPLE",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_lower())
    }
}

impl FromStr for Priority {
    type Err = Malformed;
    /// Case-insensitive; `warning` is `Warn`.
    fn from_str(s: &str) -> Result<Self, Malformed> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "debug" => Priority::Debug,
            "audit" => Priority::Audit,
            "info" => Priority::Info,
            "warn" | "warning" => Priority::Warn,
            "error" => Priority::Error,
            "critical" => Priority::Critical,
            "sample" => Priority::Sample,
            _ => return Err(Malformed::BadPriority(clip(s))),
        })
    }
}

/// A notification message.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `str(uuid4())` (hyphenated).
    pub message_id: String,
    /// Publisher, e.g. `compute.host1`.
    pub publisher_id: String,
    /// Event type, e.g. `compute.instance.create.end`.
    pub event_type: String,
    /// Priority (upper-case in the body).
    pub priority: Priority,
    /// Payload.
    pub payload: Value,
    /// `str(utcnow())`, e.g. `2024-01-01 00:00:00.123456`.
    pub timestamp: String,
}

impl Notification {
    /// A notification with a fresh message id and the current UTC timestamp.
    pub fn new(
        publisher_id: impl Into<String>,
        event_type: impl Into<String>,
        priority: Priority,
        payload: Value,
    ) -> Self {
        Notification {
            message_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            publisher_id: publisher_id.into(),
            event_type: event_type.into(),
            priority,
            payload,
            timestamp: python_utc_timestamp(std::time::SystemTime::now()),
        }
    }
}

/// Formats a time like Python's `str(datetime.utcnow())`: `YYYY-MM-DD HH:MM:SS[.ffffff]`
/// (the fraction is omitted when the microseconds are zero, as Python does).
pub fn python_utc_timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let micros = d.subsec_micros();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}");
    if micros != 0 {
        out.push_str(&format!(".{micros:06}"));
    }
    out
}

pub(super) fn write_notification(out: &mut String, n: &Notification) {
    out.push_str("{\"message_id\": ");
    write_str(out, &n.message_id);
    out.push_str(", \"publisher_id\": ");
    write_str(out, &n.publisher_id);
    out.push_str(", \"event_type\": ");
    write_str(out, &n.event_type);
    out.push_str(", \"priority\": ");
    write_str(out, n.priority.as_upper());
    out.push_str(", \"payload\": ");
    write_value(out, &n.payload);
    out.push_str(", \"timestamp\": ");
    write_str(out, &n.timestamp);
    out.push('}');
}

/// Notification message format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyVersion {
    /// `messaging` driver: the notification dict is the request.
    V1,
    /// `messagingv2` driver: the request is the `oslo.version`/`oslo.message` envelope.
    V2,
}
