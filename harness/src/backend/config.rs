//! Broker configuration rendering: one rendering of `templates/<kind>/**.tera` for both the process and
//! the container backend.
//!
//! Template context (every file `templates/<kind>/**.tera` is rendered to `DIR/<path without .tera>`):
//! `broker`, `node_name`, `node_index`, `host`, `port`, `dir`, `data_dir`, `log_dir`, `log_file`,
//! `log_to_stderr`, `container`, `pid_dir`, `auth`, `users` (`[{name, password}]`), `sasl_config_dir`,
//! `sasl_db`, `sasl_realm`, `sasl_service_name`, `acl_file`, `queue_patterns`, `topic_patterns`,
//! `router_id`, `dist_port`, `epmd_port`, `version` (the product version, when known), `rabbitmq_major`
//! (RabbitMQ: 3 or 4; 3 when the version is not known), `notify_link_route`
//! (`{host, port, prefix, user, password}` or absent) and `overrides` (the spec's overrides map).
//!
//! Where the broker runs changes only a few values ([`Placement`]):
//!
//! | value | process | container |
//! | --- | --- | --- |
//! | `host` (listeners) | `127.0.0.1` | `0.0.0.0` (inside the container; the host publishes the port on 127.0.0.1 only) |
//! | `port` | a free port | 5672 |
//! | `dir` | the node's private temporary directory | the image's `amqp1-rig.config-dir` label (`/etc/amqp1-rig`) |
//! | logs | `log_file` under `log_dir` | `log_to_stderr`: the container's output, which the backend captures |
//! | `container` | `false` | `true` |
//!
//! Override keys read here: `queue_patterns` / `topic_patterns` (comma separated), `sasl_service_name`
//! (empty to omit), `notify_link_route` (`host:port[/prefix]`, qdrouterd only; with
//! `notify_link_route_user` / `notify_link_route_password`), and for RabbitMQ 4.x
//! `permit_amqp_address_v1` (`true`: `deprecated_features.permit.amqp_address_v1 = true`, which RabbitMQ
//! 4.3 needs for the v1 addresses `/queue/x`, `/topic/x` and bare names; off unless a scenario asks).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{BackendError, BrokerKind, BrokerSpec};
use crate::brokers::Version;

/// The address prefix link-routed to the notification broker by default (routable addressing).
const NOTIFY_PREFIX: &str = "openstack.org/om/notify";

/// Where a rendered configuration is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// A local broker process: listeners on 127.0.0.1, logs in the node directory.
    #[default]
    Process,
    /// Inside a container: listeners on 0.0.0.0 (the container's own network namespace), logs on the
    /// container's output.
    Container,
}

/// One rendered configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// Path relative to the node directory (`qpidd.conf`, `sasl2/qpidd.conf`).
    pub path: String,
    /// File contents.
    pub contents: String,
}

/// Where one node lives: directory, ports and names. Everything a template can refer to besides the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLayout {
    /// Node index in the scenario (0-based).
    pub index: usize,
    /// The node's private directory (configs live directly in it).
    pub dir: PathBuf,
    /// AMQP port on 127.0.0.1.
    pub port: u16,
    /// RabbitMQ: Erlang distribution port.
    pub dist_port: u16,
    /// RabbitMQ: private epmd port.
    pub epmd_port: u16,
    /// Broker node name (`rig-<random>@localhost` for RabbitMQ, `node<i>` elsewhere).
    pub node_name: String,
    /// Process or container.
    pub placement: Placement,
    /// The product version that will run, when the backend knows it (RabbitMQ 3.x and 4.x take
    /// different configurations).
    pub version: Option<Version>,
}

impl NodeLayout {
    /// A fixed layout for previews and snapshot tests (`/tmp/amqp1-rig/<kind>-node<i>`, port 5672 + i).
    pub fn preview(kind: BrokerKind, index: usize) -> Self {
        NodeLayout {
            index,
            dir: PathBuf::from(format!("/tmp/amqp1-rig/{kind}-node{index}")),
            port: 5672 + index as u16,
            dist_port: 25672 + index as u16,
            epmd_port: 4369,
            node_name: node_name(kind, index, "preview"),
            placement: Placement::Process,
            version: None,
        }
    }

