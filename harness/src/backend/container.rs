//! Container backend: runs brokers in docker containers built from `templates/images/`.
//!
//! Each broker node is one container, started from a local image:
//!
//! | broker | default image | built by |
//! | --- | --- | --- |
//! | `embedded` (any flavour) | `amqp1-rig/embedded-broker:latest` | `ci/images/build-offline.sh` (no registry) |
//! | `rabbitmq` 3.10 (default) | `amqp1-rig/rabbitmq:3.10` | `ci/images/build-offline.sh` (no registry) |
//! | `rabbitmq` 3.13 / 4.x | `amqp1-rig/rabbitmq:<version>` | `templates/images/rabbitmq-official.Dockerfile.tera` |
//! | `qpidd` | `amqp1-rig/qpidd:<distribution>` | `templates/images/qpidd-*.Dockerfile.tera` |
//! | `qdrouterd` | `amqp1-rig/qdrouterd:1.19.0` | `templates/images/qdrouterd-source.Dockerfile.tera` |
//! | `artemis` | `amqp1-rig/artemis:<version>` | `templates/images/artemis.Dockerfile.tera` |
//!
//! A scenario's `image:` (or `--image`) names any other local image. The backend never pulls: a missing
//! image is reported with the command that builds it ([`render_image`] renders the Dockerfiles).
//!
//! The containers are driven through the `docker` CLI, which negotiates the Docker API version with the
//! daemon. (testcontainers 0.28 pins Docker API 1.53 through bollard 0.21, which Docker Engine 20.10, the
//! engine of Debian 12, refuses with "client version 1.53 is too new"; the CLI works with both.)
//!
//! Every node:
//! - publishes its AMQP port on `127.0.0.1` only (a fresh [`free_port`] on the host); the embedded-broker
//!   image, whose broker binds 127.0.0.1 itself, shares the host's network and listens on that port;
//! - is ready when an AMQP Open succeeds ([`wait_ready`]), never after a fixed sleep;
//! - gets the broker configuration rendered from `templates/<kind>/` (the process backend's templates)
//!   copied into the directory its image names in the label `amqp1-rig.config-dir` (`docker create`,
//!   `docker cp`, `docker start`);
//! - streams its stdout/stderr into a buffer that [`BrokerNode::logs`] returns (and the report shows);
//! - supports `kill` (`docker kill`), `restart` (`docker start` on the same host port), `pause`/`resume`
//!   (`docker pause`/`docker unpause`); `drop_connections` is not supported;
//! - carries the labels `amqp1-rig=1` and `amqp1-rig.owner-pid=<pid of the harness>`, and is removed on
//!   [`BrokerNode::stop`], on drop (panics included), by [`remove_live_containers`] (call it from a Ctrl-C
//!   handler) and, for containers whose harness process died, by [`reap_orphans`] on the next start.
//!
//! No docker networks are created: containers use the default bridge and are reached through their
//! published 127.0.0.1 ports.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{
    free_port, log_tail, Backend, BackendError, BoxFuture, BrokerHandle, BrokerKind, BrokerNode,
    BrokerSpec,
};
use crate::brokers::Version;

/// Label put on every container the harness starts (and on the images it builds).
pub const LABEL: &str = "amqp1-rig";
/// Label holding the pid of the harness process that owns a container.
pub const OWNER_LABEL: &str = "amqp1-rig.owner-pid";
/// The offline base image (debootstrap + `docker import`).
pub const BASE_IMAGE: &str = "amqp1-rig/debian:bookworm";
/// The offline RabbitMQ 3.10 image (Debian's `rabbitmq-server`).
pub const RABBITMQ_OFFLINE_IMAGE: &str = "amqp1-rig/rabbitmq:3.10";
/// The offline image running the harness's embedded broker.
pub const EMBEDDED_IMAGE: &str = "amqp1-rig/embedded-broker:latest";
/// The script that builds the offline images.
pub const OFFLINE_BUILD_SCRIPT: &str = "ci/images/build-offline.sh";
/// The port the broker listens on inside every image.
pub const CONTAINER_AMQP_PORT: u16 = 5672;
/// Default readiness timeout (RabbitMQ boots in ~10 s on an idle 2-core machine).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);

