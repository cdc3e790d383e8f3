//! Command implementations behind the CLI; [`main`] returns the process exit code.

use std::path::{Path, PathBuf};

use crate::backend::{self, BackendKind, BrokerKind};
use crate::cli::{BrokerCommand, Cli, Command, PeerCommand, RenderArgs, RunArgs};
use crate::exit_code;
use crate::report::{self, terminal::Terminal, ScenarioReport, SnapshotStatus};
use crate::runner::{self, RunOptions};
use crate::scenario::{self, LoadError};
use crate::snapshot;

/// Runs the parsed command line and returns the exit code.
pub fn main(cli: Cli) -> i32 {
    let templates = cli.templates.clone().unwrap_or_else(default_templates_dir);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit_code::INTERNAL;
        }
    };
    match cli.command {
        Command::Run(args) => rt.block_on(run(args, &templates)),
        Command::List { dir } => list(dir.as_deref().unwrap_or(Path::new("scenarios"))),
        Command::Brokers => brokers(),
        Command::Render(args) => render(args, &templates),
        Command::Broker { command } => rt.block_on(broker_cmd(command)),
        Command::Peer { command } => rt.block_on(peer_cmd(command)),
        Command::Bench(args) => rt.block_on(crate::bench::run(args)),
        Command::Matrix { file } => {
            let opts = crate::matrix::MatrixOptions {
                out_dir: None,
                cells: std::env::var("HARNESS_MATRIX_CELLS")
                    .map(|v| {
                        v.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            rt.block_on(async {
                // Ctrl-C / SIGTERM: same cleanup as `run` (broker processes and containers).
                let guard = backend::container::spawn_interrupt_guard();
                let code = crate::matrix::run(&file, &templates, &opts).await;
                guard.abort();
                code
            })
        }
    }
}

/// `templates/` at the workspace root when run from anywhere inside it, else `./templates`.
pub fn default_templates_dir() -> PathBuf {
    let local = PathBuf::from("templates");
    if local.is_dir() {
        return local;
    }
    let ws = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("templates");
    if ws.is_dir() {
        ws
    } else {
        local
    }
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("HARNESS_VAR_"))
        .collect()
}

/// Parses `KIND[:FLAVOUR]`.
pub fn parse_broker_arg(s: &str) -> Result<(BrokerKind, Option<String>), String> {
    let (k, f) = match s.split_once(':') {
        Some((k, f)) => (k, Some(f.to_string())),
        None => (s, None),
    };
    // Embedded flavours alone (`router`, `rabbitmq3`) mean the embedded broker of that flavour.
    if f.is_none() && (k == "router" || k == "rabbitmq3") {
        return Ok((BrokerKind::Embedded, Some(k.to_string())));
    }
    let kind: BrokerKind = k.parse().map_err(|e: backend::UnknownName| e.to_string())?;
    if kind == BrokerKind::Embedded {
        if let Some(fl) = &f {
            if !scenario::validate::EMBEDDED_FLAVOURS.contains(&fl.as_str()) {
                return Err(format!(
                    "unknown embedded flavour '{fl}' (expected one of: {})",
                    scenario::validate::EMBEDDED_FLAVOURS.join(", ")
                ));
            }
        }
    }
    Ok((kind, f))
}

async fn run(args: RunArgs, templates: &Path) -> i32 {
    let backend_kind = match args
        .backend
        .as_deref()
        .map(str::parse::<BackendKind>)
        .transpose()
    {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit_code::USAGE;
        }
    };
    let broker = match args.broker.as_deref().map(parse_broker_arg).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: --broker: {e}");
            return exit_code::USAGE;
        }
    };
    // Ctrl-C / SIGTERM: kill every broker process group and remove every container of this run
    // before exiting (process and container backends).
    let guard = backend::container::spawn_interrupt_guard();
    let term = Terminal::new();
    let env = env_pairs();
    let mut reports: Vec<ScenarioReport> = Vec::new();
    let mut worst = exit_code::OK;
    for file in &args.files {
        let loaded = match scenario::load_file(file, &env, &args.vars) {
            Ok(l) => l,
            Err(LoadError::Io { path, source }) => {
                eprintln!("error: cannot read scenario {}: {source}", path.display());
                worst = worst.max(exit_code::SCENARIO_INVALID);
                reports.push(error_report(
                    file,
                    exit_code::SCENARIO_INVALID,
                    format!("cannot read: {source}"),
                ));
                continue;
            }
            Err(LoadError::Invalid(inv)) => {
                eprint!("{}", inv.render());
                worst = worst.max(exit_code::SCENARIO_INVALID);
                let first = inv
                    .diagnostics
                    .first()
                    .map(|d| d.message.clone())
                    .unwrap_or_default();
                reports.push(error_report(
                    file,
                    exit_code::SCENARIO_INVALID,
                    format!("invalid scenario: {first}"),
                ));
                continue;
            }
        };
        let opts = RunOptions {
            backend: backend_kind,
            broker: broker.clone(),
            url: args.url.clone(),
            templates_dir: templates.to_path_buf(),
            version: None,
            image: None,
        };
        let mut result = runner::run(&loaded, &opts, &term).await;
        // Never accept the transcript of a run whose steps failed: show the diff instead.
        let failed = result.report.failures().next().is_some();
        if args.update && failed {
            eprintln!(
                "not updating the snapshot of {}: steps failed",
                file.display()
            );
        }
        // On another broker than the scenario's own, a per-broker snapshot may hold what differs there.
        let variant = broker_variant(&loaded, &opts);
        if result.report.error.is_none() && !args.no_snapshot {
            match snapshot::check_on(
                file,
                variant.as_deref(),
                &result.report.transcript,
                args.update && !failed,
            ) {
                Ok(snapshot::Check::Matches) => result.report.snapshot = SnapshotStatus::Matches,
                Ok(snapshot::Check::Written(_)) => result.report.snapshot = SnapshotStatus::Updated,
                Ok(snapshot::Check::Mismatch {
                    diff,
                    new_path,
                    missing,
                }) => {
                    let diff = if missing {
                        format!(
                            "no snapshot yet; new transcript written to {} (accept with --update or `cargo insta review`)\n{diff}",
                            new_path.display()
                        )
                    } else {
                        format!("{diff}(new transcript written to {}; accept with --update or `cargo insta review`)", new_path.display())
                    };
                    result.report.snapshot = SnapshotStatus::Mismatch { diff };
                    result.report.exit_code = result.report.exit_code.max(exit_code::MISMATCH);
                }
                Err(e) => {
                    eprintln!("error: snapshot of {}: {e}", file.display());
                    result.report.exit_code = result.report.exit_code.max(exit_code::INTERNAL);
                }
            }
        }
        if args.verbose {
            outln!(
                "--- transcript of {} ---\n{}",
                file.display(),
                result.report.transcript.trim_end()
            );
        }
        term.scenario_finished(&result.report);
        worst = worst.max(result.report.exit_code);
        reports.push(result.report);
    }
    if let Some(p) = &args.junit {
        if let Err(e) = report::junit::write(p, &reports) {
            eprintln!("error: cannot write JUnit report {}: {e}", p.display());
            worst = worst.max(exit_code::INTERNAL);
        }
    }
    if let Some(p) = &args.json {
        if let Err(e) = report::write_json(p, &reports) {
            eprintln!("error: cannot write JSON report {}: {e}", p.display());
            worst = worst.max(exit_code::INTERNAL);
        }
    }
    guard.abort();
    if reports.len() > 1 {
        let ok = reports.iter().filter(|r| r.exit_code == 0).count();
        outln!("{ok}/{} scenarios passed", reports.len());
    }
    worst
}

