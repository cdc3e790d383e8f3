//! The measurements of a run (one object per measurement, with its rounds), the comparison table on
//! stdout and the JSON report.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::fleet::FleetPoint;
use super::stats::{self, Latency};

/// Which implementation a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Impl {
    /// This project's driver.
    Rust,
    /// The Python oslo.messaging 14.9.3 amqp driver in the peer's venv.
    Python,
    /// A bare fe2o3-amqp client, no oslo layer: the reference for what the link can carry.
    Raw,
}

impl Impl {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Impl::Rust => "rust",
            Impl::Python => "python",
            Impl::Raw => "raw",
        }
    }
}

/// One measured quantity of one implementation, with every round.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Phase key (`sequential`, `notify_8`, ...).
    pub phase: String,
    /// What is measured (`calls/s`, `latency p50`, ...).
    pub metric: String,
    /// Unit of the values (`/s`, `ms`, `MiB`, `s`).
    pub unit: &'static str,
    /// Whether a larger value is better.
    pub higher_is_better: bool,
    /// Whose figure this is.
    pub implementation: Impl,
    /// One value per round, in round order.
    pub rounds: Vec<f64>,
    /// Median of the rounds.
    pub median: f64,
    /// Smallest round.
    pub min: f64,
    /// Largest round.
    pub max: f64,
    /// Per-round details (counts sent and received, latency percentiles, ...), in round order.
    pub details: Vec<Value>,
}

/// Collects measurements round by round.
#[derive(Debug, Default)]
pub struct Collector {
    /// In the order they were first recorded.
    pub items: Vec<Measurement>,
}

/// The identity and direction of a metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric<'a> {
    /// Phase key.
    pub phase: &'a str,
    /// Metric name.
    pub metric: &'a str,
    /// Unit.
    pub unit: &'static str,
    /// Larger is better.
    pub higher_is_better: bool,
}

impl Collector {
    /// Appends one round of `m` by `who`.
    pub fn add(&mut self, m: Metric<'_>, who: Impl, value: f64, detail: Value) {
        let found = self
            .items
            .iter_mut()
            .find(|x| x.phase == m.phase && x.metric == m.metric && x.implementation == who);
        let item = match found {
            Some(x) => x,
            None => {
                self.items.push(Measurement {
                    phase: m.phase.to_string(),
                    metric: m.metric.to_string(),
                    unit: m.unit,
                    higher_is_better: m.higher_is_better,
                    implementation: who,
                    rounds: Vec::new(),
                    median: 0.0,
                    min: 0.0,
                    max: 0.0,
                    details: Vec::new(),
                });
                let last = self.items.len() - 1;
                &mut self.items[last]
            }
        };
        item.rounds.push(value);
        item.details.push(detail);
        if let Some((med, lo, hi)) = stats::median_range(&item.rounds) {
            (item.median, item.min, item.max) = (med, lo, hi);
        }
    }

    /// Records the percentiles of one round's latency histogram as separate metrics of `phase`.
    pub fn add_latency(&mut self, phase: &str, who: Impl, l: &Latency) {
        for (name, v) in [
            ("latency p50", l.p50_ms),
            ("latency p90", l.p90_ms),
            ("latency p99", l.p99_ms),
            ("latency p99.9", l.p999_ms),
            ("latency max", l.max_ms),
        ] {
            let m = Metric {
                phase,
                metric: name,
                unit: "ms",
                higher_is_better: false,
            };
            self.add(m, who, v, Value::Null);
        }
    }

    /// The measurement of `phase`/`metric` by `who`.
    pub fn get(&self, phase: &str, metric: &str, who: Impl) -> Option<&Measurement> {
        self.items
            .iter()
            .find(|x| x.phase == phase && x.metric == metric && x.implementation == who)
    }
}

/// How many times better `a` is than `b` (>1 better, whichever way the metric points).
pub fn ratio(a: f64, b: f64, higher_is_better: bool) -> Option<f64> {
    if a <= 0.0 || b <= 0.0 || !a.is_finite() || !b.is_finite() {
        return None;
    }
    Some(if higher_is_better { a / b } else { b / a })
}

