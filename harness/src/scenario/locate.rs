//! Position index of a YAML document: the line and column of every key and value, by path.
//!
//! serde_yaml reports positions for syntax and shape errors only; semantic checks (an unknown service
//! referenced, a bad duration) need the location of a value. This module parses the same text a second
//! time with yaml-rust2's event parser, one event at a time (never recursively), and records where each
//! node starts. The same pass refuses what serde_yaml would accept silently or report without a useful
//! position: duplicate keys (serde merges them into maps), nesting deeper than
//! [`limits::MAX_DEPTH`], several documents.
//!
//! Paths are dotted: `steps.3.call.target.topic`; sequence items use their index. The span of a mapping
//! key is stored under the path of its value with `@key` appended.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, ScanError, TScalarStyle};

use super::diagnostic::Diagnostic;
use super::limits;

/// A location in a source file (1-based line and column, length in characters, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Length in characters.
    pub len: usize,
}

/// Where each path of a YAML document starts.
#[derive(Debug, Default, Clone)]
pub struct Locator {
    spans: HashMap<String, Span>,
}

/// What one pass of yaml-rust2's event parser (iterative, bounded in depth) found in a text.
#[derive(Debug, Default, Clone)]
pub struct Scan {
    /// Positions of keys and values.
    pub locator: Locator,
    /// Structural problems: duplicate keys (with both positions), nesting deeper than
    /// [`limits::MAX_DEPTH`], a second document.
    pub problems: Vec<Diagnostic>,
    /// The YAML syntax error, if any (an unclosed quote points where it opened).
    pub syntax: Option<Diagnostic>,
    /// Values of every `password:` key, for redaction.
    pub secrets: Vec<String>,
}

impl Locator {
    /// Indexes `text`. Text that does not parse gives what was indexed up to the error.
    pub fn new(text: &str) -> Locator {
        scan(text).locator
    }

    /// The span of the value at `path`.
    pub fn value(&self, path: &str) -> Option<Span> {
        self.spans.get(path).copied()
    }

    /// The span of the key whose value is at `path`.
    pub fn key(&self, path: &str) -> Option<Span> {
        self.spans.get(&format!("{path}@key")).copied()
    }

    /// The span of the value at `path`, else of the nearest ancestor that has one.
    pub fn nearest(&self, path: &str) -> Span {
        let mut p = path.to_string();
        loop {
            if let Some(s) = self.value(&p) {
                return s;
            }
            match p.rfind('.') {
                Some(i) => p.truncate(i),
                None => {
                    return self.value("").unwrap_or(Span {
                        line: 1,
                        col: 1,
                        len: 1,
                    })
                }
            }
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        keys: HashMap<String, Span>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

struct Recv {
    frames: Vec<Frame>,
    spans: HashMap<String, Span>,
    problems: Vec<Diagnostic>,
    secrets: Vec<String>,
}

fn join(base: &str, seg: &str) -> String {
    if base.is_empty() {
        seg.to_string()
    } else {
        format!("{base}.{seg}")
    }
}

fn span(mark: Marker, len: usize) -> Span {
    Span {
        line: mark.line(),
        col: mark.col() + 1,
        len: len.max(1),
    }
}

/// What a duplicate key is called in the message, by the mapping it is in.
fn duplicate_what(path: &str) -> &'static str {
    let last = path.rsplit('.').next().unwrap_or("");
    match last {
        "vars" if !path.contains('.') => "var",
        "methods" => "method",
        "options" => "driver option",
        "overrides" => "broker override",
        "deliveries" | "received" => "service",
        _ => "key",
    }
}

impl Recv {
    /// The path the next value gets; `None` when the next scalar is a mapping key.
    fn value_path(&self) -> Option<String> {
        match self.frames.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map {
                path, key: Some(k), ..
            }) => Some(join(path, k)),
            Some(Frame::Seq { path, index }) => Some(join(path, &index.to_string())),
        }
    }

    fn advance(&mut self) {
        match self.frames.last_mut() {
            Some(Frame::Map { key, .. }) => *key = None,
            Some(Frame::Seq { index, .. }) => *index += 1,
            None => {}
        }
    }

    fn on_key(&mut self, v: String, sp: Span) {
        let Some(Frame::Map { path, key, keys }) = self.frames.last_mut() else {
            return;
        };
        if let Some(first) = keys.get(&v) {
            let where_ = if path.is_empty() {
                String::new()
            } else {
                format!(" in `{path}`")
            };
            self.problems.push(
                Diagnostic::new(
                    format!("duplicate {} '{v}'{where_}", duplicate_what(path)),
                    sp,
                    format!(
                        "defined again here; first defined at line {}, column {}",
                        first.line, first.col
                    ),
                )
                .with_help(Some(
                    "YAML keys must be unique: remove or rename one of them".into(),
                )),
            );
        } else {
            keys.insert(v.clone(), sp);
        }
        self.spans.insert(format!("{}@key", join(path, &v)), sp);
        *key = Some(v);
    }

    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(v, style, _, _) => {
                let len = v.chars().count()
                    + match style {
                        TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => 2,
                        _ => 0,
                    };
                match self.value_path() {
                    Some(p) => {
                        if (p == "password" || p.ends_with(".password")) && !v.is_empty() {
                            self.secrets.push(v);
                        }
                        self.spans.insert(p, span(mark, len));
                        self.advance();
                    }
                    None => self.on_key(v, span(mark, len)),
                }
            }
            Event::Alias(_) => {
                match self.value_path() {
                    Some(p) => {
                        self.spans.insert(p, span(mark, 1));
                        self.advance();
                    }
                    // An alias used as a key: index it as "?".
                    None => self.on_key("?".into(), span(mark, 1)),
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex key (a mapping used as a key) is not supported by scenarios; index it as "?".
                let p = match self.value_path() {
                    Some(p) => p,
                    None => {
                        self.on_key("?".into(), span(mark, 1));
                        "?".to_string()
                    }
                };
                self.spans.entry(p.clone()).or_insert(span(mark, 1));
                if matches!(ev, Event::MappingStart(..)) {
                    self.frames.push(Frame::Map {
                        path: p,
                        key: None,
                        keys: HashMap::new(),
                    });
                } else {
                    self.frames.push(Frame::Seq { path: p, index: 0 });
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.frames.pop();
                self.advance();
            }
            _ => {}
        }
    }
}

