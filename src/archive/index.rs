//! The archive index: a signed, chained, create-only object that names
//! every stream of the log with its archived range, its last manifest and
//! its latest signed checkpoint (issue #12).
//!
//! Manifests chain the batches of *one* stream, so a bucket alone cannot
//! show that a whole stream folder, or the newest batches of a stream, were
//! removed. The index closes that: written at every archive run and at
//! least once per `archive.index_interval` even when idle (CloudTrail
//! writes a digest every hour), at `_index/{n:020}.json`, each one linking
//! to the previous one's SHA-256. `verify --archive` starts from the newest
//! index: whatever the chain names and the bucket lacks is a located
//! problem, and a stream folder no index names is reported as added.
//!
//! What it is not: proof of freshness. Deleting the newest objects *and*
//! the newest index leaves a shorter, self-consistent bucket; only the
//! index's age (`verify --max-age`) or a checkpoint held elsewhere
//! (`verify --trusted-checkpoint`) shows that.
//!
//! Format (version 1): RFC 8785 canonical JSON plus a newline; the Ed25519
//! signature covers `trailkeep-index-v1\n` followed by the canonical JSON
//! without `signature` and `hmacSha256` (the prefix keeps it from ever
//! being taken for a manifest or note signature by the same key).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::ArchiveError;
use super::layout;
use super::manifest::{Signature, SignedDoc};
use crate::chain::note::{NoteSigner, NoteVerifier};
use crate::names::StreamName;
use crate::objstore::Bucket;
use crate::store::Store;

/// Index format version written by this build.
pub const VERSION: u32 = 1;
const CONTEXT: &[u8] = b"trailkeep-index-v1\n";
/// Folder of the index objects, relative to the archive prefix.
pub const FOLDER: &str = "_index";

/// Returns the key of index number `n`: `_index/{n:020}.json`.
pub fn key(n: u64) -> String {
    format!("{FOLDER}/{n:020}.json")
}

/// Returns the number of an index key, when it has the layout's shape.
pub fn number_of(key: &str) -> Option<u64> {
    let name = key.strip_prefix(FOLDER)?.strip_prefix('/')?;
    let digits = name.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A stream's archived part, as of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArchivedRange {
    /// First archived seq (1 unless older history was not retained).
    pub first_seq: u64,
    /// Last archived seq.
    pub last_seq: u64,
    /// Key of the manifest ending at `last_seq`.
    pub last_manifest_key: String,
    /// SHA-256 of that manifest's bytes.
    pub last_manifest_sha256: String,
}

/// A stream's latest signed checkpoint, as of the index. Its note is in the
/// bucket at `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// RFC 9162 root, hex.
    pub root: String,
    /// Key of the signed note: `{stream}/checkpoints/{size:020}`.
    pub key: String,
    /// When it was signed (RFC 3339).
    pub created: String,
}

/// One stream in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexedStream {
    /// Stream name.
    pub stream: String,
    /// The archived range, when anything was archived.
    pub archived: Option<ArchivedRange>,
    /// The latest signed checkpoint, when one was signed.
    pub checkpoint: Option<IndexedCheckpoint>,
}

/// One index object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Index {
    /// Format version.
    pub version: u32,
    /// Log name.
    pub log: String,
    /// Its number: the key is `_index/{number:020}.json`, from 1.
    pub number: u64,
    /// When it was written (RFC 3339).
    pub created: String,
    /// SHA-256 of the previous index's bytes (None for number 1).
    pub prev_index_sha256: Option<String>,
    /// Every stream of the log, by name.
    pub streams: Vec<IndexedStream>,
    /// Ed25519 signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// HMAC-SHA256 with the operator's shared secret, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_sha256: Option<String>,
}

impl SignedDoc for Index {
    const CONTEXT: &'static [u8] = CONTEXT;
    fn seals_mut(&mut self) -> (&mut Option<Signature>, &mut Option<String>) {
        (&mut self.signature, &mut self.hmac_sha256)
    }
    fn seals(&self) -> (Option<&Signature>, Option<&str>) {
        (self.signature.as_ref(), self.hmac_sha256.as_deref())
    }
}

impl Index {
    /// Signs with the log's key and, when given, the shared HMAC secret.
    #[must_use]
    pub fn sign(mut self, signer: &NoteSigner, hmac_key: Option<&[u8]>) -> Self {
        self.seal(signer, hmac_key);
        self
    }

