//! Snapshot files shared by the CLI (`harness run`) and `cargo test -p harness` (insta).
//!
//! Both read and write `scenarios/snapshots/<name>.snap` in insta's format (a `---` metadata header,
//! then the transcript). A mismatch writes `<name>.snap.new` next to it, which `cargo insta review`
//! picks up; `harness run --update` overwrites the `.snap`.

use std::path::{Path, PathBuf};

/// The snapshot name for a scenario file: its path under `scenarios/` without `.yaml`, `/` -> `__`.
pub fn snapshot_name(scenario_file: &Path) -> String {
    let s = scenario_file.to_string_lossy().replace('\\', "/");
    let rel = match s.rfind("scenarios/") {
        Some(i) => &s[i + "scenarios/".len()..],
        None => s.rsplit('/').next().unwrap_or(&s),
    };
    let rel = rel
        .strip_suffix(".yaml")
        .or_else(|| rel.strip_suffix(".yml"))
        .unwrap_or(rel);
    rel.replace('/', "__")
}

/// The `scenarios/` directory a scenario file belongs to (its nearest ancestor named `scenarios`, else
/// the file's directory).
pub fn scenarios_root(scenario_file: &Path) -> PathBuf {
    let mut p = scenario_file.parent();
    while let Some(dir) = p {
        if dir.file_name().is_some_and(|n| n == "scenarios") {
            return dir.to_path_buf();
        }
        p = dir.parent();
    }
    scenario_file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of the snapshot file of a scenario.
pub fn snapshot_path(scenario_file: &Path) -> PathBuf {
    scenarios_root(scenario_file)
        .join("snapshots")
        .join(format!("{}.snap", snapshot_name(scenario_file)))
}

/// Outcome of a snapshot check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The transcript matches.
    Matches,
    /// The snapshot was written (`--update`, or it did not exist and updating was requested).
    Written(PathBuf),
    /// It differs (or is missing): `diff` is printable; the new one was saved as `new_path`.
    Mismatch {
        /// Unified diff, old -> new.
        diff: String,
        /// The `.snap.new` written.
        new_path: PathBuf,
        /// Whether a snapshot existed at all.
        missing: bool,
    },
}

/// Reads the contents of an insta snapshot file (without its metadata header).
pub fn read_contents(path: &Path) -> std::io::Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(Some(strip_header(&text)))
}

fn strip_header(text: &str) -> String {
    let body = if let Some(rest) = text.strip_prefix("---\n") {
        match rest.find("\n---\n") {
            Some(i) => &rest[i + 5..],
            None => rest,
        }
    } else {
        text
    };
    normalize(body)
}

/// Normalises line endings and trailing whitespace like insta does.
pub fn normalize(s: &str) -> String {
    let s = s.replace("\r\n", "\n");
    let lines: Vec<&str> = s.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_string()
}

/// The file insta writes: metadata header + contents.
pub fn file_text(input_file: &str, contents: &str) -> String {
    format!(
        "---\nsource: harness/tests/scenarios.rs\nexpression: transcript\ninput_file: {input_file}\n---\n{}\n",
        normalize(contents)
    )
}

/// Path of a scenario's per-broker snapshot, `<name>@<variant>.snap` (e.g. `notify@embedded-router.snap`).
pub fn variant_path(scenario_file: &Path, variant: &str) -> PathBuf {
    let variant: String = variant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    scenarios_root(scenario_file)
        .join("snapshots")
        .join(format!("{}@{variant}.snap", snapshot_name(scenario_file)))
}

/// Compares `transcript` with the snapshot of `scenario_file`; with `update` writes it instead.
pub fn check(scenario_file: &Path, transcript: &str, update: bool) -> std::io::Result<Check> {
    check_on(scenario_file, None, transcript, update)
}

/// Like [`check`] for a run on another broker than the scenario's own (`variant`, e.g.
/// `embedded-router`): the per-broker snapshot is used when it exists, else the scenario's snapshot,
/// since most transcripts are the same on every broker. `update` and a mismatch's `.snap.new` go to the
/// per-broker file, so a broker's differences never overwrite the scenario's own snapshot.
pub fn check_on(
    scenario_file: &Path,
    variant: Option<&str>,
    transcript: &str,
    update: bool,
) -> std::io::Result<Check> {
    let own = snapshot_path(scenario_file);
    let (path, compared) = match variant {
        Some(v) => {
            let p = variant_path(scenario_file, v);
            let compared = if p.exists() { p.clone() } else { own };
            (p, compared)
        }
        None => (own.clone(), own),
    };
    let new_path = path.with_extension("snap.new");
    let input_file = input_file_name(scenario_file);
    let old = read_contents(&compared)?;
    let new = normalize(transcript);
    if update {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, file_text(&input_file, &new))?;
        let _ = std::fs::remove_file(&new_path);
        return Ok(Check::Written(path));
    }
    match old {
        Some(old) if old == new => {
            let _ = std::fs::remove_file(&new_path);
            Ok(Check::Matches)
        }
        old => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&new_path, file_text(&input_file, &new))?;
            let missing = old.is_none();
            Ok(Check::Mismatch {
                diff: diff(old.as_deref().unwrap_or(""), &new),
                new_path,
                missing,
            })
        }
    }
}

