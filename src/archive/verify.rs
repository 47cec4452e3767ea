//! Offline verification of the archive.
