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
