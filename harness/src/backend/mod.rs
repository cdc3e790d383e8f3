//! Broker backends: how a scenario's broker gets started.
//!
//! A [`Backend`] turns a [`BrokerSpec`] (what the scenario or the command line asks for) into a running
//! [`BrokerHandle`]: one [`BrokerNode`] per broker node, each with an AMQP URL and the fault operations the
//! runner's fault steps use (kill, restart, pause, drop connections).
//!
//! Three backends exist:
//! - [`embedded`]: the in-process `broker` crate (always available, fastest, supports every fault);
//! - [`process`]: real broker binaries found on `PATH`, configured from `templates/`;
//! - [`container`]: real brokers in containers (testcontainers).
//!
//! Shared by the process and container backends: [`config`] (one rendering of `templates/<kind>/`),
//! [`cleanup`] (what runs, and who removes it on Ctrl-C), and, for the process backend, [`discovery`]
//! (which executables run).
//!
//! Contract for implementors:
//! - every listener binds to `127.0.0.1` only ([`free_port`] picks a port);
//! - [`Backend::start`] returns only once every node is ready ([`probe::wait_ready`]: an AMQP Open succeeds);
//! - a node cleans up in its own `Drop` too (kill the process, remove the container), so a panic or an early
//!   return never leaves stray brokers behind; [`BrokerHandle::stop`] is the orderly path;
//! - errors that happen after the broker printed something carry its log tail ([`BackendError::Start`],
//!   [`BackendError::NotReady`]);
//! - a fault a backend cannot perform returns [`BackendError::Unsupported`]; the runner reports it.

pub mod cleanup;
pub mod config;
pub mod container;
pub mod discovery;
pub mod embedded;
pub mod probe;
pub mod process;

pub use probe::{wait_ready, Probe};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::brokers::{BrokerChoice, Flavour, Product, Version};

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

impl From<Product> for BrokerKind {
    fn from(p: Product) -> Self {
        match p {
            Product::Qpidd => BrokerKind::Qpidd,
            Product::Qdrouterd => BrokerKind::Qdrouterd,
            Product::Rabbitmq => BrokerKind::Rabbitmq,
            Product::Artemis => BrokerKind::Artemis,
        }
    }
}

