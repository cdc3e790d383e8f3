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
