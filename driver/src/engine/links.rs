//! Link tasks: one task per sender link and per receiver link.
//!
//! Each link lives on its own session (like pyngus), so a broker that refuses
//! a link by ending the session (RabbitMQ 3.x) only kills that link. The
//! connection task begins the session and hands it to the link task, which
//! attaches the link and then serves it until told to stop or until the link
//! dies; it reports back to the connection task through `Internal` events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{ReceiverAttachError, SenderAttachError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Modified, Source, Target as AmqpTarget};
use fe2o3_amqp::{Receiver, ReceiverDisposer, Sender};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::msg::{self, RecvBody};
use super::{Calls, Internal, ReplyEvent, SendFail, SendOk};
use crate::error::Condition;
use crate::wire::IncomingMessage;

/// A message handed to a sender link task.
pub(crate) struct LinkJob {
    pub sendable: msg::SendMsg,
    pub done: oneshot::Sender<Result<SendOk, SendFail>>,
}

/// Link attach name per spec §4.3 / §4.4.
pub(crate) fn link_name(role: &str, address: &str) -> String {
    format!(
        "openstack.org/om/{role}/[{address}]/{}",
        uuid::Uuid::new_v4().simple()
    )
}

fn sender_attach_condition(e: &SenderAttachError) -> Option<Condition> {
    use fe2o3_amqp::link::SessionStopReason as R;
    match e {
        SenderAttachError::SessionStopped(R::RemoteEndedWithError(err)) => Some(err.into()),
        SenderAttachError::SessionStopped(R::ConnectionStopped(
            fe2o3_amqp::connection::ConnectionStopReason::RemoteClosedWithError(err),
        )) => Some(err.into()),
        SenderAttachError::RemoteClosedWithError(err) => Some(err.into()),
        _ => None,
    }
}

pub(crate) fn receiver_attach_condition(e: &ReceiverAttachError) -> Option<Condition> {
    use fe2o3_amqp::link::SessionStopReason as R;
    match e {
        ReceiverAttachError::SessionStopped(R::RemoteEndedWithError(err)) => Some(err.into()),
        ReceiverAttachError::SessionStopped(R::ConnectionStopped(
            fe2o3_amqp::connection::ConnectionStopReason::RemoteClosedWithError(err),
        )) => Some(err.into()),
        ReceiverAttachError::RemoteClosedWithError(err) => Some(err.into()),
        _ => None,
    }
}