    /// The layout of node `index` inside a container whose image reads its configuration from `dir`.
    pub fn container(kind: BrokerKind, index: usize, dir: &str, version: Option<Version>) -> Self {
        NodeLayout {
            index,
            dir: PathBuf::from(dir),
            port: CONTAINER_AMQP_PORT,
            dist_port: 25672,
            epmd_port: 4369,
            node_name: match kind {
                BrokerKind::Rabbitmq => format!("rabbit@node{index}"),
                _ => format!("node{index}"),
            },
            placement: Placement::Container,
            version,
        }
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir.join("log")
    }
    pub(crate) fn pid_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub(crate) fn output_log(&self) -> PathBuf {
        self.dir.join("output.log")
    }
}

pub(crate) fn node_name(kind: BrokerKind, index: usize, tag: &str) -> String {
    match kind {
        BrokerKind::Rabbitmq => format!("rig-{tag}-{index}@localhost"),
        _ => format!("node{index}"),
    }
}

/// The broker's own log file inside the node directory (besides `output.log`, its stdout/stderr).
pub(crate) fn broker_log_file(kind: BrokerKind, layout: &NodeLayout) -> Option<PathBuf> {
    match kind {
        BrokerKind::Qpidd => Some(layout.log_dir().join("qpidd.log")),
        BrokerKind::Qdrouterd => Some(layout.log_dir().join("qdrouterd.log")),
        BrokerKind::Rabbitmq => Some(layout.log_dir().join(format!("{}.log", layout.node_name))),
        _ => None,
    }
}

fn comma_list(v: Option<&String>, default: &[&str]) -> Vec<String> {
    match v {
        Some(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        None => default.iter().map(|s| s.to_string()).collect(),
    }
}

/// Parses `host:port[/prefix]` (the `notify_link_route` override).
fn parse_link_route(v: &str) -> Result<(String, u16, String), String> {
    let (hostport, prefix) = match v.split_once('/') {
        Some((h, p)) if !p.is_empty() => (h, p.to_string()),
        Some((h, _)) => (h, NOTIFY_PREFIX.to_string()),
        None => (v, NOTIFY_PREFIX.to_string()),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("notify_link_route '{v}' is not host:port[/prefix]"))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("notify_link_route '{v}': bad port '{port}'"))?;
    if host.is_empty() {
        return Err(format!("notify_link_route '{v}' has no host"));
    }
    Ok((host.to_string(), port, prefix))
}

