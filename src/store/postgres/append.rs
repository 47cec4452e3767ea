//! Appends on PostgreSQL: one round trip per commit (issue #19).
//!
//! Each node keeps, per stream it writes, the head **after every commit it
//! has sent** (the tail) with its partial tiles, chains new events onto it
//! (taking the batcher's seals when they start there), and sends the whole
//! call as one `trailkeep_append` statement in autocommit: it compares
//! every head (seq, hash) and, for streams whose shard this node owns, the
//! lease and the stream's epoch, and only then writes events, tiles and
//! heads. So several calls can be in flight, each chained onto the one
//! before; the compare-and-set keeps them in order. Calls chain onto a
//! stream in the order they began, and a call chained onto calls still in
//! flight is sent after them on their connection (a [`Lane`]), so
//! PostgreSQL runs its statement after theirs: on connections of their
//! own, a later statement could reach the head rows first and be refused.
//! Calls on other streams go on connections of their own, in parallel.
//!
//! When a call is refused (another writer moved a head, an id was already
//! stored, the shard moved to another node) nothing was written: the call
//! forgets the tails it used, waits until every earlier call of this node
//! has finished, reloads the heads it needs from the database and tries
//! again, a bounded number of times. It keeps its place meanwhile: later
//! calls on its streams wait until it has chained again. Which writer
//! wins a race never matters for correctness, only the compare-and-set
//! does.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::{PostgresStore, backend};
use crate::chain::ZERO_HASH_HEX;
use crate::chain::tiles::{TileId, join_strips};
use crate::event::format_received;
use crate::store::append::{Seals, StreamHead};
use crate::store::rows::Columns as _;
use crate::store::{Accepted, AppendGroup, GroupResult, Head, Lease, Result, StoreError};

/// How many times a refused call is tried again before it is refused to
/// its requests (as rolled back: nothing of it is stored).
const MAX_ATTEMPTS: usize = 8;

/// The append function's call, prepared once per connection.
const APPEND_SQL: &str = "SELECT r_kind, r_stream, r_id, r_seq, r_hash FROM trailkeep_append(\
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)";

/// A cached tail and the generation it was loaded in.
struct Tail {
    head: StreamHead,
    generation: u64,
}

/// The node's append state: tails per stream, and the calls in flight in
/// the order they began.
#[derive(Default)]
pub(super) struct Sequencer {
    state: Mutex<State>,
    finished: tokio::sync::Notify,
    /// Calls the database refused (each went again): what
    /// `trailkeep_append_conflicts_total` counts, per store.
    pub(super) refusals: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    tails: HashMap<String, Tail>,
    next_ticket: u64,
    /// The calls in flight, by ticket (the order they began).
    calls: BTreeMap<u64, InFlight>,
    generation: u64,
    /// Calls waiting for earlier calls right now.
    parked: usize,
}

/// A call in flight, as the calls after it see it.
struct InFlight {
    /// The streams it writes.
    streams: Vec<String>,
    /// Whether it may still chain onto its streams' tails, so that later
    /// calls on those streams must wait: from `begin` to its first
    /// prepare, and again from a refusal (its own, or an earlier call's
    /// whose tails it chained onto) to its next prepare.
    unprepared: bool,
    /// The tails (stream, generation) its last prepare chained onto.
    chained: Vec<(String, u64)>,
    /// The connection its statement was sent on, until the answer came.
    lane: Option<Arc<Lane>>,
}

/// A connection that calls chained onto each other share while they are
/// in flight: PostgreSQL runs one connection's statements in the order it
/// received them, so a call's statement never compares the heads before
/// the statement of the call it was chained onto has written them.
pub(super) struct Lane {
    client: deadpool_postgres::Object,
    statement: tokio_postgres::Statement,
}

/// A call's statement, already sent: its rows when answered.
type Sending = Pin<
    Box<
        dyn Future<Output = std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>>
            + Send,
    >,
>;

