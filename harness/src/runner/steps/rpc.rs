//! `call:`, `cast:` and `fanout:`.

use futures::StreamExt;
use serde_json::Value as Json;

use super::{compact_map, StepCtx};
use crate::runner::check::{check, OpError, StepOutcome};
use crate::runner::env::Via;
use crate::runner::services::python::PeerCall;
use crate::scenario::{target_label, Call, Cast};

async fn results_of_call(ctx: &StepCtx<'_>, c: &Call) -> Vec<Result<Json, OpError>> {
    let via = match ctx.env.via(&c.from, c.reply_mode).await {
        Ok(v) => v,
        Err(e) => return vec![Err(e); c.repeat],
    };
    match via {
        Via::Python(peer, url) => {
            let pc = PeerCall {
                op: "call",
                target: &c.target,
                method: &c.method,
                args: &c.args,
                context: &c.context,
                timeout: c.timeout,
                monitor: c.call_monitor_timeout,
            };
            let mut out = Vec::new();
            for _ in 0..c.repeat {
                out.push(peer.call(url, &pc).await);
            }
            out
        }
        Via::Rust(transport) => {
            let mut client = driver::RpcClient::new(&transport, c.target.clone());
            if let Some(t) = c.timeout {
                client = client.timeout(t);
            }
            if let Some(m) = c.call_monitor_timeout {
                client = client.call_monitor_timeout(m);
            }
            let client = &client;
            futures::stream::iter(0..c.repeat)
                .map(|_| async move {
                    client
                        .call(c.context.clone(), &c.method, c.args.clone())
                        .await
                        .map_err(|e| OpError::from_driver(&e))
                })
                .buffer_unordered(c.concurrency.max(1))
                .collect()
                .await
        }
    }
}

/// `call:`: `repeat` calls, `concurrency` at a time.
pub async fn call(ctx: &mut StepCtx<'_>, n: usize, c: &Call) -> StepOutcome {
    let results = results_of_call(ctx, c).await;
    let mut head = format!(
        "{n} call {} {} {}",
        target_label(&c.target),
        c.method,
        compact_map(&c.args)
    );
    if c.repeat > 1 {
        head.push_str(&format!(" x{} (concurrency {})", c.repeat, c.concurrency));
    }
    let checked = check(&results, &c.expect, &c.known_failures, ctx.identity, true);
    ctx.transcript.step(format!("{head} {}", checked.line));
    checked.outcome
}

/// `cast:` and `fanout:`: `repeat` messages, one after the other.
pub async fn cast(ctx: &mut StepCtx<'_>, n: usize, c: &Cast) -> StepOutcome {
    let mut results: Vec<Result<Json, OpError>> = Vec::new();
    match ctx.env.via(&c.from, None).await {
        Err(e) => results = vec![Err(e); c.repeat],
        Ok(Via::Python(peer, url)) => {
            let pc = PeerCall {
                op: if c.fanout { "fanout" } else { "cast" },
                target: &c.target,
                method: &c.method,
                args: &c.args,
                context: &c.context,
                timeout: None,
                monitor: None,
            };
            for _ in 0..c.repeat {
                results.push(peer.call(url, &pc).await.map(|_| Json::Null));
            }
        }
        Ok(Via::Rust(transport)) => {
            let client = driver::RpcClient::new(&transport, c.target.clone());
            for _ in 0..c.repeat {
                results.push(
                    client
                        .cast(c.context.clone(), &c.method, c.args.clone())
                        .await
                        .map(|()| Json::Null)
                        .map_err(|e| OpError::from_driver(&e)),
                );
            }
        }
    }
    let kw = if c.fanout { "fanout" } else { "cast" };
    let mut head = format!(
        "{n} {kw} {} {} {}",
        target_label(&c.target),
        c.method,
        compact_map(&c.args)
    );
    if c.repeat > 1 {
        head.push_str(&format!(" x{}", c.repeat));
    }
    let checked = check(&results, &c.expect, &c.known_failures, ctx.identity, false);
    ctx.transcript.step(format!("{head} {}", checked.line));
    checked.outcome
}