/// A ratio of medians with the range of the per-round ratios (round i against round i).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratio {
    /// Ratio of the medians.
    pub median: f64,
    /// Smallest per-round ratio.
    pub min: f64,
    /// Largest per-round ratio.
    pub max: f64,
}

fn ratio_of(a: &Measurement, b: &Measurement) -> Option<Ratio> {
    let median = ratio(a.median, b.median, a.higher_is_better)?;
    let per: Vec<f64> = a
        .rounds
        .iter()
        .zip(&b.rounds)
        .filter_map(|(x, y)| ratio(*x, *y, a.higher_is_better))
        .collect();
    let (_, min, max) = stats::median_range(&per).unwrap_or((median, median, median));
    Some(Ratio { median, min, max })
}

/// One line of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Phase key.
    pub phase: String,
    /// Phase and metric, as printed.
    pub label: String,
    /// Unit.
    pub unit: &'static str,
    /// Whether larger is better.
    pub higher_is_better: bool,
    /// Rust driver: median, min, max.
    pub rust: Option<[f64; 3]>,
    /// Python driver.
    pub python: Option<[f64; 3]>,
    /// Rust against Python (>1 = the Rust driver is better).
    pub vs_python: Option<Ratio>,
    /// Raw fe2o3.
    pub raw: Option<[f64; 3]>,
    /// Rust against raw (<1 = slower than the bare link).
    pub vs_raw: Option<Ratio>,
}

fn triple(m: &Measurement) -> [f64; 3] {
    [m.median, m.min, m.max]
}

/// Human names of the phase keys.
pub fn phase_label(phase: &str, settings: &Settings) -> String {
    match phase {
        "ready" => "server".into(),
        "sequential" => "sequential calls".into(),
        "concurrent" => format!("{} concurrent callers", settings.callers),
        "casts" => "casts (pre-settled, counted at the server)".into(),
        "fanout" => format!("fanout to {} servers", settings.fanout),
        p if p.starts_with("notify_") => {
            let n = &p["notify_".len()..];
            format!(
                "notifications, {n} notifier{} (acked, counted at the listener)",
                if n == "1" { "" } else { "s" }
            )
        }
        other => other.to_string(),
    }
}

/// The comparison rows: one per (phase, metric), in recording order.
pub fn rows(c: &Collector, settings: &Settings) -> Vec<Row> {
    let mut out: Vec<Row> = Vec::new();
    for m in &c.items {
        if out
            .iter()
            .any(|r| r.phase == m.phase && r.label.ends_with(&format!(": {}", m.metric)))
        {
            continue;
        }
        let rust = c.get(&m.phase, &m.metric, Impl::Rust);
        let python = c.get(&m.phase, &m.metric, Impl::Python);
        let raw = c.get(&m.phase, &m.metric, Impl::Raw);
        out.push(Row {
            phase: m.phase.clone(),
            label: format!("{}: {}", phase_label(&m.phase, settings), m.metric),
            unit: m.unit,
            higher_is_better: m.higher_is_better,
            rust: rust.map(triple),
            python: python.map(triple),
            vs_python: rust.zip(python).and_then(|(a, b)| ratio_of(a, b)),
            raw: raw.map(triple),
            vs_raw: rust.zip(raw).and_then(|(a, b)| ratio_of(a, b)),
        });
    }
    out
}

/// `12345.6` as `12,346`; small values keep decimals.
pub fn number(v: f64, unit: &str) -> String {
    if unit != "/s" {
        return if v < 10.0 {
            format!("{v:.3}")
        } else if v < 1000.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        };
    }
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn cell(v: Option<[f64; 3]>, unit: &str, rounds: bool) -> String {
    match v {
        Some([med, lo, hi]) => {
            let u = if unit == "/s" {
                "/s".to_string()
            } else {
                format!(" {unit}")
            };
            if rounds && lo != hi {
                format!(
                    "{}{u} [{}-{}]",
                    number(med, unit),
                    number(lo, unit),
                    number(hi, unit)
                )
            } else {
                format!("{}{u}", number(med, unit))
            }
        }
        None => "-".into(),
    }
}

