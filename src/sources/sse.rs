//! The SSE source: connect, read `text/event-stream`, append in batches,
//! store the resume position after each commit, reconnect on any drop.
//!
//! Parsing of the event-stream format (multi-line `data:`, `event:`, `id:`,
//! `retry:`, comments, CRLF) is `eventsource-stream`'s. Every event that
//! cannot be stored (not JSON, not an object, invalid) is counted, logged
//! with its position and kept in the rejected record; nothing is skipped
//! silently. Events whose type the filter excludes are counted as filtered.

use std::sync::Arc;
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource as _};
use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::backfill;
use super::mapping::{Fields, Mapped, map_item};
use super::{Secret, SourceConfig};
use crate::ingest::Appender;
use crate::store::{RejectedEvent, SourceProgress, Store};

/// Most events appended in one group.
const MAX_BATCH: usize = 500;
/// How long to wait for more ready events before appending a batch.
const LINGER: Duration = Duration::from_millis(2);
/// Batches of one connection handed to the appender and not yet
/// committed, at most: the next batch is read while the previous one
/// commits (issue #18; ARCHITECTURE.md, "Sources hand off durably").
const APPENDS_IN_FLIGHT: usize = 2;
/// The source's state row (counters, resume position) is written at most
/// this often while events flow, and this long after the last change at
/// the latest; and whenever a connection ends. A resume position older
/// than the last commit only replays events into deduplication.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// One item of the event stream as read.
type Frame = Result<eventsource_stream::Event, EventStreamError<BodyError<ReadError>>>;

/// A batch handed to the appender, resolving when it is committed.
type PendingBatch = std::pin::Pin<Box<dyn std::future::Future<Output = Landed> + Send>>;

/// A batch's commit, as the reader takes it back.
struct Landed {
    /// The commit's result and its events' times; `None` when the batch
    /// had nothing to store (filtered, rejected or keep-alive frames).
    result: Result<Option<(crate::store::GroupResult, Vec<String>)>, String>,
    /// The resume id once this batch (and every one before it) is
    /// committed.
    last_id: Option<String>,
}

/// Where a connection's reading is: frames taken, the last id seen.
struct Reading {
    /// The connection's number on this node.
    number: u64,
    /// Frames taken on this connection.
    n: u64,
    /// The last `id:` read (not necessarily committed).
    last_id: Option<String>,
    /// Per the SSE spec a frame without `id:` inherits the previous id
    /// (see `map_frame`).
    prev_frame_id: String,
}

/// Keeps the first failure: a later end (an EOF, a shutdown, another
/// failure) does not replace it.
fn settle(outcome: &mut Option<Result<End, String>>, new: Result<End, String>) {
    if !outcome_failed(outcome) && (outcome.is_none() || new.is_err()) {
        *outcome = Some(new);
    }
}

fn outcome_failed(outcome: &Option<Result<End, String>>) -> bool {
    matches!(outcome, Some(Err(_)))
}

enum End {
    /// The upstream closed the stream.
    Eof,
    /// Shutdown was requested (or the lease was lost).
    Shutdown,
}

/// Why a connection's task ended.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// Shutdown, or the supervisor stopped it.
    Asked,
    /// A state write was fenced: another node holds the lease.
    Fenced,
}

/// What every connection of one source on this node shares.
struct Shared {
    node: crate::node::NodeId,
    cfg: SourceConfig,
    key: Secret,
    client: reqwest::Client,
    appender: Appender,
    store: Arc<dyn Store>,
    /// Resume position and latest event time, as this node knows them.
    position: std::sync::Mutex<Position>,
    coverage: Arc<super::gaps::Coverage>,
    /// Connections made on this node (numbers rejected events' positions).
    opened: std::sync::atomic::AtomicU64,
    /// Digests of recently rejected frames: each connection sees every
    /// frame, and one rejected frame is recorded once.
    recent_rejects: std::sync::Mutex<std::collections::VecDeque<[u8; 32]>>,
}

#[derive(Default, Clone)]
struct Position {
    last_event_id: Option<String>,
    last_event_time: Option<String>,
}

/// How many rejected frames' digests are remembered.
const RECENT_REJECTS: usize = 1024;

/// Runs the source until `shutdown` turns true.
///
/// By default one node runs a source: the one holding the lease
/// `source:NAME` (kept by a [`crate::lease::LeaseKeeper`]); the others
/// stand by, and every state write is fenced by the lease. On a cluster
/// the lease goes to the node that owns the source's target stream
/// ([`super::placement`]). With
/// `active_active`, every node runs it at once (no lease; the store
/// deduplicates events by id and adds up the counters). Either way the
/// running node keeps `connections` connections open, staggered, and
/// records every window in which no connection on any node was receiving
/// as a possible gap ([`super::gaps`]).
pub async fn run(
    node: crate::node::NodeId,
    cfg: SourceConfig,
    key: Secret,
    client: reqwest::Client,
    appender: Appender,
    store: Arc<dyn Store>,
    mut shutdown: watch::Receiver<bool>,
) {
    for name in [
        "trailkeep_source_connected",
        "trailkeep_source_connections",
        "trailkeep_source_last_event_timestamp_seconds",
        "trailkeep_source_events_total",
        "trailkeep_source_reconnects_total",
        "trailkeep_source_gaps_total",
        "trailkeep_source_gap_seconds_total",
    ] {
        crate::telemetry::register(name, "source", &cfg.name);
    }
    let coverage = Arc::new(super::gaps::Coverage::new(
        store.clone(),
        &cfg.name,
        &cfg.stream,
        node.as_str(),
        cfg.gap_merge,
    ));
    let sh = Arc::new(Shared {
        node,
        cfg,
        key,
        client,
        appender,
        store,
        position: std::sync::Mutex::default(),
        coverage,
        opened: std::sync::atomic::AtomicU64::new(0),
        recent_rejects: std::sync::Mutex::default(),
    });
    let beat = {
        let c = sh.coverage.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_millis(crate::store::RECEIVER_BEAT_MS as u64));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                c.beat().await;
            }
        })
    };
    if sh.cfg.active_active {
        sh.load_position(None).await;
        tracing::info!(source = %sh.cfg.name, node = %sh.node, "running the source here (active-active)");
        run_connections(&sh, None, &mut shutdown, None).await;
    } else if let Some(cluster) = sh.store.cluster() {
        run_on_owner(&sh, cluster, &mut shutdown).await;
    } else {
        let mut keeper = crate::lease::LeaseKeeper::keep(
            sh.store.clone(),
            &format!("source:{}", sh.cfg.name),
            &sh.node,
            sh.cfg.lease_ttl,
        )
        .await;
        loop {
            if *shutdown.borrow() {
                break;
            }
            match keeper.held() {
                Some(l) => {
                    if !sh.load_position(Some(&l)).await {
                        // Fenced at once: the keeper will learn it lost.
                        tokio::select! {
                            () = keeper.changed() => continue,
                            _ = shutdown.changed() => break,
                        }
                    }
                    tracing::info!(source = %sh.cfg.name, node = %sh.node, "running the source here");
                    let stop =
                        run_connections(&sh, Some(&l), &mut shutdown, Some(&mut keeper)).await;
                    if stop == Stop::Fenced {
                        tracing::warn!(source = %sh.cfg.name, "lost the source's lease to another node; standing by");
                        tokio::select! {
                            () = keeper.changed() => {}
                            _ = shutdown.changed() => break,
                        }
                    }
                }
                None => {
                    // Another node runs this source: stand by.
                    tokio::select! {
                        () = keeper.changed() => continue,
                        _ = shutdown.changed() => break,
                    }
                }
            }
        }
        beat.abort();
        // Hand the source over at once rather than after the lease expires.
        keeper.release().await;
    }
    beat.abort();
    // The connections recorded their ends: decide what is pending and log
    // what is due before going.
    sh.coverage.finish().await;
}

