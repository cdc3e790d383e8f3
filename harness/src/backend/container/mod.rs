//! Container backend: runs brokers in containers through testcontainers (async API, bollard underneath).
//!
//! Each broker node is one container, started from a local image:
//!
//! | broker | default image | built by |
//! | --- | --- | --- |
//! | `embedded` (any flavour) | `amqp1-rig/embedded-broker:latest` | `ci/images/build-offline.sh embedded` (no registry) |
//! | `rabbitmq` 3.10 (default) | `amqp1-rig/rabbitmq:3.10` | `ci/images/build-offline.sh` (no registry) |
//! | `rabbitmq` 4.0.5 / 4.3.6 (`rabbitmq:4.0`, `rabbitmq:4.3`) | `amqp1-rig/rabbitmq:<version>` | `ci/images/build-offline.sh rabbitmq4` (no registry) |
//! | `rabbitmq` 3.13 / other 4.x | `amqp1-rig/rabbitmq:<version>` | `templates/images/rabbitmq-official.Dockerfile.tera` |
//! | `qpidd` | `amqp1-rig/qpidd:<distribution>` | `templates/images/qpidd-*.Dockerfile.tera` |
//! | `qdrouterd` | `amqp1-rig/qdrouterd:1.19.0` | `templates/images/qdrouterd-source.Dockerfile.tera` |
//! | `artemis` | `amqp1-rig/artemis:<version>` | `templates/images/artemis.Dockerfile.tera` |
//!
//! A scenario's `image:` (or `--image`) names any other local image. The backend never pulls: a missing
//! image is reported with what builds it ([`image_for`]; [`render_image`] renders the Dockerfiles).
//! [`Backend::available`] checks the image [`image_for`] picks for the spec (flavour, version, `image:`).
//!
//! Every node ([`node::ContainerNode`]):
//! - is created and started by testcontainers (`GenericImage` + `AsyncRunner::start`, no wait strategy of
//!   its own) and publishes its AMQP port on `127.0.0.1` only (a fresh [`super::free_port`] on the host); the
//!   embedded-broker image, whose broker binds 127.0.0.1 itself, shares the host's network;
//! - gets the broker configuration rendered from `templates/<kind>/` by [`super::config`] (the same
//!   rendering as the process backend, with [`super::config::Placement::Container`]: listeners on 0.0.0.0 inside the
//!   container, logs on its output), copied in before it starts, into the directory its image names in
//!   the label `amqp1-rig.config-dir`; every scenario user is in it (RabbitMQ `definitions.json`; qpidd
//!   and qdrouterd `sasl-users`, which their entrypoints turn into a SASL database);
//! - is ready when an AMQP Open succeeds ([`super::wait_ready`]), never after a fixed sleep; a container
//!   that exits meanwhile is reported at once with its log;
//! - streams its stdout/stderr into a buffer that [`BrokerNode::logs`] returns (and the report shows);
//! - supports `kill` (bollard), `restart` (start again on the same host port), `pause`/`resume`
//!   (testcontainers' pause/unpause); `drop_connections` is not supported;
//! - stops with a short timeout ([`STOP_TIMEOUT_SECS`]; the images stop on their STOPSIGNAL in well under
//!   that) and is removed on [`BrokerNode::stop`], on drop (errors and panics), on Ctrl-C and SIGTERM
//!   ([`super::cleanup::spawn_interrupt_guard`]), and, when its harness process died, by
//!   [`reap_orphans`] on the next start (labels `amqp1-rig=1`, `amqp1-rig.owner-pid=<pid>`).
//!
//! No `docker` CLI runs at run time ([`docker`] holds the daemon checks, on bollard 0.21.x).

pub mod docker;
pub mod images;
pub mod node;

use std::time::Duration;

use super::config::{NodeLayout, RenderedFile};
use super::{Backend, BackendError, BoxFuture, BrokerHandle, BrokerKind, BrokerNode, BrokerSpec};
use crate::brokers::Version;

pub use super::cleanup::{remove_live_containers, spawn_interrupt_guard};
pub use super::config::CONTAINER_AMQP_PORT;
pub use docker::{
    docker_available, image_exists, reap_orphans, DockerUnavailable, ImageFacts, BOLLARD_LINE,
};
pub use images::{image_context, image_template, render_image, ImageTemplate, IMAGE_TEMPLATES};
pub use node::ContainerNode;

