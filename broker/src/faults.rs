//! Fault injection: drop connections, pause I/O, refuse attaches, close links, force
//! outcomes, withhold credit, slow consumers down, inject malformed messages.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use fe2o3_amqp_types::definitions;
use futures::task::AtomicWaker;
use regex::Regex;
use tokio::sync::{mpsc, watch};

use crate::core::Core;
use crate::inject::{InjectError, InjectedMessage};
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
///
/// Every method takes effect at once and lasts until [`Faults::clear`] (or the time or
/// count it is given). Address patterns are unanchored regular expressions, matched
/// against the address a link is attached to; an invalid one is matched literally.
#[derive(Debug, Clone)]
pub struct Faults {
    pub(crate) state: Arc<FaultState>,
    pub(crate) core: Weak<Core>,
}

#[derive(Debug)]
pub(crate) struct RefuseRule {
    pub pattern: Regex,
    pub condition: String,
    pub description: String,
}

/// Close links on matching addresses, `remaining` more times.
#[derive(Debug)]
struct LinkCloseRule {
    pattern: Regex,
    remaining: usize,
    condition: String,
    description: String,
}

#[derive(Debug)]
pub(crate) struct LinkCtl {
    pub address: String,
    pub close: mpsc::UnboundedSender<definitions::Error>,
}

/// A rule with a deadline: credit withheld, or deliveries slowed.
#[derive(Debug)]
struct TimedRule {
    pattern: Regex,
    until: Option<Instant>,
    delay: Duration,
}

impl TimedRule {
    fn active(&self, address: &str, now: Instant) -> bool {
        self.until.is_none_or(|u| u > now) && self.pattern.is_match(address)
    }
}

/// Bumped whenever a credit or slow-consumer rule changes, so links look again.
#[derive(Debug)]
pub(crate) struct Generation(watch::Sender<u64>);

impl Default for Generation {
    fn default() -> Self {
        Generation(watch::Sender::new(0))
    }
}

impl Generation {
    fn bump(&self) {
        self.0.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

#[derive(Debug, Default)]
pub(crate) struct FaultState {
    pub streams: Mutex<HashMap<u64, Arc<StreamCtl>>>,
    pub paused_until: Mutex<Option<Instant>>,
    pub refuse: Mutex<Vec<RefuseRule>>,
    link_closes: Mutex<Vec<LinkCloseRule>>,
    pub links: Mutex<HashMap<u64, LinkCtl>>,
    pub next_link_id: AtomicU64,
    pub release_next: AtomicUsize,
    pub reject_next: AtomicUsize,
    modify_next: Mutex<(usize, ForcedOutcome)>,
    credit_holds: Mutex<Vec<TimedRule>>,
    pub rules_changed: Generation,
    /// Producer links whose credit is withheld now.
    pub withheld: AtomicUsize,
    slow: Mutex<Vec<TimedRule>>,
}

/// What to do with the next incoming delivery, per the outcome faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForcedOutcome {
    Release,
    Reject,
    Modify {
        delivery_failed: bool,
        undeliverable_here: bool,
    },
}

impl Default for ForcedOutcome {
    fn default() -> Self {
        ForcedOutcome::Modify {
            delivery_failed: true,
            undeliverable_here: false,
        }
    }
}

fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_sub(1))
        .is_ok()
}

