//! The Docker Engine API, through testcontainers' client ([`testcontainers::core::client`]) and the
//! bollard it re-exports, for what testcontainers has no verb for: daemon checks, image inspection,
//! kill, state, logs since a point in time, listing and removing by label.
//!
//! No `docker` CLI runs at run time. bollard is pinned at 0.21.x through `Cargo.lock`: every 0.21
//! release sends unversioned request paths (`/containers/json`), which any engine answers at its own API
//! version (Docker Engine 20.10 speaks API 1.41). A bollard that sends `/v1.53/...` would be refused by
//! such an engine with "client version 1.53 is too new"; [`explain`] names that cause in every error.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;

pub use testcontainers::bollard;

use bollard::errors::Error as BollardError;
use bollard::Docker;

use super::super::cleanup;
use super::{LABEL, OWNER_LABEL};

/// The bollard release line the container backend is tested with (see [`explain`]).
pub const BOLLARD_LINE: &str = "0.21";

const NO_DAEMON_HINT: &str =
    "set DOCKER_HOST to a running Docker-compatible daemon, or use --backend process / --backend embedded";

/// Why docker cannot be used, as one line with what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerUnavailable(pub String);

impl fmt::Display for DockerUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `e` is the engine refusing the API version the client asked for (a versioned `/v1.xx` path
/// this engine does not speak).
pub fn is_api_version_refusal(e: &BollardError) -> bool {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let m = message.to_ascii_lowercase();
            (*status_code == 400 || *status_code == 404)
                && (m.contains("client version") || m.contains("is too new"))
        }
        BollardError::APIVersionParseError {} => true,
        _ => false,
    }
}

/// `e` as one line; an API version refusal says what causes it and what to do.
pub fn explain(e: &BollardError) -> String {
    if is_api_version_refusal(e) {
        format!(
            "{e}: the docker client sent a versioned API path (/v1.xx) that this engine refuses; \
             bollard must stay at {BOLLARD_LINE}.x (pinned in Cargo.lock; 0.21 sends unversioned paths)"
        )
    } else {
        e.to_string()
    }
}

fn unavailable(e: impl fmt::Display) -> DockerUnavailable {
    let host = std::env::var("DOCKER_HOST")
        .map(|h| format!(" at DOCKER_HOST={h}"))
        .unwrap_or_default();
    DockerUnavailable(format!(
        "no Docker-compatible daemon answers{host} ({e}): {NO_DAEMON_HINT}"
    ))
}

/// The docker client (testcontainers' configuration: `DOCKER_HOST`, `~/.testcontainers.properties`).
pub async fn client() -> Result<Docker, DockerUnavailable> {
    testcontainers::core::client::docker_client_instance()
        .await
        .map_err(unavailable)
}

/// The daemon's version, if one answers.
pub async fn daemon_version() -> Result<String, DockerUnavailable> {
    let docker = client().await?;
    match docker.version().await {
        Ok(v) => Ok(format!(
            "{} (API {})",
            v.version.unwrap_or_default(),
            v.api_version.unwrap_or_default()
        )),
        Err(e) if is_api_version_refusal(&e) => Err(DockerUnavailable(explain(&e))),
        Err(e) => Err(unavailable(explain(&e))),
    }
}

/// Runs `f` to completion on a current-thread runtime of its own thread: the blocking checks work
/// inside a tokio runtime (whose workers must not block on another runtime) and outside one.
pub fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(f))
        })
        .join()
    })
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
    .unwrap_or_else(|e| panic!("cannot build a tokio runtime for a docker check: {e}"))
}

/// Checks that a Docker-compatible daemon answers (blocking).
pub fn docker_available() -> Result<String, DockerUnavailable> {
    block_on(daemon_version())
}

/// What the backend reads of a local image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFacts {
    /// The image's labels.
    pub labels: HashMap<String, String>,
}

impl ImageFacts {
    /// The label `key`, if set and not empty.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// The facts of local image `image`; `Ok(None)` when it is not here (it is never pulled).
pub async fn inspect_image(image: &str) -> Result<Option<ImageFacts>, DockerUnavailable> {
    let docker = client().await?;
    match docker.inspect_image(image).await {
        Ok(i) => Ok(Some(ImageFacts {
            labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
        })),
        Err(BollardError::DockerResponseServerError {
            status_code: 404,
            message,
        }) if !message.to_ascii_lowercase().contains("client version") => Ok(None),
        Err(e) if is_api_version_refusal(&e) => Err(DockerUnavailable(explain(&e))),
        Err(e) => Err(unavailable(explain(&e))),
    }
}

/// Whether `image` exists locally (blocking).
pub fn image_exists(image: &str) -> bool {
    matches!(block_on(inspect_image(image)), Ok(Some(_)))
}

/// Removes containers (force, with their anonymous volumes); returns how many went away.
pub async fn remove(ids: &[String]) -> usize {
    let Ok(docker) = client().await else {
        return 0;
    };
    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    let mut n = 0;
    for id in ids {
        match docker.remove_container(id, Some(opts.clone())).await {
            Ok(()) => n += 1,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => {}
            Err(e) => tracing::warn!("cannot remove container {id}: {}", explain(&e)),
        }
        cleanup::unregister_container(id);
    }
    n
}

/// [`remove`], blocking.
pub fn remove_blocking(ids: &[String]) -> usize {
    block_on(remove(ids))
}

/// Containers labelled `amqp1-rig=1`, with their owner pid label.
async fn labelled_containers() -> Result<Vec<(String, Option<String>)>, DockerUnavailable> {
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL}=1")])]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| unavailable(explain(&e)))?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            let owner = c.labels.as_ref().and_then(|l| l.get(OWNER_LABEL).cloned());
            c.id.map(|id| (id, owner))
        })
        .collect())
}

