//! Starting a scenario's services: on the Rust driver ([`rust`]) or in the Python peer ([`python`]),
//! and rendering a service's `config:` template.

pub mod python;
pub mod rust;

use std::collections::BTreeMap;
use std::path::Path;

use driver::url::TransportUrl;

use crate::scenario::{Service, ServiceConfig};
use crate::templates::TemplateError;

/// What a service's config template gets besides the scenario's variables.
#[derive(Debug, Clone, Copy)]
pub struct TemplateInputs<'a> {
    /// The scenario's variables.
    pub vars: &'a BTreeMap<String, String>,
    /// The driver settings.
    pub driver: &'a crate::scenario::DriverSettings,
    /// The broker's addressing mode, if the scenario names one.
    pub addressing: Option<driver::options::AddressingMode>,
    /// Options the harness adds (`ssl`, `ssl_ca_file` for a TLS broker it started).
    pub extra_options: &'a BTreeMap<String, String>,
}

/// Renders `svc`'s `config:` template to INI text, with `transport_url` (passwords in clear: the text
/// is a configuration file, never shown).
pub fn render_config(
    svc: &Service,
    cfg: &ServiceConfig,
    templates: &Path,
    transport_url: &TransportUrl,
    inputs: TemplateInputs<'_>,
) -> Result<String, TemplateError> {
    let mut ctx = tera::Context::new();
    for (k, v) in inputs.vars {
        ctx.insert(k.as_str(), v);
    }
    ctx.insert("service", &svc.name);
    ctx.insert("transport_url", transport_url.expose().expose());
    let d = inputs.driver;
    ctx.insert(
        "control_exchange",
        d.control_exchange.as_deref().unwrap_or("openstack"),
    );
    if let Some(t) = d.rpc_response_timeout {
        ctx.insert("rpc_response_timeout", &t.as_secs().max(1));
    }
    let mut opts = d.options.clone();
    opts.extend(
        inputs
            .extra_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    ctx.insert("amqp_options", &opts);
    if let Some(a) = inputs.addressing {
        ctx.insert("addressing_mode", a.as_str());
    }
    for (k, v) in &cfg.vars {
        ctx.insert(k.as_str(), v);
    }
    crate::templates::render(templates, &cfg.template, &ctx)
}
