//! Image templates (`templates/images/`): snapshot of every rendered Dockerfile, and the container backend
//! against the offline images (`ci/images/build-offline.sh`) when a docker daemon and the images are here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::backend::container::{
    docker_available, image_exists, render_image, ContainerBackend, EMBEDDED_IMAGE,
    IMAGE_TEMPLATES, RABBITMQ_OFFLINE_IMAGE,
};
use harness::backend::{wait_ready, Backend, BrokerSpec, Probe, User};
use harness::brokers::BrokerChoice;

fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

/// Example values for the download mirrors, which are never hard-coded.
fn example_vars() -> BTreeMap<String, String> {
    [
        ("centos_vault_mirror", "https://centos-vault.invalid/centos"),
        ("epel_archive_mirror", "https://epel-archive.invalid/epel"),
        ("apache_archive", "https://apache-archive.invalid/dist"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn every_image_template_renders() {
    let vars = example_vars();
    for t in IMAGE_TEMPLATES {
        let text = render_image(&templates_dir(), t.name, &vars)
            .unwrap_or_else(|e| panic!("{} does not render: {e}", t.name));
        assert!(
            text.lines().any(|l| l.starts_with("FROM ")
                && l.contains(t.base_image.split(':').next().unwrap_or(""))
                || l.starts_with("FROM ${BASE_IMAGE}")),
            "{}: no FROM line for {}:\n{text}",
            t.name,
            t.base_image
        );
        assert!(
            text.contains("amqp1-rig=1"),
            "{}: no amqp1-rig label",
            t.name
        );
        for f in t.files {
            assert!(
                templates_dir().join("images/files").join(f).is_file(),
                "{}: build file {f} missing",
                t.name
            );
            assert!(text.contains(f), "{}: {f} is not copied", t.name);
        }
        insta::assert_snapshot!(format!("image_{}", t.name), text);
    }
}

#[test]
fn offline_templates_are_plain_dockerfiles() {
    // ci/images/build-offline.sh feeds these to `docker build` without rendering them.
    for t in IMAGE_TEMPLATES.iter().filter(|t| t.offline) {
        let raw = std::fs::read_to_string(templates_dir().join(t.template)).expect("readable");
        let rendered = render_image(&templates_dir(), t.name, &BTreeMap::new()).expect("renders");
        assert_eq!(raw, rendered, "{} must contain no tera tags", t.name);
    }
}

#[test]
fn missing_mirror_is_named() {
    let err = render_image(&templates_dir(), "qpidd-centos7", &BTreeMap::new())
        .expect_err("mirrors are required");
    let msg = err.to_string();
    assert!(msg.contains("centos_vault_mirror"), "{msg}");
    assert!(msg.contains("epel_archive_mirror"), "{msg}");
    let err = render_image(&templates_dir(), "qpidd-gentoo", &BTreeMap::new())
        .expect_err("unknown template");
    assert!(err.to_string().contains("qpidd-centos7"), "{err}");
}

#[test]
fn rabbitmq_plugin_only_on_3x() {
    let mut vars = BTreeMap::new();
    let three = render_image(&templates_dir(), "rabbitmq-3.13", &vars).expect("renders");
    assert!(three.contains("rabbitmq-plugins enable --offline rabbitmq_amqp1_0"));
    let four = render_image(&templates_dir(), "rabbitmq-4", &vars).expect("renders");
    assert!(!four.contains("rabbitmq-plugins"));
    vars.insert("version".to_string(), "4.1".to_string());
    vars.insert(
        "base_image".to_string(),
        "rabbitmq:4.1-management".to_string(),
    );
    let four_one = render_image(&templates_dir(), "rabbitmq-4", &vars).expect("renders");
    assert!(four_one.contains("FROM rabbitmq:4.1-management"));
}

/// Tests in this binary run in parallel in one process, and container ownership labels carry the process
/// id: tests that start RabbitMQ containers take turns.
static RABBITMQ_CONTAINERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Skips (with the reason on stderr) when docker or the image is not here; CI builds the images first
/// and sets `AMQP1_RIG_REQUIRE_BROKERS=1`, which turns a skip into a failure.
fn spec_of(choice: &str) -> BrokerSpec {
    BrokerSpec::new(
        BrokerChoice::parse(choice).expect("broker choice"),
        templates_dir(),
    )
}

fn can_run(image: &str) -> bool {
    let why = match docker_available() {
        Err(e) => e.to_string(),
        Ok(_) if !image_exists(image) => {
            format!("image {image} missing (run ci/images/build-offline.sh)")
        }
        Ok(_) => return true,
    };
    if std::env::var_os("AMQP1_RIG_REQUIRE_BROKERS").is_some_and(|v| v != "0") {
        panic!("AMQP1_RIG_REQUIRE_BROKERS is set but {why}");
    }
    eprintln!("skipping: {why}");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_rabbitmq_lifecycle() {
    // Counts this process's RabbitMQ containers: keep time_to_first_ready_by_backend's out meanwhile.
    let _one_at_a_time = RABBITMQ_CONTAINERS.lock().await;
    if !can_run(RABBITMQ_OFFLINE_IMAGE) {
        return;
    }
    let mut spec = spec_of("rabbitmq");
    spec.users.push(User {
        name: "rig".into(),
        password: "s3cret-pass".into(),
    });
    let backend = ContainerBackend::default();
    let t0 = Instant::now();
    let handle = tokio::time::timeout(Duration::from_secs(180), backend.start(&spec))
        .await
        .expect("start within 180 s")
        .expect("rabbitmq container starts");
    eprintln!(
        "time to first ready broker (container, {RABBITMQ_OFFLINE_IMAGE}): {:?}",
        t0.elapsed()
    );
    let node = handle.node("node0").expect("node0");
    let url = handle.transport_url(spec.client_user());
    assert_eq!(url.hosts[0].username.as_deref(), Some("rig"));
    let probe = Probe::first_host(&url, false).expect("host");
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("AMQP open with the user");
    // a wrong password is refused, so the user really is configured
    let mut bad = url.clone();
    bad.hosts[0].password = Some("wrong".into());
    assert!(
        wait_ready(
            &Probe::first_host(&bad, false).expect("host"),
            Duration::from_secs(3)
        )
        .await
        .is_err(),
        "wrong password accepted"
    );
    assert!(
        node.logs().contains("rabbitmq_amqp1_0"),
        "logs captured:\n{}",
        node.logs()
    );

    node.pause().await.expect("docker pause");
    assert!(
        wait_ready(&probe, Duration::from_secs(3)).await.is_err(),
        "paused broker answered"
    );
    node.resume().await.expect("docker unpause");
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("ready after resume");

    node.kill().await.expect("kill");
    assert!(
        wait_ready(&probe, Duration::from_secs(2)).await.is_err(),
        "killed broker answered"
    );
    let t1 = Instant::now();
    tokio::time::timeout(Duration::from_secs(180), node.restart())
        .await
        .expect("restart within 180 s")
        .expect("restart");
    eprintln!("container restart to ready: {:?}", t1.elapsed());
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("ready after restart");

    let before = my_containers("rabbitmq");
    assert_eq!(
        before.len(),
        1,
        "one rabbitmq container of this test process: {before:?}"
    );
    handle.stop().await;
    let after = my_containers("rabbitmq");
    assert!(after.is_empty(), "containers left after stop: {after:?}");
}

/// Ids of containers this test process started for `broker` (by the labels the backend sets).
fn my_containers(broker: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=amqp1-rig.owner-pid={}", std::process::id()),
            "--filter",
            &format!("label=amqp1-rig.broker={broker}"),
        ])
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_embedded_broker_ready() {
    if !can_run(EMBEDDED_IMAGE) {
        return;
    }
    let spec = spec_of("embedded:router");
    let backend = ContainerBackend::default();
    let t0 = Instant::now();
    let handle = tokio::time::timeout(Duration::from_secs(120), backend.start(&spec))
        .await
        .expect("start within 120 s")
        .expect("embedded-broker container starts");
    eprintln!(
        "time to first ready broker (container, {EMBEDDED_IMAGE}): {:?}",
        t0.elapsed()
    );
    let node = handle.node("node0").expect("node0");
    wait_ready(&Probe::local(node.port(), None), Duration::from_secs(20))
        .await
        .expect("AMQP open");
    assert!(node.product().contains("router"), "{}", node.product());
    assert_eq!(my_containers("embedded").len(), 1);
    handle.stop().await;
    assert!(
        my_containers("embedded").is_empty(),
        "container left after stop"
    );
}

/// A real scenario (`scenarios/rpc.yaml`) against the embedded broker running in its container, reached
/// through the container backend's URL (the runner's `--url` path: fault steps are skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_scenario_through_embedded_broker_container() {
    if !can_run(EMBEDDED_IMAGE) {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("scenarios/rpc.yaml");
    let loaded = harness::scenario::load_file(&file, &[], &[]).expect("rpc.yaml loads");
    let spec = spec_of("embedded");
    let handle = tokio::time::timeout(
        Duration::from_secs(120),
        ContainerBackend::default().start(&spec),
    )
    .await
    .expect("start within 120 s")
    .expect("embedded-broker container starts");
    let overrides = harness::plan::Overrides {
        url: Some(handle.transport_url(None)),
        ..Default::default()
    };
    let plan = harness::plan::plan(&loaded, &overrides, templates_dir()).expect("plan");
    let r = tokio::time::timeout(
        Duration::from_secs(300),
        harness::runner::run(&plan, &harness::report::events::Silent),
    )
    .await
    .expect("scenario within 300 s");
    let logs = handle.nodes[0].logs();
    handle.stop().await;
    assert!(r.error.is_none(), "scenario error: {:?}", r.error);
    let failures: Vec<String> = r
        .failures()
        .map(|s| format!("step {} {}: {:?}", s.index, s.keyword, s.message))
        .collect();
    assert!(
        failures.is_empty(),
        "failures: {failures:?}\nbroker log:\n{logs}"
    );
    let steps: usize = r.groups.iter().map(|g| g.steps.len()).sum();
    assert!(steps > 5, "the scenario ran ({steps} steps)");
}

/// Without a docker daemon a container cell is skipped with one line saying what to do; no panic.
#[test]
fn no_docker_daemon_is_one_line_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let matrix = dir.path().join("m.yaml");
    let scenario = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/rpc.yaml");
    std::fs::write(
        &matrix,
        format!(
            "reports: {}\nscenarios: [{}]\ncells:\n  - name: c\n    backend: container\n    broker: rabbitmq\n",
            dir.path().join("out").display(),
            scenario.display()
        ),
    )
    .expect("write matrix");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["matrix", &matrix.display().to_string()])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("HARNESS_MATRIX_CELLS")
        .output()
        .expect("harness runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("matrix: c: skipped:"))
        .unwrap_or_else(|| panic!("no skip line in:\n{stdout}"));
    assert!(
        line.contains(
            "no Docker-compatible daemon answers at DOCKER_HOST=unix:///nonexistent/docker.sock"
        ),
        "{line}"
    );
    assert!(
        line.contains("set DOCKER_HOST") && line.contains("--backend process"),
        "{line}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let md = std::fs::read_to_string(dir.path().join("out/matrix.md")).expect("matrix.md written");
    assert!(
        md.contains("| c | skipped: no Docker-compatible daemon answers"),
        "{md}"
    );
    for ext in ["html", "xml", "json"] {
        assert!(
            dir.path().join(format!("out/matrix.{ext}")).is_file(),
            "matrix.{ext} missing"
        );
    }
}

/// Time to first ready broker per backend (printed, not asserted: `cargo test -p harness --test images
/// time_to_first_ready -- --nocapture`). Each broker must really accept an AMQP Open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_first_ready_by_backend() {
    use harness::backend::{embedded::EmbeddedBackend, process::ProcessBackend};
    let mut cases: Vec<(&str, Box<dyn Backend>, BrokerSpec)> = vec![(
        "embedded qpidd (in process)",
        Box::new(EmbeddedBackend),
        spec_of("embedded"),
    )];
    if ProcessBackend::new()
        .available(&spec_of("rabbitmq"))
        .is_ok()
    {
        cases.push((
            "process rabbitmq-server",
            Box::new(ProcessBackend::new()),
            spec_of("rabbitmq"),
        ));
    }
    if can_run(EMBEDDED_IMAGE) {
        cases.push((
            "container amqp1-rig/embedded-broker",
            Box::new(ContainerBackend::default()),
            spec_of("embedded"),
        ));
    }
    let _one_at_a_time = RABBITMQ_CONTAINERS.lock().await;
    if can_run(RABBITMQ_OFFLINE_IMAGE) {
        cases.push((
            "container amqp1-rig/rabbitmq:3.10",
            Box::new(ContainerBackend::default()),
            spec_of("rabbitmq"),
        ));
    }
    for (label, backend, spec) in cases {
        let t0 = Instant::now();
        let handle = tokio::time::timeout(Duration::from_secs(180), backend.start(&spec))
            .await
            .unwrap_or_else(|_| panic!("{label}: start within 180 s"))
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        let elapsed = t0.elapsed();
        let url = handle.transport_url(spec.client_user());
        wait_ready(
            &Probe::first_host(&url, false).expect("host"),
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: not ready after start: {e}"));
        eprintln!("time to first ready broker: {label}: {elapsed:?}");
        handle.stop().await;
    }
}
