//! Offline verification of the archive: nothing but the bucket and the
//! verifier key.
//!
//! Per stream, manifests are walked in seq order. Each is checked for its
//! signature (and HMAC when a secret is given), its key against its range,
//! the link to the previous manifest's SHA-256, and seq continuity; its
//! object for presence, size and SHA-256; and every event inside for its
//! hash, its link to the previous event (across objects too), its seq and
//! stream. The range's Merkle root and last hash are compared with the
//! manifest, and signed checkpoints in the bucket with the root of the
//! events up to their size. Objects that no manifest covers are reported.
//!
//! The report lists every key with a status (`valid`, `invalid` with a
//! reason, `missing`, `not_covered`), as CloudTrail's `validate-logs` does,
//! then the problems located by stream, seq and key, then a summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::ArchiveError;
use super::layout;
use super::manifest::Manifest;
use super::segment::Compression;
use crate::chain::checkpoint::Checkpoint;
use crate::chain::merkle::{Frontier, MemoryTree};
use crate::chain::note::{NoteVerifier, open};
use crate::chain::{ZERO_HASH_HEX, event_hash, leaf_hash};
use crate::event::stored::hex_is;
use crate::event::{scan_stored, split_stored_line};
use crate::objstore::Bucket;
use sha2::Digest as _;

/// What the decompressing thread finds out about one line.
struct LineFacts {
    line: std::ops::Range<usize>,
    fast: Option<FastFacts>,
}

/// A canonical line, scanned and hashed (ranges into the chunk's text).
struct FastFacts {
    computed: [u8; 32],
    hash: std::ops::Range<usize>,
    prev: std::ops::Range<usize>,
    stream: std::ops::Range<usize>,
    /// The event's `time` (empty when absent: the slow path reports it).
    time: std::ops::Range<usize>,
    seq: u64,
}

/// Runs on the decompressing thread: splits a chunk into lines and, for
/// each canonical one, scans its fields and hashes its body (the costly
/// part), so the checking side only compares.
fn digest_chunk(chunk: Vec<u8>) -> (String, Vec<LineFacts>) {
    let text = match String::from_utf8(chunk) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    let mut facts = Vec::with_capacity(text.len() / 256 + 1);
    let base = text.as_ptr() as usize;
    let offset = |s: &str| s.as_ptr() as usize - base;
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let start = offset(line);
        let fast = scan_stored(line).and_then(|sc| {
            let (h, range) = sc.hash.clone()?;
            let (prev, stream, time) = (sc.prev?, sc.stream?, sc.time?);
            let mut hasher = sha2::Sha256::new();
            hasher.update(&line.as_bytes()[..range.start]);
            hasher.update(&line.as_bytes()[range.end..]);
            Some(FastFacts {
                computed: hasher.finalize().into(),
                hash: offset(h)..offset(h) + h.len(),
                prev: offset(prev)..offset(prev) + prev.len(),
                stream: offset(stream)..offset(stream) + stream.len(),
                time: offset(time)..offset(time) + time.len(),
                seq: sc.seq?,
            })
        });
        facts.push(LineFacts {
            line: start..start + line.len(),
            fast,
        });
    }
    (text, facts)
}

/// Status of one key in the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Checked and correct.
    Valid,
    /// Present but wrong (see `reason`).
    Invalid,
    /// Named by a manifest but absent.
    Missing,
    /// Present but covered by no manifest.
    NotCovered,
}

/// One key's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyResult {
    /// Key relative to the archive prefix.
    pub key: String,
    /// `manifest`, `object`, `checkpoint`, `verifier_key` or `other`.
    pub kind: &'static str,
    /// Status.
    pub status: Status,
    /// Why, when not valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveProblemKind {
    /// A manifest that does not parse.
    ManifestMalformed,
    /// A manifest's signature is missing, by another key, or wrong.
    BadSignature,
    /// A manifest's HMAC is missing or wrong.
    BadHmac,
    /// A manifest is stored at a key that does not match its contents.
    ManifestKeyMismatch,
    /// `prevManifestSha256` does not match the previous manifest.
    ManifestChainBroken,
    /// Seqs between two manifests are covered by none.
    Gap,
    /// Two manifests cover the same seqs.
    Overlap,
    /// The object a manifest names is absent.
    ObjectMissing,
    /// The object's size differs from the manifest's.
    ObjectSizeMismatch,
    /// The object's SHA-256 differs from the manifest's.
    ObjectSha256Mismatch,
    /// The object does not decompress.
    ObjectUndecodable,
    /// An event's hash is not the SHA-256 of its canonical body.
    HashMismatch,
    /// An event's `prev` is not the previous event's hash.
    BrokenLink,
    /// An event's seq is not the next one.
    Reordered,
    /// An event names another stream.
    WrongStream,
    /// A line is not a stored event.
    MalformedEvent,
    /// The object holds another number of events than the manifest says.
    CountMismatch,
    /// The object's events do not give the manifest's Merkle root, last
    /// hash or time range (`firstTime`/`lastTime`, by the manifest's version).
    ManifestMismatch,
    /// A key in the bucket that no manifest covers.
    NotCovered,
    /// A checkpoint that does not verify, or whose root differs from the events'.
    CheckpointInvalid,
    /// An index that does not parse, is not signed by this log's key, fails
    /// its HMAC, or sits at a key that does not match its number.
    IndexInvalid,
    /// An index number between the first and the newest is absent.
    IndexMissing,
    /// An index does not link to the previous one, or names less than it
    /// (a stream dropped, a range or checkpoint that went backwards).
    IndexChainBroken,
    /// A stream the newest index names has nothing in the bucket.
    StreamMissing,
    /// A stream folder that no index names (added, or archived after the
    /// newest index was written).
    NotIndexed,
    /// A batch the index names (its range or last manifest) is not in the bucket.
    BatchMissing,
    /// A checkpoint an index names is not in the bucket, or differs.
    CheckpointMissing,
    /// The newest index is older than `--max-age`: the newest part may have
    /// been removed together with its index, or the log stopped writing.
    Stale,
    /// A trusted checkpoint's root differs from the log's root at its size.
    TrustedCheckpointMismatch,
    /// The log holds less than a trusted checkpoint covers.
    BehindTrustedCheckpoint,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveProblem {
    /// Stream (empty for keys outside streams).
    pub stream: String,
    /// Seq, when it concerns one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Key, when it concerns one object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Kind.
    pub kind: ArchiveProblemKind,
    /// What is wrong.
    pub message: String,
}

/// One stream's result.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveStreamReport {
    /// Stream.
    pub stream: String,
    /// First seq the archive holds (1 unless older history was not retained).
    pub first_seq: Option<u64>,
    /// Last seq the archive holds.
    pub last_seq: Option<u64>,
    /// Events checked.
    pub events: u64,
    /// Manifests read.
    pub manifests: u64,
    /// Checkpoints whose root was compared with the events.
    pub checkpoints_checked: u64,
    /// Plain statements about coverage (history not starting at 1, …).
    pub notes: Vec<String>,
}

/// Totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Keys valid.
    pub valid: u64,
    /// Keys invalid.
    pub invalid: u64,
    /// Keys missing.
    pub missing: u64,
    /// Keys not covered by a manifest.
    pub not_covered: u64,
    /// Events checked.
    pub events: u64,
    /// Problems.
    pub problems: u64,
}

/// The whole result.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveReport {
    /// Whether nothing is wrong.
    pub ok: bool,
    /// The archive checked.
    pub archive: String,
    /// Per stream.
    pub streams: Vec<ArchiveStreamReport>,
    /// Every key looked at.
    pub keys: Vec<KeyResult>,
    /// Problems, by stream and seq.
    pub problems: Vec<ArchiveProblem>,
    /// The newest index and how old it is.
    pub newest_index: Option<IndexAge>,
    /// Age of the newest signed checkpoint any index names, seconds.
    pub newest_checkpoint_age_secs: Option<i64>,
    /// What each trusted checkpoint was checked against.
    pub trusted: Vec<TrustedResult>,
    /// Totals.
    pub summary: Summary,
}

/// The newest index, for freshness.
#[derive(Debug, Clone, Serialize)]
pub struct IndexAge {
    /// Its key.
    pub key: String,
    /// Its number.
    pub number: u64,
    /// When it was written.
    pub created: String,
    /// Seconds since then.
    pub age_secs: i64,
}

/// A checkpoint the auditor holds from elsewhere (`--trusted-checkpoint`).
#[derive(Debug, Clone)]
pub struct TrustedCheckpoint {
    /// Where it came from (a file name), for messages.
    pub source: String,
    /// Stream (from the origin `log/stream`).
    pub stream: String,
    /// Tree size.
    pub size: u64,
    /// Root.
    pub root: [u8; 32],
}

/// How a trusted checkpoint was checked.
#[derive(Debug, Clone, Serialize)]
pub struct TrustedResult {
    /// Where it came from.
    pub source: String,
    /// Stream.
    pub stream: String,
    /// Size.
    pub size: u64,
    /// `matches` (root recomputed from archived events), `extended` (the
    /// hot store holds the rest: combined verify compares), `mismatch`,
    /// `behind`, or `not_compared` (with why).
    pub outcome: &'static str,
    /// Details.
    pub detail: String,
}

/// What the bucket holds of one stream, for combined verify.
#[derive(Debug, Clone, Default)]
pub struct StreamArchive {
    /// Where the archive ends, when it holds batches.
    pub end: Option<StreamEnd>,
    /// Every manifest read: (start, end, key, SHA-256 of its bytes).
    pub manifests: Vec<(u64, u64, String, String)>,
    /// Signed checkpoints in the bucket that verify: size and root.
    pub checkpoints: BTreeMap<u64, [u8; 32]>,
}

/// Where the archive's part of a stream ends, to continue into the hot
/// store (combined verify).
#[derive(Debug, Clone)]
pub struct StreamEnd {
    /// Last archived seq.
    pub last_seq: u64,
    /// Its hash.
    pub last_hash: String,
    /// The tree over seqs 1..=last_seq, when the archive starts at 1.
    pub frontier: Option<Frontier>,
}

/// Options.
#[derive(Debug, Default, Clone)]
pub struct VerifyOptions {
    /// Only this stream.
    pub stream: Option<String>,
    /// Shared HMAC secret, to check manifest HMACs as well.
    pub hmac_key: Option<Vec<u8>>,
    /// The newest index may be at most this old.
    pub max_age: Option<std::time::Duration>,
    /// Checkpoints held outside the bucket.
    pub trusted: Vec<TrustedCheckpoint>,
    /// The hot store is verified after the archive (combined verify): a
    /// trusted checkpoint beyond the archive is left to the hot pass.
    pub hot_follows: bool,
}

#[derive(Deserialize)]
struct Meta<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    time: std::borrow::Cow<'a, str>,
}

const MAX_OBJECT_RAW: u64 = 4 << 30;

struct Walk<'a> {
    verifier: &'a NoteVerifier,
    opts: &'a VerifyOptions,
    keys: Vec<KeyResult>,
    problems: Vec<ArchiveProblem>,
    events: u64,
    progress: &'a (dyn Fn(u64) + Send + Sync),
}

impl Walk<'_> {
    fn key(&mut self, key: &str, kind: &'static str, status: Status, reason: Option<String>) {
        self.keys.push(KeyResult {
            key: key.to_owned(),
            kind,
            status,
            reason,
        });
    }

    fn problem(
        &mut self,
        stream: &str,
        seq: Option<u64>,
        key: Option<&str>,
        kind: ArchiveProblemKind,
        message: String,
    ) {
        self.problems.push(ArchiveProblem {
            stream: stream.to_owned(),
            seq,
            key: key.map(str::to_owned),
            kind,
            message,
        });
    }
}

