//! The typed scenario: what [`super::validate`] makes of a file's [`super::model`] once every value has
//! been checked. Durations are [`Duration`]s, vocabularies are the driver's enums, references are
//! resolved, counts are bounded ([`super::limits`]); nothing after validation parses a string again.

use std::collections::BTreeMap;
use std::time::Duration;

use driver::options::{AddressingMode, ReplyMode};
use driver::{NotifyVersion, Priority, Target};
use serde_json::Value as Json;

use crate::brokers::{BrokerChoice, BrokerMatch};
use crate::secret::Password;

/// A loaded, valid scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (the `name:` key, else the file stem).
    pub name: String,
    /// One-line description.
    pub description: Option<String>,
    /// What it needs of a broker.
    pub requires: Vec<crate::brokers::Capability>,
    /// The broker to run against.
    pub broker: BrokerReq,
    /// A second broker for notifications (mixed topologies).
    pub notification_broker: Option<BrokerReq>,
    /// Driver settings shared by the harness client and every service.
    pub driver: DriverSettings,
    /// Services started before the first step.
    pub services: Vec<Service>,
    /// The steps, in order; groups included (numbered with the others).
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Every password the file holds (users of both brokers), for redaction.
    pub fn passwords(&self) -> Vec<Password> {
        self.broker
            .users
            .iter()
            .chain(self.notification_broker.iter().flat_map(|b| b.users.iter()))
            .map(|u| u.password.clone())
            .collect()
    }

    /// The service called `name`.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A SASL user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Name.
    pub name: String,
    /// Password (never printed).
    pub password: Password,
}

/// A scenario's `broker:` or `notification_broker:` section.
#[derive(Debug, Clone, Default)]
pub struct BrokerReq {
    /// Which broker.
    pub choice: BrokerChoice,
    /// Number of nodes.
    pub nodes: usize,
    /// SASL users; the first one is used by clients.
    pub users: Vec<User>,
    /// Serve TLS.
    pub tls: bool,
    /// Addressing mode the driver uses with this broker (`None`: the driver's default).
    pub addressing: Option<AddressingMode>,
    /// Broker configuration overrides (handed to the backend's templates).
    pub overrides: BTreeMap<String, String>,
    /// Container image override.
    pub image: Option<String>,
}

/// `driver:` settings.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// `[oslo_messaging_amqp]` options by their oslo names, checked against the driver's option table
    /// (values in oslo's text form, as an INI or the Python driver takes them).
    pub options: BTreeMap<String, String>,
    /// The same options applied to the driver's typed options, on top of the harness defaults.
    pub amqp: driver::AmqpOptions,
    /// `[DEFAULT] rpc_response_timeout`, if set.
    pub rpc_response_timeout: Option<Duration>,
    /// `[DEFAULT] control_exchange`, if set.
    pub control_exchange: Option<String>,
}

/// How a service is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceKind {
    /// In-process, on the Rust driver.
    Rust,
    /// In the Python oslo.messaging peer.
    PythonOslo,
}

impl ServiceKind {
    /// As written in scenarios.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Rust => "rust",
            ServiceKind::PythonOslo => "python-oslo",
        }
    }
}

/// A service of the scenario.
#[derive(Debug, Clone)]
pub struct Service {
    /// Unique name.
    pub name: String,
    /// Rust or Python.
    pub kind: ServiceKind,
    /// The name its deliveries are recorded under (`record_as`, else its name).
    pub record_as: String,
    /// Virtual host for its transport URL.
    pub vhost: Option<String>,
    /// It is expected not to start, with this error kind.
    pub expect_start_error: Option<ErrorKind>,
    /// Render its driver configuration from this template.
    pub config: Option<ServiceConfig>,
    /// What it is.
    pub role: Role,
}

/// `config:` of a service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Template path under `templates/`.
    pub template: String,
    /// Extra template variables.
    pub vars: BTreeMap<String, Json>,
}

/// What a service does.
#[derive(Debug, Clone)]
pub enum Role {
    /// An RPC server.
    RpcServer {
        /// Where it listens.
        target: Target,
        /// Its endpoints.
        endpoints: Vec<Endpoint>,
    },
    /// A notification listener.
    Listener {
        /// Targets (topics).
        targets: Vec<Target>,
        /// Priorities listened to (all when the file names none).
        priorities: Vec<Priority>,
        /// Whether the file named them (the Python peer is only told then).
        priorities_named: bool,
        /// Pool name.
        pool: Option<String>,
        /// Requeue the first N deliveries.
        requeue: usize,
    },
}

