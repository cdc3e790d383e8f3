//! CLI tests: run the built `harness` binary and snapshot exit code, stdout and stderr.

use std::path::Path;
use std::process::Command;

fn harness(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(cwd)
        .env_remove("HARNESS_TEMPLATES")
        .env("NO_COLOR", "1")
        .output()
        .expect("the harness binary runs");
    format!(
        "exit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "signal".into()),
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

fn harness_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workspace() -> &'static Path {
    harness_dir().parent().expect("workspace root")
}

/// `harness --help` names every subcommand and documents the exit codes (asserted, and snapshotted for
/// review).
#[test]
fn help() {
    let out = harness(&["--help"], workspace());
    assert!(out.starts_with("exit code: 0"), "{out}");
    for cmd in [
        "run", "list", "brokers", "render", "broker", "peer", "matrix",
    ] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
            "{cmd} missing: {out}"
        );
    }
    for line in [
        "Exit codes:",
        "0  ok (expected failures included)",
        "1  internal error",
        "2  usage error",
        "3  scenario invalid",
        "4  broker setup failed",
        "5  driver/runtime error",
        "6  expectation or snapshot mismatch",
    ] {
        assert!(out.contains(line), "{line:?} missing: {out}");
    }
    insta::assert_snapshot!(out);
}

#[test]
fn run_help() {
    insta::assert_snapshot!(harness(&["run", "--help"], workspace()));
}

#[test]
fn list_scenarios() {
    let out = harness(&["list"], workspace());
    assert!(out.starts_with("exit code: 0"), "{out}");
    for (file, words) in [
        ("scenarios/rpc.yaml ", "RPC basics"),
        ("scenarios/notify.yaml ", "Notifications"),
        ("scenarios/call-monitor.yaml ", "Call monitoring"),
        ("scenarios/vhost.yaml ", "Pseudo-vhost isolation"),
        ("scenarios/devstack-nova.yaml ", "devstack-like nova"),
        (
            "scenarios/compat/rabbitmq-dynamic-reply.yaml ",
            "RabbitMQ 3.x",
        ),
    ] {
        let line = out
            .lines()
            .find(|l| l.starts_with(file))
            .unwrap_or_else(|| panic!("{file} not listed: {out}"));
        assert!(line.contains(words), "{line}");
    }
    assert!(
        !out.contains("snapshots/"),
        "snapshots must not be listed: {out}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = harness(&["run"], workspace());
    assert!(out.starts_with("exit code: 2"), "{out}");
    let out = harness(
        &["run", "scenarios/rpc.yaml", "--backend", "kubernetes"],
        workspace(),
    );
    assert!(out.starts_with("exit code: 2"), "{out}");
    assert!(out.contains("unknown backend 'kubernetes'"), "{out}");
    let out = harness(
        &["run", "scenarios/rpc.yaml", "--broker", "qpid-cpp"],
        workspace(),
    );
    assert!(out.starts_with("exit code: 2"), "{out}");
}

#[test]
fn missing_file_is_invalid() {
    let out = harness(&["run", "scenarios/does-not-exist.yaml"], workspace());
    assert!(out.starts_with("exit code: 3"), "{out}");
    assert!(
        out.contains("cannot read scenario scenarios/does-not-exist.yaml"),
        "{out}"
    );
}

#[test]
fn brokers_lists_every_backend() {
    let out = harness(&["brokers"], workspace());
    assert!(out.starts_with("exit code: 0"), "{out}");
    assert!(
        out.contains("embedded   embedded (qpidd, router, rabbitmq3)"),
        "{out}"
    );
    assert!(out.contains("usable"), "{out}");
    for b in ["process", "container"] {
        assert!(out.lines().any(|l| l.starts_with(b)), "{b} missing: {out}");
        // the embedded broker also runs as a process and in its image
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{b:<10} embedded ("))),
            "{b} embedded row missing: {out}"
        );
    }
}

/// Every fixture under tests/fixtures/invalid/ must be rejected with exit code 3, its `# expect:` text on
/// stderr, a `file:line:column` pointer, and a stable rendering (snapshot).
#[test]
fn invalid_fixtures() {
    let mut n = 0;
    insta::glob!("fixtures/invalid/*.yaml", |path| {
        n += 1;
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let expect = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        let name = path
            .file_name()
            .and_then(|f| f.to_str())
            .expect("file name");
        let rel = format!("tests/fixtures/invalid/{name}");
        let out = harness(&["run", &rel, "--no-snapshot"], harness_dir());
        assert!(out.starts_with("exit code: 3\n"), "{name}: {out}");
        assert!(
            out.contains(expect),
            "{name}: expected {expect:?} in:\n{out}"
        );
        assert!(
            out.contains(&format!(" --> {rel}:")),
            "{name}: no location in:\n{out}"
        );
        assert!(!out.contains("panicked"), "{name}: {out}");
        insta::assert_snapshot!(out);
    });
    assert!(n >= 20, "only {n} invalid fixtures");
}

/// `--junit` and `--json` on a scenario with an expected failure: the reports show it apart from real
/// failures, and the run passes.
#[test]
fn junit_and_json_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junit = dir.path().join("r.xml");
    let json = dir.path().join("r.json");
    let out = harness(
        &[
            "run",
            "scenarios/compat/rabbitmq-dynamic-reply.yaml",
            "--junit",
            junit.to_str().expect("utf-8 path"),
            "--json",
            json.to_str().expect("utf-8 path"),
        ],
        workspace(),
    );
    assert!(out.starts_with("exit code: 0"), "{out}");
    assert!(out.contains("1 expected failure"), "{out}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains("<testsuite name=\"rabbitmq-dynamic-reply\""),
        "{xml}"
    );
    assert!(
        xml.contains("<system-out>expected failure: step 2 call"),
        "{xml}"
    );
    assert!(xml.contains("failures=\"0\""), "{xml}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json written"))
            .expect("valid json");
    assert_eq!(doc["exit_code"], 0);
    let steps = &doc["scenarios"][0]["groups"][0]["steps"];
    assert_eq!(steps[0]["status"], "expected_failure", "{doc:#}");
}

