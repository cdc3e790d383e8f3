//! Scenario files: reading (bounded), parsing with positions, validation into the typed
//! [`Scenario`], variables and diagnostics.

pub mod diagnostic;
pub mod limits;
pub mod locate;
pub mod model;
pub mod parse;
pub mod read;
pub mod typed;
pub mod validate;
pub mod vars;

pub use diagnostic::Diagnostic;
pub use parse::{load_file, parse_str, Invalid, LoadError, Loaded};
pub use typed::*;
