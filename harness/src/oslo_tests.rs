//! oslo.messaging's own functional test suite against a broker the harness runs: the upstream AMQP 1.0
//! gate job, back. `harness/peers/oslo_tests.py` runs the suite inside the Python peer's venv and reports
//! one JSON line per test; this module starts it, reads those lines, applies the known-failure registry
//! (`harness/peers/oslo-tests-known-failures.yaml`) and gathers the results.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::brokers::{BrokerMatch, Identity};

/// The two files of the suite, as unittest module names.
pub const MODULES: [&str; 2] = [
    "oslo_messaging.tests.functional.test_functional",
    "oslo_messaging.tests.functional.notify.test_logger",
];

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Passed.
    Passed,
    /// Failed or errored.
    Failed,
    /// Skipped by the suite (its reason kept).
    Skipped,
    /// Failed as the registry says it does on this broker.
    ExpectedFailure,
}

/// One test's result.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// The unittest id.
    pub id: String,
    /// How it ended.
    pub status: Status,
    /// Seconds it took.
    pub seconds: f64,
    /// Skip reason, failure message, or why the failure was expected.
    pub reason: Option<String>,
    /// The traceback of a failure.
    pub traceback: Option<String>,
    /// The broker's refusals during the test: (condition, description), from the AMQP frames.
    pub conditions: Vec<(String, String)>,
    /// Warnings the driver logged during the test.
    pub log: Vec<String>,
}

/// The run of one module.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleRun {
    /// The module.
    pub module: String,
    /// Its tests.
    pub tests: Vec<TestResult>,
    /// Seconds.
    pub seconds: f64,
    /// Set when the runner itself failed (timed out, crashed), with its last stderr lines.
    pub error: Option<String>,
}

/// Counts of a run.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    /// Passed.
    pub passed: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Expected failures.
    pub expected_failures: usize,
}

impl Counts {
    /// Counts of `runs`.
    pub fn of(runs: &[ModuleRun]) -> Counts {
        let mut c = Counts::default();
        for t in runs.iter().flat_map(|r| r.tests.iter()) {
            match t.status {
                Status::Passed => c.passed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
                Status::ExpectedFailure => c.expected_failures += 1,
            }
        }
        c
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} passed, {} failed, {} skipped, {} expected failures",
            self.passed, self.failed, self.skipped, self.expected_failures
        )
    }
}

/// An entry of the known-failure registry, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    broker: String,
    tests: String,
    words: String,
    reason: String,
}

/// A known failure of the suite on some brokers.
#[derive(Debug, Clone)]
pub struct KnownFailure {
    broker: BrokerMatch,
    broker_label: String,
    tests: Regex,
    words: Regex,
    reason: String,
}

/// The registry file.
pub fn registry_path() -> PathBuf {
    crate::peer::peers_dir().join("oslo-tests-known-failures.yaml")
}

/// Reads the registry; errors name the entry.
pub fn load_registry(path: &Path) -> Result<Vec<KnownFailure>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let entries: Vec<EntryFile> =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let bad = |what: &str, err: String| {
                format!("{} entry {}: {what}: {err}", path.display(), i + 1)
            };
            Ok(KnownFailure {
                broker: BrokerMatch::parse(&e.broker).map_err(|x| bad("broker", x))?,
                broker_label: e.broker,
                tests: Regex::new(&e.tests).map_err(|x| bad("tests", x.to_string()))?,
                words: Regex::new(&e.words).map_err(|x| bad("words", x.to_string()))?,
                reason: e.reason,
            })
        })
        .collect()
}

/// Applies the registry to a failed test: an entry for this broker and test whose words appear in the
/// broker's refusals, the driver's log or the traceback makes it an expected failure, quoting them.
pub fn classify(t: &mut TestResult, registry: &[KnownFailure], id: &Identity) {
    if t.status != Status::Failed {
        return;
    }
    let said: Vec<String> = t
        .conditions
        .iter()
        .map(|(c, d)| format!("{c}: {d}"))
        .chain(t.log.iter().cloned())
        .chain(t.traceback.iter().cloned())
        .collect();
    for k in registry
        .iter()
        .filter(|k| k.broker.matches(id) && k.tests.is_match(&t.id))
    {
        if let Some(words) = said
            .iter()
            .find_map(|s| k.words.find(s).map(|m| m.as_str().to_string()))
        {
            let broker_words = t
                .conditions
                .first()
                .map(|(c, d)| format!("; the broker said {c}: \"{d}\""))
                .unwrap_or_default();
            t.status = Status::ExpectedFailure;
            t.reason = Some(format!(
                "expected on {}: {} (\"{words}\"){broker_words}",
                k.broker_label, k.reason
            ));
            return;
        }
    }
}