impl Sequencer {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a call writing `streams`.
    fn begin(&self, mut streams: Vec<String>) -> Ticket<'_> {
        streams.sort_unstable();
        streams.dedup();
        let mut s = self.lock();
        let t = s.next_ticket;
        s.next_ticket += 1;
        s.calls.insert(
            t,
            InFlight {
                streams,
                unprepared: true,
                chained: Vec::new(),
                lane: None,
            },
        );
        Ticket { seq: self, t }
    }

    /// Waits until every call that began before `t` has finished.
    async fn wait_earlier(&self, t: u64) {
        self.wait_until(|s| s.calls.range(..t).next().is_none())
            .await;
    }

    /// Waits until no call that began before `t` may still chain onto the
    /// tails of `t`'s streams ahead of it: calls chain onto a stream in the
    /// order they began, so a commit submitted later never takes seqs
    /// before an earlier one's. An earlier call may still chain while it
    /// loads a head (it would otherwise be overtaken by a later call on a
    /// cached one) and while it goes again after a refusal (the later call
    /// would otherwise take the head it reloads).
    async fn wait_prepared_before(&self, t: u64) {
        self.wait_until(|s| Self::turn(s, t).is_some()).await;
    }

    /// Whether call `t` may chain now, and on which connection: `None`
    /// while an earlier call on its streams may still chain, or while
    /// earlier calls on its streams are in flight on two connections (it
    /// can follow only one of them, so it waits for the others to be
    /// answered); `Some(Some(lane))`: follow the earlier calls in flight
    /// on its streams on their connection; `Some(None)`: none is in flight,
    /// any connection will do.
    fn turn(s: &State, t: u64) -> Option<Option<Arc<Lane>>> {
        let Some(me) = s.calls.get(&t) else {
            return Some(None);
        };
        let mut follow: Option<&Arc<Lane>> = None;
        for (_, c) in s.calls.range(..t) {
            if !c.streams.iter().any(|x| me.streams.contains(x)) {
                continue;
            }
            if c.unprepared {
                return None;
            }
            if let Some(lane) = &c.lane {
                match follow {
                    Some(f) if !Arc::ptr_eq(f, lane) => return None,
                    _ => follow = Some(lane),
                }
            }
        }
        Some(follow.cloned())
    }

    /// Records that `t`'s statement was answered: calls after it no longer
    /// need to follow it on its connection.
    fn landed(&self, t: u64) {
        if let Some(c) = self.lock().calls.get_mut(&t) {
            c.lane = None;
        }
        self.finished.notify_waiters();
    }

    /// Waits until `done` holds (checked whenever a call prepares or ends).
    async fn wait_until(&self, done: impl Fn(&State) -> bool) {
        loop {
            let notified = self.finished.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if done(&s) {
                    return;
                }
                s.parked += 1;
            }
            let _parked = Parked(self);
            notified.await;
        }
    }

    /// How many calls are waiting for earlier calls (tests use it to know
    /// a call is held back).
    #[cfg(test)]
    pub(super) fn parked(&self) -> usize {
        self.lock().parked
    }

    /// Marks `t` as chaining again (a locked attempt reloads and chains
    /// under its row locks): later calls on its streams wait for it.
    fn hold(&self, t: u64) {
        if let Some(c) = self.lock().calls.get_mut(&t) {
            c.unprepared = true;
        }
    }

    /// Records that `t` chained onto the tails `chained`: later calls on
    /// its streams may chain after it. Called under the state's lock, in
    /// the same critical section as the chaining; wake the waiters after.
    fn prepared(s: &mut State, t: u64, chained: Vec<(String, u64)>) {
        if let Some(c) = s.calls.get_mut(&t) {
            c.unprepared = false;
            c.chained = chained;
        }
    }

    /// A refused call `t` that chained onto the tails `used`: forgets
    /// those tails (unless reloaded since) and puts `t` back in line, with
    /// every later call that chained onto the same tails. Those chained
    /// onto `t`'s events, which were not written, so they will be refused
    /// too; marking them now, not when their own refusal arrives, means no
    /// call after them can take the head this refusal leads to reload
    /// while they are still on their way back.
    fn refused(&self, t: u64, used: &[(String, u64)]) {
        let mut s = self.lock();
        for (_, c) in s.calls.range_mut(t..) {
            if c.chained.iter().any(|x| used.contains(x)) {
                c.unprepared = true;
            }
        }
        if let Some(c) = s.calls.get_mut(&t) {
            c.unprepared = true;
        }
        for (name, generation) in used {
            if s.tails
                .get(name)
                .is_some_and(|t| t.generation == *generation)
            {
                s.tails.remove(name);
            }
        }
    }

    /// Caches a tail read from the database; `replace`: over one already
    /// cached (a locked reload), else only where none is.
    fn install(&self, name: String, head: StreamHead, replace: bool) {
        let mut st = self.lock();
        st.generation += 1;
        let tail = Tail {
            head,
            generation: st.generation,
        };
        if replace {
            st.tails.insert(name, tail);
        } else {
            st.tails.entry(name).or_insert(tail);
        }
    }

    /// Forgets everything (a failure whose outcome is unknown).
    pub(super) fn clear(&self) {
        self.lock().tails.clear();
    }
}

/// A call waiting in [`Sequencer`] (counted until it wakes or is dropped).
struct Parked<'a>(&'a Sequencer);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.lock().parked -= 1;
    }
}

/// A call in flight; its end wakes the calls waiting behind it.
struct Ticket<'a> {
    seq: &'a Sequencer,
    t: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.seq.lock().calls.remove(&self.t);
        self.seq.finished.notify_waiters();
    }
}

/// One stream's part of a call, as sent.
struct StreamPart {
    name: String,
    id: i64,
    base: Head,
    generation: u64,
    fence: Option<Lease>,
}

