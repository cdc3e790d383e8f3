//! `harness soak SCENARIO --duration D --restart-every S`: the scenario's services and its `traffic:` for
//! a long time with broker restarts; zero lost acknowledged notifications, zero hung calls and a flat
//! memory curve pass.

use std::path::PathBuf;
use std::time::Duration;

use crate::backend::BackendKind;
use crate::brokers::BrokerChoice;
use crate::exit_code;
use crate::plan::Overrides;
use crate::runner::soak::{soak, SoakOptions};

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = crate::scenario::validate::parse_duration(s)?;
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err("at most a week".into());
    }
    Ok(d)
}

/// `harness soak` arguments.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// The scenario (its services and its one `traffic:` step).
    #[arg(value_name = "SCENARIO")]
    pub file: PathBuf,
    /// How long (e.g. 2m, 15m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2m")]
    pub duration: Duration,
    /// Restart the broker this often (never when not given).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub restart_every: Option<Duration>,
    /// How long the broker stays down at each restart.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1s")]
    pub down_for: Duration,
    /// Backend (default: the scenario's; the embedded broker then runs in this process, its memory
    /// counted with the driver's, and its restarts keep the store when the scenario says `store: keep`).
    #[arg(long, value_name = "BACKEND", value_parser = crate::cli::parse_backend)]
    pub backend: Option<BackendKind>,
    /// Broker instead of the scenario's: KIND[:FLAVOUR].
    #[arg(long, value_name = "KIND[:FLAVOUR]", value_parser = BrokerChoice::parse)]
    pub broker: Option<BrokerChoice>,
    /// Largest RSS growth after the warm-up that passes, in percent.
    #[arg(long, value_name = "PERCENT", default_value_t = 10.0)]
    pub rss_tolerance: f64,
    /// Write the result as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
}

/// `harness soak`.
pub async fn run(args: SoakArgs, templates: &std::path::Path) -> i32 {
    let overrides = Overrides {
        backend: args.backend,
        broker: args.broker.clone(),
        ..Overrides::default()
    };
    let plan = match super::run::load_and_plan(
        &args.file,
        &super::env_pairs(),
        &[],
        &overrides,
        templates,
    ) {
        Ok(p) => p,
        Err(r) => return r.exit_code,
    };
    let opts = SoakOptions {
        duration: args.duration,
        restart_every: args.restart_every,
        down_for: args.down_for,
        warm_up: (args.duration / 5).clamp(Duration::from_secs(5), Duration::from_secs(60)),
        rss_tolerance: args.rss_tolerance / 100.0,
    };
    eprintln!(
        "soak {} on {} for {}{}",
        plan.file,
        plan.label,
        humantime::format_duration(opts.duration),
        opts.restart_every
            .map(|d| format!(
                ", restarting the broker every {}",
                humantime::format_duration(d)
            ))
            .unwrap_or_default()
    );
    let report = match soak(&plan, &opts, &|line| eprintln!("  {line}")).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::BROKER_SETUP;
        }
    };
    let kib = |k: Option<u64>| {
        k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
            .unwrap_or("-".into())
    };
    outln!(
        "{}: soak {} ({}) {:.0} s, {} restarts\n  {}\n  RSS of this process (driver, and an embedded broker) after warm-up {}, at the end {} ({}), peak {}",
        if report.problems.is_empty() { "ok" } else { "FAILED" },
        report.file,
        report.broker,
        report.seconds,
        report.restarts,
        report.counts,
        kib(report.rss_after_warm_up_kib),
        kib(report.rss_end_kib),
        report.rss_growth.map(|g| format!("{:+.1} %", g * 100.0)).unwrap_or("-".into()),
        kib(report.rss_peak_kib),
    );
    for p in &report.problems {
        outln!("  FAIL {p}");
    }
    let mut code = if report.problems.is_empty() {
        exit_code::OK
    } else {
        exit_code::MISMATCH
    };
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default() + "\n";
        if let Err(e) = crate::report::write_file(p, &text) {
            eprintln!("error: cannot write {}: {e}", p.display());
            code = exit_code::combine(code, exit_code::INTERNAL);
        }
    }
    code
}
