//! Scenario file model (serde types): the file as written, before [`super::validate`] checks it. Unknown keys are rejected everywhere (`deny_unknown_fields`).
//!
//! Strings may contain `{{ var }}` references; they are substituted after parsing (see [`super::vars`]).
//! Durations are strings such as `500ms` or `2s`, checked during validation.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value as Json;

/// A whole scenario file, as written (see [`super::typed::Scenario`] for the checked form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// Short name (defaults to the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// One-line description, shown by `harness list`.
    #[serde(default)]
    pub description: Option<String>,
    /// What the scenario needs of a broker (`store`, `routable-addresses`, `dynamic-reply`); on a broker
    /// without it the run is reported as not applicable.
    #[serde(default)]
    pub requires: Vec<String>,
    /// The broker to run against.
    #[serde(default)]
    pub broker: BrokerSection,
    /// A second broker for notifications (mixed topologies such as devstack's qpid-dual: a router for
    /// RPC and qpidd for notifications). Services and notifiers get its URL as
    /// `[oslo_messaging_notifications] transport_url`.
    #[serde(default)]
    pub notification_broker: Option<BrokerSection>,
    /// Variables usable as `{{ name }}` in strings; `--var` and `HARNESS_VAR_<NAME>` override them.
    #[serde(default)]
    pub vars: BTreeMap<String, Json>,
    /// Driver options for every client and service (unless a service brings its own config).
    #[serde(default)]
    pub driver: DriverSection,
    /// Services started before the first step.
    #[serde(default)]
    pub services: Vec<Service>,
    /// The steps, run in order (each a one-key mapping such as `- call: {...}`).
    #[serde(deserialize_with = "serde_yaml::with::singleton_map_recursive::deserialize")]
    pub steps: Vec<Step>,
}

/// `broker:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSection {
    /// `embedded` (default), `qpidd`, `qdrouterd`, `rabbitmq`, `artemis`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Flavour: embedded `qpidd` (default), `router`, `rabbitmq3`; real brokers e.g. `rabbitmq3`.
    #[serde(default)]
    pub flavour: Option<String>,
    /// Product version (image tag).
    #[serde(default)]
    pub version: Option<String>,
    /// Number of nodes (default 1).
    #[serde(default)]
    pub nodes: Option<usize>,
    /// SASL users; the first one is used by clients.
    #[serde(default)]
    pub users: Vec<UserSpec>,
    /// Serve TLS.
    #[serde(default)]
    pub tls: bool,
    /// Addressing mode the driver uses: `dynamic` (default), `legacy`, `routable`, `rabbitmq`.
    #[serde(default)]
    pub addressing: Option<String>,
    /// Broker configuration overrides (handed to the backend's templates).
    #[serde(default)]
    pub overrides: BTreeMap<String, String>,
    /// Container image override.
    #[serde(default)]
    pub image: Option<String>,
}

/// A SASL user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Name.
    pub name: String,
    /// Password (redacted in transcripts).
    pub password: String,
}

/// `driver:` section: options shared by the harness client and all services.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// `[oslo_messaging_amqp]` options, by their oslo names (e.g. `default_reply_timeout: 5`).
    #[serde(default)]
    pub options: BTreeMap<String, Json>,
    /// `[DEFAULT] rpc_response_timeout` (duration string; default `5s`).
    #[serde(default)]
    pub rpc_response_timeout: Option<String>,
    /// `[DEFAULT] control_exchange` (default `openstack`).
    #[serde(default)]
    pub control_exchange: Option<String>,
}

/// How a service is run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    /// In-process, on the Rust driver.
    #[default]
    Rust,
    /// In the Python oslo.messaging peer.
    PythonOslo,
}

