//! Restarts that keep the store: what the queues held (unsettled deliveries included) is there
//! again after `shutdown_keeping_store` + `start_with_store`, over real TCP.

mod common;

use broker::{Broker, BrokerConfig, Flavour, Store};
use common::*;

#[tokio::test]
async fn restart_keeps_stored_and_unsettled_messages() {
    let broker = start(Flavour::Qpidd).await;
    let addr = broker.local_addr();
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.kept").await;
    for i in 0..3 {
        within("send", s.send(format!("k{i}"))).await.expect("send");
    }
    // One delivery reaches a consumer that never settles it.
    let mut r = c.receiver("unicast.kept").await;
    let first = within("recv", r.recv::<fe2o3_amqp::types::primitives::Value>())
        .await
        .expect("delivery");
    assert_eq!(text(&first), "k0");
    // Nothing of a topic or a temporary node is kept.
    let _t = c.sender("broadcast.gone").await;

    let mut store = broker.shutdown_keeping_store().await;
    drop(c);
    assert_eq!(store.messages(), 3, "{store:?}");
    assert_eq!(store.queues(), 1, "{store:?}");

    let cfg = BrokerConfig::for_flavour(Flavour::Qpidd).with_port(addr.port());
    let broker = Broker::start_with_store(cfg, &mut store)
        .await
        .expect("restart on the same port");
    assert_eq!(store.messages(), 0, "the store moved into the broker");
    let depth = broker.counters().node("unicast.kept").map(|n| n.depth);
    assert_eq!(depth, Some(3));
    let mut c = connect(&broker).await;
    let mut r = c.receiver("unicast.kept").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(recv_text(&mut r).await);
    }
    got.sort();
    assert_eq!(got, ["k0", "k1", "k2"]);
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_plain_restart_has_an_empty_store() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.lost").await;
    within("send", s.send("x")).await.expect("send");
    let addr = broker.local_addr();
    c.close().await;
    broker.shutdown().await;
    let cfg = BrokerConfig::for_flavour(Flavour::Qpidd).with_port(addr.port());
    let broker = Broker::start_with_store(cfg, &mut Store::default())
        .await
        .expect("restart");
    assert!(broker.counters().node("unicast.lost").is_none());
    broker.shutdown().await;
}