impl From<BrokerKind> for BrokerChoice {
    /// The default choice of a kind: the default embedded flavour, or the product with no variant.
    fn from(k: BrokerKind) -> Self {
        let product = match k {
            BrokerKind::Embedded => return BrokerChoice::default(),
            BrokerKind::Qpidd => Product::Qpidd,
            BrokerKind::Qdrouterd => Product::Qdrouterd,
            BrokerKind::Rabbitmq => Product::Rabbitmq,
            BrokerKind::Artemis => Product::Artemis,
        };
        BrokerChoice::Real {
            product,
            distro: None,
            version: None,
        }
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

pub use crate::scenario::User;

/// What broker to start: the scenario's `broker:` section after command-line overrides, with the
/// backend's choice made ([`crate::plan`] is the only code that builds one from a scenario).
#[derive(Clone, Debug)]
pub struct BrokerSpec {
    /// Which broker: on the embedded backend always [`BrokerChoice::Embedded`].
    pub choice: BrokerChoice,
    /// Number of nodes (>= 1). Several nodes form a failover list in the transport URL.
    pub nodes: usize,
    /// SASL PLAIN users; empty means anonymous access.
    pub users: Vec<User>,
    /// Serve AMQPS (TLS) with a generated certificate.
    pub tls: bool,
    /// Broker-specific configuration overrides, handed to the config templates as `overrides`.
    pub overrides: BTreeMap<String, String>,
    /// Container image to use instead of the default for the choice.
    pub image: Option<String>,
    /// Root of the tera templates (`templates/`).
    pub templates_dir: PathBuf,
}

impl BrokerSpec {
    /// A one-node spec for `choice` with everything else defaulted.
    pub fn new(choice: BrokerChoice, templates_dir: impl Into<PathBuf>) -> Self {
        BrokerSpec {
            choice,
            nodes: 1,
            users: Vec::new(),
            tls: false,
            overrides: BTreeMap::new(),
            image: None,
            templates_dir: templates_dir.into(),
        }
    }

    /// What runs: the embedded broker or a product.
    pub fn kind(&self) -> BrokerKind {
        match &self.choice {
            BrokerChoice::Embedded(_) => BrokerKind::Embedded,
            BrokerChoice::Real { product, .. } => BrokerKind::from(*product),
        }
    }

    /// The embedded flavour, for the embedded broker.
    pub fn flavour(&self) -> Option<Flavour> {
        match &self.choice {
            BrokerChoice::Embedded(f) => Some(*f),
            BrokerChoice::Real { .. } => None,
        }
    }

    /// The product version asked for, if any.
    pub fn version(&self) -> Option<&Version> {
        match &self.choice {
            BrokerChoice::Real { version, .. } => version.as_ref(),
            BrokerChoice::Embedded(_) => None,
        }
    }

    /// The packaging variant asked for (`centos7`), if any.
    pub fn distro(&self) -> Option<&str> {
        match &self.choice {
            BrokerChoice::Real { distro, .. } => distro.as_deref(),
            BrokerChoice::Embedded(_) => None,
        }
    }

    /// `kind` or `kind:flavour`, for messages.
    pub fn label(&self) -> String {
        self.choice.label()
    }

    /// The first user's credentials, which clients use.
    pub fn client_user(&self) -> Option<&User> {
        self.users.first()
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
    /// The port the node listens on, on 127.0.0.1 (TLS or not, as the spec asked).
    fn port(&self) -> u16;
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
    /// A fault inside the broker (`broker_fault:`): only brokers with fault controls (the embedded
    /// broker) have them.
    fn broker_fault<'a>(
        &'a self,
        fault: &'a crate::scenario::BrokerFaultOp,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let what = format!("broker_fault {}", fault.label());
        Box::pin(async move { Err(BackendError::Unsupported { backend: "", what }) })
    }
    /// The user clients log in as when the scenario names none and the broker needs one (RabbitMQ 4.x
    /// wants a SASL layer, so its containers offer the image's default `guest`).
    fn default_user(&self) -> Option<User> {
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
    /// The transport URL clients use: every node as a failover host, in node order, with `user`'s
    /// credentials (else the first node's [`BrokerNode::default_user`]). TLS is switched on by the `ssl`
    /// option, as in oslo, so the scheme stays `amqp`.
    pub fn transport_url(&self, user: Option<&User>) -> driver::url::TransportUrl {
        let fallback = self.nodes.first().and_then(|n| n.default_user());
        let user = user.or(fallback.as_ref());
        let hosts = self
            .nodes
            .iter()
            .map(|n| {
                let mut h = driver::url::HostSpec::new("127.0.0.1", n.port());
                if let Some(u) = user {
                    h.username = Some(u.name.clone());
                    h.password = Some(u.password.clone());
                }
                h
            })
            .collect();
        driver::url::TransportUrl {
            hosts,
            ..driver::url::TransportUrl::default()
        }
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
    /// Whether this backend can run `spec` on this machine (its binary, its image); `Err` says why
    /// not (one short line).
    fn available(&self, spec: &BrokerSpec) -> Result<(), String>;
    /// The version of the product `spec` would run, when the backend can tell before starting it
    /// (the installed server's, an image's).
    fn detect_version(&self, _spec: &BrokerSpec) -> Option<Version> {
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_kind_follows_the_choice() {
        let spec = BrokerSpec::new(
            BrokerChoice::parse("rabbitmq:3.10").expect("choice"),
            "templates",
        );
        assert_eq!(spec.kind(), BrokerKind::Rabbitmq);
        assert_eq!(
            spec.version().map(ToString::to_string).as_deref(),
            Some("3.10")
        );
        let spec = BrokerSpec::new(BrokerChoice::parse("router").expect("choice"), "templates");
        assert_eq!(spec.kind(), BrokerKind::Embedded);
        assert_eq!(spec.flavour(), Some(Flavour::Router));
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
