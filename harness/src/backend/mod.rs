//! Broker backends: how a scenario's broker gets started.
//!
//! A [`Backend`] turns a [`BrokerSpec`] (what the scenario or the command line asks for) into a running
//! [`BrokerHandle`]: one [`BrokerNode`] per broker node, each with an AMQP URL and the fault operations the
//! runner's fault steps use (kill, restart, pause, drop connections).
//!
//! Three backends exist:
//! - [`embedded`]: the in-process `broker` crate (always available, fastest, supports every fault);
//! - [`process`]: real broker binaries found on `PATH`, configured from `templates/`;
//! - [`container`]: real brokers in docker containers.
//!
//! Contract for implementors:
//! - every listener binds to `127.0.0.1` only ([`free_port`] picks a port);
//! - [`Backend::start`] returns only once every node is ready ([`wait_ready`]: an AMQP Open succeeds);
//! - a node cleans up in its own `Drop` too (kill the process, remove the container), so a panic or an early
//!   return never leaves stray brokers behind; [`BrokerHandle::stop`] is the orderly path;
//! - errors that happen after the broker printed something carry its log tail ([`BackendError::Start`],
//!   [`BackendError::NotReady`]);
//! - a fault a backend cannot perform returns [`BackendError::Unsupported`]; the runner reports it.

pub mod container;
pub mod embedded;
pub mod process;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use futures::future::BoxFuture;

/// The broker products a scenario can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerKind {
    /// The embedded `broker` crate (flavours `qpidd`, `router`, `rabbitmq3`).
    Embedded,
    /// Apache Qpid C++ broker (`qpidd`).
    Qpidd,
    /// Apache Qpid Dispatch router (`qdrouterd`).
    Qdrouterd,
    /// RabbitMQ (3.x with the AMQP 1.0 plugin, or 4.x native AMQP 1.0).
    Rabbitmq,
    /// Apache ActiveMQ Artemis.
    Artemis,
}

impl BrokerKind {
    /// Every kind, in display order.
    pub const ALL: [BrokerKind; 5] = [
        BrokerKind::Embedded,
        BrokerKind::Qpidd,
        BrokerKind::Qdrouterd,
        BrokerKind::Rabbitmq,
        BrokerKind::Artemis,
    ];

    /// The lowercase name used in scenarios and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Qpidd => "qpidd",
            BrokerKind::Qdrouterd => "qdrouterd",
            BrokerKind::Rabbitmq => "rabbitmq",
            BrokerKind::Artemis => "artemis",
        }
    }

    /// The names accepted by [`FromStr`], for error messages and did-you-mean.
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|k| k.as_str()).collect()
    }
}

impl fmt::Display for BrokerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a broker kind or backend name is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{given}' (expected one of: {expected})")]
pub struct UnknownName {
    /// What was being parsed ("broker kind", "backend").
    pub what: &'static str,
    /// The name given.
    pub given: String,
    /// The accepted names, comma separated.
    pub expected: String,
}

impl FromStr for BrokerKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let k = match s.trim().to_ascii_lowercase().as_str() {
            "embedded" => BrokerKind::Embedded,
            "qpidd" | "qpid" => BrokerKind::Qpidd,
            "qdrouterd" | "router" | "dispatch" => BrokerKind::Qdrouterd,
            "rabbitmq" | "rabbit" => BrokerKind::Rabbitmq,
            "artemis" => BrokerKind::Artemis,
            _ => {
                return Err(UnknownName {
                    what: "broker kind",
                    given: s.to_string(),
                    expected: Self::names().join(", "),
                })
            }
        };
        Ok(k)
    }
}

/// The backends the harness knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// In-process embedded broker.
    Embedded,
    /// Local broker processes.
    Process,
    /// Docker containers.
    Container,
}

impl BackendKind {
    /// Every backend, in display order.
    pub const ALL: [BackendKind; 3] = [
        BackendKind::Embedded,
        BackendKind::Process,
        BackendKind::Container,
    ];

    /// The lowercase name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Embedded => "embedded",
            BackendKind::Process => "process",
            BackendKind::Container => "container",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "embedded" => Ok(BackendKind::Embedded),
            "process" | "local" => Ok(BackendKind::Process),
            "container" | "docker" => Ok(BackendKind::Container),
            _ => Err(UnknownName {
                what: "backend",
                given: s.to_string(),
                expected: "embedded, process, container".to_string(),
            }),
        }
    }
}