/// Label put on every container the harness starts (and on the images it builds).
pub const LABEL: &str = "amqp1-rig";
/// Label holding the pid of the harness process that owns a container.
pub const OWNER_LABEL: &str = "amqp1-rig.owner-pid";
/// Image label naming the directory the rendered broker configuration goes to.
pub const CONFIG_DIR_LABEL: &str = "amqp1-rig.config-dir";
/// Image labels holding the broker version the image really contains (build-offline.sh sets both).
pub const VERSION_LABELS: [&str; 2] = ["org.amqp1-rig.version", "amqp1-rig.version"];
/// The offline base image (debootstrap + `docker import`).
pub const BASE_IMAGE: &str = "amqp1-rig/debian:bookworm";
/// The offline RabbitMQ 3.10 image (Debian's `rabbitmq-server`).
pub const RABBITMQ_OFFLINE_IMAGE: &str = "amqp1-rig/rabbitmq:3.10";
/// The offline image running the harness's embedded broker.
pub const EMBEDDED_IMAGE: &str = "amqp1-rig/embedded-broker:latest";
/// The script that builds the offline images.
pub const OFFLINE_BUILD_SCRIPT: &str = "ci/images/build-offline.sh";
/// Default readiness timeout (RabbitMQ boots in ~7 s on an idle 2-core machine).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Seconds docker waits after a container's stop signal before it SIGKILLs it. The images' brokers end
/// on their STOPSIGNAL (the embedded broker on SIGINT at once, RabbitMQ's own start script on SIGTERM
/// with a clean shutdown), so this bounds a broker that hangs, not the usual stop.
pub const STOP_TIMEOUT_SECS: i32 = 5;

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
    if spec.kind() == BrokerKind::Rabbitmq && version.starts_with('4') {
        // the offline images are tagged with the version dpkg installed (4.0.5, 4.3.6) and its series
        return (
            format!("amqp1-rig/rabbitmq:{version}"),
            format!(
                "build it with {OFFLINE_BUILD_SCRIPT} rabbitmq4 (needs no registry: Debian trixie has 4.0, \
                 unstable 4.3; the tags are the versions dpkg installed), or with a registry: \
                 ci/images/build-registry.sh rabbitmq-4"
            ),
        );
    }
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

/// The version of the broker in an image: its version label, else the version the spec asks for,
/// else the image's tag when it is a version.
pub fn image_version(
    spec: &BrokerSpec,
    image: &str,
    facts: Option<&ImageFacts>,
) -> Option<Version> {
    if spec.kind() == BrokerKind::Embedded {
        return None;
    }
    facts
        .and_then(|f| VERSION_LABELS.iter().find_map(|l| f.label(l)))
        .and_then(Version::parse)
        .or_else(|| spec.version().cloned())
        .or_else(|| {
            image
                .rsplit_once(':')
                .and_then(|(_, tag)| Version::parse(tag))
        })
}

/// The files copied into a node's container: `templates/<kind>/` rendered for `dir` (the image's
/// config-dir label), at their absolute paths inside the container, plus `sasl-users` (every scenario
/// user, `name:password` per line) for qpidd and qdrouterd, whose entrypoints build the SASL database
/// from it.
pub fn container_files(
    spec: &BrokerSpec,
    index: usize,
    dir: &str,
    version: Option<Version>,
) -> Result<Vec<RenderedFile>, BackendError> {
    let layout = NodeLayout::container(spec.kind(), index, dir, version);
    let mut files = super::config::render_files(spec, &layout)?;
    if matches!(spec.kind(), BrokerKind::Qpidd | BrokerKind::Qdrouterd) && !spec.users.is_empty() {
        files.push(RenderedFile {
            path: "sasl-users".to_string(),
            contents: spec
                .users
                .iter()
                .map(|u| format!("{}:{}\n", u.name, u.password.expose()))
                .collect(),
        });
    }
    let dir = dir.trim_end_matches('/');
    for f in &mut files {
        f.path = format!("{dir}/{}", f.path);
    }
    Ok(files)
}

/// Whether `spec` can run here: a daemon answers and the image [`image_for`] picks exists.
pub fn check_available(spec: &BrokerSpec) -> Result<(), String> {
    docker_available().map_err(|e| e.0)?;
    let (image, how) = image_for(spec);
    if image_exists(&image) {
        Ok(())
    } else {
        Err(format!("image {image} is not present locally: {how}"))
    }
}

