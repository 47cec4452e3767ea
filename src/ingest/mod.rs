//! The append path: requests from HTTP and from sources are gathered by
//! one batcher task into group commits against the [`Store`].
//!
//! - Every request waits for the commit that contains it; the reply is the
//!   acknowledgement. Nothing is acknowledged before [`EventStore::append`](crate::store::EventStore::append)
//!   returned `Ok`.
//! - One batcher owns seq assignment (it is the only caller of `append`),
//!   so concurrent requests for a stream are serialized without locks.
//! - A failed commit may or may not have reached disk. Retrying and then
//!   acknowledging could ack something stored twice or never, so the batcher
//!   **poisons** itself instead (a call that was certainly rolled back,
//!   [`crate::store::StoreError::RolledBack`], is only refused with 503): every pending and later request fails with
//!   [`AppendError::Poisoned`], `/readyz` reports not ready, and the
//!   operator restarts the process (SQLite's WAL recovery brings the store
//!   back to its last durable commit).
//!
//! Not here: HTTP parsing (`api`), validation (`event`).

pub mod checkpointer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot, watch};

use crate::event::NewEvent;
use crate::store::{AppendGroup, GroupResult, Store, StoreError};

/// Why an append was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A commit failed ambiguously (it may or may not be on disk), now or
    /// earlier: the writer refuses every append until restarted. The
    /// commit's own requests carry the store's error as the source.
    #[error("the log is not accepting writes: a commit failed; restart to recover")]
    Poisoned(#[source] Option<Arc<StoreError>>),
    /// The writer stopped (the server is shutting down).
    #[error("the log is not accepting writes: the writer stopped")]
    Stopped,
    /// The commit was rolled back (a full disk, say): nothing of the
    /// request is stored and a retry may succeed.
    #[error("not stored (the commit was rolled back); retry")]
    NotStored(#[source] Arc<StoreError>),
    /// The writer's queue is full: the request was not queued.
    #[error("the writer is saturated ({0} requests queued); retry shortly")]
    Busy(usize),
}

impl AppendError {
    /// Whether the same request may succeed if sent again (nothing of it
    /// is stored): a rolled-back commit or a full queue. A poisoned or
    /// stopped writer needs a restart first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::NotStored(_) | Self::Busy(_))
    }
}

/// Requests waiting for the writer at most; more are answered 503 at once
/// instead of queueing without bound.
pub const QUEUE_CAPACITY: usize = 4096;

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
    committed: watch::Receiver<u64>,
}

impl Appender {
    /// Starts the batcher task over `store`. Returns the handle and the task;
    /// the task ends when every handle is dropped and the queue is drained.
    pub fn start(
        store: Arc<dyn Store>,
        limits: BatchLimits,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let seal = store.uses_seals();
        let depth = store.pipeline_depth().max(1);
        Self::start_with(
            Arc::new(move |groups| {
                let store = store.clone();
                Box::pin(async move { store.append(groups).await })
            }),
            limits,
            Pipeline { depth, seal },
        )
    }

    /// Test hook: starts the batcher over a scripted commit function
    /// (no seals, `depth` commits in flight), as other modules' tests
    /// need one that fails on cue.
    #[cfg(test)]
    pub(crate) fn start_scripted(
        commit: CommitFn,
        depth: usize,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        Self::start_with(
            commit,
            BatchLimits::default(),
            Pipeline { depth, seal: false },
        )
    }

    /// Starts the batcher over any commit function (tests script one).
    fn start_with(
        commit: CommitFn,
        limits: BatchLimits,
        pipe: Pipeline,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let poisoned = Arc::new(AtomicBool::new(false));
        let (committed_tx, committed) = watch::channel(0);
        let task = tokio::spawn(run(
            commit,
            rx,
            limits,
            (poisoned.clone(), committed_tx),
            pipe,
        ));
        (
            Self {
                tx,
                poisoned,
                committed,
            },
            task,
        )
    }

    /// Changes after every commit of this node that stored a new event:
    /// what destination drivers wait on instead of polling (a commit on
    /// another node is not seen here; drivers still poll for those).
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Appends `events` to `stream` and returns once they are durably
    /// committed.
    ///
    /// # Errors
    /// [`AppendError::Poisoned`] or [`AppendError::Stopped`] when the writer
    /// refuses appends;
    /// the events were then not acknowledged.
    pub async fn append(
        &self,
        stream: String,
        events: Vec<NewEvent>,
    ) -> Result<GroupResult, AppendError> {
        self.submit(stream, events)?.await
    }