const NO_DAEMON_HINT: &str =
    "set DOCKER_HOST to a running Docker-compatible daemon, or use --backend process / --backend embedded";

// ---------------------------------------------------------------------------------------------------
// Image templates
// ---------------------------------------------------------------------------------------------------

/// One Dockerfile template under `templates/images/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageTemplate {
    /// Short name (`qpidd-centos7`), also the default tag suffix.
    pub name: &'static str,
    /// Template path relative to the templates root.
    pub template: &'static str,
    /// The broker the image runs.
    pub broker: BrokerKind,
    /// Default broker version.
    pub version: &'static str,
    /// Default base image (`FROM`), without a registry host.
    pub base_image: &'static str,
    /// Default local image name the backend uses.
    pub image: &'static str,
    /// Whether it builds without a container registry (on the offline base image).
    pub offline: bool,
    /// Files from `templates/images/files/` the build context needs.
    pub files: &'static [&'static str],
    /// Variables the caller must supply (download mirrors are never hard-coded), with what they mean.
    pub required_vars: &'static [(&'static str, &'static str)],
}

/// Every image template, offline ones first.
pub const IMAGE_TEMPLATES: &[ImageTemplate] = &[
    ImageTemplate {
        name: "debian-rabbitmq",
        template: "images/debian-rabbitmq.Dockerfile.tera",
        broker: BrokerKind::Rabbitmq,
        version: "3.10",
        base_image: BASE_IMAGE,
        image: RABBITMQ_OFFLINE_IMAGE,
        offline: true,
        files: &["rabbitmq-entrypoint.sh"],
        required_vars: &[],
    },
    ImageTemplate {
        name: "embedded",
        template: "images/embedded.Dockerfile.tera",
        broker: BrokerKind::Embedded,
        version: "local",
        base_image: BASE_IMAGE,
        image: EMBEDDED_IMAGE,
        offline: true,
        files: &[],
        required_vars: &[],
    },
    ImageTemplate {
        name: "qpidd-ubuntu-focal",
        template: "images/qpidd-ubuntu-focal.Dockerfile.tera",
        broker: BrokerKind::Qpidd,
        version: "1.39.0",
        base_image: "ubuntu:20.04",
        image: "amqp1-rig/qpidd:ubuntu-focal",
        offline: false,
        files: &["qpidd-entrypoint.sh"],
        required_vars: &[],
    },
    ImageTemplate {
        name: "qpidd-centos7",
        template: "images/qpidd-centos7.Dockerfile.tera",
        broker: BrokerKind::Qpidd,
        version: "1.39.0",
        base_image: "centos:7",
        image: "amqp1-rig/qpidd:centos7",
        offline: false,
        files: &["qpidd-entrypoint.sh"],
        required_vars: &[
            (
                "centos_vault_mirror",
                "base URL of a CentOS vault mirror (…/centos)",
            ),
            (
                "epel_archive_mirror",
                "base URL of an EPEL archive mirror (…/epel)",
            ),
        ],
    },
    ImageTemplate {
        name: "qpidd-opensuse-leap15",
        template: "images/qpidd-opensuse-leap15.Dockerfile.tera",
        broker: BrokerKind::Qpidd,
        version: "1.37.0",
        base_image: "opensuse/leap:15.6",
        image: "amqp1-rig/qpidd:opensuse-leap15",
        offline: false,
        files: &["qpidd-entrypoint.sh"],
        required_vars: &[],
    },
    ImageTemplate {
        name: "qpidd-source-debian",
        template: "images/qpidd-source-debian.Dockerfile.tera",
        broker: BrokerKind::Qpidd,
        version: "1.39.0",
        base_image: "debian:bookworm",
        image: "amqp1-rig/qpidd:source-1.39.0",
        offline: false,
        files: &["qpidd-entrypoint.sh"],
        required_vars: &[(
            "apache_archive",
            "base URL of the Apache release archive (…/dist)",
        )],
    },
    ImageTemplate {
        name: "qdrouterd-source",
        template: "images/qdrouterd-source.Dockerfile.tera",
        broker: BrokerKind::Qdrouterd,
        version: "1.19.0",
        base_image: "debian:bookworm",
        image: "amqp1-rig/qdrouterd:1.19.0",
        offline: false,
        files: &["qdrouterd-entrypoint.sh"],
        required_vars: &[(
            "apache_archive",
            "base URL of the Apache release archive (…/dist)",
        )],
    },
    ImageTemplate {
        name: "rabbitmq-3.13",
        template: "images/rabbitmq-official.Dockerfile.tera",
        broker: BrokerKind::Rabbitmq,
        version: "3.13",
        base_image: "rabbitmq:3.13-management",
        image: "amqp1-rig/rabbitmq:3.13",
        offline: false,
        files: &[],
        required_vars: &[],
    },
    ImageTemplate {
        name: "rabbitmq-4",
        template: "images/rabbitmq-official.Dockerfile.tera",
        broker: BrokerKind::Rabbitmq,
        version: "4.2",
        base_image: "rabbitmq:4.2-management",
        image: "amqp1-rig/rabbitmq:4.2",
        offline: false,
        files: &[],
        required_vars: &[],
    },
    ImageTemplate {
        name: "artemis",
        template: "images/artemis.Dockerfile.tera",
        broker: BrokerKind::Artemis,
        version: "2.37.0",
        base_image: "apache/activemq-artemis:2.37.0-alpine",
        image: "amqp1-rig/artemis:2.37.0",
        offline: false,
        files: &[],
        required_vars: &[],
    },
];

