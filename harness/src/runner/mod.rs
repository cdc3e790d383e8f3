//! Runs one loaded scenario: starts the broker, the services and executes the steps in order, recording
//! a [`Transcript`] and a [`ScenarioReport`].

pub mod ops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::backend::{self, BackendKind, BrokerHandle, BrokerKind, BrokerSpec, User};
use crate::exit_code;
use crate::report::{
    terminal::Terminal, GroupReport, ScenarioReport, SnapshotStatus, StepReport, StepStatus,
};
use crate::scenario::model::{
    CallExpect, KnownFailure, Service, ServiceConfig, ServiceKind, Step, TargetSpec,
};
use crate::scenario::validate::parse_duration;
use crate::scenario::Loaded;
use crate::transcript::{Redactor, Transcript};

pub use ops::{OpError, Shared};

/// How to run a scenario (command-line overrides).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--backend`.
    pub backend: Option<BackendKind>,
    /// `--broker KIND[:FLAVOUR]`.
    pub broker: Option<(BrokerKind, Option<String>)>,
    /// `--url`: use a running broker.
    pub url: Option<String>,
    /// Templates root.
    pub templates_dir: PathBuf,
    /// Broker version (a matrix cell's `version:`); overrides the scenario's.
    pub version: Option<String>,
    /// Container image (a matrix cell's `image:`); overrides the scenario's.
    pub image: Option<String>,
}

/// The outcome of [`run`].
#[derive(Debug)]
pub struct RunResult {
    /// The report (snapshot not yet checked).
    pub report: ScenarioReport,
}

fn embedded_flavour_for(kind: BrokerKind) -> &'static str {
    match kind {
        BrokerKind::Qdrouterd => "router",
        BrokerKind::Rabbitmq => "rabbitmq3",
        _ => "qpidd",
    }
}

/// The backend and broker spec for `loaded` after command-line overrides.
pub fn resolve_spec(
    loaded: &Loaded,
    opts: &RunOptions,
) -> Result<(BackendKind, BrokerSpec), String> {
    let b = &loaded.scenario.broker;
    let mut kind: BrokerKind = b
        .kind
        .as_deref()
        .unwrap_or("embedded")
        .parse()
        .map_err(|e: backend::UnknownName| e.to_string())?;
    let mut flavour = b.flavour.clone();
    if let Some((k, f)) = &opts.broker {
        if *k != kind {
            flavour = None;
        }
        kind = *k;
        if f.is_some() {
            flavour = f.clone();
        }
    }
    let backend = match opts.backend {
        Some(bk) => bk,
        None if kind == BrokerKind::Embedded => BackendKind::Embedded,
        None => {
            if backend::backend(BackendKind::Process)
                .available(kind)
                .is_ok()
            {
                BackendKind::Process
            } else {
                BackendKind::Container
            }
        }
    };
    let mut spec = section_spec(b, kind, flavour, backend, &opts.templates_dir);
    if opts.version.is_some() {
        spec.version = opts.version.clone();
    }
    if opts.image.is_some() {
        spec.image = opts.image.clone();
    }
    Ok((backend, spec))
}

/// The flavour that known-failure entries are matched against. A real RabbitMQ without a named
/// flavour (or with a version number as flavour, `rabbitmq:3.13`) gets `rabbitmq<major>` from its
/// version: the spec's version, else the installed server's (process backend) or the image tag
/// (container backend). Other brokers keep the spec's flavour.
pub fn registry_flavour(backend: BackendKind, spec: &BrokerSpec) -> Option<String> {
    let named = spec.flavour.clone();
    if spec.kind != BrokerKind::Rabbitmq {
        return named;
    }
    if let Some(f) = &named {
        if !f.starts_with(|c: char| c.is_ascii_digit()) {
            return named;
        }
    }
    let version = named
        .clone()
        .or_else(|| spec.version.clone())
        .or_else(|| match backend {
            BackendKind::Process => backend::process::ProcessBackend::new()
                .locate(
                    BrokerKind::Rabbitmq,
                    spec.overrides.get("binary").map(Path::new),
                )
                .ok()
                .and_then(|e| backend::process::rabbitmq_version(&e.server)),
            BackendKind::Container => {
                let (image, _) = backend::container::image_for(spec);
                image
                    .rsplit_once(':')
                    .map(|(_, tag)| tag.to_string())
                    .filter(|t| t.starts_with(|c: char| c.is_ascii_digit()))
            }
            BackendKind::Embedded => None,
        });
    match version.as_deref().and_then(|v| v.split('.').next()) {
        Some(major) if !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("rabbitmq{major}"))
        }
        _ => named,
    }
}

/// The spec of a scenario's `notification_broker`, on the main broker's backend (the embedded
/// backend imitates a real broker kind with its flavour, as for the main broker).
pub fn notification_spec(
    b: &crate::scenario::model::BrokerSection,
    backend: BackendKind,
    templates_dir: &Path,
) -> Result<BrokerSpec, String> {
    let kind: BrokerKind = b
        .kind
        .as_deref()
        .unwrap_or("embedded")
        .parse()
        .map_err(|e: backend::UnknownName| e.to_string())?;
    Ok(section_spec(
        b,
        kind,
        b.flavour.clone(),
        backend,
        templates_dir,
    ))
}

