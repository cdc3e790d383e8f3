//! From a loaded scenario and the command line (or a matrix cell) to a [`RunPlan`]: which backend
//! starts which broker, what the broker is for the known-failure registry, and the driver settings of
//! the harness client. This is the only code that picks flavours and backends.

use std::path::PathBuf;

use driver::options::ReplyMode;
use driver::url::TransportUrl;
use driver::AmqpOptions;

use crate::backend::{self, BackendKind, BrokerSpec};
use crate::brokers::{BrokerChoice, Identity, Product, Version};
use crate::scenario::{BrokerReq, Loaded, Scenario};

/// What the command line (or a matrix cell) changes about a scenario's broker.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--backend`.
    pub backend: Option<BackendKind>,
    /// `--broker KIND[:FLAVOUR]`.
    pub broker: Option<BrokerChoice>,
    /// `--url`: a broker that is already running.
    pub url: Option<TransportUrl>,
    /// A matrix cell's `version:`.
    pub version: Option<Version>,
    /// A matrix cell's `image:`.
    pub image: Option<String>,
}

impl Overrides {
    /// Whether the run moves the scenario to another broker than its own.
    fn moves_broker(&self) -> bool {
        self.broker.is_some() || self.version.is_some()
    }
}

/// Where the broker comes from.
#[derive(Debug, Clone)]
pub enum Placement {
    /// Started (and stopped) by a backend.
    Managed {
        /// The backend.
        backend: BackendKind,
        /// What it starts.
        spec: BrokerSpec,
    },
    /// Already running (`--url`).
    External(TransportUrl),
}

/// The driver settings every client and service starts from.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// `[oslo_messaging_amqp]` for the RPC transport.
    pub amqp: AmqpOptions,
    /// `[oslo_messaging_amqp]` for the notification transport, when notifications have their own broker.
    pub notify_amqp: Option<AmqpOptions>,
    /// `[DEFAULT] control_exchange`.
    pub control_exchange: String,
    /// `[DEFAULT] rpc_response_timeout` in whole seconds (oslo's unit).
    pub rpc_response_timeout: u64,
}

impl ClientPlan {
    /// The driver configuration of a client of `url` (notifications to `notify_url` when given); the
    /// URL's query options apply on top, as in oslo (`--url` queries are checked when parsed).
    pub fn config(&self, url: TransportUrl, notify_url: Option<TransportUrl>) -> driver::Config {
        let mut amqp = self.amqp.clone();
        let _ = amqp.apply_query(&url);
        let mut cfg = driver::Config {
            transport_url: url,
            amqp,
            control_exchange: self.control_exchange.clone(),
            rpc_response_timeout: self.rpc_response_timeout,
            ..driver::Config::default()
        };
        cfg.notifications.transport_url = notify_url;
        cfg
    }

    /// The configuration of the notification transport of `cfg` (what oslo's
    /// `get_notification_transport` makes), or `None` when notifications use the RPC transport.
    pub fn notification_config(&self, cfg: &driver::Config) -> Option<driver::Config> {
        let url = cfg.notifications.transport_url.clone()?;
        let mut n = cfg.clone();
        n.transport_url = url;
        n.notifications.transport_url = None;
        n.amqp = self.notify_amqp.clone().unwrap_or_else(|| cfg.amqp.clone());
        n.amqp.ssl = cfg.amqp.ssl;
        n.amqp.ssl_ca_file = cfg.amqp.ssl_ca_file.clone();
        Some(n)
    }
}

/// Everything needed to run one scenario.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The scenario file as named.
    pub file: String,
    /// The scenario.
    pub scenario: Scenario,
    /// The variables in force (templates get them).
    pub vars: std::collections::BTreeMap<String, String>,
    /// The broker.
    pub broker: Placement,
    /// The notification broker, on the main broker's backend (never with `--url`).
    pub notifications: Option<BrokerSpec>,
    /// What the broker is, for the known-failure registry (refined from its Open properties at run time).
    pub identity: Identity,
    /// The broker as reports name it (`embedded:qpidd`, `process rabbitmq`, `url`).
    pub label: String,
    /// The per-broker snapshot variant (`embedded-router`), when the run moved the scenario to another broker.
    pub snapshot_variant: Option<String>,
    /// Driver settings.
    pub client: ClientPlan,
    /// Root of the templates.
    pub templates_dir: PathBuf,
}

impl RunPlan {
    /// The backend, for managed brokers.
    pub fn backend(&self) -> Option<BackendKind> {
        match &self.broker {
            Placement::Managed { backend, .. } => Some(*backend),
            Placement::External(_) => None,
        }
    }
}

