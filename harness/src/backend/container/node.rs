//! One broker node in a container: started through testcontainers (`GenericImage` + `AsyncRunner`),
//! operated through its `ContainerAsync` (start, stop, pause, unpause, rm) and bollard (kill, state,
//! logs).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use testcontainers::bollard::models::{HostConfig, PortBinding};
use testcontainers::bollard::query_parameters::{KillContainerOptions, LogsOptionsBuilder};
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, CopyTargetOptions, GenericImage, ImageExt};

use super::super::config::RenderedFile;
use super::super::{
    cleanup, log_tail, BackendError, BoxFuture, BrokerKind, BrokerNode, BrokerSpec, User,
};
use super::docker::{self, bollard::errors::Error as BollardError};
use super::{CONTAINER_AMQP_PORT, LABEL, OWNER_LABEL};

/// Lines of log put into start errors.
const TAIL_LINES: usize = 30;
/// Log bytes kept per node (the oldest half goes past this).
const LOG_CAP: usize = 4 << 20;
/// How often a starting node's container state is checked while waiting for the AMQP Open.
const EXIT_POLL: Duration = Duration::from_millis(200);

/// What [`ContainerNode::start`] needs besides the spec.
#[derive(Debug, Clone)]
pub(crate) struct NodeStart {
    /// Local image (`repo:tag`).
    pub image: String,
    /// Run id shared by the nodes of one broker (container names).
    pub run: String,
    /// Node index.
    pub index: usize,
    /// Readiness timeout.
    pub ready_timeout: Duration,
    /// Seconds docker waits after the stop signal before SIGKILL.
    pub stop_timeout: i32,
    /// Files to copy in (absolute paths inside the container).
    pub files: Vec<RenderedFile>,
    /// Environment of the container.
    pub env: Vec<(String, String)>,
    /// The user clients log in as when the scenario names none.
    pub default_user: Option<User>,
}