fn error_report(file: &Path, code: i32, error: String) -> ScenarioReport {
    ScenarioReport {
        file: file.display().to_string(),
        name: snapshot::snapshot_name(file),
        broker: "-".into(),
        groups: Vec::new(),
        error: Some(error),
        snapshot: SnapshotStatus::NotChecked,
        transcript: String::new(),
        duration_ms: 0,
        exit_code: code,
        broker_logs: Default::default(),
    }
}

/// Every scenario file under `dir` (recursively, `snapshots/` excluded), sorted.
pub fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n != "snapshots") {
                out.extend(scenario_files(&p));
            }
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn list(dir: &Path) -> i32 {
    if !dir.is_dir() {
        eprintln!("error: scenario directory {} does not exist", dir.display());
        return exit_code::USAGE;
    }
    let files = scenario_files(dir);
    let width = files
        .iter()
        .map(|f| f.display().to_string().len())
        .max()
        .unwrap_or(0);
    for f in &files {
        let desc = std::fs::read_to_string(f)
            .ok()
            .and_then(|t| serde_yaml::from_str::<serde_yaml::Value>(&t).ok())
            .and_then(|v| {
                v.get("description")
                    .and_then(|d| d.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "(no description)".to_string());
        let desc = desc.split_whitespace().collect::<Vec<_>>().join(" ");
        outln!("{:width$}  {desc}", f.display().to_string());
    }
    exit_code::OK
}

fn brokers() -> i32 {
    for bk in BackendKind::ALL {
        let b = backend::backend(bk);
        for kind in BrokerKind::ALL {
            // The embedded backend runs only the embedded broker; the process and container
            // backends run it too (`harness broker serve`, the embedded-broker image).
            if bk == BackendKind::Embedded && kind != BrokerKind::Embedded {
                continue;
            }
            let label = if kind == BrokerKind::Embedded {
                format!(
                    "embedded ({})",
                    scenario::validate::EMBEDDED_FLAVOURS.join(", ")
                )
            } else {
                kind.to_string()
            };
            match b.available(kind) {
                Ok(()) => outln!("{:<10} {:<36} usable", bk.as_str(), label),
                Err(why) => outln!("{:<10} {:<36} not usable: {why}", bk.as_str(), label),
            }
        }
    }
    exit_code::OK
}

fn render(args: RenderArgs, templates: &Path) -> i32 {
    let broker = match args.broker.as_deref().map(parse_broker_arg).transpose() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: --broker: {e}");
            return exit_code::USAGE;
        }
    };
    let what = match args.what {
        None => {
            if let Some((kind, flavour)) = broker {
                let mut spec = backend::BrokerSpec::new(kind, templates);
                spec.flavour = flavour;
                return render_broker(&spec);
            }
            return match crate::templates::list(templates) {
                Ok(names) => {
                    for n in names {
                        outln!("{n}");
                    }
                    exit_code::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit_code::INTERNAL
                }
            };
        }
        Some(w) => w,
    };
    if what.ends_with(".yaml") || what.ends_with(".yml") {
        let loaded = match scenario::load_file(Path::new(&what), &env_pairs(), &args.vars) {
            Ok(l) => l,
            Err(LoadError::Invalid(inv)) => {
                eprint!("{}", inv.render());
                return exit_code::SCENARIO_INVALID;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return exit_code::SCENARIO_INVALID;
            }
        };
        let opts = RunOptions {
            backend: None,
            broker: broker.clone(),
            url: None,
            templates_dir: templates.to_path_buf(),
            version: None,
            image: None,
        };
        let mut code = exit_code::OK;
        if let Ok((_, spec)) = runner::resolve_spec(&loaded, &opts) {
            if spec.kind != BrokerKind::Embedded {
                code = render_broker(&spec);
            }
        }
        let mut any = false;
        for svc in &loaded.scenario.services {
            let Some(cfg) = &svc.config else { continue };
            any = true;
            match runner::render_service_config(
                &loaded,
                svc,
                cfg,
                templates,
                "amqp://127.0.0.1:5672/",
                &Default::default(),
            ) {
                Ok(text) => outln!(
                    "==> service {} ({}) <==\n{}",
                    svc.name,
                    cfg.template,
                    text.trim_end()
                ),
                Err(e) => {
                    eprintln!("error: service {}: {e}", svc.name);
                    return exit_code::SCENARIO_INVALID;
                }
            }
        }
        if !any {
            eprintln!("{what}: no service has a `config:` template");
        }
        return code;
    }
    let mut ctx = tera::Context::new();
    for (k, v) in &args.vars {
        ctx.insert(k.as_str(), v);
    }
    match crate::templates::render(templates, &what, &ctx) {
        Ok(text) => {
            out!("{text}");
            exit_code::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit_code::USAGE
        }
    }
}

