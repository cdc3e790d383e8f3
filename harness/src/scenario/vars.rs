//! Scenario variables: `{{ name }}` references substituted in the file's text before it is parsed.
//!
//! Precedence (later wins): the file's `vars:` section, environment variables `HARNESS_VAR_<NAME>`
//! (name upper-cased), then `--var name=value` on the command line.

use std::collections::BTreeMap;

use regex::Regex;

use super::diagnostic::{did_you_mean, Diagnostic};
use super::limits;
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

/// Where each part of a substituted text came from, to point diagnostics into the file as written.
///
/// Positions are char offsets. Text copied from the file maps one to one; a substituted value maps to the
/// `{{ name }}` reference it replaced (so a multi-line value does not shift the lines after it).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    /// `(start in output, start in input, length in output, length in input, copied)`, in order.
    segments: Vec<(usize, usize, usize, usize, bool)>,
    /// Char offset of each line start in the output.
    out_lines: Vec<usize>,
    /// Char offset of each line start in the input.
    in_lines: Vec<usize>,
}

fn line_starts(text: &str) -> Vec<usize> {
    let mut v = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == '\n' {
            v.push(i + 1);
        }
    }
    v
}

impl SourceMap {
    /// The identity map of `text`.
    pub fn identity(text: &str) -> SourceMap {
        let n = text.chars().count();
        SourceMap {
            segments: vec![(0, 0, n, n, true)],
            out_lines: line_starts(text),
            in_lines: line_starts(text),
        }
    }

    /// The span in the input that `span` (in the output) comes from.
    pub fn to_input(&self, span: Span) -> Span {
        let line = span.line.max(1);
        let Some(start) = self.out_lines.get(line - 1) else {
            return span;
        };
        let off = start + span.col.max(1) - 1;
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|(o, ..)| *o <= off)
            .copied()
            .unwrap_or((0, 0, 0, 0, true));
        let (o, i, olen, ilen, copied) = seg;
        let (ioff, len) = if copied {
            (i + (off - o).min(ilen), span.len)
        } else {
            let _ = olen;
            (i, ilen)
        };
        let idx = self.in_lines.partition_point(|s| *s <= ioff);
        let lstart = self.in_lines[idx.saturating_sub(1)];
        Span {
            line: idx.max(1),
            col: ioff - lstart + 1,
            len: len.max(1),
        }
    }

    /// The input line of output line `line` (0 stays 0).
    pub fn line(&self, line: usize) -> usize {
        if line == 0 {
            return 0;
        }
        self.to_input(Span {
            line,
            col: 1,
            len: 1,
        })
        .line
    }
}

/// Quoting in force at a point of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

/// Walks `line` and returns where a YAML comment starts (a `#` at the start or after whitespace,
/// outside quotes), and the quoting in force at byte `at` (`usize::MAX`: none asked).
fn walk(line: &str, at: usize) -> (Option<usize>, Quote) {
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut prev_ws = true;
    let mut quote_at = Quote::None;
    for (i, c) in line.char_indices() {
        if i == at {
            quote_at = if double {
                Quote::Double
            } else if single {
                Quote::Single
            } else {
                Quote::None
            };
        }
        if double {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                double = false;
            }
        } else if single {
            if c == '\'' {
                single = false;
            }
        } else if c == '#' && prev_ws {
            return (Some(i), quote_at);
        } else if c == '"' && prev_ws_or_flow(line, i) {
            double = true;
        } else if c == '\'' && prev_ws_or_flow(line, i) {
            single = true;
        }
        prev_ws = c.is_whitespace();
    }
    (None, quote_at)
}

/// Char index where a YAML comment starts on `line`, if any.
fn comment_start(line: &str) -> Option<usize> {
    walk(line, usize::MAX).0
}

/// `value` as it must be written where the reference at byte `at` of `line` stands, so that it stays
/// one scalar on one line: escaped inside a double-quoted string; a multi-line value in plain context
/// becomes a double-quoted string. Single-line values in plain or single-quoted context stay as given.
fn quoted_for(line: &str, at: usize, value: &str) -> String {
    match walk(line, at).1 {
        Quote::Double => {
            let json = serde_json::to_string(value).unwrap_or_default();
            json[1..json.len().saturating_sub(1).max(1)].to_string()
        }
        Quote::None if value.contains('\n') || value.contains('\r') => {
            serde_json::to_string(value).unwrap_or_default()
        }
        Quote::Single if value.contains('\n') || value.contains('\r') || value.contains('\'') => {
            // Single-quoted YAML has no escapes: `''` is a quote, and a line break is written as an
            // empty line (one line break folds into a space).
            value.replace('\'', "''").replace('\n', "\n\n")
        }
        _ => value.to_string(),
    }
}