/// On a cluster: takes the source's lease where [`super::placement`] says
/// the source belongs, runs it while held, hands it over to the stream's
/// owner when that owner claims it, and claims it when this node owns the
/// stream and another node runs it.
async fn run_on_owner(
    sh: &Arc<Shared>,
    cluster: Arc<dyn crate::store::cluster::ClusterStore>,
    shutdown: &mut watch::Receiver<bool>,
) {
    use super::placement::{HANDOVER_POLL, Place, Placement, may_take};
    use crate::lease::LeaseKeeper;
    let mut p = Placement::new(cluster, &sh.cfg.name, &sh.cfg.stream);
    let lease = format!("source:{}", sh.cfg.name);
    tokio::select! {
        () = p.wait_known(sh.cfg.lease_ttl) => {}
        _ = shutdown.changed() => return,
    }
    // Held while this node owns the stream and another node runs the source.
    let mut claim: Option<LeaseKeeper> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let place = p.place();
        // A claim is kept only while this node owns the stream and the
        // store keeps granting it.
        if (place != Place::Here || claim.as_ref().is_some_and(|c| c.held().is_none()))
            && let Some(c) = claim.take()
        {
            c.release().await;
        }
        let claimant = match place {
            Place::Elsewhere(_) => p.claimant().await,
            Place::Here | Place::Anywhere => None,
        };
        if may_take(&place, claimant.as_deref()) {
            match LeaseKeeper::take(sh.store.clone(), &lease, &sh.node, sh.cfg.lease_ttl).await {
                Ok(Some(keeper)) => {
                    if let Some(c) = claim.take() {
                        c.release().await;
                    }
                    run_held(sh, keeper, &mut p, shutdown).await;
                    continue;
                }
                Ok(None) if place == Place::Here && claim.is_none() => {
                    match LeaseKeeper::take(sh.store.clone(), &p.claim, &sh.node, sh.cfg.lease_ttl)
                        .await
                    {
                        Ok(Some(c)) => {
                            tracing::info!(source = %sh.cfg.name, stream = %sh.cfg.stream, "this node owns the source's stream; asked the node running the source to hand it over");
                            claim = Some(c);
                        }
                        // Another node claims it too (views differ for a
                        // round): ask again later.
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(source = %sh.cfg.name, error = %crate::report::Chain(&e), "cannot claim the source; will retry");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(source = %sh.cfg.name, error = %crate::report::Chain(&e), "cannot take the source's lease; will retry");
                }
            }
        }
        let wait = if claim.is_some() {
            HANDOVER_POLL
        } else {
            sh.cfg.lease_ttl / 3
        };
        tokio::select! {
            () = p.changed() => {}
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
    if let Some(c) = claim.take() {
        c.release().await;
    }
}

/// Runs the source under `keeper`'s lease until shutdown, the lease being
/// lost, or the stream's owner claiming it; then stops pulling, lands what
/// is in flight, writes the position, and only then gives the lease up.
async fn run_held(
    sh: &Arc<Shared>,
    mut keeper: crate::lease::LeaseKeeper,
    p: &mut super::placement::Placement,
    shutdown: &mut watch::Receiver<bool>,
) {
    let Some(l) = keeper.held() else {
        return;
    };
    if !sh.load_position(Some(&l)).await {
        // Fenced at once: another node holds it now.
        keeper.release().await;
        return;
    }
    let place = p.place();
    tracing::info!(source = %sh.cfg.name, node = %sh.node, stream = %sh.cfg.stream, owner = ?place, "running the source here");
    let (leave_tx, mut leave_rx) = watch::channel(false);
    {
        let conns = run_connections(sh, Some(&l), &mut leave_rx, Some(&mut keeper));
        tokio::pin!(conns);
        tokio::select! {
            stop = &mut conns => {
                if stop == Stop::Fenced {
                    tracing::warn!(source = %sh.cfg.name, "lost the source's lease to another node; standing by");
                }
            }
            owner = leave(sh, p, shutdown) => {
                let _ = leave_tx.send(true);
                conns.await;
                if let Some(owner) = owner {
                    tracing::info!(source = %sh.cfg.name, to = %owner, "handed the source over to the node that owns its stream");
                }
            }
        }
    }
    keeper.release().await;
}

/// Resolves when the source must stop here: shutdown (`None`) or the
/// stream's owner claiming it (`Some(owner)`).
async fn leave(
    sh: &Shared,
    p: &mut super::placement::Placement,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    use super::placement::{HANDOVER_POLL, Place, must_hand_over};
    loop {
        if *shutdown.borrow() {
            return None;
        }
        let place = p.place();
        let wait = match &place {
            Place::Elsewhere(owner) => {
                if must_hand_over(&place, p.claimant().await.as_deref()) {
                    tracing::info!(source = %sh.cfg.name, to = %owner, "the node that owns the source's stream claims it; handing it over");
                    return Some(owner.clone());
                }
                HANDOVER_POLL
            }
            Place::Here | Place::Anywhere => sh.cfg.lease_ttl / 3,
        };
        tokio::select! {
            () = p.changed() => {}
            () = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Runs this node's connections until shutdown, a fenced write, or (with
/// `keeper`) the lease `fence` changing hands.
async fn run_connections(
    sh: &Arc<Shared>,
    fence: Option<&crate::store::Lease>,
    shutdown: &mut watch::Receiver<bool>,
    mut keeper: Option<&mut crate::lease::LeaseKeeper>,
) -> Stop {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..sh.cfg.connections {
        tasks.spawn(connection(sh.clone(), k, fence.cloned(), stop_rx.clone()));
    }
    let token = fence.map(|l| l.token);
    let mut outcome = Stop::Asked;
    loop {
        let lease_changed = async {
            match keeper.as_deref_mut() {
                Some(k) => k.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.changed() => break,
            () = lease_changed => {
                let now = keeper.as_deref().and_then(|k| k.held()).map(|l| l.token);
                if now != token {
                    outcome = Stop::Fenced;
                    break;
                }
            }
            done = tasks.join_next() => match done {
                Some(Ok(Stop::Fenced)) => {
                    outcome = Stop::Fenced;
                    break;
                }
                Some(_) => {}
                None => break,
            },
        }
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    outcome
}

/// One connection: connect, read, append, reconnect with backoff, until
/// stopped. Connection `k` starts `k` staggers after the first.
async fn connection(
    sh: Arc<Shared>,
    k: usize,
    fence: Option<crate::store::Lease>,
    mut stop: watch::Receiver<bool>,
) -> Stop {
    if k > 0 {
        let wait = sh.cfg.connection_stagger.saturating_mul(k as u32);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return Stop::Asked,
        }
    }
    let mut c = Conn {
        sh,
        fence,
        server_retry: None,
        progress: None,
        fenced: false,
        batch_since_ms: None,
        flushed: tokio::time::Instant::now(),
    };
    let mut failures = 0u32;
    loop {
        if *stop.borrow() {
            return Stop::Asked;
        }
        let mut received = false;
        let outcome = c.connect_once(&mut stop, &mut received).await;
        match outcome {
            Ok(End::Shutdown) => {
                c.flush().await;
                return if c.fenced { Stop::Fenced } else { Stop::Asked };
            }
            Ok(End::Eof) => {
                tracing::info!(source = %c.sh.cfg.name, "upstream closed the event stream; reconnecting")
            }
            Err(e) => {
                tracing::warn!(source = %c.sh.cfg.name, error = %e, "event source failed; reconnecting");
                c.progress().last_error = Some((e, super::now()));
            }
        }
        if c.fenced {
            return Stop::Fenced;
        }
        c.progress().reconnects += 1;
        metrics::counter!("trailkeep_source_reconnects_total", "source" => c.sh.cfg.name.clone())
            .increment(1);
        c.flush().await;
        if c.fenced {
            return Stop::Fenced;
        }
        failures = if received {
            0
        } else {
            failures.saturating_add(1)
        };
        let delay = reconnect_delay(
            c.sh.cfg.reconnect_initial,
            c.sh.cfg.reconnect_max,
            c.server_retry,
            failures,
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return Stop::Asked,
        }
    }
}

/// Returns a uniformly random duration in `[0, max]` (full jitter).
fn jitter(max: Duration) -> Duration {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return max;
    }
    let frac = (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(frac)
}

impl Shared {
    /// Reads the position as the store has it, and writes an empty
    /// progress (so the source shows in its status at once). `false` when
    /// the write was fenced.
    async fn load_position(&self, fence: Option<&crate::store::Lease>) -> bool {
        let stored = self
            .store
            .source_states()
            .await
            .ok()
            .and_then(|all| all.into_iter().find(|s| s.name == self.cfg.name))
            // A source pointed at another stream starts afresh.
            .filter(|s| s.stream == self.cfg.stream);
        let pos = stored.map_or_else(Position::default, |s| Position {
            last_event_id: s.last_event_id,
            last_event_time: s.last_event_time,
        });
        if let Some(t) = pos.last_event_time.as_deref().and_then(unix_time) {
            last_event_gauge(&self.cfg.name).set(t);
        }
        *self
            .position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = pos;
        let hello = SourceProgress {
            name: self.cfg.name.clone(),
            stream: self.cfg.stream.clone(),
            updated: super::now(),
            ..SourceProgress::default()
        };
        !matches!(
            self.store.add_source_progress(hello, fence).await,
            Err(crate::store::StoreError::Fenced(_))
        )
    }

    fn position(&self) -> Position {
        self.position
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether this rejected frame was recorded lately (by another
    /// connection); notes it otherwise.
    fn seen_reject(&self, reason: &str, raw: &str) -> bool {
        use sha2::Digest as _;
        if raw.is_empty() {
            // Nothing identifies it (a stream error): always recorded.
            return false;
        }
        let d: [u8; 32] = sha2::Sha256::new()
            .chain_update(reason.as_bytes())
            .chain_update([0])
            .chain_update(raw.as_bytes())
            .finalize()
            .into();
        let mut recent = self
            .recent_rejects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.contains(&d) {
            return true;
        }
        if recent.len() >= RECENT_REJECTS {
            recent.pop_front();
        }
        recent.push_back(d);
        false
    }
}

/// One connection's state.
struct Conn {
    sh: Arc<Shared>,
    /// The lease this connection runs under (its writes are fenced by it).
    fence: Option<crate::store::Lease>,
    server_retry: Option<Duration>,
    /// Counts and position not yet written to the store.
    progress: Option<SourceProgress>,
    fenced: bool,
    /// When the first frame of the oldest batch not yet committed (in
    /// flight or being read) arrived (ms): a connection that fails before
    /// it is committed has received nothing safely from that moment on.
    batch_since_ms: Option<i64>,
    /// When the progress was last written (see [`PROGRESS_EVERY`]).
    flushed: tokio::time::Instant,
}

impl Conn {
    fn progress(&mut self) -> &mut SourceProgress {
        let sh = &self.sh;
        self.progress.get_or_insert_with(|| SourceProgress {
            name: sh.cfg.name.clone(),
            stream: sh.cfg.stream.clone(),
            ..SourceProgress::default()
        })
    }

    /// Writes the pending progress, fenced by the lease; a fenced write
    /// means another node took the source over.
    async fn flush(&mut self) {
        let Some(mut p) = self.progress.take() else {
            return;
        };
        self.flushed = tokio::time::Instant::now();
        p.updated = super::now();
        match self
            .sh
            .store
            .add_source_progress(p.clone(), self.fence.as_ref())
            .await
        {
            Ok(()) => {}
            Err(crate::store::StoreError::Fenced(_)) => self.fenced = true,
            Err(e) => {
                tracing::warn!(source = %self.sh.cfg.name, error = %e, "cannot store source state; will retry");
                // Kept for the next write: counts are not lost.
                self.progress = Some(p);
            }
        }
    }

    async fn connect_once(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        received: &mut bool,
    ) -> Result<End, String> {
        let mut url = self.sh.cfg.url.clone();
        if !self.sh.cfg.types.is_empty() {
            url.query_pairs_mut()
                .append_pair(&self.sh.cfg.types_param, &self.sh.cfg.types.join(","));
        }
        let mut req = self
            .sh
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        req = self.sh.cfg.authorize(req, &self.sh.key);
        let resume_from = self.sh.position().last_event_id;
        if let Some(id) = &resume_from {
            req = req.header("last-event-id", id.as_str());
        }
        let policy = self.sh.cfg.policy();
        let resp = tokio::select! {
            r = policy.send(req) => r.map_err(|e| e.to_string())?,
            _ = stop.wait_for(|s| *s) => return Ok(End::Shutdown),
        };
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("upstream answered HTTP {status}"));
        }
        *received = true;
        let number = self
            .sh
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let first = self.sh.coverage.opened(resume_from.is_some()).await;
        // The last moment this connection is known to have been receiving:
        // its last bytes (or its start); a drop loses what came after.
        let last_bytes = Arc::new(std::sync::atomic::AtomicI64::new(super::gaps::now_ms()));
        let res = self
            .read(resp, stop, number, first, resume_from, &last_bytes)
            .await;
        let end_ms = match &res {
            // The upstream closed, or we did: nothing was cut off.
            Ok(_) => super::gaps::now_ms(),
            // Failed: what came after its last bytes, and a batch that was
            // never committed, may be lost.
            Err(_) => last_bytes
                .load(std::sync::atomic::Ordering::Relaxed)
                .min(self.batch_since_ms.unwrap_or(i64::MAX)),
        };
        self.batch_since_ms = None;
        self.sh
            .coverage
            .closed(end_ms, matches!(res, Ok(End::Shutdown)) && !self.fenced)
            .await;
        res
    }

    async fn read(
        &mut self,
        resp: reqwest::Response,
        stop: &mut watch::Receiver<bool>,
        number: u64,
        backfill: bool,
        resume_from: Option<String>,
        last_bytes: &Arc<std::sync::atomic::AtomicI64>,
    ) -> Result<End, String> {
        tracing::info!(source = %self.sh.cfg.name, connection = number, resume_from = ?resume_from, "event source connected");
        if backfill && self.sh.cfg.backfill.is_some() {
            self.backfill().await;
            if self.fenced {
                return Ok(End::Shutdown);
            }
        }
        let seen = last_bytes.clone();
        let body = resp.bytes_stream().inspect(move |_| {
            seen.store(super::gaps::now_ms(), std::sync::atomic::Ordering::Relaxed);
        });
        let mut events = std::pin::pin!(frames(limited(
            body,
            self.sh.cfg.max_line_bytes,
            self.sh.cfg.max_event_bytes,
        )));
        let mut rd = Reading {
            number,
            n: 0,
            last_id: resume_from,
            prev_frame_id: String::new(),
        };
        // Frames read and not yet handed to the appender, when the first
        // of them arrived, and until when to wait for more.
        let mut gathered: Vec<Frame> = Vec::new();
        let mut gather_since: Option<i64> = None;
        let mut linger_until = tokio::time::Instant::now();
        // Batches handed to the appender, oldest first, with when their
        // first frames arrived.
        let mut inflight = futures_util::stream::FuturesOrdered::new();
        let mut inflight_since = std::collections::VecDeque::new();
        let mut reading = true;
        // Set once a batch failed to commit: later batches may be stored
        // (they are counted) but the position stays before the failure.
        let mut failed = false;
        let mut outcome: Option<Result<End, String>> = None;
        loop {
            let ready = !gathered.is_empty()
                && (gathered.len() >= MAX_BATCH
                    || !reading
                    || tokio::time::Instant::now() >= linger_until);
            if ready && inflight.len() < APPENDS_IN_FLIGHT {
                let batch = std::mem::take(&mut gathered);
                inflight_since.push_back(gather_since.take().unwrap_or_else(super::gaps::now_ms));
                match self.submit(batch, &mut rd).await {
                    Ok((pending, stream_failure)) => {
                        inflight.push_back(pending);
                        if let Some(f) = stream_failure {
                            settle(&mut outcome, Err(f));
                        }
                    }
                    Err(e) => {
                        inflight_since.pop_back();
                        settle(&mut outcome, Err(e));
                        reading = false;
                    }
                }
                if !failed {
                    self.batch_since_ms = inflight_since.front().copied().or(gather_since);
                }
                continue;
            }
            if !reading && inflight.is_empty() && (gathered.is_empty() || outcome_failed(&outcome))
            {
                return outcome.unwrap_or(Ok(End::Eof));
            }
            let flush_at = self.flushed + PROGRESS_EVERY;
            tokio::select! {
                biased;
                () = async { drop(stop.wait_for(|s| *s).await) }, if reading => {
                    // What was read is still appended, and what is in
                    // flight lands, before the connection ends.
                    reading = false;
                    settle(&mut outcome, Ok(End::Shutdown));
                }
                Some(landed) = inflight.next(), if !inflight.is_empty() => {
                    inflight_since.pop_front();
                    if let Err(e) = self.land(landed, failed) {
                        failed = true;
                        settle(&mut outcome, Err(e));
                        reading = false;
                        gathered.clear();
                    }
                    if !failed {
                        self.batch_since_ms = inflight_since.front().copied().or(gather_since);
                    }
                }
                () = tokio::time::sleep_until(flush_at), if self.progress.is_some() => {
                    self.flush().await;
                    if self.fenced {
                        settle(&mut outcome, Err("lease lost to another node".into()));
                        reading = false;
                        gathered.clear();
                    }
                }
                item = events.next(), if reading && gathered.len() < MAX_BATCH => match item {
                    None => {
                        reading = false;
                        settle(&mut outcome, Ok(End::Eof));
                    }
                    Some(item) => {
                        if gather_since.is_none() {
                            let now = super::gaps::now_ms();
                            gather_since = Some(now);
                            if !failed && inflight_since.is_empty() {
                                self.batch_since_ms = Some(now);
                            }
                        }
                        // An error ends the stream: nothing is read after it.
                        reading &= item.is_ok();
                        gathered.push(item);
                        linger_until = tokio::time::Instant::now() + LINGER;
                    }
                },
                () = tokio::time::sleep_until(linger_until), if !gathered.is_empty() && inflight.len() < APPENDS_IN_FLIGHT => {}
            }
        }
    }

    /// Maps `batch` (recording rejected frames, counting filtered ones)
    /// and hands its events to the appender. Returns what resolves when
    /// they are committed, and the stream's failure when the batch ends
    /// with one (nothing after it was read).
    async fn submit(
        &mut self,
        batch: Vec<Frame>,
        rd: &mut Reading,
    ) -> Result<(PendingBatch, Option<String>), String> {
        let received = super::now();
        let name = self.sh.cfg.name.clone();
        let mut events = Vec::with_capacity(batch.len());
        let mut failure = None;
        for item in batch {
            let ev = match item {
                Ok(ev) => ev,
                Err(EventStreamError::Transport(BodyError::Transport(ReadError::Http(e)))) => {
                    failure = Some(format!("stream dropped: {}", crate::net::describe(&e)));
                    break;
                }
                Err(EventStreamError::Transport(BodyError::Transport(ReadError::TooLarge(
                    what,
                )))) => {
                    // Rejected like malformed input; the rest of the
                    // event is never read (the connection is dropped).
                    rd.n += 1;
                    self.reject(
                        &received,
                        &position(rd.number, rd.n, rd.last_id.as_deref()),
                        what.clone(),
                        "",
                    )
                    .await?;
                    failure = Some(what);
                    break;
                }
                Err(e) => {
                    // Invalid UTF-8 or unparsable framing: record, then reconnect.
                    let e = match e {
                        EventStreamError::Transport(utf8) => utf8.to_string(),
                        other => other.to_string(),
                    };
                    rd.n += 1;
                    self.reject(
                        &received,
                        &position(rd.number, rd.n, rd.last_id.as_deref()),
                        format!("malformed event stream: {e}"),
                        "",
                    )
                    .await?;
                    failure = Some(format!("malformed event stream: {e}"));
                    break;
                }
            };
            rd.n += 1;
            if let Some(r) = ev.retry {
                self.server_retry = Some(r);
            }
            if !ev.id.is_empty() {
                rd.last_id = Some(ev.id.clone());
            }
            let sh = self.sh.clone();
            match map_frame(
                &ev,
                &mut rd.prev_frame_id,
                &sh.cfg.fields,
                &sh.cfg.name,
                |t| sh.cfg.wants(t),
                &received,
            ) {
                None => continue,
                Some(Mapped::Event(e)) => events.push(e),
                Some(Mapped::Filtered) => {
                    self.progress().filtered += 1;
                    metrics::counter!("trailkeep_source_events_total", "source" => name.clone(), "outcome" => "filtered").increment(1);
                }
                Some(Mapped::Rejected(reason)) => {
                    let pos = position(rd.number, rd.n, rd.last_id.as_deref());
                    self.reject(&received, &pos, reason, &ev.data).await?
                }
            }
        }
        let last_id = rd.last_id.clone();
        let pending: PendingBatch = if events.is_empty() {
            Box::pin(std::future::ready(Landed {
                result: Ok(None),
                last_id,
            }))
        } else {
            let times: Vec<String> = events.iter().map(|e| e.time.clone()).collect();
            let commit = self
                .sh
                .appender
                .submit(self.sh.cfg.stream.clone(), events)
                .map_err(|e| e.to_string())?;
            Box::pin(async move {
                Landed {
                    result: commit
                        .await
                        .map(|r| Some((r, times)))
                        .map_err(|e| e.to_string()),
                    last_id,
                }
            })
        };
        Ok((pending, failure))
    }

    /// Takes a batch's commit, in submission order: counts it and, unless
    /// an earlier batch `failed`, moves the event time and the resume
    /// position to it. Only here, after the commit of this batch and of
    /// every batch before it, does the resume position advance.
    fn land(&mut self, landed: Landed, failed: bool) -> Result<(), String> {
        let name = self.sh.cfg.name.clone();
        if let Some((res, times)) = landed.result? {
            let mut latest = None;
            let p = self.progress();
            for (a, t) in res.accepted.iter().zip(&times) {
                if a.duplicate {
                    p.duplicates += 1;
                } else {
                    p.taken += 1;
                    latest = backfill::later(latest, t);
                }
            }
            let new = res.accepted.iter().filter(|a| !a.duplicate).count() as u64;
            if new > 0 {
                // Crash tests: committed, the position not yet written.
                crate::failpoint::failpoint("source.batch.committed");
            }
            metrics::counter!("trailkeep_source_events_total", "source" => name.clone(), "outcome" => "taken").increment(new);
            if new > 0 {
                last_event_gauge(&name)
                    .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
            }
            if let Some(t) = latest.filter(|_| !failed) {
                p.last_event_time = backfill::later(p.last_event_time.take(), &t);
                let mut pos = self
                    .sh
                    .position
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                pos.last_event_time = backfill::later(pos.last_event_time.take(), &t);
            }
        }
        if !failed && landed.last_id.is_some() {
            self.progress().last_event_id.clone_from(&landed.last_id);
            self.sh
                .position
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .last_event_id
                .clone_from(&landed.last_id);
        }
        Ok(())
    }

    async fn reject(
        &mut self,
        at: &str,
        position: &str,
        reason: String,
        raw: &str,
    ) -> Result<(), String> {
        if self.sh.seen_reject(&reason, raw) {
            // Another connection of this node recorded this very frame.
            return Ok(());
        }
        tracing::warn!(source = %self.sh.cfg.name, %position, %reason, "rejected an upstream event");
        self.progress().rejected += 1;
        metrics::counter!("trailkeep_source_events_total", "source" => self.sh.cfg.name.clone(), "outcome" => "rejected").increment(1);
        let rec = RejectedEvent {
            source: self.sh.cfg.name.clone(),
            at: at.to_owned(),
            position: position.to_owned(),
            reason,
            raw: super::truncate(raw, 64 * 1024),
        };
        self.sh
            .store
            .add_rejected(rec)
            .await
            .map_err(|e| format!("cannot record a rejected event: {e}"))
    }

    async fn backfill(&mut self) {
        let since = backfill::since_with_overlap(
            &self.sh.cfg,
            self.sh.position().last_event_time.as_deref(),
        );
        let res = backfill::run(
            &self.sh.cfg,
            &self.sh.client,
            &self.sh.key,
            &self.sh.appender,
            self.sh.store.as_ref(),
            since.as_deref(),
            &|_| {},
        )
        .await;
        match res {
            Ok(s) => {
                let p = self.progress();
                p.taken += s.taken;
                p.duplicates += s.duplicates;
                p.filtered += s.filtered;
                p.rejected += s.rejected;
                if let Some(t) = &s.last_event_time {
                    p.last_event_time = backfill::later(p.last_event_time.take(), t);
                    let mut pos = self
                        .sh
                        .position
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    pos.last_event_time = backfill::later(pos.last_event_time.take(), t);
                }
                tracing::info!(source = %self.sh.cfg.name, since = ?since, taken = s.taken, duplicates = s.duplicates, pages = s.pages, "backfill done");
            }
            Err(e) => {
                tracing::warn!(source = %self.sh.cfg.name, error = %e, "backfill failed; streaming continues");
                self.progress().last_error = Some((format!("backfill: {e}"), super::now()));
            }
        }
        self.flush().await;
    }
}

/// Capped exponential backoff with full jitter: uniform in
/// `[0, min(max, initial * 2^failures)]`, but never below the server's
/// `retry:` (itself capped by `max`).
fn reconnect_delay(
    initial: Duration,
    max: Duration,
    server_retry: Option<Duration>,
    failures: u32,
) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.min(16)).min(max);
    let d = jitter(exp);
    match server_retry {
        Some(r) => d.max(r.min(max)),
        None => d,
    }
}

/// Why the upstream's bytes stopped being read.
#[derive(Debug)]
enum ReadError {
    /// The transport failed.
    Http(reqwest::Error),
    /// A line or an event outgrew its limit.
    TooLarge(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(e) => f.write_str(&crate::net::describe(e)),
            Self::TooLarge(m) => f.write_str(m),
        }
    }
}

/// Why an SSE body stopped, below the event-stream format.
#[derive(Debug)]
pub(crate) enum BodyError<E> {
    /// The connection failed.
    Transport(E),
    /// A byte at this offset of the body can never be UTF-8.
    Utf8(u64),
}

impl<E: std::fmt::Display> std::fmt::Display for BodyError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transport(e) => e.fmt(f),
            Self::Utf8(at) => write!(f, "not UTF-8 at byte {at} of the body"),
        }
    }
}