/// Where and how to run the suite.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The venv's python.
    pub python: PathBuf,
    /// `RPC_TRANSPORT_URL` (passwords in clear: it goes into the child's environment only).
    pub rpc_url: String,
    /// `NOTIFY_TRANSPORT_URL`.
    pub notify_url: String,
    /// `AMQP1_BACKEND`, when the suite should know the broker (`qpidd`, `qdrouterd`).
    pub amqp1_backend: Option<&'static str>,
    /// `-k` patterns (substrings of test ids).
    pub patterns: Vec<String>,
    /// Bound on each test.
    pub test_timeout: Duration,
    /// Bound on each module's whole run.
    pub module_timeout: Duration,
}

/// A line of the runner.
#[derive(Debug, Deserialize)]
struct Line {
    event: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    seconds: Option<f64>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    traceback: Option<String>,
    #[serde(default)]
    log: Vec<String>,
    #[serde(default)]
    conditions: Vec<(String, String)>,
    #[serde(default)]
    tests: Vec<String>,
}

fn result_of(l: Line) -> TestResult {
    let status = match l.status.as_deref() {
        Some("passed") => Status::Passed,
        Some("skipped") => Status::Skipped,
        _ => Status::Failed,
    };
    TestResult {
        id: l.id.unwrap_or_default(),
        status,
        seconds: l.seconds.unwrap_or(0.0),
        reason: l.reason,
        traceback: l.traceback,
        conditions: l.conditions,
        log: l.log,
    }
}

/// What the runner reports as it goes: collected test count, each test's start and result.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The module's tests were collected.
    Collected(&'a str, usize),
    /// A test starts.
    Started(&'a str),
    /// A test ended.
    Finished(&'a TestResult),
}

/// Runs `module` with `setup`; `progress` sees every test as it ends. When the runner ends early (its
/// watchdog ended a test that did not stop, or it crashed) after reporting at least one test, the tests
/// it did not reach run in a new runner, so that one hung test costs its own timeout, not the others'.
pub async fn run_module(
    setup: &Setup,
    module: &str,
    registry: &[KnownFailure],
    id: &Identity,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> ModuleRun {
    let started = Instant::now();
    let mut run = ModuleRun {
        module: module.to_string(),
        tests: Vec::new(),
        seconds: 0.0,
        error: None,
    };
    let deadline = started + setup.module_timeout;
    let mut collected: Option<Vec<String>> = None;
    loop {
        let remaining: Option<Vec<String>> = collected.as_ref().map(|all| {
            all.iter()
                .filter(|t| !run.tests.iter().any(|r| &r.id == *t))
                .cloned()
                .collect()
        });
        if remaining.as_ref().is_some_and(Vec::is_empty) {
            break;
        }
        let before = run.tests.len();
        let child = Child {
            setup,
            module,
            deadline,
            registry,
            id,
            progress,
        };
        let end = run_child(&child, remaining.as_deref(), &mut run).await;
        if collected.is_none() {
            collected = end.collected.clone();
        }
        match end.error {
            None => break,
            Some(e) => {
                let progressed = run.tests.len() > before;
                if end.timed_out || !progressed || collected.is_none() {
                    run.error = Some(e);
                    break;
                }
                tracing::info!(
                    module,
                    "{e}; running the tests it did not reach in a new runner"
                );
            }
        }
    }
    run.seconds = started.elapsed().as_secs_f64();
    run
}

/// How one runner process ended.
#[derive(Debug)]
struct ChildEnd {
    /// The ids it collected (the first runner's are the module's).
    collected: Option<Vec<String>>,
    /// Why it did not finish, with its last stderr lines.
    error: Option<String>,
    /// The module's deadline passed.
    timed_out: bool,
}

/// What every runner process of one module shares.
struct Child<'a> {
    setup: &'a Setup,
    module: &'a str,
    /// The module's deadline (all its runners together).
    deadline: Instant,
    registry: &'a [KnownFailure],
    id: &'a Identity,
    progress: &'a (dyn Fn(Progress<'_>) + Sync),
}

