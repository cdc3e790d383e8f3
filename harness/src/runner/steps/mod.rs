//! One module per step kind. A step gets a [`StepCtx`] (the running services and brokers, what the
//! broker is, the transcript) and returns a [`StepOutcome`]; it writes its own transcript line.
//!
//! Adding a step kind: its serde shape in `scenario/model.rs`, its checks and typed form in
//! `scenario/validate.rs` and `scenario/typed.rs`, and a module here that [`run`] dispatches to.

mod expect;
mod fault;
mod network;
mod notify;
mod rpc;
mod traffic;
mod wait;

use serde_json::Value as Json;

use super::check::StepOutcome;
use super::env::Env;
use super::setup::Brokers;
use crate::brokers::Identity;
use crate::scenario::{Step, StepKind};
use crate::transcript::Transcript;

/// What a step can use.
#[derive(Debug)]
pub struct StepCtx<'a> {
    /// Clients and services.
    pub env: &'a Env,
    /// The brokers (none for `--url`).
    pub brokers: &'a Brokers,
    /// What the broker is, for the known-failure registry.
    pub identity: &'a Identity,
    /// The transcript.
    pub transcript: &'a mut Transcript,
    /// Background traffic that is running, by name.
    pub traffic: &'a mut std::collections::BTreeMap<String, crate::runner::traffic::Running>,
}

/// Runs `step`.
pub async fn run(ctx: &mut StepCtx<'_>, step: &Step) -> StepOutcome {
    let n = step.number;
    match &step.kind {
        StepKind::Group(name) => {
            ctx.transcript.step(format!("{n} group {name}"));
            StepOutcome::pass()
        }
        StepKind::Sleep(d) => {
            tokio::time::sleep(*d).await;
            ctx.transcript.step(format!("{n} sleep"));
            StepOutcome::pass()
        }
        StepKind::Call(c) => rpc::call(ctx, n, c).await,
        StepKind::Cast(c) => rpc::cast(ctx, n, c).await,
        StepKind::Notify(x) => notify::notify(ctx, n, x).await,
        StepKind::Wait(w) => wait::wait(ctx, n, w).await,
        StepKind::Expect(e) => expect::expect(ctx, n, e).await,
        StepKind::Fault(f) => fault::fault(ctx, n, f).await,
        StepKind::Traffic(t) => traffic::start(ctx, n, t),
        StepKind::TrafficStop(t) => traffic::stop(ctx, n, t).await,
        StepKind::Network(f) => network::network(ctx, n, f).await,
        StepKind::BrokerFault(f) => fault::broker_fault(ctx, n, f).await,
    }
}

/// How long `step` may take when it is one that waits on purpose (an expected timeout, a `wait:`, a
/// sleep or pause of a second or more), for progress lines.
pub fn waits(
    step: &Step,
    rpc_response_timeout: std::time::Duration,
) -> Option<std::time::Duration> {
    use crate::scenario::{ErrorKind, FailureCondition};
    let long = |d: std::time::Duration| (d >= std::time::Duration::from_secs(1)).then_some(d);
    let times_out = |exp: &crate::scenario::Expectation,
                     known: &[crate::scenario::KnownFailure]| {
        exp.error
            .as_ref()
            .is_some_and(|e| e.kind == ErrorKind::TimedOut)
            || known
                .iter()
                .any(|k| k.condition == FailureCondition::Kind(ErrorKind::TimedOut))
    };
    match &step.kind {
        StepKind::Call(c) if times_out(&c.expect, &c.known_failures) => {
            long(c.timeout.unwrap_or(rpc_response_timeout))
        }
        StepKind::Wait(w) => long(w.timeout),
        StepKind::TrafficStop(t) => long(t.drain),
        StepKind::Network(f) => long(f.duration),
        StepKind::Sleep(d) => long(*d),
        StepKind::Fault(crate::scenario::Fault {
            op: crate::scenario::FaultOp::Pause(d),
            ..
        }) => long(*d),
        _ => None,
    }
}

fn compact(v: &Json) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn compact_map(m: &serde_json::Map<String, Json>) -> String {
    serde_json::to_string(m).unwrap_or_default()
}
