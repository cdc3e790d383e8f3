//! `harness run`: load each scenario, plan it with the command line's overrides, run it, check its
//! snapshot, and write the reports.

use std::path::{Path, PathBuf};

use crate::cli::RunArgs;
use crate::exit_code;
use crate::plan::{self, Overrides, RunPlan};
use crate::report::events::{Reporter, RunEvent};
use crate::report::terminal::Terminal;
use crate::report::{self, ScenarioReport, SnapshotStatus};
use crate::scenario::{self, LoadError};
use crate::snapshot;

/// How a run treats the scenario's snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Compare.
    Check,
    /// Accept the new transcript (unless steps failed).
    Update,
    /// Do not look.
    Skip,
}

/// Prints an invalid scenario's diagnostics and reports it (exit 3) with its first message.
fn invalid_report(file: &Path, inv: &scenario::Invalid) -> ScenarioReport {
    eprint!("{}", inv.render());
    let first = inv
        .diagnostics
        .first()
        .map(|d| d.message.clone())
        .unwrap_or_default();
    error_report(
        file,
        exit_code::SCENARIO_INVALID,
        format!("invalid scenario: {first}"),
    )
}

/// A report for a scenario that could not run at all.
pub fn error_report(file: &Path, code: i32, error: String) -> ScenarioReport {
    ScenarioReport {
        file: file.display().to_string(),
        name: snapshot::snapshot_name(file),
        broker: "-".into(),
        steps: 0,
        groups: Vec::new(),
        error: Some(error),
        not_applicable: None,
        snapshot: SnapshotStatus::NotChecked,
        transcript: String::new(),
        duration_ms: 0,
        exit_code: code,
        broker_logs: Default::default(),
    }
}

/// Loads and plans `file`; a report of why not otherwise (printed already).
pub fn load_and_plan(
    file: &Path,
    env: &[(String, String)],
    vars: &[(String, String)],
    overrides: &Overrides,
    templates: &Path,
) -> Result<RunPlan, Box<ScenarioReport>> {
    let loaded = match scenario::load_file(file, env, vars) {
        Ok(l) => l,
        Err(LoadError::Invalid(inv)) => return Err(Box::new(invalid_report(file, &inv))),
        Err(e) => {
            eprintln!("error: {e}");
            return Err(Box::new(error_report(
                file,
                exit_code::SCENARIO_INVALID,
                e.to_string(),
            )));
        }
    };
    if let Err(inv) = super::check_service_configs(&loaded, templates) {
        return Err(Box::new(invalid_report(file, &inv)));
    }
    plan::plan(&loaded, overrides, templates).map_err(|e| {
        eprintln!("error: {}: {e}", file.display());
        Box::new(error_report(file, exit_code::BROKER_SETUP, e.to_string()))
    })
}

/// Compares (or accepts) the transcript of `report`, which ran `plan`.
pub fn check_snapshot(plan: &RunPlan, report: &mut ScenarioReport, mode: SnapshotMode) {
    if report.error.is_some() || report.not_applicable.is_some() || mode == SnapshotMode::Skip {
        return;
    }
    // Never accept the transcript of a run whose steps failed: show the diff instead.
    let failed = report.failures().next().is_some();
    if mode == SnapshotMode::Update && failed {
        eprintln!("not updating the snapshot of {}: steps failed", plan.file);
    }
    let update = mode == SnapshotMode::Update && !failed;
    let file = Path::new(&plan.file);
    let accept = "accept with --update (or `cargo insta review`, from `cargo install cargo-insta`)";
    match snapshot::check_on(
        file,
        plan.snapshot_variant.as_deref(),
        &report.transcript,
        update,
    ) {
        Ok(snapshot::Check::Matches) => report.snapshot = SnapshotStatus::Matches,
        Ok(snapshot::Check::Written(_)) => report.snapshot = SnapshotStatus::Updated,
        Ok(snapshot::Check::Mismatch {
            diff,
            new_path,
            missing,
        }) => {
            let diff = if missing {
                format!(
                    "no snapshot yet; new transcript written to {}; {accept}\n{diff}",
                    new_path.display()
                )
            } else {
                format!(
                    "{diff}(new transcript written to {}; {accept})",
                    new_path.display()
                )
            };
            report.snapshot = SnapshotStatus::Mismatch { diff };
            report.exit_code = exit_code::combine(report.exit_code, exit_code::MISMATCH);
        }
        Err(e) => {
            eprintln!("error: snapshot of {}: {e}", plan.file);
            report.exit_code = exit_code::combine(report.exit_code, exit_code::INTERNAL);
        }
    }
}

/// Writes the JUnit and JSON reports asked for; the exit code if one cannot be written.
pub fn write_reports(
    junit: Option<&PathBuf>,
    json: Option<&PathBuf>,
    reports: &[ScenarioReport],
) -> i32 {
    let mut code = exit_code::OK;
    if let Some(p) = junit {
        if let Err(e) = report::junit::write(p, reports) {
            eprintln!("error: cannot write JUnit report {}: {e}", p.display());
            code = exit_code::INTERNAL;
        }
    }
    if let Some(p) = json {
        if let Err(e) = report::write_json(p, reports) {
            eprintln!("error: cannot write JSON report {}: {e}", p.display());
            code = exit_code::INTERNAL;
        }
    }
    code
}

/// `harness run`.
pub async fn run(args: RunArgs, templates: &Path) -> i32 {
    let overrides = Overrides {
        backend: args.backend,
        broker: args.broker.clone(),
        url: args.url.clone(),
        ..Overrides::default()
    };
    let mode = match (args.update, args.no_snapshot) {
        (true, _) => SnapshotMode::Update,
        (_, true) => SnapshotMode::Skip,
        _ => SnapshotMode::Check,
    };
    let term = Terminal::new();
    let env = super::env_pairs();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    for file in &args.files {
        let plan = match load_and_plan(file, &env, &args.vars, &overrides, templates) {
            Ok(p) => p,
            Err(r) => {
                reports.push(*r);
                continue;
            }
        };
        let mut report = crate::runner::run(&plan, &term).await;
        check_snapshot(&plan, &mut report, mode);
        if args.verbose {
            outln!(
                "--- transcript of {} ---\n{}",
                file.display(),
                report.transcript.trim_end()
            );
        }
        term.event(&RunEvent::ScenarioFinished(&report));
        reports.push(report);
    }
    let written = write_reports(args.junit.as_ref(), args.json.as_ref(), &reports);
    let code = exit_code::combine(report::exit_code_of(&reports), written);
    if reports.len() > 1 {
        let ok = reports.iter().filter(|r| r.exit_code == 0).count();
        outln!("{ok}/{} scenarios passed", reports.len());
    }
    if written != exit_code::OK {
        outln!("reports could not be written: the run fails");
    }
    code
}