/// `scenarios/<rel>` as insta records it.
pub fn input_file_name(scenario_file: &Path) -> String {
    let s = scenario_file.to_string_lossy().replace('\\', "/");
    match s.rfind("scenarios/") {
        Some(i) => s[i..].to_string(),
        None => s,
    }
}

/// A readable unified diff (`-` old, `+` new) with 2 lines of context.
pub fn diff(old: &str, new: &str) -> String {
    let d = similar::TextDiff::from_lines(old, new);
    let mut out = String::new();
    for group in d.grouped_ops(2) {
        out.push_str("@@\n");
        for op in group {
            for change in d.iter_changes(&op) {
                let sign = match change.tag() {
                    similar::ChangeTag::Delete => '-',
                    similar::ChangeTag::Insert => '+',
                    similar::ChangeTag::Equal => ' ',
                };
                out.push(sign);
                out.push_str(change.value().trim_end_matches('\n'));
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert_eq!(snapshot_name(Path::new("scenarios/rpc.yaml")), "rpc");
        assert_eq!(
            snapshot_name(Path::new("/x/scenarios/compat/a-b.yaml")),
            "compat__a-b"
        );
        assert_eq!(
            snapshot_path(Path::new("/x/scenarios/compat/a.yaml")),
            PathBuf::from("/x/scenarios/snapshots/compat__a.snap")
        );
    }

    #[test]
    fn other_broker_falls_back_then_gets_its_own_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scen = dir.path().join("scenarios");
        std::fs::create_dir_all(&scen).expect("mkdir");
        let file = scen.join("n.yaml");
        check(&file, "same\n", true).expect("io");
        // No per-broker snapshot: the scenario's own is used.
        assert_eq!(
            check_on(&file, Some("embedded-router"), "same\n", false).expect("io"),
            Check::Matches
        );
        // A difference is written next to the per-broker name, never over the scenario's snapshot.
        match check_on(&file, Some("embedded-router"), "other\n", false).expect("io") {
            Check::Mismatch { new_path, .. } => {
                assert!(new_path.ends_with("snapshots/n@embedded-router.snap.new"))
            }
            other => panic!("unexpected {other:?}"),
        }
        check_on(&file, Some("embedded-router"), "other\n", true).expect("io");
        assert_eq!(
            read_contents(&variant_path(&file, "embedded-router")).expect("io"),
            Some("other".to_string())
        );
        assert_eq!(check(&file, "same\n", false).expect("io"), Check::Matches);
        assert_eq!(
            check_on(&file, Some("embedded-router"), "other\n", false).expect("io"),
            Check::Matches
        );
    }

    #[test]
    fn check_writes_new_and_update_accepts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let scen = dir.path().join("scenarios");
        std::fs::create_dir_all(&scen).expect("mkdir");
        let file = scen.join("a.yaml");
        match check(&file, "line 1\n", false).expect("io") {
            Check::Mismatch {
                missing, new_path, ..
            } => {
                assert!(missing);
                assert!(new_path.exists());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            check(&file, "line 1\n", true).expect("io"),
            Check::Written(_)
        ));
        assert_eq!(check(&file, "line 1", false).expect("io"), Check::Matches);
        // insta itself (and so `cargo insta review`) reads what we write.
        let parsed =
            insta::Snapshot::from_file(&snapshot_path(&file)).expect("insta parses our .snap");
        assert_eq!(parsed.metadata().input_file(), Some("scenarios/a.yaml"));
        match parsed.contents() {
            insta::internals::SnapshotContents::Text(t) => assert_eq!(t.to_string(), "line 1"),
            other => panic!("unexpected snapshot contents {other:?}"),
        }
        match check(&file, "line 2\n", false).expect("io") {
            Check::Mismatch { diff, .. } => assert_eq!(diff, "@@\n-line 1\n+line 2\n"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
