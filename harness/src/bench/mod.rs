//! `harness bench`: throughput and latency of the Rust driver through the embedded broker (or `--url`),
//! printed next to the Python driver's and a raw fe2o3 client's reference figures.
//!
//! Phases, each bounded by `--duration` (default 5 s) or `--count`: server time-to-ready and memory,
//! sequential calls (latency percentiles), concurrent callers, pre-settled casts counted by the server,
//! unsettled notifications counted by a listener. See `docs/benchmarks.md` for measured figures.

mod measure;
mod plot;
mod progress;
mod report;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::exit_code;
pub use measure::{Budget, Measurements};
pub use report::{Report, PYTHON, RAW_FE2O3};

/// Largest payload accepted by `--size`.
const MAX_SIZE: usize = 1 << 20;

/// `harness bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Measure through the broker at URL instead of starting the embedded one.
    #[arg(long, value_name = "URL", conflicts_with = "broker")]
    pub url: Option<String>,
    /// Embedded broker to start: embedded[:qpidd|router] (default embedded:qpidd).
    #[arg(long, value_name = "embedded[:FLAVOUR]")]
    pub broker: Option<String>,
    /// Size in bytes of the string payload of each call, cast and notification.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = parse_size)]
    pub size: usize,
    /// Time per phase (e.g. 5s, 500ms, 1m; at most 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Operations per phase instead of a duration (each phase still stops after 120 s).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: Option<u64>,
    /// Concurrent callers in the concurrency phase.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub callers: u64,
    /// Write every number (and machine and broker info) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write an SVG with the latency CDF and the throughputs vs the Python baseline to PATH.
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let n: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a byte count (e.g. 100)"))?;
    if n > MAX_SIZE {
        return Err(format!("{n} bytes is more than the {MAX_SIZE}-byte limit"));
    }
    Ok(n)
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("'{s}' is not a duration (e.g. 5s, 500ms, 1m): {e}"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    if d > Duration::from_secs(600) {
        return Err(format!("{s} is longer than the 10m limit per phase"));
    }
    Ok(d)
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    /// The embedded broker did not start.
    #[error("embedded broker did not start: {0}")]
    Broker(String),
    /// Could not connect to the broker.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// The driver failed during a phase.
    #[error("{0}")]
    Driver(String),
    /// Writing a report failed.
    #[error("{0}")]
    Output(String),
}

impl BenchError {
    /// The process exit code for this error (see [`crate::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Usage(_) => exit_code::USAGE,
            BenchError::Broker(_) => exit_code::BROKER_SETUP,
            BenchError::Connect(_) | BenchError::Driver(_) => exit_code::RUNTIME,
            BenchError::Output(_) => exit_code::INTERNAL,
        }
    }
}

/// Parses `--broker` as `harness run` does; the bench starts only the embedded broker.
fn parse_flavour(arg: Option<&str>) -> Result<String, BenchError> {
    let Some(arg) = arg else {
        return Ok(crate::brokers::Flavour::default().to_string());
    };
    match crate::brokers::BrokerChoice::parse(arg) {
        Ok(crate::brokers::BrokerChoice::Embedded(f)) => Ok(f.to_string()),
        Ok(other) => Err(BenchError::Usage(format!(
            "--broker '{arg}': bench only starts the embedded broker ('{}' is not embedded); \
             start that broker yourself and pass --url",
            other.label()
        ))),
        Err(e) => Err(BenchError::Usage(format!(
            "--broker '{arg}': {e}; for another broker pass --url"
        ))),
    }
}

/// `scheme://host:port,...` of `url`, without credentials, vhost or query.
fn url_without_credentials(url: &str) -> Result<String, BenchError> {
    let cfg =
        driver::Config::from_url(url).map_err(|e| BenchError::Usage(format!("--url: {e}")))?;
    let tu = &cfg.transport_url;
    let hosts: Vec<String> = tu
        .hosts
        .iter()
        .map(|h| {
            if h.host.contains(':') {
                format!("[{}]:{}", h.host, h.port)
            } else {
                format!("{}:{}", h.host, h.port)
            }
        })
        .collect();
    Ok(format!("{}://{}", tu.scheme, hosts.join(",")))
}

