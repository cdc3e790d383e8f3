//! Hostile input: the `harness` binary on files and command lines built to break it (the corpus in
//! tests/fixtures/hostile/ plus big or special files made here). Each case asserts the exit code, the
//! words of the message, and that no output panics, overflows, hangs or shows a password.
//!
//! Every run is under a memory limit (`ulimit -v`) and a wall-clock deadline, so a regression shows as
//! a failed assertion, not as a stuck or swapping test run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The password used everywhere below: `/`, `#`, `@` and `%` are the characters that broke URL parsing.
const PW: &str = "p/a#s@s%w0rd-SEKRIT";
/// Its percent-encoded form.
const PW_ENC: &str = "p%2Fa%23s%40s%25w0rd-SEKRIT";
/// Address space limit of each run (KiB): far above what a scenario needs, far below "unbounded".
const MEMORY_KIB: u64 = 3_000_000;
/// Deadline of each run.
const DEADLINE: Duration = Duration::from_secs(60);

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Contents of report files written by the run.
    reports: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}\n{}\n{}", self.stdout, self.stderr, self.reports)
    }
}

fn harness_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hostile(name: &str) -> String {
    harness_dir()
        .join("tests/fixtures/hostile")
        .join(name)
        .display()
        .to_string()
}

/// Runs the harness with `args` (and `env`) under the memory limit and the deadline.
fn run_env(args: &[&str], env: &[(&str, &str)], reports: &[&Path]) -> Out {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {MEMORY_KIB}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_harness"))
        .args(args)
        .current_dir(harness_dir().parent().expect("workspace"))
        .env_remove("HARNESS_TEMPLATES")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("the harness binary starts");
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t1 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("harness {args:?} did not finish within {DEADLINE:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rep = String::new();
    for r in reports {
        rep.push_str(&std::fs::read_to_string(r).unwrap_or_default());
    }
    Out {
        code: status.code(),
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
        reports: rep,
    }
}

fn run(args: &[&str]) -> Out {
    run_env(args, &[], &[])
}

/// Exit code `code`, every word of `words` in stderr, no panic, no stack overflow, no password.
#[track_caller]
fn check(what: &str, out: &Out, code: i32, words: &[&str]) {
    let all = out.all();
    assert!(
        !all.contains("panicked") && !all.contains("overflowed its stack"),
        "{what}: crashed:\n{all}"
    );
    assert_eq!(out.code, Some(code), "{what}: exit code\n{all}");
    for w in words {
        assert!(
            out.stderr.contains(w),
            "{what}: no {w:?} in stderr:\n{}",
            out.stderr
        );
    }
    for secret in [PW, PW_ENC, "w0rd-SEKRIT"] {
        assert!(
            !all.contains(secret),
            "{what}: the password is shown:\n{all}"
        );
    }
}

fn run_file(file: &str) -> Out {
    run(&["run", "--no-snapshot", file])
}

#[test]
fn deep_nesting_is_refused_without_overflowing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 3000;
    let cases = [
        (
            "flow.yaml",
            format!(
                "steps:\n  - call: {{target: {{topic: t}}, method: x, args: {{a: {}{}}}}}\n",
                "[".repeat(n),
                "]".repeat(n)
            ),
        ),
        (
            "block.yaml",
            format!(
                "steps:\n  - notify:\n      priority: info\n      event_type: x\n      payload:\n        {}x\n",
                "- ".repeat(n)
            ),
        ),
        (
            "maps.yaml",
            format!(
                "steps:\n  - sleep: 1ms\nvars: {}1{}\n",
                "{a: ".repeat(n),
                "}".repeat(n)
            ),
        ),
    ];
    for (name, text) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        let out = run_file(&p.display().to_string());
        check(name, &out, 3, &["nests deeper than 64 levels", name]);
    }
}

#[test]
fn files_that_are_not_regular_or_too_big() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
    for (what, path, word) in [
        ("/dev/zero", "/dev/zero".to_string(), "character device"),
        (
            "/dev/urandom",
            "/dev/urandom".to_string(),
            "character device",
        ),
        (
            "symlink to /dev/zero",
            link.display().to_string(),
            "character device",
        ),
        ("a directory", dir.path().display().to_string(), "directory"),
    ] {
        let out = run_file(&path);
        check(what, &out, 3, &["cannot read scenario", word]);
    }
    let big = dir.path().join("big.yaml");
    std::fs::write(
        &big,
        format!("steps: []\n{}", "# padding\n".repeat(200_000)),
    )
    .expect("write");
    check(
        "2 MB file",
        &run_file(&big.display().to_string()),
        3,
        &["larger than the limit of 1048576 bytes"],
    );
    // A FIFO: `run` must not block on it, nor `list` on a directory holding one.
    let fifo_dir = dir.path().join("list");
    std::fs::create_dir(&fifo_dir).expect("mkdir");
    let fifo = fifo_dir.join("fifo.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo works here");
    check(
        "FIFO",
        &run_file(&fifo.display().to_string()),
        3,
        &["not a regular file (a FIFO)"],
    );
    std::fs::copy(
        harness_dir().join("../scenarios/rpc.yaml"),
        fifo_dir.join("rpc.yaml"),
    )
    .expect("copy");
    let out = run(&["list", &fifo_dir.display().to_string()]);
    check("list with a FIFO", &out, 0, &[]);
    assert!(
        out.stdout
            .contains("not readable: not a regular file (a FIFO)"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("RPC basics"), "{}", out.stdout);
}

