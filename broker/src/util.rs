//! Small helpers shared by every module: the poison-tolerant lock, AMQP errors, random names.

use std::sync::{Mutex, MutexGuard};

use fe2o3_amqp_types::definitions::{
    self, AmqpError, ConnectionError, ErrorCondition, LinkError, SessionError,
};
use fe2o3_amqp_types::primitives::Symbol;

/// Locks a mutex, taking the data of a poisoned one: a panicked holder must not take the
/// whole broker down with it (every critical section leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Builds an AMQP error from a condition string, mapping known conditions to their variant.
pub(crate) fn amqp_error(condition: &str, description: &str) -> definitions::Error {
    let cond = if let Ok(e) = AmqpError::try_from(condition) {
        ErrorCondition::AmqpError(e)
    } else if let Ok(e) = ConnectionError::try_from(condition) {
        ErrorCondition::ConnectionError(e)
    } else if let Ok(e) = SessionError::try_from(condition) {
        ErrorCondition::SessionError(e)
    } else if let Ok(e) = LinkError::try_from(condition) {
        ErrorCondition::LinkError(e)
    } else {
        ErrorCondition::Custom(Symbol::from(condition))
    };
    let description = if description.is_empty() {
        None
    } else {
        Some(description.to_string())
    };
    definitions::Error::new(cond, description, None)
}

/// The symbol of an error condition (`amqp:not-found`).
pub(crate) fn condition_text(c: &ErrorCondition) -> String {
    let symbol = match c {
        ErrorCondition::AmqpError(e) => Symbol::from(e),
        ErrorCondition::ConnectionError(e) => Symbol::from(e),
        ErrorCondition::SessionError(e) => Symbol::from(e),
        ErrorCondition::LinkError(e) => Symbol::from(e),
        ErrorCondition::Custom(s) => s.clone(),
        #[allow(unreachable_patterns)]
        _ => Symbol::from("amqp:internal-error"),
    };
    symbol.0
}

/// `n` random alphanumeric characters.
pub(crate) fn random_suffix(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_survives_poison() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().expect("first lock");
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
    }

    #[test]
    fn known_conditions_map_to_variants() {
        let e = amqp_error("amqp:not-found", "x");
        assert!(matches!(
            e.condition,
            ErrorCondition::AmqpError(AmqpError::NotFound)
        ));
        let e = amqp_error("amqp:link:detach-forced", "");
        assert!(matches!(e.condition, ErrorCondition::LinkError(_)));
        assert!(e.description.is_none());
        let e = amqp_error("x-custom:thing", "d");
        assert!(matches!(e.condition, ErrorCondition::Custom(_)));
        for c in [
            "amqp:not-found",
            "amqp:connection:forced",
            "amqp:link:detach-forced",
            "x:y",
        ] {
            assert_eq!(condition_text(&amqp_error(c, "").condition), c);
        }
    }
}
