//! `wait:`: until services received enough deliveries, or the timeout.

use std::time::Duration;

use super::StepCtx;
use crate::runner::check::StepOutcome;
use crate::scenario::Wait;

/// Polls the recorder every 10 ms until every service has its count, for at most `w.timeout`.
pub async fn wait(ctx: &mut StepCtx<'_>, n: usize, w: &Wait) -> StepOutcome {
    let deadline = tokio::time::Instant::now() + w.timeout;
    let parts: Vec<String> = w
        .deliveries
        .iter()
        .map(|(s, n)| format!("{s}>={n}"))
        .collect();
    loop {
        let missing: Vec<String> = w
            .deliveries
            .iter()
            .filter_map(|(svc, want)| {
                let got = ctx.env.recorder.count(svc);
                (got < *want).then(|| format!("{svc}: {got}/{want}"))
            })
            .collect();
        if missing.is_empty() {
            ctx.transcript
                .step(format!("{n} wait {} -> ok", parts.join(" ")));
            return StepOutcome::pass();
        }
        if tokio::time::Instant::now() >= deadline {
            ctx.transcript.step(format!(
                "{n} wait {} -> timed out ({})",
                parts.join(" "),
                missing.join(", ")
            ));
            return StepOutcome::fail(format!(
                "timed out waiting for deliveries: {}",
                missing.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
