//! The raw reference: a bare fe2o3-amqp client (no oslo layer) through the same broker, for
//! request/reply round trips, a pre-settled link and an acknowledged link with a window.
//!
//! Its connection also reads the broker's `product` and `version` from the Open performative (fe2o3
//! keeps the remote Open private, so the first bytes the broker sends are kept and parsed).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::SenderSettleMode;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::performatives::Open;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Connection, Receiver, Sendable, Sender, Session};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::measure::{Budget, Delivered};
use super::stats::Hist;
use super::BenchError;

/// Bytes of the broker's first frames kept to find its Open.
const SNIFF_LIMIT: usize = 64 * 1024;

/// Window of unsettled messages on the acknowledged link.
pub const ACKED_WINDOW: usize = 100;

/// Keeps the first bytes read from the broker.
#[derive(Debug)]
struct Tee<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tee<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            if let Ok(mut seen) = this.seen.lock() {
                if seen.len() < SNIFF_LIMIT {
                    seen.extend_from_slice(&buf.filled()[before..]);
                }
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tee<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The first AMQP (non-SASL) frame with a body after the protocol headers: the peer's Open.
fn parse_open(buf: &[u8]) -> Option<Open> {
    let mut pos = 0usize;
    let mut amqp = false;
    loop {
        if buf.len() < pos + 8 {
            return None;
        }
        if &buf[pos..pos + 4] == b"AMQP" {
            amqp = buf[pos + 4] == 0;
            pos += 8;
            continue;
        }
        let size =
            u32::from_be_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        let doff = buf[pos + 4] as usize * 4;
        if size < 8 || doff < 8 || doff > size || buf.len() < pos + size {
            return None;
        }
        if amqp && size > doff {
            return serde_amqp::from_slice::<Open>(&buf[pos + doff..pos + size]).ok();
        }
        pos += size;
    }
}

fn property(open: &Open, key: &str) -> Option<String> {
    match open.properties.as_ref()?.get(&Symbol::from(key))? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// `product` and `version` of the broker's Open.
#[derive(Debug, Clone, Default)]
pub struct PeerProduct {
    /// `product`.
    pub product: Option<String>,
    /// `version`.
    pub version: Option<String>,
}

struct RawConn {
    conn: ConnectionHandle<()>,
    session: SessionHandle<()>,
}

async fn connect(config: &driver::Config, tag: &str) -> Result<(RawConn, PeerProduct), BenchError> {
    let host = config
        .transport_url
        .hosts
        .first()
        .ok_or_else(|| BenchError::Usage("--url has no host".into()))?;
    if config.transport_url.scheme.contains("ssl") || config.transport_url.scheme.contains("tls") {
        return Err(BenchError::Usage(
            "the raw reference speaks plain TCP only; use an amqp:// URL".into(),
        ));
    }
    let tcp = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect((host.host.as_str(), host.port)),
    )
    .await
    .map_err(|_| BenchError::Connect("raw fe2o3 connect timed out".into()))?
    .map_err(|e| BenchError::Connect(format!("raw fe2o3 connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stream = Tee {
        inner: tcp,
        seen: seen.clone(),
    };
    let hostname = config
        .transport_url
        .virtual_host
        .clone()
        .unwrap_or_else(|| host.host.clone());
    let builder = Connection::builder()
        .container_id(format!("bench-raw-{tag}-{}", uuid::Uuid::new_v4()))
        .hostname(hostname.as_str());
    let builder = match (&host.username, &host.password) {
        (Some(u), Some(p)) => builder.sasl_profile(SaslProfile::Plain {
            username: u.clone(),
            password: p.expose().to_string(),
        }),
        _ => builder.sasl_profile(SaslProfile::Anonymous),
    };
    let mut conn = builder
        .open_with_stream(stream)
        .await
        .map_err(|e| BenchError::Connect(format!("raw fe2o3 open: {e}")))?;
    let session = Session::begin(&mut conn)
        .await
        .map_err(|e| BenchError::Connect(format!("raw fe2o3 session: {e}")))?;
    let open = seen.lock().ok().and_then(|b| parse_open(&b));
    let product = PeerProduct {
        product: open.as_ref().and_then(|o| property(o, "product")),
        version: open.as_ref().and_then(|o| property(o, "version")),
    };
    Ok((RawConn { conn, session }, product))
}

async fn sender(s: &mut SessionHandle<()>, address: &str) -> Result<Sender, BenchError> {
    Sender::builder()
        .name(format!("bench-raw-sender-{}", uuid::Uuid::new_v4()))
        .target(address.to_string())
        .source(address.to_string())
        .sender_settle_mode(SenderSettleMode::Mixed)
        .attach(s)
        .await
        .map_err(|e| BenchError::Driver(format!("raw sender to {address}: {e}")))
}

async fn receiver(s: &mut SessionHandle<()>, address: &str) -> Result<Receiver, BenchError> {
    Receiver::builder()
        .name(format!("bench-raw-receiver-{}", uuid::Uuid::new_v4()))
        .source(address.to_string())
        .target(address.to_string())
        .credit_mode(fe2o3_amqp::link::receiver::CreditMode::Auto(200))
        .auto_accept(false)
        .attach(s)
        .await
        .map_err(|e| BenchError::Driver(format!("raw receiver on {address}: {e}")))
}

fn message(
    payload: &str,
    settled: bool,
) -> Sendable<fe2o3_amqp::types::messaging::AmqpValue<String>> {
    Sendable::builder()
        .message(Message::builder().value(payload.to_string()).build())
        .settled(settled)
        .build()
}

/// A raw echo server and client through the broker, plus counted links.
pub struct RawRig {
    client: RawConn,
    server: RawConn,
    req: Sender,
    rep: Receiver,
    echo: tokio::task::JoinHandle<()>,
    stop: CancellationToken,
    addresses: [String; 3],
    payload: String,
    config: driver::Config,
    /// What the broker said it is.
    pub product: PeerProduct,
}

/// How long an acked stream waits for the broker's outcome of one delivery.
const OUTCOME_WAIT: Duration = Duration::from_secs(10);
/// How long closing a link, a session or a connection may take.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl std::fmt::Debug for RawRig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawRig")
            .field("addresses", &self.addresses)
            .finish()
    }
}

/// Addresses the raw client uses: the driver's anycast form for this broker, so that each flavour
/// routes them as it routes the driver's own.
fn addresses(config: &driver::Config, product: &PeerProduct) -> [String; 3] {
    let kind = driver::address::resolve_kind(
        config.amqp.addressing_mode,
        product.product.as_deref(),
        product.version.as_deref(),
    );
    let a = driver::address::Addresser::new(
        kind,
        &config.amqp,
        &config.control_exchange,
        config.transport_url.virtual_host.as_deref(),
    );
    let t = |s: &str| a.anycast(&driver::Target::topic("bench_raw").with_server(s));
    [t("request"), t("reply"), t("stream")]
}

impl RawRig {
    /// Connects the client and the echo server; `payload_bytes` per message.
    pub async fn start(
        config: &driver::Config,
        payload_bytes: usize,
    ) -> Result<RawRig, BenchError> {
        let (mut server, product) = connect(config, "server").await?;
        let (mut client, _) = connect(config, "client").await?;
        let addresses = addresses(config, &product);
        let mut in_req = receiver(&mut server.session, &addresses[0]).await?;
        let mut out_rep = sender(&mut server.session, &addresses[1]).await?;
        let rep = receiver(&mut client.session, &addresses[1]).await?;
        let req = sender(&mut client.session, &addresses[0]).await?;
        let stop = CancellationToken::new();
        let echo = {
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let d = tokio::select! {
                        _ = stop.cancelled() => break,
                        d = in_req.recv::<Body<serde_amqp::Value>>() => d,
                    };
                    let Ok(d) = d else { break };
                    let _ = in_req.accept(&d).await;
                    let body = match d.into_message().body {
                        Body::Value(v) => match v.0 {
                            serde_amqp::Value::String(s) => s,
                            _ => String::new(),
                        },
                        _ => String::new(),
                    };
                    if out_rep.send_batchable(message(&body, true)).await.is_err() {
                        break;
                    }
                }
                let _ = in_req.close().await;
                let _ = out_rep.close().await;
            })
        };
        Ok(RawRig {
            client,
            server,
            req,
            rep,
            echo,
            stop,
            addresses,
            payload: "x".repeat(payload_bytes),
            config: config.clone(),
            product,
        })
    }

    /// Sequential request/reply round trips: request unsettled, reply pre-settled (as oslo's calls).
    pub async fn request_reply(&mut self, budget: Budget) -> Result<(u64, f64, Hist), BenchError> {
        let mut hist = Hist::new();
        // Warm-up.
        for _ in 0..20 {
            self.round_trip().await?;
        }
        let start = Instant::now();
        let mut n = 0u64;
        while budget.more(n, start) {
            let s = Instant::now();
            self.round_trip().await?;
            hist.record(s.elapsed());
            n += 1;
        }
        Ok((n, start.elapsed().as_secs_f64(), hist))
    }

    async fn round_trip(&mut self) -> Result<(), BenchError> {
        let outcome = self
            .req
            .send_batchable(message(&self.payload, false))
            .await
            .map_err(|e| BenchError::Driver(format!("raw request: {e}")))?;
        let d = tokio::time::timeout(
            Duration::from_secs(30),
            self.rep.recv::<Body<serde_amqp::Value>>(),
        )
        .await
        .map_err(|_| BenchError::Driver("raw reply did not come within 30 s".into()))?
        .map_err(|e| BenchError::Driver(format!("raw reply: {e}")))?;
        let _ = self.rep.accept(&d).await;
        let _ = outcome.await;
        Ok(())
    }

    /// A one-way stream on a fresh pair of links, counted at the receiver. `settled`: pre-settled,
    /// else unsettled with at most [`ACKED_WINDOW`] in flight, the receiver accepting each.
    /// The sender and receiver run side by side in this one function so the round's timing covers
    /// exactly the first send to the last arrival.
    pub async fn stream(&mut self, budget: Budget, settled: bool) -> Result<Delivered, BenchError> {
        // Fresh connections and a fresh address (the server name is the address's last part in
        // every addressing mode) per round: each round starts from the same state.
        let address = format!(
            "{}-{}",
            self.addresses[2],
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let (mut rx_conn, _) = connect(&self.config, "stream-rx").await?;
        let (mut tx_conn, _) = connect(&self.config, "stream-tx").await?;
        let mut rx = receiver(&mut rx_conn.session, &address).await?;
        let mut tx = sender(&mut tx_conn.session, &address).await?;
        let arrivals = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let last = Arc::new(Mutex::new(Instant::now()));
        let stop = CancellationToken::new();
        let counter = {
            let arrivals = arrivals.clone();
            let last = last.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    let d = tokio::select! {
                        _ = stop.cancelled() => break,
                        d = rx.recv::<Body<serde_amqp::Value>>() => d,
                    };
                    let Ok(d) = d else { break };
                    if !settled {
                        let _ = rx.accept(&d).await;
                    }
                    if let Ok(mut l) = last.lock() {
                        *l = Instant::now();
                    }
                    arrivals.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                let _ = rx.close().await;
            })
        };
        let start = Instant::now();
        let mut sent = 0u64;
        let mut window = VecDeque::new();
        let mut failure = None;
        while budget.more(sent, start) {
            match tx.send_batchable(message(&self.payload, settled)).await {
                Ok(fut) => {
                    if !settled {
                        window.push_back(fut);
                        if window.len() >= ACKED_WINDOW {
                            if let Some(f) = window.pop_front() {
                                if tokio::time::timeout(OUTCOME_WAIT, f).await.is_err() {
                                    failure = Some(format!(
                                        "raw acked stream: no outcome from the broker within {} s \
                                         (after {sent} sent)",
                                        OUTCOME_WAIT.as_secs()
                                    ));
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    failure = Some(format!("raw send: {e}"));
                    break;
                }
            }
            sent += 1;
        }
        if failure.is_none() {
            let outcomes = futures::future::join_all(window);
            if tokio::time::timeout(OUTCOME_WAIT, outcomes).await.is_err() {
                failure = Some(format!(
                    "raw acked stream: outcomes missing {} s after the last send",
                    OUTCOME_WAIT.as_secs()
                ));
            }
        }
        let send_seconds = start.elapsed().as_secs_f64();
        let drain_cap = Instant::now() + Duration::from_secs(10);
        let mut seen = arrivals.load(std::sync::atomic::Ordering::SeqCst);
        let mut idle = Instant::now();
        while seen < sent && Instant::now() < drain_cap && idle.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = arrivals.load(std::sync::atomic::Ordering::SeqCst);
            if now != seen {
                seen = now;
                idle = Instant::now();
            }
        }
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), counter).await;
        let _ = tokio::time::timeout(CLOSE_WAIT, tx.close()).await;
        for mut c in [rx_conn, tx_conn] {
            let _ = tokio::time::timeout(CLOSE_WAIT, c.session.end()).await;
            let _ = tokio::time::timeout(CLOSE_WAIT, c.conn.close()).await;
        }
        if let Some(f) = failure {
            return Err(BenchError::Driver(f));
        }
        let received = arrivals.load(std::sync::atomic::Ordering::SeqCst);
        let end = last.lock().map(|l| *l).unwrap_or_else(|_| Instant::now());
        let seconds = end.saturating_duration_since(start).as_secs_f64();
        Ok(Delivered::new(sent, received, sent, send_seconds, seconds))
    }

    /// Detaches and closes both connections.
    pub async fn stop(mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.echo).await;
        let _ = self.req.close().await;
        let _ = self.rep.close().await;
        let _ = self.client.session.end().await;
        let _ = self.server.session.end().await;
        let _ = self.client.conn.close().await;
        let _ = self.server.conn.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_open_after_sasl() {
        // SASL header, then AMQP header, then an open frame with properties.
        let mut props = fe2o3_amqp::types::definitions::Fields::new();
        props.insert(Symbol::from("product"), Value::String("qpid-cpp".into()));
        props.insert(Symbol::from("version"), Value::String("1.40.0".into()));
        let open = Open {
            container_id: "b".into(),
            hostname: None,
            max_frame_size: Default::default(),
            channel_max: Default::default(),
            idle_time_out: None,
            outgoing_locales: None,
            incoming_locales: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: Some(props),
        };
        let body = serde_amqp::to_vec(&open).expect("encode");
        let mut buf = b"AMQP\x00\x01\x00\x00".to_vec();
        buf.extend_from_slice(&((body.len() + 8) as u32).to_be_bytes());
        buf.extend_from_slice(&[2, 0, 0, 0]);
        buf.extend_from_slice(&body);
        let o = parse_open(&buf).expect("open");
        assert_eq!(property(&o, "product").as_deref(), Some("qpid-cpp"));
        assert_eq!(property(&o, "version").as_deref(), Some("1.40.0"));
        assert!(parse_open(&buf[..buf.len() - 1]).is_none());
    }
}
