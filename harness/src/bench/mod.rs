//! `harness bench`: the Rust driver side by side with the Python oslo.messaging driver
//! (`--compare python`) and a raw fe2o3-amqp client, through one broker in one invocation.
//!
//! Every phase runs in rounds that alternate Rust, Python and raw (at least 3 each by default); the
//! report gives medians and ranges, and the ratios are computed from those rounds. Phases: server
//! start to ready (in process, and as a process of its own: memory and CPU at ready), sequential
//! calls (HDR histogram), concurrent callers, pre-settled casts counted at the server, fanout to K
//! servers, notifications with 1, 8 and 64 concurrent notifiers (acked, counted at the listener), and
//! the fleet scale (`--servers`). Control traffic of the Python side goes over the peers' stdin and
//! stdout, never through the broker under test. Output: a terminal table, `--json`, `--html`.

pub mod fleet;
mod html;
mod measure;
mod progress;
mod python;
mod raw;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::{json, Value};

use crate::exit_code;
pub use measure::Budget;
use report::{Collector, Impl, Metric, ProcessUse, Report};
pub use report::{Measurement, Row};

/// Largest payload accepted by `--size`.
const MAX_SIZE: usize = 1 << 20;

/// What to compare the Rust driver with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compare {
    /// The Python oslo.messaging amqp driver in the peer's venv (`harness peer setup`).
    Python,
}

/// `harness bench` arguments.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Measure through the broker at URL instead of starting one.
    #[arg(long, value_name = "URL", conflicts_with_all = ["broker", "backend"])]
    pub url: Option<String>,
    /// Broker to start: embedded[:qpidd|router] (default embedded:qpidd), or with --backend process
    /// or container a real one (e.g. rabbitmq, qpidd).
    #[arg(long, value_name = "BROKER")]
    pub broker: Option<String>,
    /// How to start --broker: embedded (default), process or container.
    #[arg(long, value_name = "BACKEND", value_parser = crate::cli::parse_backend)]
    pub backend: Option<crate::backend::BackendKind>,
    /// Also measure this implementation, in the same run and through the same broker.
    #[arg(long, value_enum, value_name = "IMPL")]
    pub compare: Option<Compare>,
    /// Small counts for CI (100 operations per round, 3 rounds, fleet up to 100 servers).
    #[arg(long)]
    pub quick: bool,
    /// Rounds per phase and implementation (alternating).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=50))]
    pub rounds: Option<u64>,
    /// Size in bytes of the string payload of each call, cast and notification.
    #[arg(long, value_name = "BYTES", default_value_t = 100, value_parser = parse_size)]
    pub size: usize,
    /// Time per round (e.g. 2s, 500ms; at most 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "count")]
    pub duration: Option<Duration>,
    /// Operations per round instead of a duration (each round still stops after 120 s).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: Option<u64>,
    /// Concurrent callers in the concurrency phase.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub callers: u64,
    /// Servers of the fanout phase.
    #[arg(long, value_name = "K", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub fanout: u64,
    /// Concurrent notifiers, one notification phase each (comma-separated).
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_values_t = [1u64, 8, 64])]
    pub notifiers: Vec<u64>,
    /// Fleet sizes: RPC servers on one transport and on one transport each (comma-separated;
    /// 0 skips the fleet phase). Default 1,10,100,1000 (--quick: 1,10,100).
    #[arg(long, value_name = "N,..", value_delimiter = ',')]
    pub servers: Option<Vec<u64>>,
    /// Topics the fleet's servers are spread over.
    #[arg(long, value_name = "T", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub topics: u64,
    /// Largest fleet also measured with one transport (connection) per server.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_transports: u64,
    /// The Rust driver's reply_mode (added to its URL): `named` for brokers without dynamic reply
    /// links (RabbitMQ 3.x). The Python driver always uses a dynamic reply link.
    #[arg(long, value_name = "MODE", value_parser = ["dynamic", "named"])]
    pub reply_mode: Option<String>,
    /// Write every measurement with its rounds (and machine and broker info) as JSON to PATH.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report (SVG charts) to PATH.
    #[arg(long, value_name = "PATH")]
    pub html: Option<PathBuf>,
    /// Internal: serve one RPC server at URL until stdin closes (the server-process measurement).
    #[arg(long, value_name = "URL", hide = true)]
    pub internal_server: Option<String>,
    /// Internal: topic of --internal-server.
    #[arg(
        long,
        value_name = "TOPIC",
        hide = true,
        default_value = "bench_process"
    )]
    pub internal_topic: String,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            url: None,
            broker: None,
            backend: None,
            compare: None,
            quick: false,
            rounds: None,
            size: 100,
            duration: None,
            count: None,
            callers: 8,
            fanout: 4,
            notifiers: vec![1, 8, 64],
            servers: None,
            topics: 1,
            max_transports: 100,
            reply_mode: None,
            json: None,
            html: None,
            internal_server: None,
            internal_topic: "bench_process".into(),
        }
    }
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
        .map_err(|e| format!("'{s}' is not a duration (e.g. 2s, 500ms, 1m): {e}"))?;
    if d.is_zero() {
        return Err("the duration must be more than zero".into());
    }
    if d > Duration::from_secs(600) {
        return Err(format!("{s} is longer than the 10m limit per round"));
    }
    Ok(d)
}

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    /// The broker did not start.
    #[error("broker did not start: {0}")]
    Broker(String),
    /// Could not connect to the broker.
    #[error("cannot connect to the broker: {0}")]
    Connect(String),
    /// The driver failed during a phase.
    #[error("{0}")]
    Driver(String),
    /// The Python peer could not be started.
    #[error("python peer: {0}")]
    Python(String),
    /// Writing a report failed.
    #[error("{0}")]
    Output(String),
}

