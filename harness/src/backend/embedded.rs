//! Embedded backend: brokers from the in-process `broker` crate.
//!
//! Every node is a `broker::Broker` on its own 127.0.0.1 port. `kill` shuts the node down, `restart` starts
//! it again on the same port, `pause`/`resume` and `drop_connections` use the broker's fault hooks.
//!
//! Like the real brokers with oslo's non-durable messages, a restarted node has lost what its queues
//! held; the override `store: keep` makes restarts keep it, as a broker with a persistent store does
//! (what `harness soak` uses to show that nothing the broker acknowledged is lost).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use broker::{Broker, BrokerConfig, Flavour, TlsConfig};

use super::{Backend, BackendError, BoxFuture, BrokerHandle, BrokerKind, BrokerNode, BrokerSpec};

/// The embedded backend (always available).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedBackend;

fn config_for(spec: &BrokerSpec) -> Result<BrokerConfig, BackendError> {
    let fl = spec.flavour().ok_or_else(|| BackendError::Unavailable {
        backend: "embedded",
        kind: spec.label(),
        reason: "the embedded backend only runs the embedded broker".into(),
    })?;
    let mut cfg = BrokerConfig::for_flavour(fl);
    cfg.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    for u in &spec.users {
        cfg.users
            .push((u.name.clone(), u.password.expose().to_string()));
    }
    cfg.allow_anonymous = spec.users.is_empty();
    if spec.tls {
        let tls = TlsConfig::self_signed().map_err(|e| BackendError::Start {
            message: e.to_string(),
            log_tail: String::new(),
        })?;
        cfg.tls = Some(tls);
    }
    Ok(cfg)
}

impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn available(&self, spec: &BrokerSpec) -> Result<(), String> {
        match spec.kind() {
            BrokerKind::Embedded => Ok(()),
            other => Err(format!(
                "the embedded backend only runs 'embedded' brokers, not '{other}'"
            )),
        }
    }

    fn start<'a>(
        &'a self,
        spec: &'a BrokerSpec,
    ) -> BoxFuture<'a, Result<BrokerHandle, BackendError>> {
        Box::pin(async move {
            if let Err(reason) = self.available(spec) {
                return Err(BackendError::Unavailable {
                    backend: "embedded",
                    kind: spec.label(),
                    reason,
                });
            }
            let base = config_for(spec)?;
            let keep_store = keeps_store(spec)?;
            let mut nodes: Vec<Box<dyn BrokerNode>> = Vec::new();
            for i in 0..spec.nodes.max(1) {
                let mut cfg = base.clone();
                cfg.container_id = Some(format!("node{i}"));
                let broker = Broker::start(cfg.clone())
                    .await
                    .map_err(|e| BackendError::Start {
                        message: e.to_string(),
                        log_tail: String::new(),
                    })?;
                // Restarts reuse the same port.
                cfg.bind = broker.local_addr();
                nodes.push(Box::new(EmbeddedNode {
                    name: format!("node{i}"),
                    addr: broker.local_addr(),
                    config: cfg,
                    keep_store,
                    broker: Mutex::new(Some(broker)),
                }));
            }
            Ok(BrokerHandle { nodes })
        })
    }
}

/// The `store` override: `keep` (restarts keep queued messages) or `drop` (the default).
fn keeps_store(spec: &BrokerSpec) -> Result<bool, BackendError> {
    match spec.overrides.get("store").map(String::as_str) {
        None | Some("drop") => Ok(false),
        Some("keep") => Ok(true),
        Some(other) => Err(BackendError::Start {
            message: format!("override store: '{other}' is not one of: keep, drop"),
            log_tail: String::new(),
        }),
    }
}

/// One embedded broker node.
struct EmbeddedNode {
    name: String,
    addr: SocketAddr,
    config: BrokerConfig,
    /// Restarts keep what the queues held.
    keep_store: bool,
    broker: Mutex<Option<Broker>>,
}

impl EmbeddedNode {
    fn take(&self) -> Option<Broker> {
        self.broker.lock().ok().and_then(|mut b| b.take())
    }

    fn faults(&self) -> Option<broker::Faults> {
        self.broker
            .lock()
            .ok()
            .and_then(|b| b.as_ref().map(Broker::faults))
    }

    fn fault_err(&self, op: &str) -> BackendError {
        BackendError::Fault {
            op: op.into(),
            node: self.name.clone(),
            message: "the node is not running".into(),
        }
    }
}

