//! Snapshot tests of the broker configuration templates (`templates/qpidd`, `templates/qdrouterd`,
//! `templates/rabbitmq`) rendered by the process backend for a few option sets, plus the rules around them:
//! every template is covered, a user's `--templates DIR` is used as data, errors name the template, and the
//! preview (`harness render`) never shows passwords.

use std::path::{Path, PathBuf};

use harness::backend::process::{
    format_rendered, render_files, render_preview, NodeLayout, RenderedFile,
};
use harness::backend::{BrokerKind, BrokerSpec, User};

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../templates")
}

fn spec(kind: BrokerKind) -> BrokerSpec {
    BrokerSpec::new(kind.into(), templates_dir())
}

fn users() -> Vec<User> {
    vec![
        User {
            name: "stackqpid".into(),
            password: "secretqpid".into(),
        },
        User {
            name: "nova".into(),
            password: "n\"ova pw".into(),
        },
    ]
}

fn render(spec: &BrokerSpec, index: usize) -> Vec<RenderedFile> {
    render_files(spec, &NodeLayout::preview(spec.kind(), index)).expect("templates render")
}

fn snap(name: &str, files: &[RenderedFile]) {
    insta::assert_snapshot!(name, format_rendered(files));
}

#[test]
fn qpidd_anonymous() {
    snap("qpidd_anonymous", &render(&spec(BrokerKind::Qpidd), 0));
}

#[test]
fn qpidd_auth() {
    let mut s = spec(BrokerKind::Qpidd);
    s.users = users();
    snap("qpidd_auth", &render(&s, 0));
}

#[test]
fn qpidd_custom_patterns_without_service_name() {
    let mut s = spec(BrokerKind::Qpidd);
    s.overrides
        .insert("queue_patterns".into(), "exclusive, unicast, rpc".into());
    s.overrides
        .insert("topic_patterns".into(), "broadcast,fanout".into());
    s.overrides
        .insert("sasl_service_name".into(), String::new());
    s.overrides.insert("log_enable".into(), "trace+".into());
    s.overrides
        .insert("load_module".into(), "/usr/lib/qpid/daemon/acl.so".into());
    snap("qpidd_custom_patterns", &render(&s, 1));
}

#[test]
fn qdrouterd_anonymous() {
    snap(
        "qdrouterd_anonymous",
        &render(&spec(BrokerKind::Qdrouterd), 0),
    );
}

#[test]
fn qdrouterd_auth() {
    let mut s = spec(BrokerKind::Qdrouterd);
    s.users = users();
    snap("qdrouterd_auth", &render(&s, 0));
}

#[test]
fn qdrouterd_notify_link_route_to_qpidd() {
    // devstack's qpid-dual: qdrouterd for RPC, notifications link-routed to a qpidd.
    let mut s = spec(BrokerKind::Qdrouterd);
    s.overrides
        .insert("notify_link_route".into(), "127.0.0.1:5673".into());
    s.overrides
        .insert("notify_link_route_user".into(), "stackqpid".into());
    s.overrides
        .insert("notify_link_route_password".into(), "secretqpid".into());
    s.overrides.insert("worker_threads".into(), "2".into());
    snap("qdrouterd_link_route", &render(&s, 0));
}

#[test]
fn rabbitmq_anonymous() {
    snap(
        "rabbitmq_anonymous",
        &render(&spec(BrokerKind::Rabbitmq), 0),
    );
}

#[test]
fn rabbitmq_auth() {
    let mut s = spec(BrokerKind::Rabbitmq);
    s.users = users();
    snap("rabbitmq_auth", &render(&s, 0));
}

#[test]
fn rabbitmq_second_node_with_extra_plugin() {
    let mut s = spec(BrokerKind::Rabbitmq);
    s.overrides
        .insert("extra_plugins".into(), "rabbitmq_management".into());
    s.overrides.insert("log_level".into(), "debug".into());
    snap("rabbitmq_node1_extra_plugin", &render(&s, 1));
}

#[test]
fn rabbitmq_definitions_are_valid_json_with_every_user() {
    let mut s = spec(BrokerKind::Rabbitmq);
    s.users = users();
    let files = render(&s, 0);
    let defs = files
        .iter()
        .find(|f| f.path == "definitions.json")
        .expect("definitions.json rendered");
    let v: serde_json::Value = serde_json::from_str(&defs.contents).expect("valid JSON");
    let names: Vec<&str> = v["users"]
        .as_array()
        .expect("users array")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["stackqpid", "nova"]);
    assert_eq!(v["users"][1]["password"], "n\"ova pw");
}

