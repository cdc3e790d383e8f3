//! Loading a scenario: variables, YAML parsing with positions, and semantic validation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::limits;
use super::locate::{self, Locator, Span};
use super::model::ScenarioFile;
use super::read::{self, ReadError};
use super::typed::Scenario;
use super::validate;
use super::vars;

/// A parsed and validated scenario.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The file as named on the command line (used in messages and snapshot names).
    pub file: String,
    /// Source after variable substitution.
    pub source: String,
    /// The checked scenario.
    pub scenario: Scenario,
    /// Positions of keys and values in `source`.
    pub locator: Locator,
    /// The variables in force.
    pub vars: BTreeMap<String, String>,
    /// The file as written.
    pub text: String,
    /// Maps positions in `source` back to `text`.
    pub map: vars::SourceMap,
    /// Values never to print (passwords, secret-named variables).
    pub secrets: Vec<String>,
}

impl Loaded {
    /// A diagnostic at `span` (a position in `source`) as an [`Invalid`] against the file as written.
    pub fn invalid(&self, diagnostics: Vec<Diagnostic>) -> Invalid {
        Invalid {
            file: self.file.clone(),
            source: redact(&self.text, &self.secrets),
            diagnostics: diagnostics
                .into_iter()
                .map(|d| {
                    redact_diagnostic(
                        Diagnostic {
                            span: self.map.to_input(d.span),
                            ..d
                        },
                        &self.secrets,
                    )
                })
                .collect(),
        }
    }
}

/// A scenario that failed to load, with everything needed to render its diagnostics.
#[derive(Debug, Clone)]
pub struct Invalid {
    /// File name as given.
    pub file: String,
    /// The text the diagnostics point into.
    pub source: String,
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Invalid {
    /// Renders every diagnostic plus a summary line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.diagnostics {
            out.push_str(&d.render(&self.file, &self.source));
            out.push('\n');
        }
        let n = self.diagnostics.len();
        out.push_str(&format!(
            "error: scenario {} is invalid ({} error{})\n",
            self.file,
            n,
            if n == 1 { "" } else { "s" }
        ));
        out
    }
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (missing, not a regular file, too large, not text).
    #[error("cannot read scenario {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: ReadError,
    },
    /// The file is not a valid scenario.
    #[error("{}", .0.render())]
    Invalid(Box<Invalid>),
}

/// Loads `path`, with `env` (process environment pairs) and `cli_vars` (`--var`) applied.
pub fn load_file(
    path: &Path,
    env: &[(String, String)],
    cli_vars: &[(String, String)],
) -> Result<Loaded, LoadError> {
    let text = read::read_text(path, limits::MAX_FILE_BYTES).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let file = path.display().to_string();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("scenario")
        .to_string();
    parse_str(&file, &stem, &text, env, cli_vars).map_err(|e| LoadError::Invalid(Box::new(e)))
}

/// Replaces every secret (and its percent-encoded form) and the password of any `scheme://user:pw@`
/// in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    let mut all: Vec<String> = Vec::new();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        all.push(s.clone());
        let enc = percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
        all.push(enc);
    }
    // Longest first, so that a secret containing another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in &all {
        out = out.replace(s.as_str(), "***");
    }
    let re = Regex::new(r#"(://[^:/@\s"']*:)[^\s"']*@"#).unwrap_or_else(|_| unreachable!());
    re.replace_all(&out, "${1}***@").into_owned()
}

/// Whether a variable named `name` holds a secret (`password`, `db_pass`, `api_token`, `secret`...).
pub fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pass", "pw", "secret", "token", "credential", "key"]
        .iter()
        .any(|w| n.contains(w))
}

fn redact_diagnostic(d: Diagnostic, secrets: &[String]) -> Diagnostic {
    Diagnostic {
        message: redact(&d.message, secrets),
        label: redact(&d.label, secrets),
        help: d.help.map(|h| redact(&h, secrets)),
        span: d.span,
    }
}

