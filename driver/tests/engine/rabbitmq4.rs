//! The driver on real RabbitMQ 4.x brokers (the locally built `amqp1-rig/rabbitmq:4.0.5` and
//! `:4.3.6` images, default configuration): `reply_mode: auto` and v2 addressing with
//! declarations through the management node.
//!
//! Each test uses `AMQP1_RIG_RABBITMQ_4_0_URL` / `AMQP1_RIG_RABBITMQ_4_3_URL` when set, or
//! starts the image with the docker CLI (labelled like the harness's containers, so an orphan is
//! reaped) and removes it at the end.

use std::process::Command;
use std::time::{Duration, Instant};

use driver::options::ReplyMode;
use driver::{
    AddressingKind, ListenErrorKind, NotificationListener, Notifier, Priority, RpcClient,
    RpcServer, Target, Transport,
};
use serde_json::json;

use crate::common::*;

/// A RabbitMQ 4.x broker: given by URL, or a container this test started.
struct Rabbit {
    url: String,
    container: Option<String>,
}

impl Drop for Rabbit {
    fn drop(&mut self) {
        if let Some(id) = self.container.take() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
    }
}

async fn rabbit(version: &str) -> Rabbit {
    init_logs();
    let var = format!("AMQP1_RIG_RABBITMQ_{}_URL", version.replace('.', "_"));
    if let Ok(url) = std::env::var(&var) {
        return Rabbit {
            url,
            container: None,
        };
    }
    let image = format!("amqp1-rig/rabbitmq:{version}");
    let out = Command::new("docker")
        .args([
            "run",
            "-d",
            "--label",
            "amqp1-rig=1",
            "--label",
            &format!("amqp1-rig.owner-pid={}", std::process::id()),
            "-p",
            "127.0.0.1::5672",
            &image,
        ])
        .output()
        .unwrap_or_else(|e| panic!("docker run {image}: {e} (or set {var})"));
    assert!(
        out.status.success(),
        "docker run {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut r = Rabbit {
        url: String::new(),
        container: Some(id.clone()),
    };
    let port = Command::new("docker")
        .args(["port", &id, "5672/tcp"])
        .output()
        .expect("docker port");
    let mapped = String::from_utf8_lossy(&port.stdout);
    let addr = mapped
        .lines()
        .next()
        .expect("mapped port")
        .trim()
        .to_string();
    r.url = format!("amqp://guest:guest@{addr}/");
    // Ready when an AMQP connection opens (RabbitMQ takes several seconds to boot).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut cfg = config(&r.url);
        cfg.amqp.connect_timeout = 2;
        if let Ok(t) = Transport::connect(cfg).await {
            t.close().await;
            break;
        }
        assert!(Instant::now() < deadline, "{image} not ready in 90 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    r
}

/// Call, cast, fanout and notifications with the driver's defaults.
async fn rpc_and_notifications(version: &str, reply_mode: ReplyMode) {
    let r = rabbit(version).await;
    let t = connect(&r.url).await;
    let info = t.connection_info().expect("connected");
    assert_eq!(info.version.as_deref(), Some(version));
    assert_eq!(info.addressing, AddressingKind::Rabbitmq4);
    assert_eq!(info.reply_mode, reply_mode);
    let srv_t = connect(&r.url).await;
    let s1 = server(&srv_t, Target::topic("r4").with_server("s1"), "s1").await;
    let s2 = server(&srv_t, Target::topic("r4").with_server("s2"), "s2").await;
    let c = RpcClient::new(&t, Target::topic("r4")).timeout(Duration::from_secs(15));
    let directed =
        RpcClient::new(&t, Target::topic("r4").with_server("s2")).timeout(Duration::from_secs(15));
    assert_eq!(
        bounded(
            "group call",
            c.call(Default::default(), "echo", args(json!({"x": 1})))
        )
        .await
        .expect("group call"),
        json!({"x": 1})
    );
    assert_eq!(
        bounded(
            "directed call",
            directed.call(Default::default(), "whoami", Default::default())
        )
        .await
        .expect("directed call"),
        json!("s2")
    );
    bounded(
        "cast",
        directed.cast(Default::default(), "echo", Default::default()),
    )
    .await
    .expect("cast");
    // Fanout: both servers get it (each through its own queue bound to the fanout exchange).
    let fan = RpcClient::new(&t, Target::topic("r4").with_fanout(true));
    bounded(
        "fanout",
        fan.cast(Default::default(), "sleep", args(json!({"secs": 0}))),
    )
    .await
    .expect("fanout");
    // A notification sent before anyone listens is kept and delivered.
    let n = Notifier::new(&t, "r4-publisher").topics(["r4notes"]);
    bounded(
        "notify",
        n.notify(
            Default::default(),
            "r4.event",
            Priority::Warn,
            json!({"k": "v"}),
        ),
    )
    .await
    .expect("notify");
    let mut l = bounded(
        "listener",
        NotificationListener::start(
            &srv_t,
            vec![Target::topic("r4notes")],
            vec![Priority::Warn],
            None,
        ),
    )
    .await
    .expect("listener starts");
    let got = bounded("notification", l.recv())
        .await
        .expect("notification");
    assert_eq!(got.notification.event_type, "r4.event");
    got.ack().await;
    l.stop().await;
    s1.stop().await;
    s2.stop().await;
    t.close().await;
    srv_t.close().await;
}

#[tokio::test]
#[ignore = "needs amqp1-rig/rabbitmq:4.x images"]
async fn rabbitmq_4_3_default_config_with_auto_modes() {
    rpc_and_notifications("4.3.6", ReplyMode::TemporaryQueue).await;
}

#[tokio::test]
#[ignore = "needs amqp1-rig/rabbitmq:4.x images"]
async fn rabbitmq_4_0_with_auto_modes() {
    rpc_and_notifications("4.0.5", ReplyMode::Named).await;
}

#[tokio::test]
#[ignore = "needs amqp1-rig/rabbitmq:4.x images"]
async fn management_refusal_is_typed_and_names_the_request() {
    let r = rabbit("4.3.6").await;
    // Queue names starting with "amq." are reserved: the management node answers 403.
    let mut cfg = config(&r.url);
    cfg.amqp.server_request_prefix = "amq".into();
    let t = bounded("connect", Transport::connect(cfg))
        .await
        .expect("connect");
    let e = bounded(
        "server start",
        RpcServer::start(
            &t,
            Target::topic("reserved").with_server("s1"),
            dispatcher("s1"),
        ),
    )
    .await
    .expect_err("reserved queue name");
    assert_eq!(e.kind(), ListenErrorKind::Management, "{e}");
    let m = e.management().expect("management detail");
    assert_eq!(m.request, "PUT /queues/amq.openstack.reserved.s1");
    assert_eq!(m.status, Some(403), "{m}");
    assert!(m.description.contains("amq."), "{m}");
    t.close().await;
}
