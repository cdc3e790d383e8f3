//! The Python side of `--compare python`: the same workloads through oslo.messaging 14.9.3's amqp
//! driver, in two peer processes (servers and listener in one, the loops in the other) driven over
//! their stdin/stdout; nothing of the control traffic travels on the broker under test.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::measure::{
    ms, Budget, Calls, Delivered, ProcessReady, COUNT_PHASE_CAP, DRAIN_CAP, DRAIN_IDLE,
};
use super::stats::{cpu_seconds, Hist, Memory};
use super::BenchError;
use crate::peer::{PeerOptions, PythonPeer};

fn peer_err(what: &str) -> impl Fn(crate::peer::PeerError) -> BenchError + '_ {
    move |e| BenchError::Driver(format!("python peer, {what}: {e}"))
}

async fn spawn() -> Result<PythonPeer, BenchError> {
    let options = PeerOptions {
        request_timeout: COUNT_PHASE_CAP + Duration::from_secs(60),
        ..PeerOptions::default()
    };
    PythonPeer::spawn(options)
        .await
        .map_err(|e| BenchError::Python(e.to_string()))
}

/// The result of one `bench_loop`.
#[derive(Debug, Clone)]
struct LoopOut {
    n: u64,
    start: f64,
    seconds: f64,
    hist: Hist,
}

/// The Python rig: a server peer and a client peer.
#[derive(Debug)]
pub struct PyRig {
    server: PythonPeer,
    client: PythonPeer,
    url: String,
    payload_bytes: usize,
    fanout: Vec<String>,
    /// The peer's package versions.
    pub versions: Value,
}

impl PyRig {
    /// Starts both peers and the servers and listener.
    pub async fn start(
        url: &str,
        payload_bytes: usize,
        fanout: usize,
    ) -> Result<PyRig, BenchError> {
        let server = spawn().await?;
        let client = spawn().await?;
        let versions = Value::Object(server.versions().clone());
        server
            .request_ok(
                "bench_server",
                json!({"service": "echo", "url": url, "topic": "bench_py", "server": "s1"}),
            )
            .await
            .map_err(peer_err("RPC server"))?;
        let mut names = Vec::new();
        for i in 0..fanout {
            let name = format!("f{i}");
            server
                .request_ok(
                    "bench_server",
                    json!({"service": name, "url": url, "topic": "bench_py_fanout", "server": name}),
                )
                .await
                .map_err(peer_err("fanout server"))?;
            names.push(name);
        }
        server
            .request_ok(
                "bench_listener",
                json!({"service": "listener", "url": url, "topic": "bench_py_notifications"}),
            )
            .await
            .map_err(peer_err("notification listener"))?;
        let rig = PyRig {
            server,
            client,
            url: url.to_string(),
            payload_bytes,
            fanout: names,
            versions,
        };
        // Warm-up, as for the Rust driver: up to 200 calls or 2 s.
        rig.run_loop(
            "call",
            "bench_py",
            Some("s1"),
            Budget {
                duration: Duration::from_secs(2),
                count: Some(200),
            },
            1,
        )
        .await?;
        Ok(rig)
    }

    async fn run_loop(
        &self,
        kind: &str,
        topic: &str,
        server: Option<&str>,
        budget: Budget,
        workers: u64,
    ) -> Result<LoopOut, BenchError> {
        let mut req = json!({
            "url": self.url, "kind": kind, "topic": topic, "workers": workers,
            "payload_bytes": self.payload_bytes, "duration": budget.duration.as_secs_f64(),
        });
        if let Some(s) = server {
            req["server"] = json!(s);
        }
        if let Some(n) = budget.count {
            req["count"] = json!(n);
        }
        let out = self
            .client
            .request_ok("bench_loop", req)
            .await
            .map_err(peer_err(kind))?;
        let errors = out.get("errors").and_then(Value::as_u64).unwrap_or(0);
        if errors > 0 {
            return Err(BenchError::Driver(format!(
                "python {kind} loop: {errors} operation(s) failed, first: {}",
                out.get("error").cloned().unwrap_or(Value::Null)
            )));
        }
        let mut hist = Hist::new();
        if let Some(l) = out.get("latencies_us").and_then(Value::as_array) {
            for v in l {
                if let Some(us) = v.as_u64() {
                    hist.record_us(us);
                }
            }
        }
        Ok(LoopOut {
            n: out.get("n").and_then(Value::as_u64).unwrap_or(0),
            start: out.get("start").and_then(Value::as_f64).unwrap_or(0.0),
            seconds: out.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
            hist,
        })
    }