/// The arrays of one `trailkeep_append` call.
#[derive(Default)]
struct Call {
    /// This node when it sends fences, else empty.
    holder: String,
    s_id: Vec<i64>,
    s_seq: Vec<i64>,
    s_hash: Vec<String>,
    s_new_seq: Vec<i64>,
    s_new_hash: Vec<String>,
    s_lease: Vec<Option<String>>,
    s_epoch: Vec<Option<i64>>,
    e_stream: Vec<i64>,
    e_seq: Vec<i64>,
    e_id: Vec<String>,
    e_type: Vec<String>,
    e_time: Vec<String>,
    e_received: Vec<String>,
    e_hash: Vec<String>,
    e_body: Vec<String>,
    t_stream: Vec<i64>,
    t_level: Vec<i32>,
    t_idx: Vec<i64>,
    t_strip: Vec<i64>,
    t_data: Vec<Vec<u8>>,
}

/// One attempt: the answers, or why the database refused it and the
/// stream parts it sent.
type Attempt = std::result::Result<Vec<GroupResult>, (Refusal, Vec<StreamPart>)>;

/// What [`PostgresStore::prepare`] came to.
enum Step {
    /// An earlier call on the same streams is not chained yet, or earlier
    /// calls are in flight on two connections: wait and come back.
    Wait,
    /// Nothing in flight to follow: come back with a connection.
    NeedLane,
    /// A tail the call needs was forgotten since it was loaded.
    Missing,
    /// Chained.
    Ready(Box<Prepared>),
}

/// A call chained onto the tails.
struct Prepared {
    send: ToSend,
    parts: Vec<StreamPart>,
    slots: Vec<Vec<Accepted>>,
    /// Streams it adds nothing to (by id).
    unmoved: Vec<i64>,
}

/// A prepared call's statement.
enum ToSend {
    /// No new event: nothing to send.
    Nothing,
    /// For the caller to send (a locked attempt).
    Call(Box<Call>),
    /// Sent on a lane.
    Sent(Sending),
}

/// Why the database refused a call.
enum Refusal {
    /// A shard lease or a stream's epoch is no longer this node's.
    Fenced(Vec<i64>),
    /// Heads moved (another writer, or an earlier call not yet landed).
    Head,
    /// Ids already stored: stream id, id, seq, hash.
    Duplicates(Vec<(i64, String, u64, String)>),
}

