//! Throughput and latency of the driver against the embedded broker (or `--url`).
//!
//! `cargo run --release -p driver --example bench -- [--url URL] [--flavour qpidd] [--calls N]
//! [--only calls|casts|notify] [--notifiers 1,8,64] [--window 100]`
//!
//! Reports call p50/p99, sequential calls/s, 8 concurrent callers calls/s,
//! casts/s, notifications/s with 1, 8 and 64 concurrent notifiers (each
//! notification acknowledged by the broker, all counted at the listener), and
//! the same acked traffic on a raw fe2o3 sender link with `--window` deliveries
//! in flight (the reference the notifier is measured against).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use driver::address::{resolve_kind, Addresser};
use driver::wire::{Notification, NotifyVersion, OutgoingMessage};
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
    /// Casts to send; a quarter as many notifications per notifier count.
    #[arg(long, default_value_t = 20000)]
    messages: usize,
    /// Run only one group of phases: `calls`, `casts` or `notify`.
    #[arg(long)]
    only: Option<String>,
    /// Concurrent notifier counts to measure (comma-separated).
    #[arg(long, default_value = "1,8,64", value_delimiter = ',')]
    notifiers: Vec<usize>,
    /// Deliveries in flight on the raw fe2o3 reference link.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// Product used to pick the raw link's address with `--url` (default: the flavour's).
    #[arg(long)]
    product: Option<String>,
}

impl Args {
    fn runs(&self, group: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == group)
    }
}

type BoxError = Box<dyn std::error::Error>;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (url, broker, product) = match &args.url {
        Some(u) => (u.clone(), None, args.product.clone()),
        None => {
            let flavour: broker::Flavour = args.flavour.parse().map_err(|e| format!("{e:?}"))?;
            let b = broker::Broker::start(broker::BrokerConfig::for_flavour(flavour)).await?;
            (b.url(), Some(b), Some(flavour.product().to_string()))
        }
    };
    let url = match &args.query {
        Some(q) => format!("{url}/?{q}"),
        None => url,
    };
    let server_t = Transport::connect(Config::from_url(&url)?).await?;
    let client_t = Transport::connect(Config::from_url(&url)?).await?;
    let payload = json!({"data": "x".repeat(100)});
    let Value::Object(pargs) = payload else {
        unreachable!()
    };
    if args.runs("calls") || args.runs("casts") {
        rpc_phases(&args, &server_t, &client_t, &pargs).await?;
    }
    if args.runs("notify") {
        for &n in &args.notifiers {
            notify_phase(&server_t, &client_t, args.messages / 4, n.max(1)).await?;
        }
        raw_notify_phase(&url, &server_t, product.as_deref(), &args).await?;
    }
    client_t.close().await;
    server_t.close().await;
    if let Some(b) = broker {
        b.shutdown().await;
    }
    Ok(())
}

/// Sequential calls, 8 concurrent callers and casts through one RPC server.
async fn rpc_phases(
    args: &Args,
    server_t: &Transport,
    client_t: &Transport,
    pargs: &driver::Map,
) -> Result<(), BoxError> {
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
        server_t,
        Target::topic("bench").with_server("s1"),
        dispatcher,
    )
    .await?;
    let client = RpcClient::new(client_t, Target::topic("bench")).timeout(Duration::from_secs(5));
    for i in 0..200 {
        if let Err(e) = client.call(Default::default(), "echo", pargs.clone()).await {
            return Err(format!("warm-up call {i}: {e}").into());
        }
    }
    if args.runs("calls") {
        call_phases(&client, args.calls, pargs).await?;
    }
    if args.runs("casts") {
        cast_phase(client_t, &casts, args.messages, pargs).await?;
    }
    server.stop().await;
    Ok(())
}

