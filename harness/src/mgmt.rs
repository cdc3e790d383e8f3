//! Broker counters through each broker's own management protocol, over AMQP 1.0, for brokers the
//! harness cannot look into (real qpidd and qdrouterd, on any backend or behind `--url`):
//!
//! - qpidd: QMF v2. A `_query_request` for the `queue` class goes to `qmf.default.direct` with subject
//!   `broker`, application properties `x-amqp-0-10.app-id: qmf2`, `qmf.opcode`, `method: request` and a
//!   dynamic reply queue; `_query_response` messages carry the queue objects (`msgDepth`,
//!   `msgTotalEnqueues`, `msgTotalDequeues`, `acquires`, `releases`, `discardsTtl`, `consumerCount`),
//!   every one but the last marked `partial`.
//! - qdrouterd: AMQP management. A `QUERY` of `org.apache.qpid.dispatch.router.address` to
//!   `$management`, answered with `attributeNames` and `results` rows.
//!
//! The answer has the shape of the embedded broker's counters (`{flavour, nodes: {NAME: {kind, depth,
//! enqueued, dequeued, delivered, consumers}}}`), so `broker_counters:` expectations read the same on
//! every broker. Every wait is bounded; errors name the request.

use std::collections::BTreeMap;
use std::time::Duration;

use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties, Source,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use serde_json::{json, Value as Json};

use crate::brokers::Product;

/// Bound on connecting and on each answer.
const WAIT: Duration = Duration::from_secs(5);
/// Most answer pages read from one QMF query (100 objects each).
const MAX_PAGES: usize = 100;

/// Where and as whom to ask.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`.
    pub authority: String,
    /// SASL PLAIN user and password; anonymous when `None`.
    pub credentials: Option<(String, String)>,
}

impl Target {
    /// The first host of `url`, with its credentials.
    pub fn from_url(url: &driver::url::TransportUrl) -> Option<Target> {
        let h = url.hosts.first()?;
        Some(Target {
            authority: h.authority(),
            credentials: h.username.clone().map(|u| {
                (
                    u,
                    h.password
                        .as_ref()
                        .map(|p| p.expose().to_string())
                        .unwrap_or_default(),
                )
            }),
        })
    }
}

/// Closes every client connection of the broker at `target` (but the one asking) through its
/// management protocol: QMF's `close` method on each connection object (qpidd), an `UPDATE` of each
/// normal connection to `adminStatus: deleted` (qdrouterd). Returns how many it closed.
pub async fn drop_connections(product: Product, target: &Target) -> Result<usize, String> {
    match product {
        Product::Qpidd => qmf_close_connections(target)
            .await
            .map_err(|e| format!("qpidd QMF (qmf.default.direct): {e}")),
        Product::Qdrouterd => router_close_connections(target)
            .await
            .map_err(|e| format!("qdrouterd management ($management): {e}")),
        other => Err(format!(
            "no management client for {} to close connections with",
            other.as_str()
        )),
    }
}

fn qmf_request(
    reply_to: &str,
    opcode: &str,
    body: OrderedMap<Value, Value>,
) -> Message<Body<Value>> {
    Message::builder()
        .properties(
            Properties::builder()
                .subject("broker")
                .reply_to(reply_to.to_string())
                .correlation_id(MessageId::String(uuid::Uuid::new_v4().to_string()))
                .build(),
        )
        .application_properties(props(&[
            ("x-amqp-0-10.app-id", "qmf2"),
            ("qmf.opcode", opcode),
            ("method", "request"),
        ]))
        .body(Body::Value(AmqpValue(Value::Map(body))))
        .build()
}

fn qmf_opcode(m: &Message<Body<Value>>) -> Option<String> {
    m.application_properties
        .as_ref()
        .and_then(|a| a.0.get("qmf.opcode"))
        .and_then(|v| match v {
            SimpleValue::String(s) => Some(s.clone()),
            _ => None,
        })
}

