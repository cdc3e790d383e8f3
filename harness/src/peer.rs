//! The Python oslo.messaging peer: the real oslo.messaging 14.9.3 AMQP 1.0 driver (pyngus 2.3.1,
//! python-qpid-proton 0.40.0) as a harness service (`kind: python-oslo`).
//!
//! [`PythonPeer::spawn`] starts `<venv>/bin/python harness/peers/oslo_peer.py` and talks to it over the
//! line-based JSON control channel documented at the top of `oslo_peer.py`: one request object per line on
//! its stdin, one reply (same `id`) or event (no `id`) per line on its stdout. [`setup`] creates the venv
//! with the pinned versions by running `harness/peers/setup.sh` (idempotent, a fast no-op when up to date).
//!
//! This module depends only on std, tokio, serde_json and thiserror so that it stands on its own.
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, Mutex};

/// The command that creates the peer's venv; quoted in every "venv missing" message.
pub const SETUP_COMMAND: &str = "cargo run -p harness -- peer setup";

/// Name of the venv directory at the repository root (listed in `.gitignore`).
pub const DEFAULT_VENV_DIR: &str = ".venv-oslo";

/// Environment variable that overrides the venv location (also honoured by `setup.sh`).
pub const VENV_ENV: &str = "OSLO_PEER_VENV";

/// File `setup.sh` writes into the venv after a successful install and import check.
const STAMP_FILE: &str = ".amqp1-rig-stamp";

/// How many stderr lines of the peer are kept for error messages.
const STDERR_KEEP: usize = 200;

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

/// The `error` object of a failed reply: `{"kind", "class", "module", "message", ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerFailure {
    /// `remote`, `timeout`, `delivery`, `invalid_target`, `messaging`, `config`, `not_ready`,
    /// `unknown_service`, `bad_request`, `protocol` or `internal`.
    pub kind: String,
    /// Exception class (for `remote`: exactly as on the wire).
    pub class: Option<String>,
    /// Exception module (for `remote`: exactly as on the wire).
    pub module: Option<String>,
    /// Message (for `remote`: the failure's `message`, without traceback).
    pub message: String,
    /// The whole error object, including extra fields such as `raised` and `tb`.
    pub raw: Value,
}

impl PeerFailure {
    fn from_value(v: &Value) -> PeerFailure {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        PeerFailure {
            kind: s("kind").unwrap_or_else(|| "internal".to_owned()),
            class: s("class"),
            module: s("module"),
            message: s("message").unwrap_or_default(),
            raw: v.clone(),
        }
    }
}

impl fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        match (&self.module, &self.class) {
            (Some(m), Some(c)) => write!(f, " {m}.{c}")?,
            (None, Some(c)) => write!(f, " {c}")?,
            _ => {}
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

/// One reply line: `ok` plus every other field of the object (without `id`/`ok`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The request id this reply answers.
    pub id: u64,
    /// Whether the op succeeded.
    pub ok: bool,
    /// The reply's other fields (`result`, `event`, `addresses`, `error`, ...).
    pub fields: Map<String, Value>,
}

impl Reply {
    /// The error object when `ok` is false.
    pub fn failure(&self) -> Option<PeerFailure> {
        if self.ok {
            None
        } else {
            Some(PeerFailure::from_value(
                self.fields.get("error").unwrap_or(&Value::Null),
            ))
        }
    }

    /// `Ok(fields)` or `Err(failure)`.
    pub fn into_result(self) -> Result<Map<String, Value>, Box<PeerFailure>> {
        match self.failure() {
            None => Ok(self.fields),
            Some(f) => Err(Box::new(f)),
        }
    }
}

/// An asynchronous event line (no `id`): `{"event": "call" | "notification" | ..., "service": ..., ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerEvent {
    /// The event name.
    pub event: String,
    /// The service that produced it, when it names one.
    pub service: Option<String>,
    /// The whole line.
    pub raw: Value,
}

/// How the peer's stderr is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StderrMode {
    /// Keep the last lines in memory ([`PythonPeer::stderr_tail`]); they are quoted in errors.
    #[default]
    Capture,
    /// Pass it through to this process's stderr (handy with `OSLO_PEER_LOG_LEVEL=DEBUG` or `trace`).
    Inherit,
}

