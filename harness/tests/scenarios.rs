//! Runs every scenario in `scenarios/` (and `scenarios/compat/`, `scenarios/rabbitmq/`) on the embedded broker and checks its
//! transcript against `scenarios/snapshots/<name>.snap` — the same files `harness run` reads and writes, so
//! `cargo insta review` and `harness run --update` both accept changes.
//!
//! `scenarios/interop/*.yaml` need the Python oslo.messaging peer: that test is ignored by default and runs
//! with `cargo test -- --ignored` (as `.ci/run` does).

use std::path::Path;

use harness::backend::BackendKind;
use harness::plan::{self, Overrides};
use harness::report::events::Silent;
use harness::runner;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn run_one(path: &Path) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rel = path.strip_prefix(workspace()).unwrap_or(path).to_path_buf();
    let loaded = harness::scenario::load_file(path, &[], &[])
        .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
    let overrides = Overrides {
        backend: Some(BackendKind::Embedded),
        ..Overrides::default()
    };
    let plan = plan::plan(&loaded, &overrides, workspace().join("templates"))
        .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
    let report = rt.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(120),
            runner::run(&plan, &Silent),
        )
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within 120 s", rel.display()))
    });
    assert!(
        report.error.is_none(),
        "{}: {:?}",
        rel.display(),
        report.error
    );
    let failures: Vec<String> = report
        .failures()
        .map(|s| {
            format!(
                "step {} {} (line {}): {}",
                s.index,
                s.keyword,
                s.line,
                s.message.clone().unwrap_or_default()
            )
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n{}\n--- transcript ---\n{}",
        rel.display(),
        failures.join("\n"),
        report.transcript
    );
    let name = harness::snapshot::snapshot_name(&rel);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(workspace().join("scenarios").join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.remove_snapshot_suffix();
    settings.set_input_file(&rel);
    settings.set_omit_expression(false);
    let transcript = report.transcript;
    settings.bind(|| insta::assert_snapshot!(name, transcript));
}

#[test]
fn scenarios_on_embedded_broker() {
    insta::glob!("../../scenarios", "*.yaml", run_one);
}

#[test]
fn compat_scenarios_on_embedded_broker() {
    insta::glob!("../../scenarios", "compat/*.yaml", run_one);
}

#[test]
fn fault_scenarios_on_embedded_broker() {
    // Broker kills, restarts and pauses under background traffic.
    insta::glob!("../../scenarios", "faults/*.yaml", run_one);
}

/// Packet drops on loopback need nftables rules: root (CAP_NET_ADMIN) and Debian's `nftables`.
#[test]
#[ignore = "needs nft (Debian nftables) and CAP_NET_ADMIN for loopback packet drops; run with --ignored, as CI does"]
fn network_fault_scenarios_on_embedded_broker() {
    insta::glob!("../../scenarios", "faults/network/*.yaml", run_one);
}

#[test]
fn rabbitmq_scenarios_on_embedded_broker() {
    // They name the embedded rabbitmq3 flavour (RabbitMQ 3.x addressing and semantics).
    insta::glob!("../../scenarios", "rabbitmq/*.yaml", run_one);
}

#[test]
#[ignore = "needs the Python peer venv (cargo run -p harness -- peer setup); run with --ignored, as CI does"]
fn interop_scenarios_with_python_peer() {
    if let Err(e) = harness::peer::venv_python(&harness::peer::default_venv()) {
        panic!("{e}");
    }
    insta::glob!("../../scenarios", "interop/*.yaml", run_one);
}
