//! The hot store: durable events, stream heads, Merkle tiles, checkpoints
//! and API keys.
//!
//! [`Store`] is the one extension point; `conformance` holds the suite every
//! backend runs. The SQLite backend ([`sqlite::SqliteStore`]) is the embedded
//! default; [`postgres::PostgresStore`] serves several nodes behind the same
//! trait.
//!
//! # Contract
//! - [`EventStore::append`] commits all groups in **one** durable transaction (one
//!   fsync) or none of them. It assigns each new event the next seq of its
//!   stream, `prev` = the previous event's hash, and the hash of its
//!   canonical bytes ([`crate::event::canonical_bytes`]). An event whose `id`
//!   already exists in its stream (in the store or earlier in the same call)
//!   is not stored again; its original seq and hash come back with
//!   `duplicate = true`.
//! - Tiles are written in the same transaction as the events they cover, so
//!   a tree of `head_seq` leaves can always be read back.
//! - An `Err` from `append` may be ambiguous (the commit may or may not have
//!   reached disk); callers must not retry it and acknowledge. The ingest
//!   path poisons itself instead (see `ingest`). The one unambiguous case is
//!   [`StoreError::RolledBack`]: a statement failed before COMMIT and the
//!   rollback was confirmed, so nothing of the call is stored.
//!
//! Not here: validation (`event`), batching (`ingest`), signing (`chain`).

pub(crate) mod append;
pub mod cluster;
#[cfg(test)]
pub mod conformance;
mod page;
pub mod pg_tls;
pub mod postgres;
pub(crate) mod rows;
pub mod sqlite;

pub use page::{ArchivedObject, ArchivedRange, EventPage};

use async_trait::async_trait;

use crate::chain::tiles::TileId;
use crate::event::NewEvent;

/// Errors of the hot store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed; the message names the backend.
    #[error("{backend}: {message}")]
    Backend {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What happened (the cause's text, with its own causes).
        message: String,
        /// Whether the same call may succeed later (a busy database, a
        /// dropped connection, a serialization failure), as the backend
        /// classified its error; refused credentials, a missing table or a
        /// read-only file are not.
        retryable: bool,
        /// The backend's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Stored data contradicts itself (for example a tile of the wrong width).
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// A named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A write under a lease found the lease held by another node (or
    /// expired): nothing was written.
    #[error("lease {0} is no longer held by this node")]
    Fenced(String),
    /// The transaction was rolled back before COMMIT: nothing of the call
    /// is stored, unambiguously. The caller may refuse the call and go on.
    #[error("not stored (rolled back): {0}")]
    RolledBack(String),
    /// The store's schema is newer than this binary understands.
    #[error("store schema version {found} is newer than supported version {supported}")]
    SchemaTooNew {
        /// Version found on disk.
        found: i64,
        /// Newest version this binary knows.
        supported: i64,
    },
}

impl StoreError {
    /// A backend failure with no error value behind it (a thread that
    /// stopped, say); not retryable.
    pub fn backend_message(backend: &'static str, message: impl Into<String>) -> Self {
        Self::Backend {
            backend,
            message: message.into(),
            retryable: false,
            source: None,
        }
    }

    /// Whether the same call may succeed later without anyone changing
    /// anything: a rolled-back commit and the backend errors it classifies
    /// as transient. Corruption, a missing thing, a lost lease and a newer
    /// schema are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Backend { retryable, .. } => *retryable,
            Self::RolledBack(_) => true,
            Self::Corrupt(_) | Self::NotFound(_) | Self::Fenced(_) | Self::SchemaTooNew { .. } => {
                false
            }
        }
    }
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Events for one stream, appended in order.
#[derive(Debug, Clone)]
pub struct AppendGroup {
    /// Stream name (validated).
    pub stream: String,
    /// Validated events.
    pub events: Vec<NewEvent>,
    /// The events' canonical bytes and hashes computed ahead of the commit
    /// (see [`Sealed`]); `None` leaves all of it to the store.
    pub sealed: Option<Sealed>,
}

/// A group's chain computed ahead of its commit, off the store's writer.
///
/// The batcher predicts each stream's head and computes every event's
/// canonical body, hash and Merkle leaf from it while the previous commit
/// is still running. A store that supports it ([`EventStore::uses_seals`]) takes
/// them only when `after` is exactly the head it finds, and only up to the
/// first duplicate id (which stores nothing, so the later events' `prev`
/// would be wrong); anything else it computes itself. A wrong prediction
/// therefore costs time, never correctness.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// The head the first event was chained to.
    pub after: Head,
    /// One per event, in order.
    pub events: Vec<SealedEvent>,
}

/// One event's precomputed chain data.
#[derive(Debug, Clone)]
pub struct SealedEvent {
    /// Canonical (RFC 8785) body without `hash`.
    pub body: String,
    /// Lowercase hex SHA-256 of `body`.
    pub hash: String,
    /// RFC 9162 leaf hash of the event hash.
    pub leaf: crate::chain::Hash,
}