/// Runs one runner process: the module's tests, or only the ids in `only`; results go into `run`.
/// Long for one reason: the process's start, its result stream and its end (deadline, exit, stderr
/// tail) decide together what the [`ChildEnd`] says.
async fn run_child(child: &Child<'_>, only: Option<&[String]>, run: &mut ModuleRun) -> ChildEnd {
    let Child {
        setup,
        module,
        deadline,
        registry,
        id,
        progress,
    } = *child;
    let dir = tempfile::tempdir().ok();
    let mut cmd = tokio::process::Command::new(&setup.python);
    cmd.arg("-u")
        .arg(crate::peer::peers_dir().join("oslo_tests.py"))
        .arg("--test-timeout")
        .arg(setup.test_timeout.as_secs().max(1).to_string());
    match only {
        Some(ids) => {
            for t in ids {
                cmd.arg("--id").arg(t);
            }
        }
        None => {
            for k in &setup.patterns {
                cmd.arg("-k").arg(k);
            }
        }
    }
    cmd.arg(module)
        .env("RPC_TRANSPORT_URL", &setup.rpc_url)
        .env("NOTIFY_TRANSPORT_URL", &setup.notify_url)
        .env("PN_TRACE_FRM", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PATH", venv_path(&setup.python))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(b) = setup.amqp1_backend {
        cmd.env("AMQP1_BACKEND", b);
    } else {
        cmd.env_remove("AMQP1_BACKEND");
    }
    if let Some(d) = &dir {
        cmd.current_dir(d.path());
    }
    let mut end = ChildEnd {
        collected: None,
        error: None,
        timed_out: false,
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            end.error = Some(format!("cannot start {}: {e}", setup.python.display()));
            return end;
        }
    };
    let tail = collect_stderr(child.stderr.take());
    let read = read_results(
        &mut child,
        run,
        &mut end.collected,
        module,
        registry,
        id,
        progress,
    );
    let outcome = tokio::time::timeout_at(deadline.into(), read).await;
    let _ = child.start_kill();
    let status = child.wait().await.ok();
    let tail = tail.await.unwrap_or_default();
    match outcome {
        Err(_) => {
            end.timed_out = true;
            end.error = Some(format!(
                "the run did not finish within {}; last stderr lines:\n{tail}",
                humantime::format_duration(setup.module_timeout)
            ))
        }
        Ok(false) => {
            end.error = Some(format!(
                "the runner stopped before the end ({}); last stderr lines:\n{tail}",
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "no status".into())
            ))
        }
        Ok(true) => {}
    }
    end
}

/// `PATH` with the venv's `bin` first (a test starts `python3 -m oslo_metrics`).
fn venv_path(python: &Path) -> std::ffi::OsString {
    let mut paths = vec![python.parent().map(Path::to_path_buf).unwrap_or_default()];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).unwrap_or_default()
}

fn collect_stderr(stderr: Option<tokio::process::ChildStderr>) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut keep: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        if let Some(s) = stderr {
            let mut lines = BufReader::new(s).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if keep.len() == 40 {
                    keep.pop_front();
                }
                keep.push_back(l);
            }
        }
        keep.into_iter().collect::<Vec<_>>().join("\n")
    })
}

/// Reads the runner's lines until `done` (true) or the end of its output (false).
async fn read_results(
    child: &mut tokio::process::Child,
    run: &mut ModuleRun,
    collected: &mut Option<Vec<String>>,
    module: &str,
    registry: &[KnownFailure],
    id: &Identity,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> bool {
    let Some(out) = child.stdout.take() else {
        return false;
    };
    let mut lines = BufReader::new(out).lines();
    while let Ok(Some(text)) = lines.next_line().await {
        let Ok(line) = serde_json::from_str::<Line>(&text) else {
            continue;
        };
        match line.event.as_str() {
            // A rerun of the rest collects fewer: the module's count is the first runner's.
            "collected" if collected.is_none() => {
                progress(Progress::Collected(module, line.tests.len()));
                *collected = Some(line.tests);
            }
            "collected" => {}
            "start" => progress(Progress::Started(line.id.as_deref().unwrap_or(""))),
            "result" => {
                let mut t = result_of(line);
                classify(&mut t, registry, id);
                progress(Progress::Finished(&t));
                run.tests.push(t);
            }
            "done" => return true,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::Flavour;

    #[test]
    fn the_registry_makes_refusals_expected_failures_with_the_brokers_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("k.yaml");
        std::fs::write(
            &p,
            "- broker: rabbitmq\n  tests: 'CallTestCase'\n  words: 'Dynamic sources? not supported'\n  reason: no dynamic reply link\n",
        )
        .expect("write");
        let reg = load_registry(&p).expect("registry");
        let mut t = TestResult {
            id: "x.CallTestCase.test_specific_server".into(),
            status: Status::Failed,
            seconds: 1.0,
            reason: Some("MessagingTimeout".into()),
            traceback: None,
            conditions: vec![(
                "amqp:not-implemented".into(),
                "Dynamic sources not supported".into(),
            )],
            log: vec![],
        };
        let mut other = t.clone();
        classify(&mut t, &reg, &Identity::embedded(Flavour::Rabbitmq3));
        assert_eq!(t.status, Status::ExpectedFailure);
        assert!(t
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("the broker said amqp:not-implemented")));
        classify(&mut other, &reg, &Identity::embedded(Flavour::Qpidd));
        assert_eq!(other.status, Status::Failed, "qpidd has no such entry");
        std::fs::write(&p, "- broker: kafka\n  tests: x\n  words: y\n  reason: z\n")
            .expect("write");
        assert!(load_registry(&p).is_err_and(|e| e.contains("entry 1: broker")));
    }

    #[test]
    fn the_shipped_registry_loads() {
        load_registry(&registry_path())
            .expect("harness/peers/oslo-tests-known-failures.yaml is valid");
    }
}