    /// Calls from `callers` threads sharing one RPC client.
    pub async fn calls(&self, budget: Budget, callers: u64) -> Result<Calls, BenchError> {
        let out = self
            .run_loop("call", "bench_py", Some("s1"), budget, callers)
            .await?;
        Ok(Calls {
            calls: out.n,
            seconds: out.seconds,
            hist: out.hist,
        })
    }

    async fn counts(&self, services: &[String]) -> Result<(u64, f64), BenchError> {
        let out = self
            .server
            .request_ok("bench_counts", json!({ "services": services }))
            .await
            .map_err(peer_err("counts"))?;
        Ok((
            out.get("count").and_then(Value::as_u64).unwrap_or(0),
            out.get("last").and_then(Value::as_f64).unwrap_or(0.0),
        ))
    }

    /// Waits (bounded) until `target` arrived at `services`; returns (count, last arrival).
    async fn drain(&self, services: &[String], target: u64) -> Result<(u64, f64), BenchError> {
        let cap = Instant::now() + DRAIN_CAP;
        let mut seen = self.counts(services).await?;
        let mut idle = Instant::now();
        while seen.0 < target && Instant::now() < cap && idle.elapsed() < DRAIN_IDLE {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.counts(services).await?;
            if now.0 != seen.0 {
                idle = Instant::now();
            }
            seen = now;
        }
        Ok(seen)
    }

    async fn one_way(
        &self,
        kind: &str,
        topic: &str,
        services: Vec<String>,
        budget: Budget,
        workers: u64,
    ) -> Result<Delivered, BenchError> {
        let k = services.len() as u64;
        let (base, _) = self.counts(&services).await?;
        let out = self.run_loop(kind, topic, None, budget, workers).await?;
        let (count, last) = self.drain(&services, base + out.n * k).await?;
        let received = count - base;
        Ok(Delivered::new(
            out.n,
            received,
            out.n * k,
            out.seconds,
            (last - out.start).max(0.0),
        ))
    }

    /// Casts to the one server, counted there.
    pub async fn casts(&self, budget: Budget) -> Result<Delivered, BenchError> {
        self.one_way("cast", "bench_py", vec!["echo".into()], budget, 1)
            .await
    }

    /// Fanout casts, counted at every fanout server.
    pub async fn fanout(&self, budget: Budget) -> Result<Delivered, BenchError> {
        self.one_way("fanout", "bench_py_fanout", self.fanout.clone(), budget, 1)
            .await
    }

    /// Notifications from `notifiers` threads sharing one notifier, acknowledged by the listener.
    pub async fn notify(&self, budget: Budget, notifiers: u64) -> Result<Delivered, BenchError> {
        self.one_way(
            "notify",
            "bench_py_notifications",
            vec!["listener".into()],
            budget,
            notifiers,
        )
        .await
    }

    /// A fresh peer process with one RPC server: spawn to ready, memory and CPU at ready.
    pub async fn ready_round(&self, topic: &str) -> Result<ProcessReady, BenchError> {
        let t0 = Instant::now();
        let peer = spawn().await?;
        let out = peer
            .request_ok(
                "bench_server",
                json!({"service": "ready", "url": self.url, "topic": topic, "server": "ready"}),
            )
            .await
            .map_err(peer_err("server ready"));
        let spawn_to_ready = t0.elapsed();
        let pid = peer.pid().map(|p| p.to_string()).unwrap_or_default();
        let mem = Memory::of(&pid);
        let cpu_s = cpu_seconds(&pid);
        let _ = peer.stop().await;
        let out = out?;
        Ok(ProcessReady {
            spawn_to_ready_ms: ms(spawn_to_ready),
            ready_ms: out.get("ready_ms").and_then(Value::as_f64).unwrap_or(0.0),
            rss_kib: mem.rss_kib,
            hwm_kib: mem.hwm_kib,
            cpu_s,
        })
    }

    /// (pid, memory, CPU) of the server and the client peer.
    pub fn processes(&self) -> Vec<(&'static str, Option<u32>)> {
        vec![
            ("python server peer (servers, listener)", self.server.pid()),
            ("python client peer (loops)", self.client.pid()),
        ]
    }

    /// Stops both peers.
    pub async fn stop(self) {
        let _ = self.client.stop().await;
        let _ = self.server.stop().await;
    }
}