impl SealedEvent {
    /// Computes `ev`'s chain data as event `seq` of `stream`, after `prev_hex`.
    /// Stores call this too when they compute a chain themselves, so both
    /// paths produce the same bytes by construction.
    pub fn compute(ev: &NewEvent, stream: &str, seq: u64, prev_hex: &str) -> Self {
        let body = crate::event::canonical_string(ev, stream, seq, prev_hex);
        let h = crate::chain::event_hash(body.as_bytes());
        Self {
            body,
            hash: hex::encode(h),
            leaf: crate::chain::leaf_hash(&h),
        }
    }
}

impl Sealed {
    /// Seals `events` as the next events of `stream` after `after`, assuming
    /// none is a duplicate; returns the seal and the head it predicts.
    pub fn compute(stream: &str, events: &[NewEvent], after: Head) -> (Self, Head) {
        let mut head = after.clone();
        let sealed = events
            .iter()
            .map(|ev| {
                head.seq += 1;
                let s = SealedEvent::compute(ev, stream, head.seq, &head.hash);
                head.hash.clone_from(&s.hash);
                s
            })
            .collect();
        (
            Self {
                after,
                events: sealed,
            },
            head,
        )
    }
}

/// What the log made of one event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Event id.
    pub id: String,
    /// Assigned (or, for a duplicate, original) seq.
    pub seq: u64,
    /// Lowercase hex hash.
    pub hash: String,
    /// Whether the id was already stored.
    pub duplicate: bool,
}

/// A stream's head: its last seq and hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Head {
    /// Last seq (0 for an empty stream).
    pub seq: u64,
    /// Hash of the last event (64 zeros for an empty stream).
    pub hash: String,
}

/// The outcome of one [`AppendGroup`].
#[derive(Debug, Clone)]
pub struct GroupResult {
    /// One entry per event, in request order.
    pub accepted: Vec<Accepted>,
    /// The stream's head after the commit.
    pub head: Head,
}

/// A stream as listed by `GET /v1/streams`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct StreamInfo {
    /// Stream name.
    pub name: String,
    /// Head seq.
    pub head_seq: u64,
    /// Head hash.
    pub head_hash: String,
    /// Oldest seq still in the hot store (None when it holds none).
    pub oldest_hot_seq: Option<u64>,
    /// Highest seq recorded as archived (None before the first batch).
    pub archived_seq: Option<u64>,
    /// When the head event was received (RFC 3339), while it is in the hot
    /// store (None for an empty stream or an archived head).
    pub head_received: Option<String>,
}

/// One stored event row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Seq column.
    pub seq: u64,
    /// Hash column (lowercase hex).
    pub hash: String,
    /// Canonical body without `hash`.
    pub body: String,
    /// Whether the row was brought back from the archive (`restore`).
    pub restored: bool,
}

/// An archived batch, recorded in the hot store only after its object and
/// manifest were written create-only and read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ArchiveBatch {
    /// Stream name.
    pub stream: String,
    /// First seq in the object.
    pub start_seq: u64,
    /// Last seq in the object.
    pub end_seq: u64,
    /// Events in the object (`end_seq - start_seq + 1`).
    pub count: u64,
    /// `time` of the first event.
    pub first_time: String,
    /// `time` of the last event.
    pub last_time: String,
    /// Hash of the last event.
    pub last_hash: String,
    /// Object key, relative to the archive's prefix.
    pub object_key: String,
    /// SHA-256 of the object as stored (compressed), hex.
    pub object_sha256: String,
    /// Size of the object as stored, bytes.
    pub object_size: u64,
    /// Size of the NDJSON before compression, bytes.
    pub raw_size: u64,
    /// Manifest key, relative to the archive's prefix.
    pub manifest_key: String,
    /// SHA-256 of the manifest file, hex.
    pub manifest_sha256: String,
    /// When the batch was recorded (RFC 3339).
    pub created: String,
}

/// Where a page of [`ArchiveLedger::archive_batches_newest`] ends: the
/// last batch shown, by the order of that listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchCursor {
    /// Its `created`.
    pub created: String,
    /// Its stream.
    pub stream: String,
    /// Its first seq.
    pub start_seq: u64,
}

impl From<&ArchiveBatch> for BatchCursor {
    fn from(b: &ArchiveBatch) -> Self {
        Self {
            created: b.created.clone(),
            stream: b.stream.clone(),
            start_seq: b.start_seq,
        }
    }
}

/// How far one destination has delivered one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryCursor {
    /// Destination name.
    pub destination: String,
    /// Stream name.
    pub stream: String,
    /// Highest seq delivered (0: none yet).
    pub seq: u64,
    /// Whether the operator lets hot deletion pass this cursor (the
    /// destination is then fed from the archive).
    pub archive_past: bool,
    /// Events delivered. Read: the total for this destination and stream
    /// (kept across restarts, operators' dead-letter retries included).
    /// Given to [`DeliveryLedger::put_delivery_cursor`]: the events this
    /// move delivered, added to the total (0 for a move that delivered
    /// nothing, such as a skip past archived events).
    pub delivered: u64,
}