/// Where the venv and the peer program are, and how to run it.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The venv created by [`setup`]; default [`default_venv`].
    pub venv: PathBuf,
    /// The peer program; default `<repo>/harness/peers/oslo_peer.py`.
    pub script: PathBuf,
    /// Log level of the peer's Python logging (`OSLO_PEER_LOG_LEVEL`), default WARNING.
    pub log_level: Option<String>,
    /// What happens to the peer's stderr.
    pub stderr: StderrMode,
    /// Bound on every request's wait for its reply (default 120 s; oslo calls carry their own timeouts).
    pub request_timeout: Duration,
    /// Bound on start-up (import of oslo.messaging and the `hello` exchange), default 60 s.
    pub start_timeout: Duration,
}

impl Default for PeerOptions {
    fn default() -> Self {
        PeerOptions {
            venv: default_venv(),
            script: peers_dir().join("oslo_peer.py"),
            log_level: None,
            stderr: StderrMode::Capture,
            request_timeout: Duration::from_secs(120),
            start_timeout: Duration::from_secs(60),
        }
    }
}

impl PeerOptions {
    /// Default options with another venv.
    pub fn with_venv(venv: impl Into<PathBuf>) -> Self {
        PeerOptions {
            venv: venv.into(),
            ..PeerOptions::default()
        }
    }
}

/// The repository root (the workspace directory this crate was built in).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `harness/peers/` of this checkout.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// `$OSLO_PEER_VENV`, else `<repo>/.venv-oslo`.
pub fn default_venv() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(DEFAULT_VENV_DIR),
    }
}

/// The interpreter of `venv`, if the venv is complete (created and stamped by `setup.sh`).
pub fn venv_python(venv: &Path) -> Result<PathBuf, PeerError> {
    let python = venv.join("bin").join("python");
    if !venv.is_dir() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: "the directory does not exist".into(),
        });
    }
    if !python.exists() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: format!("{} does not exist", python.display()),
        });
    }
    if !venv.join(STAMP_FILE).exists() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: format!("its setup never completed ({STAMP_FILE} is missing)"),
        });
    }
    Ok(python)
}

/// Create (or check) the venv with the pinned oslo.messaging, pyngus and python-qpid-proton by running
/// `harness/peers/setup.sh <venv>`; its progress goes to this process's stderr. A no-op when up to date.
pub async fn setup(venv: &Path) -> Result<(), PeerError> {
    let script = peers_dir().join("setup.sh");
    if !script.exists() {
        return Err(PeerError::ScriptMissing { path: script });
    }
    let status = Command::new("bash")
        .arg(&script)
        .arg(venv)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|source| PeerError::Io {
            context: format!("running {}", script.display()),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PeerError::SetupFailed { script, status })
    }
}

type Pending = Arc<StdMutex<HashMap<u64, oneshot::Sender<Reply>>>>;

/// A running Python peer process. Dropping it kills the process (`kill_on_drop`); [`PythonPeer::stop`]
/// stops its services cleanly first.
#[derive(Debug)]
pub struct PythonPeer {
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    pending: Pending,
    closed: Arc<AtomicBool>,
    events: Mutex<mpsc::UnboundedReceiver<PeerEvent>>,
    stderr: Arc<StdMutex<VecDeque<String>>>,
    next_id: AtomicU64,
    request_timeout: Duration,
    versions: Map<String, Value>,
    pid: Option<u32>,
}

