//! Encoding and decoding of oslo.messaging AMQP 1.0 messages (reference §2).
//!
//! * Bodies are one `amqp-value` section holding a **string** of JSON formatted exactly like
//!   Python's `json.dumps` (see [`to_python_json`]).
//! * The header section is always present: empty (`0x45`) or `[null, null, uint ttl]`.
//! * The properties section carries only `message-id`, `to`, `reply-to` and `correlation-id`.
//! * A call-monitor heartbeat has **no body section at all**.
//!
//! [`OutgoingMessage::into_amqp`] gives a fe2o3 [`Message`] ready for `Sender::send`;
//! [`OutgoingMessage::encode_sections`] gives the exact transfer payload bytes. Both produce
//! the bytes proton 0.40 produces for the Python driver (checked against fixtures generated
//! with proton in `driver/tests/golden/`), with these documented differences:
//!
//! * `absolute-expiry-time` is never sent. oslo sends `ceil(monotonic()+timeout)` seconds as a
//!   timestamp, a value no receiver uses (the Python receiver ignores it; reference §11.2).
//! * fe2o3 writes a string of exactly 255 bytes in the *properties* (`to`, `reply-to`, ids) as
//!   `str32` where proton writes `str8`. Both decode identically. Body strings are written
//!   by this module and match proton for every length.
//!
//! JSON values received from Python are re-encoded identically, with three limits of
//! `serde_json` (as configured in this workspace): integers beyond the u64/i64 range become
//! floats, a lone UTF-16 surrogate escape (`"\ud800"`, legal for Python) fails to parse
//! (reported as [`Malformed::NotJson`]), and without serde_json's `float_roundtrip` feature a
//! parsed float can be 1 ulp off (so an echoed float may differ in its last digit).
//!
//! Incoming messages are converted with [`IncomingMessage::from_amqp`] and decoded with
//! [`decode_request`], [`decode_reply`] and [`decode_notification`], which accept both the
//! plain and the `oslo.version`/`oslo.message` enveloped forms, as oslo's `deserialize_msg`.

use std::fmt;
use std::str::FromStr;

use fe2o3_amqp_types::messaging::{
    AmqpValue, Batch, Body, Header, Message, MessageId as AmqpMessageId, Properties,
};
use serde::Serialize;
pub use serde_json::Value;

/// A JSON object whose keys keep their insertion order (serde_json `preserve_order`).
pub type Map = serde_json::Map<String, Value>;

/// The message type sent with fe2o3's `Sender::send`.
pub type AmqpMessage = Message<Body<EncodedValue>>;

/// The envelope version oslo implements (`_RPC_ENVELOPE_VERSION`).
pub const ENVELOPE_VERSION: &str = "2.0";

/// JSON key of the envelope version.
pub const ENVELOPE_VERSION_KEY: &str = "oslo.version";

/// JSON key of the enveloped message string.
pub const ENVELOPE_MESSAGE_KEY: &str = "oslo.message";

// ---------------------------------------------------------------------------------------
// Python-compatible JSON
// ---------------------------------------------------------------------------------------

/// Formats `v` exactly like Python's `json.dumps(v)` with default arguments: separators
/// `", "` and `": "`, `ensure_ascii` (`\uXXXX`, lower-case hex, surrogate pairs above the
/// BMP), key order preserved, floats as Python's `repr` (`1.0`, `1e+16`, `1.5e-07`).
pub fn to_python_json(v: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, v);
    out
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if n.is_f64() {
                match n.as_f64() {
                    Some(f) => write_float(out, f),
                    None => out.push_str(&n.to_string()),
                }
            } else {
                out.push_str(&n.to_string())
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => write_map(out, m),
    }
}

fn write_map(out: &mut String, m: &Map) {
    out.push('{');
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, x);
    }
    out.push('}');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut String, u: u16) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((u >> shift) & 0xf)]));
    }
}