/// An unanchored pattern; an invalid regex is matched literally.
fn pattern(address_regex: &str) -> Regex {
    Regex::new(address_regex).unwrap_or_else(|e| {
        tracing::warn!(%e, address_regex, "invalid address pattern; matching it literally");
        // An escaped pattern is always a valid regex.
        Regex::new(&regex::escape(address_regex)).unwrap_or_else(|_| never_matching())
    })
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

    /// Registers an attached link; a `close_links` rule may close it at once.
    pub(crate) fn register_link(
        &self,
        address: String,
    ) -> (u64, mpsc::UnboundedReceiver<definitions::Error>) {
        let id = self.next_link_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Some(e) = self.take_link_close(&address) {
            tracing::info!(address, "fault: closing a newly attached link");
            let _ = tx.send(e);
        }
        lock(&self.links).insert(id, LinkCtl { address, close: tx });
        (id, rx)
    }

    fn take_link_close(&self, address: &str) -> Option<definitions::Error> {
        let mut rules = lock(&self.link_closes);
        let rule = rules
            .iter_mut()
            .find(|r| r.remaining > 0 && r.pattern.is_match(address))?;
        rule.remaining -= 1;
        Some(amqp_error(&rule.condition, &rule.description))
    }

    pub(crate) fn unregister_link(&self, id: u64) {
        lock(&self.links).remove(&id);
    }

    pub(crate) fn forced_outcome(&self) -> Option<ForcedOutcome> {
        if take_one(&self.release_next) {
            return Some(ForcedOutcome::Release);
        }
        if take_one(&self.reject_next) {
            return Some(ForcedOutcome::Reject);
        }
        let mut modify = lock(&self.modify_next);
        if modify.0 > 0 {
            modify.0 -= 1;
            return Some(modify.1);
        }
        None
    }

    /// Until when credit is withheld from producers on `address` (`None`: not withheld).
    pub(crate) fn credit_held_until(&self, address: &str) -> Option<Option<Instant>> {
        let now = Instant::now();
        let rules = lock(&self.credit_holds);
        rules
            .iter()
            .filter(|r| r.active(address, now))
            .map(|r| r.until)
            .max_by(|a, b| match (a, b) {
                (None, _) => std::cmp::Ordering::Greater,
                (_, None) => std::cmp::Ordering::Less,
                (Some(a), Some(b)) => a.cmp(b),
            })
    }

    /// How long to wait before each delivery to a consumer on `address`.
    pub(crate) fn delivery_delay(&self, address: &str) -> Option<Duration> {
        let now = Instant::now();
        let rules = lock(&self.slow);
        rules
            .iter()
            .filter(|r| r.active(address, now))
            .map(|r| r.delay)
            .max()
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

    /// Stops reading from and writing to every connection for `d`. No frame at all goes
    /// out, heartbeats included, so a peer that asked for an idle timeout detects the loss
    /// when it expires. New connections are accepted at the TCP level but not served until
    /// the pause ends.
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

    /// Refuses future attaches whose address matches `address_regex` with the given error
    /// condition (e.g. `amqp:not-found`), at the level the flavour refuses attaches (link
    /// detach; RabbitMQ 3.x and 4.0 end the session).
    pub fn refuse_attach(&self, address_regex: &str, condition: &str, description: &str) {
        lock(&self.state.refuse).push(RefuseRule {
            pattern: pattern(address_regex),
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

    /// Closes links on addresses matching `address_regex`, `times` times in all, with the
    /// given error: links attached now are closed at once, then each new matching attach
    /// is accepted and closed straight away, until `times` closes have happened. This is
    /// how a client's retry budget for link failures is tested.
    pub fn close_links(
        &self,
        address_regex: &str,
        times: usize,
        condition: &str,
        description: &str,
    ) {
        let re = pattern(address_regex);
        let mut remaining = times;
        {
            let links = lock(&self.state.links);
            for l in links.values().filter(|l| re.is_match(&l.address)) {
                if remaining == 0 {
                    break;
                }
                if l.close.send(amqp_error(condition, description)).is_ok() {
                    remaining -= 1;
                }
            }
        }
        tracing::info!(
            address_regex,
            times,
            now = times - remaining,
            "fault: closing links"
        );
        if remaining > 0 {
            lock(&self.state.link_closes).push(LinkCloseRule {
                pattern: re,
                remaining,
                condition: condition.to_string(),
                description: description.to_string(),
            });
        }
    }

    /// The next `n` incoming unsettled deliveries are answered `released` and not routed.
    pub fn release_next(&self, n: usize) {
        self.state.release_next.store(n, Ordering::Release);
    }

    /// The next `n` incoming unsettled deliveries are answered `rejected` and not routed.
    pub fn reject_next(&self, n: usize) {
        self.state.reject_next.store(n, Ordering::Release);
    }

    /// The next `n` incoming unsettled deliveries are answered `modified` (with these
    /// flags) and not routed. Forced outcomes apply in the order released, rejected,
    /// modified.
    pub fn modify_next(&self, n: usize, delivery_failed: bool, undeliverable_here: bool) {
        let outcome = ForcedOutcome::Modify {
            delivery_failed,
            undeliverable_here,
        };
        *lock(&self.state.modify_next) = (n, outcome);
    }

    /// Stops granting credit to producers (links where the client sends) on addresses
    /// matching `address_regex` for `d` (`None`: until [`Faults::clear`]): their credit is
    /// set to zero, so sends wait; afterwards credit is granted again as before.
    pub fn withhold_credit(&self, address_regex: &str, d: Option<Duration>) {
        tracing::info!(address_regex, ?d, "fault: withholding credit");
        lock(&self.state.credit_holds).push(TimedRule {
            pattern: pattern(address_regex),
            until: d.map(|d| Instant::now() + d),
            delay: Duration::ZERO,
        });
        self.state.rules_changed.bump();
    }

    /// Makes consumers on addresses matching `address_regex` slow: each delivery to them
    /// waits `delay` first, for `d` (`None`: until [`Faults::clear`]).
    pub fn slow_consumers(&self, address_regex: &str, delay: Duration, d: Option<Duration>) {
        tracing::info!(address_regex, ?delay, ?d, "fault: slow consumers");
        lock(&self.state.slow).push(TimedRule {
            pattern: pattern(address_regex),
            until: d.map(|d| Instant::now() + d),
            delay,
        });
        self.state.rules_changed.bump();
    }

    /// How many producer links have their credit withheld now (see
    /// [`Faults::withhold_credit`]); a link counts once the broker has sent it zero credit.
    pub fn links_without_credit(&self) -> usize {
        self.state.withheld.load(Ordering::Acquire)
    }

    /// Puts a message of the broker's making on `address`, as if a producer had sent it
    /// there: a non-JSON body, a `data` section, a map, no body at all... so that tests
    /// can see how peers cope. It is routed like any message (stored in a queue, copied to
    /// subscribers, or handed to a router consumer).
    pub fn inject(&self, address: &str, message: InjectedMessage) -> Result<(), InjectError> {
        let core = self.core.upgrade().ok_or(InjectError::Stopped)?;
        core.inject(address, message)
    }

    /// Clears every pending fault: pause, refusal and link-close rules, forced outcomes,
    /// withheld credit and slow consumers.
    pub fn clear(&self) {
        self.resume();
        lock(&self.state.refuse).clear();
        lock(&self.state.link_closes).clear();
        self.state.release_next.store(0, Ordering::Release);
        self.state.reject_next.store(0, Ordering::Release);
        lock(&self.state.modify_next).0 = 0;
        lock(&self.state.credit_holds).clear();
        lock(&self.state.slow).clear();
        self.state.rules_changed.bump();
    }
}

fn never_matching() -> Regex {
    // `[^\s\S]` matches nothing; it is a valid regex, so this cannot fail, but we still
    // avoid unwrap by falling back to an empty-class alternative.
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| Regex::new("$^").expect("static regex"))
}
