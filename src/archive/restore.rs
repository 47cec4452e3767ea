//! Restore: an archived seq range back into the hot store.
//!
//! The batches come from the hot store's records; each manifest must have
//! the SHA-256 recorded for it, a valid signature (and HMAC, when a secret
//! is configured), and chain to the previous batch; each object must match
//! its manifest; every event's hash, link and seq is checked. Only when
//! every batch in the range checks out is anything inserted, so a failed
//! restore stores nothing. Restored events keep their seq and hash, are
//! marked restored, and are never archived again.

use serde::Serialize;

use super::ArchiveError;
use super::manifest::Manifest;
use super::segment::{Compression, decompress};
use crate::chain::merkle::MemoryTree;
use crate::chain::note::NoteVerifier;
use crate::chain::{ZERO_HASH_HEX, leaf_hash};
use crate::event::split_stored_line;
use crate::event::stored::check_link;
use crate::objstore::Bucket;
use crate::store::{ArchiveBatch, RestoredEvent, Store};

/// What a restore did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestoreReport {
    /// Stream.
    pub stream: String,
    /// First seq asked for.
    pub from: u64,
    /// Last seq asked for.
    pub to: u64,
    /// Archive objects read and checked.
    pub objects: u64,
    /// Events inserted into the hot store.
    pub restored: u64,
    /// Events of the range that were already hot.
    pub already_hot: u64,
}

fn bad(batch: &ArchiveBatch, key: &str, message: String) -> ArchiveError {
    ArchiveError::Chain {
        stream: batch.stream.clone(),
        seq: batch.start_seq,
        message: format!("{key}: {message}; nothing restored"),
    }
}

/// One archived batch read back and checked as restore checks it: the
/// manifest's SHA-256 against the recorded one, its signature (and HMAC),
/// its link to `prev`, the object's SHA-256 and size, then every event's
/// hash, seq, link and stream, the count, Merkle root and last hash.
/// Compression comes from the manifest, never from the key's suffix.
pub(crate) struct BatchEvents {
    /// The events `keep` chose.
    pub events: Vec<RestoredEvent>,
    /// The batch's last hash (the next batch's `prev`).
    pub last_hash: String,
    /// Events checked.
    pub checked: u64,
}

/// Reads and checks `b` (see [`BatchEvents`]); keeps the events whose seq
/// `keep` takes.
///
/// # Errors
/// [`ArchiveError::Chain`] naming the key of whatever fails its check;
/// bucket errors.
pub(crate) async fn read_batch(
    bucket: &Bucket,
    verifier: &NoteVerifier,
    hmac_key: Option<&[u8]>,
    b: &ArchiveBatch,
    prev: &str,
    keep: &(dyn Fn(u64) -> bool + Sync),
) -> Result<BatchEvents, ArchiveError> {
    let stream = b.stream.as_str();
    let mut prev = prev.to_owned();
    let mut rows = Vec::new();
    let mut checked = 0u64;
    let mbytes = bucket
        .get(&b.manifest_key)
        .await?
        .ok_or_else(|| bad(b, &b.manifest_key, "missing from the archive".into()))?;
    let msha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&mbytes));
    if msha != b.manifest_sha256 {
        return Err(bad(
            b,
            &b.manifest_key,
            format!(
                "sha256 {msha} differs from the recorded {}",
                b.manifest_sha256
            ),
        ));
    }
    let m = Manifest::parse(&mbytes).map_err(|e| bad(b, &b.manifest_key, e.to_string()))?;
    m.verify_signature(verifier)
        .map_err(|e| bad(b, &b.manifest_key, e.to_string()))?;
    if let Some(k) = hmac_key {
        m.verify_hmac(k)
            .map_err(|e| bad(b, &b.manifest_key, e.to_string()))?;
    }
    if m.prev_hash != prev {
        return Err(bad(
            b,
            &b.manifest_key,
            format!("prevHash {} does not link to {prev}", m.prev_hash),
        ));
    }
    let obj = bucket
        .get(&m.object.key)
        .await?
        .ok_or_else(|| bad(b, &m.object.key, "missing from the archive".into()))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&obj));
    if sha != m.object.sha256 || obj.len() as u64 != m.object.size {
        return Err(bad(
            b,
            &m.object.key,
            format!(
                "sha256 {sha} / size {} differ from the manifest's",
                obj.len()
            ),
        ));
    }
    let c = Compression::parse(&m.object.compression).ok_or_else(|| {
        bad(
            b,
            &m.object.key,
            format!("compression {:?} unknown", m.object.compression),
        )
    })?;
    let raw = decompress(&obj, c, m.object.uncompressed_size + 1)
        .map_err(|e| bad(b, &m.object.key, e))?;
    let text = std::str::from_utf8(&raw).map_err(|e| bad(b, &m.object.key, e.to_string()))?;
    let mut tree = MemoryTree::new();
    let mut seq = m.start_seq;
    for line in text.lines() {
        let (body, hash) = split_stored_line(line)
            .ok_or_else(|| bad(b, &m.object.key, format!("seq {seq}: not a stored event")))?;
        let link = check_link(&body, &hash, stream, seq, Some(&prev));
        if let Some(fault) = link.first_fault() {
            return Err(bad(b, &m.object.key, format!("seq {seq}: {fault}")));
        }
        tree.push(leaf_hash(&link.computed));
        if keep(seq)
            && let Some(f) = link.fields
        {
            rows.push(RestoredEvent {
                seq,
                id: f.id.into_owned(),
                event_type: f.event_type.into_owned(),
                time: f.time.into_owned(),
                received: f.received.into_owned(),
                hash: hash.clone(),
                body,
            });
        }
        prev = hash;
        seq += 1;
        checked += 1;
    }
    if seq != m.end_seq + 1 || hex::encode(tree.root()) != m.merkle_root || prev != m.last_hash {
        return Err(bad(
            b,
            &m.object.key,
            "count, Merkle root or last hash differs from the manifest".into(),
        ));
    }
    Ok(BatchEvents {
        events: rows,
        last_hash: prev,
        checked,
    })
}

