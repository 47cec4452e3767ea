//! Signs each stream's tree head after commits, at most once per interval.
//!
//! The batcher marks streams dirty; every `interval` the checkpointer takes
//! the dirty set, computes each root from the stored tiles (never from the
//! events), signs a C2SP checkpoint with the log's Ed25519 key and stores it.
//! On start every stream is treated as dirty; on shutdown one last round runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::DirtyStreams;
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
    Ok(Some(cp))
}

/// Runs the checkpointer until `shutdown` turns true, then runs a final round.
pub async fn run(
    store: Arc<dyn Store>,
    signer: NoteSigner,
    log_name: String,
    interval: Duration,
    dirty: DirtyStreams,
    mut shutdown: watch::Receiver<bool>,
) {
    match store.streams().await {
        Ok(all) => {
            let mut d = dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            d.extend(all.into_iter().map(|s| s.name));
        }
        Err(e) => tracing::warn!(error = %e, "checkpointer cannot list streams"),
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = tick.tick() => false,
            _ = shutdown.changed() => true,
        };
        round(store.as_ref(), &signer, &log_name, &dirty).await;
        if stop || *shutdown.borrow() {
            break;
        }
    }
}

async fn round(store: &dyn Store, signer: &NoteSigner, log_name: &str, dirty: &DirtyStreams) {
    let streams: Vec<String> = {
        let mut d = dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        d.drain().collect()
    };
    for s in streams {
        if let Err(e) = checkpoint_stream(store, signer, log_name, &s).await {
            tracing::error!(stream = %s, error = %e, "checkpoint failed; will retry");
            dirty
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(s);
        }
    }
}
