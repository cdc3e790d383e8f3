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
/// Deepest nesting of YAML collections (the file is refused at the collection that goes deeper).
pub const MAX_DEPTH: usize = 64;
/// Largest scenario once its `{{ variables }}` are substituted (bytes).
pub const MAX_EXPANDED_BYTES: u64 = 4 * 1024 * 1024;
/// Most steps of one scenario.
pub const MAX_STEPS: usize = 10_000;
/// Most services of one scenario.
pub const MAX_SERVICES: usize = 256;
/// Largest count an expectation can name (`wait:`/`expect:` deliveries, `traffic_stop` counts).
pub const MAX_EXPECTED_COUNT: usize = 1_000_000_000;
/// Largest template file read (bytes).
pub const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;
/// Most directory entries looked at under a templates directory (`--templates /` is refused, not walked).
pub const MAX_TEMPLATE_ENTRIES: usize = 5_000;
/// Deepest directory level looked at under a templates directory or by `harness list`.
pub const MAX_DIR_DEPTH: usize = 8;
/// Most directory entries `harness list` looks at.
pub const MAX_LIST_ENTRIES: usize = 20_000;

/// `MAX_DURATION` as written in messages.
pub fn max_duration_text() -> String {
    humantime::format_duration(MAX_DURATION).to_string()
}
