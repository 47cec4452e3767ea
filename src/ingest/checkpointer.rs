//! Signs each stream's tree head after commits, at most once per interval.
//!
//! Every `interval` the node holding the `checkpointer` lease asks the store
//! which streams are past their latest checkpoint, computes each root from
//! the stored tiles (never from the events), signs a C2SP checkpoint with the
//! log's Ed25519 key and stores it. On shutdown one last round runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::chain::checkpoint::Checkpoint;
use crate::chain::merkle;
use crate::chain::note::NoteSigner;
use crate::event::SELF_STREAM;
use crate::store::{ReaderSource, Store, StoreError, StoreExt, StoredCheckpoint};

pub use crate::chain::checkpoint::origin;

/// Why a checkpoint was not signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed (or its tiles are missing: [`StoreError::Corrupt`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint text could not be signed (a log name the note format
    /// refuses); it was a "corrupt store" before, which it is not.
    #[error("cannot sign the checkpoint")]
    Sign(#[from] crate::chain::note::NoteError),
}

/// Signs and stores a checkpoint for `stream` at its current head, unless
/// the latest checkpoint already has that size. Returns the new checkpoint.
///
/// # Errors
/// Store errors ([`StoreError::Corrupt`] when tiles are missing), or a
/// text the signer refuses.
pub async fn checkpoint_stream(
    store: &dyn Store,
    signer: &NoteSigner,
    log_name: &str,
    stream: &str,
) -> Result<Option<StoredCheckpoint>, CheckpointError> {
    let Some(info) = store.stream(stream).await? else {
        return Ok(None);
    };
    let size = info.head_seq;
    if size == 0 {
        return Ok(None);
    }
    if store
        .latest_checkpoint(stream)
        .await?
        .is_some_and(|c| c.size >= size)
    {
        return Ok(None);
    }
    let root = store
        .with_tiles(stream, |r| merkle::root(&ReaderSource(r), size))
        .await?;
    let text = Checkpoint {
        origin: origin(log_name, stream),
        size,
        root,
    }
    .to_text();
    let note = signer.sign(&text)?;
    let cp = StoredCheckpoint {
        size,
        root: hex::encode(root),
        note,
        created: crate::event::format_received(time::OffsetDateTime::now_utc()),
    };
    store.put_checkpoint(stream, cp.clone()).await?;
    metrics::counter!("trailkeep_checkpoints_signed_total").increment(1);
    Ok(Some(cp))
}

/// Signs every stream in `streams` that is past its latest checkpoint,
/// records the new checkpoints in the log's own stream in **one** append
/// (one commit per round, not per stream), and then signs the log's own
/// stream, so that nothing is left unsigned behind the records: a stopped
/// server leaves every stream, `_trailkeep` included, signed to its head.
///
/// A failed record is logged, not retried: a later checkpoint covers it.
pub async fn sign_and_record(
    store: &dyn Store,
    signer: &NoteSigner,
    log_name: &str,
    streams: &[String],
) {
    let mut signed = Vec::new();
    for s in streams.iter().filter(|s| *s != SELF_STREAM) {
        match checkpoint_stream(store, signer, log_name, s).await {
            Ok(Some(cp)) => signed.push((s.clone(), cp)),
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("trailkeep_checkpoint_errors_total").increment(1);
                tracing::error!(stream = %s, error = %crate::report::Chain(&e), "checkpoint failed; will retry");
            }
        }
    }
    if let Err(e) = crate::selflog::record_checkpoints(store, log_name, &signed).await {
        tracing::warn!(checkpoints = signed.len(), error = %crate::report::Chain(&e), "cannot record checkpoints in the log's own stream");
    }
    sign_self(store, signer, log_name).await;
}

/// Signs the log's own stream at its head (after something was recorded there).
pub async fn sign_self(store: &dyn Store, signer: &NoteSigner, log_name: &str) {
    if let Err(e) = checkpoint_stream(store, signer, log_name, SELF_STREAM).await {
        metrics::counter!("trailkeep_checkpoint_errors_total").increment(1);
        tracing::error!(stream = SELF_STREAM, error = %crate::report::Chain(&e), "checkpoint failed; will retry");
    }
}

/// The lease that lets one node sign for everybody.
pub const LEASE: &str = "checkpointer";

/// Runs the checkpointer until `shutdown` turns true, then runs a final
/// round and hands the lease over.
///
/// One node signs at a time: it keeps the lease `checkpointer` (renewed
/// every `interval`); each round asks the store which streams are past their latest
/// checkpoint (whichever node committed them) and signs those. Nodes without
/// the lease skip the round.
pub async fn run(
    store: Arc<dyn Store>,
    node: crate::node::NodeId,
    signer: NoteSigner,
    log_name: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl = (interval * 3).max(Duration::from_secs(3));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let keeper = crate::lease::LeaseKeeper::keep(store.clone(), LEASE, &node, ttl).await;
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        if keeper.held().is_some() {
            round(store.as_ref(), &signer, &log_name).await;
        }
        // Only a round that began after the stop signal is the last one: a
        // regular round that overlapped it may have listed the streams before
        // the batcher's final commits, so the loop comes round once more
        // (`changed()` is ready at once) instead of leaving them unsigned.
        if stop {
            break;
        }
    }
    keeper.release().await;
}

async fn round(store: &dyn Store, signer: &NoteSigner, log_name: &str) {
    let behind = match store.streams_behind_checkpoint().await {
        Ok(b) => b,
        Err(e) => {
            metrics::counter!("trailkeep_checkpoint_errors_total").increment(1);
            tracing::error!(error = %crate::report::Chain(&e), "checkpointer cannot list streams; will retry");
            return;
        }
    };
    sign_and_record(store, signer, log_name, &behind).await;
    metrics::gauge!("trailkeep_checkpoint_last_round_timestamp_seconds")
        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
}
