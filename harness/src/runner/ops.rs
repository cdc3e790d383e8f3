//! Messaging operations of the runner on top of the `driver` crate: the harness client, Rust services
//! (RPC servers with scripted behaviours, notification listeners) and Python-peer services.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driver::{
    Config, Dispatcher, Endpoint, Event, NotificationListener, Notifier, NotifyVersion, Priority,
    RemoteError, RpcClient, RpcServer, Target, Transport,
};
use futures::StreamExt;
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::scenario::model::{Behaviour, NotifyStep, Service, ServiceKind, TargetSpec};
use crate::scenario::validate::parse_duration;
use crate::scenario::Loaded;

/// One delivery received by a service.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable transcript line.
    pub line: String,
    /// Method name (RPC) or `priority:event_type` (notifications), for `expect.received`.
    pub key: String,
}

/// State shared between services and the runner.
#[derive(Debug, Default)]
pub struct Shared {
    /// Deliveries per service, in arrival order.
    pub deliveries: BTreeMap<String, Vec<Delivery>>,
    /// Stateful behaviours' state per service and method group.
    pub state: BTreeMap<String, Json>,
    /// `[oslo_messaging_amqp]` options the harness adds for every client and service.
    pub extra_options: BTreeMap<String, String>,
    /// `[oslo_messaging_notifications] transport_url` for every client and service, when the
    /// scenario names a `notification_broker` (mixed topologies such as devstack's qpid-dual).
    pub notification_url: Option<String>,
}

fn record(shared: &Mutex<Shared>, service: &str, key: String, line: String) {
    let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
    sh.deliveries
        .entry(service.to_string())
        .or_default()
        .push(Delivery { line, key });
}

/// A failed operation, reduced to what steps check.
#[derive(Debug, Clone)]
pub struct OpError {
    /// `timed_out`, `remote`, `delivery_failed`, `disconnected`, `invalid_target`, `refused`, `closed`.
    pub kind: String,
    /// Broker condition, when the broker refused something.
    pub condition: Option<String>,
    /// Message (remote exception message or broker description).
    pub message: Option<String>,
    /// Remote exception `(class, module)`.
    pub remote: Option<(String, String)>,
}

macro_rules! op_error {
    ($e:expr) => {{
        let e = $e;
        OpError {
            kind: e.kind().as_str().to_string(),
            condition: e.condition().map(str::to_string),
            message: e
                .remote()
                .map(|r| r.message.clone())
                .or_else(|| e.description().map(str::to_string))
                .or_else(|| e.detail().map(str::to_string)),
            remote: e.remote().map(|r| (r.class.clone(), r.module.clone())),
        }
    }};
}

/// A running service.
enum ServiceRt {
    Rpc {
        transport: Transport,
        server: RpcServer,
    },
    Listener {
        transport: Transport,
        stop: CancellationToken,
        task: JoinHandle<()>,
    },
    /// Hosted by the Python oslo.messaging peer; `url` is the service's transport URL.
    Python { url: String },
}

/// The running messaging side of a scenario.
pub struct Env {
    client: Transport,
    /// The notifier's transport when notifications go to their own broker.
    notify_client: Option<Transport>,
    url: String,
    extra_clients: tokio::sync::Mutex<HashMap<String, Transport>>,
    services: Vec<(String, ServiceRt)>,
    events: Arc<Mutex<BTreeSet<(String, String)>>>,
    event_tasks: Vec<JoinHandle<()>>,
    peer: Option<python::Peer>,
    notes: Vec<String>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("services", &self.services.len())
            .finish()
    }
}

fn to_target(t: &TargetSpec, fanout: bool) -> Target {
    let mut target = Target::topic(t.topic.clone());
    target.exchange = t.exchange.clone();
    target.server = t.server.clone();
    target.version = t.version.clone();
    target.namespace = t.namespace.clone();
    target.fanout = fanout;
    target
}