/// Parses and validates scenario `text` named `file`.
/// The loading pipeline in order (size and nesting bounds, variables, the duplicate-key scan, serde,
/// validation), each stage's diagnostics mapped back to the file: kept in one place so the order of
/// the stages is visible.
pub fn parse_str(
    file: &str,
    default_name: &str,
    text: &str,
    env: &[(String, String)],
    cli_vars: &[(String, String)],
) -> Result<Loaded, Invalid> {
    // Variables whose name says they hold a secret are never printed; values used as a `password:` are
    // found by the scans below, URLs' passwords by `redact`.
    let mut secrets: Vec<String> = env
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("HARNESS_VAR_").map(|k| (k, v)))
        .chain(cli_vars.iter().map(|(k, v)| (k.as_str(), v)))
        .filter(|(k, _)| secret_name(k))
        .map(|(_, v)| v.clone())
        .collect();
    let raw_scan = locate::scan(text);
    secrets.extend(raw_scan.secrets.iter().cloned());
    let invalid_raw = |diagnostics: Vec<Diagnostic>, secrets: &[String]| Invalid {
        file: file.into(),
        source: redact(text, secrets),
        diagnostics: diagnostics
            .into_iter()
            .map(|d| redact_diagnostic(d, secrets))
            .collect(),
    };
    // Structural problems of the file as written (duplicate keys, depth, documents) come first: they
    // make everything after them meaningless (a duplicate var is not an undefined one).
    if !raw_scan.problems.is_empty() {
        return Err(invalid_raw(raw_scan.problems.clone(), &secrets));
    }
    let merged = vars::merge(vars::file_vars(text), env, cli_vars);
    secrets.extend(
        merged
            .iter()
            .filter(|(k, v)| secret_name(k) && !v.is_empty())
            .map(|(_, v)| v.clone()),
    );
    let var_span = |name: &str| {
        raw_scan
            .locator
            .value(&format!("vars.{name}"))
            .or_else(|| raw_scan.locator.key("vars"))
            .unwrap_or(Span {
                line: 1,
                col: 1,
                len: 1,
            })
    };
    let vars = vars::resolve(&merged, &var_span).map_err(|d| invalid_raw(d, &secrets))?;
    let (source, map) = vars::substitute(text, &vars).map_err(|d| invalid_raw(d, &secrets))?;
    // Diagnostics below point into `source`; the map takes them back to the file as written.
    let invalid = |diagnostics: Vec<Diagnostic>, secrets: &[String]| {
        invalid_raw(
            diagnostics
                .into_iter()
                .map(|d| Diagnostic {
                    span: map.to_input(d.span),
                    ..d
                })
                .collect(),
            secrets,
        )
    };
    if source.trim().is_empty()
        || source
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(invalid(
            vec![Diagnostic::new(
                "the scenario file is empty",
                Span {
                    line: 1,
                    col: 1,
                    len: 1,
                },
                "expected a mapping with at least `steps:`",
            )],
            &secrets,
        ));
    }
    let scan = locate::scan(&source);
    secrets.extend(scan.secrets.iter().cloned());
    if let Some(d) = scan.problems.first() {
        // Duplicates, depth or documents brought in by a variable's value.
        return Err(invalid(vec![d.clone()], &secrets));
    }
    let locator = scan.locator;
    let raw: ScenarioFile = match serde_yaml::from_str(&source) {
        Ok(s) => s,
        Err(e) => {
            let d = match &scan.syntax {
                // yaml-rust2 and libyaml agree there is a syntax error; the former says where a
                // string opened.
                Some(d) if d.message.starts_with("unclosed") => d.clone(),
                _ => serde_diagnostic(&e, &source, &locator),
            };
            return Err(invalid(vec![d], &secrets));
        }
    };
    let mut scenario =
        validate::validate(&raw, &locator, default_name).map_err(|d| invalid(d, &secrets))?;
    for step in &mut scenario.steps {
        step.line = map.line(step.line);
    }
    Ok(Loaded {
        file: file.into(),
        source,
        scenario,
        locator,
        vars,
        text: text.to_string(),
        map,
        secrets,
    })
}

