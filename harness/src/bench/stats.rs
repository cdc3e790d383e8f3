//! Small statistics helpers: HDR latency histograms and percentiles, medians and ranges of rounds, a
//! downsampled CDF, and the memory and CPU counters of a process.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram records (longer samples are clamped to it).
const HIST_MAX_US: u64 = 120_000_000;

/// A latency histogram in microseconds (3 significant digits).
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Hist {
        // 1 µs .. 120 s at 3 significant figures: the bounds are constants, so this cannot fail.
        match Histogram::new_with_bounds(1, HIST_MAX_US, 3) {
            Ok(h) => Hist(h),
            Err(_) => Hist(Histogram::new(3).unwrap_or_else(|_| unreachable!("sigfig 3 is valid"))),
        }
    }

    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one sample given in microseconds.
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, HIST_MAX_US));
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The quantile `q` (0..=1) in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }

    /// Percentiles, `None` when empty.
    pub fn latency(&self) -> Option<Latency> {
        if self.is_empty() {
            return None;
        }
        Some(Latency {
            n: self.len(),
            p50_ms: self.quantile_ms(0.50),
            p90_ms: self.quantile_ms(0.90),
            p99_ms: self.quantile_ms(0.99),
            p999_ms: self.quantile_ms(0.999),
            max_ms: self.0.max() as f64 / 1000.0,
            mean_ms: self.0.mean() / 1000.0,
        })
    }

    /// At most about `points` `(latency_ms, cumulative fraction)` pairs, for plotting.
    pub fn cdf(&self, points: usize) -> Vec<(f64, f64)> {
        let n = self.len();
        if n == 0 || points == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut seen = 0u64;
        for v in self.0.iter_recorded() {
            seen += v.count_at_value();
            out.push((
                v.value_iterated_to() as f64 / 1000.0,
                seen as f64 / n as f64,
            ));
        }
        if out.len() > points {
            let step = out.len().div_ceil(points);
            let last = out[out.len() - 1];
            out = out.into_iter().step_by(step).collect();
            if out.last() != Some(&last) {
                out.push(last);
            }
        }
        out
    }

    /// `(bucket lower bound ms, bucket upper bound ms, count)` over `buckets` log-spaced buckets.
    pub fn buckets(&self, buckets: usize) -> Vec<(f64, f64, u64)> {
        if self.is_empty() || buckets == 0 {
            return Vec::new();
        }
        let lo = (self.0.min().max(1) as f64).ln();
        let hi = ((self.0.max().max(1) + 1) as f64).ln();
        let step = ((hi - lo) / buckets as f64).max(1e-9);
        let mut counts = vec![0u64; buckets];
        for v in self.0.iter_recorded() {
            let x = (v.value_iterated_to().max(1) as f64).ln();
            let i = (((x - lo) / step) as usize).min(buckets - 1);
            counts[i] += v.count_at_value();
        }
        counts
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let a = (lo + step * i as f64).exp() / 1000.0;
                let b = (lo + step * (i + 1) as f64).exp() / 1000.0;
                (a, b, c)
            })
            .collect()
    }
}

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Number of samples.
    pub n: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest sample.
    pub max_ms: f64,
    /// Arithmetic mean.
    pub mean_ms: f64,
}

/// Median, smallest and largest of `v` (`None` when empty).
pub fn median_range(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    Some((median, s[0], s[n - 1]))
}

/// `VmRSS` and `VmHWM` of a process from `/proc/<pid>/status`, in KiB (`None` off Linux).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Memory {
    /// Resident set size now.
    pub rss_kib: Option<u64>,
    /// Peak resident set size so far ("high water mark").
    pub hwm_kib: Option<u64>,
}

impl Memory {
    /// This process's counters.
    pub fn now() -> Memory {
        Memory::of("self")
    }

    /// The counters of process `pid` (`"self"` for this one).
    pub fn of(pid: &str) -> Memory {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
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

/// User + system CPU seconds of process `pid` (`"self"` for this one) from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu(&text, clock_ticks())
}

fn clock_ticks() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: sysconf has no preconditions; it only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in seconds.
fn parse_cpu(stat: &str, ticks: f64) -> Option<f64> {
    // The command name (field 2) is in parentheses and may contain spaces: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// The 1, 5 and 15 minute load averages from `/proc/loadavg`.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_thousand_ms() {
        let mut h = Hist::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let l = h.latency().expect("samples");
        assert_eq!(l.n, 1000);
        assert!((l.p50_ms - 500.0).abs() < 1.0, "{}", l.p50_ms);
        assert!((l.p99_ms - 990.0).abs() < 1.0, "{}", l.p99_ms);
        assert!((l.p999_ms - 999.0).abs() < 1.0, "{}", l.p999_ms);
        assert!((l.max_ms - 1000.0).abs() < 1.0, "{}", l.max_ms);
        assert!((l.mean_ms - 500.5).abs() < 1.0);
    }

    #[test]
    fn no_samples_no_percentiles() {
        assert!(Hist::new().latency().is_none());
        assert!(Hist::new().cdf(10).is_empty());
    }

    #[test]
    fn cdf_is_bounded_and_ends_at_one() {
        let mut h = Hist::new();
        for us in 1..=5000u64 {
            h.record_us(us);
        }
        let c = h.cdf(100);
        assert!(c.len() <= 102, "{} points", c.len());
        assert_eq!(c.last().map(|p| p.1), Some(1.0));
        assert!(c.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 < w[1].1));
        let b = h.buckets(20);
        assert_eq!(b.iter().map(|b| b.2).sum::<u64>(), 5000);
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(median_range(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(median_range(&[]), None);
    }

    #[test]
    fn proc_status_and_stat_fields() {
        let text = "Name:\tx\nVmHWM:\t  51200 kB\nVmRSS:\t  40960 kB\n";
        assert_eq!(field_kib(text, "VmRSS:"), Some(40960));
        assert_eq!(field_kib(text, "VmHWM:"), Some(51200));
        assert_eq!(field_kib(text, "VmSwap:"), None);
        let stat = "42 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_cpu(stat, 100.0), Some(3.0));
        assert!(cpu_seconds("self").is_some_and(|c| c >= 0.0));
    }
}
