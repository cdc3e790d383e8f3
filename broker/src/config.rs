//! Broker configuration: flavour, listener address, users, TLS and node patterns.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use crate::BrokerError;

/// Which real broker the embedded broker imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Qpid C++ broker (`qpidd`): pattern-created queues and topics, store and forward.
    #[default]
    Qpidd,
    /// Qpid Dispatch Router (`qdrouterd`): no store, end-to-end settlement.
    Router,
    /// RabbitMQ 3.x with the AMQP 1.0 plugin: no dynamic sources, `/queue/` and `/topic/` addresses.
    Rabbitmq3,
}

impl Flavour {
    /// All flavours, in their canonical order.
    pub const ALL: [Flavour; 3] = [Flavour::Qpidd, Flavour::Router, Flavour::Rabbitmq3];

    /// The canonical name accepted by [`FromStr`] (`qpidd`, `router`, `rabbitmq3`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Qpidd => "qpidd",
            Flavour::Router => "router",
            Flavour::Rabbitmq3 => "rabbitmq3",
        }
    }

    /// The `product` connection property this flavour advertises in its Open frame.
    pub fn product(self) -> &'static str {
        match self {
            Flavour::Qpidd => "qpid-cpp",
            Flavour::Router => "qpid-dispatch-router",
            Flavour::Rabbitmq3 => "RabbitMQ",
        }
    }

    /// The `version` connection property this flavour advertises.
    pub fn version(self) -> &'static str {
        match self {
            Flavour::Qpidd => "1.40.0",
            Flavour::Router => "1.19.0",
            Flavour::Rabbitmq3 => "3.10.8",
        }
    }
}

impl fmt::Display for Flavour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when a flavour name is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown broker flavour `{0}` (expected one of: qpidd, router, rabbitmq3)")]
pub struct UnknownFlavour(pub String);

impl FromStr for Flavour {
    type Err = UnknownFlavour;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "qpidd" | "qpid" | "qpid-cpp" => Ok(Flavour::Qpidd),
            "router" | "qdrouterd" | "qpid-dispatch" | "dispatch" => Ok(Flavour::Router),
            "rabbitmq3" | "rabbitmq" | "rabbit" => Ok(Flavour::Rabbitmq3),
            _ => Err(UnknownFlavour(s.to_string())),
        }
    }
}

/// Server-side TLS material, in PEM.
///
/// `Debug` never prints the private key.
#[derive(Clone)]
pub struct TlsConfig {
    /// Server certificate chain (PEM, leaf first).
    pub cert_pem: String,
    /// Server private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// When set, clients must present a certificate signed by one of these CAs (PEM).
    pub client_ca_pem: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field(
                "client_ca_pem",
                &self.client_ca_pem.as_ref().map(|c| c.len()),
            )
            .finish()
    }
}

impl TlsConfig {
    /// TLS from PEM strings.
    pub fn from_pem(cert_pem: impl Into<String>, key_pem: impl Into<String>) -> Self {
        TlsConfig {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
        }
    }

    /// Reads the certificate chain and key from PEM files.
    pub fn from_pem_files(
        cert_path: impl AsRef<std::path::Path>,
        key_path: impl AsRef<std::path::Path>,
    ) -> Result<Self, BrokerError> {
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .map_err(|e| BrokerError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        Ok(TlsConfig::from_pem(
            read(cert_path.as_ref())?,
            read(key_path.as_ref())?,
        ))
    }

    /// Generates a self-signed certificate for `localhost` and `127.0.0.1` (rcgen).
    ///
    /// Clients must trust [`TlsConfig::cert_pem`] (it is its own CA).
    pub fn self_signed() -> Result<Self, BrokerError> {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let certified = rcgen::generate_simple_self_signed(names).map_err(|e| {
            BrokerError::Tls(format!("cannot generate a self-signed certificate: {e}"))
        })?;
        Ok(TlsConfig {
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
            client_ca_pem: None,
        })
    }

    /// Requires client certificates signed by this CA (PEM).
    pub fn with_client_ca(mut self, ca_pem: impl Into<String>) -> Self {
        self.client_ca_pem = Some(ca_pem.into());
        self
    }
}

/// Configuration of an embedded broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Which broker to imitate.
    pub flavour: Flavour,
    /// Listen address; port 0 picks a free port. Must be a loopback address.
    pub bind: SocketAddr,
    /// SASL PLAIN users `(name, password)`.
    pub users: Vec<(String, String)>,
    /// Whether SASL ANONYMOUS (and connections without SASL) are accepted.
    pub allow_anonymous: bool,
    /// Optional TLS (the whole connection is TLS, as with `amqps://`).
    pub tls: Option<TlsConfig>,
    /// qpidd: regular expressions (unanchored) of addresses auto-created as queues.
    pub queue_patterns: Vec<String>,
    /// qpidd: regular expressions (unanchored) of addresses auto-created as topics.
    pub topic_patterns: Vec<String>,
    /// router: outgoing backlog above which queued pre-settled deliveries are dropped.
    pub router_drop_threshold: usize,
    /// Container id sent in Open; defaults to a flavour-specific name.
    pub container_id: Option<String>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            flavour: Flavour::Qpidd,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            users: Vec::new(),
            allow_anonymous: true,
            tls: None,
            queue_patterns: vec!["exclusive".to_string(), "unicast".to_string()],
            topic_patterns: vec!["broadcast".to_string()],
            router_drop_threshold: 250,
            container_id: None,
        }
    }
}

impl BrokerConfig {
    /// Default configuration for a flavour.
    pub fn for_flavour(flavour: Flavour) -> Self {
        BrokerConfig {
            flavour,
            ..BrokerConfig::default()
        }
    }

    /// Sets the listen port (on 127.0.0.1).
    pub fn with_port(mut self, port: u16) -> Self {
        self.bind.set_port(port);
        self
    }

    /// Adds a SASL PLAIN user.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Parses a `--user NAME:PASSWORD` specification (the password may contain `:`).
    pub fn parse_user(spec: &str) -> Result<(String, String), BrokerError> {
        match spec.split_once(':') {
            Some((name, password)) if !name.is_empty() => {
                Ok((name.to_string(), password.to_string()))
            }
            _ => Err(BrokerError::Config(
                "user must be given as NAME:PASSWORD with a non-empty NAME".to_string(),
            )),
        }
    }

    /// Enables TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_round_trips() {
        for f in Flavour::ALL {
            assert_eq!(f.to_string().parse::<Flavour>(), Ok(f));
        }
        assert!("activemq".parse::<Flavour>().is_err());
    }

    #[test]
    fn parses_user_specs() {
        let (u, p) = BrokerConfig::parse_user("guest:pa:ss").expect("valid");
        assert_eq!((u.as_str(), p.as_str()), ("guest", "pa:ss"));
        assert!(BrokerConfig::parse_user("nopassword").is_err());
        assert!(BrokerConfig::parse_user(":x").is_err());
    }

    #[test]
    fn tls_debug_hides_key() {
        let t = TlsConfig::from_pem("CERT", "SECRET-KEY");
        assert!(!format!("{t:?}").contains("SECRET"));
    }
}
