//! The measurement loops, each bounded in count and time, all through the real driver over TCP.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driver::{
    Config, Dispatcher, Endpoint, Map, NotificationListener, Notifier, Priority, RpcClient,
    RpcServer, Target, Transport,
};
use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::stats::{Latency, Memory};
use super::BenchError;

/// How long a count-bounded phase may take at most before it stops with what it has.
pub const COUNT_PHASE_CAP: Duration = Duration::from_secs(120);
/// How long to wait for stragglers after the last send when nothing more arrives.
const DRAIN_IDLE: Duration = Duration::from_secs(3);
/// Longest wait for outstanding casts or notifications after the last send.
const DRAIN_CAP: Duration = Duration::from_secs(30);
/// Timeout of each call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How much work each phase does.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Budget {
    /// Time per phase (duration mode).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Operations per phase (count mode); the phase is still capped at [`COUNT_PHASE_CAP`].
    pub count: Option<u64>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Budget {
    /// Whether one more operation should start, `done` operations in, `start` being the phase start.
    fn more(&self, done: u64, start: Instant) -> bool {
        match self.count {
            Some(n) => done < n && start.elapsed() < COUNT_PHASE_CAP,
            None => start.elapsed() < self.duration,
        }
    }
}

/// Time to a ready RPC server and what it cost in memory.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// `Transport::connect` (TCP + SASL + open).
    pub connect_ms: f64,
    /// `RpcServer::start` until its links are attached.
    pub start_ms: f64,
    /// Both.
    pub total_ms: f64,
    /// Process memory before connecting.
    pub before: Memory,
    /// Process memory once the server was ready.
    pub after: Memory,
}

/// Sequential calls.
#[derive(Debug, Clone, Serialize)]
pub struct Sequential {
    /// Calls completed.
    pub calls: u64,
    /// Wall time of the loop.
    pub seconds: f64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Round-trip latency of each call.
    pub latency: Latency,
}

/// Concurrent callers sharing one transport.
#[derive(Debug, Clone, Serialize)]
pub struct Concurrent {
    /// Number of caller tasks.
    pub callers: u64,
    /// Calls completed by all of them.
    pub calls: u64,
    /// Wall time from the first call to the last reply.
    pub seconds: f64,
    /// Calls per second, all callers together.
    pub calls_per_s: f64,
    /// Latency of each call under this load.
    pub latency: Option<Latency>,
}

/// One-way messages counted where they arrive.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    /// Messages sent (each send returned success).
    pub sent: u64,
    /// Messages that arrived at the server or listener.
    pub received: u64,
    /// Time the send loop took.
    pub send_seconds: f64,
    /// Time from the first send to the last arrival.
    pub seconds: f64,
    /// `sent / send_seconds`.
    pub sent_per_s: f64,
    /// `received / seconds`: the figure compared with the baselines.
    pub received_per_s: f64,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Measurements {
    /// Server time-to-ready and memory.
    pub server_ready: Ready,
    /// Sequential calls and their latency.
    pub sequential: Sequential,
    /// Concurrent callers.
    pub concurrent: Concurrent,
    /// Pre-settled casts, counted by the server.
    pub casts: Delivered,
    /// Unsettled notifications, counted by a listener that acknowledges each.
    pub notifications: Delivered,
    /// Process memory at the end.
    pub end_memory: Memory,
    /// The sorted sequential call latencies (not serialized; the report keeps a downsampled CDF).
    #[serde(skip)]
    pub samples: Vec<Duration>,
}

/// Arrival counter shared with the server handler and the listener task.
#[derive(Debug)]
struct Arrivals {
    base: Instant,
    n: AtomicU64,
    last_ns: AtomicU64,
}

impl Arrivals {
    fn new() -> Arc<Arrivals> {
        Arc::new(Arrivals {
            base: Instant::now(),
            n: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
        })
    }

    fn hit(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.fetch_max(ns, Ordering::SeqCst);
        self.n.fetch_add(1, Ordering::SeqCst);
    }

    fn count(&self) -> u64 {
        self.n.load(Ordering::SeqCst)
    }

    /// Seconds from `start` to the last arrival (0 when none arrived after `start`).
    fn seconds_since(&self, start: Instant) -> f64 {
        let last = self.base + Duration::from_nanos(self.last_ns.load(Ordering::SeqCst));
        last.saturating_duration_since(start).as_secs_f64()
    }