/// `harness broker serve` prints its URL; `harness run --url` uses that broker instead of starting one.
#[test]
fn run_against_a_served_broker_with_url() {
    use std::io::BufRead;
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args([
            "broker",
            "serve",
            "--flavour",
            "qpidd",
            "--port",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("broker serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let url = rx.recv_timeout(std::time::Duration::from_secs(20));
    let result = url.map(|url| {
        let url = url.trim().to_string();
        (
            url.clone(),
            harness(
                &[
                    "run",
                    "scenarios/devstack-nova.yaml",
                    "--url",
                    &url,
                    "--no-snapshot",
                ],
                workspace(),
            ),
        )
    });
    let _ = child.kill();
    let _ = child.wait();
    let (url, out) = result.expect("broker serve printed its URL within 20 s");
    assert_eq!(url, format!("amqp://127.0.0.1:{port}"));
    assert!(out.starts_with("exit code: 0"), "{out}");
    assert!(out.contains("(url)"), "{out}");
}

/// Variables come from the file, `HARNESS_VAR_<NAME>` and `--var` (which wins); a defined variable makes
/// the undefined-variable fixture valid.
#[test]
fn variables_from_cli_and_environment() {
    let fixture = "tests/fixtures/invalid/undefined-variable.yaml";
    let out = harness(
        &[
            "run",
            fixture,
            "--no-snapshot",
            "--var",
            "topc=compute",
            "-v",
        ],
        harness_dir(),
    );
    assert!(out.starts_with("exit code: 0"), "{out}");
    assert!(out.contains("cast compute ping {} -> ok"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["run", fixture, "--no-snapshot", "-v"])
        .current_dir(harness_dir())
        .env("HARNESS_VAR_TOPC", "from-env")
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("cast from-env ping {} -> ok"), "{stdout}");
    let out = harness(&["run", fixture, "--var", "bad-assignment"], harness_dir());
    assert!(out.starts_with("exit code: 2"), "{out}");
}

/// A broker that cannot be started exits 4, and so does a broker URL nobody listens on.
#[test]
fn setup_failures_have_their_exit_codes() {
    let out = harness(
        &[
            "run",
            "scenarios/rpc.yaml",
            "--backend",
            "process",
            "--broker",
            "artemis",
        ],
        workspace(),
    );
    assert!(out.starts_with("exit code: 4"), "{out}");
    assert!(out.contains("broker setup failed"), "{out}");
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("amqp://127.0.0.1:{port}");
    let out = harness(&["run", "scenarios/rpc.yaml", "--url", &url], workspace());
    assert!(out.starts_with("exit code: 4"), "{out}");
    assert!(out.contains("broker setup failed"), "{out}");
    assert!(out.contains(&format!("127.0.0.1:{port}")), "{out}");
}

/// A failing run writes each broker node's log into the JSON report (process backend: the embedded
/// broker runs as `harness broker serve`, whose log has its ready line).
#[test]
fn json_report_has_broker_logs_when_a_run_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("failing.yaml");
    std::fs::write(
        &scenario,
        "broker: {kind: embedded, flavour: qpidd}\n\
         services:\n  - name: s\n    rpc_server:\n      target: {topic: t, server: h}\n      \
         endpoints: [{methods: {echo: {echo: true}}}]\n\
         steps:\n  - call: {target: {topic: t, server: h}, method: echo, args: {x: 1}, expect: {result: {x: 2}}}\n",
    )
    .expect("write scenario");
    let json = dir.path().join("report.json");
    let out = harness(
        &[
            "run",
            &scenario.display().to_string(),
            "--backend",
            "process",
            "--no-snapshot",
            "--json",
            &json.display().to_string(),
        ],
        workspace(),
    );
    assert!(out.starts_with("exit code: 6"), "{out}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("valid JSON");
    let log = doc["scenarios"][0]["broker_logs"]["node0"]
        .as_str()
        .unwrap_or_default();
    assert!(log.contains("amqp://127.0.0.1:"), "{doc:#}");
}
