//! Services hosted by the Python oslo.messaging peer ([`crate::peer`]): `kind: python-oslo` RPC servers
//! and listeners, and calls, casts and notifications sent through the Python driver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driver::url::TransportUrl;
use driver::Target;
use serde_json::{json, Value as Json};
use tokio::task::JoinHandle;

use crate::peer::protocol::{CallRequest, Request, TargetJson};
use crate::peer::{FailureKind, PeerFailure, PeerOptions, PythonPeer};
use crate::runner::check::OpError;
use crate::runner::record::{lock, Recorder};
use crate::runner::traffic::{Kind, TrafficLog};
use crate::scenario::{Action, Behaviour, Endpoint, ErrorKind, Notify, Role, Service};

/// The peer process and the task that records what its services receive.
pub struct Peer {
    peer: Arc<PythonPeer>,
    pump: JoinHandle<()>,
    names: Arc<Mutex<HashMap<String, String>>>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("pid", &self.peer.pid())
            .finish()
    }
}

/// One endpoint in the harness scenario format, which the peer mirrors exactly.
fn endpoint_json(ep: &Endpoint) -> Json {
    let methods: serde_json::Map<String, Json> = ep
        .methods
        .iter()
        .map(|(name, b)| (name.clone(), behaviour_json(b)))
        .collect();
    let mut e = json!({ "methods": methods });
    if let Some(ns) = &ep.namespace {
        e["namespace"] = json!(ns);
    }
    if let Some(v) = &ep.version {
        e["version"] = json!(v);
    }
    e
}

fn behaviour_json(b: &Behaviour) -> Json {
    let mut m = serde_json::Map::new();
    if let Some(d) = b.sleep {
        m.insert("sleep".into(), json!(d.as_secs_f64()));
    }
    match &b.action {
        Action::Echo => {}
        Action::Return(v) => {
            m.insert("return".into(), v.clone());
        }
        Action::Raise {
            class,
            module,
            message,
        } => {
            m.insert(
                "raise".into(),
                json!({"class": class, "module": module, "message": message}),
            );
        }
        Action::State(op) => {
            m.insert("state".into(), json!(op.as_str()));
        }
        Action::Whoami => {
            m.insert("whoami".into(), json!(true));
        }
    }
    Json::Object(m)
}

/// What the peer's services need of the scenario's driver settings.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// `{"oslo_messaging_amqp": {...}, "DEFAULT": {...}}` as the peer applies it.
    pub json: Json,
}

impl PeerConfig {
    /// From the scenario's oslo options, the broker's addressing mode and the control exchange.
    pub fn new(
        options: &std::collections::BTreeMap<String, String>,
        addressing: Option<driver::options::AddressingMode>,
        control_exchange: Option<&str>,
    ) -> Self {
        let mut amqp = serde_json::Map::new();
        if let Some(a) = addressing {
            amqp.insert("addressing_mode".into(), json!(a.as_str()));
        }
        for (k, v) in options {
            amqp.insert(k.clone(), json!(v));
        }
        let mut default = serde_json::Map::new();
        if let Some(x) = control_exchange {
            default.insert("control_exchange".into(), json!(x));
        }
        PeerConfig {
            json: json!({"oslo_messaging_amqp": amqp, "DEFAULT": default}),
        }
    }
}

/// The kind of a peer failure as the harness names it.
fn failure_kind(kind: &FailureKind) -> ErrorKind {
    match kind {
        FailureKind::Timeout => ErrorKind::TimedOut,
        FailureKind::Delivery => ErrorKind::DeliveryFailed,
        FailureKind::Remote => ErrorKind::Remote,
        FailureKind::InvalidTarget => ErrorKind::InvalidTarget,
        _ => ErrorKind::Other,
    }
}

fn map_failure(f: PeerFailure) -> OpError {
    let kind = failure_kind(&f.kind);
    let remote = (kind == ErrorKind::Remote).then(|| {
        (
            f.class.clone().unwrap_or_default(),
            f.module.clone().unwrap_or_default(),
        )
    });
    OpError {
        kind,
        condition: None,
        message: Some(f.message),
        remote,
    }
}

fn other_error(message: String) -> OpError {
    OpError::new(ErrorKind::Other, message)
}

/// Records one asynchronous peer event (a call or notification a service received).
fn record_event(recorder: &Recorder, rec: &str, event: &str, raw: &Json) {
    let s = |k: &str| raw.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    match event {
        "call" => {
            let method = s("method");
            let args = raw
                .get("args")
                .cloned()
                .unwrap_or(Json::Object(Default::default()));
            recorder.record(rec, method.clone(), format!("{method} {args}"));
        }
        "notification" => {
            let pr = s("priority").to_lowercase();
            let et = s("event_type");
            let payload = raw.get("payload").cloned().unwrap_or(Json::Null);
            let v = if s("version").starts_with('1') { 1 } else { 2 };
            let key = format!("{pr}:{et}");
            let mut line = format!("{pr} {et} {payload} publisher={} v{v}", s("publisher_id"));
            if s("action") == "requeue" {
                line.push_str(" (requeued)");
                recorder.record(rec, format!("requeued:{key}"), line);
            } else {
                recorder.record(rec, key, line);
            }
        }
        _ => {}
    }
}

/// A call, cast or fanout through the peer.
#[derive(Debug)]
pub struct PeerCall<'a> {
    /// `call`, `cast` or `fanout`.
    pub op: &'a str,
    /// Target.
    pub target: &'a Target,
    /// Method.
    pub method: &'a str,
    /// Arguments.
    pub args: &'a serde_json::Map<String, Json>,
    /// Context.
    pub context: &'a serde_json::Map<String, Json>,
    /// Call timeout.
    pub timeout: Option<Duration>,
    /// Call monitor timeout.
    pub monitor: Option<Duration>,
}

