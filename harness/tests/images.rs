//! Image templates (`templates/images/`): snapshot of every rendered Dockerfile, and the container backend
//! (testcontainers) against the offline images (`ci/images/build-offline.sh`). The container tests are
//! ignored by default: `cargo test -p harness --test images -- --ignored --test-threads=1 --nocapture`
//! runs them (and prints the time to first ready broker per image) once the images are built.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::backend::container::{
    docker, docker_available, image_exists, render_image, ContainerBackend, EMBEDDED_IMAGE,
    IMAGE_TEMPLATES, RABBITMQ_OFFLINE_IMAGE,
};
use harness::backend::{wait_ready, Backend, BackendError, BrokerHandle, BrokerSpec, Probe, User};
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

const NEEDS_IMAGES: &str = "needs docker images from ci/images/build-offline.sh";

/// The offline RabbitMQ 4.x images (`ci/images/build-offline.sh rabbitmq4`), by the version they hold.
const RABBITMQ_40: &str = "amqp1-rig/rabbitmq:4.0.5";
const RABBITMQ_43: &str = "amqp1-rig/rabbitmq:4.3.6";

/// Tests in this binary run in parallel in one process, and container ownership labels carry the process
/// id: tests that count this process's containers take turns.
static CONTAINERS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn spec_of(choice: &str) -> BrokerSpec {
    BrokerSpec::new(
        BrokerChoice::parse(choice).expect("broker choice"),
        templates_dir(),
    )
}

fn user(name: &str, password: &str) -> User {
    User {
        name: name.into(),
        password: password.into(),
    }
}

/// These tests are ignored by default; run with `--ignored`, a missing daemon or image is a failure
/// that says what to build.
fn require(image: &str) {
    if let Err(e) = docker_available() {
        panic!("{NEEDS_IMAGES}: {e}");
    }
    assert!(
        image_exists(image),
        "image {image} missing: run ci/images/build-offline.sh ({NEEDS_IMAGES})"
    );
}

/// Starts `spec` through the container backend; an engine refusing the client's API version fails
/// with the cause named (bollard must stay at 0.21.x).
async fn start(spec: &BrokerSpec) -> (BrokerHandle, Duration) {
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(180),
        ContainerBackend::default().start(spec),
    )
    .await
    .unwrap_or_else(|_| panic!("{}: no answer from the backend within 180 s", spec.label()));
    match r {
        Ok(h) => (h, t0.elapsed()),
        Err(e) => {
            let msg = e.to_string();
            if msg.contains("client version") || msg.contains("is too new") {
                panic!(
                    "the docker engine refused the client's API version: bollard must stay at {}.x \
                     (Cargo.lock); a newer bollard sends versioned /v1.xx paths: {msg}",
                    harness::backend::container::BOLLARD_LINE
                );
            }
            panic!("{}: {msg}", spec.label())
        }
    }
}

/// Ids of containers this test process owns (optionally of one broker kind), through the labels the
/// backend sets.
async fn my_containers(broker: Option<&str>) -> Vec<String> {
    docker::containers_of(std::process::id(), broker)
        .await
        .expect("docker answers")
}

