//! Integration tests of the store crate.

mod conformance;