fn times(v: Option<Ratio>) -> String {
    let f = |r: f64| {
        if r >= 10.0 {
            format!("{r:.0}x")
        } else {
            format!("{r:.2}x")
        }
    };
    match v {
        Some(r) if (r.max - r.min).abs() > 1e-9 => {
            format!("{} [{}-{}]", f(r.median), f(r.min), f(r.max))
        }
        Some(r) => f(r.median),
        None => "-".into(),
    }
}

/// A plain text table with a header line and a rule; the first column is left-aligned.
pub fn text_table(head: &[&str], body: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for b in body {
        for (w, c) in width.iter_mut().zip(b) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i == 0 {
                s.push_str(&format!("{c:<w$}"));
            } else {
                s.push_str(&format!("  {c:>w$}"));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(head.to_vec(), &mut out);
    let rule: Vec<String> = width.iter().map(|w| "-".repeat(*w)).collect();
    line(rule.iter().map(String::as_str).collect(), &mut out);
    for b in body {
        line(b.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// The comparison table as printed on stdout.
pub fn table(header: &str, rows: &[Row], rounds: usize) -> String {
    let multi = rounds > 1;
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.label.clone(),
                cell(r.rust, r.unit, multi),
                cell(r.python, r.unit, multi),
                times(r.vs_python),
                cell(r.raw, r.unit, multi),
                times(r.vs_raw),
            ]
        })
        .collect();
    let mut out = format!("{header}\n\n");
    out.push_str(&text_table(
        &[
            "metric",
            "rust driver",
            "python driver",
            "vs python",
            "raw fe2o3",
            "vs raw",
        ],
        &body,
    ));
    out.push_str(&format!(
        "\nmedian of {rounds} round(s) [smallest-largest]; \"vs\" columns: how many times better the rust driver is \
         (>1 better; for latency, time and memory lower is better), the ratio of the medians [range of the \
         per-round ratios].\npython = oslo.messaging 14.9.3's amqp driver in the peer's venv, raw = a bare fe2o3-amqp \
         client (no oslo layer), both measured in this run through the same broker, rounds alternating.\n"
    ));
    out
}

/// Where the figures were measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs available to this process.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Operating system.
    pub os: &'static str,
    /// CPU architecture.
    pub arch: &'static str,
    /// Load average (1, 5, 15 min) before the first phase.
    pub load_before: Option<[f64; 3]>,
    /// Load average after the last phase.
    pub load_after: Option<[f64; 3]>,
}

impl Machine {
    /// This machine, with the load average now as `load_before`.
    pub fn detect() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        });
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            load_before: stats::load_average(),
            load_after: None,
        }
    }
}

/// The broker the figures were measured through.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerInfo {
    /// `embedded` (started by the bench in this process) or `external` (`--url`).
    pub kind: &'static str,
    /// Embedded flavour (`qpidd`, `router`).
    pub flavour: Option<String>,
    /// The broker URL without credentials.
    pub url: String,
    /// `product` of the broker's Open properties.
    pub product: Option<String>,
    /// `version` of the broker's Open properties.
    pub version: Option<String>,
}

/// What each phase was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Size of the `data` string in each request.
    pub payload_bytes: usize,
    /// Seconds per round of a phase (duration mode).
    pub round_seconds: f64,
    /// Operations per round (count mode).
    pub count: Option<u64>,
    /// Rounds per implementation and phase.
    pub rounds: usize,
    /// Concurrent callers.
    pub callers: u64,
    /// Servers of the fanout phase.
    pub fanout: usize,
    /// Concurrent notifiers of the notification phases.
    pub notifiers: Vec<u64>,
    /// Whether the Python driver was measured.
    pub compare_python: bool,
    /// `--quick`.
    pub quick: bool,
}

/// Memory and CPU of one process at the end of the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUse {
    /// What the process is.
    pub role: String,
    /// Its pid.
    pub pid: Option<u32>,
    /// Resident set size at the end, KiB.
    pub rss_kib: Option<u64>,
    /// Peak resident set size, KiB.
    pub hwm_kib: Option<u64>,
    /// User + system CPU seconds.
    pub cpu_s: Option<f64>,
}

