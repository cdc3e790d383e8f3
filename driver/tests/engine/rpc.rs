//! RPC calls, casts, fanout, targets, remote errors, timeouts.

use std::time::Duration;

use broker::Flavour;
use driver::{CallErrorKind, RpcClient, Target};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn call_round_trip_on_each_flavour() {
    for flavour in [Flavour::Qpidd, Flavour::Router] {
        let b = start_broker(flavour).await;
        let t = connect(&b.url()).await;
        let _s = server(&t, Target::topic("t1").with_server("s1"), "s1").await;
        let c = RpcClient::new(&t, Target::topic("t1")).timeout(Duration::from_secs(15));
        let r = bounded(
            "call",
            c.call(Default::default(), "echo", args(json!({"value": 42}))),
        )
        .await;
        assert_eq!(r.expect("call ok"), json!({"value": 42}), "{flavour:?}");
        t.close().await;
        b.shutdown().await;
    }
}

#[tokio::test]
async fn remote_exception_reaches_caller() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _s = server(&t, Target::topic("t2").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("t2")).timeout(Duration::from_secs(15));
    let e = bounded(
        "call",
        c.call(
            Default::default(),
            "fail",
            args(json!({"message": "bad value"})),
        ),
    )
    .await
    .expect_err("remote error");
    assert_eq!(e.kind(), CallErrorKind::Remote);
    let r = e.remote().expect("remote details");
    assert_eq!(
        (r.class.as_str(), r.module.as_str(), r.message.as_str()),
        ("ValueError", "builtins", "bad value")
    );
    let e = bounded(
        "call",
        c.call(Default::default(), "nosuch", Default::default()),
    )
    .await
    .expect_err("no such method");
    assert_eq!(e.remote().map(|r| r.class.as_str()), Some("NoSuchMethod"));
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn many_sequential_calls_keep_credit_flowing() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _s = server(&t, Target::topic("t3").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("t3")).timeout(Duration::from_secs(5));
    for i in 0..1500 {
        let r = bounded(
            "call",
            c.call(Default::default(), "echo", args(json!({"i": i}))),
        )
        .await;
        match r {
            Ok(v) => assert_eq!(v, json!({"i": i})),
            Err(e) => panic!(
                "call {i} failed: {e}\ncounters: {}",
                serde_json::to_string_pretty(&b.counters()).unwrap_or_default()
            ),
        }
    }
    t.close().await;
    b.shutdown().await;
}
