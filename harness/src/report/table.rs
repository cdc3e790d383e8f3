//! The matrix as a table: one row per cell, one column per scenario, in Markdown (printed into CI
//! logs) and as a self-contained HTML page. The JUnit form is in [`super::junit`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

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
    /// Not run: the broker lacks what the scenario requires.
    NotApplicable(String),
}

impl Outcome {
    /// The word shown in a table cell.
    pub fn label(&self) -> String {
        match self {
            Outcome::Pass => "pass".to_string(),
            Outcome::ExpectedFailure(_) => "expected failure".to_string(),
            Outcome::Fail(_) => "fail".to_string(),
            Outcome::Skipped(r) => format!("skipped: {r}"),
            Outcome::NotApplicable(_) => "not applicable".to_string(),
        }
    }
    /// The detail behind the word (shown as a tooltip).
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Pass => "",
            Outcome::ExpectedFailure(d)
            | Outcome::Fail(d)
            | Outcome::Skipped(d)
            | Outcome::NotApplicable(d) => d,
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
    /// The comparison page (relative to the table) when this cell's transcript differs from the
    /// scenario's first cell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    /// The table's word instead of the outcome's (the functional suite's counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl CellResult {
    /// What the table shows.
    pub fn word(&self) -> String {
        match &self.label {
            Some(l) => format!("{}: {l}", self.outcome.label()),
            None => self.outcome.label(),
        }
    }
}

/// Cells in first-seen order, scenarios in first-seen order, and the outcome grid.
/// Rows (cells), columns (scenarios) and the outcome of each (cell, scenario).
pub(crate) type Grid<'a> = (
    Vec<&'a str>,
    Vec<&'a str>,
    BTreeMap<(&'a str, &'a str), &'a CellResult>,
);

pub(crate) fn grid(results: &[CellResult]) -> Grid<'_> {
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
                .map(|r| match &r.compare {
                    Some(link) => format!("{} ([differs]({link}))", md_cell(&r.word())),
                    None => md_cell(&r.word()),
                })
                .unwrap_or_else(|| "-".to_string());
            let _ = write!(s, " {v} |");
        }
        s.push('\n');
    }
    s
}

fn html_escape(s: &str) -> String {
    super::junit::escape(s)
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
                        Outcome::Skipped(_) | Outcome::NotApplicable(_) => "skip",
                    };
                    let link = r
                        .compare
                        .as_deref()
                        .map(|href| format!(" <a href=\"{}\">differs</a>", html_escape(href)))
                        .unwrap_or_default();
                    let _ = write!(
                        s,
                        "<td class=\"{class}\" title=\"{}\">{}{link}</td>",
                        html_escape(r.outcome.detail()),
                        html_escape(&r.word())
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn results() -> Vec<CellResult> {
        let r = |cell: &str, sc: &str, o: Outcome| CellResult {
            cell: cell.into(),
            scenario: sc.into(),
            outcome: o,
            duration_ms: 5,
            compare: None,
            label: None,
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
    fn html_marks_classes() {
        let h = render_html(&results());
        assert!(h.contains("class=\"xfail\""), "{h}");
        assert!(
            h.contains("class=\"fail\" title=\"step 2 notify: &lt;timeout&gt;\""),
            "{h}"
        );
    }
}