/// Counts line and event sizes of an event stream as the bytes arrive.
#[derive(Debug, Default)]
struct Sizes {
    line: usize,
    event: usize,
    after_cr: bool,
}

impl Sizes {
    /// Takes `chunk`; an error when a line or an event outgrows its limit.
    fn take(&mut self, chunk: &[u8], max_line: usize, max_event: usize) -> Result<(), String> {
        for &b in chunk {
            match b {
                b'\n' if self.after_cr => self.after_cr = false, // the LF of a CRLF
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    if self.line == 0 {
                        self.event = 0; // a blank line ends the event
                    }
                    self.line = 0;
                }
                _ => {
                    self.after_cr = false;
                    self.line += 1;
                    self.event += 1;
                    if self.line > max_line {
                        return Err(format!(
                            "a line over max_line_bytes ({max_line} bytes); not read further"
                        ));
                    }
                    if self.event > max_event {
                        return Err(format!(
                            "an event over max_event_bytes ({max_event} bytes); not read further"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The upstream's bytes, cut off with [`ReadError::TooLarge`] as soon as a
/// line or an event (its lines up to the blank line) outgrows its limit:
/// the parser never buffers more than that.
fn limited(
    inner: impl futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>>,
    max_line: usize,
    max_event: usize,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, ReadError>> {
    let mut sizes = Sizes::default();
    let mut over = false;
    inner
        .map(move |chunk| {
            let chunk = chunk.map_err(ReadError::Http)?;
            sizes
                .take(&chunk, max_line, max_event)
                .map_err(ReadError::TooLarge)?;
            Ok(chunk)
        })
        .take_while(move |r| {
            // Nothing after the first refusal.
            let go = !over;
            over |= matches!(r, Err(ReadError::TooLarge(_)));
            std::future::ready(go)
        })
}

/// The frames of an SSE body, as its chunks arrive.
///
/// The body is checked for UTF-8 first: `eventsource-stream` 0.2 keeps
/// everything from a byte that can never be UTF-8 in its buffer until the
/// connection closes, so an open stream would go silent (no events, no
/// error) while the buffer grew (a fuzzing finding, FUZZING.md). The
/// complete part of the chunk before such a byte is still passed on, then
/// the body ends with [`BodyError::Utf8`]. A character cut by a chunk
/// boundary is not an error.
pub(crate) fn frames<S, E>(
    body: S,
) -> impl futures_util::Stream<Item = Result<eventsource_stream::Event, EventStreamError<BodyError<E>>>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>>,
{
    // (bytes of an incomplete character carried from the previous chunk,
    // offset of the chunk in the body, whether the body already failed)
    let state = (Vec::<u8>::new(), 0u64, false);
    body.scan(state, |(carry, offset, failed), item| {
        let out = if *failed {
            None
        } else {
            Some(match item {
                Err(e) => vec![Err(BodyError::Transport(e))],
                Ok(chunk) => {
                    let start = *offset;
                    *offset += chunk.len() as u64;
                    let joined;
                    let (bytes, skip) = if carry.is_empty() {
                        (&chunk[..], 0)
                    } else {
                        joined = [&carry[..], &chunk[..]].concat();
                        (&joined[..], carry.len())
                    };
                    match std::str::from_utf8(bytes) {
                        Ok(_) => {
                            carry.clear();
                            vec![Ok(chunk)]
                        }
                        Err(e) if e.error_len().is_none() => {
                            *carry = bytes[e.valid_up_to()..].to_vec();
                            vec![Ok(chunk)]
                        }
                        Err(e) => {
                            *failed = true;
                            // The carried bytes were passed on with the
                            // previous chunk; `valid_up_to` counts them.
                            let valid = e.valid_up_to().saturating_sub(skip);
                            let at = (start + e.valid_up_to() as u64).saturating_sub(skip as u64);
                            vec![Ok(chunk.slice(..valid)), Err(BodyError::Utf8(at))]
                        }
                    }
                }
            })
        };
        std::future::ready(out)
    })
    .flat_map(futures_util::stream::iter)
    .eventsource()
}

/// What one frame's data becomes: `None` for a frame without data (a
/// keep-alive, or `id:`/`retry:` alone), else the mapped event, or a
/// refusal when the data is not JSON or does not map. `prev_frame_id`
/// carries the previous frame's id: per the SSE spec a frame without `id:`
/// inherits it, and only an id that changed was set by this frame and may
/// name its event.
pub(crate) fn map_frame(
    ev: &eventsource_stream::Event,
    prev_frame_id: &mut String,
    fields: &Fields,
    source: &str,
    wants: impl Fn(&str) -> bool,
    received: &str,
) -> Option<Mapped> {
    if ev.data.is_empty() {
        return None;
    }
    let value: serde_json::Value = match serde_json::from_str(&ev.data) {
        Ok(v) => v,
        Err(e) => return Some(Mapped::Rejected(format!("data is not JSON: {e}"))),
    };
    // The parsed value no longer says how a number was written; its text
    // does (see `jcs::number_change`).
    if let Some(c) = crate::jcs::first_changed_number(ev.data.as_bytes()) {
        return Some(Mapped::Rejected(super::mapping::number_reason(&c)));
    }
    let fresh_id = !ev.id.is_empty() && ev.id != *prev_frame_id;
    prev_frame_id.clone_from(&ev.id);
    let sse_id = fresh_id.then_some(ev.id.as_str());
    Some(map_item(value, fields, source, sse_id, wants, received))
}

fn position(connection: u64, n: u64, last_id: Option<&str>) -> String {
    format!(
        "connection {connection}, event {n}, after id {}",
        last_id.unwrap_or("-")
    )
}

/// `trailkeep_source_last_event_timestamp_seconds` of a source.
fn last_event_gauge(source: &str) -> metrics::Gauge {
    metrics::gauge!("trailkeep_source_last_event_timestamp_seconds", "source" => source.to_owned())
}

/// An RFC 3339 time as Unix seconds.
fn unix_time(t: &str) -> Option<f64> {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp() as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Polls [`frames`] over `chunks` on a connection that stays open,
    /// returning every item until it would wait.
    fn open_connection(chunks: &[&[u8]]) -> Vec<Result<eventsource_stream::Event, String>> {
        use futures_util::Stream as _;
        use std::task::{Context, Poll, Waker};
        let body = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c))),
        )
        .chain(futures_util::stream::pending());
        let mut s = std::pin::pin!(frames(body));
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        while let Poll::Ready(Some(item)) = s.as_mut().poll_next(&mut cx) {
            out.push(item.map_err(|e| e.to_string()));
        }
        out
    }

    /// Fuzzing finding (FUZZING.md, `sse`): `eventsource-stream` 0.2 keeps
    /// everything from a byte that is not UTF-8 in its buffer until the
    /// connection closes, so an open stream went silent (no events, no
    /// error, nothing recorded) and the buffer grew with every chunk.
    #[test]
    fn invalid_utf8_is_reported_while_the_connection_is_open() {
        let items = open_connection(&[
            b"data: {\"type\":\"a\"}\n\ndata: \xff\n\n",
            b"data: {\"type\":\"b\"}\n\n",
        ]);
        assert_eq!(
            items
                .first()
                .and_then(|i| i.as_ref().ok())
                .map(|e| e.data.as_str()),
            Some("{\"type\":\"a\"}"),
            "{items:?}"
        );
        assert!(
            items
                .get(1)
                .is_some_and(|i| i.as_ref().is_err_and(|e| e.contains("UTF-8"))),
            "{items:?}"
        );
        assert_eq!(items.len(), 2, "the stream ends at the error: {items:?}");
        // A character cut by a chunk boundary is not an error.
        let items = open_connection(&[b"data: \"\xc3", b"\xa9\"\n\n"]);
        assert_eq!(
            items
                .iter()
                .map(|i| i.as_ref().map(|e| e.data.as_str()))
                .collect::<Vec<_>>(),
            [Ok("\"\u{e9}\"")]
        );
    }

    #[test]
    fn sizes_count_lines_and_events_across_chunks() {
        let mut s = Sizes::default();
        // Events separated by blank lines (LF, CRLF, CR) never add up.
        for _ in 0..100 {
            s.take(b"data: 0123456789\r\n", 20, 40).unwrap();
            s.take(b"data: x\r", 20, 40).unwrap();
            s.take(b"\n\r\n", 20, 40).unwrap();
            s.take(b"id: 1\n\n", 20, 40).unwrap();
        }
        // One line, split over chunks, over the line limit.
        let mut s = Sizes::default();
        s.take(b"data: 0123456789", 20, 40).unwrap();
        assert!(
            s.take(b"0123456789", 20, 40)
                .unwrap_err()
                .contains("max_line_bytes")
        );
        // Short lines, no blank line: over the event limit.
        let mut s = Sizes::default();
        let e = (0..10)
            .find_map(|_| s.take(b"data: 0123456789\n", 20, 40).err())
            .unwrap();
        assert!(e.contains("max_event_bytes"), "{e}");
    }

    /// Pipelined appends (issue #18): while batch 2's commit is pending,
    /// batch 3 is read and committed; batch 2 is then rolled back. The
    /// resume position must stay before batch 2 even though batch 3 is
    /// stored, so the reconnect replays batch 2 (stored now) and batch 3
    /// (a duplicate): nothing skipped, nothing doubled, counters exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rolled_back_batch_holds_the_resume_position_while_later_ones_commit() {
        use crate::store::{AppendGroup, StoreError};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let frame = |i: usize| {
            format!(
                "id: {i}\ndata: {{\"id\":\"e{i}\",\"type\":\"grant.created\",\"data\":{{}}}}\n\n"
            )
        };
        // Each connection: the frames after Last-Event-ID, in threes with
        // a pause (far longer than LINGER) between, then held open (the
        // resume ids are multiples of three).
        let resumed = Arc::new(std::sync::Mutex::new(Vec::<Option<String>>::new()));
        let app = {
            let resumed = resumed.clone();
            axum::Router::new().route(
                "/stream",
                axum::routing::get(move |h: axum::http::HeaderMap| {
                    let last = h
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    resumed.lock().unwrap().push(last.clone());
                    let from = last.and_then(|l| l.parse::<usize>().ok()).unwrap_or(0);
                    let (tx, rx) =
                        tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(16);
                    tokio::spawn(async move {
                        // Each three as one chunk, so they arrive together
                        // and make one batch however the machine is loaded.
                        let mut first = true;
                        for group in [1..=3, 4..=6, 7..=9] {
                            let chunk: String = group.filter(|i| *i > from).map(frame).collect();
                            if chunk.is_empty() {
                                continue;
                            }
                            if !first {
                                // The upstream's own pace, not a wait.
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            first = false;
                            if tx.send(Ok(chunk)).await.is_err() {
                                return;
                            }
                        }
                        tx.closed().await;
                    });
                    let body = futures_util::stream::unfold(rx, |mut rx| async move {
                        rx.recv().await.map(|x| (x, rx))
                    });
                    async move {
                        axum::response::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(axum::body::Body::from_stream(body))
                            .unwrap()
                    }
                }),
            )
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> = Arc::new(
            crate::store::sqlite::SqliteStore::open(&dir.path().join("trailkeep.db")).unwrap(),
        );
        // Commit 2 waits until commit 3 has arrived (batch 3 was read and
        // submitted while 2 was pending), then is rolled back; the others
        // go to the store.
        let calls = Arc::new(AtomicUsize::new(0));
        let third = Arc::new(tokio::sync::Notify::new());
        let commit: crate::ingest::CommitFn = {
            let (store, calls, third) = (store.clone(), calls.clone(), third.clone());
            Arc::new(move |groups: Vec<AppendGroup>| {
                let (store, third) = (store.clone(), third.clone());
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                Box::pin(async move {
                    if n == 3 {
                        third.notify_one();
                    }
                    if n == 2 {
                        tokio::time::timeout(Duration::from_secs(10), third.notified())
                            .await
                            .expect("batch 3 was submitted while batch 2 was pending");
                        return Err(StoreError::RolledBack("scripted".into()));
                    }
                    store.append(groups).await
                })
            })
        };
        let (appender, _batcher) = crate::ingest::Appender::start_scripted(commit, 3);
        let text = format!(
            "name = \"up\"\ntype = \"sse\"\nurl = \"{base}/stream\"\nstream = \"up\"\nallow_private = true\nreconnect_initial_ms = 20\nreconnect_max_ms = 50\n"
        );
        let cfg = toml::from_str::<crate::sources::RawSource>(&text)
            .unwrap()
            .validate()
            .unwrap();
        let client = cfg.http_client().unwrap();
        let (stop, stop_rx) = watch::channel(false);
        let source = tokio::spawn(run(
            crate::node::NodeId::random(),
            cfg,
            Secret::default(),
            client,
            appender,
            store.clone(),
            stop_rx,
        ));
        let ids = async || -> Vec<String> {
            store
                .read_events("up", 1, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| {
                    serde_json::from_str::<serde_json::Value>(&e.body).unwrap()["id"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ids().await.len() < 9 {
            assert!(
                std::time::Instant::now() < deadline,
                "stored: {:?}",
                ids().await
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The replayed batch 3 comes last, as duplicates.
        let at_end = async || {
            store
                .source_states()
                .await
                .unwrap()
                .first()
                .and_then(|s| s.last_event_id.clone())
                == Some("9".to_owned())
        };
        while !at_end().await {
            assert!(
                std::time::Instant::now() < deadline,
                "the position never reached 9"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(true);
        source.await.unwrap();
        // Batch 3 committed before the replayed batch 2: each once.
        assert_eq!(
            ids().await,
            ["e1", "e2", "e3", "e7", "e8", "e9", "e4", "e5", "e6"]
        );
        assert_eq!(
            resumed.lock().unwrap()[..2],
            [None, Some("3".to_owned())],
            "the reconnect resumed after batch 1, not after the committed batch 3"
        );
        let st = store.source_states().await.unwrap().remove(0);
        assert_eq!(
            (st.taken, st.duplicates, st.last_event_id.as_deref()),
            (9, 3, Some("9"))
        );
    }

    #[test]
    fn backoff_is_capped_jittered_and_honours_retry() {
        for failures in 0..40 {
            let d = reconnect_delay(100 * MS, 5_000 * MS, None, failures);
            assert!(
                d <= (100 * MS)
                    .saturating_mul(1 << failures.min(16))
                    .min(5_000 * MS),
                "{failures}: {d:?}"
            );
        }
        // The server's retry: is a floor, capped by the maximum.
        for failures in 0..10 {
            assert!(reconnect_delay(10 * MS, 5_000 * MS, Some(700 * MS), failures) >= 700 * MS);
            assert!(
                reconnect_delay(10 * MS, 500 * MS, Some(Duration::from_secs(60)), failures)
                    <= 500 * MS
            );
        }
        // Full jitter spreads the draws.
        let draws: std::collections::HashSet<u128> = (0..20)
            .map(|_| reconnect_delay(MS, Duration::from_secs(10), None, 20).as_nanos())
            .collect();
        assert!(draws.len() > 10, "{draws:?}");
    }
}
