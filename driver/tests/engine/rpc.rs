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

#[tokio::test]
async fn directed_shared_and_fanout_targets() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _s1 = server(&t, Target::topic("t4").with_server("s1"), "s1").await;
    let _s2 = server(&t, Target::topic("t4").with_server("s2"), "s2").await;
    // directed calls reach only the named server
    let c2 =
        RpcClient::new(&t, Target::topic("t4").with_server("s2")).timeout(Duration::from_secs(15));
    for _ in 0..4 {
        let r = bounded(
            "call",
            c2.call(Default::default(), "whoami", Default::default()),
        )
        .await;
        assert_eq!(r.expect("directed call"), json!("s2"));
    }
    // shared calls are spread over both servers
    let shared = RpcClient::new(&t, Target::topic("t4")).timeout(Duration::from_secs(15));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = bounded(
            "call",
            shared.call(Default::default(), "whoami", Default::default()),
        )
        .await;
        seen.insert(
            r.expect("shared call")
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 2, "shared calls reached {seen:?}");
    // a call with a fanout target is refused locally
    let fan = RpcClient::new(&t, Target::topic("t4").with_fanout(true));
    let e = fan
        .call(Default::default(), "echo", Default::default())
        .await
        .expect_err("fanout call");
    assert_eq!(e.kind(), CallErrorKind::InvalidTarget);
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn casts_and_fanout_reach_servers() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let tx = tx.clone();
        let n = name.to_string();
        let d = driver::Dispatcher::new().endpoint(driver::Endpoint::new().method(
            "note",
            move |_c, a| {
                let tx = tx.clone();
                let n = n.clone();
                async move {
                    let _ = tx.send(format!(
                        "{n}:{}",
                        a.get("k").and_then(|v| v.as_str()).unwrap_or("")
                    ));
                    Ok(serde_json::Value::Null)
                }
            },
        ));
        servers.push(
            bounded(
                "start",
                driver::RpcServer::start(&t, Target::topic("t5").with_server(name), d),
            )
            .await
            .expect("server"),
        );
    }
    let direct = RpcClient::new(&t, Target::topic("t5").with_server("b"));
    bounded(
        "cast",
        direct.cast(Default::default(), "note", args(json!({"k": "direct"}))),
    )
    .await
    .expect("cast");
    assert_eq!(
        bounded("direct cast", rx.recv()).await.as_deref(),
        Some("b:direct")
    );
    let fan = RpcClient::new(&t, Target::topic("t5").with_fanout(true));
    bounded(
        "fanout",
        fan.cast(Default::default(), "note", args(json!({"k": "fan"}))),
    )
    .await
    .expect("fanout");
    let mut got = vec![
        bounded("fanout 1", rx.recv()).await.unwrap_or_default(),
        bounded("fanout 2", rx.recv()).await.unwrap_or_default(),
    ];
    got.sort();
    assert_eq!(got, vec!["a:fan".to_string(), "b:fan".to_string()]);
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn exchanges_separate_traffic() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _sa = server(
        &t,
        Target::topic("t6").with_server("s").with_exchange("ea"),
        "in-ea",
    )
    .await;
    let _sb = server(
        &t,
        Target::topic("t6").with_server("s").with_exchange("eb"),
        "in-eb",
    )
    .await;
    for ex in ["ea", "eb"] {
        let c = RpcClient::new(&t, Target::topic("t6").with_exchange(ex))
            .timeout(Duration::from_secs(15));
        let r = bounded(
            "call",
            c.call(Default::default(), "whoami", Default::default()),
        )
        .await;
        assert_eq!(r.expect("call"), json!(format!("in-{ex}")));
    }
    assert!(
        b.counters().node("exclusive.ea.t6.s").is_some(),
        "legacy address with exchange ea"
    );
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn call_without_server_times_out() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let c = RpcClient::new(&t, Target::topic("nobody")).timeout(Duration::from_secs(1));
    let e = bounded(
        "call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("no server");
    assert_eq!(e.kind(), CallErrorKind::TimedOut);
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn call_monitor_keeps_long_call_alive_and_detects_silence() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let _s = server(&t, Target::topic("t7").with_server("s1"), "s1").await;
    // 3 s of work, monitor window 2 s: heartbeats every 1 s keep it alive.
    let c = RpcClient::new(&t, Target::topic("t7"))
        .timeout(Duration::from_secs(15))
        .call_monitor_timeout(Duration::from_secs(2));
    let r = bounded(
        "monitored call",
        c.call(Default::default(), "sleep", args(json!({"secs": 3}))),
    )
    .await;
    assert_eq!(r.expect("monitored call"), json!("done"));
    // Nobody answers and nobody sends heartbeats: fails with the monitor, long before 15 s.
    let silent = RpcClient::new(&t, Target::topic("t7-nobody"))
        .timeout(Duration::from_secs(15))
        .call_monitor_timeout(Duration::from_secs(2));
    let e = bounded(
        "silent call",
        silent.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("no heartbeat");
    assert_eq!(e.kind(), CallErrorKind::TimedOut);
    assert!(e.to_string().contains("heartbeat"), "{e}");
    t.close().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_odd_credit_windows_keep_topping_up() {
    // Windows of 3: credit is topped up when a settlement finds it at or
    // below 2 (spec §4.4). 40 concurrent calls need many top-ups on both the
    // server link and the reply link.
    let b = start_broker(Flavour::Qpidd).await;
    let mut cfg = config(&b.url());
    cfg.amqp.reply_link_credit = 3;
    cfg.amqp.rpc_server_credit = 3;
    let t = bounded("connect", driver::Transport::connect(cfg))
        .await
        .expect("connect");
    let _s = server(&t, Target::topic("t8b").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("t8b")).timeout(Duration::from_secs(15));
    let calls = (0..40).map(|i| {
        let c = c.clone();
        async move {
            c.call(Default::default(), "echo", args(json!({"i": i})))
                .await
        }
    });
    let results = bounded("40 calls", futures::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("call"), json!({"i": i}));
    }
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn credit_of_one_still_completes_concurrent_calls() {
    let b = start_broker(Flavour::Qpidd).await;
    let mut cfg = config(&b.url());
    cfg.amqp.reply_link_credit = 1;
    cfg.amqp.rpc_server_credit = 1;
    let t = bounded("connect", driver::Transport::connect(cfg))
        .await
        .expect("connect");
    let _s = server(&t, Target::topic("t8").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("t8")).timeout(Duration::from_secs(15));
    let calls = (0..4).map(|i| {
        let c = c.clone();
        async move {
            c.call(Default::default(), "echo", args(json!({"i": i})))
                .await
        }
    });
    let results = bounded("4 calls", futures::future::join_all(calls)).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("call"), json!({"i": i}));
    }
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let c = RpcClient::new(&t, Target::topic("drop")).timeout(Duration::from_secs(1));
    let _ = c.call(Default::default(), "echo", Default::default()).await;
    assert!(b.counters().connections.iter().any(|c| c.open));
    drop(c);
    drop(t);
    bounded("connection closed", async {
        while b.counters().connections.iter().any(|c| c.open) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    b.shutdown().await;
}

#[tokio::test]
async fn closed_transport_fails_operations() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    t.close().await;
    assert!(t.is_closed());
    let c = RpcClient::new(&t, Target::topic("closed")).timeout(Duration::from_secs(5));
    let e = bounded(
        "call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect_err("closed");
    assert_eq!(e.kind(), CallErrorKind::Closed);
    b.shutdown().await;
}
