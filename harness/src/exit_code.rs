//! Process exit codes of the `harness` binary.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | everything passed (expected failures included) |
//! | 1 | internal error (a bug in the harness, I/O error writing a report) |
//! | 2 | usage error (bad command line; produced by clap) |
//! | 3 | scenario invalid (YAML syntax, unknown key, bad value, unknown reference) |
//! | 4 | broker setup failed (backend unavailable, broker did not start or become ready) |
//! | 5 | driver or runtime error (connection failed, a step errored unexpectedly) |
//! | 6 | expectation or snapshot mismatch |
//!
//! When several scenarios run, the most severe code wins ([`combine`]): an internal error is never
//! hidden behind a mismatch.

/// Everything passed.
pub const OK: i32 = 0;
/// Internal error.
pub const INTERNAL: i32 = 1;
/// Usage error (clap).
pub const USAGE: i32 = 2;
/// The scenario file is invalid.
pub const SCENARIO_INVALID: i32 = 3;
/// The broker could not be set up.
pub const BROKER_SETUP: i32 = 4;
/// A driver or runtime error.
pub const RUNTIME: i32 = 5;
/// An expectation or the snapshot did not match.
pub const MISMATCH: i32 = 6;

/// The exit code table, as shown in `harness --help`.
pub const HELP_TABLE: &str = "Exit codes:
  0  ok (expected failures included)
  1  internal error
  2  usage error
  3  scenario invalid
  4  broker setup failed
  5  driver/runtime error
  6  expectation or snapshot mismatch";

/// The more severe of two exit codes: any failure beats 0, and among failures the lower number wins
/// (1 internal beats 3 invalid beats 4 setup beats 5 runtime beats 6 mismatch).
pub fn combine(a: i32, b: i32) -> i32 {
    match (a, b) {
        (OK, x) | (x, OK) => x,
        (x, y) => x.min(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_severe_wins() {
        assert_eq!(combine(OK, MISMATCH), MISMATCH);
        assert_eq!(combine(MISMATCH, INTERNAL), INTERNAL);
        assert_eq!(combine(RUNTIME, BROKER_SETUP), BROKER_SETUP);
        assert_eq!(combine(OK, OK), OK);
    }
}
