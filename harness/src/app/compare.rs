//! `harness compare SCENARIO --broker A --broker B ...`: one scenario on several brokers, and where their
//! transcripts differ.

use std::path::PathBuf;

use driver::url::TransportUrl;

use crate::backend::BackendKind;
use crate::brokers::BrokerChoice;
use crate::exit_code;
use crate::plan::Overrides;
use crate::report::compare::{self, Column, Comparison};
use crate::report::events::{Reporter, RunEvent};
use crate::report::terminal::Terminal;

/// A broker to compare: `KIND[:FLAVOUR][@BACKEND]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// As written.
    pub label: String,
    /// The broker.
    pub choice: BrokerChoice,
    /// The backend, when named.
    pub backend: Option<BackendKind>,
}

/// Parses `KIND[:FLAVOUR][@BACKEND]` (`rabbitmq@process`, `embedded:router`, `qpidd:centos7@container`).
pub fn parse_target(s: &str) -> Result<Target, String> {
    let (broker, backend) = match s.rsplit_once('@') {
        Some((b, k)) => (
            b,
            Some(k.parse::<BackendKind>().map_err(|e| e.to_string())?),
        ),
        None => (s, None),
    };
    Ok(Target {
        label: s.to_string(),
        choice: BrokerChoice::parse(broker)?,
        backend,
    })
}

/// `harness compare` arguments.
#[derive(Debug, clap::Args)]
pub struct CompareArgs {
    /// The scenario.
    #[arg(value_name = "SCENARIO")]
    pub file: PathBuf,
    /// A broker to run it on: KIND[:FLAVOUR][@BACKEND] (repeatable; e.g. embedded:qpidd,
    /// rabbitmq@process, qpidd@container).
    #[arg(long = "broker", value_name = "KIND[:FLAVOUR][@BACKEND]", value_parser = parse_target)]
    pub brokers: Vec<Target>,
    /// An already running broker to run it on (repeatable).
    #[arg(long = "url", value_name = "URL", value_parser = crate::cli::UrlParser)]
    pub urls: Vec<TransportUrl>,
    /// Set a scenario variable (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = crate::cli::VarParser)]
    pub vars: Vec<(String, String)>,
    /// Write the comparison as Markdown.
    #[arg(long, value_name = "PATH")]
    pub md: Option<PathBuf>,
    /// Write the comparison as a self-contained HTML page.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Write the comparison (and every run's report) as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// Runs the scenario once per target; `None` when it cannot even be loaded (already reported).
pub async fn runs(
    file: &std::path::Path,
    targets: &[(String, Overrides)],
    vars: &[(String, String)],
    templates: &std::path::Path,
    term: &Terminal,
) -> Result<Vec<Column>, i32> {
    let env = super::env_pairs();
    let mut columns = Vec::new();
    for (label, overrides) in targets {
        match super::run::load_and_plan(file, &env, vars, overrides, templates) {
            Ok(plan) => {
                let report = crate::runner::run(&plan, term).await;
                term.event(&RunEvent::ScenarioFinished(&report));
                columns.push(Column {
                    broker: label.clone(),
                    identity: Some(plan.identity.describe()),
                    report,
                });
            }
            Err(r) if r.exit_code == exit_code::SCENARIO_INVALID => return Err(r.exit_code),
            Err(r) => columns.push(Column {
                broker: label.clone(),
                identity: None,
                report: *r,
            }),
        }
    }
    Ok(columns)
}

fn write_outputs(c: &Comparison, args: &CompareArgs) -> i32 {
    let mut code = exit_code::OK;
    let mut write = |path: &Option<PathBuf>, text: String| {
        if let Some(p) = path {
            if let Err(e) = crate::report::write_file(p, &text) {
                eprintln!("error: cannot write {}: {e}", p.display());
                code = exit_code::INTERNAL;
            }
        }
    };
    write(&args.md, compare::render_markdown(c));
    write(&args.html, compare::render_html(c));
    write(
        &args.json,
        serde_json::to_string_pretty(c).unwrap_or_default() + "\n",
    );
    code
}

/// `harness compare`: exit 0 when it ran, whatever the differences.
pub async fn run(args: CompareArgs, templates: &std::path::Path) -> i32 {
    let mut targets: Vec<(String, Overrides)> = args
        .brokers
        .iter()
        .map(|t| {
            let o = Overrides {
                backend: t.backend,
                broker: Some(t.choice.clone()),
                ..Overrides::default()
            };
            (t.label.clone(), o)
        })
        .collect();
    for (i, u) in args.urls.iter().enumerate() {
        let o = Overrides {
            url: Some(u.clone()),
            ..Overrides::default()
        };
        targets.push((format!("url{}", i + 1), o));
    }
    if targets.len() < 2 {
        eprintln!("error: compare needs at least two brokers (--broker KIND[:FLAVOUR][@BACKEND] or --url URL)");
        return exit_code::USAGE;
    }
    let term = Terminal::new();
    let columns = match runs(&args.file, &targets, &args.vars, templates, &term).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let all_failed = columns.iter().all(|c| c.report.error.is_some());
    let c = compare::compare(&args.file.display().to_string(), columns);
    outln!("\n{}", compare::render_terminal(&c));
    let written = write_outputs(&c, &args);
    if all_failed {
        return exit_code::combine(exit_code::BROKER_SETUP, written);
    }
    written
}
