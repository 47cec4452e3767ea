//! The append path: requests from HTTP (and later sources) are gathered by
//! one batcher task into group commits against the [`Store`].
//!
//! - Every request waits for the commit that contains it; the reply is the
//!   acknowledgement. Nothing is acknowledged before [`Store::append`]
//!   returned `Ok`.
//! - One batcher owns seq assignment (it is the only caller of `append`),
//!   so concurrent requests for a stream are serialized without locks.
//! - A failed commit may or may not have reached disk. Retrying and then
//!   acknowledging could ack something stored twice or never, so the batcher
//!   **poisons** itself instead (a call that was certainly rolled back,
//!   [`crate::store::StoreError::RolledBack`], is only refused with 503): every pending and later request fails with
//!   [`AppendError::Unavailable`], `/readyz` reports not ready, and the
//!   operator restarts the process (SQLite's WAL recovery brings the store
//!   back to its last durable commit).
//!
//! Not here: HTTP parsing (`api`), validation (`event`).

pub mod checkpointer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::event::NewEvent;
use crate::store::{AppendGroup, GroupResult, Store};

/// Why an append was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The writer is poisoned or stopped; nothing more is acknowledged.
    #[error("the log is not accepting writes: {0}")]
    Unavailable(String),
}

struct Request {
    group: AppendGroup,
    reply: oneshot::Sender<Result<GroupResult, AppendError>>,
}

/// Tuning of the batcher.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Most events gathered into one commit.
    pub max_batch_events: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_batch_events: 20_000,
        }
    }
}

/// A cheap handle to the batcher; clone it into every handler.
#[derive(Clone, Debug)]
pub struct Appender {
    tx: mpsc::Sender<Request>,
    poisoned: Arc<AtomicBool>,
}

impl Appender {
    /// Starts the batcher task over `store`. Returns the handle and the task;
    /// the task ends when every handle is dropped and the queue is drained.
    pub fn start(
        store: Arc<dyn Store>,
        limits: BatchLimits,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let poisoned = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(store, rx, limits, poisoned.clone()));
        (Self { tx, poisoned }, task)
    }

    /// Appends `events` to `stream` and returns once they are durably
    /// committed.
    ///
    /// # Errors
    /// [`AppendError::Unavailable`] when the writer is poisoned or stopped;
    /// the events were then not acknowledged.
    pub async fn append(
        &self,
        stream: String,
        events: Vec<NewEvent>,
    ) -> Result<GroupResult, AppendError> {
        if self.is_poisoned() {
            return Err(AppendError::Unavailable(
                "a previous commit failed; restart to recover".into(),
            ));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                group: AppendGroup { stream, events },
                reply,
            })
            .await
            .map_err(|_| AppendError::Unavailable("writer stopped".into()))?;
        rx.await
            .map_err(|_| AppendError::Unavailable("writer stopped".into()))?
    }

    /// Returns whether a commit failed and the writer refuses further appends.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Request>,
    limits: BatchLimits,
    poisoned: Arc<AtomicBool>,
) {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut events = first.group.events.len();
        pending.push(first);
        while events < limits.max_batch_events {
            match rx.try_recv() {
                Ok(r) => {
                    events += r.group.events.len();
                    pending.push(r);
                }
                Err(_) => break,
            }
        }
        if poisoned.load(Ordering::SeqCst) {
            for r in pending.drain(..) {
                let _ = r.reply.send(Err(AppendError::Unavailable(
                    "a previous commit failed; restart to recover".into(),
                )));
            }
            continue;
        }
        // Move the events out of the requests: no copy on the hot path.
        let (groups, replies): (Vec<AppendGroup>, Vec<_>) =
            pending.drain(..).map(|r| (r.group, r.reply)).unzip();
        let started = std::time::Instant::now();
        match store.append(groups).await {
            Ok(results) => {
                metrics::histogram!("trailkeep_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("trailkeep_commit_events").record(events as f64);
                for (reply, res) in replies.into_iter().zip(results) {
                    let new = res.accepted.iter().filter(|a| !a.duplicate).count();
                    metrics::counter!("trailkeep_events_appended_total").increment(new as u64);
                    metrics::counter!("trailkeep_events_duplicate_total")
                        .increment((res.accepted.len() - new) as u64);
                    let _ = reply.send(Ok(res));
                }
            }
            Err(crate::store::StoreError::RolledBack(msg)) => {
                // Certainly not stored: refuse these requests, keep serving.
                metrics::counter!("trailkeep_commits_rolled_back_total").increment(1);
                tracing::warn!(error = %msg, "a group commit was rolled back; its requests were refused and nothing of them is stored");
                for reply in replies {
                    let _ = reply.send(Err(AppendError::Unavailable(format!(
                        "not stored, retry: {msg}"
                    ))));
                }
            }
            Err(e) => {
                poisoned.store(true, Ordering::SeqCst);
                metrics::gauge!("trailkeep_writer_poisoned").set(1.0);
                tracing::error!(error = %e, "commit failed; the writer is poisoned and refuses further appends until restart");
                for reply in replies {
                    let _ =
                        reply.send(Err(AppendError::Unavailable(format!("commit failed: {e}"))));
                }
            }
        }
    }
}
