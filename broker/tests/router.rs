//! router flavour: no store, end-to-end settlement, multicast, dynamic addresses,
//! pre-settled drops past the backlog threshold.

mod common;

use broker::Flavour;
use common::*;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Delivery;

const ANYCAST: &str = "openstack.org/om/rpc/anycast/openstack/topic-a";

#[tokio::test]
async fn no_consumer_means_released() {
    let broker = start(Flavour::Router).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender(ANYCAST).await;
    let o = within("send", s.send("lost")).await.expect("send");
    assert!(matches!(o, Outcome::Released(_)), "{o:?}");
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn settlement_is_end_to_end() {
    let broker = start(Flavour::Router).await;
    let mut consumer = connect(&broker).await;
    let mut r = consumer.receiver(ANYCAST).await;
    let mut producer = connect(&broker).await;
    let mut s = producer.sender(ANYCAST).await;

    // The consumer releases: the producer sees `released`.
    let send = tokio::spawn(async move {
        let o = s.send("first").await;
        (s, o)
    });
    let d: Delivery<Value> = within("recv", r.recv()).await.expect("recv");
    within("release", r.release(&d)).await.expect("release");
    let (mut s, o) = within("outcome", send).await.expect("join");
    assert!(matches!(o, Ok(Outcome::Released(_))), "{o:?}");

    // The consumer accepts: the producer sees `accepted`.
    let send = tokio::spawn(async move { s.send("second").await });
    assert_eq!(recv_text(&mut r).await, "second");
    let o = within("outcome", send).await.expect("join");
    assert!(matches!(o, Ok(Outcome::Accepted(_))), "{o:?}");
    let n = broker.counters().nodes[ANYCAST].clone();
    assert_eq!((n.kind.as_str(), n.acked, n.released), ("anycast", 1, 1));
    consumer.close().await;
    producer.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn multicast_copies_and_dynamic_reply_address() {
    let broker = start(Flavour::Router).await;
    let addr = "openstack.org/om/rpc/multicast/openstack/topic-m";
    let mut c = connect(&broker).await;
    let mut r1 = c.receiver(addr).await;
    let mut r2 = c.receiver(addr).await;
    let mut s = c.sender(addr).await;
    within("send", s.send("all")).await.expect("send");
    assert_eq!(recv_text(&mut r1).await, "all");
    assert_eq!(recv_text(&mut r2).await, "all");

    let mut reply = c.dynamic_receiver().await;
    let source = reply.source().clone().expect("source");
    let address = source.address.expect("address");
    assert!(address.starts_with("amqp:/_topo/0/"), "{address}");
    assert!(address.contains("/temp."), "{address}");
    let mut other = connect(&broker).await;
    let mut rs = other.sender(&address).await;
    let send = tokio::spawn(async move { rs.send("reply").await });
    assert_eq!(recv_text(&mut reply).await, "reply");
    assert!(matches!(
        within("outcome", send).await.expect("join"),
        Ok(Outcome::Accepted(_))
    ));
    c.close().await;
    other.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn presettled_backlog_overflow_is_dropped_and_counted() {
    let broker = start(Flavour::Router).await;
    let mut consumer = connect(&broker).await;
    let mut r = within(
        "attach",
        fe2o3_amqp::Receiver::builder()
            .name("slow")
            .source(ANYCAST)
            .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
            .attach(&mut consumer.session),
    )
    .await
    .expect("attach");
    let mut producer = connect(&broker).await;
    let mut s = producer.sender(ANYCAST).await;
    const N: u64 = 700;
    for i in 0..N {
        within("send", s.send(presettled(&format!("p{i}"))))
            .await
            .expect("send");
    }
    let dropped = within("drops", async {
        loop {
            let c = broker.counters();
            let n = &c.nodes[ANYCAST];
            if n.enqueued == N {
                return n.dropped;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dropped >= 250, "dropped {dropped}");
    let remaining = N - dropped;
    within("credit", r.set_credit(remaining as u32))
        .await
        .expect("credit");
    let mut got = 0;
    while got < remaining {
        let d: Delivery<Value> = within("recv", r.recv()).await.expect("recv");
        within("accept", r.accept(&d)).await.expect("accept");
        got += 1;
    }
    assert_eq!(
        got + dropped,
        N,
        "every message is either delivered or counted as dropped"
    );
    consumer.close().await;
    producer.close().await;
    broker.shutdown().await;
}
