//! Fleet scale: N RPC servers (a simulated compute fleet) over T topics, on one transport and on one
//! transport per server: time to bring the fleet up, memory per server, the broker's link count, call
//! latency to a random server and the time one fanout takes to reach every server of a topic.

use std::time::{Duration, Instant};

use driver::{Config, Map, RpcClient, RpcServer, Target, Transport};
use futures::future::join_all;
use serde::Serialize;

use super::measure::{ms, Arrivals, CALL_TIMEOUT};
use super::progress::Progress;
use super::report::text_table;
use super::stats::{median_range, Hist, Memory};
use super::BenchError;

/// Calls to random servers per fleet point.
const CALLS: usize = 200;
/// Fanouts per fleet point (the median is reported).
const FANOUTS: usize = 5;

/// One fleet size measured one way.
#[derive(Debug, Clone, Serialize)]
pub struct FleetPoint {
    /// RPC servers.
    pub servers: u64,
    /// Topics they are spread over (server i on topic i mod T).
    pub topics: u64,
    /// `one` transport for all servers, or `each` server on its own.
    pub transports: &'static str,
    /// From the first start (and connect, for `each`) to every server's links attached.
    pub ready_ms: f64,
    /// Process RSS growth while the fleet came up, per server, KiB (includes the embedded broker's
    /// share when the broker runs in this process).
    pub rss_per_server_kib: Option<f64>,
    /// Process RSS before and after, KiB.
    pub rss_before_kib: Option<u64>,
    /// See `rss_before_kib`.
    pub rss_after_kib: Option<u64>,
    /// Links attached at the broker with the fleet up (embedded broker only).
    pub broker_links: Option<u64>,
    /// Calls made to random servers.
    pub calls: u64,
    /// Their latency, median (the first call to a server attaches its sender link).
    pub call_p50_ms: f64,
    /// Their latency, 99th percentile.
    pub call_p99_ms: f64,
    /// Median time from a fanout cast to its arrival at every server of topic 0.
    pub fanout_ms: f64,
    /// Servers a fanout reaches (those on topic 0).
    pub fanout_servers: u64,
    /// Whether every fanout reached every one of them.
    pub fanout_all_arrived: bool,
}

/// Measures every size in `sizes` on one transport, and on one transport per server up to
/// `max_transports`; `links` reads the broker's link count.
pub async fn run(
    config: &Config,
    sizes: &[u64],
    topics: u64,
    max_transports: u64,
    links: impl Fn() -> Option<u64>,
    progress: &Progress,
) -> Result<Vec<FleetPoint>, BenchError> {
    let mut out = Vec::new();
    for &n in sizes {
        for each in [false, true] {
            if each && n > max_transports {
                continue;
            }
            let p = point(config, n, topics, each, &links).await?;
            progress.note(&format!(
                "fleet {} servers on {} transport(s): ready {:.0} ms, {} KiB/server, call p50 {:.3} ms, fanout {:.1} ms",
                n,
                if each { n } else { 1 },
                p.ready_ms,
                p.rss_per_server_kib
                    .map(|k| format!("{k:.1}"))
                    .unwrap_or("-".into()),
                p.call_p50_ms,
                p.fanout_ms
            ));
            out.push(p);
        }
    }
    Ok(out)
}

fn connect_err(e: driver::ConnectError) -> BenchError {
    BenchError::Connect(e.to_string())
}