/// The broker spec of a scenario's broker section, once its kind and flavour are settled (the embedded
/// backend imitates a real broker kind with the matching flavour).
fn section_spec(
    b: &crate::scenario::model::BrokerSection,
    mut kind: BrokerKind,
    mut flavour: Option<String>,
    backend: BackendKind,
    templates_dir: &Path,
) -> BrokerSpec {
    if backend == BackendKind::Embedded && kind != BrokerKind::Embedded {
        flavour = Some(embedded_flavour_for(kind).to_string());
        kind = BrokerKind::Embedded;
    }
    if kind == BrokerKind::Embedded && flavour.is_none() {
        flavour = Some("qpidd".into());
    }
    let mut spec = BrokerSpec::new(kind, templates_dir.to_path_buf());
    spec.flavour = flavour;
    spec.version = b.version.clone();
    spec.nodes = b.nodes.unwrap_or(1).max(1);
    spec.users = b
        .users
        .iter()
        .map(|u| User {
            name: u.name.clone(),
            password: u.password.clone(),
        })
        .collect();
    spec.tls = b.tls;
    spec.overrides = b.overrides.clone();
    spec.image = b.image.clone();
    spec.addressing = b.addressing.clone();
    spec
}

/// Renders a service's `config:` template to INI text.
pub fn render_service_config(
    loaded: &Loaded,
    svc: &Service,
    cfg: &ServiceConfig,
    templates: &Path,
    transport_url: &str,
    extra: &BTreeMap<String, String>,
) -> Result<String, crate::templates::TemplateError> {
    let mut ctx = tera::Context::new();
    for (k, v) in &loaded.vars {
        ctx.insert(k.as_str(), v);
    }
    ctx.insert("service", &svc.name);
    ctx.insert("transport_url", transport_url);
    let d = &loaded.scenario.driver;
    ctx.insert(
        "control_exchange",
        d.control_exchange.as_deref().unwrap_or("openstack"),
    );
    if let Some(t) = &d.rpc_response_timeout {
        ctx.insert(
            "rpc_response_timeout",
            &parse_duration(t).map(|d| d.as_secs().max(1)).unwrap_or(60),
        );
    }
    let mut opts: BTreeMap<String, String> = d
        .options
        .iter()
        .map(|(k, v)| (k.clone(), json_scalar(v)))
        .collect();
    opts.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    ctx.insert("amqp_options", &opts);
    if let Some(a) = &loaded.scenario.broker.addressing {
        ctx.insert("addressing_mode", a);
    }
    for (k, v) in &cfg.vars {
        ctx.insert(k.as_str(), v);
    }
    crate::templates::render(templates, &cfg.template, &ctx)
}

