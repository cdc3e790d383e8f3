//! qpidd's QMF v2 agent, as reached over AMQP 1.0 (qpid-cpp `ManagementAgent.cpp`,
//! `amqp/Translation.cpp`; the client side is qpid-tools' `qpidtoollibs/broker.py`).
//!
//! Request: a message to `qmf.default.direct` with subject `broker` (the routing key the
//! agent binds), `reply-to` (a queue, e.g. a dynamic receiver's address), a correlation-id,
//! application properties `x-amqp-0-10.app-id = qmf2`, `qmf.opcode`, `method = request`,
//! and an amqp-value map body:
//! * `_query_request`: `{_what: OBJECT, _schema_id: {_class_name: queue|exchange|connection|broker}}`
//!   or `{_what: OBJECT, _object_id: {_object_name: "org.apache.qpid.broker:queue:NAME"}}`;
//!   answered by `_query_response` messages whose body is a list of objects
//!   `{_values, _object_id, _schema_id, _update_ts, _create_ts, _delete_ts}`, at most 100
//!   per message, every message but the last carrying the `partial` property.
//! * `_method_request`: `{_object_id: {_object_name}, _method_name, _arguments}`; only
//!   `close` on a connection object is implemented (the connection gets a Close frame);
//!   answered by `_method_response` `{_arguments: {}}`.
//!
//! Errors are `_exception` messages `{_values: {error_code, error_text}}`. A request that
//! lacks the `qmf2` app-id or the `broker` subject is ignored, as qpidd ignores it.

use fe2o3_amqp::types::messaging::MessageId;
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Uuid, Value};

use super::{app_prop, body_value, get, map, now_ns, response, simple_text, string, text, Reply};
use crate::core::conn::ConnCtx;
use crate::core::Core;
use crate::node::{Msg, Node, NodeKind};

const PACKAGE: &str = "org.apache.qpid.broker";
/// Objects per `_query_response` message (qpidd's `maxReplyObjs`).
const MAX_REPLY_OBJECTS: usize = 100;
const STATUS_UNKNOWN_OBJECT: u32 = 1;
const STATUS_UNKNOWN_METHOD: u32 = 2;
const STATUS_PARAMETER_INVALID: u32 = 4;

/// A QMF failure: `_exception` with this code and text.
struct Exception(u32, String);

pub(super) fn handle(core: &Core, request: &Msg, reply_to: &str) -> Vec<Reply> {
    let app_id = app_prop(request, "x-amqp-0-10.app-id").and_then(simple_text);
    if app_id != Some("qmf2") {
        tracing::info!("QMF request ignored: application property x-amqp-0-10.app-id is not qmf2");
        return Vec::new();
    }
    let subject = request
        .properties
        .as_ref()
        .and_then(|p| p.subject.as_deref());
    let via_local = subject == Some("broker");
    if !via_local && subject != Some(core.qmf_agent.as_str()) {
        tracing::info!(
            ?subject,
            "QMF request ignored: the subject (routing key) must be `broker`"
        );
        return Vec::new();
    }
    let agent = if via_local {
        "broker"
    } else {
        core.qmf_agent.as_str()
    };
    let cid = correlation_text(request);
    let out = |opcode: &str, method: &str, partial: bool, body: Value| Reply {
        to: reply_to.to_string(),
        msg: qmf_message(cid.clone(), opcode, method, agent, partial, body),
    };
    let opcode = app_prop(request, "qmf.opcode").and_then(simple_text);
    let body = body_value(request);
    let result = match opcode {
        Some("_query_request") => query(core, body).map(|pages| {
            let last = pages.len() - 1;
            pages
                .into_iter()
                .enumerate()
                .map(|(i, page)| out("_query_response", "response", i < last, Value::List(page)))
                .collect()
        }),
        Some("_method_request") => method(core, body).map(|args| {
            let body = map([("_arguments", args)]);
            vec![out("_method_response", "response", false, body)]
        }),
        other => {
            tracing::info!(opcode = ?other, "QMF opcode not supported; ignored");
            Ok(Vec::new())
        }
    };
    result.unwrap_or_else(|Exception(code, text)| {
        let values = map([
            ("error_code", Value::Uint(code)),
            ("error_text", string(text)),
        ]);
        vec![out(
            "_exception",
            "indication",
            false,
            map([("_values", values)]),
        )]
    })
}

/// qpidd hands the correlation-id to its agent as a string and sends it back as one.
fn correlation_text(request: &Msg) -> Option<MessageId> {
    let cid = request.properties.as_ref()?.correlation_id.as_ref()?;
    let s = match cid {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid::Uuid::from_bytes(*u.as_inner()).to_string(),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    };
    Some(MessageId::String(s))
}