/// A quote starts a quoted scalar only at the start of a value (after whitespace or a flow indicator).
fn prev_ws_or_flow(line: &str, i: usize) -> bool {
    line[..i]
        .chars()
        .next_back()
        .is_none_or(|p| p.is_whitespace() || matches!(p, '{' | '[' | ',' | ':' | '-'))
}

/// Resolves references between variables (`a: "{{ b }}-x"`), refusing cycles and unknown names.
/// `spans` gives where a file variable is defined (for the diagnostics).
pub fn resolve(
    vars: &BTreeMap<String, String>,
    spans: &dyn Fn(&str) -> Span,
) -> Result<BTreeMap<String, String>, Vec<Diagnostic>> {
    let re = pattern();
    let mut done: BTreeMap<String, String> = BTreeMap::new();
    let mut diags = Vec::new();
    for name in vars.keys() {
        let mut stack: Vec<String> = Vec::new();
        if let Err(d) = resolve_one(name, vars, &re, &mut done, &mut stack, spans) {
            if !diags.iter().any(|x: &Diagnostic| x.message == d.message) {
                diags.push(d);
            }
        }
    }
    if diags.is_empty() {
        Ok(done)
    } else {
        Err(diags)
    }
}

fn resolve_one(
    name: &str,
    vars: &BTreeMap<String, String>,
    re: &Regex,
    done: &mut BTreeMap<String, String>,
    stack: &mut Vec<String>,
    spans: &dyn Fn(&str) -> Span,
) -> Result<String, Diagnostic> {
    if let Some(v) = done.get(name) {
        return Ok(v.clone());
    }
    if let Some(pos) = stack.iter().position(|n| n == name) {
        let mut cycle: Vec<&str> = stack[pos..].iter().map(String::as_str).collect();
        cycle.push(name);
        return Err(Diagnostic::new(
            format!("circular variable '{}': {}", stack[pos], cycle.join(" -> ")),
            spans(&stack[pos]),
            "refers to itself through other variables",
        ));
    }
    let Some(raw) = vars.get(name) else {
        let user = stack.last().cloned().unwrap_or_default();
        let known: Vec<&str> = vars.keys().map(String::as_str).collect();
        return Err(Diagnostic::new(
            format!("undefined variable '{name}' in variable '{user}'"),
            spans(&user),
            "refers to a variable that is not defined",
        )
        .with_help(did_you_mean(name, known.iter().copied())));
    };
    stack.push(name.to_string());
    let mut out = String::with_capacity(raw.len());
    let mut last = 0;
    for caps in re.captures_iter(raw) {
        let (Some(whole), Some(n)) = (caps.get(0), caps.get(1)) else {
            continue;
        };
        out.push_str(&raw[last..whole.start()]);
        out.push_str(&resolve_one(n.as_str(), vars, re, done, stack, spans)?);
        last = whole.end();
        if out.len() as u64 > limits::MAX_EXPANDED_BYTES {
            break;
        }
    }
    out.push_str(&raw[last..]);
    stack.pop();
    if out.len() as u64 > limits::MAX_EXPANDED_BYTES {
        return Err(Diagnostic::new(
            format!(
                "variable '{name}' expands to more than {} bytes",
                limits::MAX_EXPANDED_BYTES
            ),
            spans(name),
            "too large",
        ));
    }
    done.insert(name.to_string(), out.clone());
    Ok(out)
}

