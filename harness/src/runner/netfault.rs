//! Network faults between the clients and a broker node, on loopback only:
//!
//! - partition and packet loss drop real packets to and from the node's port with nftables rules in a
//!   table of this process (`inet amqp1rig_<pid>`), so the kernel's TCP sees them as it would on a
//!   network (retransmissions, then heartbeat timeouts); it needs `nft` (Debian's `nftables`) and
//!   CAP_NET_ADMIN;
//! - latency goes through a proxy the run puts in front of each node when a scenario asks for it
//!   (nftables cannot delay packets, and this kernel has no `netem` queueing discipline).

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::scenario::NetFaultKind;

/// Whether this process made a table (so that only then is it removed).
/// Faults installed and not yet healed, in this process.
static LIVE_CHAINS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static MADE_TABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn table() -> String {
    format!("amqp1rig_{}", std::process::id())
}

async fn nft(script: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run nft (Debian package nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .map_err(|_| "nft did not answer within 10 s".to_string())?
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the rules (network faults need CAP_NET_ADMIN): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drops packets to and from `port` as `kind` says, until [`Dropping::heal`] (or drop).
#[derive(Debug)]
pub struct Dropping {
    chain: String,
    healed: bool,
}

impl Dropping {
    /// Installs the rules.
    pub async fn start(port: u16, kind: NetFaultKind) -> Result<Dropping, String> {
        let verdict = match kind {
            NetFaultKind::Partition => "drop".to_string(),
            NetFaultKind::Loss(pct) => format!("numgen random mod 100 < {pct} drop"),
            NetFaultKind::Latency(_) => return Err("latency is not a packet rule".into()),
        };
        let (t, chain) = (table(), format!("fault_{port}"));
        nft(&format!(
            "add table inet {t}\n\
             add chain inet {t} {chain} {{ type filter hook input priority -10 ; }}\n\
             add rule inet {t} {chain} tcp dport {port} {verdict}\n\
             add rule inet {t} {chain} tcp sport {port} {verdict}\n"
        ))
        .await?;
        MADE_TABLE.store(true, Ordering::SeqCst);
        LIVE_CHAINS.fetch_add(1, Ordering::SeqCst);
        Ok(Dropping {
            chain,
            healed: false,
        })
    }

    /// Removes the rules.
    pub async fn heal(mut self) -> Result<(), String> {
        self.healed = true;
        LIVE_CHAINS.fetch_sub(1, Ordering::SeqCst);
        nft(&format!("delete chain inet {} {}\n", table(), self.chain)).await
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        if !self.healed {
            LIVE_CHAINS.fetch_sub(1, Ordering::SeqCst);
            // Blocking, once: a rule left behind would keep dropping this port's packets.
            let _ = std::process::Command::new("nft")
                .args(["delete", "chain", "inet", &table(), &self.chain])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Removes this process's nftables table (every rule it made), if there is one and no other run of
/// this process (scenarios run side by side in tests and matrices) has a fault in it now.
pub fn remove_table() {
    if LIVE_CHAINS.load(Ordering::SeqCst) > 0 || !MADE_TABLE.swap(false, Ordering::SeqCst) {
        return;
    }
    let _ = std::process::Command::new("nft")
        .args(["delete", "table", "inet", &table()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A TCP proxy on 127.0.0.1 in front of one node, delaying each chunk by a settable latency.
#[derive(Debug)]
pub struct LatencyProxy {
    /// The proxy's port (clients connect here).
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

/// Copies `from` to `to`, delivering each chunk `delay` after it was read (a latency, not a rate
/// limit: chunks read meanwhile wait their own time, not each other's).
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Arc<AtomicU64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due =
                tokio::time::Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

impl LatencyProxy {
    /// Starts a proxy to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> std::io::Result<LatencyProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let delay = delay_ms.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let delay = delay.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, delay.clone()), pipe(sr, cw, delay));
                });
            }
        });
        Ok(LatencyProxy {
            port,
            delay_ms,
            task,
        })
    }

    /// Sets the delay each chunk gets, each way.
    pub fn set_latency(&self, d: Duration) {
        self.delay_ms.store(
            d.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
