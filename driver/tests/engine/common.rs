//! Shared helpers: brokers, configs, echo servers, bounded waits.

use std::future::Future;
use std::time::Duration;

use broker::{Broker, BrokerConfig, Flavour};
use driver::{Config, Dispatcher, Endpoint, RemoteError, RpcServer, Target, Transport};
use serde_json::{json, Value};

/// Generous bound for waits that normally take milliseconds.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `f` or panics after [`WAIT`].
pub async fn bounded<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn start_broker(flavour: Flavour) -> Broker {
    init_logs();
    Broker::start(BrokerConfig::for_flavour(flavour))
        .await
        .expect("broker starts")
}

/// A config for `url` with short retry delays suitable for tests.
pub fn config(url: &str) -> Config {
    let mut c = Config::from_url(url).expect("valid url");
    c.amqp.link_retry_delay = 1;
    c.amqp.connection_retry_interval = 1;
    c.amqp.connection_retry_interval_max = 2;
    c.amqp.connect_timeout = 10;
    c
}

pub async fn connect(url: &str) -> Transport {
    bounded("connect", Transport::connect(config(url)))
        .await
        .expect("transport connects")
}

/// `echo` returns args; `fail` raises ValueError(args.message); `whoami` returns the server name;
/// `sleep` sleeps args.secs then returns "done".
pub fn dispatcher(name: &str) -> Dispatcher {
    let n = name.to_string();
    Dispatcher::new().endpoint(
        Endpoint::new()
            .method("echo", |_c, a| async move { Ok(Value::Object(a)) })
            .method("fail", |_c, a| async move {
                let msg = a
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                Err(RemoteError::new("ValueError", "builtins", msg))
            })
            .method("whoami", move |_c, _a| {
                let n = n.clone();
                async move { Ok(json!(n)) }
            })
            .method("sleep", |_c, a| async move {
                let secs = a.get("secs").and_then(Value::as_f64).unwrap_or(0.0);
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                Ok(json!("done"))
            }),
    )
}

pub async fn server(t: &Transport, target: Target, name: &str) -> RpcServer {
    bounded(
        "server start",
        RpcServer::start(t, target, dispatcher(name)),
    )
    .await
    .expect("server starts")
}

pub fn args(v: Value) -> driver::Map {
    match v {
        Value::Object(m) => m,
        _ => panic!("args must be an object"),
    }
}
