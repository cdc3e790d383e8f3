//! Reconnect and failover between two broker instances.

use std::time::Duration;

use broker::Flavour;
use driver::{Event, RpcClient, Target};
use serde_json::json;

use crate::common::*;

async fn wait_connected(ev: &mut tokio::sync::broadcast::Receiver<Event>) -> (String, Vec<Event>) {
    let mut seen = Vec::new();
    loop {
        match bounded("events", ev.recv()).await {
            Ok(e @ Event::Connected { .. }) => {
                let host = match &e {
                    Event::Connected { host, .. } => host.clone(),
                    _ => unreachable!(),
                };
                seen.push(e);
                return (host, seen);
            }
            Ok(e) => seen.push(e),
            Err(e) => panic!("event stream: {e}"),
        }
    }
}

#[tokio::test]
async fn reconnects_after_connections_are_dropped() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let mut ev = t.events();
    let _s = server(&t, Target::topic("rc").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("rc")).timeout(Duration::from_secs(15));
    bounded(
        "call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("before");
    b.faults().drop_connections();
    let (_, seen) = wait_connected(&mut ev).await;
    assert!(
        seen.iter().any(|e| matches!(e, Event::Disconnected { .. })),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. })),
        "{seen:?}"
    );
    // The server re-attached its links; calls work again.
    let r = bounded("call after reconnect", async {
        loop {
            match c
                .call(Default::default(), "echo", args(json!({"x": 1})))
                .await
            {
                Ok(v) => return v,
                Err(e) if e.kind() == driver::CallErrorKind::Disconnected => continue,
                Err(e) => panic!("call after reconnect: {e}"),
            }
        }
    })
    .await;
    assert_eq!(r, json!({"x": 1}));
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn fails_over_to_the_other_broker() {
    let a = start_broker(Flavour::Qpidd).await;
    let b = start_broker(Flavour::Router).await;
    let url = format!("amqp://{},{}/", a.local_addr(), b.local_addr());
    let t = connect(&url).await;
    let mut ev = t.events();
    let _s = server(&t, Target::topic("fo").with_server("s1"), "s1").await;
    let c = RpcClient::new(&t, Target::topic("fo")).timeout(Duration::from_secs(15));
    bounded(
        "call",
        c.call(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("before");
    let on_a = a.counters().connections.iter().any(|c| c.open);
    let (first, second) = if on_a { (a, b) } else { (b, a) };
    let survivor = second.local_addr().to_string();
    let expected_kind = if second.flavour() == Flavour::Router {
        driver::AddressingKind::Routable
    } else {
        driver::AddressingKind::Legacy
    };
    first.shutdown().await;
    let (host, seen) = wait_connected(&mut ev).await;
    assert_eq!(host, survivor, "{seen:?}");
    match seen.last() {
        Some(Event::Connected { addressing, .. }) => assert_eq!(*addressing, expected_kind),
        other => panic!("unexpected {other:?}"),
    }
    let r = bounded("call after failover", async {
        loop {
            match c
                .call(Default::default(), "echo", args(json!({"y": 2})))
                .await
            {
                Ok(v) => return v,
                Err(e) if e.kind() == driver::CallErrorKind::Disconnected => continue,
                Err(e) => panic!("call after failover: {e}"),
            }
        }
    })
    .await;
    assert_eq!(r, json!({"y": 2}));
    t.close().await;
    second.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_detects_a_paused_broker() {
    let b = start_broker(Flavour::Qpidd).await;
    let mut cfg = config(&b.url());
    cfg.amqp.idle_timeout = 1;
    let t = bounded("connect", driver::Transport::connect(cfg))
        .await
        .expect("connect");
    let mut ev = t.events();
    b.faults().pause(Duration::from_secs(6));
    let lost = async {
        loop {
            match ev.recv().await {
                Ok(Event::Disconnected { reason, .. }) => return reason,
                Ok(_) => {}
                Err(e) => panic!("event stream: {e}"),
            }
        }
    };
    let reason = bounded("heartbeat loss detected", lost).await;
    assert!(!reason.is_empty());
    let (_, _) = wait_connected(&mut ev).await;
    t.close().await;
    b.shutdown().await;
}
