//! qdrouterd 1.19's AMQP management agent on `$management` (qpid-dispatch
//! `src/router_core/management_agent.c`, `agent_address.c`, `agent_connection.c`; the
//! client side is `python/qpid_dispatch/management/client.py`, as used by qdmanage/qdstat).
//!
//! Request: a message to `$management` with `reply-to`, a correlation-id, and application
//! properties `operation`, `entityType` (or `type`), and for single entities `identity` or
//! `name`; `offset` and `count` page a QUERY.
//! * `QUERY` of `org.apache.qpid.dispatch.router.address` or `...connection`, body
//!   `{attributeNames: [..]}` (empty: every attribute): the response body is
//!   `{attributeNames: [..], results: [[..], ..]}`, one list per entity, in that order.
//! * `UPDATE` of a connection by `identity` with body `{adminStatus: "deleted"}` closes it
//!   (`amqp:connection:forced` "Connection forced-closed by management request"); the
//!   response body is the connection's attribute map.
//!
//! Every response has `correlation-id` = the request's correlation-id, `to` = its reply-to,
//! and application properties `statusDescription` and `statusCode` (an int: 200, 400,
//! 404, 501).

use fe2o3_amqp::types::primitives::{SimpleValue, Value};

use super::{app_prop, body_value, get, map, response, simple_text, string, text, Reply};
use crate::core::conn::ConnCtx;
use crate::core::resolve::router_distribution;
use crate::core::Core;
use crate::node::{Msg, Node, NodeKind};
use crate::util::amqp_error;

const ADDRESS_TYPE: &str = "org.apache.qpid.dispatch.router.address";
const CONNECTION_TYPE: &str = "org.apache.qpid.dispatch.connection";

const ADDRESS_COLUMNS: [&str; 21] = [
    "name",
    "identity",
    "type",
    "key",
    "distribution",
    "inProcess",
    "subscriberCount",
    "remoteCount",
    "containerCount",
    "remoteHostRouters",
    "deliveriesIngress",
    "deliveriesEgress",
    "deliveriesTransit",
    "deliveriesToContainer",
    "deliveriesFromContainer",
    "deliveriesEgressRouteContainer",
    "deliveriesIngressRouteContainer",
    "transitOutstanding",
    "trackedDeliveries",
    "priority",
    "deliveriesRedirectedToFallback",
];

const CONNECTION_COLUMNS: [&str; 25] = [
    "name",
    "identity",
    "host",
    "role",
    "protocol",
    "dir",
    "container",
    "sasl",
    "isAuthenticated",
    "user",
    "isEncrypted",
    "sslProto",
    "sslCipher",
    "properties",
    "sslSsf",
    "tenant",
    "type",
    "ssl",
    "opened",
    "active",
    "adminStatus",
    "operStatus",
    "uptimeSeconds",
    "lastDlvSeconds",
    "enableProtocolTrace",
];

/// A response status: (statusCode, statusDescription).
type Status = (i32, &'static str);
const OK: Status = (200, "OK");
const BAD_REQUEST: Status = (400, "Bad Request");
const NOT_FOUND: Status = (404, "Not Found");
const NOT_IMPLEMENTED: Status = (501, "Not Implemented");

fn prop<'a>(request: &'a Msg, key: &str) -> Option<&'a str> {
    app_prop(request, key).and_then(simple_text)
}

