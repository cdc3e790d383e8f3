//! Notifications v1/v2, requeue.

use broker::Flavour;
use driver::{NotificationListener, Notifier, NotifyVersion, Priority, Target};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn notifications_v1_and_v2_are_received() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let mut l = bounded(
        "listener",
        NotificationListener::start(
            &t,
            vec![Target::topic("nt")],
            vec![Priority::Info, Priority::Error],
            None,
        ),
    )
    .await
    .expect("listener");
    for (v, p) in [
        (NotifyVersion::V1, Priority::Info),
        (NotifyVersion::V2, Priority::Error),
    ] {
        let n = Notifier::new(&t, "pub.1").topics(["nt"]).version(v);
        bounded(
            "notify",
            n.notify(
                Default::default(),
                "thing.happened",
                p,
                json!({"v": format!("{v:?}")}),
            ),
        )
        .await
        .expect("notify");
        let got = bounded("recv", l.recv()).await.expect("notification");
        assert_eq!(got.version, v);
        assert_eq!(got.notification.priority, p);
        assert_eq!(got.notification.event_type, "thing.happened");
        assert_eq!(got.notification.publisher_id, "pub.1");
        assert_eq!(got.notification.payload, json!({"v": format!("{v:?}")}));
        got.ack().await;
    }
    assert!(
        b.counters().node("unicast.openstack.nt.error").is_some()
            || b.counters().node("unicast.nt.error").is_some()
            || b.counters().nodes.keys().any(|k| k.ends_with("nt.error"))
    );
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn requeued_notification_is_redelivered() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let mut l = bounded(
        "listener",
        NotificationListener::start(&t, vec![Target::topic("rq")], vec![Priority::Info], None),
    )
    .await
    .expect("listener");
    let n = Notifier::new(&t, "p").topics(["rq"]);
    bounded(
        "notify",
        n.notify(Default::default(), "e", Priority::Info, json!(1)),
    )
    .await
    .expect("notify");
    let first = bounded("first", l.recv()).await.expect("first delivery");
    let id = first.notification.message_id.clone();
    first.requeue().await;
    let again = bounded("redelivery", l.recv()).await.expect("redelivery");
    assert_eq!(again.notification.message_id, id);
    again.ack().await;
    let released: u64 = b.counters().nodes.values().map(|n| n.released).sum();
    assert!(released >= 1, "broker counted {released} releases");
    t.close().await;
    b.shutdown().await;
}

#[tokio::test]
async fn listener_pool_is_not_supported() {
    let b = start_broker(Flavour::Qpidd).await;
    let t = connect(&b.url()).await;
    let e = NotificationListener::start(
        &t,
        vec![Target::topic("x")],
        vec![Priority::Info],
        Some("pool".into()),
    )
    .await
    .expect_err("pool");
    assert_eq!(e.kind(), driver::ListenErrorKind::InvalidTarget);
    t.close().await;
    b.shutdown().await;
}