/// A batch a destination refused permanently.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// Id (assigned by the store; 0 when adding).
    pub id: i64,
    /// Destination name.
    pub destination: String,
    /// Stream.
    pub stream: String,
    /// First seq of the batch.
    pub start_seq: u64,
    /// Last seq of the batch.
    pub end_seq: u64,
    /// Response status, when there was a response.
    pub status: Option<u16>,
    /// What the destination said (an excerpt; never credentials).
    pub error: String,
    /// When it was refused.
    pub at: String,
    /// When an operator's retry delivered it.
    pub resolved: Option<String>,
}

/// An archived event brought back into the hot store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredEvent {
    /// Seq (unchanged).
    pub seq: u64,
    /// Event id.
    pub id: String,
    /// Event type.
    pub event_type: String,
    /// Event time.
    pub time: String,
    /// Receipt time.
    pub received: String,
    /// Hash (unchanged, checked by the caller).
    pub hash: String,
    /// Canonical body without `hash`.
    pub body: String,
}

impl From<RestoredEvent> for StoredEvent {
    /// The event as the hot store returns it (not yet marked restored:
    /// that happens when it is written back).
    fn from(e: RestoredEvent) -> Self {
        Self {
            seq: e.seq,
            hash: e.hash,
            body: e.body,
            restored: false,
        }
    }
}

/// A filtered read of one stream's hot events, for queries
/// ([`EventStore::scan_events`]). Every bound narrows; the store may return
/// more than matches the time bounds (the caller filters again) but never
/// less.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventScan {
    /// The stream.
    pub stream: String,
    /// Lowest seq (inclusive).
    pub from_seq: u64,
    /// Highest seq (inclusive).
    pub to_seq: u64,
    /// Stored `time` text ≥ this (a `YYYY-MM-DDTHH:MM:SS` prefix).
    pub time_from: Option<String>,
    /// Stored `time` text < this.
    pub time_before: Option<String>,
    /// Stored `received` text ≥ this.
    pub received_from: Option<String>,
    /// Stored `received` text < this.
    pub received_before: Option<String>,
    /// Only these types (None: any).
    pub types: Option<Vec<String>>,
    /// At most this many rows, lowest seq first.
    pub limit: usize,
}

/// A signed checkpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root, lowercase hex.
    pub root: String,
    /// The whole signed note.
    pub note: String,
    /// When it was made (RFC 3339).
    pub created: String,
}

/// An API key's record; the secret itself is never stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// Public key id (part of the token).
    pub id: String,
    /// `ingest`, `read` or `admin`.
    pub scope: String,
    /// A stream name or `*`.
    pub stream: String,
    /// SHA-256 of the token's secret part.
    #[serde(skip)]
    pub secret_hash: [u8; 32],
    /// Creation time.
    pub created: String,
    /// Revocation time, if revoked.
    pub revoked: Option<String>,
}

/// A source's persisted state: resume position and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SourceState {
    /// Source name (from the config).
    pub name: String,
    /// Target stream.
    pub stream: String,
    /// Whether the source is connected upstream: some node's receiving
    /// record is live (see [`receiver_live`]).
    pub connected: bool,
    /// The SSE `id` of the last committed event (sent as `Last-Event-ID`).
    pub last_event_id: Option<String>,
    /// The latest event time committed (backfill resumes from here).
    pub last_event_time: Option<String>,
    /// Events stored.
    pub taken: u64,
    /// Events answered as duplicates (already stored).
    pub duplicates: u64,
    /// Events refused and kept in the rejected record.
    pub rejected: u64,
    /// Events skipped by the type filter.
    pub filtered: u64,
    /// Reconnections after a drop or error.
    pub reconnects: u64,
    /// Last error, if any (never contains secrets).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<String>,
    /// When this state was written.
    pub updated: String,
    /// Windows recorded as possible upstream gaps, all time.
    pub gaps_total: u64,
    /// The latest gap records, newest first (at most [`RECENT_GAPS`]).
    pub gaps: Vec<SourceGap>,
}

/// How often a receiving node writes its heartbeat (ms).
pub const RECEIVER_BEAT_MS: i64 = 1000;
/// A receiving record whose heartbeat is older than this is taken for a
/// node that died (ms).
pub const RECEIVER_STALE_MS: i64 = 3 * RECEIVER_BEAT_MS + 500;

/// Whether a receiving record says its node is receiving now.
pub fn receiver_live(r: &SourceReceiver, now_ms: i64) -> bool {
    r.receiving && r.until_ms >= now_ms - RECEIVER_STALE_MS
}

/// How many gap records [`SourceStore::source_states`] returns per source.
pub const RECENT_GAPS: usize = 20;

