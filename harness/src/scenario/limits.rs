//! Upper bounds of every count, size and duration a scenario can hold, checked during validation
//! (each with the value's `file:line:col`). They keep a typo such as `repeat: 10000000000` from
//! allocating gigabytes, a `timeout:` from overflowing a deadline and a `pause:` from never returning.
//! `scenarios/README.md` documents them.

use std::time::Duration;

/// Largest scenario file read (bytes).
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most calls, casts or notifications one step makes.
pub const MAX_REPEAT: usize = 1_000_000;
/// Most concurrent calls of one step.
pub const MAX_CONCURRENCY: usize = 1_000;
/// Most nodes of one broker.
pub const MAX_NODES: usize = 9;
/// Most deliveries a listener requeues.
pub const MAX_REQUEUE: usize = 1_000_000;
/// Longest duration anywhere in a scenario (timeouts, sleeps, pauses).
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Deepest nesting of YAML collections.
pub const MAX_DEPTH: usize = 64;

/// `MAX_DURATION` as written in messages.
pub fn max_duration_text() -> String {
    humantime::format_duration(MAX_DURATION).to_string()
}
