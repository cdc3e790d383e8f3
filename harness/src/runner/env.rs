//! The messaging side of a run: the harness client's transports, the services, and the transport each
//! step sends from.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use driver::options::ReplyMode;
use driver::url::TransportUrl;
use driver::{Event, RpcServer, Transport};
use tokio::task::JoinHandle;

use super::check::OpError;
use super::record::{EventLog, Recorder};
use super::services::python::{Peer, PeerConfig};
use super::services::rust::{self as rust_svc, Listening, State};
use super::services::{render_config, TemplateInputs};
use super::traffic::{Sources, TrafficLog};
use crate::plan::{ClientPlan, RunPlan};
use crate::scenario::{ErrorKind, Role, Sender, Service, ServiceKind};

/// Where clients connect: filled in once the brokers run.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The RPC transport URL (every node as a failover host, the first user's credentials).
    pub url: TransportUrl,
    /// The notification broker's URL, when notifications have their own broker.
    pub notify_url: Option<TransportUrl>,
    /// The driver settings, with what the broker set-up added (TLS trust).
    pub client: ClientPlan,
    /// `[oslo_messaging_amqp]` options the harness added, for services rendered from templates.
    pub extra_options: std::collections::BTreeMap<String, String>,
}

/// A running service.
enum ServiceRt {
    Rpc {
        transport: Transport,
        server: RpcServer,
    },
    Listener {
        transport: Transport,
        listening: Listening,
    },
    /// Hosted by the Python peer; its transport URL.
    Python { url: TransportUrl },
}

/// Where a step's operation goes.
pub enum Via<'a> {
    /// A Rust driver transport.
    Rust(Transport),
    /// The Python peer, as the service on this URL.
    Python(&'a Peer, &'a TransportUrl),
}

impl std::fmt::Debug for Via<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Via::Rust(_) => "Via::Rust",
            Via::Python(..) => "Via::Python",
        })
    }
}

/// The running messaging side of a scenario.
pub struct Env {
    conn: Connection,
    client: Transport,
    /// The notifier's transport when notifications go to their own broker.
    notify_client: Option<Transport>,
    reply_clients: tokio::sync::Mutex<HashMap<ReplyMode, Transport>>,
    services: Vec<(String, ServiceRt)>,
    /// What services received.
    pub recorder: Arc<Recorder>,
    /// Marked traffic the services received.
    pub traffic_log: Arc<TrafficLog>,
    state: Arc<State>,
    events: Arc<EventLog>,
    event_tasks: Vec<JoinHandle<()>>,
    peer: Option<Peer>,
    notes: Vec<String>,
}

impl Env {
    /// What the broker said it is in its Open frame (product and version), when it said anything.
    pub fn peer_identity(&self) -> Option<crate::brokers::Identity> {
        let info = self.client.connection_info()?;
        let id =
            crate::brokers::Identity::from_open(info.product.as_deref(), info.version.as_deref());
        id.product.is_some().then_some(id)
    }

    /// The RPC transport URL clients use (credentials included: never print it).
    pub fn url(&self) -> &TransportUrl {
        &self.conn.url
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("services", &self.services.len())
            .finish()
    }
}

