//! Position index of a YAML document: the line and column of every key and value, by path.
//!
//! serde_yaml reports positions for syntax and shape errors only; semantic checks (an unknown service
//! referenced, a bad duration) need the location of a value. This module parses the same text a second
//! time with yaml-rust2's event parser and records where each node starts.
//!
//! Paths are dotted: `steps.3.call.target.topic`; sequence items use their index. The span of a mapping
//! key is stored under the path of its value with `@key` appended.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

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

impl Locator {
    /// Indexes `text`. Text that does not parse gives an empty index (serde_yaml reports the syntax error).
    pub fn new(text: &str) -> Locator {
        let mut r = Recv {
            frames: Vec::new(),
            spans: HashMap::new(),
        };
        let mut p = Parser::new_from_str(text);
        let _ = p.load(&mut r, false);
        Locator { spans: r.spans }
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
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

struct Recv {
    frames: Vec<Frame>,
    spans: HashMap<String, Span>,
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

impl Recv {
    /// The path the next value gets; `None` when the next scalar is a mapping key.
    fn value_path(&self) -> Option<String> {
        match self.frames.last() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key: Some(k) }) => Some(join(path, k)),
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
}

impl MarkedEventReceiver for Recv {
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
                        self.spans.insert(p, span(mark, len));
                        self.advance();
                    }
                    None => {
                        if let Some(Frame::Map { path, key }) = self.frames.last_mut() {
                            self.spans
                                .insert(format!("{}@key", join(path, &v)), span(mark, len));
                            *key = Some(v);
                        }
                    }
                }
            }
            Event::Alias(_) => {
                if let Some(p) = self.value_path() {
                    self.spans.insert(p, span(mark, 1));
                }
                self.advance();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                // A complex key (a mapping used as a key) is not supported by scenarios; index it as "?".
                let p = self.value_path().unwrap_or_else(|| "?".to_string());
                self.spans.entry(p.clone()).or_insert(span(mark, 1));
                if matches!(ev, Event::MappingStart(..)) {
                    self.frames.push(Frame::Map { path: p, key: None });
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
