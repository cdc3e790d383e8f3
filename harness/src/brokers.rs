//! What a broker *is*, apart from how it is started: the products the harness knows, how scenarios, the
//! command line and the matrix name a broker ([`BrokerChoice`]), what a running broker turned out to be
//! ([`Identity`]) and how the known-failure registry names brokers ([`BrokerMatch`]).
//!
//! Every spelling of a broker goes through [`BrokerChoice::parse`] and [`BrokerMatch::parse`]; the
//! embedded flavours come from [`broker::Flavour::ALL`], so no list of names is written out elsewhere.

use std::fmt;
use std::str::FromStr;

pub use broker::Flavour;

/// A real broker product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    /// Apache Qpid C++ broker (`qpidd`).
    Qpidd,
    /// Apache Qpid Dispatch router (`qdrouterd`).
    Qdrouterd,
    /// RabbitMQ (3.x with the AMQP 1.0 plugin, or 4.x native AMQP 1.0).
    Rabbitmq,
    /// Apache ActiveMQ Artemis.
    Artemis,
}

impl Product {
    /// Every product, in display order.
    pub const ALL: [Product; 4] = [
        Product::Qpidd,
        Product::Qdrouterd,
        Product::Rabbitmq,
        Product::Artemis,
    ];

    /// The name used in scenarios and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Product::Qpidd => "qpidd",
            Product::Qdrouterd => "qdrouterd",
            Product::Rabbitmq => "rabbitmq",
            Product::Artemis => "artemis",
        }
    }

    /// The product a peer's Open `product` property names (`qpid-cpp`, `qpid-dispatch-router`,
    /// `RabbitMQ`, `apache-activemq-artemis`), if it is one the harness knows.
    pub fn from_open_property(product: &str) -> Option<Product> {
        let p = product.to_ascii_lowercase();
        if p.contains("qpid-cpp") || p == "qpidd" {
            Some(Product::Qpidd)
        } else if p.contains("dispatch") || p.contains("skupper") {
            Some(Product::Qdrouterd)
        } else if p.contains("rabbitmq") {
            Some(Product::Rabbitmq)
        } else if p.contains("artemis") {
            Some(Product::Artemis)
        } else {
            None
        }
    }

    /// The embedded flavour that mimics this product at `version`, if there is one.
    pub fn mimic(self, version: Option<&Version>) -> Option<Flavour> {
        match self {
            Product::Qpidd => Some(Flavour::Qpidd),
            Product::Qdrouterd => Some(Flavour::Router),
            Product::Rabbitmq => Flavour::ALL
                .into_iter()
                .filter(|f| Product::from_open_property(f.product()) == Some(Product::Rabbitmq))
                .find(|f| match version {
                    Some(v) => {
                        Version::parse(f.version()).is_some_and(|fv| fv.major() == v.major())
                    }
                    None => true,
                }),
            Product::Artemis => None,
        }
    }

    fn names() -> String {
        Self::ALL.map(Product::as_str).join(", ")
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Product {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "qpidd" | "qpid" => Ok(Product::Qpidd),
            "qdrouterd" | "dispatch" => Ok(Product::Qdrouterd),
            "rabbitmq" | "rabbit" => Ok(Product::Rabbitmq),
            "artemis" => Ok(Product::Artemis),
            _ => Err(format!(
                "unknown broker kind '{s}' (expected one of: embedded, {})",
                Self::names()
            )),
        }
    }
}

/// A dotted version number (`3.10`, `4.3.6`, `1.19.0`); comparisons are by component.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(Vec<u32>);

impl Version {
    /// Parses `4`, `3.10`, `4.3.6`; a suffix after the numbers (`1.40.0-SNAPSHOT`, `3.10.8-1.1`) is ignored.
    pub fn parse(s: &str) -> Option<Version> {
        let numeric: String = s
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let parts: Option<Vec<u32>> = numeric
            .split('.')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().ok())
            .collect();
        parts.filter(|p| !p.is_empty()).map(Version)
    }

    /// The first component.
    pub fn major(&self) -> u32 {
        self.0[0]
    }

    /// Whether `self` starts with every component of `prefix` (`3.10.8` matches `3` and `3.10`).
    pub fn matches(&self, prefix: &Version) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// A broker as a scenario's `broker:` section, `--broker KIND[:FLAVOUR]` or a matrix cell names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerChoice {
    /// The embedded broker of this flavour.
    Embedded(Flavour),
    /// A real product. `distro` picks a packaging (a container image variant such as `centos7`);
    /// `version` the product version (an image tag, or what an installed binary must report).
    Real {
        /// The product.
        product: Product,
        /// Packaging variant (`ubuntu-focal`, `source-debian`...), if named.
        distro: Option<String>,
        /// Version (prefix) asked for, if any.
        version: Option<Version>,
    },
}