async fn connect(ini: &str, origin: &str) -> Result<Transport, String> {
    let cfg = Config::from_ini_str(ini, Path::new(origin)).map_err(|e| format!("{origin}: {e}"))?;
    Transport::connect(cfg)
        .await
        .map_err(|e| format!("{origin}: connect failed: {e}"))
}

/// `ini` with `[oslo_messaging_notifications] transport_url` appended when notifications have
/// their own broker.
fn with_notification_url(mut ini: String, url: Option<&str>) -> String {
    if let Some(u) = url {
        if !ini.ends_with('\n') {
            ini.push('\n');
        }
        ini.push_str(&format!(
            "\n[oslo_messaging_notifications]\ntransport_url = {u}\n"
        ));
    }
    ini
}

/// The notification transport of a configuration (what oslo's `get_notification_transport` does):
/// `[oslo_messaging_notifications] transport_url` and its query options, or `None` when unset.
async fn connect_notifications(ini: &str, origin: &str) -> Result<Option<Transport>, String> {
    let cfg = Config::from_ini_str(ini, Path::new(origin)).map_err(|e| format!("{origin}: {e}"))?;
    let Some(url) = cfg.notifications.transport_url.clone() else {
        return Ok(None);
    };
    let mut n = cfg.clone();
    n.amqp = cfg
        .notification_options()
        .map_err(|e| format!("{origin}: notification transport options: {e}"))?;
    n.transport_url = url;
    n.notifications.transport_url = None;
    Transport::connect(n)
        .await
        .map(Some)
        .map_err(|e| format!("{origin}: notification transport: connect failed: {e}"))
}

