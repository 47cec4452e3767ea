//! Restore: archived ranges back into the hot store.
