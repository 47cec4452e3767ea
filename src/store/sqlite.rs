//! The embedded SQLite hot store.
//!
//! One dedicated writer thread owns the only writing connection: it runs
//! [`Store::append`] batches as `BEGIN IMMEDIATE … COMMIT` in WAL mode with
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{
    Accepted, AppendGroup, GroupResult, Head, KeyRecord, RejectedEvent, Result, SourceState, Store,
    StoreError, StoredCheckpoint, StoredEvent, StreamInfo,
};
use super::{ArchiveBatch, DeadLetter, DeliveryCursor, Lease, RestoredEvent, SealedEvent};
use crate::chain::ZERO_HASH_HEX;
use crate::chain::tiles::{TileId, TileWriter};
use crate::event::format_received;

const SCHEMA_VERSION: i64 = 5;
const MIGRATIONS: [&str; 5] = [
    include_str!("sql/sqlite/001_init.sql"),
    include_str!("sql/sqlite/002_sources.sql"),
    include_str!("sql/sqlite/003_leases.sql"),
    include_str!("sql/sqlite/004_archive.sql"),
    include_str!("sql/sqlite/005_dead_letters.sql"),
];

fn backend(e: rusqlite::Error) -> StoreError {
    StoreError::Backend {
        backend: "sqlite",
        message: e.to_string(),
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        backend(e)
    }
}

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// The SQLite [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    writer: Mutex<std::sync::mpsc::Sender<Job>>,
    readers: Mutex<Vec<Connection>>,
}

struct StreamState {
    id: i64,
    head_seq: u64,
    head_hash: String,
    tiles: TileWriter,
}

struct Writer {
    conn: Connection,
    streams: HashMap<String, StreamState>,
}

/// WAL frames (4 KiB pages) past which the writer finishes a checkpoint
/// itself: 64 MiB of WAL.
const WAL_MAX_FRAMES: i64 = 16_384;

/// How far past [`WAL_MAX_FRAMES`] the WAL may grow while the background
/// checkpointer is mid-pass before the writer waits for that pass.
const WAL_HARD_FACTOR: i64 = 4;

/// Least time between two background checkpoints when writes keep coming.
const CHECKPOINT_PAUSE: std::time::Duration = std::time::Duration::from_millis(10);

thread_local! {
    /// Frames in the WAL after this thread's last commit, from SQLite's WAL
    /// hook (it runs on the committing thread; each store's writer is a
    /// thread of its own).
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn record_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(i64::from(frames));
    Ok(())
}

/// Moves WAL checkpoints off the writer thread.
///
/// SQLite's default runs a checkpoint inside the commit that pushes the WAL
/// past 1,000 pages, on the writer's thread: copying pages to the database
/// file and fsyncing it took about a fifth of the writer's time under load
/// (perf). Here a second connection on its own low-priority thread runs
/// `PASSIVE` checkpoints after writes, concurrently with the next commits.
/// Durability is unchanged: a commit is durable once its WAL frames are
/// fsynced (`synchronous=FULL`), and a checkpoint only copies them into the
/// database file.
///
/// A passive checkpoint never waits for the writer, so under constant
/// writes it never catches up fully and the WAL cannot restart: it would
/// grow without bound (measured: 1.4 GB in 10 s), and every append past its
/// end costs the file system a block allocation. So once the WAL holds more
/// than [`WAL_MAX_FRAMES`] frames the writer, between two commits,
/// checkpoints the few frames written since the last background pass; with
/// nothing left behind, its next transaction starts the WAL over from the
/// beginning of the file. It never waits for a background pass in progress
/// (that thread runs at low priority and may be slow to get a core; it
/// starts no new pass until the writer had its turn) unless the WAL reaches
/// [`WAL_HARD_FACTOR`] times the bound.
struct WalControl {
    wake: std::sync::mpsc::SyncSender<()>,
    /// Held while a checkpoint runs (SQLite allows one at a time).
    running: Arc<Mutex<()>>,
    /// Set while the writer waits to finish a checkpoint itself: the
    /// background thread starts no new pass meanwhile.
    yield_to_writer: Arc<std::sync::atomic::AtomicBool>,
    /// [`WAL_MAX_FRAMES`] (smaller in tests).
    max_frames: i64,
}

