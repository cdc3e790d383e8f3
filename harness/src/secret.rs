//! Secrets in one place: passwords are [`Password`]s (the driver's [`driver::url::Secret`], whose
//! `Debug` and `Display` print `***`), and every text the harness shows goes through a
//! [`crate::transcript::Redactor`] that knows them.

/// A password. It prints as `***`; [`Password::expose`] is for configuration files only.
pub type Password = driver::url::Secret;
