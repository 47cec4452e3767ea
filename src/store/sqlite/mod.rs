//! The embedded SQLite hot store.
//!
//! One dedicated writer thread owns the only writing connection: it runs
//! [`EventStore::append`] batches as `BEGIN IMMEDIATE … COMMIT` in WAL mode with
//! `synchronous=FULL`, so each commit is one fsync of the WAL and a returned
//! `Ok` means the events survive a crash or power loss. Reads use a small
//! pool of separate connections (WAL readers never block the writer).
//! Checkpoints run on a second, low-priority thread with its own connection
//! (`WalControl`); the writer takes precomputed chains from the
//! batcher when they start at its head (see [`super::Sealed`]).
//!
//! Other processes (`trailkeep keys`, `verify`) may open the same file while
//! `serve` runs; SQLite's locking serializes them (`busy_timeout`), and the
//! writer re-reads each stream's head inside its transaction rather than
//! trusting a cache.

mod wal;
mod writer;

use wal::{WAL_MAX_FRAMES, WalControl};
#[cfg(test)]
use writer::rolled_back;
use writer::{Writer, read_tile};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::rows::{BATCH_COLUMNS, KEY_COLUMNS};
use super::{
    AppendGroup, GapRecorded, GroupResult, KeyRecord, RejectedEvent, Result, SourceGap,
    SourceProgress, SourceReceiver, SourceState, StoreError, StoredCheckpoint, StoredEvent,
    StreamInfo,
};
use super::{
    ArchiveBatch, BatchCursor, DeadLetter, DeliveryCursor, EventScan, Lease, RestoredEvent,
};
use super::{ArchiveLedger, DeliveryLedger, EventStore, KeyStore, LeaseStore, SourceStore};
use crate::chain::tiles::TileId;
use crate::event::format_received;

const SCHEMA_VERSION: i64 = 7;
const MIGRATIONS: [&str; 7] = [
    include_str!("../sql/sqlite/001_init.sql"),
    include_str!("../sql/sqlite/002_sources.sql"),
    include_str!("../sql/sqlite/003_leases.sql"),
    include_str!("../sql/sqlite/004_archive.sql"),
    include_str!("../sql/sqlite/005_dead_letters.sql"),
    include_str!("../sql/sqlite/006_delivered.sql"),
    include_str!("../sql/sqlite/007_source_gaps.sql"),
];

fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    // Another process holds the lock past `busy_timeout`, or the disk is
    // full: both may clear. A read-only or unopenable file, a corrupt
    // database, bad SQL or a constraint do not.
    let retryable = matches!(
        e.sqlite_error_code(),
        Some(C::DatabaseBusy | C::DatabaseLocked | C::DiskFull)
    );
    StoreError::Backend {
        backend: "sqlite",
        message: e.to_string(),
        retryable,
        source: Some(Box::new(e)),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// The SQLite [`Store`](crate::store::Store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// The writer thread's queue; `None` for a store opened read-only.
    writer: Option<Mutex<std::sync::mpsc::Sender<Job>>>,
    readers: Mutex<Vec<Connection>>,
}

fn open_conn(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 8 MiB page cache (negative = KiB). Larger caches cost more per commit:
    // SQLite scans the whole cache when a transaction ends (measured).
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(conn)
}

/// A connection that cannot write: opened `SQLITE_OPEN_READ_ONLY` and
/// `query_only`. WAL readers take no lock a writer waits on.
fn open_read_only_conn(path: &Path) -> Result<Connection> {
    use rusqlite::OpenFlags;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "query_only", true)?;
    conn.pragma_update(None, "cache_size", -8192)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the store at `path`.
    ///
    /// # Errors
    /// When the file cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_wal_bound(path, WAL_MAX_FRAMES)
    }

    fn open_with_wal_bound(path: &Path, max_frames: i64) -> Result<Self> {
        let mut conn = open_conn(path)?;
        migrate(&mut conn)?;
        // Checkpoints run on their own thread and connection, not inside
        // the writer's commits.
        let wal = WalControl::start(path, &conn, max_frames)?;
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("tk-sqlite-writer".into())
            .spawn(move || {
                let mut w = Writer {
                    conn,
                    streams: HashMap::new(),
                };
                while let Ok(job) = rx.recv() {
                    job(&mut w);
                    wal.after_write(&w.conn);
                }
            })
            .map_err(|e| {
                StoreError::backend_message("sqlite", format!("cannot start writer thread: {e}"))
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Some(Mutex::new(tx)),
                readers: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Opens an existing store for reading only, beside a `serve` that may
    /// be writing to it: no migration, no writer or checkpoint thread, and
    /// connections that cannot write (`SQLITE_OPEN_READ_ONLY`,
    /// `query_only`). A WAL reader takes no lock the writer waits on, and
    /// the data directory's `node.lock` is not touched. Every write method
    /// fails.
    ///
    /// # Errors
    /// When the file cannot be opened, or its schema is not the one this
    /// binary reads ([`StoreError::SchemaTooNew`], or older: run `migrate`).
    pub fn open_read_only(path: &Path) -> Result<Self> {
        let conn = open_read_only_conn(path)?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version < SCHEMA_VERSION {
            return Err(StoreError::backend_message(
                "sqlite",
                format!(
                    "{}: schema version {version}, older than this binary's {SCHEMA_VERSION}; `trailkeep migrate` (or serve) upgrades it",
                    path.display()
                ),
            ));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: None,
                readers: Mutex::new(vec![conn]),
            }),
        })
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        let Some(writer) = &self.inner.writer else {
            return Err(StoreError::backend_message(
                "sqlite",
                "the store was opened read-only",
            ));
        };
        writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| StoreError::backend_message("sqlite", "writer thread stopped"))?;
        rx.await
            .map_err(|_| StoreError::backend_message("sqlite", "writer thread stopped"))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let conn = match conn {
                Some(c) => c,
                None if inner.writer.is_none() => open_read_only_conn(&inner.path)?,
                None => open_conn(&inner.path)?,
            };
            let out = f(&conn);
            let mut pool = inner
                .readers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pool.len() < 8 {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::backend_message("sqlite", format!("reader task failed: {e}")))?
    }
}