impl WalControl {
    /// Starts the checkpointer for the database at `path`; the writer's
    /// connection `conn` gets the WAL hook.
    fn start(path: &Path, conn: &Connection, max_frames: i64) -> Result<Self> {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // After the pragma: it installs a WAL hook of its own.
        conn.wal_hook(Some(record_wal_frames));
        let ckpt = open_conn(path)?;
        let (wake, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let running = Arc::new(Mutex::new(()));
        let yield_to_writer = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (r, y) = (running.clone(), yield_to_writer.clone());
        std::thread::Builder::new()
            .name("tk-sqlite-ckpt".into())
            .spawn(move || {
                lower_priority();
                while rx.recv().is_ok() {
                    if y.load(std::sync::atomic::Ordering::Acquire) {
                        continue;
                    }
                    {
                        let _g = r.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        checkpoint(&ckpt);
                    }
                    std::thread::sleep(CHECKPOINT_PAUSE);
                }
                // The writer is gone: one last pass leaves a short WAL.
                let _ = checkpoint(&ckpt);
            })
            .map_err(|e| StoreError::Backend {
                backend: "sqlite",
                message: format!("cannot start checkpointer thread: {e}"),
            })?;
        Ok(Self {
            wake,
            running,
            yield_to_writer,
            max_frames,
        })
    }

    /// Called by the writer after each job: finishes a checkpoint when the
    /// WAL grew past its bound, and wakes the background checkpointer.
    fn after_write(&self, conn: &Connection) {
        let frames = WAL_FRAMES.get();
        if frames > self.max_frames {
            let guard = if frames > WAL_HARD_FACTOR * self.max_frames {
                Some(
                    self.running
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                )
            } else {
                self.running.try_lock().ok()
            };
            match guard {
                Some(_g) => {
                    self.yield_to_writer
                        .store(false, std::sync::atomic::Ordering::Release);
                    if checkpoint(conn).is_some_and(|(log, done)| done == log) {
                        // The next write transaction restarts the WAL.
                        metrics::counter!("trailkeep_sqlite_wal_restarts_total").increment(1);
                    }
                }
                // A background pass is running: let it be the last until we had our turn.
                None => self
                    .yield_to_writer
                    .store(true, std::sync::atomic::Ordering::Release),
            }
        }
        let _ = self.wake.try_send(());
    }
}

/// Lowers the calling thread's CPU priority (nice 19): on a small machine
/// the checkpointer should take the CPU the writer leaves, not compete with
/// it; if it falls behind, the writer finishes the checkpoint (see
/// [`WalControl`]). On Linux the nice value is per thread.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its integer arguments; `who` 0 is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Runs a `PASSIVE` checkpoint; returns (frames in the WAL, frames now in
/// the database file), or `None` when it could not run (another checkpoint
/// held the lock) or failed, which is logged: the WAL keeps every committed
/// frame until a checkpoint succeeds, so nothing is lost, the WAL only grows.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    let r = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    match r {
        Ok((0, log, done)) => {
            metrics::gauge!("trailkeep_sqlite_wal_frames").set(log as f64);
            Some((log, done))
        }
        Ok(_) => None,
        Err(e) => {
            metrics::counter!("trailkeep_sqlite_checkpoint_errors_total").increment(1);
            tracing::error!(error = %e, "SQLite WAL checkpoint failed; committed events stay in the WAL");
            None
        }
    }
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
            .map_err(|e| StoreError::Backend {
                backend: "sqlite",
                message: format!("cannot start writer thread: {e}"),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                writer: Mutex::new(tx),
                readers: Mutex::new(Vec::new()),
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
        self.inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .send(job)
            .map_err(|_| StoreError::Backend {
                backend: "sqlite",
                message: "writer thread stopped".into(),
            })?;
        rx.await.map_err(|_| StoreError::Backend {
            backend: "sqlite",
            message: "writer thread stopped".into(),
        })?
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
        .map_err(|e| StoreError::Backend {
            backend: "sqlite",
            message: format!("reader task failed: {e}"),
        })?
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

impl Writer {
    fn append(&mut self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        let out = self.append_tx(groups);
        if out.is_err() {
            // The cached heads and tiles may be ahead of what is on disk.
            self.streams.clear();
        }
        out
    }

    fn append_tx(&mut self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        let Writer { conn, streams } = self;
        // Failing to begin stores nothing: not ambiguous.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| StoreError::RolledBack(format!("sqlite: {e}")))?;
        let (mut results, touched) = match write_groups(&tx, streams, groups) {
            Ok(r) => r,
            Err(StoreError::Backend { message, .. }) => {
                // A statement failed before COMMIT. Once the rollback is
                // confirmed nothing of this call is stored; a failed rollback
                // is ambiguous and poisons like a failed commit.
                tx.rollback()?;
                return Err(StoreError::RolledBack(format!("sqlite: {message}")));
            }
            // Corruption and the like: dropped (rolled back), and the caller poisons.
            Err(e) => return Err(e),
        };
        // The heads this call moves; if COMMIT fails, the database tells
        // whether they moved.
        let moved: Vec<(String, u64)> = touched
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.accepted.iter().any(|a| !a.duplicate))
            .filter_map(|(name, _)| streams.get(name).map(|st| (name.clone(), st.head_seq)))
            .collect();
        if let Err(e) = tx.commit() {
            // A failed COMMIT is ambiguous, but for a full disk: SQLITE_FULL
            // means a WAL write failed before the commit frame counted, and
            // if the database, read again once the transaction is gone,
            // shows none of its heads moved, nothing of it is stored and
            // the writer keeps serving. (An I/O error at sync stays
            // ambiguous: its frames may still surface at recovery.)
            let full = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull);
            if !full {
                return Err(e.into());
            }
            return match rolled_back(conn, &moved) {
                Ok(true) => Err(StoreError::RolledBack(format!(
                    "sqlite: commit failed and was rolled back: {e}"
                ))),
                _ => Err(e.into()),
            };
        }
        // Later groups of a stream in the same call report the final head.
        for (i, name) in touched.iter().enumerate() {
            if let Some(st) = streams.get(name) {
                results[i].head = Head {
                    seq: st.head_seq,
                    hash: st.head_hash.clone(),
                };
            }
        }
        Ok(results)
    }
}

