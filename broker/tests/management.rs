//! Management over real TCP with a raw fe2o3 client, in the wire format the real brokers use:
//! QMF v2 on qpidd's `qmf.default.direct`, AMQP management on qdrouterd's `$management`.

mod common;

use broker::Flavour;
use common::*;
use fe2o3_amqp::types::messaging::{ApplicationProperties, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Delivery, Receiver, Sender};

/// A management client: a sender to the management node and a dynamic reply receiver.
struct Mgmt {
    client: Client,
    tx: Sender,
    rx: Receiver,
    reply_to: String,
}

impl Mgmt {
    async fn open(broker: &broker::Broker, node: &str) -> Mgmt {
        let mut client = connect(broker).await;
        let rx = client.dynamic_receiver().await;
        let reply_to = rx
            .source()
            .as_ref()
            .and_then(|s| s.address.clone())
            .expect("dynamic address");
        let tx = client.sender(node).await;
        Mgmt {
            client,
            tx,
            rx,
            reply_to,
        }
    }

    async fn send(
        &mut self,
        correlation: &str,
        subject: Option<&str>,
        props: &[(&str, SimpleValue)],
        body: Value,
    ) {
        let mut ap = ApplicationProperties::builder();
        for (k, v) in props {
            ap = ap.insert(k.to_string(), v.clone());
        }
        let mut p = Properties::builder()
            .reply_to(self.reply_to.clone())
            .correlation_id(MessageId::String(correlation.to_string()));
        if let Some(s) = subject {
            p = p.subject(s.to_string());
        }
        let msg = Message::builder()
            .properties(p.build())
            .application_properties(ap.build())
            .value(body)
            .build();
        within("send request", self.tx.send(msg))
            .await
            .expect("request accepted");
    }

    async fn recv(&mut self) -> Delivery<Value> {
        let d: Delivery<Value> = within("response", self.rx.recv()).await.expect("recv");
        within("accept", self.rx.accept(&d)).await.expect("accept");
        d
    }
}

fn map(entries: &[(&str, Value)]) -> Value {
    let mut m = OrderedMap::new();
    for (k, v) in entries {
        m.insert(Value::String(k.to_string()), v.clone());
    }
    Value::Map(m)
}

fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    match v {
        Value::Map(m) => m
            .get(&Value::String(key.to_string()))
            .unwrap_or_else(|| panic!("no key {key} in {v:?}")),
        other => panic!("not a map: {other:?}"),
    }
}

fn prop<'a>(d: &'a Delivery<Value>, key: &str) -> Option<&'a SimpleValue> {
    d.message().application_properties.as_ref()?.0.get(key)
}

fn correlation(d: &Delivery<Value>) -> Option<&MessageId> {
    d.message().properties.as_ref()?.correlation_id.as_ref()
}

fn qmf_props(opcode: &str) -> Vec<(&'static str, SimpleValue)> {
    vec![
        ("x-amqp-0-10.app-id", SimpleValue::from("qmf2")),
        ("qmf.opcode", SimpleValue::from(opcode)),
        ("method", SimpleValue::from("request")),
    ]
}

fn class_query(class: &str) -> Value {
    map(&[
        ("_what", s("OBJECT")),
        ("_schema_id", map(&[("_class_name", s(class))])),
    ])
}

fn list(v: &Value) -> &Vec<Value> {
    match v {
        Value::List(l) => l,
        other => panic!("not a list: {other:?}"),
    }
}

