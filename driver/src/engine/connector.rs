//! The connector: everything between a [`HostSpec`] and an open AMQP
//! connection — TCP (always `TCP_NODELAY`, which fe2o3 never sets), TLS
//! (rustls with the ring provider, [`crate::tls`]), the SASL profile, the
//! Open frame oslo sends (container-id, properties, hostname, idle timeout)
//! and what the peer's Open tells us ([`PeerInfo`]). Every step is bounded
//! by `connect_timeout` (fe2o3's handshakes have no timeout of their own).
//!
//! [`dial`] gives the raw (TLS) byte stream, for clients that speak AMQP
//! frames themselves (the RabbitMQ management link pair).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::Connection;

use super::stream::{MaybeTls, PeerOpen, Sniffer};
use crate::error::{Condition, ConnectError, ConnectErrorKind};
use crate::options::Config;
use crate::tls::TlsSettings;
use crate::url::HostSpec;

pub(crate) use super::stream::PeerOpen as PeerInfo;

/// `host:port` for logs and events (IPv6 in brackets, no credentials).
pub(crate) fn host_label(h: &HostSpec) -> String {
    if h.host.contains(':') && !h.host.starts_with('[') {
        format!("[{}]:{}", h.host, h.port)
    } else {
        format!("{}:{}", h.host, h.port)
    }
}

/// The bound of every handshake step (`connect_timeout`, at least 1 s).
pub(crate) fn connect_timeout(cfg: &Config) -> Duration {
    Duration::from_secs(cfg.amqp.connect_timeout.clamp(1, crate::MAX_TIMEOUT_SECS))
}

/// The container-id: `container_name`, or oslo's
/// `openstack.org/om/container/<node>/<process>/<pid>/<uuid>`.
pub(crate) fn container_id(cfg: &Config) -> String {
    if let Some(c) = cfg.amqp.container_name.as_deref().filter(|c| !c.is_empty()) {
        return c.to_string();
    }
    format!(
        "openstack.org/om/container/{}/{}/{}/{}",
        node_name(),
        process_name(),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn process_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "amqp1-rig".into())
}

fn node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// The Open `properties` oslo sends: process, pid, node.
fn open_properties() -> Fields {
    let mut props = Fields::new();
    props.insert(Symbol::from("process"), Value::String(process_name()));
    let pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    props.insert(Symbol::from("pid"), Value::Int(pid));
    props.insert(Symbol::from("node"), Value::String(node_name()));
    props
}

fn tls_settings(cfg: &Config) -> TlsSettings {
    let o = &cfg.amqp;
    let nz = |s: &str| (!s.is_empty()).then(|| s.to_string());
    TlsSettings {
        enabled: o.ssl
            || !o.ssl_ca_file.is_empty()
            || !o.ssl_cert_file.is_empty()
            || cfg.transport_url.scheme.ends_with('s') && cfg.transport_url.scheme != "amqp",
        ca_file: nz(&o.ssl_ca_file),
        cert_file: nz(&o.ssl_cert_file),
        key_file: nz(&o.ssl_key_file),
        key_password_set: o
            .ssl_key_password
            .as_ref()
            .is_some_and(|p| !p.expose().is_empty()),
        verify_vhost: o.ssl_verify_vhost,
    }
}

/// The SASL mechanism for a host, without the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SaslChoice {
    /// PLAIN with this (realm-qualified) user name; the password is the host's.
    Plain { username: String },
    /// ANONYMOUS.
    Anonymous,
}

/// The SASL mechanism for a host (spec §5): PLAIN with a user, ANONYMOUS
/// when `sasl_mechanisms` asks for it, none (no SASL layer) otherwise.
pub(crate) fn sasl_choice(cfg: &Config, host: &HostSpec) -> Option<SaslChoice> {
    let mechs: Vec<String> = cfg
        .amqp
        .sasl_mechanisms
        .split_whitespace()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    if let Some(user) = host.username.as_deref() {
        if mechs.is_empty() || mechs.iter().any(|m| m == "PLAIN") {
            let realm = cfg.amqp.sasl_default_realm.as_str();
            let username = if !realm.is_empty() && !user.contains('@') {
                format!("{user}@{realm}")
            } else {
                user.to_string()
            };
            return Some(SaslChoice::Plain { username });
        }
    }
    if mechs.iter().any(|m| m == "ANONYMOUS") {
        return Some(SaslChoice::Anonymous);
    }
    None
}

fn sasl_profile(cfg: &Config, host: &HostSpec) -> Option<SaslProfile> {
    Some(match sasl_choice(cfg, host)? {
        SaslChoice::Plain { username } => SaslProfile::Plain {
            username,
            password: host
                .password
                .as_ref()
                .map(|p| p.expose().to_string())
                .unwrap_or_default(),
        },
        SaslChoice::Anonymous => SaslProfile::Anonymous,
    })
}

