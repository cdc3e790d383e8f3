//! JUnit XML for runs (one `<testsuite>` per scenario, one `<testcase>` per step group, plus a `snapshot`
//! test case) and for the matrix (one suite per cell, one case per scenario), written by one writer.
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

/// How a test case ended.
#[derive(Debug, Clone)]
enum Verdict {
    /// Passed.
    Pass,
    /// Failed: a one-line message and the full text.
    Fail(String, String),
    /// Skipped, with an optional reason.
    Skip(Option<String>),
    /// Passed, with something to say (expected failures).
    Note(String),
}

/// One `<testcase>`.
#[derive(Debug, Clone)]
struct Case {
    name: String,
    ms: u64,
    verdict: Verdict,
}

/// Writes one `<testsuite>` of `cases`; returns (tests, failures, skipped).
fn suite(out: &mut String, name: &str, ms: u64, cases: &[Case]) -> (usize, usize, usize) {
    let fails = cases
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Fail(..)))
        .count();
    let skips = cases
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Skip(_)))
        .count();
    let class = escape(name);
    let _ = writeln!(
        out,
        "  <testsuite name=\"{class}\" tests=\"{}\" failures=\"{fails}\" errors=\"0\" skipped=\"{skips}\" time=\"{}\">",
        cases.len(),
        secs(ms)
    );
    for c in cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{class}\" name=\"{}\" time=\"{}\"",
            escape(&c.name),
            secs(c.ms)
        );
        let _ = match &c.verdict {
            Verdict::Pass => writeln!(out, "/>"),
            Verdict::Fail(m, body) => writeln!(
                out,
                "><failure message=\"{}\">{}</failure></testcase>",
                escape(m),
                escape(body)
            ),
            Verdict::Skip(None) => writeln!(out, "><skipped/></testcase>"),
            Verdict::Skip(Some(why)) => {
                writeln!(out, "><skipped message=\"{}\"/></testcase>", escape(why))
            }
            Verdict::Note(text) => {
                writeln!(out, "><system-out>{}</system-out></testcase>", escape(text))
            }
        };
    }
    out.push_str("  </testsuite>\n");
    (cases.len(), fails, skips)
}

/// The document around `suites` (each: name, time, cases).
fn document(name: &str, suites: &[(String, u64, Vec<Case>)], with_skipped: bool) -> String {
    let mut body = String::new();
    let (mut tests, mut fails, mut skips) = (0, 0, 0);
    for (n, ms, cases) in suites {
        let (t, f, s) = suite(&mut body, n, *ms, cases);
        tests += t;
        fails += f;
        skips += s;
    }
    let skipped = if with_skipped {
        format!(" skipped=\"{skips}\"")
    } else {
        String::new()
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{fails}\"{skipped}>\n{body}</testsuites>\n",
        escape(name)
    )
}

fn step_lines<'a>(
    steps: impl Iterator<Item = &'a super::StepReport>,
    status: StepStatus,
    line: impl Fn(&super::StepReport) -> String,
) -> Vec<String> {
    steps.filter(|s| s.status == status).map(line).collect()
}

/// The test cases of one scenario: set-up (when it failed), each group, the snapshot.
fn scenario_cases(r: &ScenarioReport) -> Vec<Case> {
    let mut cases = Vec::new();
    if let Some(why) = &r.not_applicable {
        cases.push(Case {
            name: "not applicable".into(),
            ms: 0,
            verdict: Verdict::Skip(Some(why.clone())),
        });
        return cases;
    }
    if let Some(err) = &r.error {
        let first = err.lines().next().unwrap_or("").to_string();
        cases.push(Case {
            name: "setup".into(),
            ms: 0,
            verdict: Verdict::Fail(first, err.clone()),
        });
    }
    for g in &r.groups {
        let verdict = match g.status() {
            StepStatus::Failed => {
                let msgs = step_lines(g.steps.iter(), StepStatus::Failed, |s| {
                    format!(
                        "step {} {} (line {}): {}",
                        s.index,
                        s.keyword,
                        s.line,
                        s.message.as_deref().unwrap_or("failed")
                    )
                });
                Verdict::Fail(msgs.first().cloned().unwrap_or_default(), msgs.join("\n"))
            }
            StepStatus::Skipped => Verdict::Skip(None),
            StepStatus::ExpectedFailure => Verdict::Note(
                step_lines(g.steps.iter(), StepStatus::ExpectedFailure, |s| {
                    format!(
                        "expected failure: step {} {}: {}",
                        s.index,
                        s.keyword,
                        s.message.as_deref().unwrap_or("")
                    )
                })
                .join("\n"),
            ),
            StepStatus::Passed => Verdict::Pass,
        };
        cases.push(Case {
            name: g.name.clone(),
            ms: g.steps.iter().map(|s| s.duration_ms).sum(),
            verdict,
        });
    }
    if r.error.is_none() {
        let verdict = match &r.snapshot {
            SnapshotStatus::Mismatch { diff } => {
                Verdict::Fail("transcript differs from the snapshot".into(), diff.clone())
            }
            SnapshotStatus::NotChecked => Verdict::Skip(None),
            _ => Verdict::Pass,
        };
        cases.push(Case {
            name: "snapshot".into(),
            ms: 0,
            verdict,
        });
    }
    cases
}

