//! The rabbitmq3 flavour: dynamic reply links are refused; named replies work.

use std::time::Duration;

use broker::Flavour;
use driver::{CallErrorKind, RpcClient, Target};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn dynamic_reply_link_refusal_fails_calls_promptly() {
    let b = start_broker(Flavour::Rabbitmq3).await;
    let t = connect(&format!("{}/?addressing_mode=rabbitmq", b.url())).await;
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