/// Why a scenario cannot be planned (exit 4: the broker cannot be set up as asked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// Plans `loaded` with `o` applied.
pub fn plan(
    loaded: &Loaded,
    o: &Overrides,
    templates_dir: impl Into<PathBuf>,
) -> Result<RunPlan, PlanError> {
    let templates_dir = templates_dir.into();
    let sc = &loaded.scenario;
    let (broker, identity, label) = match &o.url {
        Some(url) => {
            // What the scenario says its broker is, until the broker's Open properties tell.
            let id = match &sc.broker.choice {
                BrokerChoice::Embedded(f) => Identity {
                    embedded: None,
                    ..Identity::embedded(*f)
                },
                c @ BrokerChoice::Real { version, .. } => Identity {
                    product: c.product(),
                    version: version.clone(),
                    embedded: None,
                },
            };
            (Placement::External(url.clone()), id, "url".to_string())
        }
        None => {
            let (backend, spec) = managed(&sc.broker, o, &templates_dir)?;
            let id = identity(backend, &spec);
            let label = match backend {
                BackendKind::Embedded => spec.label(),
                b => format!("{b} {}", spec.label()),
            };
            (Placement::Managed { backend, spec }, id, label)
        }
    };
    let notifications = match (&broker, &sc.notification_broker) {
        (Placement::Managed { backend, .. }, Some(nb)) => {
            let (_, spec) = managed(
                nb,
                &Overrides {
                    backend: Some(*backend),
                    ..Overrides::default()
                },
                &templates_dir,
            )?;
            Some(spec)
        }
        _ => None,
    };
    let client = client_plan(sc, notifications.as_ref(), &broker);
    let snapshot_variant = snapshot_variant(loaded, o, &broker, &templates_dir);
    Ok(RunPlan {
        file: loaded.file.clone(),
        scenario: sc.clone(),
        vars: loaded.vars.clone(),
        broker,
        notifications,
        identity,
        label,
        snapshot_variant,
        client,
        templates_dir,
    })
}

/// The broker choice after overrides: a `--broker` of the scenario's own product that names no
/// variant keeps the scenario's variant; a matrix version replaces the version.
fn choose(own: &BrokerChoice, o: &Overrides) -> BrokerChoice {
    let mut choice = match (&o.broker, own) {
        (
            Some(BrokerChoice::Real {
                product,
                distro: None,
                version: None,
            }),
            BrokerChoice::Real { product: mine, .. },
        ) if product == mine => own.clone(),
        (Some(c), _) => c.clone(),
        (None, _) => own.clone(),
    };
    if let (Some(v), BrokerChoice::Real { version, .. }) = (&o.version, &mut choice) {
        *version = Some(v.clone());
    }
    choice
}

fn managed(
    req: &BrokerReq,
    o: &Overrides,
    templates_dir: &std::path::Path,
) -> Result<(BackendKind, BrokerSpec), PlanError> {
    let mut choice = choose(&req.choice, o);
    let backend = match (o.backend, &choice) {
        (Some(b), _) => b,
        (None, BrokerChoice::Embedded(_)) => BackendKind::Embedded,
        (None, c) => {
            let spec = BrokerSpec::new(c.clone(), templates_dir);
            if backend::backend(BackendKind::Process)
                .available(&spec)
                .is_ok()
            {
                BackendKind::Process
            } else {
                BackendKind::Container
            }
        }
    };
    if backend == BackendKind::Embedded {
        if let BrokerChoice::Real {
            product, version, ..
        } = &choice
        {
            let f = product.mimic(version.as_ref()).ok_or_else(|| {
                PlanError(format!(
                    "the embedded broker does not mimic {product}; use --backend process or container"
                ))
            })?;
            choice = BrokerChoice::Embedded(f);
        }
    }
    let mut spec = BrokerSpec::new(choice, templates_dir);
    spec.nodes = req.nodes.max(1);
    spec.users = req.users.clone();
    spec.tls = req.tls;
    spec.overrides = req.overrides.clone();
    spec.image = o.image.clone().or_else(|| req.image.clone());
    Ok((backend, spec))
}

/// What a managed broker is: the embedded flavour's advertised product and version, else the product
/// with the version asked for or the one the backend finds (the installed server, the image tag).
pub fn identity(backend: BackendKind, spec: &BrokerSpec) -> Identity {
    if let Some(f) = spec.flavour() {
        return Identity::embedded(f);
    }
    Identity {
        product: spec.choice.product(),
        version: spec
            .version()
            .cloned()
            .or_else(|| backend::backend(backend).detect_version(spec)),
        embedded: None,
    }
}