/// The image template called `name`.
pub fn image_template(name: &str) -> Option<&'static ImageTemplate> {
    IMAGE_TEMPLATES.iter().find(|t| t.name == name)
}

/// The tera context of an image template: its defaults, overridden by `vars`
/// (`version`, `base_image`, `image_name`, `amqp_port`, `ppa`, mirrors...).
pub fn image_context(t: &ImageTemplate, vars: &BTreeMap<String, String>) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("version", t.version);
    ctx.insert("base_image", t.base_image);
    ctx.insert("image_name", t.image);
    ctx.insert("amqp_port", &CONTAINER_AMQP_PORT);
    ctx.insert("ppa", "qpid/released");
    for (k, v) in vars {
        ctx.insert(k.as_str(), v);
    }
    ctx
}

/// Renders the Dockerfile of image template `name` with `vars` over its defaults.
///
/// A missing required variable (a download mirror) is reported by name with what it means.
pub fn render_image(
    templates_dir: &Path,
    name: &str,
    vars: &BTreeMap<String, String>,
) -> Result<String, BackendError> {
    let t = image_template(name).ok_or_else(|| BackendError::Start {
        message: format!(
            "no image template '{name}' (available: {})",
            IMAGE_TEMPLATES
                .iter()
                .map(|t| t.name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        log_tail: String::new(),
    })?;
    let missing: Vec<String> = t
        .required_vars
        .iter()
        .filter(|(k, _)| !vars.contains_key(*k))
        .map(|(k, what)| format!("{k} ({what})"))
        .collect();
    if !missing.is_empty() {
        return Err(BackendError::Start {
            message: format!(
                "image template '{name}' needs these variables: {}",
                missing.join(", ")
            ),
            log_tail: String::new(),
        });
    }
    Ok(crate::templates::render(
        templates_dir,
        t.template,
        &image_context(t, vars),
    )?)
}

// ---------------------------------------------------------------------------------------------------
// docker CLI helpers
// ---------------------------------------------------------------------------------------------------

/// Why docker cannot be used, as one line with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerUnavailable(pub String);

impl fmt::Display for DockerUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn docker_bin() -> String {
    std::env::var("AMQP1_RIG_DOCKER").unwrap_or_else(|_| "docker".to_string())
}

/// Checks that a Docker-compatible daemon answers (blocking; `docker version`).
pub fn docker_available() -> Result<String, DockerUnavailable> {
    let out = std::process::Command::new(docker_bin())
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdin(Stdio::null())
        .output();
    match out {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DockerUnavailable(format!(
            "no docker CLI on PATH: install one and {NO_DAEMON_HINT}"
        ))),
        Err(e) => Err(DockerUnavailable(format!(
            "cannot run docker ({e}): {NO_DAEMON_HINT}"
        ))),
        Ok(o) if o.status.success() => Ok(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        Ok(_) => {
            let host = std::env::var("DOCKER_HOST")
                .map(|h| format!(" at DOCKER_HOST={h}"))
                .unwrap_or_default();
            Err(DockerUnavailable(format!(
                "no Docker-compatible daemon answers{host}: {NO_DAEMON_HINT}"
            )))
        }
    }
}

/// Whether `image` exists locally (blocking).
pub fn image_exists(image: &str) -> bool {
    std::process::Command::new(docker_bin())
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

async fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new(docker_bin())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if err.is_empty() {
            format!("docker {} exited with {}", args.join(" "), out.status)
        } else {
            err
        })
    }
}

