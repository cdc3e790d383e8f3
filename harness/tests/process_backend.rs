//! The process backend against real processes: the embedded broker run as a process
//! (`harness broker serve`), a fake broker script that never becomes ready, and real RabbitMQ when
//! `rabbitmq-server` is installed. Checks readiness (an AMQP Open), the broker's log in errors and reports,
//! the fault operations (kill, restart, pause/resume) and that nothing is left behind (processes, ports,
//! directories) after stop, after drop and after a failed start.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::backend::process::{ProcessBackend, ProcessNode};
use harness::backend::{
    wait_ready, Backend, BackendError, BrokerKind, BrokerNode, BrokerSpec, Probe, User,
};

const T: Duration = Duration::from_secs(60);

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

fn backend() -> ProcessBackend {
    ProcessBackend::new().with_harness_exe(env!("CARGO_BIN_EXE_harness"))
}

const NEEDS_RABBITMQ: &str = "needs rabbitmq-server (ci/scripts/rabbitmq-install.sh)";

/// Whether Debian's rabbitmq-server is installed. The tests that need it are ignored by default; run
/// with `--ignored` (CI installs it first), a missing server is a failure that says so.
fn rabbitmq_here() -> bool {
    if let Err(why) = backend().available(&BrokerSpec::new(
        BrokerKind::Rabbitmq.into(),
        templates_dir(),
    )) {
        panic!("{NEEDS_RABBITMQ}: {why}");
    }
    true
}

/// The transport URL of `nodes` with `spec`'s first user, as clients get it.
fn nodes_url(nodes: &[ProcessNode], spec: &BrokerSpec) -> driver::url::TransportUrl {
    let mut url = driver::url::TransportUrl::default();
    url.hosts = nodes
        .iter()
        .map(|n| {
            let mut h = driver::url::HostSpec::new("127.0.0.1", n.port());
            if let Some(u) = spec.users.first() {
                h.username = Some(u.name.clone());
                h.password = Some(u.password.clone());
            }
            h
        })
        .collect();
    url
}

fn alive(pid: u32) -> bool {
    // Reaped processes disappear from /proc; a zombie would still be listed (and would be a bug here).
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn gone(pid: u32) -> bool {
    // The group is SIGKILLed synchronously; grandchildren may need a moment to be reaped by init.
    for _ in 0..100 {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn refused(port: u16) -> bool {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn start(spec: &BrokerSpec) -> Vec<ProcessNode> {
    tokio::time::timeout(T, backend().start_nodes(spec))
        .await
        .expect("start within the timeout")
        .expect("nodes start")
}

#[tokio::test]
async fn embedded_as_process_ready_faults_and_cleanup() {
    let mut spec = BrokerSpec::new(BrokerKind::Embedded.into(), templates_dir());
    spec.nodes = 2;
    let t0 = Instant::now();
    let nodes = start(&spec).await;
    eprintln!(
        "embedded broker as a process: 2 nodes ready in {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(nodes.len(), 2);
    assert_ne!(nodes[0].port(), nodes[1].port());
    assert_eq!(nodes[0].name(), "node0");
    assert_eq!(nodes[0].product(), "embedded qpidd (process)");
    assert!(
        nodes[0].logs().contains("ready after"),
        "{}",
        nodes[0].logs()
    );

    let n = &nodes[0];
    let port = n.layout().port;
    let url = Probe::local(port, None);

    // pause: the socket accepts (kernel backlog) but no AMQP Open completes.
    n.pause().await.expect("pause");
    assert!(wait_ready(&url, Duration::from_millis(700)).await.is_err());
    n.resume().await.expect("resume");
    wait_ready(&url, T).await.expect("ready again after resume");

    // kill: the process and its port are gone; restart: same port, ready again.
    let pid = n.pid().expect("running");
    n.kill().await.expect("kill");
    assert!(gone(pid).await, "pid {pid} still alive after kill");
    assert!(refused(port).await, "port {port} still open after kill");
    tokio::time::timeout(T, n.restart())
        .await
        .expect("restart within timeout")
        .expect("restart");
    assert_eq!(n.layout().port, port);
    wait_ready(&url, T).await.expect("ready after restart");
    assert!(n.logs().contains("restarted"), "{}", n.logs());

    // stop (orderly) and drop (no stop): both leave no process, port or directory behind.
    let (pid0, dir0) = (n.pid().expect("running"), n.dir().to_path_buf());
    let (pid1, dir1, port1) = (
        nodes[1].pid().expect("running"),
        nodes[1].dir().to_path_buf(),
        nodes[1].layout().port,
    );
    tokio::time::timeout(T, n.stop())
        .await
        .expect("stop in time");
    assert!(gone(pid0).await);
    assert!(refused(port).await);
    drop(nodes);
    assert!(gone(pid1).await, "dropped node's process survived");
    assert!(refused(port1).await);
    assert!(!dir0.exists() && !dir1.exists(), "node directories left");
}

#[tokio::test]
async fn a_broker_that_exits_reports_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("qpidd");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"fake qpidd: unknown option no-such-option\" >&2\nexit 3\n",
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let spec = BrokerSpec::new(BrokerKind::Qpidd.into(), templates_dir());
    let b = ProcessBackend::new().with_binary(BrokerKind::Qpidd, &script);
    let err = tokio::time::timeout(T, b.start_nodes(&spec))
        .await
        .expect("fails within the timeout")
        .expect_err("a broker that exits cannot start");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::Start { .. }), "{msg}");
    assert!(msg.contains("exited with"), "{msg}");
    assert!(
        msg.contains("no-such-option"),
        "broker output missing: {msg}"
    );
}

#[tokio::test]
async fn a_broker_that_never_gets_ready_times_out_with_its_log_and_is_killed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pids");
    let script = dir.path().join("qpidd");
    // A "qpidd" that logs, starts a grandchild, and never listens.
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"fake qpidd starting with $*\"\nsleep 600 &\necho $$ $! > {}\nwait\n",
            pidfile.display()
        ),
    )
    .expect("write script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mut spec = BrokerSpec::new(BrokerKind::Qpidd.into(), templates_dir());
    spec.overrides.insert("ready_timeout".into(), "2".into());
    let b = ProcessBackend::new().with_binary(BrokerKind::Qpidd, &script);
    let err = tokio::time::timeout(T, b.start_nodes(&spec))
        .await
        .expect("fails within the timeout")
        .expect_err("never ready");
    let msg = err.to_string();
    assert!(matches!(err, BackendError::NotReady { .. }), "{msg}");
    assert!(msg.contains("fake qpidd starting with --config"), "{msg}");
    assert!(msg.contains("qpidd.conf"), "{msg}");
    let pids = std::fs::read_to_string(&pidfile).expect("script wrote its pids");
    for pid in pids.split_whitespace() {
        let pid: u32 = pid.parse().expect("pid");
        assert!(
            gone(pid).await,
            "process {pid} of the failed broker survived"
        );
    }
}