/// One broker node running in a container.
pub struct ContainerNode {
    name: String,
    id: String,
    image: String,
    product: String,
    port: u16,
    user: Option<User>,
    default_user: Option<User>,
    ready_timeout: Duration,
    stop_timeout: i32,
    container: Mutex<Option<Arc<ContainerAsync<GenericImage>>>>,
    logs: Arc<Mutex<String>>,
    followers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    removed: AtomicBool,
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

fn split_image(image: &str) -> (String, String) {
    // the tag is after the last ':' that follows the last '/' (a registry port is not a tag)
    let slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[slash..].rfind(':') {
        Some(i) => (
            image[..slash + i].to_string(),
            image[slash + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

fn unix_now() -> i32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i32)
        .unwrap_or(0)
}

fn push_log(buf: &Mutex<String>, text: &str) {
    let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
    if b.len() > LOG_CAP {
        let cut = b.len() / 2;
        let cut = b[cut..].find('\n').map(|i| cut + i + 1).unwrap_or(cut);
        b.drain(..cut);
    }
    b.push_str(text);
}

impl ContainerNode {
    /// Creates, configures (rendered files copied in), starts and waits for one container, removing
    /// it on every failure on the way: the steps share that cleanup, so they stay in one function.
    pub(crate) async fn start(
        spec: &BrokerSpec,
        s: NodeStart,
    ) -> Result<ContainerNode, BackendError> {
        let name = format!("node{}", s.index);
        let port = super::super::free_port()?;
        let kind = spec.kind();
        let container_name = format!("amqp1-rig-{}-{name}", s.run);
        // The embedded broker binds 127.0.0.1 only, so its container shares the host's network and
        // listens on the host's loopback; every other image publishes 5672 on 127.0.0.1 of the host.
        let host_network = kind == BrokerKind::Embedded;
        let (repo, tag) = split_image(&s.image);
        let mut req = GenericImage::new(repo, tag)
            .with_wait_for(WaitFor::Nothing)
            .with_container_name(&container_name)
            .with_label(LABEL, "1")
            .with_label(OWNER_LABEL, std::process::id().to_string())
            .with_label(format!("{LABEL}.broker"), kind.as_str())
            .with_label(format!("{LABEL}.node"), &name)
            .with_host_config_modifier(move |hc: &mut HostConfig| {
                hc.publish_all_ports = Some(false);
                if host_network {
                    hc.network_mode = Some("host".to_string());
                    hc.port_bindings = None;
                } else {
                    hc.port_bindings = Some(HashMap::from([(
                        format!("{CONTAINER_AMQP_PORT}/tcp"),
                        Some(vec![PortBinding {
                            host_ip: Some("127.0.0.1".to_string()),
                            host_port: Some(port.to_string()),
                        }]),
                    )]));
                }
            });
        for (k, v) in &s.env {
            req = req.with_env_var(k, v);
        }
        if host_network {
            req = req.with_env_var("PORT", port.to_string());
        }
        for f in &s.files {
            req = req.with_copy_to(
                CopyTargetOptions::new(f.path.clone()).with_mode(0o600),
                f.contents.clone().into_bytes(),
            );
        }
        let started = Instant::now();
        let container = match req.start().await {
            Ok(c) => c,
            Err(e) => {
                // a container created but not started is not owned by a ContainerAsync yet
                docker::remove(std::slice::from_ref(&container_name)).await;
                let api = match &e {
                    testcontainers::TestcontainersError::Client(c) => {
                        let text = format!("{c:?}");
                        text.contains("client version") || text.contains("is too new")
                    }
                    _ => false,
                };
                let hint = if api {
                    format!(
                        ": the docker client sent a versioned API path (/v1.xx) that this engine refuses; bollard must stay at {}.x (pinned in Cargo.lock)",
                        docker::BOLLARD_LINE
                    )
                } else {
                    String::new()
                };
                return Err(BackendError::Start {
                    message: format!("cannot start a container of {}: {e}{hint}", s.image),
                    log_tail: String::new(),
                });
            }
        };
        let id = container.id().to_string();
        cleanup::register_container(&id);
        let product = match kind {
            BrokerKind::Embedded => format!(
                "embedded {} (container)",
                spec.flavour().unwrap_or_default()
            ),
            other => other.to_string(),
        };
        let node = ContainerNode {
            name,
            id,
            image: s.image.clone(),
            product,
            port,
            user: spec.client_user().cloned().or(s.default_user.clone()),
            default_user: s.default_user.clone(),
            ready_timeout: s.ready_timeout,
            stop_timeout: s.stop_timeout,
            container: Mutex::new(Some(Arc::new(container))),
            logs: Arc::new(Mutex::new(String::new())),
            followers: Mutex::new(Vec::new()),
            removed: AtomicBool::new(false),
        };
        node.note(&format!(
            "container {} ({}) created and started in {:.2} s, AMQP on 127.0.0.1:{port}",
            container_name,
            s.image,
            started.elapsed().as_secs_f64()
        ));
        node.follow_logs(0);
        node.wait_ready().await?;
        node.note(&format!(
            "{} ready {:.2} s after create",
            node.name,
            started.elapsed().as_secs_f64()
        ));
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

    fn note(&self, line: &str) {
        tracing::info!(target: "harness::container", "{line}");
        push_log(&self.logs, &format!("# amqp1-rig: {line}\n"));
    }

    /// Streams the container's stdout and stderr from `since` (Unix seconds; 0: the start) into the log
    /// buffer, until the container stops.
    fn follow_logs(&self, since: i32) {
        let id = self.id.clone();
        let buf = self.logs.clone();
        let handle = tokio::spawn(async move {
            let Ok(docker) = docker::client().await else {
                return;
            };
            let opts = LogsOptionsBuilder::new()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .since(since)
                .build();
            let mut stream = docker.logs(&id, Some(opts));
            while let Some(item) = stream.next().await {
                match item {
                    Ok(out) => push_log(&buf, &String::from_utf8_lossy(&out.into_bytes())),
                    Err(_) => break,
                }
            }
        });
        self.followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(handle);
    }

    /// Everything the container printed so far, read now (not through the follower).
    async fn logs_now(&self) -> String {
        let Ok(docker) = docker::client().await else {
            return self.logs();
        };
        let opts = LogsOptionsBuilder::new()
            .follow(false)
            .stdout(true)
            .stderr(true)
            .build();
        let mut text = String::new();
        let mut stream = docker.logs(&self.id, Some(opts));
        while let Some(Ok(out)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&out.into_bytes()));
        }
        text
    }

    /// `Some(exit code)` once the container has stopped running (and is not restarting).
    async fn exited(&self) -> Option<i64> {
        let docker = docker::client().await.ok()?;
        let info = docker.inspect_container(&self.id, None).await.ok()?;
        let state = info.state?;
        if state.running == Some(false) && state.restarting != Some(true) {
            Some(state.exit_code.unwrap_or(-1))
        } else {
            None
        }
    }

    /// Waits until an AMQP Open succeeds; a container that exits meanwhile is reported at once, with
    /// its log.
    async fn wait_ready(&self) -> Result<(), BackendError> {
        let probe = super::super::Probe::local(self.port, self.user.as_ref());
        let ready = super::super::wait_ready(&probe, self.ready_timeout);
        tokio::pin!(ready);
        loop {
            tokio::select! {
                r = &mut ready => {
                    return match r {
                        Ok(()) => Ok(()),
                        Err(reason) => {
                            let state = match self.exited().await {
                                Some(code) => format!("container exited with code {code}"),
                                None => "container running".to_string(),
                            };
                            Err(BackendError::NotReady {
                                url: format!("amqp://127.0.0.1:{}", self.port),
                                reason: format!("{reason} ({state})"),
                                log_tail: log_tail(&self.logs_now().await, TAIL_LINES),
                            })
                        }
                    };
                }
                _ = tokio::time::sleep(EXIT_POLL) => {
                    if let Some(code) = self.exited().await {
                        return Err(BackendError::Start {
                            message: format!(
                                "container of {} ({}) exited with code {code} before it accepted AMQP connections",
                                self.image, self.name
                            ),
                            log_tail: log_tail(&self.logs_now().await, TAIL_LINES),
                        });
                    }
                }
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

    fn abort_followers(&self) {
        for h in self
            .followers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            h.abort();
        }
    }

    fn take_container(&self) -> Option<Arc<ContainerAsync<GenericImage>>> {
        self.container
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The node's container, while it has not been removed.
    fn current(&self, op: &str) -> Result<Arc<ContainerAsync<GenericImage>>, BackendError> {
        self.container
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| self.fault(op, "the container was removed".to_string()))
    }

    /// Removes the container through testcontainers (`rm`), or by id when a fault operation still
    /// holds it.
    async fn remove(&self, c: Arc<ContainerAsync<GenericImage>>) {
        if let Ok(c) = Arc::try_unwrap(c) {
            if let Err(e) = c.rm().await {
                tracing::warn!("cannot remove container {}: {e}", self.id);
            }
        }
        // idempotent: also covers the shared case and a failed rm
        docker::remove(std::slice::from_ref(&self.id)).await;
    }
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
            let docker = docker::client()
                .await
                .map_err(|e| self.fault("kill", e.0))?;
            match docker
                .kill_container(&self.id, None::<KillContainerOptions>)
                .await
            {
                Ok(()) => {
                    self.note(&format!("{} killed (SIGKILL)", self.name));
                    Ok(())
                }
                // idempotent: killing a stopped container is fine
                Err(BollardError::DockerResponseServerError {
                    status_code: 409, ..
                }) => Ok(()),
                Err(e) => Err(self.fault("kill", docker::explain(&e))),
            }
        })
    }

    fn restart(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            self.kill().await?;
            // the container is stopped once kill returns; start waits for nothing else
            let since = unix_now();
            let t0 = Instant::now();
            let c = self.current("restart")?;
            c.start()
                .await
                .map_err(|e| self.fault("restart", e.to_string()))?;
            self.follow_logs(since);
            self.wait_ready().await?;
            self.note(&format!(
                "{} restarted, ready after {:.2} s",
                self.name,
                t0.elapsed().as_secs_f64()
            ));
            Ok(())
        })
    }

    fn pause(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let c = self.current("pause")?;
            c.pause()
                .await
                .map_err(|e| self.fault("pause", e.to_string()))
        })
    }

    fn resume(&self) -> BoxFuture<'_, Result<(), BackendError>> {
        Box::pin(async move {
            let c = self.current("resume")?;
            c.unpause()
                .await
                .map_err(|e| self.fault("resume", e.to_string()))
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

    fn default_user(&self) -> Option<User> {
        self.default_user.clone()
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.removed.swap(true, Ordering::SeqCst) {
                return;
            }
            if let Some(c) = self.take_container() {
                let t0 = Instant::now();
                // a paused container cannot take a stop signal
                let _ = c.unpause().await;
                let stopped = c.stop_with_timeout(Some(self.stop_timeout)).await;
                self.note(&match stopped {
                    Ok(()) => format!(
                        "{} stopped in {:.2} s",
                        self.name,
                        t0.elapsed().as_secs_f64()
                    ),
                    Err(e) => format!("{} stop: {e}", self.name),
                });
                self.remove(c).await;
            }
            cleanup::unregister_container(&self.id);
            self.abort_followers();
        })
    }
}

impl Drop for ContainerNode {
    fn drop(&mut self) {
        self.abort_followers();
        if self.removed.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(c) = self.take_container() {
            // Removed here on a thread of its own: a drop may happen outside any tokio runtime (a panic
            // unwinding past the runtime) or on a current-thread runtime, where testcontainers' own
            // drop could not block.
            let this = &*self;
            docker::block_on(this.remove(c));
        } else {
            docker::remove_blocking(std::slice::from_ref(&self.id));
        }
        cleanup::unregister_container(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_at_the_tag() {
        assert_eq!(
            split_image("amqp1-rig/rabbitmq:4.0.5"),
            ("amqp1-rig/rabbitmq".into(), "4.0.5".into())
        );
        assert_eq!(
            split_image("localhost:5000/x/y"),
            ("localhost:5000/x/y".into(), "latest".into())
        );
        assert_eq!(split_image("busybox"), ("busybox".into(), "latest".into()));
    }
}
