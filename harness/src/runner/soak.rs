//! A soak: the scenario's services and its background traffic for a long time, with the broker
//! restarted at a fixed interval; at the end, what was lost or hung and how the process's memory moved.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::env::Env;
use super::setup::Brokers;
use super::traffic;
use crate::bench::stats::Memory;
use crate::plan::RunPlan;
use crate::scenario::{StepKind, Traffic};

/// How to soak.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long in all.
    pub duration: Duration,
    /// Restart node0 this often (`None`: never).
    pub restart_every: Option<Duration>,
    /// How long node0 stays down at each restart.
    pub down_for: Duration,
    /// Memory is sampled first after this long (the baseline).
    pub warm_up: Duration,
    /// Largest growth of RSS from the baseline to the end that passes (0.10 = 10 %).
    pub rss_tolerance: f64,
}

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The scenario file.
    pub file: String,
    /// The broker.
    pub broker: String,
    /// Seconds it ran.
    pub seconds: f64,
    /// Broker restarts done.
    pub restarts: u32,
    /// Counts of the traffic.
    pub counts: String,
    /// Acknowledged notifications never received.
    pub lost: u64,
    /// Operations that did not finish within their deadline.
    pub hung: u64,
    /// RSS after the warm-up, KiB.
    pub rss_after_warm_up_kib: Option<u64>,
    /// RSS at the end, KiB.
    pub rss_end_kib: Option<u64>,
    /// Peak RSS, KiB.
    pub rss_peak_kib: Option<u64>,
    /// Growth of RSS from the baseline to the end (0.05 = 5 %).
    pub rss_growth: Option<f64>,
    /// What failed (empty when the soak passed).
    pub problems: Vec<String>,
}

/// The scenario's one `traffic:` step.
pub fn traffic_of(plan: &RunPlan) -> Result<&Traffic, String> {
    let mut all = plan.scenario.steps.iter().filter_map(|s| match &s.kind {
        StepKind::Traffic(t) => Some(t),
        _ => None,
    });
    match (all.next(), all.next()) {
        (Some(t), None) => Ok(t),
        (None, _) => Err(
            "a soak needs a scenario with one `traffic:` step (its other steps are not run)".into(),
        ),
        (Some(_), Some(_)) => {
            Err("a soak uses the scenario's one `traffic:` step; this one has several".into())
        }
    }
}

async fn restart(brokers: &Brokers, down_for: Duration) -> Result<(), String> {
    let node = brokers
        .main()
        .and_then(|h| h.nodes.first())
        .ok_or("no managed broker to restart (not with --url)")?;
    node.kill().await.map_err(|e| e.to_string())?;
    tokio::time::sleep(down_for).await;
    node.restart().await.map_err(|e| e.to_string())
}

/// Runs the soak of `plan` with `opts`; `progress` is told the elapsed time and counts now and then.
pub async fn soak(
    plan: &RunPlan,
    opts: &SoakOptions,
    progress: &dyn Fn(&str),
) -> Result<SoakReport, String> {
    let t = traffic_of(plan)?.clone();
    let (brokers, conn) = Brokers::start(plan).await.map_err(|e| e.message)?;
    let env = match Env::start(plan, conn).await {
        Ok(e) => e,
        Err(e) => {
            brokers.stop().await;
            return Err(e);
        }
    };
    let started = Instant::now();
    let running = traffic::start(&t, &env.traffic_sources());
    let (mut restarts, mut baseline, mut problems) = (0u32, None, Vec::new());
    let mut next_restart = opts.restart_every.map(|d| started + d);
    while started.elapsed() < opts.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if baseline.is_none() && started.elapsed() >= opts.warm_up {
            baseline = Memory::now().rss_kib;
            progress(&format!(
                "baseline RSS after warm-up: {} KiB",
                baseline.unwrap_or(0)
            ));
        }
        if next_restart.is_some_and(|at| Instant::now() >= at) {
            if let Err(e) = restart(&brokers, opts.down_for).await {
                problems.push(format!("restart failed: {e}"));
                break;
            }
            restarts += 1;
            next_restart = opts.restart_every.map(|d| Instant::now() + d);
            progress(&format!(
                "{:.0} s: restart {restarts} done",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mem = Memory::now();
    let out = traffic::stop(&t.name, running, &env.traffic_log, Duration::from_secs(15)).await;
    env.shutdown().await;
    brokers.stop().await;
    let growth = match (baseline, mem.rss_kib) {
        (Some(b), Some(e)) if b > 0 => Some(e as f64 / b as f64 - 1.0),
        _ => None,
    };
    if out.lost() > 0 {
        let seqs: Vec<String> = out.lost_seqs.iter().map(u64::to_string).collect();
        problems.push(format!(
            "{} acknowledged notifications lost (sequence numbers {})",
            out.lost(),
            seqs.join(", ")
        ));
    }
    if out.hung() > 0 {
        problems.push(format!("{} operations hung", out.hung()));
    }
    if let Some(g) = growth.filter(|g| *g > opts.rss_tolerance) {
        problems.push(format!(
            "RSS grew {:.1} % after the warm-up (at most {:.0} % allowed)",
            g * 100.0,
            opts.rss_tolerance * 100.0
        ));
    }
    Ok(SoakReport {
        file: plan.file.clone(),
        broker: plan.label.clone(),
        seconds,
        restarts,
        counts: out.describe(),
        lost: out.lost(),
        hung: out.hung(),
        rss_after_warm_up_kib: baseline,
        rss_end_kib: mem.rss_kib,
        rss_peak_kib: mem.hwm_kib,
        rss_growth: growth,
        problems,
    })
}