fn qmf_message(
    cid: Option<MessageId>,
    opcode: &str,
    method: &str,
    agent: &str,
    partial: bool,
    body: Value,
) -> Msg {
    let mut props = vec![
        ("method", SimpleValue::from(method)),
        ("qmf.opcode", SimpleValue::from(opcode)),
        ("qmf.agent", SimpleValue::from(agent)),
    ];
    if opcode == "_query_response" {
        props.push(("qmf.content", SimpleValue::from("_data")));
    }
    if partial {
        props.push(("partial", SimpleValue::from("")));
    }
    response(cid, None, props, body)
}

fn as_map(v: Option<&Value>) -> Option<&OrderedMap<Value, Value>> {
    match v? {
        Value::Map(m) => Some(m),
        _ => None,
    }
}

/// The objects a query asks for, split into response pages.
fn query(core: &Core, body: Option<&Value>) -> Result<Vec<Vec<Value>>, Exception> {
    let missing = || {
        Exception(
            STATUS_PARAMETER_INVALID,
            "_what element missing in Query".into(),
        )
    };
    let q = as_map(body).ok_or_else(missing)?;
    let what = get(q, "_what").ok_or_else(missing)?;
    match text(what) {
        Some("OBJECT") => {}
        Some(other) => {
            let t = format!("Query for _what => '{other}' not supported");
            return Err(Exception(STATUS_PARAMETER_INVALID, t));
        }
        None => {
            let t = "_what element is not a string".to_string();
            return Err(Exception(STATUS_PARAMETER_INVALID, t));
        }
    }
    if let Some(name) = as_map(get(q, "_object_id")).and_then(|m| get(m, "_object_name")) {
        let name = text(name).unwrap_or_default();
        let found = all_objects(core).into_iter().find(|o| o.name == name);
        return Ok(vec![found.map(|o| o.encode()).into_iter().collect()]);
    }
    let schema = as_map(get(q, "_schema_id"));
    let class = schema.and_then(|s| get(s, "_class_name")).and_then(text);
    let package = schema.and_then(|s| get(s, "_package_name")).and_then(text);
    let objects: Vec<Value> = match (class, package) {
        (_, Some(p)) if p != PACKAGE => Vec::new(),
        (Some(c), _) => objects_of(core, c)
            .into_iter()
            .map(|o| o.encode())
            .collect(),
        (None, _) => Vec::new(),
    };
    let mut pages: Vec<Vec<Value>> = objects
        .chunks(MAX_REPLY_OBJECTS)
        .map(<[Value]>::to_vec)
        .collect();
    if pages.is_empty() {
        pages.push(Vec::new());
    }
    Ok(pages)
}

/// One managed object.
struct Object {
    class: &'static str,
    /// The v2 object name, `org.apache.qpid.broker:<class>:<key>`.
    name: String,
    values: Value,
}

impl Object {
    fn new(class: &'static str, key: &str, values: Value) -> Object {
        Object {
            class,
            name: format!("{PACKAGE}:{class}:{key}"),
            values,
        }
    }

    fn encode(self) -> Value {
        let ts = now_ns();
        map([
            ("_values", self.values),
            (
                "_object_id",
                map([
                    ("_object_name", string(self.name)),
                    ("_agent_epoch", Value::Long(1)),
                ]),
            ),
            (
                "_schema_id",
                map([
                    ("_package_name", string(PACKAGE)),
                    ("_class_name", string(self.class)),
                    ("_type", string("_data")),
                    ("_hash", Value::Uuid(Uuid::from([0u8; 16]))),
                ]),
            ),
            ("_update_ts", Value::Ulong(ts)),
            ("_create_ts", Value::Ulong(ts)),
            ("_delete_ts", Value::Ulong(0)),
        ])
    }
}

fn all_objects(core: &Core) -> Vec<Object> {
    ["broker", "queue", "exchange", "connection"]
        .into_iter()
        .flat_map(|c| objects_of(core, c))
        .collect()
}

fn objects_of(core: &Core, class: &str) -> Vec<Object> {
    match class {
        "queue" => core
            .managed_nodes()
            .iter()
            .filter(|n| n.kind == NodeKind::Queue)
            .map(|n| queue_object(n))
            .collect(),
        "exchange" => core
            .managed_nodes()
            .iter()
            .filter(|n| n.kind == NodeKind::Topic)
            .map(|n| exchange_object(n))
            .collect(),
        "connection" => core
            .live_connections()
            .iter()
            .map(|c| connection_object(c))
            .collect(),
        "broker" => vec![broker_object(core)],
        _ => Vec::new(),
    }
}

fn vhost_ref() -> Value {
    map([(
        "_object_name",
        string("org.apache.qpid.broker:vhost:org.apache.qpid.broker:broker:amqp-broker,/"),
    )])
}

