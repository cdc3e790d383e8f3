//! Unit tests for options and the INI loader.
use super::*;
