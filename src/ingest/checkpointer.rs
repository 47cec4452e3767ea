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
use crate::store::{ReaderSource, Store, StoreError, StoreExt, StoredCheckpoint};

/// Returns the checkpoint origin of `stream` in the log `log_name`.
pub fn origin(log_name: &str, stream: &str) -> String {
    format!("{log_name}/{stream}")
}

/// Signs and stores a checkpoint for `stream` at its current head, unless
/// the latest checkpoint already has that size. Returns the new checkpoint.
///
/// # Errors
/// Store errors, or [`StoreError::Corrupt`] when tiles are missing.
pub async fn checkpoint_stream(
    store: &dyn Store,
    signer: &NoteSigner,
    log_name: &str,
    stream: &str,
) -> Result<Option<StoredCheckpoint>, StoreError> {
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
    let note = signer
        .sign(&text)
        .map_err(|e| StoreError::Corrupt(format!("cannot sign checkpoint: {e}")))?;
    let cp = StoredCheckpoint {
        size,
        root: hex::encode(root),
        note,
        created: crate::event::format_received(time::OffsetDateTime::now_utc()),
    };
    store.put_checkpoint(stream, cp.clone()).await?;
    metrics::counter!("trailkeep_checkpoints_signed_total").increment(1);
    // The copy for destinations with `checkpoints = true`. A later
    // checkpoint covers this one, so a failed record is logged, not retried.
    if let Err(e) =
        crate::selflog::record_checkpoint(store, &origin(log_name, stream), stream, &cp).await
    {
        tracing::warn!(stream, size, error = %e, "cannot record the checkpoint in the log's own stream");
    }
    Ok(Some(cp))
}

/// The lease that lets one node sign for everybody.
pub const LEASE: &str = "checkpointer";

/// Runs the checkpointer until `shutdown` turns true, then runs a final
/// round and hands the lease over.
///
/// One node signs at a time: each round takes (or renews) the lease
/// `checkpointer`, asks the store which streams are past their latest
/// checkpoint (whichever node committed them) and signs those. Nodes without
/// the lease skip the round.
pub async fn run(
    store: Arc<dyn Store>,
    signer: NoteSigner,
    log_name: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let ttl = (interval * 3).max(Duration::from_secs(3));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held: Option<crate::store::Lease>;
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        held = match store
            .acquire_lease(LEASE, crate::server::node_id(), ttl)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "checkpointer cannot take its lease");
                None
            }
        };
        if held.is_some() {
            round(store.as_ref(), &signer, &log_name).await;
        }
        if stop || *shutdown.borrow() {
            break;
        }
    }
    if let Some(l) = held {
        let _ = store.release_lease(&l).await;
    }
}

async fn round(store: &dyn Store, signer: &NoteSigner, log_name: &str) {
    let behind = match store.streams_behind_checkpoint().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "checkpointer cannot list streams; will retry");
            return;
        }
    };
    for s in behind {
        if let Err(e) = checkpoint_stream(store, signer, log_name, &s).await {
            tracing::error!(stream = %s, error = %e, "checkpoint failed; will retry");
        }
    }
}
