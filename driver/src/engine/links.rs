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
use fe2o3_amqp::types::messaging::{Source, Target as AmqpTarget};
use fe2o3_amqp::{Receiver, ReceiverDisposer, Sender};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::command::{Internal, SendDone, SendFail, SendOk, SubRefusal};
use super::msg::{self, RecvBody};
use crate::error::Condition;
use crate::wire::IncomingMessage;

/// A message handed to a sender link task.
pub(crate) struct LinkJob {
    pub sendable: msg::SendMsg,
    pub done: SendDone,
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

/// Everything a sender link task needs.
pub(crate) struct SenderLink {
    /// The session the link lives on (its own, like pyngus).
    pub session: SessionHandle<()>,
    /// Source and target address; `None` for an anonymous sender (null
    /// target, every message carries its `to`).
    pub address: Option<String>,
    /// The cache key the connection task knows this link by.
    pub key: String,
    /// Generation of the cache entry (a stale link's reports are ignored).
    pub gen: u64,
    /// Messages to write, in order.
    pub jobs: mpsc::Receiver<LinkJob>,
    /// Reports back to the connection task.
    pub internal: mpsc::UnboundedSender<Internal>,
    /// Set once the transport is closing (lost sends are then `Closed`).
    pub closing: Arc<AtomicBool>,
    /// Idle time after which the link asks to be purged.
    pub idle: Duration,
    /// Bound of the attach handshake.
    pub attach_timeout: Duration,
}

impl SenderLink {
    fn gone(&self) {
        let _ = self.internal.send(Internal::SenderGone {
            address: self.key.clone(),
            gen: self.gen,
        });
    }

    fn label(&self) -> &str {
        self.address.as_deref().unwrap_or("(anonymous)")
    }

    /// Answers every queued job (and every job queued until the connection
    /// task drops the channel) with `fail`.
    async fn fail_jobs(&mut self, fail: impl Fn() -> SendFail) {
        while let Some(job) = self.jobs.recv().await {
            let _ = job.done.send(Err(fail()));
        }
    }

