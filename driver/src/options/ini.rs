//! A small oslo.config-compatible INI tokenizer.
//!
//! Like oslo.config's `iniparser`: `[section]` headers, `key = value` or `key: value`,
//! full-line comments starting with `#` or `;`, values stripped of surrounding whitespace and
//! of one pair of matching surrounding quotes, and continuation lines (an indented line
//! after a key appends `\n` + its text to the value). Keys may repeat (multi-valued options).

/// One `key = value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Section name without brackets.
    pub section: String,
    /// Option name.
    pub key: String,
    /// Value (trimmed, quotes removed).
    pub value: String,
    /// 1-based line of the key.
    pub line: usize,
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let b = v.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Parses INI text into entries in file order.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, SyntaxError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut section: Option<String> = None;
    // Whether the previous non-blank line was a key (so an indented line continues it).
    let mut continuable = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.strip_prefix('\u{feff}').unwrap_or(raw);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continuable = false;
            continue;
        }
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if raw.starts_with([' ', '\t']) && continuable {
            if let Some(last) = out.last_mut() {
                last.value.push('\n');
                last.value.push_str(trimmed);
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| SyntaxError {
                line,
                message: format!("section header \"{trimmed}\" is missing its closing \"]\""),
            })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(SyntaxError {
                    line,
                    message: "empty section name \"[]\"".to_string(),
                });
            }
            section = Some(name.to_string());
            continuable = false;
            continue;
        }
        let split = trimmed.find(['=', ':']).ok_or_else(|| SyntaxError {
            line,
            message: format!(
                "expected \"key = value\", \"[section]\" or a comment, found \"{trimmed}\""
            ),
        })?;
        let key = trimmed[..split].trim();
        if key.is_empty() {
            return Err(SyntaxError {
                line,
                message: format!(
                    "missing option name before \"{}\"",
                    &trimmed[split..split + 1]
                ),
            });
        }
        let section = section.clone().ok_or_else(|| SyntaxError {
            line,
            message: format!("option \"{key}\" appears before any [section] header"),
        })?;
        out.push(Entry {
            section,
            key: key.to_string(),
            value: unquote(&trimmed[split + 1..]),
            line,
        });
        continuable = true;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_keys_comments() {
        let text = "# top\n[DEFAULT]\nfoo = bar\n; c\nx: 'y z'\n\n[s2]\nk=\"v\"\nk = w\nempty =\n";
        let e = parse(text).unwrap();
        let got: Vec<(&str, &str, &str, usize)> = e
            .iter()
            .map(|e| (e.section.as_str(), e.key.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![
                ("DEFAULT", "foo", "bar", 3),
                ("DEFAULT", "x", "y z", 5),
                ("s2", "k", "v", 8),
                ("s2", "k", "w", 9),
                ("s2", "empty", "", 10),
            ]
        );
    }

    #[test]
    fn url_values_keep_colons() {
        let e = parse("[DEFAULT]\ntransport_url = amqp://u:p@h:5672/\n").unwrap();
        assert_eq!(e[0].value, "amqp://u:p@h:5672/");
    }

    #[test]
    fn continuation_lines() {
        let e = parse("[a]\nk = one\n  two\n").unwrap();
        assert_eq!(e[0].value, "one\ntwo");
    }

    #[test]
    fn syntax_errors_have_lines() {
        assert_eq!(parse("[a\n").unwrap_err().line, 1);
        assert_eq!(parse("[a]\n\njunk\n").unwrap_err().line, 3);
        assert!(parse("k = v\n")
            .unwrap_err()
            .message
            .contains("before any [section]"));
        assert!(parse("[a]\n= v\n")
            .unwrap_err()
            .message
            .contains("missing option name"));
        assert!(parse("[]\n").is_err());
    }
}
