//! The baseline figures, the comparison table on stdout and the JSON report.

use std::path::Path;

use serde::Serialize;

use super::measure::{Budget, Measurements};
use super::stats;

/// The Python oslo.messaging amqp driver through qpidd (figures from the product brief).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PythonBaseline {
    /// Call round trip, median.
    pub call_p50_ms: f64,
    /// Sequential calls per second.
    pub sequential_calls_per_s: f64,
    /// Calls per second with 8 concurrent callers.
    pub concurrent_calls_per_s: f64,
    /// The number of callers behind `concurrent_calls_per_s`.
    pub concurrent_callers: u64,
    /// Casts per second.
    pub casts_per_s: f64,
    /// Notifications per second.
    pub notifications_per_s: f64,
    /// RPC server time to ready.
    pub server_ready_ms: f64,
    /// RSS of the Python RPC server process once ready.
    pub server_rss_mib: f64,
}

/// The brief's Python baseline.
pub const PYTHON: PythonBaseline = PythonBaseline {
    call_p50_ms: 1.67,
    sequential_calls_per_s: 586.0,
    concurrent_calls_per_s: 912.0,
    concurrent_callers: 8,
    casts_per_s: 2041.0,
    notifications_per_s: 1645.0,
    server_ready_ms: 422.0,
    server_rss_mib: 49.0,
};

/// A raw fe2o3-amqp client with no oslo layer (figures from the product brief).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RawBaseline {
    /// Request/reply round trip, median.
    pub request_reply_p50_ms: f64,
    /// Pre-settled messages per second.
    pub presettled_msgs_per_s: f64,
    /// Acknowledged (unsettled) messages per second.
    pub acked_msgs_per_s: f64,
}

/// The brief's raw fe2o3 figures.
pub const RAW_FE2O3: RawBaseline = RawBaseline {
    request_reply_p50_ms: 0.44,
    presettled_msgs_per_s: 38_000.0,
    acked_msgs_per_s: 31_000.0,
};

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
}

impl Machine {
    /// This machine.
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
}

/// What each phase was asked to do.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Size of the `data` string in each request.
    pub payload_bytes: usize,
    /// Per-phase duration or count.
    pub budget: Budget,
    /// Concurrent callers in phase 2.
    pub callers: u64,
}

/// One line of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What is compared.
    pub metric: String,
    /// Unit of the three values.
    pub unit: &'static str,
    /// This driver.
    pub rust: Option<f64>,
    /// Python baseline, where one exists.
    pub python: Option<f64>,
    /// How many times better than Python (>1 = better, whichever way the metric points).
    pub vs_python: Option<f64>,
    /// Raw fe2o3 figure, where one exists.
    pub fe2o3: Option<f64>,
    /// How many times better than raw fe2o3 (<1 = slower).
    pub vs_fe2o3: Option<f64>,
    /// Whether a larger value is better.
    #[serde(skip)]
    pub higher_is_better: bool,
}

fn ratio(rust: Option<f64>, base: Option<f64>, higher_is_better: bool) -> Option<f64> {
    let (r, b) = (rust?, base?);
    if r <= 0.0 || b <= 0.0 {
        return None;
    }
    Some(if higher_is_better { r / b } else { b / r })
}

