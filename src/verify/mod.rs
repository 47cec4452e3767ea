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

pub mod combined;
pub mod evidence;

use std::collections::HashMap;

use serde::Serialize;

use crate::chain::checkpoint::Checkpoint;
use crate::chain::checkpoint::origin;
use crate::chain::merkle::{self, Frontier};
use crate::chain::note::{NoteVerifier, open};
use crate::chain::{Hash, ZERO_HASH_HEX, event_hash, leaf_hash};
use crate::event::stored::{LinkFault, check_link};
use crate::store::{ReaderSource, Store, StoreError, StoreExt};

/// What kind of problem was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
    /// A checkpoint held elsewhere (`--trusted-checkpoint`, or one in the
    /// bucket) has another root than the events at its size, or no RFC 9162
    /// consistency proof leads from it to the stored tree.
    TrustedCheckpointMismatch,
    /// The store holds fewer events than a checkpoint held elsewhere covers.
    BehindTrustedCheckpoint,
    /// Events older than a checkpoint interval (plus slack) are covered by
    /// no signed checkpoint: checkpoints were removed, or the log stopped
    /// signing.
    UnsignedEvents,
    /// A batch the hot store records as archived is not in the bucket as
    /// recorded (range, manifest key, manifest SHA-256).
    ArchiveMismatch,
}

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stream name.
    pub stream: String,
    /// Seq where it was found, when it concerns one event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Kind of problem.
    pub kind: ProblemKind,
    /// Object key, when it concerns one (archive cross-check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What was expected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<String>,
    /// What was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
}

/// The result for one stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The last whole-store verification this process ran (on its schedule or
/// asked for), for the console's alarms.
#[derive(Debug, Clone, Copy)]
pub struct LastRun {
    /// When it ended.
    pub at: time::OffsetDateTime,
    /// `ok`, `problems` or `failed` (it could not read the store).
    pub outcome: &'static str,
    /// Problems found.
    pub problems: u64,
}

static LAST_RUN: std::sync::Mutex<Option<LastRun>> = std::sync::Mutex::new(None);