    /// Waits until `target` arrived, nothing arrived for [`DRAIN_IDLE`], or [`DRAIN_CAP`] passed.
    async fn drain(&self, target: u64) {
        let cap = Instant::now() + DRAIN_CAP;
        let mut seen = self.count();
        let mut idle_since = Instant::now();
        while seen < target && Instant::now() < cap {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = self.count();
            if now != seen {
                seen = now;
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= DRAIN_IDLE {
                break;
            }
        }
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs every phase against the broker at `url`.
pub async fn run_all(
    url: &str,
    payload: &Map,
    budget: Budget,
    callers: u64,
    progress: &Progress,
) -> Result<Measurements, BenchError> {
    let config = Config::from_url(url).map_err(|e| BenchError::Usage(format!("--url: {e}")))?;
    let casts = Arrivals::new();

    // (5) server time-to-ready: connect + start until the links are attached.
    let phase = progress.phase("server ready");
    let before = Memory::now();
    let t0 = Instant::now();
    let server_t = Transport::connect(config.clone())
        .await
        .map_err(|e| BenchError::Connect(e.to_string()))?;
    let connect = t0.elapsed();
    let counter = casts.clone();
    let dispatcher = Dispatcher::new().endpoint(
        Endpoint::new()
            .method("echo", |_ctx, args| async move { Ok(Value::Object(args)) })
            .method("count", move |_ctx, _args| {
                counter.hit();
                async move { Ok(Value::Null) }
            }),
    );
    let server = RpcServer::start(
        &server_t,
        Target::topic("bench").with_server("s1"),
        dispatcher,
    )
    .await
    .map_err(|e| BenchError::Driver(format!("RPC server did not start: {e}")))?;
    let total = t0.elapsed();
    let after = Memory::now();
    let ready = Ready {
        connect_ms: ms(connect),
        start_ms: ms(total - connect),
        total_ms: ms(total),
        before,
        after,
    };
    phase.finish(&format!(
        "{:.1} ms (connect {:.1} ms, server start {:.1} ms)",
        ready.total_ms, ready.connect_ms, ready.start_ms
    ));

    let client_t = Transport::connect(config)
        .await
        .map_err(|e| BenchError::Connect(e.to_string()))?;
    let result = phases(
        &server_t, &client_t, payload, budget, callers, casts, ready, progress,
    )
    .await;
    server.stop().await;
    client_t.close().await;
    server_t.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn phases(
    server_t: &Transport,
    client_t: &Transport,
    payload: &Map,
    budget: Budget,
    callers: u64,
    casts: Arc<Arrivals>,
    ready: Ready,
    progress: &Progress,
) -> Result<Measurements, BenchError> {
    let client = RpcClient::new(client_t, Target::topic("bench")).timeout(CALL_TIMEOUT);

    // Warm-up: up to 200 calls or 2 s.
    let phase = progress.phase("warm-up");
    let start = Instant::now();
    let mut n = 0u64;
    while n < 200 && start.elapsed() < Duration::from_secs(2) {
        client
            .call(Map::new(), "echo", payload.clone())
            .await
            .map_err(|e| BenchError::Driver(format!("warm-up call {n}: {e}")))?;
        n += 1;
    }
    phase.finish(&format!("{n} calls"));

    // (1) sequential calls.
    let mut phase = progress.phase("sequential calls");
    let mut samples = Vec::new();
    let start = Instant::now();
    while budget.more(samples.len() as u64, start) {
        let s = Instant::now();
        client
            .call(Map::new(), "echo", payload.clone())
            .await
            .map_err(|e| BenchError::Driver(format!("sequential call {}: {e}", samples.len())))?;
        samples.push(s.elapsed());
        phase.tick(samples.len() as u64, "calls");
    }
    let seconds = start.elapsed().as_secs_f64();
    let calls = samples.len() as u64;
    let latency = Latency::from_samples(&mut samples)
        .ok_or_else(|| BenchError::Driver("no sequential call completed".into()))?;
    let sequential = Sequential {
        calls,
        seconds,
        calls_per_s: per_s(calls, seconds),
        latency,
    };
    phase.finish(&format!(
        "{} calls, {:.0} calls/s, p50 {:.3} ms, p99 {:.3} ms",
        calls, sequential.calls_per_s, sequential.latency.p50_ms, sequential.latency.p99_ms
    ));

    // (2) concurrent callers.
    let concurrent = concurrent_calls(&client, payload, budget, callers, progress).await?;

    // (3) casts, pre-settled, counted by the server.
    let casts = cast_loop(client_t, payload, budget, casts, progress).await?;

    // (4) notifications, unsettled, received and acknowledged by a listener.
    let notifications = notify_loop(server_t, client_t, payload, budget, progress).await?;

    Ok(Measurements {
        server_ready: ready,
        sequential,
        concurrent,
        casts,
        notifications,
        end_memory: Memory::now(),
        samples,
    })
}

async fn concurrent_calls(
    client: &RpcClient,
    payload: &Map,
    budget: Budget,
    callers: u64,
    progress: &Progress,
) -> Result<Concurrent, BenchError> {
    let mut phase = progress.phase(&format!("{callers} concurrent callers"));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..callers {
        let client = client.clone();
        let payload = payload.clone();
        let done = done.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            // Claim a call before making it so count mode makes exactly N calls in all.
            while budget.more(done.fetch_add(1, Ordering::SeqCst), start) {
                let s = Instant::now();
                client.call(Map::new(), "echo", payload.clone()).await?;
                lat.push(s.elapsed());
            }
            Ok::<_, driver::CallError>(lat)
        });
    }
    let mut samples = Vec::new();
    let mut first_err = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(lat))) => samples.extend(lat),
                Some(Ok(Err(e))) => { first_err.get_or_insert(format!("concurrent call: {e}")); }
                Some(Err(e)) => { first_err.get_or_insert(format!("caller task failed: {e}")); }
            },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                phase.tick(done.load(Ordering::SeqCst), "calls started");
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = first_err {
        return Err(BenchError::Driver(e));
    }
    let calls = samples.len() as u64;
    let latency = Latency::from_samples(&mut samples);
    let c = Concurrent {
        callers,
        calls,
        seconds,
        calls_per_s: per_s(calls, seconds),
        latency,
    };
    phase.finish(&format!("{} calls, {:.0} calls/s", c.calls, c.calls_per_s));
    Ok(c)
}