/// A SASL PLAIN user the broker must accept.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// User name.
    pub name: String,
    /// Password (never shown by `Debug`).
    pub password: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"***")
            .finish()
    }
}

/// What broker to start: the scenario's `broker:` section after command-line overrides.
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    /// The product.
    pub kind: BrokerKind,
    /// Flavour: for `embedded` one of `qpidd`, `router`, `rabbitmq3`; for real brokers a variant such as
    /// `rabbitmq3`/`rabbitmq4`; `None` means the backend's default.
    pub flavour: Option<String>,
    /// Product version (image tag or expected binary version); `None` means whatever is available.
    pub version: Option<String>,
    /// Number of nodes (>= 1). Several nodes form a failover list in the transport URL.
    pub nodes: usize,
    /// SASL PLAIN users; empty means anonymous access.
    pub users: Vec<User>,
    /// Serve AMQPS (TLS) with a generated certificate.
    pub tls: bool,
    /// Broker-specific configuration overrides, handed to the config templates as `overrides`.
    pub overrides: BTreeMap<String, String>,
    /// Container image to use instead of the default for `kind`.
    pub image: Option<String>,
    /// Root of the tera templates (`templates/`).
    pub templates_dir: PathBuf,
    /// Addressing mode the scenario expects the broker to support (`legacy`, `routable`, `rabbitmq`).
    pub addressing: Option<String>,
}

impl BrokerSpec {
    /// A one-node spec for `kind` with everything else defaulted.
    pub fn new(kind: BrokerKind, templates_dir: impl Into<PathBuf>) -> Self {
        BrokerSpec {
            kind,
            flavour: None,
            version: None,
            nodes: 1,
            users: Vec::new(),
            tls: false,
            overrides: BTreeMap::new(),
            image: None,
            templates_dir: templates_dir.into(),
            addressing: None,
        }
    }

    /// `kind` or `kind:flavour`, for messages.
    pub fn label(&self) -> String {
        match &self.flavour {
            Some(f) => format!("{}:{}", self.kind, f),
            None => self.kind.to_string(),
        }
    }
}

/// Errors from starting or operating brokers.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot run this broker kind here (binary missing, docker not answering...).
    #[error("backend '{backend}' cannot run {kind}: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Broker kind (and flavour).
        kind: String,
        /// Why not.
        reason: String,
    },
    /// The backend does not support an operation (for example pausing a node).
    #[error("backend '{backend}' does not support {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// The operation.
        what: String,
    },
    /// The broker failed to start; `log_tail` holds the last lines it printed.
    #[error("broker failed to start: {message}{}", fmt_tail(log_tail))]
    Start {
        /// What failed.
        message: String,
        /// Last lines of the broker's output (may be empty).
        log_tail: String,
    },
    /// The broker started but never accepted an AMQP Open in time.
    #[error("broker at {url} not ready: {reason}{}", fmt_tail(log_tail))]
    NotReady {
        /// The URL probed (credentials removed).
        url: String,
        /// The last error seen.
        reason: String,
        /// Last lines of the broker's output (may be empty).
        log_tail: String,
    },
    /// A fault operation on a running node failed.
    #[error("{op} on node '{node}' failed: {message}")]
    Fault {
        /// The operation (kill, restart, pause...).
        op: String,
        /// Node name.
        node: String,
        /// What went wrong.
        message: String,
    },
    /// Rendering a configuration template failed.
    #[error(transparent)]
    Template(#[from] crate::templates::TemplateError),
    /// An I/O error (spawning, writing config files...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn fmt_tail(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- broker log (last lines) ---\n{}", tail.trim_end())
    }
}

