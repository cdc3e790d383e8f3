//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use driver::url::TransportUrl;

use crate::backend::BackendKind;
use crate::brokers::BrokerChoice;

pub fn parse_backend(s: &str) -> Result<BackendKind, String> {
    s.parse()
        .map_err(|e: crate::backend::UnknownName| e.to_string())
}

/// A transport URL whose query options are driver options; errors never quote the URL (it may hold a
/// password).
pub fn parse_url(s: &str) -> Result<TransportUrl, String> {
    let url = TransportUrl::parse(s).map_err(|e| format!("invalid transport URL: {e}"))?;
    driver::AmqpOptions::default()
        .apply_query(&url)
        .map_err(|e| format!("invalid option in the URL's query: {e}"))?;
    Ok(url)
}

/// clap parser for `--url`: clap's own error would repeat the value (`invalid value '<URL>'`), password
/// included, so the error is raw text naming the problem only. Exit code 2 (usage).
#[derive(Debug, Clone, Copy)]
pub struct UrlParser;

impl clap::builder::TypedValueParser for UrlParser {
    type Value = TransportUrl;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<TransportUrl, clap::Error> {
        let name = arg
            .map(|a| a.to_string())
            .unwrap_or_else(|| "--url".to_string());
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}' (not shown: it may hold a password): {why}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value
            .to_str()
            .ok_or_else(|| fail("not UTF-8 text".into()))?;
        parse_url(s).map_err(fail)
    }
}

/// clap parser for `--var NAME=VALUE`: like [`UrlParser`], its error never repeats the value.
#[derive(Debug, Clone, Copy)]
pub struct VarParser;

impl clap::builder::TypedValueParser for VarParser {
    type Value = (String, String);

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<(String, String), clap::Error> {
        let name = arg
            .map(|a| a.to_string())
            .unwrap_or_else(|| "--var".to_string());
        let fail = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        let s = value
            .to_str()
            .ok_or_else(|| fail("not UTF-8 text".into()))?;
        crate::scenario::vars::parse_assignment(s).map_err(fail)
    }
}

const LONG_ABOUT: &str = "Runs oslo.messaging AMQP 1.0 scenarios (YAML) against the embedded broker, local broker \
processes or containers, records a deterministic transcript and checks it against scenarios/snapshots/<name>.snap.";

/// `harness` command line.
#[derive(Debug, Parser)]
#[command(name = "harness", version, about = "Run oslo.messaging AMQP 1.0 scenarios against brokers and check their transcripts",
          long_about = LONG_ABOUT, after_long_help = crate::exit_code::HELP_TABLE)]
pub struct Cli {
    /// Root of the tera templates (broker configs, service INI files).
    #[arg(long, global = true, value_name = "DIR", env = "HARNESS_TEMPLATES")]
    pub templates: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run scenarios and check their transcripts.
    Run(RunArgs),
    /// List scenarios with their descriptions.
    List {
        /// Directory to scan (default: scenarios).
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Show which backends and broker kinds are usable here, and why not.
    Brokers,
    /// Render templates: a scenario's service configs, or one template.
    Render(RenderArgs),
    /// Embedded broker commands.
    Broker {
        /// Broker subcommand.
        #[command(subcommand)]
        command: BrokerCommand,
    },
    /// Python oslo.messaging peer commands.
    Peer {
        /// Peer subcommand.
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Run a matrix of scenarios x brokers (ci/matrix.yaml).
    Matrix {
        /// The matrix file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Run oslo.messaging's own functional test suite against a broker.
    OsloTests(crate::app::oslo_tests::OsloTestsArgs),
    /// Run a scenario's services and traffic for a long time with broker restarts.
    Soak(crate::app::soak::SoakArgs),
    /// Run one scenario on several brokers and show where their transcripts differ.
    Compare(crate::app::compare::CompareArgs),
    /// Measure driver latency and throughput against the Python baseline.
    Bench(crate::bench::BenchArgs),
}

/// `harness run` arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Scenario files (YAML).
    #[arg(value_name = "SCENARIO", required = true)]
    pub files: Vec<PathBuf>,
    /// Backend that starts the broker: embedded, process or container.
    #[arg(long, value_name = "BACKEND", value_parser = parse_backend)]
    pub backend: Option<BackendKind>,
    /// Broker to use instead of the scenario's: KIND[:FLAVOUR] (qpidd, embedded:router, rabbitmq...).
    #[arg(long, value_name = "KIND[:FLAVOUR]", value_parser = BrokerChoice::parse)]
    pub broker: Option<BrokerChoice>,
    /// Run against an already running broker at URL instead of starting one (fault steps are skipped).
    #[arg(long, value_name = "URL", conflicts_with_all = ["backend"], value_parser = UrlParser)]
    pub url: Option<TransportUrl>,
    /// Set a scenario variable (repeatable); wins over the file and HARNESS_VAR_<NAME>.
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = VarParser)]
    pub vars: Vec<(String, String)>,
    /// Accept the new transcript: write it to the snapshot instead of comparing.
    #[arg(long)]
    pub update: bool,
    /// Do not compare with the snapshot (expectations are still checked).
    #[arg(long, conflicts_with = "update")]
    pub no_snapshot: bool,
    /// Write a JUnit XML report (one test case per step group).
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Print the transcript after each scenario.
    #[arg(long, short)]
    pub verbose: bool,
}

/// `harness render` arguments.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A scenario whose service configs to render, or a template name (e.g. services/nova.conf.tera).
    #[arg(value_name = "SCENARIO|TEMPLATE")]
    pub what: Option<String>,
    /// Template variable (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = VarParser)]
    pub vars: Vec<(String, String)>,
    /// Show the broker configuration files for KIND[:FLAVOUR] (qpidd, qdrouterd, rabbitmq), for the
    /// scenario's broker section when a scenario is given.
    #[arg(long, value_name = "KIND[:FLAVOUR]", value_parser = BrokerChoice::parse)]
    pub broker: Option<BrokerChoice>,
}

/// `harness broker ...`.
#[derive(Debug, Subcommand)]
pub enum BrokerCommand {
    /// Serve the embedded broker until Ctrl-C; prints its URL on one line.
    Serve {
        /// The flavour (qpidd, router, rabbitmq3...).
        #[arg(long, default_value = "qpidd", value_parser = crate::brokers::parse_flavour)]
        flavour: crate::brokers::Flavour,
        /// Port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 5672)]
        port: u16,
        /// SASL PLAIN user (repeatable).
        #[arg(long = "user", value_name = "USER:PASSWORD")]
        users: Vec<String>,
        /// Serve AMQPS with a generated self-signed certificate.
        #[arg(long)]
        tls: bool,
    },
}

/// `harness peer ...`.
#[derive(Debug, Subcommand)]
pub enum PeerCommand {
    /// Create the Python venv with oslo.messaging for the peer.
    Setup {
        /// Venv directory.
        #[arg(long, value_name = "DIR")]
        venv: Option<PathBuf>,
    },
}
