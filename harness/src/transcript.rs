//! Deterministic transcripts of a scenario run and their redaction.
//!
//! The runner appends lines as things happen; [`Transcript::render`] orders the parts that are not ordered
//! by nature (deliveries per service, events) and [`Redactor`] removes what changes from run to run: ports,
//! ids, durations, the host name and secrets.

use std::collections::{BTreeMap, BTreeSet};

use regex::Regex;

/// What happened in one scenario run.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    /// Header lines (scenario, broker, services).
    pub header: Vec<String>,
    /// One or more lines per step, in step order.
    pub steps: Vec<String>,
    /// Per service: one line per delivery it received (sorted when rendered).
    pub deliveries: BTreeMap<String, Vec<String>>,
    /// Per source (client, service): the kinds of driver connection events seen (a set, so the number of
    /// reconnect attempts, which depends on timing, does not show).
    pub events: BTreeMap<String, BTreeSet<String>>,
    /// Broker counter lines (already stable).
    pub counters: Vec<String>,
}

impl Transcript {
    /// Adds a header line.
    pub fn header(&mut self, line: impl Into<String>) {
        self.header.push(line.into());
    }

    /// Adds a step line.
    pub fn step(&mut self, line: impl Into<String>) {
        self.steps.push(line.into());
    }

    /// Records a delivery to `service`.
    pub fn delivery(&mut self, service: &str, line: impl Into<String>) {
        self.deliveries
            .entry(service.to_string())
            .or_default()
            .push(line.into());
    }

    /// Records that `source` saw a driver event of this kind.
    pub fn event(&mut self, source: &str, event: impl Into<String>) {
        self.events
            .entry(source.to_string())
            .or_default()
            .insert(event.into());
    }

    /// The transcript as stable text (not yet redacted).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.header {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("steps:\n");
        for l in &self.steps {
            out.push_str("  ");
            out.push_str(l);
            out.push('\n');
        }
        if !self.deliveries.is_empty() {
            out.push_str("deliveries:\n");
            for (svc, lines) in &self.deliveries {
                let mut sorted: BTreeMap<&str, usize> = BTreeMap::new();
                for l in lines {
                    *sorted.entry(l.as_str()).or_default() += 1;
                }
                out.push_str(&format!("  {svc}: {} total\n", lines.len()));
                for (l, n) in sorted {
                    if n == 1 {
                        out.push_str(&format!("    {l}\n"));
                    } else {
                        out.push_str(&format!("    {l} (x{n})\n"));
                    }
                }
            }
        }
        if !self.events.is_empty() {
            out.push_str("driver events:\n");
            for (src, evs) in &self.events {
                let parts: Vec<&str> = evs.iter().map(String::as_str).collect();
                out.push_str(&format!("  {src}: {}\n", parts.join(", ")));
            }
        }
        if !self.counters.is_empty() {
            out.push_str("broker counters:\n");
            for l in &self.counters {
                out.push_str("  ");
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

/// Removes run-specific details from transcript text.
#[derive(Debug, Clone)]
pub struct Redactor {
    secrets: Vec<String>,
    hostnames: Vec<String>,
    rules: Vec<(Regex, &'static str)>,
}

fn re(p: &str) -> Regex {
    // Patterns are literals in this file; a typo is caught by the unit tests.
    Regex::new(p).unwrap_or_else(|e| panic!("bad built-in pattern {p}: {e}"))
}

impl Redactor {
    /// A redactor that also hides `secrets` (passwords) and this machine's host name.
    pub fn new(secrets: Vec<String>) -> Self {
        let mut hostnames = Vec::new();
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            let h = h.trim().to_string();
            // Very short names would redact ordinary words.
            if h.len() >= 4 {
                hostnames.push(h);
            }
        }
        let secrets = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        let rules = vec![
            (re(r"(amqps?://)[^@/\s,]+@"), "${1}***@"),
            (
                re(r"\b(127\.0\.0\.1|localhost|\[::1\]|0\.0\.0\.0):\d{1,5}\b"),
                "${1}:<port>",
            ),
            (
                re(
                    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
                ),
                "<uuid>",
            ),
            (re(r"\b[0-9a-f]{16,}\b"), "<id>"),
            (re(r"\b\d+(\.\d+)?(ns|µs|us|ms|s)\b"), "<duration>"),
            (re(r"\bport \d{2,5}\b"), "port <port>"),
        ];
        Redactor {
            secrets,
            hostnames,
            rules,
        }
    }

    /// Hides the secrets of `text` (and URL credentials), leaving ports, ids and durations: for
    /// messages and errors, which must stay precise.
    pub fn redact_secrets(&self, text: &str) -> String {
        let mut s = text.to_string();
        for secret in &self.secrets {
            s = s.replace(secret.as_str(), "***");
        }
        if let Some((r, with)) = self.rules.first() {
            s = r.replace_all(&s, *with).into_owned();
        }
        s
    }

    /// Redacts `text` for a transcript: secrets, ports, ids, durations and the host name.
    pub fn redact(&self, text: &str) -> String {
        let mut s = self.redact_secrets(text);
        for (r, with) in &self.rules[1..] {
            s = r.replace_all(&s, *with).into_owned();
        }
        for h in &self.hostnames {
            s = s.replace(h.as_str(), "<hostname>");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_ports_ids_durations_secrets() {
        let r = Redactor::new(vec!["hunter2".into()]);
        let out = r.redact(
            "amqp://nova:hunter2@127.0.0.1:40123 msg 0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0 took 12.5ms pw hunter2",
        );
        assert_eq!(
            out,
            "amqp://***@127.0.0.1:<port> msg <uuid> took <duration> pw ***"
        );
    }

    #[test]
    fn deliveries_are_sorted_and_counted() {
        let mut t = Transcript::default();
        t.delivery("b", "cast x");
        t.delivery("a", "call z");
        t.delivery("a", "call y");
        t.delivery("a", "call z");
        let out = t.render();
        assert!(
            out.contains("  a: 3 total\n    call y\n    call z (x2)\n  b: 1 total\n"),
            "{out}"
        );
    }
}