impl PostgresStore {
    /// See the module docs.
    pub(super) async fn append_cas(
        &self,
        mut groups: Vec<AppendGroup>,
    ) -> Result<Vec<GroupResult>> {
        let ticket = self
            .sequencer
            .begin(groups.iter().map(|g| g.stream.clone()).collect());
        // Ids found stored by a refused attempt: (stream, id) -> (seq, hash).
        let mut stored: HashMap<(String, String), (u64, String)> = HashMap::new();
        let mut seals: Vec<Option<crate::store::Sealed>> =
            groups.iter_mut().map(|g| g.sealed.take()).collect();
        // After two refusals for moved heads (another node writing the same
        // streams), lock the head rows first: slower, but it cannot lose again.
        let mut locked = false;
        for attempt in 0..MAX_ATTEMPTS {
            let outcome = if locked {
                self.locked_attempt(&groups, &mut seals, &stored, ticket.t)
                    .await
            } else {
                self.optimistic_attempt(&groups, &mut seals, &stored, ticket.t)
                    .await
            };
            let (refusal, parts) = match outcome {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(refused)) => refused,
                Err(e) => {
                    // Tails may be ahead of the database: all are suspect.
                    self.sequencer.clear();
                    return Err(e);
                }
            };
            let used: Vec<(String, u64)> = parts
                .iter()
                .map(|p| (p.name.clone(), p.generation))
                .collect();
            self.sequencer.refused(ticket.t, &used);
            let reason = match refusal {
                Refusal::Fenced(ids) => {
                    // Only the streams the database named, and only if the
                    // view still holds the epoch that was sent (a renewal
                    // since is not thrown away).
                    let mut names = Vec::new();
                    for p in parts.iter().filter(|p| ids.contains(&p.id)) {
                        if let Some(l) = &p.fence {
                            self.owners.lost_if(self.owners.shard_of(&p.name), l.token);
                        }
                        names.push(p.name.clone());
                    }
                    tracing::info!(streams = ?names, "an append found its shard owned by another node; appending as a non-owner");
                    "fenced"
                }
                Refusal::Head => {
                    locked = attempt >= 1;
                    "head"
                }
                Refusal::Duplicates(rows) => {
                    for (sid, id, seq, hash) in rows {
                        if let Some(p) = parts.iter().find(|p| p.id == sid) {
                            stored.insert((p.name.clone(), id), (seq, hash));
                        }
                    }
                    "duplicate"
                }
            };
            metrics::counter!("trailkeep_append_conflicts_total", "reason" => reason).increment(1);
            self.sequencer
                .refusals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(
                attempt,
                reason,
                "append refused by the compare-and-set; trying again"
            );
            self.sequencer.wait_earlier(ticket.t).await;
        }
        Err(StoreError::RolledBack(format!(
            "postgres: the streams' heads kept moving under this node ({MAX_ATTEMPTS} attempts; another node is writing them): nothing of this call is stored"
        )))
    }

    /// Chains the call onto the cached tails and sends it in autocommit:
    /// one round trip.
    async fn optimistic_attempt(
        &self,
        groups: &[AppendGroup],
        seals: &mut [Option<crate::store::Sealed>],
        stored: &HashMap<(String, String), (u64, String)>,
        ticket: u64,
    ) -> Result<Attempt> {
        self.load_missing(groups, ticket).await?;
        // A connection of its own, opened only when no earlier call on
        // these streams is in flight to follow.
        let mut own = None;
        let prepared = loop {
            self.sequencer.wait_prepared_before(ticket).await;
            match self.prepare(groups, seals, stored, ticket, Some(&mut own))? {
                Step::Wait => {}
                Step::NeedLane => own = Some(self.open_lane().await?),
                Step::Missing => return Ok(Err((Refusal::Head, Vec::new()))),
                Step::Ready(p) => break p,
            }
        };
        drop(own);
        let Prepared {
            send,
            parts,
            slots,
            unmoved,
        } = *prepared;
        let ToSend::Sent(sending) = send else {
            // Nothing new at all: nothing to send, only the heads to read.
            let c = self.client().await.map_err(rolled_back)?;
            let heads = stored_heads(&c, &unmoved).await.map_err(rolled_back)?;
            return Ok(Ok(finish(groups, slots, &parts, &heads)));
        };
        let answer = sending.await;
        self.sequencer.landed(ticket);
        let rows = answer.map_err(statement_error)?;
        Ok(match refusal(&rows) {
            None => {
                // Read after the commit (one more round trip, only for calls
                // with such streams): "the head after the commit". Written
                // is written: a failed read falls back to the head loaded
                // during this call rather than failing a stored call.
                let heads = if unmoved.is_empty() {
                    HashMap::new()
                } else {
                    let read = async {
                        let c = self.client().await?;
                        stored_heads(&c, &unmoved).await
                    };
                    match read.await {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the heads of streams whose events were all duplicates; answering with the heads this node loaded during the call");
                            HashMap::new()
                        }
                    }
                };
                Ok(finish(groups, slots, &parts, &heads))
            }
            Some(r) => Err((r, parts)),
        })
    }

    /// Opens a connection for calls to follow each other on, with the
    /// append statement prepared on it.
    async fn open_lane(&self) -> Result<Arc<Lane>> {
        let client = self.client().await.map_err(rolled_back)?;
        let statement = client
            .prepare_cached(APPEND_SQL)
            .await
            .map_err(backend)
            .map_err(rolled_back)?;
        Ok(Arc::new(Lane { client, statement }))
    }

    /// The same in a transaction that first locks the head rows (in id
    /// order) and reloads the tails that differ: no other writer can move
    /// them before the call, so only a duplicate or a fence refuses it.
    async fn locked_attempt(
        &self,
        groups: &[AppendGroup],
        seals: &mut [Option<crate::store::Sealed>],
        stored: &HashMap<(String, String), (u64, String)>,
        ticket: u64,
    ) -> Result<Attempt> {
        // Later calls chain after this one again: none may move the tails
        // between the reload below and this call's prepare.
        self.sequencer.hold(ticket);
        self.sequencer.wait_earlier(ticket).await;
        let mut c = self.client().await.map_err(rolled_back)?;
        let tx = c
            .transaction()
            .await
            .map_err(backend)
            .map_err(rolled_back)?;
        let written: Result<(bool, Attempt)> = async {
            let mut names: Vec<&str> = groups.iter().map(|g| g.stream.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let now = format_received(time::OffsetDateTime::now_utc());
            tx.execute(
                "INSERT INTO streams (name, head_seq, head_hash, created) \
                 SELECT n, 0, $2, $3 FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING",
                &[&names, &ZERO_HASH_HEX, &now],
            )
            .await
            .map_err(backend)?;
            let rows = tx
                .query(
                    "SELECT id, name, head_seq, head_hash FROM streams WHERE name = ANY($1) \
                     ORDER BY id FOR NO KEY UPDATE",
                    &[&names],
                )
                .await
                .map_err(backend)?;
            // The heads as locked: no writer can move them before this
            // transaction ends, so they are the answer for streams that get
            // nothing new.
            let mut heads = HashMap::new();
            for r in rows {
                let (id, name, seq, hash): (i64, String, i64, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                heads.insert(
                    id,
                    Head {
                        seq: seq as u64,
                        hash: hash.clone(),
                    },
                );
                let fresh = self
                    .sequencer
                    .lock()
                    .tails
                    .get(&name)
                    .is_some_and(|t| t.head.matches(id, seq as u64, &hash));
                if !fresh {
                    let head = load_tail(&tx, &name, id, seq, hash).await?;
                    self.sequencer.install(name, head, true);
                }
            }
            let Step::Ready(prepared) = self.prepare(groups, seals, stored, ticket, None)? else {
                return Ok((false, Err((Refusal::Head, Vec::new()))));
            };
            let Prepared {
                send: to_send,
                parts,
                slots,
                ..
            } = *prepared;
            let ToSend::Call(call) = to_send else {
                return Ok((false, Ok(finish(groups, slots, &parts, &heads))));
            };
            Ok(match send(&tx, &call).await? {
                None => (true, Ok(finish(groups, slots, &parts, &heads))),
                Some(r) => (false, Err((r, parts))),
            })
        }
        .await;
        let (wrote, outcome) = written.map_err(rolled_back)?;
        if !wrote {
            // Refused or nothing sent: nothing to keep, so a failure here
            // is certain too.
            tx.rollback().await.map_err(backend).map_err(rolled_back)?;
            return Ok(outcome);
        }
        // A failed COMMIT is ambiguous: it may or may not have been applied.
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    }

    /// Loads the tails of the call's streams that this node has not cached
    /// (after every earlier call finished, so the stored head is final).
    async fn load_missing(&self, groups: &[AppendGroup], ticket: u64) -> Result<()> {
        let missing = |s: &Sequencer| -> Vec<String> {
            let st = s.lock();
            let mut m: Vec<String> = groups
                .iter()
                .filter(|g| !st.tails.contains_key(&g.stream))
                .map(|g| g.stream.clone())
                .collect();
            m.sort();
            m.dedup();
            m
        };
        if missing(&self.sequencer).is_empty() {
            return Ok(());
        }
        self.sequencer.wait_earlier(ticket).await;
        let names = missing(&self.sequencer);
        let mut c = self.client().await.map_err(rolled_back)?;
        let now = format_received(time::OffsetDateTime::now_utc());
        c.execute(
            "INSERT INTO streams (name, head_seq, head_hash, created) \
             SELECT n, 0, $2, $3 FROM unnest($1::text[]) AS n ORDER BY n ON CONFLICT (name) DO NOTHING",
            &[&names, &ZERO_HASH_HEX, &now],
        )
        .await
        .map_err(backend)
        .map_err(rolled_back)?;
        // Head and tiles from one snapshot: another node may be appending.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)
            .map_err(rolled_back)?;
        let rows = tx
            .query(
                "SELECT id, name, head_seq, head_hash FROM streams WHERE name = ANY($1)",
                &[&names],
            )
            .await
            .map_err(backend)
            .map_err(rolled_back)?;
        for r in rows {
            let (id, name, seq, hash): (i64, String, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            let head = load_tail(&tx, &name, id, seq, hash)
                .await
                .map_err(rolled_back)?;
            self.sequencer.install(name, head, false);
        }
        // Read only: nothing to commit but the snapshot's end.
        tx.commit().await.map_err(backend).map_err(rolled_back)?;
        Ok(())
    }

    /// Chains call `ticket` onto the cached tails (moving them), and builds
    /// the statement's arrays and each event's answer.
    ///
    /// `lane`: `None` for a locked attempt, which sends the statement in
    /// its own transaction (it waited for every earlier call and holds the
    /// head rows). Otherwise the statement is sent here, under the
    /// sequencer's lock, so calls are sent in the order they chain: on the
    /// connection of the earlier calls in flight on the same streams, or
    /// on the call's own (`Step::NeedLane` until it has one).
    fn prepare(
        &self,
        groups: &[AppendGroup],
        seals: &mut [Option<crate::store::Sealed>],
        stored: &HashMap<(String, String), (u64, String)>,
        ticket: u64,
        lane: Option<&mut Option<Arc<Lane>>>,
    ) -> Result<Step> {
        let mut st = self.sequencer.lock();
        let lane = match lane {
            None => None,
            Some(own) => match Sequencer::turn(&st, ticket) {
                None => return Ok(Step::Wait),
                Some(Some(follow)) => Some(follow),
                Some(None) => match own.take() {
                    Some(own) => Some(own),
                    None => return Ok(Step::NeedLane),
                },
            },
        };
        let Some((call, parts, slots)) = self.chain(&mut st, groups, seals, stored)? else {
            // Forgotten by a refused call since it was loaded: load again.
            return Ok(Step::Missing);
        };
        // Streams this call adds nothing to (every event of theirs already
        // stored): the statement neither compares nor moves their heads, so
        // the cached tail is no answer for them (another node may have
        // written since it was loaded, or it may be another call's head
        // not yet committed). Their heads are read from the database.
        let unmoved: Vec<i64> = parts
            .iter()
            .map(|p| p.id)
            .filter(|id| !call.s_id.contains(id))
            .collect();
        let chained = parts
            .iter()
            .map(|p| (p.name.clone(), p.generation))
            .collect();
        Sequencer::prepared(&mut st, ticket, chained);
        let send = match lane {
            _ if call.e_id.is_empty() => ToSend::Nothing,
            None => ToSend::Call(Box::new(call)),
            Some(lane) => {
                let sending = start(lane.clone(), call);
                if let Some(c) = st.calls.get_mut(&ticket) {
                    c.lane = Some(lane);
                }
                ToSend::Sent(sending)
            }
        };
        drop(st);
        // Wake the later calls waiting for this one.
        self.sequencer.finished.notify_waiters();
        Ok(Step::Ready(Box::new(Prepared {
            send,
            parts,
            slots,
            unmoved,
        })))
    }

    /// [`Self::prepare`] under the sequencer's lock.
    #[allow(clippy::type_complexity)]
    fn chain(
        &self,
        st: &mut State,
        groups: &[AppendGroup],
        seals: &mut [Option<crate::store::Sealed>],
        stored: &HashMap<(String, String), (u64, String)>,
    ) -> Result<Option<(Call, Vec<StreamPart>, Vec<Vec<Accepted>>)>> {
        if groups.iter().any(|g| !st.tails.contains_key(&g.stream)) {
            // Forgotten by a refused call since it was loaded: load again.
            return Ok(None);
        }
        let mut call = Call::default();
        let mut parts: Vec<StreamPart> = Vec::new();
        let mut slots = Vec::with_capacity(groups.len());
        // Ids of this call per stream: a repeat within the call is a duplicate.
        let mut known: HashMap<(&str, &str), (u64, String)> = HashMap::new();
        for (gi, g) in groups.iter().enumerate() {
            let Some(tail) = st.tails.get_mut(&g.stream) else {
                return Err(StoreError::Corrupt(format!(
                    "stream {}: no cached head while preparing its append",
                    g.stream
                )));
            };
            if !parts.iter().any(|p| p.name == g.stream) {
                let fence = self.owners.fence(&g.stream);
                parts.push(StreamPart {
                    name: g.stream.clone(),
                    id: tail.head.id,
                    base: tail.head.head(),
                    generation: tail.generation,
                    fence,
                });
            }
            let head = &mut tail.head;
            let mut seal = Seals::new(seals.get_mut(gi).and_then(Option::take), head);
            let mut accepted = Vec::with_capacity(g.events.len());
            for ev in &g.events {
                let prior = known
                    .get(&(g.stream.as_str(), ev.id.as_str()))
                    .cloned()
                    .or_else(|| stored.get(&(g.stream.clone(), ev.id.clone())).cloned());
                if let Some((seq, hash)) = prior {
                    seal.broken();
                    accepted.push(Accepted {
                        id: ev.id.clone(),
                        seq,
                        hash,
                        duplicate: true,
                    });
                    continue;
                }
                let (seq, sealed) = head.chain(ev, &g.stream, seal.next());
                head.advance(seq, &sealed.hash, sealed.leaf);
                known.insert(
                    (g.stream.as_str(), ev.id.as_str()),
                    (seq, sealed.hash.clone()),
                );
                accepted.push(Accepted {
                    id: ev.id.clone(),
                    seq,
                    hash: sealed.hash.clone(),
                    duplicate: false,
                });
                call.e_stream.push(head.id);
                call.e_seq.push(seq as i64);
                call.e_id.push(ev.id.clone());
                call.e_type.push(ev.event_type.clone());
                call.e_time.push(ev.time.clone());
                call.e_received.push(ev.received.clone());
                call.e_hash.push(sealed.hash);
                call.e_body.push(sealed.body);
            }
            slots.push(accepted);
        }
        for p in &parts {
            let Some(tail) = st.tails.get_mut(&p.name) else {
                continue;
            };
            let head = &mut tail.head;
            if head.seq == p.base.seq {
                // Only duplicates: nothing to compare or write for it.
                continue;
            }
            for (level, index, strip, bytes) in head.tile_rows() {
                call.t_stream.push(p.id);
                call.t_level.push(level as i32);
                call.t_idx.push(index as i64);
                call.t_strip.push(strip);
                call.t_data.push(bytes);
            }
            call.s_id.push(p.id);
            call.s_seq.push(p.base.seq as i64);
            call.s_hash.push(p.base.hash.clone());
            call.s_new_seq.push(head.seq as i64);
            call.s_new_hash.push(head.hash.clone());
            if let Some(l) = &p.fence
                && call.holder.is_empty()
            {
                call.holder.clone_from(&l.holder);
            }
            call.s_lease.push(p.fence.as_ref().map(|l| l.name.clone()));
            call.s_epoch.push(p.fence.as_ref().map(|l| l.token));
        }
        Ok(Some((call, parts, slots)))
    }
}

/// Sends one call; `Some` when the database refused it (nothing written).
async fn send(c: &impl deadpool_postgres::GenericClient, call: &Call) -> Result<Option<Refusal>> {
    let stmt = c
        .prepare_cached(APPEND_SQL)
        .await
        .map_err(backend)
        .map_err(rolled_back)?;
    let rows = c
        .query(&stmt, &call.params())
        .await
        .map_err(statement_error)?;
    Ok(refusal(&rows))
}

/// Sends `call` on `lane` now: the request is queued on the connection
/// before this returns (the query's first poll queues it; nothing after
/// that is needed to send), so calls are sent in the order this is called.
fn start(lane: Arc<Lane>, call: Call) -> Sending {
    let mut sending: Sending =
        Box::pin(async move { lane.client.query(&lane.statement, &call.params()).await });
    match sending
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        // Queued; polled again (with the caller's waker) for the answer.
        Poll::Pending => sending,
        Poll::Ready(answer) => Box::pin(std::future::ready(answer)),
    }
}

impl Call {
    /// The statement's parameters, in `APPEND_SQL`'s order.
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 21] {
        [
            &self.holder,
            &self.s_id,
            &self.s_seq,
            &self.s_hash,
            &self.s_new_seq,
            &self.s_new_hash,
            &self.s_lease,
            &self.s_epoch,
            &self.e_stream,
            &self.e_seq,
            &self.e_id,
            &self.e_type,
            &self.e_time,
            &self.e_received,
            &self.e_hash,
            &self.e_body,
            &self.t_stream,
            &self.t_level,
            &self.t_idx,
            &self.t_strip,
            &self.t_data,
        ]
    }
}