impl BenchError {
    /// The process exit code for this error (see [`crate::exit_code`]).
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Usage(_) => exit_code::USAGE,
            BenchError::Broker(_) | BenchError::Python(_) => exit_code::BROKER_SETUP,
            BenchError::Connect(_) | BenchError::Driver(_) => exit_code::RUNTIME,
            BenchError::Output(_) => exit_code::INTERNAL,
        }
    }
}

/// Parses `--broker` for the embedded backend.
fn parse_flavour(arg: Option<&str>) -> Result<String, BenchError> {
    let Some(arg) = arg else {
        return Ok(crate::brokers::Flavour::default().to_string());
    };
    match crate::brokers::BrokerChoice::parse(arg) {
        Ok(crate::brokers::BrokerChoice::Embedded(f)) => Ok(f.to_string()),
        Ok(other) => Err(BenchError::Usage(format!(
            "--broker '{arg}': '{}' is not embedded; add --backend process or --backend container, \
             or start that broker yourself and pass --url",
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

/// The exact command line of this process, any URL argument without its credentials.
fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.contains("://") {
                let (flag, url) = match a.split_once('=') {
                    Some((f, u)) if f.starts_with("--") => (format!("{f}="), u.to_string()),
                    _ => (String::new(), a.clone()),
                };
                match url_without_credentials(&url) {
                    Ok(u) => format!("{flag}{u}"),
                    Err(_) => "<url>".into(),
                }
            } else if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs the benchmark and returns the process exit code; errors are printed on stderr.
pub async fn run(args: BenchArgs) -> i32 {
    if let Some(url) = &args.internal_server {
        return match measure::serve_internal(url, &args.internal_topic).await {
            Ok(()) => exit_code::OK,
            Err(e) => {
                eprintln!("error: {e}");
                e.exit_code()
            }
        };
    }
    match bench(args).await {
        Ok(_) => exit_code::OK,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// A started broker of any backend.
enum Started {
    Embedded(broker::Broker),
    Backend(crate::backend::BrokerHandle),
}

impl Started {
    async fn stop(self) {
        match self {
            Started::Embedded(b) => b.shutdown().await,
            Started::Backend(h) => h.stop().await,
        }
    }

    /// Links attached now, from the embedded broker's counters.
    fn links(&self) -> Option<u64> {
        match self {
            Started::Embedded(b) => Some(
                b.counters()
                    .connections
                    .iter()
                    .filter(|c| c.open)
                    .map(|c| c.links)
                    .sum(),
            ),
            Started::Backend(_) => None,
        }
    }
}

async fn start_broker(
    args: &BenchArgs,
    progress: &progress::Progress,
) -> Result<(String, Option<Started>, &'static str, Option<String>), BenchError> {
    if let Some(u) = &args.url {
        url_without_credentials(u)?;
        return Ok((u.clone(), None, "external", None));
    }
    let backend = args
        .backend
        .unwrap_or(crate::backend::BackendKind::Embedded);
    if backend == crate::backend::BackendKind::Embedded {
        let f = parse_flavour(args.broker.as_deref())?;
        let fl: broker::Flavour = f
            .parse()
            .map_err(|e| BenchError::Usage(format!("--broker: {e:?}")))?;
        let b = broker::Broker::start(broker::BrokerConfig::for_flavour(fl))
            .await
            .map_err(|e| BenchError::Broker(e.to_string()))?;
        progress.note(&format!("embedded {f} broker at {}", b.url()));
        return Ok((b.url(), Some(Started::Embedded(b)), "embedded", Some(f)));
    }
    let arg = args.broker.as_deref().unwrap_or("embedded");
    let choice = crate::brokers::BrokerChoice::parse(arg)
        .map_err(|e| BenchError::Usage(format!("--broker '{arg}': {e}")))?;
    let spec = crate::backend::BrokerSpec::new(choice, crate::app::default_templates_dir());
    let b = crate::backend::backend(backend);
    b.available(&spec)
        .map_err(|why| BenchError::Broker(format!("{}: {why}", spec.label())))?;
    let handle = b
        .start(&spec)
        .await
        .map_err(|e| BenchError::Broker(e.to_string()))?;
    let url = handle.transport_url(spec.client_user()).to_string();
    progress.note(&format!(
        "{} broker ({}) at {}",
        spec.label(),
        backend.as_str(),
        url_without_credentials(&url)?
    ));
    Ok((
        url,
        Some(Started::Backend(handle)),
        backend.as_str(),
        Some(spec.label()),
    ))
}

/// Runs the benchmark; prints the tables on stdout and writes `--json` / `--html`.
/// The command in order: arguments, machine, broker, phases, report, outputs.
pub async fn bench(args: BenchArgs) -> Result<Report, BenchError> {
    // Validate everything before starting anything.
    if let Some(url) = &args.url {
        url_without_credentials(url)?;
    } else if args.backend.is_none() || args.backend == Some(crate::backend::BackendKind::Embedded)
    {
        parse_flavour(args.broker.as_deref())?;
    }
    if args.notifiers.iter().any(|n| *n == 0 || *n > 1024) {
        return Err(BenchError::Usage(
            "--notifiers: each count must be 1..1024".into(),
        ));
    }
    let quick = args.quick;
    let count = args
        .count
        .or((quick && args.duration.is_none()).then_some(100));
    let budget = Budget {
        duration: args.duration.unwrap_or(Duration::from_secs(2)),
        count,
    };
    let rounds = args.rounds.unwrap_or(3) as usize;
    let fleet_sizes: Vec<u64> = match &args.servers {
        Some(v) => v.iter().copied().filter(|n| *n > 0).collect(),
        None if quick => vec![1, 10, 100],
        None => vec![1, 10, 100, 1000],
    };
    if fleet_sizes.iter().any(|n| *n > 10_000) {
        return Err(BenchError::Usage(
            "--servers: at most 10000 per fleet".into(),
        ));
    }
    let compare_python = args.compare == Some(Compare::Python);
    let progress = progress::Progress::new();
    let mut machine = report::Machine::detect();
    let command = command_line();

    let (url, started, kind, label) = start_broker(&args, &progress).await?;
    let settings = report::Settings {
        payload_bytes: args.size,
        round_seconds: budget.duration.as_secs_f64(),
        count: budget.count,
        rounds,
        callers: args.callers,
        fanout: args.fanout as usize,
        notifiers: args.notifiers.clone(),
        compare_python,
        quick,
    };
    let result = run_phases(&PhaseRequest {
        args: &args,
        url: &url,
        budget,
        settings: &settings,
        started: started.as_ref(),
        fleet_sizes: &fleet_sizes,
        progress: &progress,
    })
    .await;
    if let Some(b) = started {
        b.stop().await;
    }
    let out = result?;
    machine.load_after = stats::load_average();

    let broker = report::BrokerInfo {
        kind,
        flavour: label,
        url: url_without_credentials(&url)?,
        product: out.product.product.clone(),
        version: out.product.version.clone(),
    };
    let comparison = report::rows(&out.collector, &settings);
    let report = Report {
        tool: "amqp1-rig harness bench",
        version: env!("CARGO_PKG_VERSION"),
        date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        command,
        machine,
        broker,
        python_versions: out.python_versions,
        settings,
        measurements: out.collector.items,
        comparison,
        latency_cdf: out.hists.iter().map(|(w, h)| (*w, h.cdf(300))).collect(),
        latency_histogram: out.hists.iter().map(|(w, h)| (*w, h.buckets(40))).collect(),
        processes: out.processes,
        fleet: out.fleet,
        notes: out.notes,
    };
    print_report(&report);
    if let Some(p) = &args.json {
        report
            .write_json(p)
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", p.display())))?;
        progress.note(&format!("wrote {}", p.display()));
    }
    if let Some(p) = &args.html {
        html::write(p, &report)
            .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", p.display())))?;
        progress.note(&format!("wrote {}", p.display()));
    }
    Ok(report)
}

fn print_report(report: &Report) {
    let b = &report.broker;
    let m = &report.machine;
    let load = |l: Option<[f64; 3]>| {
        l.map(|l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]))
            .unwrap_or("-".into())
    };
    let header = format!(
        "harness bench: {} through {} ({} {}), {}-byte payloads\n{} cores ({}), load average before {}, after {}\n{}\ncommand: {}",
        if report.settings.compare_python {
            "rust driver vs python driver vs raw fe2o3"
        } else {
            "rust driver vs raw fe2o3"
        },
        b.flavour
            .as_deref()
            .map(|f| format!("{} {f}", b.kind))
            .unwrap_or_else(|| b.url.clone()),
        b.product.as_deref().unwrap_or("unknown product"),
        b.version.as_deref().unwrap_or("unknown version"),
        report.settings.payload_bytes,
        m.cores,
        m.cpu_model.as_deref().unwrap_or("unknown CPU"),
        load(m.load_before),
        load(m.load_after),
        match report.settings.count {
            Some(n) => format!("{n} operations per round, {} rounds", report.settings.rounds),
            None => format!(
                "{} s per round, {} rounds",
                report.settings.round_seconds, report.settings.rounds
            ),
        },
        report.command,
    );
    outln!(
        "{}",
        report::table(&header, &report.comparison, report.settings.rounds)
    );
    outln!(
        "memory and CPU per process at the end\n\n{}",
        report.processes_table()
    );
    if !report.fleet.is_empty() {
        outln!("fleet scale\n\n{}", fleet::table(&report.fleet));
    }
}

struct PhaseOutput {
    collector: Collector,
    hists: Vec<(Impl, stats::Hist)>,
    processes: Vec<ProcessUse>,
    fleet: Vec<fleet::FleetPoint>,
    product: raw::PeerProduct,
    python_versions: Option<Value>,
    notes: Vec<String>,
}

fn metric<'a>(phase: &'a str, name: &'a str, unit: &'static str, hib: bool) -> Metric<'a> {
    Metric {
        phase,
        metric: name,
        unit,
        higher_is_better: hib,
    }
}

fn process_use(role: &str, pid: Option<u32>) -> ProcessUse {
    let p = pid.map(|p| p.to_string()).unwrap_or_else(|| "self".into());
    let mem = stats::Memory::of(&p);
    ProcessUse {
        role: role.to_string(),
        pid: pid.or(Some(std::process::id())),
        rss_kib: mem.rss_kib,
        hwm_kib: mem.hwm_kib,
        cpu_s: stats::cpu_seconds(&p),
    }
}

/// What one run of the phases needs: the command line, the broker's URL, the round budget, the
/// settings the report records, the broker this run started (if any) and the fleet sizes.
struct PhaseRequest<'a> {
    args: &'a BenchArgs,
    url: &'a str,
    budget: Budget,
    settings: &'a report::Settings,
    started: Option<&'a Started>,
    fleet_sizes: &'a [u64],
    progress: &'a progress::Progress,
}

/// Sets the rigs up, runs every phase in alternating rounds, stops the rigs, then measures the fleet.
async fn run_phases(req: &PhaseRequest<'_>) -> Result<PhaseOutput, BenchError> {
    let rust_url = match &req.args.reply_mode {
        Some(mode) => format!(
            "{}{}reply_mode={mode}",
            req.url,
            if req.url.contains('?') { "&" } else { "?" }
        ),
        None => req.url.to_string(),
    };
    let config = driver::Config::from_url(&rust_url)
        .map_err(|e| BenchError::Usage(format!("--url: {e}")))?;
    let mut rigs = Rigs::start(req, &config, rust_url).await?;
    let result = rigs.run_all().await;
    let mut processes = vec![process_use(
        if req
            .started
            .is_some_and(|s| matches!(s, Started::Embedded(_)))
        {
            "harness (rust driver, raw client, embedded broker)"
        } else {
            "harness (rust driver, raw client)"
        },
        None,
    )];
    if let Some(py) = &rigs.py {
        for (role, pid) in py.processes() {
            processes.push(process_use(role, pid));
        }
    }
    let product = rigs.raw.product.clone();
    let python_versions = rigs.py.as_ref().map(|p| p.versions.clone());
    let Rigs {
        rust,
        raw,
        py,
        c,
        rust_hist,
        py_hist,
        raw_hist,
        notes,
        ..
    } = rigs;
    rust.stop().await;
    raw.stop().await;
    if let Some(py) = py {
        py.stop().await;
    }
    result?;

    let mut fleet_points = Vec::new();
    if !req.fleet_sizes.is_empty() {
        let phase = req.progress.phase("fleet");
        fleet_points = fleet::run(
            &config,
            req.fleet_sizes,
            req.args.topics,
            req.args.max_transports,
            || req.started.and_then(Started::links),
            req.progress,
        )
        .await?;
        phase.finish(&format!("{} points", fleet_points.len()));
    }
    Ok(PhaseOutput {
        collector: c,
        hists: vec![
            (Impl::Rust, rust_hist),
            (Impl::Python, py_hist),
            (Impl::Raw, raw_hist),
        ]
        .into_iter()
        .filter(|(_, h)| !h.is_empty())
        .collect(),
        processes,
        fleet: fleet_points,
        product,
        python_versions,
        notes,
    })
}

/// The three implementations under test (the Rust driver, the raw fe2o3 client, the Python driver
/// when compared) and what their rounds collected. Each phase method runs its rounds alternating
/// between them.
struct Rigs<'a> {
    req: &'a PhaseRequest<'a>,
    rust_url: String,
    rust: measure::RustRig,
    raw: raw::RawRig,
    py: Option<python::PyRig>,
    c: Collector,
    rust_hist: stats::Hist,
    py_hist: stats::Hist,
    raw_hist: stats::Hist,
    /// Phases the Python driver failed in (not tried again).
    skip: Vec<String>,
    notes: Vec<String>,
}

impl<'a> Rigs<'a> {
    async fn start(
        req: &'a PhaseRequest<'a>,
        config: &driver::Config,
        rust_url: String,
    ) -> Result<Rigs<'a>, BenchError> {
        let payload = match json!({ "data": "x".repeat(req.args.size) }) {
            Value::Object(m) => m,
            _ => driver::Map::new(),
        };
        let mut notes = Vec::new();
        let phase = req.progress.phase("setting up");
        let raw = raw::RawRig::start(config, req.args.size).await?;
        let rust = measure::RustRig::start(&rust_url, payload, req.settings.fanout).await?;
        let py = if req.settings.compare_python {
            match python::PyRig::start(req.url, req.args.size, req.settings.fanout).await {
                Ok(p) => Some(p),
                Err(e @ BenchError::Python(_)) => return Err(e),
                Err(e) => {
                    notes.push(format!(
                        "python driver: not measured through this broker: {e}"
                    ));
                    None
                }
            }
        } else {
            None
        };
        phase.finish(&format!(
            "broker {} {}",
            raw.product.product.as_deref().unwrap_or("?"),
            raw.product.version.as_deref().unwrap_or("?")
        ));
        Ok(Rigs {
            req,
            rust_url,
            rust,
            raw,
            py,
            c: Collector::default(),
            rust_hist: stats::Hist::new(),
            py_hist: stats::Hist::new(),
            raw_hist: stats::Hist::new(),
            skip: Vec::new(),
            notes,
        })
    }

    async fn run_all(&mut self) -> Result<(), BenchError> {
        self.ready().await?;
        self.sequential().await?;
        self.concurrent().await?;
        self.casts().await?;
        self.fanout().await?;
        for n in self.req.settings.notifiers.clone() {
            self.notifications(n).await?;
        }
        Ok(())
    }

    /// Server start to ready, in this process and as a server process of its own.
    async fn ready(&mut self) -> Result<(), BenchError> {
        let phase = self.req.progress.phase("server ready");
        for r in 0..self.req.settings.rounds {
            let topic = format!("bench_ready_{r}_{}", uuid::Uuid::new_v4().simple());
            let ready = self.rust.ready_round(&topic).await?;
            self.c.add(
                metric("ready", "transport + server start to ready", "ms", false),
                Impl::Rust,
                ready.total_ms,
                serde_json::to_value(&ready).unwrap_or(Value::Null),
            );
            if let Some(p) = measure::server_process(&self.rust_url, &format!("{topic}_p")).await? {
                add_process_ready(&mut self.c, Impl::Rust, &p);
            }
            let py_topic = format!("{topic}_py");
            if let Some(p) = py_try(&self.py, &mut self.skip, &mut self.notes, "ready", |py| {
                py.ready_round(&py_topic)
            })
            .await
            {
                self.c.add(
                    metric("ready", "transport + server start to ready", "ms", false),
                    Impl::Python,
                    p.ready_ms,
                    Value::Null,
                );
                add_process_ready(&mut self.c, Impl::Python, &p);
            }
        }
        phase.finish(&summary(
            &self.c,
            "ready",
            "transport + server start to ready",
        ));
        Ok(())
    }

    /// One caller, one call at a time; raw: request/reply on a link pair.
    async fn sequential(&mut self) -> Result<(), BenchError> {
        let budget = self.req.budget;
        let phase = self.req.progress.phase("sequential calls");
        for _ in 0..self.req.settings.rounds {
            let calls = self.rust.calls(budget, 1).await?;
            add_calls(&mut self.c, "sequential", Impl::Rust, &calls);
            self.rust_hist.merge(&calls.hist);
            if let Some(calls) = py_try(
                &self.py,
                &mut self.skip,
                &mut self.notes,
                "sequential",
                |py| py.calls(budget, 1),
            )
            .await
            {
                add_calls(&mut self.c, "sequential", Impl::Python, &calls);
                self.py_hist.merge(&calls.hist);
            }
            let (n, secs, hist) = self.raw.request_reply(budget).await?;
            let calls = measure::Calls {
                calls: n,
                seconds: secs,
                hist,
            };
            add_calls(&mut self.c, "sequential", Impl::Raw, &calls);
            self.raw_hist.merge(&calls.hist);
        }
        phase.finish(&summary(&self.c, "sequential", "calls/s"));
        Ok(())
    }

    /// C callers sharing one client transport.
    async fn concurrent(&mut self) -> Result<(), BenchError> {
        let (budget, callers) = (self.req.budget, self.req.settings.callers);
        let phase = self
            .req
            .progress
            .phase(&format!("{callers} concurrent callers"));
        for _ in 0..self.req.settings.rounds {
            let calls = self.rust.calls(budget, callers).await?;
            add_calls(&mut self.c, "concurrent", Impl::Rust, &calls);
            if let Some(calls) = py_try(
                &self.py,
                &mut self.skip,
                &mut self.notes,
                "concurrent",
                |py| py.calls(budget, callers),
            )
            .await
            {
                add_calls(&mut self.c, "concurrent", Impl::Python, &calls);
            }
        }
        phase.finish(&summary(&self.c, "concurrent", "calls/s"));
        Ok(())
    }

    /// Casts, counted at the server; raw: a pre-settled link.
    async fn casts(&mut self) -> Result<(), BenchError> {
        let budget = self.req.budget;
        let phase = self.req.progress.phase("casts");
        for _ in 0..self.req.settings.rounds {
            let d = self.rust.casts(budget, false).await?;
            add_delivered(&mut self.c, "casts", Impl::Rust, &d);
            if let Some(d) = py_try(&self.py, &mut self.skip, &mut self.notes, "casts", |py| {
                py.casts(budget)
            })
            .await
            {
                add_delivered(&mut self.c, "casts", Impl::Python, &d);
            }
            let d = self.raw.stream(budget, true).await?;
            add_delivered(&mut self.c, "casts", Impl::Raw, &d);
        }
        phase.finish(&summary(&self.c, "casts", "received/s"));
        Ok(())
    }

    /// Fanout to K servers, counted at every server.
    async fn fanout(&mut self) -> Result<(), BenchError> {
        let budget = self.req.budget;
        let phase = self
            .req
            .progress
            .phase(&format!("fanout to {} servers", self.req.settings.fanout));
        for _ in 0..self.req.settings.rounds {
            let d = self.rust.casts(budget, true).await?;
            add_delivered(&mut self.c, "fanout", Impl::Rust, &d);
            if let Some(d) = py_try(&self.py, &mut self.skip, &mut self.notes, "fanout", |py| {
                py.fanout(budget)
            })
            .await
            {
                add_delivered(&mut self.c, "fanout", Impl::Python, &d);
            }
        }
        phase.finish(&summary(&self.c, "fanout", "received/s"));
        Ok(())
    }

    /// Notifications from `n` concurrent notifiers; raw: an acked link with a window.
    async fn notifications(&mut self, n: u64) -> Result<(), BenchError> {
        let budget = self.req.budget;
        let key = format!("notify_{n}");
        let key = key.as_str();
        let phase = self
            .req
            .progress
            .phase(&format!("notifications, {n} notifier(s)"));
        for _ in 0..self.req.settings.rounds {
            let d = self.rust.notify(budget, n).await?;
            add_delivered(&mut self.c, key, Impl::Rust, &d);
            if let Some(d) = py_try(&self.py, &mut self.skip, &mut self.notes, key, |py| {
                py.notify(budget, n)
            })
            .await
            {
                add_delivered(&mut self.c, key, Impl::Python, &d);
            }
            let d = self.raw.stream(budget, false).await?;
            add_delivered(&mut self.c, key, Impl::Raw, &d);
        }
        phase.finish(&summary(&self.c, key, "received/s"));
        Ok(())
    }
}

