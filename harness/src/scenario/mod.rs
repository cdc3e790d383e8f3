//! Scenario files: model, parsing with positions, validation, variables and diagnostics.

pub mod diagnostic;
pub mod locate;
pub mod model;
pub mod parse;
pub mod validate;
pub mod vars;

pub use diagnostic::Diagnostic;
pub use model::Scenario;
pub use parse::{load_file, parse_str, Invalid, LoadError, Loaded};
