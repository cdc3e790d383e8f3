//! Small statistics helpers: latency percentiles, a downsampled CDF and the process memory counters.

use std::time::Duration;

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (sorted in place); `None` when there are none.
    pub fn from_samples(samples: &mut [Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let total: f64 = samples.iter().map(|d| d.as_secs_f64()).sum();
        Some(Latency {
            n: samples.len(),
            p50_ms: ms(quantile(samples, 0.50)),
            p90_ms: ms(quantile(samples, 0.90)),
            p99_ms: ms(quantile(samples, 0.99)),
            max_ms: ms(samples[samples.len() - 1]),
            mean_ms: total * 1000.0 / samples.len() as f64,
        })
    }
}

/// Nearest-rank quantile of sorted, non-empty `sorted`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// At most `points` `(latency_ms, cumulative_fraction)` pairs of the sorted `samples`, for plotting.
pub fn cdf(sorted: &[Duration], points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 || points == 0 {
        return Vec::new();
    }
    let step = (n / points).max(1);
    let mut out: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (ms(sorted[i]), (i + 1) as f64 / n as f64))
        .collect();
    if out.last().is_some_and(|&(_, f)| f < 1.0) {
        out.push((ms(sorted[n - 1]), 1.0));
    }
    out
}

/// `VmRSS` and `VmHWM` of this process from `/proc/self/status`, in KiB (`None` off Linux).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: Option<u64>,
    /// Peak resident set size so far ("high water mark").
    pub hwm_kib: Option<u64>,
}

impl Memory {
    /// Reads the current counters.
    pub fn now() -> Memory {
        let Ok(text) = std::fs::read_to_string("/proc/self/status") else {
            return Memory::default();
        };
        Memory {
            rss_kib: field_kib(&text, "VmRSS:"),
            hwm_kib: field_kib(&text, "VmHWM:"),
        }
    }
}

fn field_kib(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_hundred() {
        let mut s: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::from_samples(&mut s).expect("samples");
        assert_eq!(l.n, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
    }

    #[test]
    fn no_samples_no_percentiles() {
        assert!(Latency::from_samples(&mut []).is_none());
    }

    #[test]
    fn cdf_is_bounded_and_ends_at_one() {
        let s: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let c = cdf(&s, 100);
        assert!(c.len() <= 101, "{} points", c.len());
        assert_eq!(c.last().map(|p| p.1), Some(1.0));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn proc_status_fields() {
        let text = "Name:\tx\nVmHWM:\t  51200 kB\nVmRSS:\t  40960 kB\n";
        assert_eq!(field_kib(text, "VmRSS:"), Some(40960));
        assert_eq!(field_kib(text, "VmHWM:"), Some(51200));
        assert_eq!(field_kib(text, "VmSwap:"), None);
    }
}