impl Peer {
    /// Starts the peer; its services' deliveries go to `recorder`.
    pub async fn spawn(recorder: Arc<Recorder>, traffic: Arc<TrafficLog>) -> Result<Peer, String> {
        let peer = PythonPeer::spawn(PeerOptions::default())
            .await
            .map_err(|e| e.to_string())?;
        let peer = Arc::new(peer);
        let names: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(HashMap::new()));
        let (p2, n2) = (peer.clone(), names.clone());
        let pump = tokio::spawn(async move {
            while let Some(ev) = p2.next_event().await {
                let Some(svc) = ev.service.clone() else {
                    continue;
                };
                let rec = lock(&n2).get(&svc).cloned().unwrap_or(svc);
                let marked = match ev.event.as_str() {
                    "call" => ev
                        .raw
                        .get("args")
                        .is_some_and(|a| traffic.record(a, Kind::Call)),
                    "notification" => ev
                        .raw
                        .get("payload")
                        .is_some_and(|p| traffic.record(p, Kind::Notification)),
                    _ => false,
                };
                if !marked {
                    record_event(&recorder, &rec, &ev.event, &ev.raw);
                }
            }
        });
        Ok(Peer { peer, pump, names })
    }

    /// Starts `svc` in the peer on `url`.
    pub async fn start_service(
        &self,
        svc: &Service,
        url: &TransportUrl,
        config: &PeerConfig,
    ) -> Result<(), String> {
        lock(&self.names).insert(svc.name.clone(), svc.record_as.clone());
        let url = url.expose().expose().to_string();
        let request = match &svc.role {
            Role::RpcServer { target, endpoints } => Request::RpcServer {
                service: svc.name.clone(),
                url,
                target: target.into(),
                endpoints: endpoints.iter().map(endpoint_json).collect(),
                config: config.json.clone(),
            },
            Role::Listener {
                targets,
                priorities,
                priorities_named,
                pool,
                requeue,
            } => Request::Listener {
                service: svc.name.clone(),
                url,
                targets: targets.iter().map(TargetJson::from).collect(),
                requeue: *requeue,
                priorities: priorities_named.then(|| {
                    priorities
                        .iter()
                        .map(|p| p.as_lower().to_string())
                        .collect()
                }),
                pool: pool.clone(),
                config: config.json.clone(),
            },
        };
        self.peer
            .send_ok(&request)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// One call, cast or fanout from a service on `url`.
    pub async fn call(&self, url: &TransportUrl, c: &PeerCall<'_>) -> Result<Json, OpError> {
        let req = CallRequest {
            url: url.expose().expose().to_string(),
            target: c.target.into(),
            method: c.method.to_string(),
            args: c.args.clone(),
            ctxt: c.context.clone(),
            timeout: c.timeout.map(|t| t.as_secs_f64()),
            call_monitor_timeout: c.monitor.map(|m| m.as_secs().max(1)),
        };
        let request = match c.op {
            "cast" => Request::Cast(req),
            "fanout" => Request::Fanout(req),
            _ => Request::Call(req),
        };
        match self.peer.send(&request).await {
            Ok(reply) => match reply.into_result() {
                Ok(fields) => Ok(fields.get("result").cloned().unwrap_or(Json::Null)),
                Err(f) => Err(map_failure(*f)),
            },
            Err(e) => Err(other_error(e.to_string())),
        }
    }

    /// Sends `step.repeat` notifications through the Python notifier of service `from` on `url`
    /// (one notifier per service, driver and topics, made on first use).
    pub async fn notify(
        &self,
        url: &TransportUrl,
        from: &str,
        step: &Notify,
    ) -> Vec<Result<(), OpError>> {
        let driver = match step.version {
            driver::NotifyVersion::V1 => "v1",
            driver::NotifyVersion::V2 => "v2",
        };
        let publisher = step.publisher.clone().unwrap_or_else(|| from.to_string());
        let service = format!(
            "{from}:notifier:{driver}:{}:{publisher}",
            step.topics.join(",")
        );
        let create = Request::Notifier {
            service: service.clone(),
            url: url.expose().expose().to_string(),
            driver: driver.to_string(),
            topics: step.topics.clone(),
            publisher_id: publisher,
        };
        if let Err(e) = self.peer.send_ok(&create).await {
            let msg = e.to_string();
            if !msg.contains("already exists") {
                return vec![Err(other_error(msg)); step.repeat];
            }
        }
        let mut out = Vec::with_capacity(step.repeat.min(1024));
        for _ in 0..step.repeat {
            let req = Request::Notify {
                service: service.clone(),
                priority: step.priority.as_lower().to_string(),
                event_type: step.event_type.clone(),
                payload: step.payload.clone(),
                ctxt: step.context.clone(),
            };
            out.push(match self.peer.send(&req).await {
                Ok(reply) => reply.into_result().map(|_| ()).map_err(|f| map_failure(*f)),
                Err(e) => Err(other_error(e.to_string())),
            });
        }
        out
    }

    /// Stops the peer (its services with it).
    pub async fn stop(self) {
        self.pump.abort();
        match Arc::try_unwrap(self.peer) {
            Ok(p) => {
                let _ = p.stop().await;
            }
            Err(p) => {
                let _ = p.send(&Request::Stop {}).await;
            }
        }
    }
}
