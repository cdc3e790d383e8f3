//! Messaging operations of the runner on top of the `driver` crate: the harness client, Rust services
//! (RPC servers with scripted behaviours, notification listeners) and Python-peer services.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value as Json;

use crate::scenario::model::{NotifyStep, TargetSpec};
use crate::scenario::Loaded;

/// One delivery received by a service.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Stable transcript line.
    pub line: String,
    /// Method name (RPC) or `priority:event_type` (notifications), for `expect.received`.
    pub key: String,
}

/// State shared between services and the runner.
#[derive(Debug, Default)]
pub struct Shared {
    /// Deliveries per service, in arrival order.
    pub deliveries: BTreeMap<String, Vec<Delivery>>,
    /// Stateful behaviours' state per service.
    pub state: BTreeMap<String, Json>,
}

/// A failed operation, reduced to what steps check.
#[derive(Debug, Clone)]
pub struct OpError {
    /// `timed_out`, `remote`, `delivery_failed`, `disconnected`, `invalid_target`, `refused`, `other`.
    pub kind: String,
    /// Broker condition, when the broker refused something.
    pub condition: Option<String>,
    /// Message (remote exception message or broker description).
    pub message: Option<String>,
    /// Remote exception `(class, module)`.
    pub remote: Option<(String, String)>,
}

/// The running messaging side of a scenario.
#[derive(Debug)]
pub struct Env {
    _shared: Arc<Mutex<Shared>>,
}

impl Env {
    /// Connects the harness client and starts every service.
    pub async fn start(
        loaded: &Loaded,
        url: &str,
        templates: &Path,
        shared: Arc<Mutex<Shared>>,
    ) -> Result<Env, String> {
        let _ = (loaded, url, templates);
        Ok(Env { _shared: shared })
    }

    /// Makes `n` calls, `conc` at a time.
    #[allow(clippy::too_many_arguments)]
    pub async fn call(
        &self,
        from: Option<&str>,
        target: &TargetSpec,
        method: &str,
        args: &serde_json::Map<String, Json>,
        context: &serde_json::Map<String, Json>,
        timeout: Option<Duration>,
        monitor: Option<Duration>,
        reply_mode: Option<&str>,
        n: usize,
        conc: usize,
    ) -> Vec<Result<Json, OpError>> {
        let _ = (
            from, target, method, args, context, timeout, monitor, reply_mode, conc,
        );
        (0..n).map(|_| Err(not_ready())).collect()
    }

    /// Sends `n` casts (fanout when asked).
    #[allow(clippy::too_many_arguments)]
    pub async fn cast(
        &self,
        from: Option<&str>,
        target: &TargetSpec,
        method: &str,
        args: &serde_json::Map<String, Json>,
        context: &serde_json::Map<String, Json>,
        fanout: bool,
        n: usize,
    ) -> Vec<Result<(), OpError>> {
        let _ = (from, target, method, args, context, fanout);
        (0..n).map(|_| Err(not_ready())).collect()
    }

    /// Sends `n` notifications to `topics`.
    pub async fn notify(
        &self,
        step: &NotifyStep,
        topics: &[String],
        n: usize,
    ) -> Vec<Result<(), OpError>> {
        let _ = (step, topics);
        (0..n).map(|_| Err(not_ready())).collect()
    }

    /// Stops services and transports; returns the driver events seen, as `(source, event)`.
    pub async fn shutdown(self) -> Vec<(String, String)> {
        Vec::new()
    }
}

fn not_ready() -> OpError {
    OpError {
        kind: "other".into(),
        condition: None,
        message: Some("driver not available yet".into()),
        remote: None,
    }
}
