//! `harness` binary: parse the command line, run, exit with a documented code (see `harness --help`).

use clap::Parser;

fn main() {
    let cli = match harness::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                harness::exit_code::USAGE
            } else {
                harness::exit_code::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("HARNESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    std::process::exit(harness::app::main(cli));
}