/// One endpoint of an RPC server.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Namespace.
    pub namespace: Option<String>,
    /// Version.
    pub version: Option<String>,
    /// Methods by name.
    pub methods: BTreeMap<String, Behaviour>,
}

/// What a method does.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Sleep this long first.
    pub sleep: Option<Duration>,
    /// Then this.
    pub action: Action,
}

/// The outcome of a method.
#[derive(Debug, Clone)]
pub enum Action {
    /// Return the arguments.
    Echo,
    /// Return this value.
    Return(Json),
    /// Raise an exception.
    Raise {
        /// Class.
        class: String,
        /// Module (default `builtins`).
        module: Option<String>,
        /// Message.
        message: Option<String>,
    },
    /// Keep state.
    State(StateOp),
    /// Return the service's name.
    Whoami,
}

/// Stateful behaviours, as oslo's functional tests use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOp {
    /// Append `args.value`, return the list.
    Append,
    /// Return the list.
    Get,
    /// Return the number of calls so far.
    Count,
    /// Add `args.value`, return the sum.
    Add,
}

impl StateOp {
    /// Every operation, in the order diagnostics list them.
    pub const ALL: [StateOp; 4] = [StateOp::Append, StateOp::Get, StateOp::Count, StateOp::Add];

    /// As written in scenarios.
    pub fn as_str(self) -> &'static str {
        match self {
            StateOp::Append => "append",
            StateOp::Get => "get",
            StateOp::Count => "count",
            StateOp::Add => "add",
        }
    }
}

/// How an operation failed, across calls, casts, notifications and service start-up. The driver has
/// one enum per operation; this is their union, plus `other` for failures outside the driver (the
/// Python peer's control channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// No reply or settlement in time.
    TimedOut,
    /// The remote endpoint raised.
    Remote,
    /// The broker did not accept the message.
    DeliveryFailed,
    /// The connection was lost.
    Disconnected,
    /// The target is not valid.
    InvalidTarget,
    /// The broker refused a link.
    Refused,
    /// The transport was closed.
    Closed,
    /// Anything else (the Python peer failed, ...).
    Other,
}

impl ErrorKind {
    /// The kinds a scenario can expect of a call, cast or notification.
    pub const EXPECTABLE: [ErrorKind; 6] = [
        ErrorKind::TimedOut,
        ErrorKind::Remote,
        ErrorKind::DeliveryFailed,
        ErrorKind::Disconnected,
        ErrorKind::InvalidTarget,
        ErrorKind::Refused,
    ];
    /// The kinds a scenario can expect of a service that does not start.
    pub const START: [ErrorKind; 5] = [
        ErrorKind::TimedOut,
        ErrorKind::Refused,
        ErrorKind::InvalidTarget,
        ErrorKind::Disconnected,
        ErrorKind::Closed,
    ];

    /// The snake_case name (the driver's `as_str` spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::TimedOut => "timed_out",
            ErrorKind::Remote => "remote",
            ErrorKind::DeliveryFailed => "delivery_failed",
            ErrorKind::Disconnected => "disconnected",
            ErrorKind::InvalidTarget => "invalid_target",
            ErrorKind::Refused => "refused",
            ErrorKind::Closed => "closed",
            ErrorKind::Other => "other",
        }
    }

    /// Parses one of `allowed` by its name.
    pub fn parse_in(s: &str, allowed: &[ErrorKind]) -> Option<ErrorKind> {
        allowed.iter().copied().find(|k| k.as_str() == s)
    }

    /// The kind a driver error kind name maps to (`timed_out`, `refused`...).
    pub fn from_driver(name: &str) -> ErrorKind {
        [
            ErrorKind::TimedOut,
            ErrorKind::Remote,
            ErrorKind::DeliveryFailed,
            ErrorKind::Disconnected,
            ErrorKind::InvalidTarget,
            ErrorKind::Refused,
            ErrorKind::Closed,
        ]
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or(ErrorKind::Other)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step, with where it stands.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based number in the `steps:` list (groups count), the one every report uses.
    pub number: usize,
    /// Line of its keyword in the file (0 when unknown).
    pub line: usize,
    /// What it does.
    pub kind: StepKind,
}

