//! Reconnect delay and host rotation (spec §5), as pure functions.

use std::time::Duration;

/// Reconnect delay policy from `connection_retry_interval`,
/// `connection_retry_backoff` and `connection_retry_interval_max`.
///
/// Like the Python driver the growth is multiplicative: the first delay is
/// the interval, each next one is `min(previous * backoff, max)`
/// (1, 2, 4, 8, 16, 30, 30, ... with the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    pub interval: u64,
    pub backoff: u64,
    pub max: u64,
}

impl Backoff {
    /// Delay before reconnect attempt number `attempt` (1-based) since the last success.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let mut d = self.interval.min(self.max.max(self.interval));
        for _ in 1..attempt.max(1) {
            d = d.saturating_mul(self.backoff).min(self.max);
        }
        Duration::from_secs(d)
    }
}

/// Round-robin host rotation from a random first host.
#[derive(Clone, Debug)]
pub(crate) struct HostRing {
    len: usize,
    next: usize,
}

impl HostRing {
    /// A ring over `len` hosts starting at `start % len`.
    pub(crate) fn new(len: usize, start: usize) -> Self {
        let len = len.max(1);
        HostRing {
            len,
            next: start % len,
        }
    }

    /// Index of the host to try now; advances the ring.
    pub(crate) fn advance(&mut self) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % self.len;
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_table() {
        let b = Backoff {
            interval: 1,
            backoff: 2,
            max: 30,
        };
        for (attempt, secs) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 30),
            (7, 30),
            (50, 30),
        ] {
            assert_eq!(
                b.delay(attempt),
                Duration::from_secs(secs),
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn other_policies() {
        let b = Backoff {
            interval: 3,
            backoff: 3,
            max: 20,
        };
        let got: Vec<u64> = (1..=5).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(got, vec![3, 9, 20, 20, 20]);
        let flat = Backoff {
            interval: 2,
            backoff: 1,
            max: 30,
        };
        assert_eq!(flat.delay(9), Duration::from_secs(2));
        let huge = Backoff {
            interval: 1,
            backoff: u64::MAX,
            max: 30,
        };
        assert_eq!(huge.delay(4), Duration::from_secs(30));
    }

    #[test]
    fn ring_rotates_from_start() {
        let mut r = HostRing::new(3, 4);
        let got: Vec<usize> = (0..5).map(|_| r.advance()).collect();
        assert_eq!(got, vec![1, 2, 0, 1, 2]);
        let mut one = HostRing::new(1, 7);
        assert_eq!((one.advance(), one.advance()), (0, 0));
    }
}
