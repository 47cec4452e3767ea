//! Reading stored rows into the store's types, once for both backends: each
//! backend gives column access ([`Columns`]); the decoding and its checks
//! (a negative seq or a key hash of the wrong length is corruption, not a
//! default) live here.

use super::{ArchiveBatch, KeyRecord, Result, StoreError};

/// Column access by position over a backend's row.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, i: usize) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    /// An integer column.
    fn int(&self, i: usize) -> Result<i64>;
    /// A binary column.
    fn bytes(&self, i: usize) -> Result<Vec<u8>>;

    /// A non-negative integer column (seqs, counts, sizes).
    fn count(&self, i: usize) -> Result<u64> {
        let v = self.int(i)?;
        u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("column {i} is negative ({v})")))
    }
}

/// The columns [`batch`] reads, for `archive_batches b JOIN streams s`.
pub(crate) const BATCH_COLUMNS: &str = "s.name, b.start_seq, b.end_seq, b.count, b.first_time, b.last_time, b.last_hash, b.object_key, \
    b.object_sha256, b.object_size, b.raw_size, b.manifest_key, b.manifest_sha256, b.created";

/// Reads a row of [`BATCH_COLUMNS`].
///
/// # Errors
/// [`StoreError::Corrupt`] for a value of the wrong type or sign.
pub(crate) fn batch(r: &impl Columns) -> Result<ArchiveBatch> {
    Ok(ArchiveBatch {
        stream: r.text(0)?,
        start_seq: r.count(1)?,
        end_seq: r.count(2)?,
        count: r.count(3)?,
        first_time: r.text(4)?,
        last_time: r.text(5)?,
        last_hash: r.text(6)?,
        object_key: r.text(7)?,
        object_sha256: r.text(8)?,
        object_size: r.count(9)?,
        raw_size: r.count(10)?,
        manifest_key: r.text(11)?,
        manifest_sha256: r.text(12)?,
        created: r.text(13)?,
    })
}

/// The columns [`key`] reads, from `api_keys`.
pub(crate) const KEY_COLUMNS: &str = "id, scope, stream, secret_hash, created, revoked";

/// Reads a row of [`KEY_COLUMNS`].
///
/// # Errors
/// [`StoreError::Corrupt`] for a secret hash that is not 32 bytes (it was
/// read as all zeros before, a key no token matches, silently).
pub(crate) fn key(r: &impl Columns) -> Result<KeyRecord> {
    let id = r.text(0)?;
    let hash = r.bytes(3)?;
    let secret_hash: [u8; 32] = hash.as_slice().try_into().map_err(|_| {
        StoreError::Corrupt(format!(
            "key {id}: secret hash is {} bytes, not 32",
            hash.len()
        ))
    })?;
    Ok(KeyRecord {
        id,
        scope: r.text(1)?,
        stream: r.text(2)?,
        secret_hash,
        created: r.text(4)?,
        revoked: r.opt_text(5)?,
    })
}
