//! rabbitmq3 flavour: refusals by session end, /queue/ /topic/ /exchange/ addresses.

mod common;

use broker::Flavour;
use common::*;
use fe2o3_amqp::types::messaging::Source;

#[tokio::test]
async fn dynamic_source_ends_the_session_but_not_the_connection() {
    let broker = start(Flavour::Rabbitmq3).await;
    let mut c = connect(&broker).await;
    let err = within(
        "attach",
        fe2o3_amqp::Receiver::builder()
            .name("reply")
            .source(Source::builder().dynamic(true).build())
            .attach(&mut c.session),
    )
    .await
    .expect_err("dynamic source refused");
    let text = format!("{err:?}");
    assert!(!text.is_empty());
    let ended = within("session end", c.session.end()).await;
    let ended = format!("{ended:?}");
    assert!(
        ended.contains("NotImplemented")
            || ended.contains("not-implemented")
            || text.contains("NotImplemented"),
        "attach error {text}; end {ended}"
    );
    // The connection survives: a new session works.
    let mut session = within("begin", fe2o3_amqp::Session::begin(&mut c.conn))
        .await
        .expect("begin");
    let mut s = within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut session, "q", "/queue/after"),
    )
    .await
    .expect("attach");
    within("send", s.send("ok")).await.expect("send");
    assert_eq!(broker.counters().nodes["after"].enqueued, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn routable_oslo_address_is_invalid_field() {
    let broker = start(Flavour::Rabbitmq3).await;
    let mut c = connect(&broker).await;
    let _err = within(
        "attach",
        fe2o3_amqp::Sender::attach(
            &mut c.session,
            "s",
            "openstack.org/om/rpc/anycast/openstack/t",
        ),
    )
    .await
    .expect_err("refused");
    let ended = format!("{:?}", within("session end", c.session.end()).await);
    assert!(
        ended.contains("InvalidField") || ended.contains("invalid-field"),
        "{ended}"
    );
    assert_eq!(broker.counters().connections[0].refused_links, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn queue_topic_and_exchange_addresses() {
    let broker = start(Flavour::Rabbitmq3).await;
    let mut c = connect(&broker).await;
    let mut s = c.sender("/queue/Q").await;
    within("send", s.send("q1")).await.expect("send");
    let mut r = c.receiver("/queue/Q").await;
    assert_eq!(recv_text(&mut r).await, "q1");

    let mut t1 = c.receiver("/topic/x").await;
    let mut t2 = c.receiver("/topic/x").await;
    let mut ts = c.sender("/exchange/amq.topic/x").await;
    within("send", ts.send("t")).await.expect("send");
    assert_eq!(recv_text(&mut t1).await, "t");
    assert_eq!(recv_text(&mut t2).await, "t");

    // oslo's legacy broadcast name is only a queue here: one copy in total.
    let mut b1 = c.receiver("broadcast.openstack.T.all").await;
    let mut bs = c.sender("broadcast.openstack.T.all").await;
    within("send", bs.send("b")).await.expect("send");
    assert_eq!(recv_text(&mut b1).await, "b");
    let counters = broker.counters();
    assert_eq!(counters.nodes["broadcast.openstack.T.all"].kind, "queue");
    assert_eq!(counters.nodes["amq.topic/x"].delivered, 2);
    c.close().await;
    broker.shutdown().await;
}
