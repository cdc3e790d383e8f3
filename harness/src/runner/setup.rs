//! Bringing up (and down) the brokers of a plan: the managed broker and notification broker, the
//! readiness check of a `--url` broker, and the TLS trust clients need for a broker the harness made.

use std::collections::BTreeMap;
use std::time::Duration;

use driver::url::TransportUrl;

use super::env::Connection;
use crate::backend::{self, BrokerHandle, BrokerSpec, Probe};
use crate::exit_code;
use crate::plan::{Placement, RunPlan};
use crate::transcript::Redactor;

/// How long a `--url` broker may take to answer an AMQP Open before the run gives up.
const URL_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of each node's log kept in the JSON report.
const REPORT_LOG_LINES: usize = 200;

/// Why the brokers could not be set up, with the exit code it gives.
#[derive(Debug, Clone)]
pub struct SetupError {
    /// The exit code.
    pub code: i32,
    /// What happened.
    pub message: String,
}

impl SetupError {
    fn broker(message: String) -> Self {
        SetupError {
            code: exit_code::BROKER_SETUP,
            message: format!("broker setup failed: {message}"),
        }
    }
}

/// The running brokers of one scenario.
pub struct Brokers {
    main: Option<BrokerHandle>,
    /// Latency proxies in front of the main broker's nodes, by node index (when the scenario delays traffic).
    proxies: Vec<super::netfault::LatencyProxy>,
    notifications: Option<BrokerHandle>,
    /// Keeps the CA file clients read for as long as the run lasts.
    _ca_file: Option<tempfile::NamedTempFile>,
}

impl std::fmt::Debug for Brokers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Brokers")
            .field("main", &self.main)
            .field("notifications", &self.notifications)
            .finish()
    }
}

async fn start_spec(
    backend: backend::BackendKind,
    spec: &BrokerSpec,
) -> Result<BrokerHandle, SetupError> {
    let b = backend::backend(backend);
    if let Err(why) = b.available(spec) {
        return Err(SetupError::broker(format!(
            "backend '{}' cannot run {}: {why}",
            b.name(),
            spec.label()
        )));
    }
    b.start(spec)
        .await
        .map_err(|e| SetupError::broker(e.to_string()))
}

impl Brokers {
    /// Starts what `plan` needs (nothing for `--url`, whose broker must answer an AMQP Open), and
    /// returns the brokers with the connection clients use.
    pub async fn start(plan: &RunPlan) -> Result<(Brokers, Connection), SetupError> {
        let mut conn = Connection {
            url: TransportUrl::default(),
            notify_url: None,
            client: plan.client.clone(),
            extra_options: BTreeMap::new(),
        };
        let (backend, spec) = match &plan.broker {
            Placement::External(url) => {
                let probe = Probe::first_host(url, conn.client.amqp.ssl)
                    .ok_or_else(|| SetupError::broker("the --url names no host".into()))?;
                backend::wait_ready(&probe, URL_READY_TIMEOUT)
                    .await
                    .map_err(|e| {
                        SetupError::broker(format!(
                            "the broker given with --url does not answer: {e}"
                        ))
                    })?;
                conn.url = url.clone();
                let brokers = Brokers {
                    main: None,
                    proxies: Vec::new(),
                    notifications: None,
                    _ca_file: None,
                };
                return Ok((brokers, conn));
            }
            Placement::Managed { backend, spec } => (*backend, spec),
        };
        let main = start_spec(backend, spec).await?;
        conn.url = main.transport_url(spec.client_user());
        let mut brokers = Brokers {
            main: Some(main),
            proxies: Vec::new(),
            notifications: None,
            _ca_file: None,
        };
        if plan.scenario.needs_latency_proxy() {
            if let Err(e) = brokers.put_proxies(&mut conn).await {
                brokers.stop().await;
                return Err(e);
            }
        }
        if spec.tls {
            if let Err(e) = brokers.trust_ca(&mut conn) {
                brokers.stop().await;
                return Err(e);
            }
        }
        if let Some(nspec) = &plan.notifications {
            match start_spec(backend, nspec).await {
                Ok(h) => {
                    conn.notify_url = Some(h.transport_url(nspec.client_user()));
                    brokers.notifications = Some(h);
                }
                Err(e) => {
                    brokers.stop().await;
                    return Err(SetupError::broker(format!(
                        "notification broker: {}",
                        e.message.trim_start_matches("broker setup failed: ")
                    )));
                }
            }
        }
        Ok((brokers, conn))
    }

    /// A TLS broker started here has a generated certificate: clients trust it through
    /// `ssl_ca_file`.
    fn trust_ca(&mut self, conn: &mut Connection) -> Result<(), SetupError> {
        let Some(pem) = self
            .main
            .as_ref()
            .and_then(|h| h.nodes.first())
            .and_then(|n| n.ca_pem())
        else {
            return Ok(());
        };
        let f = tempfile::NamedTempFile::new()
            .and_then(|f| std::fs::write(f.path(), pem).map(|()| f))
            .map_err(|e| SetupError {
                code: exit_code::INTERNAL,
                message: format!("cannot write the broker's CA certificate: {e}"),
            })?;
        let path = f.path().display().to_string();
        for amqp in std::iter::once(&mut conn.client.amqp).chain(conn.client.notify_amqp.as_mut()) {
            amqp.ssl = true;
            amqp.ssl_ca_file = path.clone();
        }
        conn.extra_options.insert("ssl".into(), "true".into());
        conn.extra_options.insert("ssl_ca_file".into(), path);
        self._ca_file = Some(f);
        Ok(())
    }

    /// Puts a latency proxy in front of every main node; clients connect through them.
    async fn put_proxies(&mut self, conn: &mut Connection) -> Result<(), SetupError> {
        let ports: Vec<u16> = self
            .main
            .iter()
            .flat_map(|h| h.nodes.iter().map(|n| n.port()))
            .collect();
        for (i, port) in ports.into_iter().enumerate() {
            let p = super::netfault::LatencyProxy::start(port)
                .await
                .map_err(|e| SetupError {
                    code: exit_code::INTERNAL,
                    message: format!("cannot start the latency proxy: {e}"),
                })?;
            if let Some(h) = conn.url.hosts.get_mut(i) {
                h.port = p.port;
            }
            self.proxies.push(p);
        }
        Ok(())
    }

    /// The latency proxy in front of node `i`, if the run has them.
    pub fn proxy(&self, i: usize) -> Option<&super::netfault::LatencyProxy> {
        self.proxies.get(i)
    }

    /// The main broker, when the harness started it.
    pub fn main(&self) -> Option<&BrokerHandle> {
        self.main.as_ref()
    }

    /// The last lines of every node's log (nodes without a log left out), redacted.
    pub fn logs(&self, redactor: &Redactor) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (prefix, h) in [("", &self.main), ("notifications-", &self.notifications)] {
            let Some(h) = h else { continue };
            for n in &h.nodes {
                let log = backend::log_tail(&n.logs(), REPORT_LOG_LINES);
                if !log.trim().is_empty() {
                    out.insert(format!("{prefix}{}", n.name()), redactor.redact(&log));
                }
            }
        }
        out
    }

    /// Stops every broker (and removes this run's network fault rules, if any are left).
    pub async fn stop(self) {
        super::netfault::remove_table();
        for h in [self.main, self.notifications].into_iter().flatten() {
            h.stop().await;
        }
    }
}