/// The refusal in a call's answer: `None` when everything was written.
fn refusal(rows: &[tokio_postgres::Row]) -> Option<Refusal> {
    let first = rows.first()?;
    let kind: String = first.get(0);
    Some(match kind.as_str() {
        "fenced" => Refusal::Fenced(rows.iter().map(|r| r.get::<_, i64>(1)).collect()),
        "dup" => Refusal::Duplicates(
            rows.iter()
                .map(|r| {
                    (
                        r.get::<_, i64>(1),
                        r.get::<_, String>(2),
                        r.get::<_, i64>(3) as u64,
                        r.get::<_, String>(4),
                    )
                })
                .collect(),
        ),
        _ => Refusal::Head,
    })
}

/// The answers of a call that was written (or had nothing to write); the
/// tails it moved stay cached as the committed heads. `stored`: the heads
/// read from the database (by stream id) of the streams it added nothing
/// to.
fn finish(
    groups: &[AppendGroup],
    slots: Vec<Vec<Accepted>>,
    parts: &[StreamPart],
    stored: &HashMap<i64, Head>,
) -> Vec<GroupResult> {
    // The head each stream reached in this call: its last event here, or
    // (nothing new) its head as stored, else the head it was chained onto.
    let mut heads: HashMap<&str, Head> = parts
        .iter()
        .map(|p| {
            let head = stored.get(&p.id).unwrap_or(&p.base);
            (p.name.as_str(), head.clone())
        })
        .collect();
    for (g, accepted) in groups.iter().zip(&slots) {
        if let Some(a) = accepted.iter().rev().find(|a| !a.duplicate) {
            let h = heads.entry(g.stream.as_str()).or_insert_with(|| Head {
                seq: 0,
                hash: ZERO_HASH_HEX.into(),
            });
            if a.seq > h.seq {
                *h = Head {
                    seq: a.seq,
                    hash: a.hash.clone(),
                };
            }
        }
    }
    groups
        .iter()
        .zip(slots)
        .map(|(g, accepted)| GroupResult {
            accepted,
            head: heads.get(g.stream.as_str()).cloned().unwrap_or(Head {
                seq: 0,
                hash: ZERO_HASH_HEX.into(),
            }),
        })
        .collect()
}

