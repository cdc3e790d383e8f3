//! Semantic checks of a parsed scenario, each pointing at the offending value.

use std::collections::BTreeSet;
use std::time::Duration;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::locate::Locator;
use super::model::{Behaviour, CallExpect, KnownFailure, Scenario, Step, TargetSpec};

/// Priorities oslo.messaging knows.
pub const PRIORITIES: [&str; 7] = [
    "audit", "critical", "debug", "error", "info", "sample", "warn",
];
/// Call/cast error kinds usable in `expect.error.kind` and known failures.
pub const ERROR_KINDS: [&str; 6] = [
    "timed_out",
    "remote",
    "delivery_failed",
    "disconnected",
    "invalid_target",
    "refused",
];
/// Embedded flavours.
pub const EMBEDDED_FLAVOURS: [&str; 3] = ["qpidd", "router", "rabbitmq3"];
/// Addressing modes.
pub const ADDRESSING: [&str; 4] = ["dynamic", "legacy", "routable", "rabbitmq"];
/// Reply modes.
pub const REPLY_MODES: [&str; 4] = [
    "dynamic",
    "named",
    "rabbitmq-direct-reply",
    "temporary-queue",
];
/// Stateful behaviours.
pub const STATE_OPS: [&str; 4] = ["append", "get", "count", "add"];

/// Parses a scenario duration (`500ms`, `2s`, `1m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e}"))
}

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

    fn duration(&mut self, path: &str, value: &Option<String>) {
        if let Some(v) = value {
            self.duration_str(path, v);
        }
    }

    fn duration_str(&mut self, path: &str, v: &str) {
        if let Err(e) = parse_duration(v) {
            self.at(
                path,
                format!("invalid duration '{v}': {e}"),
                "expected a duration such as 500ms, 2s or 1m",
                None,
            );
        }
    }

    fn one_of(&mut self, path: &str, what: &str, v: &str, allowed: &[&str]) {
        if !allowed.contains(&v) {
            self.at(
                path,
                format!("unknown {what} '{v}'"),
                &format!("expected one of: {}", allowed.join(", ")),
                did_you_mean(v, allowed.iter().copied()),
            );
        }
    }

    fn service_ref(&mut self, path: &str, name: &str, services: &[&str], key: bool) {
        if !services.contains(&name) {
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
        }
    }

    fn target(&mut self, path: &str, t: &TargetSpec) {
        if t.topic.trim().is_empty() {
            self.at(
                &format!("{path}.topic"),
                "empty topic".into(),
                "a target needs a topic",
                None,
            );
        }
    }

    fn expect(&mut self, path: &str, e: &Option<CallExpect>) {
        let Some(e) = e else { return };
        if e.result.is_some() && e.error.is_some() {
            self.at_key(
                &format!("{path}.error"),
                "`expect` names both a result and an error".into(),
                "a call either returns or fails",
                Some("remove `result:` or `error:`".into()),
            );
        }
        if let Some(err) = &e.error {
            self.one_of(
                &format!("{path}.error.kind"),
                "error kind",
                &err.kind,
                &ERROR_KINDS,
            );
        }
    }

    fn known(&mut self, path: &str, k: &[KnownFailure]) {
        for (i, f) in k.iter().enumerate() {
            if f.condition.trim().is_empty() {
                self.at(
                    &format!("{path}.{i}.condition"),
                    "empty condition in known failure".into(),
                    "expected an AMQP condition such as amqp:not-found, or an error kind",
                    None,
                );
            }
        }
    }

    fn node(&mut self, path: &str, node: &Option<String>, nodes: usize) {
        let Some(n) = node else { return };
        let idx = n.strip_prefix("node").unwrap_or(n).parse::<usize>();
        match idx {
            Ok(i) if i < nodes => {}
            _ => {
                let names: Vec<String> = (0..nodes).map(|i| format!("node{i}")).collect();
                self.at(
                    path,
                    format!("unknown broker node '{n}'"),
                    &format!("this scenario has {nodes} node(s): {}", names.join(", ")),
                    None,
                );
            }
        }
    }
}

