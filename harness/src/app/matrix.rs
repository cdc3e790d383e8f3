//! The CI matrix: cells of (backend or image, broker, version) × scenarios (`ci/matrix.yaml`).
//!
//! `harness matrix ci/matrix.yaml` runs every cell this machine can run, skips the others with the reason
//! (docker not answering, image not built, broker binary missing, `skip:` in the file), and writes
//! `matrix.md`, `matrix.html`, `matrix.xml` (JUnit) and `matrix.json` into the report directory
//! (default `reports/`). The Markdown table is also printed, so it lands in the CI log.
//! `HARNESS_MATRIX_CELLS=a,b` (or [`MatrixOptions::cells`]) runs only those cells.
//!
//! Outcomes per cell × scenario: `pass`, `expected failure` (every failure is one the scenario's
//! known-failure registry lists for this broker), `fail`, `skipped: <reason>`. Transcripts are not compared
//! with snapshots here (they name the broker product); expectations and known failures are checked.
//!
//! ```yaml
//! reports: reports            # optional, relative to the current directory
//! scenarios:                  # run in every cell unless the cell lists its own
//!   - scenarios/rpc.yaml
//! cells:
//!   - name: container-rabbitmq-3.10
//!     backend: container      # embedded | process | container
//!     broker: rabbitmq        # KIND[:FLAVOUR], as `harness run --broker`
//!     version: "3.10"         # optional: picks the image tag
//!     image: amqp1-rig/rabbitmq:3.10   # optional: must exist locally
//!     scenarios: [scenarios/compat/rabbitmq.yaml]   # optional subset
//!     skip: "why"             # optional: never run here
//!     oslo_tests: true        # optional: also run oslo.messaging's functional suite (its counts show)
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;

use crate::backend::{self, container, BackendKind, BrokerSpec};
use crate::brokers::{BrokerChoice, Version};
use crate::exit_code;
use crate::plan::Overrides;
use crate::report::events::{Reporter, RunEvent};
use crate::report::table::{render_html, render_markdown, CellResult, Outcome};
use crate::report::{self, compare, ScenarioReport};

/// `ci/matrix.yaml`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixFile {
    /// Report directory (default `reports`).
    #[serde(default)]
    pub reports: Option<PathBuf>,
    /// Scenarios run in every cell that does not list its own.
    #[serde(default)]
    pub scenarios: Vec<PathBuf>,
    /// The cells.
    pub cells: Vec<CellFile>,
}

/// One matrix cell, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellFile {
    /// Unique name (a CI job name).
    pub name: String,
    /// `embedded`, `process` or `container`.
    pub backend: String,
    /// `KIND[:FLAVOUR]`.
    pub broker: String,
    /// Broker version (image tag).
    #[serde(default)]
    pub version: Option<String>,
    /// Local container image.
    #[serde(default)]
    pub image: Option<String>,
    /// Scenarios of this cell (default: the file's list).
    #[serde(default)]
    pub scenarios: Option<Vec<PathBuf>>,
    /// Never run this cell here, with this reason.
    #[serde(default)]
    pub skip: Option<String>,
    /// Free text shown in the report.
    #[serde(default)]
    pub note: Option<String>,
    /// Also run oslo.messaging's functional suite in this cell (`harness oslo-tests`).
    #[serde(default)]
    pub oslo_tests: bool,
}

/// A checked cell.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Unique name.
    pub name: String,
    /// Backend.
    pub backend: BackendKind,
    /// Broker.
    pub broker: BrokerChoice,
    /// Version (image tag).
    pub version: Option<Version>,
    /// Local container image.
    pub image: Option<String>,
    /// Its scenarios.
    pub scenarios: Vec<PathBuf>,
    /// Never run here, with this reason.
    pub skip: Option<String>,
    /// Also run the functional suite.
    pub oslo_tests: bool,
}

impl Cell {
    /// The overrides this cell applies to each scenario.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            backend: Some(self.backend),
            broker: Some(self.broker.clone()),
            url: None,
            version: self.version.clone(),
            image: self.image.clone(),
        }
    }
}

/// A checked matrix.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// Report directory.
    pub reports: Option<PathBuf>,
    /// Cells, in file order.
    pub cells: Vec<Cell>,
}

/// Options of a matrix run.
#[derive(Debug, Clone, Default)]
pub struct MatrixOptions {
    /// Report directory (overrides the file's `reports:`).
    pub out_dir: Option<PathBuf>,
    /// Run only these cells (all when empty; `HARNESS_MATRIX_CELLS=a,b` when not given).
    pub cells: Vec<String>,
}