impl Default for BrokerChoice {
    fn default() -> Self {
        BrokerChoice::Embedded(Flavour::default())
    }
}

fn flavour_names() -> String {
    Flavour::ALL.map(Flavour::as_str).join(", ")
}

/// Parses an embedded flavour name, with the list of flavours in the error.
pub fn parse_flavour(s: &str) -> Result<Flavour, String> {
    Flavour::ALL
        .into_iter()
        .find(|f| f.as_str() == s.trim())
        .ok_or_else(|| {
            format!(
                "unknown embedded flavour '{s}' (expected one of: {})",
                flavour_names()
            )
        })
}

/// The embedded flavour names, for diagnostics and did-you-mean.
pub fn flavours() -> Vec<&'static str> {
    Flavour::ALL.map(Flavour::as_str).to_vec()
}

impl BrokerChoice {
    /// Parses `KIND[:FLAVOUR]`: `embedded[:FLAVOUR]`, a bare embedded flavour (`router`, `rabbitmq3`),
    /// or `PRODUCT[:VARIANT]` where the variant of RabbitMQ and Artemis is a version (`rabbitmq:3.13`,
    /// `rabbitmq:rabbitmq4`) and that of qpidd and qdrouterd a packaging (`qpidd:centos7`).
    pub fn parse(s: &str) -> Result<BrokerChoice, String> {
        let (kind, variant) = match s.split_once(':') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (s.trim(), None),
        };
        Self::from_parts(kind, variant)
    }

    /// The choice of a `kind:` and a `flavour:` key (as in a scenario's `broker:` section).
    pub fn from_parts(kind: &str, variant: Option<&str>) -> Result<BrokerChoice, String> {
        if kind == "embedded" {
            return Ok(BrokerChoice::Embedded(match variant {
                Some(f) => parse_flavour(f)?,
                None => Flavour::default(),
            }));
        }
        if variant.is_none() && kind != Flavour::Qpidd.as_str() {
            if let Ok(f) = parse_flavour(kind) {
                return Ok(BrokerChoice::Embedded(f));
            }
        }
        let product: Product = kind.parse()?;
        let mut distro = None;
        let mut version = None;
        if let Some(v) = variant.filter(|v| !v.is_empty()) {
            let unprefixed = v.strip_prefix(product.as_str()).unwrap_or(v);
            match Version::parse(unprefixed) {
                Some(ver) if unprefixed.starts_with(|c: char| c.is_ascii_digit()) => {
                    version = Some(ver)
                }
                _ => distro = Some(v.to_string()),
            }
        }
        Ok(BrokerChoice::Real {
            product,
            distro,
            version,
        })
    }

    /// `kind` or `kind:flavour`, as accepted by [`BrokerChoice::parse`].
    pub fn label(&self) -> String {
        match self {
            BrokerChoice::Embedded(f) => format!("embedded:{f}"),
            BrokerChoice::Real {
                product,
                distro,
                version,
            } => match (distro, version, product) {
                (Some(d), _, _) => format!("{product}:{d}"),
                (None, Some(v), Product::Rabbitmq) if v.0.len() == 1 => {
                    format!("{product}:rabbitmq{v}")
                }
                (None, Some(v), _) => format!("{product}:{v}"),
                (None, None, _) => product.to_string(),
            },
        }
    }

    /// The product this choice runs or mimics.
    pub fn product(&self) -> Option<Product> {
        match self {
            BrokerChoice::Embedded(f) => Product::from_open_property(f.product()),
            BrokerChoice::Real { product, .. } => Some(*product),
        }
    }
}

impl fmt::Display for BrokerChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// What a running broker is: its product and version, as its Open properties or the backend tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The product (what the embedded broker mimics, for the embedded broker).
    pub product: Option<Product>,
    /// The product version, if known.
    pub version: Option<Version>,
    /// The embedded flavour, when it is the embedded broker.
    pub embedded: Option<Flavour>,
}