fn backticked(s: &str) -> Vec<String> {
    let re = Regex::new(r"`([^`]*)`").unwrap_or_else(|_| unreachable!());
    re.captures_iter(s)
        .filter_map(|c| c.get(1))
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Length of the token starting at (line, col) in `source`: up to whitespace, `:` or a flow delimiter.
fn token_len(source: &str, line: usize, col: usize) -> usize {
    let Some(l) = source.lines().nth(line.saturating_sub(1)) else {
        return 1;
    };
    l.chars()
        .skip(col.saturating_sub(1))
        .take_while(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | '{' | '}' | '[' | ']'))
        .count()
        .max(1)
}

/// Finds the span of key `name` in the mapping that starts at or after `from` (serde_yaml points at the
/// mapping or the value for unknown fields).
fn find_key(source: &str, locator: &Locator, name: &str, from: Span) -> Option<Span> {
    let _ = locator;
    for (i, l) in source
        .lines()
        .enumerate()
        .skip(from.line.saturating_sub(1))
        .take(200)
    {
        let stripped = l.trim_start().trim_start_matches("- ");
        let indent = l.len() - stripped.len();
        for (pos, _) in l.match_indices(name) {
            if pos < indent && i + 1 != from.line {
                continue;
            }
            let after = &l[pos + name.len()..];
            let before_ok = pos == 0
                || matches!(
                    l.as_bytes()[pos - 1],
                    b' ' | b'{' | b',' | b'-' | b'"' | b'\''
                );
            if before_ok
                && after
                    .trim_start_matches(['"', '\''])
                    .trim_start()
                    .starts_with(':')
            {
                if i + 1 == from.line && pos + 1 < from.col.saturating_sub(name.len() + 2) {
                    continue;
                }
                return Some(Span {
                    line: i + 1,
                    col: l[..pos].chars().count() + 1,
                    len: name.chars().count(),
                });
            }
        }
    }
    None
}

/// What a whole number at `path` (serde's `steps[0].notify.version`) may be, with its bound.
fn whole_number_bound(path: &str) -> String {
    let last = path.rsplit('.').next().unwrap_or("");
    match last {
        "version" => "1 or 2".to_string(),
        "repeat" => format!("a whole number from 1 to {}", limits::MAX_REPEAT),
        "concurrency" => format!("a whole number from 1 to {}", limits::MAX_CONCURRENCY),
        "nodes" => format!("a whole number from 1 to {}", limits::MAX_NODES),
        "requeue" => format!("a whole number from 0 to {}", limits::MAX_REQUEUE),
        _ => format!("a whole number from 0 to {}", limits::MAX_EXPECTED_COUNT),
    }
}

