//! Broker counters through the brokers' own management protocols (QMF v2 for qpidd, AMQP management
//! on `$management` for qdrouterd), asked over real TCP of the embedded broker, which answers both as
//! the real brokers do.

use std::time::Duration;

use broker::{Broker, BrokerConfig, Flavour};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use harness::brokers::Product;
use harness::mgmt::{counters, Target};

const WAIT: Duration = Duration::from_secs(15);

async fn start(f: Flavour) -> Broker {
    Broker::start(BrokerConfig::for_flavour(f))
        .await
        .expect("broker starts")
}

fn target(b: &Broker) -> Target {
    Target {
        authority: b.local_addr().to_string(),
        credentials: None,
    }
}

#[tokio::test]
async fn qpidd_queue_counters_through_qmf() {
    let b = start(Flavour::Qpidd).await;
    let mut conn = Connection::open("t", b.url().as_str()).await.expect("open");
    let mut s = Session::begin(&mut conn).await.expect("begin");
    let mut tx = Sender::attach(&mut s, "tx", "unicast.openstack.mgmt")
        .await
        .expect("attach");
    for i in 0..3 {
        tokio::time::timeout(WAIT, tx.send(format!("m{i}")))
            .await
            .expect("in time")
            .expect("send");
    }
    let _rx = Receiver::attach(&mut s, "rx-idle", "unicast.openstack.other")
        .await
        .expect("attach");
    let got = tokio::time::timeout(WAIT, counters(Product::Qpidd, &target(&b)))
        .await
        .expect("in time")
        .expect("QMF answers");
    assert_eq!(got["flavour"], "qpidd");
    let q = &got["nodes"]["unicast.openstack.mgmt"];
    assert_eq!(q["depth"], 3, "{got}");
    assert_eq!(q["enqueued"], 3, "{got}");
    assert_eq!(q["dequeued"], 0, "{got}");
    assert_eq!(
        got["nodes"]["unicast.openstack.other"]["consumers"], 1,
        "{got}"
    );
    let _ = conn.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn router_address_counters_through_management() {
    let b = start(Flavour::Router).await;
    let mut conn = Connection::open("t", b.url().as_str()).await.expect("open");
    let mut s = Session::begin(&mut conn).await.expect("begin");
    let mut rx = Receiver::attach(&mut s, "rx", "openstack.org/om/rpc/anycast/mgmt")
        .await
        .expect("attach");
    let mut tx = Sender::attach(&mut s, "tx", "openstack.org/om/rpc/anycast/mgmt")
        .await
        .expect("attach");
    let send = tx.send("hello");
    let recv = async {
        let d = rx.recv::<String>().await.expect("recv");
        rx.accept(&d).await.expect("accept");
    };
    let (sent, ()) = tokio::time::timeout(WAIT, futures::future::join(send, recv))
        .await
        .expect("in time");
    sent.expect("send");
    let got = tokio::time::timeout(WAIT, counters(Product::Qdrouterd, &target(&b)))
        .await
        .expect("in time")
        .expect("$management answers");
    assert_eq!(got["flavour"], "router");
    let a = &got["nodes"]["openstack.org/om/rpc/anycast/mgmt"];
    assert_eq!(a["consumers"], 1, "{got}");
    assert_eq!(a["enqueued"], 1, "{got}");
    assert_eq!(a["delivered"], 1, "{got}");
    let _ = conn.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_broker_without_that_protocol_is_a_clear_error() {
    // The embedded RabbitMQ flavour has no QMF agent: the request goes nowhere (refused attach or no
    // answer), and the error names the request instead of hanging.
    let b = start(Flavour::Rabbitmq3).await;
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        counters(Product::Qpidd, &target(&b)),
    )
    .await
    .expect("bounded");
    let e = r.expect_err("no QMF on RabbitMQ");
    assert!(e.contains("qmf.default.direct") || e.contains("QMF"), "{e}");
    let e = counters(Product::Rabbitmq, &target(&b))
        .await
        .expect_err("no client");
    assert!(e.contains("no management client for rabbitmq"), "{e}");
    b.shutdown().await;
}

/// Waits (bounded) until the broker has no open connection left; returns how many stay open.
async fn open_connections_after_settling(b: &Broker) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = b.counters().connections.iter().filter(|c| c.open).count();
        if open == 0 || tokio::time::Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn drop_connections_closes_every_client_but_the_one_asking() {
    for (flavour, product) in [
        (Flavour::Qpidd, Product::Qpidd),
        (Flavour::Router, Product::Qdrouterd),
    ] {
        let b = start(flavour).await;
        let a = Connection::open("a", b.url().as_str()).await.expect("open");
        let c = Connection::open("c", b.url().as_str()).await.expect("open");
        let n = tokio::time::timeout(WAIT, harness::mgmt::drop_connections(product, &target(&b)))
            .await
            .expect("in time")
            .expect("management closes them");
        assert_eq!(n, 2, "{flavour:?}");
        assert_eq!(open_connections_after_settling(&b).await, 0, "{flavour:?}");
        drop((a, c));
        // The broker keeps serving: a new connection opens and the count is one.
        let _d = Connection::open("d", b.url().as_str())
            .await
            .expect("open again");
        let n = harness::mgmt::drop_connections(product, &target(&b))
            .await
            .expect("again");
        assert_eq!(n, 1, "{flavour:?}");
        b.shutdown().await;
    }
}