/// Prints the broker configuration files the process backend would write for `spec` (passwords hidden).
fn render_broker(spec: &backend::BrokerSpec) -> i32 {
    if spec.kind == BrokerKind::Embedded {
        eprintln!("the embedded broker has no configuration files; try --broker qpidd, qdrouterd or rabbitmq");
        return exit_code::OK;
    }
    match backend::process::render_preview(spec) {
        Ok(files) => {
            out!("{}", backend::process::format_rendered(&files));
            exit_code::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit_code::BROKER_SETUP
        }
    }
}

async fn broker_cmd(cmd: BrokerCommand) -> i32 {
    match cmd {
        BrokerCommand::Serve {
            flavour,
            port,
            users,
            tls,
        } => match backend::embedded::serve(&flavour, port, &users, tls).await {
            Ok(()) => exit_code::OK,
            Err(e) => {
                eprintln!("error: {e}");
                exit_code::BROKER_SETUP
            }
        },
    }
}

async fn peer_cmd(cmd: PeerCommand) -> i32 {
    match cmd {
        PeerCommand::Setup { venv } => {
            let venv = venv.unwrap_or_else(crate::peer::default_venv);
            match crate::peer::setup(&venv).await {
                Ok(()) => {
                    outln!("python peer ready in {}", venv.display());
                    exit_code::OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    exit_code::BROKER_SETUP
                }
            }
        }
    }
}

/// The per-broker snapshot variant of a run (`embedded-router`, `rabbitmq-rabbitmq3`...) when the
/// command line moved the scenario to another broker kind or flavour; `None` for its own broker and for
/// `--url` runs. The backend is not part of it: transcripts do not depend on how a broker was started.
fn broker_variant(loaded: &scenario::Loaded, opts: &RunOptions) -> Option<String> {
    if opts.url.is_some() || (opts.broker.is_none() && opts.version.is_none()) {
        return None;
    }
    let own = RunOptions {
        templates_dir: opts.templates_dir.clone(),
        ..RunOptions::default()
    };
    let (_, own) = runner::resolve_spec(loaded, &own).ok()?;
    let (_, this) = runner::resolve_spec(loaded, opts).ok()?;
    let (own, this) = (own.label(), this.label());
    (own != this).then(|| this.replace(':', "-"))
}