fn watch_events(
    source: String,
    t: &Transport,
    sink: Arc<Mutex<BTreeSet<(String, String)>>>,
) -> JoinHandle<()> {
    let mut rx = t.events();
    tokio::spawn(async move {
        let mut was_down = false;
        loop {
            match rx.recv().await {
                Ok(Event::Connected { .. }) => {
                    if was_down {
                        if let Ok(mut s) = sink.lock() {
                            s.insert((source.clone(), "reconnected".into()));
                        }
                    }
                    was_down = false;
                }
                Ok(Event::Disconnected { .. }) => {
                    was_down = true;
                    if let Ok(mut s) = sink.lock() {
                        s.insert((source.clone(), "disconnected".into()));
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    })
}

fn behaviour_handler(
    service: String,
    rec: String,
    method: String,
    b: Behaviour,
    shared: Arc<Mutex<Shared>>,
) -> impl Fn(
    driver::Map,
    driver::Map,
) -> futures::future::BoxFuture<'static, Result<Json, RemoteError>>
       + Send
       + Sync
       + 'static {
    let b = Arc::new(b);
    move |_ctx, args| {
        let (service, rec, method, b, shared) = (
            service.clone(),
            rec.clone(),
            method.clone(),
            b.clone(),
            shared.clone(),
        );
        Box::pin(async move {
            record(
                &shared,
                &rec,
                method.clone(),
                format!("{method} {}", Json::Object(args.clone())),
            );
            if let Some(d) = b.sleep.as_deref().and_then(|d| parse_duration(d).ok()) {
                tokio::time::sleep(d).await;
            }
            if let Some(r) = &b.raise {
                let msg = r
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("{method} failed"));
                return Err(RemoteError::new(
                    r.class.clone(),
                    r.module.clone().unwrap_or_else(|| "builtins".into()),
                    msg,
                ));
            }
            if let Some(v) = &b.returns {
                return Ok(v.clone());
            }
            if b.whoami {
                return Ok(Json::String(service.clone()));
            }
            if let Some(op) = &b.state {
                let mut sh = shared.lock().unwrap_or_else(|p| p.into_inner());
                let st = sh
                    .state
                    .entry(service.clone())
                    .or_insert_with(|| serde_json::json!({"list": [], "sum": 0, "count": 0}));
                if let Some(c) = st.get_mut("count") {
                    *c = Json::from(c.as_i64().unwrap_or(0) + 1);
                }
                let value = args.get("value").cloned().unwrap_or(Json::Null);
                return Ok(match op.as_str() {
                    "append" => {
                        if let Some(Json::Array(l)) = st.get_mut("list") {
                            l.push(value);
                        }
                        st.get("list").cloned().unwrap_or(Json::Null)
                    }
                    "add" => {
                        let sum = st.get("sum").and_then(Json::as_i64).unwrap_or(0)
                            + value.as_i64().unwrap_or(0);
                        st["sum"] = Json::from(sum);
                        Json::from(sum)
                    }
                    "count" => st.get("count").cloned().unwrap_or(Json::Null),
                    _ => st.get("list").cloned().unwrap_or(Json::Null),
                });
            }
            Ok(Json::Object(args))
        })
    }
}

/// `url` with its path replaced by `/vhost`.
pub fn with_vhost(url: &str, vhost: &str) -> String {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let end = url[start..]
        .find('/')
        .map(|i| start + i)
        .unwrap_or(url.len());
    format!("{}/{}", &url[..end], vhost.trim_start_matches('/'))
}

fn priority(s: &str) -> Priority {
    s.parse::<Priority>().unwrap_or(Priority::Info)
}

impl Env {
    /// Connects the harness client and starts every service.
    pub async fn start(
        loaded: &Loaded,
        url: &str,
        templates: &Path,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<Env, String> {
        let events = Arc::new(Mutex::new(BTreeSet::new()));
        let extra = shared
            .lock()
            .map(|s| s.extra_options.clone())
            .unwrap_or_default();
        let notification_url = shared.lock().ok().and_then(|s| s.notification_url.clone());
        let ini = with_notification_url(
            super::base_ini(loaded, url, None, &extra),
            notification_url.as_deref(),
        );
        let client = connect(&ini, "harness-client.conf").await?;
        let notify_client = match connect_notifications(&ini, "harness-client.conf").await {
            Ok(n) => n,
            Err(e) => {
                client.close().await;
                return Err(e);
            }
        };
        let mut event_tasks = vec![watch_events("client".into(), &client, events.clone())];
        if let Some(n) = &notify_client {
            event_tasks.push(watch_events("notifier".into(), n, events.clone()));
        }
        let mut env = Env {
            event_tasks,
            client,
            notify_client,
            url: url.to_string(),
            extra_clients: tokio::sync::Mutex::new(HashMap::new()),
            services: Vec::new(),
            events,
            peer: None,
            notes: Vec::new(),
        };
        for svc in &loaded.scenario.services {
            if svc.kind == ServiceKind::PythonOslo {
                let r = env.start_python_service(loaded, svc, shared.clone()).await;
                match r {
                    Ok(rt) => env.services.push((svc.name.clone(), rt)),
                    Err(e) => {
                        env.shutdown_quiet().await;
                        return Err(format!("service '{}' (python-oslo): {e}", svc.name));
                    }
                }
                continue;
            }
            let started = env
                .start_service(loaded, svc, templates, shared.clone())
                .await;
            match (started, &svc.expect_start_error) {
                (Err(e), Some(kind)) if e.contains(&format!("[{kind}]")) => {
                    env.notes.push(format!(
                        "  {}: did not start, as expected: {kind}",
                        svc.name
                    ));
                }
                (Ok(_), Some(kind)) => {
                    env.shutdown_quiet().await;
                    return Err(format!(
                        "service '{}' started, but was expected to fail with {kind}",
                        svc.name
                    ));
                }
                (Ok(rt), None) => env.services.push((svc.name.clone(), rt)),
                (Err(e), _) => {
                    env.shutdown_quiet().await;
                    return Err(format!("service '{}': {e}", svc.name));
                }
            }
        }
        Ok(env)
    }

    async fn start_service(
        &mut self,
        loaded: &Loaded,
        svc: &Service,
        templates: &Path,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<ServiceRt, String> {
        let url = match &svc.vhost {
            Some(v) => with_vhost(&self.url, v),
            None => self.url.clone(),
        };
        let extra = shared
            .lock()
            .map(|s| s.extra_options.clone())
            .unwrap_or_default();
        let ini = match &svc.config {
            Some(cfg) => super::render_service_config(loaded, svc, cfg, templates, &url, &extra)
                .map_err(|e| e.to_string())?,
            None => super::base_ini(loaded, &url, None, &extra),
        };
        let notification_url = shared.lock().ok().and_then(|s| s.notification_url.clone());
        let ini = with_notification_url(ini, notification_url.as_deref());
        let origin = format!("{}.conf", svc.name);
        // A listener uses the notification transport (its own broker, when the scenario names one).
        let transport = match svc.listener {
            Some(_) => match connect_notifications(&ini, &origin).await? {
                Some(t) => t,
                None => connect(&ini, &origin).await?,
            },
            None => connect(&ini, &origin).await?,
        };
        self.event_tasks.push(watch_events(
            svc.name.clone(),
            &transport,
            self.events.clone(),
        ));
        let rec = svc.record_as.clone().unwrap_or_else(|| svc.name.clone());
        if let Some(r) = &svc.rpc_server {
            let mut dispatcher = Dispatcher::new();
            for ep in &r.endpoints {
                let mut e = Endpoint::new();
                if let Some(ns) = &ep.namespace {
                    e = e.namespace(ns.clone());
                }
                if let Some(v) = &ep.version {
                    e = e.version(v.clone());
                }
                for (m, b) in &ep.methods {
                    e = e.method(
                        m.clone(),
                        behaviour_handler(
                            svc.name.clone(),
                            rec.clone(),
                            m.clone(),
                            b.clone(),
                            shared.clone(),
                        ),
                    );
                }
                dispatcher = dispatcher.endpoint(e);
            }
            let server = RpcServer::start(&transport, to_target(&r.target, false), dispatcher)
                .await
                .map_err(|e| format!("RPC server did not start: [{}] {e}", e.kind().as_str()))?;
            return Ok(ServiceRt::Rpc { transport, server });
        }
        if let Some(l) = &svc.listener {
            let targets: Vec<Target> = l.targets.iter().map(|t| to_target(t, false)).collect();
            let prios: Vec<Priority> = if l.priorities.is_empty() {
                Priority::ALL.to_vec()
            } else {
                l.priorities.iter().map(|p| priority(p)).collect()
            };
            let mut listener =
                NotificationListener::start(&transport, targets, prios, l.pool.clone())
                    .await
                    .map_err(|e| {
                        format!(
                            "notification listener did not start: [{}] {e}",
                            e.kind().as_str()
                        )
                    })?;
            let stop = CancellationToken::new();
            let stop2 = stop.clone();
            let name = rec.clone();
            let requeue = l.requeue;
            let task = tokio::spawn(async move {
                let mut requeued = 0usize;
                loop {
                    tokio::select! {
                        _ = stop2.cancelled() => break,
                        n = listener.recv() => {
                            let Some(n) = n else { break };
                            let nt = &n.notification;
                            let v = match n.version { NotifyVersion::V1 => 1, NotifyVersion::V2 => 2 };
                            let key = format!("{}:{}", nt.priority.as_lower(), nt.event_type);
                            let mut line = format!("{} {} {} publisher={} v{v}", nt.priority.as_lower(), nt.event_type, nt.payload, nt.publisher_id);
                            if requeued < requeue {
                                requeued += 1;
                                line.push_str(" (requeued)");
                                record(&shared, &name, format!("requeued:{key}"), line);
                                n.requeue().await;
                            } else {
                                record(&shared, &name, key, line);
                                n.ack().await;
                            }
                        }
                    }
                }
                listener.stop().await;
            });
            return Ok(ServiceRt::Listener {
                transport,
                stop,
                task,
            });
        }
        Err("neither rpc_server nor listener".into())
    }

    async fn transport_for(
        &self,
        from: Option<&str>,
        reply_mode: Option<&str>,
    ) -> Result<Transport, OpError> {
        if let Some(name) = from {
            for (n, rt) in &self.services {
                if n == name {
                    return match rt {
                        ServiceRt::Rpc { transport, .. }
                        | ServiceRt::Listener { transport, .. } => Ok(transport.clone()),
                        ServiceRt::Python { .. } => Err(OpError {
                            kind: "invalid_target".into(),
                            condition: None,
                            message: Some(format!("service '{name}' is a python-oslo service")),
                            remote: None,
                        }),
                    };
                }
            }
        }
        let Some(mode) = reply_mode else {
            return Ok(self.client.clone());
        };
        let mut extra = self.extra_clients.lock().await;
        if let Some(t) = extra.get(mode) {
            return Ok(t.clone());
        }
        // A client with a different reply mode: the client's configuration with reply_mode set.
        let mut cfg = self.client.config().clone();
        cfg.amqp.set("reply_mode", mode).map_err(|e| OpError {
            kind: "invalid_target".into(),
            condition: None,
            message: Some(e.to_string()),
            remote: None,
        })?;
        let t = Transport::connect(cfg).await.map_err(|e| OpError {
            kind: "refused".into(),
            condition: e.condition().map(str::to_string),
            message: Some(e.to_string()),
            remote: None,
        })?;
        self.event_tasks_push(&t, format!("client[{mode}]"));
        extra.insert(mode.to_string(), t.clone());
        Ok(t)
    }

    fn event_tasks_push(&self, t: &Transport, name: String) {
        // Tasks end when the transport closes; they are not joined.
        drop(watch_events(name, t, self.events.clone()));
    }

    /// Transcript lines about service start-up (services that failed to start as expected).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Makes `n` calls, `conc` at a time.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        from: Option<&str>,
        target: &TargetSpec,
        method: &str,
        args: &serde_json::Map<String, Json>,
        context: &serde_json::Map<String, Json>,
        timeout: Option<Duration>,
        monitor: Option<Duration>,
        reply_mode: Option<&str>,
        n: usize,
        conc: usize,
    ) -> Vec<Result<Json, OpError>> {
        if let Some(r) = self
            .python_call(
                from, target, method, args, context, timeout, monitor, "call", n,
            )
            .await
        {
            return r;
        }
        let transport = match self.transport_for(from, reply_mode).await {
            Ok(t) => t,
            Err(e) => return vec![Err(e); n],
        };
        let mut client = RpcClient::new(&transport, to_target(target, false));
        if let Some(t) = timeout {
            client = client.timeout(t);
        }
        if let Some(m) = monitor {
            client = client.call_monitor_timeout(m);
        }
        let client = &client;
        futures::stream::iter(0..n)
            .map(|_| async move {
                client
                    .call(context.clone(), method, args.clone())
                    .await
                    .map_err(|e| op_error!(e))
            })
            .buffer_unordered(conc.max(1))
            .collect()
            .await
    }

    /// Sends `n` casts (fanout when asked).
    #[allow(clippy::too_many_arguments)]
    pub async fn cast(
        &self,
        from: Option<&str>,
        target: &TargetSpec,
        method: &str,
        args: &serde_json::Map<String, Json>,
        context: &serde_json::Map<String, Json>,
        fanout: bool,
        n: usize,
    ) -> Vec<Result<(), OpError>> {
        let op = if fanout { "fanout" } else { "cast" };
        if let Some(r) = self
            .python_call(from, target, method, args, context, None, None, op, n)
            .await
        {
            return r.into_iter().map(|x| x.map(|_| ())).collect();
        }
        let transport = match self.transport_for(from, None).await {
            Ok(t) => t,
            Err(e) => return vec![Err(e); n],
        };
        let client = RpcClient::new(&transport, to_target(target, fanout));
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                client
                    .cast(context.clone(), method, args.clone())
                    .await
                    .map_err(|e| op_error!(e)),
            );
        }
        out
    }

    /// Sends `n` notifications to `topics`.
    pub async fn notify(
        &self,
        step: &NotifyStep,
        topics: &[String],
        n: usize,
    ) -> Vec<Result<(), OpError>> {
        if let Some(from) = step.from.as_deref() {
            if let (Some(url), Some(peer)) = (self.python_url(from), self.peer.as_ref()) {
                return peer.notify(&url, from, step, topics, n).await;
            }
        }
        let version = if step.version == Some(1) {
            NotifyVersion::V1
        } else {
            NotifyVersion::V2
        };
        let notifier = Notifier::new(
            self.notify_client.as_ref().unwrap_or(&self.client),
            step.publisher.clone().unwrap_or_else(|| "harness".into()),
        )
        .topics(topics.iter().cloned())
        .version(version);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                notifier
                    .notify(
                        step.context.clone(),
                        &step.event_type,
                        priority(&step.priority),
                        step.payload.clone(),
                    )
                    .await
                    .map_err(|e| op_error!(e)),
            );
        }
        out
    }

    async fn shutdown_quiet(&mut self) {
        for (_, rt) in self.services.drain(..) {
            match rt {
                ServiceRt::Rpc { transport, server } => {
                    server.stop().await;
                    transport.close().await;
                }
                ServiceRt::Listener {
                    transport,
                    stop,
                    task,
                } => {
                    stop.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
                    transport.close().await;
                }
                ServiceRt::Python { .. } => {}
            }
        }
        if let Some(p) = self.peer.take() {
            p.stop().await;
        }
        for (_, t) in self.extra_clients.lock().await.drain() {
            t.close().await;
        }
        if let Some(n) = self.notify_client.take() {
            n.close().await;
        }
        self.client.close().await;
        for t in self.event_tasks.drain(..) {
            t.abort();
        }
    }

    /// Stops services and transports; returns the driver events seen, as `(source, event)`.
    pub async fn shutdown(mut self) -> Vec<(String, String)> {
        self.shutdown_quiet().await;
        let ev = self
            .events
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        ev
    }
}