#[test]
fn every_template_is_rendered_by_some_kind() {
    let names = harness::templates::list(&templates_dir()).expect("templates load");
    for kind in [
        BrokerKind::Qpidd,
        BrokerKind::Qdrouterd,
        BrokerKind::Rabbitmq,
    ] {
        let prefix = format!("{kind}/");
        let expected: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_prefix(&prefix))
            .map(|n| n.trim_end_matches(".tera").to_string())
            .collect();
        assert!(!expected.is_empty(), "no templates for {kind}");
        let mut s = spec(kind);
        s.users = users();
        let got: Vec<String> = render(&s, 0).into_iter().map(|f| f.path).collect();
        assert_eq!(got, expected, "{kind}");
    }
}

#[test]
fn user_templates_dir_is_used_as_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("qpidd")).expect("mkdir");
    std::fs::write(
        dir.path().join("qpidd/qpidd.conf.tera"),
        "port={{ port }}\n{% for p in queue_patterns %}queue-patterns={{ p }}\n{% endfor %}",
    )
    .expect("write");
    let s = BrokerSpec::new(BrokerKind::Qpidd.into(), dir.path());
    let files = render_files(&s, &NodeLayout::preview(BrokerKind::Qpidd, 0)).expect("renders");
    assert_eq!(
        files,
        vec![RenderedFile {
            path: "qpidd.conf".into(),
            contents: "port=5672\nqueue-patterns=exclusive\nqueue-patterns=unicast\n".into(),
        }]
    );
}

#[test]
fn template_errors_name_the_template_and_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("rabbitmq")).expect("mkdir");
    std::fs::write(
        dir.path().join("rabbitmq/rabbitmq.conf.tera"),
        "listeners.tcp.default = {{ no_such_var }}\n",
    )
    .expect("write");
    let s = BrokerSpec::new(BrokerKind::Rabbitmq.into(), dir.path());
    let err = render_files(&s, &NodeLayout::preview(BrokerKind::Rabbitmq, 0))
        .expect_err("undefined variable");
    let msg = err.to_string();
    assert!(msg.contains("rabbitmq/rabbitmq.conf.tera"), "{msg}");
    assert!(msg.contains("no_such_var"), "{msg}");

    let empty = tempfile::tempdir().expect("tempdir");
    let s = BrokerSpec::new(BrokerKind::Qdrouterd.into(), empty.path());
    let msg = render_files(&s, &NodeLayout::preview(BrokerKind::Qdrouterd, 0))
        .expect_err("no templates")
        .to_string();
    assert!(msg.contains("qdrouterd/"), "{msg}");
}

#[test]
fn preview_hides_passwords() {
    for kind in [
        BrokerKind::Qpidd,
        BrokerKind::Qdrouterd,
        BrokerKind::Rabbitmq,
    ] {
        let mut s = spec(kind);
        s.users = users();
        s.overrides
            .insert("notify_link_route".into(), "127.0.0.1:5673".into());
        s.overrides
            .insert("notify_link_route_user".into(), "u".into());
        s.overrides
            .insert("notify_link_route_password".into(), "linkpw".into());
        let text = format_rendered(&render_preview(&s).expect("preview renders"));
        assert!(!text.contains("secretqpid"), "{kind}: {text}");
        assert!(!text.contains("linkpw"), "{kind}: {text}");
        assert!(text.contains("==> "), "{kind}");
    }
}

#[test]
fn bad_link_route_is_a_clear_error() {
    let mut s = spec(BrokerKind::Qdrouterd);
    s.overrides
        .insert("notify_link_route".into(), "localhost".into());
    let msg = render_files(&s, &NodeLayout::preview(BrokerKind::Qdrouterd, 0))
        .expect_err("bad override")
        .to_string();
    assert!(msg.contains("notify_link_route"), "{msg}");
}

// --- Fedora image templates (templates/images/*-fedora.Dockerfile.tera) ------------------------------
// Fedora 40 is the last release that carried qpid-cpp and qpid-dispatch; it is end of life, so the
// repositories point at an archive mirror that the caller names (never a built-in host).

const FEDORA_ARCHIVE: &str = "https://fedora-archive.invalid/fedora/linux";

