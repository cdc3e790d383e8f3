//! RPC server for interop tests: serves `echo` (returns args) and `fail`
//! (raises builtins.ValueError with args.message) until killed.
//!
//! `cargo run -p driver --example rpc_server -- --url amqp://127.0.0.1:5672 --topic T [--server S] [--exchange E]`
//!
//! Prints one line `ready` once the links are attached; with `--print-calls`,
//! then one JSON line `{"method": ..., "args": ...}` per invocation.

use clap::Parser;
use driver::{Config, Dispatcher, Endpoint, RemoteError, RpcServer, Target, Transport};
use serde_json::Value;

#[derive(Parser, Debug)]
struct Args {
    /// Transport URL (amqp://[user:pass@]host:port[,host2...]/[vhost][?option=value]).
    #[arg(long)]
    url: String,
    /// Topic to serve.
    #[arg(long)]
    topic: String,
    /// Server name (default: the host name).
    #[arg(long)]
    server: Option<String>,
    /// Exchange (default: control_exchange).
    #[arg(long)]
    exchange: Option<String>,
    /// Print one JSON line per invocation on stdout.
    #[arg(long)]
    print_calls: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_url(&args.url)?;
    let transport = Transport::connect(config).await?;
    let server_name = args.server.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    });
    let mut target = Target::topic(args.topic).with_server(server_name);
    target.exchange = args.exchange;
    let print = args.print_calls;
    let dispatcher = Dispatcher::new().endpoint(
        Endpoint::new()
            .method("echo", move |_ctx, a| async move {
                if print {
                    println!("{}", serde_json::json!({"method": "echo", "args": a}));
                }
                Ok(Value::Object(a))
            })
            .method("fail", move |_ctx, a| async move {
                if print {
                    println!("{}", serde_json::json!({"method": "fail", "args": a}));
                }
                let msg = a
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Err(RemoteError::new("ValueError", "builtins", msg))
            }),
    );
    let server = RpcServer::start(&transport, target, dispatcher).await?;
    println!("ready");
    tokio::signal::ctrl_c().await?;
    server.stop().await;
    transport.close().await;
    Ok(())
}
