//! Background traffic for fault scenarios: calls, casts and notifications at a steady pace while other
//! steps break the broker, counted so that loss shows: sent, acknowledged, received, failed within its
//! deadline, hung.
//!
//! Every traffic message carries a marker (`__traffic`: name, `seq`); the harness's services record
//! marked deliveries here instead of in the transcript's deliveries, whose counts would depend on timing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use driver::{Notifier, RpcClient};
use serde_json::{json, Value as Json};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::record::lock;
use crate::scenario::{Traffic, TrafficCalls, TrafficCasts, TrafficNotifications};

/// The key of the marker in call arguments and notification payloads.
pub const MARKER: &str = "__traffic";

/// How much longer than its own deadline an operation may take before it counts as hung.
pub const HANG_GRACE: Duration = Duration::from_secs(2);

/// Most calls of one traffic in flight at once (ticks beyond it are skipped, and counted).
const MAX_IN_FLIGHT: usize = 10_000;

/// What kind of message a marked delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An RPC call.
    Call,
    /// An RPC cast.
    Cast,
    /// A notification.
    Notification,
}

/// A set of sequence numbers as a bitmap: a soak of hours sends millions of messages, and a tree of
/// them would be the process's biggest memory growth (what the soak measures). One bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: usize,
}

impl SeqSet {
    /// Adds `seq`; returns whether it was new. Sequence numbers past a billion are ignored (the
    /// traffic sends far fewer).
    pub fn insert(&mut self, seq: u64) -> bool {
        if seq >= 1 << 30 {
            return false;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= w {
            self.words.resize(w + 1, 0);
        }
        let new = self.words[w] & (1 << b) == 0;
        self.words[w] |= 1 << b;
        self.len += usize::from(new);
        new
    }

    /// Whether `seq` is in it.
    pub fn contains(&self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        self.words.get(w).is_some_and(|x| x & (1 << b) != 0)
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many of `self` are also in `other`.
    pub fn common(&self, other: &SeqSet) -> usize {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a & b).count_ones() as usize)
            .sum()
    }

