//! The Rust driver's measurement loops, each bounded in count and time, all through the real driver
//! over TCP, with its servers and listener in this process.

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

use super::stats::Hist;
use super::BenchError;

/// Upper bound on a phase in count mode.
pub const COUNT_PHASE_CAP: Duration = Duration::from_secs(120);
/// How long to wait for one-way messages still in flight after the send loop.
pub const DRAIN_CAP: Duration = Duration::from_secs(10);
/// A drain also ends when nothing arrived for this long.
pub const DRAIN_IDLE: Duration = Duration::from_secs(2);
/// Call timeout of the benchmark client.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long or how many operations each round runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Budget {
    /// Wall-clock time per round (duration mode).
    #[serde(serialize_with = "ser_secs")]
    pub duration: Duration,
    /// Operations per round (count mode); the round is still capped at [`COUNT_PHASE_CAP`].
    pub count: Option<u64>,
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Budget {
    /// Whether one more operation should start, `done` operations in, `start` being the round start.
    pub fn more(&self, done: u64, start: Instant) -> bool {
        match self.count {
            Some(n) => done < n && start.elapsed() < COUNT_PHASE_CAP,
            None => start.elapsed() < self.duration,
        }
    }
}

/// One-way messages counted where they arrive.
#[derive(Debug, Clone, Serialize)]
pub struct Delivered {
    /// Messages sent (each send returned success).
    pub sent: u64,
    /// Deliveries that arrived (at every server for fanout).
    pub received: u64,
    /// Deliveries expected (`sent` times the number of receivers).
    pub expected: u64,
    /// Whether all expected deliveries arrived.
    pub all_arrived: bool,
    /// Time the send loop took.
    pub send_seconds: f64,
    /// Time from the first send to the last arrival.
    pub seconds: f64,
    /// `sent / send_seconds`.
    pub sent_per_s: f64,
    /// `received / seconds`: the figure compared.
    pub received_per_s: f64,
}

impl Delivered {
    /// Derives the rates.
    pub fn new(sent: u64, received: u64, expected: u64, send_seconds: f64, seconds: f64) -> Self {
        Delivered {
            sent,
            received,
            expected,
            all_arrived: received >= expected,
            send_seconds,
            seconds,
            sent_per_s: per_s(sent, send_seconds),
            received_per_s: per_s(received, seconds),
        }
    }