/// Errors reading the matrix file.
#[derive(Debug, thiserror::Error)]
pub enum MatrixError {
    /// The file cannot be read.
    #[error("cannot read matrix {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid matrix.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// What is wrong.
        message: String,
    },
}

/// Reads and checks `ci/matrix.yaml`.
pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
    let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses matrix text (`path` is only used in messages).
pub fn parse(path: &Path, text: &str) -> Result<Matrix, MatrixError> {
    let invalid = |line: usize, column: usize, message: String| MatrixError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        message,
    };
    let m: MatrixFile = serde_yaml::from_str(text).map_err(|e| {
        let (l, c) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        invalid(l, c, e.to_string())
    })?;
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .unwrap_or(0)
    };
    let mut cells: Vec<Cell> = Vec::new();
    for c in &m.cells {
        let at = line_of(&format!("name: {}", c.name));
        let err = |m: String| invalid(at, 1, format!("cell '{}': {m}", c.name));
        if cells.iter().any(|x| x.name == c.name) {
            return Err(invalid(at, 1, format!("duplicate cell name '{}'", c.name)));
        }
        let backend = c
            .backend
            .parse::<BackendKind>()
            .map_err(|e| err(e.to_string()))?;
        let broker = BrokerChoice::parse(&c.broker).map_err(|e| err(format!("broker: {e}")))?;
        let version = match &c.version {
            Some(v) => Some(
                Version::parse(v).ok_or_else(|| err(format!("version '{v}' is not a version")))?,
            ),
            None => None,
        };
        let scenarios = c.scenarios.clone().unwrap_or_else(|| m.scenarios.clone());
        if scenarios.is_empty() && !c.oslo_tests {
            return Err(invalid(
                at,
                1,
                format!("cell '{}' has no scenarios", c.name),
            ));
        }
        cells.push(Cell {
            name: c.name.clone(),
            backend,
            broker,
            version,
            image: c.image.clone(),
            scenarios,
            skip: c.skip.clone(),
            oslo_tests: c.oslo_tests,
        });
    }
    Ok(Matrix {
        reports: m.reports,
        cells,
    })
}

/// Why `cell` cannot run on this machine, if it cannot: its `skip:`, else what its backend says of
/// the broker it names (the image that version and flavour pick, the binary).
pub fn skip_reason(cell: &Cell, templates_dir: &Path) -> Option<String> {
    if let Some(r) = &cell.skip {
        return Some(r.clone());
    }
    let mut choice = cell.broker.clone();
    if let (BrokerChoice::Real { version, .. }, Some(v)) = (&mut choice, &cell.version) {
        *version = Some(v.clone());
    }
    let mut spec = BrokerSpec::new(choice, templates_dir);
    spec.image = cell.image.clone();
    if cell.backend == BackendKind::Container {
        if let Err(e) = container::docker_available() {
            return Some(e.0);
        }
        let (image, how) = container::image_for(&spec);
        if !container::image_exists(&image) {
            return Some(format!("image {image} not built here; {how}"));
        }
    }
    backend::backend(cell.backend).available(&spec).err()
}

fn step_lines(steps: impl Iterator<Item = crate::report::StepReport>) -> Vec<String> {
    steps
        .map(|s| {
            format!(
                "step {} {}: {}",
                s.index,
                s.keyword,
                s.message.as_deref().unwrap_or("")
            )
        })
        .collect()
}

/// The outcome of one scenario run in a cell.
pub fn classify(r: &ScenarioReport) -> Outcome {
    if let Some(why) = &r.not_applicable {
        return Outcome::NotApplicable(why.clone());
    }
    if let Some(e) = &r.error {
        return Outcome::Fail(e.lines().next().unwrap_or("").to_string());
    }
    let fails = step_lines(r.failures().cloned());
    if !fails.is_empty() {
        return Outcome::Fail(fails.join("; "));
    }
    if r.exit_code != exit_code::OK {
        return Outcome::Fail(format!("exit code {}", r.exit_code));
    }
    let xf = step_lines(r.expected_failures().cloned());
    if xf.is_empty() {
        Outcome::Pass
    } else {
        Outcome::ExpectedFailure(xf.join("; "))
    }
}

