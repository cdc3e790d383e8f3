//! Upper bounds the driver applies to durations and message bodies, so that
//! no input (a configuration value, a caller's timeout, a peer's
//! `call_monitor_timeout`, a huge body) can overflow a clock or exhaust
//! memory. Callers that validate user input (the harness) check against the
//! same constants.

use std::time::Duration;

use tokio::time::Instant;

/// The longest timeout, deadline or delay the driver honours, in seconds
/// (365 days). Longer ones are capped to it: a call with
/// `timeout(Duration::MAX)` waits at most this long, an option such as
/// `default_send_timeout` above it is refused by [`crate::AmqpOptions::set`].
pub const MAX_TIMEOUT_SECS: u64 = 365 * 24 * 3600;

/// [`MAX_TIMEOUT_SECS`] as a [`Duration`].
pub const MAX_TIMEOUT: Duration = Duration::from_secs(MAX_TIMEOUT_SECS);

/// The largest message body (the JSON text of a request, reply or
/// notification) the driver decodes: 64 MiB. Bigger bodies are rejected as
/// malformed (with the reason logged) before any JSON is parsed.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// `d`, capped to [`MAX_TIMEOUT`].
pub(crate) fn capped(d: Duration) -> Duration {
    d.min(MAX_TIMEOUT)
}

/// `secs` seconds, capped to [`MAX_TIMEOUT`].
pub(crate) fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs.min(MAX_TIMEOUT_SECS))
}

/// The instant `d` from `from`, with `d` capped to [`MAX_TIMEOUT`]; never
/// panics (an unrepresentable instant falls back to the farthest one that
/// is, in steps down to `from` itself).
pub(crate) fn after(from: Instant, d: Duration) -> Instant {
    let mut d = capped(d);
    loop {
        if let Some(t) = from.checked_add(d) {
            return t;
        }
        if d.is_zero() {
            return from;
        }
        d /= 2;
    }
}

/// The instant `d` from now (see [`after`]).
pub(crate) fn deadline(d: Duration) -> Instant {
    after(Instant::now(), d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_durations_are_capped_not_panicking() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + MAX_TIMEOUT);
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        assert_eq!(secs(u64::MAX), MAX_TIMEOUT);
        assert_eq!(capped(Duration::from_millis(1)), Duration::from_millis(1));
        let _ = deadline(Duration::MAX);
    }
}
