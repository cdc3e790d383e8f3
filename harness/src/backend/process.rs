//! Process backend: real broker binaries run as local processes, configured from `templates/`.
//!
//! Supported kinds and what they run:
//!
//! | kind        | binary (PATH, `overrides.binary`, or [`ProcessBackend::with_binary`]) | config rendered from |
//! |-------------|------------------------------------------------------------------------|----------------------|
//! | `qpidd`     | `qpidd --config DIR/qpidd.conf`                                        | `templates/qpidd/`   |
//! | `qdrouterd` | `qdrouterd -c DIR/qdrouterd.conf`                                      | `templates/qdrouterd/` |
//! | `rabbitmq`  | `rabbitmq-server` (Debian's `su` wrapper is bypassed: the real script under `/usr/lib/rabbitmq/bin` runs as the current user) | `templates/rabbitmq/` |
//! | `embedded`  | `harness broker serve --flavour F --port P` (the embedded broker as a process) | -            |
//!
//! Every node gets a private temporary directory (mode 0700) holding its rendered configuration, data,
//! pid and log files, and free `127.0.0.1` ports. RabbitMQ nodes get their own node name
//! (`rig-<random>@localhost`), distribution port, `HOME` (so the Erlang cookie is private) and their own
//! `epmd` on a private port, so a system RabbitMQ is never touched.
//!
//! Each broker runs in its own process group. [`BrokerNode::stop`] shuts it down in order (RabbitMQ:
//! `rabbitmqctl stop`; others: SIGTERM), then SIGKILLs the group. `Drop` SIGKILLs synchronously, so an
//! error or a panic leaves nothing behind; [`kill_all`] does the same for every live broker and is meant
//! for the runner's Ctrl-C path ([`spawn_interrupt_guard`] wires it to SIGINT/SIGTERM).
//!
//! The configuration comes from [`super::config`] (one rendering for process and container). Override
//! keys this backend reads besides those: `binary`, `ready_timeout` (seconds), `env.NAME` (environment
//! variable for the broker process, e.g. `env.PYTHONPATH` for a qdrouterd built from source).
//! `spec.version` is checked for RabbitMQ (`3.10` matches an installed 3.10.8). Executables are found by
//! [`super::discovery`]; process groups and directories are registered with [`super::cleanup`].

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::cleanup::{
    register_dir, register_group, signal_group, unregister_dir, unregister_group,
};
use super::config::{broker_log_file, node_name};
use super::{
    free_port, log_tail, Backend, BackendError, BoxFuture, BrokerHandle, BrokerKind, BrokerNode,
    BrokerSpec, User,
};
use crate::brokers::Version;

pub use super::cleanup::{kill_all, live_count, spawn_interrupt_guard};
pub use super::config::{
    format_rendered, render_files, render_preview, template_context, NodeLayout, Placement,
    RenderedFile,
};
pub use super::discovery::{rabbitmq_version, Executables};

/// How long a node may take to accept an AMQP Open, unless `overrides.ready_timeout` says otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long an orderly stop may take before the process group is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Maximum bytes of each log file returned by [`BrokerNode::logs`].
const LOG_CAP: usize = 256 * 1024;
/// Lines of log put into start errors.
const TAIL_LINES: usize = 20;

/// The process backend. Cheap to construct; holds only where binaries are.
#[derive(Clone, Debug, Default)]
pub struct ProcessBackend {
    binaries: BTreeMap<BrokerKind, PathBuf>,
    harness_exe: Option<PathBuf>,
}

impl ProcessBackend {
    /// A backend that finds binaries on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `path` as the server binary for `kind` instead of searching `PATH`.
    pub fn with_binary(mut self, kind: BrokerKind, path: impl Into<PathBuf>) -> Self {
        self.binaries.insert(kind, path.into());
        self
    }

    /// The `harness` executable used for `embedded` nodes (`harness broker serve`). Defaults to
    /// `$HARNESS_BIN`, then the current executable when it is `harness`, then `harness` on `PATH`.
    pub fn with_harness_exe(mut self, path: impl Into<PathBuf>) -> Self {
        self.harness_exe = Some(path.into());
        self
    }