    async fn attach(&mut self) -> Result<Sender, SendFail> {
        let address = self.label().to_string();
        // An anonymous sender has a null target address (and no source address).
        let (source, target) = match &self.address {
            Some(a) => (
                Source::builder().address(a.clone()).build(),
                AmqpTarget::builder().address(a.clone()).build(),
            ),
            None => (Source::builder().build(), AmqpTarget::builder().build()),
        };
        let attach = Sender::builder()
            .name(link_name("sender", &address))
            .source(source)
            .target(target)
            .sender_settle_mode(SenderSettleMode::Mixed)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .verify_incoming_target(false)
            .verify_incoming_source(false)
            .attach(&mut self.session);
        match tokio::time::timeout(self.attach_timeout, attach).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => {
                tracing::warn!(%address, error = %e, "sender link refused");
                Err(SendFail::Refused {
                    address,
                    condition: sender_attach_condition(&e),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                tracing::warn!(%address, "sender link attach timed out");
                Err(SendFail::Refused {
                    address,
                    condition: None,
                    reason: "attach timed out".into(),
                })
            }
        }
    }
}

/// Serves one cached sender link (source == target == address, or an
/// anonymous sender).
///
/// Jobs are written in the order they were queued. A job's answer is sent
/// once fe2o3's send has returned: for a pre-settled delivery that means the
/// transfer frame is queued on the link's session, ahead of the detach and
/// session End this task sends when its job channel closes (the transport's
/// shutdown waits for that before it closes the connection).
pub(crate) async fn sender_task(mut link: SenderLink) {
    let mut sender = match link.attach().await {
        Ok(s) => s,
        Err(fail) => {
            link.gone();
            link.fail_jobs(|| fail.clone()).await;
            let _ = link.session.end().await;
            return;
        }
    };
    if serve_sender(&mut link, &mut sender).await {
        let _ = sender.close().await;
        let _ = link.session.end().await;
    }
}

/// Writes jobs until the channel closes (true: detach cleanly) or the link
/// dies (false: every remaining job is failed).
async fn serve_sender(link: &mut SenderLink, sender: &mut Sender) -> bool {
    let mut idle_reported = false;
    loop {
        let job = if idle_reported {
            link.jobs.recv().await
        } else {
            match tokio::time::timeout(link.idle, link.jobs.recv()).await {
                Ok(j) => j,
                Err(_) => {
                    // Ask the connection task to forget us; it drops the job
                    // channel, we drain what is left and detach.
                    idle_reported = true;
                    let _ = link.internal.send(Internal::SenderIdle {
                        address: link.key.clone(),
                        gen: link.gen,
                    });
                    continue;
                }
            }
        };
        let Some(LinkJob { sendable, done }) = job else {
            return true;
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
                tracing::debug!(address = %link.label(), error = %e, "send failed; link is gone");
                let closing = link.closing.clone();
                let lost = move |reason: String| {
                    if closing.load(Ordering::SeqCst) {
                        SendFail::Closed
                    } else {
                        SendFail::NotWritten(reason)
                    }
                };
                let _ = done.send(Err(lost(e.to_string())));
                link.gone();
                link.fail_jobs(|| lost("sender link lost".into())).await;
                return false;
            }
        }
    }
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

/// Everything a server receiver link task needs.
pub(crate) struct ReceiverLink {
    /// The session the link lives on (its own).
    pub session: SessionHandle<()>,
    /// Source and target address.
    pub address: String,
    /// Credit window.
    pub credit: u32,
    /// Where deliveries go.
    pub sink: Sink,
    /// Cancelled when the subscription stops or the connection goes.
    pub stop: CancellationToken,
    /// Answered once the attach succeeded or failed.
    pub ready: oneshot::Sender<Result<(), SubRefusal>>,
    /// Called when the link dies on its own (not stopped): re-attach later.
    pub on_down: Box<dyn FnOnce() + Send + 'static>,
    /// Bound of the attach handshake.
    pub attach_timeout: Duration,
}

/// Serves one server receiver link (source == target == address).
pub(crate) async fn receiver_task(link: ReceiverLink) {
    let ReceiverLink {
        mut session,
        address,
        credit,
        sink,
        stop,
        ready,
        on_down,
        attach_timeout,
    } = link;
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
    let refusal = match attach {
        Ok(Ok(mut receiver)) => {
            let _ = ready.send(Ok(()));
            let lost = serve_receiver(&mut receiver, &address, credit, &sink, &stop).await;
            if !lost {
                let _ = receiver.close().await;
                let _ = session.end().await;
            } else if !stop.is_cancelled() {
                on_down();
            }
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%address, error = %e, "receiver link refused");
            (receiver_attach_condition(&e), e.to_string())
        }
        Err(_) => (None, format!("attach of {address} timed out")),
    };
    let _ = ready.send(Err(refusal));
    if !stop.is_cancelled() {
        on_down();
    }
}

/// Hands deliveries to `sink` until stopped or the server is gone (false:
/// detach cleanly) or the link dies (true).
async fn serve_receiver(
    receiver: &mut Receiver,
    address: &str,
    credit: u32,
    sink: &Sink,
    stop: &CancellationToken,
) -> bool {
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
            _ = stop.cancelled() => return false,
            Some(op) = ops.recv() => {
                if let LinkOp::Reject(info, reason) = op {
                    let err = fe2o3_amqp::types::definitions::Error::new(
                        fe2o3_amqp::types::definitions::AmqpError::DecodeError,
                        Some(reason),
                        None,
                    );
                    let _ = receiver.reject(info, err).await;
                }
                top_up(receiver, cap).await;
            }
            d = receiver.recv::<RecvBody>() => match d {
                Ok(delivery) => {
                    let info = DeliveryInfo::from(&delivery);
                    let msg = msg::incoming(delivery.into_message());
                    let settle = Settle { disposer: disposer.clone(), info: Some(info), ops: ops_tx.clone() };
                    if sink.send(Inbound { msg, settle }).await.is_err() {
                        return false; // the server is gone; stop quietly
                    }
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, "receiver link lost");
                    return true;
                }
            }
        }
    }
}

/// Tops the link credit back up to `cap` when it is at or below (cap+1)/2
/// (pyngus's low-water mark, checked at each settlement).
pub(super) async fn top_up(receiver: &mut Receiver, cap: u32) {
    if receiver.credit() <= cap.div_ceil(2) {
        if let Err(e) = receiver.set_credit(cap).await {
            tracing::debug!(error = %e, "credit top-up failed; link is going away");
        }
    }
}
