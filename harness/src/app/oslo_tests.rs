//! `harness oslo-tests`: oslo.messaging's functional suite against a broker the harness starts (or
//! one given with `--url`), with per-test progress, expected failures from the registry, and JUnit and
//! JSON reports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driver::url::TransportUrl;
use serde::Serialize;

use crate::backend::BackendKind;
use crate::brokers::{BrokerChoice, Identity, Product};
use crate::exit_code;
use crate::oslo_tests::{self, Counts, ModuleRun, Progress, Setup, Status};
use crate::plan::{self, Overrides, Placement};
use crate::runner::setup::Brokers;

fn duration(s: &str) -> Result<Duration, String> {
    crate::scenario::validate::parse_duration(s)
}

/// `harness oslo-tests` arguments.
#[derive(Debug, clap::Args)]
pub struct OsloTestsArgs {
    /// Broker to run the suite against: KIND[:FLAVOUR] (default embedded:qpidd).
    #[arg(long, value_name = "KIND[:FLAVOUR]", value_parser = BrokerChoice::parse)]
    pub broker: Option<BrokerChoice>,
    /// Backend that starts it.
    #[arg(long, value_name = "BACKEND", value_parser = crate::cli::parse_backend)]
    pub backend: Option<BackendKind>,
    /// An already running broker instead.
    #[arg(long, value_name = "URL", conflicts_with_all = ["backend", "broker"], value_parser = crate::cli::UrlParser)]
    pub url: Option<TransportUrl>,
    /// Notifications to this broker (default: the RPC broker; a router gets a qpidd for them).
    #[arg(long, value_name = "URL", value_parser = crate::cli::UrlParser)]
    pub notify_url: Option<TransportUrl>,
    /// Only tests whose id contains PATTERN (repeatable).
    #[arg(short = 'k', value_name = "PATTERN")]
    pub patterns: Vec<String>,
    /// Bound on each test.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "120s")]
    pub test_timeout: Duration,
    /// Bound on each of the two files' runs.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "20m")]
    pub timeout: Duration,
    /// Write a JUnit XML report.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct OsloReport {
    /// The broker as reports name it.
    pub broker: String,
    /// What it is.
    pub identity: String,
    /// The two files.
    pub modules: Vec<ModuleRun>,
    /// Counts.
    pub counts: Counts,
    /// Seconds.
    pub seconds: f64,
}

/// The scenario-shaped description of the brokers: the broker, and for a router a qpidd for
/// notifications (as devstack's qpid-dual did).
fn broker_yaml(router_needs_store: bool) -> String {
    let mut y = String::from("broker: {kind: embedded, flavour: qpidd}\n");
    if router_needs_store {
        y.push_str("notification_broker: {kind: qpidd}\n");
    }
    y.push_str("steps:\n  - sleep: 1ms\n");
    y
}

fn plan_for(
    args: &OsloTestsArgs,
    templates: &Path,
    with_store: bool,
) -> Result<plan::RunPlan, String> {
    let loaded = crate::scenario::parse_str(
        "oslo-tests",
        "oslo-tests",
        &broker_yaml(with_store),
        &[],
        &[],
    )
    .map_err(|e| e.render())?;
    let overrides = Overrides {
        backend: args.backend,
        broker: args.broker.clone(),
        url: args.url.clone(),
        ..Overrides::default()
    };
    plan::plan(&loaded, &overrides, templates).map_err(|e| e.to_string())
}

fn amqp1_backend(id: &Identity) -> Option<&'static str> {
    match id.product {
        Some(Product::Qpidd) => Some("qpidd"),
        Some(Product::Qdrouterd) => Some("qdrouterd"),
        _ => None,
    }
}

fn show(p: Progress<'_>) {
    match p {
        Progress::Collected(m, n) => eprintln!("{m}: {n} tests"),
        Progress::Started(_) => {}
        Progress::Finished(t) => {
            let word = match t.status {
                Status::Passed => "PASS ",
                Status::Failed => "FAIL ",
                Status::Skipped => "SKIP ",
                Status::ExpectedFailure => "XFAIL",
            };
            let why = t
                .reason
                .as_deref()
                .filter(|_| t.status != Status::Passed)
                .map(|r| format!(": {}", r.lines().next().unwrap_or("")))
                .unwrap_or_default();
            eprintln!("  {word} {} ({:.1} s){why}", t.id, t.seconds);
        }
    }
}

