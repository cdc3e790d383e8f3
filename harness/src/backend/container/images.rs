//! Image templates (`templates/images/*.Dockerfile.tera`): which image runs which broker, and how it is
//! built (offline by `ci/images/build-offline.sh`, or with a registry by `ci/images/build-registry.sh`).

use std::collections::BTreeMap;
use std::path::Path;

use super::super::{BackendError, BrokerKind};
use super::{BASE_IMAGE, CONTAINER_AMQP_PORT, EMBEDDED_IMAGE, RABBITMQ_OFFLINE_IMAGE};

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
