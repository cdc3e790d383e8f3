//! From the file's serde model to the typed [`Scenario`]: every value is checked once, here, with a
//! diagnostic pointing at it; what passes is converted to its type (the driver's enums, [`Duration`],
//! resolved references), so nothing later parses a string again.

use std::collections::BTreeMap;
use std::time::Duration;

use driver::options::{AddressingMode, ReplyMode};
use driver::{AmqpOptions, NotifyVersion, Priority, Target};
use serde_json::Value as Json;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::limits;
use super::locate::Locator;
use super::model;
use super::typed::*;
use crate::brokers::{self, BrokerChoice, BrokerMatch, Capability, Product};

/// Parses a scenario duration (`500ms`, `2s`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e}"))
}

/// The harness's defaults for every client and service: fast reconnects keep fault scenarios quick.
pub const HARNESS_DRIVER_DEFAULTS: [(&str, &str); 3] = [
    ("connection_retry_interval", "1"),
    ("connection_retry_backoff", "0"),
    ("connection_retry_interval_max", "1"),
];

/// The default `rpc_response_timeout` of harness clients (oslo's is 60 s; scenarios want quick failures).
pub const DEFAULT_RPC_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The default `wait:` timeout.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Collects diagnostics while converting.
struct V<'a> {
    loc: &'a Locator,
    out: Vec<Diagnostic>,
}

impl V<'_> {
    fn at(&mut self, path: &str, message: String, label: &str, help: Option<String>) {
        let span = self.loc.nearest(path);
        self.out
            .push(Diagnostic::new(message, span, label).with_help(help));
    }

    fn at_key(&mut self, path: &str, message: String, label: &str, help: Option<String>) {
        let span = self.loc.key(path).unwrap_or_else(|| self.loc.nearest(path));
        self.out
            .push(Diagnostic::new(message, span, label).with_help(help));
    }

    fn duration(&mut self, path: &str, value: &Option<String>) -> Option<Duration> {
        value.as_deref().and_then(|v| self.duration_str(path, v))
    }

    fn duration_str(&mut self, path: &str, v: &str) -> Option<Duration> {
        match parse_duration(v) {
            Ok(d) if d <= limits::MAX_DURATION => Some(d),
            Ok(_) => {
                self.at(
                    path,
                    format!("duration '{v}' is too long"),
                    &format!("at most {}", limits::max_duration_text()),
                    None,
                );
                None
            }
            Err(e) => {
                self.at(
                    path,
                    format!("invalid duration '{v}': {e}"),
                    "expected a duration such as 500ms, 2s or 1m",
                    None,
                );
                None
            }
        }
    }

    /// `v` as one of `allowed` (matched by `name`), else a diagnostic with the list and a did-you-mean.
    fn one_of<T: Copy>(
        &mut self,
        path: &str,
        what: &str,
        v: &str,
        allowed: &[T],
        name: impl Fn(T) -> &'static str,
    ) -> Option<T> {
        if let Some(x) = allowed.iter().copied().find(|x| name(*x) == v) {
            return Some(x);
        }
        let names: Vec<&str> = allowed.iter().map(|x| name(*x)).collect();
        self.at(
            path,
            format!("unknown {what} '{v}'"),
            &format!("expected one of: {}", names.join(", ")),
            did_you_mean(v, names.iter().copied()),
        );
        None
    }

    /// A count between `min` and `max`.
    fn count(&mut self, path: &str, key: &str, n: usize, min: usize, max: usize) -> Option<usize> {
        if n < min {
            self.at(
                path,
                format!("`{key}` must be at least {min}"),
                &format!("expected {min} or more"),
                None,
            );
            None
        } else if n > max {
            self.at(
                path,
                format!("`{key}` must be at most {max}"),
                &format!("expected {min} to {max}"),
                None,
            );
            None
        } else {
            Some(n)
        }
    }

    fn service_ref(&mut self, path: &str, name: &str, services: &[&str], key: bool) -> bool {
        if services.contains(&name) {
            return true;
        }
        let msg = format!("unknown service '{name}'");
        let label = if services.is_empty() {
            "no services are defined".to_string()
        } else {
            format!("defined services: {}", services.join(", "))
        };
        let help = did_you_mean(name, services.iter().copied());
        if key {
            self.at_key(path, msg, &label, help);
        } else {
            self.at(path, msg, &label, help);
        }
        false
    }

    fn target(&mut self, path: &str, t: &model::TargetSpec) -> Target {
        if t.topic.trim().is_empty() {
            self.at(
                &format!("{path}.topic"),
                "empty topic".into(),
                "a target needs a topic",
                None,
            );
        }
        let mut target = Target::topic(t.topic.clone());
        target.exchange = t.exchange.clone();
        target.server = t.server.clone();
        target.version = t.version.clone();
        target.namespace = t.namespace.clone();
        target
    }

    fn sender(&mut self, path: &str, from: &Option<String>, names: &[&str]) -> Sender {
        match from {
            Some(f) => {
                self.service_ref(&format!("{path}.from"), f, names, false);
                Sender::Service(f.clone())
            }
            None => Sender::Client,
        }
    }

    fn expectation(&mut self, path: &str, e: &Option<model::CallExpect>) -> Expectation {
        let Some(e) = e else {
            return Expectation::default();
        };
        if e.result.is_some() && e.error.is_some() {
            self.at_key(
                &format!("{path}.error"),
                "`expect` names both a result and an error".into(),
                "a call either returns or fails",
                Some("remove `result:` or `error:`".into()),
            );
        }
        let error = e.error.as_ref().and_then(|err| {
            let kind = self.one_of(
                &format!("{path}.error.kind"),
                "error kind",
                &err.kind,
                &ErrorKind::EXPECTABLE,
                ErrorKind::as_str,
            )?;
            Some(ErrorExpect {
                kind,
                class: err.class.clone(),
                module: err.module.clone(),
                message_contains: err.message_contains.clone(),
                condition: err.condition.clone(),
            })
        });
        Expectation {
            result: e.result.clone(),
            error,
        }
    }

    fn known(&mut self, path: &str, k: &[model::KnownFailure]) -> Vec<KnownFailure> {
        let mut out = Vec::new();
        for (i, f) in k.iter().enumerate() {
            let condition = f.condition.trim();
            if condition.is_empty() {
                self.at(
                    &format!("{path}.{i}.condition"),
                    "empty condition in known failure".into(),
                    "expected an AMQP condition such as amqp:not-found, or an error kind",
                    None,
                );
                continue;
            }
            let broker = match BrokerMatch::parse(&f.broker) {
                Ok(b) => b,
                Err(e) => {
                    self.at(
                        &format!("{path}.{i}.broker"),
                        format!("unknown broker '{}' in known failure", f.broker),
                        &e,
                        None,
                    );
                    continue;
                }
            };
            let condition = match ErrorKind::parse_in(condition, &ErrorKind::EXPECTABLE) {
                Some(kind) => FailureCondition::Kind(kind),
                None => FailureCondition::Amqp(condition.to_string()),
            };
            out.push(KnownFailure {
                broker,
                broker_label: f.broker.clone(),
                condition,
                reason: f.reason.clone(),
            });
        }
        out
    }
}