/// A service: an RPC server or a notification listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name, used by steps and in the transcript.
    pub name: String,
    /// `rust` (default) or `python-oslo`.
    #[serde(default)]
    pub kind: ServiceKind,
    /// Record deliveries under this name instead of the service name, so that servers sharing a topic
    /// (whose share of group calls depends on timing) show up as one stable group in the transcript.
    #[serde(default)]
    pub record_as: Option<String>,
    /// Virtual host: the service's transport URL gets `/<vhost>` (oslo's pseudo-vhost puts it in addresses).
    #[serde(default)]
    pub vhost: Option<String>,
    /// The service is expected not to start, failing with this error kind (e.g. `invalid_target` for a
    /// listener pool, which the AMQP 1.0 driver does not support); the run goes on without it.
    #[serde(default)]
    pub expect_start_error: Option<String>,
    /// Render a nova.conf-style INI from a template and load the driver config from it.
    #[serde(default)]
    pub config: Option<ServiceConfig>,
    /// An RPC server.
    #[serde(default)]
    pub rpc_server: Option<RpcServerSpec>,
    /// A notification listener.
    #[serde(default)]
    pub listener: Option<ListenerSpec>,
}

/// `config:` of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Template path under `templates/` (e.g. `services/nova.conf.tera`).
    pub template: String,
    /// Extra template variables (the scenario's vars and `transport_url` are always there).
    #[serde(default)]
    pub vars: BTreeMap<String, Json>,
}

/// An oslo Target.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Exchange (default: the control exchange).
    #[serde(default)]
    pub exchange: Option<String>,
    /// Topic.
    pub topic: String,
    /// Server (host) name.
    #[serde(default)]
    pub server: Option<String>,
    /// Version (`"1.0"`).
    #[serde(default)]
    pub version: Option<String>,
    /// Namespace.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// `rpc_server:` of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcServerSpec {
    /// Target to listen on (topic, and server for direct calls).
    pub target: TargetSpec,
    /// Endpoints; each has a namespace, a version and methods.
    pub endpoints: Vec<EndpointSpec>,
}

/// One endpoint of an RPC server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Namespace (default none).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Version (default `1.0`).
    #[serde(default)]
    pub version: Option<String>,
    /// Methods by name.
    pub methods: BTreeMap<String, Behaviour>,
}

/// What a method does. With no field set it echoes its arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Sleep this long first (duration).
    #[serde(default)]
    pub sleep: Option<String>,
    /// Return the call's arguments.
    #[serde(default)]
    pub echo: bool,
    /// Return this value.
    #[serde(default, rename = "return")]
    pub returns: Option<Json>,
    /// Raise an exception.
    #[serde(default)]
    pub raise: Option<RaiseSpec>,
    /// Keep state, as oslo's functional tests do: `append` (append `args.value`, return the list), `get`
    /// (return the list), `count` (return the number of calls so far), `add` (add `args.value`, return sum).
    #[serde(default)]
    pub state: Option<String>,
    /// Return the name of the service that handled the call.
    #[serde(default)]
    pub whoami: bool,
}

/// An exception raised by a method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaiseSpec {
    /// Exception class (`ValueError`).
    pub class: String,
    /// Module (`builtins`).
    #[serde(default)]
    pub module: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
}

/// `listener:` of a service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSpec {
    /// Targets (topic, optionally exchange).
    pub targets: Vec<TargetSpec>,
    /// Priorities to listen to (default all: audit, critical, debug, error, info, sample, warn).
    #[serde(default)]
    pub priorities: Vec<String>,
    /// Listener pool name.
    #[serde(default)]
    pub pool: Option<String>,
    /// Requeue the first N deliveries (then ack); default 0.
    #[serde(default)]
    pub requeue: usize,
}

/// A step. Written as a one-key mapping: `- call: {...}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Start a named step group (a JUnit test case).
    Group(String),
    /// RPC call.
    Call(CallStep),
    /// RPC cast.
    Cast(CastStep),
    /// RPC cast to every server of a topic.
    Fanout(CastStep),
    /// Send a notification.
    Notify(NotifyStep),
    /// Wait until services have received deliveries.
    Wait(WaitStep),
    /// Check what services received and broker counters.
    Expect(ExpectStep),
    /// Sleep (duration).
    Sleep(String),
    /// Kill a broker node.
    Kill(NodeStep),
    /// Restart a broker node.
    Restart(NodeStep),
    /// Drop every connection of a broker node.
    DropConnections(NodeStep),
    /// Pause a broker node for a while.
    Pause(PauseStep),
    /// Start background traffic (calls, casts, notifications at a steady pace).
    Traffic(TrafficStep),
    /// Stop background traffic and check what became of it.
    TrafficStop(TrafficStopStep),
    /// Break the network between the clients and a broker node for a while.
    Network(NetworkStep),
    /// A fault inside the broker, through its own fault controls (link closes, forced outcomes,
    /// withheld credit, slow consumers, refused attaches).
    BrokerFault(BrokerFaultStep),
}

