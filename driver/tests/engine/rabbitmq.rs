//! The rabbitmq3 flavour: dynamic reply links are refused; named replies work, and
//! `reply_mode: auto` (the default) picks them; the reply link waits for the first call.

use std::time::Duration;

use broker::Flavour;
use driver::options::ReplyMode;
use driver::{AddressingKind, CallErrorKind, Notifier, Priority, RpcClient, Target};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn dynamic_reply_link_refusal_fails_calls_promptly() {
    let b = start_broker(Flavour::Rabbitmq3).await;
    let t = connect(&format!(
        "{}/?addressing_mode=rabbitmq&reply_mode=dynamic",
        b.url()
    ))
    .await;
    let c = RpcClient::new(&t, Target::topic("r1")).timeout(Duration::from_secs(60));
    let e = bounded(
        "refused call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("refused");
    assert_eq!(e.kind(), CallErrorKind::Refused, "{e}");
    assert_eq!(e.condition(), Some("amqp:not-implemented"), "{e}");
    assert_eq!(
        e.description(),
        Some("Dynamic sources not supported"),
        "{e}"
    );
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn named_reply_mode_works_on_rabbitmq3() {
    let b = start_broker(Flavour::Rabbitmq3).await;
    let t = connect(&format!(
        "{}/?addressing_mode=rabbitmq&reply_mode=named",
        b.url()
    ))
    .await;
    let _s = server(&t, Target::topic("r2").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("r2")).timeout(Duration::from_secs(15));
    let r = bounded(
        "call",
        c.call(Default::default(), "echo", args(json!({"rabbit": 3}))),
    )
    .await;
    assert_eq!(r.expect("named reply call"), json!({"rabbit": 3}));
    assert!(
        b.counters()
            .nodes
            .keys()
            .any(|k| k.starts_with("/queue/reply.") || k.contains("reply.")),
        "named reply queue: {:?}",
        b.counters().nodes.keys().collect::<Vec<_>>()
    );
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn auto_reply_mode_picks_named_on_rabbitmq3() {
    let b = start_broker(Flavour::Rabbitmq3).await;
    // No reply_mode, no addressing_mode: both come from the broker's Open properties.
    let t = connect(&b.url()).await;
    let info = t.connection_info().expect("connected");
    assert_eq!(info.product.as_deref(), Some("RabbitMQ"));
    assert_eq!(info.addressing, AddressingKind::Rabbitmq);
    assert_eq!(info.reply_mode, ReplyMode::Named);
    let _s = server(&t, Target::topic("r3").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("r3")).timeout(Duration::from_secs(15));
    let r = bounded(
        "auto call",
        c.call(Default::default(), "echo", args(json!({"auto": true}))),
    )
    .await;
    assert_eq!(r.expect("auto reply call"), json!({"auto": true}));
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn qpidd_keeps_the_dynamic_reply_link_and_attaches_it_lazily() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    assert_eq!(
        t.connection_info().expect("connected").reply_mode,
        ReplyMode::Dynamic
    );
    let temporaries = |b: &broker::Broker| {
        b.counters()
            .nodes
            .values()
            .filter(|n| n.kind == "temporary")
            .count()
    };
    let _s = server(&t, Target::topic("lazy").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("lazy")).timeout(Duration::from_secs(15));
    bounded(
        "cast",
        c.cast(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("cast");
    let n = Notifier::new(&t, "lazy-publisher");
    bounded(
        "notify",
        n.notify(Default::default(), "lazy.event", Priority::Info, json!({})),
    )
    .await
    .expect("notify");
    // A server, a cast and a notification need no reply link.
    assert_eq!(temporaries(&b), 0, "{:?}", b.counters().nodes);
    bounded(
        "call",
        c.call(Default::default(), "echo", args(json!({"n": 1}))),
    )
    .await
    .expect("call");
    // The first call attached the (dynamic) reply link.
    assert_eq!(temporaries(&b), 1, "{:?}", b.counters().nodes);
    t.close().await;
    b.shutdown().await;
}