/// Converts `raw` (named `default_name` unless it has a `name:`) to a typed scenario, or every problem.
pub fn validate(
    raw: &model::ScenarioFile,
    loc: &Locator,
    default_name: &str,
) -> Result<Scenario, Vec<Diagnostic>> {
    let mut v = V {
        loc,
        out: Vec::new(),
    };
    let requires = raw
        .requires
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            v.one_of(
                &format!("requires.{i}"),
                "capability",
                c,
                &Capability::ALL,
                Capability::as_str,
            )
        })
        .collect();
    let broker = broker_req(&mut v, "broker", &raw.broker);
    let notification_broker = raw
        .notification_broker
        .as_ref()
        .map(|nb| broker_req(&mut v, "notification_broker", nb));
    let driver = driver_settings(&mut v, &raw.driver, broker.addressing);
    let services = services(&mut v, &raw.services);
    let steps = steps(&mut v, raw, &services, broker.nodes.max(1));
    if v.out.is_empty() {
        Ok(Scenario {
            name: raw.name.clone().unwrap_or_else(|| default_name.to_string()),
            description: raw.description.clone(),
            requires,
            broker,
            notification_broker,
            driver,
            services,
            steps,
        })
    } else {
        let mut out = v.out;
        out.sort_by_key(|d| (d.span.line, d.span.col));
        Err(out)
    }
}

fn broker_req(v: &mut V<'_>, p: &str, b: &model::BrokerSection) -> BrokerReq {
    let kind = b.kind.as_deref().unwrap_or("embedded");
    let mut kinds = vec!["embedded"];
    kinds.extend(Product::ALL.map(Product::as_str));
    let mut choice = BrokerChoice::default();
    if v.one_of(&format!("{p}.kind"), "broker kind", kind, &kinds, |k| k)
        .is_some()
    {
        if kind == "embedded" {
            if let Some(f) = &b.flavour {
                let names = brokers::flavours();
                if let Some(name) = v.one_of(
                    &format!("{p}.flavour"),
                    "embedded broker flavour",
                    f,
                    &names,
                    |n| n,
                ) {
                    choice = BrokerChoice::from_parts("embedded", Some(name)).unwrap_or_default();
                }
            }
        } else {
            match BrokerChoice::from_parts(kind, b.flavour.as_deref()) {
                Ok(c) => choice = c,
                Err(e) => v.at(&format!("{p}.flavour"), e, "not a known variant", None),
            }
        }
    }
    if let (BrokerChoice::Real { version, .. }, Some(ver)) = (&mut choice, &b.version) {
        match brokers::Version::parse(ver) {
            Some(parsed) => *version = Some(parsed),
            None => v.at(
                &format!("{p}.version"),
                format!("invalid broker version '{ver}'"),
                "expected a version such as 3.10 or 4.3.6",
                None,
            ),
        }
    }
    let nodes = match b.nodes {
        Some(0) => {
            v.at(
                &format!("{p}.nodes"),
                "a broker needs at least one node".into(),
                "expected 1 or more",
                None,
            );
            1
        }
        Some(n) => v
            .count(&format!("{p}.nodes"), "nodes", n, 1, limits::MAX_NODES)
            .unwrap_or(1),
        None => 1,
    };
    let addressing = b.addressing.as_deref().and_then(|a| {
        v.one_of(
            &format!("{p}.addressing"),
            "addressing mode",
            a,
            &AddressingMode::ALL,
            AddressingMode::as_str,
        )
    });
    BrokerReq {
        choice,
        nodes,
        users: b
            .users
            .iter()
            .map(|u| User {
                name: u.name.clone(),
                password: u.password.as_str().into(),
            })
            .collect(),
        tls: b.tls,
        addressing,
        overrides: b.overrides.clone(),
        image: b.image.clone(),
    }
}

