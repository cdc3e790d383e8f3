//! Live terminal view: an indicatif progress bar per scenario on a TTY, plain lines otherwise (one when
//! a scenario starts, one per step that waits on purpose, the result when it ends).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::events::{Reporter, RunEvent};
use super::{ScenarioReport, SnapshotStatus, StepStatus};

/// Terminal reporter (progress to stderr, results to stdout).
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

    fn with_bar(&self, f: impl FnOnce(&ProgressBar)) {
        if let Ok(b) = self.bar.lock() {
            if let Some(bar) = b.as_ref() {
                f(bar);
            }
        }
    }

    fn started(&self, file: &str, broker: &str, steps: usize) {
        if !self.tty {
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

    fn finished(&self, r: &ScenarioReport) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        }
        outln!("{}", render_result(r));
    }
}

impl Reporter for Terminal {
    fn event(&self, event: &RunEvent<'_>) {
        match event {
            RunEvent::ScenarioStarted {
                file,
                broker,
                steps,
            } => self.started(file, broker, *steps),
            RunEvent::StepStarted { step, wait } => {
                let what = format!("step {} {}", step.number, step.keyword());
                match (self.tty, wait) {
                    (true, _) => self.with_bar(|bar| bar.set_message(what)),
                    (false, Some(d)) => eprintln!(
                        "  {what} (line {}): waiting up to {}",
                        step.line,
                        humantime::format_duration(*d)
                    ),
                    (false, None) => {}
                }
            }
            RunEvent::StepFinished(_) => self.with_bar(|bar| bar.inc(1)),
            RunEvent::ScenarioFinished(r) => self.finished(r),
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The lines printed for one scenario (pure, for tests).
pub fn render_result(r: &ScenarioReport) -> String {
    if let Some(why) = &r.not_applicable {
        return format!("not applicable: {} ({}): {why}", r.file, r.broker);
    }
    let steps = r.steps;
    let failed = r.failures().count();
    let xfail = r.expected_failures().count();
    let verdict = match (r.exit_code, &r.error) {
        (0, _) => "ok",
        (_, Some(_)) => "ERROR",
        _ => "FAILED",
    };
    let snapshot = match &r.snapshot {
        SnapshotStatus::Matches => ", snapshot matches",
        SnapshotStatus::Updated => ", snapshot updated",
        SnapshotStatus::Mismatch { .. } => ", snapshot differs",
        SnapshotStatus::NotChecked => "",
    };
    let mut out = format!(
        "{verdict}: {} ({}) {}, {failed} failed, {}{snapshot} in {} ms",
        r.file,
        r.broker,
        plural(steps, "step"),
        plural(xfail, "expected failure"),
        r.duration_ms
    );
    if let Some(e) = &r.error {
        out.push('\n');
        out.push_str(e.trim_end());
    }
    let all = || r.groups.iter().flat_map(|g| g.steps.iter());
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
    for s in all().filter(|s| s.status == StepStatus::Skipped) {
        out.push_str(&format!(
            "\n  skipped: step {} {}: {}",
            s.index,
            s.keyword,
            s.message.as_deref().unwrap_or("")
        ));
    }
    for s in all().filter(|s| s.status == StepStatus::Passed) {
        if let Some(m) = &s.message {
            // What the broker-neutral transcript leaves out (a timeout's text), for a step that passed.
            out.push_str(&format!(
                "\n  passed: step {} {} ({}:{}) {m}",
                s.index, s.keyword, r.file, s.line
            ));
        }
    }
    if let SnapshotStatus::Mismatch { diff } = &r.snapshot {
        out.push_str("\n  transcript differs from the snapshot (- snapshot, + this run):\n");
        for l in diff.lines() {
            out.push_str("    ");
            out.push_str(l);
            out.push('\n');
        }
        out = out.trim_end().to_string();
    }
    out
}
