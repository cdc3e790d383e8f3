//! `network:`: a partition, packet loss or latency between the clients and a broker node, for a while.

use super::StepCtx;
use crate::runner::check::StepOutcome;
use crate::runner::netfault::Dropping;
use crate::scenario::{NetFault, NetFaultKind};

/// Applies `f` for its duration, then heals it; the message says when each client noticed.
pub async fn network(ctx: &mut StepCtx<'_>, n: usize, f: &NetFault) -> StepOutcome {
    let node = format!("node{}", f.node);
    let what = match f.kind {
        NetFaultKind::Partition => "partition".to_string(),
        NetFaultKind::Loss(p) => format!("loss {p}%"),
        NetFaultKind::Latency(d) => format!("latency {}", humantime::format_duration(d)),
    };
    let head = format!(
        "{n} network {node} {what} for {}",
        humantime::format_duration(f.duration)
    );
    let Some(port) = ctx
        .brokers
        .main()
        .and_then(|h| h.nodes.get(f.node))
        .map(|x| x.port())
    else {
        ctx.transcript
            .step(format!("{head} -> skipped (no managed broker)"));
        return StepOutcome::skipped(
            "network faults need a broker started by the harness (not --url)",
        );
    };
    let began = std::time::Instant::now();
    let applied = match f.kind {
        NetFaultKind::Latency(d) => match ctx.brokers.proxy(f.node) {
            Some(p) => {
                p.set_latency(d);
                tokio::time::sleep(f.duration).await;
                p.set_latency(std::time::Duration::ZERO);
                Ok(())
            }
            None => Err("no latency proxy in front of the node".to_string()),
        },
        kind => match Dropping::start(port, kind).await {
            Ok(rules) => {
                tokio::time::sleep(f.duration).await;
                rules.heal().await
            }
            Err(e) => Err(e),
        },
    };
    if let Err(e) = applied {
        ctx.transcript.step(format!("{head} -> skipped ({e})"));
        return StepOutcome::skipped(e);
    }
    ctx.transcript.step(format!("{head} -> ok"));
    let noticed = ctx.env.events().first_after("disconnected", began);
    let message = if noticed.is_empty() {
        "no client disconnected".to_string()
    } else {
        let parts: Vec<String> = noticed
            .iter()
            .map(|(src, after)| format!("{src} {:.1} s", after.as_secs_f64()))
            .collect();
        format!(
            "disconnect noticed after the fault began: {}",
            parts.join(", ")
        )
    };
    StepOutcome {
        status: crate::report::StepStatus::Passed,
        message: Some(message),
    }
}
