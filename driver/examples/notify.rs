//! Notification sender for interop tests.
//!
//! `cargo run -p driver --example notify -- --url URL --topic T --priority P --event-type E
//!  --payload JSON [--v1] [--count N]`

use clap::Parser;
use driver::{Config, Notifier, NotifyVersion, Priority, Transport};
use serde_json::Value;

#[derive(Parser, Debug)]
struct Args {
    /// Transport URL.
    #[arg(long)]
    url: String,
    /// Notification topic (e.g. notifications).
    #[arg(long, default_value = "notifications")]
    topic: String,
    /// Priority: debug, audit, info, warn, error, critical, sample.
    #[arg(long, default_value = "info")]
    priority: String,
    /// Event type.
    #[arg(long)]
    event_type: String,
    /// Payload (any JSON value).
    #[arg(long, default_value = "{}")]
    payload: String,
    /// Publisher id.
    #[arg(long, default_value = "amqp1-rig.notify")]
    publisher_id: String,
    /// Use the v1 (`messaging`) format instead of v2 (`messagingv2`).
    #[arg(long)]
    v1: bool,
    /// Number of notifications.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let priority: Priority = args
        .priority
        .parse()
        .map_err(|e| format!("--priority: {e}"))?;
    let payload: Value = serde_json::from_str(&args.payload)
        .map_err(|e| format!("--payload is not valid JSON: {e}"))?;
    let transport = Transport::connect(Config::from_url(&args.url)?).await?;
    let version = if args.v1 {
        NotifyVersion::V1
    } else {
        NotifyVersion::V2
    };
    let notifier = Notifier::new(&transport, args.publisher_id)
        .topics([args.topic])
        .version(version);
    for _ in 0..args.count {
        notifier
            .notify(
                Default::default(),
                &args.event_type,
                priority,
                payload.clone(),
            )
            .await?;
    }
    transport.close().await;
    Ok(())
}