/// Scans `text` once with yaml-rust2's event parser (no recursion, so no stack overflow on deep
/// nesting): positions, duplicate keys, depth, documents and the syntax error if any.
pub fn scan(text: &str) -> Scan {
    let mut r = Recv {
        frames: Vec::new(),
        spans: HashMap::new(),
        problems: Vec::new(),
        secrets: Vec::new(),
    };
    let mut p = Parser::new_from_str(text);
    let mut documents = 0usize;
    let mut syntax = None;
    let mut last_mark: Option<Marker> = None;
    loop {
        match p.next_token() {
            Ok((Event::StreamEnd, _)) => break,
            Ok((Event::DocumentStart, mark)) => {
                documents += 1;
                if documents == 2 {
                    // The parser marks an explicit document start after its `---`.
                    let line = mark.line();
                    let col = text
                        .lines()
                        .nth(line.saturating_sub(1))
                        .filter(|l| l.starts_with("---") || l.starts_with("..."))
                        .map(|_| 1)
                        .unwrap_or(mark.col() + 1);
                    r.problems.push(
                        Diagnostic::new(
                            "a scenario file holds one YAML document, this one has several",
                            Span { line, col, len: 3 },
                            "a second document starts here",
                        )
                        .with_help(Some(
                            "remove the `---` line, or put each scenario in its own file".into(),
                        )),
                    );
                    break;
                }
            }
            Ok((ev, mark)) => {
                last_mark = Some(mark);
                let opens = matches!(ev, Event::MappingStart(..) | Event::SequenceStart(..));
                r.on_event(ev, mark);
                if opens && r.frames.len() > limits::MAX_DEPTH {
                    r.problems.push(Diagnostic::new(
                        format!(
                            "the scenario nests deeper than {} levels",
                            limits::MAX_DEPTH
                        ),
                        span(mark, 1),
                        format!("level {} starts here", r.frames.len()),
                    ));
                    break;
                }
            }
            Err(e) => {
                syntax = Some(syntax_diagnostic(text, &e, last_mark));
                break;
            }
        }
    }
    Scan {
        locator: Locator { spans: r.spans },
        problems: r.problems,
        syntax,
        secrets: r.secrets,
    }
}

/// A yaml-rust2 syntax error as a diagnostic; an unclosed quote points where the quote opened.
fn syntax_diagnostic(text: &str, e: &ScanError, last: Option<Marker>) -> Diagnostic {
    let m = e.marker();
    let info = e.info();
    if info.contains("quoted scalar") {
        // The quote opened after the last complete event, at the first quote character from there.
        let from = last.map(|m| m.index()).unwrap_or(0);
        let mut line = 1;
        let mut col = 1;
        let mut found = None;
        for (i, ch) in text.chars().enumerate() {
            if i >= from && (ch == '"' || ch == '\'') && i <= m.index() {
                found = Some((line, col, ch));
            }
            if found.is_some() {
                break;
            }
            if ch == '\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        if let Some((line, col, ch)) = found {
            let kind = if ch == '"' { "double" } else { "single" };
            return Diagnostic::new(
                format!("unclosed {kind}-quoted string"),
                Span { line, col, len: 1 },
                "this quote is never closed",
            )
            .with_help(Some(format!(
                "close it with {ch}: the string runs to the end of the file"
            )));
        }
    }
    let line_text = text.lines().nth(m.line().saturating_sub(1)).unwrap_or("");
    let help = (line_text.contains('\t') && info.contains("token"))
        .then(|| "YAML does not allow tabs for indentation; use spaces".to_string());
    Diagnostic::new(
        format!("YAML syntax error: {info}"),
        Span {
            line: m.line().max(1),
            col: m.col() + 1,
            len: 1,
        },
        "here",
    )
    .with_help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_values() {
        let text = "name: x\nsteps:\n  - call:\n      method: echo\n      args: {a: 1}\n";
        let l = Locator::new(text);
        assert_eq!(
            l.value("name"),
            Some(Span {
                line: 1,
                col: 7,
                len: 1
            })
        );
        assert_eq!(
            l.key("steps.0.call.method"),
            Some(Span {
                line: 4,
                col: 7,
                len: 6
            })
        );
        assert_eq!(
            l.value("steps.0.call.method"),
            Some(Span {
                line: 4,
                col: 15,
                len: 4
            })
        );
        assert_eq!(
            l.value("steps.0.call.args.a"),
            Some(Span {
                line: 5,
                col: 17,
                len: 1
            })
        );
        assert_eq!(l.nearest("steps.0.call.args.zzz").line, 5);
    }
}