/// The command line that reproduces this run, without credentials.
fn command_line(args: &BenchArgs, broker: &report::BrokerInfo) -> String {
    let mut c = String::from("harness bench");
    match &broker.flavour {
        Some(f) => c.push_str(&format!(" --broker embedded:{f}")),
        None => c.push_str(&format!(" --url {}", broker.url)),
    }
    c.push_str(&format!(" --size {}", args.size));
    match (args.count, args.duration) {
        (Some(n), _) => c.push_str(&format!(" --count {n}")),
        (None, d) => c.push_str(&format!(
            " --duration {}",
            humantime::format_duration(d.unwrap_or(DEFAULT_DURATION))
        )),
    }
    c.push_str(&format!(" --callers {}", args.callers));
    if let Some(p) = &args.json {
        c.push_str(&format!(" --json {}", p.display()));
    }
    if let Some(p) = &args.plot {
        c.push_str(&format!(" --plot {}", p.display()));
    }
    c
}

const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// Runs the benchmark and returns the process exit code; errors are printed on stderr.
pub async fn run(args: BenchArgs) -> i32 {
    match bench(args).await {
        Ok(_) => exit_code::OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Runs the benchmark; prints the table on stdout and writes `--json` / `--plot`.
pub async fn bench(args: BenchArgs) -> Result<Report, BenchError> {
    // Validate everything before starting anything.
    let flavour = match &args.url {
        Some(_) => None,
        None => Some(parse_flavour(args.broker.as_deref())?),
    };
    if let Some(url) = &args.url {
        url_without_credentials(url)?;
    }
    let budget = Budget {
        duration: args.duration.unwrap_or(DEFAULT_DURATION),
        count: args.count,
    };
    let progress = progress::Progress::new();

    let (url, broker) = match (&args.url, &flavour) {
        (Some(u), _) => (u.clone(), None),
        (None, Some(f)) => {
            let fl: broker::Flavour = f
                .parse()
                .map_err(|e| BenchError::Usage(format!("--broker: {e:?}")))?;
            let b = broker::Broker::start(broker::BrokerConfig::for_flavour(fl))
                .await
                .map_err(|e| BenchError::Broker(e.to_string()))?;
            progress.note(&format!("embedded {f} broker at {}", b.url()));
            (b.url(), Some(b))
        }
        (None, None) => return Err(BenchError::Usage("no broker".into())),
    };
    let info = report::BrokerInfo {
        kind: if broker.is_some() {
            "embedded"
        } else {
            "external"
        },
        flavour: flavour.clone(),
        url: url_without_credentials(&url)?,
    };

    let payload = match serde_json::json!({ "data": "x".repeat(args.size) }) {
        Value::Object(m) => m,
        _ => driver::Map::new(),
    };
    let measured = measure::run_all(&url, &payload, budget, args.callers, &progress).await;
    if let Some(b) = broker {
        b.shutdown().await;
    }
    let measured = measured?;

    let settings = report::Settings {
        payload_bytes: args.size,
        budget,
        callers: args.callers,
    };
    let command = command_line(&args, &info);
    let title = match &info.flavour {
        Some(f) => format!(
            "harness bench: rust driver through the embedded {f} broker, {}-byte payloads",
            args.size
        ),
        None => format!(
            "harness bench: rust driver through {}, {}-byte payloads",
            info.url, args.size
        ),
    };
    let report = Report::new(command, info, settings, measured);
    let machine = &report.machine;
    let header = format!(
        "{title}\n{} cores ({}), {}",
        machine.cores,
        machine.cpu_model.as_deref().unwrap_or("unknown CPU"),
        match budget.count {
            Some(n) => format!("{n} operations per phase"),
            None => format!("{} per phase", humantime::format_duration(budget.duration)),
        }
    );
    outln!("{}", report::table(&header, &report.comparison));

    if let Some(p) = &args.json {
        report
            .write_json(p)
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", p.display())))?;
        progress.note(&format!("wrote {}", p.display()));
    }
    if let Some(p) = &args.plot {
        plot::write_svg(p, &title, &report.results)
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", p.display())))?;
        progress.note(&format!("wrote {}", p.display()));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours() {
        assert_eq!(parse_flavour(None).ok().as_deref(), Some("qpidd"));
        assert_eq!(
            parse_flavour(Some("embedded")).ok().as_deref(),
            Some("qpidd")
        );
        assert_eq!(
            parse_flavour(Some("embedded:router")).ok().as_deref(),
            Some("router")
        );
        assert_eq!(
            parse_flavour(Some("router")).ok().as_deref(),
            Some("router")
        );
        let e = parse_flavour(Some("embedded:artemis"))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains("unknown embedded flavour 'artemis'")),
            "{e:?}"
        );
        let e = parse_flavour(Some("qdrouterd:x"))
            .err()
            .map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("--url")), "{e:?}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("1h").is_err());
    }

    fn small(url: Option<&str>, dir: &std::path::Path) -> BenchArgs {
        BenchArgs {
            url: url.map(str::to_string),
            broker: None,
            size: 10,
            duration: None,
            count: Some(40),
            callers: 3,
            json: Some(dir.join("out/bench.json")),
            plot: Some(dir.join("out/bench.svg")),
        }
    }

    /// A small run over real TCP through the embedded broker: every phase counts what arrived.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_run_through_the_embedded_broker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = tokio::time::timeout(Duration::from_secs(120), bench(small(None, dir.path())))
            .await
            .expect("bench finishes within 120 s")
            .expect("bench succeeds");
        let r = &report.results;
        assert_eq!(r.sequential.calls, 40);
        assert_eq!(r.sequential.latency.n, 40);
        assert_eq!(r.concurrent.calls, 40);
        assert_eq!(r.concurrent.callers, 3);
        assert_eq!((r.casts.sent, r.casts.received), (40, 40));
        assert_eq!((r.notifications.sent, r.notifications.received), (40, 40));
        assert!(r.sequential.latency.p50_ms <= r.sequential.latency.max_ms);
        assert_eq!(report.broker.flavour.as_deref(), Some("qpidd"));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/bench.json")).expect("json written"),
        )
        .expect("valid json");
        assert_eq!(json["settings"]["callers"], 3);
        assert_eq!(json["results"]["casts"]["received"], 40);
        assert!(json["machine"]["cores"].as_u64().is_some_and(|c| c >= 1));
        let svg = std::fs::read_to_string(dir.path().join("out/bench.svg")).expect("svg written");
        assert!(svg.contains("<svg") && svg.contains("sequential calls (rust)"));
    }

    #[tokio::test]
    async fn bad_url_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = bench(small(Some("nonsense://"), dir.path()))
            .await
            .expect_err("bad url refused");
        assert_eq!(err.exit_code(), exit_code::USAGE);
        assert!(err.to_string().starts_with("--url"), "{err}");
        assert!(!dir.path().join("out").exists(), "nothing written");
    }

    #[tokio::test]
    async fn unreachable_broker_is_a_runtime_error() {
        // A port nothing listens on: bind, read the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("amqp://u:secret@127.0.0.1:{port}/?connect_timeout=2");
        let err = tokio::time::timeout(
            Duration::from_secs(60),
            bench(small(Some(&url), dir.path())),
        )
        .await
        .expect("bounded")
        .expect_err("connection refused");
        assert_eq!(err.exit_code(), exit_code::RUNTIME);
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn credentials_are_dropped_from_urls() {
        let u = url_without_credentials("amqp://alice:s3cret@127.0.0.1:5673/vhost?idle_timeout=5");
        assert_eq!(u.ok().as_deref(), Some("amqp://127.0.0.1:5673"));
        assert!(url_without_credentials("http://nope").is_err());
    }
}
