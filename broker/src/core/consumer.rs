//! Consumer links: the broker sends from a queue (competing consumers) or from the
//! consumer's own backlog (topics and router addresses), and collects the outcomes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::{Accepted, Modified, Outcome};
use fe2o3_amqp::{Sendable, Sender};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;

use super::conn::ConnCtx;
use super::{Core, CLOSE_TIMEOUT};
use crate::counters::inc;
use crate::node::{Backlog, MsgBody, Node, NodeKind, Stored};

/// A queue consumer that holds a message without credit gives it back after this long
/// when another consumer is waiting.
const STRANDED_AFTER: Duration = Duration::from_millis(200);

/// Where a consumer's messages come from.
enum Feed {
    /// Competing consumer of a queue; the backlog holds what the queue handed to it.
    Queue(Arc<Backlog>),
    /// Its own copy of everything (topic subscription, router address).
    Subscription(Arc<Backlog>),
}

type PendingOutcome = Pin<Box<dyn Future<Output = (Result<Outcome, SendError>, u64)> + Send>>;

enum SendStep {
    Close(Option<definitions::Error>),
    Stop,
    Stranded,
    Sent(Result<DeliveryFut<Result<Outcome, SendError>>, SendError>),
}

/// What the wait for the next message gave. (Returned, never stored: boxing the item
/// would cost an allocation per delivery.)
#[allow(clippy::large_enum_variant)]
enum Next {
    Item(Stored),
    /// Something else happened (an outcome, the end of a back-off): look again.
    Again,
    Stop,
}

struct Consumer<'a> {
    core: &'a Arc<Core>,
    ctx: &'a Arc<ConnCtx>,
    sender: Sender,
    node: Arc<Node>,
    feed: Feed,
    close_rx: mpsc::UnboundedReceiver<definitions::Error>,
    /// Outcomes of unsettled deliveries, keyed by `inflight` ids.
    pending: FuturesUnordered<PendingOutcome>,
    inflight: HashMap<u64, Stored>,
    seq: u64,
    close_error: Option<definitions::Error>,
    /// After giving a stranded message back: do not take another one before this.
    resume_at: Option<tokio::time::Instant>,
}

pub(super) async fn run(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    sender: Sender,
    node: Arc<Node>,
    close_rx: mpsc::UnboundedReceiver<definitions::Error>,
) {
    let node = core.attach_link(node);
    let feed = if node.kind == NodeKind::Queue {
        Feed::Queue(node.add_queue_consumer())
    } else {
        Feed::Subscription(node.subscribe())
    };
    let mut c = Consumer {
        core,
        ctx,
        sender,
        node,
        feed,
        close_rx,
        pending: FuturesUnordered::new(),
        inflight: HashMap::new(),
        seq: 0,
        close_error: None,
        resume_at: None,
    };
    c.serve().await;
    c.finish().await;
}

fn settle_outcome(node: &Node, outcome: Result<Outcome, SendError>, item: Option<Stored>) {
    match outcome {
        Ok(Outcome::Accepted(a)) => {
            node.stats.consumed(&node.stats.acked);
            if let Some(tx) = item.and_then(|s| s.reply) {
                let _ = tx.send(Outcome::Accepted(a));
            }
        }
        Ok(Outcome::Rejected(r)) => {
            node.stats.consumed(&node.stats.rejected);
            if let Some(tx) = item.and_then(|s| s.reply) {
                let _ = tx.send(Outcome::Rejected(r));
            }
        }
        Ok(o) => {
            // released or modified
            inc(&node.stats.released);
            give_back(node, item, Some(o));
        }
        Err(e) => {
            tracing::debug!(%e, "delivery not settled by consumer");
            give_back(node, item, None);
        }
    }
}

/// A message that was not consumed: back into its queue, or the producer hears the outcome.
fn give_back(node: &Node, item: Option<Stored>, outcome: Option<Outcome>) {
    let Some(mut item) = item else { return };
    if node.kind == NodeKind::Queue {
        node.requeue(item);
    } else if let Some(tx) = item.reply.take() {
        let o = outcome.unwrap_or(Outcome::Modified(Modified {
            delivery_failed: Some(true),
            undeliverable_here: None,
            message_annotations: None,
        }));
        let _ = tx.send(o);
    }
}