impl Step {
    /// The keyword as written in the file.
    pub fn keyword(&self) -> &'static str {
        self.kind.keyword()
    }
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// Start a named group (a JUnit test case).
    Group(String),
    /// RPC call(s).
    Call(Call),
    /// RPC cast(s), to one server (`fanout: false`) or every server of a topic.
    Cast(Cast),
    /// Notification(s).
    Notify(Notify),
    /// Wait for deliveries.
    Wait(Wait),
    /// Check deliveries and broker counters.
    Expect(Expect),
    /// Sleep.
    Sleep(Duration),
    /// A broker fault.
    Fault(Fault),
    /// Start background traffic.
    Traffic(Traffic),
    /// Stop background traffic and check it.
    TrafficStop(TrafficStop),
    /// A network fault.
    Network(NetFault),
    /// A fault inside the broker.
    BrokerFault(BrokerFault),
}

impl StepKind {
    /// The keyword as written in the file.
    pub fn keyword(&self) -> &'static str {
        match self {
            StepKind::Group(_) => "group",
            StepKind::Call(_) => "call",
            StepKind::Cast(c) if c.fanout => "fanout",
            StepKind::Cast(_) => "cast",
            StepKind::Notify(_) => "notify",
            StepKind::Wait(_) => "wait",
            StepKind::Expect(_) => "expect",
            StepKind::Sleep(_) => "sleep",
            StepKind::Fault(f) => f.op.as_str(),
            StepKind::Traffic(_) => "traffic",
            StepKind::TrafficStop(_) => "traffic_stop",
            StepKind::Network(_) => "network",
            StepKind::BrokerFault(_) => "broker_fault",
        }
    }
}

/// What a call, cast or notification must give, on brokers the registry does not list.
#[derive(Debug, Clone, Default)]
pub struct Expectation {
    /// The result value (calls only).
    pub result: Option<Json>,
    /// The error.
    pub error: Option<ErrorExpect>,
}

/// An expected error.
#[derive(Debug, Clone)]
pub struct ErrorExpect {
    /// Kind.
    pub kind: ErrorKind,
    /// Remote exception class.
    pub class: Option<String>,
    /// Remote exception module.
    pub module: Option<String>,
    /// Substring of the message.
    pub message_contains: Option<String>,
    /// Broker condition.
    pub condition: Option<String>,
}

/// A step expected to fail on some brokers.
#[derive(Debug, Clone)]
pub struct KnownFailure {
    /// The brokers it applies to.
    pub broker: BrokerMatch,
    /// As written, for reports.
    pub broker_label: String,
    /// What the failure must carry.
    pub condition: FailureCondition,
    /// Why.
    pub reason: Option<String>,
}

/// What a known failure must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureCondition {
    /// An error of this kind.
    Kind(ErrorKind),
    /// The broker's AMQP condition (`amqp:not-found`).
    Amqp(String),
}

impl FailureCondition {
    /// As written.
    pub fn as_str(&self) -> &str {
        match self {
            FailureCondition::Kind(k) => k.as_str(),
            FailureCondition::Amqp(c) => c,
        }
    }
}

/// Where a call, cast or notification is sent from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// The harness client.
    Client,
    /// The transport of this service.
    Service(String),
}

/// `call:`.
#[derive(Debug, Clone)]
pub struct Call {
    /// Sender.
    pub from: Sender,
    /// Target.
    pub target: Target,
    /// Method.
    pub method: String,
    /// Keyword arguments.
    pub args: serde_json::Map<String, Json>,
    /// Request context.
    pub context: serde_json::Map<String, Json>,
    /// Call timeout.
    pub timeout: Option<Duration>,
    /// Call monitor timeout.
    pub call_monitor_timeout: Option<Duration>,
    /// Number of calls.
    pub repeat: usize,
    /// How many at once.
    pub concurrency: usize,
    /// Whether `repeat:` was written (the transcript shows `xN` then).
    pub repeated: bool,
    /// Reply mode for this call's client.
    pub reply_mode: Option<ReplyMode>,
    /// Expectation.
    pub expect: Expectation,
    /// Registry.
    pub known_failures: Vec<KnownFailure>,
}