    /// Queues `events` for `stream` now and returns what resolves once
    /// they are durably committed (the acknowledgement of
    /// [`Appender::append`]). Requests are committed in the order they
    /// were submitted, so a caller can keep several in flight and still
    /// have its events stored in the order it read them (the SSE source
    /// does).
    ///
    /// # Errors
    /// [`AppendError::Poisoned`], [`AppendError::Stopped`] or
    /// [`AppendError::Busy`] at once when the request cannot be queued;
    /// the returned future fails as [`Appender::append`] does.
    pub fn submit(
        &self,
        stream: String,
        events: Vec<NewEvent>,
    ) -> Result<
        impl std::future::Future<Output = Result<GroupResult, AppendError>> + use<>,
        AppendError,
    > {
        if self.is_poisoned() {
            return Err(AppendError::Poisoned(None));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request {
                group: AppendGroup {
                    stream,
                    events,
                    sealed: None,
                },
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!("trailkeep_requests_refused_total", "code" => "overloaded")
                        .increment(1);
                    AppendError::Busy(QUEUE_CAPACITY)
                }
                mpsc::error::TrySendError::Closed(_) => AppendError::Stopped,
            })?;
        Ok(async move { rx.await.map_err(|_| AppendError::Stopped)? })
    }

    /// Returns whether a commit failed and the writer refuses further appends.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst)
    }
}

type Replies = Vec<oneshot::Sender<Result<GroupResult, AppendError>>>;

/// How the batcher overlaps commits.
#[derive(Debug, Clone, Copy)]
struct Pipeline {
    /// Group commits in flight at once ([`EventStore::pipeline_depth`](crate::store::EventStore::pipeline_depth)). With
    /// more than one, one commits while the next already waits at the store, so the
    /// writer starts it the moment the previous one is durable instead of
    /// waiting for this task to be scheduled, answer and gather again.
    depth: usize,
    /// Whether to seal groups ahead of their commit ([`EventStore::uses_seals`](crate::store::EventStore::uses_seals)).
    seal: bool,
}

/// One group commit: [`EventStore::append`](crate::store::EventStore::append) in production.
pub(crate) type CommitFn = Arc<
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
    (poisoned, committed): (Arc<AtomicBool>, watch::Sender<u64>),
    pipe: Pipeline,
) {
    let Pipeline { depth, seal } = pipe;
    use futures_util::StreamExt as _;
    let mut inflight = futures_util::stream::FuturesOrdered::new();
    let mut heads = Predictor::default();
    // A gathered batch waiting for the pipeline to drain (see `Predictor`).
    let mut held: Option<Vec<Request>> = None;
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            Some((replies, events, started, expected, res)) = inflight.next(), if !inflight.is_empty() => {
                if seal {
                    heads.finished(&expected, &res);
                }
                if finish(replies, events, started, res, &poisoned) {
                    committed.send_modify(|n| *n = n.wrapping_add(1));
                }
            }
            first = rx.recv(), if open && held.is_none() && inflight.len() < depth => {
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
                held = Some(pending);
            }
            else => break,
        }
        let Some(pending) = held.take() else { continue };
        if poisoned.load(Ordering::SeqCst) {
            refuse(pending.into_iter().map(|r| r.reply).collect());
            continue;
        }
        if seal && !inflight.is_empty() && pending.iter().any(|r| heads.must_drain(&r.group.stream))
        {
            held = Some(pending);
            continue;
        }
        // Move the events out of the requests: no copy on the hot path.
        let events: usize = pending.iter().map(|r| r.group.events.len()).sum();
        let (mut groups, replies): (Vec<AppendGroup>, Replies) =
            pending.into_iter().map(|r| (r.group, r.reply)).unzip();
        let expected = if seal {
            heads.seal(&mut groups)
        } else {
            Vec::new()
        };
        let started = std::time::Instant::now();
        let commit = commit(groups);
        inflight.push_back(async move {
            let res = commit.await;
            (replies, events, started, expected, res)
        });
    }
}

