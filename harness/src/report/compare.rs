//! One scenario on several brokers, side by side: where their transcripts differ, step by step, with
//! each broker's exact words (the broker's condition and description, which transcripts keep and step
//! messages complete). Rendered for the terminal, as Markdown and as a self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::{ScenarioReport, StepStatus};

/// One broker's run of the scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    /// The broker as asked for (`embedded:qpidd`, `rabbitmq@process`).
    pub broker: String,
    /// What the broker turned out to be (`rabbitmq 3.10.8`), when known.
    pub identity: Option<String>,
    /// The run's report.
    pub report: ScenarioReport,
}

/// What one step did on one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// The transcript's outcome (`ok {..}`, `error refused amqp:not-implemented "…"`).
    pub outcome: String,
    /// The step's status word.
    pub status: String,
    /// What the transcript leaves out (a timeout's text, why it failed).
    pub detail: Option<String>,
}

/// One row: a step (or a section such as the deliveries of a service).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `3 call compute.host1 echo {..}` (the step's transcript head) or `deliveries: server`.
    pub what: String,
    /// Per column, in column order (`None`: that broker has no such row).
    pub cells: Vec<Option<Cell>>,
    /// Whether the columns disagree.
    pub differs: bool,
}

/// The comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The scenario file.
    pub file: String,
    /// The brokers.
    pub columns: Vec<Column>,
    /// Every row, in step order, then deliveries and driver events.
    pub rows: Vec<Row>,
}

impl Comparison {
    /// Number of rows where the brokers differ.
    pub fn differences(&self) -> usize {
        self.rows.iter().filter(|r| r.differs).count()
    }
}

/// The sections of a transcript: step lines by number, and the other sections' lines by heading.
fn sections(transcript: &str) -> (BTreeMap<usize, String>, BTreeMap<String, Vec<String>>) {
    let mut steps = BTreeMap::new();
    let mut other: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::from("header");
    let mut key = String::new();
    for line in transcript.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':').to_string();
            continue;
        }
        if section == "steps" {
            let t = line.trim_start();
            if let Some((n, _)) = t.split_once(' ') {
                if let Ok(n) = n.parse::<usize>() {
                    steps.insert(n, t.to_string());
                }
            }
            continue;
        }
        if section == "header" || section.starts_with("scenario") {
            continue;
        }
        // deliveries: "  svc: N total" then "    line"; driver events: "  src: a, b".
        if !line.starts_with("    ") {
            key = line.trim().split(':').next().unwrap_or("").to_string();
        }
        other
            .entry(format!("{section}: {key}"))
            .or_default()
            .push(line.trim().to_string());
    }
    (steps, other)
}

/// Splits `3 call t m {} -> ok` into (`3 call t m {}`, `ok`).
fn split_outcome(line: &str) -> (String, String) {
    match line.split_once(" -> ") {
        Some((head, tail)) => (head.to_string(), tail.to_string()),
        None => (line.to_string(), String::new()),
    }
}

fn status_word(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Passed => "passed",
        StepStatus::Failed => "failed",
        StepStatus::ExpectedFailure => "expected failure",
        StepStatus::Skipped => "skipped",
    }
}

/// The cell of step `n` in `report`.
fn step_cell(report: &ScenarioReport, n: usize, line: &str) -> Cell {
    let (_, outcome) = split_outcome(line);
    let step = report
        .groups
        .iter()
        .flat_map(|g| g.steps.iter())
        .find(|s| s.index == n);
    Cell {
        outcome,
        status: step
            .map(|s| status_word(s.status))
            .unwrap_or("passed")
            .to_string(),
        detail: step.and_then(|s| s.message.clone()),
    }
}

