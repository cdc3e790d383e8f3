//! Python-compatible JSON: [`to_python_json`] writes a `serde_json` value exactly like
//! Python's `json.dumps` with default arguments (separators `", "` and `": "`,
//! `ensure_ascii`, key order preserved, floats as Python's `repr`).
//!
//! The `write_*` helpers append to a `String`; the message types and the codec use them
//! to build bodies without an intermediate `Value`.

use std::fmt;

pub use serde_json::Value;

/// A JSON object whose keys keep their insertion order (serde_json `preserve_order`).
pub type Map = serde_json::Map<String, Value>;

/// Formats `v` exactly like Python's `json.dumps(v)` with default arguments: separators
/// `", "` and `": "`, `ensure_ascii` (`\uXXXX`, lower-case hex, surrogate pairs above the
/// BMP), key order preserved, floats as Python's `repr` (`1.0`, `1e+16`, `1.5e-07`).
pub fn to_python_json(v: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, v);
    out
}

pub(crate) fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if n.is_f64() {
                match n.as_f64() {
                    Some(f) => write_float(out, f),
                    None => out.push_str(&n.to_string()),
                }
            } else {
                out.push_str(&n.to_string())
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => write_map(out, m),
    }
}

pub(crate) fn write_map(out: &mut String, m: &Map) {
    out.push('{');
    for (i, (k, x)) in m.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_str(out, k);
        out.push_str(": ");
        write_value(out, x);
    }
    out.push('}');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn push_u16_escape(out: &mut String, u: u16) {
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((u >> shift) & 0xf)]));
    }
}

/// Writes a JSON string literal the way Python's `ensure_ascii` encoder does.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let plain = (' '..='~').contains(&c) && c != '"' && c != '\\';
        if plain {
            continue;
        }
        out.push_str(&s[start..i]);
        start = i + c.len_utf8();
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            _ => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    push_u16_escape(out, *u);
                }
            }
        }
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes a float like Python's `float.__repr__` (shortest round-trip digits; fixed notation
/// for decimal exponents -4..=15, otherwise `d.ddde[+-]XX`).
pub(crate) fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if f.is_sign_negative() {
        out.push('-');
    }
    // Rust's `{:e}` gives the shortest round-trip digit count, e.g. "1.5e-7", "1e16", "0e0".
    // When two shortest candidates are equally close (a tie), Rust and Python may pick
    // different last digits; re-formatting with that many digits in exact mode rounds
    // half-to-even, which is the string Python's repr produces.
    use std::fmt::Write as _;
    let abs = f.abs();
    let mut buf = StackBuf::new();
    // Writing at most ~30 bytes into a 64-byte buffer cannot fail.
    let _ = write!(buf, "{abs:e}");
    let n_digits = buf
        .as_str()
        .split('e')
        .next()
        .map_or(1, |m| m.bytes().filter(u8::is_ascii_digit).count());
    buf.clear();
    let _ = write!(buf, "{:.*e}", n_digits.saturating_sub(1), abs);
    let sci = buf.as_str();
    let (mant, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (d0, rest) = mant.split_at(1.min(mant.len()));
    let rest = rest.strip_prefix('.').unwrap_or(rest);
    // digits = d0 + rest
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = usize::try_from(exp).unwrap_or(0) + 1;
            let n = 1 + rest.len();
            out.push_str(d0);
            if n <= int_len {
                out.push_str(rest);
                out.extend(std::iter::repeat_n('0', int_len - n));
                out.push_str(".0");
            } else {
                out.push_str(&rest[..int_len - 1]);
                out.push('.');
                out.push_str(&rest[int_len - 1..]);
            }
        } else {
            out.push_str("0.");
            let zeros = usize::try_from(-exp - 1).unwrap_or(0);
            out.extend(std::iter::repeat_n('0', zeros));
            out.push_str(d0);
            out.push_str(rest);
        }
    } else {
        out.push_str(d0);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        let _ = write!(out, "{a}");
    }
}

/// A small fixed-size text buffer (float formatting without heap allocation).
struct StackBuf {
    b: [u8; 64],
    n: usize,
}

impl StackBuf {
    fn new() -> Self {
        StackBuf { b: [0; 64], n: 0 }
    }

    fn clear(&mut self) {
        self.n = 0;
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever appended, so the content is valid UTF-8.
        std::str::from_utf8(&self.b[..self.n]).unwrap_or("")
    }
}

impl fmt::Write for StackBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.n + s.len();
        if end > self.b.len() {
            return Err(fmt::Error);
        }
        self.b[self.n..end].copy_from_slice(s.as_bytes());
        self.n = end;
        Ok(())
    }
}