/// Runs the suite as `args` says; `Err((exit code, message))` when it cannot start.
pub async fn execute(args: &OsloTestsArgs, templates: &Path) -> Result<OsloReport, (i32, String)> {
    let python = crate::peer::venv_python(&crate::peer::default_venv())
        .map_err(|e| (exit_code::BROKER_SETUP, e.to_string()))?;
    let registry = oslo_tests::load_registry(&oslo_tests::registry_path())
        .map_err(|e| (exit_code::INTERNAL, e))?;
    let setup_err = |e: String| (exit_code::BROKER_SETUP, e);
    let mut plan = plan_for(args, templates, false).map_err(setup_err)?;
    let router = plan.identity.product == Some(Product::Qdrouterd);
    if router && args.notify_url.is_none() && matches!(plan.broker, Placement::Managed { .. }) {
        plan = plan_for(args, templates, true).map_err(setup_err)?;
    }
    let (brokers, conn) = Brokers::start(&plan)
        .await
        .map_err(|e| (e.code, e.message))?;
    let notify = args
        .notify_url
        .clone()
        .or(conn.notify_url.clone())
        .unwrap_or_else(|| conn.url.clone());
    let setup = Setup {
        python,
        rpc_url: conn.url.expose().expose().to_string(),
        notify_url: notify.expose().expose().to_string(),
        amqp1_backend: amqp1_backend(&plan.identity),
        patterns: args.patterns.clone(),
        test_timeout: args.test_timeout,
        module_timeout: args.timeout,
    };
    eprintln!(
        "oslo.messaging functional tests on {} ({}){}",
        plan.label,
        plan.identity.describe(),
        if conn.notify_url.is_some() {
            ", notifications on their own broker"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let mut modules = Vec::new();
    for m in oslo_tests::MODULES {
        modules.push(oslo_tests::run_module(&setup, m, &registry, &plan.identity, &show).await);
    }
    brokers.stop().await;
    Ok(OsloReport {
        broker: plan.label.clone(),
        identity: plan.identity.describe(),
        counts: Counts::of(&modules),
        modules,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `harness oslo-tests`.
pub async fn run(args: OsloTestsArgs, templates: &Path) -> i32 {
    match execute(&args, templates).await {
        Ok(report) => finish(&report, &args),
        Err((code, e)) => {
            eprintln!("error: {e}");
            code
        }
    }
}

impl OsloReport {
    /// Whether every test passed, was skipped or failed as expected, and both files ran to the end.
    pub fn passed(&self) -> bool {
        self.counts.failed == 0 && self.modules.iter().all(|m| m.error.is_none())
    }
}

impl OsloTestsArgs {
    /// The arguments a matrix cell runs the suite with.
    pub fn for_cell(backend: BackendKind, broker: BrokerChoice) -> Self {
        OsloTestsArgs {
            broker: Some(broker),
            backend: Some(backend),
            url: None,
            notify_url: None,
            patterns: Vec::new(),
            // A matrix cell runs the whole suite; its slowest passing test takes well under 40 s, so a
            // hung one (an expected failure on RabbitMQ) costs one minute, not the interactive two.
            test_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(20 * 60),
            junit: None,
            json: None,
        }
    }
}

fn finish(report: &OsloReport, args: &OsloTestsArgs) -> i32 {
    let broken: Vec<&ModuleRun> = report
        .modules
        .iter()
        .filter(|m| m.error.is_some())
        .collect();
    outln!(
        "{}: oslo.messaging functional tests on {} ({}): {} in {:.0} s",
        if report.passed() { "ok" } else { "FAILED" },
        report.broker,
        report.identity,
        report.counts,
        report.seconds
    );
    for t in report.modules.iter().flat_map(|m| m.tests.iter()) {
        match t.status {
            Status::Failed => outln!(
                "  FAIL {}: {}\n{}",
                t.id,
                t.reason.as_deref().unwrap_or(""),
                indent(t.traceback.as_deref().unwrap_or(""))
            ),
            Status::Skipped => outln!("  skipped {}: {}", t.id, t.reason.as_deref().unwrap_or("")),
            Status::ExpectedFailure => outln!(
                "  expected failure {}: {}",
                t.id,
                t.reason.as_deref().unwrap_or("")
            ),
            Status::Passed => {}
        }
    }
    for m in &broken {
        outln!("  ERROR {}: {}", m.module, m.error.as_deref().unwrap_or(""));
    }
    let mut code = if report.passed() {
        exit_code::OK
    } else {
        exit_code::MISMATCH
    };
    if let Some(p) = &args.junit {
        if let Err(e) = crate::report::write_file(p, &crate::report::junit::render_oslo(report)) {
            eprintln!("error: cannot write {}: {e}", p.display());
            code = exit_code::combine(code, exit_code::INTERNAL);
        }
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(report).unwrap_or_default() + "\n";
        if let Err(e) = crate::report::write_file(p, &text) {
            eprintln!("error: cannot write {}: {e}", p.display());
            code = exit_code::combine(code, exit_code::INTERNAL);
        }
    }
    code
}

fn indent(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..]
        .iter()
        .map(|l| format!("      {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