/// One fleet size: bring `n` servers up (on one shared transport, or one each), count links and
/// memory, call random servers, fan out to all, stop: one measurement, kept in its order.
async fn point(
    config: &Config,
    n: u64,
    topics: u64,
    each: bool,
    links: &impl Fn() -> Option<u64>,
) -> Result<FleetPoint, BenchError> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let run = &run[..8];
    let topic = |i: u64| format!("fleet_{run}_{}", i % topics);
    let client_t = Transport::connect(config.clone())
        .await
        .map_err(connect_err)?;
    let shared = if each {
        None
    } else {
        Some(
            Transport::connect(config.clone())
                .await
                .map_err(connect_err)?,
        )
    };
    let arrivals = Arrivals::new();
    let before = Memory::now();
    let t0 = Instant::now();
    let started = join_all((0..n).map(|i| {
        let shared = shared.clone();
        let config = config.clone();
        let target = Target::topic(topic(i)).with_server(format!("s{i}"));
        let d = super::measure::echo_dispatcher(arrivals.clone());
        async move {
            let (t, own) = match shared {
                Some(t) => (t, false),
                None => (Transport::connect(config).await.map_err(connect_err)?, true),
            };
            let s = RpcServer::start(&t, target, d)
                .await
                .map_err(|e| BenchError::Driver(format!("fleet server s{i}: {e}")))?;
            Ok::<_, BenchError>((s, own.then_some(t)))
        }
    }))
    .await;
    let ready = t0.elapsed();
    let after = Memory::now();
    let mut servers = Vec::new();
    let mut transports = Vec::new();
    let mut failure = None;
    for s in started {
        match s {
            Ok((s, t)) => {
                servers.push(s);
                transports.extend(t);
            }
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let broker_links = links();
    let result = async {
        if let Some(e) = failure {
            return Err(e);
        }
        // Calls to random servers.
        let mut hist = Hist::new();
        let payload = Map::new();
        let mut rng = u64::from(uuid::Uuid::new_v4().as_fields().0) | 1;
        for _ in 0..CALLS {
            // xorshift: enough to pick servers at random.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let i = rng % n;
            let c = RpcClient::new(
                &client_t,
                Target::topic(topic(i)).with_server(format!("s{i}")),
            )
            .timeout(CALL_TIMEOUT);
            let s = Instant::now();
            c.call(Map::new(), "echo", payload.clone())
                .await
                .map_err(|e| BenchError::Driver(format!("fleet call to s{i}: {e}")))?;
            hist.record(s.elapsed());
        }
        // Fanouts to every server of topic 0.
        let fan = RpcClient::new(&client_t, Target::topic(topic(0)).with_fanout(true));
        let mut times = Vec::new();
        let mut all = true;
        let expected_per = (0..n).filter(|i| i % topics == 0).count() as u64;
        for _ in 0..FANOUTS {
            let base = arrivals.count();
            let s = Instant::now();
            fan.cast(Map::new(), "count", Map::new())
                .await
                .map_err(|e| BenchError::Driver(format!("fleet fanout: {e}")))?;
            let cap = Instant::now() + Duration::from_secs(10);
            while arrivals.count() < base + expected_per && Instant::now() < cap {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
            all &= arrivals.count() >= base + expected_per;
            times.push(arrivals.seconds_since(s) * 1000.0);
        }
        let l = hist.latency();
        Ok(FleetPoint {
            servers: n,
            topics,
            transports: if each { "each" } else { "one" },
            ready_ms: ms(ready),
            rss_per_server_kib: match (before.rss_kib, after.rss_kib) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n as f64),
                _ => None,
            },
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
            broker_links,
            calls: hist.len(),
            call_p50_ms: l.as_ref().map(|l| l.p50_ms).unwrap_or(0.0),
            call_p99_ms: l.as_ref().map(|l| l.p99_ms).unwrap_or(0.0),
            fanout_ms: median_range(&times).map(|m| m.0).unwrap_or(0.0),
            fanout_servers: expected_per,
            fanout_all_arrived: all,
        })
    }
    .await;
    join_all(servers.into_iter().map(|s| s.stop())).await;
    join_all(transports.iter().map(|t| t.close())).await;
    if let Some(t) = shared {
        t.close().await;
    }
    client_t.close().await;
    result
}

/// The fleet table as printed.
pub fn table(points: &[FleetPoint]) -> String {
    let body: Vec<Vec<String>> = points
        .iter()
        .map(|p| {
            vec![
                p.servers.to_string(),
                p.topics.to_string(),
                if p.transports == "one" {
                    "1".into()
                } else {
                    p.servers.to_string()
                },
                format!("{:.1} ms", p.ready_ms),
                p.rss_per_server_kib
                    .map(|k| format!("{k:.1} KiB"))
                    .unwrap_or("-".into()),
                p.broker_links.map(|l| l.to_string()).unwrap_or("-".into()),
                format!("{:.3} ms", p.call_p50_ms),
                format!("{:.3} ms", p.call_p99_ms),
                format!(
                    "{:.1} ms{}",
                    p.fanout_ms,
                    if p.fanout_all_arrived { "" } else { " (lost)" }
                ),
            ]
        })
        .collect();
    let mut s = text_table(
        &[
            "servers",
            "topics",
            "transports",
            "fleet ready",
            "RSS/server",
            "broker links",
            "call p50",
            "call p99",
            "fanout to all",
        ],
        &body,
    );
    s.push_str(
        "\nRSS/server: growth of this process's RSS while the fleet came up, divided by the servers \
         (with the embedded broker it includes the broker's share); call latency to a random server \
         (its first call attaches the sender link); fanout: one cast until every server of topic 0 counted it.\n",
    );
    s
}