/// A window in which no connection of a source, on any node, was receiving
/// from its upstream, so events may have been missed: from the last moment
/// a connection is known to have been receiving to when one received again.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SourceGap {
    /// Source name.
    pub source: String,
    /// Start (RFC 3339, UTC).
    pub start: String,
    /// End (RFC 3339, UTC).
    pub end: String,
    /// Why nothing was received: `disconnected` (the last connection
    /// dropped), `restart` (this node stopped or died and came back),
    /// `node_stopped` (the last receiving node stopped or died),
    /// `unsettled` (a node died while it was finding out whether another
    /// node covered the window: its earliest possible extent).
    pub reason: String,
    /// How the connection that ended the gap resumed: `last_event_id`
    /// (the upstream was asked to replay after the last committed id) or
    /// `none` (nothing to resume from: only a backfill can fill it).
    pub resume: String,
    /// Gaps merged into this record (1 when it is a single gap): gaps
    /// closer than `gap_merge_ms` are merged to bound what an upstream
    /// that keeps dropping connections can make the log write.
    pub merged: u64,
    /// Start, ms since the epoch.
    #[serde(skip)]
    pub start_ms: i64,
    /// End, ms since the epoch.
    #[serde(skip)]
    pub end_ms: i64,
}

/// What [`SourceStore::record_source_gap`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapRecorded {
    /// A new gap record.
    New,
    /// Merged into the latest record (it grew).
    Merged,
    /// The latest record already covers it (another node recorded it).
    Covered,
}

/// One node's view of its receiving from a source, kept in the store so
/// that every node can tell whether any node was receiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReceiver {
    /// Source name.
    pub source: String,
    /// Node id.
    pub node: String,
    /// Whether at least one connection of that node is open.
    pub receiving: bool,
    /// When it started receiving (ms since the epoch).
    pub since_ms: i64,
    /// While receiving: its latest heartbeat; else when it stopped (ms).
    pub until_ms: i64,
    /// Why it stopped: `disconnected` or `stopped` (the node shut down).
    pub ended: String,
    /// While the window before `since_ms` is not yet settled (another
    /// node may have covered it): its earliest possible start (ms).
    pub pending_ms: Option<i64>,
}

/// Progress of one source's connection, merged into its stored state by
/// [`SourceStore::add_source_progress`]: counters are added, the latest
/// event time is kept by instant, other fields are replaced when set.
/// Several connections and nodes write one source without losing counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceProgress {
    /// Source name.
    pub name: String,
    /// Target stream (a state kept for another stream starts afresh).
    pub stream: String,
    /// Events stored (added).
    pub taken: u64,
    /// Duplicates (added).
    pub duplicates: u64,
    /// Rejected (added).
    pub rejected: u64,
    /// Filtered (added).
    pub filtered: u64,
    /// Reconnections (added).
    pub reconnects: u64,
    /// New resume id, when set.
    pub last_event_id: Option<String>,
    /// An event time committed; the stored one moves only forward.
    pub last_event_time: Option<String>,
    /// A new last error `(message, at)`, when set.
    pub last_error: Option<(String, String)>,
    /// Now.
    pub updated: String,
}

impl SourceProgress {
    /// Applies this progress to `state` (what the backends store).
    pub fn apply(&self, state: &mut SourceState) {
        if state.stream != self.stream {
            *state = SourceState {
                name: self.name.clone(),
                stream: self.stream.clone(),
                ..SourceState::default()
            };
        }
        // Whether it is connected comes from the receiving records now
        // (`source_states`); a column left true by an older version that
        // died connected would say so for ever.
        state.connected = false;
        state.taken += self.taken;
        state.duplicates += self.duplicates;
        state.rejected += self.rejected;
        state.filtered += self.filtered;
        state.reconnects += self.reconnects;
        if let Some(id) = &self.last_event_id {
            state.last_event_id = Some(id.clone());
        }
        if let Some(t) = &self.last_event_time {
            state.last_event_time = later(state.last_event_time.take(), t);
        }
        if let Some((e, at)) = &self.last_error {
            state.last_error = Some(e.clone());
            state.last_error_at = Some(at.clone());
        }
        state.updated.clone_from(&self.updated);
    }

    /// Whether there is anything to write.
    pub fn is_empty(&self) -> bool {
        self.taken == 0
            && self.duplicates == 0
            && self.rejected == 0
            && self.filtered == 0
            && self.reconnects == 0
            && self.last_event_id.is_none()
            && self.last_event_time.is_none()
            && self.last_error.is_none()
    }
}

/// Returns the later of two RFC 3339 times (by instant, not by text; an
/// unparsable one loses).
pub fn later(a: Option<String>, b: &str) -> Option<String> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    match a {
        None => Some(b.to_owned()),
        Some(a) => match (
            OffsetDateTime::parse(&a, &Rfc3339),
            OffsetDateTime::parse(b, &Rfc3339),
        ) {
            (Ok(x), Ok(y)) if y > x => Some(b.to_owned()),
            (Err(_), Ok(_)) => Some(b.to_owned()),
            _ => Some(a),
        },
    }
}