/// Whether none of `moved`'s streams is at the head a failed commit would
/// have given it (all still below): the commit is then certainly undone.
fn rolled_back(conn: &rusqlite::Connection, moved: &[(String, u64)]) -> Result<bool> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let mut q = conn.prepare_cached("SELECT head_seq FROM streams WHERE name = ?1")?;
    for (name, new_head) in moved {
        let head: Option<i64> = q.query_row([name], |r| r.get(0)).optional()?;
        if head.is_some_and(|h| h as u64 >= *new_head) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Runs every statement of one `append` call inside `tx` (no commit).
fn write_groups(
    tx: &rusqlite::Transaction<'_>,
    streams: &mut HashMap<String, StreamState>,
    groups: Vec<AppendGroup>,
) -> Result<(Vec<GroupResult>, Vec<String>)> {
    let mut results = Vec::with_capacity(groups.len());
    let mut touched: Vec<String> = Vec::new();
    for group in groups {
        let st = load_stream(tx, streams, &group.stream)?;
        let mut accepted = Vec::with_capacity(group.events.len());
        let mut leaves = Vec::with_capacity(group.events.len());
        {
            // Insert first and let the unique index (stream_id, id) detect a
            // repeated id: one index probe instead of a lookup plus an insert.
            // Only the rare duplicate pays for the lookup of the original.
            let mut insert = tx.prepare_cached(
                    "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                     ON CONFLICT (stream_id, id) DO NOTHING",
                )?;
            let mut find =
                tx.prepare_cached("SELECT seq, hash FROM events WHERE stream_id = ?1 AND id = ?2")?;
            // The batcher's precomputed chain, if it starts at our head; it
            // is used up to the first duplicate (see `Sealed`).
            let offered = group.sealed.is_some();
            let mut sealed = group
                .sealed
                .filter(|s| s.after.seq == st.head_seq && s.after.hash == st.head_hash)
                .map(|s| s.events.into_iter());
            if offered {
                let used = if sealed.is_some() { "yes" } else { "no" };
                metrics::counter!("trailkeep_sealed_groups_total", "used" => used).increment(1);
            }
            for ev in group.events {
                let seq = st.head_seq + 1;
                let pre = sealed.as_mut().and_then(Iterator::next);
                let SealedEvent { body, hash, leaf } = match pre {
                    Some(s) => s,
                    None => SealedEvent::compute(&ev, &group.stream, seq, &st.head_hash),
                };
                let inserted = insert.execute(params![
                    st.id,
                    seq as i64,
                    ev.id,
                    ev.event_type,
                    ev.time,
                    ev.received,
                    hash,
                    body
                ])?;
                if inserted == 0 {
                    // Nothing stored: the rest of the seal chains from an
                    // event that is not in the log.
                    sealed = None;
                    let (seq, hash) = find.query_row(params![st.id, ev.id], |r| {
                        Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
                    })?;
                    accepted.push(Accepted {
                        id: ev.id,
                        seq,
                        hash,
                        duplicate: true,
                    });
                    continue;
                }
                leaves.push(leaf);
                st.head_seq = seq;
                st.head_hash.clone_from(&hash);
                accepted.push(Accepted {
                    id: ev.id,
                    seq,
                    hash,
                    duplicate: false,
                });
            }
        }
        if !leaves.is_empty() {
            let mut up = tx.prepare_cached(
                    "INSERT INTO tiles (stream_id, level, idx, strip, data) VALUES (?1, ?2, ?3, ?4, ?5) \
                     ON CONFLICT (stream_id, level, idx, strip) DO UPDATE SET data = excluded.data",
                )?;
            for t in st.tiles.append(&leaves) {
                for (strip, bytes) in crate::chain::tiles::changed_strips(&t) {
                    up.execute(params![st.id, t.id.level, t.id.index as i64, strip, bytes])?;
                }
            }
            tx.prepare_cached("UPDATE streams SET head_seq = ?2, head_hash = ?3 WHERE id = ?1")?
                .execute(params![st.id, st.head_seq as i64, st.head_hash])?;
        }
        touched.push(group.stream.clone());
        results.push(GroupResult {
            accepted,
            head: Head {
                seq: st.head_seq,
                hash: st.head_hash.clone(),
            },
        });
    }
    Ok((results, touched))
}

/// Returns the cached state of `name`, (re)loading it when the stored head
/// differs from the cache (another process wrote, or a previous transaction
/// failed). Creates the stream when it does not exist.
fn load_stream<'a>(
    tx: &rusqlite::Transaction<'_>,
    streams: &'a mut HashMap<String, StreamState>,
    name: &str,
) -> Result<&'a mut StreamState> {
    let row = tx
        .prepare_cached("SELECT id, head_seq, head_hash FROM streams WHERE name = ?1")?
        .query_row([name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)? as u64,
                r.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let (id, head_seq, head_hash) = match row {
        Some(r) => r,
        None => {
            tx.prepare_cached(
                "INSERT INTO streams (name, head_seq, head_hash, created) VALUES (?1, 0, ?2, ?3)",
            )?
            .execute(params![name, ZERO_HASH_HEX, now()])?;
            (tx.last_insert_rowid(), 0, ZERO_HASH_HEX.to_owned())
        }
    };
    let fresh = streams
        .get(name)
        .is_some_and(|s| s.id == id && s.head_seq == head_seq && s.head_hash == head_hash);
    if !fresh {
        let mut failed = None;
        let tiles = TileWriter::resume(head_seq, |t| match read_tile(tx, id, t) {
            Ok(d) => d,
            Err(e) => {
                failed = Some(e);
                None
            }
        });
        if let Some(e) = failed {
            return Err(backend(e));
        }
        let tiles = tiles.map_err(|e| StoreError::Corrupt(format!("stream {name}: {e}")))?;
        streams.insert(
            name.to_owned(),
            StreamState {
                id,
                head_seq,
                head_hash,
                tiles,
            },
        );
    }
    streams
        .get_mut(name)
        .ok_or_else(|| StoreError::Corrupt(format!("stream {name} vanished from cache")))
}

