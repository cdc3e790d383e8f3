//! Throughput and latency of the embedded broker (qpidd flavour) with a raw fe2o3 client.
//!
//! Not a timed test: it prints numbers. Run with `cargo bench -p broker`.
//! Environment: `BENCH_MESSAGES` (default 50000), `BENCH_RPC` (default 5000),
//! `BENCH_FLAVOUR` (default qpidd; router works too), `BENCH_WINDOW` (default 100).
//!
//! * one-way pre-settled: producer sends pre-settled, consumer link in settled mode;
//! * one-way acked: producer keeps a window of 100 unsettled sends, consumer accepts each;
//! * request/reply: a dynamic reply queue, a server echoing via the anonymous relay,
//!   one request in flight; p50/p99 of the round trip.
//!
//! Messages carry a 100-byte `data` body. Every socket has TCP_NODELAY.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use broker::{Broker, BrokerConfig, Flavour};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Data, Message, Properties, Source};
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::{Connection, Delivery, Receiver, Sendable, Sender, Session};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn client(broker: &Broker, id: &str) -> Res<(ConnectionHandle<()>, SessionHandle<()>)> {
    let tcp = TcpStream::connect(broker.local_addr()).await?;
    tcp.set_nodelay(true)?;
    let mut conn = Connection::builder()
        .container_id(id)
        .open_with_stream(tcp)
        .await?;
    let session = Session::begin(&mut conn).await?;
    Ok((conn, session))
}

fn payload() -> Message<Data> {
    Message::builder()
        .data(Binary::from(vec![0x61u8; 100]))
        .build()
}

/// Sends `n` messages: pre-settled one by one, or unsettled keeping `window_size` in flight.
async fn produce(sender: &mut Sender, n: usize, presettled: bool, window_size: usize) -> Res<()> {
    if presettled {
        for _ in 0..n {
            let s = Sendable::builder().message(payload()).settled(true).build();
            sender.send_batchable(s).await?.await?;
        }
        return Ok(());
    }
    let mut window = VecDeque::with_capacity(window_size);
    for _ in 0..n {
        if window.len() == window_size {
            if let Some(f) = window.pop_front() {
                let _: fe2o3_amqp::types::messaging::Outcome = f.await?;
            }
        }
        window.push_back(sender.send_batchable(payload()).await?);
    }
    for f in window {
        f.await?;
    }
    Ok(())
}

async fn one_way(broker: &Broker, n: usize, presettled: bool) -> Res<f64> {
    let window_size = env_usize("BENCH_WINDOW", 100);
    let address = if broker.flavour() == Flavour::Router {
        format!("openstack.org/om/rpc/anycast/bench/{}", presettled)
    } else {
        format!("unicast.bench.{}", presettled)
    };
    let (mut cc, mut cs) = client(broker, "bench-consumer").await?;
    let mut rb = Receiver::builder()
        .name("bench-rx")
        .source(address.as_str())
        .credit_mode(CreditMode::Auto(500));
    if presettled {
        rb = rb.sender_settle_mode(SenderSettleMode::Settled);
    }
    let mut receiver = rb.attach(&mut cs).await?;
    let (mut pc, mut ps) = client(broker, "bench-producer").await?;
    let mut sender = Sender::builder()
        .name("bench-tx")
        .target(address.as_str())
        .attach(&mut ps)
        .await?;

    // Through a router, pre-settled messages past the backlog threshold are dropped by
    // design: the consumer then stops after a second without messages.
    let lossy = presettled && broker.flavour() == Flavour::Router;
    let consumer = tokio::spawn(async move {
        let mut got = 0usize;
        let mut last = Instant::now();
        while got < n {
            let d: Delivery<Body<Value>> = if lossy {
                match tokio::time::timeout(Duration::from_secs(1), receiver.recv()).await {
                    Ok(d) => d?,
                    Err(_) => break,
                }
            } else {
                receiver.recv().await?
            };
            receiver.accept(&d).await?;
            got += 1;
            last = Instant::now();
        }
        receiver.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((last, got))
    });
    let start = Instant::now();
    produce(&mut sender, n, presettled, window_size).await?;
    let (end, got) = consumer.await??;
    let secs = end.duration_since(start).as_secs_f64();
    if got < n {
        println!(
            "  ({} of {n} pre-settled messages dropped by the router's backlog limit)",
            n - got
        );
    }
    let n = got;
    sender.close().await?;
    cs.end().await?;
    ps.end().await?;
    cc.close().await?;
    pc.close().await?;
    Ok(n as f64 / secs)
}

