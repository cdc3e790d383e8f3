//! `harness compare` through the real binary, on the embedded broker's flavours (real TCP).

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[test]
fn compare_shows_where_brokers_differ_with_their_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let md = dir.path().join("out/cmp.md");
    let html = dir.path().join("out/cmp.html");
    let json = dir.path().join("out/cmp.json");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args(["compare", "scenarios/compat/rabbitmq-dynamic-reply.yaml"])
        .args([
            "--broker",
            "embedded:qpidd",
            "--broker",
            "embedded:rabbitmq3",
        ])
        .arg("--md")
        .arg(&md)
        .arg("--html")
        .arg(&html)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The dynamic reply link works on qpidd and is refused by RabbitMQ 3.x, in its own words.
    assert!(stdout.contains("Dynamic sources not supported"), "{stdout}");
    assert!(stdout.contains("embedded:qpidd"), "{stdout}");
    assert!(stdout.contains("rows differ"), "{stdout}");
    let md = std::fs::read_to_string(&md).expect("markdown written");
    assert!(md.contains("**≠** 2 call"), "{md}");
    let html = std::fs::read_to_string(&html).expect("html written");
    assert!(html.contains("class=\"differs\""), "{html}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written")).expect("json");
    assert_eq!(doc["columns"].as_array().map(Vec::len), Some(2));
}

/// A scenario that needs what a broker lacks is "not applicable" there: exit 0, no steps run.
#[test]
fn a_broker_without_a_required_capability_is_not_applicable() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args(["run", "scenarios/vhost.yaml", "--broker", "embedded:qpidd"])
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(
            "not applicable: scenarios/vhost.yaml (embedded:qpidd): needs routable-addresses"
        ),
        "{stdout}"
    );
}

#[test]
fn compare_needs_two_brokers_and_a_valid_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args([
            "compare",
            "scenarios/rpc.yaml",
            "--broker",
            "embedded:qpidd",
        ])
        .output()
        .expect("harness runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least two brokers"));
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .args([
            "compare",
            "scenarios/rpc.yaml",
            "--broker",
            "embedded:qpid",
            "--broker",
            "router",
        ])
        .output()
        .expect("harness runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown embedded flavour 'qpid'"));
}