    /// The object's bytes: canonical JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.file_bytes()
    }

    /// Parses an index object.
    ///
    /// # Errors
    /// A message naming what is wrong (not JSON of this shape, or a version
    /// this build does not read).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let i: Self = serde_json::from_slice(bytes).map_err(|e| format!("not an index: {e}"))?;
        if i.version != VERSION {
            return Err(format!("index version {} is not supported", i.version));
        }
        super::manifest::exact_integers(&i).map_err(|e| format!("not an index: {e}"))?;
        Ok(i)
    }

    /// Checks the signature against `verifier`.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn verify_signature(&self, verifier: &NoteVerifier) -> Result<(), String> {
        self.check_signature(verifier)
            .map_err(|e| format!("signature: {e}"))
    }

    /// Checks the HMAC with the shared secret.
    ///
    /// # Errors
    /// When it is missing or wrong.
    pub fn verify_hmac(&self, key: &[u8]) -> Result<(), String> {
        self.check_hmac(key).map_err(|e| format!("hmac: {e}"))
    }

    /// The entry of `stream`.
    pub fn stream(&self, stream: &str) -> Option<&IndexedStream> {
        self.streams
            .binary_search_by(|s| s.stream.as_str().cmp(stream))
            .ok()
            .map(|i| &self.streams[i])
    }
}

/// What [`write()`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Written {
    /// The index key.
    pub key: String,
    /// Its number.
    pub number: u64,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Streams it names.
    pub streams: usize,
    /// Checkpoint notes put into the bucket for it.
    pub checkpoints_put: u64,
}

/// Returns the newest index in the bucket whose signature verifies: its
/// number, bytes' SHA-256 and contents; and the highest index number seen
/// at all (an unreadable newest one is skipped, not linked to).
///
/// # Errors
/// The store's error.
pub async fn newest(
    bucket: &Bucket,
    verifier: &NoteVerifier,
) -> Result<(Option<(u64, String, Index)>, u64), ArchiveError> {
    let mut numbers: Vec<u64> = bucket
        .list(FOLDER)
        .await?
        .iter()
        .filter_map(|(k, _)| number_of(k))
        .collect();
    numbers.sort_unstable();
    let highest = numbers.last().copied().unwrap_or(0);
    for n in numbers.into_iter().rev() {
        let Some(bytes) = bucket.get(&key(n)).await? else {
            continue;
        };
        if let Ok(i) = Index::parse(&bytes)
            && i.number == n
            && i.verify_signature(verifier).is_ok()
        {
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
            return Ok((Some((n, sha, i)), highest));
        }
        tracing::warn!(key = %key(n), "archive index does not verify; the next index links to the newest one that does");
    }
    Ok((None, highest))
}