fn docker_rm_blocking(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let _ = std::process::Command::new(docker_bin())
        .args(["rm", "-f", "-v"])
        .args(ids)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Containers started by this process and not removed yet.
static LIVE: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

fn live() -> std::sync::MutexGuard<'static, BTreeSet<String>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every container this process started and has not removed yet (blocking).
///
/// Call it from the Ctrl-C handler before exiting; drops and [`BrokerNode::stop`] handle the other paths.
/// Returns how many containers were removed.
pub fn remove_live_containers() -> usize {
    let ids: Vec<String> = std::mem::take(&mut *live()).into_iter().collect();
    docker_rm_blocking(&ids);
    ids.len()
}

/// Spawns a task that, on SIGINT (Ctrl-C) or SIGTERM, removes every container of this process
/// ([`remove_live_containers`]), kills every process-backend broker (`process::kill_all`) and exits with
/// status 130. Call it once inside the tokio runtime, instead of `process::spawn_interrupt_guard` (it does
/// both, so the two cleanups do not race to `exit`).
pub fn spawn_interrupt_guard() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        let procs = super::process::kill_all();
        let containers = tokio::task::spawn_blocking(remove_live_containers)
            .await
            .unwrap_or(0);
        eprintln!(
            "interrupted: removed {containers} container(s), killed {procs} broker process group(s)"
        );
        std::process::exit(130);
    })
}

/// Removes containers labelled `amqp1-rig=1` whose owning harness process no longer exists (left behind by
/// a `kill -9`). With `all`, removes every `amqp1-rig` container regardless of owner. Returns how many
/// were removed. Blocking.
pub fn reap_orphans(all: bool) -> Result<usize, DockerUnavailable> {
    let out = std::process::Command::new(docker_bin())
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("label={LABEL}=1"),
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{OWNER_LABEL}\"}}}}"),
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| DockerUnavailable(format!("cannot run docker ({e}): {NO_DAEMON_HINT}")))?;
    if !out.status.success() {
        return Err(DockerUnavailable(format!(
            "no Docker-compatible daemon answers: {NO_DAEMON_HINT}"
        )));
    }
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(id), owner) = (parts.next(), parts.next()) else {
            continue;
        };
        let orphan = all
            || match owner.and_then(|o| o.parse::<i32>().ok()) {
                Some(pid) => !process_alive(pid),
                None => true,
            };
        if orphan {
            ids.push(id.to_string());
        }
    }
    docker_rm_blocking(&ids);
    Ok(ids.len())
}

fn process_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

// ---------------------------------------------------------------------------------------------------
// Backend
// ---------------------------------------------------------------------------------------------------

/// The container backend.
#[derive(Debug, Clone)]
pub struct ContainerBackend {
    /// How long a node may take to accept an AMQP Open.
    pub ready_timeout: Duration,
}