fn timed_out(label: &str) -> ConnectError {
    ConnectError::new(ConnectErrorKind::TimedOut).set_detail(label)
}

/// TCP (with `TCP_NODELAY`) and, when configured, TLS to `host`.
pub(crate) async fn dial(cfg: &Config, host: &HostSpec) -> Result<MaybeTls, ConnectError> {
    let label = host_label(host);
    let timeout = connect_timeout(cfg);
    let host_for_dial = host.host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host_for_dial, host.port));
    let tcp = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(ConnectError::with_source(ConnectErrorKind::Io, e).set_detail(label));
        }
        Err(_) => return Err(timed_out(&label)),
    };
    // fe2o3 never sets TCP_NODELAY; without it a request/reply takes ~88 ms.
    let _ = tcp.set_nodelay(true);
    let tls = tls_settings(cfg);
    if !tls.enabled {
        return Ok(MaybeTls::Plain(tcp));
    }
    let tls_err =
        |e: String| ConnectError::with_source(ConnectErrorKind::Tls, e).set_detail(label.clone());
    let connector = tls.connector().map_err(tls_err)?;
    let name = tls
        .server_name(host_for_dial, cfg.transport_url.virtual_host.as_deref())
        .map_err(tls_err)?;
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(MaybeTls::Tls(Box::new(s))),
        Ok(Err(e)) => Err(ConnectError::with_source(ConnectErrorKind::Tls, e).set_detail(label)),
        Err(_) => Err(timed_out(&label)),
    }
}

/// The Open `hostname`: the virtual host when `pseudo_vhost` is off (spec §3.5).
pub(crate) fn open_hostname(cfg: &Config) -> Option<&str> {
    if cfg.amqp.pseudo_vhost {
        return None;
    }
    cfg.transport_url
        .virtual_host
        .as_deref()
        .filter(|v| !v.is_empty())
}

/// An open connection (before any session or link).
pub(crate) struct Opened {
    pub handle: ConnectionHandle<()>,
    pub peer: PeerInfo,
}

/// Dials `host` and opens the AMQP connection (SASL when configured).
pub(crate) async fn open(cfg: &Config, host: &HostSpec) -> Result<Opened, ConnectError> {
    let label = host_label(host);
    let io = dial(cfg, host).await?;
    let peer = Arc::new(OnceLock::<PeerOpen>::new());
    let io = Sniffer::new(io, peer.clone());
    let host_for_sasl = host.host.trim_start_matches('[').trim_end_matches(']');
    let mut builder = Connection::builder()
        .container_id(container_id(cfg))
        .scheme("amqp")
        .channel_max(0x7fffu16)
        .properties(open_properties())
        .sasl_hostname(Some(host_for_sasl));
    if let Some(h) = open_hostname(cfg) {
        builder = builder.hostname(Some(h));
    }
    if cfg.amqp.idle_timeout > 0 {
        let ms = cfg.amqp.idle_timeout.saturating_mul(1000);
        builder = builder.idle_time_out(u32::try_from(ms).unwrap_or(u32::MAX));
    }
    if let Some(p) = sasl_profile(cfg, host) {
        builder = builder.sasl_profile(p);
    }
    let timeout = connect_timeout(cfg);
    let handle = match tokio::time::timeout(timeout, builder.open_with_stream(io)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return Err(map_open_error(e).set_detail(label)),
        Err(_) => return Err(timed_out(&label)),
    };
    let peer = peer.get().cloned().unwrap_or_default();
    Ok(Opened { handle, peer })
}

fn map_open_error(e: fe2o3_amqp::connection::OpenError) -> ConnectError {
    use fe2o3_amqp::connection::OpenError as E;
    match e {
        E::SaslError { code, .. } => {
            let cond = Condition {
                condition: "amqp:unauthorized-access".into(),
                description: Some(format!("SASL outcome {code:?}")),
            };
            ConnectError::new(ConnectErrorKind::Auth).set_condition(Some(cond))
        }
        E::Io(e) => ConnectError::with_source(ConnectErrorKind::Io, e),
        E::RemoteClosedWithError(err) => {
            let cond = Condition::from(&err);
            let kind = if cond.condition == "amqp:unauthorized-access" {
                ConnectErrorKind::Auth
            } else {
                ConnectErrorKind::Refused
            };
            ConnectError::new(kind).set_condition(Some(cond))
        }
        E::RemoteClosed => ConnectError::new(ConnectErrorKind::Refused),
        other => ConnectError::with_source(ConnectErrorKind::Io, other),
    }
}