impl Env {
    fn python_url(&self, from: &str) -> Option<String> {
        self.services.iter().find_map(|(n, rt)| match rt {
            ServiceRt::Python { url } if n == from => Some(url.clone()),
            _ => None,
        })
    }

    async fn start_python_service(
        &mut self,
        loaded: &Loaded,
        svc: &Service,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<ServiceRt, String> {
        if self.peer.is_none() {
            self.peer = Some(python::Peer::spawn(shared).await?);
        }
        let peer = self.peer.as_ref().ok_or("python peer not running")?;
        let url = match &svc.vhost {
            Some(v) => with_vhost(&self.url, v),
            None => self.url.clone(),
        };
        let rec = svc.record_as.clone().unwrap_or_else(|| svc.name.clone());
        peer.start_service(loaded, svc, &rec, &url).await?;
        Ok(ServiceRt::Python { url })
    }

    /// Routes a call, cast or fanout from a python-oslo service through the peer, if `from` names one.
    #[allow(clippy::too_many_arguments)]
    async fn python_call(
        &self,
        from: Option<&str>,
        target: &TargetSpec,
        method: &str,
        args: &serde_json::Map<String, Json>,
        context: &serde_json::Map<String, Json>,
        timeout: Option<Duration>,
        monitor: Option<Duration>,
        op: &str,
        n: usize,
    ) -> Option<Vec<Result<Json, OpError>>> {
        let url = self.python_url(from?)?;
        let peer = self.peer.as_ref()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                peer.call(&url, target, method, args, context, timeout, monitor, op)
                    .await,
            );
        }
        Some(out)
    }
}

