//! The archive conformance suite.