/// Verifies the archive in `bucket` with `verifier`. Returns the report and,
/// per stream, what the bucket holds of it (for combined verify).
///
/// # Errors
/// When the bucket cannot be listed or read, or holds no archive at all (no
/// object, or no index): that is never a pass. Everything found wrong is in
/// the report.
pub async fn verify_archive(
    bucket: &Bucket,
    verifier: &NoteVerifier,
    opts: &VerifyOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(ArchiveReport, HashMap<String, StreamArchive>), ArchiveError> {
    use ArchiveProblemKind as K;
    let listing = bucket.list("").await?;
    if listing.is_empty() {
        return Err(ArchiveError::Location(format!(
            "{} holds no archive (no objects at all); check the URL",
            bucket.display()
        )));
    }
    let mut by_stream: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    let mut index_keys: Vec<(u64, String)> = Vec::new();
    let mut w = Walk {
        verifier,
        opts,
        keys: Vec::new(),
        problems: Vec::new(),
        events: 0,
        progress,
    };
    let own_key = layout::verifier_key(verifier.key_id());
    for (key, size) in listing {
        let Some((first, rest)) = key.split_once('/') else {
            w.key(
                &key,
                "other",
                Status::NotCovered,
                Some("not part of the archive layout".into()),
            );
            w.problem(
                "",
                None,
                Some(&key),
                K::NotCovered,
                "object outside every stream folder (not part of the archive layout)".into(),
            );
            continue;
        };
        match first {
            // Probe keys of a run in progress (and of builds before the
            // probe moved out of the log's own stream folder).
            crate::objstore::bucket::PROBE_FOLDER => {}
            crate::event::SELF_STREAM if rest.starts_with("probe/") => {}
            super::index::FOLDER => match super::index::number_of(&key) {
                Some(n) => index_keys.push((n, key)),
                None => {
                    w.key(
                        &key,
                        "index",
                        Status::NotCovered,
                        Some("name is not _index/{n:020}.json".into()),
                    );
                    w.problem(
                        "",
                        None,
                        Some(&key),
                        K::NotCovered,
                        "unexpected key in the index folder".into(),
                    );
                }
            },
            "keys" if rest.ends_with(".pub") && !rest.contains('/') => {
                let status = if key == own_key {
                    match bucket
                        .get(&key)
                        .await?
                        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
                    {
                        Some(t) if t == verifier.to_string() => (Status::Valid, None),
                        _ => (
                            Status::Invalid,
                            Some("differs from the verifier key given".to_owned()),
                        ),
                    }
                } else {
                    (
                        Status::Valid,
                        Some("another key (rotation); not used for this run".to_owned()),
                    )
                };
                w.key(&key, "verifier_key", status.0, status.1);
            }
            _ => by_stream
                .entry(first.to_owned())
                .or_default()
                .push((key, size)),
        }
    }
    if index_keys.is_empty() {
        return Err(ArchiveError::Location(format!(
            "{} has no index under {}/: it is not a trailkeep archive, or it was written before indexes existed (a `trailkeep archive run` or a running `serve` writes one)",
            bucket.display(),
            super::index::FOLDER
        )));
    }
    index_keys.sort();
    let chain = check_index_chain(bucket, &mut w, &index_keys).await?;

    let mut trusted_sizes: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for t in &opts.trusted {
        trusted_sizes.entry(&t.stream).or_default().insert(t.size);
    }
    let no_sizes = BTreeSet::new();
    let mut streams = Vec::new();
    let mut held = HashMap::new();
    let mut roots: HashMap<String, HashMap<u64, [u8; 32]>> = HashMap::new();
    for (stream, keys) in by_stream {
        if opts.stream.as_ref().is_some_and(|s| *s != stream) {
            continue;
        }
        let extra = trusted_sizes.get(stream.as_str()).unwrap_or(&no_sizes);
        let (report, archive, roots_at) =
            verify_stream(bucket, &mut w, &stream, keys, extra).await?;
        roots.insert(stream.clone(), roots_at);
        held.insert(stream.clone(), archive);
        streams.push(report);
    }
    if let Some(only) = &opts.stream
        && streams.is_empty()
        && chain
            .newest
            .as_ref()
            .is_none_or(|i| i.stream(only).is_none())
    {
        return Err(ArchiveError::Location(format!(
            "stream {only:?} has nothing in {} and no index names it",
            bucket.display()
        )));
    }
    compare_with_index(&mut w, &chain, &held);
    let newest_checkpoint_age_secs = chain.newest.as_ref().and_then(|i| {
        i.streams
            .iter()
            .filter_map(|s| s.checkpoint.as_ref())
            .filter_map(|c| age_secs(&c.created))
            .min()
    });
    let newest_index = chain.newest.as_ref().map(|i| IndexAge {
        key: super::index::key(i.number),
        number: i.number,
        created: i.created.clone(),
        age_secs: age_secs(&i.created).unwrap_or(i64::MAX),
    });
    if let (Some(max), Some(n)) = (opts.max_age, &newest_index)
        && n.age_secs > i64::try_from(max.as_secs()).unwrap_or(i64::MAX)
    {
        w.problem(
            "",
            None,
            Some(&n.key),
            K::Stale,
            format!(
                "the newest index ({}, written {}) is {}s old, more than --max-age {}s: the newest objects may have been removed together with their index, or the log stopped writing indexes",
                n.key,
                n.created,
                n.age_secs,
                max.as_secs()
            ),
        );
    }
    let trusted = check_trusted(&mut w, &chain, &held, &roots);

    (w.progress)(w.events);
    let mut summary = Summary {
        events: w.events,
        problems: w.problems.len() as u64,
        ..Summary::default()
    };
    for k in &w.keys {
        match k.status {
            Status::Valid => summary.valid += 1,
            Status::Invalid => summary.invalid += 1,
            Status::Missing => summary.missing += 1,
            Status::NotCovered => summary.not_covered += 1,
        }
    }
    w.problems
        .sort_by(|a, b| (&a.stream, a.seq.unwrap_or(0)).cmp(&(&b.stream, b.seq.unwrap_or(0))));
    Ok((
        ArchiveReport {
            ok: w.problems.is_empty(),
            archive: bucket.display().to_owned(),
            streams,
            keys: w.keys,
            problems: w.problems,
            newest_index,
            newest_checkpoint_age_secs,
            trusted,
            summary,
        },
        held,
    ))
}

/// Seconds since an RFC 3339 time (None when it does not parse).
fn age_secs(t: &str) -> Option<i64> {
    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()?;
    Some((time::OffsetDateTime::now_utc() - at).whole_seconds())
}

/// The index chain as read.
struct IndexChain {
    /// Every index that verifies, by number.
    valid: Vec<super::index::Index>,
    /// The newest that verifies.
    newest: Option<super::index::Index>,
}

/// Reads every index: each must parse, be signed by this log's key (and
/// carry the HMAC when a secret is given), sit at its number's key, link to
/// the previous one's SHA-256, and name at least what the previous one did.
async fn check_index_chain(
    bucket: &Bucket,
    w: &mut Walk<'_>,
    keys: &[(u64, String)],
) -> Result<IndexChain, ArchiveError> {
    use super::index::Index;
    use ArchiveProblemKind as K;
    let mut valid: Vec<Index> = Vec::new();
    let mut prev: Option<(u64, String, Option<Index>)> = None; // number, sha, parsed
    let mut expected = 1u64;
    for (n, key) in keys {
        if *n > expected {
            let first_missing = super::index::key(expected);
            w.problem(
                "",
                None,
                Some(&first_missing),
                K::IndexMissing,
                format!(
                    "indexes {expected}-{} are absent (removed from the bucket)",
                    n - 1
                ),
            );
        }
        expected = n + 1;
        let Some(bytes) = bucket.get(key).await? else {
            continue;
        };
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let mut reasons = Vec::new();
        let parsed = match Index::parse(&bytes) {
            Ok(i) => Some(i),
            Err(e) => {
                reasons.push((K::IndexInvalid, e));
                None
            }
        };
        if let Some(i) = &parsed {
            if let Err(e) = i.verify_signature(w.verifier) {
                reasons.push((K::IndexInvalid, e));
            }
            if let Some(k) = &w.opts.hmac_key
                && let Err(e) = i.verify_hmac(k)
            {
                reasons.push((K::IndexInvalid, e));
            }
            if i.number != *n {
                reasons.push((
                    K::IndexInvalid,
                    format!("says it is index {}, its key says {n}", i.number),
                ));
            }
            if i.log != w.verifier.name() {
                reasons.push((
                    K::IndexInvalid,
                    format!("is for log {}, not {}", i.log, w.verifier.name()),
                ));
            }
            match &prev {
                None if *n == 1 && i.prev_index_sha256.is_some() => reasons.push((
                    K::IndexChainBroken,
                    "the first index links to a previous one".into(),
                )),
                None => {}
                Some((pn, psha, pparsed)) => {
                    if pn + 1 == *n && i.prev_index_sha256.as_deref() != Some(psha.as_str()) {
                        reasons.push((
                            K::IndexChainBroken,
                            format!(
                                "prevIndexSha256 {} does not match index {pn} ({psha})",
                                i.prev_index_sha256.as_deref().unwrap_or("null")
                            ),
                        ));
                    }
                    if let Some(p) = pparsed {
                        for r in regressions(p, i) {
                            reasons.push((K::IndexChainBroken, r));
                        }
                    }
                }
            }
        }
        let good = reasons.is_empty();
        for (kind, r) in &reasons {
            w.problem("", None, Some(key), *kind, r.clone());
        }
        w.key(
            key,
            "index",
            if good { Status::Valid } else { Status::Invalid },
            (!good).then(|| {
                reasons
                    .iter()
                    .map(|r| r.1.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        );
        if good && let Some(i) = &parsed {
            valid.push(i.clone());
        }
        prev = Some((*n, sha, parsed));
    }
    let newest = valid.last().cloned();
    Ok(IndexChain { valid, newest })
}

/// What `later` names less of than `earlier`: a history only grows.
fn regressions(earlier: &super::index::Index, later: &super::index::Index) -> Vec<String> {
    let mut out = Vec::new();
    for e in &earlier.streams {
        let Some(l) = later.stream(&e.stream) else {
            out.push(format!(
                "drops stream {} that index {} named",
                e.stream, earlier.number
            ));
            continue;
        };
        if let (Some(ea), la) = (&e.archived, &l.archived)
            && la.as_ref().is_none_or(|la| la.last_seq < ea.last_seq)
        {
            out.push(format!(
                "stream {}: archived up to seq {}, index {} said {}",
                e.stream,
                la.as_ref().map_or(0, |a| a.last_seq),
                earlier.number,
                ea.last_seq
            ));
        }
        if let (Some(ec), lc) = (&e.checkpoint, &l.checkpoint)
            && lc.as_ref().is_none_or(|lc| lc.size < ec.size)
        {
            out.push(format!(
                "stream {}: checkpoint at size {}, index {} named size {}",
                e.stream,
                lc.as_ref().map_or(0, |c| c.size),
                earlier.number,
                ec.size
            ));
        }
    }
    out
}

/// Compares what the indexes name with what the bucket holds: every stream
/// the newest index names is there with its archived range and last
/// manifest; every checkpoint any index names is there with its root; and
/// every stream folder is named by some index.
fn compare_with_index(w: &mut Walk<'_>, chain: &IndexChain, held: &HashMap<String, StreamArchive>) {
    use ArchiveProblemKind as K;
    let only = w.opts.stream.clone();
    let wanted = |s: &str| only.as_deref().is_none_or(|o| o == s);
    if let Some(newest) = &chain.newest {
        let key = super::index::key(newest.number);
        for s in newest.streams.iter().filter(|s| wanted(&s.stream)) {
            let Some(h) = held.get(&s.stream) else {
                w.problem(
                    &s.stream,
                    s.archived.as_ref().map(|a| a.first_seq),
                    Some(&key),
                    K::StreamMissing,
                    format!(
                        "the index names stream {} (archived {}, checkpoint {}), but the bucket has nothing of it: its folder was removed",
                        s.stream,
                        s.archived.as_ref().map_or("nothing".into(), |a| format!("seqs {}-{}", a.first_seq, a.last_seq)),
                        s.checkpoint.as_ref().map_or("none".into(), |c| format!("at size {}", c.size)),
                    ),
                );
                continue;
            };
            let Some(a) = &s.archived else { continue };
            let first = h.manifests.first().map(|m| m.0);
            if first.is_none_or(|f| f > a.first_seq) {
                w.problem(
                    &s.stream,
                    Some(a.first_seq),
                    Some(&key),
                    K::BatchMissing,
                    format!(
                        "the index says the archive of stream {} starts at seq {}, the bucket's first manifest {}",
                        s.stream,
                        a.first_seq,
                        first.map_or("is absent".into(), |f| format!("starts at seq {f}"))
                    ),
                );
            }
            match h.manifests.iter().find(|m| m.1 == a.last_seq) {
                Some(m) if m.2 == a.last_manifest_key && m.3 == a.last_manifest_sha256 => {}
                Some(m) => w.problem(
                    &s.stream,
                    Some(a.last_seq),
                    Some(&m.2),
                    K::BatchMissing,
                    format!(
                        "the index names manifest {} (sha256 {}) as the last one; the bucket's manifest ending at seq {} is {} (sha256 {})",
                        a.last_manifest_key, a.last_manifest_sha256, a.last_seq, m.2, m.3
                    ),
                ),
                None => w.problem(
                    &s.stream,
                    Some(a.last_seq),
                    Some(&a.last_manifest_key),
                    K::BatchMissing,
                    format!(
                        "the index says stream {} is archived up to seq {} (manifest {}), but no manifest in the bucket ends there (the bucket's archive ends at {}): batches were removed",
                        s.stream,
                        a.last_seq,
                        a.last_manifest_key,
                        h.manifests.last().map_or("nothing".into(), |m| format!("seq {}", m.1))
                    ),
                ),
            }
        }
    }
    // Every checkpoint any index names (each once).
    let mut named: BTreeMap<(String, u64), (String, String, u64)> = BTreeMap::new();
    for i in &chain.valid {
        for s in i.streams.iter().filter(|s| wanted(&s.stream)) {
            if let Some(c) = &s.checkpoint {
                named.entry((s.stream.clone(), c.size)).or_insert((
                    c.root.clone(),
                    c.key.clone(),
                    i.number,
                ));
            }
        }
    }
    for ((stream, size), (root, key, number)) in named {
        match held.get(&stream).and_then(|h| h.checkpoints.get(&size)) {
            Some(r) if hex::encode(r) == root => {}
            Some(r) => w.problem(
                &stream,
                Some(size),
                Some(&key),
                K::CheckpointMissing,
                format!(
                    "index {number} names the checkpoint at size {size} with root {root}; the bucket's has root {}",
                    hex::encode(r)
                ),
            ),
            None => w.problem(
                &stream,
                Some(size),
                Some(&key),
                K::CheckpointMissing,
                format!(
                    "index {number} names a signed checkpoint at size {size}; it is absent or does not verify"
                ),
            ),
        }
    }
    // Stream folders no index names.
    for stream in held.keys() {
        if !chain.valid.iter().any(|i| i.stream(stream).is_some()) {
            w.problem(
                stream,
                None,
                Some(&format!("{stream}/")),
                K::NotIndexed,
                format!(
                    "stream folder {stream}/ is named by no index: it was added, or archived after the newest index was written (the next archive run writes one)"
                ),
            );
        }
    }
}

/// Checks each trusted checkpoint against the roots recomputed from the
/// archived events, or against the newest index where the archive ends
/// below it.
fn check_trusted(
    w: &mut Walk<'_>,
    chain: &IndexChain,
    held: &HashMap<String, StreamArchive>,
    roots: &HashMap<String, HashMap<u64, [u8; 32]>>,
) -> Vec<TrustedResult> {
    use ArchiveProblemKind as K;
    let mut out = Vec::new();
    for t in &w.opts.trusted.clone() {
        if w.opts.stream.as_ref().is_some_and(|s| *s != t.stream) {
            continue;
        }
        let archived_to = held
            .get(&t.stream)
            .and_then(|h| h.end.as_ref())
            .map_or(0, |e| e.last_seq);
        let indexed = chain
            .newest
            .as_ref()
            .and_then(|i| i.stream(&t.stream))
            .and_then(|s| s.checkpoint.clone());
        let root_here = roots.get(&t.stream).and_then(|r| r.get(&t.size));
        let mut result = |outcome: &'static str, detail: String| {
            out.push(TrustedResult {
                source: t.source.clone(),
                stream: t.stream.clone(),
                size: t.size,
                outcome,
                detail,
            });
        };
        match root_here {
            Some(r) if *r == t.root => result(
                "matches",
                format!("root at size {} recomputed from the archived events", t.size),
            ),
            Some(r) => {
                let msg = format!(
                    "trusted checkpoint {} says root {} at size {}; the archived events give {}: history below it was rewritten",
                    t.source,
                    hex::encode(t.root),
                    t.size,
                    hex::encode(r)
                );
                w.problem(&t.stream, Some(t.size), None, K::TrustedCheckpointMismatch, msg.clone());
                result("mismatch", msg);
            }
            None if t.size <= archived_to => result(
                "not_compared",
                "the archive does not start at seq 1 or has a gap, so no root was recomputed at this size".into(),
            ),
            None if w.opts.hot_follows => result(
                "extended",
                format!("beyond the archive (seq {archived_to}); compared in the hot store"),
            ),
            None => match indexed {
                Some(c) if c.size == t.size && c.root != hex::encode(t.root) => {
                    let msg = format!(
                        "trusted checkpoint {} and the indexed checkpoint at size {} have different roots (a fork: two histories signed by one key)",
                        t.source, t.size
                    );
                    w.problem(&t.stream, Some(t.size), Some(&c.key), K::TrustedCheckpointMismatch, msg.clone());
                    result("mismatch", msg);
                }
                Some(c) if c.size >= t.size => result(
                    "not_compared",
                    format!(
                        "beyond the archive (seq {archived_to}) but within the newest indexed checkpoint (size {}); the events are hot: run combined verify to compare",
                        c.size
                    ),
                ),
                other => {
                    let msg = format!(
                        "trusted checkpoint {} covers {} events of stream {}, but the bucket holds the archive up to seq {archived_to} and its newest index names {}: newer history was removed (or the trusted checkpoint is newer than the newest index; combined verify checks it against the hot store)",
                        t.source,
                        t.size,
                        t.stream,
                        other.map_or("no checkpoint".into(), |c| format!("a checkpoint at size {}", c.size))
                    );
                    w.problem(&t.stream, Some(archived_to + 1), None, K::BehindTrustedCheckpoint, msg.clone());
                    result("behind", msg);
                }
            },
        }
    }
    out
}

/// The keys under one stream's folder, sorted by kind: manifests (with
/// the seq range their name gives), objects and checkpoints; any other key
/// is reported as not covered.
#[allow(clippy::type_complexity)]
fn sort_keys(
    w: &mut Walk<'_>,
    stream: &str,
    keys: Vec<(String, u64)>,
) -> (
    Vec<(u64, u64, String)>,
    BTreeSet<String>,
    Vec<(u64, String)>,
) {
    use ArchiveProblemKind as K;
    let mut manifests: Vec<(u64, u64, String)> = Vec::new();
    let mut objects: BTreeSet<String> = BTreeSet::new();
    let mut checkpoints: Vec<(u64, String)> = Vec::new();
    for (key, _) in keys {
        let rest = &key[stream.len() + 1..];
        if rest.starts_with("manifests/") && key.ends_with(".json") {
            match layout::range_of(&key) {
                Some((a, b)) => manifests.push((a, b, key)),
                None => {
                    w.key(
                        &key,
                        "manifest",
                        Status::Invalid,
                        Some("name is not {start:020}-{end:020}.json".into()),
                    );
                    w.problem(
                        stream,
                        None,
                        Some(&key),
                        K::ManifestKeyMismatch,
                        "manifest name does not give a seq range".into(),
                    );
                }
            }
        } else if rest.starts_with("events/") {
            objects.insert(key);
        } else if let Some(size) = rest
            .strip_prefix("checkpoints/")
            .and_then(|s| s.parse::<u64>().ok())
        {
            checkpoints.push((size, key));
        } else {
            w.key(
                &key,
                "other",
                Status::NotCovered,
                Some("not part of the archive layout".into()),
            );
            w.problem(
                stream,
                None,
                Some(&key),
                K::NotCovered,
                "unexpected key in the stream's folder".into(),
            );
        }
    }
    manifests.sort();
    checkpoints.sort();
    (manifests, objects, checkpoints)
}

/// What a manifest says about itself: its signature (and HMAC), and that
/// its stream, seq range, count and object key agree with its own key.
/// Returns the reasons it is invalid (each also reported as a problem).
fn check_claims(
    w: &mut Walk<'_>,
    stream: &str,
    (start, end): (u64, u64),
    mkey: &str,
    m: &Manifest,
) -> Vec<String> {
    use ArchiveProblemKind as K;
    let mut reasons: Vec<String> = Vec::new();
    if let Err(e) = m.verify_signature(w.verifier) {
        reasons.push(e.to_string());
        w.problem(
            stream,
            Some(start),
            Some(mkey),
            K::BadSignature,
            e.to_string(),
        );
    }
    if let Some(k) = &w.opts.hmac_key
        && let Err(e) = m.verify_hmac(k)
    {
        reasons.push(e.to_string());
        w.problem(stream, Some(start), Some(mkey), K::BadHmac, e.to_string());
    }
    if m.claims_min_max() && crate::event::cmp_time(&m.first_time, &m.last_time).is_gt() {
        let msg = format!(
            "firstTime {} is after lastTime {} (version {} claims the earliest and latest event time)",
            m.first_time, m.last_time, m.version
        );
        reasons.push(msg.clone());
        w.problem(stream, Some(start), Some(mkey), K::ManifestMismatch, msg);
    }
    let object_ok_key = m.object.key.starts_with(&format!("{stream}/events/"))
        && layout::range_of(&m.object.key) == Some((m.start_seq, m.end_seq));
    if m.stream != stream
        || (m.start_seq, m.end_seq) != (start, end)
        || m.count != end.saturating_sub(start) + 1
        || !object_ok_key
    {
        let msg = format!(
            "manifest says stream {} seqs {}-{} (count {}, object {}), its key says stream {stream} seqs {start}-{end}",
            m.stream, m.start_seq, m.end_seq, m.count, m.object.key
        );
        reasons.push(msg.clone());
        w.problem(stream, Some(start), Some(mkey), K::ManifestKeyMismatch, msg);
    }
    reasons
}

/// Where the walk along one stream's manifests stands: the next seq, the
/// last hash and manifest SHA-256 seen, and the Merkle frontier (while the
/// archive is known from seq 1 without a gap).
#[derive(Default)]
struct Chain {
    frontier: Option<Frontier>,
    next_seq: Option<u64>,
    prev_hash: Option<String>,
    prev_manifest_sha: Option<String>,
}

impl Chain {
    /// Checks that the manifest continues the previous one: no gap, no
    /// overlap, `prevManifestSha256` and `prevHash` link. Returns what
    /// makes the manifest invalid (each also reported as a problem).
    fn link(
        &mut self,
        w: &mut Walk<'_>,
        report: &mut ArchiveStreamReport,
        stream: &str,
        start: u64,
        mkey: &str,
        m: &Manifest,
    ) -> Vec<String> {
        use ArchiveProblemKind as K;
        let mut reasons = Vec::new();
        let Self {
            frontier,
            next_seq,
            prev_hash,
            prev_manifest_sha,
        } = self;
        match *next_seq {
            None => {
                if start != 1 {
                    report.notes.push(format!(
                        "the archive starts at seq {start}: seqs 1-{} are not in this bucket (not retained, or removed); the first retained manifest is {mkey}",
                        start - 1
                    ));
                } else if m.prev_manifest_sha256.is_some() {
                    let msg =
                        "the first manifest links to a previous manifest that is not in the bucket"
                            .to_owned();
                    reasons.push(msg.clone());
                    w.problem(stream, Some(start), Some(mkey), K::ManifestChainBroken, msg);
                }
                if start == 1 {
                    *frontier = Some(Frontier::new());
                }
                report.first_seq = Some(start);
            }
            Some(n) if start > n => {
                w.problem(
                    stream,
                    Some(n),
                    Some(mkey),
                    K::Gap,
                    format!(
                        "seqs {n}-{} are covered by no manifest (a batch was removed)",
                        start - 1
                    ),
                );
                *frontier = None;
                *prev_hash = None;
            }
            Some(n) if start < n => {
                w.problem(
                    stream,
                    Some(start),
                    Some(mkey),
                    K::Overlap,
                    format!(
                        "covers seqs from {start}, but the previous manifest ends at {}",
                        n - 1
                    ),
                );
            }
            Some(_) => {}
        }
        if next_seq.is_some() && m.prev_manifest_sha256 != *prev_manifest_sha {
            let msg = format!(
                "prevManifestSha256 {} does not match the previous manifest ({})",
                m.prev_manifest_sha256.as_deref().unwrap_or("null"),
                prev_manifest_sha.as_deref().unwrap_or("none")
            );
            reasons.push(msg.clone());
            w.problem(stream, Some(start), Some(mkey), K::ManifestChainBroken, msg);
        }
        if let Some(p) = prev_hash.as_ref()
            && *p != m.prev_hash
        {
            let msg = format!(
                "prevHash {} does not link to the previous batch's last hash {p}",
                m.prev_hash
            );
            reasons.push(msg.clone());
            w.problem(stream, Some(start), Some(mkey), K::BrokenLink, msg);
        }
        reasons
    }
}

/// Reports the objects in the stream's folder that no manifest names.
fn report_uncovered(
    w: &mut Walk<'_>,
    stream: &str,
    objects: &BTreeSet<String>,
    covered: &BTreeSet<String>,
) {
    use ArchiveProblemKind as K;
    for key in objects.difference(covered) {
        w.key(
            key,
            "object",
            Status::NotCovered,
            Some("no manifest names this object".into()),
        );
        w.problem(
            stream,
            layout::range_of(key).map(|r| r.0),
            Some(key),
            K::NotCovered,
            "object covered by no manifest (added, or its manifest was removed)".into(),
        );
    }
}

/// Checks every signed checkpoint in the stream's folder: its signature and
/// origin, and its root against the root of the archived events at its
/// size (when the archive holds them from seq 1). Valid ones are held for
/// the hot pass.
async fn check_checkpoints(
    bucket: &Bucket,
    w: &mut Walk<'_>,
    stream: &str,
    checkpoints: Vec<(u64, String)>,
    roots_at: &HashMap<u64, [u8; 32]>,
    report: &mut ArchiveStreamReport,
    held: &mut StreamArchive,
) -> Result<(), ArchiveError> {
    use ArchiveProblemKind as K;
    for (size, key) in checkpoints {
        let Some(bytes) = bucket.get(&key).await? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let parsed = open(&text, w.verifier)
            .map_err(|e| e.to_string())
            .and_then(|t| Checkpoint::parse(t).map_err(|e| e.to_string()));
        let want_origin = format!("{}/{stream}", w.verifier.name());
        let result = match parsed {
            Err(e) => Err(e),
            Ok(cp) if cp.origin != want_origin || cp.size != size => Err(format!(
                "checkpoint is for {} at size {}, its key says {want_origin} at size {size}",
                cp.origin, cp.size
            )),
            Ok(cp) => match roots_at.get(&size) {
                Some(r) if *r == cp.root => {
                    report.checkpoints_checked += 1;
                    held.checkpoints.insert(size, cp.root);
                    Ok(None)
                }
                Some(r) => Err(format!(
                    "signed root {} differs from the root of the archived events {}",
                    hex::encode(cp.root),
                    hex::encode(r)
                )),
                None => Ok(Some(if report.last_seq.is_none_or(|l| size > l) {
                    held.checkpoints.insert(size, cp.root);
                    "signature valid; size beyond the archive (the hot store holds the rest)"
                        .to_owned()
                } else {
                    held.checkpoints.insert(size, cp.root);
                    "signature valid; root not compared (the archive does not start at seq 1 or has a gap)".to_owned()
                })),
            },
        };
        match result {
            Ok(note) => w.key(&key, "checkpoint", Status::Valid, note),
            Err(e) => {
                w.key(&key, "checkpoint", Status::Invalid, Some(e.clone()));
                w.problem(stream, Some(size), Some(&key), K::CheckpointInvalid, e);
            }
        }
    }
    Ok(())
}

async fn verify_stream(
    bucket: &Bucket,
    w: &mut Walk<'_>,
    stream: &str,
    keys: Vec<(String, u64)>,
    extra_sizes: &BTreeSet<u64>,
) -> Result<(ArchiveStreamReport, StreamArchive, HashMap<u64, [u8; 32]>), ArchiveError> {
    use ArchiveProblemKind as K;
    let (manifests, objects, checkpoints) = sort_keys(w, stream, keys);
    let cp_sizes: BTreeSet<u64> = checkpoints
        .iter()
        .map(|c| c.0)
        .chain(extra_sizes.iter().copied())
        .collect();
    let mut held = StreamArchive::default();
    let mut roots_at: HashMap<u64, [u8; 32]> = HashMap::new();

    let mut report = ArchiveStreamReport {
        stream: stream.to_owned(),
        first_seq: None,
        last_seq: None,
        events: 0,
        manifests: 0,
        checkpoints_checked: 0,
        notes: Vec::new(),
    };
    let mut chain = Chain::default();
    let mut covered: BTreeSet<String> = BTreeSet::new();

    for (start, end, mkey) in manifests {
        report.manifests += 1;
        let Some(bytes) = bucket.get(&mkey).await? else {
            continue; // listed a moment ago; vanished: the next run sees it missing
        };
        let msha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        held.manifests
            .push((start, end, mkey.clone(), msha.clone()));
        let m = match Manifest::parse(&bytes) {
            Ok(m) => m,
            Err(e) => {
                w.key(&mkey, "manifest", Status::Invalid, Some(e.to_string()));
                w.problem(
                    stream,
                    Some(start),
                    Some(&mkey),
                    K::ManifestMalformed,
                    e.to_string(),
                );
                chain.prev_manifest_sha = Some(msha);
                chain.next_seq = Some(end + 1);
                chain.prev_hash = None;
                chain.frontier = None;
                continue;
            }
        };
        let mut reasons = check_claims(w, stream, (start, end), &mkey, &m);
        let linked = chain.link(w, &mut report, stream, start, &mkey, &m);
        reasons.extend(linked);

        // The object.
        covered.insert(m.object.key.clone());
        let expected_prev = chain
            .prev_hash
            .clone()
            .unwrap_or_else(|| m.prev_hash.clone());
        let checked = check_object(
            bucket,
            w,
            stream,
            &m,
            &expected_prev,
            chain.frontier.as_mut(),
            &cp_sizes,
            &mut roots_at,
        )
        .await?;
        report.events += checked.events;
        if !checked.ok {
            reasons.push(format!("object {} does not check out", m.object.key));
        }
        w.key(
            &mkey,
            "manifest",
            if reasons.is_empty() {
                Status::Valid
            } else {
                Status::Invalid
            },
            (!reasons.is_empty()).then(|| reasons.join("; ")),
        );
        chain.prev_manifest_sha = Some(msha);
        chain.prev_hash = Some(checked.last_hash.unwrap_or_else(|| m.last_hash.clone()));
        chain.next_seq = Some(end + 1);
        report.last_seq = Some(end);
    }

    report_uncovered(w, stream, &objects, &covered);

    check_checkpoints(
        bucket,
        w,
        stream,
        checkpoints,
        &roots_at,
        &mut report,
        &mut held,
    )
    .await?;
    held.end = report.last_seq.map(|last_seq| StreamEnd {
        last_seq,
        last_hash: chain.prev_hash.unwrap_or_else(|| ZERO_HASH_HEX.to_owned()),
        frontier: chain.frontier,
    });
    Ok((report, held, roots_at))
}

/// The checks of one archived line from its facts: the seq it holds, its
/// stream, its link to the previous event and its hash. Returns whether it
/// passed; each failure is reported as a problem at `key`.
#[allow(clippy::too_many_arguments)]
fn check_line(
    w: &mut Walk<'_>,
    stream: &str,
    key: &str,
    n: u64,
    seq_here: u64,
    parsed: Result<Meta<'_>, String>,
    hash: &str,
    computed: &[u8; 32],
    prev_bin: &[u8; 32],
) -> bool {
    use ArchiveProblemKind as K;
    let mut ok = true;
    match parsed {
        Err(e) => {
            w.problem(
                stream,
                Some(seq_here),
                Some(key),
                K::MalformedEvent,
                format!("line {n}: {e}"),
            );
            ok = false;
        }
        Ok(meta) => {
            if meta.seq != seq_here {
                w.problem(
                    stream,
                    Some(seq_here),
                    Some(key),
                    K::Reordered,
                    format!("line {n} holds seq {}, expected seq {seq_here}", meta.seq),
                );
                ok = false;
            }
            if meta.stream != stream {
                w.problem(
                    stream,
                    Some(meta.seq),
                    Some(key),
                    K::WrongStream,
                    format!("event names stream {}", meta.stream),
                );
                ok = false;
            }
            if !hex_is(&meta.prev, prev_bin) {
                w.problem(
                    stream,
                    Some(meta.seq),
                    Some(key),
                    K::BrokenLink,
                    format!(
                        "prev {} does not link to the previous event's hash {}",
                        meta.prev,
                        hex::encode(prev_bin)
                    ),
                );
                ok = false;
            }
        }
    }
    if !hex_is(hash, computed) {
        w.problem(
            stream,
            Some(seq_here),
            Some(key),
            K::HashMismatch,
            format!(
                "line {n}: stored hash {hash}, SHA-256 of the event {}",
                hex::encode(computed)
            ),
        );
        ok = false;
    }
    ok
}

/// The object's bytes against its manifest: size and SHA-256. Returns
/// the reasons it differs (each also reported as a problem).
fn check_object_bytes(w: &mut Walk<'_>, stream: &str, m: &Manifest, bytes: &[u8]) -> Vec<String> {
    use ArchiveProblemKind as K;
    let key = m.object.key.as_str();
    let mut reasons: Vec<String> = Vec::new();
    if bytes.len() as u64 != m.object.size {
        let r = format!(
            "size {} differs from the manifest's {}",
            bytes.len(),
            m.object.size
        );
        w.problem(
            stream,
            Some(m.start_seq),
            Some(key),
            K::ObjectSizeMismatch,
            r.clone(),
        );
        reasons.push(r);
    }
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    if sha != m.object.sha256 {
        let r = format!(
            "sha256 {sha} differs from the manifest's {}",
            m.object.sha256
        );
        w.problem(
            stream,
            Some(m.start_seq),
            Some(key),
            K::ObjectSha256Mismatch,
            r.clone(),
        );
        reasons.push(r);
    }
    reasons
}

/// The event times of one object: the first and last by seq, the
/// earliest and latest (what manifests of version 1 and 2 claim).
#[derive(Default)]
struct Times {
    first: Option<String>,
    last: String,
    min: String,
    max: String,
}

impl Times {
    fn see(&mut self, t: &str) {
        use crate::event::cmp_time;
        if self.first.is_none() {
            self.first = Some(t.to_owned());
            t.clone_into(&mut self.min);
            t.clone_into(&mut self.max);
        } else if cmp_time(t, &self.min).is_lt() {
            t.clone_into(&mut self.min);
        } else if cmp_time(t, &self.max).is_gt() {
            t.clone_into(&mut self.max);
        }
        t.clone_into(&mut self.last);
    }

    /// What the manifest's `firstTime`/`lastTime` claim that the events do
    /// not give, by the manifest's version.
    fn differs_from(&self, m: &Manifest) -> Option<String> {
        let first = self.first.as_deref()?;
        let (a, b, what) = if m.claims_min_max() {
            (self.min.as_str(), self.max.as_str(), "earliest and latest")
        } else {
            (first, self.last.as_str(), "first and last")
        };
        (m.first_time != a || m.last_time != b).then(|| {
            format!(
                "the events' {what} times are {a} and {b}; the manifest (version {}) says firstTime {} and lastTime {}",
                m.version, m.first_time, m.last_time
            )
        })
    }
}

struct Checked {
    ok: bool,
    events: u64,
    last_hash: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn check_object(
    bucket: &Bucket,
    w: &mut Walk<'_>,
    stream: &str,
    m: &Manifest,
    prev_hash: &str,
    mut frontier: Option<&mut Frontier>,
    cp_sizes: &BTreeSet<u64>,
    roots_at: &mut HashMap<u64, [u8; 32]>,
) -> Result<Checked, ArchiveError> {
    use ArchiveProblemKind as K;
    let key = m.object.key.as_str();
    let fail = |w: &mut Walk<'_>, status, reason: String, kind, seq: Option<u64>| {
        w.key(key, "object", status, Some(reason.clone()));
        w.problem(stream, seq.or(Some(m.start_seq)), Some(key), kind, reason);
        Checked {
            ok: false,
            events: 0,
            last_hash: None,
        }
    };
    let Some(bytes) = bucket.get(key).await? else {
        return Ok(fail(
            w,
            Status::Missing,
            format!(
                "named by the manifest for seqs {}-{} but absent",
                m.start_seq, m.end_seq
            ),
            K::ObjectMissing,
            None,
        ));
    };
    let mut reasons = check_object_bytes(w, stream, m, &bytes);
    let mut ok = reasons.is_empty();
    let Some(c) = Compression::parse(&m.object.compression) else {
        return Ok(fail(
            w,
            Status::Invalid,
            format!("compression {:?} unknown", m.object.compression),
            K::ObjectUndecodable,
            None,
        ));
    };
    // Decompression runs on its own thread, a chunk of whole lines ahead
    // of the checks (two cores: inflate and SHA-256 overlap).
    let mut chunks = super::segment::decompress_chunks(
        bytes.clone(),
        c,
        m.object.uncompressed_size.clamp(1, MAX_OBJECT_RAW) + 1,
        digest_chunk,
    );
    let mut tree = MemoryTree::new();
    let mut prev_bin: [u8; 32] = [0; 32];
    if hex::decode_to_slice(prev_hash, &mut prev_bin).is_err() {
        prev_bin = [0xff; 32]; // links nothing: the first event reports it
    }
    let mut expected = m.start_seq;
    let mut n = 0u64;
    let mut times = Times::default();
    while let Some(chunk) = chunks.recv().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                reasons.push(e.clone());
                return Ok(fail(
                    w,
                    Status::Invalid,
                    reasons.join("; "),
                    K::ObjectUndecodable,
                    None,
                ));
            }
        };
        let (text, facts) = chunk;
        for fact in facts {
            let line = &text[fact.line.clone()];
            n += 1;
            let seq_here = expected;
            expected += 1;
            let slow;
            let (computed, hash, parsed): (
                [u8; 32],
                std::borrow::Cow<'_, str>,
                Result<Meta<'_>, String>,
            ) = match &fact.fast {
                Some(f) => (
                    f.computed,
                    text[f.hash.clone()].into(),
                    Ok(Meta {
                        seq: f.seq,
                        prev: text[f.prev.clone()].into(),
                        stream: text[f.stream.clone()].into(),
                        time: text[f.time.clone()].into(),
                    }),
                ),
                None => {
                    let Some((body, hash)) = split_stored_line(line) else {
                        w.problem(
                            stream,
                            Some(seq_here),
                            Some(key),
                            K::MalformedEvent,
                            format!("line {n} is not a stored event"),
                        );
                        ok = false;
                        continue;
                    };
                    slow = body;
                    let meta = serde_json::from_str::<Meta<'_>>(&slow).map_err(|e| e.to_string());
                    (event_hash(slow.as_bytes()), hash.into(), meta)
                }
            };
            if let Ok(meta) = &parsed {
                times.see(&meta.time);
            }
            if !check_line(
                w, stream, key, n, seq_here, parsed, &hash, &computed, &prev_bin,
            ) {
                ok = false;
            }
            let leaf = leaf_hash(&computed);
            tree.push(leaf);
            if let Some(f) = frontier.as_deref_mut() {
                f.push(leaf);
                if cp_sizes.contains(&f.size()) {
                    roots_at.insert(f.size(), f.root());
                }
            }
            prev_bin = computed;
            w.events += 1;
            if w.events.is_multiple_of(4096) {
                (w.progress)(w.events);
            }
        }
    }
    let prev = hex::encode(prev_bin);
    if n != m.count {
        let r = format!("holds {n} events, the manifest says {}", m.count);
        w.problem(
            stream,
            Some(m.start_seq),
            Some(key),
            K::CountMismatch,
            r.clone(),
        );
        reasons.push(r);
        ok = false;
    }
    let root = hex::encode(tree.root());
    if root != m.merkle_root || prev != m.last_hash {
        let r = format!(
            "events give Merkle root {root} and last hash {prev}; the manifest says {} and {}",
            m.merkle_root, m.last_hash
        );
        w.problem(
            stream,
            Some(m.end_seq),
            Some(key),
            K::ManifestMismatch,
            r.clone(),
        );
        reasons.push(r);
        ok = false;
    }
    if n == m.count
        && let Some(r) = times.differs_from(m)
    {
        w.problem(
            stream,
            Some(m.start_seq),
            Some(key),
            K::ManifestMismatch,
            r.clone(),
        );
        reasons.push(r);
        ok = false;
    }
    if ok {
        w.key(key, "object", Status::Valid, None);
    } else {
        if reasons.is_empty() {
            reasons.push("events inside do not verify (see problems)".into());
        }
        w.key(key, "object", Status::Invalid, Some(reasons.join("; ")));
    }
    Ok(Checked {
        ok,
        events: n,
        last_hash: Some(prev),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::index::{ArchivedRange, Index, IndexedCheckpoint, IndexedStream};
    use super::regressions;

    fn index(number: u64, streams: &[(&str, Option<u64>, Option<u64>)]) -> Index {
        Index {
            version: 1,
            log: "log.test".into(),
            number,
            created: "2026-12-01T00:00:00.000000Z".into(),
            prev_index_sha256: None,
            streams: streams
                .iter()
                .map(|(s, archived, cp)| IndexedStream {
                    stream: (*s).into(),
                    archived: archived.map(|last| ArchivedRange {
                        first_seq: 1,
                        last_seq: last,
                        last_manifest_key: String::new(),
                        last_manifest_sha256: String::new(),
                    }),
                    checkpoint: cp.map(|size| IndexedCheckpoint {
                        size,
                        root: String::new(),
                        key: String::new(),
                        created: String::new(),
                    }),
                })
                .collect(),
            signature: None,
            hmac_sha256: None,
        }
    }

    /// A later index may name more, never less: a stream, an archived range
    /// or a checkpoint that went away is located by stream.
    #[test]
    fn a_later_index_never_names_less() {
        let earlier = index(1, &[("a", Some(10), Some(12)), ("b", None, Some(3))]);
        let same = index(2, &[("a", Some(10), Some(12)), ("b", None, Some(3))]);
        assert!(regressions(&earlier, &same).is_empty());
        let grown = index(
            2,
            &[
                ("a", Some(20), Some(25)),
                ("b", Some(3), Some(4)),
                ("c", None, Some(1)),
            ],
        );
        assert!(regressions(&earlier, &grown).is_empty());
        let cases = [
            (index(2, &[("a", Some(10), Some(12))]), "drops stream b"),
            (
                index(2, &[("a", Some(9), Some(12)), ("b", None, Some(3))]),
                "stream a: archived up to seq 9",
            ),
            (
                index(2, &[("a", None, Some(12)), ("b", None, Some(3))]),
                "stream a: archived up to seq 0",
            ),
            (
                index(2, &[("a", Some(10), Some(11)), ("b", None, Some(3))]),
                "stream a: checkpoint at size 11",
            ),
            (
                index(2, &[("a", Some(10), Some(12)), ("b", None, None)]),
                "stream b: checkpoint at size 0",
            ),
        ];
        for (later, want) in cases {
            let r = regressions(&earlier, &later);
            assert_eq!(r.len(), 1, "{want}: {r:?}");
            assert!(r[0].contains(want), "{want}: {r:?}");
        }
    }
}