async fn qmf_close_connections(target: &Target) -> Result<usize, String> {
    let mut x = Exchange::open(target, "qmf.default.direct").await?;
    let result = async {
        let mut query = OrderedMap::new();
        query.insert(Value::from("_what"), Value::from("OBJECT"));
        let mut schema = OrderedMap::new();
        schema.insert(Value::from("_class_name"), Value::from("connection"));
        query.insert(Value::from("_schema_id"), Value::Map(schema));
        let reply_to = x.reply_to.clone();
        let mut names = Vec::new();
        let mut m = x
            .ask(
                "QMF _query_request (connection)",
                qmf_request(&reply_to, "_query_request", query),
            )
            .await?;
        for _ in 0..MAX_PAGES {
            if let Some(Value::List(objects)) = body_of(&m) {
                for o in objects {
                    let Value::Map(o) = o else { continue };
                    let name = match get(o, "_object_id") {
                        Some(Value::Map(id)) => get(id, "_object_name").and_then(text),
                        _ => None,
                    };
                    let address = match get(o, "_values") {
                        Some(Value::Map(v)) => get(v, "address").and_then(text),
                        _ => None,
                    };
                    if let (Some(name), Some(address)) = (name, address) {
                        if !address.ends_with(&format!("-{}", x.local)) {
                            names.push(name);
                        }
                    }
                }
            }
            let partial = m
                .application_properties
                .as_ref()
                .is_some_and(|a| a.0.contains_key("partial"));
            if !partial {
                break;
            }
            let d = within("QMF _query_response", x.receiver.recv::<Body<Value>>()).await?;
            let _ = x.receiver.accept(&d).await;
            m = d.into_message();
        }
        for name in &names {
            let mut body = OrderedMap::new();
            let mut id = OrderedMap::new();
            id.insert(Value::from("_object_name"), Value::from(name.as_str()));
            body.insert(Value::from("_object_id"), Value::Map(id));
            body.insert(Value::from("_method_name"), Value::from("close"));
            body.insert(Value::from("_arguments"), Value::Map(OrderedMap::new()));
            let answer = x
                .ask(
                    "QMF _method_request close",
                    qmf_request(&reply_to, "_method_request", body),
                )
                .await?;
            if qmf_opcode(&answer).as_deref() == Some("_exception") {
                return Err(format!(
                    "QMF _method_request close {name}: the broker answered _exception: {:?}",
                    body_of(&answer)
                ));
            }
        }
        Ok(names.len())
    }
    .await;
    x.close().await;
    result
}

fn management_request(
    reply_to: &str,
    pairs: &[(&str, &str)],
    body: OrderedMap<Value, Value>,
) -> Message<Body<Value>> {
    let mut all = vec![("type", "org.amqp.management"), ("name", "self")];
    all.extend_from_slice(pairs);
    Message::builder()
        .properties(
            Properties::builder()
                .reply_to(reply_to.to_string())
                .message_id(MessageId::String(uuid::Uuid::new_v4().to_string()))
                .build(),
        )
        .application_properties(props(&all))
        .body(Body::Value(AmqpValue(Value::Map(body))))
        .build()
}

fn management_status(m: &Message<Body<Value>>) -> Option<i64> {
    m.application_properties
        .as_ref()
        .and_then(|a| a.0.get("statusCode"))
        .and_then(|v| match v {
            SimpleValue::Int(n) => Some(i64::from(*n)),
            SimpleValue::Uint(n) => Some(i64::from(*n)),
            SimpleValue::Long(n) => Some(*n),
            _ => None,
        })
}

/// `attributeNames` + `results` of a management QUERY, as rows of name → value.
fn query_rows(m: &Message<Body<Value>>) -> Vec<BTreeMap<String, Value>> {
    let Some(Value::Map(answer)) = body_of(m) else {
        return Vec::new();
    };
    let names: Vec<String> = match get(answer, "attributeNames") {
        Some(Value::List(l)) => l.iter().filter_map(text).collect(),
        _ => Vec::new(),
    };
    let Some(Value::List(rows)) = get(answer, "results") else {
        return Vec::new();
    };
    rows.iter()
        .filter_map(|r| match r {
            Value::List(cells) => Some(
                names
                    .iter()
                    .cloned()
                    .zip(cells.iter().cloned())
                    .collect::<BTreeMap<_, _>>(),
            ),
            _ => None,
        })
        .collect()
}