    /// The numbers, in order.
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(w, x)| {
            (0..64u64)
                .filter(move |b| x & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

/// Marked deliveries received, by traffic and kind.
#[derive(Debug, Default)]
pub struct TrafficLog {
    inner: Mutex<BTreeMap<(String, Kind), SeqSet>>,
}

impl TrafficLog {
    /// Records `value` (call arguments or a payload) if it is marked; returns whether it was.
    pub fn record(&self, value: &Json, default_kind: Kind) -> bool {
        let Some(m) = value.get(MARKER).and_then(Json::as_str) else {
            return false;
        };
        let kind = match value.get("kind").and_then(Json::as_str) {
            Some("cast") => Kind::Cast,
            Some("call") => Kind::Call,
            _ => default_kind,
        };
        let seq = value.get("seq").and_then(Json::as_u64).unwrap_or(0);
        lock(&self.inner)
            .entry((m.to_string(), kind))
            .or_default()
            .insert(seq);
        true
    }

    /// The sequence numbers of `name`'s `kind` received so far.
    pub fn received(&self, name: &str, kind: Kind) -> SeqSet {
        lock(&self.inner)
            .get(&(name.to_string(), kind))
            .cloned()
            .unwrap_or_default()
    }
}

/// What became of one kind of message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Sent (issued).
    pub sent: u64,
    /// Succeeded: replied (calls), accepted (casts, notifications).
    pub ok: u64,
    /// Failed within their deadline.
    pub failed: u64,
    /// Did not finish within their deadline plus [`HANG_GRACE`].
    pub hung: u64,
    /// Ticks skipped because too many were in flight.
    pub skipped: u64,
    /// The sequence numbers that succeeded.
    pub ok_seqs: SeqSet,
}

impl Tally {
    fn settle<T, E>(&mut self, seq: u64, r: Timed<T, E>) {
        match r {
            Ok(Ok(_)) => {
                self.ok += 1;
                self.ok_seqs.insert(seq);
            }
            Ok(Err(_)) => self.failed += 1,
            Err(_) => self.hung += 1,
        }
    }
}

/// An operation's result, or that it did not finish in time.
type Timed<T, E> = Result<Result<T, E>, tokio::time::error::Elapsed>;

fn marked(name: &str, kind: &str, seq: u64) -> driver::Map {
    match json!({ MARKER: name, "kind": kind, "seq": seq }) {
        Json::Object(m) => m,
        _ => driver::Map::new(),
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    t
}

async fn calls(
    client: RpcClient,
    c: TrafficCalls,
    name: String,
    deadline: Duration,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut inflight: JoinSet<(u64, Timed<Json, driver::CallError>)> = JoinSet::new();
    let mut tick = ticker(c.every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {
                if inflight.len() >= MAX_IN_FLIGHT {
                    tally.skipped += 1;
                    continue;
                }
                tally.sent += 1;
                let (seq, client, method, args) =
                    (tally.sent, client.clone(), c.method.clone(), marked(&name, "call", tally.sent));
                inflight.spawn(async move {
                    let r = tokio::time::timeout(deadline + HANG_GRACE, client.call(driver::Map::new(), &method, args)).await;
                    (seq, r)
                });
            }
            Some(Ok((seq, r))) = inflight.join_next(), if !inflight.is_empty() => tally.settle(seq, r),
        }
    }
    // Every call in flight is bounded by its own deadline plus the grace.
    while let Some(joined) = inflight.join_next().await {
        if let Ok((seq, r)) = joined {
            tally.settle(seq, r);
        }
    }
    tally
}

async fn casts(
    client: RpcClient,
    c: TrafficCasts,
    name: String,
    deadline: Duration,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut tick = ticker(c.every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tally.sent += 1;
        let seq = tally.sent;
        let args = marked(&name, "cast", seq);
        let r = tokio::time::timeout(
            deadline + HANG_GRACE,
            client.cast(driver::Map::new(), &c.method, args),
        )
        .await;
        tally.settle(seq, r);
    }
    tally
}

async fn notifications(
    notifier: Notifier,
    n: TrafficNotifications,
    name: String,
    deadline: Duration,
    stop: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    let mut tick = ticker(n.every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        tally.sent += 1;
        let seq = tally.sent;
        let payload = json!({ MARKER: name, "seq": seq });
        let r = tokio::time::timeout(
            deadline + HANG_GRACE,
            notifier.notify(driver::Map::new(), &n.event_type, n.priority, payload),
        )
        .await;
        tally.settle(seq, r);
    }
    tally
}

/// A traffic that is running.
#[derive(Debug)]
pub struct Running {
    stop: CancellationToken,
    calls: Option<JoinHandle<Tally>>,
    casts: Option<JoinHandle<Tally>>,
    notifications: Option<JoinHandle<Tally>>,
}

/// What the transports and deadlines of a traffic are.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The RPC transport.
    pub rpc: driver::Transport,
    /// The notification transport.
    pub notify: driver::Transport,
    /// Default call deadline (`rpc_response_timeout`).
    pub call_deadline: Duration,
}

/// Starts `t`'s loops.
pub fn start(t: &Traffic, src: &Sources) -> Running {
    let stop = CancellationToken::new();
    let amqp = &src.rpc.config().amqp;
    let send_deadline = Duration::from_secs(amqp.default_send_timeout);
    let notify_deadline = Duration::from_secs(amqp.default_notify_timeout);
    let calls_task = t.calls.clone().map(|c| {
        let mut client = RpcClient::new(&src.rpc, c.target.clone());
        let deadline = c.timeout.unwrap_or(src.call_deadline);
        client = client.timeout(deadline);
        tokio::spawn(calls(client, c, t.name.clone(), deadline, stop.clone()))
    });
    let casts_task = t.casts.clone().map(|c| {
        let client = RpcClient::new(&src.rpc, c.target.clone());
        tokio::spawn(casts(
            client,
            c,
            t.name.clone(),
            send_deadline,
            stop.clone(),
        ))
    });
    let notes_task = t.notifications.clone().map(|n| {
        let notifier =
            Notifier::new(&src.notify, "harness.traffic").topics(n.topics.iter().cloned());
        tokio::spawn(notifications(
            notifier,
            n,
            t.name.clone(),
            notify_deadline,
            stop.clone(),
        ))
    });
    Running {
        stop,
        calls: calls_task,
        casts: casts_task,
        notifications: notes_task,
    }
}

/// What a stopped traffic did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Calls.
    pub calls: Option<Tally>,
    /// Casts, and how many of them arrived.
    pub casts: Option<(Tally, u64)>,
    /// Notifications, and how many of the acknowledged ones arrived.
    pub notifications: Option<(Tally, u64)>,
    /// Sequence numbers of the first acknowledged notifications that never arrived (at most 20).
    pub lost_seqs: Vec<u64>,
}

impl Outcome {
    /// Acknowledged notifications that never arrived.
    pub fn lost(&self) -> u64 {
        self.notifications
            .as_ref()
            .map(|(t, got)| t.ok.saturating_sub(*got))
            .unwrap_or(0)
    }

    /// Operations that hung.
    pub fn hung(&self) -> u64 {
        self.calls.as_ref().map(|t| t.hung).unwrap_or(0)
            + self.casts.as_ref().map(|(t, _)| t.hung).unwrap_or(0)
            + self
                .notifications
                .as_ref()
                .map(|(t, _)| t.hung)
                .unwrap_or(0)
    }

