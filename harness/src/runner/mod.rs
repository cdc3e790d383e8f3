//! Runs one [`RunPlan`]: starts its brokers ([`setup`]) and services ([`env`]), runs the steps
//! ([`steps`]), and returns a [`ScenarioReport`] with the redacted transcript. Progress goes to a
//! [`Reporter`] as [`RunEvent`]s; the runner itself prints nothing.

pub mod check;
pub mod env;
pub mod netfault;
pub mod record;
pub mod services;
pub mod setup;
pub mod soak;
pub mod steps;
pub mod traffic;

use std::time::Instant;

use crate::exit_code;
use crate::plan::RunPlan;
use crate::report::events::{Reporter, RunEvent};
use crate::report::{GroupReport, ScenarioReport, SnapshotStatus, StepReport};
use crate::scenario::{target_label, Role, Scenario, StepKind};
use crate::transcript::{Redactor, Transcript};

pub use check::OpError;

/// The header of a scenario's transcript: name, description and services.
fn header(sc: &Scenario, t: &mut Transcript) {
    t.header(format!("scenario: {}", sc.name));
    if let Some(d) = &sc.description {
        t.header(format!(
            "description: {}",
            d.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    t.header("services:");
    for svc in &sc.services {
        let what = match &svc.role {
            Role::RpcServer { target, endpoints } => {
                let methods: Vec<&str> = endpoints
                    .iter()
                    .flat_map(|e| e.methods.keys().map(String::as_str))
                    .collect();
                format!(
                    "rpc_server {} methods [{}]",
                    target_label(target),
                    methods.join(", ")
                )
            }
            Role::Listener {
                targets,
                priorities,
                priorities_named,
                pool,
                ..
            } => {
                let t: Vec<String> = targets.iter().map(target_label).collect();
                let pool = pool
                    .as_deref()
                    .map(|p| format!(" pool={p}"))
                    .unwrap_or_default();
                let pr = if *priorities_named {
                    let names: Vec<&str> = priorities.iter().map(|p| p.as_lower()).collect();
                    names.join(",")
                } else {
                    "all".to_string()
                };
                format!("listener [{}] priorities={pr}{pool}", t.join(", "))
            }
        };
        let mut cfg = svc
            .config
            .as_ref()
            .map(|c| format!(" config={}", c.template))
            .unwrap_or_default();
        if let Some(v) = &svc.vhost {
            cfg.push_str(&format!(" vhost={v}"));
        }
        t.header(format!(
            "  {} ({}): {what}{cfg}",
            svc.name,
            svc.kind.as_str()
        ));
    }
}

/// A report for a scenario that has not run yet.
fn empty_report(plan: &RunPlan) -> ScenarioReport {
    ScenarioReport {
        file: plan.file.clone(),
        name: plan.scenario.name.clone(),
        broker: plan.label.clone(),
        steps: plan.scenario.steps.len(),
        groups: Vec::new(),
        error: None,
        not_applicable: None,
        snapshot: SnapshotStatus::NotChecked,
        transcript: String::new(),
        duration_ms: 0,
        exit_code: exit_code::OK,
        broker_logs: Default::default(),
    }
}

/// Why a scenario with `broker_fault:` steps cannot run on `plan`'s broker: those faults are the
/// embedded broker's own controls, reachable only when it runs in this process (no real broker and no
/// `harness broker serve` process offers them).
fn broker_faults_unavailable(plan: &RunPlan) -> Option<String> {
    let uses = plan
        .scenario
        .steps
        .iter()
        .any(|s| matches!(s.kind, crate::scenario::StepKind::BrokerFault(_)));
    if !uses || plan.backend() == Some(crate::backend::BackendKind::Embedded) {
        return None;
    }
    Some(format!(
        "needs broker-faults (the embedded broker's fault controls, in process; {} has none)",
        plan.label
    ))
}

/// Runs `plan` and returns its report (transcript redacted, snapshot not yet checked).
pub async fn run(plan: &RunPlan, reporter: &dyn Reporter) -> ScenarioReport {
    let started = Instant::now();
    let mut report = empty_report(plan);
    let redactor = Redactor::new(
        plan.scenario
            .passwords()
            .iter()
            .map(|p| p.expose().to_string())
            .collect(),
    );
    if let Some(c) = plan.identity.lacks(&plan.scenario.requires) {
        report.not_applicable = Some(format!(
            "needs {} ({} has none)",
            c.as_str(),
            plan.identity.describe()
        ));
        return report;
    }
    if let Some(why) = broker_faults_unavailable(plan) {
        report.not_applicable = Some(why);
        return report;
    }
    reporter.event(&RunEvent::ScenarioStarted {
        file: &plan.file,
        broker: &plan.label,
        steps: plan.scenario.steps.len(),
    });
    let finish = |mut report: ScenarioReport, code: i32, error: String| {
        report.error = Some(redactor.redact_secrets(&error));
        report.exit_code = code;
        report.duration_ms = started.elapsed().as_millis() as u64;
        report
    };
    let (brokers, conn) = match setup::Brokers::start(plan).await {
        Ok(x) => x,
        Err(e) => return finish(report, e.code, e.message),
    };
    let mut transcript = Transcript::default();
    header(&plan.scenario, &mut transcript);
    if let Some(nspec) = &plan.notifications {
        transcript.header(format!("notification broker: {}", nspec.label()));
    }
    let env = match env::Env::start(plan, conn).await {
        Ok(env) => env,
        Err(e) => {
            report.broker_logs = brokers.logs(&redactor);
            brokers.stop().await;
            return finish(
                report,
                exit_code::RUNTIME,
                format!("runtime setup failed: {e}"),
            );
        }
    };
    for note in env.notes() {
        transcript.header(note.clone());
    }
    run_steps(
        plan,
        &env,
        &brokers,
        &mut transcript,
        &mut report,
        reporter,
        &redactor,
    )
    .await;

    let recorder = env.recorder.clone();
    for (src, ev) in env.shutdown().await {
        transcript.event(&src, ev);
    }
    for (svc, lines) in recorder.lines() {
        for line in lines {
            transcript.delivery(&svc, line);
        }
    }
    let failed = report.failures().next().is_some();
    if failed {
        report.broker_logs = brokers.logs(&redactor);
        report.exit_code = exit_code::MISMATCH;
    }
    brokers.stop().await;
    report.transcript = redactor.redact(&transcript.render());
    report.duration_ms = started.elapsed().as_millis() as u64;
    report
}

/// Runs every step in order, grouping their reports.
async fn run_steps(
    plan: &RunPlan,
    env: &env::Env,
    brokers: &setup::Brokers,
    transcript: &mut Transcript,
    report: &mut ScenarioReport,
    reporter: &dyn Reporter,
    redactor: &Redactor,
) {
    let rpc_timeout = std::time::Duration::from_secs(plan.client.rpc_response_timeout);
    let mut traffic = std::collections::BTreeMap::new();
    // A broker reached by `--url` is what its Open frame says, not what the scenario assumed (known
    // failures and management protocols follow the real product); a started broker is known already.
    let refined = match plan.broker {
        crate::plan::Placement::External(_) => env.peer_identity(),
        crate::plan::Placement::Managed { .. } => None,
    };
    let mut ctx = steps::StepCtx {
        env,
        brokers,
        identity: refined.as_ref().unwrap_or(&plan.identity),
        transcript,
        traffic: &mut traffic,
    };
    let mut group = GroupReport {
        name: "main".into(),
        steps: Vec::new(),
    };
    for step in &plan.scenario.steps {
        reporter.event(&RunEvent::StepStarted {
            step,
            wait: steps::waits(step, rpc_timeout),
        });
        if let StepKind::Group(name) = &step.kind {
            let next = GroupReport {
                name: name.clone(),
                steps: Vec::new(),
            };
            if group.steps.is_empty() {
                group = next;
            } else {
                report.groups.push(std::mem::replace(&mut group, next));
            }
        }
        let t0 = Instant::now();
        let out = steps::run(&mut ctx, step).await;
        let sr = StepReport {
            index: step.number,
            keyword: step.keyword().into(),
            line: step.line,
            status: out.status,
            message: out.message.map(|m| redactor.redact_secrets(&m)),
            duration_ms: t0.elapsed().as_millis() as u64,
        };
        reporter.event(&RunEvent::StepFinished(&sr));
        if !matches!(step.kind, StepKind::Group(_)) {
            group.steps.push(sr);
        }
    }
    report.groups.push(group);
    // Traffic the scenario never stopped ends with the run.
    for (name, running) in traffic {
        traffic::stop(&name, running, &env.traffic_log, std::time::Duration::ZERO).await;
    }
}
