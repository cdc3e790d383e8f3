//! The Python oslo.messaging peer: the real oslo.messaging 14.9.3 AMQP 1.0 driver (pyngus 2.3.1,
//! python-qpid-proton 0.40.0) as a harness service (`kind: python-oslo`).
//!
//! [`PythonPeer::spawn`] starts `<venv>/bin/python harness/peers/oslo_peer.py` and talks to it over the
//! line-based JSON control channel documented at the top of `oslo_peer.py`: one request object per line on
//! its stdin, one reply (same `id`) or event (no `id`) per line on its stdout. [`setup`] creates the venv
//! with the pinned versions by running `harness/peers/setup.sh` (idempotent, a fast no-op when up to date).
//!
//! [`protocol`] holds the typed requests, replies, events and failure kinds; [`process`] the child
//! process and its channel; [`venv`] where the venv is and how it is made.
//!
//! ```no_run
//! # async fn demo() -> Result<(), harness::peer::PeerError> {
//! use harness::peer::{PythonPeer, PeerOptions};
//! use serde_json::json;
//! let peer = PythonPeer::spawn(PeerOptions::default()).await?;
//! peer.request_ok("rpc_server", json!({"service": "srv1", "url": "amqp://127.0.0.1:5672/",
//!                                      "target": {"topic": "t"}, "endpoints": ["echo"]})).await?;
//! let reply = peer.request("call", json!({"url": "amqp://127.0.0.1:5672/", "target": {"topic": "t"},
//!                                          "method": "echo", "args": {"value": 1}, "timeout": 5})).await?;
//! assert!(reply.ok);
//! peer.stop().await?;
//! # Ok(()) }
//! ```

mod process;
pub mod protocol;
mod venv;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

pub use process::{PeerOptions, PythonPeer, StderrMode};
pub use protocol::{FailureKind, PeerEvent, PeerFailure, Reply};
pub use venv::{
    default_venv, peers_dir, repo_root, setup, venv_python, DEFAULT_VENV_DIR, SETUP_COMMAND,
    VENV_ENV,
};

/// Errors of the Python peer: setup, start-up, the control channel, and failed requests.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The venv with the pinned oslo.messaging is not there (or was never completed).
    #[error(
        "the Python oslo.messaging peer needs its venv, but {reason} (looked in {venv}); create it with \
         `{SETUP_COMMAND}` (runs harness/peers/setup.sh; needs gcc, pkg-config, libssl-dev and Python headers)",
        venv = venv.display()
    )]
    VenvMissing {
        /// The venv directory that was checked.
        venv: PathBuf,
        /// What exactly is missing.
        reason: String,
    },
    /// `oslo_peer.py` is not where it should be.
    #[error("the Python peer program {} does not exist", path.display())]
    ScriptMissing {
        /// The path that was checked.
        path: PathBuf,
    },
    /// `setup.sh` exited unsuccessfully (its output went to this process's stderr).
    #[error("peer setup failed: {script} exited with {status}", script = script.display())]
    SetupFailed {
        /// The script that was run.
        script: PathBuf,
        /// Its exit status.
        status: ExitStatus,
    },
    /// Spawning or talking to the process failed at the OS level.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer process exited (or closed stdout) while a request was outstanding or before it was ready.
    #[error(
        "the Python peer exited ({status}) while waiting for {waiting_for}{}",
        stderr_suffix(stderr_tail)
    )]
    Exited {
        /// Exit status as text ("exit status: 1", "still running", ...).
        status: String,
        /// What the caller was waiting for.
        waiting_for: String,
        /// The last lines the peer wrote to stderr.
        stderr_tail: String,
    },
    /// No reply arrived within the request timeout.
    #[error("the Python peer did not answer {op} (id {id}) within {timeout:?}")]
    Timeout {
        /// The op of the request.
        op: String,
        /// The id of the request.
        id: u64,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The peer answered a request with `ok: false`.
    #[error("the Python peer failed {op}: {failure}")]
    Failed {
        /// The op of the request.
        op: String,
        /// The error object of the reply.
        failure: Box<PeerFailure>,
    },
    /// The request could not be built (fields must be a JSON object).
    #[error("invalid peer request: {0}")]
    InvalidRequest(String),
}

fn stderr_suffix(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("; its last stderr lines:\n{tail}")
    }
}
