//! Verification of the hot store: recompute every hash, link and seq, and
//! check the Merkle root against the latest signed checkpoint.
//!
//! Read-only; it reuses `chain/` and reads through the [`Store`] trait, so
//! it runs on any backend, also while `serve` writes. A failed verification
//! is a [`Report`] with problems, not an `Err`: `Err` means it could not run.
//!
//! How each tamper shows (stream and seq always named):
//! - a changed byte in an event: `hash_mismatch` at that seq;
//! - a removed event: `gap` at the next stored seq;
//! - swapped events: `reordered` at both seqs (the body's seq disagrees);
//! - a copied event: `duplicate` where the copy sits;
//! - an inserted event: `reordered`/`broken_link` from there on, and
//!   `beyond_head` for rows past the recorded head;
//! - removed tail below a signed checkpoint: `truncated_below_checkpoint`;
//! - a consistently rewritten history: `checkpoint_root_mismatch`;
//! - a forged or altered checkpoint: `bad_signature`.
//!
//! Archived history: a stream whose first seqs were archived is checked
//! from the seq after its last recorded batch, linked to that batch's last
//! hash. When the archive was verified first (`archive::verify`), its
//! [`ChainStart`] carries the Merkle frontier over, so checkpoint roots are
//! compared over hot and cold together; without it only the tiles are
//! compared with the checkpoint. Restored rows are checked for their hash.

use std::collections::HashMap;

use serde::Serialize;

use crate::chain::checkpoint::Checkpoint;
use crate::chain::merkle::{self, Frontier};
use crate::chain::note::{NoteVerifier, open};
use crate::chain::{Hash, ZERO_HASH_HEX, event_hash, leaf_hash};
use crate::ingest::checkpointer::origin;
use crate::store::{ReaderSource, Store, StoreError, StoreExt};

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The stored hash is not the SHA-256 of the body.
    HashMismatch,
    /// `prev` is not the previous event's hash.
    BrokenLink,
    /// Seqs are missing before this one.
    Gap,
    /// This event is a copy of an earlier one.
    Duplicate,
    /// The body's seq differs from where it is stored.
    Reordered,
    /// The body names another stream.
    WrongStream,
    /// The body is not valid JSON with the stored fields.
    Malformed,
    /// A stored event lies beyond the stream's recorded head.
    BeyondHead,
    /// The recorded head is beyond the last stored event.
    Truncated,
    /// The store holds fewer events than a signed checkpoint covers.
    TruncatedBelowCheckpoint,
    /// The Merkle root of the stored events differs from the checkpoint's.
    CheckpointRootMismatch,
    /// The stored tiles do not give the checkpoint's root.
    TilesMismatch,
    /// The checkpoint's signature or origin does not verify.
    BadSignature,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Stream name.
    pub stream: String,
    /// Seq where it was found, when it concerns one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Kind of problem.
    pub kind: ProblemKind,
    /// What was expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// The result for one stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Stream name.
    pub stream: String,
    /// Events read.
    pub events: u64,
    /// Recorded head seq.
    pub head_seq: u64,
    /// Size of the latest signed checkpoint checked, if any.
    pub checkpoint_size: Option<u64>,
    /// Problems found, in seq order.
    pub problems: Vec<Problem>,
}

/// The result of a verification run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether no problem was found.
    pub ok: bool,
    /// Events read, all streams.
    pub events: u64,
    /// Problems found, all streams.
    pub problem_count: usize,
    /// Per stream.
    pub streams: Vec<StreamReport>,
}

const PAGE: usize = 5_000;

/// Where a stream's hot part starts: after the archive.
#[derive(Debug, Clone)]
pub struct ChainStart {
    /// First seq expected in the hot store.
    pub next_seq: u64,
    /// Hash of the seq before it.
    pub prev_hash: String,
    /// The tree over seqs before `next_seq`, when known.
    pub frontier: Option<Frontier>,
}

impl Default for ChainStart {
    fn default() -> Self {
        Self {
            next_seq: 1,
            prev_hash: ZERO_HASH_HEX.to_owned(),
            frontier: Some(Frontier::new()),
        }
    }
}

