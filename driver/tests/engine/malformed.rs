//! Malformed input from a peer, injected over real TCP through the embedded
//! router (its settlement is end to end, so the injecting sender sees the
//! driver's own outcome): every bad message is settled as the reference
//! says, logged in exactly one warning line with the reason, and the server,
//! listener or client keeps serving.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::Flavour;
use driver::{CallErrorKind, NotificationListener, Notifier, Priority, RpcClient, Target};
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::types::messaging::{
    AmqpValue, Batch, Body, Data, Message, MessageId as AmqpId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, Value as AmqpValueT};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use serde_json::json;

use crate::common::*;

/// A tracing writer that keeps the driver's warnings for the test to count.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs a subscriber for this (current-thread) test runtime that
    /// keeps the driver's warnings.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let cap = Captured::default();
        let writer = cap.clone();
        let sub = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("driver=warn"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (cap, tracing::subscriber::set_default(sub))
    }

    fn lines_with(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).to_string();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

type RawMessage = Message<Body<AmqpValueT>>;

fn text(to: &str, body: &str) -> RawMessage {
    with_body(to, Body::Value(AmqpValue(AmqpValueT::String(body.into()))))
}

fn with_body(to: &str, body: Body<AmqpValueT>) -> RawMessage {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            to: Some(to.into()),
            ..Default::default()
        }),
        application_properties: None,
        body,
        footer: None,
    }
}

fn amqp_map() -> Body<AmqpValueT> {
    let mut m = OrderedMap::new();
    m.insert(
        AmqpValueT::String("request".into()),
        AmqpValueT::String("x".into()),
    );
    Body::Value(AmqpValue(AmqpValueT::Map(m)))
}

fn data(bytes: &[u8]) -> Body<AmqpValueT> {
    Body::Data(Batch::new(vec![Data(bytes.to_vec().into())]))
}

/// A raw AMQP client: one connection, one session.
struct Raw {
    conn: fe2o3_amqp::connection::ConnectionHandle<()>,
    session: fe2o3_amqp::session::SessionHandle<()>,
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        let addr = url.trim_start_matches("amqp://");
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
        tcp.set_nodelay(true).expect("nodelay");
        let mut conn = Connection::builder()
            .container_id("malformed-injector")
            .scheme("amqp")
            .open_with_stream(tcp)
            .await
            .expect("raw open");
        let session = Session::begin(&mut conn).await.expect("raw begin");
        Raw { conn, session }
    }

    async fn sender(&mut self, address: &str) -> Sender {
        let name = format!("inject-{}", uuid::Uuid::new_v4().simple());
        Sender::attach(&mut self.session, name, address)
            .await
            .expect("raw sender attaches")
    }

    async fn receiver(&mut self, address: &str) -> Receiver {
        let name = format!("serve-{}", uuid::Uuid::new_v4().simple());
        Receiver::attach(&mut self.session, name, address)
            .await
            .expect("raw receiver attaches")
    }

    async fn close(mut self) {
        let _ = self.session.end().await;
        let _ = self.conn.close().await;
    }
}

/// Sends unsettled and returns the outcome (the driver's, through the router).
async fn inject(sender: &mut Sender, msg: RawMessage) -> Outcome {
    let sendable = Sendable::builder().message(msg).settled(false).build();
    bounded("injected outcome", sender.send(sendable))
        .await
        .expect("outcome")
}

fn assert_rejected(o: &Outcome, what: &str) {
    match o {
        Outcome::Rejected(r) => {
            let cond = r.error.as_ref().map(|e| format!("{:?}", e.condition));
            assert!(
                cond.as_deref().is_some_and(|c| c.contains("DecodeError")),
                "{what}: rejected with {cond:?}"
            );
        }
        other => panic!("{what}: expected rejected, got {other:?}"),
    }
}

fn assert_undeliverable(o: &Outcome, what: &str) {
    match o {
        Outcome::Modified(m) => {
            assert_eq!(m.delivery_failed, Some(true), "{what}");
            assert_eq!(m.undeliverable_here, Some(true), "{what}");
        }
        other => {
            panic!("{what}: expected modified(delivery-failed, undeliverable-here), got {other:?}")
        }
    }
}

