//! `notify:`.

use serde_json::Value as Json;

use super::{compact, StepCtx};
use crate::runner::check::{check, OpError, StepOutcome};
use crate::runner::env::Via;
use crate::scenario::{Notify, Sender};

async fn results(ctx: &StepCtx<'_>, x: &Notify) -> Vec<Result<Json, OpError>> {
    if let Sender::Service(from) = &x.from {
        match ctx.env.via(&x.from, None).await {
            Ok(Via::Python(peer, url)) => {
                return peer
                    .notify(url, from, x)
                    .await
                    .into_iter()
                    .map(|r| r.map(|()| Json::Null))
                    .collect()
            }
            Ok(Via::Rust(_)) => {}
            Err(e) => return vec![Err(e); x.repeat],
        }
    }
    let notifier = driver::Notifier::new(
        ctx.env.notifier_transport(),
        x.publisher.clone().unwrap_or_else(|| "harness".into()),
    )
    .topics(x.topics.iter().cloned())
    .version(x.version);
    let mut out = Vec::new();
    for _ in 0..x.repeat {
        out.push(
            notifier
                .notify(
                    x.context.clone(),
                    &x.event_type,
                    x.priority,
                    x.payload.clone(),
                )
                .await
                .map(|()| Json::Null)
                .map_err(|e| OpError::from_driver(&e)),
        );
    }
    out
}

/// `notify:`: `repeat` notifications to every topic.
pub async fn notify(ctx: &mut StepCtx<'_>, n: usize, x: &Notify) -> StepOutcome {
    let results = results(ctx, x).await;
    let from = match &x.from {
        Sender::Service(f) => format!(" from {f}"),
        Sender::Client => String::new(),
    };
    let version = match x.version {
        driver::NotifyVersion::V1 => 1,
        driver::NotifyVersion::V2 => 2,
    };
    let mut head = format!(
        "{n} notify{from} v{version} [{}] {} {} {}",
        x.topics.join(","),
        x.priority.as_lower(),
        x.event_type,
        compact(&x.payload)
    );
    if x.repeat > 1 {
        head.push_str(&format!(" x{}", x.repeat));
    }
    let checked = check(&results, &x.expect, &x.known_failures, ctx.identity, false);
    ctx.transcript.step(format!("{head} {}", checked.line));
    checked.outcome
}
