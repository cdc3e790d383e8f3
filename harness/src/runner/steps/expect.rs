//! `expect:`: deliveries so far and broker counters.

use super::{compact, StepCtx};
use crate::runner::check::{json_subset, StepOutcome};
use crate::scenario::Expect;

/// Checks deliveries and node0's counters right now: the embedded broker's own, else what the broker's
/// management protocol answers (QMF for qpidd, `$management` for qdrouterd).
pub async fn expect(ctx: &mut StepCtx<'_>, n: usize, e: &Expect) -> StepOutcome {
    let mut problems = Vec::new();
    let mut parts = Vec::new();
    let rec = &ctx.env.recorder;
    for (svc, want) in &e.deliveries {
        let got = rec.count(svc);
        parts.push(format!("{svc}={got}"));
        if got != *want {
            problems.push(format!("{svc} received {got} deliveries, expected {want}"));
        }
    }
    for (svc, keys) in &e.received {
        for (key, want) in keys {
            let got = rec.count_key(svc, key);
            parts.push(format!("{svc}.{key}={got}"));
            if got != *want {
                problems.push(format!("{svc} received {key} {got} times, expected {want}"));
            }
        }
    }
    if let Some(want) = &e.broker_counters {
        let mut actual = ctx
            .brokers
            .main()
            .and_then(|h| h.nodes.first())
            .and_then(|node| node.counters());
        if actual.is_none() {
            actual = managed_counters(ctx, &mut problems).await;
        }
        match actual {
            // `flavour: X` in the expectation scopes it to that broker flavour: queue and address
            // names are flavour-specific (a router has no queues).
            Some(actual)
                if want.get("flavour").is_some()
                    && want.get("flavour") != actual.get("flavour") =>
            {
                parts.push("broker_counters (not available, skipped)".into());
            }
            Some(actual) => {
                json_subset("", want, &actual, &mut problems);
                parts.push(format!("broker_counters {}", compact(want)));
            }
            None => parts.push("broker_counters (not available, skipped)".into()),
        }
    }
    let verdict = if problems.is_empty() {
        "ok".to_string()
    } else {
        format!("FAILED: {}", problems.join("; "))
    };
    ctx.transcript
        .step(format!("{n} expect {} -> {verdict}", parts.join(" ")));
    if problems.is_empty() {
        StepOutcome::pass()
    } else {
        StepOutcome::fail(problems.join("; "))
    }
}

/// Counters through the broker's management protocol, when the harness knows it for this product.
async fn managed_counters(
    ctx: &StepCtx<'_>,
    problems: &mut Vec<String>,
) -> Option<serde_json::Value> {
    let product = ctx
        .identity
        .product
        .filter(|p| crate::mgmt::supported(*p))?;
    if ctx.identity.embedded.is_some() {
        return None;
    }
    let target = crate::mgmt::Target::from_url(ctx.env.url())?;
    match crate::mgmt::counters(product, &target).await {
        Ok(c) => Some(c),
        Err(e) => {
            problems.push(format!("broker_counters: {e}"));
            None
        }
    }
}