impl Consumer<'_> {
    async fn serve(&mut self) {
        loop {
            let item = match self.next_item().await {
                Next::Item(item) => item,
                Next::Again => continue,
                Next::Stop => return,
            };
            if item.is_expired(Instant::now()) {
                self.node.stats.expire();
                continue;
            }
            if let Some(delay) = self.core.faults.delivery_delay(&self.node.name) {
                if !self.dawdle(delay).await {
                    give_back(&self.node, Some(item), None);
                    return;
                }
            }
            if !self.deliver(item).await {
                return;
            }
        }
    }

    /// The `slow_consumers` fault: waits `delay` before a delivery (looking again when the
    /// rules change); false when the link is to stop instead.
    async fn dawdle(&mut self, delay: Duration) -> bool {
        let start = tokio::time::Instant::now();
        let mut rules = self.core.faults.rules_changed.subscribe();
        let mut delay = delay;
        loop {
            tokio::select! {
                err = self.close_rx.recv() => { self.close_error = err; return false }
                _ = self.core.shutdown.cancelled() => return false,
                _ = tokio::time::sleep_until(start + delay) => return true,
                Ok(()) = rules.changed() => {
                    match self.core.faults.delivery_delay(&self.node.name) {
                        Some(d) => delay = d,
                        None => return true,
                    }
                }
            }
        }
    }

    fn settle_ready(&mut self) {
        while let Some(Some((o, id))) = self.pending.next().now_or_never() {
            settle_outcome(&self.node, o, self.inflight.remove(&id));
        }
    }

    /// The next message. Fast path first: fault and shutdown checks, ready outcomes and a
    /// ready message, without building a select (this runs once per delivery).
    async fn next_item(&mut self) -> Next {
        if let Ok(err) = self.close_rx.try_recv() {
            self.close_error = Some(err);
            return Next::Stop;
        }
        if self.core.shutdown.is_cancelled() {
            return Next::Stop;
        }
        self.settle_ready();
        if self.resume_at.is_none() {
            let ready = match &self.feed {
                Feed::Queue(me) => self.node.try_next_from_queue(me),
                Feed::Subscription(b) => b.try_pop(),
            };
            if let Some(item) = ready {
                return Next::Item(item);
            }
        }
        let node = &self.node;
        let feed = &self.feed;
        let resume_at = self.resume_at;
        tokio::select! {
            biased;
            err = self.close_rx.recv() => { self.close_error = err; Next::Stop }
            _ = self.core.shutdown.cancelled() => Next::Stop,
            Some((o, id)) = self.pending.next(), if !self.pending.is_empty() => {
                settle_outcome(node, o, self.inflight.remove(&id));
                Next::Again
            }
            _ = self.sender.on_detach() => Next::Stop,
            _ = async { if let Some(t) = resume_at { tokio::time::sleep_until(t).await } }, if resume_at.is_some() => {
                self.resume_at = None;
                Next::Again
            }
            item = async {
                match feed {
                    Feed::Queue(me) => node.next_from_queue(me).await,
                    Feed::Subscription(b) => b.next().await,
                }
            }, if resume_at.is_none() => Next::Item(item),
        }
    }

    /// Sends one message; returns false when the link is done.
    async fn deliver(&mut self, mut item: Stored) -> bool {
        let presettled_out = match self.node.kind {
            NodeKind::Queue => false,
            NodeKind::Topic => item.presettled || self.node.presettled_copies,
            NodeKind::Anycast | NodeKind::Multicast => item.presettled,
        };
        let reply = item.reply.take();
        let sendable = Sendable {
            message: item.msg,
            message_format: item.format,
            settled: Some(presettled_out),
        };
        let step = self.send(&sendable).await;
        let item = Stored {
            msg: sendable.message,
            format: sendable.message_format,
            presettled: item.presettled,
            expires: item.expires,
            reply,
        };
        self.after_send(step, item, presettled_out)
    }

    /// Waits for the send to be accepted by the link (credit), settling outcomes meanwhile.
    /// A queue message stuck without credit is given back when another consumer waits.
    async fn send(&mut self, sendable: &Sendable<MsgBody>) -> SendStep {
        let started = tokio::time::Instant::now();
        let fut = self.sender.send_batchable_ref(sendable);
        tokio::pin!(fut);
        if let Poll::Ready(r) = futures::poll!(&mut fut) {
            return SendStep::Sent(r);
        }
        let node = &self.node;
        loop {
            let stranded_check = async {
                if node.kind == NodeKind::Queue {
                    tokio::time::sleep_until(started + STRANDED_AFTER).await;
                    if node.has_waiters() {
                        return;
                    }
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                biased;
                err = self.close_rx.recv() => return SendStep::Close(err),
                _ = self.core.shutdown.cancelled() => return SendStep::Stop,
                Some((o, id)) = self.pending.next(), if !self.pending.is_empty() => {
                    settle_outcome(node, o, self.inflight.remove(&id));
                }
                r = &mut fut => return SendStep::Sent(r),
                _ = stranded_check => return SendStep::Stranded,
            }
        }
    }

    fn after_send(&mut self, step: SendStep, item: Stored, presettled_out: bool) -> bool {
        match step {
            SendStep::Sent(Ok(delivery)) => {
                inc(&self.node.stats.delivered);
                inc(&self.ctx.stats.sent);
                if presettled_out {
                    self.node.stats.consumed(&self.node.stats.acked);
                    if let Some(tx) = item.reply {
                        let _ = tx.send(Outcome::Accepted(Accepted {}));
                    }
                } else {
                    self.seq += 1;
                    let id = self.seq;
                    self.inflight.insert(id, item);
                    self.pending
                        .push(Box::pin(async move { (delivery.await, id) }));
                }
                true
            }
            SendStep::Sent(Err(e)) => {
                tracing::debug!(%e, "consumer link send failed");
                give_back(&self.node, Some(item), None);
                false
            }
            SendStep::Stranded => {
                tracing::trace!(node = %self.node.name, "consumer without credit gives its message back");
                give_back(&self.node, Some(item), None);
                self.resume_at = Some(tokio::time::Instant::now() + STRANDED_AFTER);
                true
            }
            SendStep::Close(err) => {
                give_back(&self.node, Some(item), None);
                self.close_error = err;
                false
            }
            SendStep::Stop => {
                give_back(&self.node, Some(item), None);
                false
            }
        }
    }

    /// Detaches, then collects the outcomes that will never come (the unsettled map is
    /// gone) and gives every unsettled message back.
    async fn finish(self) {
        let Consumer {
            core,
            sender,
            node,
            feed,
            mut pending,
            mut inflight,
            close_error,
            ..
        } = self;
        let close = match close_error {
            Some(e) => tokio::time::timeout(CLOSE_TIMEOUT, sender.close_with_error(e)).await,
            None => tokio::time::timeout(CLOSE_TIMEOUT, sender.close()).await,
        };
        if let Ok(Err(e)) = close {
            tracing::debug!(%e, "consumer link close");
        }
        let drain = async {
            while let Some((o, id)) = pending.next().await {
                settle_outcome(&node, o, inflight.remove(&id));
            }
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
        drop(pending);
        for (_, item) in inflight.drain() {
            give_back(&node, Some(item), None);
        }
        release_feed(&node, &feed);
        let removed = core.detach_link(&node, |unused| {
            node.temporary || (unused && node.removable_when_unused())
        });
        if removed {
            node.drain();
        }
    }
}

fn release_feed(node: &Node, feed: &Feed) {
    match feed {
        Feed::Queue(me) => node.remove_queue_consumer(me),
        Feed::Subscription(b) => {
            for item in node.unsubscribe(b) {
                if item.reply.is_some() {
                    inc(&node.stats.released);
                }
                give_back(node, Some(item), None);
            }
        }
    }
}
