//! Embedded backend: brokers from the in-process `broker` crate.
//!
//! Every node is a `broker::Broker` on its own 127.0.0.1 port. `kill` shuts the node down, `restart` starts
//! it again on the same port, `pause`/`resume` and `drop_connections` use the broker's fault hooks.

use super::{Backend, BackendError, BoxFuture, BrokerHandle, BrokerKind, BrokerSpec};

/// The embedded backend (always available).
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddedBackend;

impl Backend for EmbeddedBackend {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn available(&self, kind: BrokerKind) -> Result<(), String> {
        match kind {
            BrokerKind::Embedded => Ok(()),
            other => Err(format!(
                "the embedded backend only runs 'embedded' brokers, not '{other}'"
            )),
        }
    }

    fn start<'a>(
        &'a self,
        spec: &'a BrokerSpec,
    ) -> BoxFuture<'a, Result<BrokerHandle, BackendError>> {
        Box::pin(async move {
            Err(BackendError::Unavailable {
                backend: "embedded",
                kind: spec.label(),
                reason: "the broker crate is not ready yet".to_string(),
            })
        })
    }
}