/// Reads one tile as its strips concatenated; `None` when it has none.
///
/// # Errors
/// Backend errors; a strip out of place reads as a short tile, which callers
/// report as corruption.
fn read_tile(c: &Connection, stream_id: i64, t: TileId) -> rusqlite::Result<Option<Vec<u8>>> {
    let mut q = c.prepare_cached("SELECT strip, data FROM tiles WHERE stream_id = ?1 AND level = ?2 AND idx = ?3 ORDER BY strip")?;
    let strips = q
        .query_map(params![stream_id, t.level, t.index as i64], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(crate::chain::tiles::join_strips(strips))
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

const BATCH_COLUMNS: &str = "s.name, b.start_seq, b.end_seq, b.count, b.first_time, b.last_time, b.last_hash, b.object_key, \
    b.object_sha256, b.object_size, b.raw_size, b.manifest_key, b.manifest_sha256, b.created";

fn batch_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArchiveBatch> {
    Ok(ArchiveBatch {
        stream: r.get(0)?,
        start_seq: r.get::<_, i64>(1)? as u64,
        end_seq: r.get::<_, i64>(2)? as u64,
        count: r.get::<_, i64>(3)? as u64,
        first_time: r.get(4)?,
        last_time: r.get(5)?,
        last_hash: r.get(6)?,
        object_key: r.get(7)?,
        object_sha256: r.get(8)?,
        object_size: r.get::<_, i64>(9)? as u64,
        raw_size: r.get::<_, i64>(10)? as u64,
        manifest_key: r.get(11)?,
        manifest_sha256: r.get(12)?,
        created: r.get(13)?,
    })
}

fn key_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRecord> {
    let hash: Vec<u8> = r.get(3)?;
    let mut secret_hash = [0u8; 32];
    if hash.len() == 32 {
        secret_hash.copy_from_slice(&hash);
    }
    Ok(KeyRecord {
        id: r.get(0)?,
        scope: r.get(1)?,
        stream: r.get(2)?,
        secret_hash,
        created: r.get(4)?,
        revoked: r.get(5)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
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
                 (SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id) \
                 FROM streams s ORDER BY s.name",
            )?;
            let rows = q.query_map([], |r| {
                Ok(StreamInfo {
                    name: r.get(0)?,
                    head_seq: r.get::<_, i64>(1)? as u64,
                    head_hash: r.get(2)?,
                    oldest_hot_seq: r.get::<_, Option<i64>>(3)?.map(|s| s as u64),
                    archived_seq: r.get::<_, Option<i64>>(4)?.map(|s| s as u64),
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
            let mut q = c.prepare_cached("SELECT id, scope, stream, secret_hash, created, revoked FROM api_keys ORDER BY created, id")?;
            let rows = q.query_map([], key_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            Ok(c.prepare_cached("SELECT id, scope, stream, secret_hash, created, revoked FROM api_keys WHERE id = ?1")?
                .query_row([id], key_from_row)
                .optional()?)
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

    async fn put_source_state(&self, st: SourceState, fence: Option<&Lease>) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            // The writer thread serializes every write, so the check and the
            // write below cannot interleave with a takeover.
            check_fence(&w.conn, fence.as_ref())?;
            w.conn.execute(
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
        })
        .await
    }

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

    async fn source_states(&self) -> Result<Vec<SourceState>> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT name, stream, connected, last_event_id, last_event_time, taken, duplicates, rejected, filtered, reconnects, last_error, last_error_at, updated \
                 FROM sources ORDER BY name",
            )?;
            let rows = q.query_map([], |r| {
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
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            let existing = tx
                .query_row(
                    &format!("SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id WHERE b.stream_id = ?1 AND b.start_seq = ?2"),
                    params![stream_id, batch.start_seq as i64],
                    batch_from_row,
                )
                .optional()?;
            if let Some(e) = existing {
                return super::same_batch(&e, &batch);
            }
            let last: Option<i64> = tx.query_row(
                "SELECT MAX(end_seq) FROM archive_batches WHERE stream_id = ?1",
                [stream_id],
                |r| r.get(0),
            )?;
            super::check_batch_fits(&batch, last.map(|l| l as u64), head_seq)?;
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
            let rows = q.query_map(params![stream, super::seq_param(from_start), limit as i64], batch_from_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
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
            Ok(q.query_row([stream], batch_from_row).optional()?)
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

    async fn put_delivery_cursor(
        &self,
        cursor: DeliveryCursor,
        fence: Option<&Lease>,
    ) -> Result<()> {
        let fence = fence.cloned();
        self.write(move |w| {
            check_fence(&w.conn, fence.as_ref())?;
            w.conn.execute(
                "INSERT INTO delivery_cursors (destination, stream, seq, archive_past, updated) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (destination, stream) DO UPDATE SET seq = excluded.seq, archive_past = excluded.archive_past, updated = excluded.updated",
                params![cursor.destination, cursor.stream, cursor.seq as i64, cursor.archive_past, now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn delivery_cursors(&self) -> Result<Vec<DeliveryCursor>> {
        self.read(|c| {
            let mut q = c.prepare_cached(
                "SELECT destination, stream, seq, archive_past FROM delivery_cursors ORDER BY destination, stream",
            )?;
            let rows = q.query_map([], |r| {
                Ok(DeliveryCursor {
                    destination: r.get(0)?,
                    stream: r.get(1)?,
                    seq: r.get::<_, i64>(2)? as u64,
                    archive_past: r.get(3)?,
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
            Ok(w.conn.execute(
                "UPDATE dead_letters SET resolved = ?2 WHERE id = ?1 AND resolved IS NULL",
                params![id, at],
            )? == 1)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
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
