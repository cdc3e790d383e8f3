//! Outcomes (released/rejected), sender-link purge.

use std::time::Duration;

use broker::Flavour;
use driver::{CallErrorKind, RpcClient, Target};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn released_requests_are_resent_and_rejected_ones_fail() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _s = server(&t, Target::topic("o1").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("o1")).timeout(Duration::from_secs(15));
    // warm the sender link up so the faults hit the request itself
    bounded(
        "warm",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("warm-up");

    b.faults().release_next(2);
    let r = bounded(
        "released twice",
        c.clone()
            .retry(Some(2))
            .call(Default::default(), "echo", args(json!({"k": 1}))),
    )
    .await;
    assert_eq!(r.expect("resent after 2 releases"), json!({"k": 1}));

    b.faults().release_next(1);
    let e = bounded(
        "released, no retry",
        c.clone()
            .retry(Some(0))
            .call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("released with retry 0");
    assert_eq!(e.kind(), CallErrorKind::DeliveryFailed);

    b.faults().reject_next(1);
    let e = bounded(
        "rejected",
        c.clone()
            .retry(Some(5))
            .call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("rejected");
    assert_eq!(e.kind(), CallErrorKind::DeliveryFailed);
    assert!(e.to_string().contains("rejected"), "{e}");
    let released: u64 = b.counters().nodes.values().map(|n| n.released).sum();
    assert!(released >= 3, "broker counted {released} releases");
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn idle_sender_links_are_purged_and_reattached() {
    let b = start_broker(Flavour::Qpidd).await;
    let mut cfg = config(&b.url());
    cfg.amqp.default_sender_link_timeout = 1;
    let t = bounded("connect", driver::Transport::connect(cfg))
        .await
        .expect("connect");
    let _s = server(&t, Target::topic("p1").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("p1")).timeout(Duration::from_secs(15));
    bounded(
        "call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("first call");
    let node = "unicast.openstack.p1";
    assert_eq!(b.counters().node(node).map(|n| n.producers), Some(1));
    let purged = async {
        loop {
            if b.counters().node(node).map(|n| n.producers) == Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    bounded("sender link purge", purged).await;
    let r = bounded(
        "call after purge",
        c.call(Default::default(), "echo", args(json!({"again": true}))),
    )
    .await;
    assert_eq!(r.expect("call after purge"), json!({"again": true}));
    assert_eq!(b.counters().node(node).map(|n| n.producers), Some(1));
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn refused_links_carry_the_broker_condition() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    b.faults().refuse_attach(
        "^exclusive\\.openstack\\.deny",
        "amqp:unauthorized-access",
        "not for you",
    );
    let e = bounded(
        "refused server",
        driver::RpcServer::start(
            &t,
            Target::topic("deny").with_server("s1"),
            dispatcher("s1"),
        ),
    )
    .await
    .expect_err("server link refused");
    assert_eq!(e.kind(), driver::ListenErrorKind::Refused, "{e}");
    assert_eq!(e.condition(), Some("amqp:unauthorized-access"), "{e}");
    assert_eq!(e.description(), Some("not for you"), "{e}");
    let c = RpcClient::new(&t, Target::topic("deny").with_server("s1"));
    let e = bounded(
        "refused cast",
        c.cast(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("sender link refused");
    assert_eq!(e.kind(), driver::CastErrorKind::Refused, "{e}");
    assert_eq!(e.condition(), Some("amqp:unauthorized-access"), "{e}");
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn unsettled_notification_fails_when_the_connection_drops() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let mut l = bounded(
        "listener",
        driver::NotificationListener::start(
            &t,
            vec![Target::topic("un")],
            vec![driver::Priority::Info],
            None,
        ),
    )
    .await
    .expect("listener");
    let n = driver::Notifier::new(&t, "p").topics(["un"]);
    // warm up the sender link
    bounded(
        "notify",
        n.notify(Default::default(), "e", driver::Priority::Info, json!(0)),
    )
    .await
    .expect("first notify");
    bounded("recv", l.recv()).await.expect("first").ack().await;
    b.faults().pause(Duration::from_secs(3));
    let pending = tokio::spawn({
        let n = n.clone();
        async move {
            n.notify(Default::default(), "e", driver::Priority::Info, json!(1))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.faults().drop_connections();
    let r = bounded("notify outcome", pending).await.expect("task");
    let e = r.expect_err("written but unsettled at the loss");
    assert_eq!(e.kind(), driver::NotifyErrorKind::DeliveryFailed, "{e}");
    t.close().await;
    b.shutdown().await;
}