/// A JSON scalar as oslo's text form (strings unquoted, `null` empty).
pub fn json_scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn driver_settings(
    v: &mut V<'_>,
    d: &model::DriverSection,
    addressing: Option<AddressingMode>,
) -> DriverSettings {
    let mut amqp = AmqpOptions::default();
    for (k, val) in HARNESS_DRIVER_DEFAULTS {
        let _ = amqp.set(k, val);
    }
    if let Some(a) = addressing {
        amqp.addressing_mode = a;
    }
    let mut options = BTreeMap::new();
    for (name, value) in &d.options {
        let path = format!("driver.options.{name}");
        let texts: Vec<String> = match value {
            Json::Array(items) => items.iter().map(json_scalar).collect(),
            other => vec![json_scalar(other)],
        };
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        match amqp.set_multi(name, &refs) {
            Ok(()) => {
                options.insert(name.clone(), texts.join(","));
            }
            Err(driver::options::OptionError::Unknown { suggestion, .. }) => v.at_key(
                &path,
                format!("unknown driver option '{name}'"),
                "not an [oslo_messaging_amqp] option",
                suggestion.map(|s| format!("did you mean '{s}'?")),
            ),
            Err(driver::options::OptionError::Invalid { expected, .. }) => v.at(
                &path,
                format!("invalid value for driver option '{name}'"),
                &format!("expected {expected}"),
                None,
            ),
        }
    }
    let rpc_response_timeout = v.duration("driver.rpc_response_timeout", &d.rpc_response_timeout);
    DriverSettings {
        options,
        amqp,
        rpc_response_timeout,
        control_exchange: d.control_exchange.clone(),
    }
}

/// A virtual host the transport URL can carry: 1 to 255 of letters, digits and `-_.~:`.
pub fn check_vhost(vh: &str) -> Result<(), String> {
    if vh.is_empty() || vh.len() > 255 {
        return Err("expected 1 to 255 characters".into());
    }
    match vh
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':')))
    {
        Some(c) => Err(format!(
            "{c:?} is not allowed; use letters, digits and - _ . ~ :"
        )),
        None => Ok(()),
    }
}

/// A template path inside the templates directory: relative, no `..`, ending in `.tera`.
pub fn check_template_path(t: &str) -> Result<(), String> {
    use std::path::{Component, Path};
    if t.is_empty() || t.len() > 255 {
        return Err("expected a path of 1 to 255 characters".into());
    }
    if !Path::new(t)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        || t.contains('\\')
    {
        return Err("must stay inside templates/: a relative path without `..`".into());
    }
    if !t.ends_with(".tera") {
        return Err("a template file ends in .tera".into());
    }
    Ok(())
}

fn services(v: &mut V<'_>, raw: &[model::Service]) -> Vec<Service> {
    let mut out = Vec::new();
    if raw.len() > limits::MAX_SERVICES {
        v.at_key(
            "services",
            format!("more than {} services", limits::MAX_SERVICES),
            &format!("at most {}", limits::MAX_SERVICES),
            None,
        );
        return out;
    }
    for (i, svc) in raw.iter().enumerate() {
        let p = format!("services.{i}");
        if let Some(j) = raw[..i].iter().position(|s| s.name == svc.name) {
            let first = v.loc.nearest(&format!("services.{j}.name"));
            v.at(
                &format!("{p}.name"),
                format!("duplicate service name '{}'", svc.name),
                &format!(
                    "already defined at line {}, column {}",
                    first.line, first.col
                ),
                None,
            );
        }
        if let Some(vh) = &svc.vhost {
            if let Err(why) = check_vhost(vh) {
                v.at(
                    &format!("{p}.vhost"),
                    format!("invalid virtual host '{vh}'"),
                    &why,
                    None,
                );
            }
        }
        if let Some(c) = &svc.config {
            if let Err(why) = check_template_path(&c.template) {
                v.at(
                    &format!("{p}.config.template"),
                    format!("invalid template path '{}'", c.template),
                    &why,
                    Some("name a file under templates/, e.g. services/nova.conf.tera".into()),
                );
            }
        }
        let expect_start_error = svc.expect_start_error.as_deref().and_then(|k| {
            v.one_of(
                &format!("{p}.expect_start_error"),
                "start error kind",
                k,
                &ErrorKind::START,
                ErrorKind::as_str,
            )
        });
        let Some(role) = role(v, &p, svc) else {
            continue;
        };
        out.push(Service {
            name: svc.name.clone(),
            kind: match svc.kind {
                model::ServiceKind::Rust => ServiceKind::Rust,
                model::ServiceKind::PythonOslo => ServiceKind::PythonOslo,
            },
            record_as: svc.record_as.clone().unwrap_or_else(|| svc.name.clone()),
            vhost: svc.vhost.clone(),
            expect_start_error,
            config: svc.config.as_ref().map(|c| ServiceConfig {
                template: c.template.clone(),
                vars: c.vars.clone(),
            }),
            role,
        });
    }
    out
}

