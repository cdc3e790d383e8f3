//! `harness oslo-tests` through the real binary: oslo.messaging's own functional tests, a few of them,
//! on the embedded broker over TCP (needs the Python peer's venv).

use std::path::Path;
use std::process::Command;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

fn oslo_tests(extra: &[&str], json: &Path) -> (Option<i32>, String, serde_json::Value) {
    if let Err(e) = harness::peer::venv_python(&harness::peer::default_venv()) {
        panic!("{e}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .current_dir(workspace())
        .arg("oslo-tests")
        .args([
            "-k",
            "CallTestCase.test_specific_server",
            "-k",
            "NotifyTestCase.test_simple",
        ])
        .args(extra)
        .arg("--json")
        .arg(json)
        .output()
        .expect("harness runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code(), text, doc)
}

#[test]
#[ignore = "needs the Python peer venv (cargo run -p harness -- peer setup); run with --ignored, as CI does"]
fn functional_tests_pass_on_the_embedded_qpidd_flavour() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, text, doc) = oslo_tests(&[], &dir.path().join("r.json"));
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(doc["counts"]["passed"], 3, "{text}");
    assert_eq!(doc["counts"]["failed"], 0, "{text}");
    assert!(
        text.contains(
            "PASS  oslo_messaging.tests.functional.test_functional.NotifyTestCase.test_simple"
        ),
        "{text}"
    );
}

/// On RabbitMQ 3.x the Python driver's reply link is refused: expected failures in the broker's words.
#[test]
#[ignore = "needs the Python peer venv (cargo run -p harness -- peer setup); run with --ignored, as CI does"]
fn functional_tests_are_expected_failures_on_rabbitmq3_with_its_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (code, text, doc) = oslo_tests(
        &["--broker", "embedded:rabbitmq3", "--test-timeout", "40s"],
        &dir.path().join("r.json"),
    );
    assert_eq!(code, Some(0), "{text}");
    assert_eq!(doc["counts"]["failed"], 0, "{text}");
    assert!(
        doc["counts"]["expected_failures"].as_u64().unwrap_or(0) >= 1,
        "{text}"
    );
    assert!(text.contains("the broker said amqp:"), "{text}");
}
