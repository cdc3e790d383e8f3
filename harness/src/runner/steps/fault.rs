//! Broker faults: `kill`, `restart`, `drop_connections`, `pause`, and `broker_fault` (faults inside
//! the broker through its own fault controls).

use super::StepCtx;
use crate::backend::BackendError;
use crate::runner::check::StepOutcome;
use crate::scenario::{BrokerFault, Fault, FaultOp};

/// Performs `f` on its node of the managed broker.
pub async fn fault(ctx: &mut StepCtx<'_>, n: usize, f: &Fault) -> StepOutcome {
    let op = f.op.as_str();
    let node_name = format!("node{}", f.node);
    let Some(h) = ctx.brokers.main() else {
        ctx.transcript.step(format!(
            "{n} {op} {node_name} -> skipped (no managed broker)"
        ));
        return StepOutcome::skipped(
            "fault steps need a broker started by the harness (not --url)",
        );
    };
    let Some(node) = h.nodes.get(f.node) else {
        return StepOutcome::fail(format!("no broker node {node_name}"));
    };
    let began = std::time::Instant::now();
    let r = match f.op {
        FaultOp::Kill => node.kill().await,
        FaultOp::Restart => node.restart().await,
        FaultOp::DropConnections => match node.drop_connections().await {
            Err(BackendError::Unsupported { .. }) if managed(ctx).is_some() => {
                drop_through_management(ctx, node.port(), &node_name).await
            }
            r => r,
        },
        FaultOp::Pause(d) => match node.pause().await {
            Ok(()) => {
                tokio::time::sleep(d).await;
                node.resume().await
            }
            Err(e) => Err(e),
        },
    };
    match r {
        Ok(()) => {
            ctx.transcript.step(format!("{n} {op} {node_name} -> ok"));
            // How soon each client noticed (a pause shows heartbeat-loss detection).
            let noticed = ctx.env.events().first_after("disconnected", began);
            let message = (!noticed.is_empty()).then(|| {
                let parts: Vec<String> = noticed
                    .iter()
                    .map(|(src, after)| format!("{src} {:.1} s", after.as_secs_f64()))
                    .collect();
                format!(
                    "disconnect noticed after the fault began: {}",
                    parts.join(", ")
                )
            });
            StepOutcome {
                status: crate::report::StepStatus::Passed,
                message,
            }
        }
        Err(BackendError::Unsupported { backend, what }) => {
            ctx.transcript
                .step(format!("{n} {op} {node_name} -> skipped (unsupported)"));
            StepOutcome::skipped(format!("backend {backend} does not support {what}"))
        }
        Err(e) => {
            ctx.transcript
                .step(format!("{n} {op} {node_name} -> error"));
            StepOutcome::fail(e.to_string())
        }
    }
}

/// Sets `f` inside its node of the managed broker.
pub async fn broker_fault(ctx: &mut StepCtx<'_>, n: usize, f: &BrokerFault) -> StepOutcome {
    let label = f.op.label();
    let node_name = format!("node{}", f.node);
    let Some(h) = ctx.brokers.main() else {
        ctx.transcript.step(format!(
            "{n} broker_fault {label} {node_name} -> skipped (no managed broker)"
        ));
        return StepOutcome::skipped(
            "broker faults need a broker started by the harness (not --url)",
        );
    };
    let Some(node) = h.nodes.get(f.node) else {
        return StepOutcome::fail(format!("no broker node {node_name}"));
    };
    match node.broker_fault(&f.op).await {
        Ok(()) => {
            ctx.transcript
                .step(format!("{n} broker_fault {label} {node_name} -> ok"));
            StepOutcome::pass()
        }
        Err(BackendError::Unsupported { .. }) => {
            ctx.transcript.step(format!(
                "{n} broker_fault {label} {node_name} -> skipped (unsupported)"
            ));
            StepOutcome::skipped(format!(
                "{} has no fault controls for broker_fault (the embedded broker has)",
                node.product()
            ))
        }
        Err(e) => {
            ctx.transcript
                .step(format!("{n} broker_fault {label} {node_name} -> error"));
            StepOutcome::fail(e.to_string())
        }
    }
}

/// The product whose management protocol can close connections, when the backend cannot (a real
/// qpidd or qdrouterd, or the embedded broker in a process or container, which answers the same
/// protocols).
fn managed(ctx: &StepCtx<'_>) -> Option<crate::brokers::Product> {
    ctx.identity.product.filter(|p| crate::mgmt::supported(*p))
}

/// `drop_connections` through QMF (qpidd) or `$management` (qdrouterd) on the node's port.
async fn drop_through_management(
    ctx: &StepCtx<'_>,
    port: u16,
    node_name: &str,
) -> Result<(), BackendError> {
    let product = managed(ctx).ok_or_else(|| BackendError::Fault {
        op: "drop_connections".into(),
        node: node_name.to_string(),
        message: "no management protocol for this broker".into(),
    })?;
    let mut target =
        crate::mgmt::Target::from_url(ctx.env.url()).ok_or_else(|| BackendError::Fault {
            op: "drop_connections".into(),
            node: node_name.to_string(),
            message: "no broker address".into(),
        })?;
    target.authority = format!("127.0.0.1:{port}");
    match crate::mgmt::drop_connections(product, &target).await {
        Ok(n) => {
            tracing::info!(
                node = node_name,
                closed = n,
                "drop_connections through management"
            );
            Ok(())
        }
        Err(message) => Err(BackendError::Fault {
            op: "drop_connections".into(),
            node: node_name.to_string(),
            message,
        }),
    }
}