/// Merges `gap` into `latest` (the source's latest record), or says it
/// needs a record of its own (`None`). Shared by the backends.
pub fn merge_gap(
    latest: &SourceGap,
    gap: &SourceGap,
    merge_ms: i64,
) -> Option<(SourceGap, GapRecorded)> {
    if latest.start_ms <= gap.start_ms && latest.end_ms >= gap.end_ms {
        return Some((latest.clone(), GapRecorded::Covered));
    }
    if gap.start_ms <= latest.end_ms.saturating_add(merge_ms) && gap.end_ms >= latest.start_ms {
        let mut m = latest.clone();
        if gap.start_ms < m.start_ms {
            m.start_ms = gap.start_ms;
            m.start.clone_from(&gap.start);
        }
        if gap.end_ms > m.end_ms {
            m.end_ms = gap.end_ms;
            m.end.clone_from(&gap.end);
            m.resume.clone_from(&gap.resume);
        }
        m.merged += 1;
        return Some((m, GapRecorded::Merged));
    }
    None
}

/// A lease on a named job (`source:NAME`, `checkpointer`, …): one holder at
/// a time until `expires_ms`. `token` grows whenever the holder changes, so a
/// node that lost its lease is fenced off by its stale token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Job name.
    pub name: String,
    /// Holding node.
    pub holder: String,
    /// Fencing token.
    pub token: i64,
    /// Expiry, ms since the epoch (the store's clock).
    pub expires_ms: i64,
}

/// An event a source received but could not store.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RejectedEvent {
    /// Source name.
    pub source: String,
    /// When it was received.
    pub at: String,
    /// Where in the upstream it was (connection, event number, last id).
    pub position: String,
    /// Why it was refused.
    pub reason: String,
    /// The raw data (truncated to 64 KiB).
    pub raw: String,
}

/// Events, heads, tiles and checkpoints: the log itself.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends every group in one durable transaction.
    ///
    /// # Errors
    /// Any backend error; the outcome may be ambiguous (see module docs).
    async fn append(&self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>>;

    /// Whether [`EventStore::append`] takes [`AppendGroup::sealed`] chains.
    /// Worth it only where one process is the only writer, so the batcher's
    /// head predictions hold (SQLite); the default ignores them.
    fn uses_seals(&self) -> bool {
        false
    }

    /// How many group commits the batcher may have in flight at once. More
    /// than one lets a writer start the next commit the moment one is
    /// durable (SQLite: three on its one writer thread; PostgreSQL: three
    /// connections, each call chained onto the one before).
    fn pipeline_depth(&self) -> usize {
        1
    }

    /// The shard-ownership calls of a store several nodes share
    /// (PostgreSQL); `None` where one process is the only writer.
    fn cluster(&self) -> Option<std::sync::Arc<dyn cluster::ClusterStore>> {
        None
    }

    /// Returns every stream, by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn streams(&self) -> Result<Vec<StreamInfo>>;

    /// Returns up to `limit` events of `stream` with seq ≥ `from_seq`, in seq order.
    ///
    /// # Errors
    /// Backend errors.
    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>>;

    /// Returns the hot events `scan` selects, in seq order (see
    /// [`EventScan`]: a superset of the time bounds is allowed).
    ///
    /// # Errors
    /// Backend errors.
    async fn scan_events(&self, scan: &EventScan) -> Result<Vec<StoredEvent>>;

    /// Returns the runs of consecutive seqs of `stream` in `from..=to` that
    /// the hot store holds, as inclusive `(first, last)` pairs in order.
    ///
    /// # Errors
    /// Backend errors.
    async fn hot_ranges(&self, stream: &str, from: u64, to: u64) -> Result<Vec<(u64, u64)>>;

    /// Returns the given tiles of `stream` that exist.
    ///
    /// # Errors
    /// Backend errors.
    async fn tiles(&self, stream: &str, ids: &[TileId]) -> Result<Vec<(TileId, Vec<u8>)>>;

    /// Stores a signed checkpoint (idempotent per size).
    ///
    /// # Errors
    /// Backend errors, or [`StoreError::NotFound`] for an unknown stream.
    async fn put_checkpoint(&self, stream: &str, checkpoint: StoredCheckpoint) -> Result<()>;

    /// Returns the streams whose head is past their latest checkpoint (or
    /// that have events and no checkpoint), by name.
    ///
    /// # Errors
    /// Backend errors.
    async fn streams_behind_checkpoint(&self) -> Result<Vec<String>>;

    /// Returns the checkpoint of the largest size.
    ///
    /// # Errors
    /// Backend errors.
    async fn latest_checkpoint(&self, stream: &str) -> Result<Option<StoredCheckpoint>>;
}