/// The stored heads of the streams `ids` (none: no round trip).
async fn stored_heads(
    c: &impl deadpool_postgres::GenericClient,
    ids: &[i64],
) -> Result<HashMap<i64, Head>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = c
        .query(
            "SELECT id, head_seq, head_hash FROM streams WHERE id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(backend)?;
    rows.iter()
        .map(|r| {
            Ok((
                r.int(0)?,
                Head {
                    seq: r.count(1)?,
                    hash: r.text(2)?,
                },
            ))
        })
        .collect()
}

/// Nothing was sent: the call is certainly not stored.
fn rolled_back(e: StoreError) -> StoreError {
    match e {
        StoreError::Backend { message, .. } => {
            StoreError::RolledBack(format!("postgres: {message}"))
        }
        other => other,
    }
}

/// An error of the append statement. PostgreSQL answering with an error
/// means the autocommit statement was rolled back (nothing stored), except
/// for the codes that end the session (a shutdown, a crash: the commit may
/// have happened); a connection lost without an answer is ambiguous.
fn statement_error(e: tokio_postgres::Error) -> StoreError {
    let answered = e.as_db_error().is_some() && !e.code().is_some_and(|c| ends_session(c.code()));
    let err = backend(e);
    if answered { rolled_back(err) } else { err }
}

