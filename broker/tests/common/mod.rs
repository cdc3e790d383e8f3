//! Shared helpers for the broker integration tests: real TCP, fe2o3 clients.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use broker::{Broker, BrokerConfig, Flavour};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Message, Source};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Delivery, Receiver, Sendable, Sender, Session};
use tokio::net::TcpStream;

/// Generous bound for waits that normally take milliseconds.
pub const WAIT: Duration = Duration::from_secs(15);

pub async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

pub async fn start(flavour: Flavour) -> Broker {
    Broker::start(BrokerConfig::for_flavour(flavour))
        .await
        .expect("broker starts")
}

pub struct Client {
    pub conn: ConnectionHandle<()>,
    pub session: SessionHandle<()>,
}

pub async fn connect(broker: &Broker) -> Client {
    connect_addr(broker, None).await.expect("connect")
}

pub async fn connect_addr(
    broker: &Broker,
    plain: Option<(&str, &str)>,
) -> Result<Client, fe2o3_amqp::connection::OpenError> {
    let stream = within("tcp connect", TcpStream::connect(broker.local_addr()))
        .await
        .expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    let builder = Connection::builder().container_id(format!("test-{}", uuid::Uuid::new_v4()));
    let mut conn = match plain {
        Some((u, p)) => {
            within(
                "open",
                builder
                    .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
                        username: u.to_string(),
                        password: p.to_string(),
                    })
                    .open_with_stream(stream),
            )
            .await?
        }
        None => within("open", builder.open_with_stream(stream)).await?,
    };
    let session = within("begin", Session::begin(&mut conn))
        .await
        .expect("begin");
    Ok(Client { conn, session })
}

impl Client {
    pub async fn sender(&mut self, address: &str) -> Sender {
        within(
            "sender attach",
            Sender::attach(
                &mut self.session,
                format!("s-{}", uuid::Uuid::new_v4()),
                address,
            ),
        )
        .await
        .expect("sender attach")
    }

    pub async fn receiver(&mut self, address: &str) -> Receiver {
        within(
            "receiver attach",
            Receiver::attach(
                &mut self.session,
                format!("r-{}", uuid::Uuid::new_v4()),
                address,
            ),
        )
        .await
        .expect("receiver attach")
    }

    pub async fn dynamic_receiver(&mut self) -> Receiver {
        within(
            "dynamic receiver attach",
            Receiver::builder()
                .name(format!("reply-{}", uuid::Uuid::new_v4()))
                .source(Source::builder().dynamic(true).build())
                .attach(&mut self.session),
        )
        .await
        .expect("dynamic receiver attach")
    }

    pub async fn close(mut self) {
        let _ = within("session end", self.session.end()).await;
        let _ = within("connection close", self.conn.close()).await;
    }
}

pub fn text(d: &Delivery<Value>) -> String {
    match d.body() {
        Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

pub async fn recv_text(r: &mut Receiver) -> String {
    let d: Delivery<Value> = within("recv", r.recv()).await.expect("recv");
    within("accept", r.accept(&d)).await.expect("accept");
    text(&d)
}

pub fn presettled(body: &str) -> Sendable<fe2o3_amqp::types::messaging::Body<Value>> {
    Sendable::builder()
        .message(
            Message::builder()
                .body(fe2o3_amqp::types::messaging::Body::Value(
                    fe2o3_amqp::types::messaging::AmqpValue(Value::String(body.to_string())),
                ))
                .build(),
        )
        .settled(true)
        .build()
}