/// Writes the next index: every stream of `store` with its archived range
/// and latest checkpoint (whose note is put into the bucket first,
/// create-only), chained to the newest valid index. Run it under the
/// archiver lease, so one process writes the chain.
///
/// # Errors
/// Store or bucket errors; a create-only conflict when another process
/// wrote the same number meanwhile (the next run writes the next one).
pub async fn write(
    bucket: &Bucket,
    store: &dyn Store,
    signer: &NoteSigner,
    log_name: &str,
    hmac_key: Option<&[u8]>,
) -> Result<Written, ArchiveError> {
    let verifier = signer.verifier();
    let (prev, highest) = newest(bucket, &verifier).await?;
    let mut streams = Vec::new();
    let mut checkpoints_put = 0;
    for info in store.streams().await? {
        let archived = match store.last_archive_batch(&info.name).await? {
            None => None,
            Some(last) => {
                let first = store
                    .archive_batches(Some(&info.name), 0, 1)
                    .await?
                    .first()
                    .map_or(last.start_seq, |b| b.start_seq);
                Some(ArchivedRange {
                    first_seq: first,
                    last_seq: last.end_seq,
                    last_manifest_key: last.manifest_key,
                    last_manifest_sha256: last.manifest_sha256,
                })
            }
        };
        let checkpoint = match store.latest_checkpoint(&info.name).await? {
            None => None,
            Some(cp) => {
                let key = layout::checkpoint_key(&StreamName::parse(&info.name)?, cp.size);
                if bucket.get(&key).await?.is_none() {
                    bucket
                        .put_create(&key, Bytes::from(cp.note.clone()))
                        .await?;
                    bucket
                        .confirm(
                            &key,
                            cp.note.len() as u64,
                            &hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                                cp.note.as_bytes(),
                            )),
                        )
                        .await?;
                    checkpoints_put += 1;
                }
                Some(IndexedCheckpoint {
                    size: cp.size,
                    root: cp.root,
                    key,
                    created: cp.created,
                })
            }
        };
        if archived.is_none() && checkpoint.is_none() {
            continue; // nothing signed yet: the next index names it
        }
        streams.push(IndexedStream {
            stream: info.name,
            archived,
            checkpoint,
        });
    }
    streams.sort_by(|a, b| a.stream.cmp(&b.stream));
    let number = highest + 1;
    let index = Index {
        version: VERSION,
        log: log_name.to_owned(),
        number,
        created: crate::event::format_received(OffsetDateTime::now_utc()),
        prev_index_sha256: prev.map(|(_, sha, _)| sha),
        streams,
        signature: None,
        hmac_sha256: None,
    }
    .sign(signer, hmac_key);
    let bytes = index.to_bytes();
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let k = key(number);
    bucket.put_create(&k, Bytes::from(bytes.clone())).await?;
    bucket.confirm(&k, bytes.len() as u64, &sha).await?;
    metrics::counter!("trailkeep_archive_indexes_written_total").increment(1);
    tracing::info!(key = %k, streams = index.streams.len(), "archive index written");
    Ok(Written {
        key: k,
        number,
        sha256: sha,
        streams: index.streams.len(),
        checkpoints_put,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> Index {
        Index {
            version: VERSION,
            log: "log.example".into(),
            number: 2,
            created: "2026-12-01T00:00:00.000000Z".into(),
            prev_index_sha256: Some("ab".repeat(32)),
            streams: vec![IndexedStream {
                stream: "a".into(),
                archived: Some(ArchivedRange {
                    first_seq: 1,
                    last_seq: 10,
                    last_manifest_key: "a/manifests/dt=2026-12-01/x.json".into(),
                    last_manifest_sha256: "cd".repeat(32),
                }),
                checkpoint: Some(IndexedCheckpoint {
                    size: 12,
                    root: "ef".repeat(32),
                    key: layout::checkpoint_key(
                        &crate::names::StreamName::parse("a").expect("valid"),
                        12,
                    ),
                    created: "2026-12-01T00:00:00.000000Z".into(),
                }),
            }],
            signature: None,
            hmac_sha256: None,
        }
    }

    #[test]
    fn keys_parse_back() {
        assert_eq!(key(7), "_index/00000000000000000007.json");
        assert_eq!(number_of(&key(7)), Some(7));
        for bad in [
            "_index/7.json",
            "_index/0000000000000000000x.json",
            "x/_index/00000000000000000007.json",
            "_index/00000000000000000007.json.tmp",
        ] {
            assert_eq!(number_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn signature_and_hmac_cover_every_field() {
        let signer = NoteSigner::from_seed("log.example", &[7; 32]).unwrap();
        let other = NoteSigner::from_seed("log.example", &[8; 32]).unwrap();
        let v = signer.verifier();
        let signed = sample().sign(&signer, Some(b"0123456789abcdef"));
        let back = Index::parse(&signed.to_bytes()).unwrap();
        assert_eq!(back, signed);
        back.verify_signature(&v).unwrap();
        back.verify_hmac(b"0123456789abcdef").unwrap();
        assert!(back.verify_hmac(b"another secret!!").is_err());
        assert!(back.verify_signature(&other.verifier()).is_err());
        let edits: Vec<fn(&mut Index)> = vec![
            |i| i.number += 1,
            |i| i.log.push('x'),
            |i| i.created.push('x'),
            |i| i.prev_index_sha256 = None,
            |i| i.streams.clear(),
            |i| i.streams[0].stream.push('x'),
            |i| i.streams[0].archived.as_mut().unwrap().last_seq += 1,
            |i| i.streams[0].archived.as_mut().unwrap().first_seq += 1,
            |i| i.streams[0].archived = None,
            |i| i.streams[0].checkpoint.as_mut().unwrap().size -= 1,
            |i| i.streams[0].checkpoint.as_mut().unwrap().root.push('0'),
        ];
        for (n, edit) in edits.into_iter().enumerate() {
            let mut t = back.clone();
            edit(&mut t);
            assert!(t.verify_signature(&v).is_err(), "edit {n} not detected");
            assert!(
                t.verify_hmac(b"0123456789abcdef").is_err(),
                "edit {n} not detected by hmac"
            );
        }
        let unsigned = sample();
        assert!(unsigned.verify_signature(&v).is_err());
        assert!(Index::parse(b"{\"version\":2}").is_err());
        let mut v2 = serde_json::to_value(&signed).unwrap();
        v2["version"] = 2.into();
        assert!(
            Index::parse(v2.to_string().as_bytes())
                .unwrap_err()
                .contains("version 2")
        );
    }

    /// Fuzzing finding (FUZZING.md, `index`): as for manifests, an integer
    /// beyond 2^53 - 1 has the canonical form of another, so the signature
    /// did not pin it and the bytes did not parse back to the same index.
    #[test]
    fn integers_beyond_2_pow_53_are_refused() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["number"] = serde_json::json!(9_007_199_254_740_993_u64);
        let e = Index::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("2^53"), "{e}");
        let mut v = serde_json::to_value(sample()).unwrap();
        v["streams"][0]["checkpoint"]["size"] = serde_json::json!(u64::MAX);
        let e = Index::parse(v.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("2^53"), "{e}");
        let mut ok = sample();
        ok.number = (1 << 53) - 1;
        assert_eq!(Index::parse(&ok.to_bytes()).unwrap(), ok);
    }

    #[test]
    fn streams_are_found_by_name() {
        let mut i = sample();
        i.streams.push(IndexedStream {
            stream: "b".into(),
            archived: None,
            checkpoint: None,
        });
        assert_eq!(i.stream("b").unwrap().stream, "b");
        assert!(i.stream("c").is_none());
    }
}
