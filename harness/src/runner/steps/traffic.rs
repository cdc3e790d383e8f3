//! `traffic:` and `traffic_stop:`.

use super::StepCtx;
use crate::runner::check::StepOutcome;
use crate::runner::traffic;
use crate::scenario::{target_label, Traffic, TrafficStop};

/// Starts background traffic.
pub fn start(ctx: &mut StepCtx<'_>, n: usize, t: &Traffic) -> StepOutcome {
    let mut what = Vec::new();
    if let Some(c) = &t.calls {
        what.push(format!(
            "calls {} {} every {}",
            target_label(&c.target),
            c.method,
            humantime::format_duration(c.every)
        ));
    }
    if let Some(c) = &t.casts {
        what.push(format!(
            "casts {} {} every {}",
            target_label(&c.target),
            c.method,
            humantime::format_duration(c.every)
        ));
    }
    if let Some(x) = &t.notifications {
        what.push(format!(
            "notifications [{}] {} {} every {}",
            x.topics.join(","),
            x.priority.as_lower(),
            x.event_type,
            humantime::format_duration(x.every)
        ));
    }
    let running = traffic::start(t, &ctx.env.traffic_sources());
    ctx.traffic.insert(t.name.clone(), running);
    ctx.transcript.step(format!(
        "{n} traffic {} {} -> started",
        t.name,
        what.join(", ")
    ));
    StepOutcome::pass()
}

/// Stops background traffic and checks that nothing hung (and, when asked, nothing was lost).
pub async fn stop(ctx: &mut StepCtx<'_>, n: usize, t: &TrafficStop) -> StepOutcome {
    let Some(running) = ctx.traffic.remove(&t.name) else {
        ctx.transcript
            .step(format!("{n} traffic_stop {} -> not running", t.name));
        return StepOutcome::fail(format!("traffic '{}' is not running", t.name));
    };
    let out = traffic::stop(&t.name, running, &ctx.env.traffic_log, t.drain).await;
    let mut verdicts = Vec::new();
    let mut problems = Vec::new();
    if out.hung() == 0 {
        verdicts.push("none hung".to_string());
    } else {
        verdicts.push("some hung".to_string());
        problems.push(format!(
            "{} operations hung past their deadline",
            out.hung()
        ));
    }
    if let (Some(want), Some(calls)) = (t.calls_ok_at_least, &out.calls) {
        if calls.ok >= want as u64 {
            verdicts.push(format!("at least {want} calls ok"));
        } else {
            verdicts.push(format!("fewer than {want} calls ok"));
            problems.push(format!("{} calls ok, expected at least {want}", calls.ok));
        }
    }
    if let Some(allowed) = t.lost {
        if out.lost() <= allowed as u64 {
            verdicts.push(if allowed == 0 {
                "no acknowledged notification lost".to_string()
            } else {
                format!("at most {allowed} acknowledged notifications lost")
            });
        } else {
            verdicts.push("acknowledged notifications lost".to_string());
            problems.push(format!(
                "{} acknowledged notifications never arrived (at most {allowed} allowed)",
                out.lost()
            ));
        }
    }
    ctx.transcript.step(format!(
        "{n} traffic_stop {} -> {}",
        t.name,
        verdicts.join(", ")
    ));
    let counts = out.describe();
    if problems.is_empty() {
        StepOutcome {
            status: crate::report::StepStatus::Passed,
            message: Some(counts),
        }
    } else {
        StepOutcome::fail(format!("{}: {counts}", problems.join("; ")))
    }
}