/// The tera context for `spec`'s templates at `layout`. Passwords are included as given.
/// Every variable the broker templates read, in one place (listeners, users, TLS, per-kind
/// settings, overrides), so a template author finds them all here.
pub fn template_context(
    spec: &BrokerSpec,
    layout: &NodeLayout,
) -> Result<tera::Context, BackendError> {
    let kind = spec.kind();
    let ov = &spec.overrides;
    let mut c = tera::Context::new();
    c.insert("broker", kind.as_str());
    c.insert("node_name", &layout.node_name);
    c.insert("node_index", &layout.index);
    let container = layout.placement == Placement::Container;
    c.insert("container", &container);
    c.insert("log_to_stderr", &container);
    c.insert("host", if container { "0.0.0.0" } else { "127.0.0.1" });
    if let Some(v) = &layout.version {
        c.insert("version", &v.to_string());
    }
    let rabbitmq_major = layout
        .version
        .as_ref()
        .and_then(|v| {
            v.to_string()
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
        })
        .unwrap_or(3);
    c.insert("rabbitmq_major", &rabbitmq_major);
    c.insert("port", &layout.port);
    c.insert("dir", &layout.dir.display().to_string());
    c.insert("data_dir", &layout.data_dir().display().to_string());
    c.insert("log_dir", &layout.log_dir().display().to_string());
    c.insert(
        "log_file",
        &broker_log_file(kind, layout)
            .unwrap_or_else(|| layout.output_log())
            .display()
            .to_string(),
    );
    c.insert("pid_dir", &layout.pid_dir().display().to_string());
    c.insert("auth", &!spec.users.is_empty());
    let users: Vec<BTreeMap<&str, &str>> = spec
        .users
        .iter()
        .map(|u| BTreeMap::from([("name", u.name.as_str()), ("password", u.password.expose())]))
        .collect();
    c.insert("users", &users);
    c.insert(
        "sasl_config_dir",
        &layout.dir.join("sasl2").display().to_string(),
    );
    c.insert(
        "sasl_db",
        &layout
            .dir
            .join("sasl2")
            .join(format!("{kind}.sasldb"))
            .display()
            .to_string(),
    );
    c.insert("sasl_realm", "QPID");
    let service = ov
        .get("sasl_service_name")
        .cloned()
        .unwrap_or_else(|| "amqp".to_string());
    c.insert("sasl_service_name", &service);
    c.insert(
        "acl_file",
        &layout.dir.join("qpidd.acl").display().to_string(),
    );
    c.insert(
        "queue_patterns",
        &comma_list(ov.get("queue_patterns"), &["exclusive", "unicast"]),
    );
    c.insert(
        "topic_patterns",
        &comma_list(ov.get("topic_patterns"), &["broadcast"]),
    );
    c.insert("router_id", &format!("Router.{}", layout.index));
    c.insert("dist_port", &layout.dist_port);
    c.insert("epmd_port", &layout.epmd_port);
    if let Some(v) = ov.get("notify_link_route") {
        let (host, port, prefix) = parse_link_route(v).map_err(|message| BackendError::Start {
            message,
            log_tail: String::new(),
        })?;
        let mut m: BTreeMap<&str, serde_json::Value> = BTreeMap::new();
        m.insert("host", host.into());
        m.insert("port", port.into());
        m.insert("prefix", prefix.into());
        if let (Some(u), Some(p)) = (
            ov.get("notify_link_route_user"),
            ov.get("notify_link_route_password"),
        ) {
            m.insert("user", u.clone().into());
            m.insert("password", p.clone().into());
        }
        c.insert("notify_link_route", &m);
    }
    c.insert("overrides", ov);
    Ok(c)
}

/// Renders every `templates/<kind>/**.tera` for `spec` at `layout`, sorted by path.
///
/// `embedded` and `artemis` have no templates here and yield an empty list.
pub fn render_files(
    spec: &BrokerSpec,
    layout: &NodeLayout,
) -> Result<Vec<RenderedFile>, BackendError> {
    let prefix = match spec.kind() {
        BrokerKind::Qpidd | BrokerKind::Qdrouterd | BrokerKind::Rabbitmq => {
            format!("{}/", spec.kind().as_str())
        }
        BrokerKind::Embedded | BrokerKind::Artemis => return Ok(Vec::new()),
    };
    let tera = crate::templates::load(&spec.templates_dir)?;
    let mut names: Vec<String> = tera
        .get_template_names()
        .filter(|n| n.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(BackendError::Start {
            message: format!(
                "no templates for {} under {} (expected {}*.tera)",
                spec.kind(),
                spec.templates_dir.display(),
                prefix
            ),
            log_tail: String::new(),
        });
    }
    let ctx = template_context(spec, layout)?;
    let mut out = Vec::new();
    for name in names {
        let contents = crate::templates::render_with(&tera, &spec.templates_dir, &name, &ctx)?;
        let path = name
            .strip_prefix(&prefix)
            .unwrap_or(&name)
            .trim_end_matches(".tera")
            .to_string();
        out.push(RenderedFile { path, contents });
    }
    Ok(out)
}

/// What `harness render --broker KIND` prints: the files of node 0 at the preview layout, with every
/// password replaced by `***`.
pub fn render_preview(spec: &BrokerSpec) -> Result<Vec<RenderedFile>, BackendError> {
    let mut redacted = spec.clone();
    for u in &mut redacted.users {
        u.password = "***".into();
    }
    if redacted
        .overrides
        .contains_key("notify_link_route_password")
    {
        redacted
            .overrides
            .insert("notify_link_route_password".into(), "***".into());
    }
    render_files(&redacted, &NodeLayout::preview(spec.kind(), 0))
}