/// API keys.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Stores a new API key.
    ///
    /// # Errors
    /// Backend errors.
    async fn create_key(&self, key: KeyRecord) -> Result<()>;

    /// Returns all keys, revoked ones included.
    ///
    /// # Errors
    /// Backend errors.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>>;

    /// Returns one key by id.
    ///
    /// # Errors
    /// Backend errors.
    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>>;

    /// Marks a key revoked; returns whether it existed and was active.
    ///
    /// # Errors
    /// Backend errors.
    async fn revoke_key(&self, id: &str, at: &str) -> Result<bool>;
}

/// Sources' resume state and rejected events.
#[async_trait]
pub trait SourceStore: Send + Sync + 'static {
    /// Stores a source's state (replacing the previous one). With `fence`,
    /// the lease is checked in the same transaction.
    ///
    /// # Errors
    /// Backend errors; [`StoreError::Fenced`] when `fence` is no longer held.
    async fn put_source_state(&self, state: SourceState, fence: Option<&Lease>) -> Result<()>;

    /// Returns every source's stored state.
    ///
    /// # Errors
    /// Backend errors.
    async fn source_states(&self) -> Result<Vec<SourceState>>;

    /// Records a rejected source event.
    ///
    /// # Errors
    /// Backend errors.
    async fn add_rejected(&self, event: RejectedEvent) -> Result<()>;

    /// Returns up to `limit` rejected events of `source` (all sources when
    /// `None`), oldest first.
    ///
    /// # Errors
    /// Backend errors.
    async fn rejected(&self, source: Option<&str>, limit: usize) -> Result<Vec<RejectedEvent>>;

    /// Merges progress into a source's state (created when missing), in
    /// one transaction; with `fence`, the lease is checked in it too.
    ///
    /// # Errors
    /// Backend errors; [`StoreError::Fenced`] when `fence` is no longer held.
    async fn add_source_progress(
        &self,
        progress: SourceProgress,
        fence: Option<&Lease>,
    ) -> Result<()>;

    /// Stores one node's receiving record (replacing its previous one).
    ///
    /// # Errors
    /// Backend errors.
    async fn put_source_receiver(&self, receiver: SourceReceiver) -> Result<()>;

    /// Returns every node's receiving record of `source`.
    ///
    /// # Errors
    /// Backend errors.
    async fn source_receivers(&self, source: &str) -> Result<Vec<SourceReceiver>>;

    /// Records a gap, atomically merged ([`merge_gap`]) into the source's
    /// latest record when it is within `merge_ms` of it.
    ///
    /// # Errors
    /// Backend errors.
    async fn record_source_gap(&self, gap: SourceGap, merge_ms: i64) -> Result<GapRecorded>;

    /// Returns up to `limit` gap records of `source`, newest first.
    ///
    /// # Errors
    /// Backend errors.
    async fn source_gaps(&self, source: &str, limit: usize) -> Result<Vec<SourceGap>>;

    /// Returns the gap records of `source` whose current extent is not in
    /// the log's own stream yet and that may be written now: never logged,
    /// or last logged before `logged_before_ms` (a growing record is
    /// logged at most once per merge window).
    ///
    /// # Errors
    /// Backend errors.
    async fn gaps_to_log(&self, source: &str, logged_before_ms: i64) -> Result<Vec<SourceGap>>;

    /// Notes that the record starting at `start_ms` was logged with its
    /// extent up to `end_ms`, at `at_ms`.
    ///
    /// # Errors
    /// Backend errors.
    async fn gap_logged(&self, source: &str, start_ms: i64, end_ms: i64, at_ms: i64) -> Result<()>;
}

/// Leases: one node at a time per job (see [`crate::lease`]).
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes or renews the lease `name` for `holder` for `ttl`: granted when
    /// free, expired, or already held by `holder` (a renewal keeps the token;
    /// a new holder gets a larger one). `None` when another node holds it.
    ///
    /// # Errors
    /// Backend errors.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>>;

    /// Gives a lease up (if still held), so another node can take it at once.
    ///
    /// # Errors
    /// Backend errors.
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
}