    /// As a JSON detail.
    pub fn detail(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Arrival counter shared with server handlers and the listener task.
#[derive(Debug)]
pub struct Arrivals {
    base: Instant,
    n: AtomicU64,
    last_ns: AtomicU64,
}

impl Arrivals {
    /// A new counter at zero.
    pub fn new() -> Arc<Arrivals> {
        Arc::new(Arrivals {
            base: Instant::now(),
            n: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
        })
    }

    /// Counts one arrival now.
    pub fn hit(&self) {
        let ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_ns.fetch_max(ns, Ordering::SeqCst);
        self.n.fetch_add(1, Ordering::SeqCst);
    }

    /// Arrivals so far.
    pub fn count(&self) -> u64 {
        self.n.load(Ordering::SeqCst)
    }

    /// Seconds from `start` to the last arrival (0 when none arrived after `start`).
    pub fn seconds_since(&self, start: Instant) -> f64 {
        let last = self.base + Duration::from_nanos(self.last_ns.load(Ordering::SeqCst));
        last.saturating_duration_since(start).as_secs_f64()
    }

    /// Waits until `target` arrived, nothing arrived for [`DRAIN_IDLE`], or [`DRAIN_CAP`] passed.
    pub async fn drain(&self, target: u64) {
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

/// `n / secs`, 0 without time.
pub fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Milliseconds of `d`.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Calls of one round.
#[derive(Debug, Clone)]
pub struct Calls {
    /// Calls completed.
    pub calls: u64,
    /// Wall time of the round.
    pub seconds: f64,
    /// Latency of each call.
    pub hist: Hist,
}

impl Calls {
    /// Calls per second.
    pub fn per_s(&self) -> f64 {
        per_s(self.calls, self.seconds)
    }
}

/// Time to a ready RPC server in this process.
#[derive(Debug, Clone, Serialize)]
pub struct Ready {
    /// `Transport::connect` (TCP + SASL + open).
    pub connect_ms: f64,
    /// `RpcServer::start` until its links are attached.
    pub start_ms: f64,
    /// Both.
    pub total_ms: f64,
}

/// `echo` answers its arguments, `count` counts arrivals (casts and fanouts).
pub(super) fn echo_dispatcher(counter: Arc<Arrivals>) -> Dispatcher {
    Dispatcher::new().endpoint(
        Endpoint::new()
            .method("echo", |_ctx, args| async move { Ok(Value::Object(args)) })
            .method("count", move |_ctx, _args| {
                counter.hit();
                async move { Ok(Value::Null) }
            }),
    )
}

/// The Rust side: a server transport (RPC server, fanout servers, notification listener) and a
/// client transport, set up once and used by every round.
#[derive(Debug)]
pub struct RustRig {
    config: Config,
    server_t: Transport,
    client_t: Transport,
    server: RpcServer,
    fanout: Vec<RpcServer>,
    casts: Arc<Arrivals>,
    fanout_arrivals: Arc<Arrivals>,
    notes: Arc<Arrivals>,
    listener_stop: CancellationToken,
    listener: tokio::task::JoinHandle<()>,
    client: RpcClient,
    payload: Map,
}

impl RustRig {
    /// Connects and starts the servers (`fanout` of them on the fanout topic).
    pub async fn start(url: &str, payload: Map, fanout: usize) -> Result<RustRig, BenchError> {
        let config = Config::from_url(url).map_err(|e| BenchError::Usage(format!("--url: {e}")))?;
        let server_t = Transport::connect(config.clone())
            .await
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        let client_t = Transport::connect(config.clone())
            .await
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        let casts = Arrivals::new();
        let server = RpcServer::start(
            &server_t,
            Target::topic("bench").with_server("s1"),
            echo_dispatcher(casts.clone()),
        )
        .await
        .map_err(|e| BenchError::Driver(format!("RPC server did not start: {e}")))?;
        let fanout_arrivals = Arrivals::new();
        let mut fan = Vec::new();
        for i in 0..fanout {
            fan.push(
                RpcServer::start(
                    &server_t,
                    Target::topic("bench_fanout").with_server(format!("f{i}")),
                    echo_dispatcher(fanout_arrivals.clone()),
                )
                .await
                .map_err(|e| BenchError::Driver(format!("fanout server {i} did not start: {e}")))?,
            );
        }
        let mut listener = NotificationListener::start(
            &server_t,
            vec![Target::topic("bench_notifications")],
            vec![Priority::Info],
            None,
        )
        .await
        .map_err(|e| BenchError::Driver(format!("notification listener did not start: {e}")))?;
        let notes = Arrivals::new();
        let listener_stop = CancellationToken::new();
        let task = {
            let notes = notes.clone();
            let stop = listener_stop.clone();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        m = listener.recv() => match m {
                            Some(m) => {
                                m.ack().await;
                                notes.hit();
                            }
                            None => break,
                        },
                    }
                }
                listener.stop().await;
            })
        };
        let client = RpcClient::new(&client_t, Target::topic("bench")).timeout(CALL_TIMEOUT);
        let rig = RustRig {
            config,
            server_t,
            client_t,
            server,
            fanout: fan,
            casts,
            fanout_arrivals,
            notes,
            listener_stop,
            listener: task,
            client,
            payload,
        };
        // Warm-up: up to 200 calls or 2 s.
        let start = Instant::now();
        let mut n = 0;
        while n < 200 && start.elapsed() < Duration::from_secs(2) {
            rig.call().await?;
            n += 1;
        }
        Ok(rig)
    }

    async fn call(&self) -> Result<(), BenchError> {
        self.client
            .call(Map::new(), "echo", self.payload.clone())
            .await
            .map(|_| ())
            .map_err(|e| BenchError::Driver(format!("call: {e}")))
    }

