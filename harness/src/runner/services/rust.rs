//! Services on the Rust driver: RPC servers whose methods do what the scenario scripts, and
//! notification listeners that record (and requeue) what they receive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use driver::{
    Dispatcher, NotificationListener, NotifyVersion, Priority, RemoteError, RpcServer, Target,
    Transport,
};
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::runner::check::OpError;
use crate::runner::record::{lock, Recorder};
use crate::runner::traffic::{Kind, TrafficLog};
use crate::scenario::{Action, Behaviour, Endpoint, StateOp};

/// State of stateful behaviours, per service.
#[derive(Debug, Default)]
pub struct State {
    inner: Mutex<BTreeMap<String, Json>>,
}

impl State {
    fn apply(&self, service: &str, op: StateOp, value: Json) -> Json {
        let mut all = lock(&self.inner);
        let st = all
            .entry(service.to_string())
            .or_insert_with(|| serde_json::json!({"list": [], "sum": 0, "count": 0}));
        let count = st.get("count").and_then(Json::as_i64).unwrap_or(0) + 1;
        st["count"] = Json::from(count);
        match op {
            StateOp::Append => {
                if let Some(Json::Array(l)) = st.get_mut("list") {
                    l.push(value);
                }
                st["list"].clone()
            }
            StateOp::Add => {
                let sum =
                    st.get("sum").and_then(Json::as_i64).unwrap_or(0) + value.as_i64().unwrap_or(0);
                st["sum"] = Json::from(sum);
                Json::from(sum)
            }
            StateOp::Count => Json::from(count),
            StateOp::Get => st["list"].clone(),
        }
    }
}

/// Where services record what they receive: the transcript's deliveries, or the traffic log for
/// marked background traffic.
#[derive(Debug, Clone)]
pub struct Sinks {
    /// Deliveries.
    pub recorder: Arc<Recorder>,
    /// Marked traffic.
    pub traffic: Arc<TrafficLog>,
}

/// Who a method belongs to and where it records.
#[derive(Clone)]
struct Owner {
    service: String,
    record_as: String,
    sinks: Sinks,
    state: Arc<State>,
}

async fn perform(
    owner: Owner,
    method: String,
    b: Arc<Behaviour>,
    args: driver::Map,
) -> Result<Json, RemoteError> {
    let value = Json::Object(args);
    if !owner.sinks.traffic.record(&value, Kind::Call) {
        owner.sinks.recorder.record(
            &owner.record_as,
            method.clone(),
            format!("{method} {value}"),
        );
    }
    let Json::Object(args) = value else {
        return Ok(Json::Null);
    };
    if let Some(d) = b.sleep {
        tokio::time::sleep(d).await;
    }
    match &b.action {
        Action::Raise {
            class,
            module,
            message,
        } => Err(RemoteError::new(
            class.clone(),
            module.clone().unwrap_or_else(|| "builtins".into()),
            message
                .clone()
                .unwrap_or_else(|| format!("{method} failed")),
        )),
        Action::Return(v) => Ok(v.clone()),
        Action::Whoami => Ok(Json::String(owner.service.clone())),
        Action::State(op) => Ok(owner.state.apply(
            &owner.service,
            *op,
            args.get("value").cloned().unwrap_or(Json::Null),
        )),
        Action::Echo => Ok(Json::Object(args)),
    }
}

/// What a service needs to build its methods.
#[derive(Debug)]
pub struct ServerSpec<'a> {
    /// Service name (what `whoami` returns).
    pub service: &'a str,
    /// Where deliveries are recorded.
    pub record_as: &'a str,
    /// Where it listens.
    pub target: &'a Target,
    /// Its endpoints.
    pub endpoints: &'a [Endpoint],
}

/// Starts an RPC server on `transport`.
pub async fn start_server(
    transport: &Transport,
    spec: ServerSpec<'_>,
    sinks: Sinks,
    state: Arc<State>,
) -> Result<RpcServer, OpError> {
    let owner = Owner {
        service: spec.service.to_string(),
        record_as: spec.record_as.to_string(),
        sinks,
        state,
    };
    let mut dispatcher = Dispatcher::new();
    for ep in spec.endpoints {
        let mut e = driver::Endpoint::new();
        if let Some(ns) = &ep.namespace {
            e = e.namespace(ns.clone());
        }
        if let Some(v) = &ep.version {
            e = e.version(v.clone());
        }
        for (m, b) in &ep.methods {
            let (owner, method, b) = (owner.clone(), m.clone(), Arc::new(b.clone()));
            e = e.method(m.clone(), move |_ctx, args| {
                Box::pin(perform(owner.clone(), method.clone(), b.clone(), args))
                    as futures::future::BoxFuture<'static, Result<Json, RemoteError>>
            });
        }
        dispatcher = dispatcher.endpoint(e);
    }
    RpcServer::start(transport, spec.target.clone(), dispatcher)
        .await
        .map_err(|e| OpError::from_driver(&e))
}

/// A running listener task.
#[derive(Debug)]
pub struct Listening {
    /// Stops it.
    pub stop: CancellationToken,
    /// The task (ends after `stop`).
    pub task: JoinHandle<()>,
}

/// What a listener listens to.
#[derive(Debug)]
pub struct ListenerSpec<'a> {
    /// Where deliveries are recorded.
    pub record_as: &'a str,
    /// Topics.
    pub targets: &'a [Target],
    /// Priorities.
    pub priorities: &'a [Priority],
    /// Pool.
    pub pool: Option<&'a str>,
    /// Requeue the first N deliveries.
    pub requeue: usize,
}

/// Starts a notification listener on `transport` and a task that records what it receives.
pub async fn start_listener(
    transport: &Transport,
    spec: ListenerSpec<'_>,
    sinks: Sinks,
) -> Result<Listening, OpError> {
    let mut listener = NotificationListener::start(
        transport,
        spec.targets.to_vec(),
        spec.priorities.to_vec(),
        spec.pool.map(str::to_string),
    )
    .await
    .map_err(|e| OpError::from_driver(&e))?;
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let name = spec.record_as.to_string();
    let requeue = spec.requeue;
    let task = tokio::spawn(async move {
        let mut requeued = 0usize;
        loop {
            let n = tokio::select! {
                _ = stopped.cancelled() => break,
                n = listener.recv() => n,
            };
            let Some(n) = n else { break };
            let nt = &n.notification;
            if sinks.traffic.record(&nt.payload, Kind::Notification) {
                n.ack().await;
                continue;
            }
            let v = match n.version {
                NotifyVersion::V1 => 1,
                NotifyVersion::V2 => 2,
            };
            let key = format!("{}:{}", nt.priority.as_lower(), nt.event_type);
            let mut line = format!(
                "{} {} {} publisher={} v{v}",
                nt.priority.as_lower(),
                nt.event_type,
                nt.payload,
                nt.publisher_id
            );
            if requeued < requeue {
                requeued += 1;
                line.push_str(" (requeued)");
                sinks
                    .recorder
                    .record(&name, format!("requeued:{key}"), line);
                n.requeue().await;
            } else {
                sinks.recorder.record(&name, key, line);
                n.ack().await;
            }
        }
        listener.stop().await;
    });
    Ok(Listening { stop, task })
}