/// Verifies every stream (or only `only`) in `store`; `progress` is called
/// with the number of events read so far.
///
/// # Errors
/// When the store cannot be read, or `only` names no stream.
pub async fn verify_store(
    store: &dyn Store,
    verifier: &NoteVerifier,
    log_name: &str,
    only: Option<&str>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Report, StoreError> {
    verify_store_from(store, verifier, log_name, only, &HashMap::new(), progress).await
}

/// [`verify_store`], each stream starting where `starts` says (the end of
/// its verified archive), else after its last recorded archive batch, else
/// at seq 1.
///
/// # Errors
/// When the store cannot be read, or `only` names no stream.
pub async fn verify_store_from(
    store: &dyn Store,
    verifier: &NoteVerifier,
    log_name: &str,
    only: Option<&str>,
    starts: &HashMap<String, ChainStart>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Report, StoreError> {
    let mut streams = store.streams().await?;
    if let Some(name) = only {
        streams.retain(|s| s.name == name);
        if streams.is_empty() {
            return Err(StoreError::NotFound(format!("stream {name}")));
        }
    }
    let mut reports = Vec::new();
    let mut total = 0u64;
    for info in streams {
        let start = match starts.get(&info.name) {
            Some(s) => s.clone(),
            None => match store.last_archive_batch(&info.name).await? {
                Some(b) => ChainStart {
                    next_seq: b.end_seq + 1,
                    prev_hash: b.last_hash,
                    frontier: None,
                },
                None => ChainStart::default(),
            },
        };
        let r = verify_stream(
            store, verifier, log_name, &info.name, start, &mut total, progress,
        )
        .await?;
        reports.push(r);
    }
    let problem_count = reports.iter().map(|r| r.problems.len()).sum();
    Ok(Report {
        ok: problem_count == 0,
        events: total,
        problem_count,
        streams: reports,
    })
}

async fn verify_stream(
    store: &dyn Store,
    verifier: &NoteVerifier,
    log_name: &str,
    stream: &str,
    start: ChainStart,
    total: &mut u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<StreamReport, StoreError> {
    let mut problems = Vec::new();
    let problem =
        |seq: Option<u64>, kind, expected: Option<String>, found: Option<String>| Problem {
            stream: stream.to_owned(),
            seq,
            kind,
            expected,
            found,
        };

    // The checkpoint first, so the root can be taken at its size while streaming.
    let checkpoint = match store.latest_checkpoint(stream).await? {
        None => None,
        Some(stored) => match open(&stored.note, verifier).map(Checkpoint::parse) {
            Ok(Ok(cp)) if cp.origin == origin(log_name, stream) && cp.size == stored.size => {
                Some(cp)
            }
            Ok(Ok(cp)) => {
                problems.push(problem(
                    None,
                    ProblemKind::BadSignature,
                    Some(format!(
                        "{} at size {}",
                        origin(log_name, stream),
                        stored.size
                    )),
                    Some(format!("{} at size {}", cp.origin, cp.size)),
                ));
                None
            }
            Ok(Err(e)) => {
                problems.push(problem(
                    None,
                    ProblemKind::BadSignature,
                    None,
                    Some(e.to_string()),
                ));
                None
            }
            Err(e) => {
                problems.push(problem(
                    None,
                    ProblemKind::BadSignature,
                    Some(format!(
                        "a signature by {}+{:08x}",
                        verifier.name(),
                        verifier.key_id()
                    )),
                    Some(e.to_string()),
                ));
                None
            }
        },
    };

    // Read the head only after the checkpoint: while `serve` runs, both only
    // grow, so the head is at least the checkpoint's size. Events appended
    // after this point are not part of this run.
    let head_seq = store.stream(stream).await?.map_or(0, |s| s.head_seq);
    let mut frontier = start.frontier;
    let mut root_at_checkpoint: Option<Hash> = None;
    if let (Some(f), Some(cp)) = (&frontier, &checkpoint)
        && f.size() == cp.size
    {
        root_at_checkpoint = Some(f.root());
    }
    let mut seen: HashMap<u64, u64> = HashMap::new(); // hash prefix -> seq
    let mut expected_seq = start.next_seq;
    let mut prev = start.prev_hash;
    let mut events = 0u64;
    let mut last_seq = start.next_seq - 1;
    let mut next = start.next_seq;
    // Restored rows (below the start) are checked for their hash; their
    // chain was checked when they came back.
    let mut r = 1u64;
    while r < start.next_seq {
        let page = store.read_events(stream, r, PAGE).await?;
        for row in page.iter().take_while(|row| row.seq < start.next_seq) {
            if hex::encode(event_hash(row.body.as_bytes())) != row.hash {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::HashMismatch,
                    Some(hex::encode(event_hash(row.body.as_bytes()))),
                    Some(row.hash.clone()),
                ));
            }
        }
        match page.last() {
            Some(l) if l.seq + 1 < start.next_seq => r = l.seq + 1,
            _ => break,
        }
    }
    loop {
        let page = store.read_events(stream, next, PAGE).await?;
        let Some(last) = page.last() else { break };
        next = last.seq + 1;
        let past_head = page.iter().any(|r| r.seq > head_seq);
        for row in page.into_iter().take_while(|r| r.seq <= head_seq) {
            events += 1;
            last_seq = row.seq;
            let computed = event_hash(row.body.as_bytes());
            let computed_hex = hex::encode(computed);
            let prefix = u64::from_be_bytes([
                computed[0],
                computed[1],
                computed[2],
                computed[3],
                computed[4],
                computed[5],
                computed[6],
                computed[7],
            ]);
            let body: Option<serde_json::Value> = serde_json::from_str(&row.body).ok();
            let body_seq = body.as_ref().and_then(|b| b["seq"].as_u64());
            let body_prev = body
                .as_ref()
                .and_then(|b| b["prev"].as_str().map(str::to_owned));
            match (body_seq, &body_prev) {
                (Some(_), Some(_)) => {}
                _ => problems.push(problem(
                    Some(row.seq),
                    ProblemKind::Malformed,
                    Some("a JSON event with seq and prev".into()),
                    None,
                )),
            }
            let mut link_checked = true;
            if row.seq > expected_seq {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::Gap,
                    Some(format!("seq {expected_seq}")),
                    Some(format!("seq {}", row.seq)),
                ));
                link_checked = false;
            }
            if let Some(bs) = body_seq.filter(|bs| *bs != row.seq) {
                let kind = match seen.get(&prefix) {
                    Some(&orig) if orig == bs => ProblemKind::Duplicate,
                    _ => ProblemKind::Reordered,
                };
                problems.push(problem(
                    Some(row.seq),
                    kind,
                    Some(format!("body seq {}", row.seq)),
                    Some(format!("body seq {bs}")),
                ));
            } else if computed_hex != row.hash {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::HashMismatch,
                    Some(computed_hex.clone()),
                    Some(row.hash.clone()),
                ));
            }
            if link_checked && body_prev.as_deref().is_some_and(|p| p != prev) {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::BrokenLink,
                    Some(prev.clone()),
                    body_prev.clone(),
                ));
            }
            if body
                .as_ref()
                .is_some_and(|b| b["stream"].as_str() != Some(stream))
            {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::WrongStream,
                    Some(stream.to_owned()),
                    body.as_ref()
                        .and_then(|b| b["stream"].as_str().map(str::to_owned)),
                ));
            }
            seen.entry(prefix).or_insert(row.seq);
            if let Some(f) = frontier.as_mut() {
                f.push(leaf_hash(&computed));
                if checkpoint.as_ref().is_some_and(|c| c.size == f.size()) {
                    root_at_checkpoint = Some(f.root());
                }
            }
            prev = row.hash;
            expected_seq = row.seq + 1;
            *total += 1;
            if total.is_multiple_of(1024) {
                progress(*total);
            }
        }
        if past_head {
            break;
        }
    }
    progress(*total);
    // Rows past the head: tampering, or appends since the head was read.
    // Only the former survives a second look at the head.
    if let Some(extra) = store.read_events(stream, head_seq + 1, 1).await?.first() {
        let now = store.stream(stream).await?.map_or(0, |s| s.head_seq);
        if extra.seq > now {
            problems.push(problem(
                Some(extra.seq),
                ProblemKind::BeyondHead,
                Some(format!("at most seq {now}")),
                Some(format!("seq {}", extra.seq)),
            ));
        }
    }
    if last_seq < head_seq {
        problems.push(problem(
            Some(last_seq + 1),
            ProblemKind::Truncated,
            Some(format!("events up to seq {head_seq}")),
            Some(format!("events up to seq {last_seq}")),
        ));
    }
    if let Some(cp) = &checkpoint {
        if last_seq < cp.size {
            problems.push(problem(
                Some(last_seq + 1),
                ProblemKind::TruncatedBelowCheckpoint,
                Some(format!("events up to seq {} (signed checkpoint)", cp.size)),
                Some(format!("events up to seq {last_seq}")),
            ));
        } else if let Some(root) = root_at_checkpoint
            && root != cp.root
        {
            problems.push(problem(
                None,
                ProblemKind::CheckpointRootMismatch,
                Some(hex::encode(cp.root)),
                Some(hex::encode(root)),
            ));
        }
        let size = cp.size;
        match store
            .with_tiles(stream, |r| merkle::root(&ReaderSource(r), size))
            .await
        {
            Ok(t) if t == cp.root => {}
            Ok(t) => problems.push(problem(
                None,
                ProblemKind::TilesMismatch,
                Some(hex::encode(cp.root)),
                Some(hex::encode(t)),
            )),
            Err(e) => problems.push(problem(
                None,
                ProblemKind::TilesMismatch,
                Some(hex::encode(cp.root)),
                Some(e.to_string()),
            )),
        }
    }
    problems.sort_by_key(|p| p.seq.unwrap_or(u64::MAX));
    Ok(StreamReport {
        stream: stream.to_owned(),
        events,
        head_seq,
        checkpoint_size: checkpoint.map(|c| c.size),
        problems,
    })
}