impl Default for ContainerBackend {
    fn default() -> Self {
        ContainerBackend {
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// Which local image runs `spec`, and how to build it if it is missing.
pub fn image_for(spec: &BrokerSpec) -> (String, String) {
    let from_template = |t: &ImageTemplate| {
        if t.offline {
            format!("build it with {OFFLINE_BUILD_SCRIPT} (needs no registry)")
        } else {
            format!(
                "needs a registry: ci/images/build-registry.sh {} (templates/{})",
                t.name, t.template
            )
        }
    };
    if let Some(image) = &spec.image {
        return (
            image.clone(),
            "it is the image named by the scenario or --image".to_string(),
        );
    }
    let version = spec.version().map(ToString::to_string).unwrap_or_default();
    let t = match spec.kind() {
        BrokerKind::Embedded => image_template("embedded"),
        BrokerKind::Rabbitmq => {
            if version.starts_with("3.13") {
                image_template("rabbitmq-3.13")
            } else if version.starts_with('4') {
                image_template("rabbitmq-4")
            } else {
                image_template("debian-rabbitmq")
            }
        }
        BrokerKind::Qpidd => {
            let distro = spec.distro().unwrap_or("ubuntu-focal");
            image_template(&format!("qpidd-{distro}"))
                .or_else(|| image_template("qpidd-ubuntu-focal"))
        }
        BrokerKind::Qdrouterd => image_template("qdrouterd-source"),
        BrokerKind::Artemis => image_template("artemis"),
    };
    match t {
        Some(t) => {
            let image = if !version.is_empty()
                && !t.offline
                && matches!(t.broker, BrokerKind::Rabbitmq | BrokerKind::Artemis)
            {
                format!("amqp1-rig/{}:{version}", t.broker)
            } else {
                t.image.to_string()
            };
            (image, from_template(t))
        }
        None => (
            format!("amqp1-rig/{}", spec.kind()),
            "no template builds it".to_string(),
        ),
    }
}

impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }

    fn detect_version(&self, spec: &BrokerSpec) -> Option<Version> {
        let (image, _) = image_for(spec);
        image
            .rsplit_once(':')
            .and_then(|(_, tag)| Version::parse(tag))
            .filter(|_| spec.kind() != BrokerKind::Embedded)
    }

    fn available(&self, spec: &BrokerSpec) -> Result<(), String> {
        docker_available().map_err(|e| e.0)?;
        let (image, how) = image_for(spec);
        if image_exists(&image) {
            Ok(())
        } else {
            Err(format!("image {image} is not present locally: {how}"))
        }
    }

    fn start<'a>(
        &'a self,
        spec: &'a BrokerSpec,
    ) -> BoxFuture<'a, Result<BrokerHandle, BackendError>> {
        Box::pin(async move {
            let unavailable = |reason: String| BackendError::Unavailable {
                backend: "container",
                kind: spec.label(),
                reason,
            };
            // the checks run the docker CLI synchronously: keep them off the async workers
            let (image, how) = image_for(spec);
            let probe = image.clone();
            let checked = tokio::task::spawn_blocking(move || {
                docker_available()?;
                let _ = reap_orphans(false);
                Ok::<bool, DockerUnavailable>(image_exists(&probe))
            })
            .await
            .map_err(|e| unavailable(format!("docker check failed: {e}")))?;
            let exists = checked.map_err(|e| unavailable(e.0))?;
            if !exists {
                return Err(unavailable(format!(
                    "image {image} is not present locally and will not be pulled: {how}"
                )));
            }
            if spec.tls {
                return Err(BackendError::Unsupported {
                    backend: "container",
                    what: "TLS brokers (use --backend embedded for amqps)".to_string(),
                });
            }
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut nodes: Vec<Box<dyn BrokerNode>> = Vec::new();
            for i in 0..spec.nodes.max(1) {
                let node =
                    ContainerNode::start(spec, &image, &run[..8], i, self.ready_timeout).await?;
                nodes.push(Box::new(node));
            }
            Ok(BrokerHandle { nodes })
        })
    }
}