/// `cast:` and `fanout:`.
#[derive(Debug, Clone)]
pub struct Cast {
    /// Sender.
    pub from: Sender,
    /// Target (its `fanout` flag set for `fanout:`).
    pub target: Target,
    /// Fanout.
    pub fanout: bool,
    /// Method.
    pub method: String,
    /// Keyword arguments.
    pub args: serde_json::Map<String, Json>,
    /// Request context.
    pub context: serde_json::Map<String, Json>,
    /// Number of casts.
    pub repeat: usize,
    /// Expectation (`error:` only).
    pub expect: Expectation,
    /// Registry.
    pub known_failures: Vec<KnownFailure>,
}

/// `notify:`.
#[derive(Debug, Clone)]
pub struct Notify {
    /// Sender.
    pub from: Sender,
    /// Publisher id (default `harness`, or the sending service's name).
    pub publisher: Option<String>,
    /// Topics (default `notifications`).
    pub topics: Vec<String>,
    /// Priority.
    pub priority: Priority,
    /// Event type.
    pub event_type: String,
    /// Payload.
    pub payload: Json,
    /// Request context.
    pub context: serde_json::Map<String, Json>,
    /// Message format.
    pub version: NotifyVersion,
    /// Number of notifications.
    pub repeat: usize,
    /// Expectation (`error:` only).
    pub expect: Expectation,
    /// Registry.
    pub known_failures: Vec<KnownFailure>,
}

/// `wait:`.
#[derive(Debug, Clone)]
pub struct Wait {
    /// Service -> total deliveries to wait for.
    pub deliveries: BTreeMap<String, usize>,
    /// Give up after.
    pub timeout: Duration,
}

/// `expect:` (the step).
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Service -> total deliveries.
    pub deliveries: BTreeMap<String, usize>,
    /// Service -> key -> count.
    pub received: BTreeMap<String, BTreeMap<String, usize>>,
    /// Broker counters that must match (a JSON subset of node0's counters).
    pub broker_counters: Option<Json>,
}

/// A broker fault step.
#[derive(Debug, Clone)]
pub struct Fault {
    /// What.
    pub op: FaultOp,
    /// Which node (index).
    pub node: usize,
}

/// Broker faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// Kill the node.
    Kill,
    /// Restart it.
    Restart,
    /// Drop its client connections.
    DropConnections,
    /// Freeze it for a while.
    Pause(Duration),
}

impl FaultOp {
    /// The keyword.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultOp::Kill => "kill",
            FaultOp::Restart => "restart",
            FaultOp::DropConnections => "drop_connections",
            FaultOp::Pause(_) => "pause",
        }
    }
}

/// Background traffic (`traffic:`).
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Name.
    pub name: String,
    /// Calls: target, method, interval, timeout.
    pub calls: Option<TrafficCalls>,
    /// Casts: target, method, interval.
    pub casts: Option<TrafficCasts>,
    /// Notifications: topics, priority, event type, interval.
    pub notifications: Option<TrafficNotifications>,
}

/// Calls of a traffic.
#[derive(Debug, Clone)]
pub struct TrafficCalls {
    /// Target.
    pub target: Target,
    /// Method.
    pub method: String,
    /// Interval.
    pub every: Duration,
    /// Call timeout.
    pub timeout: Option<Duration>,
}

/// Casts of a traffic.
#[derive(Debug, Clone)]
pub struct TrafficCasts {
    /// Target.
    pub target: Target,
    /// Method.
    pub method: String,
    /// Interval.
    pub every: Duration,
}

/// Notifications of a traffic.
#[derive(Debug, Clone)]
pub struct TrafficNotifications {
    /// Topics.
    pub topics: Vec<String>,
    /// Priority.
    pub priority: Priority,
    /// Event type.
    pub event_type: String,
    /// Interval.
    pub every: Duration,
}

/// `traffic_stop:`.
#[derive(Debug, Clone)]
pub struct TrafficStop {
    /// The traffic.
    pub name: String,
    /// How long to wait for what is outstanding.
    pub drain: Duration,
    /// Acknowledged notifications allowed to be missing, if checked.
    pub lost: Option<usize>,
    /// Calls that must have succeeded, at least.
    pub calls_ok_at_least: Option<usize>,
}