#[test]
fn templates_root_is_not_walked() {
    let out = run(&["--templates", "/", "render"]);
    check(
        "--templates / render",
        &out,
        2,
        &["is it the templates directory"],
    );
    let out = run(&[
        "--templates",
        "/",
        "run",
        "--no-snapshot",
        &hostile("unknown-option.yaml"),
    ]);
    check(
        "--templates / run",
        &out,
        3,
        &["is it the templates directory"],
    );
}

/// Every class of the corpus: the file, its exit code and the words the message must hold
/// (the position included).
#[test]
fn corpus() {
    let cases: &[(&str, i32, &[&str])] = &[
        (
            "repeat-huge.yaml",
            3,
            &["`repeat` must be at most 1000000", "repeat-huge.yaml:6:"],
        ),
        (
            "notify-repeat-huge.yaml",
            3,
            &["`repeat` must be at most 1000000", ":2:"],
        ),
        ("nodes-huge.yaml", 3, &["`nodes` must be at most 9", ":1:"]),
        (
            "timeout-huge.yaml",
            3,
            &["is too long", "at most 1h", ":2:"],
        ),
        ("pause-huge.yaml", 3, &["is too long", "at most 1h", ":2:"]),
        ("sleep-huge.yaml", 3, &["is too long", ":2:"]),
        ("wait-huge.yaml", 3, &["must be at most 1000000000", ":5:"]),
        (
            "concurrency-huge.yaml",
            3,
            &["`concurrency` must be at most 1000"],
        ),
        (
            "dup-methods.yaml",
            3,
            &[
                "duplicate method 'echo'",
                ":8:13",
                "first defined at line 7, column 13",
            ],
        ),
        (
            "dup-vars.yaml",
            3,
            &[
                "duplicate var 'topic'",
                ":3:3",
                "first defined at line 2, column 3",
            ],
        ),
        (
            "dup-options.yaml",
            3,
            &[
                "duplicate driver option 'rpc_server_credit'",
                ":4:5",
                "line 3, column 5",
            ],
        ),
        (
            "dup-field.yaml",
            3,
            &["duplicate key 'method'", ":5:7", "line 4, column 7"],
        ),
        (
            "circular-vars.yaml",
            3,
            &["circular variable 'a': a -> b -> a", ":2:6"],
        ),
        (
            "var-expansion-bomb.yaml",
            3,
            &["expands to more than 4194304 bytes"],
        ),
        ("alias-bomb.yaml", 3, &["repetition limit exceeded"]),
        (
            "multi-document.yaml",
            3,
            &[
                "one YAML document",
                "multi-document.yaml:3:1",
                "second document starts here",
            ],
        ),
        (
            "unclosed-quote.yaml",
            3,
            &["unclosed double-quoted string", "unclosed-quote.yaml:1:14"],
        ),
        (
            "multiline-var.yaml",
            3,
            &["invalid duration 'nonsense'", "multiline-var.yaml:8:12"],
        ),
        (
            "notify-version-300.yaml",
            3,
            &["unknown notification version 300", "expected 1 or 2"],
        ),
        ("notify-version-overflow.yaml", 3, &["expected 1 or 2"]),
        (
            "bad-option-value.yaml",
            3,
            &["invalid value for driver option 'rpc_server_credit'", ":2:"],
        ),
        (
            "bad-option-in-ini.yaml",
            3,
            &["invalid value for driver option 'idle_timeout'"],
        ),
        (
            "unknown-option.yaml",
            3,
            &[
                "unknown option \"no_such_option\"",
                "unknown-option.yaml:3:71",
            ],
        ),
        ("bad-url.yaml", 3, &["is invalid", "bad-url.yaml:5:14"]),
        (
            "bad-vhost.yaml",
            3,
            &["invalid virtual host", "bad-vhost.yaml:3:12"],
        ),
        (
            "template-outside.yaml",
            3,
            &["invalid template path", "inside templates/", ":3:24"],
        ),
        (
            "password-diagnostic.yaml",
            3,
            &["unknown key 'bogus'", "password: \"***\""],
        ),
    ];
    for (file, code, words) in cases {
        let out = run_file(&hostile(file));
        check(file, &out, *code, words);
    }
    // A `{{ }}` in a comment is not a reference.
    let out = run_file(&hostile("var-in-comment.yaml"));
    check("var-in-comment.yaml", &out, 0, &[]);
}

