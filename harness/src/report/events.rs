//! What a run tells its reporters, as it happens (the way nextest's runner feeds its reporter): the
//! runner emits [`RunEvent`]s and knows nothing of terminals or files; each [`Reporter`] renders them.

use super::{ScenarioReport, StepReport};
use crate::scenario::Step;

/// Something that happened during a run.
#[derive(Debug)]
pub enum RunEvent<'a> {
    /// A scenario starts on a broker; `steps` is the length of its `steps:` list (groups included,
    /// numbered like the other steps).
    ScenarioStarted {
        /// The file.
        file: &'a str,
        /// The broker label.
        broker: &'a str,
        /// Number of steps.
        steps: usize,
    },
    /// A step starts; `wait` is set when it is expected to take a while (an expected timeout, a
    /// `wait:`, a long sleep or pause), with how long at most.
    StepStarted {
        /// The step.
        step: &'a Step,
        /// Its bound, when it is a waiting step.
        wait: Option<std::time::Duration>,
    },
    /// A step finished.
    StepFinished(&'a StepReport),
    /// A scenario finished (its snapshot checked).
    ScenarioFinished(&'a ScenarioReport),
}

/// Receives the events of a run. Implementations must not block for long: they run on the runner's
/// task.
pub trait Reporter: Send + Sync {
    /// One event.
    fn event(&self, event: &RunEvent<'_>);
}

/// A reporter that shows nothing (library callers and tests that only want the returned reports).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn event(&self, _: &RunEvent<'_>) {}
}
