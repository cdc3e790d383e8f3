//! One incoming attach: refuse it, or accept it and run a producer or a consumer task.

use std::sync::Arc;

use fe2o3_amqp::acceptor::{LinkEndpoint, ListenerSessionHandle};
use fe2o3_amqp::types::definitions::{self, Role, SenderSettleMode};
use fe2o3_amqp::types::performatives::Attach;

use super::conn::ConnCtx;
use super::resolve::{target_of_mut, Refuse, Resolved};
use super::{consumer, producer, Core, CLOSE_TIMEOUT};
use crate::config::Flavour;
use crate::counters::inc;

/// Handles one attach. `Err` means: end the session with that error.
pub(super) async fn handle_attach(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    session: &mut ListenerSessionHandle,
    remote_channel: u16,
    mut attach: Attach,
) -> Result<(), definitions::Error> {
    inc(&ctx.stats.links);
    let resolved = match core.resolve(&attach, &ctx.tag) {
        Ok(r) => r,
        Err(Refuse::EndSession(e)) => {
            inc(&ctx.stats.refused_links);
            return Err(e);
        }
        Err(Refuse::Detach(e)) => {
            inc(&ctx.stats.refused_links);
            refuse_link(core, session, attach, e).await;
            return Ok(());
        }
    };
    if let Some(addr) = &resolved.dynamic_address {
        echo_dynamic_address(&mut attach, addr, core.flavour == Flavour::Router);
    }
    let link = LinkStart {
        remote: (remote_channel, attach.handle.0),
        presettled_link: attach.snd_settle_mode == SenderSettleMode::Settled,
    };
    let endpoint = match core
        .link_acceptor
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(ep) => ep,
        Err(e) => {
            tracing::info!(%e, "link attach failed");
            if let Some(node) = resolved.node.as_ref().filter(|n| n.temporary) {
                core.remove_node(node);
            }
            return Ok(());
        }
    };
    spawn_link(core, ctx, endpoint, resolved, link);
    Ok(())
}

/// Attaches with a null terminus, then detaches with the error (how qpidd and qdrouterd refuse).
async fn refuse_link(
    core: &Core,
    session: &mut ListenerSessionHandle,
    mut attach: Attach,
    error: definitions::Error,
) {
    tracing::info!(link = %attach.name, error = ?error.description, "refusing attach");
    if attach.role == Role::Receiver {
        attach.source = None;
    } else {
        attach.target = None;
    }
    match core
        .link_acceptor
        .accept_incoming_attach(attach, session)
        .await
    {
        Ok(LinkEndpoint::Sender(s)) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, s.close_with_error(error)).await;
        }
        Ok(LinkEndpoint::Receiver(r)) => {
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, r.close_with_error(error)).await;
        }
        Err(err) => tracing::debug!(%err, "accepting a refused link failed"),
    }
}

/// Puts the broker-assigned address into the dynamic terminus. qdrouterd echoes
/// `dynamic=true`; qpidd does not.
fn echo_dynamic_address(attach: &mut Attach, address: &str, echo_dynamic: bool) {
    if attach.role == Role::Receiver {
        if let Some(s) = attach.source.as_deref_mut() {
            s.address = Some(address.to_string());
            s.dynamic = echo_dynamic;
        }
    } else if let Some(t) = target_of_mut(attach) {
        t.address = Some(address.to_string());
        t.dynamic = echo_dynamic;
    }
}

/// What a link task needs from the attach frame.
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkStart {
    /// The peer's (channel, handle): keys of the pre-settled transfer set.
    pub remote: (u16, u32),
    /// The peer sends with `snd-settle-mode = settled`.
    pub presettled_link: bool,
}

fn spawn_link(
    core: &Arc<Core>,
    ctx: &Arc<ConnCtx>,
    endpoint: LinkEndpoint,
    resolved: Resolved,
    link: LinkStart,
) {
    let link_address = match (&resolved.dynamic_address, &resolved.node) {
        (Some(a), _) => a.clone(),
        (None, Some(n)) => n.name.clone(),
        (None, None) => String::new(),
    };
    let (link_id, close_rx) = core.faults.register_link(link_address);
    let guard = core.tasks.guard();
    let core = core.clone();
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _guard = guard;
        match endpoint {
            LinkEndpoint::Sender(sender) => {
                if let Some(node) = resolved.node {
                    consumer::run(&core, &ctx, sender, node, close_rx).await;
                }
            }
            LinkEndpoint::Receiver(receiver) => {
                producer::run(&core, &ctx, receiver, resolved.node, link, close_rx).await;
                ctx.settled.forget_link(link.remote.0, link.remote.1);
            }
        }
        core.faults.unregister_link(link_id);
    });
}