/// What the batcher believes each stream's head will be once every commit
/// it submitted is done, so it can seal the next groups (compute their
/// canonical bytes and hashes, see [`crate::store::Sealed`]) while the store
/// is still committing the previous ones.
///
/// A belief is dropped whenever a commit ends differently from its seal (a
/// duplicate id, an unsealed group, a failure, another writer); groups for
/// that stream are then left to the store, and once no commit for it is in
/// flight the head the last commit reported becomes the belief again. A
/// batch for a stream without a belief waits until the pipeline drains, so
/// that the next belief is exact rather than guessed.
#[derive(Default)]
struct Predictor {
    streams: std::collections::HashMap<String, Belief>,
}

#[derive(Default)]
struct Belief {
    /// The head after every submitted commit, when known.
    head: Option<crate::store::Head>,
    /// Submitted commits touching the stream that have not finished.
    inflight: usize,
}

/// Per stream of a submitted commit: one of its groups (each reports the
/// stream's final head) and the head the seals predict (`None` when a group
/// of it went unsealed).
type Expected = Vec<(String, usize, Option<crate::store::Head>)>;

impl Predictor {
    fn must_drain(&self, stream: &str) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|b| b.head.is_none() && b.inflight > 0)
    }

    /// Seals every group whose stream head is believed; returns what the
    /// commit should end with per stream.
    fn seal(&mut self, groups: &mut [AppendGroup]) -> Expected {
        let mut expected: Expected = Vec::new();
        for (i, g) in groups.iter_mut().enumerate() {
            let b = self.streams.entry(g.stream.clone()).or_default();
            let end = b.head.take().map(|after| {
                let (sealed, end) = crate::store::Sealed::compute(&g.stream, &g.events, after);
                g.sealed = Some(sealed);
                end
            });
            b.head.clone_from(&end);
            match expected.iter_mut().find(|(s, _, _)| *s == g.stream) {
                Some(e) => e.2 = end,
                None => {
                    b.inflight += 1;
                    expected.push((g.stream.clone(), i, end));
                }
            }
        }
        expected
    }

    /// Updates the beliefs with a finished commit's outcome.
    fn finished(&mut self, expected: &Expected, res: &crate::store::Result<Vec<GroupResult>>) {
        for (stream, group, predicted) in expected {
            let Some(b) = self.streams.get_mut(stream) else {
                continue;
            };
            b.inflight = b.inflight.saturating_sub(1);
            let actual = res
                .as_ref()
                .ok()
                .and_then(|r| r.get(*group))
                .map(|r| &r.head);
            if actual.is_none() || predicted.as_ref() != actual {
                b.head = None;
            }
            if b.inflight == 0 && b.head.is_none() {
                b.head = actual.cloned();
            }
        }
    }
}

fn refuse(replies: Replies) {
    for reply in replies {
        let _ = reply.send(Err(AppendError::Poisoned(None)));
    }
}