impl Backend for ContainerBackend {
    fn name(&self) -> &'static str {
        "container"
    }

    fn detect_version(&self, spec: &BrokerSpec) -> Option<Version> {
        let (image, _) = image_for(spec);
        let facts = docker::block_on(docker::inspect_image(&image))
            .ok()
            .flatten();
        image_version(spec, &image, facts.as_ref())
    }

    fn available(&self, spec: &BrokerSpec) -> Result<(), String> {
        check_available(spec)
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
            let (image, how) = image_for(spec);
            docker::daemon_version()
                .await
                .map_err(|e| unavailable(e.0))?;
            let _ = docker::reap_orphans_async(false).await;
            let facts = docker::inspect_image(&image)
                .await
                .map_err(|e| unavailable(e.0))?
                .ok_or_else(|| {
                    unavailable(format!(
                        "image {image} is not present locally and will not be pulled: {how}"
                    ))
                })?;
            if spec.tls {
                return Err(BackendError::Unsupported {
                    backend: "container",
                    what: "TLS brokers (use --backend embedded for amqps)".to_string(),
                });
            }
            let version = image_version(spec, &image, Some(&facts));
            let config_dir = facts
                .label(CONFIG_DIR_LABEL)
                .filter(|d| d.starts_with('/'))
                .map(str::to_string);
            // RabbitMQ 4.x refuses connections without a SASL layer, which clients without
            // credentials open: they log in as the image's default user instead
            let default_user = (spec.kind() == BrokerKind::Rabbitmq
                && spec.users.is_empty()
                && version
                    .as_ref()
                    .is_some_and(|v| !v.to_string().starts_with("3.")))
            .then(|| super::User {
                name: "guest".into(),
                password: "guest".into(),
            });
            let run = uuid::Uuid::new_v4().simple().to_string();
            let mut nodes: Vec<Box<dyn BrokerNode>> = Vec::new();
            for index in 0..spec.nodes.max(1) {
                let files = match &config_dir {
                    Some(dir) => container_files(spec, index, dir, version.clone())?,
                    None => Vec::new(),
                };
                let start = node::NodeStart {
                    image: image.clone(),
                    run: run[..8].to_string(),
                    index,
                    ready_timeout: self.ready_timeout,
                    stop_timeout: STOP_TIMEOUT_SECS,
                    files,
                    env: container_env(spec),
                    default_user: default_user.clone(),
                };
                // a failure drops the nodes already started, which removes their containers
                nodes.push(Box::new(ContainerNode::start(spec, start).await?));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::BrokerChoice;

    fn spec(s: &str) -> BrokerSpec {
        BrokerSpec::new(BrokerChoice::parse(s).expect("choice"), "../templates")
    }

    #[test]
    fn every_template_is_listed_once() {
        let mut names: Vec<&str> = IMAGE_TEMPLATES.iter().map(|t| t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), IMAGE_TEMPLATES.len());
    }

    #[test]
    fn image_choice_follows_kind_and_version() {
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
    fn availability_names_the_image_the_spec_picks() {
        // whatever this machine has, a missing image is named as image_for picks it
        for choice in ["qpidd:source-debian", "rabbitmq:4.3.6", "qpidd:centos7"] {
            let s = spec(choice);
            let (image, _) = image_for(&s);
            if let Err(e) = check_available(&s) {
                assert!(
                    e.contains("no Docker-compatible daemon") || e.contains(&image),
                    "{choice}: {e}"
                );
            }
        }
        let mut s = spec("qpidd");
        s.image = Some("amqp1-rig/no-such-image:1".into());
        if let Err(e) = check_available(&s) {
            assert!(
                e.contains("no Docker-compatible daemon")
                    || e.contains("amqp1-rig/no-such-image:1"),
                "{e}"
            );
        } else {
            panic!("a missing image is available");
        }
        assert_eq!(
            image_for(&spec("qpidd:source-debian")).0,
            "amqp1-rig/qpidd:source-1.39.0"
        );
        assert_eq!(
            image_for(&spec("rabbitmq:4.0.5")).0,
            "amqp1-rig/rabbitmq:4.0.5"
        );
        assert!(image_for(&spec("rabbitmq:4.3")).1.contains("rabbitmq4"));
    }

    #[test]
    fn container_files_carry_every_user_at_absolute_paths() {
        let mut s = spec("qpidd");
        for (n, p) in [("a", "pa"), ("b", "pb")] {
            s.users.push(super::super::User {
                name: n.into(),
                password: p.into(),
            });
        }
        let files = container_files(&s, 0, "/etc/amqp1-rig/", None).expect("renders");
        assert!(files.iter().all(|f| f.path.starts_with("/etc/amqp1-rig/")));
        let users = files
            .iter()
            .find(|f| f.path == "/etc/amqp1-rig/sasl-users")
            .expect("sasl-users");
        assert_eq!(users.contents, "a:pa\nb:pb\n");
        let mut r = spec("rabbitmq:4.3.6");
        r.users = s.users.clone();
        let files =
            container_files(&r, 0, "/etc/amqp1-rig", Version::parse("4.3.6")).expect("renders");
        let defs = files
            .iter()
            .find(|f| f.path.ends_with("definitions.json"))
            .expect("definitions");
        assert!(defs.contents.contains("\"a\"") && defs.contents.contains("\"b\""));
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
