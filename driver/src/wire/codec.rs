//! The AMQP codec: [`OutgoingMessage`] builds the sections oslo sends (header always
//! present, properties with `message-id`/`to`/`reply-to`/`correlation-id`, an amqp-value
//! string body or none for heartbeats); [`IncomingMessage`] reduces a received message to
//! what oslo reads, and [`decode_request`], [`decode_reply`] and [`decode_notification`]
//! turn it into the typed messages.

use fe2o3_amqp_types::messaging::{AmqpValue, Batch, Body, Header, Message, Properties};
use serde::Serialize;

use super::json::{to_python_json, write_map, write_str, write_value, Map, Value};
use super::message::{
    clip, write_notification, write_request, wrong, Malformed, MessageId, Notification,
    NotifyVersion, Priority, RemoteError, ReplyBody, Request, ENVELOPE_MESSAGE_KEY,
    ENVELOPE_VERSION_KEY,
};

/// The message type sent with fe2o3's `Sender::send`.
pub type AmqpMessage = Message<Body<EncodedValue>>;

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
        // serde_amqp allocates what a size field declares before it reads the bytes: a peer's
        // 4-byte size of 1.8 GB in a 200-byte message would be a 1.8 GB allocation.
        check_sizes(bytes).map_err(|e| Malformed::Amqp(e.to_string()))?;
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
        if text.len() > crate::limits::MAX_BODY_BYTES {
            return Err(Malformed::TooLarge {
                bytes: text.len(),
                max: crate::limits::MAX_BODY_BYTES,
            });
        }
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
        return Err(Malformed::UnsupportedEnvelopeVersion(clip(&ver)));
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

/// Checks that every size and count an AMQP encoding declares fits in the bytes that follow it
/// (what a peer sends must not make the decoder allocate more than it received). Walks the values
/// with an explicit stack, so nesting costs no recursion.
pub(crate) fn check_sizes(bytes: &[u8]) -> Result<(), &'static str> {
    // Each frame: the end of the region being read.
    let mut ends: Vec<usize> = vec![bytes.len()];
    let mut pos = 0usize;
    // Remaining array elements and their constructor: (end, count, code).
    let mut arrays: Vec<(usize, u32, u8)> = Vec::new();
    let mut steps = 0usize;
    loop {
        steps += 1;
        if steps > bytes.len() * 2 + 16 {
            return Err("encoding does not progress");
        }
        let end = *ends.last().unwrap_or(&bytes.len());
        if pos >= end {
            if pos > end {
                return Err("a value runs past its container");
            }
            if ends.len() == 1 {
                return Ok(());
            }
            if let Some((aend, count, _)) = arrays.last() {
                if *aend == end {
                    if *count > 0 {
                        return Err("array elements run past the array's size");
                    }
                    arrays.pop();
                }
            }
            ends.pop();
            continue;
        }
        // Inside an array: elements share one constructor and carry none of their own.
        let code = match arrays.last_mut() {
            Some((aend, count, code)) if *aend == end => {
                if *count == 0 {
                    if pos != end {
                        return Err("an array's size and its elements disagree");
                    }
                    continue;
                }
                *count -= 1;
                *code
            }
            _ => {
                let c = bytes[pos];
                pos += 1;
                if c == 0x00 {
                    // A described value: the descriptor, then the value, both read as values here.
                    continue;
                }
                c
            }
        };
        let need = |pos: usize, n: usize| -> Result<usize, &'static str> {
            pos.checked_add(n)
                .filter(|e| *e <= end)
                .ok_or("a size runs past the end of the message")
        };
        let read = |pos: usize, n: usize| -> Result<usize, &'static str> {
            let e = need(pos, n)?;
            Ok(bytes[pos..e]
                .iter()
                .fold(0usize, |a, b| (a << 8) | *b as usize))
        };
        match code >> 4 {
            0x4 => {}
            0x5 => pos = need(pos, 1)?,
            0x6 => pos = need(pos, 2)?,
            0x7 => pos = need(pos, 4)?,
            0x8 => pos = need(pos, 8)?,
            0x9 => pos = need(pos, 16)?,
            0xa | 0xb => {
                let w = if code >> 4 == 0xa { 1 } else { 4 };
                let size = read(pos, w)?;
                pos = need(pos + w, size)?;
            }
            0xc..=0xf => {
                let w = if matches!(code >> 4, 0xc | 0xe) { 1 } else { 4 };
                let size = read(pos, w)?;
                let body = pos + w;
                let cend = need(body, size)?;
                let count = read(body, w)?;
                if count > size {
                    return Err("a count larger than its container");
                }
                if code >> 4 >= 0xe {
                    // The element constructor (a described one is not checked further).
                    let ctor_at = need(body, w)?;
                    if ctor_at >= cend {
                        if count == 0 {
                            pos = cend;
                            continue;
                        }
                        return Err("an array without its element constructor");
                    }
                    let ctor = bytes[ctor_at];
                    if ctor == 0x00 {
                        pos = cend;
                        continue;
                    }
                    arrays.push((cend, count as u32, ctor));
                    ends.push(cend);
                    pos = ctor_at + 1;
                } else {
                    ends.push(cend);
                    pos = body + w;
                }
                continue;
            }
            _ => return Err("unknown type constructor"),
        }
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    fn incoming(body: IncomingBody) -> IncomingMessage {
        IncomingMessage {
            to: None,
            message_id: None,
            reply_to: None,
            correlation_id: None,
            ttl_ms: None,
            body,
        }
    }

    #[test]
    fn bodies_over_the_limit_are_refused_unparsed() {
        let max = crate::limits::MAX_BODY_BYTES;
        let m = incoming(IncomingBody::Text(" ".repeat(max + 1)));
        assert_eq!(
            decode_request(&m),
            Err(Malformed::TooLarge {
                bytes: max + 1,
                max
            })
        );
        assert!(matches!(
            decode_notification(&m),
            Err(Malformed::TooLarge { .. })
        ));
        assert!(matches!(decode_reply(&m), Err(Malformed::TooLarge { .. })));
    }

    #[test]
    fn peer_text_in_errors_is_clipped() {
        let long = "9".repeat(10_000);
        let body = format!(
            r#"{{"request": {{"oslo.version": "{long}", "oslo.message": "{{}}"}}, "context": {{}}}}"#
        );
        let e = decode_request(&incoming(IncomingBody::Text(body))).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        let body = format!(
            r#"{{"request": {{"event_type": "e", "priority": "{long}"}}, "context": {{}}}}"#
        );
        let e = decode_notification(&incoming(IncomingBody::Text(body))).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
    }
}