    /// Finds the executables for `kind`; `override_path` (the spec's `binary` override) wins.
    pub fn locate(
        &self,
        kind: BrokerKind,
        override_path: Option<&Path>,
    ) -> Result<Executables, String> {
        let explicit = override_path
            .map(Path::to_path_buf)
            .or_else(|| self.binaries.get(&kind).cloned());
        super::discovery::locate(kind, explicit, self.harness_exe.clone())
    }

    /// Starts every node of `spec` at once and returns them once all are ready (what [`Backend::start`]
    /// does, but with the concrete node type). A failure kills the nodes already started.
    pub async fn start_nodes(&self, spec: &BrokerSpec) -> Result<Vec<ProcessNode>, BackendError> {
        let exes = self
            .locate(spec.kind(), spec.overrides.get("binary").map(Path::new))
            .map_err(|reason| BackendError::Unavailable {
                backend: "process",
                kind: spec.label(),
                reason,
            })?;
        if spec.tls {
            return Err(BackendError::Unavailable {
                backend: "process",
                kind: spec.label(),
                reason: "TLS is not supported by the process backend yet (use embedded)"
                    .to_string(),
            });
        }
        if let (BrokerKind::Rabbitmq, Some(wanted)) = (spec.kind(), spec.version()) {
            match rabbitmq_version(&exes.server) {
                Some(have) if Version::parse(&have).is_some_and(|h| h.matches(wanted)) => {}
                have => {
                    return Err(BackendError::Unavailable {
                        backend: "process",
                        kind: spec.label(),
                        reason: format!(
                            "the scenario wants RabbitMQ {wanted}, {} has {}",
                            exes.server.display(),
                            have.as_deref().unwrap_or("an unknown version")
                        ),
                    })
                }
            }
        }
        let timeout = match spec.overrides.get("ready_timeout") {
            Some(v) => {
                Duration::from_secs(v.trim().parse::<u64>().map_err(|_| BackendError::Start {
                    message: format!("override ready_timeout='{v}' is not a number of seconds"),
                    log_tail: String::new(),
                })?)
            }
            None => DEFAULT_READY_TIMEOUT,
        };
        let starts = (0..spec.nodes.max(1)).map(|i| ProcessNode::start(spec, &exes, i, timeout));
        futures::future::try_join_all(starts).await
    }
}

impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn available(&self, spec: &BrokerSpec) -> Result<(), String> {
        self.locate(spec.kind(), spec.overrides.get("binary").map(Path::new))
            .map(|_| ())
    }

    fn detect_version(&self, spec: &BrokerSpec) -> Option<Version> {
        if spec.kind() != BrokerKind::Rabbitmq {
            return None;
        }
        let exes = self
            .locate(spec.kind(), spec.overrides.get("binary").map(Path::new))
            .ok()?;
        rabbitmq_version(&exes.server).and_then(|v| Version::parse(&v))
    }

    fn start<'a>(
        &'a self,
        spec: &'a BrokerSpec,
    ) -> BoxFuture<'a, Result<BrokerHandle, BackendError>> {
        Box::pin(async move {
            let started = self.start_nodes(spec).await?;
            Ok(BrokerHandle {
                nodes: started
                    .into_iter()
                    .map(|n| Box::new(n) as Box<dyn BrokerNode>)
                    .collect(),
            })
        })
    }
}

#[derive(Debug, Default)]
struct Procs {
    main: Option<Child>,
    epmd: Option<Child>,
    paused: bool,
}

/// A broker node run as a local process.
pub struct ProcessNode {
    name: String,
    kind: BrokerKind,
    flavour: Option<crate::brokers::Flavour>,
    exes: Executables,
    layout: NodeLayout,
    users: Vec<User>,
    ready_timeout: Duration,
    /// Extra environment for the broker (`env.NAME` overrides).
    env: Vec<(String, String)>,
    procs: Mutex<Procs>,
    notes: Mutex<Vec<String>>,
    dir: Mutex<Option<tempfile::TempDir>>,
}

impl std::fmt::Debug for ProcessNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessNode")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("port", &self.layout.port)
            .field("dir", &self.layout.dir)
            .finish()
    }
}