fn prop_int(request: &Msg, key: &str) -> Option<i64> {
    match app_prop(request, key)? {
        SimpleValue::Int(n) => Some(i64::from(*n)),
        SimpleValue::Long(n) => Some(*n),
        SimpleValue::Uint(n) => Some(i64::from(*n)),
        SimpleValue::Ulong(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

pub(super) fn handle(core: &Core, request: &Msg, reply_to: &str, from: &ConnCtx) -> Vec<Reply> {
    let entity = prop(request, "entityType").or_else(|| prop(request, "type"));
    let (status, body) = match (prop(request, "operation"), entity) {
        (Some("QUERY"), Some(t @ (ADDRESS_TYPE | CONNECTION_TYPE))) => {
            (OK, query(core, request, t))
        }
        (Some("UPDATE"), Some(CONNECTION_TYPE)) => update_connection(core, request, from),
        (Some(op @ ("QUERY" | "READ" | "UPDATE" | "CREATE" | "DELETE")), t) => {
            tracing::info!(op, entity = ?t, "router management: entity type not supported here");
            (NOT_FOUND, map([]))
        }
        (op, _) => {
            tracing::info!(op = ?op, "router management: operation not supported");
            (NOT_IMPLEMENTED, map([]))
        }
    };
    let cid = request
        .properties
        .as_ref()
        .and_then(|p| p.correlation_id.clone());
    let props = vec![
        ("statusDescription", SimpleValue::from(status.1)),
        ("statusCode", SimpleValue::Int(status.0)),
    ];
    let msg = response(cid, Some(reply_to.to_string()), props, body);
    vec![Reply {
        to: reply_to.to_string(),
        msg,
    }]
}

/// The requested attribute names (all when none are given), and the rows.
fn query(core: &Core, request: &Msg, entity: &str) -> Value {
    let all: &[&str] = if entity == ADDRESS_TYPE {
        &ADDRESS_COLUMNS
    } else {
        &CONNECTION_COLUMNS
    };
    let asked: Vec<String> = match body_value(request) {
        Some(Value::Map(m)) => match get(m, "attributeNames") {
            Some(Value::List(l)) => l.iter().filter_map(text).map(str::to_string).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    let names: Vec<String> = if asked.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        asked
    };
    let rows: Vec<Vec<(&'static str, Value)>> = if entity == ADDRESS_TYPE {
        core.managed_nodes()
            .iter()
            .map(|n| address_row(core, n))
            .collect()
    } else {
        core.live_connections()
            .iter()
            .map(|c| connection_row(c, false))
            .collect()
    };
    let offset = prop_int(request, "offset").unwrap_or(0).max(0) as usize;
    let count = prop_int(request, "count")
        .filter(|c| *c >= 0)
        .map(|c| c as usize);
    let results: Vec<Value> = rows
        .into_iter()
        .skip(offset)
        .take(count.unwrap_or(usize::MAX))
        .map(|row| Value::List(names.iter().map(|n| pick(&row, n)).collect()))
        .collect();
    let names = names.into_iter().map(Value::String).collect();
    map([
        ("attributeNames", Value::List(names)),
        ("results", Value::List(results)),
    ])
}

fn pick(row: &[(&str, Value)], name: &str) -> Value {
    row.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or(Value::Null)
}

/// The router's address hash key: `M0<address>` for mobile addresses, `L<rest>` for this
/// router's own (`amqp:/_topo/0/<router-id>/<rest>`, e.g. a dynamic reply address).
fn address_key(core: &Core, address: &str) -> String {
    let local = format!("amqp:/_topo/0/{}/", core.router_id);
    match address.strip_prefix(&local) {
        Some(rest) => format!("L{rest}"),
        None => format!("M0{address}"),
    }
}

fn address_row(core: &Core, n: &Node) -> Vec<(&'static str, Value)> {
    let s = n.stats.snapshot(n.kind_name(), n.depth());
    let key = string(address_key(core, &n.name));
    let distribution = match n.kind {
        NodeKind::Multicast | NodeKind::Topic => "multicast",
        NodeKind::Anycast | NodeKind::Queue => router_distribution(&n.name),
    };
    vec![
        ("name", key.clone()),
        ("identity", key.clone()),
        ("type", string(ADDRESS_TYPE)),
        ("key", key),
        ("distribution", string(distribution)),
        ("inProcess", Value::Uint(0)),
        ("subscriberCount", Value::Uint(s.consumers as u32)),
        ("remoteCount", Value::Uint(0)),
        ("containerCount", Value::Uint(0)),
        ("remoteHostRouters", Value::List(Vec::new())),
        ("deliveriesIngress", Value::Ulong(s.enqueued)),
        ("deliveriesEgress", Value::Ulong(s.delivered)),
        ("deliveriesTransit", Value::Ulong(0)),
        ("deliveriesToContainer", Value::Ulong(0)),
        ("deliveriesFromContainer", Value::Ulong(0)),
        ("deliveriesEgressRouteContainer", Value::Ulong(0)),
        ("deliveriesIngressRouteContainer", Value::Ulong(0)),
        ("transitOutstanding", Value::Null),
        ("trackedDeliveries", Value::Ulong(0)),
        ("priority", Value::Int(-1)),
        ("deliveriesRedirectedToFallback", Value::Ulong(0)),
    ]
}

fn connection_row(c: &ConnCtx, closing: bool) -> Vec<(&'static str, Value)> {
    let ident = c.peer.get();
    let opt = |v: Option<String>| v.map(Value::String).unwrap_or(Value::Null);
    let host = c.stats.peer.clone();
    vec![
        ("name", string(format!("connection/{host}"))),
        ("identity", string(c.stats.id.to_string())),
        ("host", string(host)),
        ("role", string("normal")),
        ("protocol", string("amqp")),
        ("dir", string("in")),
        ("container", opt(ident.container_id)),
        ("sasl", opt(ident.sasl_mechanism)),
        ("isAuthenticated", Value::Bool(ident.user.is_some())),
        ("user", opt(ident.user)),
        ("isEncrypted", Value::Bool(c.tls)),
        ("sslProto", Value::Null),
        ("sslCipher", Value::Null),
        ("properties", map([])),
        ("sslSsf", Value::Long(0)),
        ("tenant", Value::Null),
        ("type", string(CONNECTION_TYPE)),
        ("ssl", Value::Bool(c.tls)),
        ("opened", Value::Bool(true)),
        ("active", Value::Bool(true)),
        (
            "adminStatus",
            string(if closing { "deleted" } else { "enabled" }),
        ),
        ("operStatus", string(if closing { "closing" } else { "up" })),
        ("uptimeSeconds", Value::Ulong(c.opened.elapsed().as_secs())),
        ("lastDlvSeconds", Value::Null),
        ("enableProtocolTrace", Value::Bool(false)),
    ]
}

/// UPDATE of a connection: `adminStatus: deleted` force-closes it.
fn update_connection(core: &Core, request: &Msg, from: &ConnCtx) -> (Status, Value) {
    let body = match body_value(request) {
        Some(Value::Map(m)) => m,
        _ => return (BAD_REQUEST, map([])),
    };
    let Some(identity) = prop(request, "identity") else {
        return (BAD_REQUEST, map([]));
    };
    let Some(conn) = core
        .live_connections()
        .into_iter()
        .find(|c| c.stats.id.to_string() == identity)
    else {
        return (BAD_REQUEST, map([]));
    };
    let row = |closing| {
        let entries = connection_row(&conn, closing);
        map(entries)
    };
    match get(body, "adminStatus").and_then(text) {
        Some("deleted") => {
            tracing::info!(
                id = conn.stats.id,
                by = from.stats.id,
                "router management: connection force-closed"
            );
            conn.request_close(Some(amqp_error(
                "amqp:connection:forced",
                "Connection forced-closed by management request",
            )));
            (OK, row(true))
        }
        Some("enabled") => (OK, row(false)),
        Some(_) => (BAD_REQUEST, map([])),
        None if get(body, "enableProtocolTrace").is_some() => (OK, row(false)),
        None => (BAD_REQUEST, map([])),
    }
}
