//! The reply link (spec §4.2): one receiver per connection, attached when the
//! first call needs it, shared by every call of the transport. Replies and
//! heartbeats are routed to the waiting call by correlation-id through the
//! [`CallRegistry`]; anything else is settled as the reference says and
//! logged in one line.

use std::sync::Arc;

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::ReceiverAttachError;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Modified, Source, Target as AmqpTarget};
use fe2o3_amqp::{Receiver, ReceiverDisposer};
use tokio_util::sync::CancellationToken;

use super::calls::{correlation_key, CallRegistry, Route};
use super::command::ReplyEvent;
use super::links::{link_name, top_up};
use super::msg::{self, RecvBody};
use crate::error::Condition;
use crate::wire::{self, IncomingMessage};

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

/// Serves the reply link until stopped or lost: routes replies and
/// heartbeats to waiting calls. `on_down` is called (with the peer's
/// condition, if any) when the link dies on its own.
pub(crate) async fn reply_task(
    mut session: SessionHandle<()>,
    mut receiver: Receiver,
    credit: u32,
    calls: Arc<CallRegistry>,
    stop: CancellationToken,
    on_down: impl FnOnce(Option<Condition>) + Send + 'static,
) {
    // Same credit policy as the server links (see `links::receiver_task`).
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
                    let incoming = msg::incoming(delivery.into_message());
                    let verdict = route_reply(&calls, &incoming);
                    settle(&mut receiver, &disposer, info, verdict).await;
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

/// How a delivery on the reply link is settled.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Routed to its call.
    Accept,
    /// The body cannot be decoded (the call is told why).
    Reject(String),
    /// Nobody waits for it: `modified(delivery-failed, undeliverable-here)`,
    /// as the Python driver settles an unmatched reply (reference §2.7).
    Undeliverable,
}

/// At most this many characters of a peer-chosen id go into a log line.
const LOGGED_ID_CHARS: usize = 64;

fn shown_id(key: Option<&str>) -> String {
    match key {
        None => "(none)".into(),
        Some(k) if k.chars().count() > LOGGED_ID_CHARS => {
            let cut: String = k.chars().take(LOGGED_ID_CHARS).collect();
            format!("{cut}...")
        }
        Some(k) => k.to_string(),
    }
}

/// Routes one reply or heartbeat and decides its settlement; logs one line
/// for anything that is not a well-formed answer to a waiting call.
fn route_reply(calls: &CallRegistry, incoming: &IncomingMessage) -> Verdict {
    let key = correlation_key(incoming);
    let key = key.as_deref();
    let heartbeat = incoming.is_heartbeat();
    match calls.route(key, heartbeat) {
        Route::Waiting(tx) if heartbeat => {
            let _ = tx.send(ReplyEvent::Heartbeat);
            Verdict::Accept
        }
        Route::Waiting(tx) => match wire::decode_reply(incoming) {
            Ok(body) => {
                let _ = tx.send(ReplyEvent::Reply(Box::new(body)));
                Verdict::Accept
            }
            Err(e) => {
                tracing::warn!(correlation = %shown_id(key), reason = %e, "malformed RPC reply rejected; the call fails");
                let _ = tx.send(ReplyEvent::Malformed(e.to_string()));
                Verdict::Reject(e.to_string())
            }
        },
        Route::Ended if heartbeat => {
            tracing::debug!(correlation = %shown_id(key), "heartbeat for a call that already ended dropped");
            Verdict::Undeliverable
        }
        Route::Ended => {
            tracing::warn!(correlation = %shown_id(key), "reply for a call that already ended (late or duplicate) dropped");
            Verdict::Undeliverable
        }
        Route::Unknown => {
            tracing::warn!(correlation = %shown_id(key), "reply with an unknown correlation id dropped");
            Verdict::Undeliverable
        }
    }
}

async fn settle(
    receiver: &mut Receiver,
    disposer: &ReceiverDisposer,
    info: DeliveryInfo,
    verdict: Verdict,
) {
    match verdict {
        Verdict::Accept => {
            let _ = disposer.accept(info).await;
        }
        Verdict::Reject(reason) => {
            let err = fe2o3_amqp::types::definitions::Error::new(
                AmqpError::DecodeError,
                Some(reason),
                None,
            );
            let _ = receiver.reject(info, err).await;
        }
        Verdict::Undeliverable => {
            let modified = Modified {
                delivery_failed: Some(true),
                undeliverable_here: Some(true),
                message_annotations: None,
            };
            let _ = receiver.modify(info, modified).await;
        }
    }
}