/// Runs a Python round unless the phase already failed for Python; a failure is noted (the Python
/// driver cannot do everything through every broker: RabbitMQ 3.x refuses its dynamic reply link)
/// and the phase goes on without Python.
async fn py_try<'a, T, F, Fut>(
    py: &'a Option<python::PyRig>,
    skip: &mut Vec<String>,
    notes: &mut Vec<String>,
    phase: &str,
    f: F,
) -> Option<T>
where
    F: FnOnce(&'a python::PyRig) -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let py = py.as_ref()?;
    if skip.iter().any(|s| s == phase) {
        return None;
    }
    match f(py).await {
        Ok(v) => Some(v),
        Err(e) => {
            notes.push(format!("python driver, phase {phase}: not measured: {e}"));
            skip.push(phase.to_string());
            None
        }
    }
}

fn summary(c: &Collector, phase: &str, metric: &str) -> String {
    let mut parts = Vec::new();
    for who in [Impl::Rust, Impl::Python, Impl::Raw] {
        if let Some(m) = c.get(phase, metric, who) {
            parts.push(format!(
                "{} {} {}",
                who.as_str(),
                report::number(m.median, m.unit),
                m.unit
            ));
        }
    }
    format!("{metric}: {}", parts.join(", "))
}

fn add_calls(c: &mut Collector, phase: &str, who: Impl, calls: &measure::Calls) {
    let detail = json!({
        "calls": calls.calls, "seconds": calls.seconds,
        "latency": calls.hist.latency(),
    });
    c.add(
        metric(phase, "calls/s", "/s", true),
        who,
        calls.per_s(),
        detail,
    );
    if let Some(l) = calls.hist.latency() {
        c.add_latency(phase, who, &l);
    }
}