/// The archive's record of archived batches, hot deletion and restore.
#[async_trait]
pub trait ArchiveLedger: Send + Sync + 'static {
    /// Records an archived batch. It must start right after the stream's
    /// last recorded batch (at 1 for the first) and end at or below the
    /// head; recording the same batch again is a no-op. With `fence`, the
    /// lease is checked in the same transaction.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a batch that does not fit (not
    /// contiguous, past the head, or differing from the one recorded at its
    /// start), [`StoreError::Fenced`], backend errors.
    async fn record_archive_batch(&self, batch: ArchiveBatch, fence: Option<&Lease>) -> Result<()>;

    /// Returns up to `limit` recorded batches of `stream` (all streams when
    /// `None`) with `start_seq >= from_start`, by stream then seq.
    ///
    /// # Errors
    /// Backend errors.
    async fn archive_batches(
        &self,
        stream: Option<&str>,
        from_start: u64,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>>;

    /// Returns up to `limit` recorded batches of `stream` (all streams when
    /// `None`), newest first (by `created`, then stream name and start seq,
    /// all descending), starting after `before` when given: keyset paging
    /// for the console, which never loads every batch.
    ///
    /// # Errors
    /// Backend errors.
    async fn archive_batches_newest(
        &self,
        stream: Option<&str>,
        before: Option<&BatchCursor>,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>>;

    /// Returns the stream's last recorded batch.
    ///
    /// # Errors
    /// Backend errors.
    async fn last_archive_batch(&self, stream: &str) -> Result<Option<ArchiveBatch>>;

    /// Returns the recorded batch of `stream` that holds `seq`, if any (one
    /// index lookup: a read of an archived seq names its object).
    ///
    /// # Errors
    /// Backend errors.
    async fn archive_batch_at(&self, stream: &str, seq: u64) -> Result<Option<ArchiveBatch>>;

    /// Deletes up to `max_rows` events of `stream`, lowest seq first, with
    /// seq ≤ `through_seq` **and** ≤ the stream's highest archived seq (the
    /// store checks this itself). Restored rows go only when restored
    /// before `restored_before`. Returns how many were deleted.
    ///
    /// # Errors
    /// [`StoreError::Fenced`], backend errors.
    async fn delete_archived(
        &self,
        stream: &str,
        through_seq: u64,
        restored_before: &str,
        max_rows: usize,
        fence: Option<&Lease>,
    ) -> Result<u64>;

    /// Inserts archived events back into `stream`, marked restored at `at`;
    /// seqs already in the hot store are skipped. Returns how many were
    /// inserted.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when a seq is not covered by a recorded batch,
    /// [`StoreError::NotFound`] for an unknown stream, backend errors.
    async fn restore_events(
        &self,
        stream: &str,
        events: Vec<RestoredEvent>,
        at: &str,
    ) -> Result<u64>;
}

/// Destinations' cursors and dead letters.
#[async_trait]
pub trait DeliveryLedger: Send + Sync + 'static {
    /// Creates or moves a destination's cursor on a stream.
    ///
    /// # Errors
    /// [`StoreError::Fenced`], backend errors.
    async fn put_delivery_cursor(
        &self,
        cursor: DeliveryCursor,
        fence: Option<&Lease>,
    ) -> Result<()>;

    /// Returns every delivery cursor, by destination then stream.
    ///
    /// # Errors
    /// Backend errors.
    async fn delivery_cursors(&self) -> Result<Vec<DeliveryCursor>>;

    /// Records a dead letter and moves the destination's cursor on `stream`
    /// to its `end_seq`, in one transaction (fenced by `fence`). Returns the
    /// dead letter's id.
    ///
    /// # Errors
    /// [`StoreError::Fenced`], backend errors.
    async fn add_dead_letter(
        &self,
        letter: DeadLetter,
        archive_past: bool,
        fence: Option<&Lease>,
    ) -> Result<i64>;

    /// Returns dead letters of `destination` (all when `None`), oldest first;
    /// resolved ones only when `include_resolved`.
    ///
    /// # Errors
    /// Backend errors.
    async fn dead_letters(
        &self,
        destination: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>>;

    /// Marks a dead letter resolved at `at` (an operator's retry delivered
    /// it) and adds its events to the cursor's `delivered`, in one
    /// transaction; returns whether it was open.
    ///
    /// # Errors
    /// Backend errors.
    async fn resolve_dead_letter(&self, id: i64, at: &str) -> Result<bool>;
}

/// The hot store: every part of it, as one trait object. See the module
/// docs for the contract; each part is its own trait so a job can be
/// handed only what it uses (a lease keeper needs only [`LeaseStore`]).
pub trait Store:
    EventStore + KeyStore + SourceStore + LeaseStore + ArchiveLedger + DeliveryLedger
{
}

impl<T> Store for T where
    T: EventStore + KeyStore + SourceStore + LeaseStore + ArchiveLedger + DeliveryLedger
{
}

/// Checks that an identical batch is being recorded again (the creation
/// time may differ: a retried run records later).
fn same_batch(existing: &ArchiveBatch, new: &ArchiveBatch) -> Result<()> {
    let mut a = existing.clone();
    a.created.clone_from(&new.created);
    if a == *new {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "stream {}: an archive batch at seq {} is already recorded with other contents (object {}, manifest {})",
            new.stream, new.start_seq, existing.object_key, existing.manifest_key
        )))
    }
}

/// The rule for recording an archive batch, whichever backend: with
/// `existing` (the batch recorded at its start seq, if any), `last_end`
/// (the stream's highest recorded end seq) and `head`, whether `batch` is
/// new and must be inserted (`false`: the same batch is already recorded).
///
/// # Errors
/// [`StoreError::Corrupt`] for a batch that differs from the one recorded
/// at its start, or does not continue the recorded ones.
pub(crate) fn batch_is_new(
    existing: Option<&ArchiveBatch>,
    last_end: Option<i64>,
    head: u64,
    batch: &ArchiveBatch,
) -> Result<bool> {
    if let Some(e) = existing {
        same_batch(e, batch)?;
        return Ok(false);
    }
    let last_end = last_end
        .map(|l| {
            u64::try_from(l).map_err(|_| {
                StoreError::Corrupt(format!(
                    "stream {}: negative archive batch end {l}",
                    batch.stream
                ))
            })
        })
        .transpose()?;
    check_batch_fits(batch, last_end, head)?;
    Ok(true)
}