    /// A fresh transport and RPC server on `topic`, timed to ready, then stopped.
    pub async fn ready_round(&self, topic: &str) -> Result<Ready, BenchError> {
        let t0 = Instant::now();
        let t = Transport::connect(self.config.clone())
            .await
            .map_err(|e| BenchError::Connect(e.to_string()))?;
        let connect = t0.elapsed();
        let s = RpcServer::start(
            &t,
            Target::topic(topic).with_server("ready"),
            echo_dispatcher(Arrivals::new()),
        )
        .await
        .map_err(|e| BenchError::Driver(format!("RPC server did not start: {e}")))?;
        let total = t0.elapsed();
        s.stop().await;
        t.close().await;
        Ok(Ready {
            connect_ms: ms(connect),
            start_ms: ms(total - connect),
            total_ms: ms(total),
        })
    }

    /// `callers` tasks calling on the client transport until the budget is spent.
    pub async fn calls(&self, budget: Budget, callers: u64) -> Result<Calls, BenchError> {
        let done = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..callers {
            let client = self.client.clone();
            let payload = self.payload.clone();
            let done = done.clone();
            tasks.spawn(async move {
                let mut hist = Hist::new();
                // Claim a call before making it so count mode makes exactly N calls in all.
                while budget.more(done.fetch_add(1, Ordering::SeqCst), start) {
                    let s = Instant::now();
                    client.call(Map::new(), "echo", payload.clone()).await?;
                    hist.record(s.elapsed());
                }
                Ok::<_, driver::CallError>(hist)
            });
        }
        let mut hist = Hist::new();
        let mut first_err = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(h)) => hist.merge(&h),
                Ok(Err(e)) => {
                    first_err.get_or_insert(format!("call: {e}"));
                }
                Err(e) => {
                    first_err.get_or_insert(format!("caller task failed: {e}"));
                }
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        if let Some(e) = first_err {
            return Err(BenchError::Driver(e));
        }
        Ok(Calls {
            calls: hist.len(),
            seconds,
            hist,
        })
    }

    /// Pre-settled casts (`fanout == false`, counted by the one server) or fanout casts (counted by
    /// every fanout server).
    pub async fn casts(&self, budget: Budget, fanout: bool) -> Result<Delivered, BenchError> {
        let (target, arrivals, k) = if fanout {
            (
                Target::topic("bench_fanout").with_fanout(true),
                &self.fanout_arrivals,
                self.fanout.len() as u64,
            )
        } else {
            (Target::topic("bench"), &self.casts, 1)
        };
        let caster = RpcClient::new(&self.client_t, target);
        let base = arrivals.count();
        let mut sent = 0u64;
        let start = Instant::now();
        while budget.more(sent, start) {
            caster
                .cast(Map::new(), "count", self.payload.clone())
                .await
                .map_err(|e| BenchError::Driver(format!("cast {sent}: {e}")))?;
            sent += 1;
        }
        let send_seconds = start.elapsed().as_secs_f64();
        arrivals.drain(base + sent * k).await;
        let received = arrivals.count() - base;
        Ok(Delivered::new(
            sent,
            received,
            sent * k,
            send_seconds,
            arrivals.seconds_since(start),
        ))
    }

    /// Notifications from `notifiers` concurrent tasks sharing one notifier, acknowledged and counted
    /// by the listener.
    pub async fn notify(&self, budget: Budget, notifiers: u64) -> Result<Delivered, BenchError> {
        let notifier = Notifier::new(&self.client_t, "bench").topics(["bench_notifications"]);
        let body = Value::Object(self.payload.clone());
        let base = self.notes.count();
        let claimed = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..notifiers {
            let notifier = notifier.clone();
            let body = body.clone();
            let claimed = claimed.clone();
            tasks.spawn(async move {
                let mut sent = 0u64;
                while budget.more(claimed.fetch_add(1, Ordering::SeqCst), start) {
                    notifier
                        .notify(Map::new(), "bench.event", Priority::Info, body.clone())
                        .await?;
                    sent += 1;
                }
                Ok::<_, driver::NotifyError>(sent)
            });
        }
        let mut sent = 0;
        let mut failure = None;
        while let Some(j) = tasks.join_next().await {
            match j {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) => {
                    failure.get_or_insert(format!("notification: {e}"));
                }
                Err(e) => {
                    failure.get_or_insert(format!("notifier task failed: {e}"));
                }
            }
        }
        let send_seconds = start.elapsed().as_secs_f64();
        if let Some(f) = failure {
            return Err(BenchError::Driver(f));
        }
        self.notes.drain(base + sent).await;
        let received = self.notes.count() - base;
        Ok(Delivered::new(
            sent,
            received,
            sent,
            send_seconds,
            self.notes.seconds_since(start),
        ))
    }

    /// Stops the servers and the listener and closes both transports.
    pub async fn stop(self) {
        self.listener_stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.listener).await;
        self.server.stop().await;
        for s in self.fanout {
            s.stop().await;
        }
        self.client_t.close().await;
        self.server_t.close().await;
    }
}