/// Server: receives `n` requests and replies to each reply-to through the anonymous relay.
async fn spawn_echo_server(
    broker: &Broker,
    service: &str,
    n: usize,
) -> Res<tokio::task::JoinHandle<Res<()>>> {
    let (mut sc, mut ss) = client(broker, "bench-server").await?;
    let mut requests = Receiver::builder()
        .name("bench-server-rx")
        .source(service)
        .attach(&mut ss)
        .await?;
    let mut relay = Sender::builder()
        .name("bench-server-relay")
        .target(fe2o3_amqp::types::messaging::Target::builder().build())
        .attach(&mut ss)
        .await?;
    Ok(tokio::spawn(async move {
        for _ in 0..n {
            let d: Delivery<Body<Value>> = requests.recv().await?;
            requests.accept(&d).await?;
            let reply_to = d
                .message()
                .properties
                .as_ref()
                .and_then(|p| p.reply_to.clone())
                .ok_or("request without reply-to")?;
            let reply = Message::builder()
                .properties(Properties::builder().to(reply_to).build())
                .data(Binary::from(vec![0x62u8; 100]))
                .build();
            let s = Sendable::builder().message(reply).settled(true).build();
            relay.send_batchable(s).await?.await?;
        }
        requests.close().await?;
        relay.close().await?;
        ss.end().await?;
        sc.close().await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    }))
}

async fn request_reply(broker: &Broker, n: usize) -> Res<(Duration, Duration, Duration)> {
    let service = if broker.flavour() == Flavour::Router {
        "openstack.org/om/rpc/anycast/bench/rpc"
    } else {
        "exclusive.bench.rpc"
    };
    let server = spawn_echo_server(broker, service, n).await?;

    let (mut cc, mut cs) = client(broker, "bench-client").await?;
    let mut replies = Receiver::builder()
        .name("bench-reply")
        .source(Source::builder().dynamic(true).build())
        .attach(&mut cs)
        .await?;
    let reply_address = replies
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .ok_or("no dynamic address")?;
    let mut sender = Sender::builder()
        .name("bench-client-tx")
        .target(service)
        .attach(&mut cs)
        .await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let request = Message::builder()
            .properties(
                Properties::builder()
                    .reply_to(reply_address.clone())
                    .build(),
            )
            .data(Binary::from(vec![0x61u8; 100]))
            .build();
        let t = Instant::now();
        sender.send(request).await?;
        let d: Delivery<Body<Value>> = replies.recv().await?;
        replies.accept(&d).await?;
        samples.push(t.elapsed());
    }
    server.await??;
    sender.close().await?;
    replies.close().await?;
    cs.end().await?;
    cc.close().await?;
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok((pct(0.50), pct(0.99), samples[samples.len() - 1]))
}

fn main() -> Res<()> {
    // `cargo bench` passes `--bench`; anything else (e.g. a filter) is ignored.
    let n = env_usize("BENCH_MESSAGES", 50_000);
    let rpc = env_usize("BENCH_RPC", 5_000);
    let flavour: Flavour = std::env::var("BENCH_FLAVOUR")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(Flavour::Qpidd);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let broker = Broker::start(BrokerConfig::for_flavour(flavour)).await?;
        println!(
            "embedded broker ({flavour}) at {}; 100-byte messages",
            broker.url()
        );
        // Warm-up.
        one_way(&broker, 2_000, true).await?;
        let ps = one_way(&broker, n, true).await?;
        println!("one-way pre-settled:      {n:>7} msgs  {ps:>10.0} msgs/s");
        let acked = one_way(&broker, n, false).await?;
        println!("one-way acked (window 100): {n:>5} msgs  {acked:>10.0} msgs/s");
        let (p50, p99, max) = request_reply(&broker, rpc).await?;
        println!(
            "request/reply:            {rpc:>7} calls p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
        println!(
            "counters: {:?}",
            broker.counters().nodes.keys().collect::<Vec<_>>()
        );
        broker.shutdown().await;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    })
}