/// Builds the comparison of `columns` (each one broker's run of `file`).
pub fn compare(file: &str, columns: Vec<Column>) -> Comparison {
    let parsed: Vec<_> = columns
        .iter()
        .map(|c| sections(&c.report.transcript))
        .collect();
    let numbers: std::collections::BTreeSet<usize> =
        parsed.iter().flat_map(|(s, _)| s.keys().copied()).collect();
    let mut rows = Vec::new();
    for n in numbers {
        let head = parsed
            .iter()
            .find_map(|(s, _)| s.get(&n))
            .map(|l| split_outcome(l).0)
            .unwrap_or_default();
        let cells: Vec<Option<Cell>> = columns
            .iter()
            .zip(&parsed)
            .map(|(c, (s, _))| s.get(&n).map(|l| step_cell(&c.report, n, l)))
            .collect();
        rows.push(row(head, cells));
    }
    let keys: std::collections::BTreeSet<&String> =
        parsed.iter().flat_map(|(_, o)| o.keys()).collect();
    for k in keys {
        let cells = parsed
            .iter()
            .map(|(_, o)| {
                o.get(k).map(|lines| Cell {
                    outcome: lines.join("; "),
                    status: String::new(),
                    detail: None,
                })
            })
            .collect();
        rows.push(row(k.clone(), cells));
    }
    for (i, c) in columns.iter().enumerate() {
        let (status, text) = match (&c.report.error, &c.report.not_applicable) {
            (Some(e), _) => ("error", e),
            (None, Some(why)) => ("not applicable", why),
            (None, None) => continue,
        };
        let mut cells = vec![None; columns.len()];
        cells[i] = Some(Cell {
            outcome: text.lines().next().unwrap_or("").to_string(),
            status: status.into(),
            detail: Some(text.clone()),
        });
        rows.insert(0, row("set-up".into(), cells));
    }
    Comparison {
        file: file.to_string(),
        columns,
        rows,
    }
}

fn row(what: String, cells: Vec<Option<Cell>>) -> Row {
    let differs = cells.iter().any(|c| {
        c.as_ref().map(|c| (&c.outcome, &c.status))
            != cells[0].as_ref().map(|c| (&c.outcome, &c.status))
    });
    Row {
        what,
        cells,
        differs,
    }
}

fn cell_text(c: &Option<Cell>) -> String {
    match c {
        None => "-".into(),
        Some(c) if c.status.is_empty() || c.status == "passed" => c.outcome.clone(),
        Some(c) => format!("{} [{}]", c.outcome, c.status),
    }
}

/// For the terminal: the differing rows, each broker on its own line with its words.
pub fn render_terminal(c: &Comparison) -> String {
    let mut out = format!("compare {} on {} brokers:\n", c.file, c.columns.len());
    for col in &c.columns {
        let _ = writeln!(
            out,
            "  {} = {}{}",
            col.broker,
            col.report.broker,
            col.identity
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default()
        );
    }
    let width = c.columns.iter().map(|x| x.broker.len()).max().unwrap_or(0);
    for r in c.rows.iter().filter(|r| r.differs) {
        let _ = writeln!(out, "\n{}", r.what);
        for (col, cell) in c.columns.iter().zip(&r.cells) {
            let _ = writeln!(out, "  {:width$}  {}", col.broker, cell_text(cell));
            if let Some(d) = cell.as_ref().and_then(|c| c.detail.as_deref()) {
                let _ = writeln!(out, "  {:width$}    {}", "", d.lines().next().unwrap_or(""));
            }
        }
    }
    let n = c.differences();
    let _ = write!(out, "\n{} of {} rows differ", n, c.rows.len());
    out
}

