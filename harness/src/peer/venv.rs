//! Where the peer's venv is, and how `harness peer setup` makes it.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use super::PeerError;

/// The command that creates the peer's venv; quoted in every "venv missing" message.
pub const SETUP_COMMAND: &str = "cargo run -p harness -- peer setup";

/// Name of the venv directory at the repository root (listed in `.gitignore`).
pub const DEFAULT_VENV_DIR: &str = ".venv-oslo";

/// Environment variable that overrides the venv location (also honoured by `setup.sh`).
pub const VENV_ENV: &str = "OSLO_PEER_VENV";

/// File `setup.sh` writes into the venv after a successful install and import check.
const STAMP_FILE: &str = ".amqp1-rig-stamp";

/// The repository root (the workspace directory this crate was built in).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// `harness/peers/` of this checkout.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// `$OSLO_PEER_VENV`, else `<repo>/.venv-oslo`.
pub fn default_venv() -> PathBuf {
    match std::env::var_os(VENV_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => repo_root().join(DEFAULT_VENV_DIR),
    }
}

/// The interpreter of `venv`, if the venv is complete (created and stamped by `setup.sh`).
pub fn venv_python(venv: &Path) -> Result<PathBuf, PeerError> {
    let python = venv.join("bin").join("python");
    if !venv.is_dir() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: "the directory does not exist".into(),
        });
    }
    if !python.exists() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: format!("{} does not exist", python.display()),
        });
    }
    if !venv.join(STAMP_FILE).exists() {
        return Err(PeerError::VenvMissing {
            venv: venv.to_path_buf(),
            reason: format!("its setup never completed ({STAMP_FILE} is missing)"),
        });
    }
    Ok(python)
}

/// Create (or check) the venv with the pinned oslo.messaging, pyngus and python-qpid-proton by running
/// `harness/peers/setup.sh <venv>`; its progress goes to this process's stderr. A no-op when up to date.
pub async fn setup(venv: &Path) -> Result<(), PeerError> {
    let script = peers_dir().join("setup.sh");
    if !script.exists() {
        return Err(PeerError::ScriptMissing { path: script });
    }
    let status = Command::new("bash")
        .arg(&script)
        .arg(venv)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|source| PeerError::Io {
            context: format!("running {}", script.display()),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PeerError::SetupFailed { script, status })
    }
}