fn json_scalar(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

/// The INI text for clients and services without a `config:` template.
/// `extra` are options the harness adds (e.g. `ssl_ca_file` for a TLS broker it started).
pub fn base_ini(
    loaded: &Loaded,
    transport_url: &str,
    reply_mode: Option<&str>,
    extra: &BTreeMap<String, String>,
) -> String {
    let d = &loaded.scenario.driver;
    let mut s = String::from("[DEFAULT]\n");
    s.push_str(&format!("transport_url = {transport_url}\n"));
    let timeout = d
        .rpc_response_timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok())
        .map(|d| d.as_secs().max(1))
        .unwrap_or(5);
    s.push_str(&format!("rpc_response_timeout = {timeout}\n"));
    if let Some(x) = &d.control_exchange {
        s.push_str(&format!("control_exchange = {x}\n"));
    }
    s.push_str("\n[oslo_messaging_amqp]\n");
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    // Fast reconnects and short link timeouts keep fault scenarios quick.
    opts.insert("connection_retry_interval".into(), "1".into());
    opts.insert("connection_retry_backoff".into(), "0".into());
    opts.insert("connection_retry_interval_max".into(), "1".into());
    if let Some(a) = &loaded.scenario.broker.addressing {
        opts.insert("addressing_mode".into(), a.clone());
    }
    for (k, v) in &d.options {
        opts.insert(k.clone(), json_scalar(v));
    }
    opts.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(m) = reply_mode {
        opts.insert("reply_mode".into(), m.to_string());
    }
    for (k, v) in opts {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// Short display of a target: `[exchange/]topic[.server][ v1.0][ ns=x]`.
pub fn target_label(t: &TargetSpec) -> String {
    let mut s = String::new();
    if let Some(x) = &t.exchange {
        s.push_str(x);
        s.push('/');
    }
    s.push_str(&t.topic);
    if let Some(srv) = &t.server {
        s.push('.');
        s.push_str(srv);
    }
    if let Some(v) = &t.version {
        s.push_str(&format!(" v{v}"));
    }
    if let Some(n) = &t.namespace {
        s.push_str(&format!(" ns={n}"));
    }
    s
}

fn compact(v: &Json) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn compact_map(m: &serde_json::Map<String, Json>) -> String {
    serde_json::to_string(m).unwrap_or_default()
}

/// Whether known failure `k` applies to the broker `spec` (label `kind:flavour`, kind, or flavour).
fn applies(k: &KnownFailure, spec_label: &str, kind: &str, flavour: Option<&str>) -> bool {
    k.broker == spec_label || k.broker == kind || Some(k.broker.as_str()) == flavour
}

struct Ctx<'a> {
    spec_label: String,
    kind: String,
    flavour: Option<String>,
    handle: Option<&'a BrokerHandle>,
    env: ops::Env,
    shared: Arc<Mutex<Shared>>,
    transcript: Transcript,
}

/// Outcome of one step: status, message, and the transcript line(s).
struct StepOutcome {
    status: StepStatus,
    message: Option<String>,
}

impl StepOutcome {
    fn pass() -> Self {
        StepOutcome {
            status: StepStatus::Passed,
            message: None,
        }
    }
    fn fail(m: impl Into<String>) -> Self {
        StepOutcome {
            status: StepStatus::Failed,
            message: Some(m.into()),
        }
    }
}

/// How long a `--url` broker may take to answer an AMQP Open before the run gives up.
const URL_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of each node's log kept in the JSON report.
const REPORT_LOG_LINES: usize = 200;

/// The last lines of each node's log (nodes without a log are left out), passwords masked.
fn node_logs(h: &BrokerHandle, secrets: &[String]) -> BTreeMap<String, String> {
    h.nodes
        .iter()
        .filter_map(|n| {
            let mut log = backend::log_tail(&n.logs(), REPORT_LOG_LINES);
            if log.trim().is_empty() {
                return None;
            }
            for s in secrets.iter().filter(|s| !s.is_empty()) {
                log = log.replace(s.as_str(), "***");
            }
            Some((n.name().to_string(), log))
        })
        .collect()
}

/// Runs `loaded` and returns its report (the transcript is redacted).
pub async fn run(loaded: &Loaded, opts: &RunOptions, term: &Terminal) -> RunResult {
    let started = Instant::now();
    let file = loaded.file.clone();
    let mut report = ScenarioReport {
        file: file.clone(),
        name: loaded.name.clone(),
        broker: "-".into(),
        groups: Vec::new(),
        error: None,
        snapshot: SnapshotStatus::NotChecked,
        transcript: String::new(),
        duration_ms: 0,
        exit_code: exit_code::OK,
        broker_logs: BTreeMap::new(),
    };
    let secrets: Vec<String> = loaded
        .scenario
        .broker
        .users
        .iter()
        .chain(
            loaded
                .scenario
                .notification_broker
                .iter()
                .flat_map(|b| b.users.iter()),
        )
        .map(|u| u.password.clone())
        .collect();
    let redactor = Redactor::new(secrets.clone());

    let (backend_kind, spec) = match resolve_spec(loaded, opts) {
        Ok(x) => x,
        Err(e) => {
            report.error = Some(e);
            report.exit_code = exit_code::BROKER_SETUP;
            return RunResult { report };
        }
    };
    let label = match (&opts.url, backend_kind) {
        (Some(_), _) => "url".to_string(),
        (None, BackendKind::Embedded) => spec.label(),
        (None, b) => format!("{b} {}", spec.label()),
    };
    report.broker = label;
    let counted = loaded
        .scenario
        .steps
        .iter()
        .filter(|s| !matches!(s, Step::Group(_)))
        .count();
    term.scenario_started(&file, &report.broker, counted);

    // Broker.
    let handle = if opts.url.is_some() {
        None
    } else {
        let b = backend::backend(backend_kind);
        if let Err(why) = b.available(spec.kind) {
            report.error = Some(format!(
                "broker setup failed: backend '{}' cannot run {}: {why}",
                b.name(),
                spec.label()
            ));
            report.exit_code = exit_code::BROKER_SETUP;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return RunResult { report };
        }
        match b.start(&spec).await {
            Ok(h) => Some(h),
            Err(e) => {
                report.error = Some(format!("broker setup failed: {e}"));
                report.exit_code = exit_code::BROKER_SETUP;
                report.duration_ms = started.elapsed().as_millis() as u64;
                return RunResult { report };
            }
        }
    };
    // `--url`: a broker nobody answers on is a broker setup failure (exit 4), found before any
    // service starts. (The error names host and port only: the URL may carry a password.)
    if let Some(u) = &opts.url {
        if let Err(e) = backend::wait_ready(u, URL_READY_TIMEOUT).await {
            report.error = Some(format!(
                "broker setup failed: the broker given with --url does not answer: {e}"
            ));
            report.exit_code = exit_code::BROKER_SETUP;
            report.duration_ms = started.elapsed().as_millis() as u64;
            return RunResult { report };
        }
    }
    let url = match (&opts.url, &handle) {
        (Some(u), _) => u.clone(),
        // oslo transport URLs are amqp://; TLS is switched on by the ssl options below.
        (None, Some(h)) => h.transport_url().replacen("amqps://", "amqp://", 1),
        (None, None) => String::new(),
    };

    let shared = Arc::new(Mutex::new(Shared::default()));
    // A TLS broker started here has a generated certificate: clients trust it through ssl_ca_file.
    let mut _ca_file = None;
    if spec.tls && opts.url.is_none() {
        if let Some(pem) = handle
            .as_ref()
            .and_then(|h| h.nodes.first())
            .and_then(|n| n.ca_pem())
        {
            match tempfile::NamedTempFile::new()
                .and_then(|f| std::fs::write(f.path(), pem).map(|()| f))
            {
                Ok(f) => {
                    if let Ok(mut sh) = shared.lock() {
                        sh.extra_options.insert("ssl".into(), "true".into());
                        sh.extra_options
                            .insert("ssl_ca_file".into(), f.path().display().to_string());
                    }
                    _ca_file = Some(f);
                }
                Err(e) => {
                    report.error = Some(format!("cannot write the broker's CA certificate: {e}"));
                    report.exit_code = exit_code::INTERNAL;
                    if let Some(h) = handle {
                        h.stop().await;
                    }
                    return RunResult { report };
                }
            }
        }
    }
    let mut transcript = Transcript::default();
    transcript.header(format!("scenario: {}", loaded.name));
    if let Some(d) = &loaded.scenario.description {
        transcript.header(format!(
            "description: {}",
            d.split_whitespace().collect::<Vec<_>>().join(" ")
        ));
    }
    transcript.header("services:");
    for svc in &loaded.scenario.services {
        let kind = match svc.kind {
            ServiceKind::Rust => "rust",
            ServiceKind::PythonOslo => "python-oslo",
        };
        let what = match (&svc.rpc_server, &svc.listener) {
            (Some(r), _) => {
                let methods: Vec<&str> = r
                    .endpoints
                    .iter()
                    .flat_map(|e| e.methods.keys().map(String::as_str))
                    .collect();
                format!(
                    "rpc_server {} methods [{}]",
                    target_label(&r.target),
                    methods.join(", ")
                )
            }
            (None, Some(l)) => {
                let t: Vec<String> = l.targets.iter().map(target_label).collect();
                let pool = l
                    .pool
                    .as_deref()
                    .map(|p| format!(" pool={p}"))
                    .unwrap_or_default();
                let pr = if l.priorities.is_empty() {
                    "all".to_string()
                } else {
                    l.priorities.join(",")
                };
                format!("listener [{}] priorities={pr}{pool}", t.join(", "))
            }
            _ => "nothing".into(),
        };
        let mut cfg = svc
            .config
            .as_ref()
            .map(|c| format!(" config={}", c.template))
            .unwrap_or_default();
        if let Some(v) = &svc.vhost {
            cfg.push_str(&format!(" vhost={v}"));
        }
        transcript.header(format!("  {} ({kind}): {what}{cfg}", svc.name));
    }

    // A second broker for notifications (mixed topologies); `--url` replaces both brokers.
    let mut notify_handle = None;
    if let (Some(nb), None) = (&loaded.scenario.notification_broker, &opts.url) {
        let started_nb = match notification_spec(nb, backend_kind, &opts.templates_dir) {
            Ok(nspec) => backend::backend(backend_kind)
                .start(&nspec)
                .await
                .map(|h| (h, nspec))
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match started_nb {
            Ok((h, nspec)) => {
                let mut nurl = h.transport_url().replacen("amqps://", "amqp://", 1);
                // Driver options for the notification transport only, as URL query options.
                let mut query = Vec::new();
                if let Some(a) = &nb.addressing {
                    query.push(format!("addressing_mode={a}"));
                }
                // RabbitMQ 3.x refuses oslo's dynamic reply link, without which the driver sends
                // nothing: the notification transport uses a named reply queue there.
                if registry_flavour(backend_kind, &nspec).as_deref() == Some("rabbitmq3") {
                    query.push("reply_mode=named".to_string());
                }
                if !query.is_empty() {
                    nurl.push(if nurl.contains('?') { '&' } else { '?' });
                    nurl.push_str(&query.join("&"));
                }
                if let Ok(mut sh) = shared.lock() {
                    sh.notification_url = Some(nurl);
                }
                transcript.header(format!("notification broker: {}", nspec.label()));
                notify_handle = Some(h);
            }
            Err(e) => {
                report.error = Some(format!("broker setup failed: notification broker: {e}"));
                report.exit_code = exit_code::BROKER_SETUP;
                if let Some(h) = handle {
                    h.stop().await;
                }
                report.duration_ms = started.elapsed().as_millis() as u64;
                return RunResult { report };
            }
        }
    }

    let env = match ops::Env::start(loaded, &url, &opts.templates_dir, shared.clone()).await {
        Ok(env) => env,
        Err(e) => {
            report.error = Some(format!("runtime setup failed: {e}"));
            report.exit_code = exit_code::RUNTIME;
            if let Some(h) = handle {
                report.broker_logs = node_logs(&h, &secrets);
                h.stop().await;
            }
            if let Some(h) = notify_handle {
                report.broker_logs.extend(
                    node_logs(&h, &secrets)
                        .into_iter()
                        .map(|(k, v)| (format!("notifications-{k}"), v)),
                );
                h.stop().await;
            }
            report.duration_ms = started.elapsed().as_millis() as u64;
            return RunResult { report };
        }
    };
    for note in env.notes() {
        transcript.header(note.clone());
    }
    let mut ctx = Ctx {
        spec_label: spec.label(),
        kind: spec.kind.to_string(),
        flavour: if opts.url.is_some() {
            spec.flavour.clone()
        } else {
            registry_flavour(backend_kind, &spec)
        },
        handle: handle.as_ref(),
        env,
        shared: shared.clone(),
        transcript,
    };

    let mut group = GroupReport {
        name: "main".into(),
        steps: Vec::new(),
    };
    for (i, step) in loaded.scenario.steps.iter().enumerate() {
        let index = i + 1;
        let line = loaded
            .locator
            .key(&format!("steps.{i}.{}", step.keyword()))
            .map(|s| s.line)
            .unwrap_or(0);
        if let Step::Group(name) = step {
            if !group.steps.is_empty() {
                report.groups.push(std::mem::replace(
                    &mut group,
                    GroupReport {
                        name: name.clone(),
                        steps: Vec::new(),
                    },
                ));
            } else {
                group.name = name.clone();
            }
            ctx.transcript.step(format!("{index} group {name}"));
            continue;
        }
        let t0 = Instant::now();
        let out = run_step(&mut ctx, index, step).await;
        let sr = StepReport {
            index,
            keyword: step.keyword().into(),
            line,
            status: out.status,
            message: out.message.map(|m| redactor.redact(&m)),
            duration_ms: t0.elapsed().as_millis() as u64,
        };
        term.step_finished(&sr);
        group.steps.push(sr);
    }
    report.groups.push(group);

    // Driver events and teardown.
    let Ctx {
        env,
        mut transcript,
        ..
    } = ctx;
    let events = env.shutdown().await;
    for (src, ev) in events {
        transcript.event(&src, ev);
    }
    if let Some(h) = handle {
        if report.failures().next().is_some() {
            report.broker_logs = node_logs(&h, &secrets);
        }
        h.stop().await;
    }
    if let Some(h) = notify_handle {
        if report.failures().next().is_some() {
            report.broker_logs.extend(
                node_logs(&h, &secrets)
                    .into_iter()
                    .map(|(k, v)| (format!("notifications-{k}"), v)),
            );
        }
        h.stop().await;
    }
    {
        let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
        for (svc, ds) in &sh.deliveries {
            for d in ds {
                transcript.delivery(svc, d.line.clone());
            }
        }
    }
    report.transcript = redactor.redact(&transcript.render());
    if report.failures().next().is_some() {
        report.exit_code = exit_code::MISMATCH;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    RunResult { report }
}

async fn run_step(ctx: &mut Ctx<'_>, index: usize, step: &Step) -> StepOutcome {
    match step {
        Step::Group(_) => StepOutcome::pass(),
        Step::Sleep(d) => {
            let d = parse_duration(d).unwrap_or_default();
            tokio::time::sleep(d).await;
            ctx.transcript.step(format!("{index} sleep"));
            StepOutcome::pass()
        }
        Step::Call(c) => {
            let n = c.repeat.unwrap_or(1);
            let conc = c.concurrency.unwrap_or(1).max(1);
            let timeout = c.timeout.as_deref().and_then(|t| parse_duration(t).ok());
            let monitor = c
                .call_monitor_timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok());
            let results = ctx
                .env
                .call(
                    c.from.as_deref(),
                    &c.target,
                    &c.method,
                    &c.args,
                    &c.context,
                    timeout,
                    monitor,
                    c.reply_mode.as_deref(),
                    n,
                    conc,
                )
                .await;
            let head = format!(
                "{index} call {} {} {}",
                target_label(&c.target),
                c.method,
                compact_map(&c.args)
            );
            let head = if n > 1 {
                format!("{head} x{n} (concurrency {conc})")
            } else {
                head
            };
            check_results(
                ctx,
                head,
                results,
                c.expect.as_ref(),
                &c.known_failures,
                true,
            )
        }
        Step::Cast(c) | Step::Fanout(c) => {
            let fanout = matches!(step, Step::Fanout(_));
            let n = c.repeat.unwrap_or(1);
            let results = ctx
                .env
                .cast(
                    c.from.as_deref(),
                    &c.target,
                    &c.method,
                    &c.args,
                    &c.context,
                    fanout,
                    n,
                )
                .await;
            let kw = if fanout { "fanout" } else { "cast" };
            let head = format!(
                "{index} {kw} {} {} {}",
                target_label(&c.target),
                c.method,
                compact_map(&c.args)
            );
            let head = if n > 1 { format!("{head} x{n}") } else { head };
            let results = results
                .into_iter()
                .map(|r| r.map(|()| Json::Null))
                .collect();
            check_results(
                ctx,
                head,
                results,
                c.expect.as_ref(),
                &c.known_failures,
                false,
            )
        }
        Step::Notify(n) => {
            let count = n.repeat.unwrap_or(1);
            let topics = if n.topics.is_empty() {
                vec!["notifications".to_string()]
            } else {
                n.topics.clone()
            };
            let results = ctx.env.notify(n, &topics, count).await;
            let from = n
                .from
                .as_deref()
                .map(|f| format!(" from {f}"))
                .unwrap_or_default();
            let head = format!(
                "{index} notify{from} v{} [{}] {} {} {}",
                n.version.unwrap_or(2),
                topics.join(","),
                n.priority,
                n.event_type,
                compact(&n.payload)
            );
            let head = if count > 1 {
                format!("{head} x{count}")
            } else {
                head
            };
            let results = results
                .into_iter()
                .map(|r| r.map(|()| Json::Null))
                .collect();
            check_results(
                ctx,
                head,
                results,
                n.expect.as_ref(),
                &n.known_failures,
                false,
            )
        }
        Step::Wait(w) => {
            let timeout = w
                .timeout
                .as_deref()
                .and_then(|t| parse_duration(t).ok())
                .unwrap_or(Duration::from_secs(10));
            let deadline = Instant::now() + timeout;
            loop {
                let missing: Vec<String> = {
                    let sh = ctx.shared.lock().unwrap_or_else(|p| p.into_inner());
                    w.deliveries
                        .iter()
                        .filter_map(|(svc, n)| {
                            let got = sh.deliveries.get(svc).map(Vec::len).unwrap_or(0);
                            (got < *n).then(|| format!("{svc}: {got}/{n}"))
                        })
                        .collect()
                };
                let parts: Vec<String> = w
                    .deliveries
                    .iter()
                    .map(|(s, n)| format!("{s}>={n}"))
                    .collect();
                if missing.is_empty() {
                    ctx.transcript
                        .step(format!("{index} wait {} -> ok", parts.join(" ")));
                    return StepOutcome::pass();
                }
                if Instant::now() >= deadline {
                    ctx.transcript.step(format!(
                        "{index} wait {} -> timed out ({})",
                        parts.join(" "),
                        missing.join(", ")
                    ));
                    return StepOutcome::fail(format!(
                        "timed out waiting for deliveries: {}",
                        missing.join(", ")
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Step::Expect(e) => {
            let mut problems = Vec::new();
            let mut parts = Vec::new();
            {
                let sh = ctx.shared.lock().unwrap_or_else(|p| p.into_inner());
                for (svc, want) in &e.deliveries {
                    let got = sh.deliveries.get(svc).map(Vec::len).unwrap_or(0);
                    parts.push(format!("{svc}={got}"));
                    if got != *want {
                        problems.push(format!("{svc} received {got} deliveries, expected {want}"));
                    }
                }
                for (svc, methods) in &e.received {
                    for (m, want) in methods {
                        let got = sh
                            .deliveries
                            .get(svc)
                            .map(|v| v.iter().filter(|d| &d.key == m).count())
                            .unwrap_or(0);
                        parts.push(format!("{svc}.{m}={got}"));
                        if got != *want {
                            problems
                                .push(format!("{svc} received {m} {got} times, expected {want}"));
                        }
                    }
                }
            }
            if let Some(want) = &e.broker_counters {
                match ctx
                    .handle
                    .and_then(|h| h.nodes.first())
                    .and_then(|n| n.counters())
                {
                    // `flavour: X` in the expectation scopes it to that broker flavour: queue and
                    // address names are flavour-specific (a router has no queues).
                    Some(actual)
                        if want.get("flavour").is_some()
                            && want.get("flavour") != actual.get("flavour") =>
                    {
                        parts.push("broker_counters (not available, skipped)".into());
                    }
                    Some(actual) => {
                        let mut diffs = Vec::new();
                        json_subset("", want, &actual, &mut diffs);
                        parts.push(format!("broker_counters {}", compact(want)));
                        problems.extend(diffs);
                    }
                    None => parts.push("broker_counters (not available, skipped)".into()),
                }
            }
            let verdict = if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED: {}", problems.join("; "))
            };
            ctx.transcript
                .step(format!("{index} expect {} -> {verdict}", parts.join(" ")));
            if problems.is_empty() {
                StepOutcome::pass()
            } else {
                StepOutcome::fail(problems.join("; "))
            }
        }
        Step::Kill(n) => fault(ctx, index, "kill", n.node.as_deref(), None).await,
        Step::Restart(n) => fault(ctx, index, "restart", n.node.as_deref(), None).await,
        Step::DropConnections(n) => {
            fault(ctx, index, "drop_connections", n.node.as_deref(), None).await
        }
        Step::Pause(p) => {
            let d = parse_duration(&p.duration).unwrap_or_default();
            fault(ctx, index, "pause", p.node.as_deref(), Some(d)).await
        }
    }
}

fn json_subset(path: &str, want: &Json, actual: &Json, out: &mut Vec<String>) {
    match (want, actual) {
        (Json::Object(w), Json::Object(a)) => {
            for (k, v) in w {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    Some(av) => json_subset(&p, v, av, out),
                    None => out.push(format!("broker counter {p} is missing")),
                }
            }
        }
        (w, a) if w == a => {}
        (w, a) => out.push(format!(
            "broker counter {path} is {}, expected {}",
            compact(a),
            compact(w)
        )),
    }
}

async fn fault(
    ctx: &mut Ctx<'_>,
    index: usize,
    op: &str,
    node: Option<&str>,
    pause: Option<Duration>,
) -> StepOutcome {
    let node_name = node
        .map(|n| {
            if n.starts_with("node") {
                n.to_string()
            } else {
                format!("node{n}")
            }
        })
        .unwrap_or_else(|| "node0".into());
    let Some(h) = ctx.handle else {
        ctx.transcript.step(format!(
            "{index} {op} {node_name} -> skipped (no managed broker)"
        ));
        return StepOutcome {
            status: StepStatus::Skipped,
            message: Some("fault steps need a broker started by the harness (not --url)".into()),
        };
    };
    let Some(n) = h.node(&node_name) else {
        return StepOutcome::fail(format!("no broker node {node_name}"));
    };
    let r = match op {
        "kill" => n.kill().await,
        "restart" => n.restart().await,
        "drop_connections" => n.drop_connections().await,
        "pause" => match n.pause().await {
            Ok(()) => {
                tokio::time::sleep(pause.unwrap_or_default()).await;
                n.resume().await
            }
            Err(e) => Err(e),
        },
        _ => Ok(()),
    };
    match r {
        Ok(()) => {
            ctx.transcript
                .step(format!("{index} {op} {node_name} -> ok"));
            StepOutcome::pass()
        }
        Err(backend::BackendError::Unsupported { backend, what }) => {
            ctx.transcript
                .step(format!("{index} {op} {node_name} -> skipped (unsupported)"));
            StepOutcome {
                status: StepStatus::Skipped,
                message: Some(format!("backend {backend} does not support {what}")),
            }
        }
        Err(e) => {
            ctx.transcript
                .step(format!("{index} {op} {node_name} -> error"));
            StepOutcome::fail(e.to_string())
        }
    }
}

/// The error as written to the transcript: kind, remote exception and broker condition, plus the
/// message except for timeouts, whose free text is an implementation detail that differs between
/// brokers (e.g. "no reply within the call timeout" on a broker, nothing on a router). The full text
/// stays in the step message ([`describe_err`]) shown in the terminal and the JSON report.
fn describe_err_neutral(e: &OpError) -> String {
    if e.kind == "timed_out" {
        let mut s = format!("error {}", e.kind);
        if let Some((class, module)) = &e.remote {
            s.push_str(&format!(" {module}.{class}"));
        }
        if let Some(c) = &e.condition {
            s.push_str(&format!(" {c}"));
        }
        s
    } else {
        describe_err(e)
    }
}

fn describe_err(e: &OpError) -> String {
    let mut s = format!("error {}", e.kind);
    if let Some((class, module)) = &e.remote {
        s.push_str(&format!(" {module}.{class}"));
    }
    if let Some(c) = &e.condition {
        s.push_str(&format!(" {c}"));
    }
    if let Some(m) = &e.message {
        let first = m.lines().next().unwrap_or("");
        s.push_str(&format!(" {:?}", first));
    }
    s
}

fn check_results(
    ctx: &mut Ctx<'_>,
    head: String,
    results: Vec<Result<Json, OpError>>,
    expect: Option<&CallExpect>,
    known: &[KnownFailure],
    is_call: bool,
) -> StepOutcome {
    let kf = known
        .iter()
        .find(|k| applies(k, &ctx.spec_label, &ctx.kind, ctx.flavour.as_deref()));
    // Summarise identical outcomes (concurrent calls finish in any order).
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    // Details left out of the transcript (see describe_err_neutral), kept for the step message.
    let mut details: Vec<String> = Vec::new();
    for r in &results {
        let s = match r {
            Ok(v) if is_call => format!("ok {}", compact(v)),
            Ok(_) => "ok".to_string(),
            Err(e) => {
                let full = describe_err(e);
                let neutral = describe_err_neutral(e);
                if full != neutral && !details.contains(&full) {
                    details.push(full);
                }
                neutral
            }
        };
        *outcomes.entry(s).or_default() += 1;
    }
    let summary: Vec<String> = outcomes
        .iter()
        .map(|(s, n)| {
            if *n > 1 || results.len() > 1 {
                format!("{s} (x{n})")
            } else {
                s.clone()
            }
        })
        .collect();
    let mut problems = Vec::new();
    if let Some(k) = kf {
        // Expected to fail on this broker with k.condition.
        let matching = results.iter().all(|r| match r {
            Err(e) => e.condition.as_deref() == Some(k.condition.as_str()) || e.kind == k.condition,
            Ok(_) => false,
        });
        ctx.transcript.step(format!(
            "{head} -> {} [expected failure on {}]",
            summary.join("; "),
            k.broker
        ));
        if matching {
            let why = k
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return StepOutcome {
                status: StepStatus::ExpectedFailure,
                message: Some(format!(
                    "failed as expected on {} with {}{why}",
                    k.broker, k.condition
                )),
            };
        }
        return StepOutcome::fail(format!(
            "expected to fail on {} with {}, got: {}",
            k.broker,
            k.condition,
            summary.join("; ")
        ));
    }
    ctx.transcript
        .step(format!("{head} -> {}", summary.join("; ")));
    let default = CallExpect::default();
    let exp = expect.unwrap_or(&default);
    for r in &results {
        match (r, &exp.error) {
            (Ok(v), None) => {
                if let Some(want) = &exp.result {
                    if v != want {
                        problems.push(format!(
                            "result {} != expected {}",
                            compact(v),
                            compact(want)
                        ));
                    }
                }
            }
            (Ok(v), Some(e)) => problems.push(format!(
                "expected error {}, got result {}",
                e.kind,
                compact(v)
            )),
            (Err(err), None) => problems.push(format!("unexpected {}", describe_err(err))),
            (Err(err), Some(e)) => {
                if err.kind != e.kind {
                    problems.push(format!(
                        "expected error {}, got {}",
                        e.kind,
                        describe_err(err)
                    ));
                }
                if let Some(c) = &e.class {
                    if err.remote.as_ref().map(|r| &r.0) != Some(c) {
                        problems.push(format!(
                            "expected exception class {c}, got {}",
                            describe_err(err)
                        ));
                    }
                }
                if let Some(m) = &e.module {
                    if err.remote.as_ref().map(|r| &r.1) != Some(m) {
                        problems.push(format!(
                            "expected exception module {m}, got {}",
                            describe_err(err)
                        ));
                    }
                }
                if let Some(m) = &e.message_contains {
                    if !err.message.as_deref().unwrap_or("").contains(m.as_str()) {
                        problems.push(format!(
                            "expected the error message to contain {m:?}, got {}",
                            describe_err(err)
                        ));
                    }
                }
                if let Some(c) = &e.condition {
                    if err.condition.as_deref() != Some(c.as_str()) {
                        problems.push(format!("expected condition {c}, got {}", describe_err(err)));
                    }
                }
            }
        }
    }
    problems.dedup();
    if problems.is_empty() {
        if details.is_empty() {
            StepOutcome::pass()
        } else {
            StepOutcome {
                status: StepStatus::Passed,
                message: Some(details.join("; ")),
            }
        }
    } else {
        StepOutcome::fail(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: BrokerKind, flavour: Option<&str>, version: Option<&str>) -> BrokerSpec {
        let mut s = BrokerSpec::new(kind, "templates");
        s.flavour = flavour.map(str::to_string);
        s.version = version.map(str::to_string);
        s
    }

    #[test]
    fn rabbitmq_flavour_comes_from_the_version() {
        let r = BrokerKind::Rabbitmq;
        let f = |fl, v, b| registry_flavour(b, &spec(r, fl, v));
        assert_eq!(
            f(None, Some("3.10"), BackendKind::Container).as_deref(),
            Some("rabbitmq3")
        );
        assert_eq!(
            f(Some("4.2"), None, BackendKind::Container).as_deref(),
            Some("rabbitmq4")
        );
        assert_eq!(
            f(Some("3.13"), Some("3.13"), BackendKind::Process).as_deref(),
            Some("rabbitmq3")
        );
        // A named flavour wins over the version.
        assert_eq!(
            f(Some("rabbitmq4"), Some("3.10"), BackendKind::Process).as_deref(),
            Some("rabbitmq4")
        );
        // Other brokers keep their flavour.
        assert_eq!(
            registry_flavour(
                BackendKind::Container,
                &spec(BrokerKind::Qpidd, Some("centos7"), Some("1.39.0"))
            )
            .as_deref(),
            Some("centos7")
        );
    }

    #[test]
    fn notification_broker_spec_and_validation() {
        let text = "broker: {kind: embedded, flavour: router}\nnotification_broker: {kind: qpidd, nodes: 2}\nsteps:\n  - sleep: 1ms\n";
        let Ok(loaded) = crate::scenario::parse_str("t.yaml", "t", text, &[], &[]) else {
            panic!("scenario loads");
        };
        let nb = loaded
            .scenario
            .notification_broker
            .as_ref()
            .expect("notification_broker parsed");
        // On the embedded backend a real kind becomes the embedded broker of that flavour.
        let spec =
            notification_spec(nb, BackendKind::Embedded, Path::new("templates")).expect("spec");
        assert_eq!(spec.kind, BrokerKind::Embedded);
        assert_eq!(spec.flavour.as_deref(), Some("qpidd"));
        assert_eq!(spec.nodes, 2);
        let spec =
            notification_spec(nb, BackendKind::Process, Path::new("templates")).expect("spec");
        assert_eq!(spec.kind, BrokerKind::Qpidd);
        // An unknown flavour is a validation error naming the key.
        let bad = "notification_broker: {kind: embedded, flavour: qpid}\nsteps:\n  - sleep: 1ms\n";
        match crate::scenario::parse_str("t.yaml", "t", bad, &[], &[]) {
            Ok(_) => panic!("an unknown notification broker flavour must be rejected"),
            Err(inv) => assert!(
                inv.render()
                    .contains("unknown embedded broker flavour 'qpid'")
                    && inv.render().contains("t.yaml:1:48"),
                "{}",
                inv.render()
            ),
        }
    }

    #[test]
    fn run_options_version_and_image_reach_the_spec() {
        let loaded = crate::scenario::parse_str(
            "t.yaml",
            "t",
            "broker: {kind: rabbitmq}\nsteps:\n  - sleep: 1ms\n",
            &[],
            &[],
        );
        let Ok(loaded) = loaded else {
            panic!("scenario loads");
        };
        let opts = RunOptions {
            backend: Some(BackendKind::Container),
            broker: None,
            url: None,
            templates_dir: PathBuf::from("templates"),
            version: Some("3.10".into()),
            image: Some("amqp1-rig/rabbitmq:3.10".into()),
        };
        let (_, spec) = resolve_spec(&loaded, &opts).expect("resolves");
        assert_eq!(spec.version.as_deref(), Some("3.10"));
        assert_eq!(spec.image.as_deref(), Some("amqp1-rig/rabbitmq:3.10"));
        assert_eq!(
            registry_flavour(BackendKind::Container, &spec).as_deref(),
            Some("rabbitmq3")
        );
    }
}
