//! Unit tests for the wire codec.
use super::*;
