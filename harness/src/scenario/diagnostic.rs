//! Scenario diagnostics rendered like rustc/hurl: message, `--> file:line:col`, the source line, carets,
//! and an optional `help:` line (did-you-mean).

use std::fmt::Write as _;

use super::locate::Span;

/// One problem found in a scenario file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong (`unknown field 'tagret'`).
    pub message: String,
    /// Where.
    pub span: Span,
    /// Short text shown after the carets (what was expected).
    pub label: String,
    /// `help:` line, e.g. `did you mean 'target'?`.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic without help.
    pub fn new(message: impl Into<String>, span: Span, label: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            span,
            label: label.into(),
            help: None,
        }
    }

    /// Adds a help line.
    pub fn with_help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }

    /// Renders the diagnostic against `source` (the file's text) named `file`, without colour.
    pub fn render(&self, file: &str, source: &str) -> String {
        let line_no = self.span.line.max(1);
        let raw = source.lines().nth(line_no - 1).unwrap_or("");
        let line = raw.replace('\t', "    ");
        // Column in the tab-expanded line.
        let mut col = 0usize;
        for (i, ch) in raw.chars().enumerate() {
            if i + 1 >= self.span.col {
                break;
            }
            col += if ch == '\t' { 4 } else { 1 };
        }
        let avail = line.chars().count().saturating_sub(col).max(1);
        let carets = "^".repeat(self.span.len.clamp(1, avail));
        let gutter = " ".repeat(line_no.to_string().len());
        let mut out = String::new();
        let _ = writeln!(out, "error: {}", self.message);
        let _ = writeln!(out, "{gutter}--> {file}:{line_no}:{}", self.span.col.max(1));
        let _ = writeln!(out, "{gutter} |");
        let _ = writeln!(out, "{line_no} | {}", line.trim_end());
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!(" {}", self.label)
        };
        let _ = writeln!(out, "{gutter} | {}{carets}{label}", " ".repeat(col));
        let _ = writeln!(out, "{gutter} |");
        if let Some(h) = &self.help {
            let _ = writeln!(out, "{gutter} = help: {h}");
        }
        out
    }
}

/// The closest candidate to `given` (Jaro-Winkler >= 0.8 or edit distance <= 2), if any.
pub fn did_you_mean<'a, I: IntoIterator<Item = &'a str>>(
    given: &str,
    candidates: I,
) -> Option<String> {
    let mut best: Option<(f64, &str)> = None;
    for c in candidates {
        if c == given {
            continue;
        }
        let jw = strsim::jaro_winkler(given, c);
        let lev = strsim::levenshtein(given, c);
        let ok = jw >= 0.8 || lev <= 2.min(c.len().saturating_sub(1));
        if ok && best.is_none_or(|(s, _)| jw > s) {
            best = Some((jw, c));
        }
    }
    best.map(|(_, c)| format!("did you mean '{c}'?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_carets_and_help() {
        let src = "steps:\n  - cal:\n      method: x\n";
        let d = Diagnostic::new(
            "unknown step 'cal'",
            Span {
                line: 2,
                col: 5,
                len: 3,
            },
            "not a step",
        )
        .with_help(did_you_mean("cal", ["call", "cast"]));
        let out = d.render("s.yaml", src);
        assert_eq!(
            out,
            "error: unknown step 'cal'\n --> s.yaml:2:5\n  |\n2 |   - cal:\n  |     ^^^ not a step\n  |\n  = help: did you mean 'call'?\n"
        );
    }

    #[test]
    fn no_suggestion_for_unrelated() {
        assert_eq!(did_you_mean("zzzz", ["call", "cast"]), None);
        assert_eq!(
            did_you_mean("tagret", ["target", "method"]).as_deref(),
            Some("did you mean 'target'?")
        );
    }
}