impl Identity {
    /// The identity of an embedded broker of flavour `f` (what its Open frame advertises).
    pub fn embedded(f: Flavour) -> Identity {
        Identity {
            product: Product::from_open_property(f.product()),
            version: Version::parse(f.version()),
            embedded: Some(f),
        }
    }

    /// The identity from a peer's Open properties.
    pub fn from_open(product: Option<&str>, version: Option<&str>) -> Identity {
        Identity {
            product: product.and_then(Product::from_open_property),
            version: version.and_then(Version::parse),
            embedded: None,
        }
    }

    /// `qdrouterd 1.19.0`, `rabbitmq 3.10.8 (embedded rabbitmq3)`, for reports.
    pub fn describe(&self) -> String {
        let mut s = self
            .product
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown broker".into());
        if let Some(v) = &self.version {
            s.push_str(&format!(" {v}"));
        }
        if let Some(f) = self.embedded {
            s.push_str(&format!(" (embedded {f})"));
        }
        s
    }
}

/// Something a scenario can need of a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    /// It keeps messages nobody consumes yet (qpidd, RabbitMQ; a router has no store).
    Store,
    /// It routes oslo's routable addresses (`openstack.org/om/...`, pseudo-vhosts included) out of
    /// the box (qdrouterd; qpidd needs patterns configured for them).
    RoutableAddresses,
    /// It accepts the dynamic reply source the oslo driver attaches (not RabbitMQ).
    DynamicReply,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 3] = [
        Capability::Store,
        Capability::RoutableAddresses,
        Capability::DynamicReply,
    ];

    /// As written in scenarios.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Store => "store",
            Capability::RoutableAddresses => "routable-addresses",
            Capability::DynamicReply => "dynamic-reply",
        }
    }
}

impl Identity {
    /// Whether a broker of this identity has `c` (`None`: unknown product).
    pub fn has(&self, c: Capability) -> Option<bool> {
        let p = self.product?;
        Some(match (c, p) {
            (Capability::Store, p) => p != Product::Qdrouterd,
            (Capability::RoutableAddresses, p) => p == Product::Qdrouterd,
            (Capability::DynamicReply, p) => p != Product::Rabbitmq,
        })
    }

    /// The first of `needs` this broker lacks.
    pub fn lacks(&self, needs: &[Capability]) -> Option<Capability> {
        needs.iter().copied().find(|c| self.has(*c) == Some(false))
    }
}

/// How a known-failure entry names the brokers it applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerMatch {
    /// Any embedded broker (`embedded`), or one flavour (`embedded:router`).
    Embedded(Option<Flavour>),
    /// A product, real or mimicked, optionally at a version prefix (`qdrouterd`, `router`, `rabbitmq3`,
    /// `rabbitmq:4.3`).
    Product(Product, Option<Version>),
}

impl BrokerMatch {
    /// Parses `embedded[:FLAVOUR]`, `PRODUCT[:VERSION]`, `rabbitmqN` or `router`.
    pub fn parse(s: &str) -> Result<BrokerMatch, String> {
        let s = s.trim();
        let (head, tail) = match s.split_once(':') {
            Some((h, t)) => (h, Some(t)),
            None => (s, None),
        };
        if head == "embedded" {
            return Ok(BrokerMatch::Embedded(tail.map(parse_flavour).transpose()?));
        }
        if tail.is_none() {
            if head == "router" {
                return Ok(BrokerMatch::Product(Product::Qdrouterd, None));
            }
            if let Some(v) = head.strip_prefix("rabbitmq").and_then(Version::parse) {
                return Ok(BrokerMatch::Product(Product::Rabbitmq, Some(v)));
            }
        }
        let product: Product = head.parse()?;
        let version = match tail {
            None => None,
            Some(t) => Some(
                Version::parse(t.strip_prefix(product.as_str()).unwrap_or(t)).ok_or_else(|| {
                    format!("'{t}' is not a version (expected e.g. {product}:3.10)")
                })?,
            ),
        };
        Ok(BrokerMatch::Product(product, version))
    }