/// Keeps the last `n` lines of `log`, for [`BackendError`] log tails.
pub fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// One running broker node.
///
/// Implementations must be cheap to query (`url`, `counters`, `logs` do no I/O beyond reading buffers)
/// and must clean up in `Drop` as well as in [`BrokerNode::stop`].
pub trait BrokerNode: Send + Sync {
    /// Node name, stable within a run (`node0`, `node1`, ...).
    fn name(&self) -> &str;
    /// `amqp://[user:pass@]127.0.0.1:PORT` (`amqps://` with TLS). Contains credentials: never log it.
    fn url(&self) -> String;
    /// Product description for the transcript, without versions or ports (e.g. `embedded qpidd`).
    fn product(&self) -> String;
    /// Stop the node abruptly (SIGKILL, container kill, embedded shutdown). Idempotent.
    fn kill(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Start a killed (or running: kill first) node again on the same port and wait until it is ready.
    fn restart(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Freeze the node: it keeps its sockets but stops reading and writing (SIGSTOP, docker pause).
    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Undo [`BrokerNode::pause`].
    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Abruptly close every client connection while the node keeps running.
    fn drop_connections(&self) -> BoxFuture<'_, Result<(), BackendError>>;
    /// Broker-side counters (per node, per queue/address) as JSON, if the backend can read them.
    fn counters(&self) -> Option<serde_json::Value>;
    /// Everything the node logged so far (may be empty).
    fn logs(&self) -> String;
    /// Orderly shutdown. Idempotent; must not fail.
    fn stop(&self) -> BoxFuture<'_, ()>;
    /// PEM of the CA clients must trust when the node serves TLS with a certificate the backend made.
    fn ca_pem(&self) -> Option<String> {
        None
    }
}

impl fmt::Debug for dyn BrokerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerNode")
            .field("name", &self.name())
            .field("product", &self.product())
            .finish()
    }
}

/// The running broker of one scenario: one or more nodes.
pub struct BrokerHandle {
    /// The nodes, in order (`node0` first).
    pub nodes: Vec<Box<dyn BrokerNode>>,
}

impl fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.nodes.iter().map(|n| n.name()).collect();
        f.debug_struct("BrokerHandle")
            .field("nodes", &names)
            .finish()
    }
}

impl BrokerHandle {
    /// The transport URL clients use: every node as a failover host, in node order
    /// (`amqp://u:p@127.0.0.1:1,u:p@127.0.0.1:2`). Contains credentials: never log it.
    pub fn transport_url(&self) -> String {
        let mut scheme = "amqp";
        let mut hosts = Vec::new();
        for n in &self.nodes {
            let url = n.url();
            let (s, rest) = url.split_once("://").unwrap_or(("amqp", url.as_str()));
            scheme = if s == "amqps" { "amqps" } else { scheme };
            hosts.push(rest.trim_end_matches('/').to_string());
        }
        format!("{scheme}://{}/", hosts.join(","))
    }

    /// The node called `name`, or the node at index `name` parsed as a number.
    pub fn node(&self, name: &str) -> Option<&dyn BrokerNode> {
        if let Some(n) = self.nodes.iter().find(|n| n.name() == name) {
            return Some(n.as_ref());
        }
        name.parse::<usize>()
            .ok()
            .and_then(|i| self.nodes.get(i))
            .map(|n| n.as_ref())
    }

    /// Stop every node (orderly). Nodes also stop on drop; this waits for it.
    pub async fn stop(self) {
        for n in &self.nodes {
            n.stop().await;
        }
    }
}

/// A way of running brokers (embedded, process, container).
pub trait Backend: Send + Sync {
    /// `embedded`, `process` or `container`.
    fn name(&self) -> &'static str;
    /// Whether this backend can run `kind` on this machine; `Err` says why not (one short line).
    fn available(&self, kind: BrokerKind) -> Result<(), String>;
    /// Start the broker described by `spec`; returns once every node is ready.
    fn start<'a>(
        &'a self,
        spec: &'a BrokerSpec,
    ) -> BoxFuture<'a, Result<BrokerHandle, BackendError>>;
}

/// The backend implementation for `kind`.
pub fn backend(kind: BackendKind) -> Box<dyn Backend> {
    match kind {
        BackendKind::Embedded => Box::new(embedded::EmbeddedBackend),
        BackendKind::Process => Box::new(process::ProcessBackend::new()),
        BackendKind::Container => Box::new(container::ContainerBackend::default()),
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; there is a small race window, callers retry).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(l.local_addr()?.port())
}