fn role(v: &mut V<'_>, p: &str, svc: &model::Service) -> Option<Role> {
    match (&svc.rpc_server, &svc.listener) {
        (None, None) => {
            v.at(
                &format!("{p}.name"),
                format!(
                    "service '{}' has neither `rpc_server` nor `listener`",
                    svc.name
                ),
                "a service is an RPC server or a notification listener",
                Some("add `rpc_server:` or `listener:`".into()),
            );
            None
        }
        (Some(_), Some(_)) => {
            v.at_key(
                &format!("{p}.listener"),
                format!(
                    "service '{}' has both `rpc_server` and `listener`",
                    svc.name
                ),
                "define the listener as a separate service",
                None,
            );
            None
        }
        (Some(r), None) => Some(rpc_server(v, &format!("{p}.rpc_server"), r)),
        (None, Some(l)) => Some(listener(v, &format!("{p}.listener"), l)),
    }
}

fn rpc_server(v: &mut V<'_>, p: &str, r: &model::RpcServerSpec) -> Role {
    let target = v.target(&format!("{p}.target"), &r.target);
    if r.endpoints.is_empty() {
        v.at(
            &format!("{p}.endpoints"),
            "an RPC server needs at least one endpoint".into(),
            "empty",
            None,
        );
    }
    let endpoints = r
        .endpoints
        .iter()
        .enumerate()
        .map(|(j, ep)| Endpoint {
            namespace: ep.namespace.clone(),
            version: ep.version.clone(),
            methods: ep
                .methods
                .iter()
                .filter_map(|(m, beh)| {
                    behaviour(v, &format!("{p}.endpoints.{j}.methods.{m}"), beh)
                        .map(|b| (m.clone(), b))
                })
                .collect(),
        })
        .collect();
    Role::RpcServer { target, endpoints }
}

fn listener(v: &mut V<'_>, p: &str, l: &model::ListenerSpec) -> Role {
    if l.targets.is_empty() {
        v.at(
            &format!("{p}.targets"),
            "a listener needs at least one target".into(),
            "empty",
            None,
        );
    }
    let targets = l
        .targets
        .iter()
        .enumerate()
        .map(|(j, t)| v.target(&format!("{p}.targets.{j}"), t))
        .collect();
    let named: Vec<Priority> = l
        .priorities
        .iter()
        .enumerate()
        .filter_map(|(j, pr)| {
            v.one_of(
                &format!("{p}.priorities.{j}"),
                "priority",
                pr,
                &priorities(),
                Priority::as_lower,
            )
        })
        .collect();
    let requeue = v
        .count(
            &format!("{p}.requeue"),
            "requeue",
            l.requeue,
            0,
            limits::MAX_REQUEUE,
        )
        .unwrap_or(0);
    Role::Listener {
        targets,
        priorities_named: !l.priorities.is_empty(),
        priorities: if l.priorities.is_empty() {
            Priority::ALL.to_vec()
        } else {
            named
        },
        pool: l.pool.clone(),
        requeue,
    }
}

/// The driver's priorities in alphabetical order, as diagnostics list them.
fn priorities() -> [Priority; 7] {
    let mut all = Priority::ALL;
    all.sort_by_key(|p| p.as_lower());
    all
}

