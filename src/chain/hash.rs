//! Hash functions of the chain and the tree.
//!
//! - event hash: SHA-256 of the event's RFC 8785 canonical bytes (without `hash`);
//! - leaf hash: `SHA-256(0x00 || data)` (RFC 9162 §2.1.1), where a log leaf's
//!   data is the 32 raw bytes of the event hash;
//! - interior node: `SHA-256(0x01 || left || right)`.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first event of every stream: 64 zeros.
pub const ZERO_HASH_HEX: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Returns the SHA-256 of an event's canonical bytes.
pub fn event_hash(canonical: &[u8]) -> Hash {
    Sha256::digest(canonical).into()
}

/// Returns the RFC 9162 leaf hash of `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// Returns the RFC 9162 interior node hash of two children.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Returns the hash of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Parses a 64-character lowercase hex hash.
///
/// # Errors
/// Returns `None` when `s` is not exactly 64 lowercase hex digits.
pub fn parse_hex(s: &str) -> Option<Hash> {
    if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}
