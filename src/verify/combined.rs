//! Hot and cold together: the hot store verified from where the verified
//! archive ends (its last hash, its Merkle frontier, its checkpoints as
//! anchors), then the batches the hot store records cross-checked with the
//! manifests the bucket holds. `trailkeep verify` (with an archive) and the
//! console's Verify page both run this; neither prints nor decides exit
//! codes here.
//!
//! Not the archive pass itself ([`crate::archive::verify`]): callers run it
//! (the CLI with its own progress bar and offline mode) and hand its result
//! to [`verify_hot_after_cold`], or let [`verify_with_archive`] run both.

use std::collections::HashMap;

use super::{Anchor, ChainStart, HotOptions, Problem, ProblemKind, Report, StreamReport};
use crate::archive::ArchiveError;
use crate::archive::verify::{ArchiveReport, StreamArchive, VerifyOptions, verify_archive};
use crate::chain::note::NoteVerifier;
use crate::objstore::{Bucket, ObjStoreError};
use crate::store::{Store, StoreError};

/// What the archive pass left for the hot pass.
#[derive(Debug, Clone, Copy)]
pub enum Cold<'a> {
    /// It verified (or found problems in) the bucket: where each stream's
    /// archive ends, its manifests and checkpoints.
    Held(&'a HashMap<String, StreamArchive>),
    /// The hot store records batches but the archive is not there.
    Missing {
        /// The archive looked for.
        url: &'a str,
        /// Why it is not there.
        why: &'a str,
    },
    /// There is no archive and none is required.
    Absent,
}

/// Verifies the hot store after the archive pass: each stream from where
/// its archive ends, every checkpoint the bucket holds as an anchor, then
/// the recorded batches against the bucket's manifests (when `recorded`
/// or the archive was read). `progress` gets the hot events read.
///
/// # Errors
/// When the store cannot be read, or `hot.only` names no stream.
pub async fn verify_hot_after_cold(
    store: &dyn Store,
    verifier: &NoteVerifier,
    log_name: &str,
    mut hot: HotOptions,
    cold: Cold<'_>,
    recorded: bool,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Report, StoreError> {
    let mut bucket_manifests = HashMap::new();
    if let Cold::Held(held) = cold {
        for (stream, h) in held {
            if let Some(end) = &h.end {
                hot.starts.insert(
                    stream.clone(),
                    ChainStart {
                        next_seq: end.last_seq + 1,
                        prev_hash: end.last_hash.clone(),
                        frontier: end.frontier.clone(),
                    },
                );
            }
            for (size, root) in &h.checkpoints {
                hot.anchors.entry(stream.clone()).or_default().push(Anchor {
                    // Names held come from keys verify already checked.
                    source: crate::names::StreamName::parse(stream).map_or_else(
                        |e| e.to_string(),
                        |n| crate::archive::layout::checkpoint_key(&n, *size),
                    ),
                    size: *size,
                    root: *root,
                });
            }
            bucket_manifests.insert(stream.clone(), h.manifests.clone());
        }
    }
    let mut report = super::verify_store_with(store, verifier, log_name, &hot, progress).await?;
    let mut cross = Vec::new();
    match cold {
        Cold::Missing { url, why } => cross.push(Problem {
            stream: hot.only.clone().unwrap_or_default(),
            seq: None,
            kind: ProblemKind::ArchiveMismatch,
            key: Some(url.to_owned()),
            expected: Some("the archive the hot store records batches in".into()),
            found: Some(why.to_owned()),
        }),
        Cold::Held(_) => {
            cross =
                super::cross_check_archive(store, hot.only.as_deref(), &bucket_manifests).await?;
        }
        Cold::Absent if recorded => {
            cross =
                super::cross_check_archive(store, hot.only.as_deref(), &bucket_manifests).await?;
        }
        Cold::Absent => {}
    }
    for p in cross {
        match report.streams.iter_mut().find(|s| s.stream == p.stream) {
            Some(s) => s.problems.push(p),
            None => report.streams.push(StreamReport {
                stream: p.stream.clone(),
                events: 0,
                head_seq: 0,
                checkpoint_size: None,
                problems: vec![p],
            }),
        }
    }
    report.problem_count = report.streams.iter().map(|s| s.problems.len()).sum();
    report.ok = report.problem_count == 0;
    Ok(report)
}

/// Whether the hot store records archive batches (of `only`, or any).
///
/// # Errors
/// When the store cannot be read.
pub async fn records_batches(store: &dyn Store, only: Option<&str>) -> Result<bool, StoreError> {
    Ok(!store.archive_batches(only, 0, 1).await?.is_empty())
}

/// The archive pass, then [`verify_hot_after_cold`]: the archive at
/// `bucket` is required when the hot store records batches (a missing one
/// is a problem, located by its URL), else checked when it holds
/// anything. `progress` gets the events read, archive then hot.
///
/// # Errors
/// When the store or the bucket cannot be read (other than "no archive
/// there"), or `hot.only` names no stream.
pub async fn verify_with_archive(
    store: &dyn Store,
    bucket: &Bucket,
    verifier: &NoteVerifier,
    log_name: &str,
    hot: HotOptions,
    archive: &VerifyOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(Report, Option<ArchiveReport>), ArchiveError> {
    let recorded = records_batches(store, hot.only.as_deref()).await?;
    let url = bucket.display().to_owned();
    let checked = verify_archive(bucket, verifier, archive, progress).await;
    let (cold, missing) = match checked {
        Ok(c) => (Some(c), None),
        Err(ArchiveError::Location(why) | ArchiveError::Bucket(ObjStoreError::Location(why))) => {
            (None, recorded.then_some(why))
        }
        Err(e) => return Err(e),
    };
    let cold_events = cold.as_ref().map_or(0, |c| c.0.summary.events);
    let hot_progress = |n: u64| progress(cold_events + n);
    let state = match (&cold, &missing) {
        (Some((_, held)), _) => Cold::Held(held),
        (None, Some(why)) => Cold::Missing { url: &url, why },
        (None, None) => Cold::Absent,
    };
    let report = verify_hot_after_cold(
        store,
        verifier,
        log_name,
        hot,
        state,
        recorded,
        &hot_progress,
    )
    .await?;
    Ok((report, cold.map(|c| c.0)))
}
