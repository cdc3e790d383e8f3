//! Progress on stderr: an indicatif spinner per phase on a terminal, one plain line per phase otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports the phases of a benchmark run.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// Starts a phase; call [`Phase::tick`] as work completes and [`Phase::finish`] at the end.
    pub fn phase(&self, name: &str) -> Phase {
        let bar = if self.tty {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})")
            {
                pb.set_style(style);
            }
            pb.set_prefix(name.to_string());
            pb.enable_steady_tick(Duration::from_millis(120));
            Some(pb)
        } else {
            eprintln!("bench: {name} ...");
            None
        };
        Phase {
            name: name.to_string(),
            bar,
            last: Instant::now(),
        }
    }

    /// A line that is not part of a phase.
    pub fn note(&self, line: &str) {
        eprintln!("bench: {line}");
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// One running phase.
#[derive(Debug)]
pub struct Phase {
    name: String,
    bar: Option<ProgressBar>,
    last: Instant,
}

impl Phase {
    /// Updates the count shown (at most ten times a second; a no-op without a terminal).
    pub fn tick(&mut self, done: u64, what: &str) {
        if let Some(pb) = &self.bar {
            if self.last.elapsed() >= Duration::from_millis(100) {
                self.last = Instant::now();
                pb.set_message(format!("{done} {what}"));
            }
        }
    }

    /// Ends the phase with a one-line summary.
    pub fn finish(self, summary: &str) {
        if let Some(pb) = &self.bar {
            pb.finish_and_clear();
        }
        eprintln!("bench: {}: {summary}", self.name);
    }
}