async fn cast_loop(
    client_t: &Transport,
    payload: &Map,
    budget: Budget,
    arrivals: Arc<Arrivals>,
    progress: &Progress,
) -> Result<Delivered, BenchError> {
    let mut phase = progress.phase("casts");
    let caster = RpcClient::new(client_t, Target::topic("bench"));
    let base = arrivals.count();
    let mut sent = 0u64;
    let start = Instant::now();
    while budget.more(sent, start) {
        caster
            .cast(Map::new(), "count", payload.clone())
            .await
            .map_err(|e| BenchError::Driver(format!("cast {sent}: {e}")))?;
        sent += 1;
        phase.tick(sent, "sent");
    }
    let send_seconds = start.elapsed().as_secs_f64();
    arrivals.drain(base + sent).await;
    let received = arrivals.count() - base;
    let seconds = arrivals.seconds_since(start);
    let d = Delivered {
        sent,
        received,
        send_seconds,
        seconds,
        sent_per_s: per_s(sent, send_seconds),
        received_per_s: per_s(received, seconds),
    };
    phase.finish(&format!(
        "{} sent, {} received, {:.0} received/s",
        d.sent, d.received, d.received_per_s
    ));
    Ok(d)
}

async fn notify_loop(
    server_t: &Transport,
    client_t: &Transport,
    payload: &Map,
    budget: Budget,
    progress: &Progress,
) -> Result<Delivered, BenchError> {
    let mut phase = progress.phase("notifications");
    let mut listener = NotificationListener::start(
        server_t,
        vec![Target::topic("bench_notifications")],
        vec![Priority::Info],
        None,
    )
    .await
    .map_err(|e| BenchError::Driver(format!("notification listener did not start: {e}")))?;
    let arrivals = Arrivals::new();
    let stop = CancellationToken::new();
    let recv = {
        let arrivals = arrivals.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    m = listener.recv() => match m {
                        Some(m) => {
                            m.ack().await;
                            arrivals.hit();
                        }
                        None => break,
                    },
                }
            }
            listener.stop().await;
        })
    };
    let notifier = Notifier::new(client_t, "bench").topics(["bench_notifications"]);
    let body = Value::Object(payload.clone());
    let mut sent = 0u64;
    let start = Instant::now();
    let mut failure = None;
    while budget.more(sent, start) {
        if let Err(e) = notifier
            .notify(Map::new(), "bench.event", Priority::Info, body.clone())
            .await
        {
            failure = Some(format!("notification {sent}: {e}"));
            break;
        }
        sent += 1;
        phase.tick(sent, "sent");
    }
    let send_seconds = start.elapsed().as_secs_f64();
    if failure.is_none() {
        arrivals.drain(sent).await;
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), recv).await;
    if let Some(f) = failure {
        return Err(BenchError::Driver(f));
    }
    let received = arrivals.count();
    let seconds = arrivals.seconds_since(start);
    let d = Delivered {
        sent,
        received,
        send_seconds,
        seconds,
        sent_per_s: per_s(sent, send_seconds),
        received_per_s: per_s(received, seconds),
    };
    phase.finish(&format!(
        "{} sent, {} received, {:.0} received/s",
        d.sent, d.received, d.received_per_s
    ));
    Ok(d)
}
