//! Fault injection: drop connections, pause I/O, refuse attaches, close links,
//! release or reject deliveries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use fe2o3_amqp_types::definitions;
use futures::task::AtomicWaker;
use regex::Regex;
use tokio::sync::mpsc;

use crate::util::{amqp_error, lock};

/// Kill switch of one connection's stream (the `drop_connections` fault); the stream
/// wrapper in `stream.rs` polls it.
#[derive(Debug, Default)]
pub(crate) struct StreamCtl {
    killed: AtomicBool,
    read_waker: AtomicWaker,
    write_waker: AtomicWaker,
}

impl StreamCtl {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.wake();
    }

    pub(crate) fn wake(&self) {
        self.read_waker.wake();
        self.write_waker.wake();
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    pub(crate) fn register_read(&self, waker: &Waker) {
        self.read_waker.register(waker);
    }

    pub(crate) fn register_write(&self, waker: &Waker) {
        self.write_waker.register(waker);
    }
}

/// Handle to the fault controls of a running broker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Faults {
    pub(crate) state: Arc<FaultState>,
}

#[derive(Debug)]
pub(crate) struct RefuseRule {
    pub pattern: Regex,
    pub condition: String,
    pub description: String,
}

#[derive(Debug)]
pub(crate) struct LinkCtl {
    pub address: String,
    pub close: mpsc::UnboundedSender<definitions::Error>,
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub streams: Mutex<HashMap<u64, Arc<StreamCtl>>>,
    pub paused_until: Mutex<Option<Instant>>,
    pub refuse: Mutex<Vec<RefuseRule>>,
    pub links: Mutex<HashMap<u64, LinkCtl>>,
    pub next_link_id: AtomicU64,
    pub release_next: AtomicUsize,
    pub reject_next: AtomicUsize,
}

/// What to do with the next incoming delivery, per the release/reject faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForcedOutcome {
    Release,
    Reject,
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

impl FaultState {
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        let mut guard = lock(&self.paused_until);
        match *guard {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                *guard = None;
                None
            }
            None => None,
        }
    }

    pub(crate) fn register_stream(&self, id: u64, ctl: Arc<StreamCtl>) {
        lock(&self.streams).insert(id, ctl);
    }

    pub(crate) fn unregister_stream(&self, id: u64) {
        lock(&self.streams).remove(&id);
    }

    pub(crate) fn refusal(&self, address: &str) -> Option<definitions::Error> {
        let rules = lock(&self.refuse);
        rules
            .iter()
            .find(|r| r.pattern.is_match(address))
            .map(|r| amqp_error(&r.condition, &r.description))
    }

    pub(crate) fn register_link(
        &self,
        address: String,
    ) -> (u64, mpsc::UnboundedReceiver<definitions::Error>) {
        let id = self.next_link_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.links).insert(id, LinkCtl { address, close: tx });
        (id, rx)
    }

    pub(crate) fn unregister_link(&self, id: u64) {
        lock(&self.links).remove(&id);
    }

    pub(crate) fn forced_outcome(&self) -> Option<ForcedOutcome> {
        if take_one(&self.release_next) {
            Some(ForcedOutcome::Release)
        } else if take_one(&self.reject_next) {
            Some(ForcedOutcome::Reject)
        } else {
            None
        }
    }

    pub(crate) fn kill_all(&self) {
        let streams: Vec<Arc<StreamCtl>> = lock(&self.streams).values().cloned().collect();
        for s in streams {
            s.kill();
        }
    }
}

impl Faults {
    /// Abruptly closes every open connection: no Close frame, the socket just goes away.
    pub fn drop_connections(&self) {
        tracing::info!("fault: dropping every connection");
        self.state.kill_all();
    }

    /// Stops reading from and writing to every connection for `d` (heartbeats stop too).
    /// New connections are accepted at the TCP level but not served until the pause ends.
    pub fn pause(&self, d: Duration) {
        tracing::info!(?d, "fault: pausing I/O");
        *lock(&self.state.paused_until) = Some(Instant::now() + d);
    }

    /// Ends a pause early.
    pub fn resume(&self) {
        *lock(&self.state.paused_until) = None;
        let streams: Vec<Arc<StreamCtl>> = lock(&self.state.streams).values().cloned().collect();
        for s in streams {
            s.wake();
        }
    }

    /// Refuses future attaches whose address matches `address_regex` (unanchored) with
    /// the given error condition (e.g. `amqp:not-found`). An invalid regex is matched
    /// literally.
    pub fn refuse_attach(&self, address_regex: &str, condition: &str, description: &str) {
        let pattern = Regex::new(address_regex).unwrap_or_else(|e| {
            tracing::warn!(%e, address_regex, "invalid refuse_attach regex; matching it literally");
            // An escaped pattern is always a valid regex.
            Regex::new(&regex::escape(address_regex)).unwrap_or_else(|_| never_matching())
        });
        lock(&self.state.refuse).push(RefuseRule {
            pattern,
            condition: condition.to_string(),
            description: description.to_string(),
        });
    }

    /// Closes (detach with `closed=true`) every currently attached link whose address is
    /// exactly `address`, with the given error condition.
    pub fn close_link(&self, address: &str, condition: &str, description: &str) {
        let links = lock(&self.state.links);
        let mut n = 0;
        for l in links.values().filter(|l| l.address == address) {
            let _ = l.close.send(amqp_error(condition, description));
            n += 1;
        }
        tracing::info!(address, n, "fault: closing links");
    }

    /// The next `n` incoming unsettled deliveries are answered `released` and not routed.
    pub fn release_next(&self, n: usize) {
        self.state.release_next.store(n, Ordering::Release);
    }

    /// The next `n` incoming unsettled deliveries are answered `rejected` and not routed.
    pub fn reject_next(&self, n: usize) {
        self.state.reject_next.store(n, Ordering::Release);
    }

    /// Clears every pending fault: pause, refusal rules, release/reject counts.
    pub fn clear(&self) {
        self.resume();
        lock(&self.state.refuse).clear();
        self.state.release_next.store(0, Ordering::Release);
        self.state.reject_next.store(0, Ordering::Release);
    }
}

fn never_matching() -> Regex {
    // `[^\s\S]` matches nothing; it is a valid regex, so this cannot fail, but we still
    // avoid unwrap by falling back to an empty-class alternative.
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| Regex::new("$^").expect("static regex"))
}