/// Environment variables that configure `kind`'s image (user, flavour).
fn container_env(spec: &BrokerSpec) -> Vec<(String, String)> {
    let mut env = Vec::new();
    let user = spec.users.first();
    match spec.kind() {
        BrokerKind::Embedded => {
            env.push((
                "FLAVOUR".to_string(),
                spec.flavour().unwrap_or_default().to_string(),
            ));
            let args: Vec<String> = spec
                .users
                .iter()
                .map(|u| format!("--user {}:{}", u.name, u.password.expose()))
                .collect();
            env.push(("BROKER_ARGS".to_string(), args.join(" ")));
        }
        BrokerKind::Rabbitmq => {
            if let Some(u) = user {
                // offline image and official image
                env.push(("RABBITMQ_USER".to_string(), u.name.clone()));
                env.push(("RABBITMQ_PASS".to_string(), u.password.expose().to_string()));
                env.push(("RABBITMQ_DEFAULT_USER".to_string(), u.name.clone()));
                env.push((
                    "RABBITMQ_DEFAULT_PASS".to_string(),
                    u.password.expose().to_string(),
                ));
            }
        }
        BrokerKind::Qpidd => {
            if let Some(u) = user {
                env.push(("QPIDD_USER".to_string(), u.name.clone()));
                env.push((
                    "QPIDD_PASSWORD".to_string(),
                    u.password.expose().to_string(),
                ));
            }
        }
        BrokerKind::Qdrouterd => {
            if let Some(u) = user {
                env.push(("QDROUTERD_USER".to_string(), u.name.clone()));
                env.push((
                    "QDROUTERD_PASSWORD".to_string(),
                    u.password.expose().to_string(),
                ));
            }
        }
        BrokerKind::Artemis => {
            if let Some(u) = user {
                env.push(("ARTEMIS_USER".to_string(), u.name.clone()));
                env.push((
                    "ARTEMIS_PASSWORD".to_string(),
                    u.password.expose().to_string(),
                ));
            }
        }
    }
    env
}

/// One broker node running in a container.
pub struct ContainerNode {
    name: String,
    id: String,
    image: String,
    product: String,
    port: u16,
    user: Option<super::User>,
    ready_timeout: Duration,
    logs: Arc<Mutex<String>>,
    followers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    removed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for ContainerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerNode")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("image", &self.image)
            .finish()
    }
}

impl ContainerNode {
    async fn start(
        spec: &BrokerSpec,
        image: &str,
        run: &str,
        index: usize,
        ready_timeout: Duration,
    ) -> Result<ContainerNode, BackendError> {
        let name = format!("node{index}");
        let port = free_port()?;
        // Credentials go through an env file (mode 0600), not the docker command line.
        let env_dir = tempfile::tempdir()?;
        let env_file: PathBuf = env_dir.path().join("env");
        let mut env = container_env(spec);
        if spec.kind() == BrokerKind::Embedded {
            env.push(("PORT".to_string(), port.to_string()));
        }
        let env_text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        write_private(&env_file, &env_text)?;
        let container_name = format!("amqp1-rig-{run}-{name}");
        // The embedded broker binds 127.0.0.1 only, so its container shares the host's network and
        // listens on the host's loopback; every other image publishes 5672 on 127.0.0.1 of the host.
        let host_network = spec.kind() == BrokerKind::Embedded;
        let (net_flag, net_value) = if host_network {
            ("--network", "host".to_string())
        } else {
            ("-p", format!("127.0.0.1:{port}:{CONTAINER_AMQP_PORT}"))
        };
        let owner = format!("{OWNER_LABEL}={}", std::process::id());
        let kind_label = format!("{LABEL}.broker={}", spec.kind());
        let env_arg = env_file.display().to_string();
        let label = format!("{LABEL}=1");
        let args = [
            "create",
            "--name",
            &container_name,
            "--label",
            &label,
            "--label",
            &owner,
            "--label",
            &kind_label,
            net_flag,
            &net_value,
            "--env-file",
            &env_arg,
            image,
        ];
        let id = docker(&args).await.map_err(|e| BackendError::Start {
            message: format!("docker create {image}: {e}"),
            log_tail: String::new(),
        })?;
        live().insert(id.clone());
        // docker read the env file at `create`; it is not needed any more
        drop(env_dir);
        // the broker configuration rendered from templates/<kind>/, if the image says where it goes
        let fail = |message: String| {
            docker_rm_blocking(std::slice::from_ref(&id));
            live().remove(&id);
            BackendError::Start {
                message,
                log_tail: String::new(),
            }
        };
        if let Some(dir) = config_dir(image).await {
            let files = match render_container_config(spec, index, &dir) {
                Ok(f) => f,
                Err(e) => {
                    docker_rm_blocking(std::slice::from_ref(&id));
                    live().remove(&id);
                    return Err(e);
                }
            };
            if !files.is_empty() {
                let staging = tempfile::tempdir()?;
                for f in &files {
                    let path = staging.path().join(&f.path);
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    write_private(&path, &f.contents)?;
                }
                let src = format!("{}/.", staging.path().display());
                let dst = format!("{id}:{dir}");
                docker(&["cp", &src, &dst])
                    .await
                    .map_err(|e| fail(format!("docker cp of the rendered configuration: {e}")))?;
            }
        }
        docker(&["start", &id])
            .await
            .map_err(|e| fail(format!("docker start {image}: {e}")))?;
        let product = match spec.kind() {
            BrokerKind::Embedded => format!(
                "embedded {} (container)",
                spec.flavour().unwrap_or_default()
            ),
            other => other.to_string(),
        };
        let node = ContainerNode {
            name,
            id,
            image: image.to_string(),
            product,
            port,
            user: spec.users.first().cloned(),
            ready_timeout,
            logs: Arc::new(Mutex::new(String::new())),
            followers: Mutex::new(Vec::new()),
            removed: std::sync::atomic::AtomicBool::new(false),
        };
        node.follow_logs(None);
        node.wait_ready().await?;
        Ok(node)
    }

