//! Sending with oslo's settlement, retry and deadline rules (spec §4.5, §5).

use std::time::Duration;

use fe2o3_amqp::types::messaging::Outcome;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::engine::{Command, SendCmd, SendFail, SendOk, Shared};
use crate::error::{Condition, ManagementError};

/// Why a send failed, before it is mapped to an operation's error kind.
#[derive(Debug)]
pub(crate) enum SendErr {
    /// The deadline passed.
    TimedOut,
    /// Rejected, modified(failed), released with no retries left, or lost unsettled.
    DeliveryFailed(String),
    /// The broker refused the link.
    Refused {
        address: String,
        condition: Option<Condition>,
        reason: String,
    },
    /// The management node refused a declaration the address needs.
    Management(ManagementError),
    /// The transport is closed.
    Closed,
}

/// Retry budget: `None` is infinite, `Some(n)` allows `n` resends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry(pub Option<u32>);

impl Retry {
    /// oslo semantics for an integer option: -1 (or any negative) => infinite.
    pub(crate) fn from_i64(v: i64) -> Retry {
        if v < 0 {
            Retry(None)
        } else {
            Retry(Some(v.min(u32::MAX as i64) as u32))
        }
    }

    fn take(&mut self) -> bool {
        match &mut self.0 {
            None => true,
            Some(0) => false,
            Some(n) => {
                *n -= 1;
                true
            }
        }
    }
}

/// Sends one message (rebuilt by `make` for every attempt) until the broker
/// accepts it, the retries run out or the deadline passes.
/// The retry loop and its outcomes (accepted, released, rejected, modified, link lost, deadline) in
/// one place, as the Python driver's send path has them.
pub(crate) async fn deliver(
    shared: &Shared,
    deadline: Instant,
    mut retry: Retry,
    retry_delay: Duration,
    mut make: impl FnMut(oneshot::Sender<Result<SendOk, SendFail>>) -> SendCmd,
) -> Result<(), SendErr> {
    loop {
        let (done_tx, done_rx) = oneshot::channel();
        let cmd = make(done_tx);
        match tokio::time::timeout_at(deadline, shared.cmd.send(Command::Send(cmd))).await {
            Err(_) => return Err(SendErr::TimedOut),
            Ok(Err(_)) => return Err(SendErr::Closed),
            Ok(Ok(())) => {}
        }
        let written = match tokio::time::timeout_at(deadline, done_rx).await {
            Err(_) => return Err(SendErr::TimedOut),
            Ok(Err(_)) => return Err(SendErr::Closed),
            Ok(Ok(r)) => r,
        };
        let why_retry = match written {
            Err(SendFail::Closed) => return Err(SendErr::Closed),
            Err(SendFail::Refused {
                address,
                condition,
                reason,
            }) => {
                return Err(SendErr::Refused {
                    address,
                    condition,
                    reason,
                })
            }
            Err(SendFail::Management(m)) => return Err(SendErr::Management(m)),
            Err(SendFail::NotWritten(reason)) => reason,
            Ok(SendOk(fut)) => match tokio::time::timeout_at(deadline, fut).await {
                Err(_) => return Err(SendErr::TimedOut),
                Ok(Ok(Outcome::Accepted(_))) => return Ok(()),
                Ok(Ok(Outcome::Released(_))) => "released".to_string(),
                Ok(Ok(Outcome::Modified(m)))
                    if !m.delivery_failed.unwrap_or(false)
                        && !m.undeliverable_here.unwrap_or(false) =>
                {
                    "modified".to_string()
                }
                Ok(Ok(Outcome::Modified(_))) => {
                    return Err(SendErr::DeliveryFailed(
                        "modified (delivery-failed or undeliverable-here)".into(),
                    ))
                }
                Ok(Ok(Outcome::Rejected(r))) => {
                    let why = r
                        .error
                        .as_ref()
                        .map(|e| format!("rejected: {}", Condition::from(e)))
                        .unwrap_or_else(|| "rejected".into());
                    return Err(SendErr::DeliveryFailed(why));
                }
                #[allow(unreachable_patterns)]
                Ok(Ok(_)) => return Err(SendErr::DeliveryFailed("unexpected outcome".into())),
                Ok(Err(e)) => {
                    // Written but unsettled when the link or connection failed:
                    // fail at once, never resend (no duplicates).
                    return Err(SendErr::DeliveryFailed(format!(
                        "lost before settlement: {}",
                        link_lost(&e)
                    )));
                }
            },
        };
        if !retry.take() {
            return Err(SendErr::DeliveryFailed(why_retry));
        }
        tracing::debug!(reason = %why_retry, "resending after link_retry_delay");
        if tokio::time::timeout_at(deadline, tokio::time::sleep(retry_delay))
            .await
            .is_err()
        {
            return Err(SendErr::TimedOut);
        }
    }
}

/// Why a written message's link or connection went away, in the broker's words where it gave some
/// (`the broker closed the link: amqp:internal-error: ...`), not fe2o3's debug form.
fn link_lost(e: &fe2o3_amqp::link::SendError) -> String {
    use fe2o3_amqp::link::{LinkStateError as L, SendError as S};
    match e {
        S::LinkStateError(L::RemoteClosedWithError(err)) => {
            format!("the broker closed the link: {}", Condition::from(err))
        }
        S::LinkStateError(L::RemoteDetachedWithError(err)) => {
            format!("the broker detached the link: {}", Condition::from(err))
        }
        S::LinkStateError(L::RemoteClosed) => "the broker closed the link".to_string(),
        S::LinkStateError(L::RemoteDetached) => "the broker detached the link".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_budget() {
        let mut r = Retry::from_i64(2);
        assert!(r.take());
        assert!(r.take());
        assert!(!r.take());
        let mut inf = Retry::from_i64(-1);
        for _ in 0..100 {
            assert!(inf.take());
        }
        assert!(!Retry::from_i64(0).take());
    }
}
