//! Live terminal view: an indicatif progress bar per scenario on a TTY, plain lines otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{ScenarioReport, SnapshotStatus, StepReport, StepStatus};

/// Terminal reporter (writes progress to stderr, results to stdout).
#[derive(Debug)]
pub struct Terminal {
    tty: bool,
    bar: std::sync::Mutex<Option<ProgressBar>>,
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Terminal {
    /// Detects whether stderr is a terminal.
    pub fn new() -> Self {
        Terminal {
            tty: std::io::stderr().is_terminal(),
            bar: std::sync::Mutex::new(None),
        }
    }

    /// A scenario with `steps` steps starts.
    pub fn scenario_started(&self, file: &str, broker: &str, steps: usize) {
        if !self.tty {
            // Plain progress for logs: one line when a scenario starts, its result when it ends.
            eprintln!("running {file} on {broker} ({steps} steps)");
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(format!("{file} ({broker})"));
        bar.enable_steady_tick(Duration::from_millis(100));
        if let Ok(mut b) = self.bar.lock() {
            *b = Some(bar);
        }
    }

    /// A step finished.
    pub fn step_finished(&self, step: &StepReport) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                bar.set_message(format!("step {} {}", step.index, step.keyword));
                bar.inc(1);
            }
        }
    }

    /// A scenario finished: clear the bar and print its result.
    pub fn scenario_finished(&self, r: &ScenarioReport) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
        outln!("{}", render_result(r));
    }
}

/// The lines printed for one scenario (pure, for tests).
pub fn render_result(r: &ScenarioReport) -> String {
    let steps: usize = r.groups.iter().map(|g| g.steps.len()).sum();
    let failed = r.failures().count();
    let xfail = r.expected_failures().count();
    let verdict = match (r.exit_code, &r.error) {
        (0, _) => "ok",
        (_, Some(_)) => "ERROR",
        _ => "FAILED",
    };
    let mut out = format!(
        "{verdict}: {} ({}) {steps} steps, {failed} failed, {xfail} expected failure{} in {} ms",
        r.file,
        r.broker,
        if xfail == 1 { "" } else { "s" },
        r.duration_ms
    );
    if let Some(e) = &r.error {
        out.push('\n');
        out.push_str(e.trim_end());
    }
    for s in r.failures() {
        out.push_str(&format!(
            "\n  FAIL step {} {} ({}:{}): {}",
            s.index,
            s.keyword,
            r.file,
            s.line,
            s.message.as_deref().unwrap_or("failed")
        ));
    }
    for s in r.expected_failures() {
        out.push_str(&format!(
            "\n  expected failure: step {} {} ({}:{}): {}",
            s.index,
            s.keyword,
            r.file,
            s.line,
            s.message.as_deref().unwrap_or("")
        ));
    }
    for g in &r.groups {
        for s in g.steps.iter().filter(|s| s.status == StepStatus::Skipped) {
            out.push_str(&format!(
                "\n  skipped: step {} {}: {}",
                s.index,
                s.keyword,
                s.message.as_deref().unwrap_or("")
            ));
        }
    }
    for g in &r.groups {
        for s in g.steps.iter().filter(|s| s.status == StepStatus::Passed) {
            if let Some(m) = &s.message {
                // Details kept out of the broker-neutral transcript (e.g. a timeout's text).
                out.push_str(&format!("\n  detail: step {} {}: {m}", s.index, s.keyword));
            }
        }
    }
    match &r.snapshot {
        SnapshotStatus::Mismatch { diff } => {
            out.push_str("\n  transcript differs from the snapshot (- snapshot, + this run):\n");
            for l in diff.lines() {
                out.push_str("    ");
                out.push_str(l);
                out.push('\n');
            }
            out = out.trim_end().to_string();
        }
        SnapshotStatus::Updated => out.push_str("\n  snapshot updated"),
        _ => {}
    }
    out
}