    /// The docker container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    fn follow_logs(&self, since: Option<String>) {
        let mut args = vec!["logs".to_string(), "-f".to_string()];
        if let Some(s) = since {
            args.push("--since".to_string());
            args.push(s);
        }
        args.push(self.id.clone());
        let child = Command::new(docker_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let Ok(mut child) = child else { return };
        let buf = self.logs.clone();
        let out = child.stdout.take();
        let err = child.stderr.take();
        let handle = tokio::spawn(async move {
            let a = async {
                if let Some(o) = out {
                    pump(o, &buf).await;
                }
            };
            let b = async {
                if let Some(e) = err {
                    pump(e, &buf).await;
                }
            };
            futures::join!(a, b);
            let _ = child.wait().await;
        });
        self.followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    async fn wait_ready(&self) -> Result<(), BackendError> {
        let probe = super::Probe::local(self.port, self.user.as_ref());
        match super::wait_ready(&probe, self.ready_timeout).await {
            Ok(()) => Ok(()),
            Err(reason) => {
                let state = docker(&["inspect", "--format", "{{.State.Status}}", &self.id])
                    .await
                    .unwrap_or_else(|e| e);
                let logs = docker_logs_now(&self.id).await;
                Err(BackendError::NotReady {
                    url: format!("amqp://127.0.0.1:{}", self.port),
                    reason: format!("{reason} (container {state})"),
                    log_tail: log_tail(&logs, 20),
                })
            }
        }
    }

    fn fault(&self, op: &str, message: String) -> BackendError {
        BackendError::Fault {
            op: op.to_string(),
            node: self.name.clone(),
            message,
        }
    }

    fn remove_blocking(&self) {
        if !self.removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            docker_rm_blocking(std::slice::from_ref(&self.id));
            live().remove(&self.id);
        }
    }
}

/// The directory where `image` expects the rendered broker configuration (its `amqp1-rig.config-dir`
/// label), if any.
async fn config_dir(image: &str) -> Option<String> {
    let fmt = format!("{{{{ index .Config.Labels \"{LABEL}.config-dir\" }}}}");
    let dir = docker(&["image", "inspect", "--format", &fmt, image])
        .await
        .ok()?;
    let dir = dir.trim();
    (dir.starts_with('/') && dir != "<no value>").then(|| dir.to_string())
}

/// Renders `templates/<kind>/` (the process backend's broker configuration) for a container node whose
/// image reads it from `dir`; the image's entrypoint adapts listeners and logging to the container.
pub fn render_container_config(
    spec: &BrokerSpec,
    index: usize,
    dir: &str,
) -> Result<Vec<super::process::RenderedFile>, BackendError> {
    let layout = super::process::NodeLayout {
        index,
        dir: PathBuf::from(dir),
        port: CONTAINER_AMQP_PORT,
        dist_port: 25672,
        epmd_port: 4369,
        node_name: format!("rabbit@node{index}"),
    };
    super::process::render_files(spec, &layout)
}