impl ProcessNode {
    async fn start(
        spec: &BrokerSpec,
        exes: &Executables,
        index: usize,
        ready_timeout: Duration,
    ) -> Result<ProcessNode, BackendError> {
        let kind = spec.kind();
        let dir = tempfile::Builder::new()
            .prefix(&format!("amqp1-rig-{kind}-{index}-"))
            .tempdir()?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))?;
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let (dist_port, epmd_port) = if kind == BrokerKind::Rabbitmq {
            (free_port()?, free_port()?)
        } else {
            (0, 0)
        };
        let layout = NodeLayout {
            index,
            dir: dir.path().to_path_buf(),
            port: free_port()?,
            dist_port,
            epmd_port,
            node_name: node_name(kind, index, &tag[..8]),
            placement: Placement::Process,
            version: match kind {
                BrokerKind::Rabbitmq => {
                    rabbitmq_version(&exes.server).and_then(|v| Version::parse(&v))
                }
                _ => None,
            },
        };
        for d in [layout.data_dir(), layout.log_dir(), layout.pid_dir()] {
            fs::create_dir_all(d)?;
        }
        for f in render_files(spec, &layout)? {
            let path = layout.dir.join(&f.path);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            file.write_all(f.contents.as_bytes())?;
        }
        let node = ProcessNode {
            name: format!("node{index}"),
            kind,
            flavour: spec.flavour(),
            exes: exes.clone(),
            layout,
            users: spec.users.clone(),
            ready_timeout,
            env: spec
                .overrides
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("env.").map(|k| (k.to_string(), v.clone())))
                .collect(),
            procs: Mutex::new(Procs::default()),
            notes: Mutex::new(Vec::new()),
            dir: Mutex::new(Some(dir)),
        };
        register_dir(&node.layout.dir);
        if matches!(kind, BrokerKind::Qpidd | BrokerKind::Qdrouterd) && !node.users.is_empty() {
            node.create_sasl_db().await?;
        }
        let started = Instant::now();
        node.spawn_and_wait().await?;
        node.note(format!(
            "{} {} on 127.0.0.1:{} ready after {:.2} s (dir {})",
            node.product(),
            node.name,
            node.layout.port,
            started.elapsed().as_secs_f64(),
            node.layout.dir.display()
        ));
        Ok(node)
    }

    fn note(&self, line: String) {
        tracing::info!(target: "harness::process", "{line}");
        if let Ok(mut n) = self.notes.lock() {
            n.push(line);
        }
    }

    /// Creates the Cyrus SASL database for qpidd/qdrouterd with `saslpasswd2`.
    async fn create_sasl_db(&self) -> Result<(), BackendError> {
        let saslpasswd2 =
            super::discovery::saslpasswd2().ok_or_else(|| BackendError::Unavailable {
                backend: "process",
                kind: self.kind.to_string(),
                reason: "saslpasswd2 not found (install sasl2-bin) but the scenario has users"
                    .to_string(),
            })?;
        let db = self
            .layout
            .dir
            .join("sasl2")
            .join(format!("{}.sasldb", self.kind));
        fs::create_dir_all(self.layout.dir.join("sasl2"))?;
        for u in &self.users {
            let mut cmd = tokio::process::Command::new(&saslpasswd2);
            cmd.arg("-c").arg("-p").arg("-f").arg(&db);
            if self.kind == BrokerKind::Qpidd {
                cmd.arg("-u").arg("QPID");
            }
            cmd.arg(&u.name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd.spawn()?;
            if let Some(mut stdin) = child.stdin.take() {
                use tokio::io::AsyncWriteExt;
                stdin.write_all(u.password.expose().as_bytes()).await?;
            }
            let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
                .await
                .map_err(|_| BackendError::Start {
                    message: "saslpasswd2 did not finish within 20 s".to_string(),
                    log_tail: String::new(),
                })??;
            if !out.status.success() {
                return Err(BackendError::Start {
                    message: format!("saslpasswd2 for user '{}' failed: {}", u.name, out.status),
                    log_tail: String::from_utf8_lossy(&out.stderr).to_string(),
                });
            }
        }
        Ok(())
    }

    /// Environment for RabbitMQ scripts: nothing inherited that could point at a system instance.
    fn rabbit_env(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str() {
                if k.starts_with("RABBITMQ_") || k.starts_with("ERL_") {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.env("HOME", &self.layout.dir)
            .env(
                "RABBITMQ_CONF_ENV_FILE",
                self.layout.dir.join("rabbitmq-env.conf"),
            )
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", self.layout.epmd_port.to_string())
            .current_dir(&self.layout.dir);
    }

    fn server_command(&self) -> Command {
        let l = &self.layout;
        let mut cmd = Command::new(&self.exes.server);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        match self.kind {
            BrokerKind::Qpidd => {
                cmd.arg("--config").arg(l.dir.join("qpidd.conf"));
            }
            BrokerKind::Qdrouterd => {
                cmd.arg("-c").arg(l.dir.join("qdrouterd.conf"));
            }
            BrokerKind::Rabbitmq => self.rabbit_env(&mut cmd),
            BrokerKind::Embedded | BrokerKind::Artemis => {
                cmd.arg("broker")
                    .arg("serve")
                    .arg("--flavour")
                    .arg(self.flavour.unwrap_or_default().as_str())
                    .arg("--port")
                    .arg(l.port.to_string());
                for u in &self.users {
                    cmd.arg("--user")
                        .arg(format!("{}:{}", u.name, u.password.expose()));
                }
            }
        }
        cmd.current_dir(&l.dir);
        cmd
    }

    fn spawn_logged(&self, mut cmd: Command) -> Result<Child, BackendError> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.layout.output_log())?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd.spawn().map_err(|e| BackendError::Start {
            message: format!("cannot run {}: {e}", cmd.get_program().to_string_lossy()),
            log_tail: String::new(),
        })?;
        register_group(child.id() as i32);
        Ok(child)
    }

    /// Spawns the broker (and RabbitMQ's private epmd, once) and waits until an AMQP Open succeeds.
    async fn spawn_and_wait(&self) -> Result<(), BackendError> {
        if self.kind == BrokerKind::Rabbitmq {
            let need_epmd = self.procs.lock().map(|p| p.epmd.is_none()).unwrap_or(true);
            if let (true, Some(epmd)) = (need_epmd, &self.exes.epmd) {
                let mut cmd = Command::new(epmd);
                cmd.arg("-port")
                    .arg(self.layout.epmd_port.to_string())
                    .arg("-address")
                    .arg("127.0.0.1");
                let child = self.spawn_logged(cmd)?;
                if let Ok(mut p) = self.procs.lock() {
                    p.epmd = Some(child);
                }
            }
        }
        let child = self.spawn_logged(self.server_command())?;
        if let Ok(mut p) = self.procs.lock() {
            p.main = Some(child);
            p.paused = false;
        }
        let probe = super::Probe::local(self.layout.port, self.users.first());
        let ready = super::wait_ready(&probe, self.ready_timeout);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                r = &mut ready => {
                    return match r {
                        Ok(()) => Ok(()),
                        Err(reason) => {
                            self.kill_now();
                            Err(BackendError::NotReady {
                                url: format!("amqp://127.0.0.1:{}", self.layout.port),
                                reason,
                                log_tail: log_tail(&self.read_logs(), TAIL_LINES),
                            })
                        }
                    };
                }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if let Some(status) = self.main_exit_status() {
                        self.kill_now();
                        return Err(BackendError::Start {
                            message: format!(
                                "{} ({}) exited with {status} before it accepted AMQP connections",
                                self.exes.server.display(),
                                self.kind
                            ),
                            log_tail: log_tail(&self.read_logs(), TAIL_LINES),
                        });
                    }
                }
            }
        }
    }

    /// `Some(status)` once the main process has exited (reaping it).
    fn main_exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut p = self.procs.lock().ok()?;
        let child = p.main.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                let pgid = child.id() as i32;
                signal_group(pgid, libc::SIGKILL);
                unregister_group(pgid);
                p.main = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// SIGKILLs the main process group and reaps it (synchronous). Keeps epmd.
    fn kill_main_now(&self) {
        let child = match self.procs.lock() {
            Ok(mut p) => {
                p.paused = false;
                p.main.take()
            }
            Err(poisoned) => poisoned.into_inner().main.take(),
        };
        if let Some(child) = child {
            reap_killed(child);
        }
    }

    /// SIGKILLs everything this node started (broker and epmd) and reaps it (synchronous).
    fn kill_now(&self) {
        self.kill_main_now();
        let epmd = match self.procs.lock() {
            Ok(mut p) => p.epmd.take(),
            Err(poisoned) => poisoned.into_inner().epmd.take(),
        };
        if let Some(child) = epmd {
            reap_killed(child);
        }
    }

    async fn rabbitmqctl(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let ctl = self
            .exes
            .ctl
            .as_ref()
            .ok_or_else(|| "rabbitmqctl not found next to rabbitmq-server".to_string())?;
        let mut std_cmd = Command::new(ctl);
        self.rabbit_env(&mut std_cmd);
        std_cmd.arg("-n").arg(&self.layout.node_name).args(args);
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| format!("rabbitmqctl {} timed out after {timeout:?}", args.join(" ")))?
            .map_err(|e| format!("rabbitmqctl: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!(
                "rabbitmqctl {} failed ({}): {}",
                args.join(" "),
                out.status,
                text.trim()
            ))
        }
    }

    fn is_running(&self) -> bool {
        self.procs.lock().map(|p| p.main.is_some()).unwrap_or(false)
    }

    fn main_pgid(&self) -> Option<i32> {
        self.procs
            .lock()
            .ok()
            .and_then(|p| p.main.as_ref().map(|c| c.id() as i32))
    }

    /// Orderly stop of the main process: RabbitMQ `rabbitmqctl stop`, others SIGTERM; SIGKILL after a grace.
    async fn stop_main(&self) {
        let Some(pgid) = self.main_pgid() else {
            return;
        };
        signal_group(pgid, libc::SIGCONT);
        if let Ok(mut p) = self.procs.lock() {
            p.paused = false;
        }
        if self.kind == BrokerKind::Rabbitmq {
            match self
                .rabbitmqctl(
                    &["list_queues", "name", "messages", "consumers"],
                    Duration::from_secs(15),
                )
                .await
            {
                Ok(q) => self.note(format!("queues at stop:\n{}", q.trim_end())),
                Err(e) => self.note(e),
            }
            if let Err(e) = self.rabbitmqctl(&["stop"], STOP_GRACE).await {
                self.note(e);
            }
        } else {
            signal_group(pgid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if self.main_exit_status().is_some() || !self.is_running() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill_main_now();
    }
}

/// SIGKILLs `child`'s process group (continuing it first if stopped) and reaps the leader.
fn reap_killed(mut child: Child) {
    let pgid = child.id() as i32;
    signal_group(pgid, libc::SIGCONT);
    signal_group(pgid, libc::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
    unregister_group(pgid);
}

fn read_capped(path: &Path) -> Option<String> {
    let bytes = fs::read(path).ok()?;
    let start = bytes.len().saturating_sub(LOG_CAP);
    let mut text = String::from_utf8_lossy(&bytes[start..]).into_owned();
    if start > 0 {
        text.insert_str(0, &format!("[... {start} bytes cut ...]\n"));
    }
    Some(text)
}

impl ProcessNode {
    fn read_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(n) = self.notes.lock() {
            for line in n.iter() {
                out.push_str(&format!("# amqp1-rig: {line}\n"));
            }
        }
        let mut files = vec![self.layout.output_log()];
        files.extend(broker_log_file(self.kind, &self.layout));
        for f in files {
            if let Some(text) = read_capped(&f) {
                if text.trim().is_empty() {
                    continue;
                }
                let name = f
                    .strip_prefix(&self.layout.dir)
                    .unwrap_or(&f)
                    .display()
                    .to_string();
                out.push_str(&format!("==> {name} <==\n{text}"));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        out
    }

    /// The node's private directory (configuration, data and logs).
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// Process id of the running broker (the leader of its process group), if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.main_pgid().map(|p| p as u32)
    }

    /// Process id of the node's private epmd (RabbitMQ), if one was started.
    pub fn epmd_pid(&self) -> Option<u32> {
        self.procs
            .lock()
            .ok()
            .and_then(|p| p.epmd.as_ref().map(Child::id))
    }

    /// The node's layout (ports, node name).
    pub fn layout(&self) -> &NodeLayout {
        &self.layout
    }
}

impl BrokerNode for ProcessNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn port(&self) -> u16 {
        self.layout.port
    }

    fn product(&self) -> String {
        match self.kind {
            BrokerKind::Embedded => {
                format!("embedded {} (process)", self.flavour.unwrap_or_default())
            }
            k => k.to_string(),
        }
    }

    fn kill(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.kill_main_now();
            self.note(format!("{} killed (SIGKILL)", self.name));
            Ok(())
        })
    }

    fn restart(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.kill_main_now();
            let started = Instant::now();
            self.spawn_and_wait().await?;
            self.note(format!(
                "{} restarted, ready after {:.2} s",
                self.name,
                started.elapsed().as_secs_f64()
            ));
            Ok(())
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let pgid = self.main_pgid().ok_or_else(|| BackendError::Fault {
                op: "pause".into(),
                node: self.name.clone(),
                message: "the node is not running".into(),
            })?;
            if !signal_group(pgid, libc::SIGSTOP) {
                return Err(BackendError::Fault {
                    op: "pause".into(),
                    node: self.name.clone(),
                    message: std::io::Error::last_os_error().to_string(),
                });
            }
            if let Ok(mut p) = self.procs.lock() {
                p.paused = true;
            }
            Ok(())
        })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let pgid = self.main_pgid().ok_or_else(|| BackendError::Fault {
                op: "resume".into(),
                node: self.name.clone(),
                message: "the node is not running".into(),
            })?;
            signal_group(pgid, libc::SIGCONT);
            if let Ok(mut p) = self.procs.lock() {
                p.paused = false;
            }
            Ok(())
        })
    }

    fn drop_connections(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            if self.kind != BrokerKind::Rabbitmq {
                return Err(BackendError::Unsupported {
                    backend: "process",
                    what: format!("drop_connections on {}", self.kind),
                });
            }
            self.rabbitmqctl(
                &["close_all_connections", "amqp1-rig fault: drop_connections"],
                Duration::from_secs(20),
            )
            .await
            .map(|_| ())
            .map_err(|message| BackendError::Fault {
                op: "drop_connections".into(),
                node: self.name.clone(),
                message,
            })
        })
    }

    fn counters(&self) -> Option<serde_json::Value> {
        None
    }

    fn logs(&self) -> String {
        self.read_logs()
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.stop_main().await;
            self.kill_now();
        })
    }
}