async fn opens(port: u16, u: Option<&User>, within: Duration) -> bool {
    wait_ready(&Probe::local(port, u), within).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a docker daemon"]
async fn docker_client_speaks_this_engines_api() {
    // Every request the backend makes goes through this client: if a dependency bump made it send
    // versioned paths (/v1.53/...), Docker Engine 20.10 (API 1.41) would refuse them.
    let version = docker::daemon_version().await.unwrap_or_else(|e| {
        panic!("{e} (if this names an API version: bollard must stay at 0.21.x)")
    });
    eprintln!("docker daemon {version}");
    assert!(version.contains("API "), "{version}");
    docker::containers_of(std::process::id(), None)
        .await
        .unwrap_or_else(|e| panic!("listing containers: {e}"));
    assert_eq!(
        docker::inspect_image("amqp1-rig/no-such-image:0").await,
        Ok(None),
        "a missing image is reported as missing (and never pulled)"
    );
    let images = docker::local_images()
        .await
        .unwrap_or_else(|e| panic!("listing images: {e}"));
    for i in &images {
        eprintln!(
            "local broker image {} ({} {:?})",
            i.tag, i.broker, i.version
        );
    }
}

/// The offline RabbitMQ images are listed with the version they really hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn offline_images_are_listed_with_their_versions() {
    require(RABBITMQ_40);
    require(RABBITMQ_43);
    let images = docker::local_images().await.expect("docker answers");
    for (tag, version) in [(RABBITMQ_40, "4.0.5"), (RABBITMQ_43, "4.3.6")] {
        let i = images
            .iter()
            .find(|i| i.tag == tag)
            .unwrap_or_else(|| panic!("{tag} not listed: {images:?}"));
        assert_eq!(i.broker, "rabbitmq");
        assert_eq!(i.version.as_deref(), Some(version), "{tag}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn container_rabbitmq_lifecycle() {
    let _one_at_a_time = CONTAINERS.lock().await;
    require(RABBITMQ_OFFLINE_IMAGE);
    let mut spec = spec_of("rabbitmq");
    spec.users.push(user("rig", "s3cret-pass"));
    // the second user is only in the rendered definitions.json, not in the container's environment
    spec.users.push(user("second", "other:pass"));
    let (handle, elapsed) = start(&spec).await;
    eprintln!("time to first ready broker (container, {RABBITMQ_OFFLINE_IMAGE}): {elapsed:?}");
    let node = handle.node("node0").expect("node0");
    let url = handle.transport_url(spec.client_user());
    assert_eq!(url.hosts[0].username.as_deref(), Some("rig"));
    let probe = Probe::first_host(&url, false).expect("host");
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("AMQP open with the user");
    assert!(
        opens(node.port(), Some(&spec.users[1]), Duration::from_secs(20)).await,
        "the second scenario user is configured"
    );
    // a wrong password is refused, so the users really are configured
    assert!(
        !opens(
            node.port(),
            Some(&user("rig", "wrong")),
            Duration::from_secs(3)
        )
        .await,
        "wrong password accepted"
    );
    assert!(
        node.logs().contains("rabbitmq_amqp1_0"),
        "logs captured:\n{}",
        node.logs()
    );

    node.pause().await.expect("pause");
    assert!(
        wait_ready(&probe, Duration::from_secs(3)).await.is_err(),
        "paused broker answered"
    );
    node.resume().await.expect("unpause");
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("ready after resume");

    node.kill().await.expect("kill");
    assert!(
        wait_ready(&probe, Duration::from_secs(2)).await.is_err(),
        "killed broker answered"
    );
    node.kill().await.expect("kill is idempotent");
    let t1 = Instant::now();
    tokio::time::timeout(Duration::from_secs(180), node.restart())
        .await
        .expect("restart within 180 s")
        .expect("restart");
    eprintln!("container restart to ready: {:?}", t1.elapsed());
    wait_ready(&probe, Duration::from_secs(20))
        .await
        .expect("ready after restart");
    assert!(
        node.logs().contains("restarted, ready after"),
        "{}",
        node.logs()
    );

    let before = my_containers(Some("rabbitmq")).await;
    assert_eq!(before.len(), 1, "one rabbitmq container: {before:?}");
    let t2 = Instant::now();
    let logs = {
        let n = &handle.nodes[0];
        n.stop().await;
        n.logs()
    };
    eprintln!("container stop and removal: {:?}", t2.elapsed());
    assert!(logs.contains("stopped in"), "{logs}");
    handle.stop().await;
    let after = my_containers(Some("rabbitmq")).await;
    assert!(after.is_empty(), "containers left after stop: {after:?}");
}

/// RabbitMQ 4.x (4.0.5 from Debian trixie, 4.3.6 from unstable): the 4.x configuration (no AMQP 1.0
/// plugin, no plugin settings) boots, every scenario user can log in, a wrong password is refused, and
/// the broker says which version it is.
async fn rabbitmq4(image: &str, version: &str) {
    let _one_at_a_time = CONTAINERS.lock().await;
    require(image);
    let mut spec = spec_of(&format!("rabbitmq:{version}"));
    spec.users.push(user("rig", "s3cret"));
    spec.users.push(user("nova", "n0va"));
    let (handle, elapsed) = start(&spec).await;
    eprintln!("time to first ready broker (container, {image}): {elapsed:?}");
    let node = handle.node("node0").expect("node0");
    for u in &spec.users {
        assert!(
            opens(node.port(), Some(u), Duration::from_secs(20)).await,
            "{image}: user {} cannot open",
            u.name
        );
    }
    assert!(
        !opens(
            node.port(),
            Some(&user("rig", "wrong")),
            Duration::from_secs(3)
        )
        .await,
        "{image}: wrong password accepted"
    );
    let logs = node.logs();
    assert!(
        logs.contains(&format!("RabbitMQ {version}")),
        "{image}: the log does not name {version}:\n{logs}"
    );
    assert!(
        !logs.contains("failed_to_prepare_configuration"),
        "{image}:\n{logs}"
    );
    let t0 = Instant::now();
    handle.stop().await;
    eprintln!("{image}: stop and removal {:?}", t0.elapsed());
    assert!(my_containers(Some("rabbitmq")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn container_rabbitmq_4_0_5() {
    rabbitmq4(RABBITMQ_40, "4.0.5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn container_rabbitmq_4_3_6() {
    rabbitmq4(RABBITMQ_43, "4.3.6").await;
}

/// A broker that exits during start is reported as such, with its log, as soon as it exits (not after
/// the ready timeout), and its container is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn container_that_exits_is_reported_with_its_log() {
    let _one_at_a_time = CONTAINERS.lock().await;
    require(RABBITMQ_40);
    let mut spec = spec_of("rabbitmq:4.0.5");
    // not a boolean: RabbitMQ refuses the configuration and its node exits
    spec.overrides
        .insert("permit_amqp_address_v1".into(), "maybe".into());
    let backend = ContainerBackend {
        ready_timeout: Duration::from_secs(600),
    };
    let err = tokio::time::timeout(Duration::from_secs(300), backend.start(&spec))
        .await
        .expect("the backend answers")
        .expect_err("a broker with a refused configuration does not start");
    match &err {
        BackendError::Start { message, log_tail } => {
            assert!(message.contains("exited with code"), "{message}");
            assert!(
                log_tail.contains("amqp_address_v1") || log_tail.contains("configuration"),
                "the log says why:\n{log_tail}"
            );
        }
        other => panic!("expected a start error naming the exit, got: {other}"),
    }
    assert!(
        my_containers(Some("rabbitmq")).await.is_empty(),
        "container left after a failed start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn container_embedded_broker_ready() {
    let _one_at_a_time = CONTAINERS.lock().await;
    require(EMBEDDED_IMAGE);
    let mut spec = spec_of("embedded:router");
    spec.users.push(user("a", "pa"));
    spec.users.push(user("b", "pb"));
    let (handle, elapsed) = start(&spec).await;
    eprintln!("time to first ready broker (container, {EMBEDDED_IMAGE}): {elapsed:?}");
    let node = handle.node("node0").expect("node0");
    for u in &spec.users {
        assert!(
            opens(node.port(), Some(u), Duration::from_secs(20)).await,
            "user {} cannot open",
            u.name
        );
    }
    assert!(node.product().contains("router"), "{}", node.product());
    assert_eq!(my_containers(Some("embedded")).await.len(), 1);
    let t0 = Instant::now();
    handle.stop().await;
    eprintln!("{EMBEDDED_IMAGE}: stop and removal {:?}", t0.elapsed());
    assert!(
        my_containers(Some("embedded")).await.is_empty(),
        "container left after stop"
    );
}

/// A panic while a broker runs removes its container (the node's drop), on a multi-thread and on a
/// current-thread runtime.
#[test]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
fn panic_removes_the_container() {
    require(EMBEDDED_IMAGE);
    for multi in [true, false] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        .expect("runtime");
        rt.block_on(async {
            let _one_at_a_time = CONTAINERS.lock().await;
            let r = tokio::spawn(async {
                let (handle, _) = start(&spec_of("embedded")).await;
                assert_eq!(my_containers(Some("embedded")).await.len(), 1);
                let _keep = handle;
                panic!("a step panicked");
            })
            .await;
            assert!(r.expect_err("the task panicked").is_panic());
            let left = my_containers(Some("embedded")).await;
            assert!(left.is_empty(), "containers left after a panic: {left:?}");
        });
    }
}

/// Ctrl-C during a run removes the run's containers and exits with 130.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn ctrl_c_removes_the_containers() {
    require(EMBEDDED_IMAGE);
    let dir = tempfile::tempdir().expect("tempdir");
    let scenario = dir.path().join("slow.yaml");
    std::fs::write(
        &scenario,
        "name: slow\ndescription: waits\nbroker: {kind: embedded}\nsteps:\n  - sleep: 60s\n",
    )
    .expect("write scenario");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["run", "--backend", "container", "--broker", "embedded"])
        .arg(&scenario)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("harness runs");
    let pid = child.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    while docker::containers_of(pid, Some("embedded"))
        .await
        .expect("docker")
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no container for the run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // give the broker a moment to be ready (the run is then in its sleep step)
    tokio::time::sleep(Duration::from_secs(2)).await;
    #[allow(unsafe_code)]
    // SAFETY: kill(2) with a child's pid; no memory is involved.
    unsafe {
        libc::kill(pid as i32, libc::SIGINT);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the run ends after Ctrl-C")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("removed 1 container(s)"), "{stderr}");
    let left = docker::containers_of(pid, None).await.expect("docker");
    assert!(left.is_empty(), "containers left after Ctrl-C: {left:?}");
}

/// A real scenario (`scenarios/rpc.yaml`) against the embedded broker running in its container, reached
/// through the container backend's URL (the runner's `--url` path: fault steps are skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn rpc_scenario_through_embedded_broker_container() {
    require(EMBEDDED_IMAGE);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let file = root.join("scenarios/rpc.yaml");
    let loaded = harness::scenario::load_file(&file, &[], &[]).expect("rpc.yaml loads");
    let spec = spec_of("embedded");
    let (handle, _) = start(&spec).await;
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

/// RabbitMQ 4.3.6 with its default configuration: the driver's own choice (`rabbitmq4` addressing, v2
/// addresses declared through `/management`) passes `scenarios/notify.yaml`; forcing the 3.x v1
/// addresses (`addressing_mode=rabbitmq`) is refused in the broker's words unless the rendered
/// configuration permits them (`permit_amqp_address_v1`), and then passes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn rabbitmq_4_3_v2_by_default_v1_only_when_permitted() {
    let _one_at_a_time = CONTAINERS.lock().await;
    require(RABBITMQ_43);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let loaded = harness::scenario::load_file(&root.join("scenarios/notify.yaml"), &[], &[])
        .expect("notify.yaml loads");
    // (permit v1 in the broker's config, force v1 addresses in the driver, expect a refusal)
    for (permit, force_v1, refused) in [
        (false, false, false),
        (false, true, true),
        (true, true, false),
    ] {
        let mut spec = spec_of("rabbitmq:4.3.6");
        if permit {
            spec.overrides
                .insert("permit_amqp_address_v1".into(), "true".into());
        }
        let (handle, _) = start(&spec).await;
        let mut url = handle.transport_url(None);
        if force_v1 {
            url.query
                .push(("addressing_mode".into(), "rabbitmq".into()));
        }
        let overrides = harness::plan::Overrides {
            url: Some(url),
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
        let case = format!("permit_amqp_address_v1={permit}, v1 addresses forced={force_v1}");
        if refused {
            let e = r.error.expect("v1 addresses are refused by default");
            assert!(e.contains("amqp_address_v1_not_permitted"), "{case}: {e}");
        } else {
            assert!(
                r.error.is_none(),
                "{case}: scenario error: {:?}\n{logs}",
                r.error
            );
            let failures: Vec<String> = r
                .failures()
                .map(|s| format!("step {} {}: {:?}", s.index, s.keyword, s.message))
                .collect();
            assert!(
                failures.is_empty(),
                "{case}: failures: {failures:?}\n{logs}"
            );
        }
    }
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

/// Time to first ready broker per image and backend (printed, not asserted: `cargo test -p harness
/// --test images time_to_first_ready -- --ignored --nocapture`). Each broker must really accept an
/// AMQP Open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn time_to_first_ready_by_image() {
    use harness::backend::{embedded::EmbeddedBackend, process::ProcessBackend};
    let _one_at_a_time = CONTAINERS.lock().await;
    let mut cases: Vec<(String, Box<dyn Backend>, BrokerSpec)> = vec![(
        "embedded qpidd (in process)".into(),
        Box::new(EmbeddedBackend),
        spec_of("embedded"),
    )];
    if ProcessBackend::new()
        .available(&spec_of("rabbitmq"))
        .is_ok()
    {
        cases.push((
            "process rabbitmq-server".into(),
            Box::new(ProcessBackend::new()),
            spec_of("rabbitmq"),
        ));
    }
    for (image, choice) in [
        (EMBEDDED_IMAGE, "embedded"),
        (RABBITMQ_OFFLINE_IMAGE, "rabbitmq"),
        (RABBITMQ_40, "rabbitmq:4.0.5"),
        (RABBITMQ_43, "rabbitmq:4.3.6"),
    ] {
        require(image);
        cases.push((
            format!("container {image}"),
            Box::new(ContainerBackend::default()),
            spec_of(choice),
        ));
    }
    let mut lines = Vec::new();
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
        let t1 = Instant::now();
        handle.stop().await;
        lines.push(format!(
            "time to first ready broker: {label}: {:.2} s (stop and removal {:.2} s)",
            elapsed.as_secs_f64(),
            t1.elapsed().as_secs_f64()
        ));
    }
    for l in &lines {
        eprintln!("{l}");
    }
}

/// Reaping stale containers touches only containers a harness started (owner label set, owner gone):
/// a container created from one of our images by someone else (a `docker build` step, a hand-run
/// `docker create`) carries `amqp1-rig=1` from the image but no owner, and must survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs docker images from ci/images/build-offline.sh"]
async fn reaping_spares_containers_the_harness_did_not_start() {
    use docker::bollard::query_parameters::{
        CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    };
    let _one_at_a_time = CONTAINERS.lock().await;
    require(EMBEDDED_IMAGE);
    let client = docker::client().await.expect("docker answers");
    let name = format!("amqp1-rig-reap-test-{}", std::process::id());
    let body = docker::bollard::models::ContainerCreateBody {
        image: Some(EMBEDDED_IMAGE.to_string()),
        ..Default::default()
    };
    let created = client
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .expect("create a container from the embedded-broker image");
    let labels = client
        .inspect_container(&created.id, None::<InspectContainerOptions>)
        .await
        .expect("inspect")
        .config
        .and_then(|c| c.labels)
        .unwrap_or_default();
    let inherited = labels.get("amqp1-rig").cloned();
    let reaped = docker::reap_orphans_async(false).await.expect("reap");
    let still_there = client
        .inspect_container(&created.id, None::<InspectContainerOptions>)
        .await
        .is_ok();
    let _ = client
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    assert_eq!(
        inherited.as_deref(),
        Some("1"),
        "the image's label reaches its containers"
    );
    assert!(
        still_there,
        "a container without an owner label was reaped ({reaped} removed)"
    );
}