/// Renders the report of `reports`.
pub fn render(reports: &[ScenarioReport]) -> String {
    let suites: Vec<(String, u64, Vec<Case>)> = reports
        .iter()
        .map(|r| (r.name.clone(), r.duration_ms, scenario_cases(r)))
        .collect();
    document("harness", &suites, false)
}

/// Writes the report to `path`.
pub fn write(path: &std::path::Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    super::write_file(path, &render(reports))
}

/// The matrix as JUnit: one test suite per cell, one test case per scenario.
pub fn render_matrix(results: &[CellResult]) -> String {
    let (cells, _, _) = super::table::grid(results);
    let suites: Vec<(String, u64, Vec<Case>)> = cells
        .iter()
        .map(|c| {
            let rows: Vec<&CellResult> = results.iter().filter(|r| r.cell == *c).collect();
            let cases = rows
                .iter()
                .map(|r| Case {
                    name: r.scenario.clone(),
                    ms: r.duration_ms,
                    verdict: match &r.outcome {
                        Outcome::Pass => Verdict::Pass,
                        Outcome::ExpectedFailure(d) => {
                            Verdict::Note(format!("expected failure: {d}"))
                        }
                        Outcome::Fail(d) => {
                            Verdict::Fail(d.split("; ").next().unwrap_or("").to_string(), d.clone())
                        }
                        Outcome::Skipped(d) => Verdict::Skip(Some(d.clone())),
                        Outcome::NotApplicable(d) => {
                            Verdict::Skip(Some(format!("not applicable: {d}")))
                        }
                    },
                })
                .collect();
            (
                c.to_string(),
                rows.iter().map(|r| r.duration_ms).sum(),
                cases,
            )
        })
        .collect();
    document("amqp1-rig matrix", &suites, true)
}

/// The functional suite's run as JUnit: one test suite per file, one test case per test.
pub fn render_oslo(r: &crate::app::oslo_tests::OsloReport) -> String {
    use crate::oslo_tests::Status;
    let suites: Vec<(String, u64, Vec<Case>)> = r
        .modules
        .iter()
        .map(|m| {
            let mut cases: Vec<Case> = m
                .tests
                .iter()
                .map(|t| Case {
                    name: t.id.clone(),
                    ms: (t.seconds * 1000.0) as u64,
                    verdict: match t.status {
                        Status::Passed => Verdict::Pass,
                        Status::Skipped => Verdict::Skip(t.reason.clone()),
                        Status::ExpectedFailure => {
                            Verdict::Note(t.reason.clone().unwrap_or_default())
                        }
                        Status::Failed => Verdict::Fail(
                            t.reason.clone().unwrap_or_default(),
                            t.traceback.clone().unwrap_or_default(),
                        ),
                    },
                })
                .collect();
            if let Some(e) = &m.error {
                cases.push(Case {
                    name: "runner".into(),
                    ms: 0,
                    verdict: Verdict::Fail(e.lines().next().unwrap_or("").to_string(), e.clone()),
                });
            }
            (m.module.clone(), (m.seconds * 1000.0) as u64, cases)
        })
        .collect();
    document(
        &format!("oslo.messaging functional tests on {}", r.broker),
        &suites,
        true,
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
            not_applicable: None,
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