/// Whether an error code PostgreSQL answered with means the session ended
/// (operator intervention 57P, connection exception 08, internal error XX):
/// the statement's commit may then have happened.
fn ends_session(code: &str) -> bool {
    code.starts_with("57P") || code.starts_with("08") || code.starts_with("XX")
}

/// A stream's tail as stored at (`seq`, `hash`): its partial tiles read.
async fn load_tail(
    c: &impl deadpool_postgres::GenericClient,
    name: &str,
    id: i64,
    seq: i64,
    hash: String,
) -> Result<StreamHead> {
    let mut fetched = HashMap::new();
    for tid in StreamHead::tiles_to_read(seq as u64) {
        if let Some(d) = read_tile(c, id, tid).await? {
            fetched.insert(tid, d);
        }
    }
    StreamHead::resume(name, id, seq as u64, hash, |t| fetched.remove(&t))
}

pub(super) async fn read_tile(
    c: &impl deadpool_postgres::GenericClient,
    stream_id: i64,
    t: TileId,
) -> Result<Option<Vec<u8>>> {
    let rows = c
        .query(
            "SELECT strip, data FROM tiles WHERE stream_id = $1 AND level = $2 AND idx = $3 ORDER BY strip",
            &[&stream_id, &(t.level as i32), &(t.index as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(join_strips(
        rows.into_iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, Vec<u8>>(1))),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An empty stream's tail, told apart by its row id.
    fn head(id: i64) -> StreamHead {
        StreamHead::resume("s", id, 0, ZERO_HASH_HEX.into(), |_| None).unwrap()
    }

    #[tokio::test]
    async fn calls_wait_only_for_calls_that_began_before_them() {
        let s = Sequencer::default();
        let first = s.begin(vec!["a".into()]);
        let second = s.begin(vec!["b".into()]);
        let third = s.begin(vec!["c".into()]);
        assert!(first.t < second.t && second.t < third.t, "tickets grow");
        // The first waits for nobody.
        tokio::time::timeout(std::time::Duration::from_secs(1), s.wait_earlier(first.t))
            .await
            .expect("nothing began before the first");
        // The third waits while the second is in flight, even once the
        // first has finished.
        drop(first);
        let waiting = s.wait_earlier(third.t);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "an earlier call is still in flight"
        );
        drop(second);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("woken when the last earlier call ends");
    }

    /// Whether `wait` is still waiting after the other calls have run.
    async fn waits(wait: impl std::future::Future<Output = ()>) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), wait)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_refused_call_holds_back_later_calls_on_its_streams_until_it_prepares_again() {
        let s = Sequencer::default();
        s.install("a".into(), head(1), false);
        s.install("b".into(), head(2), false);
        let gen_of = |name: &str| s.lock().tails[name].generation;
        let chained = |t: u64, names: &[&str]| {
            let used: Vec<(String, u64)> = names.iter().map(|n| ((*n).into(), gen_of(n))).collect();
            Sequencer::prepared(&mut s.lock(), t, used.clone());
            s.finished.notify_waiters();
            used
        };
        let first = s.begin(vec!["a".into(), "b".into()]);
        let second = s.begin(vec!["a".into()]);
        assert!(waits(s.wait_prepared_before(second.t)).await, "first loads");
        let used = chained(first.t, &["a", "b"]);
        chained(second.t, &["a"]);
        // The first is refused: it and the second (chained onto its
        // events) are back in line, and the tails they used are gone.
        s.refused(first.t, &used);
        assert!(s.lock().tails.is_empty(), "the tails used are forgotten");
        let third = s.begin(vec!["a".into()]);
        let other = s.begin(vec!["z".into()]);
        assert!(
            !waits(s.wait_prepared_before(other.t)).await,
            "another stream does not wait"
        );
        assert!(
            waits(s.wait_prepared_before(third.t)).await,
            "the first goes again"
        );
        s.install("a".into(), head(1), false);
        s.install("b".into(), head(2), false);
        chained(first.t, &["a", "b"]);
        assert!(
            waits(s.wait_prepared_before(third.t)).await,
            "the second was chained onto the refused call: it goes again too"
        );
        drop(second);
        assert!(!waits(s.wait_prepared_before(third.t)).await, "now in turn");
    }

    #[test]
    fn only_errors_that_end_the_session_leave_an_append_ambiguous() {
        for code in ["57P01", "57P02", "08006", "08003", "XX000"] {
            assert!(ends_session(code), "{code}");
        }
        // Raised, constraint, serialization, lock timeout: rolled back.
        for code in ["P0001", "23505", "40001", "55P03", "57014", "22P02"] {
            assert!(!ends_session(code), "{code}");
        }
    }

    #[test]
    fn tails_are_forgotten_only_in_the_generation_a_call_used() {
        let s = Sequencer::default();
        s.install("a".into(), head(3), false);
        let g1 = s.lock().tails["a"].generation;
        s.install("a".into(), head(9), false);
        assert_eq!(s.lock().tails["a"].head.id, 3, "kept: it was cached");
        s.install("a".into(), head(5), true);
        let g2 = s.lock().tails["a"].generation;
        assert!(g2 > g1, "a reload is a new generation");
        assert_eq!(s.lock().tails["a"].head.id, 5, "a locked reload replaces");
        let call = s.begin(vec!["a".into()]);
        s.refused(call.t, &[("a".into(), g1)]);
        assert!(s.lock().tails.contains_key("a"), "a later reload is kept");
        s.refused(call.t, &[("a".into(), g2)]);
        assert!(
            !s.lock().tails.contains_key("a"),
            "the tail used is dropped"
        );
        s.install("a".into(), head(1), false);
        s.install("b".into(), head(1), false);
        s.clear();
        assert!(s.lock().tails.is_empty(), "an unknown outcome forgets all");
    }
}
