//! Keys of the cold layout, relative to the archive prefix.

use crate::names::StreamName;
use crate::objstore::Compression;

/// `{stream}/events/dt=YYYY-MM-DD/{start:020}-{end:020}.ndjson.gz|zst`
pub fn object_key(stream: &StreamName, day: &str, start: u64, end: u64, c: Compression) -> String {
    format!(
        "{stream}/events/dt={day}/{start:020}-{end:020}.ndjson.{}",
        c.extension()
    )
}

/// `{stream}/manifests/dt=YYYY-MM-DD/{start:020}-{end:020}.json`
pub fn manifest_key(stream: &StreamName, day: &str, start: u64, end: u64) -> String {
    format!("{stream}/manifests/dt={day}/{start:020}-{end:020}.json")
}

/// `{stream}/checkpoints/{size:020}`
pub fn checkpoint_key(stream: &StreamName, size: u64) -> String {
    format!("{stream}/checkpoints/{size:020}")
}

/// `keys/{keyId}.pub`
pub fn verifier_key(key_id: u32) -> String {
    format!("keys/{key_id:08x}.pub")
}

/// Parses `{start:020}-{end:020}` from a manifest or object key's file name.
pub fn range_of(key: &str) -> Option<(u64, u64)> {
    let name = key.rsplit('/').next()?;
    let stem = name.split('.').next()?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn layout_keys_sort_by_seq_and_parse_back() {
        let s = &crate::names::StreamName::parse("s").unwrap();
        let k = object_key(s, "2026-01-02", 1, 100, Compression::Gzip);
        assert_eq!(
            k,
            "s/events/dt=2026-01-02/00000000000000000001-00000000000000000100.ndjson.gz"
        );
        assert_eq!(range_of(&k), Some((1, 100)));
        let m = manifest_key(s, "2026-01-02", 101, 200);
        assert_eq!(range_of(&m), Some((101, 200)));
        assert!(manifest_key(s, "d", 9, 9) < manifest_key(s, "d", 10, 10));
        assert_eq!(range_of("s/events/x.json"), None);
    }
}
