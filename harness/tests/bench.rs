//! `harness bench` as a command: the quick mode CI runs, through the embedded broker, writes a
//! report with the fields (no speed is asserted).

use std::process::Command;

fn harness() -> Command {
    Command::new(env!("CARGO_BIN_EXE_harness"))
}

#[test]
fn quick_bench_writes_the_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let html = dir.path().join("bench.html");
    let out = harness()
        .args([
            "bench",
            "--quick",
            "--rounds",
            "1",
            "--count",
            "10",
            "--notifiers",
            "2",
        ])
        .args(["--servers", "2", "--json"])
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("sequential calls: latency p99.9"),
        "{stdout}"
    );
    assert!(stdout.contains("fleet scale"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json")).expect("valid json");
    let ms = v["measurements"].as_array().expect("measurements");
    // The server process measurement spawns this same executable.
    assert!(
        ms.iter()
            .any(|m| m["metric"] == "server process RSS at ready"
                && m["implementation"] == "rust"
                && m["rounds"][0].as_f64().is_some_and(|r| r > 0.0)),
        "{v}"
    );
    assert!(v["command"]
        .as_str()
        .is_some_and(|c| c.contains("bench --quick")));
    assert!(std::fs::read_to_string(&html)
        .expect("html")
        .contains("<svg"));
}

#[test]
fn bench_refuses_bad_input_without_starting_anything() {
    let out = harness()
        .args(["bench", "--notifiers", "0"])
        .output()
        .expect("harness runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--notifiers"));
}
