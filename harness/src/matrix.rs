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
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::backend::{self, container, BackendKind, BrokerSpec};
use crate::exit_code;
use crate::report::{self, ScenarioReport};

/// `ci/matrix.yaml`.
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
    pub cells: Vec<Cell>,
}

/// One matrix cell.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
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
}

/// Outcome of one cell × scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// Everything passed.
    Pass,
    /// Failed only where the known-failure registry says so.
    ExpectedFailure(String),
    /// Failed.
    Fail(String),
    /// Not run, with the reason.
    Skipped(String),
}

impl Outcome {
    fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".to_string(),
            Outcome::ExpectedFailure(_) => "expected failure".to_string(),
            Outcome::Fail(_) => "fail".to_string(),
            Outcome::Skipped(r) => format!("skipped: {r}"),
        }
    }
    fn detail(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::ExpectedFailure(d) | Outcome::Fail(d) | Outcome::Skipped(d) => d,
        }
    }
}

/// One result row.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    /// Cell name.
    pub cell: String,
    /// Scenario file.
    pub scenario: String,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Options of a matrix run.
#[derive(Debug, Clone, Default)]
pub struct MatrixOptions {
    /// Report directory (overrides the file's `reports:`).
    pub out_dir: Option<PathBuf>,
    /// Run only these cells (all when empty).
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
pub fn load(path: &Path) -> Result<MatrixFile, MatrixError> {
    let text = std::fs::read_to_string(path).map_err(|source| MatrixError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses matrix text (`path` is only used in messages).
pub fn parse(path: &Path, text: &str) -> Result<MatrixFile, MatrixError> {
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
    let mut seen = std::collections::BTreeSet::new();
    for c in &m.cells {
        let at = line_of(&format!("name: {}", c.name));
        if !seen.insert(c.name.clone()) {
            return Err(invalid(at, 1, format!("duplicate cell name '{}'", c.name)));
        }
        if let Err(e) = c.backend.parse::<BackendKind>() {
            return Err(invalid(at, 1, format!("cell '{}': {e}", c.name)));
        }
        if let Err(e) = crate::app::parse_broker_arg(&c.broker) {
            return Err(invalid(at, 1, format!("cell '{}': broker: {e}", c.name)));
        }
        if c.scenarios.as_ref().unwrap_or(&m.scenarios).is_empty() {
            return Err(invalid(
                at,
                1,
                format!("cell '{}' has no scenarios", c.name),
            ));
        }
    }
    Ok(m)
}

/// Why `cell` cannot run on this machine, if it cannot.
pub fn skip_reason(cell: &Cell, templates_dir: &Path) -> Option<String> {
    if let Some(r) = &cell.skip {
        return Some(r.clone());
    }
    let bk: BackendKind = cell.backend.parse().ok()?;
    let (kind, flavour) = crate::app::parse_broker_arg(&cell.broker).ok()?;
    match bk {
        BackendKind::Container => {
            if let Err(e) = container::docker_available() {
                return Some(e.0);
            }
            let mut spec = BrokerSpec::new(kind, templates_dir);
            spec.flavour = flavour;
            spec.version = cell.version.clone();
            spec.image = cell.image.clone();
            let (image, how) = container::image_for(&spec);
            if !container::image_exists(&image) {
                return Some(format!("image {image} not built here; {how}"));
            }
            // a build whose backend dispatch does not include the container backend yet
            match backend::backend(bk).available(kind) {
                Err(why) if why.contains("not implemented") => Some(why),
                _ => None,
            }
        }
        _ => backend::backend(bk).available(kind).err(),
    }
}

fn classify(r: &ScenarioReport) -> Outcome {
    if let Some(e) = &r.error {
        return Outcome::Fail(e.lines().next().unwrap_or("").to_string());
    }
    let fails: Vec<String> = r
        .failures()
        .map(|s| {
            format!(
                "step {} {}: {}",
                s.index,
                s.keyword,
                s.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    if !fails.is_empty() {
        return Outcome::Fail(fails.join("; "));
    }
    if r.exit_code != exit_code::OK {
        return Outcome::Fail(format!("exit code {}", r.exit_code));
    }
    let xf: Vec<String> = r
        .expected_failures()
        .map(|s| {
            format!(
                "step {} {}: {}",
                s.index,
                s.keyword,
                s.message.as_deref().unwrap_or("")
            )
        })
        .collect();
    if xf.is_empty() {
        Outcome::Pass
    } else {
        Outcome::ExpectedFailure(xf.join("; "))
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
    // `HARNESS_MATRIX_CELLS=a,b` selects cells when the command line does not (one CI job per cell)
    let mut opts = opts.clone();
    if opts.cells.is_empty() {
        if let Ok(v) = std::env::var("HARNESS_MATRIX_CELLS") {
            opts.cells = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
        }
    }
    for c in &opts.cells {
        if !m.cells.iter().any(|x| &x.name == c) {
            let names: Vec<&str> = m.cells.iter().map(|c| c.name.as_str()).collect();
            eprintln!(
                "error: no cell '{c}' in {} (cells: {})",
                path.display(),
                names.join(", ")
            );
            return exit_code::USAGE;
        }
    }
    let term = report::terminal::Terminal::new();
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("HARNESS_VAR_"))
        .collect();
    let mut results = Vec::new();
    let mut reports: Vec<(String, ScenarioReport)> = Vec::new();
    for cell in &m.cells {
        if !opts.cells.is_empty() && !opts.cells.contains(&cell.name) {
            continue;
        }
        let scenarios = cell
            .scenarios
            .clone()
            .unwrap_or_else(|| m.scenarios.clone());
        if let Some(reason) = skip_reason(cell, templates_dir) {
            println!("matrix: {}: skipped: {reason}", cell.name);
            for s in &scenarios {
                results.push(CellResult {
                    cell: cell.name.clone(),
                    scenario: s.display().to_string(),
                    outcome: Outcome::Skipped(reason.clone()),
                    duration_ms: 0,
                });
            }
            continue;
        }
        println!(
            "matrix: {}: running {} scenario(s)",
            cell.name,
            scenarios.len()
        );
        let backend_kind = cell.backend.parse::<BackendKind>().ok();
        let broker = crate::app::parse_broker_arg(&cell.broker).ok();
        for s in &scenarios {
            let t0 = Instant::now();
            let outcome = match crate::scenario::load_file(s, &env, &[]) {
                Err(crate::scenario::LoadError::Io { path, source }) => {
                    Outcome::Fail(format!("cannot read {}: {source}", path.display()))
                }
                Err(crate::scenario::LoadError::Invalid(inv)) => {
                    eprint!("{}", inv.render());
                    Outcome::Fail("invalid scenario".to_string())
                }
                Ok(loaded) => {
                    let ropts = crate::runner::RunOptions {
                        backend: backend_kind,
                        broker: broker.clone(),
                        url: None,
                        templates_dir: templates_dir.to_path_buf(),
                        version: cell.version.clone(),
                        image: cell.image.clone(),
                    };
                    let result = crate::runner::run(&loaded, &ropts, &term).await;
                    term.scenario_finished(&result.report);
                    let o = classify(&result.report);
                    reports.push((cell.name.clone(), result.report));
                    o
                }
            };
            results.push(CellResult {
                cell: cell.name.clone(),
                scenario: s.display().to_string(),
                outcome,
                duration_ms: t0.elapsed().as_millis() as u64,
            });
        }
    }
    let out = opts
        .out_dir
        .clone()
        .or_else(|| m.reports.clone())
        .unwrap_or_else(|| PathBuf::from("reports"));
    let md = render_markdown(&results);
    println!("\n{md}");
    let mut code = if results
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Fail(_)))
    {
        exit_code::MISMATCH
    } else {
        exit_code::OK
    };
    if let Err(e) = write_reports(&out, &results, &reports, &md) {
        eprintln!(
            "error: cannot write matrix reports to {}: {e}",
            out.display()
        );
        code = code.max(exit_code::INTERNAL);
    } else {
        println!(
            "matrix reports: {0}/matrix.md {0}/matrix.html {0}/matrix.xml {0}/matrix.json",
            out.display()
        );
    }
    let count = |f: fn(&Outcome) -> bool| results.iter().filter(|r| f(&r.outcome)).count();
    println!(
        "matrix: {} passed, {} failed, {} skipped, {} expected failures",
        count(|o| matches!(o, Outcome::Pass)),
        count(|o| matches!(o, Outcome::Fail(_))),
        count(|o| matches!(o, Outcome::Skipped(_))),
        count(|o| matches!(o, Outcome::ExpectedFailure(_))),
    );
    code
}

fn write_reports(
    out: &Path,
    results: &[CellResult],
    reports: &[(String, ScenarioReport)],
    md: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("matrix.md"), md)?;
    std::fs::write(out.join("matrix.html"), render_html(results))?;
    std::fs::write(out.join("matrix.xml"), render_junit(results))?;
    let json = serde_json::json!({
        "results": results,
        "scenarios": reports.iter().map(|(c, r)| serde_json::json!({"cell": c, "report": r})).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
    std::fs::write(out.join("matrix.json"), text + "\n")
}

/// Cells in first-seen order, scenarios in first-seen order, and the outcome grid.
/// Rows (cells), columns (scenarios) and the outcome of each (cell, scenario).
type Grid<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    BTreeMap<(&'a str, &'a str), &'a CellResult>,
);

fn grid(results: &[CellResult]) -> Grid<'_> {
    let mut cells: Vec<&str> = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    let mut map = BTreeMap::new();
    for r in results {
        if !cells.contains(&r.cell.as_str()) {
            cells.push(&r.cell);
        }
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
        map.insert((r.cell.as_str(), r.scenario.as_str()), r);
    }
    (cells, scenarios, map)
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown table: one row per cell, one column per scenario.
pub fn render_markdown(results: &[CellResult]) -> String {
    let (cells, scenarios, map) = grid(results);
    let mut s = String::from("| cell |");
    for sc in &scenarios {
        let _ = write!(s, " {} |", md_cell(sc));
    }
    s.push_str("\n|---|");
    for _ in &scenarios {
        s.push_str("---|");
    }
    s.push('\n');
    for c in &cells {
        let _ = write!(s, "| {} |", md_cell(c));
        for sc in &scenarios {
            let v = map
                .get(&(*c, *sc))
                .map(|r| r.outcome.label())
                .unwrap_or_else(|| "-".to_string());
            let _ = write!(s, " {} |", md_cell(&v));
        }
        s.push('\n');
    }
    s
}

fn html_escape(s: &str) -> String {
    crate::report::junit::escape(s)
}

/// The HTML table (self-contained page).
pub fn render_html(results: &[CellResult]) -> String {
    let (cells, scenarios, map) = grid(results);
    let mut s = String::from(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>amqp1-rig matrix</title>\n<style>\
         body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;vertical-align:top}\
         .pass{background:#c8f7c5}.xfail{background:#fff3b0}.fail{background:#f7c5c5}.skip{background:#e6e6e6;color:#555}\
         </style></head><body>\n<h1>amqp1-rig matrix</h1>\n<table>\n<tr><th>cell</th>",
    );
    for sc in &scenarios {
        let _ = write!(s, "<th>{}</th>", html_escape(sc));
    }
    s.push_str("</tr>\n");
    for c in &cells {
        let _ = write!(s, "<tr><th>{}</th>", html_escape(c));
        for sc in &scenarios {
            match map.get(&(*c, *sc)) {
                Some(r) => {
                    let class = match r.outcome {
                        Outcome::Pass => "pass",
                        Outcome::ExpectedFailure(_) => "xfail",
                        Outcome::Fail(_) => "fail",
                        Outcome::Skipped(_) => "skip",
                    };
                    let _ = write!(
                        s,
                        "<td class=\"{class}\" title=\"{}\">{}</td>",
                        html_escape(r.outcome.detail()),
                        html_escape(&r.outcome.label())
                    );
                }
                None => s.push_str("<td>-</td>"),
            }
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

/// JUnit XML: one test suite per cell, one test case per scenario.
pub fn render_junit(results: &[CellResult]) -> String {
    let (cells, _, _) = grid(results);
    let esc = crate::report::junit::escape;
    let mut body = String::new();
    let (mut total, mut total_fail, mut total_skip) = (0, 0, 0);
    for c in &cells {
        let rows: Vec<&CellResult> = results.iter().filter(|r| r.cell == *c).collect();
        let fails = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Fail(_)))
            .count();
        let skips = rows
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
            .count();
        let ms: u64 = rows.iter().map(|r| r.duration_ms).sum();
        total += rows.len();
        total_fail += fails;
        total_skip += skips;
        let _ = writeln!(
            body,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{fails}\" skipped=\"{skips}\" time=\"{:.3}\">",
            esc(c),
            rows.len(),
            ms as f64 / 1000.0
        );
        for r in rows {
            let _ = write!(
                body,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                esc(c),
                esc(&r.scenario),
                r.duration_ms as f64 / 1000.0
            );
            match &r.outcome {
                Outcome::Pass => body.push_str("/>\n"),
                Outcome::ExpectedFailure(d) => {
                    let _ = writeln!(
                        body,
                        "><system-out>expected failure: {}</system-out></testcase>",
                        esc(d)
                    );
                }
                Outcome::Fail(d) => {
                    let first = d.split("; ").next().unwrap_or("");
                    let _ = writeln!(
                        body,
                        "><failure message=\"{}\">{}</failure></testcase>",
                        esc(first),
                        esc(d)
                    );
                }
                Outcome::Skipped(d) => {
                    let _ = writeln!(body, "><skipped message=\"{}\"/></testcase>", esc(d));
                }
            }
        }
        body.push_str("  </testsuite>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"amqp1-rig matrix\" tests=\"{total}\" failures=\"{total_fail}\" skipped=\"{total_skip}\">\n{body}</testsuites>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results() -> Vec<CellResult> {
        let r = |cell: &str, sc: &str, o: Outcome| CellResult {
            cell: cell.into(),
            scenario: sc.into(),
            outcome: o,
            duration_ms: 5,
        };
        vec![
            r("embedded", "rpc.yaml", Outcome::Pass),
            r("embedded", "notify.yaml", Outcome::Pass),
            r(
                "rabbitmq",
                "rpc.yaml",
                Outcome::ExpectedFailure("step 3 call: amqp:not-implemented".into()),
            ),
            r(
                "rabbitmq",
                "notify.yaml",
                Outcome::Fail("step 2 notify: <timeout>".into()),
            ),
            r(
                "qpidd-centos7",
                "rpc.yaml",
                Outcome::Skipped("image | missing".into()),
            ),
        ]
    }

    #[test]
    fn markdown_table_has_every_outcome() {
        let md = render_markdown(&results());
        assert!(
            md.starts_with("| cell | rpc.yaml | notify.yaml |\n|---|---|---|\n"),
            "{md}"
        );
        assert!(
            md.contains("| rabbitmq | expected failure | fail |"),
            "{md}"
        );
        assert!(
            md.contains("| qpidd-centos7 | skipped: image \\| missing | - |"),
            "{md}"
        );
    }

    #[test]
    fn junit_counts_and_escapes() {
        let x = render_junit(&results());
        assert!(
            x.contains("tests=\"5\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("&lt;timeout&gt;"), "{x}");
        assert!(x.contains("<skipped message=\"image | missing\"/>"), "{x}");
    }

    #[test]
    fn html_marks_classes() {
        let h = render_html(&results());
        assert!(h.contains("class=\"xfail\""), "{h}");
        assert!(
            h.contains("class=\"fail\" title=\"step 2 notify: &lt;timeout&gt;\""),
            "{h}"
        );
    }

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
        assert_eq!(ok.cells[0].version.as_deref(), Some("3.10"));
    }

    #[test]
    fn explicit_skip_wins() {
        let c = Cell {
            name: "x".into(),
            backend: "container".into(),
            broker: "artemis".into(),
            version: None,
            image: None,
            scenarios: None,
            skip: Some("needs a registry".into()),
            note: None,
        };
        assert_eq!(
            skip_reason(&c, Path::new("templates")).as_deref(),
            Some("needs a registry")
        );
    }
}