/// A network fault on one node's port (`network:`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetFault {
    /// Which node (index).
    pub node: usize,
    /// What.
    pub kind: NetFaultKind,
    /// For how long.
    pub duration: Duration,
}

/// Network faults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NetFaultKind {
    /// Every packet to and from the node is dropped.
    Partition,
    /// This share of packets (percent, 1 to 100) is dropped.
    Loss(u8),
    /// Each chunk is delayed this much each way (through a proxy the run puts in front of the node).
    Latency(Duration),
}

impl Scenario {
    /// Whether any step delays traffic (the run then reaches the broker through a proxy).
    pub fn needs_latency_proxy(&self) -> bool {
        self.steps.iter().any(|s| {
            matches!(
                s.kind,
                StepKind::Network(NetFault {
                    kind: NetFaultKind::Latency(_),
                    ..
                })
            )
        })
    }
}

/// A fault inside one broker node (`broker_fault:`).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerFault {
    /// Which node (index).
    pub node: usize,
    /// What.
    pub op: BrokerFaultOp,
}

/// Faults inside a broker.
#[derive(Debug, Clone, PartialEq)]
pub enum BrokerFaultOp {
    /// Close links on addresses matching `address`, `times` closes in all.
    CloseLinks {
        /// Address pattern.
        address: String,
        /// Closes in all.
        times: usize,
        /// Error condition.
        condition: String,
        /// Error description.
        description: String,
    },
    /// Refuse attaches to addresses matching `address`.
    RefuseAttach {
        /// Address pattern.
        address: String,
        /// Error condition.
        condition: String,
        /// Error description.
        description: String,
    },
    /// Answer the next `count` incoming deliveries `released`.
    ReleaseNext(usize),
    /// Answer the next `count` incoming deliveries `rejected`.
    RejectNext(usize),
    /// Answer the next `count` incoming deliveries `modified`.
    ModifyNext {
        /// How many.
        count: usize,
        /// `delivery-failed`.
        delivery_failed: bool,
        /// `undeliverable-here`.
        undeliverable_here: bool,
    },
    /// No credit for producers on matching addresses (for a while, or until cleared).
    WithholdCredit {
        /// Address pattern.
        address: String,
        /// For how long.
        duration: Option<Duration>,
    },
    /// Delay each delivery to consumers on matching addresses.
    SlowConsumers {
        /// Address pattern.
        address: String,
        /// Delay per delivery.
        delay: Duration,
        /// For how long.
        duration: Option<Duration>,
    },
    /// Clear every fault.
    Clear,
}

impl BrokerFaultOp {
    /// Short description for the transcript (`close_links /exclusive/ x3`).
    pub fn label(&self) -> String {
        match self {
            BrokerFaultOp::CloseLinks { address, times, .. } => {
                format!("close_links /{address}/ x{times}")
            }
            BrokerFaultOp::RefuseAttach { address, .. } => format!("refuse_attach /{address}/"),
            BrokerFaultOp::ReleaseNext(n) => format!("release_next {n}"),
            BrokerFaultOp::RejectNext(n) => format!("reject_next {n}"),
            BrokerFaultOp::ModifyNext { count, .. } => format!("modify_next {count}"),
            BrokerFaultOp::WithholdCredit { address, .. } => {
                format!("withhold_credit /{address}/")
            }
            BrokerFaultOp::SlowConsumers { address, .. } => format!("slow_consumers /{address}/"),
            BrokerFaultOp::Clear => "clear".to_string(),
        }
    }
}

/// Short display of a target: `[exchange/]topic[.server][ v1.0][ ns=x]`.
pub fn target_label(t: &Target) -> String {
    let mut s = String::new();
    if let Some(x) = &t.exchange {
        s.push_str(x);
        s.push('/');
    }
    s.push_str(&t.topic);
    if let Some(srv) = &t.server {
        s.push('.');
        s.push_str(srv);
    }
    if let Some(v) = &t.version {
        s.push_str(&format!(" v{v}"));
    }
    if let Some(n) = &t.namespace {
        s.push_str(&format!(" ns={n}"));
    }
    s
}