impl PythonPeer {
    /// Start the peer and wait until it has answered `hello` (oslo.messaging imported).
    pub async fn spawn(options: PeerOptions) -> Result<PythonPeer, PeerError> {
        let python = venv_python(&options.venv)?;
        if !options.script.exists() {
            return Err(PeerError::ScriptMissing {
                path: options.script.clone(),
            });
        }
        let mut cmd = Command::new(&python);
        cmd.arg("-u")
            .arg(&options.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(match options.stderr {
                StderrMode::Capture => Stdio::piped(),
                StderrMode::Inherit => Stdio::inherit(),
            })
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true);
        if let Some(level) = &options.log_level {
            cmd.env("OSLO_PEER_LOG_LEVEL", level);
        }
        let mut child = cmd.spawn().map_err(|source| PeerError::Io {
            context: format!("starting {}", python.display()),
            source,
        })?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or_else(|| PeerError::Io {
            context: "taking the peer's stdout".into(),
            source: std::io::Error::other("no stdout pipe"),
        })?;
        let stderr_lines = Arc::new(StdMutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let keep = stderr_lines.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(mut q) = keep.lock() {
                        if q.len() == STDERR_KEEP {
                            q.pop_front();
                        }
                        q.push_back(line);
                    }
                }
            });
        }
        let pending: Pending = Arc::new(StdMutex::new(HashMap::new()));
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(read_stdout(
            stdout,
            pending.clone(),
            closed.clone(),
            event_tx,
        ));

        let mut peer = PythonPeer {
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            pending,
            closed,
            events: Mutex::new(event_rx),
            stderr: stderr_lines,
            next_id: AtomicU64::new(1),
            request_timeout: options.request_timeout,
            versions: Map::new(),
            pid,
        };
        let hello = peer
            .request_with_timeout("hello", json!({}), options.start_timeout)
            .await?;
        let fields = hello.into_result().map_err(|failure| PeerError::Failed {
            op: "hello".into(),
            failure,
        })?;
        if let Some(Value::Object(v)) = fields.get("versions") {
            peer.versions = v.clone();
        }
        Ok(peer)
    }

    /// Versions the peer reported (`oslo.messaging`, `pyngus`, `python-qpid-proton`, `python`).
    pub fn versions(&self) -> &Map<String, Value> {
        &self.versions
    }

    /// The OS process id of the peer.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Send `{"id", "op", ...fields}` and wait (bounded by the request timeout) for its reply.
    /// An `ok: false` reply is returned as a [`Reply`], not as an error: callers record it.
    pub async fn request(&self, op: &str, fields: Value) -> Result<Reply, PeerError> {
        self.request_with_timeout(op, fields, self.request_timeout)
            .await
    }

    /// Like [`PythonPeer::request`], but an `ok: false` reply becomes [`PeerError::Failed`].
    pub async fn request_ok(
        &self,
        op: &str,
        fields: Value,
    ) -> Result<Map<String, Value>, PeerError> {
        self.request(op, fields)
            .await?
            .into_result()
            .map_err(|failure| PeerError::Failed {
                op: op.into(),
                failure,
            })
    }

    /// [`PythonPeer::request`] with an explicit bound.
    pub async fn request_with_timeout(
        &self,
        op: &str,
        fields: Value,
        timeout: Duration,
    ) -> Result<Reply, PeerError> {
        let mut obj = match fields {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => {
                return Err(PeerError::InvalidRequest(format!(
                    "fields of {op} must be an object, got {other}"
                )))
            }
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        obj.insert("id".into(), json!(id));
        obj.insert("op".into(), json!(op));
        let mut line = Value::Object(obj).to_string();
        line.push('\n');

        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id, tx);
        }
        if self.closed.load(Ordering::SeqCst) {
            self.forget(id);
            return Err(self.exited(format!("the reply to {op}")).await);
        }
        let written = {
            let mut stdin = self.stdin.lock().await;
            match stdin.as_mut() {
                Some(w) => match w.write_all(line.as_bytes()).await {
                    Ok(()) => w.flush().await,
                    Err(e) => Err(e),
                },
                None => Err(std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "stdin already closed",
                )),
            }
        };
        if written.is_err() {
            self.forget(id);
            return Err(self.exited(format!("the reply to {op}")).await);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_closed)) => Err(self.exited(format!("the reply to {op}")).await),
            Err(_elapsed) => {
                self.forget(id);
                Err(PeerError::Timeout {
                    op: op.into(),
                    id,
                    timeout,
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&id);
        }
    }

    async fn exited(&self, waiting_for: String) -> PeerError {
        // Give the process a moment to be reaped so the status is known.
        let status = {
            let mut child = self.child.lock().await;
            match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
                Ok(Ok(s)) => s.to_string(),
                Ok(Err(e)) => format!("status unknown: {e}"),
                Err(_) => "still running, stdout closed".to_owned(),
            }
        };
        // The stderr reader may still be draining the last lines.
        tokio::time::sleep(Duration::from_millis(50)).await;
        PeerError::Exited {
            status,
            waiting_for,
            stderr_tail: self.stderr_tail(40),
        }
    }

    /// Wait for the next asynchronous event; `None` when the peer has exited and all events were taken.
    pub async fn next_event(&self) -> Option<PeerEvent> {
        self.events.lock().await.recv().await
    }

    /// Wait up to `timeout` for the next event; `None` on timeout or exit.
    pub async fn next_event_timeout(&self, timeout: Duration) -> Option<PeerEvent> {
        tokio::time::timeout(timeout, self.next_event())
            .await
            .ok()
            .flatten()
    }

    /// All events that have arrived and were not taken yet, in arrival order.
    pub async fn drain_events(&self) -> Vec<PeerEvent> {
        let mut rx = self.events.lock().await;
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            out.push(ev);
        }
        out
    }

    /// The last `n` lines the peer wrote to stderr (only with [`StderrMode::Capture`]).
    pub fn stderr_tail(&self, n: usize) -> String {
        match self.stderr.lock() {
            Ok(q) => {
                let skip = q.len().saturating_sub(n);
                q.iter().skip(skip).cloned().collect::<Vec<_>>().join("\n")
            }
            Err(_) => String::new(),
        }
    }

    /// Stop every service, close stdin and wait for the process to exit (killing it after 15 s).
    pub async fn stop(self) -> Result<ExitStatus, PeerError> {
        let _ = self
            .request_with_timeout("stop", json!({}), Duration::from_secs(15))
            .await;
        drop(self.stdin.lock().await.take());
        let mut child = self.child.lock().await;
        match tokio::time::timeout(Duration::from_secs(15), child.wait()).await {
            Ok(Ok(status)) => Ok(status),
            Ok(Err(source)) => Err(PeerError::Io {
                context: "waiting for the peer to exit".into(),
                source,
            }),
            Err(_) => {
                let _ = child.kill().await;
                child.wait().await.map_err(|source| PeerError::Io {
                    context: "waiting for the killed peer".into(),
                    source,
                })
            }
        }
    }
}