/// Queue statistics as qpidd keeps them: `msgDepth = msgTotalEnqueues - msgTotalDequeues`
/// (delivered but unsettled messages are still in the queue).
fn queue_object(n: &Node) -> Object {
    n.sweep_expired();
    let s = n.stats.snapshot(n.kind_name(), n.depth());
    let values = map([
        ("vhostRef", vhost_ref()),
        ("name", string(&n.name)),
        ("durable", Value::Bool(false)),
        ("autoDelete", Value::Bool(n.temporary)),
        ("exclusive", Value::Bool(n.temporary)),
        ("arguments", map([])),
        ("msgTotalEnqueues", Value::Ulong(s.enqueued)),
        ("msgTotalDequeues", Value::Ulong(s.dequeued)),
        (
            "msgDepth",
            Value::Ulong(s.enqueued.saturating_sub(s.dequeued)),
        ),
        ("acquires", Value::Ulong(s.delivered)),
        ("releases", Value::Ulong(s.released)),
        ("discardsTtl", Value::Ulong(s.expired)),
        ("discardsSubscriber", Value::Ulong(s.rejected)),
        ("consumerCount", Value::Uint(s.consumers as u32)),
        ("bindingCount", Value::Uint(1)),
    ]);
    Object::new("queue", &n.name, values)
}

fn exchange_object(n: &Node) -> Object {
    let s = n.stats.snapshot(n.kind_name(), 0);
    let values = map([
        ("vhostRef", vhost_ref()),
        ("name", string(&n.name)),
        (
            "type",
            string(if n.name == "amq.fanout" {
                "fanout"
            } else {
                "topic"
            }),
        ),
        ("durable", Value::Bool(false)),
        ("autoDelete", Value::Bool(false)),
        ("arguments", map([])),
        ("producerCount", Value::Uint(s.producers as u32)),
        ("bindingCount", Value::Uint(s.consumers as u32)),
        ("msgReceives", Value::Ulong(s.enqueued)),
        ("msgDrops", Value::Ulong(s.dropped)),
        ("msgRoutes", Value::Ulong(s.delivered)),
    ]);
    Object::new("exchange", &n.name, values)
}

/// qpidd names a connection `<local address>-<peer address>`.
fn connection_address(c: &ConnCtx) -> String {
    format!("{}-{}", c.local, c.stats.peer)
}

fn connection_object(c: &ConnCtx) -> Object {
    let ident = c.peer.get();
    let address = connection_address(c);
    let s = c.stats.snapshot();
    let mut remote = Vec::new();
    if let Some(id) = &ident.container_id {
        remote.push(("container-id", string(id)));
    }
    let values = map([
        ("vhostRef", vhost_ref()),
        ("address", string(&address)),
        ("incoming", Value::Bool(true)),
        (
            "authIdentity",
            string(ident.user.as_deref().unwrap_or("anonymous")),
        ),
        (
            "saslMechanism",
            string(ident.sasl_mechanism.as_deref().unwrap_or("")),
        ),
        ("remoteProperties", map(remote)),
        ("protocol", string("AMQP 1.0")),
        ("closing", Value::Bool(false)),
        ("msgsFromClient", Value::Ulong(s.received)),
        ("msgsToClient", Value::Ulong(s.sent)),
    ]);
    Object::new("connection", &address, values)
}

fn broker_object(core: &Core) -> Object {
    let values = map([
        ("name", string("amqp-broker")),
        ("version", string(core.flavour.version())),
        ("port", Value::Ushort(core.config.bind.port())),
    ]);
    Object::new("broker", "amqp-broker", values)
}

/// Runs a method; only `close` on a connection exists here.
fn method(core: &Core, body: Option<&Value>) -> Result<Value, Exception> {
    let invalid = || Exception(STATUS_PARAMETER_INVALID, "InvalidParameter".into());
    let m = as_map(body).ok_or_else(invalid)?;
    let object = as_map(get(m, "_object_id"))
        .and_then(|o| get(o, "_object_name"))
        .and_then(text)
        .ok_or_else(invalid)?;
    let method = get(m, "_method_name").and_then(text).ok_or_else(invalid)?;
    let not_found = || {
        let t = format!("No object found with ID={object}");
        Exception(STATUS_UNKNOWN_OBJECT, t)
    };
    let key = object
        .strip_prefix(PACKAGE)
        .and_then(|r| r.strip_prefix(":connection:"));
    let Some(key) = key else {
        if all_objects(core).iter().any(|o| o.name == object) {
            return Err(Exception(STATUS_UNKNOWN_METHOD, "UnknownMethod".into()));
        }
        return Err(not_found());
    };
    let conn = core
        .live_connections()
        .into_iter()
        .find(|c| connection_address(c) == key)
        .ok_or_else(not_found)?;
    if method != "close" {
        return Err(Exception(STATUS_UNKNOWN_METHOD, "UnknownMethod".into()));
    }
    tracing::info!(connection = key, "QMF: closing connection");
    conn.request_close(None);
    Ok(map([]))
}