fn behaviour(v: &mut V<'_>, p: &str, b: &model::Behaviour) -> Option<Behaviour> {
    let sleep = v.duration(&format!("{p}.sleep"), &b.sleep);
    let outcomes = [
        b.echo,
        b.returns.is_some(),
        b.raise.is_some(),
        b.state.is_some(),
        b.whoami,
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if outcomes > 1 {
        v.at_key(
            p,
            "a method can only do one of `echo`, `return`, `raise`, `state`, `whoami`".into(),
            "conflicting behaviours",
            None,
        );
        return None;
    }
    let action = if let Some(op) = &b.state {
        Action::State(v.one_of(
            &format!("{p}.state"),
            "state operation",
            op,
            &StateOp::ALL,
            StateOp::as_str,
        )?)
    } else if let Some(r) = &b.raise {
        if r.class.trim().is_empty() {
            v.at(
                &format!("{p}.raise.class"),
                "empty exception class".into(),
                "expected e.g. ValueError",
                None,
            );
        }
        Action::Raise {
            class: r.class.clone(),
            module: r.module.clone(),
            message: r.message.clone(),
        }
    } else if let Some(val) = &b.returns {
        Action::Return(val.clone())
    } else if b.whoami {
        Action::Whoami
    } else {
        Action::Echo
    };
    Some(Behaviour { sleep, action })
}

/// Service names steps can refer to: every service and every `record_as` name.
fn reference_names(services: &[Service]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for s in services {
        for n in [s.name.as_str(), s.record_as.as_str()] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

fn steps(
    v: &mut V<'_>,
    raw: &model::ScenarioFile,
    services: &[Service],
    nodes: usize,
) -> Vec<Step> {
    if raw.steps.is_empty() {
        v.at_key(
            "steps",
            "the scenario has no steps".into(),
            "expected at least one step",
            None,
        );
    }
    if raw.steps.len() > limits::MAX_STEPS {
        v.at_key(
            "steps",
            format!("more than {} steps", limits::MAX_STEPS),
            &format!("at most {}", limits::MAX_STEPS),
            None,
        );
        return Vec::new();
    }
    let names = reference_names(services);
    let mut out = Vec::new();
    let mut running: Vec<&str> = Vec::new();
    for (i, step) in raw.steps.iter().enumerate() {
        let p = format!("steps.{i}.{}", step.keyword());
        let line = v.loc.key(&p).map(|s| s.line).unwrap_or(0);
        traffic_names(v, &p, step, &mut running);
        if let Some(kind) = step_kind(v, &p, step, &names, nodes) {
            out.push(Step {
                number: i + 1,
                line,
                kind,
            });
        }
    }
    out
}

/// Traffic names are started once and stopped only while running.
fn traffic_names<'a>(v: &mut V<'_>, p: &str, step: &'a model::Step, running: &mut Vec<&'a str>) {
    match step {
        model::Step::Traffic(t) if running.contains(&t.name.as_str()) => v.at(
            &format!("{p}.name"),
            format!("traffic '{}' is already running", t.name),
            "stop it with `traffic_stop` first, or use another name",
            None,
        ),
        model::Step::Traffic(t) => running.push(&t.name),
        model::Step::TrafficStop(t) => match running.iter().position(|n| *n == t.name) {
            Some(i) => {
                running.remove(i);
            }
            None => v.at(
                &format!("{p}.name"),
                format!("no traffic '{}' is running here", t.name),
                &if running.is_empty() {
                    "no traffic runs at this step".to_string()
                } else {
                    format!("running: {}", running.join(", "))
                },
                did_you_mean(&t.name, running.iter().copied()),
            ),
        },
        _ => {}
    }
}

fn step_kind(
    v: &mut V<'_>,
    p: &str,
    step: &model::Step,
    names: &[&str],
    nodes: usize,
) -> Option<StepKind> {
    Some(match step {
        model::Step::Group(g) => {
            if g.trim().is_empty() {
                v.at(p, "empty group name".into(), "expected a name", None);
            }
            StepKind::Group(g.clone())
        }
        model::Step::Call(c) => StepKind::Call(call(v, p, c, names)),
        model::Step::Cast(c) => StepKind::Cast(cast(v, p, c, names, false)),
        model::Step::Fanout(c) => StepKind::Cast(cast(v, p, c, names, true)),
        model::Step::Notify(n) => StepKind::Notify(notify(v, p, n, names)?),
        model::Step::Wait(w) => {
            for (svc, n) in &w.deliveries {
                v.service_ref(&format!("{p}.deliveries.{svc}"), svc, names, true);
                expected_count(v, &format!("{p}.deliveries.{svc}"), svc, *n);
            }
            StepKind::Wait(Wait {
                deliveries: w.deliveries.clone(),
                timeout: v
                    .duration(&format!("{p}.timeout"), &w.timeout)
                    .unwrap_or(DEFAULT_WAIT_TIMEOUT),
            })
        }
        model::Step::Expect(e) => {
            for (svc, n) in &e.deliveries {
                v.service_ref(&format!("{p}.deliveries.{svc}"), svc, names, true);
                expected_count(v, &format!("{p}.deliveries.{svc}"), svc, *n);
            }
            for (svc, per) in &e.received {
                v.service_ref(&format!("{p}.received.{svc}"), svc, names, true);
                for (k, n) in per {
                    expected_count(v, &format!("{p}.received.{svc}.{k}"), k, *n);
                }
            }
            StepKind::Expect(Expect {
                deliveries: e.deliveries.clone(),
                received: e.received.clone(),
                broker_counters: e.broker_counters.clone(),
            })
        }
        model::Step::Sleep(d) => StepKind::Sleep(v.duration_str(p, d)?),
        model::Step::Kill(n) => fault(v, p, FaultOp::Kill, &n.node, nodes)?,
        model::Step::Restart(n) => fault(v, p, FaultOp::Restart, &n.node, nodes)?,
        model::Step::DropConnections(n) => fault(v, p, FaultOp::DropConnections, &n.node, nodes)?,
        model::Step::Traffic(t) => StepKind::Traffic(traffic(v, p, t)?),
        model::Step::Network(x) => StepKind::Network(network(v, p, x, nodes)?),
        model::Step::BrokerFault(x) => StepKind::BrokerFault(broker_fault(v, p, x, nodes)?),
        model::Step::TrafficStop(t) => StepKind::TrafficStop(TrafficStop {
            lost: t
                .expect
                .lost
                .and_then(|n| expected_count(v, &format!("{p}.expect.lost"), "lost", n)),
            calls_ok_at_least: t.expect.calls_ok_at_least.and_then(|n| {
                expected_count(
                    v,
                    &format!("{p}.expect.calls_ok_at_least"),
                    "calls_ok_at_least",
                    n,
                )
            }),
            name: t.name.clone(),
            drain: v
                .duration(&format!("{p}.drain"), &t.drain)
                .unwrap_or(DEFAULT_WAIT_TIMEOUT),
        }),
        model::Step::Pause(n) => {
            let d = v.duration_str(&format!("{p}.for"), &n.duration);
            let f = fault(v, p, FaultOp::Pause(d.unwrap_or_default()), &n.node, nodes)?;
            d?;
            f
        }
    })
}

/// A count an expectation names, at most [`limits::MAX_EXPECTED_COUNT`].
fn expected_count(v: &mut V<'_>, path: &str, key: &str, n: usize) -> Option<usize> {
    v.count(path, key, n, 0, limits::MAX_EXPECTED_COUNT)
}

fn fault(
    v: &mut V<'_>,
    p: &str,
    op: FaultOp,
    node: &Option<String>,
    nodes: usize,
) -> Option<StepKind> {
    let index = match node {
        None => 0,
        Some(n) => match n.strip_prefix("node").unwrap_or(n).parse::<usize>() {
            Ok(i) if i < nodes => i,
            _ => {
                let names: Vec<String> = (0..nodes).map(|i| format!("node{i}")).collect();
                v.at(
                    &format!("{p}.node"),
                    format!("unknown broker node '{n}'"),
                    &format!("this scenario has {nodes} node(s): {}", names.join(", ")),
                    None,
                );
                return None;
            }
        },
    };
    Some(StepKind::Fault(Fault { op, node: index }))
}

fn repeat(v: &mut V<'_>, p: &str, r: Option<usize>) -> usize {
    r.and_then(|n| v.count(&format!("{p}.repeat"), "repeat", n, 1, limits::MAX_REPEAT))
        .unwrap_or(1)
}

fn call(v: &mut V<'_>, p: &str, c: &model::CallStep, names: &[&str]) -> Call {
    let from = v.sender(p, &c.from, names);
    let target = v.target(&format!("{p}.target"), &c.target);
    let timeout = v.duration(&format!("{p}.timeout"), &c.timeout);
    let call_monitor_timeout = v.duration(
        &format!("{p}.call_monitor_timeout"),
        &c.call_monitor_timeout,
    );
    let repeat = repeat(v, p, c.repeat);
    let mut concurrency = 1;
    if let Some(n) = c.concurrency {
        if c.repeat.is_none() && n > 0 {
            v.at_key(
                &format!("{p}.concurrency"),
                "`concurrency` without `repeat`".into(),
                "concurrency applies to repeated calls",
                Some("add `repeat: N`".into()),
            );
        }
        concurrency = v
            .count(
                &format!("{p}.concurrency"),
                "concurrency",
                n,
                1,
                limits::MAX_CONCURRENCY,
            )
            .unwrap_or(1);
    }
    let reply_mode = c.reply_mode.as_deref().and_then(|m| {
        v.one_of(
            &format!("{p}.reply_mode"),
            "reply mode",
            m,
            &ReplyMode::ALL,
            ReplyMode::as_str,
        )
    });
    Call {
        from,
        target,
        method: c.method.clone(),
        args: c.args.clone(),
        context: c.context.clone(),
        timeout,
        call_monitor_timeout,
        repeat,
        concurrency,
        repeated: c.repeat.is_some(),
        reply_mode,
        expect: v.expectation(&format!("{p}.expect"), &c.expect),
        known_failures: v.known(&format!("{p}.known_failures"), &c.known_failures),
    }
}

fn no_result(v: &mut V<'_>, p: &str, e: &Option<model::CallExpect>, what: &str) {
    if e.as_ref().is_some_and(|e| e.result.is_some()) {
        v.at_key(
            &format!("{p}.expect.result"),
            format!("a {what} has no result"),
            "only `error:` can be expected",
            None,
        );
    }
}

fn cast(v: &mut V<'_>, p: &str, c: &model::CastStep, names: &[&str], fanout: bool) -> Cast {
    let from = v.sender(p, &c.from, names);
    let mut target = v.target(&format!("{p}.target"), &c.target);
    target.fanout = fanout;
    let repeat = repeat(v, p, c.repeat);
    no_result(v, p, &c.expect, "cast");
    Cast {
        from,
        target,
        fanout,
        method: c.method.clone(),
        args: c.args.clone(),
        context: c.context.clone(),
        repeat,
        expect: v.expectation(&format!("{p}.expect"), &c.expect),
        known_failures: v.known(&format!("{p}.known_failures"), &c.known_failures),
    }
}

fn notify(v: &mut V<'_>, p: &str, n: &model::NotifyStep, names: &[&str]) -> Option<Notify> {
    let from = v.sender(p, &n.from, names);
    let priority = v.one_of(
        &format!("{p}.priority"),
        "priority",
        &n.priority,
        &priorities(),
        Priority::as_lower,
    );
    let version = match n.version {
        None | Some(2) => NotifyVersion::V2,
        Some(1) => NotifyVersion::V1,
        Some(other) => {
            v.at(
                &format!("{p}.version"),
                format!("unknown notification version {other}"),
                "expected 1 or 2",
                None,
            );
            NotifyVersion::V2
        }
    };
    let repeat = repeat(v, p, n.repeat);
    no_result(v, p, &n.expect, "notification");
    let expect = v.expectation(&format!("{p}.expect"), &n.expect);
    let known_failures = v.known(&format!("{p}.known_failures"), &n.known_failures);
    Some(Notify {
        from,
        publisher: n.publisher.clone(),
        topics: if n.topics.is_empty() {
            vec!["notifications".to_string()]
        } else {
            n.topics.clone()
        },
        priority: priority?,
        event_type: n.event_type.clone(),
        payload: n.payload.clone(),
        context: n.context.clone(),
        version,
        repeat,
        expect,
        known_failures,
    })
}

/// The shortest traffic interval (a faster pace would measure the harness, not the broker).
const MIN_TRAFFIC_INTERVAL: Duration = Duration::from_millis(1);

fn interval(v: &mut V<'_>, p: &str, every: &str) -> Option<Duration> {
    let d = v.duration_str(&format!("{p}.every"), every)?;
    if d < MIN_TRAFFIC_INTERVAL {
        v.at(
            &format!("{p}.every"),
            format!("interval '{every}' is too short"),
            "at least 1ms",
            None,
        );
        return None;
    }
    Some(d)
}

fn traffic(v: &mut V<'_>, p: &str, t: &model::TrafficStep) -> Option<Traffic> {
    if t.calls.is_none() && t.casts.is_none() && t.notifications.is_none() {
        v.at_key(
            p,
            format!("traffic '{}' sends nothing", t.name),
            "expected `calls:`, `casts:` or `notifications:`",
            None,
        );
        return None;
    }
    let calls = match &t.calls {
        Some(c) => {
            let q = format!("{p}.calls");
            Some(TrafficCalls {
                target: v.target(&format!("{q}.target"), &c.target),
                method: c.method.clone(),
                every: interval(v, &q, &c.every)?,
                timeout: v.duration(&format!("{q}.timeout"), &c.timeout),
            })
        }
        None => None,
    };
    let casts = match &t.casts {
        Some(c) => {
            let q = format!("{p}.casts");
            Some(TrafficCasts {
                target: v.target(&format!("{q}.target"), &c.target),
                method: c.method.clone(),
                every: interval(v, &q, &c.every)?,
            })
        }
        None => None,
    };
    let notifications = match &t.notifications {
        Some(n) => {
            let q = format!("{p}.notifications");
            Some(TrafficNotifications {
                topics: if n.topics.is_empty() {
                    vec!["notifications".to_string()]
                } else {
                    n.topics.clone()
                },
                priority: v.one_of(
                    &format!("{q}.priority"),
                    "priority",
                    &n.priority,
                    &priorities(),
                    Priority::as_lower,
                )?,
                event_type: n.event_type.clone(),
                every: interval(v, &q, &n.every)?,
            })
        }
        None => None,
    };
    Some(Traffic {
        name: t.name.clone(),
        calls,
        casts,
        notifications,
    })
}

fn network(v: &mut V<'_>, p: &str, x: &model::NetworkStep, nodes: usize) -> Option<NetFault> {
    let duration = v.duration_str(&format!("{p}.for"), &x.duration);
    let node = match fault(v, p, FaultOp::Kill, &x.node, nodes)? {
        StepKind::Fault(f) => f.node,
        _ => 0,
    };
    let chosen =
        usize::from(x.partition) + usize::from(x.loss.is_some()) + usize::from(x.latency.is_some());
    if chosen != 1 {
        v.at_key(
            p,
            "a network step does exactly one of `partition: true`, `loss:` or `latency:`".into(),
            "choose one",
            None,
        );
        return None;
    }
    let kind = if x.partition {
        NetFaultKind::Partition
    } else if let Some(l) = &x.loss {
        let pct = l
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|n| (1..=100).contains(n));
        match pct {
            Some(n) => NetFaultKind::Loss(n),
            None => {
                v.at(
                    &format!("{p}.loss"),
                    format!("invalid packet loss '{l}'"),
                    "expected a percentage from 1% to 100%",
                    None,
                );
                return None;
            }
        }
    } else {
        NetFaultKind::Latency(v.duration(&format!("{p}.latency"), &x.latency)?)
    };
    Some(NetFault {
        node,
        kind,
        duration: duration?,
    })
}

fn address_pattern(v: &mut V<'_>, path: &str, a: &str) -> Option<String> {
    match regex::Regex::new(a) {
        Ok(_) if !a.is_empty() => Some(a.to_string()),
        Ok(_) => {
            v.at(
                path,
                "empty address pattern".into(),
                "expected a regular expression matching the addresses",
                None,
            );
            None
        }
        Err(e) => {
            let why = e.to_string();
            let last = why.lines().last().unwrap_or("").trim().to_string();
            v.at(
                path,
                format!("invalid address pattern: {last}"),
                "expected an (unanchored) regular expression",
                None,
            );
            None
        }
    }
}

fn broker_fault(
    v: &mut V<'_>,
    p: &str,
    x: &model::BrokerFaultStep,
    nodes: usize,
) -> Option<BrokerFault> {
    let node = match fault(v, p, FaultOp::Kill, &x.node, nodes)? {
        StepKind::Fault(f) => f.node,
        _ => 0,
    };
    let chosen = [
        x.close_links.is_some(),
        x.refuse_attach.is_some(),
        x.release_next.is_some(),
        x.reject_next.is_some(),
        x.modify_next.is_some(),
        x.withhold_credit.is_some(),
        x.slow_consumers.is_some(),
        x.clear,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if chosen != 1 {
        v.at_key(
            p,
            "a broker_fault step does exactly one of `close_links`, `refuse_attach`, `release_next`, \
             `reject_next`, `modify_next`, `withhold_credit`, `slow_consumers` or `clear: true`"
                .into(),
            "choose one",
            None,
        );
        return None;
    }
    let op = broker_fault_op(v, p, x)?;
    Some(BrokerFault { node, op })
}

/// The one fault a `broker_fault` step names, with its defaults and bounds checked.
fn broker_fault_op(v: &mut V<'_>, p: &str, x: &model::BrokerFaultStep) -> Option<BrokerFaultOp> {
    let max = limits::MAX_REPEAT;
    Some(if let Some(c) = &x.close_links {
        let q = format!("{p}.close_links");
        let address = address_pattern(v, &format!("{q}.address"), &c.address);
        let times = v.count(&format!("{q}.times"), "times", c.times.unwrap_or(1), 1, max);
        BrokerFaultOp::CloseLinks {
            address: address?,
            times: times?,
            condition: c
                .condition
                .clone()
                .unwrap_or_else(|| "amqp:internal-error".into()),
            description: c
                .description
                .clone()
                .unwrap_or_else(|| "amqp1-rig fault: link closed".into()),
        }
    } else if let Some(r) = &x.refuse_attach {
        let q = format!("{p}.refuse_attach");
        BrokerFaultOp::RefuseAttach {
            address: address_pattern(v, &format!("{q}.address"), &r.address)?,
            condition: r
                .condition
                .clone()
                .unwrap_or_else(|| "amqp:not-found".into()),
            description: r
                .description
                .clone()
                .unwrap_or_else(|| "amqp1-rig fault: attach refused".into()),
        }
    } else if let Some(n) = x.release_next {
        BrokerFaultOp::ReleaseNext(v.count(
            &format!("{p}.release_next"),
            "release_next",
            n,
            1,
            max,
        )?)
    } else if let Some(n) = x.reject_next {
        BrokerFaultOp::RejectNext(v.count(&format!("{p}.reject_next"), "reject_next", n, 1, max)?)
    } else if let Some(m) = &x.modify_next {
        let q = format!("{p}.modify_next");
        BrokerFaultOp::ModifyNext {
            count: v.count(&format!("{q}.count"), "count", m.count, 1, max)?,
            delivery_failed: m.delivery_failed,
            undeliverable_here: m.undeliverable_here,
        }
    } else if let Some(w) = &x.withhold_credit {
        let q = format!("{p}.withhold_credit");
        let address = address_pattern(v, &format!("{q}.address"), &w.address);
        let duration = match &w.duration {
            Some(d) => Some(v.duration_str(&format!("{q}.for"), d)?),
            None => None,
        };
        BrokerFaultOp::WithholdCredit {
            address: address?,
            duration,
        }
    } else if let Some(s) = &x.slow_consumers {
        let q = format!("{p}.slow_consumers");
        let address = address_pattern(v, &format!("{q}.address"), &s.address);
        let delay = v.duration_str(&format!("{q}.delay"), &s.delay);
        let duration = match &s.duration {
            Some(d) => Some(v.duration_str(&format!("{q}.for"), d)?),
            None => None,
        };
        BrokerFaultOp::SlowConsumers {
            address: address?,
            delay: delay?,
            duration,
        }
    } else {
        BrokerFaultOp::Clear
    })
}