/// Archived events of `stream` from `from_seq` on (at most `max`), read
/// from the recorded batch that holds `from_seq` and checked as
/// `read_batch` checks them (what feeds a destination whose cursor fell
/// behind the hot store). `None` when no recorded batch holds `from_seq`.
///
/// # Errors
/// As `read_batch`: the key and seq of what failed its check; store errors.
pub async fn read_archived(
    store: &dyn Store,
    bucket: &Bucket,
    verifier: &NoteVerifier,
    hmac_key: Option<&[u8]>,
    stream: &str,
    from_seq: u64,
    max: usize,
) -> Result<Option<Vec<RestoredEvent>>, ArchiveError> {
    let mut prev = ZERO_HASH_HEX.to_owned();
    let mut next = 0;
    let batch = 'find: loop {
        let page = store.archive_batches(Some(stream), next, 1000).await?;
        let Some(last) = page.last() else {
            return Ok(None);
        };
        next = last.start_seq + 1;
        for b in page {
            if b.end_seq < from_seq {
                prev.clone_from(&b.last_hash);
            } else if b.start_seq <= from_seq {
                break 'find b;
            } else {
                return Ok(None);
            }
        }
    };
    let got = read_batch(bucket, verifier, hmac_key, &batch, &prev, &|seq| {
        seq >= from_seq
    })
    .await?;
    Ok(Some(got.events.into_iter().take(max).collect()))
}

/// What to restore: seqs `from..=to` of `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreRange<'a> {
    /// Stream.
    pub stream: &'a str,
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
}

/// Restores `range` from `bucket`.
///
/// # Errors
/// [`ArchiveError::Location`] for a range that is not archived, and
/// [`ArchiveError::Chain`] naming the key when anything fails its check.
pub async fn restore(
    store: &dyn Store,
    bucket: &Bucket,
    verifier: &NoteVerifier,
    hmac_key: Option<&[u8]>,
    range: RestoreRange<'_>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<RestoreReport, ArchiveError> {
    let RestoreRange { stream, from, to } = range;
    if from == 0 || to < from {
        return Err(ArchiveError::Location(format!(
            "restore range {from}-{to}: --from must be at least 1 and --to at least --from"
        )));
    }
    let mut batches = Vec::new();
    let mut prev_last: Option<String> = None;
    let mut next = 0;
    loop {
        let page = store.archive_batches(Some(stream), next, 1000).await?;
        let Some(last) = page.last() else { break };
        next = last.start_seq + 1;
        for b in page {
            if b.end_seq < from {
                prev_last = Some(b.last_hash.clone());
            } else if b.start_seq <= to {
                batches.push(b);
            }
        }
    }
    let archived = batches.last().map_or(0, |b| b.end_seq);
    if batches.first().is_none_or(|b| b.start_seq > from) || archived < to {
        return Err(ArchiveError::Location(format!(
            "stream {stream}: seqs {from}-{to} are not all archived (recorded batches cover up to seq {})",
            store
                .last_archive_batch(stream)
                .await?
                .map_or(0, |b| b.end_seq)
        )));
    }
    let mut prev = prev_last.unwrap_or_else(|| ZERO_HASH_HEX.to_owned());
    let mut rows = Vec::new();
    let mut checked = 0u64;
    for b in &batches {
        let keep = |seq: u64| (from..=to).contains(&seq);
        let got = read_batch(bucket, verifier, hmac_key, b, &prev, &keep).await?;
        checked += got.checked;
        progress(checked);
        prev = got.last_hash;
        rows.extend(got.events);
    }
    let wanted = rows.len() as u64;
    let mut restored = 0;
    let at = crate::event::format_received(time::OffsetDateTime::now_utc());
    for chunk in rows.chunks(5000) {
        restored += store.restore_events(stream, chunk.to_vec(), &at).await?;
    }
    progress(checked);
    Ok(RestoreReport {
        stream: stream.to_owned(),
        from,
        to,
        objects: batches.len() as u64,
        restored,
        already_hot: wanted - restored,
    })
}