impl Step {
    /// Step keyword as written in the file.
    pub fn keyword(&self) -> &'static str {
        match self {
            Step::Group(_) => "group",
            Step::Call(_) => "call",
            Step::Cast(_) => "cast",
            Step::Fanout(_) => "fanout",
            Step::Notify(_) => "notify",
            Step::Wait(_) => "wait",
            Step::Expect(_) => "expect",
            Step::Sleep(_) => "sleep",
            Step::Kill(_) => "kill",
            Step::Restart(_) => "restart",
            Step::DropConnections(_) => "drop_connections",
            Step::Pause(_) => "pause",
            Step::Traffic(_) => "traffic",
            Step::TrafficStop(_) => "traffic_stop",
            Step::Network(_) => "network",
            Step::BrokerFault(_) => "broker_fault",
        }
    }
}

/// A step expected to fail on a given broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownFailure {
    /// Broker label: `kind` or `kind:flavour` (`embedded:rabbitmq3`, `rabbitmq`), or a flavour alone
    /// (`rabbitmq3`), matched against the broker actually used.
    pub broker: String,
    /// The AMQP error condition the failure must carry (`amqp:not-found`), or an error kind (`timed_out`).
    pub condition: String,
    /// Why (shown in the report).
    #[serde(default)]
    pub reason: Option<String>,
}

/// `call:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallStep {
    /// Service whose transport makes the call (default: the harness client).
    #[serde(default)]
    pub from: Option<String>,
    /// Target.
    pub target: TargetSpec,
    /// Method.
    pub method: String,
    /// Keyword arguments.
    #[serde(default)]
    pub args: serde_json::Map<String, Json>,
    /// Request context.
    #[serde(default)]
    pub context: serde_json::Map<String, Json>,
    /// Call timeout (duration; default the driver's rpc_response_timeout).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Call monitor timeout (duration).
    #[serde(default)]
    pub call_monitor_timeout: Option<String>,
    /// Make this many calls.
    #[serde(default)]
    pub repeat: Option<usize>,
    /// Run the repeated calls concurrently, this many at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// Reply mode for this call's client (`dynamic`, `named`, `rabbitmq-direct-reply`, `temporary-queue`).
    #[serde(default)]
    pub reply_mode: Option<String>,
    /// What must come back.
    #[serde(default)]
    pub expect: Option<CallExpect>,
    /// Brokers on which this step is expected to fail.
    #[serde(default)]
    pub known_failures: Vec<KnownFailure>,
}

/// `expect:` of a call.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallExpect {
    /// The result value.
    #[serde(default)]
    pub result: Option<Json>,
    /// The error.
    #[serde(default)]
    pub error: Option<ErrorExpect>,
}

/// An expected error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorExpect {
    /// Error kind: `timed_out`, `remote`, `delivery_failed`, `disconnected`, `invalid_target`, `refused`.
    pub kind: String,
    /// Remote exception class.
    #[serde(default)]
    pub class: Option<String>,
    /// Remote exception module.
    #[serde(default)]
    pub module: Option<String>,
    /// Substring of the message.
    #[serde(default)]
    pub message_contains: Option<String>,
    /// Broker condition.
    #[serde(default)]
    pub condition: Option<String>,
}

