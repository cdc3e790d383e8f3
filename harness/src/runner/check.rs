//! Checking what operations gave against what the scenario expects: expectations, the known-failure
//! registry, and the words a transcript and a report use for outcomes.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::brokers::Identity;
use crate::report::StepStatus;
use crate::scenario::{ErrorKind, Expectation, FailureCondition, KnownFailure};

/// A failed operation, reduced to what steps check.
#[derive(Debug, Clone, PartialEq)]
pub struct OpError {
    /// How it failed.
    pub kind: ErrorKind,
    /// The broker's condition, when the broker refused something.
    pub condition: Option<String>,
    /// Message (remote exception message, broker description, or detail).
    pub message: Option<String>,
    /// Remote exception `(class, module)`.
    pub remote: Option<(String, String)>,
}

impl OpError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        OpError {
            kind,
            condition: None,
            message: Some(message.into()),
            remote: None,
        }
    }

    /// From any of the driver's operation errors.
    pub fn from_driver<K: Copy + DriverKind>(e: &driver::Error<K>) -> Self {
        OpError {
            kind: ErrorKind::from_driver(e.kind().name()),
            condition: e.condition().map(str::to_string),
            message: e
                .remote()
                .map(|r| r.message.clone())
                .or_else(|| e.description().map(str::to_string))
                .or_else(|| e.detail().map(str::to_string)),
            remote: e.remote().map(|r| (r.class.clone(), r.module.clone())),
        }
    }

    /// `error KIND [module.Class] [condition] ["first line of the message"]`.
    pub fn describe(&self) -> String {
        let mut s = self.describe_neutral_head();
        if let Some(m) = &self.message {
            s.push_str(&format!(" {:?}", m.lines().next().unwrap_or("")));
        }
        s
    }

    fn describe_neutral_head(&self) -> String {
        let mut s = format!("error {}", self.kind);
        if let Some((class, module)) = &self.remote {
            s.push_str(&format!(" {module}.{class}"));
        }
        if let Some(c) = &self.condition {
            s.push_str(&format!(" {c}"));
        }
        s
    }

    /// As written to the transcript: a timeout's free text is an implementation detail that differs
    /// between brokers ("no reply within the call timeout" on a broker, nothing on a router), so it is
    /// left out there; the full text stays in the step's message.
    pub fn describe_neutral(&self) -> String {
        if self.kind == ErrorKind::TimedOut {
            self.describe_neutral_head()
        } else {
            self.describe()
        }
    }
}

/// The driver's per-operation error kinds, by their stable names.
pub trait DriverKind {
    /// The snake_case name (`timed_out`).
    fn name(&self) -> &'static str;
}

macro_rules! driver_kinds {
    ($($t:ty),*) => {$(
        impl DriverKind for $t {
            fn name(&self) -> &'static str {
                self.as_str()
            }
        }
    )*};
}
driver_kinds!(
    driver::CallErrorKind,
    driver::CastErrorKind,
    driver::NotifyErrorKind,
    driver::ListenErrorKind,
    driver::ConnectErrorKind
);

/// The result of one step.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Status.
    pub status: StepStatus,
    /// Why it failed, was skipped or failed as expected; or a passing step's detail.
    pub message: Option<String>,
}

impl StepOutcome {
    /// Passed.
    pub fn pass() -> Self {
        StepOutcome {
            status: StepStatus::Passed,
            message: None,
        }
    }

    /// Failed, with why.
    pub fn fail(m: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Failed,
            message: Some(m.into()),
        }
    }

    /// Skipped, with why.
    pub fn skipped(m: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Skipped,
            message: Some(m.into()),
        }
    }
}

fn compact(v: &Json) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// What operations of one step gave, summarised and checked.
#[derive(Debug)]
pub struct Checked {
    /// The transcript line's tail (`-> ok {..}` ...).
    pub line: String,
    /// The outcome.
    pub outcome: StepOutcome,
}

/// Checks `results` of a step (`is_call`: results carry values) against `expect` and the registry
/// entries `known`, on a broker of identity `id`.
pub fn check(
    results: &[Result<Json, OpError>],
    expect: &Expectation,
    known: &[KnownFailure],
    id: &Identity,
    is_call: bool,
) -> Checked {
    let (summary, details) = summarise(results, is_call);
    if let Some(k) = known.iter().find(|k| k.broker.matches(id)) {
        return check_known(results, k, &summary);
    }
    let mut problems = Vec::new();
    for r in results {
        problems.extend(check_one(r, expect));
    }
    problems.dedup();
    let line = format!("-> {}", summary.join("; "));
    let outcome = if !problems.is_empty() {
        StepOutcome::fail(problems.join("; "))
    } else if details.is_empty() {
        StepOutcome::pass()
    } else {
        StepOutcome {
            status: StepStatus::Passed,
            message: Some(format!("as expected: {}", details.join("; "))),
        }
    };
    Checked { line, outcome }
}

/// Identical outcomes counted (concurrent calls finish in any order), and the full texts the
/// transcript leaves out.
fn summarise(results: &[Result<Json, OpError>], is_call: bool) -> (Vec<String>, Vec<String>) {
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut details: Vec<String> = Vec::new();
    for r in results {
        let s = match r {
            Ok(v) if is_call => format!("ok {}", compact(v)),
            Ok(_) => "ok".to_string(),
            Err(e) => {
                let (full, neutral) = (e.describe(), e.describe_neutral());
                if full != neutral && !details.contains(&full) {
                    details.push(full);
                }
                neutral
            }
        };
        *outcomes.entry(s).or_default() += 1;
    }
    let summary = outcomes
        .iter()
        .map(|(s, n)| {
            if *n > 1 || results.len() > 1 {
                format!("{s} (x{n})")
            } else {
                s.clone()
            }
        })
        .collect();
    (summary, details)
}