fn md(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The comparison as a Markdown table (every row; differing rows marked).
pub fn render_markdown(c: &Comparison) -> String {
    let mut s = format!(
        "### {} on {} brokers\n\n| step |",
        md(&c.file),
        c.columns.len()
    );
    for col in &c.columns {
        let _ = write!(s, " {} |", md(&col.broker));
    }
    s.push_str("\n|---|");
    for _ in &c.columns {
        s.push_str("---|");
    }
    s.push('\n');
    for r in &c.rows {
        let mark = if r.differs { "**≠** " } else { "" };
        let _ = write!(s, "| {mark}{} |", md(&r.what));
        for cell in &r.cells {
            let mut t = cell_text(cell);
            if let Some(d) = cell.as_ref().and_then(|c| c.detail.as_deref()) {
                if r.differs {
                    t.push_str(&format!(" — {}", d.lines().next().unwrap_or("")));
                }
            }
            let _ = write!(s, " {} |", md(&t));
        }
        s.push('\n');
    }
    let _ = writeln!(s, "\n{} of {} rows differ.", c.differences(), c.rows.len());
    s
}

fn esc(s: &str) -> String {
    super::junit::escape(s)
}

/// The comparison as a self-contained HTML page.
pub fn render_html(c: &Comparison) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>compare {}</title>\n<style>\
         body{{font-family:sans-serif}}table{{border-collapse:collapse}}td,th{{border:1px solid #999;padding:4px 8px;vertical-align:top;font-family:monospace;font-size:90%}}\
         tr.differs td{{background:#fff3b0}}.detail{{color:#555;display:block}}\
         </style></head><body>\n<h1>{} on {} brokers</h1>\n<p>{} of {} rows differ.</p>\n<table>\n<tr><th>step</th>",
        esc(&c.file),
        esc(&c.file),
        c.columns.len(),
        c.differences(),
        c.rows.len()
    );
    for col in &c.columns {
        let _ = write!(
            s,
            "<th>{}<br><small>{}</small></th>",
            esc(&col.broker),
            esc(col.identity.as_deref().unwrap_or(&col.report.broker))
        );
    }
    s.push_str("</tr>\n");
    for r in &c.rows {
        let class = if r.differs { " class=\"differs\"" } else { "" };
        let _ = write!(s, "<tr{class}><td>{}</td>", esc(&r.what));
        for cell in &r.cells {
            let _ = write!(s, "<td>{}", esc(&cell_text(cell)));
            if let Some(d) = cell.as_ref().and_then(|c| c.detail.as_deref()) {
                let _ = write!(s, "<span class=\"detail\">{}</span>", esc(d));
            }
            s.push_str("</td>");
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{GroupReport, SnapshotStatus, StepReport};

    fn report(broker: &str, transcript: &str, steps: Vec<StepReport>) -> ScenarioReport {
        ScenarioReport {
            file: "s.yaml".into(),
            name: "s".into(),
            broker: broker.into(),
            steps: steps.len(),
            groups: vec![GroupReport {
                name: "main".into(),
                steps,
            }],
            error: None,
            not_applicable: None,
            snapshot: SnapshotStatus::NotChecked,
            transcript: transcript.into(),
            duration_ms: 1,
            exit_code: 0,
            broker_logs: Default::default(),
        }
    }

    #[test]
    fn differing_steps_carry_each_brokers_words() {
        let t1 = "scenario: s\nservices:\nsteps:\n  1 call t echo {} -> ok {}\n  2 cast t x {} -> ok\ndeliveries:\n  srv: 2 total\n    echo {}\n";
        let t2 = "scenario: s\nservices:\nsteps:\n  1 call t echo {} -> error refused amqp:not-implemented \"Dynamic sources not supported\" [expected failure on rabbitmq3]\n  2 cast t x {} -> ok\ndeliveries:\n  srv: 1 total\n";
        let xf = StepReport {
            index: 1,
            keyword: "call".into(),
            line: 3,
            status: StepStatus::ExpectedFailure,
            message: Some("failed as expected on rabbitmq3".into()),
            duration_ms: 1,
        };
        let c = compare(
            "s.yaml",
            vec![
                Column {
                    broker: "embedded:qpidd".into(),
                    identity: None,
                    report: report("embedded:qpidd", t1, vec![]),
                },
                Column {
                    broker: "rabbitmq".into(),
                    identity: Some("rabbitmq 3.10.8".into()),
                    report: report("process rabbitmq", t2, vec![xf]),
                },
            ],
        );
        let first = &c.rows[0];
        assert!(
            first.differs && first.what == "1 call t echo {}",
            "{first:?}"
        );
        assert!(!c.rows[1].differs);
        let text = render_terminal(&c);
        assert!(text.contains("Dynamic sources not supported"), "{text}");
        assert!(text.contains("[expected failure]"), "{text}");
        assert!(render_markdown(&c).contains("**≠** 1 call t echo {}"));
        assert!(render_html(&c).contains("class=\"differs\""));
        assert!(c.differences() >= 2, "the deliveries differ too");
    }
}
