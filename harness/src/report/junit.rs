//! JUnit XML: one `<testsuite>` per scenario, one `<testcase>` per step group, plus a `snapshot` test case.
//!
//! ```xml
//! <testsuites tests="3" failures="1">
//!   <testsuite name="rpc" tests="3" failures="1" skipped="0" time="0.412">
//!     <testcase classname="rpc" name="basics" time="0.120"/>
//!     <testcase classname="rpc" name="errors" time="0.250"><failure message="step 7 call: ...">...</failure></testcase>
//!     <testcase classname="rpc" name="snapshot" time="0"/>
//!   </testsuite>
//! </testsuites>
//! ```

use std::fmt::Write as _;

use super::table::{CellResult, Outcome};
use super::{ScenarioReport, SnapshotStatus, StepStatus};

/// Escapes XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(ms: u64) -> String {
    format!("{:.3}", ms as f64 / 1000.0)
}

/// Renders the report of `reports`.
pub fn render(reports: &[ScenarioReport]) -> String {
    let mut suites = String::new();
    let (mut total, mut total_fail) = (0, 0);
    for r in reports {
        let mut cases = String::new();
        let (mut tests, mut failures, mut skipped) = (0, 0, 0);
        let class = escape(&r.name);
        if let Some(err) = &r.error {
            tests += 1;
            failures += 1;
            let _ = writeln!(
                cases,
                "    <testcase classname=\"{class}\" name=\"setup\" time=\"0\"><failure message=\"{}\">{}</failure></testcase>",
                escape(err.lines().next().unwrap_or("")),
                escape(err)
            );
        }
        for g in &r.groups {
            tests += 1;
            let ms: u64 = g.steps.iter().map(|s| s.duration_ms).sum();
            let _ = write!(
                cases,
                "    <testcase classname=\"{class}\" name=\"{}\" time=\"{}\"",
                escape(&g.name),
                secs(ms)
            );
            match g.status() {
                StepStatus::Failed => {
                    failures += 1;
                    let msgs: Vec<String> = g
                        .steps
                        .iter()
                        .filter(|s| s.status == StepStatus::Failed)
                        .map(|s| {
                            format!(
                                "step {} {} (line {}): {}",
                                s.index,
                                s.keyword,
                                s.line,
                                s.message.as_deref().unwrap_or("failed")
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        cases,
                        "><failure message=\"{}\">{}</failure></testcase>",
                        escape(msgs.first().map(String::as_str).unwrap_or("")),
                        escape(&msgs.join("\n"))
                    );
                }
                StepStatus::Skipped => {
                    skipped += 1;
                    let _ = writeln!(cases, "><skipped/></testcase>");
                }
                StepStatus::ExpectedFailure => {
                    let msgs: Vec<String> = g
                        .steps
                        .iter()
                        .filter(|s| s.status == StepStatus::ExpectedFailure)
                        .map(|s| {
                            format!(
                                "expected failure: step {} {}: {}",
                                s.index,
                                s.keyword,
                                s.message.as_deref().unwrap_or("")
                            )
                        })
                        .collect();
                    let _ = writeln!(
                        cases,
                        "><system-out>{}</system-out></testcase>",
                        escape(&msgs.join("\n"))
                    );
                }
                StepStatus::Passed => {
                    let _ = writeln!(cases, "/>");
                }
            }
        }
        if r.error.is_none() {
            tests += 1;
            let _ = write!(
                cases,
                "    <testcase classname=\"{class}\" name=\"snapshot\" time=\"0\""
            );
            match &r.snapshot {
                SnapshotStatus::Mismatch { diff } => {
                    failures += 1;
                    let _ = writeln!(
                        cases,
                        "><failure message=\"transcript differs from the snapshot\">{}</failure></testcase>",
                        escape(diff)
                    );
                }
                SnapshotStatus::NotChecked => {
                    skipped += 1;
                    let _ = writeln!(cases, "><skipped/></testcase>");
                }
                _ => {
                    let _ = writeln!(cases, "/>");
                }
            }
        }
        total += tests;
        total_fail += failures;
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{class}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
            secs(r.duration_ms)
        );
        suites.push_str(&cases);
        suites.push_str("  </testsuite>\n");
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"harness\" tests=\"{total}\" failures=\"{total_fail}\">\n{suites}</testsuites>\n"
    )
}

/// Writes the report to `path`.
pub fn write(path: &std::path::Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    super::write_file(path, &render(reports))
}

/// JUnit XML: one test suite per cell, one test case per scenario.
pub fn render_matrix(results: &[CellResult]) -> String {
    let (cells, _, _) = super::table::grid(results);
    let esc = escape;
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
    use super::super::{GroupReport, StepReport};
    use super::*;

    #[test]
    fn renders_failures_and_expected_failures() {
        let step = |i, status, msg: Option<&str>| StepReport {
            index: i,
            keyword: "call".into(),
            line: 3,
            status,
            message: msg.map(str::to_string),
            duration_ms: 5,
        };
        let r = ScenarioReport {
            file: "scenarios/a.yaml".into(),
            name: "a".into(),
            broker: "embedded:qpidd".into(),
            groups: vec![
                GroupReport {
                    name: "ok".into(),
                    steps: vec![step(1, StepStatus::Passed, None)],
                },
                GroupReport {
                    name: "bad".into(),
                    steps: vec![step(2, StepStatus::Failed, Some("got <1>"))],
                },
                GroupReport {
                    name: "xf".into(),
                    steps: vec![step(3, StepStatus::ExpectedFailure, Some("amqp:x"))],
                },
            ],
            error: None,
            snapshot: SnapshotStatus::Matches,
            transcript: String::new(),
            duration_ms: 15,
            exit_code: 6,
            steps: 2,
            broker_logs: Default::default(),
        };
        let xml = render(&[r]);
        assert!(xml.contains("tests=\"4\" failures=\"1\""), "{xml}");
        assert!(xml.contains("step 2 call (line 3): got &lt;1&gt;"), "{xml}");
        assert!(
            xml.contains("<system-out>expected failure: step 3 call: amqp:x</system-out>"),
            "{xml}"
        );
    }
    #[test]
    fn junit_counts_and_escapes() {
        let x = render_matrix(&super::super::table::tests::results());
        assert!(
            x.contains("tests=\"5\" failures=\"1\" skipped=\"1\""),
            "{x}"
        );
        assert!(x.contains("&lt;timeout&gt;"), "{x}");
        assert!(x.contains("<skipped message=\"image | missing\"/>"), "{x}");
    }
}