/// Serves one cached sender link (source == target == address).
///
/// Jobs are written in the order they were queued. A job's answer is sent
/// once fe2o3's send has returned: for a pre-settled delivery that means the
/// transfer frame is queued on the link's session, ahead of the detach and
/// session End this task sends when its job channel closes (the transport's
/// shutdown waits for that before it closes the connection).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn sender_task(
    mut session: SessionHandle<()>,
    address: String,
    gen: u64,
    mut jobs: mpsc::Receiver<LinkJob>,
    internal: mpsc::UnboundedSender<Internal>,
    closing: Arc<AtomicBool>,
    idle: Duration,
    attach_timeout: Duration,
) {
    let attach = Sender::builder()
        .name(link_name("sender", &address))
        .source(address.clone())
        .target(address.clone())
        .sender_settle_mode(SenderSettleMode::Mixed)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .verify_incoming_target(false)
        .verify_incoming_source(false)
        .attach(&mut session);
    let mut sender = match tokio::time::timeout(attach_timeout, attach).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let cond = sender_attach_condition(&e);
            tracing::warn!(%address, error = %e, "sender link refused");
            let _ = internal.send(Internal::SenderGone {
                address: address.clone(),
                gen,
            });
            let fail = SendFail::Refused {
                address,
                condition: cond,
                reason: e.to_string(),
            };
            while let Some(job) = jobs.recv().await {
                let _ = job.done.send(Err(fail.clone()));
            }
            let _ = session.end().await;
            return;
        }
        Err(_) => {
            tracing::warn!(%address, "sender link attach timed out");
            let _ = internal.send(Internal::SenderGone {
                address: address.clone(),
                gen,
            });
            let fail = SendFail::Refused {
                address,
                condition: None,
                reason: "attach timed out".into(),
            };
            while let Some(job) = jobs.recv().await {
                let _ = job.done.send(Err(fail.clone()));
            }
            return;
        }
    };
    let mut idle_reported = false;
    loop {
        let job = if idle_reported {
            jobs.recv().await
        } else {
            match tokio::time::timeout(idle, jobs.recv()).await {
                Ok(j) => j,
                Err(_) => {
                    // Ask the connection task to forget us; it drops the job
                    // channel, we drain what is left and detach.
                    idle_reported = true;
                    let _ = internal.send(Internal::SenderIdle {
                        address: address.clone(),
                        gen,
                    });
                    continue;
                }
            }
        };
        let Some(LinkJob { sendable, done }) = job else {
            break;
        };
        if done.is_closed() {
            continue; // the caller gave up (timed out) before it was written
        }
        // Not raced against the caller giving up: once fe2o3 has taken the
        // credit, abandoning the send would leave the delivery-count wrong.
        match sender.send_batchable(sendable).await {
            Ok(fut) => {
                let _ = done.send(Ok(SendOk(fut)));
            }
            Err(e) => {
                tracing::debug!(%address, error = %e, "send failed; link is gone");
                let lost = |reason: String| {
                    if closing.load(Ordering::SeqCst) {
                        SendFail::Closed
                    } else {
                        SendFail::NotWritten(reason)
                    }
                };
                let _ = done.send(Err(lost(e.to_string())));
                let _ = internal.send(Internal::SenderGone {
                    address: address.clone(),
                    gen,
                });
                while let Some(job) = jobs.recv().await {
                    let _ = job.done.send(Err(lost("sender link lost".into())));
                }
                return;
            }
        }
    }
    let _ = sender.close().await;
    let _ = session.end().await;
}

/// A delivery handed to a server (RPC server or notification listener).
pub(crate) struct Inbound {
    /// The decoded message.
    pub msg: IncomingMessage,
    /// Settles the delivery.
    pub settle: Settle,
}

/// What a [`Settle`] tells its receiver link task.
#[derive(Debug)]
pub(crate) enum LinkOp {
    /// A delivery was settled: the task tops up the credit if it is low.
    Settled,
    /// Reject this delivery (fe2o3's disposer cannot reject), then top up.
    Reject(DeliveryInfo, String),
}

/// Handle to settle one received delivery from any task.
pub(crate) struct Settle {
    disposer: ReceiverDisposer,
    info: Option<DeliveryInfo>,
    /// Back to the link task: settlements (for the credit) and rejections.
    ops: mpsc::UnboundedSender<LinkOp>,
}

impl std::fmt::Debug for Settle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settle").finish_non_exhaustive()
    }
}

impl Settle {
    /// Accepts the delivery (idempotent: only the first settle counts).
    pub(crate) async fn accept(&mut self) {
        if let Some(info) = self.info.take() {
            let _ = self.disposer.accept(info).await;
            let _ = self.ops.send(LinkOp::Settled);
        }
    }
    /// Releases the delivery (requeue).
    pub(crate) async fn release(&mut self) {
        if let Some(info) = self.info.take() {
            let _ = self.disposer.release(info).await;
            let _ = self.ops.send(LinkOp::Settled);
        }
    }
    /// Rejects the delivery as undeliverable (malformed).
    pub(crate) async fn reject(&mut self, reason: &str) {
        if let Some(info) = self.info.take() {
            let _ = self.ops.send(LinkOp::Reject(info, reason.to_string()));
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        // A delivery dropped without a decision is released so that it does
        // not hold credit forever.
        if let Some(info) = self.info.take() {
            let d = self.disposer.clone();
            let ops = self.ops.clone();
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = d.release(info).await;
                    let _ = ops.send(LinkOp::Settled);
                });
            }
        }
    }
}