async fn router_close_connections(target: &Target) -> Result<usize, String> {
    let mut x = Exchange::open(target, "$management").await?;
    let result = async {
        let reply_to = x.reply_to.clone();
        let mut body = OrderedMap::new();
        body.insert(
            Value::from("attributeNames"),
            Value::List(
                ["identity", "host", "role"]
                    .iter()
                    .map(|a| Value::from(*a))
                    .collect(),
            ),
        );
        let m = x
            .ask(
                "$management QUERY connection",
                management_request(
                    &reply_to,
                    &[
                        ("operation", "QUERY"),
                        ("entityType", "org.apache.qpid.dispatch.connection"),
                    ],
                    body,
                ),
            )
            .await?;
        if let Some(s) = management_status(&m).filter(|s| !(200..300).contains(s)) {
            return Err(format!("$management QUERY connection: status {s}"));
        }
        let victims: Vec<String> = query_rows(&m)
            .into_iter()
            .filter(|r| {
                r.get("role")
                    .and_then(text)
                    .is_none_or(|role| role == "normal")
            })
            .filter(|r| r.get("host").and_then(text).as_deref() != Some(x.local.as_str()))
            .filter_map(|r| r.get("identity").and_then(text))
            .collect();
        for id in &victims {
            let mut body = OrderedMap::new();
            body.insert(Value::from("adminStatus"), Value::from("deleted"));
            let answer = x
                .ask(
                    "$management UPDATE connection",
                    management_request(
                        &reply_to,
                        &[
                            ("operation", "UPDATE"),
                            ("type", "org.apache.qpid.dispatch.connection"),
                            ("identity", id.as_str()),
                        ],
                        body,
                    ),
                )
                .await?;
            if let Some(s) = management_status(&answer).filter(|s| !(200..300).contains(s)) {
                return Err(format!("$management UPDATE connection {id}: status {s}"));
            }
        }
        Ok(victims.len())
    }
    .await;
    x.close().await;
    result
}

/// Whether the harness knows how to ask `product` for its counters.
pub fn supported(product: Product) -> bool {
    matches!(product, Product::Qpidd | Product::Qdrouterd)
}

/// The counters of the broker at `target`, asked in `product`'s own protocol.
pub async fn counters(product: Product, target: &Target) -> Result<Json, String> {
    match product {
        Product::Qpidd => qmf_queues(target)
            .await
            .map_err(|e| format!("qpidd QMF (qmf.default.direct): {e}")),
        Product::Qdrouterd => router_addresses(target)
            .await
            .map_err(|e| format!("qdrouterd management ($management): {e}")),
        other => Err(format!(
            "no management client for {} (counters come from qpidd's QMF and qdrouterd's $management)",
            other.as_str()
        )),
    }
}

async fn within<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(WAIT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {} s", WAIT.as_secs())),
    }
}

/// One request/response exchange on a fresh connection: the reply queue is a dynamic receiver.
struct Exchange {
    conn: fe2o3_amqp::connection::ConnectionHandle<()>,
    session: fe2o3_amqp::session::SessionHandle<()>,
    sender: Sender,
    receiver: Receiver,
    reply_to: String,
    /// This connection's own address as the broker sees it (`127.0.0.1:PORT`), so that closing every
    /// connection spares the one asking.
    local: String,
}

impl Exchange {
    async fn open(target: &Target, node: &str) -> Result<Exchange, String> {
        let stream = within(
            &format!("connect to {}", target.authority),
            tokio::net::TcpStream::connect(&target.authority),
        )
        .await?;
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut builder = Connection::builder()
            .container_id(format!("amqp1-rig-mgmt-{}", uuid::Uuid::new_v4()))
            .hostname(target.authority.split(':').next().unwrap_or("localhost"));
        if let Some((u, p)) = &target.credentials {
            builder = builder.sasl_profile(SaslProfile::Plain {
                username: u.clone(),
                password: p.clone(),
            });
        } else {
            builder = builder.sasl_profile(SaslProfile::Anonymous);
        }
        let mut conn = within("open", builder.open_with_stream(stream)).await?;
        let mut session = within("begin", Session::begin(&mut conn)).await?;
        let receiver = within(
            "attach the reply receiver",
            Receiver::builder()
                .name(format!("mgmt-reply-{}", uuid::Uuid::new_v4()))
                .source(Source::builder().dynamic(true).build())
                .attach(&mut session),
        )
        .await?;
        let reply_to = receiver
            .source()
            .as_ref()
            .and_then(|s| s.address.clone())
            .ok_or("the broker gave the dynamic reply receiver no address")?;
        let sender = within(
            &format!("attach a sender to {node}"),
            Sender::attach(&mut session, format!("mgmt-{}", uuid::Uuid::new_v4()), node),
        )
        .await?;
        Ok(Exchange {
            conn,
            session,
            sender,
            receiver,
            reply_to,
            local,
        })
    }