fn selected_cells(m: &Matrix, path: &Path, opts: &MatrixOptions) -> Result<Vec<String>, String> {
    let mut cells = opts.cells.clone();
    if cells.is_empty() {
        if let Ok(v) = std::env::var("HARNESS_MATRIX_CELLS") {
            cells = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    for c in &cells {
        if !m.cells.iter().any(|x| &x.name == c) {
            let names: Vec<&str> = m.cells.iter().map(|c| c.name.as_str()).collect();
            return Err(format!(
                "no cell '{c}' in {} (cells: {})",
                path.display(),
                names.join(", ")
            ));
        }
    }
    Ok(cells)
}

/// Runs one cell's scenarios.
async fn run_cell(
    cell: &Cell,
    templates_dir: &Path,
    term: &crate::report::terminal::Terminal,
    results: &mut Vec<CellResult>,
    reports: &mut Vec<(String, ScenarioReport)>,
) {
    let env = super::env_pairs();
    let overrides = cell.overrides();
    for s in &cell.scenarios {
        let t0 = Instant::now();
        let outcome = match super::run::load_and_plan(s, &env, &[], &overrides, templates_dir) {
            Err(r) => Outcome::Fail(r.error.unwrap_or_default()),
            Ok(plan) => {
                let report = crate::runner::run(&plan, term).await;
                term.event(&RunEvent::ScenarioFinished(&report));
                let o = classify(&report);
                reports.push((cell.name.clone(), report));
                o
            }
        };
        results.push(CellResult {
            cell: cell.name.clone(),
            scenario: s.display().to_string(),
            outcome,
            duration_ms: t0.elapsed().as_millis() as u64,
            compare: None,
            label: None,
        });
    }
    if cell.oslo_tests {
        results.push(oslo_tests_cell(cell, templates_dir).await);
    }
}

/// The functional suite in `cell`: its counts as the table's word.
async fn oslo_tests_cell(cell: &Cell, templates_dir: &Path) -> CellResult {
    let t0 = Instant::now();
    let mut broker = cell.broker.clone();
    if let (BrokerChoice::Real { version, .. }, Some(v)) = (&mut broker, &cell.version) {
        *version = Some(v.clone());
    }
    let args = super::oslo_tests::OsloTestsArgs::for_cell(cell.backend, broker);
    let (outcome, label) = match super::oslo_tests::execute(&args, templates_dir).await {
        Ok(r) => {
            let words = r.counts.to_string();
            let outcome = match (r.passed(), r.counts.expected_failures) {
                (false, _) => Outcome::Fail(words.clone()),
                (true, 0) => Outcome::Pass,
                (true, _) => Outcome::ExpectedFailure(words.clone()),
            };
            (outcome, Some(words))
        }
        Err((_, e)) => (Outcome::Fail(e), None),
    };
    CellResult {
        cell: cell.name.clone(),
        scenario: "oslo-tests".into(),
        outcome,
        duration_ms: t0.elapsed().as_millis() as u64,
        compare: None,
        label,
    }
}

/// Runs the matrix in `path` and writes the reports; returns the process exit code
/// (0 unless a cell failed; skipped cells and expected failures are fine).
pub async fn run(path: &Path, templates_dir: &Path, opts: &MatrixOptions) -> i32 {
    let m = match load(path) {
        Ok(m) => m,
        Err(e @ MatrixError::Io { .. }) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::SCENARIO_INVALID;
        }
    };
    let only = match selected_cells(&m, path, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
    };
    let term = crate::report::terminal::Terminal::new();
    let mut results = Vec::new();
    let mut reports: Vec<(String, ScenarioReport)> = Vec::new();
    for cell in m
        .cells
        .iter()
        .filter(|c| only.is_empty() || only.contains(&c.name))
    {
        if let Some(reason) = skip_reason(cell, templates_dir) {
            outln!("matrix: {}: skipped: {reason}", cell.name);
            results.extend(cell.scenarios.iter().map(|s| CellResult {
                cell: cell.name.clone(),
                scenario: s.display().to_string(),
                outcome: Outcome::Skipped(reason.clone()),
                duration_ms: 0,
                compare: None,
                label: None,
            }));
            continue;
        }
        outln!(
            "matrix: {}: running {} scenario(s)",
            cell.name,
            cell.scenarios.len()
        );
        run_cell(cell, templates_dir, &term, &mut results, &mut reports).await;
    }
    let out = opts
        .out_dir
        .clone()
        .or_else(|| m.reports.clone())
        .unwrap_or_else(|| PathBuf::from("reports"));
    let comparisons = link_comparisons(&mut results, &reports);
    let md = render_markdown(&results);
    outln!("\n{md}");
    let mut code = if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    {
        exit_code::MISMATCH
    } else {
        exit_code::OK
    };
    if let Err(e) = write_reports(&out, &results, &reports, &md, &comparisons) {
        eprintln!(
            "error: cannot write matrix reports to {}: {e}",
            out.display()
        );
        code = exit_code::combine(code, exit_code::INTERNAL);
    } else {
        outln!(
            "matrix reports: {0}/matrix.md {0}/matrix.html {0}/matrix.xml {0}/matrix.json",
            out.display()
        );
    }
    print_counts(&results);
    code
}

fn print_counts(results: &[CellResult]) {
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    outln!(
        "matrix: {} passed, {} failed, {} skipped, {} expected failures",
        count(|o| matches!(o, Outcome::Pass)),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skipped(_))),
        count(|o| matches!(o, Outcome::ExpectedFailure(_))),
    );
}

