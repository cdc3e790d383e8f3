//! Per-node and per-connection counters, readable as a serialisable snapshot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A snapshot of every counter of a running broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Flavour name (`qpidd`, `router`, `rabbitmq3`).
    pub flavour: String,
    /// Nodes (queues, topics, router addresses) by name. Temporary (dynamic)
    /// nodes appear while they exist.
    pub nodes: BTreeMap<String, NodeCounters>,
    /// Connections in accept order, closed ones included (`open == false`).
    pub connections: Vec<ConnectionCounters>,
    /// Connections refused before Open (bad SASL credentials, TLS failure, protocol mismatch).
    pub refused_connections: u64,
}

impl Counters {
    /// Sum of one node counter over all nodes.
    pub fn total(&self, field: fn(&NodeCounters) -> u64) -> u64 {
        self.nodes.values().map(field).sum()
    }

    /// The counters of one node, if it exists.
    pub fn node(&self, name: &str) -> Option<&NodeCounters> {
        self.nodes.get(name)
    }
}

/// Counters of one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeCounters {
    /// `queue`, `topic`, `anycast`, `multicast` or `temporary`.
    pub kind: String,
    /// Messages accepted into the node (routed to it).
    pub enqueued: u64,
    /// Messages sent to a consumer (each copy counts).
    pub delivered: u64,
    /// Deliveries settled `accepted` by a consumer (pre-settled deliveries count too).
    pub acked: u64,
    /// Messages that left the node for good: accepted or rejected by a consumer, sent
    /// pre-settled, expired, or dropped after being enqueued (qpidd's `msgTotalDequeues`;
    /// for topics and multicast addresses every copy counts).
    pub dequeued: u64,
    /// Deliveries released or modified (by a consumer, a fault, or no route).
    pub released: u64,
    /// Deliveries rejected (by a consumer or a fault).
    pub rejected: u64,
    /// Messages whose `ttl` expired before delivery.
    pub expired: u64,
    /// Pre-settled messages discarded (router backlog overflow, or no consumer).
    pub dropped: u64,
    /// Messages stored now.
    pub depth: u64,
    /// Consumers (outgoing links) attached now.
    pub consumers: u64,
    /// Producers (incoming links) attached now.
    pub producers: u64,
}

/// Counters of one connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionCounters {
    /// Broker-local sequence number, from 1.
    pub id: u64,
    /// Peer socket address.
    pub peer: String,
    /// Whether the connection is still open.
    pub open: bool,
    /// Sessions begun.
    pub sessions: u64,
    /// Links attached (both directions).
    pub links: u64,
    /// Attaches refused.
    pub refused_links: u64,
    /// Messages received from the peer.
    pub received: u64,
    /// Messages sent to the peer.
    pub sent: u64,
}

#[derive(Debug, Default)]
pub(crate) struct NodeStats {
    pub enqueued: AtomicU64,
    pub delivered: AtomicU64,
    pub acked: AtomicU64,
    pub dequeued: AtomicU64,
    pub released: AtomicU64,
    pub rejected: AtomicU64,
    pub expired: AtomicU64,
    pub dropped: AtomicU64,
    pub consumers: AtomicU64,
    pub producers: AtomicU64,
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn dec(c: &AtomicU64) {
    // Saturating decrement: a counter never wraps below zero.
    let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl NodeStats {
    /// A stored message expired (it leaves the node).
    pub(crate) fn expire(&self) {
        inc(&self.expired);
        inc(&self.dequeued);
    }

    /// An enqueued message was discarded (it leaves the node).
    pub(crate) fn drop_enqueued(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.dequeued.fetch_add(n, Ordering::Relaxed);
    }

    /// A consumer took the message for good (accepted, rejected or sent pre-settled).
    pub(crate) fn consumed(&self, counter: &AtomicU64) {
        inc(counter);
        inc(&self.dequeued);
    }

    pub(crate) fn snapshot(&self, kind: &str, depth: u64) -> NodeCounters {
        NodeCounters {
            kind: kind.to_string(),
            enqueued: get(&self.enqueued),
            delivered: get(&self.delivered),
            acked: get(&self.acked),
            dequeued: get(&self.dequeued),
            released: get(&self.released),
            rejected: get(&self.rejected),
            expired: get(&self.expired),
            dropped: get(&self.dropped),
            depth,
            consumers: get(&self.consumers),
            producers: get(&self.producers),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ConnStats {
    pub id: u64,
    pub peer: String,
    pub open: AtomicBool,
    pub sessions: AtomicU64,
    pub links: AtomicU64,
    pub refused_links: AtomicU64,
    pub received: AtomicU64,
    pub sent: AtomicU64,
}

impl ConnStats {
    pub(crate) fn new(id: u64, peer: String) -> Self {
        ConnStats {
            id,
            peer,
            open: AtomicBool::new(true),
            sessions: AtomicU64::new(0),
            links: AtomicU64::new(0),
            refused_links: AtomicU64::new(0),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        }
    }

    pub(crate) fn snapshot(&self) -> ConnectionCounters {
        ConnectionCounters {
            id: self.id,
            peer: self.peer.clone(),
            open: self.open.load(Ordering::Relaxed),
            sessions: get(&self.sessions),
            links: get(&self.links),
            refused_links: get(&self.refused_links),
            received: get(&self.received),
            sent: get(&self.sent),
        }
    }
}