impl BrokerNode for EmbeddedNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    fn product(&self) -> String {
        format!("embedded {}", self.config.flavour.as_str())
    }

    fn kill(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if let Some(b) = self.take() {
                b.faults().drop_connections();
                b.shutdown().await;
            }
            Ok(())
        })
    }

    fn restart(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let mut store = broker::Store::default();
            if let Some(b) = self.take() {
                store = b.shutdown_keeping_store().await;
                if !self.keep_store && store.messages() > 0 {
                    tracing::info!(
                        node = %self.name,
                        messages = store.messages(),
                        "restart drops the non-durable messages the queues held (override store: keep keeps them)"
                    );
                    store = broker::Store::default();
                }
            }
            let mut last = String::new();
            for _ in 0..50 {
                match Broker::start_with_store(self.config.clone(), &mut store).await {
                    Ok(b) => {
                        if let Ok(mut slot) = self.broker.lock() {
                            *slot = Some(b);
                        }
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(BackendError::Fault {
                op: "restart".into(),
                node: self.name.clone(),
                message: last,
            })
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let f = self.faults().ok_or_else(|| self.fault_err("pause"))?;
            f.pause(Duration::from_secs(3600));
            Ok(())
        })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let f = self.faults().ok_or_else(|| self.fault_err("resume"))?;
            f.resume();
            Ok(())
        })
    }

    fn drop_connections(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let f = self
                .faults()
                .ok_or_else(|| self.fault_err("drop_connections"))?;
            f.drop_connections();
            Ok(())
        })
    }

    fn broker_fault<'a>(
        &'a self,
        fault: &'a crate::scenario::BrokerFaultOp,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        use crate::scenario::BrokerFaultOp as F;
        Box::pin(async move {
            let f = self
                .faults()
                .ok_or_else(|| self.fault_err("broker_fault"))?;
            match fault {
                F::CloseLinks {
                    address,
                    times,
                    condition,
                    description,
                } => f.close_links(address, *times, condition, description),
                F::RefuseAttach {
                    address,
                    condition,
                    description,
                } => f.refuse_attach(address, condition, description),
                F::ReleaseNext(n) => f.release_next(*n),
                F::RejectNext(n) => f.reject_next(*n),
                F::ModifyNext {
                    count,
                    delivery_failed,
                    undeliverable_here,
                } => f.modify_next(*count, *delivery_failed, *undeliverable_here),
                F::WithholdCredit { address, duration } => {
                    // The step ends once the broker has drained the links it holds now (bounded:
                    // a pattern no producer matches yet holds the links attached later).
                    let before = f.links_without_credit();
                    f.withhold_credit(address, *duration);
                    let until = tokio::time::Instant::now() + Duration::from_secs(1);
                    while f.links_without_credit() == before && tokio::time::Instant::now() < until
                    {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                F::SlowConsumers {
                    address,
                    delay,
                    duration,
                } => f.slow_consumers(address, *delay, *duration),
                F::Clear => f.clear(),
            }
            Ok(())
        })
    }

    fn counters(&self) -> Option<serde_json::Value> {
        let b = self.broker.lock().ok()?;
        let c = b.as_ref()?.counters();
        serde_json::to_value(&c).ok()
    }

    fn logs(&self) -> String {
        String::new()
    }

    fn ca_pem(&self) -> Option<String> {
        self.config.tls.as_ref().map(|t| t.cert_pem.clone())
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(b) = self.take() {
                b.shutdown().await;
            }
        })
    }
}

/// `harness broker serve`: runs one embedded broker until Ctrl-C, printing its URL on one line.
pub async fn serve(
    flavour: Flavour,
    port: u16,
    users: &[String],
    tls: bool,
) -> Result<(), BackendError> {
    let mut spec = BrokerSpec::new(crate::brokers::BrokerChoice::Embedded(flavour), "templates");
    spec.tls = tls;
    for u in users {
        let (name, password) = u.split_once(':').ok_or_else(|| BackendError::Start {
            message: format!(
                "--user expects USER:PASSWORD, got '{}'",
                u.split(':').next().unwrap_or("")
            ),
            log_tail: String::new(),
        })?;
        spec.users.push(super::User {
            name: name.into(),
            password: password.into(),
        });
    }
    let mut cfg = config_for(&spec)?;
    cfg.bind = SocketAddr::from(([127, 0, 0, 1], port));
    let broker = Broker::start(cfg).await.map_err(|e| BackendError::Start {
        message: e.to_string(),
        log_tail: String::new(),
    })?;
    println!("{}", broker.url());
    let _ = tokio::signal::ctrl_c().await;
    broker.shutdown().await;
    Ok(())
}