/// Answers the requests of one finished group commit, in commit order;
/// returns whether it stored a new event.
fn finish(
    replies: Replies,
    events: usize,
    started: std::time::Instant,
    res: crate::store::Result<Vec<GroupResult>>,
    poisoned: &AtomicBool,
) -> bool {
    if poisoned.load(Ordering::SeqCst) {
        // Queued behind a commit that failed: it may even have been stored,
        // but nothing is acknowledged after a failed commit.
        refuse(replies);
        return false;
    }
    match res {
        Ok(results) => {
            metrics::histogram!("trailkeep_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("trailkeep_commit_events").record(events as f64);
            let mut appended = 0;
            for (reply, res) in replies.into_iter().zip(results) {
                let new = res.accepted.iter().filter(|a| !a.duplicate).count();
                metrics::counter!("trailkeep_events_appended_total").increment(new as u64);
                appended += new;
                metrics::counter!("trailkeep_events_duplicate_total")
                    .increment((res.accepted.len() - new) as u64);
                let _ = reply.send(Ok(res));
            }
            if appended > 0 {
                metrics::gauge!("trailkeep_last_append_timestamp_seconds")
                    .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
            }
            appended > 0
        }
        Err(e @ StoreError::RolledBack(_)) => {
            // Certainly not stored: refuse these requests, keep serving.
            metrics::counter!("trailkeep_commits_rolled_back_total").increment(1);
            tracing::warn!(error = %crate::report::Chain(&e), "a group commit was rolled back; its requests were refused and nothing of them is stored");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(AppendError::NotStored(e.clone())));
            }
            false
        }
        Err(e) => {
            poisoned.store(true, Ordering::SeqCst);
            metrics::gauge!("trailkeep_writer_poisoned").set(1.0);
            tracing::error!(error = %crate::report::Chain(&e), "commit failed; the writer is poisoned and refuses further appends until restart");
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(AppendError::Poisoned(Some(e.clone()))));
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::{Accepted, Head};

    use crate::event::test_event as event;

    /// A commit function whose first call waits for `gate` and then fails
    /// the ambiguous way (a failed COMMIT); later calls succeed.
    fn scripted(calls: Arc<AtomicUsize>, gate: Arc<tokio::sync::Notify>) -> CommitFn {
        Arc::new(move |groups: Vec<AppendGroup>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            Box::pin(async move {
                if n == 0 {
                    gate.notified().await;
                    return Err(StoreError::backend_message(
                        "test",
                        "disk I/O error at COMMIT",
                    ));
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

    /// Waits until `f` holds, or panics naming `what`. These tests run on
    /// paused tokio time (nothing here does real I/O): the deadline is on
    /// that clock, so a busy machine cannot run it out.
    async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn wait_for(calls: &AtomicUsize, n: usize) {
        wait_until(&format!("commit {n} to start"), || {
            calls.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// The second group commit is handed to the store while the first is
    /// still running (the pipeline), yet when the first fails ambiguously
    /// the second is not acknowledged even though it succeeded: nothing is
    /// acknowledged after a failed commit.
    #[tokio::test(start_paused = true)]
    async fn nothing_queued_behind_a_failed_commit_is_acknowledged() {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let (app, _task) = Appender::start_with(
            scripted(calls.clone(), gate.clone()),
            BatchLimits::default(),
            Pipeline {
                depth: 2,
                seal: false,
            },
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
            matches!(&a, Err(AppendError::Poisoned(Some(e))) if e.to_string().contains("disk I/O error")),
            "{a:?}"
        );
        assert!(
            matches!(b, Err(AppendError::Poisoned(_))),
            "a commit queued behind a failed one must not be acknowledged: {b:?}"
        );
        assert!(app.is_poisoned());
        let c = app.append("s".into(), vec![event("c")]).await;
        assert!(c.is_err(), "{c:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no commit after poisoning");
    }

    /// A full queue is refused at once (503 upstream), not waited on: the
    /// request used to sit in `send().await` without bound.
    #[tokio::test(start_paused = true)]
    async fn a_full_queue_is_refused_at_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let never = Arc::new(tokio::sync::Notify::new());
        let (app, _task) = Appender::start_with(
            scripted(calls.clone(), never.clone()),
            BatchLimits::default(),
            Pipeline {
                depth: 1,
                seal: false,
            },
        );
        let _first = tokio::spawn({
            let app = app.clone();
            async move { app.append("s".into(), vec![event("first")]).await }
        });
        wait_for(&calls, 1).await;
        let mut queued = Vec::new();
        for i in 0..QUEUE_CAPACITY {
            let app = app.clone();
            queued.push(tokio::spawn(async move {
                app.append("s".into(), vec![event(&format!("q{i}"))]).await
            }));
        }
        wait_until("the queue to fill", || app.tx.capacity() == 0).await;
        let over = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            app.append("s".into(), vec![event("over")]),
        )
        .await
        .expect("answered at once, not queued");
        assert!(
            matches!(over, Err(AppendError::Busy(QUEUE_CAPACITY))),
            "{over:?}"
        );
        for q in queued {
            q.abort();
        }
    }

    /// Commits complete in order and each request gets its own result.
    #[tokio::test]
    async fn pipelined_commits_answer_every_request() {
        let calls = Arc::new(AtomicUsize::new(1)); // skip the failing first call
        let gate = Arc::new(tokio::sync::Notify::new());
        let (app, _task) = Appender::start_with(
            scripted(calls.clone(), gate),
            BatchLimits::default(),
            Pipeline {
                depth: 2,
                seal: false,
            },
        );
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

    /// A store in memory that honours seals the way the SQLite store does
    /// (only from the true head, only up to a duplicate) and counts them.
    #[derive(Default)]
    struct Mini {
        heads: std::collections::HashMap<String, Head>,
        ids: std::collections::HashSet<(String, String)>,
        bodies: std::collections::HashMap<String, Vec<(String, String)>>,
        groups: usize,
        used: usize,
    }

    fn mini(m: Arc<std::sync::Mutex<Mini>>) -> CommitFn {
        Arc::new(move |groups: Vec<AppendGroup>| {
            // Applied at submission, in order (the SQLite writer is FIFO);
            // answered a little later, so the pipeline really overlaps.
            let mut m = m.lock().unwrap();
            let mut out = Vec::new();
            for g in groups {
                m.groups += 1;
                let zero = Head {
                    seq: 0,
                    hash: crate::chain::ZERO_HASH_HEX.into(),
                };
                let mut head = m.heads.get(&g.stream).cloned().unwrap_or(zero);
                let mut sealed = g
                    .sealed
                    .filter(|s| s.after == head)
                    .map(|s| s.events.into_iter());
                if sealed.is_some() {
                    m.used += 1;
                }
                let mut accepted = Vec::new();
                for ev in g.events {
                    let pre = sealed.as_mut().and_then(Iterator::next);
                    if !m.ids.insert((g.stream.clone(), ev.id.clone())) {
                        sealed = None;
                        accepted.push(Accepted {
                            id: ev.id,
                            seq: 0,
                            hash: String::new(),
                            duplicate: true,
                        });
                        continue;
                    }
                    let s = pre.unwrap_or_else(|| {
                        crate::store::SealedEvent::compute(&ev, &g.stream, head.seq + 1, &head.hash)
                    });
                    head.seq += 1;
                    head.hash.clone_from(&s.hash);
                    m.bodies
                        .entry(g.stream.clone())
                        .or_default()
                        .push((s.body, s.hash.clone()));
                    accepted.push(Accepted {
                        id: ev.id,
                        seq: head.seq,
                        hash: s.hash,
                        duplicate: false,
                    });
                }
                m.heads.insert(g.stream.clone(), head);
                out.push((g.stream, accepted));
            }
            let results: Vec<GroupResult> = out
                .into_iter()
                .map(|(stream, accepted)| GroupResult {
                    accepted,
                    head: m.heads[&stream].clone(),
                })
                .collect();
            Box::pin(async move {
                // The fake store's commit latency (on paused time), so
                // commits overlap.
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                Ok(results)
            })
        })
    }

    /// Under concurrent load over several streams, with duplicate ids now and
    /// then, the batcher's seals are right nearly always, every chain is
    /// intact, and after each duplicate it recovers.
    #[tokio::test(start_paused = true)]
    async fn seals_follow_the_store_through_duplicates() {
        let m = Arc::new(std::sync::Mutex::new(Mini::default()));
        let (app, _task) = Appender::start_with(
            mini(m.clone()),
            BatchLimits::default(),
            Pipeline {
                depth: 2,
                seal: true,
            },
        );
        let mut clients = Vec::new();
        for c in 0..12 {
            let app = app.clone();
            clients.push(tokio::spawn(async move {
                for round in 0..40 {
                    let mut evs: Vec<NewEvent> = (0..3)
                        .map(|k| event(&format!("c{c}-r{round}-{k}")))
                        .collect();
                    if round % 10 == 5 {
                        // Re-send an id this client stored before.
                        evs.insert(1, event(&format!("c{c}-r0-0")));
                    }
                    let r = app.append(format!("s{}", c % 3), evs).await.unwrap();
                    assert_eq!(
                        r.accepted.iter().filter(|a| a.duplicate).count(),
                        usize::from(round % 10 == 5)
                    );
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        let m = m.lock().unwrap();
        for (stream, bodies) in &m.bodies {
            let mut prev = crate::chain::ZERO_HASH_HEX.to_owned();
            for (i, (body, hash)) in bodies.iter().enumerate() {
                assert_eq!(
                    &hex::encode(crate::chain::event_hash(body.as_bytes())),
                    hash
                );
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(v["prev"], prev.as_str(), "{stream} seq {}", i + 1);
                assert_eq!(v["seq"], i as u64 + 1);
                prev.clone_from(hash);
            }
            assert_eq!(bodies.len(), 4 * 40 * 3, "{stream}");
        }
        assert!(
            m.used * 10 >= m.groups * 8,
            "seals used for {} of {} groups",
            m.used,
            m.groups
        );
    }
}
