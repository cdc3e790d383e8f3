//! Producer links: the broker receives, routes each delivery and settles it.
//!
//! Queues and topics accept at once; router anycast waits for the consumer's outcome
//! (end-to-end settlement), so those dispositions are sent as the outcomes arrive.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::DispositionError;
use fe2o3_amqp::link::DEFAULT_CREDIT;
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::{Body, Modified, Outcome};
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Delivery, Receiver};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::conn::ConnCtx;
use super::link::LinkStart;
use super::Core;
use crate::counters::{dec, inc};
use crate::faults::ForcedOutcome;
use crate::node::{Node, Routed, Stored};
use crate::util::amqp_error;

/// Sleeps until `at` (never returns for `None`).
async fn sleep_until_std(at: Option<std::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

type PendingReply =
    Pin<Box<dyn Future<Output = (DeliveryInfo, Arc<Node>, Option<Outcome>)> + Send + Sync>>;

/// Deliveries taken from the link in one go (their accepts go out as one disposition range).
const RECV_BATCH: usize = 64;

enum Action {
    Accept(DeliveryInfo),
    Wait(PendingReply),
    Done,
}

/// Why the producer loop stopped.
enum Stop {
    /// Close the link with this error (a fault).
    Close(definitions::Error),
    /// Close the link normally (or it is gone already).
    Normal,
}

struct Producer<'a> {
    core: &'a Arc<Core>,
    ctx: &'a Arc<ConnCtx>,
    receiver: Receiver,
    node: Option<Arc<Node>>,
    link: LinkStart,
    pending: FuturesUnordered<PendingReply>,
    /// Changes of the `withhold_credit` rules.
    credit_rules: watch::Receiver<u64>,
    /// Set while credit is withheld.
    held: Option<HeldCredit>,
}

/// Credit withheld by a fault: what to restore, and when to look again.
struct HeldCredit {
    restore: CreditMode,
    until: Option<std::time::Instant>,
}

pub(super) async fn run(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    receiver: Receiver,
    node: Option<Arc<Node>>,
    link: LinkStart,
    close_rx: mpsc::UnboundedReceiver<definitions::Error>,
) {
    let node = node.map(|n| core.attach_link(n));
    if let Some(n) = &node {
        inc(&n.stats.producers);
    }
    let mut p = Producer {
        core,
        ctx,
        receiver,
        node,
        link,
        pending: FuturesUnordered::new(),
        credit_rules: core.faults.rules_changed.subscribe(),
        held: None,
    };
    p.check_credit().await;
    let stop = p.serve(close_rx).await;
    if p.held.is_some() {
        core.faults.withheld.fetch_sub(1, Ordering::AcqRel);
    }
    let Producer { receiver, node, .. } = p;
    let close = match stop {
        Stop::Close(e) => receiver.close_with_error(e).await,
        Stop::Normal => receiver.close().await,
    };
    if let Err(e) = close {
        tracing::debug!(%e, "producer link close");
    }
    if let Some(n) = &node {
        dec(&n.stats.producers);
        core.detach_link(n, |unused| unused && n.removable_when_unused());
    }
}

