//! amqp1-rig harness: runs oslo.messaging AMQP 1.0 scenarios (YAML) against embedded, local-process and
//! containerised brokers, records deterministic transcripts and checks them with insta snapshots.
//!
//! Data flow: [`scenario`] parses and validates a file (errors carry `file:line:column`), [`backend`] starts
//! the broker(s) the scenario names, [`runner`] executes the steps and records a [`transcript`], which
//! [`snapshot`] compares with `scenarios/snapshots/<name>.snap`; [`report`] renders the outcome.

/// `println!` that ignores write errors (a closed pipe, as in `harness list | head`, must not panic).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

/// `print!` that ignores write errors.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

pub mod app;
pub mod backend;
pub mod bench;
pub mod brokers;
pub mod cli;
pub mod exit_code;
pub mod mgmt;
pub mod oslo_tests;
pub mod peer;
pub mod plan;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod secret;
pub mod snapshot;
pub mod templates;
pub mod transcript;