fn process_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes containers labelled `amqp1-rig=1` whose owning harness process no longer exists (left behind
/// by a `kill -9`). With `all`, removes every container a harness started, whoever owns it. Only
/// containers with an owner label are touched: images carry `amqp1-rig=1` too, so a `docker build`'s
/// intermediate container or a container someone ran by hand from one of them has the label but no
/// owner, and is never the harness's to remove. Returns how many were removed.
pub async fn reap_orphans_async(all: bool) -> Result<usize, DockerUnavailable> {
    let ids: Vec<String> = labelled_containers()
        .await?
        .into_iter()
        .filter(
            |(_, owner)| match owner.as_deref().and_then(|o| o.parse::<i32>().ok()) {
                Some(pid) => all || !process_alive(pid),
                None => false,
            },
        )
        .map(|(id, _)| id)
        .collect();
    Ok(remove(&ids).await)
}

/// [`reap_orphans_async`], blocking.
pub fn reap_orphans(all: bool) -> Result<usize, DockerUnavailable> {
    block_on(reap_orphans_async(all))
}

/// Ids of the containers of owner `pid` (any state), optionally only those running `broker`.
pub async fn containers_of(
    pid: u32,
    broker: Option<&str>,
) -> Result<Vec<String>, DockerUnavailable> {
    let docker = client().await?;
    let mut labels = vec![format!("{OWNER_LABEL}={pid}")];
    if let Some(b) = broker {
        labels.push(format!("{LABEL}.broker={b}"));
    }
    let filters = HashMap::from([("label", labels)]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    Ok(docker
        .list_containers(Some(opts))
        .await
        .map_err(|e| unavailable(explain(&e)))?
        .into_iter()
        .filter_map(|c| c.id)
        .collect())
}

/// A local broker image: one of its tags, the broker it runs and the version it holds (labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// `repo:tag`.
    pub tag: String,
    /// `amqp1-rig.broker` (`rabbitmq`, `embedded`, ...).
    pub broker: String,
    /// `org.amqp1-rig.version` or `amqp1-rig.version`, if set.
    pub version: Option<String>,
}

/// Every local image tag labelled with a broker (`amqp1-rig.broker`), sorted by tag: what `harness
/// brokers` can list beside the defaults.
pub async fn local_images() -> Result<Vec<LocalImage>, DockerUnavailable> {
    let docker = client().await?;
    let filters = HashMap::from([("label", vec![format!("{LABEL}.broker")])]);
    let opts = bollard::query_parameters::ListImagesOptionsBuilder::new()
        .filters(&filters)
        .build();
    let mut out: Vec<LocalImage> = docker
        .list_images(Some(opts))
        .await
        .map_err(|e| unavailable(explain(&e)))?
        .into_iter()
        .flat_map(|i| {
            let broker = i.labels.get(&format!("{LABEL}.broker")).cloned();
            let version = super::VERSION_LABELS
                .iter()
                .find_map(|l| i.labels.get(*l).filter(|v| !v.is_empty()).cloned());
            i.repo_tags
                .into_iter()
                .filter(|t| t != "<none>:<none>")
                .map(move |tag| LocalImage {
                    tag,
                    broker: broker.clone().unwrap_or_default(),
                    version: version.clone(),
                })
        })
        .collect();
    out.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_refusals_name_the_pin() {
        let refused = BollardError::DockerResponseServerError {
            status_code: 400,
            message: "client version 1.53 is too new. Maximum supported API version is 1.41".into(),
        };
        assert!(is_api_version_refusal(&refused));
        let msg = explain(&refused);
        assert!(msg.contains("bollard must stay at 0.21.x"), "{msg}");
        let missing = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such image: x".into(),
        };
        assert!(!is_api_version_refusal(&missing));
        assert!(!explain(&missing).contains("bollard"));
    }

    /// The committed lock file keeps bollard on the release line whose request paths this engine accepts.
    #[test]
    fn cargo_lock_pins_bollard_0_21() {
        let lock = include_str!("../../../../Cargo.lock");
        let at = lock
            .find("name = \"bollard\"\n")
            .expect("bollard is in Cargo.lock");
        let version = lock[at..]
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("version = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("bollard's version line");
        assert!(
            version.starts_with(&format!("{BOLLARD_LINE}.")),
            "Cargo.lock has bollard {version}: releases after {BOLLARD_LINE}.x may send versioned \
             /v1.xx paths that Docker Engine 20.10 (API 1.41) refuses; keep bollard at {BOLLARD_LINE}.x"
        );
    }
}