fn check_known(results: &[Result<Json, OpError>], k: &KnownFailure, summary: &[String]) -> Checked {
    let matching = results.iter().all(|r| match (r, &k.condition) {
        (Err(e), FailureCondition::Amqp(c)) => e.condition.as_deref() == Some(c.as_str()),
        (Err(e), FailureCondition::Kind(kind)) => e.kind == *kind,
        (Ok(_), _) => false,
    });
    let line = format!(
        "-> {} [expected failure on {}]",
        summary.join("; "),
        k.broker_label
    );
    let outcome = if matching {
        let why = k
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let words = results
            .iter()
            .find_map(|r| r.as_ref().err())
            .and_then(|e| e.message.as_deref())
            .map(|m| format!(": {:?}", m.lines().next().unwrap_or("")))
            .unwrap_or_default();
        StepOutcome {
            status: StepStatus::ExpectedFailure,
            message: Some(format!(
                "failed as expected on {} with {}{words}{why}",
                k.broker_label,
                k.condition.as_str()
            )),
        }
    } else {
        StepOutcome::fail(format!(
            "expected to fail on {} with {}, got: {}",
            k.broker_label,
            k.condition.as_str(),
            summary.join("; ")
        ))
    };
    Checked { line, outcome }
}

fn check_one(r: &Result<Json, OpError>, exp: &Expectation) -> Vec<String> {
    let mut problems = Vec::new();
    match (r, &exp.error) {
        (Ok(v), None) => {
            if let Some(want) = &exp.result {
                if v != want {
                    problems.push(format!(
                        "result {} != expected {}",
                        compact(v),
                        compact(want)
                    ));
                }
            }
        }
        (Ok(v), Some(e)) => problems.push(format!(
            "expected error {}, got result {}",
            e.kind,
            compact(v)
        )),
        (Err(err), None) => problems.push(format!("unexpected {}", err.describe())),
        (Err(err), Some(e)) => {
            let got = err.describe();
            if err.kind != e.kind {
                problems.push(format!("expected error {}, got {got}", e.kind));
            }
            if let Some(c) = &e.class {
                if err.remote.as_ref().map(|r| &r.0) != Some(c) {
                    problems.push(format!("expected exception class {c}, got {got}"));
                }
            }
            if let Some(m) = &e.module {
                if err.remote.as_ref().map(|r| &r.1) != Some(m) {
                    problems.push(format!("expected exception module {m}, got {got}"));
                }
            }
            if let Some(m) = &e.message_contains {
                if !err.message.as_deref().unwrap_or("").contains(m.as_str()) {
                    problems.push(format!(
                        "expected the error message to contain {m:?}, got {got}"
                    ));
                }
            }
            if let Some(c) = &e.condition {
                if err.condition.as_deref() != Some(c.as_str()) {
                    problems.push(format!("expected condition {c}, got {got}"));
                }
            }
        }
    }
    problems
}

/// Whether `want` is a subset of `actual`; the differences, by dotted path, into `out`.
pub fn json_subset(path: &str, want: &Json, actual: &Json, out: &mut Vec<String>) {
    match (want, actual) {
        (Json::Object(w), Json::Object(a)) => {
            for (k, v) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => json_subset(&p, v, av, out),
                    None => out.push(format!("broker counter {p} is missing")),
                }
            }
        }
        (w, a) if w == a => {}
        (w, a) => out.push(format!(
            "broker counter {path} is {}, expected {}",
            compact(a),
            compact(w)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::{BrokerMatch, Flavour};
    use crate::scenario::ErrorExpect;

    fn timeout() -> OpError {
        OpError::new(ErrorKind::TimedOut, "no reply within the call timeout")
    }

    #[test]
    fn expected_timeouts_pass_and_say_so() {
        let exp = Expectation {
            result: None,
            error: Some(ErrorExpect {
                kind: ErrorKind::TimedOut,
                class: None,
                module: None,
                message_contains: None,
                condition: None,
            }),
        };
        let c = check(
            &[Err(timeout())],
            &exp,
            &[],
            &Identity::embedded(Flavour::Qpidd),
            true,
        );
        assert_eq!(c.line, "-> error timed_out");
        assert_eq!(c.outcome.status, StepStatus::Passed);
        assert!(c
            .outcome
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("as expected: ")));
        let c = check(
            &[Err(timeout())],
            &Expectation::default(),
            &[],
            &Identity::embedded(Flavour::Qpidd),
            true,
        );
        assert_eq!(c.outcome.status, StepStatus::Failed);
    }

    #[test]
    fn known_failures_match_by_identity_and_condition() {
        let k = KnownFailure {
            broker: BrokerMatch::parse("router").expect("router"),
            broker_label: "router".into(),
            condition: FailureCondition::Kind(ErrorKind::TimedOut),
            reason: Some("no store".into()),
        };
        let router = Identity::embedded(Flavour::Router);
        let c = check(
            &[Err(timeout())],
            &Expectation::default(),
            std::slice::from_ref(&k),
            &router,
            false,
        );
        assert_eq!(c.outcome.status, StepStatus::ExpectedFailure);
        assert!(
            c.line.ends_with("[expected failure on router]"),
            "{}",
            c.line
        );
        let c = check(
            &[Ok(Json::Null)],
            &Expectation::default(),
            std::slice::from_ref(&k),
            &router,
            false,
        );
        assert_eq!(c.outcome.status, StepStatus::Failed);
        let qpidd = Identity::embedded(Flavour::Qpidd);
        let c = check(
            &[Ok(Json::Null)],
            &Expectation::default(),
            &[k],
            &qpidd,
            false,
        );
        assert_eq!(c.outcome.status, StepStatus::Passed);
    }
}