#[test]
fn passwords_from_every_source_stay_hidden() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("r.json");
    let junit = dir.path().join("r.xml");
    let reports = [json.as_path(), junit.as_path()];
    let report_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "run".into(),
            "--no-snapshot".into(),
            "-v".into(),
            "--json".into(),
            json.display().to_string(),
            "--junit".into(),
            junit.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    // In the scenario, through --var and through the environment, on a real run against the embedded
    // broker (a call that works and one that times out) and on an invalid file.
    let scenario = dir.path().join("users.yaml");
    std::fs::write(
        &scenario,
        concat!(
            "broker:\n  users: [{name: nova, password: \"{{ pw }}\"}]\n",
            "services:\n  - name: s\n    config: {template: services/nova.conf.tera}\n",
            "    rpc_server: {target: {topic: t}, endpoints: [{methods: {echo: {}}}]}\n",
            "steps:\n",
            "  - call: {target: {topic: t}, method: echo, args: {x: 1}, expect: {result: {x: 1}}}\n",
            "  - call: {target: {topic: nobody}, method: echo, timeout: 200ms,\n",
            "           expect: {error: {kind: timed_out}}}\n",
        ),
    )
    .expect("write");
    let f = scenario.display().to_string();
    let var = format!("pw={PW}");
    let a = report_args(&["--var", &var, &f]);
    let out = run_env(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        &reports,
    );
    check("--var password, real run", &out, 0, &[]);
    assert!(
        out.reports.contains("testsuite"),
        "reports written: {}",
        out.reports
    );
    let a = report_args(&[&f]);
    let out = run_env(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[("HARNESS_VAR_PW", PW)],
        &reports,
    );
    check("HARNESS_VAR_PW, real run", &out, 0, &[]);
    let literal = dir.path().join("literal.yaml");
    std::fs::write(
        &literal,
        std::fs::read_to_string(&scenario)
            .expect("read")
            .replace("{{ pw }}", PW),
    )
    .expect("write");
    let a = report_args(&[&literal.display().to_string()]);
    let out = run_env(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        &reports,
    );
    check("password in the file, real run", &out, 0, &[]);
    // Invalid files: the source line shown holds the password.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        format!("broker:\n  users: [{{name: nova, password: \"{PW}\", extra: 1}}]\nsteps:\n  - sleep: 1ms\n"),
    )
    .expect("write");
    let a = report_args(&[&bad.display().to_string()]);
    let out = run_env(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        &reports,
    );
    check(
        "password in a diagnostic",
        &out,
        3,
        &["unknown key 'extra'"],
    );
    // --url: unencoded, encoded with a bad query, bad scheme, and --var without a name.
    for (what, url) in [
        (
            "unencoded password",
            format!("amqp://nova:{PW}@127.0.0.1:1/"),
        ),
        (
            "bad query",
            format!("amqp://nova:{PW_ENC}@127.0.0.1:1/?bogus_opt=1"),
        ),
        ("bad scheme", format!("http://nova:{PW_ENC}@127.0.0.1:1/")),
    ] {
        let out = run(&["run", "--no-snapshot", "--url", &url, &f]);
        check(what, &out, 2, &["invalid value for '--url <URL>'"]);
    }
    let out = run(&["run", "--no-snapshot", "--var", PW, &f]);
    check("--var without a name", &out, 2, &["expected NAME=VALUE"]);
    let out = run(&["run", "--no-snapshot", "--url", "garbage", &f]);
    check(
        "--url garbage",
        &out,
        2,
        &["invalid transport URL", "missing \"://\""],
    );
}

#[test]
fn error_reports_of_invalid_files_have_no_secret() {
    // The JSON report's `error` of an invalid scenario repeats the first diagnostic.
    let dir = tempfile::tempdir().expect("tempdir");
    let json: PathBuf = dir.path().join("r.json");
    let out = run_env(
        &[
            "run",
            "--no-snapshot",
            "--json",
            &json.display().to_string(),
            &hostile("bad-url.yaml"),
        ],
        &[],
        &[json.as_path()],
    );
    check("bad-url.yaml with --json", &out, 3, &["bad-url.yaml:5:14"]);
    assert!(out.reports.contains("invalid scenario"), "{}", out.reports);
}
