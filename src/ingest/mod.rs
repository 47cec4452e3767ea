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
        Self::start_with(
            Arc::new(move |groups| {
                let store = store.clone();
                Box::pin(async move { store.append(groups).await })
            }),
            limits,
        )
    }

    /// Starts the batcher over any commit function (tests script one).
    fn start_with(commit: CommitFn, limits: BatchLimits) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(4096);
        let poisoned = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(commit, rx, limits, poisoned.clone()));
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

/// Group commits in flight at once: one committing, the next already
/// queued at the store, so the writer starts it the moment the previous one
/// is durable instead of waiting for this task to be scheduled, collect
/// replies and gather again (measured: the writer sat idle ~15% of the time).
const PIPELINE_DEPTH: usize = 2;

type Replies = Vec<oneshot::Sender<Result<GroupResult, AppendError>>>;

/// One group commit: [`Store::append`] in production.
type CommitFn = Arc<
    dyn Fn(
            Vec<AppendGroup>,
        )
            -> futures_util::future::BoxFuture<'static, crate::store::Result<Vec<GroupResult>>>
        + Send
        + Sync,
>;

async fn run(
    commit: CommitFn,
    mut rx: mpsc::Receiver<Request>,
    limits: BatchLimits,
    poisoned: Arc<AtomicBool>,
) {
    use futures_util::StreamExt as _;
    let mut inflight = futures_util::stream::FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((replies, events, started, res)) = inflight.next(), if !inflight.is_empty() => {
                finish(replies, events, started, res, &poisoned);
            }
            first = rx.recv(), if open && inflight.len() < PIPELINE_DEPTH => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut events = first.group.events.len();
                let mut pending = vec![first];
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
                    refuse(pending.into_iter().map(|r| r.reply).collect());
                    continue;
                }
                // Move the events out of the requests: no copy on the hot path.
                let (groups, replies): (Vec<AppendGroup>, Replies) =
                    pending.into_iter().map(|r| (r.group, r.reply)).unzip();
                let started = std::time::Instant::now();
                let commit = commit(groups);
                inflight.push_back(async move {
                    let res = commit.await;
                    (replies, events, started, res)
                });
            }
            else => break,
        }
    }
}

fn refuse(replies: Replies) {
    for reply in replies {
        let _ = reply.send(Err(AppendError::Unavailable(
            "a previous commit failed; restart to recover".into(),
        )));
    }
}

/// Answers the requests of one finished group commit, in commit order.
fn finish(
    replies: Replies,
    events: usize,
    started: std::time::Instant,
    res: crate::store::Result<Vec<GroupResult>>,
    poisoned: &AtomicBool,
) {
    if poisoned.load(Ordering::SeqCst) {
        // Queued behind a commit that failed: it may even have been stored,
        // but nothing is acknowledged after a failed commit.
        refuse(replies);
        return;
    }
    match res {
        Ok(results) => {
            metrics::histogram!("trailkeep_commit_seconds").record(started.elapsed().as_secs_f64());
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
                let _ = reply.send(Err(AppendError::Unavailable(format!("commit failed: {e}"))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::{Accepted, Head, StoreError};

    fn event(id: &str) -> NewEvent {
        NewEvent {
            id: id.into(),
            event_type: "t".into(),
            time: "2026-01-01T00:00:00Z".into(),
            received: "2026-01-01T00:00:00.000000Z".into(),
            actor: None,
            subject: None,
            data: None,
        }
    }

    /// A commit function whose first call waits for `gate` and then fails
    /// the ambiguous way (a failed COMMIT); later calls succeed.
    fn scripted(calls: Arc<AtomicUsize>, gate: Arc<tokio::sync::Notify>) -> CommitFn {
        Arc::new(move |groups: Vec<AppendGroup>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            Box::pin(async move {
                if n == 0 {
                    gate.notified().await;
                    return Err(StoreError::Backend {
                        backend: "test",
                        message: "disk I/O error at COMMIT".into(),
                    });
                }
                Ok(groups
                    .into_iter()
                    .map(|g| GroupResult {
                        accepted: g
                            .events
                            .into_iter()
                            .map(|e| Accepted {
                                id: e.id,
                                seq: 1,
                                hash: "00".into(),
                                duplicate: false,
                            })
                            .collect(),
                        head: Head {
                            seq: 1,
                            hash: "00".into(),
                        },
                    })
                    .collect())
            })
        })
    }

    async fn wait_for(calls: &AtomicUsize, n: usize) {
        for _ in 0..500 {
            if calls.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        panic!("commit {n} was never started");
    }

    /// The second group commit is handed to the store while the first is
    /// still running (the pipeline), yet when the first fails ambiguously
    /// the second is not acknowledged even though it succeeded: nothing is
    /// acknowledged after a failed commit.
    #[tokio::test]
    async fn nothing_queued_behind_a_failed_commit_is_acknowledged() {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (app, _task) = Appender::start_with(
            scripted(calls.clone(), gate.clone()),
            BatchLimits::default(),
        );
        let a = tokio::spawn({
            let app = app.clone();
            async move { app.append("s".into(), vec![event("a")]).await }
        });
        wait_for(&calls, 1).await;
        let b = tokio::spawn({
            let app = app.clone();
            async move { app.append("s".into(), vec![event("b")]).await }
        });
        wait_for(&calls, 2).await;
        gate.notify_one();
        let a = a.await.unwrap();
        let b = b.await.unwrap();
        assert!(
            matches!(a, Err(AppendError::Unavailable(ref m)) if m.contains("commit failed")),
            "{a:?}"
        );
        assert!(
            matches!(b, Err(AppendError::Unavailable(_))),
            "a commit queued behind a failed one must not be acknowledged: {b:?}"
        );
        assert!(app.is_poisoned());
        let c = app.append("s".into(), vec![event("c")]).await;
        assert!(c.is_err(), "{c:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no commit after poisoning");
    }

    /// Commits complete in order and each request gets its own result.
    #[tokio::test]
    async fn pipelined_commits_answer_every_request() {
        let calls = Arc::new(AtomicUsize::new(1)); // skip the failing first call
        let gate = Arc::new(tokio::sync::Notify::new());
        let (app, _task) =
            Appender::start_with(scripted(calls.clone(), gate), BatchLimits::default());
        let mut tasks = Vec::new();
        for i in 0..200 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                app.append("s".into(), vec![event(&format!("e{i}"))]).await
            }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let r = t.await.unwrap().unwrap();
            assert_eq!(r.accepted[0].id, format!("e{i}"));
        }
        assert!(!app.is_poisoned());
    }
}