#[tokio::test]
async fn missing_binaries_are_reported_not_panicked() {
    let spec = BrokerSpec::new(BrokerKind::Qdrouterd.into(), templates_dir());
    let b = ProcessBackend::new().with_binary(BrokerKind::Qdrouterd, "/nonexistent/qdrouterd");
    let msg = b
        .start_nodes(&spec)
        .await
        .expect_err("no binary")
        .to_string();
    assert!(msg.contains("/nonexistent/qdrouterd"), "{msg}");
    assert!(msg.contains("process"), "{msg}");
}

/// Real RabbitMQ (Debian's 3.10 in CI): a private node with a SASL user, its log, kill/restart, a
/// RabbitMQ-only fault (drop connections via rabbitmqctl) and full cleanup including its private epmd.
#[tokio::test]
#[ignore = "needs rabbitmq-server (ci/scripts/rabbitmq-install.sh)"]
async fn rabbitmq_private_node() {
    if !rabbitmq_here() {
        return;
    }
    let mut spec = BrokerSpec::new(BrokerKind::Rabbitmq.into(), templates_dir());
    spec.users = vec![User {
        name: "rig".into(),
        password: "s3cret:/@".into(),
    }];
    let t0 = Instant::now();
    let nodes = tokio::time::timeout(Duration::from_secs(120), backend().start_nodes(&spec))
        .await
        .expect("start within the timeout")
        .expect("rabbitmq starts");
    eprintln!("rabbitmq: ready in {:.2} s", t0.elapsed().as_secs_f64());
    let n = &nodes[0];
    assert_eq!(n.product(), "rabbitmq");
    let url = nodes_url(&nodes, &spec);
    assert!(
        url.expose()
            .expose()
            .starts_with("amqp://rig:s3cret%3A%2F%40@127.0.0.1:"),
        "the URL encodes the password"
    );
    // The AMQP listener opens a moment before the broker logs that its start-up is complete.
    let mut logs = n.logs();
    for _ in 0..200 {
        if logs.contains("Server startup complete") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        logs = n.logs();
    }
    assert!(logs.contains("Server startup complete"), "{logs}");
    assert!(logs.contains("rabbitmq_amqp1_0"), "{logs}");
    assert!(
        logs.contains(&format!(
            "started TCP listener on 127.0.0.1:{}",
            n.layout().port
        )),
        "{logs}"
    );

    // The scenarios CI runs on RabbitMQ, through the harness binary against this node (SASL PLAIN user
    // with URL-encoded password). rpc needs the named reply queue: scenarios/rabbitmq/rpc.yaml.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for scenario in [
        "scenarios/rabbitmq/rpc.yaml",
        "scenarios/notify.yaml",
        "scenarios/compat/rabbitmq-dynamic-reply.yaml",
    ] {
        let t = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(180),
            tokio::process::Command::new(env!("CARGO_BIN_EXE_harness"))
                .current_dir(&root)
                .args([
                    "run",
                    "-v",
                    "--no-snapshot",
                    "--url",
                    url.expose().expose(),
                    scenario,
                ])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("scenario finishes in time")
        .expect("harness runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "rabbitmq: {scenario} -> {} in {:.2} s",
            out.status,
            t.elapsed().as_secs_f64()
        );
        assert!(
            out.status.success(),
            "{scenario} failed on RabbitMQ:\n{text}"
        );
        assert!(
            !text.contains("s3cret"),
            "password leaked into the output:\n{text}"
        );
        if scenario.contains("dynamic-reply") {
            assert!(
                text.contains("Dynamic sources not supported"),
                "the broker's exact description is missing:\n{text}"
            );
        }
    }

    // Wrong credentials are refused: the node really authenticates (no guest, no anonymous).
    let bad = Probe::local(
        n.layout().port,
        Some(&User {
            name: "rig".into(),
            password: "wrong".into(),
        }),
    );
    assert!(wait_ready(&bad, Duration::from_secs(2)).await.is_err());

    n.drop_connections().await.expect("close_all_connections");

    let (pid, epmd, dir) = (
        n.pid().expect("running"),
        n.epmd_pid(),
        n.dir().to_path_buf(),
    );
    n.kill().await.expect("kill");
    assert!(gone(pid).await);
    let t1 = Instant::now();
    tokio::time::timeout(Duration::from_secs(120), n.restart())
        .await
        .expect("restart in time")
        .expect("restart");
    eprintln!("rabbitmq: restarted in {:.2} s", t1.elapsed().as_secs_f64());
    assert_eq!(nodes_url(&nodes, &spec), url, "restart keeps the port");

    let pid = n.pid().expect("running");
    tokio::time::timeout(Duration::from_secs(60), n.stop())
        .await
        .expect("stop in time");
    assert!(n.logs().contains("queues at stop"), "{}", n.logs());
    assert!(gone(pid).await);
    if let Some(epmd) = epmd {
        assert!(gone(epmd).await, "private epmd survived");
    }
    drop(nodes);
    assert!(!dir.exists());
}