impl Producer<'_> {
    async fn serve(&mut self, mut close_rx: mpsc::UnboundedReceiver<definitions::Error>) -> Stop {
        loop {
            let recheck_at = self.held.as_ref().and_then(|h| h.until);
            tokio::select! {
                biased;
                err = close_rx.recv() => return err.map_or(Stop::Normal, Stop::Close),
                _ = self.core.shutdown.cancelled() => return Stop::Normal,
                Ok(()) = self.credit_rules.changed() => self.check_credit().await,
                _ = sleep_until_std(recheck_at), if recheck_at.is_some() => self.check_credit().await,
                Some((info, n, outcome)) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Err(e) = self.forward_outcome(info, &n, outcome).await {
                        tracing::debug!(%e, "disposition failed");
                        return Stop::Normal;
                    }
                }
                r = self.receiver.recv::<Body<Value>>() => {
                    let first = match r {
                        Ok(d) => d,
                        Err(e) => {
                            tracing::debug!(%e, "producer link ended");
                            return Stop::Normal;
                        }
                    };
                    if !self.handle_batch(first).await {
                        return Stop::Normal;
                    }
                }
            }
        }
    }

    /// Applies the `withhold_credit` faults: credit to zero while one matches this link's
    /// address, back to what it was when none does.
    async fn check_credit(&mut self) {
        let Some(node) = &self.node else { return };
        let hold = self.core.faults.credit_held_until(&node.name);
        let result = match (hold, self.held.take()) {
            (Some(until), None) => {
                tracing::info!(node = %node.name, "fault: withholding credit from a producer");
                let restore = self.receiver.credit_mode().clone();
                self.receiver.set_credit_mode(CreditMode::Manual);
                self.held = Some(HeldCredit { restore, until });
                // Drain, not a flow with zero credit: a transfer already on its way when the
                // credit were cut would overrun it and end the link; a drain lets the client use
                // or give back what it holds (the client echoes a flow with its credit spent).
                let r = self.receiver.drain().await.map_err(|e| e.to_string());
                self.core.faults.withheld.fetch_add(1, Ordering::AcqRel);
                r
            }
            (Some(until), Some(h)) => {
                self.held = Some(HeldCredit { until, ..h });
                Ok(())
            }
            (None, Some(h)) => {
                tracing::info!(node = %node.name, "fault: granting credit again");
                let credit = match h.restore {
                    CreditMode::Auto(n) => n,
                    CreditMode::Manual => DEFAULT_CREDIT,
                };
                self.core.faults.withheld.fetch_sub(1, Ordering::AcqRel);
                self.receiver.set_credit_mode(h.restore);
                self.receiver
                    .set_credit(credit)
                    .await
                    .map_err(|e| e.to_string())
            }
            (None, None) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!(%e, "producer credit change failed");
        }
    }

    /// Router end-to-end settlement: the consumer's outcome goes to the producer.
    async fn forward_outcome(
        &self,
        info: DeliveryInfo,
        node: &Node,
        outcome: Option<Outcome>,
    ) -> Result<(), DispositionError> {
        match outcome {
            Some(Outcome::Accepted(_)) => self.receiver.accept(info).await,
            Some(Outcome::Rejected(r)) => self.receiver.reject(info, r.error).await,
            Some(Outcome::Modified(m)) => self.receiver.modify(info, m).await,
            Some(Outcome::Released(_)) => self.receiver.release(info).await,
            None => {
                inc(&node.stats.released);
                self.receiver.release(info).await
            }
            #[allow(unreachable_patterns)]
            Some(_) => self.receiver.release(info).await,
        }
    }

    /// Routes `first` and whatever else has already arrived (recv is cancel safe).
    /// Returns false when the link is done.
    async fn handle_batch(&mut self, first: Delivery<Body<Value>>) -> bool {
        let mut batch = vec![first];
        let mut link_ended = false;
        while batch.len() < RECV_BATCH {
            match self.receiver.recv::<Body<Value>>().now_or_never() {
                Some(Ok(d)) => batch.push(d),
                Some(Err(e)) => {
                    tracing::debug!(%e, "producer link ended");
                    link_ended = true;
                    break;
                }
                None => break,
            }
        }
        let mut accepts = Vec::with_capacity(batch.len());
        let mut ok = true;
        for delivery in batch {
            match self.on_delivery(delivery).await {
                Ok(Action::Accept(info)) => accepts.push(info),
                Ok(Action::Wait(fut)) => self.pending.push(fut),
                Ok(Action::Done) => {}
                Err(e) => {
                    tracing::debug!(%e, "disposition failed");
                    ok = false;
                    break;
                }
            }
        }
        if !accepts.is_empty() {
            if let Err(e) = self.receiver.accept_all(accepts).await {
                tracing::debug!(%e, "disposition failed");
                ok = false;
            }
        }
        ok && !link_ended
    }

    /// Routes one incoming delivery; returns what to do with its disposition.
    async fn on_delivery(
        &self,
        delivery: Delivery<Body<Value>>,
    ) -> Result<Action, DispositionError> {
        inc(&self.ctx.stats.received);
        let (channel, handle) = self.link.remote;
        let presettled = self.link.presettled_link
            || self
                .ctx
                .settled
                .take(channel, handle, *delivery.delivery_id());
        let format = delivery.message_format().unwrap_or(0u32);
        let (info, msg) = delivery.into_parts();
        let target = match &self.node {
            Some(n) => Ok(n.clone()),
            None => {
                let to = msg.properties.as_ref().and_then(|p| p.to.as_deref());
                self.core.relay_target(to)
            }
        };
        let target = match target {
            Ok(t) => t,
            Err(e) => {
                self.receiver.reject(info, e).await?;
                return Ok(Action::Done);
            }
        };
        if let Some(m) = target.management {
            self.core.manage(m, &msg, self.ctx);
            return Ok(Action::Accept(info));
        }
        if !presettled {
            if let Some(forced) = self.core.faults.forced_outcome() {
                self.force(info, &target, forced).await?;
                return Ok(Action::Done);
            }
        }
        self.route(info, target, Stored::new(msg, format, presettled))
            .await
    }

    /// Settles a delivery as a fault asks, without routing it.
    async fn force(
        &self,
        info: DeliveryInfo,
        target: &Node,
        forced: ForcedOutcome,
    ) -> Result<(), DispositionError> {
        match forced {
            ForcedOutcome::Release => {
                inc(&target.stats.released);
                self.receiver.release(info).await
            }
            ForcedOutcome::Reject => {
                inc(&target.stats.rejected);
                let e = amqp_error("amqp:internal-error", "rejected by fault injection");
                self.receiver.reject(info, e).await
            }
            ForcedOutcome::Modify {
                delivery_failed,
                undeliverable_here,
            } => {
                inc(&target.stats.released);
                let modified = Modified {
                    delivery_failed: Some(delivery_failed),
                    undeliverable_here: Some(undeliverable_here),
                    message_annotations: None,
                };
                self.receiver.modify(info, modified).await
            }
        }
    }

    async fn route(
        &self,
        info: DeliveryInfo,
        target: Arc<Node>,
        item: Stored,
    ) -> Result<Action, DispositionError> {
        let presettled = item.presettled;
        let (routed, _) = target.route(item);
        match routed {
            Routed::Accepted => Ok(Action::Accept(info)),
            Routed::NoRoute => {
                if presettled {
                    inc(&target.stats.dropped);
                } else {
                    inc(&target.stats.released);
                }
                self.receiver.release(info).await?;
                Ok(Action::Done)
            }
            Routed::Pending(rx) => Ok(Action::Wait(Box::pin(async move {
                (info, target, rx.await.ok())
            }))),
        }
    }
}