async fn call_phases(
    client: &RpcClient,
    calls: usize,
    pargs: &driver::Map,
) -> Result<(), BoxError> {
    let mut lat = Vec::with_capacity(calls);
    let t0 = Instant::now();
    for i in 0..calls {
        let s = Instant::now();
        if let Err(e) = client.call(Default::default(), "echo", pargs.clone()).await {
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
    println!("sequential calls/s {:.0}", calls as f64 / seq.as_secs_f64());

    let per = calls / 8;
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
    Ok(())
}

async fn cast_phase(
    client_t: &Transport,
    casts: &AtomicU64,
    messages: usize,
    pargs: &driver::Map,
) -> Result<(), BoxError> {
    let caster = RpcClient::new(client_t, Target::topic("bench").with_server("s1"));
    let t0 = Instant::now();
    for _ in 0..messages {
        caster
            .cast(Default::default(), "count", pargs.clone())
            .await?;
    }
    let sent = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while casts.load(Ordering::Relaxed) < messages as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let got = casts.load(Ordering::Relaxed);
    println!(
        "casts/s {:.0} sent, {:.0} delivered ({} of {} received)",
        messages as f64 / sent.as_secs_f64(),
        got as f64 / t0.elapsed().as_secs_f64(),
        got,
        messages
    );
    Ok(())
}

/// A listener on `topic.info` that acks and counts `n` notifications.
async fn counting_listener(
    t: &Transport,
    topic: &str,
    n: usize,
) -> Result<tokio::task::JoinHandle<usize>, BoxError> {
    let mut listener =
        NotificationListener::start(t, vec![Target::topic(topic)], vec![Priority::Info], None)
            .await?;
    Ok(tokio::spawn(async move {
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
    }))
}

/// `n` notifications from `notifiers` concurrent tasks sharing one notifier
/// (one sender link); each notification waits for the broker's accept.
async fn notify_phase(
    server_t: &Transport,
    client_t: &Transport,
    n: usize,
    notifiers: usize,
) -> Result<(), BoxError> {
    let topic = format!("benchn{notifiers}");
    let per = n / notifiers;
    let total = per * notifiers;
    // The warm-up notification is counted too.
    let recv = counting_listener(server_t, &topic, total + 1).await?;
    let notifier = Notifier::new(client_t, "bench").topics([topic.as_str()]);
    // Attach the sender link before timing.
    notifier
        .notify(Default::default(), "bench.warm", Priority::Info, json!({}))
        .await?;
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..notifiers {
        let nt = notifier.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                nt.notify(
                    Default::default(),
                    "bench.event",
                    Priority::Info,
                    json!({"k": 1}),
                )
                .await?;
            }
            Ok::<_, driver::NotifyError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent = t0.elapsed();
    let got = tokio::time::timeout(Duration::from_secs(60), recv).await??;
    println!(
        "notifications/s {:.0} with {notifiers} concurrent notifier(s), each acked ({got}/{} received, {:.2} s)",
        total as f64 / sent.as_secs_f64(),
        total + 1,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The same acked notification traffic on a raw fe2o3 sender link with up to
/// `--window` deliveries in flight: the rate one link can carry.
async fn raw_notify_phase(
    url: &str,
    server_t: &Transport,
    product: Option<&str>,
    args: &Args,
) -> Result<(), BoxError> {
    use fe2o3_amqp::{Connection, Sender, Session};
    let n = args.messages / 4;
    let topic = "benchraw";
    let cfg = Config::from_url(url)?;
    let kind = resolve_kind(cfg.amqp.addressing_mode, product, None);
    let address =
        Addresser::new(kind, &cfg.amqp, &cfg.control_exchange, None).notify(topic, "info");
    let recv = counting_listener(server_t, topic, n).await?;
    let host = &cfg.transport_url.hosts[0];
    let tcp = tokio::net::TcpStream::connect((host.host.as_str(), host.port)).await?;
    tcp.set_nodelay(true)?;
    let mut conn = Connection::builder()
        .container_id("bench-raw")
        .scheme("amqp")
        .open_with_stream(tcp)
        .await?;
    let mut session = Session::begin(&mut conn).await?;
    let mut sender = Sender::attach(&mut session, "bench-raw-sender", address.as_str()).await?;
    let note = Notification::new("bench", "bench.event", Priority::Info, json!({"k": 1}));
    let body = OutgoingMessage::notification(
        address.clone(),
        &Default::default(),
        &note,
        NotifyVersion::V2,
    );
    let mut inflight = std::collections::VecDeque::new();
    let t0 = Instant::now();
    for _ in 0..n {
        if inflight.len() >= args.window.max(1) {
            if let Some(f) = inflight.pop_front() {
                let _outcome: fe2o3_amqp::types::messaging::Outcome =
                    tokio::time::timeout(Duration::from_secs(30), f).await??;
            }
        }
        let sendable = fe2o3_amqp::link::delivery::Sendable::builder()
            .message(body.clone().into_amqp())
            .settled(false)
            .build();
        inflight.push_back(sender.send_batchable(sendable).await?);
    }
    for f in inflight {
        tokio::time::timeout(Duration::from_secs(30), f).await??;
    }
    let sent = t0.elapsed();
    let got = tokio::time::timeout(Duration::from_secs(60), recv).await??;
    println!(
        "raw fe2o3 acked link: {:.0} msg/s with a window of {} ({got}/{n} received)",
        n as f64 / sent.as_secs_f64(),
        args.window
    );
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = conn.close().await;
    Ok(())
}