fn add_delivered(c: &mut Collector, phase: &str, who: Impl, d: &measure::Delivered) {
    c.add(
        metric(phase, "received/s", "/s", true),
        who,
        d.received_per_s,
        d.detail(),
    );
}

fn add_process_ready(c: &mut Collector, who: Impl, p: &measure::ProcessReady) {
    let detail = serde_json::to_value(p).unwrap_or(Value::Null);
    c.add(
        metric("ready", "process spawn to server ready", "ms", false),
        who,
        p.spawn_to_ready_ms,
        detail,
    );
    if let Some(k) = p.rss_kib {
        c.add(
            metric("ready", "server process RSS at ready", "MiB", false),
            who,
            k as f64 / 1024.0,
            Value::Null,
        );
    }
    if let Some(k) = p.hwm_kib {
        c.add(
            metric("ready", "server process VmHWM at ready", "MiB", false),
            who,
            k as f64 / 1024.0,
            Value::Null,
        );
    }
    if let Some(s) = p.cpu_s {
        c.add(
            metric("ready", "server process CPU to ready", "s", false),
            who,
            s,
            Value::Null,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavours() {
        assert_eq!(parse_flavour(None).ok().as_deref(), Some("qpidd"));
        assert_eq!(
            parse_flavour(Some("embedded:router")).ok().as_deref(),
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
        assert!(
            e.as_deref().is_some_and(|e| e.contains("--backend")),
            "{e:?}"
        );
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
            count: Some(20),
            rounds: Some(2),
            callers: 3,
            fanout: 2,
            notifiers: vec![1, 4],
            servers: Some(vec![1, 3]),
            max_transports: 3,
            json: Some(dir.join("out/bench.json")),
            html: Some(dir.join("out/bench.html")),
            ..BenchArgs::default()
        }
    }

    fn measurement<'a>(r: &'a Report, phase: &str, metric: &str, who: Impl) -> &'a Measurement {
        r.measurements
            .iter()
            .find(|m| m.phase == phase && m.metric == metric && m.implementation == who)
            .unwrap_or_else(|| panic!("no {phase}/{metric} of {who:?}"))
    }

    /// A small run over real TCP through the embedded broker: every phase has its rounds and counts
    /// what arrived; the JSON and HTML have the fields.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_run_through_the_embedded_broker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = tokio::time::timeout(Duration::from_secs(240), bench(small(None, dir.path())))
            .await
            .expect("bench finishes within 240 s")
            .expect("bench succeeds");
        let seq = measurement(&report, "sequential", "calls/s", Impl::Rust);
        assert_eq!(seq.rounds.len(), 2);
        assert_eq!(seq.details[0]["calls"], 20);
        assert!(seq.min <= seq.median && seq.median <= seq.max);
        let raw = measurement(&report, "sequential", "calls/s", Impl::Raw);
        assert_eq!(raw.details[1]["calls"], 20);
        for phase in ["casts", "fanout", "notify_1", "notify_4"] {
            let m = measurement(&report, phase, "received/s", Impl::Rust);
            for d in &m.details {
                assert_eq!(d["received"], d["expected"], "{phase}: {d}");
                assert_eq!(d["all_arrived"], true, "{phase}");
            }
        }
        let fan = measurement(&report, "fanout", "received/s", Impl::Rust);
        assert_eq!(fan.details[0]["expected"], 40, "20 casts to 2 servers");
        assert!(report
            .comparison
            .iter()
            .any(|r| r.phase == "casts" && r.vs_raw.is_some() && r.vs_python.is_none()));
        assert_eq!(report.broker.product.as_deref(), Some("qpid-cpp"));
        assert!(report.machine.load_before.is_some() && report.machine.load_after.is_some());
        assert_eq!(
            report.fleet.len(),
            4,
            "1 and 3 servers, one transport and each"
        );
        assert!(report
            .fleet
            .iter()
            .all(|p| p.fanout_all_arrived && p.calls > 0));
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("out/bench.json")).expect("json written"),
        )
        .expect("valid json");
        assert_eq!(json["settings"]["rounds"], 2);
        assert!(json["measurements"][0]["rounds"].is_array());
        assert!(json["broker"]["version"].is_string());
        assert!(json["fleet"][0]["ready_ms"].is_number());
        let html = std::fs::read_to_string(dir.path().join("out/bench.html")).expect("html");
        assert!(html.contains("<svg") && html.contains("fleet ready"));
        assert!(
            html.matches("<svg").count() >= 4,
            "bars, CDF, histogram, fleet"
        );
    }

    /// The Python comparison through the embedded router.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs the python peer venv: cargo run -p harness -- peer setup"]
    async fn python_comparison_through_the_embedded_router() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = small(None, dir.path());
        args.broker = Some("embedded:router".into());
        args.compare = Some(Compare::Python);
        args.servers = Some(vec![]);
        let report = tokio::time::timeout(Duration::from_secs(400), bench(args))
            .await
            .expect("bench finishes within 400 s")
            .expect("bench succeeds");
        let py = measurement(&report, "sequential", "calls/s", Impl::Python);
        assert_eq!(py.rounds.len(), 2);
        assert_eq!(py.details[0]["calls"], 20);
        for phase in ["casts", "fanout", "notify_4"] {
            let m = measurement(&report, phase, "received/s", Impl::Python);
            assert!(
                m.details.iter().all(|d| d["all_arrived"] == true),
                "{phase}"
            );
        }
        let row = report
            .comparison
            .iter()
            .find(|r| r.phase == "sequential" && r.label.ends_with("calls/s"))
            .expect("row");
        assert!(row.vs_python.is_some() && row.vs_raw.is_some());
        assert!(report.python_versions.is_some());
        assert!(
            measurement(
                &report,
                "ready",
                "server process RSS at ready",
                Impl::Python
            )
            .median
                > 1.0
        );
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
    async fn zero_notifiers_is_a_usage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut args = small(None, dir.path());
        args.notifiers = vec![8, 0];
        let err = bench(args).await.expect_err("refused");
        assert_eq!(err.exit_code(), exit_code::USAGE);
        assert!(err.to_string().contains("--notifiers"), "{err}");
    }

    #[tokio::test]
    async fn unreachable_broker_is_a_runtime_error() {
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
        assert!(!command_line().contains("s3cret"));
    }
}
