//! Nodes (queues, topics, router addresses) and the message store.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fe2o3_amqp_types::messaging::{Body, Message, Outcome};
use fe2o3_amqp_types::primitives::Value;
use tokio::sync::{oneshot, Notify};

use crate::counters::{dec, inc, NodeStats};
use crate::util::lock;

/// The body type of stored messages (any section: value, data, sequence or none).
pub(crate) type MsgBody = Body<Value>;

/// The message type stored and forwarded.
pub(crate) type Msg = Message<MsgBody>;

/// A message waiting in a node or a consumer backlog.
#[derive(Debug)]
pub(crate) struct Stored {
    pub msg: Msg,
    pub format: u32,
    /// The producer sent it pre-settled.
    pub presettled: bool,
    pub expires: Option<Instant>,
    /// Router end-to-end settlement: the producer's outcome is sent here.
    pub reply: Option<oneshot::Sender<Outcome>>,
}

impl Stored {
    pub(crate) fn new(msg: Msg, format: u32, presettled: bool) -> Self {
        let expires = msg
            .header
            .as_ref()
            .and_then(|h| h.ttl)
            .map(|ttl| Instant::now() + Duration::from_millis(u64::from(ttl)));
        Stored {
            msg,
            format,
            presettled,
            expires,
            reply: None,
        }
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    fn copy(&self, presettled: bool) -> Stored {
        Stored {
            msg: self.msg.clone(),
            format: self.format,
            presettled,
            expires: self.expires,
            reply: None,
        }
    }
}

/// How a node distributes messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    /// Store and forward; competing consumers, round robin.
    Queue,
    /// A copy to every current subscriber; nothing stored without one.
    Topic,
    /// Router: one consumer, no store, end-to-end settlement.
    Anycast,
    /// Router: a copy to every consumer, no store.
    Multicast,
}

impl NodeKind {
    fn as_str(self, temporary: bool) -> &'static str {
        if temporary {
            return "temporary";
        }
        match self {
            NodeKind::Queue => "queue",
            NodeKind::Topic => "topic",
            NodeKind::Anycast => "anycast",
            NodeKind::Multicast => "multicast",
        }
    }
}

