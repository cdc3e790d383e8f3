//! What services received, recorded as it arrives and read by `wait:`, `expect:` and the transcript.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

/// Locks `m`, recovering the data of a poisoned mutex (a panicking task must not take the run down).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One delivery received by a service.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable transcript line.
    pub line: String,
    /// Method name (RPC) or `priority:event_type` (notifications), for `expect.received`.
    pub key: String,
}

/// Deliveries per service, in arrival order.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<BTreeMap<String, Vec<Delivery>>>,
}

impl Recorder {
    /// Records a delivery to `service`.
    pub fn record(&self, service: &str, key: String, line: String) {
        lock(&self.inner)
            .entry(service.to_string())
            .or_default()
            .push(Delivery { line, key });
    }

    /// How many deliveries `service` received.
    pub fn count(&self, service: &str) -> usize {
        lock(&self.inner).get(service).map(Vec::len).unwrap_or(0)
    }

    /// How many deliveries with `key` `service` received.
    pub fn count_key(&self, service: &str, key: &str) -> usize {
        lock(&self.inner)
            .get(service)
            .map(|v| v.iter().filter(|d| d.key == key).count())
            .unwrap_or(0)
    }

    /// Every delivery line, per service.
    pub fn lines(&self) -> BTreeMap<String, Vec<String>> {
        lock(&self.inner)
            .iter()
            .map(|(s, ds)| (s.clone(), ds.iter().map(|d| d.line.clone()).collect()))
            .collect()
    }
}

/// Driver connection events per source (`client`, a service), as a set: how many reconnect attempts a
/// run makes depends on timing, so only the kinds seen are kept.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<BTreeSet<(String, String)>>,
    times: Mutex<Vec<(std::time::Instant, String, String)>>,
}

impl EventLog {
    /// `source` saw an event of this kind.
    pub fn add(&self, source: &str, kind: &str) {
        lock(&self.inner).insert((source.to_string(), kind.to_string()));
        lock(&self.times).push((
            std::time::Instant::now(),
            source.to_string(),
            kind.to_string(),
        ));
    }

    /// When each source first saw `kind` after `since`, in time order.
    pub fn first_after(
        &self,
        kind: &str,
        since: std::time::Instant,
    ) -> Vec<(String, std::time::Duration)> {
        let mut out: Vec<(String, std::time::Duration)> = Vec::new();
        for (at, src, k) in lock(&self.times).iter() {
            if k == kind && *at >= since && !out.iter().any(|(s, _)| s == src) {
                out.push((src.clone(), at.duration_since(since)));
            }
        }
        out
    }

    /// Everything seen, sorted.
    pub fn all(&self) -> Vec<(String, String)> {
        lock(&self.inner).iter().cloned().collect()
    }
}
