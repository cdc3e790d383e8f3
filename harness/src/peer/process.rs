//! The peer process: spawning it, the request/reply channel over its stdin and stdout, its events, and
//! stopping it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::protocol::{PeerEvent, Reply, Request};
use super::venv::{default_venv, peers_dir, venv_python};
use super::PeerError;

/// How many stderr lines of the peer are kept for error messages.
const STDERR_KEEP: usize = 200;

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

    /// Sends a typed request (see [`Request`]) and waits for its reply.
    pub async fn send(&self, request: &Request) -> Result<Reply, PeerError> {
        let fields =
            serde_json::to_value(request).map_err(|e| PeerError::InvalidRequest(e.to_string()))?;
        self.request(request.op(), fields).await
    }

    /// [`PythonPeer::send`], with an `ok: false` reply as [`PeerError::Failed`].
    pub async fn send_ok(&self, request: &Request) -> Result<Map<String, Value>, PeerError> {
        self.send(request)
            .await?
            .into_result()
            .map_err(|failure| PeerError::Failed {
                op: request.op().into(),
                failure,
            })
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
    use crate::peer::protocol::PeerFailure;
    use std::path::Path;

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
