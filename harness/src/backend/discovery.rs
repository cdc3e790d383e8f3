//! Executable discovery for the process backend: which broker binaries run, found on `PATH` or given.
//!
//! | kind | looked up as |
//! | --- | --- |
//! | `qpidd`, `qdrouterd` | the name on `PATH` |
//! | `rabbitmq` | `rabbitmq-server` on `PATH`, then `/usr/lib/rabbitmq/bin`, `/usr/sbin`; Debian's `su` wrapper is bypassed for the real script; `rabbitmqctl` next to it; `epmd` on `PATH` |
//! | `embedded` | `$HARNESS_BIN`, this executable when it is `harness`, `harness` on `PATH` |

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::BrokerKind;

/// Resolved executables for one broker kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executables {
    /// The broker (or `harness` for the embedded broker).
    pub server: PathBuf,
    /// RabbitMQ: `rabbitmqctl` next to the server script.
    pub ctl: Option<PathBuf>,
    /// RabbitMQ: `epmd` for a private port mapper (without it, erl starts its own, which outlives the node).
    pub epmd: Option<PathBuf>,
}

pub(crate) fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Debian's `/usr/sbin/rabbitmq-server` is a wrapper that `su`s to the `rabbitmq` user and uses the system
/// directories; use the real script next to it instead.
fn unwrap_rabbitmq_script(p: PathBuf, name: &str) -> PathBuf {
    if let Ok(canon) = fs::canonicalize(&p) {
        if canon.file_name().and_then(|f| f.to_str()) == Some("rabbitmq-script-wrapper") {
            if let Some(dir) = canon.parent() {
                let real = dir.join(name);
                if is_executable(&real) {
                    return real;
                }
            }
        }
    }
    p
}

/// The RabbitMQ version of an installed server script, read from its install path
/// (`.../rabbitmq_server-3.10.8/sbin/rabbitmq-server`).
pub fn rabbitmq_version(server: &Path) -> Option<String> {
    let canon = fs::canonicalize(server).ok()?;
    canon.ancestors().find_map(|a| {
        a.file_name()
            .and_then(|f| f.to_str())
            .and_then(|f| f.strip_prefix("rabbitmq_server-"))
            .map(str::to_string)
    })
}

pub(crate) fn harness_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HARNESS_BIN").map(PathBuf::from) {
        if is_executable(&p) {
            return Some(p);
        }
    }
    if let Ok(me) = std::env::current_exe() {
        if me.file_stem().and_then(|s| s.to_str()) == Some("harness") {
            return Some(me);
        }
    }
    find_on_path("harness")
}

/// Finds the executables for `kind`: `explicit` (the spec's `binary` override or a configured path)
/// wins; `harness` is the embedded broker's executable when one was configured.
pub fn locate(
    kind: BrokerKind,
    explicit: Option<PathBuf>,
    harness: Option<PathBuf>,
) -> Result<Executables, String> {
    let check = |p: PathBuf| -> Result<PathBuf, String> {
        if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!("{} is not an executable file", p.display()))
        }
    };
    match kind {
        BrokerKind::Qpidd | BrokerKind::Qdrouterd => {
            let name = kind.as_str();
            let server = match explicit {
                Some(p) => check(p)?,
                None => find_on_path(name).ok_or_else(|| format!("{name} not found on PATH"))?,
            };
            Ok(Executables {
                server,
                ctl: None,
                epmd: None,
            })
        }
        BrokerKind::Rabbitmq => {
            let server = match explicit {
                Some(p) => check(p)?,
                None => find_on_path("rabbitmq-server")
                    .or_else(|| {
                        [
                            "/usr/lib/rabbitmq/bin/rabbitmq-server",
                            "/usr/sbin/rabbitmq-server",
                        ]
                        .iter()
                        .map(PathBuf::from)
                        .find(|p| is_executable(p))
                    })
                    .ok_or_else(|| "rabbitmq-server not found on PATH".to_string())?,
            };
            let server = unwrap_rabbitmq_script(server, "rabbitmq-server");
            let ctl = server
                .parent()
                .map(|d| d.join("rabbitmqctl"))
                .filter(|p| is_executable(p))
                .or_else(|| find_on_path("rabbitmqctl"))
                .map(|p| unwrap_rabbitmq_script(p, "rabbitmqctl"));
            Ok(Executables {
                server,
                ctl,
                epmd: find_on_path("epmd"),
            })
        }
        BrokerKind::Embedded => {
            let server = match explicit.or(harness) {
                Some(p) => check(p)?,
                None => harness_exe().ok_or_else(|| {
                    "the harness executable was not found (set HARNESS_BIN)".to_string()
                })?,
            };
            Ok(Executables {
                server,
                ctl: None,
                epmd: None,
            })
        }
        BrokerKind::Artemis => Err("artemis runs only with the container backend".to_string()),
    }
}

/// `saslpasswd2` (Cyrus SASL), which the process backend needs for qpidd and qdrouterd users.
pub fn saslpasswd2() -> Option<PathBuf> {
    find_on_path("saslpasswd2")
        .or_else(|| Some(PathBuf::from("/usr/sbin/saslpasswd2")).filter(|p| is_executable(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binary_is_reported_by_name() {
        let err = locate(
            BrokerKind::Qdrouterd,
            Some(PathBuf::from("/nonexistent/qdrouterd")),
            None,
        )
        .expect_err("not executable");
        assert!(err.contains("/nonexistent/qdrouterd"), "{err}");
        assert!(locate(BrokerKind::Artemis, None, None).is_err());
        match locate(BrokerKind::Qpidd, None, None) {
            Ok(_) => assert!(find_on_path("qpidd").is_some()),
            Err(e) => assert_eq!(e, "qpidd not found on PATH"),
        }
    }
}