fn watch_events(source: String, t: &Transport, sink: Arc<EventLog>) -> JoinHandle<()> {
    let mut rx = t.events();
    tokio::spawn(async move {
        let mut was_down = false;
        loop {
            match rx.recv().await {
                Ok(Event::Connected { .. }) => {
                    if was_down {
                        sink.add(&source, "reconnected");
                    }
                    was_down = false;
                }
                Ok(Event::Disconnected { .. }) => {
                    was_down = true;
                    sink.add(&source, "disconnected");
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    })
}

async fn connect(cfg: driver::Config, who: &str) -> Result<Transport, String> {
    Transport::connect(cfg)
        .await
        .map_err(|e| format!("{who}: connect failed: {e}"))
}

impl Env {
    /// Connects the harness client and starts every service of `plan`.
    pub async fn start(plan: &RunPlan, conn: Connection) -> Result<Env, String> {
        let cfg = conn
            .client
            .config(conn.url.clone(), conn.notify_url.clone());
        let client = connect(cfg.clone(), "harness client").await?;
        let notify_client = match conn.client.notification_config(&cfg) {
            Some(n) => match connect(n, "harness client: notification transport").await {
                Ok(t) => Some(t),
                Err(e) => {
                    client.close().await;
                    return Err(e);
                }
            },
            None => None,
        };
        let events = Arc::new(EventLog::default());
        let mut event_tasks = vec![watch_events("client".into(), &client, events.clone())];
        if let Some(n) = &notify_client {
            event_tasks.push(watch_events("notifier".into(), n, events.clone()));
        }
        let mut env = Env {
            conn,
            client,
            notify_client,
            reply_clients: tokio::sync::Mutex::new(HashMap::new()),
            services: Vec::new(),
            recorder: Arc::new(Recorder::default()),
            traffic_log: Arc::new(TrafficLog::default()),
            state: Arc::new(State::default()),
            events,
            event_tasks,
            peer: None,
            notes: Vec::new(),
        };
        for svc in &plan.scenario.services {
            if let Err(e) = env.start_one(plan, svc).await {
                env.shutdown_quiet().await;
                return Err(e);
            }
        }
        Ok(env)
    }

    async fn start_one(&mut self, plan: &RunPlan, svc: &Service) -> Result<(), String> {
        if svc.kind == ServiceKind::PythonOslo {
            let rt = self
                .start_python(plan, svc)
                .await
                .map_err(|e| format!("service '{}' (python-oslo): {e}", svc.name))?;
            self.services.push((svc.name.clone(), rt));
            return Ok(());
        }
        match (self.start_rust(plan, svc).await, svc.expect_start_error) {
            (Err(e), Some(kind)) if e.kind == kind => {
                self.notes.push(format!(
                    "  {}: did not start, as expected: {kind}",
                    svc.name
                ));
                Ok(())
            }
            (Ok(_), Some(kind)) => Err(format!(
                "service '{}' started, but was expected to fail with {kind}",
                svc.name
            )),
            (Ok(rt), None) => {
                self.services.push((svc.name.clone(), rt));
                Ok(())
            }
            (Err(e), _) => Err(format!(
                "service '{}': [{}] {}",
                svc.name,
                e.kind,
                e.message.unwrap_or_default()
            )),
        }
    }

    fn service_url(&self, svc: &Service) -> TransportUrl {
        let mut url = self.conn.url.clone();
        if let Some(v) = &svc.vhost {
            url.virtual_host = Some(v.trim_start_matches('/').to_string());
        }
        url
    }

    /// The driver configuration of `svc`: rendered from its template, else the plan's settings.
    fn service_config(&self, plan: &RunPlan, svc: &Service) -> Result<driver::Config, OpError> {
        let url = self.service_url(svc);
        let Some(cfg) = &svc.config else {
            return Ok(self.conn.client.config(url, self.conn.notify_url.clone()));
        };
        let inputs = TemplateInputs {
            vars: &plan.vars,
            driver: &plan.scenario.driver,
            addressing: plan.scenario.broker.addressing,
            extra_options: &self.conn.extra_options,
        };
        let invalid = |m: String| OpError::new(ErrorKind::InvalidTarget, m);
        let mut ini = render_config(svc, cfg, &plan.templates_dir, &url, inputs)
            .map_err(|e| invalid(e.to_string()))?;
        if let Some(n) = &self.conn.notify_url {
            ini.push_str(&format!(
                "\n[oslo_messaging_notifications]\ntransport_url = {}\n",
                n.expose().expose()
            ));
        }
        driver::Config::from_ini_str(&ini, Path::new(&cfg.template))
            .map_err(|e| invalid(format!("{}: {e}", cfg.template)))
    }

    async fn start_rust(&mut self, plan: &RunPlan, svc: &Service) -> Result<ServiceRt, OpError> {
        let cfg = self.service_config(plan, svc)?;
        let refused = |e: driver::ConnectError| OpError::from_driver(&e);
        // A listener uses the notification transport (its own broker, when the scenario names one).
        let notify = match (&svc.role, &cfg.notifications.transport_url) {
            (Role::Listener { .. }, Some(_)) => self.conn.client.notification_config(&cfg),
            _ => None,
        };
        let transport = Transport::connect(notify.unwrap_or(cfg))
            .await
            .map_err(refused)?;
        self.event_tasks.push(watch_events(
            svc.name.clone(),
            &transport,
            self.events.clone(),
        ));
        let (rec, st) = (
            rust_svc::Sinks {
                recorder: self.recorder.clone(),
                traffic: self.traffic_log.clone(),
            },
            self.state.clone(),
        );
        match &svc.role {
            Role::RpcServer { target, endpoints } => {
                let spec = rust_svc::ServerSpec {
                    service: &svc.name,
                    record_as: &svc.record_as,
                    target,
                    endpoints,
                };
                match rust_svc::start_server(&transport, spec, rec, st).await {
                    Ok(server) => Ok(ServiceRt::Rpc { transport, server }),
                    Err(e) => {
                        transport.close().await;
                        Err(e)
                    }
                }
            }
            Role::Listener {
                targets,
                priorities,
                pool,
                requeue,
                ..
            } => {
                let spec = rust_svc::ListenerSpec {
                    record_as: &svc.record_as,
                    targets,
                    priorities,
                    pool: pool.as_deref(),
                    requeue: *requeue,
                };
                match rust_svc::start_listener(&transport, spec, rec).await {
                    Ok(listening) => Ok(ServiceRt::Listener {
                        transport,
                        listening,
                    }),
                    Err(e) => {
                        transport.close().await;
                        Err(e)
                    }
                }
            }
        }
    }

    async fn start_python(&mut self, plan: &RunPlan, svc: &Service) -> Result<ServiceRt, String> {
        if self.peer.is_none() {
            self.peer = Some(Peer::spawn(self.recorder.clone(), self.traffic_log.clone()).await?);
        }
        let peer = self.peer.as_ref().ok_or("python peer not running")?;
        let url = self.service_url(svc);
        let d = &plan.scenario.driver;
        let config = PeerConfig::new(
            &d.options,
            plan.scenario.broker.addressing,
            d.control_exchange.as_deref(),
        );
        peer.start_service(svc, &url, &config).await?;
        Ok(ServiceRt::Python { url })
    }

    /// Where an operation from `from` goes, with `reply_mode` for calls of the harness client.
    pub async fn via(
        &self,
        from: &Sender,
        reply_mode: Option<ReplyMode>,
    ) -> Result<Via<'_>, OpError> {
        if let Sender::Service(name) = from {
            for (n, rt) in &self.services {
                if n != name {
                    continue;
                }
                return match rt {
                    ServiceRt::Rpc { transport, .. } | ServiceRt::Listener { transport, .. } => {
                        Ok(Via::Rust(transport.clone()))
                    }
                    ServiceRt::Python { url } => match &self.peer {
                        Some(p) => Ok(Via::Python(p, url)),
                        None => Err(OpError::new(ErrorKind::Other, "python peer not running")),
                    },
                };
            }
        }
        let Some(mode) = reply_mode else {
            return Ok(Via::Rust(self.client.clone()));
        };
        let mut clients = self.reply_clients.lock().await;
        if let Some(t) = clients.get(&mode) {
            return Ok(Via::Rust(t.clone()));
        }
        // A client with another reply mode: the client's configuration with that mode.
        let mut cfg = self.client.config().clone();
        cfg.amqp.reply_mode = mode;
        let t = Transport::connect(cfg)
            .await
            .map_err(|e| OpError::from_driver(&e))?;
        // The task ends when the transport closes.
        drop(watch_events(
            format!("client[{mode}]"),
            &t,
            self.events.clone(),
        ));
        clients.insert(mode, t.clone());
        Ok(Via::Rust(t))
    }

    /// The transports and deadlines background traffic uses (the harness client's).
    pub fn traffic_sources(&self) -> Sources {
        Sources {
            rpc: self.client.clone(),
            notify: self.notifier_transport().clone(),
            call_deadline: Duration::from_secs(self.client.config().rpc_response_timeout),
        }
    }

    /// The transport notifications are sent on by the harness client.
    pub fn notifier_transport(&self) -> &Transport {
        self.notify_client.as_ref().unwrap_or(&self.client)
    }

    /// The driver events seen so far.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Transcript lines about service start-up (services that failed to start as expected).
    pub fn notes(&self) -> &[String] {
        &self.notes
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
                    listening,
                } => {
                    listening.stop.cancel();
                    let _ = tokio::time::timeout(Duration::from_secs(5), listening.task).await;
                    transport.close().await;
                }
                ServiceRt::Python { .. } => {}
            }
        }
        if let Some(p) = self.peer.take() {
            p.stop().await;
        }
        for (_, t) in self.reply_clients.lock().await.drain() {
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
        self.events.all()
    }
}