/// Parts of an `amqp://` URL needed for probing.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProbeTarget {
    pub(crate) tls: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: Option<(String, String)>,
}

/// Parses the first host of `amqp[s]://[user[:pass]@]host[:port][,...][/vhost]` with the driver's
/// transport URL parser, so percent-encoded user names and passwords (as the nodes' `url()` writes
/// them) are decoded. `amqps` and `amqp+ssl` mean TLS (default port 5671).
pub(crate) fn parse_probe_url(url: &str) -> Result<ProbeTarget, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "URL has no scheme".to_string())?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "amqp" => false,
        "amqps" | "amqp+ssl" => true,
        other => return Err(format!("unsupported URL scheme '{other}'")),
    };
    let parsed = driver::url::TransportUrl::parse(&format!("amqp://{rest}"))
        .map_err(|e| format!("bad broker URL: {e}"))?;
    let first = parsed
        .hosts
        .first()
        .ok_or_else(|| "URL has no host".to_string())?;
    if first.host.is_empty() {
        return Err("URL has no host".to_string());
    }
    // The driver defaults to 5672; an amqps URL without a port means 5671.
    let authority = rest.split(['/', ',']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let explicit_port = hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.contains(']'));
    let port = if tls && !explicit_port {
        5671
    } else {
        first.port
    };
    let user = first.username.clone().map(|n| {
        let p = first
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        (n, p)
    });
    Ok(ProbeTarget {
        tls,
        host: first.host.clone(),
        port,
        user,
    })
}

/// Waits until an AMQP Open to `url` succeeds, polling, for at most `timeout`.
///
/// Plain `amqp://` URLs are probed with a full AMQP Open (SASL PLAIN when the URL carries credentials).
/// For `amqps://` the probe only checks that the TCP port accepts connections (the TLS setup is the
/// backend's business).
pub async fn wait_ready(url: &str, timeout: Duration) -> Result<(), String> {
    let target = parse_probe_url(url)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    let mut last_err = "no attempt made".to_string();
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!("timed out after {timeout:?}: {last_err}"));
        }
        match tokio::time::timeout(deadline - now, probe_once(&target)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last_err = e,
            Err(_) => last_err = "probe timed out".to_string(),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

async fn probe_once(t: &ProbeTarget) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", t.host, t.port))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    if t.tls {
        return Ok(());
    }
    let builder = fe2o3_amqp::Connection::builder()
        .container_id(format!("harness-probe-{}", uuid::Uuid::new_v4()))
        .hostname(Some(t.host.as_str()));
    let builder = match &t.user {
        Some((name, pass)) => builder.sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain {
            username: name.clone(),
            password: pass.clone(),
        }),
        None => builder,
    };
    let mut conn = builder
        .open_with_stream(stream)
        .await
        .map_err(|e| format!("AMQP open: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for k in BrokerKind::ALL {
            assert_eq!(k.as_str().parse::<BrokerKind>(), Ok(k));
        }
        assert!("qpid-cpp".parse::<BrokerKind>().is_err());
    }

    #[test]
    fn probe_url_parses_credentials_and_port() {
        let t = parse_probe_url("amqp://u:p@127.0.0.1:1234,x@y:5/vh").expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 1234, false));
        assert_eq!(t.user, Some(("u".into(), "p".into())));
        let t = parse_probe_url("amqps://localhost").expect("valid");
        assert_eq!((t.port, t.tls), (5671, true));
        assert!(parse_probe_url("http://x").is_err());
    }

    #[test]
    fn probe_url_percent_decodes_credentials() {
        let t = parse_probe_url("amqp://n%40v:p%3Aw%2Fd%25@127.0.0.1:5673/").expect("valid");
        assert_eq!(t.user, Some(("n@v".into(), "p:w/d%".into())));
        assert_eq!(t.port, 5673);
        let t = parse_probe_url("amqps://u:p@[::1]").expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 5671, true));
        let t = parse_probe_url("amqps://[::1]:5999").expect("valid");
        assert_eq!(t.port, 5999);
    }

    #[test]
    fn user_debug_hides_password() {
        let u = User {
            name: "a".into(),
            password: "s3cret".into(),
        };
        assert!(!format!("{u:?}").contains("s3cret"));
    }
}
