//! qpidd: nodes are created on attach when the address matches a queue or topic pattern
//! (unanchored regular expressions, as qpidd's `queue-patterns` / `topic-patterns`).

use std::sync::Arc;

use super::Refuse;
use crate::core::Core;
use crate::node::{Node, NodeKind};
use crate::util::{amqp_error, random_suffix};

pub(super) fn lookup(core: &Core, address: &str) -> Result<Arc<Node>, Refuse> {
    let kind = if core.queue_res.iter().any(|r| r.is_match(address)) {
        NodeKind::Queue
    } else if core.topic_res.iter().any(|r| r.is_match(address)) {
        NodeKind::Topic
    } else {
        return Err(Refuse::Detach(amqp_error(
            "amqp:not-found",
            &format!("Node not found: {address}"),
        )));
    };
    Ok(core.insert_node(Node::new(address.to_string(), kind, false, true, None)))
}

/// A temporary queue named `<connection-tag>_<link-name>`, as qpidd names them.
pub(super) fn dynamic_node(core: &Core, conn_tag: &str, link_name: &str) -> Arc<Node> {
    let mut name = format!("{conn_tag}_{link_name}");
    if core.node(&name).is_some() {
        name = format!("{name}_{}", random_suffix(6));
    }
    Node::new(name, NodeKind::Queue, true, false, None)
}