    /// Every count, for reports: `calls sent 150, ok 120, failed 30, hung 0; ...`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = &self.calls {
            parts.push(format!(
                "calls sent {}, ok {}, failed within deadline {}, hung {}{}",
                t.sent,
                t.ok,
                t.failed,
                t.hung,
                skipped(t)
            ));
        }
        if let Some((t, got)) = &self.casts {
            parts.push(format!(
                "casts sent {}, accepted {}, failed {}, hung {}, received {got}",
                t.sent, t.ok, t.failed, t.hung
            ));
        }
        if let Some((t, got)) = &self.notifications {
            parts.push(format!(
                "notifications sent {}, acknowledged {}, failed {}, hung {}, received {got}, lost {}",
                t.sent,
                t.ok,
                t.failed,
                t.hung,
                self.lost()
            ));
        }
        parts.join("; ")
    }
}

fn skipped(t: &Tally) -> String {
    if t.skipped > 0 {
        format!(", skipped {}", t.skipped)
    } else {
        String::new()
    }
}

async fn join(h: Option<JoinHandle<Tally>>) -> Option<Tally> {
    match h {
        Some(h) => Some(h.await.unwrap_or_default()),
        None => None,
    }
}

/// Stops `r` (named `name`), then waits up to `drain` for every acknowledged notification and every
/// accepted cast to arrive.
pub async fn stop(name: &str, r: Running, log: &TrafficLog, drain: Duration) -> Outcome {
    r.stop.cancel();
    let calls = join(r.calls).await;
    let casts = join(r.casts).await;
    let notes = join(r.notifications).await;
    let arrived = |kind: Kind, t: &Tally| {
        let got = log.received(name, kind);
        t.ok_seqs.common(&got) as u64
    };
    let deadline = tokio::time::Instant::now() + drain;
    loop {
        let done = notes
            .as_ref()
            .is_none_or(|t| arrived(Kind::Notification, t) >= t.ok)
            && casts
                .as_ref()
                .is_none_or(|t| arrived(Kind::Cast, t) >= t.ok);
        if done || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost_seqs = notes
        .as_ref()
        .map(|t| {
            let got = log.received(name, Kind::Notification);
            t.ok_seqs
                .iter()
                .filter(|s| !got.contains(*s))
                .take(20)
                .collect()
        })
        .unwrap_or_default();
    Outcome {
        lost_seqs,
        calls,
        casts: casts.map(|t| {
            let got = arrived(Kind::Cast, &t);
            (t, got)
        }),
        notifications: notes.map(|t| {
            let got = arrived(Kind::Notification, &t);
            (t, got)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_sets_count_and_intersect() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for s in [0, 1, 63, 64, 1000] {
            assert!(a.insert(s));
        }
        assert!(!a.insert(64));
        assert!(
            !a.insert(u64::MAX),
            "out of range is ignored, not a huge allocation"
        );
        for s in [1, 64, 999, 5000] {
            b.insert(s);
        }
        assert_eq!(a.len(), 5);
        assert_eq!(a.common(&b), 2);
        assert!(a.contains(1000) && !a.contains(999) && !a.contains(1 << 40));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 1, 63, 64, 1000]);
    }

    #[test]
    fn marked_values_are_logged_and_others_are_not() {
        let log = TrafficLog::default();
        assert!(log.record(&json!({MARKER: "t", "kind": "cast", "seq": 3}), Kind::Call));
        assert!(log.record(&json!({MARKER: "t", "seq": 4}), Kind::Notification));
        assert!(!log.record(&json!({"phase": "after"}), Kind::Call));
        assert_eq!(
            log.received("t", Kind::Cast).iter().collect::<Vec<_>>(),
            vec![3]
        );
        assert_eq!(log.received("t", Kind::Notification).len(), 1);
        let out = Outcome {
            notifications: Some((
                Tally {
                    sent: 5,
                    ok: 4,
                    failed: 1,
                    ..Tally::default()
                },
                3,
            )),
            ..Outcome::default()
        };
        assert_eq!(out.lost(), 1);
        assert!(out
            .describe()
            .contains("acknowledged 4, failed 1, hung 0, received 3, lost 1"));
    }

    #[test]
    fn traffic_names_are_checked_at_load_time() {
        let text = "services: []\nsteps:\n  - traffic: {name: a, casts: {target: {topic: t}, method: m, every: 10ms}}\n  - traffic_stop: {name: b}\n";
        let err = crate::scenario::parse_str("t.yaml", "t", text, &[], &[])
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(err.contains("no traffic 'b' is running here"), "{err}");
        assert!(err.contains("t.yaml:4:"), "{err}");
        let text = "steps:\n  - traffic: {name: a}\n";
        let err = crate::scenario::parse_str("t.yaml", "t", text, &[], &[])
            .err()
            .map(|e| e.render())
            .unwrap_or_default();
        assert!(err.contains("traffic 'a' sends nothing"), "{err}");
    }
}
