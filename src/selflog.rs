//! The log's own stream, [`SELF_STREAM`]: every checkpoint the log signs
//! (`checkpoint.signed`) and every archive index it writes
//! (`index.written`), and every possible upstream gap of a source
//! (`source.gap`, written by each source), is recorded there
//! as an ordinary event, chained,
//! checkpointed and archived like any other, so that destinations with
//! `checkpoints = true` deliver copies of the log's anchors to systems the
//! operator does not control (issue #12), and `trailkeep checkpoints
//! export` can write them out for `verify --trusted-checkpoint`.
//!
//! Not recorded: the checkpoints of [`SELF_STREAM`] itself (each record
//! would need a new checkpoint, without end). Producers cannot write here:
//! names starting with `_` are refused at ingest.

use serde_json::json;

use crate::event::{Limits, SELF_STREAM, format_received, validate};
use crate::store::{AppendGroup, Store, StoreError, StoredCheckpoint};

/// Event type of a signed checkpoint record.
pub const CHECKPOINT_SIGNED: &str = "checkpoint.signed";
/// Event type of an archive index record.
pub const INDEX_WRITTEN: &str = "index.written";
/// Event type of a source's possible upstream gap.
pub const SOURCE_GAP: &str = "source.gap";

/// Appends events `(id, type, data)` to the log's own stream in one
/// commit. Ids are fixed by what they record, so recording the same thing
/// twice stores it once.
///
/// # Errors
/// Store errors.
pub async fn record(
    store: &dyn Store,
    events: Vec<(String, &str, serde_json::Value)>,
) -> Result<(), StoreError> {
    append_own(store, SELF_STREAM, events).await
}

/// Appends events `(id, type, data)` to one of the log's own streams
/// ([`SELF_STREAM`], [`crate::event::AUDIT_STREAM`]) in one commit.
///
/// # Errors
/// Store errors.
pub(crate) async fn append_own(
    store: &dyn Store,
    stream: &str,
    events: Vec<(String, &str, serde_json::Value)>,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let received = format_received(time::OffsetDateTime::now_utc());
    let events = events
        .into_iter()
        .enumerate()
        .map(|(i, (id, event_type, data))| {
            validate(
                i,
                json!({"id": id, "type": event_type, "time": received, "data": data}),
                &received,
                &Limits::default(),
            )
            .map_err(|r| StoreError::Corrupt(format!("self-log event refused: {}", r.message)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    store
        .append(vec![AppendGroup {
            stream: stream.to_owned(),
            events,
            sealed: None,
        }])
        .await?;
    Ok(())
}

/// Records checkpoints just signed, `(stream, checkpoint)`, in one commit
/// (the log's own stream's checkpoints are never recorded in it).
///
/// # Errors
/// Store errors.
pub async fn record_checkpoints(
    store: &dyn Store,
    log_name: &str,
    signed: &[(String, StoredCheckpoint)],
) -> Result<(), StoreError> {
    let events = signed
        .iter()
        .filter(|(stream, _)| stream != SELF_STREAM)
        .map(|(stream, cp)| {
            // Ids are at most 128 characters: long stream names go by their
            // hash. Stream names hold no ':', so ids cannot collide.
            let name = if stream.len() <= 96 {
                stream.clone()
            } else {
                hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(stream.as_bytes())[..16])
            };
            (
                format!("cp:{}:{name}", cp.size),
                CHECKPOINT_SIGNED,
                json!({
                    "stream": stream,
                    "origin": crate::chain::checkpoint::origin(log_name, stream),
                    "size": cp.size,
                    "root": cp.root,
                    "note": cp.note,
                    "signed": cp.created,
                }),
            )
        })
        .collect();
    record(store, events).await
}

/// Records an archive index just written: its key, number, the SHA-256 of
/// its bytes and how many streams it names.
///
/// # Errors
/// Store errors.
pub async fn record_index(
    store: &dyn Store,
    archive: &str,
    key: &str,
    number: u64,
    sha256: &str,
    streams: usize,
) -> Result<(), StoreError> {
    record(
        store,
        vec![(
            format!("index:{number}"),
            INDEX_WRITTEN,
            json!({
                "archive": archive,
                "key": key,
                "number": number,
                "sha256": sha256,
                "streams": streams,
            }),
        )],
    )
    .await
}