/// Turns a serde_yaml error into a diagnostic with a location, an expectation and a suggestion.
/// One match over the shapes of serde_yaml's messages (unknown field, unknown variant, wrong type,
/// missing field, ...): long because each shape gets its own wording and suggestion.
pub fn serde_diagnostic(e: &serde_yaml::Error, source: &str, locator: &Locator) -> Diagnostic {
    let loc = e.location().map(|l| Span {
        line: l.line(),
        col: l.column(),
        len: 1,
    });
    let full = e.to_string();
    let tail = Regex::new(r" at line \d+ column \d+").unwrap_or_else(|_| unreachable!());
    let msg = tail.replace_all(&full, "").to_string();
    let prefix = Regex::new(r"^([\w\[\]\.\-]+): ").unwrap_or_else(|_| unreachable!());
    let (path, msg) = match prefix.captures(&msg) {
        Some(c) => {
            let p = c.get(1).map(|m| m.as_str().to_string()).unwrap_or_default();
            let rest = msg[c.get(0).map(|m| m.end()).unwrap_or(0)..].to_string();
            (Some(p), rest)
        }
        None => (None, msg),
    };
    let mut span = loc.unwrap_or(Span {
        line: 1,
        col: 1,
        len: 1,
    });
    let in_ = path
        .as_deref()
        .map(|p| format!(" in `{p}`"))
        .unwrap_or_default();
    let names = backticked(&msg);
    if msg.starts_with("unknown field") {
        let given = names.first().cloned().unwrap_or_default();
        let expected: Vec<&str> = names.iter().skip(1).map(String::as_str).collect();
        if let Some(s) = find_key(source, locator, &given, span) {
            span = s;
        } else {
            span.len = token_len(source, span.line, span.col);
        }
        let label = if expected.is_empty() {
            "no keys are allowed here".to_string()
        } else {
            format!("expected one of: {}", expected.join(", "))
        };
        return Diagnostic::new(format!("unknown key '{given}'{in_}"), span, label)
            .with_help(did_you_mean(&given, expected.iter().copied()));
    }
    if msg.starts_with("unknown variant") {
        let given = names.first().cloned().unwrap_or_default();
        let expected: Vec<&str> = names.iter().skip(1).map(String::as_str).collect();
        let is_step = expected.contains(&"call") && expected.contains(&"notify");
        if let Some(s) = find_key(source, locator, &given, span) {
            span = s;
        } else {
            span.len = token_len(source, span.line, span.col).max(given.chars().count());
        }
        let what = if is_step { "step" } else { "value" };
        return Diagnostic::new(
            format!("unknown {what} '{given}'{in_}"),
            span,
            format!("expected one of: {}", expected.join(", ")),
        )
        .with_help(did_you_mean(&given, expected.iter().copied()));
    }
    if msg.starts_with("missing field") {
        let given = names.first().cloned().unwrap_or_default();
        span.len = token_len(source, span.line, span.col);
        let what = path
            .as_deref()
            .map(|p| format!("`{p}`"))
            .unwrap_or_else(|| "the scenario".to_string());
        return Diagnostic::new(
            format!("missing key '{given}' in {what}"),
            span,
            format!("`{given}:` is required here"),
        );
    }
    if msg.starts_with("invalid type: unit variant") {
        span.len = token_len(source, span.line, span.col);
        let word: String = source
            .lines()
            .nth(span.line.saturating_sub(1))
            .unwrap_or("")
            .chars()
            .skip(span.col.saturating_sub(1))
            .take(span.len)
            .collect();
        return Diagnostic::new(
            format!("step '{word}' has no value{in_}"),
            span,
            "expected `- step: value`",
        )
        .with_help(Some(format!("write it as a mapping, e.g. `- {word}: ...`")));
    }
    if msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.starts_with("invalid length")
    {
        span.len = token_len(source, span.line, span.col);
        let (what, expected) = match msg.split_once(", expected ") {
            Some((w, x)) => {
                let x = match x {
                    "usize" | "u8" | "u16" | "u32" | "u64" | "i64" => {
                        whole_number_bound(path.as_deref().unwrap_or(""))
                    }
                    other => other.to_string(),
                };
                (w.to_string(), format!("expected {x}"))
            }
            None => (msg.clone(), String::new()),
        };
        return Diagnostic::new(format!("{what}{in_}"), span, expected);
    }
    if msg.contains("recursion limit exceeded") {
        return Diagnostic::new(
            format!(
                "the scenario nests deeper than {} levels",
                limits::MAX_DEPTH
            ),
            Span { len: 1, ..span },
            "too deep",
        );
    }
    // Syntax errors and anything else: keep serde_yaml's wording.
    let line_text = source
        .lines()
        .nth(span.line.saturating_sub(1))
        .unwrap_or("");
    if line_text.contains('\t') && msg.contains("cannot start any token") {
        return Diagnostic::new(
            format!("YAML syntax error: {msg}"),
            Span { len: 1, ..span },
            "tab character",
        )
        .with_help(Some(
            "YAML does not allow tabs for indentation; use spaces".into(),
        ));
    }
    span.len = 1;
    Diagnostic::new(format!("YAML syntax error: {msg}"), span, "here")
}