/// Every semantic problem of `s`.
pub fn validate(s: &Scenario, loc: &Locator) -> Vec<Diagnostic> {
    let mut v = V {
        loc,
        out: Vec::new(),
    };
    let b = &s.broker;
    let kind = b.kind.as_deref().unwrap_or("embedded");
    let kinds = ["embedded", "qpidd", "qdrouterd", "rabbitmq", "artemis"];
    v.one_of("broker.kind", "broker kind", kind, &kinds);
    if kind == "embedded" {
        if let Some(f) = &b.flavour {
            v.one_of(
                "broker.flavour",
                "embedded broker flavour",
                f,
                &EMBEDDED_FLAVOURS,
            );
        }
    }
    if b.nodes == Some(0) {
        v.at(
            "broker.nodes",
            "a broker needs at least one node".into(),
            "expected 1 or more",
            None,
        );
    }
    if let Some(a) = &b.addressing {
        v.one_of("broker.addressing", "addressing mode", a, &ADDRESSING);
    }
    if let Some(nb) = &s.notification_broker {
        let nkind = nb.kind.as_deref().unwrap_or("embedded");
        v.one_of("notification_broker.kind", "broker kind", nkind, &kinds);
        if nkind == "embedded" {
            if let Some(f) = &nb.flavour {
                v.one_of(
                    "notification_broker.flavour",
                    "embedded broker flavour",
                    f,
                    &EMBEDDED_FLAVOURS,
                );
            }
        }
        if nb.nodes == Some(0) {
            v.at(
                "notification_broker.nodes",
                "a broker needs at least one node".into(),
                "expected 1 or more",
                None,
            );
        }
        if let Some(a) = &nb.addressing {
            v.one_of(
                "notification_broker.addressing",
                "addressing mode",
                a,
                &ADDRESSING,
            );
        }
    }
    v.duration(
        "driver.rpc_response_timeout",
        &s.driver.rpc_response_timeout,
    );
    let nodes = b.nodes.unwrap_or(1).max(1);

    // Services.
    let mut names: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, svc) in s.services.iter().enumerate() {
        let p = format!("services.{i}");
        if !seen.insert(svc.name.as_str()) {
            v.at(
                &format!("{p}.name"),
                format!("duplicate service name '{}'", svc.name),
                "already defined above",
                None,
            );
        }
        names.push(svc.name.as_str());
        if let Some(r) = &svc.record_as {
            if !names.contains(&r.as_str()) {
                names.push(r.as_str());
            }
        }
        match (&svc.rpc_server, &svc.listener) {
            (None, None) => v.at(
                &format!("{p}.name"),
                format!(
                    "service '{}' has neither `rpc_server` nor `listener`",
                    svc.name
                ),
                "a service is an RPC server or a notification listener",
                Some("add `rpc_server:` or `listener:`".into()),
            ),
            (Some(_), Some(_)) => v.at_key(
                &format!("{p}.listener"),
                format!(
                    "service '{}' has both `rpc_server` and `listener`",
                    svc.name
                ),
                "define the listener as a separate service",
                None,
            ),
            _ => {}
        }
        if let Some(k) = &svc.expect_start_error {
            v.one_of(
                &format!("{p}.expect_start_error"),
                "start error kind",
                k,
                &[
                    "timed_out",
                    "refused",
                    "invalid_target",
                    "disconnected",
                    "closed",
                ],
            );
        }
        if let Some(r) = &svc.rpc_server {
            v.target(&format!("{p}.rpc_server.target"), &r.target);
            if r.endpoints.is_empty() {
                v.at(
                    &format!("{p}.rpc_server.endpoints"),
                    "an RPC server needs at least one endpoint".into(),
                    "empty",
                    None,
                );
            }
            for (j, ep) in r.endpoints.iter().enumerate() {
                for (m, beh) in &ep.methods {
                    behaviour(
                        &mut v,
                        &format!("{p}.rpc_server.endpoints.{j}.methods.{m}"),
                        beh,
                    );
                }
            }
        }
        if let Some(l) = &svc.listener {
            if l.targets.is_empty() {
                v.at(
                    &format!("{p}.listener.targets"),
                    "a listener needs at least one target".into(),
                    "empty",
                    None,
                );
            }
            for (j, t) in l.targets.iter().enumerate() {
                v.target(&format!("{p}.listener.targets.{j}"), t);
            }
            for (j, pr) in l.priorities.iter().enumerate() {
                v.one_of(
                    &format!("{p}.listener.priorities.{j}"),
                    "priority",
                    pr,
                    &PRIORITIES,
                );
            }
        }
    }

    if s.steps.is_empty() {
        v.at_key(
            "steps",
            "the scenario has no steps".into(),
            "expected at least one step",
            None,
        );
    }
    for (i, step) in s.steps.iter().enumerate() {
        let p = format!("steps.{i}.{}", step.keyword());
        match step {
            Step::Group(g) => {
                if g.trim().is_empty() {
                    v.at(&p, "empty group name".into(), "expected a name", None);
                }
            }
            Step::Call(c) => {
                if let Some(f) = &c.from {
                    v.service_ref(&format!("{p}.from"), f, &names, false);
                }
                v.target(&format!("{p}.target"), &c.target);
                v.duration(&format!("{p}.timeout"), &c.timeout);
                v.duration(
                    &format!("{p}.call_monitor_timeout"),
                    &c.call_monitor_timeout,
                );
                if c.repeat == Some(0) {
                    v.at(
                        &format!("{p}.repeat"),
                        "`repeat` must be at least 1".into(),
                        "expected 1 or more",
                        None,
                    );
                }
                if let Some(n) = c.concurrency {
                    if n == 0 {
                        v.at(
                            &format!("{p}.concurrency"),
                            "`concurrency` must be at least 1".into(),
                            "expected 1 or more",
                            None,
                        );
                    } else if c.repeat.is_none() {
                        v.at_key(
                            &format!("{p}.concurrency"),
                            "`concurrency` without `repeat`".into(),
                            "concurrency applies to repeated calls",
                            Some("add `repeat: N`".into()),
                        );
                    }
                }
                if let Some(m) = &c.reply_mode {
                    v.one_of(&format!("{p}.reply_mode"), "reply mode", m, &REPLY_MODES);
                }
                v.expect(&format!("{p}.expect"), &c.expect);
                v.known(&format!("{p}.known_failures"), &c.known_failures);
            }
            Step::Cast(c) | Step::Fanout(c) => {
                if let Some(f) = &c.from {
                    v.service_ref(&format!("{p}.from"), f, &names, false);
                }
                v.target(&format!("{p}.target"), &c.target);
                if c.repeat == Some(0) {
                    v.at(
                        &format!("{p}.repeat"),
                        "`repeat` must be at least 1".into(),
                        "expected 1 or more",
                        None,
                    );
                }
                if let Some(e) = &c.expect {
                    if e.result.is_some() {
                        v.at_key(
                            &format!("{p}.expect.result"),
                            "a cast has no result".into(),
                            "only `error:` can be expected",
                            None,
                        );
                    }
                }
                v.expect(&format!("{p}.expect"), &c.expect);
                v.known(&format!("{p}.known_failures"), &c.known_failures);
            }
            Step::Notify(n) => {
                if let Some(f) = &n.from {
                    v.service_ref(&format!("{p}.from"), f, &names, false);
                }
                v.one_of(
                    &format!("{p}.priority"),
                    "priority",
                    &n.priority,
                    &PRIORITIES,
                );
                if let Some(ver) = n.version {
                    if ver != 1 && ver != 2 {
                        v.at(
                            &format!("{p}.version"),
                            format!("unknown notification version {ver}"),
                            "expected 1 or 2",
                            None,
                        );
                    }
                }
                v.expect(&format!("{p}.expect"), &n.expect);
                v.known(&format!("{p}.known_failures"), &n.known_failures);
            }
            Step::Wait(w) => {
                for svc in w.deliveries.keys() {
                    v.service_ref(&format!("{p}.deliveries.{svc}"), svc, &names, true);
                }
                v.duration(&format!("{p}.timeout"), &w.timeout);
            }
            Step::Expect(e) => {
                for svc in e.deliveries.keys() {
                    v.service_ref(&format!("{p}.deliveries.{svc}"), svc, &names, true);
                }
                for svc in e.received.keys() {
                    v.service_ref(&format!("{p}.received.{svc}"), svc, &names, true);
                }
            }
            Step::Sleep(d) => v.duration_str(&p, d),
            Step::Kill(n) | Step::Restart(n) | Step::DropConnections(n) => {
                v.node(&format!("{p}.node"), &n.node, nodes)
            }
            Step::Pause(n) => {
                v.node(&format!("{p}.node"), &n.node, nodes);
                v.duration_str(&format!("{p}.for"), &n.duration);
            }
        }
    }
    v.out.sort_by_key(|d| (d.span.line, d.span.col));
    v.out
}

fn behaviour(v: &mut V<'_>, p: &str, b: &Behaviour) {
    v.duration(&format!("{p}.sleep"), &b.sleep);
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
    }
    if let Some(op) = &b.state {
        v.one_of(&format!("{p}.state"), "state operation", op, &STATE_OPS);
    }
    if let Some(r) = &b.raise {
        if r.class.trim().is_empty() {
            v.at(
                &format!("{p}.raise.class"),
                "empty exception class".into(),
                "expected e.g. ValueError",
                None,
            );
        }
    }
}
