//! Throughput and latency of the driver against the embedded broker (or `--url`).
//!
//! `cargo run --release -p driver --example bench -- [--url URL] [--flavour qpidd] [--calls N]`
//!
//! Reports call p50/p99, sequential calls/s, 8 concurrent callers calls/s,
//! casts/s and notifications/s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use driver::{
    Config, Dispatcher, Endpoint, NotificationListener, Notifier, Priority, RpcClient, RpcServer,
    Target, Transport,
};
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    /// Use this broker instead of an embedded one.
    #[arg(long)]
    url: Option<String>,
    /// Embedded broker flavour (qpidd, router).
    #[arg(long, default_value = "qpidd")]
    flavour: String,
    /// Sequential calls to time.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Extra URL query (e.g. `reply_link_credit=1000`).
    #[arg(long)]
    query: Option<String>,
    /// Casts / notifications to send.
    #[arg(long, default_value_t = 20000)]
    messages: usize,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (url, broker) = match &args.url {
        Some(u) => (u.clone(), None),
        None => {
            let flavour: broker::Flavour = args.flavour.parse().map_err(|e| format!("{e:?}"))?;
            let b = broker::Broker::start(broker::BrokerConfig::for_flavour(flavour)).await?;
            (b.url(), Some(b))
        }
    };
    let url = match &args.query {
        Some(q) => format!("{url}/?{q}"),
        None => url,
    };
    let server_t = Transport::connect(Config::from_url(&url)?).await?;
    let client_t = Transport::connect(Config::from_url(&url)?).await?;
    let casts = Arc::new(AtomicU64::new(0));
    let c2 = casts.clone();
    let dispatcher = Dispatcher::new().endpoint(
        Endpoint::new()
            .method("echo", |_c, a| async move { Ok(Value::Object(a)) })
            .method("count", move |_c, _a| {
                c2.fetch_add(1, Ordering::Relaxed);
                async move { Ok(Value::Null) }
            }),
    );
    let server = RpcServer::start(
        &server_t,
        Target::topic("bench").with_server("s1"),
        dispatcher,
    )
    .await?;
    let client = RpcClient::new(&client_t, Target::topic("bench")).timeout(Duration::from_secs(5));
    let payload = json!({"data": "x".repeat(100)});
    let Value::Object(pargs) = payload else {
        unreachable!()
    };

    // warm up
    for i in 0..200 {
        if let Err(e) = client.call(Default::default(), "echo", pargs.clone()).await {
            if let Some(b) = &broker {
                eprintln!(
                    "{}",
                    serde_json::to_string_pretty(&b.counters()).unwrap_or_default()
                );
            }
            return Err(format!("warm-up call {i}: {e}").into());
        }
    }
    // sequential calls
    let mut lat = Vec::with_capacity(args.calls);
    let t0 = Instant::now();
    for i in 0..args.calls {
        let s = Instant::now();
        if let Err(e) = client.call(Default::default(), "echo", pargs.clone()).await {
            if let Some(b) = &broker {
                eprintln!(
                    "{}",
                    serde_json::to_string_pretty(&b.counters()).unwrap_or_default()
                );
            }
            return Err(format!("sequential call {i}: {e}").into());
        }
        lat.push(s.elapsed());
    }
    let seq = t0.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    println!(
        "call latency p50 {:.3} ms  p99 {:.3} ms  (n={})",
        p(0.50),
        p(0.99),
        lat.len()
    );
    println!(
        "sequential calls/s {:.0}",
        args.calls as f64 / seq.as_secs_f64()
    );

    // 8 concurrent callers
    let per = args.calls / 8;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        let a = pargs.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                c.call(Default::default(), "echo", a.clone()).await?;
            }
            Ok::<_, driver::CallError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    println!(
        "8 concurrent callers calls/s {:.0}",
        (per * 8) as f64 / t0.elapsed().as_secs_f64()
    );

    // casts (pre-settled), counted at the server
    let caster = RpcClient::new(&client_t, Target::topic("bench").with_server("s1"));
    let t0 = Instant::now();
    for _ in 0..args.messages {
        caster
            .cast(Default::default(), "count", pargs.clone())
            .await?;
    }
    let sent = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while casts.load(Ordering::Relaxed) < args.messages as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = casts.load(Ordering::Relaxed);
    println!(
        "casts/s {:.0} sent, {:.0} delivered ({} of {} received)",
        args.messages as f64 / sent.as_secs_f64(),
        got as f64 / t0.elapsed().as_secs_f64(),
        got,
        args.messages
    );

    // notifications (unsettled: each waits for the broker's accept)
    let mut listener = NotificationListener::start(
        &server_t,
        vec![Target::topic("benchn")],
        vec![Priority::Info],
        None,
    )
    .await?;
    let n = args.messages / 4;
    let recv = tokio::spawn(async move {
        let mut k = 0;
        while k < n {
            match listener.recv().await {
                Some(m) => {
                    m.ack().await;
                    k += 1;
                }
                None => break,
            }
        }
        k
    });
    let notifier = Notifier::new(&client_t, "bench").topics(["benchn"]);
    let t0 = Instant::now();
    for _ in 0..n {
        notifier
            .notify(
                Default::default(),
                "bench.event",
                Priority::Info,
                json!({"k": 1}),
            )
            .await?;
    }
    let sent = t0.elapsed();
    println!(
        "notifications/s {:.0} (sequential, each acknowledged by the broker)",
        n as f64 / sent.as_secs_f64()
    );
    let got = tokio::time::timeout(Duration::from_secs(60), recv).await??;
    println!(
        "notifications received {got}/{n} in {:.2} s",
        t0.elapsed().as_secs_f64()
    );

    server.stop().await;
    client_t.close().await;
    server_t.close().await;
    if let Some(b) = broker {
        b.shutdown().await;
    }
    Ok(())
}