async fn read_stdout(
    stdout: tokio::process::ChildStdout,
    pending: Pending,
    closed: Arc<AtomicBool>,
    events: mpsc::UnboundedSender<PeerEvent>,
) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let value: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = events.send(PeerEvent {
                    event: "unparsed".into(),
                    service: None,
                    raw: json!({"event": "unparsed", "line": line}),
                });
                continue;
            }
        };
        let id = value.get("id").and_then(Value::as_u64);
        match (id, value) {
            (Some(id), Value::Object(mut obj)) => {
                obj.remove("id");
                let ok = obj.remove("ok").and_then(|v| v.as_bool()).unwrap_or(false);
                let tx = pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(tx) = tx {
                    let _ = tx.send(Reply {
                        id,
                        ok,
                        fields: obj,
                    });
                }
            }
            (None, value) => {
                let event = match value.get("event").and_then(Value::as_str) {
                    Some(e) => e.to_owned(),
                    None if value.get("ok").is_some() => "protocol_error".to_owned(),
                    None => "unknown".to_owned(),
                };
                let service = value
                    .get("service")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let _ = events.send(PeerEvent {
                    event,
                    service,
                    raw: value,
                });
            }
            (Some(_), other) => {
                let _ = events.send(PeerEvent {
                    event: "unknown".into(),
                    service: None,
                    raw: other,
                });
            }
        }
    }
    // stdout closed: fail every outstanding request (their senders are dropped here).
    closed.store(true, Ordering::SeqCst);
    if let Ok(mut p) = pending.lock() {
        p.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn venv_missing_message_says_how_to_create_it() {
        let err = venv_python(Path::new("/nonexistent/venv-for-test")).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PeerError::VenvMissing { .. }));
        assert!(
            text.contains("cargo run -p harness -- peer setup"),
            "{text}"
        );
        assert!(text.contains("/nonexistent/venv-for-test"), "{text}");
    }

    #[test]
    fn failure_display_names_kind_class_and_message() {
        let f = PeerFailure::from_value(
            &json!({"kind": "remote", "class": "ValueError", "module": "builtins", "message": "bad"}),
        );
        assert_eq!(f.to_string(), "remote builtins.ValueError: bad");
    }
}
