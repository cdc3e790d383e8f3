//! Scenario variables: `{{ name }}` references substituted in the file's text before it is parsed.
//!
//! Precedence (later wins): the file's `vars:` section, environment variables `HARNESS_VAR_<NAME>`
//! (name upper-cased), then `--var name=value` on the command line.

use std::collections::BTreeMap;

use regex::Regex;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::locate::Span;

fn pattern() -> Regex {
    // A literal pattern: compiling it cannot fail.
    Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_\-]*)\s*\}\}").unwrap_or_else(|_| unreachable!())
}

/// Reads the `vars:` section of `text` (if the text parses), values rendered as plain strings.
pub fn file_vars(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return out;
    };
    if let Some(serde_yaml::Value::Mapping(m)) = doc.get("vars") {
        for (k, v) in m {
            let Some(k) = k.as_str() else { continue };
            let v = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Number(n) => n.to_string(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Null => String::new(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            out.insert(k.to_string(), v);
        }
    }
    out
}

/// The variables in force: file vars, then `HARNESS_VAR_*` from `env`, then `cli`.
pub fn merge(
    file: BTreeMap<String, String>,
    env: &[(String, String)],
    cli: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut vars = file;
    for (k, v) in env {
        if let Some(name) = k.strip_prefix("HARNESS_VAR_") {
            // Match an existing variable case-insensitively, else use the lower-cased name.
            let key = vars
                .keys()
                .find(|existing| existing.eq_ignore_ascii_case(name))
                .cloned()
                .unwrap_or_else(|| name.to_ascii_lowercase());
            vars.insert(key, v.clone());
        }
    }
    for (k, v) in cli {
        vars.insert(k.clone(), v.clone());
    }
    vars
}

/// Substitutes `{{ name }}` in `text`. Lines that are comments are left alone. Undefined names give a
/// diagnostic each (positions refer to `text`).
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, Vec<Diagnostic>> {
    let re = pattern();
    let mut diags = Vec::new();
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut last = 0;
        for caps in re.captures_iter(line) {
            let (Some(whole), Some(name)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            out.push_str(&line[last..whole.start()]);
            match vars.get(name.as_str()) {
                Some(v) => out.push_str(v),
                None => {
                    let col = line[..whole.start()].chars().count() + 1;
                    let len = whole.as_str().chars().count();
                    let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
                    known.sort();
                    let help = did_you_mean(name.as_str(), known.iter().copied()).or_else(|| {
                        Some(
                            "define it under `vars:`, with --var NAME=VALUE or HARNESS_VAR_NAME"
                                .into(),
                        )
                    });
                    diags.push(
                        Diagnostic::new(
                            format!("undefined variable '{}'", name.as_str()),
                            Span {
                                line: i + 1,
                                col,
                                len,
                            },
                            "not defined",
                        )
                        .with_help(help),
                    );
                    out.push_str(whole.as_str());
                }
            }
            last = whole.end();
        }
        out.push_str(&line[last..]);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// Parses `k=v`.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got '{s}'")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_substitution() {
        let file = file_vars("vars:\n  topic: a\n  n: 3\nsteps: []\n");
        let env = vec![("HARNESS_VAR_TOPIC".to_string(), "b".to_string())];
        let vars = merge(file.clone(), &env, &[]);
        assert_eq!(vars["topic"], "b");
        let vars = merge(file, &env, &[("topic".into(), "c".into())]);
        assert_eq!(vars["topic"], "c");
        assert_eq!(
            substitute("t: {{ topic }}-{{n}}\n", &vars).expect("ok"),
            "t: c-3\n"
        );
        let errs = substitute("x: 1\nt: {{ topc }}\n", &vars).expect_err("undefined");
        assert_eq!(
            errs[0].span,
            Span {
                line: 2,
                col: 4,
                len: 10
            }
        );
        assert_eq!(errs[0].help.as_deref(), Some("did you mean 'topic'?"));
    }
}