/// Where a server receiver link sends its deliveries.
pub(crate) type Sink = mpsc::Sender<Inbound>;

/// Serves one server receiver link (source == target == address).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn receiver_task(
    mut session: SessionHandle<()>,
    address: String,
    credit: u32,
    sink: Sink,
    stop: CancellationToken,
    ready: oneshot::Sender<Result<(), (Option<Condition>, String)>>,
    on_down: impl FnOnce() + Send + 'static,
    attach_timeout: Duration,
) {
    let attach = Receiver::builder()
        .name(link_name("receiver", &address))
        .source(address.clone())
        .target(address.clone())
        .sender_settle_mode(SenderSettleMode::Mixed)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .credit_mode(CreditMode::Auto(credit.max(1)))
        .auto_accept(false)
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        .attach(&mut session);
    let attach = tokio::select! {
        r = tokio::time::timeout(attach_timeout, attach) => r,
        _ = stop.cancelled() => { let _ = session.end().await; return; }
    };
    let mut receiver = match attach {
        Ok(Ok(r)) => {
            let _ = ready.send(Ok(()));
            r
        }
        Ok(Err(e)) => {
            tracing::warn!(%address, error = %e, "receiver link refused");
            let _ = ready.send(Err((receiver_attach_condition(&e), e.to_string())));
            if !stop.is_cancelled() {
                on_down();
            }
            return;
        }
        Err(_) => {
            let _ = ready.send(Err((None, format!("attach of {address} timed out"))));
            if !stop.is_cancelled() {
                on_down();
            }
            return;
        }
    };
    // Credit as in pyngus/oslo (spec §4.4): topped up back to `credit` when a
    // settlement finds it at or below (credit+1)/2. fe2o3's automatic mode
    // counts settlements instead, so the link is switched to manual after the
    // attach has granted the initial window (before taking the disposer,
    // which copies the mode).
    let cap = credit.max(1);
    receiver.set_credit_mode(CreditMode::Manual);
    let disposer = receiver.disposer();
    let (ops_tx, mut ops) = mpsc::unbounded_channel::<LinkOp>();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = receiver.close().await;
                let _ = session.end().await;
                return;
            }
            Some(op) = ops.recv() => {
                if let LinkOp::Reject(info, reason) = op {
                    let err = fe2o3_amqp::types::definitions::Error::new(
                        fe2o3_amqp::types::definitions::AmqpError::DecodeError,
                        Some(reason),
                        None,
                    );
                    let _ = receiver.reject(info, err).await;
                }
                top_up(&mut receiver, cap).await;
            }
            d = receiver.recv::<RecvBody>() => match d {
                Ok(delivery) => {
                    let info = DeliveryInfo::from(&delivery);
                    let msg = msg::incoming(delivery.into_message());
                    let inbound = Inbound { msg, settle: Settle { disposer: disposer.clone(), info: Some(info), ops: ops_tx.clone() } };
                    if sink.send(inbound).await.is_err() {
                        // The server is gone; stop quietly.
                        let _ = receiver.close().await;
                        let _ = session.end().await;
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, "receiver link lost");
                    if !stop.is_cancelled() {
                        on_down();
                    }
                    return;
                }
            }
        }
    }
}

/// Tops the link credit back up to `cap` when it is at or below (cap+1)/2
/// (pyngus's low-water mark, checked at each settlement).
async fn top_up(receiver: &mut Receiver, cap: u32) {
    if receiver.credit() <= cap.div_ceil(2) {
        if let Err(e) = receiver.set_credit(cap).await {
            tracing::debug!(error = %e, "credit top-up failed; link is going away");
        }
    }
}

/// How the reply link is attached (reply_mode).
#[derive(Clone, Debug)]
pub(crate) enum ReplySpec {
    /// Dynamic source (`dynamic`, and the two capability variants).
    Dynamic {
        capability: Option<&'static str>,
        settled: bool,
        expiry_link_detach: bool,
    },
    /// An ordinary receiver on a named address.
    Named(String),
}