    /// Whether a broker of identity `id` is one of these.
    pub fn matches(&self, id: &Identity) -> bool {
        match self {
            BrokerMatch::Embedded(None) => id.embedded.is_some(),
            BrokerMatch::Embedded(Some(f)) => id.embedded == Some(*f),
            BrokerMatch::Product(p, v) => {
                id.product == Some(*p)
                    && match v {
                        None => true,
                        Some(want) => id.version.as_ref().is_some_and(|have| have.matches(want)),
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_parse_every_spelling() {
        assert_eq!(
            BrokerChoice::parse("embedded"),
            Ok(BrokerChoice::Embedded(Flavour::Qpidd))
        );
        assert_eq!(
            BrokerChoice::parse("router"),
            Ok(BrokerChoice::Embedded(Flavour::Router))
        );
        assert_eq!(
            BrokerChoice::parse("embedded:rabbitmq3"),
            Ok(BrokerChoice::Embedded(Flavour::Rabbitmq3))
        );
        let q = BrokerChoice::parse("qpidd").expect("qpidd");
        assert_eq!(q.label(), "qpidd");
        assert!(matches!(
            q,
            BrokerChoice::Real {
                product: Product::Qpidd,
                ..
            }
        ));
        let r = BrokerChoice::parse("rabbitmq:rabbitmq3").expect("rabbit");
        assert_eq!(
            r,
            BrokerChoice::Real {
                product: Product::Rabbitmq,
                distro: None,
                version: Version::parse("3")
            }
        );
        assert_eq!(r.label(), "rabbitmq:rabbitmq3");
        assert_eq!(
            BrokerChoice::parse("rabbitmq:4.3.6").expect("v").label(),
            "rabbitmq:4.3.6"
        );
        assert_eq!(
            BrokerChoice::parse("qpidd:centos7")
                .expect("distro")
                .label(),
            "qpidd:centos7"
        );
        let e = BrokerChoice::parse("embedded:qpid").expect_err("bad flavour");
        assert!(e.contains("unknown embedded flavour 'qpid'"), "{e}");
        assert!(BrokerChoice::parse("kafka").is_err());
    }

    #[test]
    fn matches_key_on_what_the_broker_is() {
        let router = BrokerMatch::parse("router").expect("router");
        assert!(router.matches(&Identity::embedded(Flavour::Router)));
        assert!(router.matches(&Identity::from_open(
            Some("qpid-dispatch-router"),
            Some("1.19.0")
        )));
        assert!(!router.matches(&Identity::embedded(Flavour::Qpidd)));
        let r3 = BrokerMatch::parse("rabbitmq3").expect("r3");
        assert!(r3.matches(&Identity::embedded(Flavour::Rabbitmq3)));
        assert!(r3.matches(&Identity::from_open(Some("RabbitMQ"), Some("3.10.8"))));
        assert!(!r3.matches(&Identity::from_open(Some("RabbitMQ"), Some("4.0.5"))));
        let emb = BrokerMatch::parse("embedded:router").expect("emb");
        assert!(emb.matches(&Identity::embedded(Flavour::Router)));
        assert!(!emb.matches(&Identity::from_open(Some("qpid-dispatch-router"), None)));
        assert!(BrokerMatch::parse("rabbitmq:x").is_err());
    }

    #[test]
    fn capabilities_follow_the_product() {
        let needs = [Capability::RoutableAddresses];
        assert_eq!(Identity::embedded(Flavour::Router).lacks(&needs), None);
        assert_eq!(
            Identity::embedded(Flavour::Qpidd).lacks(&needs),
            Some(Capability::RoutableAddresses)
        );
        let rabbit = Identity::from_open(Some("RabbitMQ"), Some("3.10.8"));
        assert_eq!(rabbit.has(Capability::DynamicReply), Some(false));
        assert_eq!(Identity::from_open(None, None).has(Capability::Store), None);
    }

    #[test]
    fn versions_compare_by_prefix() {
        let v = Version::parse("3.10.8-1.1").expect("v");
        assert_eq!(v.to_string(), "3.10.8");
        assert!(v.matches(&Version::parse("3.10").expect("p")));
        assert!(!v.matches(&Version::parse("3.1").expect("p")));
        assert_eq!(
            Product::Rabbitmq.mimic(Version::parse("3").as_ref()),
            Some(Flavour::Rabbitmq3)
        );
        assert_eq!(Version::parse("x"), None);
    }
}
