//! The pure core of the log: event hashes, the RFC 9162 Merkle tree, tiles,
//! checkpoints and signed notes.
//!
//! Nothing here does I/O or touches tokio; every function is deterministic and
//! can be checked against the published vectors in `tests/data/`.
//!
//! This is **not** a storage layer: `store/` persists what this module
//! computes, and `verify/` recomputes it to compare.
//!
//! Specs: [RFC 9162 §2.1](https://www.rfc-editor.org/rfc/rfc9162#section-2.1)
//! (Merkle tree, inclusion and consistency proofs),
//! [C2SP tlog-checkpoint](https://c2sp.org/tlog-checkpoint),
//! [C2SP signed-note](https://c2sp.org/signed-note),
//! [C2SP tlog-tiles](https://c2sp.org/tlog-tiles) (tile geometry).

pub mod checkpoint;
pub mod hash;
pub mod merkle;
pub mod note;
pub mod tiles;

pub use hash::{Hash, ZERO_HASH_HEX, event_hash, leaf_hash, node_hash};