/// The private outgoing queue of one consumer (topic subscriptions and router links).
#[derive(Debug)]
pub(crate) struct Backlog {
    #[allow(dead_code)]
    pub id: u64,
    items: Mutex<VecDeque<Stored>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Backlog {
    pub(crate) fn new(id: u64) -> Arc<Self> {
        Arc::new(Backlog {
            id,
            items: Mutex::new(VecDeque::new()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    fn len(&self) -> usize {
        lock(&self.items).len()
    }

    /// Pushes one message; returns the number of pre-settled messages dropped because the
    /// backlog passed `drop_threshold` (router behaviour), or `None` when closed (the
    /// message is then dropped, and with it its reply channel: the producer sees `released`).
    fn push(&self, item: Stored, drop_threshold: Option<usize>) -> Option<u64> {
        let mut dropped = 0;
        {
            // `closed` is checked under the items lock, which `close` holds while it sets it and
            // drains: a message is either refused here or drained there, never left behind.
            let mut q = lock(&self.items);
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            if let Some(threshold) = drop_threshold {
                if q.len() >= threshold {
                    let before = q.len();
                    q.retain(|s| !s.presettled);
                    dropped = (before - q.len()) as u64;
                }
            }
            q.push_back(item);
        }
        self.notify.notify_one();
        Some(dropped)
    }

    pub(crate) fn try_pop(&self) -> Option<Stored> {
        lock(&self.items).pop_front()
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Waits for the next message. Cancel safe: a message stays queued until returned.
    pub(crate) async fn next(&self) -> Stored {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(s) = lock(&self.items).pop_front() {
                return s;
            }
            notified.await;
        }
    }

    /// Closes the backlog and returns what was left in it.
    pub(crate) fn close(&self) -> Vec<Stored> {
        let mut q = lock(&self.items);
        self.closed.store(true, Ordering::Release);
        q.drain(..).collect()
    }
}

#[derive(Debug, Default)]
struct NodeState {
    queue: VecDeque<Stored>,
    /// Idle queue consumers, in arrival order (round robin).
    waiters: VecDeque<Arc<Backlog>>,
    subscribers: Vec<Arc<Backlog>>,
    rr: usize,
    links: usize,
}

/// A management node: requests sent to it are answered, not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Management {
    /// qpidd's QMF v2 agent (`qmf.default.direct`).
    Qmf,
    /// qdrouterd's AMQP management agent (`$management`).
    AmqpManagement,
}

/// A named node.
#[derive(Debug)]
pub(crate) struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub temporary: bool,
    /// Set for management nodes (hidden from the counters, never removed).
    pub management: Option<Management>,
    /// Copies to subscribers are sent pre-settled (qpidd topics).
    pub presettled_copies: bool,
    /// Router: drop queued pre-settled deliveries past this backlog.
    pub drop_threshold: Option<usize>,
    pub stats: NodeStats,
    state: Mutex<NodeState>,
}

/// What happened to a routed message.
#[derive(Debug)]
pub(crate) enum Routed {
    /// Stored or handed to consumers: accept now.
    Accepted,
    /// Nowhere to go: release (the message is given back).
    NoRoute,
    /// Router anycast with end-to-end settlement: wait for the consumer's outcome.
    Pending(oneshot::Receiver<Outcome>),
}

static NEXT_CONSUMER: AtomicU64 = AtomicU64::new(1);

impl Node {
    pub(crate) fn new(
        name: String,
        kind: NodeKind,
        temporary: bool,
        presettled_copies: bool,
        drop_threshold: Option<usize>,
    ) -> Arc<Node> {
        Arc::new(Node {
            name,
            kind,
            temporary,
            management: None,
            presettled_copies,
            drop_threshold,
            stats: NodeStats::default(),
            state: Mutex::new(NodeState::default()),
        })
    }

    /// A management node answering requests sent to `name`.
    pub(crate) fn management(name: &str, management: Management) -> Arc<Node> {
        Arc::new(Node {
            name: name.to_string(),
            kind: NodeKind::Topic,
            temporary: false,
            management: Some(management),
            presettled_copies: false,
            drop_threshold: None,
            stats: NodeStats::default(),
            state: Mutex::new(NodeState::default()),
        })
    }

    /// Router addresses go away with their last link (temporary nodes always do).
    pub(crate) fn removable_when_unused(&self) -> bool {
        self.management.is_none() && matches!(self.kind, NodeKind::Anycast | NodeKind::Multicast)
    }

    pub(crate) fn kind_name(&self) -> &'static str {
        self.kind.as_str(self.temporary)
    }

    pub(crate) fn depth(&self) -> u64 {
        let st = lock(&self.state);
        let backlog: usize = st.subscribers.iter().map(|b| b.len()).sum();
        (st.queue.len() + backlog) as u64
    }

    /// Drops expired messages from the store, counting them.
    pub(crate) fn sweep_expired(&self) {
        let now = Instant::now();
        let mut st = lock(&self.state);
        let before = st.queue.len();
        st.queue.retain(|s| !s.is_expired(now));
        for _ in 0..before - st.queue.len() {
            self.stats.expire();
        }
    }

    /// Queue: takes every stored message that has not expired (a restart that keeps the store).
    pub(crate) fn take_stored(&self) -> Vec<Stored> {
        let now = Instant::now();
        let mut st = lock(&self.state);
        st.queue
            .drain(..)
            .filter(|s| !s.is_expired(now))
            .map(|mut s| {
                s.reply = None;
                s
            })
            .collect()
    }

    /// Queue: stores messages kept from before a restart (in their order, behind nothing).
    pub(crate) fn restore(&self, items: Vec<Stored>) {
        let mut st = lock(&self.state);
        st.queue.extend(items);
    }

    pub(crate) fn link_attached(&self) {
        lock(&self.state).links += 1;
    }

    /// Returns true when no link uses the node any more.
    pub(crate) fn link_detached(&self) -> bool {
        let mut st = lock(&self.state);
        st.links = st.links.saturating_sub(1);
        st.links == 0
    }

    /// Registers a consumer that has its own backlog (every kind but `Queue`).
    pub(crate) fn subscribe(&self) -> Arc<Backlog> {
        let b = Backlog::new(NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed));
        lock(&self.state).subscribers.push(b.clone());
        inc(&self.stats.consumers);
        b
    }

    /// Removes a backlog consumer; returns what was queued for it.
    pub(crate) fn unsubscribe(&self, backlog: &Arc<Backlog>) -> Vec<Stored> {
        lock(&self.state)
            .subscribers
            .retain(|b| !Arc::ptr_eq(b, backlog));
        dec(&self.stats.consumers);
        backlog.close()
    }

    /// Registers a queue consumer; its backlog receives the messages handed to it.
    pub(crate) fn add_queue_consumer(&self) -> Arc<Backlog> {
        inc(&self.stats.consumers);
        Backlog::new(NEXT_CONSUMER.fetch_add(1, Ordering::Relaxed))
    }

    /// Removes a queue consumer, putting back whatever was handed to it.
    pub(crate) fn remove_queue_consumer(&self, backlog: &Arc<Backlog>) {
        dec(&self.stats.consumers);
        lock(&self.state)
            .waiters
            .retain(|w| !Arc::ptr_eq(w, backlog));
        for item in backlog.close().into_iter().rev() {
            self.requeue(item);
        }
    }

    /// Queue: whether a consumer is idle, waiting for a message.
    pub(crate) fn has_waiters(&self) -> bool {
        lock(&self.state).waiters.iter().any(|w| !w.is_closed())
    }

    /// Queue: the next message if one is ready now (no waiting, no registration).
    pub(crate) fn try_next_from_queue(&self, me: &Arc<Backlog>) -> Option<Stored> {
        if let Some(s) = me.try_pop() {
            return Some(s);
        }
        let now = Instant::now();
        let mut st = lock(&self.state);
        while let Some(s) = st.queue.pop_front() {
            if s.is_expired(now) {
                self.stats.expire();
                continue;
            }
            return Some(s);
        }
        None
    }

    /// Queue: waits for the next message for this consumer (round robin among idle
    /// consumers). Cancel safe: a message handed over while cancelled stays in the
    /// consumer's backlog.
    pub(crate) async fn next_from_queue(&self, me: &Arc<Backlog>) -> Stored {
        loop {
            let now = Instant::now();
            let item = match me.try_pop() {
                Some(s) => Some(s),
                None => {
                    let mut st = lock(&self.state);
                    match st.queue.pop_front() {
                        Some(s) => Some(s),
                        None => {
                            if !st.waiters.iter().any(|w| Arc::ptr_eq(w, me)) {
                                st.waiters.push_back(me.clone());
                            }
                            None
                        }
                    }
                }
            };
            let item = match item {
                Some(s) => s,
                None => me.next().await,
            };
            if item.is_expired(now) {
                self.stats.expire();
                continue;
            }
            return item;
        }
    }

    /// Hands a message to the first idle consumer, or stores it (at the back, or at the
    /// front when it is being put back).
    fn hand_over(&self, st: &mut NodeState, item: Stored, front: bool) {
        while let Some(w) = st.waiters.pop_front() {
            if !w.is_closed() {
                if w.push(item, None).is_some() {
                    return;
                }
                // Closed in between: the message was dropped with it; count it.
                tracing::warn!(node = %self.name, "a message handed to a closed consumer was dropped");
                self.stats.drop_enqueued(1);
                return;
            }
        }
        if front {
            st.queue.push_front(item);
        } else {
            st.queue.push_back(item);
        }
    }

    /// Queue: puts a message back at the head (released, or its consumer went away).
    pub(crate) fn requeue(&self, item: Stored) {
        let mut st = lock(&self.state);
        self.hand_over(&mut st, item, true);
    }

    /// Routes one incoming message.
    pub(crate) fn route(&self, mut item: Stored) -> (Routed, Option<Stored>) {
        match self.kind {
            NodeKind::Queue => {
                inc(&self.stats.enqueued);
                let mut st = lock(&self.state);
                self.hand_over(&mut st, item, false);
                (Routed::Accepted, None)
            }
            NodeKind::Topic | NodeKind::Multicast => {
                let subs: Vec<Arc<Backlog>> = lock(&self.state).subscribers.clone();
                if subs.is_empty() {
                    if self.kind == NodeKind::Multicast {
                        return (Routed::NoRoute, Some(item));
                    }
                    // A topic with no subscriber accepts and discards.
                    inc(&self.stats.enqueued);
                    self.stats.drop_enqueued(1);
                    return (Routed::Accepted, None);
                }
                inc(&self.stats.enqueued);
                let presettled = if self.presettled_copies {
                    true
                } else {
                    item.presettled
                };
                for b in &subs {
                    self.push_to(b, item.copy(presettled));
                }
                (Routed::Accepted, None)
            }
            NodeKind::Anycast => {
                let target = {
                    let mut st = lock(&self.state);
                    if st.subscribers.is_empty() {
                        None
                    } else {
                        let n = st.subscribers.len();
                        st.rr = st.rr.wrapping_add(1);
                        let start = st.rr % n;
                        // Balanced: the consumer with the smallest backlog, ties in round robin.
                        let mut best = start;
                        let mut best_len = usize::MAX;
                        for i in 0..n {
                            let idx = (start + i) % n;
                            let len = st.subscribers[idx].len();
                            if len < best_len {
                                best = idx;
                                best_len = len;
                            }
                        }
                        Some(st.subscribers[best].clone())
                    }
                };
                match target {
                    None => (Routed::NoRoute, Some(item)),
                    Some(b) => {
                        inc(&self.stats.enqueued);
                        if item.presettled {
                            self.push_to(&b, item);
                            (Routed::Accepted, None)
                        } else {
                            let (tx, rx) = oneshot::channel();
                            item.reply = Some(tx);
                            self.push_to(&b, item);
                            (Routed::Pending(rx), None)
                        }
                    }
                }
            }
        }
    }

    fn push_to(&self, b: &Arc<Backlog>, item: Stored) {
        match b.push(item, self.drop_threshold) {
            Some(0) => {}
            Some(n) => {
                self.stats.drop_enqueued(n);
                tracing::debug!(node = %self.name, n, "router backlog overflow: dropped pre-settled deliveries");
            }
            None => {
                // The consumer went away in between.
                inc(&self.stats.released);
            }
        }
    }

    /// Drains the store (used when a temporary node is deleted).
    pub(crate) fn drain(&self) -> usize {
        let mut st = lock(&self.state);
        let n = st.queue.len();
        st.queue.clear();
        st.waiters.clear();
        n
    }
}