/// Formats rendered files for a terminal: `==> path <==` headers, like `tail` on several files.
pub fn format_rendered(files: &[RenderedFile]) -> String {
    let mut out = String::new();
    for (i, f) in files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("==> {} <==\n", f.path));
        out.push_str(&f.contents);
        if !f.contents.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// The port the broker listens on inside every image.
pub const CONTAINER_AMQP_PORT: u16 = 5672;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::BrokerChoice;

    fn spec_of(s: &str) -> BrokerSpec {
        BrokerSpec::new(BrokerChoice::parse(s).expect("choice"), "../templates")
    }

    fn file<'a>(files: &'a [RenderedFile], path: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .contents
    }

    #[test]
    fn link_route_parses_with_and_without_prefix() {
        assert_eq!(
            parse_link_route("127.0.0.1:5672").expect("valid"),
            ("127.0.0.1".into(), 5672, NOTIFY_PREFIX.into())
        );
        assert_eq!(
            parse_link_route("h:1/x/y").expect("valid"),
            ("h".into(), 1, "x/y".into())
        );
        assert!(parse_link_route("nohost").is_err());
        assert!(parse_link_route("h:99999").is_err());
    }

    #[test]
    fn container_placement_listens_inside_and_logs_to_the_output() {
        for kind in ["qpidd", "qdrouterd", "rabbitmq"] {
            let spec = spec_of(kind);
            let layout = NodeLayout::container(spec.kind(), 0, "/etc/amqp1-rig", None);
            let files = render_files(&spec, &layout).expect("renders");
            let all: String = files
                .iter()
                .flat_map(|f| f.contents.lines())
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            assert!(!all.contains("127.0.0.1"), "{kind} binds loopback:\n{all}");
            assert!(!all.contains("/log/"), "{kind} logs to a folder:\n{all}");
            assert!(all.contains("/etc/amqp1-rig"), "{kind}:\n{all}");
        }
        let process = render_files(
            &spec_of("qpidd"),
            &NodeLayout::preview(BrokerKind::Qpidd, 0),
        )
        .expect("renders");
        assert!(file(&process, "qpidd.conf").contains("interface=127.0.0.1"));
    }

    #[test]
    fn rabbitmq_4_gets_a_4x_configuration() {
        let mut spec = spec_of("rabbitmq:4.3.6");
        spec.users.push(super::super::User {
            name: "rig".into(),
            password: "pw".into(),
        });
        let v = Version::parse("4.3.6");
        let files = render_files(
            &spec,
            &NodeLayout::container(BrokerKind::Rabbitmq, 0, "/etc/amqp1-rig", v.clone()),
        )
        .expect("renders");
        let conf = file(&files, "rabbitmq.conf");
        assert!(
            !conf.contains("amqp1_0."),
            "3.x plugin keys on 4.x:\n{conf}"
        );
        assert!(conf.contains("loopback_users = none"), "{conf}");
        assert!(!conf.contains("amqp_address_v1"), "{conf}");
        assert!(!file(&files, "enabled_plugins").contains("rabbitmq_amqp1_0"));
        spec.overrides
            .insert("permit_amqp_address_v1".into(), "true".into());
        let files = render_files(
            &spec,
            &NodeLayout::container(BrokerKind::Rabbitmq, 0, "/etc/amqp1-rig", v),
        )
        .expect("renders");
        assert!(file(&files, "rabbitmq.conf")
            .contains("deprecated_features.permit.amqp_address_v1 = true"));
        // 3.x (or unknown) keeps the plugin and its settings
        let three = render_files(
            &spec_of("rabbitmq"),
            &NodeLayout::preview(BrokerKind::Rabbitmq, 0),
        )
        .expect("renders");
        assert!(file(&three, "rabbitmq.conf").contains("amqp1_0.default_vhost"));
        assert!(file(&three, "enabled_plugins").contains("rabbitmq_amqp1_0"));
    }
}
