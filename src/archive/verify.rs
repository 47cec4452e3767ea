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
use super::bucket::{Bucket, layout};
use super::manifest::Manifest;
use super::segment::Compression;
use crate::chain::checkpoint::Checkpoint;
use crate::chain::merkle::{Frontier, MemoryTree};
use crate::chain::note::{NoteVerifier, open};
use crate::chain::{ZERO_HASH_HEX, event_hash, leaf_hash};
use crate::event::{scan_stored, split_stored_line};
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
            let (prev, stream) = (sc.prev?, sc.stream?);
            let mut hasher = sha2::Sha256::new();
            hasher.update(&line.as_bytes()[..range.start]);
            hasher.update(&line.as_bytes()[range.end..]);
            Some(FastFacts {
                computed: hasher.finalize().into(),
                hash: offset(h)..offset(h) + h.len(),
                prev: offset(prev)..offset(prev) + prev.len(),
                stream: offset(stream)..offset(stream) + stream.len(),
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

/// Whether lowercase hex `s` spells `bin`.
fn hex_is(s: &str, bin: &[u8; 32]) -> bool {
    let mut b = [0u8; 32];
    s.len() == 64
        && hex::decode_to_slice(s, &mut b).is_ok()
        && b == *bin
        && !s.bytes().any(|c| c.is_ascii_uppercase())
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
    /// The object's events do not give the manifest's Merkle root or last hash.
    ManifestMismatch,
    /// A key in the bucket that no manifest covers.
    NotCovered,
    /// A checkpoint that does not verify, or whose root differs from the events'.
    CheckpointInvalid,
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
    /// Totals.
    pub summary: Summary,
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
}

#[derive(Deserialize)]
struct Meta<'a> {
    seq: u64,
    #[serde(borrow)]
    prev: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
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
/// per stream, where the archive ends.
///
/// # Errors
/// Only when the bucket cannot be listed or read; everything found wrong is
/// in the report.
pub async fn verify_archive(
    bucket: &Bucket,
    verifier: &NoteVerifier,
    opts: &VerifyOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(ArchiveReport, HashMap<String, StreamEnd>), ArchiveError> {
    let listing = bucket.list("").await?;
    let mut by_stream: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
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
        let (first, rest) = key.split_once('/').unwrap_or((key.as_str(), ""));
        match first {
            "_trailkeep" => {} // probe keys of a run in progress
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
    let mut streams = Vec::new();
    let mut ends = HashMap::new();
    for (stream, keys) in by_stream {
        if opts.stream.as_ref().is_some_and(|s| *s != stream) {
            continue;
        }
        let (report, end) = verify_stream(bucket, &mut w, &stream, keys).await?;
        if let Some(e) = end {
            ends.insert(stream.clone(), e);
        }
        streams.push(report);
    }
    if let Some(only) = &opts.stream
        && streams.is_empty()
    {
        return Err(ArchiveError::Location(format!(
            "stream {only:?} has nothing in {}",
            bucket.display()
        )));
    }
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
            summary,
        },
        ends,
    ))
}

async fn verify_stream(
    bucket: &Bucket,
    w: &mut Walk<'_>,
    stream: &str,
    keys: Vec<(String, u64)>,
) -> Result<(ArchiveStreamReport, Option<StreamEnd>), ArchiveError> {
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
    let cp_sizes: BTreeSet<u64> = checkpoints.iter().map(|c| c.0).collect();
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
    let mut frontier: Option<Frontier> = None;
    let mut next_seq: Option<u64> = None;
    let mut prev_hash: Option<String> = None;
    let mut prev_manifest_sha: Option<String> = None;
    let mut covered: BTreeSet<String> = BTreeSet::new();

    for (start, end, mkey) in manifests {
        report.manifests += 1;
        let Some(bytes) = bucket.get(&mkey).await? else {
            continue; // listed a moment ago; vanished: the next run sees it missing
        };
        let msha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
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
                prev_manifest_sha = Some(msha);
                next_seq = Some(end + 1);
                prev_hash = None;
                frontier = None;
                continue;
            }
        };
        let mut reasons: Vec<String> = Vec::new();
        if let Err(e) = m.verify_signature(w.verifier) {
            reasons.push(e.to_string());
            w.problem(
                stream,
                Some(start),
                Some(&mkey),
                K::BadSignature,
                e.to_string(),
            );
        }
        if let Some(k) = &w.opts.hmac_key
            && let Err(e) = m.verify_hmac(k)
        {
            reasons.push(e.to_string());
            w.problem(stream, Some(start), Some(&mkey), K::BadHmac, e.to_string());
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
            w.problem(
                stream,
                Some(start),
                Some(&mkey),
                K::ManifestKeyMismatch,
                msg,
            );
        }
        // Continuity with the previous manifest.
        match next_seq {
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
                    w.problem(
                        stream,
                        Some(start),
                        Some(&mkey),
                        K::ManifestChainBroken,
                        msg,
                    );
                }
                if start == 1 {
                    frontier = Some(Frontier::new());
                }
                report.first_seq = Some(start);
            }
            Some(n) if start > n => {
                w.problem(
                    stream,
                    Some(n),
                    Some(&mkey),
                    K::Gap,
                    format!(
                        "seqs {n}-{} are covered by no manifest (a batch was removed)",
                        start - 1
                    ),
                );
                frontier = None;
                prev_hash = None;
            }
            Some(n) if start < n => {
                w.problem(
                    stream,
                    Some(start),
                    Some(&mkey),
                    K::Overlap,
                    format!(
                        "covers seqs from {start}, but the previous manifest ends at {}",
                        n - 1
                    ),
                );
            }
            Some(_) => {}
        }
        if next_seq.is_some() && m.prev_manifest_sha256 != prev_manifest_sha {
            let msg = format!(
                "prevManifestSha256 {} does not match the previous manifest ({})",
                m.prev_manifest_sha256.as_deref().unwrap_or("null"),
                prev_manifest_sha.as_deref().unwrap_or("none")
            );
            reasons.push(msg.clone());
            w.problem(
                stream,
                Some(start),
                Some(&mkey),
                K::ManifestChainBroken,
                msg,
            );
        }
        if let Some(p) = &prev_hash
            && *p != m.prev_hash
        {
            let msg = format!(
                "prevHash {} does not link to the previous batch's last hash {p}",
                m.prev_hash
            );
            reasons.push(msg.clone());
            w.problem(stream, Some(start), Some(&mkey), K::BrokenLink, msg);
        }

        // The object.
        covered.insert(m.object.key.clone());
        let expected_prev = prev_hash.clone().unwrap_or_else(|| m.prev_hash.clone());
        let checked = check_object(
            bucket,
            w,
            stream,
            &m,
            &expected_prev,
            frontier.as_mut(),
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
        prev_manifest_sha = Some(msha);
        prev_hash = Some(checked.last_hash.unwrap_or_else(|| m.last_hash.clone()));
        next_seq = Some(end + 1);
        report.last_seq = Some(end);
    }

    for key in objects.difference(&covered) {
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

    // Checkpoints.
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
                    Ok(None)
                }
                Some(r) => Err(format!(
                    "signed root {} differs from the root of the archived events {}",
                    hex::encode(cp.root),
                    hex::encode(r)
                )),
                None => Ok(Some(if report.last_seq.is_some_and(|l| size > l) {
                    "signature valid; size beyond the archive (the hot store holds the rest)"
                        .to_owned()
                } else {
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
    let end = report.last_seq.map(|last_seq| StreamEnd {
        last_seq,
        last_hash: prev_hash.unwrap_or_else(|| ZERO_HASH_HEX.to_owned()),
        frontier,
    });
    Ok((report, end))
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
    let mut reasons: Vec<String> = Vec::new();
    let mut ok = true;
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
        ok = false;
    }
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
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
        ok = false;
    }
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
                    if !hex_is(&meta.prev, &prev_bin) {
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
            if !hex_is(&hash, &computed) {
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
