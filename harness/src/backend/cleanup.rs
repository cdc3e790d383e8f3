//! Cleanup on every exit path: what is running, and who stops it when the harness is interrupted.
//!
//! - Broker processes (process backend): each runs in its own process group; the groups and the nodes'
//!   private directories are registered here while they live. [`kill_all`] SIGKILLs them.
//! - Containers (container backend): the ids of this process's containers are registered here while they
//!   live; [`remove_live_containers`] removes them. Every container also carries the labels `amqp1-rig=1`
//!   and `amqp1-rig.owner-pid=<pid>`, so one left behind by a `kill -9` is reaped on the next start
//!   ([`super::container::reap_orphans`]).
//!
//! Normal ends ([`super::BrokerNode::stop`]), errors and panics go through each node's `Drop`;
//! Ctrl-C and SIGTERM go through [`spawn_interrupt_guard`], which does both cleanups and exits with 130.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Process groups of every broker (and private epmd) currently running, for [`kill_all`].
static LIVE_GROUPS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Private directories of live nodes, removed by [`kill_all`] (an interrupted run exits without `Drop`).
static LIVE_DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub(crate) fn register_dir(dir: &Path) {
    if let Ok(mut d) = LIVE_DIRS.lock() {
        d.push(dir.to_path_buf());
    }
}

pub(crate) fn unregister_dir(dir: &Path) {
    if let Ok(mut d) = LIVE_DIRS.lock() {
        d.retain(|p| p != dir);
    }
}

pub(crate) fn register_group(pgid: i32) {
    if let Ok(mut g) = LIVE_GROUPS.lock() {
        g.push(pgid);
    }
}

pub(crate) fn unregister_group(pgid: i32) {
    if let Ok(mut g) = LIVE_GROUPS.lock() {
        g.retain(|p| *p != pgid);
    }
}

/// Sends `sig` to every process of group `pgid`. Returns whether the signal was delivered.
#[allow(unsafe_code)]
pub(crate) fn signal_group(pgid: i32, sig: i32) -> bool {
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) takes two integers and has no memory-safety preconditions. A negative pid addresses
    // the process group created for this broker (`process_group(0)` makes the child its leader).
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// SIGKILLs every broker process group this process started and has not reaped yet.
///
/// Synchronous (it waits 200 ms for the killed brokers to let go of their files, then removes their
/// private directories unless `HARNESS_KEEP_BROKER_DIRS` is set) and meant for a Ctrl-C handler task
/// that exits the process right after. Returns the number of process groups signalled.
pub fn kill_all() -> usize {
    let groups: Vec<i32> = match LIVE_GROUPS.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let killed = groups
        .iter()
        .filter(|pgid| {
            signal_group(**pgid, libc::SIGCONT);
            signal_group(**pgid, libc::SIGKILL)
        })
        .count();
    let dirs: Vec<PathBuf> = match LIVE_DIRS.lock() {
        Ok(mut d) => std::mem::take(&mut *d),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    if !dirs.is_empty() && std::env::var_os("HARNESS_KEEP_BROKER_DIRS").is_none() {
        // Let the killed brokers close their files, then remove their directories (best effort).
        std::thread::sleep(Duration::from_millis(200));
        for d in dirs {
            let _ = fs::remove_dir_all(d);
        }
    }
    killed
}

/// Number of broker process groups currently alive (started and not reaped).
pub fn live_count() -> usize {
    LIVE_GROUPS.lock().map(|g| g.len()).unwrap_or(0)
}

/// Containers started by this process and not removed yet.
static LIVE_CONTAINERS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub(crate) fn register_container(id: &str) {
    LIVE_CONTAINERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id.to_string());
}

pub(crate) fn unregister_container(id: &str) {
    LIVE_CONTAINERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(id);
}

/// Ids of the containers this process started and has not removed yet.
pub fn live_containers() -> Vec<String> {
    LIVE_CONTAINERS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect()
}

/// Removes every container this process started and has not removed yet (blocking: it runs the
/// removals on a thread of its own, so it works inside and outside a tokio runtime).
///
/// Returns how many containers were removed.
pub fn remove_live_containers() -> usize {
    let ids: Vec<String> =
        std::mem::take(&mut *LIVE_CONTAINERS.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .collect();
    if ids.is_empty() {
        return 0;
    }
    super::container::docker::remove_blocking(&ids)
}

/// Spawns a task that, on SIGINT (Ctrl-C) or SIGTERM, removes every container of this process
/// ([`remove_live_containers`]), kills every broker process group ([`kill_all`]) and exits with status
/// 130. Call it once, inside the tokio runtime.
pub fn spawn_interrupt_guard() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
        }
        let procs = kill_all();
        let containers = tokio::task::spawn_blocking(remove_live_containers)
            .await
            .unwrap_or(0);
        eprintln!(
            "interrupted: removed {containers} container(s), killed {procs} broker process group(s)"
        );
        std::process::exit(130);
    })
}
