//! Unit tests for addressing.
use super::*;