/// `cast:` and `fanout:` steps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CastStep {
    /// Service whose transport sends (default: the harness client).
    #[serde(default)]
    pub from: Option<String>,
    /// Target.
    pub target: TargetSpec,
    /// Method.
    pub method: String,
    /// Keyword arguments.
    #[serde(default)]
    pub args: serde_json::Map<String, Json>,
    /// Request context.
    #[serde(default)]
    pub context: serde_json::Map<String, Json>,
    /// Send this many.
    #[serde(default)]
    pub repeat: Option<usize>,
    /// What must happen (`error:` for a failing send).
    #[serde(default)]
    pub expect: Option<CallExpect>,
    /// Brokers on which this step is expected to fail.
    #[serde(default)]
    pub known_failures: Vec<KnownFailure>,
}

/// `notify:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyStep {
    /// Service whose transport sends (default: the harness client). A `python-oslo` service sends
    /// through the Python oslo.messaging notifier.
    #[serde(default)]
    pub from: Option<String>,
    /// Publisher id.
    #[serde(default)]
    pub publisher: Option<String>,
    /// Topics (default `notifications`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Priority: audit, critical, debug, error, info, sample, warn.
    pub priority: String,
    /// Event type.
    pub event_type: String,
    /// Payload.
    #[serde(default)]
    pub payload: Json,
    /// Request context.
    #[serde(default)]
    pub context: serde_json::Map<String, Json>,
    /// Message format: 2 (default, messaging v2 envelope) or 1.
    #[serde(default)]
    pub version: Option<u64>,
    /// Send this many.
    #[serde(default)]
    pub repeat: Option<usize>,
    /// What must happen (`error:` for a failing send).
    #[serde(default)]
    pub expect: Option<CallExpect>,
    /// Brokers on which this step is expected to fail.
    #[serde(default)]
    pub known_failures: Vec<KnownFailure>,
}

/// `wait:` step: until each named service received at least N deliveries in total.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    /// Service name -> total deliveries to wait for.
    pub deliveries: BTreeMap<String, usize>,
    /// Give up after (duration; default 10s).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `expect:` step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectStep {
    /// Service -> total deliveries received so far (calls, casts, notifications).
    #[serde(default)]
    pub deliveries: BTreeMap<String, usize>,
    /// Service -> method (or `priority:event_type` for listeners) -> count.
    #[serde(default)]
    pub received: BTreeMap<String, BTreeMap<String, usize>>,
    /// Broker counters that must match (a JSON subset of node0's counters).
    #[serde(default)]
    pub broker_counters: Option<Json>,
}

/// A broker node reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeStep {
    /// Node name (`node0`) or index; default `node0`.
    #[serde(default)]
    pub node: Option<String>,
}

/// `pause:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PauseStep {
    /// Node name or index; default `node0`.
    #[serde(default)]
    pub node: Option<String>,
    /// How long (duration).
    #[serde(rename = "for")]
    pub duration: String,
}

/// `traffic:` step: background traffic until `traffic_stop` names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficStep {
    /// Name, for `traffic_stop`.
    pub name: String,
    /// RPC calls.
    #[serde(default)]
    pub calls: Option<TrafficCalls>,
    /// RPC casts.
    #[serde(default)]
    pub casts: Option<TrafficCasts>,
    /// Notifications.
    #[serde(default)]
    pub notifications: Option<TrafficNotifications>,
}

/// Calls of a `traffic:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficCalls {
    /// Target.
    pub target: TargetSpec,
    /// Method (its server must echo or return: every call's arguments carry a sequence number).
    pub method: String,
    /// One call this often (duration).
    pub every: String,
    /// Call timeout (duration; default the driver's rpc_response_timeout).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// Casts of a `traffic:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficCasts {
    /// Target.
    pub target: TargetSpec,
    /// Method.
    pub method: String,
    /// One cast this often (duration).
    pub every: String,
}

/// Notifications of a `traffic:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficNotifications {
    /// Topics (default `notifications`).
    #[serde(default)]
    pub topics: Vec<String>,
    /// Priority.
    pub priority: String,
    /// Event type.
    pub event_type: String,
    /// One notification this often (duration).
    pub every: String,
}