impl Drop for ProcessNode {
    fn drop(&mut self) {
        self.kill_now();
        let dir = match self.dir.lock() {
            Ok(mut d) => d.take(),
            Err(p) => p.into_inner().take(),
        };
        unregister_dir(&self.layout.dir);
        if let Some(dir) = dir {
            if std::env::var_os("HARNESS_KEEP_BROKER_DIRS").is_some() {
                let kept = dir.keep();
                eprintln!("kept broker directory {}", kept.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_of(s: &str) -> BrokerSpec {
        BrokerSpec::new(
            crate::brokers::BrokerChoice::parse(s).expect("choice"),
            "templates",
        )
    }

    #[test]
    fn missing_binary_is_reported_by_name() {
        let b = ProcessBackend::new();
        // qpidd and qdrouterd are not packaged here; when they are, this just checks the Ok path.
        if let Err(e) = b.available(&spec_of("qpidd")) {
            assert_eq!(e, "qpidd not found on PATH");
        }
        let err = b
            .locate(
                BrokerKind::Qdrouterd,
                Some(Path::new("/nonexistent/qdrouterd")),
            )
            .expect_err("not executable");
        assert!(err.contains("/nonexistent/qdrouterd"), "{err}");
        assert!(b.available(&spec_of("artemis")).is_err());
    }
}
