//! SASL PLAIN/ANONYMOUS, TLS, and the Open frame's product property.

mod common;

use std::sync::Arc;

use broker::{Broker, BrokerConfig, Flavour, TlsConfig};
use common::*;
use fe2o3_amqp::types::performatives::Open;
use fe2o3_amqp::types::primitives::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn sasl_plain_users_and_wrong_password() {
    let config = BrokerConfig {
        users: vec![("alice".into(), "s3cret".into())],
        allow_anonymous: false,
        ..BrokerConfig::default()
    };
    let broker = Broker::start(config).await.expect("start");
    let ok = connect_addr(&broker, Some(("alice", "s3cret"))).await;
    assert!(ok.is_ok(), "right password");
    let bad = connect_addr(&broker, Some(("alice", "wrong"))).await;
    let err = bad.err().expect("wrong password refused");
    assert!(format!("{err:?}").contains("Auth"), "{err:?}");
    let anon = connect_addr(&broker, None).await;
    assert!(anon.is_err(), "anonymous refused when not allowed");
    assert!(broker.counters().refused_connections >= 2);
    ok.expect("ok").close().await;
    broker.shutdown().await;
}

async fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).await.expect("size");
    let size = u32::from_be_bytes(size) as usize;
    let mut rest = vec![0u8; size - 4];
    s.read_exact(&mut rest).await.expect("frame");
    let doff = rest[0] as usize * 4;
    rest[doff - 4..].to_vec()
}

#[tokio::test]
async fn open_advertises_each_flavours_product() {
    for (flavour, product) in [
        (Flavour::Qpidd, "qpid-cpp"),
        (Flavour::Router, "qpid-dispatch-router"),
        (Flavour::Rabbitmq3, "RabbitMQ"),
    ] {
        let broker = start(flavour).await;
        let mut s = TcpStream::connect(broker.local_addr())
            .await
            .expect("connect");
        s.write_all(b"AMQP\x00\x01\x00\x00").await.expect("header");
        let open = Open {
            container_id: "raw".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        let body = serde_amqp::to_vec(&fe2o3_amqp::types::performatives::Performative::Open(open))
            .expect("encode");
        let mut frame = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[2, 0, 0, 0]);
        frame.extend_from_slice(&body);
        s.write_all(&frame).await.expect("open");
        let mut header = [0u8; 8];
        within("header", s.read_exact(&mut header))
            .await
            .expect("header");
        assert_eq!(&header, b"AMQP\x00\x01\x00\x00");
        let body = within("open", read_frame(&mut s)).await;
        let open: fe2o3_amqp::types::performatives::Performative =
            serde_amqp::from_slice(&body).expect("decode open");
        let fe2o3_amqp::types::performatives::Performative::Open(open) = open else {
            panic!("expected open, got {open:?}");
        };
        let props = open.properties.expect("properties");
        let got = props.get(&fe2o3_amqp::types::primitives::Symbol::from("product"));
        assert_eq!(got, Some(&Value::String(product.to_string())), "{flavour}");
        drop(s);
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn tls_with_self_signed_certificate() {
    let tls = TlsConfig::self_signed().expect("self-signed");
    let ca = tls.cert_pem.clone();
    let broker = Broker::start(BrokerConfig::default().with_tls(tls))
        .await
        .expect("start");
    assert!(
        broker.url().starts_with("amqps://127.0.0.1:"),
        "{}",
        broker.url()
    );

    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.expect("pem")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls_stream = within("tls", connector.connect(name, tcp))
        .await
        .expect("handshake");
    let mut conn = within(
        "open",
        fe2o3_amqp::Connection::builder()
            .container_id("tls-client")
            .open_with_stream(tls_stream),
    )
    .await
    .expect("open over TLS");
    let mut session = within("begin", fe2o3_amqp::Session::begin(&mut conn))
        .await
        .expect("begin");
    let mut s = within(
        "attach",
        fe2o3_amqp::Sender::attach(&mut session, "s", "unicast.tls"),
    )
    .await
    .expect("attach");
    let mut r = within(
        "attach",
        fe2o3_amqp::Receiver::attach(&mut session, "r", "unicast.tls"),
    )
    .await
    .expect("attach");
    within("send", s.send("secure")).await.expect("send");
    assert_eq!(recv_text(&mut r).await, "secure");

    // A plain-text client is refused by the TLS listener.
    let mut plain = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    plain
        .write_all(b"AMQP\x00\x01\x00\x00")
        .await
        .expect("write");
    let mut buf = [0u8; 8];
    let n = within("refused", plain.read(&mut buf)).await.unwrap_or(0);
    assert_ne!(&buf[..n], b"AMQP\x00\x01\x00\x00");
    let _ = within("close", conn.close()).await;
    broker.shutdown().await;
}