/// `traffic_stop:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficStopStep {
    /// The traffic to stop.
    pub name: String,
    /// How long to wait for outstanding calls and deliveries (duration; default 10s).
    #[serde(default)]
    pub drain: Option<String>,
    /// What must hold (a hung call always fails the step).
    #[serde(default)]
    pub expect: TrafficExpect,
}

/// What a `traffic_stop` checks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficExpect {
    /// Acknowledged notifications never received (default: not checked).
    #[serde(default)]
    pub lost: Option<usize>,
    /// At least this many calls succeeded (after the faults, the driver recovered).
    #[serde(default)]
    pub calls_ok_at_least: Option<usize>,
}

/// `network:` step: one network fault on a node's port, for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkStep {
    /// Node name or index; default `node0`.
    #[serde(default)]
    pub node: Option<String>,
    /// Drop every packet to and from the node (a partition).
    #[serde(default)]
    pub partition: bool,
    /// Drop this share of packets (`20%`).
    #[serde(default)]
    pub loss: Option<String>,
    /// Delay every chunk each way by this much (duration).
    #[serde(default)]
    pub latency: Option<String>,
    /// How long (duration).
    #[serde(rename = "for")]
    pub duration: String,
}

/// `broker_fault:` step: exactly one of its faults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerFaultStep {
    /// Node name or index; default `node0`.
    #[serde(default)]
    pub node: Option<String>,
    /// Close links on matching addresses, `times` closes in all (a retry budget's test).
    #[serde(default)]
    pub close_links: Option<CloseLinksFault>,
    /// Refuse attaches to matching addresses.
    #[serde(default)]
    pub refuse_attach: Option<RefuseAttachFault>,
    /// Answer the next N incoming unsettled deliveries `released` (not routed).
    #[serde(default)]
    pub release_next: Option<usize>,
    /// Answer the next N incoming unsettled deliveries `rejected` (not routed).
    #[serde(default)]
    pub reject_next: Option<usize>,
    /// Answer the next deliveries `modified` (not routed).
    #[serde(default)]
    pub modify_next: Option<ModifyNextFault>,
    /// Give producers on matching addresses no credit.
    #[serde(default)]
    pub withhold_credit: Option<AddressFault>,
    /// Delay each delivery to consumers on matching addresses.
    #[serde(default)]
    pub slow_consumers: Option<SlowConsumersFault>,
    /// Clear every broker fault of the node.
    #[serde(default)]
    pub clear: bool,
}

/// `close_links:` of a `broker_fault:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseLinksFault {
    /// Address pattern (unanchored regular expression).
    pub address: String,
    /// How many closes in all (links attached now first, then each new attach); default 1.
    #[serde(default)]
    pub times: Option<usize>,
    /// The error condition of the detach (default `amqp:internal-error`).
    #[serde(default)]
    pub condition: Option<String>,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `refuse_attach:` of a `broker_fault:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefuseAttachFault {
    /// Address pattern (unanchored regular expression).
    pub address: String,
    /// The error condition (default `amqp:not-found`).
    #[serde(default)]
    pub condition: Option<String>,
    /// Its description.
    #[serde(default)]
    pub description: Option<String>,
}

/// `modify_next:` of a `broker_fault:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModifyNextFault {
    /// How many deliveries.
    pub count: usize,
    /// The `delivery-failed` flag.
    #[serde(default)]
    pub delivery_failed: bool,
    /// The `undeliverable-here` flag.
    #[serde(default)]
    pub undeliverable_here: bool,
}

/// An address pattern and an optional time (`withhold_credit:`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressFault {
    /// Address pattern (unanchored regular expression).
    pub address: String,
    /// For how long (duration); until `clear` when not given.
    #[serde(rename = "for", default)]
    pub duration: Option<String>,
}

/// `slow_consumers:` of a `broker_fault:` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConsumersFault {
    /// Address pattern (unanchored regular expression).
    pub address: String,
    /// Delay before each delivery (duration).
    pub delay: String,
    /// For how long (duration); until `clear` when not given.
    #[serde(rename = "for", default)]
    pub duration: Option<String>,
}