/// Two private RabbitMQ nodes at once (a failover pair) through the `Backend` trait: distinct ports and
/// node names, the transport URL lists both, and stopping the handle leaves nothing behind.
#[tokio::test]
#[ignore = "needs rabbitmq-server (ci/scripts/rabbitmq-install.sh)"]
async fn rabbitmq_two_nodes_failover_pair() {
    if !rabbitmq_here() {
        return;
    }
    let mut spec = BrokerSpec::new(BrokerKind::Rabbitmq.into(), templates_dir());
    spec.nodes = 2;
    let t0 = Instant::now();
    let handle = tokio::time::timeout(Duration::from_secs(180), backend().start(&spec))
        .await
        .expect("start within the timeout")
        .expect("two nodes start");
    eprintln!(
        "rabbitmq: 2 nodes ready in {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    let url = handle.transport_url(None);
    assert_eq!(url.hosts.len(), 2, "{url}");
    assert_ne!(url.hosts[0], url.hosts[1]);
    for n in &handle.nodes {
        wait_ready(&Probe::local(n.port(), None), T)
            .await
            .expect("each node answers");
    }
    // Killing node0 leaves node1 serving.
    handle.nodes[0].kill().await.expect("kill node0");
    wait_ready(&Probe::local(handle.nodes[1].port(), None), T)
        .await
        .expect("node1 still serves");
    let port0: u16 = url.hosts[0].port;
    assert!(refused(port0).await);
    tokio::time::timeout(Duration::from_secs(90), handle.stop())
        .await
        .expect("stop in time");
    let port1: u16 = url.hosts[1].port;
    assert!(refused(port1).await);
}

/// Writes an executable shell script.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write script");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    p
}

