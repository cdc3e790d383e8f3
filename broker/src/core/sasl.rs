//! SASL: PLAIN against the configured users, and ANONYMOUS when allowed.

use std::sync::Arc;

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};

/// SASL acceptor with several PLAIN users and optional ANONYMOUS.
#[derive(Debug, Clone)]
pub(crate) struct UsersSasl {
    users: Arc<Vec<(String, String)>>,
    anonymous: bool,
}

impl UsersSasl {
    pub(crate) fn new(users: Vec<(String, String)>, anonymous: bool) -> Self {
        UsersSasl {
            users: Arc::new(users),
            anonymous,
        }
    }

    /// Checks a PLAIN initial response (`authzid NUL authcid NUL passwd`).
    fn plain_ok(&self, response: &[u8]) -> bool {
        let mut parts = response.split(|b| *b == 0);
        let (_authz, user, pass) = (parts.next(), parts.next(), parts.next());
        match (user, pass) {
            (Some(u), Some(p)) => self
                .users
                .iter()
                .any(|(name, pw)| name.as_bytes() == u && pw.as_bytes() == p),
            _ => false,
        }
    }
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for UsersSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        let mut m = Vec::new();
        if !self.users.is_empty() {
            m.push(Symbol::from("PLAIN"));
        }
        if self.anonymous {
            m.push(Symbol::from("ANONYMOUS"));
        }
        Array::from(m)
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.as_str() {
            "ANONYMOUS" if self.anonymous => outcome(SaslCode::Ok),
            "PLAIN" => match init.initial_response {
                Some(resp) if self.plain_ok(&resp) => outcome(SaslCode::Ok),
                _ => {
                    tracing::info!("SASL PLAIN authentication failed");
                    outcome(SaslCode::Auth)
                }
            },
            other => {
                tracing::info!(mechanism = other, "SASL mechanism refused");
                outcome(SaslCode::Auth)
            }
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        outcome(SaslCode::Sys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_checks_user_and_password() {
        let s = UsersSasl::new(vec![("u".into(), "p:w".into())], false);
        assert!(s.plain_ok(b"\0u\0p:w"));
        assert!(s.plain_ok(b"authz\0u\0p:w"));
        assert!(!s.plain_ok(b"\0u\0wrong"));
        assert!(!s.plain_ok(b"\0nobody\0p:w"));
        assert!(!s.plain_ok(b"garbage"));
        assert_eq!(s.mechanisms().len(), 1);
    }
}