/// Substitutes `{{ name }}` in `text`, outside YAML comments. Undefined names give a diagnostic each
/// (positions refer to `text`). The map points positions of the result back into `text`.
///
/// One scanner over the text (comments, quotes, `{{ }}`), keeping the position map as it goes: its
/// states are easier to check together than split.
pub fn substitute(
    text: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(String, SourceMap), Vec<Diagnostic>> {
    let re = pattern();
    let mut diags = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut segments = Vec::new();
    let (mut in_off, mut out_off) = (0usize, 0usize);
    let copy = |s: &str,
                out: &mut String,
                segments: &mut Vec<_>,
                in_off: &mut usize,
                out_off: &mut usize| {
        let n = s.chars().count();
        if n > 0 {
            segments.push((*out_off, *in_off, n, n, true));
        }
        out.push_str(s);
        *in_off += n;
        *out_off += n;
    };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let code_end = comment_start(line).unwrap_or(line.len());
        let code = &line[..code_end];
        let mut last = 0;
        for caps in re.captures_iter(code) {
            let (Some(whole), Some(name)) = (caps.get(0), caps.get(1)) else {
                continue;
            };
            copy(
                &code[last..whole.start()],
                &mut out,
                &mut segments,
                &mut in_off,
                &mut out_off,
            );
            let ref_len = whole.as_str().chars().count();
            match vars.get(name.as_str()) {
                Some(v) => {
                    let v = quoted_for(line, whole.start(), v);
                    let n = v.chars().count();
                    segments.push((out_off, in_off, n, ref_len, false));
                    out.push_str(&v);
                    out_off += n;
                    in_off += ref_len;
                }
                None => {
                    let col = line[..whole.start()].chars().count() + 1;
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
                                len: ref_len,
                            },
                            "not defined",
                        )
                        .with_help(help),
                    );
                    copy(
                        whole.as_str(),
                        &mut out,
                        &mut segments,
                        &mut in_off,
                        &mut out_off,
                    );
                }
            }
            last = whole.end();
        }
        copy(
            &line[last..],
            &mut out,
            &mut segments,
            &mut in_off,
            &mut out_off,
        );
        if out.len() as u64 > limits::MAX_EXPANDED_BYTES {
            diags.push(Diagnostic::new(
                format!(
                    "the scenario is larger than {} bytes once its variables are substituted",
                    limits::MAX_EXPANDED_BYTES
                ),
                Span {
                    line: i + 1,
                    col: 1,
                    len: 1,
                },
                "the limit is reached on this line",
            ));
            break;
        }
    }
    if diags.is_empty() {
        let map = SourceMap {
            segments,
            out_lines: line_starts(&out),
            in_lines: line_starts(text),
        };
        Ok((out, map))
    } else {
        Err(diags)
    }
}

/// Parses `k=v`. The error never repeats the text: it may be a password typed without its name.
pub fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err("expected NAME=VALUE (no '=' or no name; the value is not shown)".to_string()),
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
            substitute("t: {{ topic }}-{{n}}\n", &vars).expect("ok").0,
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

    #[test]
    fn comments_are_left_alone_and_positions_map_back() {
        let mut vars = BTreeMap::new();
        vars.insert("text".to_string(), "a\nb\nc".to_string());
        let (out, map) = substitute("x: {{ text }}  # {{ nope }}\ny: \"<{{ text }}>\"\n", &vars)
            .expect("comment skipped");
        // A multi-line value stays one scalar on one line: quoted in plain context, escaped in quotes.
        assert_eq!(out, "x: \"a\\nb\\nc\"  # {{ nope }}\ny: \"<a\\nb\\nc>\"\n");
        let doc: serde_yaml::Value = serde_yaml::from_str(&out).expect("valid YAML");
        assert_eq!(doc["x"], "a\nb\nc");
        assert_eq!(doc["y"], "<a\nb\nc>");
        // Positions after the value map back to the file (`>` of line 2).
        let s = |line, col, len| Span { line, col, len };
        assert_eq!(map.to_input(s(2, 13, 1)), s(2, 16, 1));
        // Inside the value: the whole reference.
        assert_eq!(map.to_input(s(1, 5, 1)), s(1, 4, 10));
    }

    #[test]
    fn cycles_are_refused() {
        let mut vars = BTreeMap::new();
        vars.insert("a".to_string(), "{{ b }}".to_string());
        vars.insert("b".to_string(), "x{{ a }}".to_string());
        vars.insert("c".to_string(), "{{ b2 }}".to_string());
        let here = |_: &str| Span {
            line: 1,
            col: 1,
            len: 1,
        };
        let e = resolve(&vars, &here).expect_err("cycle");
        assert!(e[0].message.contains("a -> b -> a"), "{}", e[0].message);
        assert!(e
            .iter()
            .any(|d| d.message.contains("undefined variable 'b2'")));
        vars.remove("c");
        vars.insert("b".to_string(), "x".to_string());
        assert_eq!(resolve(&vars, &here).expect("ok")["a"], "x");
    }
}