/// One histogram bucket: `(from ms, to ms, count)`.
pub type Bucket = (f64, f64, u64);

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always `amqp1-rig harness bench`.
    pub tool: &'static str,
    /// harness version.
    pub version: &'static str,
    /// When the run finished (RFC 3339, UTC).
    pub date: String,
    /// The exact command line, without credentials.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Through which broker.
    pub broker: BrokerInfo,
    /// Versions of the Python peer's packages, when it ran.
    pub python_versions: Option<Value>,
    /// What it was asked to do.
    pub settings: Settings,
    /// One object per measurement with its rounds.
    pub measurements: Vec<Measurement>,
    /// The comparison table.
    pub comparison: Vec<Row>,
    /// Sequential call latency CDFs, all rounds merged: implementation -> `(ms, fraction)`.
    pub latency_cdf: Vec<(Impl, Vec<(f64, f64)>)>,
    /// Sequential call latency histograms, all rounds merged: `(from ms, to ms, count)`.
    pub latency_histogram: Vec<(Impl, Vec<Bucket>)>,
    /// Memory and CPU per process at the end.
    pub processes: Vec<ProcessUse>,
    /// Fleet scale points (`--servers`).
    pub fleet: Vec<FleetPoint>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

impl Report {
    /// Writes the report as pretty JSON, creating parent directories.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
    }

    /// The processes table.
    pub fn processes_table(&self) -> String {
        let mib = |k: Option<u64>| k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0));
        let body: Vec<Vec<String>> = self
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.role.clone(),
                    p.pid.map(|p| p.to_string()).unwrap_or("-".into()),
                    mib(p.rss_kib).unwrap_or("-".into()),
                    mib(p.hwm_kib).unwrap_or("-".into()),
                    p.cpu_s.map(|c| format!("{c:.2} s")).unwrap_or("-".into()),
                ]
            })
            .collect();
        text_table(&["process", "pid", "RSS", "VmHWM", "CPU"], &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(38_000.0, "/s"), "38,000");
        assert_eq!(number(586.4, "/s"), "586");
        assert_eq!(number(1_234_567.0, "/s"), "1,234,567");
        assert_eq!(number(1.6666, "ms"), "1.667");
        assert_eq!(number(422.04, "ms"), "422.0");
    }

    #[test]
    fn ratios_point_the_right_way() {
        assert_eq!(ratio(1172.0, 586.0, true), Some(2.0));
        assert_eq!(ratio(0.835, 1.67, false), Some(2.0));
        assert_eq!(ratio(0.0, 1.67, false), None);
    }

    #[test]
    fn rounds_give_medians_ranges_and_paired_ratios() {
        let mut c = Collector::default();
        let m = Metric {
            phase: "sequential",
            metric: "calls/s",
            unit: "/s",
            higher_is_better: true,
        };
        for (r, p) in [(3000.0, 600.0), (2000.0, 500.0), (2500.0, 1000.0)] {
            c.add(m, Impl::Rust, r, Value::Null);
            c.add(m, Impl::Python, p, Value::Null);
        }
        let rust = c.get("sequential", "calls/s", Impl::Rust).expect("rust");
        assert_eq!((rust.median, rust.min, rust.max), (2500.0, 2000.0, 3000.0));
        assert_eq!(rust.rounds.len(), 3);
        let settings = Settings {
            payload_bytes: 100,
            round_seconds: 1.0,
            count: None,
            rounds: 3,
            callers: 8,
            fanout: 4,
            notifiers: vec![1],
            compare_python: true,
            quick: false,
        };
        let rows = rows(&c, &settings);
        assert_eq!(rows.len(), 1);
        let r = rows[0].vs_python.expect("ratio");
        assert!((r.median - 2500.0 / 600.0).abs() < 1e-9);
        assert!((r.min - 2.5).abs() < 1e-9 && (r.max - 5.0).abs() < 1e-9);
        let t = table("t", &rows, 3);
        assert!(t.contains("2,500/s [2,000-3,000]"), "{t}");
    }
}
