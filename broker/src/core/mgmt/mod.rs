//! Management requests, answered the way the real brokers answer them, so that one client
//! works against the embedded broker and the real one.
//!
//! | flavour | node | protocol | module |
//! |---|---|---|---|
//! | qpidd | `qmf.default.direct` (subject `broker`) | QMF v2 map messages | [`qmf`] |
//! | router | `$management` | AMQP management (qdrouterd 1.19 agent) | [`router`] |
//!
//! A request is a message sent to the node with a `reply-to`; the response is routed to
//! that address like any other message (a dynamic receiver's address, typically). The
//! request itself is accepted.

mod qmf;
mod router;

use std::sync::Arc;

use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Header, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};

use super::conn::ConnCtx;
use super::Core;
use crate::node::{Management, Msg, Node, Stored};
use crate::util::lock;

/// qpidd's QMF v2 request exchange.
pub(super) const QMF_ADDRESS: &str = "qmf.default.direct";
/// qdrouterd's management node.
pub(super) const AMQP_MANAGEMENT_ADDRESS: &str = "$management";

/// A response to route to `to`.
struct Reply {
    to: String,
    msg: Msg,
}

impl Core {
    /// Answers one management request; the responses go to its `reply-to`.
    pub(super) fn manage(&self, management: Management, request: &Msg, from: &ConnCtx) {
        let Some(reply_to) = request.properties.as_ref().and_then(|p| p.reply_to.clone()) else {
            tracing::info!(?management, "management request without reply-to ignored");
            return;
        };
        let replies = match management {
            Management::Qmf => qmf::handle(self, request, &reply_to),
            Management::AmqpManagement => router::handle(self, request, &reply_to, from),
        };
        for r in replies {
            self.deliver_reply(r);
        }
    }

    fn deliver_reply(&self, reply: Reply) {
        let node = match self.node(&reply.to) {
            Some(n) => n,
            None => match self.relay_target(Some(&reply.to)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::info!(to = %reply.to, error = ?e.description, "management reply has nowhere to go");
                    return;
                }
            },
        };
        // The routing outcome (an end-to-end one on a router) is not waited for.
        let _ = node.route(Stored::new(reply.msg, 0, false));
    }

    /// Every node but the management ones, sorted by name.
    fn managed_nodes(&self) -> Vec<Arc<Node>> {
        let mut nodes: Vec<Arc<Node>> = lock(&self.nodes)
            .values()
            .filter(|n| n.management.is_none())
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes
    }

    /// Open connections in id order.
    fn live_connections(&self) -> Vec<Arc<ConnCtx>> {
        let mut conns: Vec<Arc<ConnCtx>> = lock(&self.live).values().cloned().collect();
        conns.sort_by_key(|c| c.stats.id);
        conns
    }
}

/// The amqp-value of a message body.
fn body_value(msg: &Msg) -> Option<&Value> {
    match &msg.body {
        Body::Value(AmqpValue(v)) => Some(v),
        _ => None,
    }
}

/// Text of a string, symbol or UTF-8 binary value.
fn text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Symbol(s) => Some(&s.0),
        Value::Binary(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// A map entry by string or symbol key.
fn get<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.iter()
        .find(|(k, _)| text(k) == Some(key))
        .map(|(_, v)| v)
}

/// Text of an application property.
fn app_prop<'a>(msg: &'a Msg, key: &str) -> Option<&'a SimpleValue> {
    msg.application_properties.as_ref()?.0.get(key)
}

fn simple_text(v: &SimpleValue) -> Option<&str> {
    match v {
        SimpleValue::String(s) => Some(s),
        SimpleValue::Symbol(s) => Some(&s.0),
        _ => None,
    }
}

/// A map with string keys, in the order given.
fn map<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v);
    }
    Value::Map(m)
}

fn string(s: impl Into<String>) -> Value {
    Value::String(s.into())
}

/// A response message: `correlation-id` and optional `to`, application properties, an
/// amqp-value body.
fn response(
    correlation_id: Option<MessageId>,
    to: Option<String>,
    app_props: Vec<(&str, SimpleValue)>,
    body: Value,
) -> Msg {
    let mut props = OrderedMap::new();
    for (k, v) in app_props {
        props.insert(k.to_string(), v);
    }
    Message {
        header: Some(Header::default()),
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            to,
            correlation_id,
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(props)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    }
}

/// Nanoseconds since the epoch (QMF timestamps).
fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
