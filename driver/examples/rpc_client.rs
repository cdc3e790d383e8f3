//! RPC client for interop tests.
//!
//! `cargo run -p driver --example rpc_client -- --url URL --topic T [--server S] [--exchange E]
//!  --method M --args JSON [--cast | --fanout] [--timeout SECS] [--count N]`
//!
//! Prints each call's result as one JSON line (`{"result": ...}`), or the error as
//! `{"error": {"kind": ..., "class": ..., "module": ..., "message": ...}}`, and exits
//! non-zero when a call fails.

use std::time::Duration;

use clap::Parser;
use driver::{Config, RpcClient, Target, Transport};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Transport URL.
    #[arg(long)]
    url: String,
    /// Topic.
    #[arg(long)]
    topic: String,
    /// Server name (directed call/cast).
    #[arg(long)]
    server: Option<String>,
    /// Exchange.
    #[arg(long)]
    exchange: Option<String>,
    /// Method name.
    #[arg(long)]
    method: String,
    /// Arguments as a JSON object.
    #[arg(long, default_value = "{}")]
    args: String,
    /// Cast instead of call.
    #[arg(long, conflicts_with = "fanout")]
    cast: bool,
    /// Fanout cast to every server on the topic.
    #[arg(long)]
    fanout: bool,
    /// Call timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Number of calls.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let call_args = match serde_json::from_str::<Value>(&args.args) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("--args must be a JSON object".into()),
        Err(e) => return Err(format!("--args is not valid JSON: {e}").into()),
    };
    if !(args.timeout > 0.0 && args.timeout.is_finite()) {
        return Err("--timeout must be a positive number of seconds".into());
    }
    let transport = Transport::connect(Config::from_url(&args.url)?).await?;
    let mut target = Target::topic(args.topic.clone());
    target.server = args.server.clone();
    target.exchange = args.exchange.clone();
    target.fanout = args.fanout;
    let client = RpcClient::new(&transport, target).timeout(Duration::from_secs_f64(args.timeout));
    let mut ok = true;
    for _ in 0..args.count {
        if args.cast || args.fanout {
            match client
                .cast(Default::default(), &args.method, call_args.clone())
                .await
            {
                Ok(()) => println!("{}", json!({"result": null})),
                Err(e) => {
                    ok = false;
                    println!(
                        "{}",
                        json!({"error": {"kind": e.kind().as_str(), "message": e.to_string()}})
                    );
                }
            }
            continue;
        }
        match client
            .call(Default::default(), &args.method, call_args.clone())
            .await
        {
            Ok(v) => println!("{}", json!({ "result": v })),
            Err(e) => {
                ok = false;
                let line = match e.remote() {
                    Some(r) => {
                        json!({"error": {"kind": e.kind().as_str(), "class": r.class, "module": r.module, "message": r.message}})
                    }
                    None => json!({"error": {"kind": e.kind().as_str(), "message": e.to_string(),
                                              "condition": e.condition(), "description": e.description()}}),
                };
                println!("{line}");
            }
        }
    }
    transport.close().await;
    Ok(ok)
}
