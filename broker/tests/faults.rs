//! Fault controls and ttl expiry, over real TCP.

mod common;

use std::time::Duration;

use broker::Flavour;
use common::*;
use fe2o3_amqp::types::messaging::{Header, Message, Outcome};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Delivery;

#[tokio::test]
async fn release_and_reject_next_deliveries() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.faults.rr").await;
    broker.faults().release_next(1);
    broker.faults().reject_next(1);
    let o1 = within("send", s.send("a")).await.expect("send");
    let o2 = within("send", s.send("b")).await.expect("send");
    let o3 = within("send", s.send("c")).await.expect("send");
    assert!(matches!(o1, Outcome::Released(_)), "{o1:?}");
    assert!(matches!(o2, Outcome::Rejected(_)), "{o2:?}");
    assert!(matches!(o3, Outcome::Accepted(_)), "{o3:?}");
    let n = broker.counters().nodes["unicast.faults.rr"].clone();
    assert_eq!((n.released, n.rejected, n.enqueued), (1, 1, 1));
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn refuse_attach_then_clear() {
    let broker = start(Flavour::Qpidd).await;
    broker
        .faults()
        .refuse_attach("^unicast\\.refused", "amqp:unauthorized-access", "go away");
    let mut c = connect(&broker).await;
    let err = within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut c.session, "s", "unicast.refused.1"),
    )
    .await
    .expect_err("refused");
    let text = format!("{err:?}");
    assert!(
        text.contains("UnauthorizedAccess") || text.contains("go away"),
        "{text}"
    );
    broker.faults().clear();
    let mut session = within("begin", fe2o3_amqp::Session::begin(&mut c.conn))
        .await
        .expect("begin");
    within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut session, "s2", "unicast.refused.1"),
    )
    .await
    .expect("attach after clear");
    broker.shutdown().await;
}