/// The last whole-store verification of this process, if any ran.
pub fn last_run() -> Option<LastRun> {
    *LAST_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records a whole-store verification's result in `/metrics`
/// (`trailkeep_verify_*`): runs by outcome, the last result, when, and
/// how many problems. A run over one stream is not recorded: it says
/// nothing about the others.
pub fn record_run(result: &Result<Report, StoreError>) {
    let (outcome, ok, problems) = match result {
        Ok(r) if r.ok => ("ok", 1.0, 0),
        Ok(r) => ("problems", 0.0, r.problem_count),
        Err(_) => ("failed", 0.0, 0),
    };
    *LAST_RUN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(LastRun {
        at: time::OffsetDateTime::now_utc(),
        outcome,
        problems: problems as u64,
    });
    metrics::counter!("trailkeep_verify_runs_total", "outcome" => outcome).increment(1);
    metrics::gauge!("trailkeep_verify_last_ok").set(ok);
    metrics::gauge!("trailkeep_verify_last_problems").set(problems as f64);
    metrics::gauge!("trailkeep_verify_last_timestamp_seconds")
        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
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

/// A checkpoint held outside the hot store: a `--trusted-checkpoint` file,
/// or one in the bucket. The stored history must extend it.
#[derive(Debug, Clone)]
pub struct Anchor {
    /// Where it came from, for messages (a file, a bucket key).
    pub source: String,
    /// Tree size.
    pub size: u64,
    /// Root.
    pub root: Hash,
}

/// What [`verify_store_with`] checks beyond the store itself.
#[derive(Debug, Clone, Default)]
pub struct HotOptions {
    /// Only this stream.
    pub only: Option<String>,
    /// Per stream, where its hot part starts (the end of its verified
    /// archive); else after its last recorded archive batch, else seq 1.
    pub starts: HashMap<String, ChainStart>,
    /// Per stream, checkpoints held elsewhere that the history must extend.
    pub anchors: HashMap<String, Vec<Anchor>>,
    /// Events received longer ago than this must be covered by a signed
    /// checkpoint (the checkpoint interval plus slack); `None` skips it.
    pub unsigned_after: Option<std::time::Duration>,
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
    let opts = HotOptions {
        only: only.map(str::to_owned),
        ..HotOptions::default()
    };
    verify_store_with(store, verifier, log_name, &opts, progress).await
}

/// [`verify_store`] with [`HotOptions`].
///
/// # Errors
/// When the store cannot be read, or `only` names no stream.
pub async fn verify_store_with(
    store: &dyn Store,
    verifier: &NoteVerifier,
    log_name: &str,
    opts: &HotOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Report, StoreError> {
    let only = opts.only.as_deref();
    let starts = &opts.starts;
    let mut streams = store.streams().await?;
    // The producers' streams first, the log's own (`_trailkeep`) last.
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
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
        let ctx = StreamCtx {
            store,
            verifier,
            log_name,
            stream: &info.name,
            anchors: opts.anchors.get(&info.name).map_or(&[], Vec::as_slice),
            unsigned_after: opts.unsigned_after,
        };
        let r = verify_stream(&ctx, start, &mut total, progress).await?;
        reports.push(r);
    }
    // A stream the store no longer has at all, though a checkpoint held
    // elsewhere covers events of it beyond the archive: it was removed.
    let mut gone: Vec<(&String, &Vec<Anchor>)> = opts
        .anchors
        .iter()
        .filter(|(s, _)| only.is_none_or(|o| o == s.as_str()))
        .filter(|(s, _)| !reports.iter().any(|r| r.stream == **s))
        .collect();
    gone.sort_by(|a, b| a.0.cmp(b.0));
    for (stream, anchors) in gone {
        let archived = starts.get(stream).map_or(0, |s| s.next_seq - 1);
        let problems: Vec<Problem> = anchors
            .iter()
            .filter(|a| a.size > archived)
            .map(|a| Problem {
                stream: stream.clone(),
                seq: Some(archived + 1),
                kind: ProblemKind::BehindTrustedCheckpoint,
                key: None,
                expected: Some(format!("events up to seq {} ({})", a.size, a.source)),
                found: Some(format!(
                    "no stream {stream} in the store (the archive holds it up to seq {archived})"
                )),
            })
            .collect();
        if !problems.is_empty() {
            reports.push(StreamReport {
                stream: stream.clone(),
                events: 0,
                head_seq: 0,
                checkpoint_size: None,
                problems,
            });
        }
    }
    let problem_count = reports.iter().map(|r| r.problems.len()).sum();
    Ok(Report {
        ok: problem_count == 0,
        events: total,
        problem_count,
        streams: reports,
    })
}

struct StreamCtx<'a> {
    store: &'a dyn Store,
    verifier: &'a NoteVerifier,
    log_name: &'a str,
    stream: &'a str,
    anchors: &'a [Anchor],
    unsigned_after: Option<std::time::Duration>,
}

async fn verify_stream(
    ctx: &StreamCtx<'_>,
    start: ChainStart,
    total: &mut u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<StreamReport, StoreError> {
    let StreamCtx {
        store,
        verifier,
        log_name,
        stream,
        ..
    } = *ctx;
    let mut problems = Vec::new();
    let problem =
        |seq: Option<u64>, kind, expected: Option<String>, found: Option<String>| Problem {
            stream: stream.to_owned(),
            seq,
            kind,
            key: None,
            expected,
            found,
        };
    let mut anchor_roots: HashMap<u64, Hash> = HashMap::new();

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
    if let Some(f) = &frontier
        && ctx.anchors.iter().any(|a| a.size == f.size())
    {
        anchor_roots.insert(f.size(), f.root());
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
            // A row after a gap has no known predecessor: its link is not
            // checked (the gap is the finding).
            let gap = row.seq > expected_seq;
            let link = check_link(
                &row.body,
                &row.hash,
                stream,
                row.seq,
                (!gap).then_some(prev.as_str()),
            );
            if link.fields.is_none() {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::Malformed,
                    Some("a JSON event with seq and prev".into()),
                    None,
                ));
            }
            if gap {
                problems.push(problem(
                    Some(row.seq),
                    ProblemKind::Gap,
                    Some(format!("seq {expected_seq}")),
                    Some(format!("seq {}", row.seq)),
                ));
            }
            let computed = link.computed;
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
            let reseq = link
                .faults
                .iter()
                .any(|f| matches!(f, LinkFault::Seq { .. }));
            for fault in &link.faults {
                let (kind, expected, found) = match fault {
                    LinkFault::Malformed(_) => continue,
                    LinkFault::Seq { found } => (
                        match seen.get(&prefix) {
                            Some(&orig) if orig == *found => ProblemKind::Duplicate,
                            _ => ProblemKind::Reordered,
                        },
                        Some(format!("body seq {}", row.seq)),
                        Some(format!("body seq {found}")),
                    ),
                    // A row moved from elsewhere hashes fine but sits at the
                    // wrong seq: that is the finding, not its hash.
                    LinkFault::Hash { .. } if reseq => continue,
                    LinkFault::Hash { computed } => (
                        ProblemKind::HashMismatch,
                        Some(computed.clone()),
                        Some(row.hash.clone()),
                    ),
                    LinkFault::Prev { found } => (
                        ProblemKind::BrokenLink,
                        Some(prev.clone()),
                        Some(found.clone()),
                    ),
                    LinkFault::Stream { found } => (
                        ProblemKind::WrongStream,
                        Some(stream.to_owned()),
                        Some(found.clone()),
                    ),
                };
                problems.push(problem(Some(row.seq), kind, expected, found));
            }
            seen.entry(prefix).or_insert(row.seq);
            if let Some(f) = frontier.as_mut() {
                f.push(leaf_hash(&computed));
                if checkpoint.as_ref().is_some_and(|c| c.size == f.size()) {
                    root_at_checkpoint = Some(f.root());
                }
                if ctx.anchors.iter().any(|a| a.size == f.size()) {
                    anchor_roots.insert(f.size(), f.root());
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
    check_anchors(
        ctx,
        last_seq,
        frontier.as_ref(),
        &anchor_roots,
        &mut problems,
    )
    .await;
    if let Some(max) = ctx.unsigned_after {
        let signed = checkpoint.as_ref().map_or(0, |c| c.size);
        if head_seq > signed
            && let Some(first) = store.read_events(stream, signed + 1, 1).await?.first()
            && let Some(received) = crate::event::scan_stored(&first.body).and_then(|s| s.received)
            && let Ok(at) = time::OffsetDateTime::parse(
                received,
                &time::format_description::well_known::Rfc3339,
            )
            && time::OffsetDateTime::now_utc() - at > max
        {
            problems.push(problem(
                Some(first.seq),
                ProblemKind::UnsignedEvents,
                Some(format!(
                    "a signed checkpoint covering events received before {}s ago",
                    max.as_secs()
                )),
                Some(format!(
                    "seqs {}-{head_seq} (the first received {received}) are beyond the newest signed checkpoint ({})",
                    first.seq,
                    checkpoint.as_ref().map_or("none".to_owned(), |c| format!("size {}", c.size))
                )),
            ));
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

/// Checks the checkpoints held elsewhere: each must lie within the stored
/// history, equal the root recomputed from the events at its size, and lead
/// by an RFC 9162 consistency proof (from the stored tiles) to the root of
/// the events verified now.
async fn check_anchors(
    ctx: &StreamCtx<'_>,
    last_seq: u64,
    frontier: Option<&Frontier>,
    roots: &HashMap<u64, Hash>,
    problems: &mut Vec<Problem>,
) {
    let problem = |seq: u64, kind, expected: String, found: String| Problem {
        stream: ctx.stream.to_owned(),
        seq: Some(seq),
        kind,
        key: None,
        expected: Some(expected),
        found: Some(found),
    };
    // The root of everything verified now: from the events when the whole
    // history was streamed, else from the tiles.
    let now_root = match frontier.filter(|f| f.size() == last_seq) {
        Some(f) => Some(f.root()),
        None => ctx
            .store
            .with_tiles(ctx.stream, |r| merkle::root(&ReaderSource(r), last_seq))
            .await
            .ok(),
    };
    for a in ctx.anchors {
        if a.size > last_seq {
            problems.push(problem(
                last_seq + 1,
                ProblemKind::BehindTrustedCheckpoint,
                format!("events up to seq {} ({})", a.size, a.source),
                format!("events up to seq {last_seq}"),
            ));
            continue;
        }
        if let Some(r) = roots.get(&a.size)
            && *r != a.root
        {
            problems.push(problem(
                a.size,
                ProblemKind::TrustedCheckpointMismatch,
                format!(
                    "root {} at size {} ({})",
                    hex::encode(a.root),
                    a.size,
                    a.source
                ),
                format!("root {} recomputed from the stored events", hex::encode(r)),
            ));
            continue;
        }
        let Some(now_root) = now_root else { continue };
        let (m, n) = (a.size, last_seq);
        let proof = ctx
            .store
            .with_tiles(ctx.stream, |r| {
                merkle::consistency_proof(&ReaderSource(r), m, n)
            })
            .await;
        let ok = proof
            .as_ref()
            .is_ok_and(|p| merkle::verify_consistency(m, n, &a.root, &now_root, p));
        if !ok {
            problems.push(problem(
                a.size,
                ProblemKind::TrustedCheckpointMismatch,
                format!(
                    "an RFC 9162 consistency proof from size {m} (root {}, {}) to size {n}",
                    hex::encode(a.root),
                    a.source
                ),
                match proof {
                    Ok(_) => format!(
                        "the proof from the stored tiles does not lead to root {} of the stored events: history below size {m} differs",
                        hex::encode(now_root)
                    ),
                    Err(e) => format!("no proof: {e}"),
                },
            ));
        }
    }
}

/// Compares every batch the hot store records as archived with what the
/// bucket holds, per stream (start, end, manifest key, SHA-256 of the
/// manifest's bytes, as `archive::verify` read them): a batch removed
/// from the bucket, or replaced, is located here even when the bucket's own
/// chain was rebuilt around it.
///
/// # Errors
/// When the store cannot be read.
pub async fn cross_check_archive(
    store: &dyn Store,
    only: Option<&str>,
    bucket_manifests: &HashMap<String, Vec<(u64, u64, String, String)>>,
) -> Result<Vec<Problem>, StoreError> {
    let mut out = Vec::new();
    for info in store.streams().await? {
        if only.is_some_and(|o| o != info.name) {
            continue;
        }
        let manifests = bucket_manifests.get(&info.name);
        let mut after = 0u64;
        let mut absent: Option<(u64, u64, u64)> = None; // first, last, count
        loop {
            let page = store.archive_batches(Some(&info.name), after, 1000).await?;
            let Some(last) = page.last() else { break };
            // Pages are by start seq: the next starts after this last start
            // (by its end, a one-event batch was read again forever). A
            // page that does not move on (a planted row at the highest seq
            // a store holds) ends the walk instead of repeating it.
            match last.start_seq.checked_add(1) {
                Some(next) if next > after => after = next,
                _ => break,
            }
            for b in &page {
                let Some(ms) = manifests else {
                    let e = absent.get_or_insert((b.start_seq, b.end_seq, 0));
                    e.1 = b.end_seq;
                    e.2 += 1;
                    continue;
                };
                let found = ms.iter().find(|m| m.0 == b.start_seq && m.1 == b.end_seq);
                let mismatch = match found {
                    Some(m) if m.2 == b.manifest_key && m.3 == b.manifest_sha256 => continue,
                    Some(m) => format!("manifest {} with sha256 {}", m.2, m.3),
                    None => "no manifest for this range in the bucket".to_owned(),
                };
                out.push(Problem {
                    stream: info.name.clone(),
                    seq: Some(b.start_seq),
                    kind: ProblemKind::ArchiveMismatch,
                    key: Some(b.manifest_key.clone()),
                    expected: Some(format!(
                        "seqs {}-{} archived with manifest {} (sha256 {}), as the hot store records",
                        b.start_seq, b.end_seq, b.manifest_key, b.manifest_sha256
                    )),
                    found: Some(mismatch),
                });
            }
        }
        if let Some((first, last, count)) = absent {
            out.push(Problem {
                stream: info.name.clone(),
                seq: Some(first),
                kind: ProblemKind::ArchiveMismatch,
                key: Some(format!("{}/", info.name)),
                expected: Some(format!(
                    "{count} archived batches (seqs {first}-{last}), as the hot store records"
                )),
                found: Some("nothing of this stream in the bucket: its folder was removed".into()),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::archive::conformance::{append, signer};
    use crate::store::sqlite::SqliteStore;

    fn anchor(size: u64) -> Anchor {
        Anchor {
            source: format!("held-{size}.note"),
            size,
            root: [size as u8; 32],
        }
    }

    /// Without the archive verified first (`POST /v1/verify`), a stream
    /// starts after its last recorded batch; `only` limits the report.
    #[tokio::test]
    async fn the_hot_part_starts_after_the_recorded_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("hot.db")).unwrap());
        append(store.as_ref(), "a", 0, 20).await;
        append(store.as_ref(), "b", 0, 3).await;
        crate::archive::conformance::clock_past_now().await;
        let bucket = crate::archive::Bucket::open(
            url::Url::from_directory_path(dir.path().join("archive"))
                .unwrap()
                .as_str(),
            &crate::archive::BucketOptions::default(),
        )
        .unwrap();
        let archiver = crate::archive::Archiver::new(
            store.clone(),
            bucket,
            signer(),
            "log.test".into(),
            crate::archive::ArchiveSettings {
                older_than: std::time::Duration::ZERO,
                ..crate::archive::ArchiveSettings::default()
            },
        );
        archiver
            .run(time::OffsetDateTime::now_utc(), None, &|_| {})
            .await
            .unwrap();
        append(store.as_ref(), "a", 20, 5).await;
        let v = signer().verifier();
        let r = verify_store(store.as_ref(), &v, "log.test", None, &|_| {})
            .await
            .unwrap();
        assert!(r.ok, "{:#?}", r.streams);
        let a = r.streams.iter().find(|s| s.stream == "a").unwrap();
        assert_eq!((a.events, a.head_seq), (5, 25));
        let r = verify_store(store.as_ref(), &v, "log.test", Some("b"), &|_| {})
            .await
            .unwrap();
        let names: Vec<&str> = r.streams.iter().map(|s| s.stream.as_str()).collect();
        assert_eq!(names, ["b"]);
    }

    /// A stream the store no longer has, while checkpoints held elsewhere
    /// cover it: each one beyond the archive is located at the seq after
    /// the archive; one the archive covers is not a problem; `only` limits
    /// it like every other check.
    #[tokio::test]
    async fn a_stream_gone_from_the_store_is_behind_its_held_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("hot.db")).unwrap();
        append(&store, "kept", 0, 3).await;
        let mut opts = HotOptions::default();
        opts.anchors
            .insert("gone".into(), vec![anchor(5), anchor(7), anchor(10)]);
        opts.starts.insert(
            "gone".into(),
            ChainStart {
                next_seq: 8,
                prev_hash: ZERO_HASH_HEX.into(),
                frontier: None,
            },
        );
        let v = signer().verifier();
        let r = verify_store_with(&store, &v, "log.test", &opts, &|_| {})
            .await
            .unwrap();
        assert!(!r.ok);
        let gone = r.streams.iter().find(|s| s.stream == "gone").unwrap();
        assert_eq!(gone.problems.len(), 1, "{:#?}", gone.problems);
        let p = &gone.problems[0];
        assert_eq!(
            (p.kind, p.seq),
            (ProblemKind::BehindTrustedCheckpoint, Some(8))
        );
        assert!(p.expected.as_deref().unwrap().contains("held-10.note"));
        // Covered by the archive alone: nothing to report.
        opts.anchors
            .insert("gone".into(), vec![anchor(5), anchor(7)]);
        let r = verify_store_with(&store, &v, "log.test", &opts, &|_| {})
            .await
            .unwrap();
        assert!(r.ok, "{:#?}", r.streams);
        // Never archived at all: from seq 1.
        opts.starts.clear();
        let r = verify_store_with(&store, &v, "log.test", &opts, &|_| {})
            .await
            .unwrap();
        let gone = r.streams.iter().find(|s| s.stream == "gone").unwrap();
        assert_eq!(gone.problems.len(), 2);
        assert!(gone.problems.iter().all(|p| p.seq == Some(1)));
        // Another stream asked for: not looked at.
        opts.only = Some("kept".into());
        let r = verify_store_with(&store, &v, "log.test", &opts, &|_| {})
            .await
            .unwrap();
        assert!(r.ok && r.streams.len() == 1, "{:#?}", r.streams);
    }
}
