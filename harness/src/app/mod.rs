//! Command implementations behind the CLI; [`main`] returns the process exit code. `run` and
//! `matrix` both build [`crate::plan::RunPlan`]s and feed them to one runner.

pub mod compare;
pub mod matrix;
pub mod oslo_tests;
pub mod run;
pub mod soak;

use std::path::{Path, PathBuf};

use crate::backend::{self, BackendKind, BrokerSpec};
use crate::brokers::{self, BrokerChoice, Product};
use crate::cli::{BrokerCommand, Cli, Command, PeerCommand, RenderArgs};
use crate::exit_code;
use crate::plan::{self, Overrides, Placement};
use crate::scenario::{self, limits, LoadError};

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
        Command::Run(args) => rt.block_on(guarded(run::run(args, &templates))),
        Command::List { dir } => list(dir.as_deref().unwrap_or(Path::new("scenarios"))),
        Command::Brokers => brokers(&templates),
        Command::Render(args) => render(args, &templates),
        Command::Broker { command } => rt.block_on(broker_cmd(command)),
        Command::Peer { command } => rt.block_on(peer_cmd(command)),
        Command::Bench(args) => rt.block_on(crate::bench::run(args)),
        Command::Compare(args) => rt.block_on(guarded(compare::run(args, &templates))),
        Command::Soak(args) => rt.block_on(guarded(soak::run(args, &templates))),
        Command::OsloTests(args) => rt.block_on(guarded(oslo_tests::run(args, &templates))),
        Command::Matrix { file } => {
            let opts = matrix::MatrixOptions::default();
            rt.block_on(guarded(matrix::run(&file, &templates, &opts)))
        }
    }
}

/// Runs `f` with the Ctrl-C / SIGTERM guard: every broker process group and container of this run is
/// removed before the process exits.
async fn guarded(f: impl std::future::Future<Output = i32>) -> i32 {
    let guard = backend::container::spawn_interrupt_guard();
    let code = f.await;
    guard.abort();
    code
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

/// Renders every service's `config:` template and loads it as the driver would, at load time, so that
/// a missing template, an unknown option or a bad value is reported with the scenario's own position
/// (exit 3) instead of failing the run later with a position into the rendered file. The URL used here
/// is a placeholder: the real one is only known once the broker runs.
pub fn check_service_configs(
    loaded: &scenario::Loaded,
    templates: &Path,
) -> Result<(), Box<scenario::Invalid>> {
    let url: driver::url::TransportUrl = "amqp://127.0.0.1:5672/".parse().unwrap_or_default();
    let secrets = &loaded.secrets;
    let mut diagnostics = Vec::new();
    for (i, svc) in loaded.scenario.services.iter().enumerate() {
        let Some(cfg) = &svc.config else { continue };
        let inputs = crate::runner::services::TemplateInputs {
            vars: &loaded.vars,
            driver: &loaded.scenario.driver,
            addressing: loaded.scenario.broker.addressing,
            extra_options: &Default::default(),
        };
        // Services are validated in order, so index `i` is the file's `services.i` unless an
        // earlier one was dropped as invalid (then loading failed already).
        let p = format!("services.{i}.config");
        let at_template = loaded.locator.nearest(&format!("{p}.template"));
        let problem =
            match crate::runner::services::render_config(svc, cfg, templates, &url, inputs) {
                Err(e) => Some((
                    format!(
                        "service '{}': template '{}' cannot be used",
                        svc.name, cfg.template
                    ),
                    at_template,
                    e.to_string(),
                )),
                Ok(ini) => match driver::Config::from_ini_str(&ini, Path::new(&cfg.template)) {
                    Ok(_) => None,
                    Err(e) => {
                        // Point at the option where the scenario sets it, when it does.
                        let at = e
                            .option
                            .as_deref()
                            .and_then(|o| {
                                [
                                    format!("{p}.vars.amqp_options.{o}"),
                                    format!("{p}.vars.{o}"),
                                    format!("driver.options.{o}"),
                                ]
                                .iter()
                                .find_map(|k| loaded.locator.key(k))
                            })
                            .unwrap_or(at_template);
                        Some((
                            format!(
                                "service '{}': its configuration rendered from '{}' is invalid",
                                svc.name, cfg.template
                            ),
                            at,
                            e.to_string(),
                        ))
                    }
                },
            };
        if let Some((message, span, why)) = problem {
            let why = scenario::parse::redact(&why, secrets);
            let d = scenario::Diagnostic::new(message, span, "")
                .with_help(Some(why.chars().take(400).collect()));
            diagnostics.push(d);
        }
    }
    if diagnostics.is_empty() {
        return Ok(());
    }
    Err(Box::new(loaded.invalid(diagnostics)))
}

/// `HARNESS_VAR_*` of the environment.
pub fn env_pairs() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("HARNESS_VAR_"))
        .collect()
}