#[tokio::test]
async fn close_link_with_error() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut r = c.receiver("exclusive.closeme").await;
    // Wait until the broker registered the link.
    within("consumer", async {
        while broker
            .counters()
            .nodes
            .get("exclusive.closeme")
            .map(|n| n.consumers)
            != Some(1)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    broker
        .faults()
        .close_link("exclusive.closeme", "amqp:internal-error", "closed by test");
    let err = within("recv", r.recv::<Value>())
        .await
        .expect_err("link closed");
    let text = format!("{err:?}");
    assert!(text.contains("Closed") || text.contains("Detach"), "{text}");
    broker.shutdown().await;
}

#[tokio::test]
async fn drop_connections_is_abrupt_and_counted() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut r = c.receiver("exclusive.dropme").await;
    let reply = c.dynamic_receiver().await;
    let temp = reply
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .expect("dynamic address");
    assert!(broker.counters().nodes.contains_key(&temp));
    broker.faults().drop_connections();
    let err = within("recv", r.recv::<Value>()).await;
    assert!(err.is_err(), "recv must fail once the socket is gone");
    within("connection closed", async {
        while broker.counters().connections.iter().any(|c| c.open) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // No leak: the temporary node went away with its connection, and the queue lost
    // its consumer.
    within("cleanup", async {
        loop {
            let c = broker.counters();
            if !c.nodes.contains_key(&temp) && c.nodes["exclusive.dropme"].consumers == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The broker still accepts new connections.
    let mut c2 = connect(&broker).await;
    let mut s = c2.sender("exclusive.dropme").await;
    within("send", s.send("after")).await.expect("send");
    c2.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn pause_stops_io_until_it_ends() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.pause").await;
    broker.faults().pause(Duration::from_millis(1500));
    let send = tokio::spawn(async move { s.send("during pause").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!send.is_finished(), "no outcome while the broker is paused");
    assert_eq!(
        broker
            .counters()
            .nodes
            .get("unicast.pause")
            .map(|n| n.enqueued),
        Some(0)
    );
    let o = within("outcome", send).await.expect("join").expect("send");
    assert!(matches!(o, Outcome::Accepted(_)));
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn ttl_expiry_is_honoured_and_counted() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.ttl").await;
    let msg = Message::builder()
        .header(Header {
            ttl: Some(50),
            ..Default::default()
        })
        .value("short-lived")
        .build();
    within("send", s.send(msg)).await.expect("send");
    within("send", s.send("long-lived")).await.expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut r = c.receiver("unicast.ttl").await;
    let d: Delivery<Value> = within("recv", r.recv()).await.expect("recv");
    assert_eq!(text(&d), "long-lived");
    assert_eq!(broker.counters().nodes["unicast.ttl"].expired, 1);
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn modified_outcome_and_the_order_of_forced_outcomes() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.faults.modify").await;
    broker.faults().modify_next(1, true, true);
    broker.faults().release_next(1);
    let o1 = within("send", s.send("a")).await.expect("send");
    let o2 = within("send", s.send("b")).await.expect("send");
    let o3 = within("send", s.send("c")).await.expect("send");
    assert!(matches!(o1, Outcome::Released(_)), "{o1:?}");
    match o2 {
        Outcome::Modified(m) => {
            assert_eq!(m.delivery_failed, Some(true));
            assert_eq!(m.undeliverable_here, Some(true));
        }
        other => panic!("expected modified, got {other:?}"),
    }
    assert!(matches!(o3, Outcome::Accepted(_)), "{o3:?}");
    assert_eq!(broker.counters().nodes["unicast.faults.modify"].enqueued, 1);
    c.close().await;
    broker.shutdown().await;
}

/// Waits until `n` consumers are attached to `node`.
async fn consumers(broker: &broker::Broker, node: &str, n: u64) {
    within("consumers", async {
        while broker.counters().nodes.get(node).map(|n| n.consumers) != Some(n) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn links_are_closed_n_times_then_stay() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut first = c.receiver("exclusive.flaky.srv").await;
    consumers(&broker, "exclusive.flaky.srv", 1).await;
    broker.faults().close_links(
        "^exclusive\\.flaky",
        3,
        "amqp:resource-limit-exceeded",
        "flaky link",
    );
    // 1: the attached link is closed at once, with the condition given.
    let err = within("recv", first.recv::<Value>())
        .await
        .expect_err("closed");
    let text = format!("{err:?}");
    assert!(
        text.contains("ResourceLimitExceeded") && text.contains("flaky link"),
        "{text}"
    );
    // 2 and 3: each new attach is accepted, then closed.
    for _ in 0..2 {
        let mut again = c.receiver("exclusive.flaky.srv").await;
        let err = within("recv", again.recv::<Value>())
            .await
            .expect_err("closed");
        assert!(format!("{err:?}").contains("flaky link"), "{err:?}");
    }
    // The budget is spent: the next link stays.
    let mut last = c.receiver("exclusive.flaky.srv").await;
    let mut s = c.sender("exclusive.flaky.srv").await;
    within("send", s.send("through")).await.expect("send");
    assert_eq!(recv_text(&mut last).await, "through");
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn credit_is_withheld_then_granted_again() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.credit.held").await;
    within("send", s.send("before")).await.expect("send");
    broker
        .faults()
        .withhold_credit("^unicast\\.credit", Some(Duration::from_millis(1500)));
    within("credit withheld", async {
        while broker.faults().links_without_credit() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // A round trip on the same connection: the zero-credit flow, sent before it, has
    // reached the client when it returns.
    let probe = c.sender("unicast.credit.probe").await;
    within("probe close", probe.close()).await.expect("close");
    let send = tokio::spawn(async move { s.send("during").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!send.is_finished(), "no credit, no transfer");
    assert_eq!(broker.counters().nodes["unicast.credit.held"].enqueued, 1);
    let o = within("outcome", send).await.expect("join").expect("send");
    assert!(matches!(o, Outcome::Accepted(_)), "{o:?}");
    assert_eq!(broker.counters().nodes["unicast.credit.held"].enqueued, 2);
    assert_eq!(broker.faults().links_without_credit(), 0);
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn slow_consumers_wait_until_cleared() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut r = c.receiver("unicast.slow").await;
    consumers(&broker, "unicast.slow", 1).await;
    broker
        .faults()
        .slow_consumers("^unicast\\.slow", Duration::from_secs(3600), None);
    let mut s = c.sender("unicast.slow").await;
    within("send", s.send("eventually")).await.expect("send");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(broker.counters().nodes["unicast.slow"].delivered, 0);
    broker.faults().clear();
    assert_eq!(recv_text(&mut r).await, "eventually");
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_paused_broker_sends_no_heartbeats_so_idle_timeout_fires() {
    let broker = start(Flavour::Qpidd).await;
    let stream = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .expect("tcp");
    stream.set_nodelay(true).expect("nodelay");
    let mut conn = within(
        "open",
        fe2o3_amqp::Connection::builder()
            .container_id("idle-test")
            .idle_time_out(1000u32)
            .open_with_stream(stream),
    )
    .await
    .expect("open");
    let mut session = within("begin", fe2o3_amqp::Session::begin(&mut conn))
        .await
        .expect("begin");
    let mut s = within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut session, "idle-s", "unicast.idle"),
    )
    .await
    .expect("attach");
    // Idle for more than the timeout: the broker's heartbeats keep the connection alive.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    within("send", s.send("alive")).await.expect("still alive");
    broker.faults().pause(Duration::from_secs(60));
    let closed = within("idle timeout", conn.on_close()).await;
    let text = format!("{closed:?}");
    assert!(
        text.contains("Idle"),
        "the client's idle timeout fires: {text}"
    );
    broker.faults().resume();
    broker.shutdown().await;
}

#[tokio::test]
async fn injected_messages_reach_consumers_as_made() {
    use broker::{InjectBody, InjectError, InjectedMessage};
    use fe2o3_amqp::types::messaging::Body;

    let broker = start(Flavour::Qpidd).await;
    let f = broker.faults();
    let q = "unicast.inject";
    f.inject(
        q,
        InjectedMessage::text("{not json").with_correlation_id("c1"),
    )
    .expect("text");
    f.inject(q, InjectedMessage::data(b"\x00\x01binary".to_vec()))
        .expect("data");
    f.inject(q, InjectedMessage::new(InjectBody::Empty))
        .expect("empty");
    let map = vec![("request".to_string(), "x".to_string())];
    f.inject(q, InjectedMessage::new(InjectBody::Map(map)))
        .expect("map");
    assert_eq!(broker.counters().nodes[q].enqueued, 4);
    let mut c = connect(&broker).await;
    let mut r = c.receiver(q).await;
    let mut bodies = Vec::new();
    for _ in 0..4 {
        let d: Delivery<Body<Value>> = within("recv", r.recv()).await.expect("recv");
        within("accept", r.accept(&d)).await.expect("accept");
        if bodies.is_empty() {
            let cid = d
                .message()
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone());
            assert_eq!(
                cid,
                Some(fe2o3_amqp::types::messaging::MessageId::String("c1".into()))
            );
            assert_eq!(
                d.message().properties.as_ref().and_then(|p| p.to.clone()),
                Some(q.to_string())
            );
        }
        bodies.push(d.message().body.clone());
    }
    assert!(matches!(&bodies[0], Body::Value(v) if v.0 == Value::String("{not json".into())));
    assert!(
        matches!(&bodies[1], Body::Data(d) if d.len() == 1 && d[0].0.as_slice() == b"\x00\x01binary")
    );
    // fe2o3 encodes "no body" as an amqp-value null section.
    assert!(
        matches!(&bodies[2], Body::Value(v) if v.0 == Value::Null),
        "{:?}",
        bodies[2]
    );
    assert!(matches!(&bodies[3], Body::Value(v) if matches!(v.0, Value::Map(_))));
    // Refusals carry the broker's own words.
    let err = f
        .inject("nowhere", InjectedMessage::text("x"))
        .expect_err("refused");
    assert_eq!(
        err,
        InjectError::Refused {
            condition: "amqp:not-found".into(),
            description: "Node not found: nowhere".into()
        }
    );
    c.close().await;
    broker.shutdown().await;

    // A router address with no consumer has no route.
    let router = start(Flavour::Router).await;
    let err = router
        .faults()
        .inject(
            "openstack.org/om/rpc/anycast/x/y",
            InjectedMessage::text("x"),
        )
        .expect_err("no route");
    assert_eq!(err, InjectError::NoRoute);
    router.shutdown().await;
}