/// Checks that `batch` continues the stream's recorded batches.
fn check_batch_fits(batch: &ArchiveBatch, last_end: Option<u64>, head: u64) -> Result<()> {
    let want = last_end.map_or(1, |l| l + 1);
    let bad = |why: String| {
        Err(StoreError::Corrupt(format!(
            "stream {}: archive batch {}-{}: {why}",
            batch.stream, batch.start_seq, batch.end_seq
        )))
    };
    if batch.start_seq != want {
        return bad(format!("must start at seq {want}"));
    }
    if batch.end_seq < batch.start_seq || batch.count != batch.end_seq - batch.start_seq + 1 {
        return bad(format!("count {} does not match the range", batch.count));
    }
    if batch.end_seq > head {
        return bad(format!("ends past the head (seq {head})"));
    }
    Ok(())
}

/// Convenience methods over [`Store`].
#[async_trait]
pub trait StoreExt: Store {
    /// Returns one stream's info.
    ///
    /// # Errors
    /// Backend errors.
    async fn stream(&self, name: &str) -> Result<Option<StreamInfo>> {
        Ok(self.streams().await?.into_iter().find(|s| s.name == name))
    }

    /// Returns up to `limit` events of `stream` with consecutive seqs from
    /// `from_seq` (1 when 0), or, when `from_seq` is archived and no longer
    /// hot, the archived range that starts there (see [`EventPage`]). Never
    /// skips a seq: a page ends where the hot store has a gap.
    ///
    /// # Errors
    /// Backend errors; [`StoreError::Corrupt`] for a gap in the hot store
    /// that no archive batch explains.
    async fn read_page(&self, stream: &str, from_seq: u64, limit: usize) -> Result<EventPage> {
        page::read_page(self, stream, from_seq, limit).await
    }

    /// Returns a [`crate::chain::tiles::TileSource`] holding every tile that
    /// `compute` reads, fetched in one call, then runs `compute` on it.
    ///
    /// # Errors
    /// Backend errors, or [`StoreError::Corrupt`] when a needed tile is missing.
    async fn with_tiles<T: Send, F>(&self, stream: &str, compute: F) -> Result<T>
    where
        F: Fn(&dyn TreeReader) -> std::result::Result<T, crate::chain::tiles::MissingNode>
            + Send
            + Sync,
    {
        use crate::chain::tiles::{Recorder, TileSource};
        let rec = Recorder::default();
        let _ = compute(&RecorderReader(&rec));
        let needed = rec.take();
        let tiles = self.tiles(stream, &needed).await?;
        let src = TileSource::new(tiles.into_iter().collect());
        compute(&src).map_err(|e| StoreError::Corrupt(format!("stream {stream}: {e}")))
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// An object-safe view of a node source, so one closure serves both the
/// recording pass and the computing pass of [`StoreExt::with_tiles`].
pub trait TreeReader {
    /// Returns a complete node's hash.
    ///
    /// # Errors
    /// [`crate::chain::tiles::MissingNode`] when the tiles lack it.
    fn node(
        &self,
        level: u32,
        index: u64,
    ) -> std::result::Result<crate::chain::Hash, crate::chain::tiles::MissingNode>;
}

impl TreeReader for crate::chain::tiles::TileSource {
    fn node(
        &self,
        level: u32,
        index: u64,
    ) -> std::result::Result<crate::chain::Hash, crate::chain::tiles::MissingNode> {
        crate::chain::merkle::NodeSource::node(self, level, index)
    }
}

struct RecorderReader<'a>(&'a crate::chain::tiles::Recorder);

impl TreeReader for RecorderReader<'_> {
    fn node(
        &self,
        level: u32,
        index: u64,
    ) -> std::result::Result<crate::chain::Hash, crate::chain::tiles::MissingNode> {
        match crate::chain::merkle::NodeSource::node(self.0, level, index) {
            Ok(h) => Ok(h),
            Err(never) => match never {},
        }
    }
}

/// Adapts a [`TreeReader`] back into a [`crate::chain::merkle::NodeSource`].
#[derive(Clone, Copy)]
pub struct ReaderSource<'a>(pub &'a dyn TreeReader);

impl crate::chain::merkle::NodeSource for ReaderSource<'_> {
    type Error = crate::chain::tiles::MissingNode;
    fn node(&self, level: u32, index: u64) -> std::result::Result<crate::chain::Hash, Self::Error> {
        self.0.node(level, index)
    }
}

/// A seq bound as an SQL parameter: seqs above `i64::MAX` cannot exist, so
/// they saturate instead of wrapping to negative (a read "from 2^63" must
/// return nothing, not the stream from its start).
pub(crate) fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}
