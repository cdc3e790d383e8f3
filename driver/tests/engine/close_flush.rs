//! Pre-settled sends accepted by the API reach the peer even when the
//! sending transport is closed (or dropped) right after them (spec §4.5, §7:
//! a pre-settled send counts as done once it is written).

use std::collections::BTreeSet;
use std::time::Duration;

use broker::Flavour;
use driver::{Dispatcher, Endpoint, RpcClient, RpcServer, Target, Transport};
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::*;

/// A server on its own transport that reports the `n` of every `note` cast.
async fn counting_server(
    url: &str,
    topic: &str,
) -> (Transport, RpcServer, mpsc::UnboundedReceiver<u64>) {
    let t = connect(url).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let d = Dispatcher::new().endpoint(Endpoint::new().method("note", move |_c, a| {
        let tx = tx.clone();
        async move {
            if let Some(n) = a.get("n").and_then(|v| v.as_u64()) {
                let _ = tx.send(n);
            }
            Ok(serde_json::Value::Null)
        }
    }));
    let s = bounded(
        "server start",
        RpcServer::start(&t, Target::topic(topic).with_server("s1"), d),
    )
    .await
    .expect("server starts");
    (t, s, rx)
}

/// Waits until every number in `want` arrived (bounded), returns what did.
async fn collect(rx: &mut mpsc::UnboundedReceiver<u64>, want: &BTreeSet<u64>) -> BTreeSet<u64> {
    let mut got = BTreeSet::new();
    let _ = tokio::time::timeout(WAIT, async {
        while !want.is_subset(&got) {
            match rx.recv().await {
                Some(n) => {
                    got.insert(n);
                }
                None => return,
            }
        }
    })
    .await;
    got
}

fn missing(want: &BTreeSet<u64>, got: &BTreeSet<u64>) -> Vec<u64> {
    want.difference(got).copied().collect()
}

async fn casts_then_close(flavour: Flavour, n: u64) {
    let b = start_broker(flavour).await;
    let url = b.url();
    let topic = format!("flush-{flavour:?}").to_lowercase();
    let (st, server, mut rx) = counting_server(&url, &topic).await;
    let mut next = 0u64;
    for round in 0..3 {
        let t = connect(&url).await;
        let direct = RpcClient::new(&t, Target::topic(&topic).with_server("s1"));
        let fan = RpcClient::new(&t, Target::topic(&topic).with_fanout(true));
        let mut want = BTreeSet::new();
        match round {
            // Sequential casts, each awaited.
            0 => {
                for _ in 0..n {
                    bounded(
                        "cast",
                        direct.cast(Default::default(), "note", args(json!({"n": next}))),
                    )
                    .await
                    .expect("cast");
                    want.insert(next);
                    next += 1;
                }
            }
            // Concurrent (pipelined) casts and fanouts.
            _ => {
                let mut tasks = Vec::new();
                for i in 0..n {
                    let c = if i % 2 == 0 {
                        direct.clone()
                    } else {
                        fan.clone()
                    };
                    let k = next;
                    want.insert(k);
                    next += 1;
                    tasks.push(tokio::spawn(async move {
                        c.cast(Default::default(), "note", args(json!({"n": k})))
                            .await
                    }));
                }
                for task in tasks {
                    bounded("cast", task).await.expect("task").expect("cast");
                }
            }
        }
        if round == 2 {
            // Dropping the last handles must flush too.
            drop(direct);
            drop(fan);
            drop(t);
        } else {
            bounded("close", t.close()).await;
        }
        let got = collect(&mut rx, &want).await;
        assert!(
            want.is_subset(&got),
            "{flavour:?} round {round}: {} of {n} casts reported Ok were lost after close: {:?}",
            missing(&want, &got).len(),
            missing(&want, &got)
        );
    }
    bounded("server stop", server.stop()).await;
    bounded("close", st.close()).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_then_close_reach_server_qpidd() {
    casts_then_close(Flavour::Qpidd, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_then_close_reach_server_router() {
    // Below the server's credit (100): the router forwards only with credit.
    casts_then_close(Flavour::Router, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_waits_for_the_link_detach_and_session_end() {
    // A transport closed right after casts still closes cleanly: the broker
    // sees no open connection afterwards and close() returns (bounded).
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let c = RpcClient::new(&t, Target::topic("flush-clean").with_server("x"));
    for i in 0..10 {
        bounded(
            "cast",
            c.cast(Default::default(), "note", args(json!({"n": i}))),
        )
        .await
        .expect("cast");
    }
    bounded("close", t.close()).await;
    assert!(t.is_closed());
    bounded("connection closed", async {
        while b.counters().connections.iter().any(|c| c.open) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    b.shutdown().await;
}

async fn short_lived_transports(flavour: Flavour) {
    // A short-lived process: connect, one cast, close at once (the interop
    // "cast then close" check).
    let b = start_broker(flavour).await;
    let url = b.url();
    let topic = format!("flush-short-{flavour:?}").to_lowercase();
    let (st, server, mut rx) = counting_server(&url, &topic).await;
    let mut want = BTreeSet::new();
    for i in 0..20u64 {
        let t = connect(&url).await;
        let target = if i % 2 == 0 {
            Target::topic(&topic).with_server("s1")
        } else {
            Target::topic(&topic).with_fanout(true)
        };
        bounded(
            "cast",
            RpcClient::new(&t, target).cast(Default::default(), "note", args(json!({"n": i}))),
        )
        .await
        .expect("cast");
        want.insert(i);
        bounded("close", t.close()).await;
    }
    let got = collect(&mut rx, &want).await;
    assert!(
        want.is_subset(&got),
        "{flavour:?}: casts reported Ok but lost after close: {:?}",
        missing(&want, &got)
    );
    bounded("server stop", server.stop()).await;
    bounded("close", st.close()).await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cast_per_short_lived_transport_qpidd() {
    short_lived_transports(Flavour::Qpidd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cast_per_short_lived_transport_router() {
    short_lived_transports(Flavour::Router).await;
}