    /// Sends `msg` and returns the first answer, accepted.
    async fn ask(
        &mut self,
        what: &str,
        msg: Message<Body<Value>>,
    ) -> Result<Message<Body<Value>>, String> {
        within(what, self.sender.send(msg)).await?;
        let d = within(
            &format!("{what} answer"),
            self.receiver.recv::<Body<Value>>(),
        )
        .await?;
        let _ = self.receiver.accept(&d).await;
        Ok(d.into_message())
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(WAIT, self.sender.close()).await;
        let _ = tokio::time::timeout(WAIT, self.receiver.close()).await;
        let _ = tokio::time::timeout(WAIT, self.session.end()).await;
        let _ = tokio::time::timeout(WAIT, self.conn.close()).await;
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        Value::Binary(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Ulong(n) => Some(*n),
        Value::Uint(n) => Some(u64::from(*n)),
        Value::Ushort(n) => Some(u64::from(*n)),
        Value::Ubyte(n) => Some(u64::from(*n)),
        Value::Long(n) => u64::try_from(*n).ok(),
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn get<'a>(m: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    m.iter()
        .find(|(k, _)| text(k).as_deref() == Some(key))
        .map(|(_, v)| v)
}

fn props(pairs: &[(&str, &str)]) -> ApplicationProperties {
    let mut ap = ApplicationProperties::builder();
    for (k, v) in pairs {
        ap = ap.insert(*k, SimpleValue::String((*v).to_string()));
    }
    ap.build()
}

fn body_of(m: &Message<Body<Value>>) -> Option<&Value> {
    match &m.body {
        Body::Value(AmqpValue(v)) => Some(v),
        _ => None,
    }
}

async fn qmf_queues(target: &Target) -> Result<Json, String> {
    let mut x = Exchange::open(target, "qmf.default.direct").await?;
    let mut query = OrderedMap::new();
    query.insert(Value::from("_what"), Value::from("OBJECT"));
    let mut schema = OrderedMap::new();
    schema.insert(Value::from("_class_name"), Value::from("queue"));
    query.insert(Value::from("_schema_id"), Value::Map(schema));
    let cid = uuid::Uuid::new_v4().to_string();
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .subject("broker")
                .reply_to(x.reply_to.clone())
                .correlation_id(MessageId::String(cid))
                .build(),
        )
        .application_properties(props(&[
            ("x-amqp-0-10.app-id", "qmf2"),
            ("qmf.opcode", "_query_request"),
            ("method", "request"),
        ]))
        .body(Body::Value(AmqpValue(Value::Map(query))))
        .build();
    let result = async {
        within("QMF _query_request (queue)", x.sender.send(msg)).await?;
        let mut nodes = BTreeMap::new();
        for _ in 0..MAX_PAGES {
            let d = within("QMF _query_response", x.receiver.recv::<Body<Value>>()).await?;
            let _ = x.receiver.accept(&d).await;
            let m = d.message();
            let ap = m.application_properties.as_ref();
            let opcode = ap
                .and_then(|a| a.0.get("qmf.opcode"))
                .and_then(|v| match v {
                    SimpleValue::String(s) => Some(s.clone()),
                    _ => None,
                });
            if opcode.as_deref() == Some("_exception") {
                return Err(format!(
                    "QMF _query_request (queue): the broker answered _exception: {:?}",
                    body_of(m)
                ));
            }
            if let Some(Value::List(objects)) = body_of(m) {
                for o in objects {
                    let Value::Map(o) = o else { continue };
                    let Some(Value::Map(vals)) = get(o, "_values") else {
                        continue;
                    };
                    let Some(name) = get(vals, "name").and_then(text) else {
                        continue;
                    };
                    let n = |k: &str| get(vals, k).and_then(number).unwrap_or(0);
                    nodes.insert(
                        name,
                        json!({
                            "kind": "queue",
                            "depth": n("msgDepth"),
                            "enqueued": n("msgTotalEnqueues"),
                            "dequeued": n("msgTotalDequeues"),
                            "delivered": n("acquires"),
                            "released": n("releases"),
                            "expired": n("discardsTtl"),
                            "consumers": n("consumerCount"),
                        }),
                    );
                }
            }
            let partial = ap.is_some_and(|a| a.0.contains_key("partial"));
            if !partial {
                return Ok(json!({"flavour": "qpidd", "nodes": nodes}));
            }
        }
        Err(format!(
            "QMF _query_request (queue): more than {MAX_PAGES} answer pages"
        ))
    }
    .await;
    x.close().await;
    result
}

/// One `$management` QUERY of `router.address` and the rows turned into the embedded counters'
/// shape (request, answer checks, row parsing in one place).
async fn router_addresses(target: &Target) -> Result<Json, String> {
    let mut x = Exchange::open(target, "$management").await?;
    const ATTRS: [&str; 5] = [
        "name",
        "deliveriesIngress",
        "deliveriesEgress",
        "subscriberCount",
        "distribution",
    ];
    let mut body = OrderedMap::new();
    body.insert(
        Value::from("attributeNames"),
        Value::List(ATTRS.iter().map(|a| Value::from(*a)).collect()),
    );
    let msg = Message::builder()
        .properties(
            Properties::builder()
                .reply_to(x.reply_to.clone())
                .message_id(MessageId::String(uuid::Uuid::new_v4().to_string()))
                .build(),
        )
        .application_properties(props(&[
            ("operation", "QUERY"),
            ("type", "org.amqp.management"),
            ("entityType", "org.apache.qpid.dispatch.router.address"),
            ("name", "self"),
        ]))
        .body(Body::Value(AmqpValue(Value::Map(body))))
        .build();
    let result = async {
        within("$management QUERY router.address", x.sender.send(msg)).await?;
        let d = within(
            "$management QUERY router.address answer",
            x.receiver.recv::<Body<Value>>(),
        )
        .await?;
        let _ = x.receiver.accept(&d).await;
        let m = d.message();
        let status = m
            .application_properties
            .as_ref()
            .and_then(|a| a.0.get("statusCode"))
            .and_then(|v| match v {
                SimpleValue::Int(n) => Some(i64::from(*n)),
                SimpleValue::Uint(n) => Some(i64::from(*n)),
                SimpleValue::Long(n) => Some(*n),
                _ => None,
            });
        if status.is_some_and(|s| !(200..300).contains(&s)) {
            return Err(format!(
                "$management QUERY router.address: status {}",
                status.unwrap_or(0)
            ));
        }
        let Some(Value::Map(answer)) = body_of(m) else {
            return Err("$management QUERY router.address: the answer has no map body".into());
        };
        let names: Vec<String> = match get(answer, "attributeNames") {
            Some(Value::List(l)) => l.iter().filter_map(text).collect(),
            _ => ATTRS.iter().map(|s| s.to_string()).collect(),
        };
        let col = |k: &str| names.iter().position(|n| n == k);
        let mut nodes = BTreeMap::new();
        if let Some(Value::List(rows)) = get(answer, "results") {
            for row in rows {
                let Value::List(cells) = row else { continue };
                let cell = |k: &str| col(k).and_then(|i| cells.get(i));
                let Some(raw) = cell("name").and_then(text) else {
                    continue;
                };
                // Router address names carry a one-letter class prefix (`M0`, `L`, `A`...).
                let name = strip_router_prefix(&raw).to_string();
                let n = |k: &str| cell(k).and_then(number).unwrap_or(0);
                let kind = match cell("distribution").and_then(text).as_deref() {
                    Some("multicast") => "multicast",
                    _ => "anycast",
                };
                nodes.insert(
                    name,
                    json!({
                        "kind": kind,
                        "enqueued": n("deliveriesIngress"),
                        "delivered": n("deliveriesEgress"),
                        "consumers": n("subscriberCount"),
                    }),
                );
            }
        }
        Ok(json!({"flavour": "router", "nodes": nodes}))
    }
    .await;
    x.close().await;
    result
}

/// `M0openstack.org/...` → `openstack.org/...`: qdrouterd's address names start with a class letter
/// (`M` mobile addresses with a phase digit, `L` local, `R`/`T` router, `C`/`D` link routes).
fn strip_router_prefix(raw: &str) -> &str {
    let mut chars = raw.char_indices();
    match chars.next() {
        Some((_, 'M')) => match chars.next() {
            Some((i, c)) if c.is_ascii_digit() => &raw[i + c.len_utf8()..],
            _ => &raw[1..],
        },
        Some((_, c)) if c.is_ascii_uppercase() => &raw[c.len_utf8()..],
        _ => raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_prefixes_are_stripped() {
        assert_eq!(
            strip_router_prefix("M0openstack.org/om/x"),
            "openstack.org/om/x"
        );
        assert_eq!(strip_router_prefix("Lqdrouter"), "qdrouter");
        assert_eq!(strip_router_prefix("Mexclusive"), "exclusive");
        assert_eq!(strip_router_prefix("plain"), "plain");
    }
}
