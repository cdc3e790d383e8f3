//! qpidd flavour: queues, topics, dynamic sources, refusals, over real TCP.

mod common;

use broker::Flavour;
use common::*;
use fe2o3_amqp::types::messaging::Outcome;

#[tokio::test]
async fn queue_store_and_forward_then_round_robin() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("unicast.openstack.t1").await;
    // Sender first: the message is stored.
    let o = within("send", s.send("stored")).await.expect("send");
    assert!(matches!(o, Outcome::Accepted(_)), "outcome {o:?}");
    let mut r1 = c.receiver("unicast.openstack.t1").await;
    assert_eq!(recv_text(&mut r1).await, "stored");
    let mut r2 = c.receiver("unicast.openstack.t1").await;
    for i in 0..4 {
        within("send", s.send(format!("m{i}"))).await.expect("send");
    }
    let a = [recv_text(&mut r1).await, recv_text(&mut r1).await];
    let b = [recv_text(&mut r2).await, recv_text(&mut r2).await];
    let mut all: Vec<String> = a.iter().chain(b.iter()).cloned().collect();
    all.sort();
    assert_eq!(all, ["m0", "m1", "m2", "m3"]);
    let counters = broker.counters();
    let n = counters
        .node("unicast.openstack.t1")
        .expect("node counters");
    assert_eq!(n.kind, "queue");
    assert_eq!(n.enqueued, 5);
    assert_eq!(n.delivered, 5);
    assert_eq!(n.consumers, 2);
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn topic_copies_to_every_subscriber_presettled() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut r1 = c.receiver("broadcast.openstack.t.all").await;
    let mut r2 = c.receiver("broadcast.openstack.t.all").await;
    let mut s = c.sender("broadcast.openstack.t.all").await;
    within("send", s.send("fan")).await.expect("send");
    assert_eq!(recv_text(&mut r1).await, "fan");
    assert_eq!(recv_text(&mut r2).await, "fan");
    let n = broker.counters().nodes["broadcast.openstack.t.all"].clone();
    assert_eq!(
        (n.kind.as_str(), n.enqueued, n.delivered, n.acked),
        ("topic", 1, 2, 2)
    );
    c.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_address_is_not_found_and_connection_survives() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let err = within(
        "attach",
        fe2o3_amqp::Receiver::attach(&mut c.session, "nope", "pq-926b6b"),
    )
    .await
    .expect_err("attach must be refused");
    let text = format!("{err:?}");
    assert!(
        text.contains("NotFound") || text.contains("not-found"),
        "{text}"
    );
    // Same connection, a new session still works.
    let mut session = within("begin", fe2o3_amqp::Session::begin(&mut c.conn))
        .await
        .expect("begin");
    let mut s = within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut session, "ok", "exclusive.x.y"),
    )
    .await
    .expect("attach");
    within("send", s.send("x")).await.expect("send");
    assert_eq!(broker.counters().connections[0].refused_links, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn dynamic_source_gets_replies_from_another_connection_and_is_deleted() {
    let broker = start(Flavour::Qpidd).await;
    let mut c1 = connect(&broker).await;
    let mut reply = c1.dynamic_receiver().await;
    let address = reply
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .expect("dynamic address");
    assert!(
        address.contains("_reply-"),
        "qpidd-style address: {address}"
    );
    let mut c2 = connect(&broker).await;
    let mut s = c2.sender(&address).await;
    within("send", s.send("pong")).await.expect("send");
    assert_eq!(recv_text(&mut reply).await, "pong");
    assert!(broker.counters().nodes.contains_key(&address));
    within("close", reply.close()).await.expect("close");
    // The temporary queue goes away with its link.
    within("node deleted", async {
        while broker.counters().nodes.contains_key(&address) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    c1.close().await;
    c2.close().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn credit_granted_later_resumes_delivery() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut r = within(
        "attach",
        fe2o3_amqp::Receiver::builder()
            .name("manual")
            .source("exclusive.credit.q")
            .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
            .attach(&mut c.session),
    )
    .await
    .expect("attach");
    let mut s = c.sender("exclusive.credit.q").await;
    for i in 0..3 {
        within("send", s.send(format!("c{i}"))).await.expect("send");
    }
    // No credit yet: nothing delivered.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(broker.counters().nodes["exclusive.credit.q"].delivered, 0);
    within("credit", r.set_credit(2)).await.expect("credit");
    assert_eq!(recv_text(&mut r).await, "c0");
    assert_eq!(recv_text(&mut r).await, "c1");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        broker.counters().nodes["exclusive.credit.q"].delivered,
        2,
        "never beyond credit"
    );
    within("credit", r.set_credit(1)).await.expect("credit");
    assert_eq!(recv_text(&mut r).await, "c2");
    c.close().await;
    broker.shutdown().await;
}

/// Regression: a consumer busy with outcomes must not lose a message handed to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windowed_unsettled_stream_loses_nothing() {
    use fe2o3_amqp::link::receiver::CreditMode;
    use fe2o3_amqp::types::messaging::Body;
    use fe2o3_amqp::types::primitives::Value;
    use fe2o3_amqp::Delivery;
    use std::collections::VecDeque;

    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let mut p = connect(&broker).await;
    let mut r = within(
        "attach",
        fe2o3_amqp::Receiver::builder()
            .name("rx")
            .source("unicast.window")
            .credit_mode(CreditMode::Auto(500))
            .attach(&mut c.session),
    )
    .await
    .expect("attach");
    let mut s = p.sender("unicast.window").await;
    const N: usize = 1500;
    let consumer = tokio::spawn(async move {
        for _ in 0..N {
            let d: Delivery<Body<Value>> = within("recv", r.recv()).await.expect("recv");
            within("accept", r.accept(&d)).await.expect("accept");
        }
        r
    });
    let mut window: VecDeque<
        fe2o3_amqp::link::delivery::DeliveryFut<Result<Outcome, fe2o3_amqp::link::SendError>>,
    > = VecDeque::new();
    for i in 0..N {
        if window.len() == 100 {
            let f = window.pop_front().expect("f");
            let o = within("outcome", f).await.expect("outcome");
            assert!(matches!(o, Outcome::Accepted(_)));
        }
        window.push_back(
            within("send", s.send_batchable(format!("m{i}")))
                .await
                .expect("send"),
        );
    }
    for f in window {
        within("outcome", f).await.expect("outcome");
    }
    let _r = within("consumer", consumer).await.expect("join");
    // The last dispositions may still be on their way to the broker.
    within("all acked", async {
        while broker.counters().nodes["unicast.window"].acked < N as u64 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    let n = broker.counters().nodes["unicast.window"].clone();
    assert_eq!(
        (n.enqueued, n.delivered, n.acked, n.depth),
        (N as u64, N as u64, N as u64, 0)
    );
    c.close().await;
    p.close().await;
    broker.shutdown().await;
}

/// A consumer without credit does not strand a queued message: another consumer gets it.
#[tokio::test]
async fn consumer_without_credit_gives_messages_back() {
    let broker = start(Flavour::Qpidd).await;
    let mut c = connect(&broker).await;
    let _idle = within(
        "attach",
        fe2o3_amqp::Receiver::builder()
            .name("no-credit")
            .source("unicast.strand")
            .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Manual)
            .attach(&mut c.session),
    )
    .await
    .expect("attach");
    let mut busy = c.receiver("unicast.strand").await;
    let mut s = c.sender("unicast.strand").await;
    for i in 0..4 {
        within("send", s.send(format!("s{i}"))).await.expect("send");
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv_text(&mut busy).await);
    }
    got.sort();
    assert_eq!(got, ["s0", "s1", "s2", "s3"]);
    c.close().await;
    broker.shutdown().await;
}
