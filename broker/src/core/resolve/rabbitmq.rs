//! RabbitMQ 3.x (AMQP 1.0 plugin): `/queue/N`, `/amq/queue/N` and plain names are queues;
//! `/topic/K`, `/exchange/E/K` and `/exchange/amq.fanout` are topics (unsettled copies).
//! Refusals end the session, with the words RabbitMQ 3.10 uses.

use std::sync::Arc;

use super::Refuse;
use crate::core::Core;
use crate::node::{Node, NodeKind};
use crate::util::amqp_error;

fn unknown_destination(address: &str) -> Refuse {
    Refuse::EndSession(amqp_error(
        "amqp:invalid-field",
        &format!("Attach rejected: {{unknown_destination,\"{address}\"}}"),
    ))
}

/// The node name and kind an address stands for, or `None` when RabbitMQ does not know it.
fn parse_v1(address: &str) -> Option<(String, NodeKind)> {
    if address.starts_with("openstack.org/om/") {
        return None;
    }
    if let Some(q) = address
        .strip_prefix("/queue/")
        .or_else(|| address.strip_prefix("/amq/queue/"))
    {
        return (!q.is_empty()).then(|| (q.to_string(), NodeKind::Queue));
    }
    if let Some(k) = address.strip_prefix("/topic/") {
        return Some((format!("amq.topic/{k}"), NodeKind::Topic));
    }
    if let Some(rest) = address.strip_prefix("/exchange/") {
        let (ex, key) = rest.split_once('/').unwrap_or((rest, ""));
        if ex.is_empty() {
            return None;
        }
        let name = if ex == "amq.fanout" || key.is_empty() {
            ex.to_string()
        } else {
            format!("{ex}/{key}")
        };
        return Some((name, NodeKind::Topic));
    }
    if address.starts_with('/') {
        return None;
    }
    Some((address.to_string(), NodeKind::Queue))
}

pub(super) fn lookup(core: &Core, address: &str) -> Result<Arc<Node>, Refuse> {
    let (name, kind) = parse_v1(address).ok_or_else(|| unknown_destination(address))?;
    if let Some(n) = core.node(&name) {
        return Ok(n);
    }
    Ok(core.insert_node(Node::new(name, kind, false, false, None)))
}

/// RabbitMQ 3.x has no dynamic terminus: the session ends.
pub(super) fn refuse_dynamic(consumer: bool) -> Refuse {
    let what = if consumer { "sources" } else { "targets" };
    Refuse::EndSession(amqp_error(
        "amqp:not-implemented",
        &format!("Dynamic {what} not supported"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_addresses() {
        assert_eq!(parse_v1("/queue/q"), Some(("q".into(), NodeKind::Queue)));
        assert_eq!(
            parse_v1("/amq/queue/q"),
            Some(("q".into(), NodeKind::Queue))
        );
        assert_eq!(parse_v1("/queue/"), None);
        assert_eq!(
            parse_v1("/topic/a.b"),
            Some(("amq.topic/a.b".into(), NodeKind::Topic))
        );
        assert_eq!(
            parse_v1("/exchange/amq.topic/k"),
            Some(("amq.topic/k".into(), NodeKind::Topic))
        );
        assert_eq!(
            parse_v1("/exchange/amq.fanout/k"),
            Some(("amq.fanout".into(), NodeKind::Topic))
        );
        assert_eq!(parse_v1("/exchange/"), None);
        assert_eq!(parse_v1("/other/x"), None);
        assert_eq!(parse_v1("openstack.org/om/rpc/x"), None);
        assert_eq!(parse_v1("plain"), Some(("plain".into(), NodeKind::Queue)));
    }
}