#[tokio::test]
async fn qmf_queue_query_reports_depth_enqueues_and_dequeues() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut tx = c.sender("unicast.mgmt.q").await;
    for i in 0..3 {
        within("send", tx.send(format!("m{i}")))
            .await
            .expect("send");
    }
    let mut rx = c.receiver("unicast.mgmt.q").await;
    assert_eq!(recv_text(&mut rx).await, "m0");
    within("close", rx.close()).await.expect("close");

    let mut m = Mgmt::open(&broker, "qmf.default.direct").await;
    let props = qmf_props("_query_request");
    m.send("q1", Some("broker"), &props, class_query("queue"))
        .await;
    let d = m.recv().await;
    assert_eq!(correlation(&d), Some(&MessageId::String("q1".into())));
    assert_eq!(
        prop(&d, "qmf.opcode"),
        Some(&SimpleValue::from("_query_response"))
    );
    assert_eq!(prop(&d, "method"), Some(&SimpleValue::from("response")));
    assert_eq!(prop(&d, "qmf.agent"), Some(&SimpleValue::from("broker")));
    assert!(prop(&d, "partial").is_none());
    let objects = list(d.body());
    let q = objects
        .iter()
        .find(|o| get(get(o, "_values"), "name") == &s("unicast.mgmt.q"))
        .expect("the queue is listed");
    assert_eq!(
        get(get(q, "_object_id"), "_object_name"),
        &s("org.apache.qpid.broker:queue:unicast.mgmt.q")
    );
    assert_eq!(get(get(q, "_schema_id"), "_class_name"), &s("queue"));
    let v = get(q, "_values");
    assert_eq!(get(v, "msgTotalEnqueues"), &Value::Ulong(3));
    assert_eq!(get(v, "msgTotalDequeues"), &Value::Ulong(1));
    assert_eq!(get(v, "msgDepth"), &Value::Ulong(2));
    // The embedded counters agree.
    let n = broker.counters().nodes["unicast.mgmt.q"].clone();
    assert_eq!((n.enqueued, n.dequeued, n.depth), (3, 1, 2));
    // The management node itself is not a counted node.
    assert!(!broker.counters().nodes.contains_key("qmf.default.direct"));

    // Query by object name.
    let by_name = map(&[
        ("_what", s("OBJECT")),
        (
            "_object_id",
            map(&[(
                "_object_name",
                s("org.apache.qpid.broker:queue:unicast.mgmt.q"),
            )]),
        ),
    ]);
    m.send("q2", Some("broker"), &props, by_name).await;
    let d = m.recv().await;
    assert_eq!(list(d.body()).len(), 1);
    m.client.close().await;
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn qmf_large_class_query_is_paged_with_partial() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut relay = within(
        "relay attach",
        Sender::builder()
            .name("relay")
            .target(fe2o3_amqp::types::messaging::Target::builder().build())
            .attach(&mut c.session),
    )
    .await
    .expect("relay");
    for i in 0..150 {
        let msg = Message::builder()
            .properties(
                Properties::builder()
                    .to(format!("unicast.page.{i}"))
                    .build(),
            )
            .value("x")
            .build();
        within("send", relay.send(msg)).await.expect("send");
    }
    let mut m = Mgmt::open(&broker, "qmf.default.direct").await;
    m.send(
        "p",
        Some("broker"),
        &qmf_props("_query_request"),
        class_query("queue"),
    )
    .await;
    let first = m.recv().await;
    assert_eq!(prop(&first, "partial"), Some(&SimpleValue::from("")));
    assert_eq!(list(first.body()).len(), 100);
    let second = m.recv().await;
    assert!(prop(&second, "partial").is_none());
    // 150 queues plus the management client's own reply queue.
    assert_eq!(list(second.body()).len(), 51);
    m.client.close().await;
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn qmf_errors_and_ignored_requests() {
    let broker = start(Flavour::Qpidd).await;
    let mut m = Mgmt::open(&broker, "qmf.default.direct").await;
    // Without the broker subject and without the qmf2 app-id, qpidd's agent never sees it.
    m.send(
        "ignored-1",
        None,
        &qmf_props("_query_request"),
        class_query("queue"),
    )
    .await;
    let no_app_id = vec![("qmf.opcode", SimpleValue::from("_query_request"))];
    m.send(
        "ignored-2",
        Some("broker"),
        &no_app_id,
        class_query("queue"),
    )
    .await;
    // `_what` missing: an exception.
    m.send(
        "bad",
        Some("broker"),
        &qmf_props("_query_request"),
        map(&[]),
    )
    .await;
    let d = m.recv().await;
    assert_eq!(correlation(&d), Some(&MessageId::String("bad".into())));
    assert_eq!(
        prop(&d, "qmf.opcode"),
        Some(&SimpleValue::from("_exception"))
    );
    assert_eq!(
        get(get(d.body(), "_values"), "error_text"),
        &s("_what element missing in Query")
    );
    // A method on an object that does not exist.
    let close = map(&[
        (
            "_object_id",
            map(&[("_object_name", s("org.apache.qpid.broker:connection:nope"))]),
        ),
        ("_method_name", s("close")),
        ("_arguments", map(&[])),
    ]);
    m.send("nope", Some("broker"), &qmf_props("_method_request"), close)
        .await;
    let d = m.recv().await;
    assert_eq!(
        prop(&d, "qmf.opcode"),
        Some(&SimpleValue::from("_exception"))
    );
    assert_eq!(get(get(d.body(), "_values"), "error_code"), &Value::Uint(1));
    m.client.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn qmf_connection_query_and_close() {
    let broker = start(Flavour::Qpidd).await;
    let mut victim = connect(&broker).await;
    let _r = victim.receiver("exclusive.victim").await;
    let mut m = Mgmt::open(&broker, "qmf.default.direct").await;
    m.send(
        "c",
        Some("broker"),
        &qmf_props("_query_request"),
        class_query("connection"),
    )
    .await;
    let d = m.recv().await;
    let conns = list(d.body()).clone();
    assert_eq!(conns.len(), 2, "{conns:?}");
    let victim_id = victim_container_id(&conns, &m);
    let v = conns
        .iter()
        .find(|o| get(get(get(o, "_values"), "remoteProperties"), "container-id") == &s(&victim_id))
        .expect("victim listed");
    let address = get(get(v, "_values"), "address").clone();
    let Value::String(a) = &address else {
        panic!("{address:?}")
    };
    assert!(
        a.starts_with("127.0.0.1:") && a.contains("-127.0.0.1:"),
        "{a}"
    );
    assert_eq!(get(get(v, "_values"), "protocol"), &s("AMQP 1.0"));
    let name = get(get(v, "_object_id"), "_object_name").clone();
    let close = map(&[
        ("_object_id", map(&[("_object_name", name)])),
        ("_method_name", s("close")),
        ("_arguments", map(&[])),
    ]);
    m.send(
        "close-1",
        Some("broker"),
        &qmf_props("_method_request"),
        close,
    )
    .await;
    let d = m.recv().await;
    assert_eq!(
        prop(&d, "qmf.opcode"),
        Some(&SimpleValue::from("_method_response"))
    );
    assert_eq!(get(d.body(), "_arguments"), &map(&[]));
    let closed = within("victim closed", victim.conn.on_close()).await;
    // qpidd sends a Close without an error.
    assert_eq!(format!("{closed:?}"), "Err(RemoteClosed)");
    // The management connection still works.
    m.send(
        "c2",
        Some("broker"),
        &qmf_props("_query_request"),
        class_query("connection"),
    )
    .await;
    let d = m.recv().await;
    assert_eq!(list(d.body()).len(), 1);
    m.client.close().await;
    broker.shutdown().await;
}

/// The container-id of the connection in `conns` that is not the management client's.
fn victim_container_id(conns: &[Value], _m: &Mgmt) -> String {
    conns
        .iter()
        .map(|o| get(get(get(o, "_values"), "remoteProperties"), "container-id").clone())
        .find_map(|v| match v {
            Value::String(s) if s.starts_with("test-") => Some(s),
            _ => None,
        })
        .expect("a test client")
}

fn router_props(op: &str, entity: &str) -> Vec<(&'static str, SimpleValue)> {
    vec![
        ("operation", SimpleValue::from(op)),
        ("entityType", SimpleValue::from(entity)),
        ("type", SimpleValue::from("org.amqp.management")),
        ("name", SimpleValue::from("self")),
    ]
}

fn attribute_names(names: &[&str]) -> Value {
    map(&[(
        "attributeNames",
        Value::List(names.iter().map(|n| s(n)).collect()),
    )])
}

const ANYCAST: &str = "openstack.org/om/rpc/anycast/openstack/mgmt";

#[tokio::test]
async fn router_address_query() {
    let broker = start(Flavour::Router).await;
    let mut consumer = connect(&broker).await;
    let mut r = consumer.receiver(ANYCAST).await;
    let mut producer = connect(&broker).await;
    let mut tx = producer.sender(ANYCAST).await;
    let send = tokio::spawn(async move {
        let o = tx.send("one").await;
        (tx, o)
    });
    assert_eq!(recv_text(&mut r).await, "one");
    let (_tx, o) = within("outcome", send).await.expect("join");
    o.expect("accepted");

    let mut m = Mgmt::open(&broker, "$management").await;
    let names = [
        "name",
        "distribution",
        "subscriberCount",
        "deliveriesIngress",
        "deliveriesEgress",
    ];
    m.send(
        "a1",
        None,
        &router_props("QUERY", "org.apache.qpid.dispatch.router.address"),
        attribute_names(&names),
    )
    .await;
    let d = m.recv().await;
    assert_eq!(correlation(&d), Some(&MessageId::String("a1".into())));
    assert_eq!(prop(&d, "statusCode"), Some(&SimpleValue::Int(200)));
    assert_eq!(
        prop(&d, "statusDescription"),
        Some(&SimpleValue::from("OK"))
    );
    assert_eq!(
        d.message().properties.as_ref().and_then(|p| p.to.clone()),
        Some(m.reply_to.clone())
    );
    let body = d.body();
    assert_eq!(
        get(body, "attributeNames"),
        &Value::List(names.iter().map(|n| s(n)).collect())
    );
    let row = list(get(body, "results"))
        .iter()
        .find(|r| list(r)[0] == s(&format!("M0{ANYCAST}")))
        .expect("the anycast address is listed")
        .clone();
    assert_eq!(
        list(&row)[1..],
        [
            s("balanced"),
            Value::Uint(1),
            Value::Ulong(1),
            Value::Ulong(1)
        ]
    );
    // The reply address is a local one (`L...`).
    assert!(list(get(body, "results"))
        .iter()
        .any(|r| matches!(&list(r)[0], Value::String(k) if k.starts_with("Ltemp."))));
    // No attribute names: every column.
    m.send(
        "a2",
        None,
        &router_props("QUERY", "org.apache.qpid.dispatch.router.address"),
        map(&[]),
    )
    .await;
    let d = m.recv().await;
    assert_eq!(list(get(d.body(), "attributeNames")).len(), 21);
    // Unknown entity type.
    m.send(
        "a3",
        None,
        &router_props("QUERY", "org.apache.qpid.dispatch.nothing"),
        map(&[]),
    )
    .await;
    let d = m.recv().await;
    assert_eq!(prop(&d, "statusCode"), Some(&SimpleValue::Int(404)));
    m.client.close().await;
    consumer.close().await;
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn router_connection_query_and_forced_close() {
    let broker = start(Flavour::Router).await;
    let mut victim = connect(&broker).await;
    let _r = victim.receiver(ANYCAST).await;
    let mut m = Mgmt::open(&broker, "$management").await;
    let names = [
        "identity",
        "container",
        "host",
        "role",
        "dir",
        "adminStatus",
    ];
    m.send(
        "c1",
        None,
        &router_props("QUERY", "org.apache.qpid.dispatch.connection"),
        attribute_names(&names),
    )
    .await;
    let d = m.recv().await;
    let rows = list(get(d.body(), "results")).clone();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(list(r)[3..], [s("normal"), s("in"), s("enabled")]);
    }
    // The victim is the first connection (identity "1").
    let first = rows
        .iter()
        .map(|r| list(r).clone())
        .find(|r| r[0] == s("1"))
        .expect("id 1");
    let Value::String(container) = &first[1] else {
        panic!("{first:?}")
    };
    assert!(container.starts_with("test-"), "{container}");
    let mut props = router_props("UPDATE", "org.apache.qpid.dispatch.connection");
    props.retain(|(k, _)| *k != "entityType" && *k != "name" && *k != "type");
    props.push((
        "type",
        SimpleValue::from("org.apache.qpid.dispatch.connection"),
    ));
    props.push(("identity", SimpleValue::from("1")));
    m.send("u1", None, &props, map(&[("adminStatus", s("deleted"))]))
        .await;
    let d = m.recv().await;
    assert_eq!(prop(&d, "statusCode"), Some(&SimpleValue::Int(200)));
    assert_eq!(get(d.body(), "adminStatus"), &s("deleted"));
    assert_eq!(get(d.body(), "operStatus"), &s("closing"));
    let closed = within("victim closed", victim.conn.on_close()).await;
    let text = format!("{closed:?}");
    assert!(text.contains("Forced") || text.contains("forced"), "{text}");
    assert!(
        text.contains("Connection forced-closed by management request"),
        "{text}"
    );
    // An identity that does not exist: Bad Request.
    props.retain(|(k, _)| *k != "identity");
    props.push(("identity", SimpleValue::from("999")));
    m.send("u2", None, &props, map(&[("adminStatus", s("deleted"))]))
        .await;
    let d = m.recv().await;
    assert_eq!(prop(&d, "statusCode"), Some(&SimpleValue::Int(400)));
    m.client.close().await;
    broker.shutdown().await;
}
