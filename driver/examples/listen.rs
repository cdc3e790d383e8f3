//! Notification listener for interop tests: prints one JSON line per
//! notification (event_type, priority, payload, publisher_id) and exits after N.
//!
//! `cargo run -p driver --example listen -- --url URL --topic T [--priority P] [--count N]`

use clap::Parser;
use driver::{Config, NotificationListener, Priority, Target, Transport};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    /// Transport URL.
    #[arg(long)]
    url: String,
    /// Notification topic.
    #[arg(long, default_value = "notifications")]
    topic: String,
    /// Priorities to listen on (repeatable; default: all).
    #[arg(long)]
    priority: Vec<String>,
    /// Exit after this many notifications (default: run until killed).
    #[arg(long)]
    count: Option<u64>,
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
    let priorities = if args.priority.is_empty() {
        Priority::ALL.to_vec()
    } else {
        args.priority
            .iter()
            .map(|p| {
                p.parse::<Priority>()
                    .map_err(|e| format!("--priority: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let transport = Transport::connect(Config::from_url(&args.url)?).await?;
    let mut listener = NotificationListener::start(
        &transport,
        vec![Target::topic(args.topic)],
        priorities,
        None,
    )
    .await?;
    eprintln!("ready");
    let mut seen = 0u64;
    while let Some(n) = listener.recv().await {
        let line = json!({
            "event_type": n.notification.event_type,
            "priority": n.notification.priority.as_upper(),
            "payload": n.notification.payload,
            "publisher_id": n.notification.publisher_id,
        });
        println!("{line}");
        n.ack().await;
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    listener.stop().await;
    transport.close().await;
    Ok(())
}
