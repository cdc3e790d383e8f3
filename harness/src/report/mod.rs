//! Run results and the reports built from them: the events reporters listen to ([`events`]), the
//! terminal, JUnit XML and JSON.

pub mod compare;
pub mod events;
pub mod junit;
pub mod table;
pub mod terminal;

use serde::Serialize;

/// Status of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Did what was expected.
    Passed,
    /// Did not.
    Failed,
    /// Failed as the known-failure registry says it does on this broker.
    ExpectedFailure,
    /// Not run (e.g. a fault step against `--url`, or after a fatal error).
    Skipped,
}

/// One step's result.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based step number.
    pub index: usize,
    /// Step keyword (`call`, `kill`...).
    pub keyword: String,
    /// Line of the step in the scenario file.
    pub line: usize,
    /// Outcome.
    pub status: StepStatus,
    /// Why it failed, was skipped or was an expected failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// A step group (a JUnit test case).
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Group name (`main` before the first `group:` step).
    pub name: String,
    /// Its steps.
    pub steps: Vec<StepReport>,
}

impl GroupReport {
    /// The worst status of the group's steps.
    pub fn status(&self) -> StepStatus {
        if self.steps.iter().any(|s| s.status == StepStatus::Failed) {
            StepStatus::Failed
        } else if self
            .steps
            .iter()
            .any(|s| s.status == StepStatus::ExpectedFailure)
        {
            StepStatus::ExpectedFailure
        } else if !self.steps.is_empty()
            && self.steps.iter().all(|s| s.status == StepStatus::Skipped)
        {
            StepStatus::Skipped
        } else {
            StepStatus::Passed
        }
    }
}

/// Snapshot result of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum SnapshotStatus {
    /// Not compared (`--no-snapshot`, or the run did not get that far).
    NotChecked,
    /// Matches.
    Matches,
    /// Written by `--update`.
    Updated,
    /// Differs; the diff.
    Mismatch {
        /// Unified diff.
        diff: String,
    },
}

/// Result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Scenario file.
    pub file: String,
    /// Scenario name.
    pub name: String,
    /// Broker used (`embedded:qpidd`, `url`).
    pub broker: String,
    /// Number of steps in the scenario's `steps:` list (group headers included, as they are numbered).
    pub steps: usize,
    /// Step groups.
    pub groups: Vec<GroupReport>,
    /// Set when the scenario could not run at all (invalid file, broker setup failed...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set when the broker lacks something the scenario requires: it did not run, and that is fine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_applicable: Option<String>,
    /// Snapshot outcome.
    pub snapshot: SnapshotStatus,
    /// Redacted transcript.
    pub transcript: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The exit code this scenario alone would give.
    pub exit_code: i32,
    /// Each broker node's log (its last lines, passwords masked) when the run failed; empty for
    /// brokers without a log (embedded) and for passing runs.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub broker_logs: std::collections::BTreeMap<String, String>,
}

impl ScenarioReport {
    /// Steps that failed for real.
    pub fn failures(&self) -> impl Iterator<Item = &StepReport> {
        self.groups
            .iter()
            .flat_map(|g| g.steps.iter())
            .filter(|s| s.status == StepStatus::Failed)
    }

    /// Steps that failed as expected.
    pub fn expected_failures(&self) -> impl Iterator<Item = &StepReport> {
        self.groups
            .iter()
            .flat_map(|g| g.steps.iter())
            .filter(|s| s.status == StepStatus::ExpectedFailure)
    }
}

/// The exit code of several scenarios (the most severe wins).
pub fn exit_code_of(reports: &[ScenarioReport]) -> i32 {
    reports.iter().fold(crate::exit_code::OK, |a, r| {
        crate::exit_code::combine(a, r.exit_code)
    })
}

/// Writes `text` to `path`, creating its parent directories.
pub fn write_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// Writes the JSON report of `reports` to `path`.
pub fn write_json(path: &std::path::Path, reports: &[ScenarioReport]) -> std::io::Result<()> {
    let doc = serde_json::json!({ "exit_code": exit_code_of(reports), "scenarios": reports });
    let text = serde_json::to_string_pretty(&doc).map_err(std::io::Error::other)?;
    write_file(path, &(text + "\n"))
}
