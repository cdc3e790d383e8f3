//! router (qdrouterd): every address exists; multicast prefixes copy to every consumer,
//! every other address goes to one consumer (balanced). Nothing is stored.

use std::sync::Arc;

use crate::core::Core;
use crate::node::{Node, NodeKind};
use crate::util::random_suffix;

/// Address prefixes with multicast distribution (as in the devstack plugin's qdrouterd.conf).
const MULTICAST_PREFIXES: [&str; 4] = [
    "openstack.org/om/rpc/multicast",
    "openstack.org/om/notify/multicast",
    "broadcast",
    "multicast",
];

/// The distribution qdrouterd reports for an address (the devstack plugin's prefixes;
/// `balanced` is its default).
pub(crate) fn distribution(address: &str) -> &'static str {
    const CLOSEST: [&str; 4] = [
        "openstack.org/om/rpc/unicast",
        "openstack.org/om/notify/unicast",
        "unicast",
        "exclusive",
    ];
    if MULTICAST_PREFIXES.iter().any(|p| address.starts_with(p)) {
        "multicast"
    } else if CLOSEST.iter().any(|p| address.starts_with(p)) {
        "closest"
    } else {
        "balanced"
    }
}

pub(super) fn lookup(core: &Core, address: &str) -> Arc<Node> {
    let kind = if MULTICAST_PREFIXES.iter().any(|p| address.starts_with(p)) {
        NodeKind::Multicast
    } else {
        NodeKind::Anycast
    };
    core.insert_node(Node::new(
        address.to_string(),
        kind,
        false,
        false,
        Some(core.config.router_drop_threshold),
    ))
}

/// A temporary anycast address `amqp:/_topo/0/<router-id>/temp.<random>`.
pub(super) fn dynamic_node(core: &Core) -> Arc<Node> {
    let name = format!(
        "amqp:/_topo/0/{}/temp.{}",
        core.router_id,
        random_suffix(12)
    );
    Node::new(
        name,
        NodeKind::Anycast,
        true,
        false,
        Some(core.config.router_drop_threshold),
    )
}