/// The variables `ci/images/build-registry.sh` and the container backend give an image template.
fn fedora_context(broker: &str, version: &str, mirror: Option<&str>) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("version", version);
    ctx.insert("base_image", "fedora:40");
    ctx.insert("image_name", &format!("amqp1-rig/{broker}:fedora40"));
    ctx.insert("amqp_port", &5672u16);
    if let Some(m) = mirror {
        ctx.insert("fedora_archive_mirror", m);
    }
    ctx
}

fn render_fedora(broker: &str, version: &str) -> String {
    harness::templates::render(
        &templates_dir(),
        &format!("images/{broker}-fedora.Dockerfile.tera"),
        &fedora_context(broker, version, Some(FEDORA_ARCHIVE)),
    )
    .unwrap_or_else(|e| panic!("{broker}-fedora renders: {e}"))
}

/// What every Fedora image must do: Fedora 40 base, the archive for both repositories, no other host.
fn assert_fedora_image(broker: &str, text: &str) {
    assert!(text.contains("\nFROM fedora:40\n"), "{broker}: {text}");
    for repo in ["releases", "updates"] {
        assert!(
            text.contains(&format!("baseurl={FEDORA_ARCHIVE}/{repo}/$releasever/")),
            "{broker}: {repo} repository not on the archive mirror:\n{text}"
        );
    }
    let hosts: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == '=' || c == '|' || c == '\'')
        .filter(|w| w.contains("://"))
        .filter(|w| !w.starts_with(FEDORA_ARCHIVE))
        .collect();
    assert!(
        hosts.is_empty(),
        "{broker}: built-in download hosts {hosts:?}"
    );
    assert!(text.contains("amqp1-rig=1"), "{broker}: no amqp1-rig label");
    let entrypoint = format!("COPY {broker}-entrypoint.sh ");
    assert!(
        text.contains(&entrypoint),
        "{broker}: entrypoint not copied"
    );
    assert!(
        templates_dir()
            .join(format!("images/files/{broker}-entrypoint.sh"))
            .is_file(),
        "{broker}: entrypoint file missing"
    );
}

#[test]
fn qpidd_fedora_image() {
    let text = render_fedora("qpidd", "1.39.0");
    assert_fedora_image("qpidd", &text);
    assert!(
        text.contains("qpid-cpp-server-1.39.0 qpid-proton-c "),
        "{text}"
    );
    assert!(
        text.contains("qpidd --help | grep -q queue-patterns"),
        "{text}"
    );
    assert!(text.contains("grep -qF \" 1.39.0\""), "{text}");
    assert!(text.contains("org.amqp1-rig.version=\"1.39.0\""), "{text}");
    insta::assert_snapshot!("image_qpidd_fedora40", text);
}

#[test]
fn qdrouterd_fedora_image() {
    let text = render_fedora("qdrouterd", "1.19.0");
    assert_fedora_image("qdrouterd", &text);
    assert!(
        text.contains("qpid-dispatch-router-1.19.0 qpid-proton-c python3-qpid-proton"),
        "{text}"
    );
    assert!(
        text.contains("qdrouterd --version | grep -qxF \"1.19.0\""),
        "{text}"
    );
    assert!(text.contains("org.amqp1-rig.version=\"1.19.0\""), "{text}");
    insta::assert_snapshot!("image_qdrouterd_fedora40", text);
}

#[test]
fn fedora_images_any_version_is_not_pinned() {
    let qpidd = render_fedora("qpidd", "any");
    assert!(qpidd.contains("qpid-cpp-server qpid-proton-c "), "{qpidd}");
    assert!(!qpidd.contains("grep -qF"), "{qpidd}");
    let router = render_fedora("qdrouterd", "any");
    assert!(
        router.contains("qpid-dispatch-router qpid-proton-c "),
        "{router}"
    );
    assert!(router.contains("RUN qdrouterd --version\n"), "{router}");
}

#[test]
fn fedora_images_need_the_archive_mirror() {
    for broker in ["qpidd", "qdrouterd"] {
        let err = harness::templates::render(
            &templates_dir(),
            &format!("images/{broker}-fedora.Dockerfile.tera"),
            &fedora_context(broker, "any", None),
        )
        .expect_err("no mirror, no Dockerfile");
        let msg = format!("{err:#}");
        assert!(msg.contains("fedora_archive_mirror"), "{broker}: {msg}");
    }
}