fn client_plan(
    sc: &Scenario,
    notifications: Option<&BrokerSpec>,
    broker: &Placement,
) -> ClientPlan {
    let d = &sc.driver;
    let notify_amqp = sc.notification_broker.as_ref().map(|nb| {
        let mut amqp = d.amqp.clone();
        if let Some(a) = nb.addressing {
            amqp.addressing_mode = a;
        }
        // RabbitMQ 3.x refuses oslo's dynamic reply link, without which the driver sends nothing:
        // the notification transport uses a named reply queue there.
        let backend = match broker {
            Placement::Managed { backend, .. } => *backend,
            Placement::External(_) => BackendKind::Embedded,
        };
        if let Some(spec) = notifications {
            let id = identity(backend, spec);
            if id.product == Some(Product::Rabbitmq)
                && id.version.as_ref().map(Version::major) == Some(3)
            {
                amqp.reply_mode = ReplyMode::Named;
            }
        }
        amqp
    });
    ClientPlan {
        amqp: d.amqp.clone(),
        notify_amqp,
        control_exchange: d
            .control_exchange
            .clone()
            .unwrap_or_else(|| "openstack".into()),
        rpc_response_timeout: d
            .rpc_response_timeout
            .unwrap_or(crate::scenario::validate::DEFAULT_RPC_RESPONSE_TIMEOUT)
            .as_secs()
            .max(1),
    }
}

/// The per-broker snapshot variant (`embedded-router`, `rabbitmq-rabbitmq3`...) when the command line
/// moved the scenario to another broker kind or flavour; `None` for its own broker and for `--url`
/// runs. The backend is not part of it: transcripts do not depend on how a broker was started.
fn snapshot_variant(
    loaded: &Loaded,
    o: &Overrides,
    broker: &Placement,
    templates_dir: &std::path::Path,
) -> Option<String> {
    let Placement::Managed { spec, .. } = broker else {
        return None;
    };
    if !o.moves_broker() {
        return None;
    }
    let (_, own) = managed(
        &loaded.scenario.broker,
        &Overrides::default(),
        templates_dir,
    )
    .ok()?;
    let (own, this) = (own.label(), spec.label());
    (own != this).then(|| this.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::Flavour;

    fn load(text: &str) -> Loaded {
        match crate::scenario::parse_str("t.yaml", "t", text, &[], &[]) {
            Ok(l) => l,
            Err(e) => panic!("{}", e.render()),
        }
    }

    #[test]
    fn embedded_backend_mimics_the_product() {
        let l = load("broker: {kind: embedded, flavour: router}\nnotification_broker: {kind: qpidd, nodes: 2}\nsteps:\n  - sleep: 1ms\n");
        let p = plan(&l, &Overrides::default(), "templates").expect("plan");
        let spec = p.notifications.expect("notification broker");
        assert_eq!(spec.flavour(), Some(Flavour::Qpidd));
        assert_eq!(spec.nodes, 2);
        assert_eq!(p.identity, Identity::embedded(Flavour::Router));
        assert_eq!(p.label, "embedded:router");
        let o = Overrides {
            backend: Some(BackendKind::Embedded),
            broker: Some(BrokerChoice::parse("rabbitmq:rabbitmq3").expect("choice")),
            ..Overrides::default()
        };
        let p = plan(&l, &o, "templates").expect("plan");
        assert_eq!(p.label, "embedded:rabbitmq3");
        assert_eq!(p.snapshot_variant.as_deref(), Some("embedded-rabbitmq3"));
        let o = Overrides {
            backend: Some(BackendKind::Embedded),
            broker: Some(BrokerChoice::parse("artemis").expect("choice")),
            ..Overrides::default()
        };
        assert!(plan(&l, &o, "templates").is_err());
    }

    #[test]
    fn matrix_version_and_image_reach_the_spec() {
        let l = load("broker: {kind: rabbitmq}\nsteps:\n  - sleep: 1ms\n");
        let o = Overrides {
            backend: Some(BackendKind::Container),
            version: Version::parse("3.10"),
            image: Some("amqp1-rig/rabbitmq:3.10".into()),
            ..Overrides::default()
        };
        let p = plan(&l, &o, "templates").expect("plan");
        let Placement::Managed { spec, .. } = &p.broker else {
            panic!("managed");
        };
        assert_eq!(spec.version(), Version::parse("3.10").as_ref());
        assert_eq!(spec.image.as_deref(), Some("amqp1-rig/rabbitmq:3.10"));
        assert_eq!(p.identity.version, Version::parse("3.10"));
        assert_eq!(p.identity.product, Some(Product::Rabbitmq));
    }

    #[test]
    fn own_product_keeps_its_variant() {
        let l = load("broker: {kind: rabbitmq, flavour: rabbitmq3}\nsteps:\n  - sleep: 1ms\n");
        let o = Overrides {
            backend: Some(BackendKind::Container),
            broker: Some(BrokerChoice::parse("rabbitmq").expect("choice")),
            ..Overrides::default()
        };
        let p = plan(&l, &o, "templates").expect("plan");
        assert_eq!(p.label, "container rabbitmq:rabbitmq3");
        assert_eq!(p.snapshot_variant, None);
    }
}