/// Every scenario file under `dir` (recursively, `snapshots/` excluded), sorted. Symlinked directories
/// are not entered; at most [`limits::MAX_DIR_DEPTH`] levels and [`limits::MAX_LIST_ENTRIES`] entries
/// are looked at.
pub fn scenario_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = 0usize;
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > limits::MAX_LIST_ENTRIES {
                eprintln!(
                    "warning: {} has more than {} entries; the rest is not listed",
                    dir.display(),
                    limits::MAX_LIST_ENTRIES
                );
                out.sort();
                return out;
            }
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth + 1 < limits::MAX_DIR_DEPTH
                    && p.file_name().is_some_and(|n| n != "snapshots")
                {
                    stack.push((p, depth + 1));
                }
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(p);
            }
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
        // Bounded, regular files only: a FIFO or a device named *.yaml must not block or fill memory.
        let desc = match scenario::read::read_text(f, limits::MAX_FILE_BYTES) {
            Ok(t) => serde_yaml::from_str::<serde_yaml::Value>(&t)
                .ok()
                .and_then(|v| {
                    v.get("description")
                        .and_then(|d| d.as_str())
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "(no description)".to_string()),
            Err(e) => format!("(not readable: {e})"),
        };
        let desc = desc.split_whitespace().collect::<Vec<_>>().join(" ");
        outln!("{:width$}  {desc}", f.display().to_string());
    }
    exit_code::OK
}

fn brokers(templates: &Path) -> i32 {
    let mut choices = vec![(
        format!("embedded ({})", brokers::flavours().join(", ")),
        BrokerChoice::default(),
    )];
    choices.extend(Product::ALL.map(|p| {
        (
            p.to_string(),
            BrokerChoice::Real {
                product: p,
                distro: None,
                version: None,
            },
        )
    }));
    for bk in BackendKind::ALL {
        let b = backend::backend(bk);
        for (label, choice) in &choices {
            // The embedded backend runs only the embedded broker; the process and container
            // backends run it too (`harness broker serve`, the embedded-broker image).
            if bk == BackendKind::Embedded && !matches!(choice, BrokerChoice::Embedded(_)) {
                continue;
            }
            let spec = BrokerSpec::new(choice.clone(), templates);
            match b.available(&spec) {
                Ok(()) => outln!("{:<10} {:<36} usable", bk.as_str(), label),
                Err(why) => outln!("{:<10} {:<36} not usable: {why}", bk.as_str(), label),
            }
        }
    }
    exit_code::OK
}

fn render(args: RenderArgs, templates: &Path) -> i32 {
    let Some(what) = args.what else {
        if let Some(choice) = args.broker {
            return render_broker(&BrokerSpec::new(choice, templates));
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
                exit_code::USAGE
            }
        };
    };
    if what.ends_with(".yaml") || what.ends_with(".yml") {
        return render_scenario(Path::new(&what), args.broker, &args.vars, templates);
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

/// `harness render SCENARIO`: the broker's configuration files and every service's rendered config.
fn render_scenario(
    file: &Path,
    broker: Option<BrokerChoice>,
    vars: &[(String, String)],
    templates: &Path,
) -> i32 {
    let loaded = match scenario::load_file(file, &env_pairs(), vars) {
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
    if let Err(inv) = check_service_configs(&loaded, templates) {
        eprint!("{}", inv.render());
        return exit_code::SCENARIO_INVALID;
    }
    let overrides = Overrides {
        broker,
        ..Overrides::default()
    };
    let mut code = exit_code::OK;
    let plan = plan::plan(&loaded, &overrides, templates).ok();
    if let Some(Placement::Managed { spec, .. }) = plan.as_ref().map(|p| &p.broker) {
        if spec.flavour().is_none() {
            code = render_broker(spec);
        }
    }
    let url: driver::url::TransportUrl = "amqp://127.0.0.1:5672/".parse().unwrap_or_default();
    let mut any = false;
    for svc in &loaded.scenario.services {
        let Some(cfg) = &svc.config else { continue };
        any = true;
        let inputs = crate::runner::services::TemplateInputs {
            vars: &loaded.vars,
            driver: &loaded.scenario.driver,
            addressing: loaded.scenario.broker.addressing,
            extra_options: &Default::default(),
        };
        match crate::runner::services::render_config(svc, cfg, templates, &url, inputs) {
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
        eprintln!("{}: no service has a `config:` template", file.display());
    }
    code
}

/// Prints the broker configuration files the process backend would write for `spec` (passwords hidden).
fn render_broker(spec: &BrokerSpec) -> i32 {
    if spec.flavour().is_some() {
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
        } => match backend::embedded::serve(flavour, port, &users, tls).await {
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