/// qpidd and qdrouterd are not packaged here, so their code path (render into the node directory, run the
/// binary with its config, readiness, logs, stop) runs against shims that read the port from the rendered
/// config and exec the embedded broker with the matching flavour and the SASL user from the scenario.
#[tokio::test]
async fn qpidd_and_qdrouterd_code_path_with_shim_binaries() {
    let bin = tempfile::tempdir().expect("tempdir");
    let harness = env!("CARGO_BIN_EXE_harness");
    let qpidd = script(
        bin.path(),
        "qpidd",
        &format!(
            "#!/bin/sh\n[ \"$1\" = --config ] || {{ echo \"usage: qpidd --config FILE\" >&2; exit 2; }}\n\
             port=$(sed -n 's/^port=//p' \"$2\")\n\
             grep -q '^auth=yes' \"$2\" && user=\"--user stackqpid:secretqpid\"\n\
             echo \"qpidd shim: config $2 port $port\"\n\
             exec {harness} broker serve --flavour qpidd --port \"$port\" $user\n"
        ),
    );
    let qdrouterd = script(
        bin.path(),
        "qdrouterd",
        &format!(
            "#!/bin/sh\n[ \"$1\" = -c ] || {{ echo \"usage: qdrouterd -c FILE\" >&2; exit 2; }}\n\
             port=$(sed -n 's/^ *port: *//p' \"$2\" | head -n1)\n\
             echo \"qdrouterd shim: config $2 port $port\"\n\
             exec {harness} broker serve --flavour router --port \"$port\"\n"
        ),
    );
    let b = ProcessBackend::new()
        .with_binary(BrokerKind::Qpidd, &qpidd)
        .with_binary(BrokerKind::Qdrouterd, &qdrouterd);

    // qpidd with a SASL user: saslpasswd2 builds the database next to the rendered sasl2/qpidd.conf.
    let mut spec = BrokerSpec::new(BrokerKind::Qpidd.into(), templates_dir());
    spec.users = vec![User {
        name: "stackqpid".into(),
        password: "secretqpid".into(),
    }];
    let have_saslpasswd2 = ["/usr/sbin/saslpasswd2", "/usr/bin/saslpasswd2"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !have_saslpasswd2 {
        spec.users.clear();
        eprintln!("saslpasswd2 not installed: qpidd without users");
    }
    let nodes = tokio::time::timeout(T, b.start_nodes(&spec))
        .await
        .expect("in time")
        .expect("qpidd (shim) starts");
    let n = &nodes[0];
    assert_eq!(n.product(), "qpidd");
    let conf = std::fs::read_to_string(n.dir().join("qpidd.conf")).expect("qpidd.conf written");
    assert!(
        conf.contains(&format!("port={}", n.layout().port)),
        "{conf}"
    );
    assert!(conf.contains("queue-patterns=exclusive"), "{conf}");
    let mode = std::fs::metadata(n.dir().join("qpidd.conf"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("stat");
    assert_eq!(mode, 0o600, "configs may hold secrets");
    if have_saslpasswd2 {
        assert!(n.dir().join("sasl2/qpidd.sasldb").exists());
        wait_ready(&Probe::local(n.port(), spec.users.first()), T)
            .await
            .expect("the SASL user is accepted");
    }
    assert!(n.logs().contains("qpidd shim: config"), "{}", n.logs());
    let (pid, dir) = (n.pid().expect("running"), n.dir().to_path_buf());
    tokio::time::timeout(T, n.stop())
        .await
        .expect("stop in time");
    assert!(gone(pid).await);
    drop(nodes);
    assert!(!dir.exists());

    // qdrouterd with a notification link route to a broker (qpid-dual shape).
    let mut spec = BrokerSpec::new(BrokerKind::Qdrouterd.into(), templates_dir());
    spec.overrides
        .insert("notify_link_route".into(), "127.0.0.1:5673".into());
    let nodes = tokio::time::timeout(T, b.start_nodes(&spec))
        .await
        .expect("in time")
        .expect("qdrouterd (shim) starts");
    let conf = std::fs::read_to_string(nodes[0].dir().join("qdrouterd.conf")).expect("written");
    assert!(conf.contains("linkRoute {"), "{conf}");
    assert!(nodes[0].logs().contains("qdrouterd shim: config"));
    wait_ready(&Probe::local(nodes[0].port(), None), T)
        .await
        .expect("router answers");
}