/// For each scenario run in several cells: the comparison of its runs, and a link to it from every
/// cell whose transcript differs from the scenario's first cell. Returns (page name, comparison).
fn link_comparisons(
    results: &mut [CellResult],
    reports: &[(String, ScenarioReport)],
) -> Vec<(String, compare::Comparison)> {
    let mut out = Vec::new();
    let mut files: Vec<&str> = reports.iter().map(|(_, r)| r.file.as_str()).collect();
    files.dedup();
    files.sort();
    files.dedup();
    for file in files {
        let runs: Vec<&(String, ScenarioReport)> =
            reports.iter().filter(|(_, r)| r.file == file).collect();
        if runs.len() < 2 {
            continue;
        }
        let page = format!(
            "compare/{}.html",
            crate::snapshot::snapshot_name(Path::new(file))
        );
        let reference = &runs[0].1.transcript;
        for (cell, r) in &runs[1..] {
            if &r.transcript != reference {
                for res in results.iter_mut() {
                    if &res.cell == cell && res.scenario == file {
                        res.compare = Some(page.clone());
                    }
                }
            }
        }
        let columns = runs
            .iter()
            .map(|(cell, r)| compare::Column {
                broker: cell.clone(),
                identity: None,
                report: r.clone(),
            })
            .collect();
        out.push((page, compare::compare(file, columns)));
    }
    out
}

fn write_reports(
    out: &Path,
    results: &[CellResult],
    reports: &[(String, ScenarioReport)],
    md: &str,
    comparisons: &[(String, compare::Comparison)],
) -> std::io::Result<()> {
    for (page, c) in comparisons {
        report::write_file(&out.join(page), &compare::render_html(c))?;
    }
    report::write_file(&out.join("matrix.md"), md)?;
    report::write_file(&out.join("matrix.html"), &render_html(results))?;
    report::write_file(
        &out.join("matrix.xml"),
        &report::junit::render_matrix(results),
    )?;
    let json = serde_json::json!({
        "results": results,
        "scenarios": reports.iter().map(|(c, r)| serde_json::json!({"cell": c, "report": r})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
    report::write_file(&out.join("matrix.json"), &(text + "\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_carry_position() {
        let p = Path::new("m.yaml");
        let err = parse(
            p,
            "cells:\n  - name: a\n    backend: docker\n    broker: rabbitmq\n    bogus: 1\n",
        )
        .expect_err("unknown key");
        assert!(err.to_string().starts_with("m.yaml:"), "{err}");
        assert!(err.to_string().contains("bogus"), "{err}");
        let err = parse(
            p,
            "scenarios: [a.yaml]\ncells:\n  - name: a\n    backend: vm\n    broker: rabbitmq\n",
        )
        .expect_err("bad backend");
        assert!(err.to_string().contains("m.yaml:3:1"), "{err}");
        assert!(err.to_string().contains("unknown backend 'vm'"), "{err}");
        let ok = parse(p, "scenarios: [a.yaml]\ncells:\n  - name: a\n    backend: container\n    broker: rabbitmq\n    version: '3.10'\n")
            .expect("valid");
        assert_eq!(ok.cells[0].version, Version::parse("3.10"));
    }

    #[test]
    fn explicit_skip_wins() {
        let m = parse(
            Path::new("m.yaml"),
            "scenarios: [a.yaml]\ncells:\n  - name: x\n    backend: container\n    broker: artemis\n    skip: needs a registry\n",
        )
        .expect("valid");
        assert_eq!(
            skip_reason(&m.cells[0], Path::new("templates")).as_deref(),
            Some("needs a registry")
        );
    }
}