/// Writes a JSON string literal the way Python's `ensure_ascii` encoder does.
fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let plain = (' '..='~').contains(&c) && c != '"' && c != '\\';
        if plain {
            continue;
        }
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    push_u16_escape(out, *u);
                }
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes a float like Python's `float.__repr__` (shortest round-trip digits; fixed notation
/// for decimal exponents -4..=15, otherwise `d.ddde[+-]XX`).
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` gives the shortest round-trip digit count, e.g. "1.5e-7", "1e16", "0e0".
    // When two shortest candidates are equally close (a tie), Rust and Python may pick
    // different last digits; re-formatting with that many digits in exact mode rounds
    // half-to-even, which is the string Python's repr produces.
    use std::fmt::Write as _;
    let abs = f.abs();
    let mut buf = StackBuf::new();
    // Writing at most ~30 bytes into a 64-byte buffer cannot fail.
    let _ = write!(buf, "{abs:e}");
    let n_digits = buf
        .as_str()
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    buf.clear();
    let _ = write!(buf, "{:.*e}", n_digits.saturating_sub(1), abs);
    let sci = buf.as_str();
    let (mant, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (d0, rest) = mant.split_at(1.min(mant.len()));
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    // digits = d0 + rest
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = usize::try_from(exp).unwrap_or(0) + 1;
            let n = 1 + rest.len();
            out.push_str(d0);
            if n <= int_len {
                out.push_str(rest);
                out.extend(std::iter::repeat_n('0', int_len - n));
                out.push_str(".0");
            } else {
                out.push_str(&rest[..int_len - 1]);
                out.push('.');
                out.push_str(&rest[int_len - 1..]);
            }
        } else {
            out.push_str("0.");
            let zeros = usize::try_from(-exp - 1).unwrap_or(0);
            out.extend(std::iter::repeat_n('0', zeros));
            out.push_str(d0);
            out.push_str(rest);
        }
    } else {
        out.push_str(d0);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        let _ = write!(out, "{a}");
    }
}

/// A small fixed-size text buffer (float formatting without heap allocation).
struct StackBuf {
    b: [u8; 64],
    n: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf { b: [0; 64], n: 0 }
    }

    fn clear(&mut self) {
        self.n = 0;
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever appended, so the content is valid UTF-8.
        std::str::from_utf8(&self.b[..self.n]).unwrap_or("")
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.n + s.len();
        if end > self.b.len() {
            return Err(fmt::Error);
        }
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}

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
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> Malformed {
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

    fn from_failure_value(v: &Value) -> Result<RemoteError, Malformed> {
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
fn write_request(out: &mut String, r: &Request) {
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
            _ => return Err(Malformed::BadPriority(s.to_string())),
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

fn write_notification(out: &mut String, n: &Notification) {
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

// ---------------------------------------------------------------------------------------
// Outgoing
// ---------------------------------------------------------------------------------------

/// A pre-encoded AMQP value, written verbatim by serde_amqp (used for the body string so
/// that its encoding matches proton's: `str8` up to 255 bytes, `str32` above).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedValue(Vec<u8>);

impl EncodedValue {
    /// An AMQP string, encoded as proton does.
    pub fn string(s: &str) -> Self {
        let mut b = Vec::with_capacity(s.len() + 5);
        match u8::try_from(s.len()) {
            Ok(n) => {
                b.push(0xa1);
                b.push(n);
            }
            Err(_) => {
                b.push(0xb1);
                b.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
            }
        }
        b.extend_from_slice(s.as_bytes());
        EncodedValue(b)
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// serde_amqp's (crate-private) name for `LazyValue`, whose bytes are written verbatim.
const SERDE_AMQP_LAZY_VALUE: &str = "__LAZY_VALUE";

/// Serialized as raw bytes through serde_amqp's lazy-value path.
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for EncodedValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // serde_amqp writes the bytes of a newtype named like its `LazyValue` marker verbatim
        // (the name is compared by value). The golden tests catch any change of this.
        s.serialize_newtype_struct(SERDE_AMQP_LAZY_VALUE, &RawBytes(&self.0))
    }
}

/// A message to send: the fields oslo uses plus a JSON body string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// `to` (the sender link's target address).
    pub to: String,
    /// `message-id` (RPC calls only).
    pub message_id: Option<MessageId>,
    /// `reply-to` (RPC calls only).
    pub reply_to: Option<String>,
    /// `correlation-id` (replies and heartbeats).
    pub correlation_id: Option<MessageId>,
    /// Header `ttl` in milliseconds.
    pub ttl_ms: Option<u32>,
    /// JSON body (amqp-value string); `None` = no body section (heartbeat).
    pub body: Option<String>,
}

fn request_body(ctx: &Map, req_writer: impl FnOnce(&mut String), cmt: Option<u64>) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"request\": ");
    req_writer(&mut out);
    out.push_str(", \"context\": ");
    write_map(&mut out, ctx);
    if let Some(t) = cmt {
        out.push_str(", \"call_monitor_timeout\": ");
        out.push_str(&t.to_string());
    }
    out.push('}');
    out
}

impl OutgoingMessage {
    /// An RPC call: `message-id`, `reply-to`, ttl = timeout, body
    /// `{"request": ..., "context": ...[, "call_monitor_timeout": n]}`.
    pub fn call(
        to: impl Into<String>,
        reply_to: impl Into<String>,
        message_id: MessageId,
        ctx: &Map,
        request: &Request,
        timeout_ms: impl Into<Option<u32>>,
        call_monitor_timeout: Option<u64>,
    ) -> Self {
        OutgoingMessage {
            to: to.into(),
            message_id: Some(message_id),
            reply_to: Some(reply_to.into()),
            correlation_id: None,
            ttl_ms: timeout_ms.into(),
            body: Some(request_body(
                ctx,
                |o| write_request(o, request),
                call_monitor_timeout,
            )),
        }
    }

    /// An RPC cast or fanout: only `to`, no ttl, body `{"request": ..., "context": ...}`.
    pub fn cast(to: impl Into<String>, ctx: &Map, request: &Request) -> Self {
        OutgoingMessage {
            to: to.into(),
            message_id: None,
            reply_to: None,
            correlation_id: None,
            ttl_ms: None,
            body: Some(request_body(ctx, |o| write_request(o, request), None)),
        }
    }

    /// An RPC reply to `to` (the request's reply-to) with `correlation-id` = the request's
    /// message-id (same AMQP type).
    pub fn reply(to: impl Into<String>, correlation_id: MessageId, body: &ReplyBody) -> Self {
        let mut out = String::with_capacity(64);
        match body {
            ReplyBody::Response(v) => {
                out.push_str("{\"response\": ");
                write_value(&mut out, v);
            }
            ReplyBody::Failure(e) => {
                out.push_str("{\"failure\": ");
                write_str(&mut out, &e.to_failure_json());
            }
        }
        out.push('}');
        OutgoingMessage {
            to: to.into(),
            message_id: None,
            reply_to: None,
            correlation_id: Some(correlation_id),
            ttl_ms: None,
            body: Some(out),
        }
    }

    /// A call-monitor heartbeat: no body section, ttl = the client's monitor timeout.
    pub fn heartbeat(to: impl Into<String>, correlation_id: MessageId, ttl_ms: u32) -> Self {
        OutgoingMessage {
            to: to.into(),
            message_id: None,
            reply_to: None,
            correlation_id: Some(correlation_id),
            ttl_ms: Some(ttl_ms),
            body: None,
        }
    }

    /// A notification (v1: plain dict; v2: `oslo.version`/`oslo.message` envelope).
    pub fn notification(
        to: impl Into<String>,
        ctx: &Map,
        notification: &Notification,
        version: NotifyVersion,
    ) -> Self {
        let body = match version {
            NotifyVersion::V1 => request_body(ctx, |o| write_notification(o, notification), None),
            NotifyVersion::V2 => {
                let mut inner = String::with_capacity(128);
                write_notification(&mut inner, notification);
                request_body(
                    ctx,
                    |o| {
                        o.push_str("{\"oslo.version\": \"2.0\", \"oslo.message\": ");
                        write_str(o, &inner);
                        o.push('}');
                    },
                    None,
                )
            }
        };
        OutgoingMessage {
            to: to.into(),
            message_id: None,
            reply_to: None,
            correlation_id: None,
            ttl_ms: None,
            body: Some(body),
        }
    }

    fn header(&self) -> Header {
        Header {
            ttl: self.ttl_ms,
            ..Header::default()
        }
    }

    fn properties(&self) -> Properties {
        Properties {
            message_id: self.message_id.as_ref().map(MessageId::to_amqp),
            to: Some(self.to.clone()),
            reply_to: self.reply_to.clone(),
            correlation_id: self.correlation_id.as_ref().map(MessageId::to_amqp),
            ..Properties::default()
        }
    }

    fn amqp_body(&self) -> Body<EncodedValue> {
        match &self.body {
            Some(s) => Body::Value(AmqpValue(EncodedValue::string(s))),
            // An empty batch of data sections serializes to nothing: no body section at all.
            // (fe2o3's Body::Empty would write an amqp-value null.)
            None => Body::Data(Batch::new(Vec::new())),
        }
    }

    /// The fe2o3 message for `Sender::send` (header always present; properties as in §2).
    pub fn into_amqp(self) -> AmqpMessage {
        Message {
            header: Some(self.header()),
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(self.properties()),
            application_properties: None,
            body: self.amqp_body(),
            footer: None,
        }
    }

    /// The exact transfer payload bytes fe2o3 sends for this message
    /// (header + properties [+ body] sections).
    pub fn encode_sections(&self) -> Vec<u8> {
        let msg = self.clone().into_amqp();
        let wrapped = fe2o3_amqp_types::messaging::message::__private::Serializable(&msg);
        // Serialization into a Vec cannot fail for these types; an empty vector is
        // returned defensively if it ever did.
        serde_amqp::to_vec(&wrapped).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Incoming
// ---------------------------------------------------------------------------------------

/// The body of a received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncomingBody {
    /// An amqp-value string (every oslo request, reply and notification).
    Text(String),
    /// No body (or an amqp-value null): a call-monitor heartbeat.
    None,
    /// Anything else, described (data section, amqp-value map, sequence, ...).
    Other(String),
}

/// A received message, reduced to the fields oslo uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingMessage {
    /// `to`.
    pub to: Option<String>,
    /// `message-id`.
    pub message_id: Option<MessageId>,
    /// `reply-to`.
    pub reply_to: Option<String>,
    /// `correlation-id`.
    pub correlation_id: Option<MessageId>,
    /// Header `ttl` in milliseconds.
    pub ttl_ms: Option<u32>,
    /// Body.
    pub body: IncomingBody,
}

fn describe_value(v: &serde_amqp::Value) -> String {
    use serde_amqp::Value as V;
    let kind = match v {
        V::Described(_) => "described value",
        V::Null => "null",
        V::Bool(_) => "boolean",
        V::Ubyte(_) | V::Ushort(_) | V::Uint(_) | V::Ulong(_) => "unsigned integer",
        V::Byte(_) | V::Short(_) | V::Int(_) | V::Long(_) => "integer",
        V::Float(_) | V::Double(_) => "floating point number",
        V::Decimal32(_) | V::Decimal64(_) | V::Decimal128(_) => "decimal",
        V::Char(_) => "char",
        V::Timestamp(_) => "timestamp",
        V::Uuid(_) => "uuid",
        V::Binary(_) => "binary",
        V::String(_) => "string",
        V::Symbol(_) => "symbol",
        V::List(_) => "list",
        V::Map(_) => "map",
        V::Array(_) => "array",
    };
    format!("amqp-value {kind}")
}

impl IncomingMessage {
    /// Builds from a message received as `Body<serde_amqp::Value>` (what fe2o3's
    /// `Receiver::recv::<Body<Value>>()` yields).
    pub fn from_amqp(msg: &Message<Body<serde_amqp::Value>>) -> Self {
        let body = match &msg.body {
            Body::Value(AmqpValue(serde_amqp::Value::String(s))) => IncomingBody::Text(s.clone()),
            Body::Value(AmqpValue(serde_amqp::Value::Null)) | Body::Empty => IncomingBody::None,
            Body::Data(batch) if batch.is_empty() => IncomingBody::None,
            Body::Value(AmqpValue(v)) => IncomingBody::Other(describe_value(v)),
            Body::Data(batch) => IncomingBody::Other(format!(
                "{} data section(s), {} bytes",
                batch.len(),
                batch.iter().map(|d| d.0.len()).sum::<usize>()
            )),
            Body::Sequence(batch) => {
                IncomingBody::Other(format!("{} amqp-sequence section(s)", batch.len()))
            }
        };
        let p = msg.properties.as_ref();
        IncomingMessage {
            to: p.and_then(|p| p.to.clone()),
            message_id: p
                .and_then(|p| p.message_id.as_ref())
                .map(MessageId::from_amqp),
            reply_to: p.and_then(|p| p.reply_to.clone()),
            correlation_id: p
                .and_then(|p| p.correlation_id.as_ref())
                .map(MessageId::from_amqp),
            ttl_ms: msg.header.as_ref().and_then(|h| h.ttl),
            body,
        }
    }

    /// Decodes a transfer payload (the bytes of the message sections), e.g. the output of
    /// [`OutgoingMessage::encode_sections`].
    pub fn decode_sections(bytes: &[u8]) -> Result<Self, Malformed> {
        use fe2o3_amqp_types::messaging::message::__private::Deserializable;
        let msg: Deserializable<Message<Body<serde_amqp::Value>>> =
            serde_amqp::from_slice(bytes).map_err(|e| Malformed::Amqp(e.to_string()))?;
        Ok(Self::from_amqp(&msg.0))
    }

    /// Whether this is a call-monitor heartbeat (no body).
    pub fn is_heartbeat(&self) -> bool {
        self.body == IncomingBody::None
    }

    fn json_object(&self) -> Result<Map, Malformed> {
        let text = match &self.body {
            IncomingBody::Text(t) => t,
            IncomingBody::None => return Err(Malformed::NoBody),
            IncomingBody::Other(d) => return Err(Malformed::NotText(d.clone())),
        };
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(wrong("body", "object", &other)),
            Err(e) => Err(Malformed::NotJson(e.to_string())),
        }
    }
}

/// oslo's `version_is_compatible(imp="2.0", version)`: same major, minor <= 0, and no
/// revision above 0 when the minor is 0 (`2.0.1` is rejected).
fn envelope_version_ok(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.trim().parse::<i64>().ok());
    let minor = parts.next().and_then(|p| p.trim().parse::<i64>().ok());
    let rev = match parts.next() {
        None => Some(0),
        Some(p) => p.trim().parse::<i64>().ok(),
    };
    match (major, minor, rev) {
        (Some(2), Some(minor), Some(rev)) => minor < 0 || (minor == 0 && rev <= 0),
        _ => false,
    }
}

/// Unwraps an `oslo.version`/`oslo.message` envelope if both keys are present
/// (oslo's `deserialize_msg`). Returns the message and whether it was enveloped.
fn unwrap_envelope(v: Value) -> Result<(Value, bool), Malformed> {
    let Value::Object(m) = &v else {
        return Ok((v, false));
    };
    let (Some(ver), Some(msg)) = (m.get(ENVELOPE_VERSION_KEY), m.get(ENVELOPE_MESSAGE_KEY)) else {
        return Ok((v, false));
    };
    let ver = match ver {
        Value::String(s) => s.clone(),
        other => to_python_json(other),
    };
    if !envelope_version_ok(&ver) {
        return Err(Malformed::UnsupportedEnvelopeVersion(ver));
    }
    let Value::String(inner) = msg else {
        return Err(wrong(ENVELOPE_MESSAGE_KEY, "string", msg));
    };
    let inner: Value = serde_json::from_str(inner)
        .map_err(|e| Malformed::NotJson(format!("oslo.message: {e}")))?;
    Ok((inner, true))
}

fn context_of(m: &mut Map) -> Result<Map, Malformed> {
    match m.remove("context") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(c)) => Ok(c),
        Some(other) => Err(wrong("context", "object", &other)),
    }
}

fn opt_string(m: &Map, key: &str) -> Result<Option<String>, Malformed> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong(key, "string", other)),
    }
}

/// Decodes an RPC request (call, cast or fanout): `(context, request, call_monitor_timeout)`.
/// A fractional `call_monitor_timeout` is truncated, as oslo's dispatcher does (`int(...)`).
pub fn decode_request(msg: &IncomingMessage) -> Result<(Map, Request, Option<u64>), Malformed> {
    let mut m = msg.json_object()?;
    let ctx = context_of(&mut m)?;
    let raw = m
        .remove("request")
        .ok_or_else(|| Malformed::MissingKey("request".into()))?;
    let (req, _) = unwrap_envelope(raw)?;
    let Value::Object(mut r) = req else {
        return Err(wrong("request", "object", &req));
    };
    let method = match r.remove("method") {
        Some(Value::String(s)) => s,
        Some(other) => return Err(wrong("request.method", "string", &other)),
        None => return Err(Malformed::MissingKey("request.method".into())),
    };
    let args = match r.remove("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(a)) => a,
        Some(other) => return Err(wrong("request.args", "object", &other)),
    };
    let version = opt_string(&r, "version").map_err(|e| prefix_key(e, "request."))?;
    let namespace = opt_string(&r, "namespace").map_err(|e| prefix_key(e, "request."))?;
    let cmt = match m.get("call_monitor_timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Some(u),
            (None, Some(f)) if f >= 0.0 && f.is_finite() => Some(f.trunc() as u64),
            _ => {
                return Err(wrong(
                    "call_monitor_timeout",
                    "non-negative number",
                    &Value::Number(n.clone()),
                ))
            }
        },
        Some(other) => return Err(wrong("call_monitor_timeout", "number", other)),
    };
    Ok((
        ctx,
        Request {
            method,
            args,
            version,
            namespace,
        },
        cmt,
    ))
}

fn prefix_key(e: Malformed, prefix: &str) -> Malformed {
    match e {
        Malformed::WrongType {
            key,
            expected,
            found,
        } => Malformed::WrongType {
            key: format!("{prefix}{key}"),
            expected,
            found,
        },
        other => other,
    }
}

/// Decodes an RPC reply body (`{"response": ...}` or `{"failure": "<json>"}`).
/// A missing `response` is `null`, as oslo's `data.get("response")`.
pub fn decode_reply(msg: &IncomingMessage) -> Result<ReplyBody, Malformed> {
    let mut m = msg.json_object()?;
    match m.remove("failure") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            return RemoteError::from_failure_json(&s).map(ReplyBody::Failure)
        }
        Some(v @ Value::Object(_)) => {
            return RemoteError::from_failure_value(&v).map(ReplyBody::Failure)
        }
        Some(other) => return Err(wrong("failure", "string", &other)),
    }
    Ok(ReplyBody::Response(
        m.remove("response").unwrap_or(Value::Null),
    ))
}

/// Decodes a notification: `(context, notification, version)`. The version is V2 when the
/// request was an `oslo.version`/`oslo.message` envelope.
pub fn decode_notification(
    msg: &IncomingMessage,
) -> Result<(Map, Notification, NotifyVersion), Malformed> {
    let mut m = msg.json_object()?;
    let ctx = context_of(&mut m)?;
    let raw = m
        .remove("request")
        .ok_or_else(|| Malformed::MissingKey("request".into()))?;
    let (n, enveloped) = unwrap_envelope(raw)?;
    let Value::Object(mut n) = n else {
        return Err(wrong("request", "object", &n));
    };
    let req_str = |n: &Map, k: &str| -> Result<String, Malformed> {
        match n.get(k) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(wrong(&format!("request.{k}"), "string", other)),
            None => Err(Malformed::MissingKey(format!("request.{k}"))),
        }
    };
    let opt_str = |n: &Map, k: &str| -> Result<String, Malformed> {
        opt_string(n, k)
            .map(Option::unwrap_or_default)
            .map_err(|e| prefix_key(e, "request."))
    };
    let event_type = req_str(&n, "event_type")?;
    let priority: Priority = req_str(&n, "priority")?.parse()?;
    let notification = Notification {
        message_id: opt_str(&n, "message_id")?,
        publisher_id: opt_str(&n, "publisher_id")?,
        event_type,
        priority,
        timestamp: opt_str(&n, "timestamp")?,
        payload: n.remove("payload").unwrap_or(Value::Null),
    };
    let version = if enveloped {
        NotifyVersion::V2
    } else {
        NotifyVersion::V1
    };
    Ok((ctx, notification, version))
}

#[cfg(test)]
mod tests;
