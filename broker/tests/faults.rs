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
