//! The calls waiting for a reply, keyed by the string form of their
//! message-id, shared by the RPC client (register, forget), the reply link
//! task (route each reply or heartbeat) and the connection task (fail them
//! all when the reply can no longer arrive).
//!
//! The registry also remembers the ids of the last [`ENDED_MEMORY`] calls that
//! ended (answered, timed out, given up), so that a late or duplicate reply is
//! told apart from one nobody ever asked for in the log line that drops it.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use tokio::sync::mpsc;

use super::command::ReplyEvent;
use crate::wire::{IncomingMessage, MessageId};

/// How many ended call ids are remembered to classify late replies.
pub(crate) const ENDED_MEMORY: usize = 1024;

/// Where an incoming reply or heartbeat belongs.
#[derive(Debug)]
pub(crate) enum Route {
    /// A waiting call.
    Waiting(mpsc::UnboundedSender<ReplyEvent>),
    /// A call that already ended: its reply came too late or twice.
    Ended,
    /// No call of this driver ever had this id (or the message has none).
    Unknown,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<String, mpsc::UnboundedSender<ReplyEvent>>,
    ended: VecDeque<String>,
    ended_set: HashSet<String>,
}

impl Inner {
    fn remember_ended(&mut self, id: String) {
        if self.ended_set.insert(id.clone()) {
            self.ended.push_back(id);
            if self.ended.len() > ENDED_MEMORY {
                if let Some(old) = self.ended.pop_front() {
                    self.ended_set.remove(&old);
                }
            }
        }
    }
}

/// The waiting calls of one transport.
#[derive(Debug, Default)]
pub struct CallRegistry {
    inner: Mutex<Inner>,
}

impl CallRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every operation is a single insert/remove), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A call waits for replies to `id`.
    pub(crate) fn register(&self, id: String, tx: mpsc::UnboundedSender<ReplyEvent>) {
        self.lock().waiting.insert(id, tx);
    }

    /// The call with this id ended (any way): forget it, remember the id.
    pub(crate) fn forget(&self, id: &str) {
        let mut g = self.lock();
        if g.waiting.remove(id).is_some() {
            g.remember_ended(id.to_string());
        }
    }

    /// Routes a reply (`heartbeat == false`: the call is answered and leaves
    /// the registry, so a second reply is [`Route::Ended`]) or a heartbeat
    /// (the call keeps waiting) by its correlation key.
    pub(crate) fn route(&self, key: Option<&str>, heartbeat: bool) -> Route {
        let Some(key) = key else {
            return Route::Unknown;
        };
        let mut g = self.lock();
        if heartbeat {
            return match g.waiting.get(key) {
                Some(tx) => Route::Waiting(tx.clone()),
                None if g.ended_set.contains(key) => Route::Ended,
                None => Route::Unknown,
            };
        }
        match g.waiting.remove(key) {
            Some(tx) => {
                g.remember_ended(key.to_string());
                Route::Waiting(tx)
            }
            None if g.ended_set.contains(key) => Route::Ended,
            None => Route::Unknown,
        }
    }

    /// Fails every waiting call with `reason` (the reply can no longer
    /// arrive); returns how many there were.
    pub(crate) fn fail_all(&self, reason: &str) -> usize {
        let waiters: Vec<_> = {
            let mut g = self.lock();
            let drained: Vec<_> = g.waiting.drain().collect();
            for (id, _) in &drained {
                g.remember_ended(id.clone());
            }
            drained.into_iter().map(|(_, tx)| tx).collect()
        };
        let n = waiters.len();
        for w in waiters {
            let _ = w.send(ReplyEvent::Disconnected(reason.to_string()));
        }
        n
    }
}

/// The key under which a call waits: the string form of its message-id
/// (borrowed for string ids, the common case).
pub(crate) fn id_key(id: &MessageId) -> Cow<'_, str> {
    match id {
        MessageId::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}

/// The waiting-call key of a reply or heartbeat (its correlation-id).
pub(crate) fn correlation_key(msg: &IncomingMessage) -> Option<Cow<'_, str>> {
    msg.correlation_id.as_ref().map(id_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_leave_heartbeats_stay_late_ones_are_known() {
        let r = CallRegistry::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        r.register("a".into(), tx);
        assert!(matches!(r.route(Some("a"), true), Route::Waiting(_)));
        assert!(matches!(r.route(Some("a"), false), Route::Waiting(_)));
        assert!(matches!(r.route(Some("a"), false), Route::Ended));
        assert!(matches!(r.route(Some("a"), true), Route::Ended));
        assert!(matches!(r.route(Some("zz"), false), Route::Unknown));
        assert!(matches!(r.route(None, false), Route::Unknown));
        let (tx, _keep) = mpsc::unbounded_channel();
        r.register("b".into(), tx);
        r.forget("b");
        assert!(matches!(r.route(Some("b"), false), Route::Ended));
        assert_eq!(r.lock().waiting.len(), 0);
        drop(rx.try_recv());
    }

    #[test]
    fn fail_all_tells_every_call_why() {
        let r = CallRegistry::default();
        let mut rxs = Vec::new();
        for i in 0..3 {
            let (tx, rx) = mpsc::unbounded_channel();
            r.register(format!("c{i}"), tx);
            rxs.push(rx);
        }
        assert_eq!(r.fail_all("reply link lost"), 3);
        for mut rx in rxs {
            match rx.try_recv() {
                Ok(ReplyEvent::Disconnected(why)) => assert_eq!(why, "reply link lost"),
                other => panic!("expected Disconnected, got {other:?}"),
            }
        }
        assert_eq!(r.lock().waiting.len(), 0);
        assert!(matches!(r.route(Some("c1"), false), Route::Ended));
    }

    #[test]
    fn ended_memory_is_bounded() {
        let r = CallRegistry::default();
        for i in 0..(ENDED_MEMORY + 10) {
            let (tx, _rx) = mpsc::unbounded_channel();
            r.register(format!("x{i}"), tx);
            r.forget(&format!("x{i}"));
        }
        let g = r.lock();
        assert_eq!(g.ended.len(), ENDED_MEMORY);
        assert_eq!(g.ended_set.len(), ENDED_MEMORY);
        drop(g);
        assert!(matches!(r.route(Some("x0"), false), Route::Unknown));
    }
}