/// The bad request bodies every server must survive, by name.
fn bad_requests(to: &str) -> Vec<(&'static str, RawMessage)> {
    let huge = "x".repeat(4 * 1024 * 1024);
    vec![
        ("non-JSON body", text(to, "this is not json")),
        (
            "data section",
            with_body(
                to,
                data(br#"{"request": {"method": "echo", "args": {}}, "context": {}}"#),
            ),
        ),
        ("amqp-value map", with_body(to, amqp_map())),
        ("JSON array", text(to, "[1, 2, 3]")),
        ("missing request", text(to, r#"{"context": {}}"#)),
        (
            "method of the wrong type",
            text(
                to,
                r#"{"request": {"method": 5, "args": {}}, "context": {}}"#,
            ),
        ),
        (
            "missing method",
            text(to, r#"{"request": {"args": {}}, "context": {}}"#),
        ),
        (
            "args of the wrong type",
            text(
                to,
                r#"{"request": {"method": "echo", "args": []}, "context": {}}"#,
            ),
        ),
        (
            "context of the wrong type",
            text(
                to,
                r#"{"request": {"method": "echo", "args": {}}, "context": 7}"#,
            ),
        ),
        (
            "unsupported envelope",
            text(
                to,
                r#"{"request": {"oslo.version": "3.0", "oslo.message": "{}"}, "context": {}}"#,
            ),
        ),
        (
            "no body section",
            with_body(to, Body::Data(Batch::new(Vec::new()))),
        ),
        ("4 MiB of non-JSON", text(to, &huge)),
    ]
}

#[tokio::test]
async fn rpc_server_rejects_malformed_requests_and_keeps_serving() {
    let (logs, _guard) = Captured::install();
    let b = start_broker(Flavour::Router).await;
    let t = connect(&b.url()).await;
    let _s = server(&t, Target::topic("malf").with_server("s1"), "s1").await;
    let mut raw = Raw::connect(&b.url()).await;
    let to = "openstack.org/om/rpc/unicast/openstack/malf/s1";
    let mut sender = raw.sender(to).await;
    let client = RpcClient::new(&t, Target::topic("malf").with_server("s1"))
        .timeout(Duration::from_secs(15));
    let cases = bad_requests(to);
    let n = cases.len();
    for (what, msg) in cases {
        let o = inject(&mut sender, msg).await;
        assert_rejected(&o, what);
        // Still serving after each bad message.
        let r = bounded(
            "call",
            client.call(Default::default(), "echo", args(json!({"after": what}))),
        )
        .await;
        assert_eq!(
            r.expect("call after a malformed request"),
            json!({"after": what})
        );
    }
    assert_eq!(
        logs.lines_with("malformed RPC request rejected"),
        n,
        "one line per bad request"
    );
    assert_eq!(logs.lines_with("WARN"), n, "no other warning");
    // A call without a message-id cannot be answered: dispatched, one line.
    let mut m = text(
        to,
        r#"{"request": {"method": "echo", "args": {}}, "context": {}}"#,
    );
    if let Some(p) = m.properties.as_mut() {
        p.reply_to = Some("nowhere".into());
    }
    let o = inject(&mut sender, m).await;
    assert!(matches!(o, Outcome::Accepted(_)), "{o:?}");
    let r = bounded(
        "call",
        client.call(Default::default(), "echo", args(json!({"k": 1}))),
    )
    .await;
    assert_eq!(r.expect("call"), json!({"k": 1}));
    assert_eq!(logs.lines_with("no message-id"), 1);
    // A big but well-formed request is served.
    let big = "y".repeat(4 * 1024 * 1024);
    let r = bounded(
        "big call",
        client.call(Default::default(), "echo", args(json!({"big": big}))),
    )
    .await;
    assert_eq!(
        r.expect("big call")["big"].as_str().map(str::len),
        Some(big.len())
    );
    drop(sender);
    raw.close().await;
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn listener_rejects_malformed_notifications_and_keeps_listening() {
    let (logs, _guard) = Captured::install();
    let b = start_broker(Flavour::Router).await;
    let t = connect(&b.url()).await;
    let mut l = bounded(
        "listener",
        NotificationListener::start(&t, vec![Target::topic("mn")], vec![Priority::Info], None),
    )
    .await
    .expect("listener");
    let (got_tx, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let listening = tokio::spawn(async move {
        while let Some(n) = l.recv().await {
            let _ = got_tx.send(n.notification.event_type.clone());
            n.ack().await;
        }
    });
    let mut raw = Raw::connect(&b.url()).await;
    let to = "openstack.org/om/notify/anycast/openstack/mn.info";
    let mut sender = raw.sender(to).await;
    let notifier = Notifier::new(&t, "p").topics(["mn"]);
    let note = |fields: &str| {
        format!(
            r#"{{"request": {{"message_id": "m", "publisher_id": "p", "payload": {{}}, "timestamp": "t"{fields}}}, "context": {{}}}}"#
        )
    };
    let mut cases = bad_requests(to);
    cases.push((
        "missing event_type",
        text(to, &note(r#", "priority": "INFO""#)),
    ));
    cases.push((
        "missing priority",
        text(to, &note(r#", "event_type": "e""#)),
    ));
    cases.push((
        "unknown priority",
        text(to, &note(r#", "event_type": "e", "priority": "LOUD""#)),
    ));
    cases.push((
        "priority of the wrong type",
        text(to, &note(r#", "event_type": "e", "priority": 3"#)),
    ));
    let n = cases.len();
    for (i, (what, msg)) in cases.into_iter().enumerate() {
        let o = inject(&mut sender, msg).await;
        assert_rejected(&o, what);
        let event = format!("after.{i}");
        bounded(
            "notify",
            notifier.notify(Default::default(), &event, Priority::Info, json!({})),
        )
        .await
        .expect("notify after a malformed one");
        assert_eq!(
            bounded("good notification", got_rx.recv()).await.as_deref(),
            Some(event.as_str()),
            "{what}"
        );
    }
    assert_eq!(logs.lines_with("malformed notification rejected"), n);
    assert_eq!(logs.lines_with("WARN"), n, "no other warning");
    listening.abort();
    drop(sender);
    raw.close().await;
    t.close().await;
    b.shutdown().await;
}

/// A raw "server" on the router that hands each request to the test.
struct RawServer {
    raw: Raw,
    receiver: Receiver,
}

impl RawServer {
    async fn start(url: &str, address: &str) -> RawServer {
        let mut raw = Raw::connect(url).await;
        let receiver = raw.receiver(address).await;
        RawServer { raw, receiver }
    }

    /// The next request's (reply-to, message-id), accepted.
    async fn request(&mut self) -> (String, String) {
        let d = bounded("request", self.receiver.recv::<Body<AmqpValueT>>())
            .await
            .expect("request delivery");
        self.receiver.accept(&d).await.expect("accept request");
        let p = d.message().properties.clone().expect("properties");
        let id = match p.message_id.expect("message-id") {
            AmqpId::String(s) => s,
            other => panic!("message-id {other:?}"),
        };
        (p.reply_to.expect("reply-to"), id)
    }
}

fn reply(to: &str, correlation: &str, body: Body<AmqpValueT>) -> RawMessage {
    let mut m = with_body(to, body);
    if let Some(p) = m.properties.as_mut() {
        p.correlation_id = Some(AmqpId::String(correlation.into()));
    }
    m
}

fn json_body(s: &str) -> Body<AmqpValueT> {
    Body::Value(AmqpValue(AmqpValueT::String(s.into())))
}

#[tokio::test]
async fn reply_handling_survives_unknown_late_duplicate_and_malformed_replies() {
    let (logs, _guard) = Captured::install();
    let b = start_broker(Flavour::Router).await;
    let t = connect(&b.url()).await;
    let mut srv = RawServer::start(&b.url(), "openstack.org/om/rpc/unicast/openstack/rep/s1").await;
    let client = RpcClient::new(&t, Target::topic("rep").with_server("s1"));
    let long = client.clone().timeout(Duration::from_secs(15));

    // A good reply, then the same reply again, plus one nobody asked for.
    let call = tokio::spawn({
        let c = long.clone();
        async move { c.call(Default::default(), "x", Default::default()).await }
    });
    let (reply_to, id) = srv.request().await;
    let mut to_client = srv.raw.sender(&reply_to).await;
    let o = inject(
        &mut to_client,
        reply(&reply_to, "no-such-call", json_body(r#"{"response": 0}"#)),
    )
    .await;
    assert_undeliverable(&o, "unknown correlation id");
    let o = inject(
        &mut to_client,
        reply(&reply_to, &id, json_body(r#"{"response": 1}"#)),
    )
    .await;
    assert!(matches!(o, Outcome::Accepted(_)), "good reply: {o:?}");
    assert_eq!(
        bounded("call", call).await.expect("join").expect("reply"),
        json!(1)
    );
    let o = inject(
        &mut to_client,
        reply(&reply_to, &id, json_body(r#"{"response": 1}"#)),
    )
    .await;
    assert_undeliverable(&o, "duplicate reply");

    // A reply after the call timed out.
    let short = client.clone().timeout(Duration::from_secs(1));
    let call = tokio::spawn(async move {
        short
            .call(Default::default(), "x", Default::default())
            .await
    });
    let (_, id) = srv.request().await;
    let e = bounded("timeout", call)
        .await
        .expect("join")
        .expect_err("times out");
    assert_eq!(e.kind(), CallErrorKind::TimedOut, "{e}");
    let o = inject(
        &mut to_client,
        reply(&reply_to, &id, json_body(r#"{"response": 2}"#)),
    )
    .await;
    assert_undeliverable(&o, "late reply");

    // A malformed reply fails its call at once, with the reason.
    let call = tokio::spawn({
        let c = long.clone();
        async move { c.call(Default::default(), "x", Default::default()).await }
    });
    let (_, id) = srv.request().await;
    let o = inject(&mut to_client, reply(&reply_to, &id, json_body("not json"))).await;
    assert_rejected(&o, "malformed reply");
    let e = bounded("malformed", call)
        .await
        .expect("join")
        .expect_err("malformed reply");
    assert_eq!(e.kind(), CallErrorKind::MalformedReply, "{e}");
    assert!(e.to_string().contains("not valid JSON"), "{e}");

    // A heartbeat for nobody is dropped (one warning, like an unknown reply).
    let o = inject(
        &mut to_client,
        reply(&reply_to, "nobody", Body::Data(Batch::new(Vec::new()))),
    )
    .await;
    assert_undeliverable(&o, "stray heartbeat");

    // The client still works.
    let call = tokio::spawn({
        let c = long.clone();
        async move { c.call(Default::default(), "x", Default::default()).await }
    });
    let (_, id) = srv.request().await;
    let o = inject(
        &mut to_client,
        reply(&reply_to, &id, json_body(r#"{"response": "fine"}"#)),
    )
    .await;
    assert!(matches!(o, Outcome::Accepted(_)), "{o:?}");
    assert_eq!(
        bounded("call", call).await.expect("join").expect("reply"),
        json!("fine")
    );

    assert_eq!(logs.lines_with("unknown correlation id"), 2);
    assert_eq!(logs.lines_with("already ended"), 2);
    assert_eq!(logs.lines_with("malformed RPC reply"), 1);
    assert_eq!(logs.lines_with("WARN"), 5, "no other warning");
    drop(to_client);
    srv.raw.close().await;
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn huge_timeouts_are_capped_not_panicking() {
    let b = start_broker(Flavour::Qpidd).await;
    let mut cfg = config(&b.url());
    cfg.rpc_response_timeout = u64::MAX;
    cfg.amqp.default_send_timeout = u64::MAX;
    cfg.amqp.default_notify_timeout = u64::MAX;
    cfg.amqp.default_reply_timeout = u64::MAX;
    cfg.amqp.connect_timeout = u64::MAX;
    cfg.amqp.default_sender_link_timeout = u64::MAX;
    let t = bounded("connect", driver::Transport::connect(cfg))
        .await
        .expect("connects");
    let _s = server(&t, Target::topic("big").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("big"));
    let r = bounded(
        "call",
        c.call(Default::default(), "echo", args(json!({"a": 1}))),
    )
    .await;
    assert_eq!(
        r.expect("call with a huge configured timeout"),
        json!({"a": 1})
    );
    let c = c.timeout(Duration::MAX).call_monitor_timeout(Duration::MAX);
    let r = bounded(
        "call",
        c.call(Default::default(), "echo", args(json!({"b": 2}))),
    )
    .await;
    assert_eq!(r.expect("call with Duration::MAX"), json!({"b": 2}));
    bounded(
        "cast",
        c.cast(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("cast with Duration::MAX");
    t.close().await;
    b.shutdown().await;
}