async fn docker_logs_now(id: &str) -> String {
    match Command::new(docker_bin())
        .args(["logs", id])
        .stdin(Stdio::null())
        .output()
        .await
    {
        Ok(o) => {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        }
        Err(_) => String::new(),
    }
}

async fn pump(r: impl AsyncRead + Unpin, buf: &Mutex<String>) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
        // keep memory bounded: drop the oldest half past 4 MiB
        if b.len() > 4 << 20 {
            let cut = b.len() / 2;
            let cut = b[cut..].find('\n').map(|i| cut + i + 1).unwrap_or(cut);
            b.drain(..cut);
        }
        b.push_str(&line);
        b.push('\n');
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

fn rfc3339_now() -> String {
    // docker accepts a Unix timestamp with fractional seconds for --since
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

impl BrokerNode for ContainerNode {
    fn name(&self) -> &str {
        &self.name
    }

    fn port(&self) -> u16 {
        self.port
    }

    fn product(&self) -> String {
        self.product.clone()
    }

    fn kill(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            match docker(&["kill", &self.id]).await {
                Ok(_) => Ok(()),
                // idempotent: killing a stopped container is fine
                Err(e) if e.contains("is not running") => Ok(()),
                Err(e) => Err(self.fault("kill", e)),
            }
        })
    }

    fn restart(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.kill().await?;
            let since = rfc3339_now();
            docker(&["start", &self.id])
                .await
                .map_err(|e| self.fault("restart", e))?;
            self.follow_logs(Some(since));
            self.wait_ready().await
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            docker(&["pause", &self.id])
                .await
                .map(|_| ())
                .map_err(|e| self.fault("pause", e))
        })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            docker(&["unpause", &self.id])
                .await
                .map(|_| ())
                .map_err(|e| self.fault("resume", e))
        })
    }

    fn drop_connections(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unsupported {
                backend: "container",
                what: "drop_connections (use kill + restart)".to_string(),
            })
        })
    }

    fn counters(&self) -> Option<serde_json::Value> {
        None
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if !self.removed.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let _ = docker(&["rm", "-f", "-v", &self.id]).await;
                live().remove(&self.id);
            }
            for h in self
                .followers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..)
            {
                h.abort();
            }
        })
    }
}

impl Drop for ContainerNode {
    fn drop(&mut self) {
        self.remove_blocking();
        for h in self
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::BrokerChoice;

    #[test]
    fn every_template_is_listed_once() {
        let mut names: Vec<&str> = IMAGE_TEMPLATES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), IMAGE_TEMPLATES.len());
    }

    #[test]
    fn image_choice_follows_kind_and_version() {
        let spec = |s: &str| BrokerSpec::new(BrokerChoice::parse(s).expect("choice"), "templates");
        assert_eq!(image_for(&spec("rabbitmq")).0, RABBITMQ_OFFLINE_IMAGE);
        assert_eq!(image_for(&spec("rabbitmq:4.1")).0, "amqp1-rig/rabbitmq:4.1");
        assert_eq!(
            image_for(&spec("rabbitmq:3.13")).0,
            "amqp1-rig/rabbitmq:3.13"
        );
        let mut s = spec("rabbitmq:3.13");
        s.image = Some("my/rabbit:x".into());
        assert_eq!(image_for(&s).0, "my/rabbit:x");
        let (image, how) = image_for(&spec("embedded"));
        assert_eq!(image, EMBEDDED_IMAGE);
        assert!(how.contains(OFFLINE_BUILD_SCRIPT), "{how}");
        assert_eq!(
            image_for(&spec("qpidd:centos7")).0,
            "amqp1-rig/qpidd:centos7"
        );
    }

    #[test]
    fn env_carries_users_and_flavour() {
        let mut spec = BrokerSpec::new(BrokerChoice::parse("router").expect("choice"), "templates");
        spec.users.push(super::super::User {
            name: "u".into(),
            password: "p w".into(),
        });
        let env = container_env(&spec);
        assert!(env.contains(&("FLAVOUR".into(), "router".into())));
        assert!(env.contains(&("BROKER_ARGS".into(), "--user u:p w".into())));
    }
}