/// Attaches the reply link; returns the receiver and its address.
pub(crate) async fn attach_reply(
    session: &mut SessionHandle<()>,
    spec: &ReplySpec,
    credit: u32,
) -> Result<(Receiver, String), ReceiverAttachError> {
    let target = AmqpTarget::builder().address("rpc-response").build();
    let (source, name_addr) = match spec {
        ReplySpec::Dynamic {
            capability,
            expiry_link_detach,
            ..
        } => {
            let mut b = Source::builder().dynamic(true);
            if let Some(c) = capability {
                b = b.capabilities(vec![fe2o3_amqp::types::primitives::Symbol::from(*c)]);
            }
            if *expiry_link_detach {
                b = b.expiry_policy(fe2o3_amqp::types::messaging::TerminusExpiryPolicy::LinkDetach);
            }
            (b.build(), "rpc-response".to_string())
        }
        ReplySpec::Named(addr) => (
            Source::builder().address(addr.clone()).build(),
            addr.clone(),
        ),
    };
    let settle_mode = match spec {
        ReplySpec::Dynamic { settled: true, .. } => SenderSettleMode::Settled,
        _ => SenderSettleMode::Mixed,
    };
    let receiver = Receiver::builder()
        .name(link_name("receiver", &name_addr))
        .source(source)
        .target(target)
        .sender_settle_mode(settle_mode)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .credit_mode(CreditMode::Auto(credit.max(1)))
        .auto_accept(false)
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        .attach(session)
        .await?;
    let address = match spec {
        ReplySpec::Named(a) => a.clone(),
        ReplySpec::Dynamic { .. } => receiver
            .source()
            .as_ref()
            .and_then(|s| s.address.clone())
            .unwrap_or_default(),
    };
    Ok((receiver, address))
}

/// Serves the reply link: routes replies and heartbeats to waiting calls.
pub(crate) async fn reply_task(
    mut session: SessionHandle<()>,
    mut receiver: Receiver,
    credit: u32,
    calls: Calls,
    stop: CancellationToken,
    on_down: impl FnOnce(Option<Condition>) + Send + 'static,
) {
    // Same credit policy as the server links (see `receiver_task`).
    let cap = credit.max(1);
    receiver.set_credit_mode(CreditMode::Manual);
    let disposer = receiver.disposer();
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = receiver.close().await;
                let _ = session.end().await;
                return;
            }
            d = receiver.recv::<RecvBody>() => match d {
                Ok(delivery) => {
                    let info = DeliveryInfo::from(&delivery);
                    let message = delivery.into_message();
                    let incoming = msg::incoming(message);
                    let key = msg::correlation_key(&incoming);
                    let waiter = key.as_deref().and_then(|k| {
                        let map = calls.lock().unwrap_or_else(|p| p.into_inner());
                        map.get(k).cloned()
                    });
                    match waiter {
                        Some(tx) => {
                            let ev = if incoming.is_heartbeat() { ReplyEvent::Heartbeat } else { ReplyEvent::Reply(Box::new(incoming)) };
                            let _ = tx.send(ev);
                            let _ = disposer.accept(info).await;
                        }
                        None => {
                            tracing::debug!(correlation = ?key, "unmatched reply dropped");
                            let _ = receiver.modify(info, Modified { delivery_failed: Some(true), undeliverable_here: Some(true), message_annotations: None }).await;
                        }
                    }
                    top_up(&mut receiver, cap).await;
                }
                Err(e) => {
                    let cond = match &e {
                        fe2o3_amqp::link::RecvError::LinkStateError(fe2o3_amqp::link::LinkStateError::RemoteClosedWithError(err))
                        | fe2o3_amqp::link::RecvError::LinkStateError(fe2o3_amqp::link::LinkStateError::RemoteDetachedWithError(err)) => Some(Condition::from(err)),
                        _ => None,
                    };
                    tracing::warn!(error = %e, "reply link lost");
                    if !stop.is_cancelled() {
                        on_down(cond);
                    }
                    return;
                }
            }
        }
    }
}