/// What a server process reported once ready.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReady {
    /// From spawning the process to its ready line.
    pub spawn_to_ready_ms: f64,
    /// Inside the process: transport + server start until the links are attached.
    pub ready_ms: f64,
    /// RSS at ready, KiB.
    pub rss_kib: Option<u64>,
    /// Peak RSS at ready, KiB.
    pub hwm_kib: Option<u64>,
    /// CPU seconds used up to ready.
    pub cpu_s: Option<f64>,
}

/// The `harness` executable, when this process is it (not a test binary).
pub fn harness_exe() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("HARNESS_BENCH_EXE") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    (exe.file_stem()? == "harness").then_some(exe)
}

/// Spawns `harness bench --internal-server URL` (one RPC server in its own process) and reads its
/// memory and CPU once it says it is ready; `None` when the harness executable is not known.
pub async fn server_process(url: &str, topic: &str) -> Result<Option<ProcessReady>, BenchError> {
    use tokio::io::AsyncBufReadExt;
    let Some(exe) = harness_exe() else {
        return Ok(None);
    };
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new(exe)
        .args(["bench", "--internal-server", url, "--internal-topic", topic])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| BenchError::Driver(format!("cannot start a server process: {e}")))?;
    let pid = child.id().map(|p| p.to_string());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Driver("server process without stdout".into()))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| BenchError::Driver("server process not ready within 30 s".into()))?
        .map_err(|e| BenchError::Driver(format!("server process: {e}")))?
        .ok_or_else(|| BenchError::Driver("server process exited before ready".into()))?;
    let spawn_to_ready = t0.elapsed();
    let v: Value = serde_json::from_str(&line)
        .map_err(|e| BenchError::Driver(format!("server process said {line:?}: {e}")))?;
    let pid = pid.unwrap_or_default();
    let mem = super::stats::Memory::of(&pid);
    let cpu_s = super::stats::cpu_seconds(&pid);
    drop(child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    Ok(Some(ProcessReady {
        spawn_to_ready_ms: ms(spawn_to_ready),
        ready_ms: v["ready_ms"].as_f64().unwrap_or(0.0),
        rss_kib: mem.rss_kib,
        hwm_kib: mem.hwm_kib,
        cpu_s,
    }))
}

/// The child side of [`server_process`]: starts one RPC server, prints `{"ready_ms": ..}` and serves
/// until stdin closes.
pub async fn serve_internal(url: &str, topic: &str) -> Result<(), BenchError> {
    let t0 = Instant::now();
    let config = Config::from_url(url).map_err(|e| BenchError::Usage(format!("--url: {e}")))?;
    let t = Transport::connect(config)
        .await
        .map_err(|e| BenchError::Connect(e.to_string()))?;
    let s = RpcServer::start(
        &t,
        Target::topic(topic).with_server("process"),
        echo_dispatcher(Arrivals::new()),
    )
    .await
    .map_err(|e| BenchError::Driver(format!("RPC server did not start: {e}")))?;
    outln!("{}", serde_json::json!({ "ready_ms": ms(t0.elapsed()) }));
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
    s.stop().await;
    t.close().await;
    Ok(())
}