fn row(
    metric: impl Into<String>,
    unit: &'static str,
    rust: Option<f64>,
    python: Option<f64>,
    fe2o3: Option<f64>,
    higher_is_better: bool,
) -> Row {
    Row {
        metric: metric.into(),
        unit,
        rust,
        python,
        vs_python: ratio(rust, python, higher_is_better),
        fe2o3,
        vs_fe2o3: ratio(rust, fe2o3, higher_is_better),
        higher_is_better,
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// The comparison rows of `m`.
pub fn rows(m: &Measurements, embedded: bool) -> Vec<Row> {
    let l = &m.sequential.latency;
    let c = &m.concurrent;
    let same_callers = c.callers == PYTHON.concurrent_callers;
    let rss_label = if embedded {
        "process RSS at server ready (incl. embedded broker)"
    } else {
        "process RSS at server ready"
    };
    let delta = match (m.server_ready.after.rss_kib, m.server_ready.before.rss_kib) {
        (Some(a), Some(b)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    vec![
        row(
            "call latency p50",
            "ms",
            Some(l.p50_ms),
            Some(PYTHON.call_p50_ms),
            Some(RAW_FE2O3.request_reply_p50_ms),
            false,
        ),
        row("call latency p90", "ms", Some(l.p90_ms), None, None, false),
        row("call latency p99", "ms", Some(l.p99_ms), None, None, false),
        row("call latency max", "ms", Some(l.max_ms), None, None, false),
        row(
            "sequential calls/s",
            "/s",
            Some(m.sequential.calls_per_s),
            Some(PYTHON.sequential_calls_per_s),
            None,
            true,
        ),
        row(
            format!("calls/s, {} concurrent callers", c.callers),
            "/s",
            Some(c.calls_per_s),
            same_callers.then_some(PYTHON.concurrent_calls_per_s),
            None,
            true,
        ),
        row(
            "casts/s (pre-settled, received)",
            "/s",
            Some(m.casts.received_per_s),
            Some(PYTHON.casts_per_s),
            Some(RAW_FE2O3.presettled_msgs_per_s),
            true,
        ),
        row(
            "notifications/s (acked, received)",
            "/s",
            Some(m.notifications.received_per_s),
            Some(PYTHON.notifications_per_s),
            Some(RAW_FE2O3.acked_msgs_per_s),
            true,
        ),
        row(
            "server ready (connect + start)",
            "ms",
            Some(m.server_ready.total_ms),
            Some(PYTHON.server_ready_ms),
            None,
            false,
        ),
        row(
            rss_label,
            "MiB",
            mib(m.server_ready.after.rss_kib),
            Some(PYTHON.server_rss_mib),
            None,
            false,
        ),
        row(
            "RSS growth from connect to server ready",
            "MiB",
            mib(delta),
            None,
            None,
            false,
        ),
        row(
            "peak process RSS (VmHWM)",
            "MiB",
            mib(m.end_memory.hwm_kib),
            None,
            None,
            false,
        ),
    ]
}

/// `12345.6` as `12,346`; small values keep decimals.
pub fn number(v: f64, unit: &str) -> String {
    if unit == "ms" || unit == "MiB" {
        return if v < 10.0 {
            format!("{v:.3}")
        } else {
            format!("{v:.1}")
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

fn cell(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) => {
            if unit == "/s" {
                format!("{}/s", number(v, unit))
            } else {
                format!("{} {unit}", number(v, unit))
            }
        }
        None => "-".into(),
    }
}

fn times(v: Option<f64>) -> String {
    match v {
        Some(r) if r >= 10.0 => format!("{r:.0}x"),
        Some(r) => format!("{r:.2}x"),
        None => "-".into(),
    }
}

/// The comparison table as printed on stdout.
pub fn table(header: &str, rows: &[Row]) -> String {
    let head = [
        "metric",
        "rust driver",
        "python (qpidd)",
        "vs python",
        "raw fe2o3",
        "vs fe2o3",
    ];
    let body: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.metric.clone(),
                cell(r.rust, r.unit),
                cell(r.python, r.unit),
                times(r.vs_python),
                cell(r.fe2o3, r.unit),
                times(r.vs_fe2o3),
            ]
        })
        .collect();
    let mut width = head.map(str::len);
    for b in &body {
        for (w, c) in width.iter_mut().zip(b) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = format!("{header}\n\n");
    let line = |cells: [&str; 6], out: &mut String| {
        let mut s = format!("{:<w$}", cells[0], w = width[0]);
        for (c, w) in cells.iter().zip(width).skip(1) {
            s.push_str(&format!("  {c:>w$}"));
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(head, &mut out);
    let rule = width.map(|w| "-".repeat(w));
    line(
        [&rule[0], &rule[1], &rule[2], &rule[3], &rule[4], &rule[5]],
        &mut out,
    );
    for b in &body {
        line([&b[0], &b[1], &b[2], &b[3], &b[4], &b[5]], &mut out);
    }
    out.push_str(
        "\n\"vs\" columns: how many times better the rust driver is (>1 better, <1 worse; for latency, time and memory: lower is better).\n\
         python = the Python oslo.messaging amqp driver through qpidd; raw fe2o3 = a bare fe2o3-amqp client (no oslo layer);\n\
         both are the product brief's reference figures, not measured by this run.\n",
    );
    out
}

/// Everything `--json` writes.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Always `amqp1-rig harness bench`.
    pub tool: &'static str,
    /// harness version.
    pub version: &'static str,
    /// When the run finished (RFC 3339, UTC).
    pub date: String,
    /// The command, without credentials.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Through which broker.
    pub broker: BrokerInfo,
    /// What it was asked to do.
    pub settings: Settings,
    /// The raw measurements.
    pub results: Measurements,
    /// `(latency_ms, cumulative fraction)` of the sequential calls, at most ~200 points.
    pub latency_cdf: Vec<(f64, f64)>,
    /// The Python reference figures.
    pub python_baseline: PythonBaseline,
    /// The raw fe2o3 reference figures.
    pub fe2o3_baseline: RawBaseline,
    /// The comparison table.
    pub comparison: Vec<Row>,
}

impl Report {
    /// Assembles the report.
    pub fn new(
        command: String,
        broker: BrokerInfo,
        settings: Settings,
        results: Measurements,
    ) -> Report {
        let embedded = broker.kind == "embedded";
        Report {
            tool: "amqp1-rig harness bench",
            version: env!("CARGO_PKG_VERSION"),
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            command,
            machine: Machine::detect(),
            latency_cdf: stats::cdf(&results.samples, 200),
            comparison: rows(&results, embedded),
            broker,
            settings,
            results,
            python_baseline: PYTHON,
            fe2o3_baseline: RAW_FE2O3,
        }
    }

    /// Writes the report as pretty JSON, creating parent directories.
    pub fn write_json(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text + "\n")
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
        // Throughput: more is better.
        assert_eq!(ratio(Some(1172.0), Some(586.0), true), Some(2.0));
        // Latency: less is better.
        assert_eq!(ratio(Some(0.835), Some(1.67), false), Some(2.0));
        assert_eq!(ratio(Some(0.0), Some(1.67), false), None);
        assert_eq!(ratio(Some(1.0), None, false), None);
    }
}