/// The Python oslo.messaging peer (`harness::peer`) as the host of `kind: python-oslo` services.
mod python {
    use super::*;
    use crate::peer::{PeerFailure, PeerOptions, PythonPeer};
    use serde_json::json;

    pub(super) struct Peer {
        peer: Arc<PythonPeer>,
        pump: JoinHandle<()>,
        names: Arc<Mutex<HashMap<String, String>>>,
    }

    fn other_error(message: String) -> OpError {
        OpError {
            kind: "other".into(),
            condition: None,
            message: Some(message),
            remote: None,
        }
    }

    fn target_json(t: &TargetSpec) -> Json {
        let mut m = serde_json::Map::new();
        m.insert("topic".into(), Json::String(t.topic.clone()));
        for (k, v) in [
            ("server", &t.server),
            ("exchange", &t.exchange),
            ("version", &t.version),
            ("namespace", &t.namespace),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), Json::String(v.clone()));
            }
        }
        Json::Object(m)
    }

    /// One endpoint in the harness scenario format, which the peer mirrors exactly.
    fn endpoint_json(ep: &crate::scenario::model::EndpointSpec) -> Json {
        let mut methods = serde_json::Map::new();
        for (name, b) in &ep.methods {
            methods.insert(name.clone(), behaviour_json(b));
        }
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
        if let Some(d) = &b.sleep {
            m.insert("sleep".into(), json!(d));
        }
        if b.echo {
            m.insert("echo".into(), json!(true));
        }
        if let Some(v) = &b.returns {
            m.insert("return".into(), v.clone());
        }
        if let Some(r) = &b.raise {
            m.insert(
                "raise".into(),
                json!({"class": r.class, "module": r.module, "message": r.message}),
            );
        }
        if let Some(st) = &b.state {
            m.insert("state".into(), json!(st));
        }
        if b.whoami {
            m.insert("whoami".into(), json!(true));
        }
        Json::Object(m)
    }

    fn config_json(loaded: &Loaded) -> Json {
        let d = &loaded.scenario.driver;
        let mut amqp = serde_json::Map::new();
        if let Some(a) = &loaded.scenario.broker.addressing {
            amqp.insert("addressing_mode".into(), Json::String(a.clone()));
        }
        for (k, v) in &d.options {
            amqp.insert(k.clone(), v.clone());
        }
        let mut default = serde_json::Map::new();
        if let Some(x) = &d.control_exchange {
            default.insert("control_exchange".into(), Json::String(x.clone()));
        }
        json!({"oslo_messaging_amqp": amqp, "DEFAULT": default})
    }

    fn map_failure(f: PeerFailure) -> OpError {
        let kind = match f.kind.as_str() {
            "timeout" => "timed_out",
            "delivery" => "delivery_failed",
            other => other,
        }
        .to_string();
        let remote = (f.kind == "remote").then(|| {
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

    impl Peer {
        pub(super) async fn spawn(shared: Arc<Mutex<Shared>>) -> Result<Peer, String> {
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
                    let rec = n2
                        .lock()
                        .ok()
                        .and_then(|m| m.get(&svc).cloned())
                        .unwrap_or(svc);
                    let raw = &ev.raw;
                    let s = |k: &str| raw.get(k).and_then(Json::as_str).unwrap_or("").to_string();
                    match ev.event.as_str() {
                        "call" => {
                            let method = s("method");
                            let args = raw
                                .get("args")
                                .cloned()
                                .unwrap_or(Json::Object(Default::default()));
                            record(&shared, &rec, method.clone(), format!("{method} {args}"));
                        }
                        "notification" => {
                            let pr = s("priority").to_lowercase();
                            let et = s("event_type");
                            let payload = raw.get("payload").cloned().unwrap_or(Json::Null);
                            let v = if s("version").starts_with('1') { 1 } else { 2 };
                            let key = format!("{pr}:{et}");
                            let mut line =
                                format!("{pr} {et} {payload} publisher={} v{v}", s("publisher_id"));
                            if s("action") == "requeue" {
                                line.push_str(" (requeued)");
                                record(&shared, &rec, format!("requeued:{key}"), line);
                            } else {
                                record(&shared, &rec, key, line);
                            }
                        }
                        _ => {}
                    }
                }
            });
            Ok(Peer { peer, pump, names })
        }

        pub(super) async fn start_service(
            &self,
            loaded: &Loaded,
            svc: &Service,
            rec: &str,
            url: &str,
        ) -> Result<(), String> {
            if let Ok(mut m) = self.names.lock() {
                m.insert(svc.name.clone(), rec.to_string());
            }
            let config = config_json(loaded);
            if let Some(r) = &svc.rpc_server {
                let endpoints: Vec<Json> = r.endpoints.iter().map(endpoint_json).collect();
                let req = json!({"service": svc.name, "url": url, "target": target_json(&r.target),
                                     "endpoints": endpoints, "config": config});
                self.peer
                    .request_ok("rpc_server", req)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            if let Some(l) = &svc.listener {
                let targets: Vec<Json> = l.targets.iter().map(target_json).collect();
                let mut req = json!({"service": svc.name, "url": url, "targets": targets,
                                     "requeue": l.requeue, "config": config});
                if !l.priorities.is_empty() {
                    req["priorities"] = json!(l.priorities);
                }
                if let Some(p) = &l.pool {
                    req["pool"] = json!(p);
                }
                self.peer
                    .request_ok("listener", req)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(());
            }
            Err("neither rpc_server nor listener".into())
        }

        #[allow(clippy::too_many_arguments)]
        pub(super) async fn call(
            &self,
            url: &str,
            target: &TargetSpec,
            method: &str,
            args: &serde_json::Map<String, Json>,
            context: &serde_json::Map<String, Json>,
            timeout: Option<Duration>,
            monitor: Option<Duration>,
            op: &str,
        ) -> Result<Json, OpError> {
            let mut req = json!({"url": url, "target": target_json(target), "method": method,
                                 "args": args, "ctxt": context});
            if let Some(t) = timeout {
                req["timeout"] = json!(t.as_secs_f64());
            }
            if let Some(m) = monitor {
                req["call_monitor_timeout"] = json!(m.as_secs().max(1));
            }
            match self.peer.request(op, req).await {
                Ok(reply) => match reply.into_result() {
                    Ok(fields) => Ok(fields.get("result").cloned().unwrap_or(Json::Null)),
                    Err(f) => Err(map_failure(*f)),
                },
                Err(e) => Err(other_error(e.to_string())),
            }
        }

        /// Sends `n` notifications through the Python oslo.messaging notifier of service `from`
        /// (one notifier per service, driver and topics, made on first use).
        pub(super) async fn notify(
            &self,
            url: &str,
            from: &str,
            step: &NotifyStep,
            topics: &[String],
            n: usize,
        ) -> Vec<Result<(), OpError>> {
            let driver = if step.version == Some(1) { "v1" } else { "v2" };
            let publisher = step.publisher.clone().unwrap_or_else(|| from.to_string());
            let service = format!("{from}:notifier:{driver}:{}:{publisher}", topics.join(","));
            let create = json!({"service": service, "url": url, "driver": driver,
                                "topics": topics, "publisher_id": publisher});
            if let Err(e) = self.peer.request_ok("notifier", create).await {
                let msg = e.to_string();
                if !msg.contains("already exists") {
                    return vec![Err(other_error(msg)); n];
                }
            }
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let req = json!({"service": service, "priority": step.priority,
                                 "event_type": step.event_type, "payload": step.payload,
                                 "ctxt": step.context});
                out.push(match self.peer.request("notify", req).await {
                    Ok(reply) => reply.into_result().map(|_| ()).map_err(|f| map_failure(*f)),
                    Err(e) => Err(other_error(e.to_string())),
                });
            }
            out
        }

        pub(super) async fn stop(self) {
            self.pump.abort();
            match Arc::try_unwrap(self.peer) {
                Ok(p) => {
                    let _ = p.stop().await;
                }
                Err(p) => {
                    let _ = p.request("stop", json!({})).await;
                }
            }
        }
    }
}