/// Milliseconds since the epoch (lease clock; one machine for SQLite).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn now() -> String {
    format_received(time::OffsetDateTime::now_utc())
}

/// Fails with [`StoreError::Fenced`] unless `fence` (if any) is still held.
/// Call inside the writer (or its transaction) so nothing interleaves.
fn check_fence(c: &Connection, fence: Option<&Lease>) -> Result<()> {
    let Some(l) = fence else { return Ok(()) };
    let held = c
        .query_row(
            "SELECT 1 FROM leases WHERE name = ?1 AND holder = ?2 AND token = ?3 AND expires_ms > ?4",
            params![l.name, l.holder, l.token, now_ms()],
            |_| Ok(()),
        )
        .optional()?;
    if held.is_none() {
        return Err(StoreError::Fenced(l.name.clone()));
    }
    Ok(())
}

impl super::rows::Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.get(i)?)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        Ok(self.get(i)?)
    }
}

/// Runs `q` and decodes every row with `decode` (a [`super::rows`] reader).
fn decode_all<T>(
    q: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
    decode: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let rows = q.query_map(p, |r| Ok(decode(r)))?;
    rows.map(|r| r?).collect()
}

/// Runs `q` and decodes its one row, if any, with `decode`.
fn decode_opt<T>(
    q: &mut rusqlite::CachedStatement<'_>,
    p: impl rusqlite::Params,
    decode: fn(&rusqlite::Row<'_>) -> Result<T>,
) -> Result<Option<T>> {
    q.query_row(p, |r| Ok(decode(r))).optional()?.transpose()
}

fn batch_row(r: &rusqlite::Row<'_>) -> Result<ArchiveBatch> {
    super::rows::batch(r)
}

fn key_row(r: &rusqlite::Row<'_>) -> Result<KeyRecord> {
    super::rows::key(r)
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn append(&self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        self.write(move |w| w.append(groups)).await
    }

    fn uses_seals(&self) -> bool {
        true
    }

    /// Three: with two, the writer still waited for work now and then (the
    /// batcher shares one runtime thread with HTTP); three gave 79.5-89.9%
    /// of the raw limit over six runs against 76.8-79.5% for two in runs
    /// back to back (BENCHMARKS.md). Four was no better.
    fn pipeline_depth(&self) -> usize {
        3
    }

    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT s.name, s.head_seq, s.head_hash, (SELECT MIN(seq) FROM events e WHERE e.stream_id = s.id), \
                 (SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id), \
                 (SELECT received FROM events e WHERE e.stream_id = s.id AND e.seq = s.head_seq) \
                 FROM streams s ORDER BY s.name",
            )?;
            let rows = q.query_map([], |r| {
                Ok(StreamInfo {
                    name: r.get(0)?,
                    head_seq: r.get::<_, i64>(1)? as u64,
                    head_hash: r.get(2)?,
                    oldest_hot_seq: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                    archived_seq: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
                    head_received: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT e.seq, e.hash, e.body, e.restored IS NOT NULL FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = ?1 AND e.seq >= ?2 ORDER BY e.seq LIMIT ?3",
            )?;
            let rows = q.query_map(params![stream, super::seq_param(from_seq), limit as i64], |r| {
                Ok(StoredEvent {
                    seq: r.get::<_, i64>(0)? as u64,
                    hash: r.get(1)?,
                    body: r.get(2)?,
                    restored: r.get(3)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn scan_events(&self, scan: &EventScan) -> Result<Vec<StoredEvent>> {
        let scan = scan.clone();
        self.read(move |c| {
            let types = scan
                .types
                .as_ref()
                .map(|t| serde_json::Value::from(t.clone()).to_string());
            let mut q = c.prepare_cached(
                "SELECT e.seq, e.hash, e.body, e.restored IS NOT NULL FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = ?1 AND e.seq >= ?2 AND e.seq <= ?3 \
                 AND (?4 IS NULL OR e.time >= ?4) AND (?5 IS NULL OR e.time < ?5) \
                 AND (?6 IS NULL OR e.received >= ?6) AND (?7 IS NULL OR e.received < ?7) \
                 AND (?8 IS NULL OR e.type IN (SELECT value FROM json_each(?8))) \
                 ORDER BY e.seq LIMIT ?9",
            )?;
            let rows = q.query_map(
                params![
                    scan.stream,
                    super::seq_param(scan.from_seq),
                    super::seq_param(scan.to_seq),
                    scan.time_from,
                    scan.time_before,
                    scan.received_from,
                    scan.received_before,
                    types,
                    scan.limit.min(i64::MAX as usize) as i64
                ],
                |r| {
                    Ok(StoredEvent {
                        seq: r.get::<_, i64>(0)? as u64,
                        hash: r.get(1)?,
                        body: r.get(2)?,
                        restored: r.get(3)?,
                    })
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn hot_ranges(&self, stream: &str, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT MIN(seq), MAX(seq) FROM (SELECT e.seq, e.seq - ROW_NUMBER() OVER (ORDER BY e.seq) AS g \
                 FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = ?1 AND e.seq >= ?2 AND e.seq <= ?3) \
                 GROUP BY g ORDER BY 1",
            )?;
            let rows = q.query_map(
                params![stream, super::seq_param(from), super::seq_param(to)],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn tiles(&self, stream: &str, ids: &[TileId]) -> Result<Vec<(TileId, Vec<u8>)>> {
        let (stream, ids) = (stream.to_owned(), ids.to_vec());
        self.read(move |c| {
            let Some(stream_id) = c
                .prepare_cached("SELECT id FROM streams WHERE name = ?1")?
                .query_row([&stream], |r| r.get::<_, i64>(0))
                .optional()?
            else {
                return Ok(Vec::new());
            };
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(d) = read_tile(c, stream_id, id)? {
                    out.push((id, d));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn put_checkpoint(&self, stream: &str, cp: StoredCheckpoint) -> Result<()> {
        let stream = stream.to_owned();
        self.write(move |w| {
            let n = w.conn.execute(
                "INSERT INTO checkpoints (stream_id, size, root, note, created) SELECT id, ?2, ?3, ?4, ?5 FROM streams WHERE name = ?1 \
                 ON CONFLICT (stream_id, size) DO NOTHING",
                params![stream, cp.size as i64, cp.root, cp.note, cp.created],
            )?;
            if n == 0 && w.conn.query_row("SELECT 1 FROM streams WHERE name = ?1", [&stream], |_| Ok(())).optional()?.is_none() {
                return Err(StoreError::NotFound(format!("stream {stream}")));
            }
            Ok(())
        })
        .await
    }

    async fn streams_behind_checkpoint(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut q = c.prepare_cached("SELECT s.name FROM streams s WHERE s.head_seq > COALESCE((SELECT MAX(c.size) FROM checkpoints c WHERE c.stream_id = s.id), 0) ORDER BY s.name")?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn latest_checkpoint(&self, stream: &str) -> Result<Option<StoredCheckpoint>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached(
                "SELECT c.size, c.root, c.note, c.created FROM checkpoints c JOIN streams s ON s.id = c.stream_id \
                 WHERE s.name = ?1 ORDER BY c.size DESC LIMIT 1",
            )?
            .query_row([stream], |r| {
                Ok(StoredCheckpoint { size: r.get::<_, i64>(0)? as u64, root: r.get(1)?, note: r.get(2)?, created: r.get(3)? })
            })
            .optional()?)
        })
        .await
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn create_key(&self, key: KeyRecord) -> Result<()> {
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO api_keys (id, scope, stream, secret_hash, created, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.id, key.scope, key.stream, key.secret_hash.to_vec(), key.created, key.revoked],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        self.read(|c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created, id"
            ))?;
            decode_all(&mut q, [], key_row)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            let mut q =
                c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))?;
            decode_opt(&mut q, [id], key_row)
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at: &str) -> Result<bool> {
        let (id, at) = (id.to_owned(), at.to_owned());
        self.write(move |w| {
            Ok(w.conn.execute(
                "UPDATE api_keys SET revoked = ?2 WHERE id = ?1 AND revoked IS NULL",
                params![id, at],
            )? > 0)
        })
        .await
    }
}

#[async_trait]
impl SourceStore for SqliteStore {
    async fn put_source_state(&self, st: SourceState, fence: Option<&Lease>) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            // The writer thread serializes every write, so the check and the
            // write below cannot interleave with a takeover.
            check_fence(&w.conn, fence.as_ref())?;
            put_state(&w.conn, &st)
        })
        .await
    }

    async fn source_states(&self) -> Result<Vec<SourceState>> {
        self.read(|c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {STATE_COLUMNS} FROM sources ORDER BY name"
            ))?;
            let states = q
                .query_map([], state_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let now = now_ms();
            states
                .into_iter()
                .map(|mut st| {
                    st.connected |= receivers(c, &st.name)?
                        .iter()
                        .any(|r| super::receiver_live(r, now));
                    st.gaps_total = c.query_row(
                        "SELECT count(*) FROM source_gaps WHERE source = ?1",
                        params![st.name],
                        |r| r.get::<_, i64>(0),
                    )? as u64;
                    st.gaps = gaps(c, &st.name, super::RECENT_GAPS)?;
                    Ok(st)
                })
                .collect()
        })
        .await
    }

    async fn add_rejected(&self, e: RejectedEvent) -> Result<()> {
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO source_rejected (source, at, position, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.source, e.at, e.position, e.reason, e.raw],
            )?;
            Ok(())
        })
        .await
    }

    async fn rejected(&self, source: Option<&str>, limit: usize) -> Result<Vec<RejectedEvent>> {
        let source = source.map(str::to_owned);
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT source, at, position, reason, raw FROM source_rejected WHERE ?1 IS NULL OR source = ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = q.query_map(params![source, limit as i64], |r| {
                Ok(RejectedEvent { source: r.get(0)?, at: r.get(1)?, position: r.get(2)?, reason: r.get(3)?, raw: r.get(4)? })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_source_progress(&self, p: SourceProgress, fence: Option<&Lease>) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            // The writer thread serializes every write: read, merge and
            // write cannot interleave with another writer.
            check_fence(&w.conn, fence.as_ref())?;
            let mut st = w
                .conn
                .query_row(
                    &format!("SELECT {STATE_COLUMNS} FROM sources WHERE name = ?1"),
                    params![p.name],
                    state_row,
                )
                .optional()?
                .unwrap_or_else(|| SourceState {
                    name: p.name.clone(),
                    stream: p.stream.clone(),
                    ..SourceState::default()
                });
            p.apply(&mut st);
            put_state(&w.conn, &st)
        })
        .await
    }

    async fn put_source_receiver(&self, r: SourceReceiver) -> Result<()> {
        self.write(move |w| {
            w.conn.execute(
                "INSERT INTO source_receivers (source, node, receiving, since_ms, until_ms, ended, pending_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (source, node) DO UPDATE SET receiving = excluded.receiving, since_ms = excluded.since_ms, \
                 until_ms = excluded.until_ms, ended = excluded.ended, pending_ms = excluded.pending_ms",
                params![r.source, r.node, r.receiving, r.since_ms, r.until_ms, r.ended, r.pending_ms],
            )?;
            Ok(())
        })
        .await
    }

    async fn source_receivers(&self, source: &str) -> Result<Vec<SourceReceiver>> {
        let source = source.to_owned();
        self.read(move |c| receivers(c, &source)).await
    }

    async fn record_source_gap(&self, gap: SourceGap, merge_ms: i64) -> Result<GapRecorded> {
        self.write(move |w| {
            let latest = w
                .conn
                .query_row(
                    &format!("SELECT id, {GAP_COLUMNS} FROM source_gaps WHERE source = ?1 ORDER BY end_ms DESC, id DESC LIMIT 1"),
                    params![gap.source],
                    |r| Ok((r.get::<_, i64>(0)?, gap_row_at(r, 1)?)),
                )
                .optional()?;
            if let Some((id, latest)) = latest
                && let Some((m, how)) = super::merge_gap(&latest, &gap, merge_ms)
            {
                if how == GapRecorded::Merged {
                    w.conn.execute(
                        "UPDATE source_gaps SET start_ms = ?2, end_ms = ?3, start_at = ?4, end_at = ?5, resume = ?6, merged = ?7 WHERE id = ?1",
                        params![id, m.start_ms, m.end_ms, m.start, m.end, m.resume, m.merged as i64],
                    )?;
                }
                return Ok(how);
            }
            w.conn.execute(
                "INSERT INTO source_gaps (source, start_ms, end_ms, start_at, end_at, reason, resume, merged) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![gap.source, gap.start_ms, gap.end_ms, gap.start, gap.end, gap.reason, gap.resume, gap.merged.max(1) as i64],
            )?;
            Ok(GapRecorded::New)
        })
        .await
    }

    async fn source_gaps(&self, source: &str, limit: usize) -> Result<Vec<SourceGap>> {
        let source = source.to_owned();
        self.read(move |c| gaps(c, &source, limit)).await
    }

    async fn gaps_to_log(&self, source: &str, logged_before_ms: i64) -> Result<Vec<SourceGap>> {
        let source = source.to_owned();
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {GAP_COLUMNS} FROM source_gaps WHERE source = ?1 AND (logged_end_ms IS NULL OR logged_end_ms <> end_ms) \
                 AND (logged_at_ms IS NULL OR logged_at_ms < ?2) ORDER BY end_ms LIMIT 100"
            ))?;
            let rows = q.query_map(params![source, logged_before_ms], |r| gap_row_at(r, 0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn gap_logged(&self, source: &str, start_ms: i64, end_ms: i64, at_ms: i64) -> Result<()> {
        let source = source.to_owned();
        self.write(move |w| {
            w.conn.execute(
                "UPDATE source_gaps SET logged_end_ms = ?3, logged_at_ms = ?4 WHERE source = ?1 AND start_ms = ?2",
                params![source, start_ms, end_ms, at_ms],
            )?;
            Ok(())
        })
        .await
    }
}

const STATE_COLUMNS: &str = "name, stream, connected, last_event_id, last_event_time, taken, duplicates, rejected, filtered, reconnects, last_error, last_error_at, updated";
const GAP_COLUMNS: &str = "source, start_ms, end_ms, start_at, end_at, reason, resume, merged";

fn state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SourceState> {
    Ok(SourceState {
        name: r.get(0)?,
        stream: r.get(1)?,
        connected: r.get(2)?,
        last_event_id: r.get(3)?,
        last_event_time: r.get(4)?,
        taken: r.get::<_, i64>(5)? as u64,
        duplicates: r.get::<_, i64>(6)? as u64,
        rejected: r.get::<_, i64>(7)? as u64,
        filtered: r.get::<_, i64>(8)? as u64,
        reconnects: r.get::<_, i64>(9)? as u64,
        last_error: r.get(10)?,
        last_error_at: r.get(11)?,
        updated: r.get(12)?,
        gaps_total: 0,
        gaps: Vec::new(),
    })
}

fn gap_row_at(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<SourceGap> {
    Ok(SourceGap {
        source: r.get(i)?,
        start_ms: r.get(i + 1)?,
        end_ms: r.get(i + 2)?,
        start: r.get(i + 3)?,
        end: r.get(i + 4)?,
        reason: r.get(i + 5)?,
        resume: r.get(i + 6)?,
        merged: r.get::<_, i64>(i + 7)? as u64,
    })
}

fn gaps(c: &Connection, source: &str, limit: usize) -> Result<Vec<SourceGap>> {
    let mut q = c.prepare_cached(&format!(
        "SELECT {GAP_COLUMNS} FROM source_gaps WHERE source = ?1 ORDER BY end_ms DESC, id DESC LIMIT ?2"
    ))?;
    let rows = q.query_map(params![source, limit as i64], |r| gap_row_at(r, 0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn receivers(c: &Connection, source: &str) -> Result<Vec<SourceReceiver>> {
    let mut q = c.prepare_cached(
        "SELECT source, node, receiving, since_ms, until_ms, ended, pending_ms FROM source_receivers WHERE source = ?1 ORDER BY node",
    )?;
    let rows = q.query_map(params![source], |r| {
        Ok(SourceReceiver {
            source: r.get(0)?,
            node: r.get(1)?,
            receiving: r.get(2)?,
            since_ms: r.get(3)?,
            until_ms: r.get(4)?,
            ended: r.get(5)?,
            pending_ms: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn put_state(c: &Connection, st: &SourceState) -> Result<()> {
    c.execute(
        "INSERT INTO sources (name, stream, connected, last_event_id, last_event_time, taken, duplicates, rejected, filtered, reconnects, last_error, last_error_at, updated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (name) DO UPDATE SET stream = excluded.stream, connected = excluded.connected, last_event_id = excluded.last_event_id, \
         last_event_time = excluded.last_event_time, taken = excluded.taken, duplicates = excluded.duplicates, rejected = excluded.rejected, \
         filtered = excluded.filtered, reconnects = excluded.reconnects, last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
         updated = excluded.updated",
        params![
            st.name, st.stream, st.connected, st.last_event_id, st.last_event_time, st.taken as i64, st.duplicates as i64,
            st.rejected as i64, st.filtered as i64, st.reconnects as i64, st.last_error, st.last_error_at, st.updated
        ],
    )?;
    Ok(())
}

#[async_trait]
impl LeaseStore for SqliteStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        let ttl = ttl.as_millis() as i64;
        self.write(move |w| {
            let now = now_ms();
            Ok(w.conn
                .query_row(
                    "INSERT INTO leases (name, holder, token, expires_ms) VALUES (?1, ?2, 1, ?3 + ?4) \
                     ON CONFLICT (name) DO UPDATE SET \
                       token = CASE WHEN leases.holder = excluded.holder AND leases.expires_ms > ?3 THEN leases.token ELSE leases.token + 1 END, \
                       holder = excluded.holder, expires_ms = excluded.expires_ms \
                     WHERE leases.holder = excluded.holder OR leases.expires_ms <= ?3 \
                     RETURNING token, expires_ms",
                    params![name, holder, now, ttl],
                    |r| Ok(Lease { name: name.clone(), holder: holder.clone(), token: r.get(0)?, expires_ms: r.get(1)? }),
                )
                .optional()?)
        })
        .await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let l = lease.clone();
        self.write(move |w| {
            // Expire rather than delete: the token must keep growing.
            w.conn.execute(
                "UPDATE leases SET expires_ms = 0 WHERE name = ?1 AND holder = ?2 AND token = ?3",
                params![l.name, l.holder, l.token],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl ArchiveLedger for SqliteStore {
    async fn record_archive_batch(&self, batch: ArchiveBatch, fence: Option<&Lease>) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, fence.as_ref())?;
            let (stream_id, head_seq) = tx
                .query_row("SELECT id, head_seq FROM streams WHERE name = ?1", [&batch.stream], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("stream {}", batch.stream)))?;
            let existing = decode_opt(
                &mut tx.prepare_cached(&format!("SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id WHERE b.stream_id = ?1 AND b.start_seq = ?2"))?,
                params![stream_id, batch.start_seq as i64],
                batch_row,
            )?;
            let last: Option<i64> = tx.query_row(
                "SELECT MAX(end_seq) FROM archive_batches WHERE stream_id = ?1",
                [stream_id],
                |r| r.get(0),
            )?;
            if !super::batch_is_new(existing.as_ref(), last, head_seq, &batch)? {
                return Ok(());
            }
            tx.execute(
                "INSERT INTO archive_batches (stream_id, start_seq, end_seq, count, first_time, last_time, last_hash, object_key, \
                 object_sha256, object_size, raw_size, manifest_key, manifest_sha256, created) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    stream_id, batch.start_seq as i64, batch.end_seq as i64, batch.count as i64, batch.first_time, batch.last_time,
                    batch.last_hash, batch.object_key, batch.object_sha256, batch.object_size as i64, batch.raw_size as i64,
                    batch.manifest_key, batch.manifest_sha256, batch.created
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn archive_batches(
        &self,
        stream: Option<&str>,
        from_start: u64,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>> {
        let stream = stream.map(str::to_owned);
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                 WHERE (?1 IS NULL OR s.name = ?1) AND b.start_seq >= ?2 ORDER BY s.name, b.start_seq LIMIT ?3"
            ))?;
            decode_all(&mut q, params![stream, super::seq_param(from_start), limit as i64], batch_row)
        })
        .await
    }

    async fn archive_batches_newest(
        &self,
        stream: Option<&str>,
        before: Option<&BatchCursor>,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>> {
        let stream = stream.map(str::to_owned);
        let before = before.cloned();
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                 WHERE (?1 IS NULL OR s.name = ?1) \
                 AND (?2 IS NULL OR (b.created, s.name, b.start_seq) < (?2, ?3, ?4)) \
                 ORDER BY b.created DESC, s.name DESC, b.start_seq DESC LIMIT ?5"
            ))?;
            let (created, name, start) = match &before {
                Some(b) => (Some(b.created.as_str()), Some(b.stream.as_str()), super::seq_param(b.start_seq)),
                None => (None, None, 0),
            };
            decode_all(&mut q, params![stream, created, name, start, limit as i64], batch_row)
        })
        .await
    }

    async fn last_archive_batch(&self, stream: &str) -> Result<Option<ArchiveBatch>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                 WHERE s.name = ?1 ORDER BY b.start_seq DESC LIMIT 1"
            ))?;
            decode_opt(&mut q, [stream], batch_row)
        })
        .await
    }

    async fn archive_batch_at(&self, stream: &str, seq: u64) -> Result<Option<ArchiveBatch>> {
        let stream = stream.to_owned();
        self.read(move |c| {
            let mut q = c.prepare_cached(&format!(
                "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                 WHERE s.name = ?1 AND b.start_seq <= ?2 ORDER BY b.start_seq DESC LIMIT 1"
            ))?;
            let found = decode_opt(&mut q, params![stream, super::seq_param(seq)], batch_row)?;
            Ok(found.filter(|b| b.end_seq >= seq))
        })
        .await
    }

    async fn delete_archived(
        &self,
        stream: &str,
        through_seq: u64,
        restored_before: &str,
        max_rows: usize,
        fence: Option<&Lease>,
    ) -> Result<u64> {
        let (stream, restored_before, fence) = (
            stream.to_owned(),
            restored_before.to_owned(),
            fence.cloned(),
        );
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, fence.as_ref())?;
            // The store's own guard for invariant 5: never past what is recorded as archived.
            // A seq range from the lowest hot seq, at most `max_rows` wide
            // (a range delete walks the primary key; no temporary table).
            let bounds: Option<(i64, i64, i64)> = tx
                .query_row(
                    "SELECT s.id, (SELECT MIN(seq) FROM events e WHERE e.stream_id = s.id), \
                     MIN(?2, COALESCE((SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id), 0)) \
                     FROM streams s WHERE s.name = ?1",
                    params![stream, through_seq.min(i64::MAX as u64) as i64],
                    |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(i64::MAX), r.get(2)?)),
                )
                .optional()?;
            let Some((sid, lo, upper)) = bounds else { return Ok(0) };
            if lo > upper {
                return Ok(0);
            }
            let hi = upper.min(lo.saturating_add(max_rows as i64 - 1));
            let mut n = tx.execute(
                "DELETE FROM events WHERE stream_id = ?1 AND seq BETWEEN ?2 AND ?3 AND (restored IS NULL OR restored < ?4)",
                params![sid, lo, hi, restored_before],
            )?;
            if n == 0 && hi < upper {
                // The range held only restored rows that stay: go on past them.
                n = tx.execute(
                    "DELETE FROM events WHERE stream_id = ?1 AND seq IN (SELECT seq FROM events WHERE stream_id = ?1 AND seq > ?2 \
                     AND seq <= ?3 AND (restored IS NULL OR restored < ?4) ORDER BY seq LIMIT ?5)",
                    params![sid, hi, upper, restored_before, max_rows as i64],
                )?;
            }
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn restore_events(
        &self,
        stream: &str,
        events: Vec<RestoredEvent>,
        at: &str,
    ) -> Result<u64> {
        let (stream, at) = (stream.to_owned(), at.to_owned());
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (stream_id, archived) = tx
                .query_row(
                    "SELECT s.id, (SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id) FROM streams s WHERE s.name = ?1",
                    [&stream],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0) as u64)),
                )
                .optional()?
                .ok_or_else(|| StoreError::NotFound(format!("stream {stream}")))?;
            let mut n = 0u64;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body, restored) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT DO NOTHING",
                )?;
                for e in &events {
                    if e.seq == 0 || e.seq > archived {
                        return Err(StoreError::Corrupt(format!(
                            "stream {stream}: seq {} is not covered by a recorded archive batch (archived through {archived})",
                            e.seq
                        )));
                    }
                    n += ins.execute(params![stream_id, e.seq as i64, e.id, e.event_type, e.time, e.received, e.hash, e.body, at])? as u64;
                }
            }
            tx.commit()?;
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl DeliveryLedger for SqliteStore {
    async fn put_delivery_cursor(
        &self,
        cursor: DeliveryCursor,
        fence: Option<&Lease>,
    ) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            check_fence(&w.conn, fence.as_ref())?;
            w.conn.execute(
                "INSERT INTO delivery_cursors (destination, stream, seq, archive_past, updated, delivered) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (destination, stream) DO UPDATE SET seq = excluded.seq, archive_past = excluded.archive_past, updated = excluded.updated, \
                 delivered = delivered + excluded.delivered",
                params![cursor.destination, cursor.stream, cursor.seq as i64, cursor.archive_past, now(), cursor.delivered as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn delivery_cursors(&self) -> Result<Vec<DeliveryCursor>> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT destination, stream, seq, archive_past, delivered FROM delivery_cursors ORDER BY destination, stream",
            )?;
            let rows = q.query_map([], |r| {
                Ok(DeliveryCursor {
                    destination: r.get(0)?,
                    stream: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    archive_past: r.get(3)?,
                    delivered: r.get::<_, i64>(4)? as u64,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn add_dead_letter(
        &self,
        l: DeadLetter,
        archive_past: bool,
        fence: Option<&Lease>,
    ) -> Result<i64> {
        let fence = fence.cloned();
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            check_fence(&tx, fence.as_ref())?;
            tx.execute(
                "INSERT INTO dead_letters (destination, stream, start_seq, end_seq, status, error, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![l.destination, l.stream, l.start_seq as i64, l.end_seq as i64, l.status, l.error, l.at],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO delivery_cursors (destination, stream, seq, archive_past, updated) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (destination, stream) DO UPDATE SET seq = MAX(seq, excluded.seq), updated = excluded.updated",
                params![l.destination, l.stream, l.end_seq as i64, archive_past, l.at],
            )?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn dead_letters(
        &self,
        destination: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>> {
        let destination = destination.map(str::to_owned);
        self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT id, destination, stream, start_seq, end_seq, status, error, at, resolved FROM dead_letters \
                 WHERE (?1 IS NULL OR destination = ?1) AND (?2 OR resolved IS NULL) ORDER BY id",
            )?;
            let rows = q.query_map(params![destination, include_resolved], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    destination: r.get(1)?,
                    stream: r.get(2)?,
                    start_seq: r.get::<_, i64>(3)? as u64,
                    end_seq: r.get::<_, i64>(4)? as u64,
                    status: r.get(5)?,
                    error: r.get(6)?,
                    at: r.get(7)?,
                    resolved: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn resolve_dead_letter(&self, id: i64, at: &str) -> Result<bool> {
        let at = at.to_owned();
        self.write(move |w| {
            let tx = w.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let open = tx.execute(
                "UPDATE dead_letters SET resolved = ?2 WHERE id = ?1 AND resolved IS NULL",
                params![id, at],
            )? == 1;
            if open {
                tx.execute(
                    "UPDATE delivery_cursors SET delivered = delivered + \
                     (SELECT end_seq - start_seq + 1 FROM dead_letters WHERE id = ?1) \
                     WHERE (destination, stream) = (SELECT destination, stream FROM dead_letters WHERE id = ?1)",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(open)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use crate::chain::ZERO_HASH_HEX;
    use crate::store::Head;

    /// Issue #14: a busy or locked database or a full disk may clear by
    /// itself (retryable); a read-only or corrupt file does not; the
    /// rusqlite error stays the source.
    #[test]
    fn sqlite_errors_are_classified_and_keep_their_cause() {
        use rusqlite::ffi;
        let err =
            |code| super::backend(rusqlite::Error::SqliteFailure(ffi::Error::new(code), None));
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED, ffi::SQLITE_FULL] {
            assert!(err(code).is_retryable(), "{code}");
        }
        for code in [
            ffi::SQLITE_READONLY,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_CONSTRAINT,
        ] {
            let e = err(code);
            assert!(!e.is_retryable(), "{code}");
            assert!(std::error::Error::source(&e).is_some());
        }
    }

    /// A key whose stored secret hash is not 32 bytes was read as all
    /// zeros (a default); it is corruption, and says which key.
    #[tokio::test]
    async fn a_stored_key_hash_of_the_wrong_length_is_corruption() {
        use crate::store::{KeyStore, StoreError};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let store = super::SqliteStore::open(&path).expect("open");
        rusqlite::Connection::open(&path)
            .expect("open")
            .execute(
                "INSERT INTO api_keys (id, scope, stream, secret_hash, created) VALUES ('k1', 'read', '*', x'0102', '2026-01-01T00:00:00Z')",
                [],
            )
            .expect("insert");
        for e in [
            store.get_key("k1").await.expect_err("one key"),
            store.list_keys().await.expect_err("all keys"),
        ] {
            assert!(
                matches!(&e, StoreError::Corrupt(m) if m.contains("k1") && m.contains("2 bytes")),
                "{e}"
            );
        }
    }

    /// `events` and `streams` open the store read-only beside a running
    /// serve (issue #15): they see its commits as they land, the writer
    /// never waits on them, they cannot write, and a missing file is not
    /// created.
    #[tokio::test]
    async fn a_read_only_store_reads_beside_the_writer_and_never_writes() {
        use crate::event::{Limits, validate};
        use crate::store::{AppendGroup, EventStore, KeyStore};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let missing = super::SqliteStore::open_read_only(&path).expect_err("no file");
        assert!(!missing.is_retryable(), "{missing}");
        assert!(
            std::fs::metadata(&path).is_err(),
            "a reader creates nothing"
        );
        let ev = |id: &str| {
            validate(
                0,
                serde_json::json!({"id": id, "type": "t"}),
                "2026-01-01T00:00:00.000000Z",
                &Limits::default(),
            )
            .expect("valid")
        };
        let group = |id: &str| AppendGroup {
            sealed: None,
            stream: "s".into(),
            events: vec![ev(id)],
        };
        let writer = super::SqliteStore::open(&path).expect("open");
        writer.append(vec![group("a")]).await.expect("append");
        let reader = super::SqliteStore::open_read_only(&path).expect("read-only");
        assert_eq!(reader.read_events("s", 1, 10).await.expect("read").len(), 1);
        // The writer goes on while the reader holds its connection, and the
        // reader sees the new commit on its next read.
        writer
            .append(vec![group("b")])
            .await
            .expect("append beside a reader");
        assert_eq!(reader.read_events("s", 1, 10).await.expect("read").len(), 2);
        let e = reader
            .append(vec![group("c")])
            .await
            .expect_err("read-only");
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(
            reader
                .revoke_key("k", "2026-01-01T00:00:00Z")
                .await
                .is_err()
        );
        assert_eq!(writer.streams().await.expect("streams")[0].head_seq, 2);
    }

    /// After a failed COMMIT, a head that reached the new seq means it may
    /// have committed (ambiguous); one still below means rolled back.
    #[test]
    fn rolled_back_reads_the_heads_again() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        conn.execute_batch(
            "CREATE TABLE streams (name TEXT PRIMARY KEY, head_seq INTEGER);\
             INSERT INTO streams VALUES ('s', 5);",
        )
        .expect("schema");
        assert!(super::rolled_back(&conn, &[("s".into(), 6)]).expect("read"));
        assert!(!super::rolled_back(&conn, &[("s".into(), 5)]).expect("read"));
        assert!(super::rolled_back(&conn, &[("new".into(), 1)]).expect("read"));
        assert!(super::rolled_back(&conn, &[]).expect("read"));
    }

    use super::*;

    #[tokio::test]
    async fn sqlite_passes_the_store_conformance_suite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = 0;
        super::super::conformance::run_all(|| {
            n += 1;
            SqliteStore::open(&dir.path().join(format!("store-{n}.db"))).expect("open")
        })
        .await;
    }

    /// The writer takes a seal that starts at the true head as it is (that
    /// is the point: it does not hash again). Seals come only from the
    /// batcher in this process; this marks the trust boundary.
    #[tokio::test]
    async fn a_seal_from_the_true_head_is_taken_as_is() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("s.db")).expect("open");
        let events = vec![crate::event::test_event("a")];
        let zero = Head {
            seq: 0,
            hash: ZERO_HASH_HEX.into(),
        };
        let (mut sealed, _) = super::super::Sealed::compute("s", &events, zero);
        sealed.events[0].body = sealed.events[0].body.replace("\"t\"", "\"from-the-seal\"");
        store
            .append(vec![AppendGroup {
                stream: "s".into(),
                events,
                sealed: Some(sealed),
            }])
            .await
            .expect("append");
        let stored = store.read_events("s", 1, 1).await.expect("read");
        assert!(
            stored[0].body.contains("from-the-seal"),
            "{}",
            stored[0].body
        );
    }

    /// Checkpoints run off the writer thread, yet under constant writes the
    /// WAL stays bounded: without the writer finishing a checkpoint now and
    /// then, a passive checkpointer never catches up and the WAL would hold
    /// everything written.
    #[tokio::test]
    async fn background_checkpoints_keep_the_wal_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wal.db");
        // 64 frames = 256 KiB of WAL before the writer steps in.
        let store = SqliteStore::open_with_wal_bound(&path, 64).expect("open");
        let wal = dir.path().join("wal.db-wal");
        let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
        let mut largest = 0;
        for c in 0..60 {
            let events = (0..100)
                .map(|i| crate::event::NewEvent {
                    data: Some(data.clone()),
                    ..crate::event::test_event(&format!("e{c}-{i}"))
                })
                .collect();
            store
                .append(vec![AppendGroup {
                    sealed: None,
                    stream: "s".into(),
                    events,
                }])
                .await
                .expect("append");
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        // ~13 MB of events went through the WAL; it never held more than a
        // few commits' worth.
        let written = 60 * 100 * 2000;
        assert!(
            largest < 4 * 1024 * 1024,
            "WAL grew to {largest} bytes for {written} bytes written"
        );
        assert!(
            std::fs::metadata(&path).expect("db").len() > written,
            "the events were checkpointed into the database file"
        );
        let head = store.streams().await.expect("streams");
        assert_eq!(head[0].head_seq, 6000);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any sequence of appends keeps the chain and seq invariants.
        #[test]
        fn any_sequence_of_appends_keeps_the_chain(
            commits in proptest::collection::vec(
                proptest::collection::vec((0u8..3, proptest::collection::vec(0u8..40, 1..12)), 1..4),
                1..8,
            )
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open(&dir.path().join("p.db")).expect("open");
            rt.block_on(super::super::conformance::random_appends_keep_the_invariants(&store, &commits));
        }
    }

    #[tokio::test]
    async fn reopening_resumes_heads_and_tiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        super::super::conformance::reopen_keeps_chain(|| SqliteStore::open(&path).expect("open"))
            .await;
    }
}
