//! The PostgreSQL hot store, for several `serve` nodes sharing one database.
//!
//! An append call is one statement (`trailkeep_append`, see
//! `sql/postgres/007_owners.sql` and `append.rs`): the node chains the
//! events onto the heads it has cached, and the statement compares every
//! head (seq, hash) and the owner's epoch under the head rows' locks
//! (`FOR NO KEY UPDATE`, not `FOR UPDATE`, which would also block the
//! key-share locks of foreign-key checks) before it writes events, tiles
//! and heads. Whichever node writes, seqs stay gapless and the chain
//! unbroken; the unique index `events(stream_id, id)` is the backstop
//! against a repeated id. PostgreSQL's `synchronous_commit = on` makes each
//! commit durable (WAL fsync) before it returns.
//!
//! Streams hash into shards owned by nodes ([`super::cluster`],
//! [`crate::shards`]): the owner is the one node that normally appends to
//! them, so its cached heads hold and it keeps several commits in flight.
//! Leases, `sslmode` TLS (`pg_tls`), pool settings, `migrate` and `copy`
//! work on it as on SQLite.

mod append;

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::rows::{BATCH_COLUMNS, KEY_COLUMNS};
use super::{
    AppendGroup, GapRecorded, GroupResult, KeyRecord, Lease, RejectedEvent, Result, SourceGap,
    SourceProgress, SourceReceiver, SourceState, StoreError, StoredCheckpoint, StoredEvent,
    StreamInfo,
};
use super::{ArchiveBatch, BatchCursor, DeadLetter, DeliveryCursor, EventScan, RestoredEvent};
use super::{ArchiveLedger, DeliveryLedger, EventStore, KeyStore, LeaseStore, SourceStore};
use crate::chain::tiles::TileId;
use crate::event::format_received;
use append::read_tile;

/// Shards of a schema created by this version (stored in `cluster_settings`).
const DEFAULT_SHARDS: u32 = 64;

const MIGRATIONS: [&str; 8] = [
    include_str!("../sql/postgres/001_init.sql"),
    include_str!("../sql/postgres/002_leases.sql"),
    include_str!("../sql/postgres/003_archive.sql"),
    include_str!("../sql/postgres/004_dead_letters.sql"),
    include_str!("../sql/postgres/005_delivered.sql"),
    include_str!("../sql/postgres/006_source_gaps.sql"),
    include_str!("../sql/postgres/007_owners.sql"),
    include_str!("../sql/postgres/008_events_fk.sql"),
];

impl super::rows::Columns for tokio_postgres::Row {
    fn text(&self, i: usize) -> Result<String> {
        self.try_get(i).map_err(backend)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        self.try_get(i).map_err(backend)
    }
    fn int(&self, i: usize) -> Result<i64> {
        self.try_get(i).map_err(backend)
    }
    fn bytes(&self, i: usize) -> Result<Vec<u8>> {
        self.try_get(i).map_err(backend)
    }
}

/// Fails with [`StoreError::Fenced`] unless `fence` (if any) is still held;
/// `FOR SHARE` holds off a takeover until the transaction ends.
async fn check_fence(tx: &deadpool_postgres::Transaction<'_>, fence: Option<&Lease>) -> Result<()> {
    let Some(l) = fence else { return Ok(()) };
    let held = tx
        .query_opt(
            "SELECT 1 FROM leases WHERE name = $1 AND holder = $2 AND token = $3 \
             AND expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint FOR SHARE",
            &[&l.name, &l.holder, &l.token],
        )
        .await
        .map_err(backend)?;
    if held.is_none() {
        return Err(StoreError::Fenced(l.name.clone()));
    }
    Ok(())
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    let retryable = pg_retryable(&e);
    StoreError::Backend {
        backend: "postgres",
        message: with_sources(&e),
        retryable,
        source: Some(Box::new(e)),
    }
}

/// A failure with no error value worth keeping (a bad setting, say): not
/// retryable.
fn backend_message(message: impl Into<String>) -> StoreError {
    StoreError::backend_message("postgres", message)
}

/// A pool error: a timeout waiting for a connection is retryable; a
/// connection that could not be made is classified as its cause.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    let message = with_sources(&e);
    let retryable = match &e {
        deadpool_postgres::PoolError::Timeout(_) => true,
        deadpool_postgres::PoolError::Backend(b) => pg_retryable(b),
        _ => false,
    };
    StoreError::Backend {
        backend: "postgres",
        message,
        retryable,
        source: Some(Box::new(e)),
    }
}

/// Whether PostgreSQL's answer may change on its own: a lost or refused
/// connection (the server restarting), a serialization failure or
/// deadlock (class 40), too many connections or too little memory (53),
/// an operator intervention such as a shutdown (57P01-57P03). Refused
/// credentials (28), missing privileges or objects (42), data errors (22)
/// and constraint violations (23) are not.
fn pg_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => {
            e.is_closed() || std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
        }
        Some(c) => {
            let c = c.code();
            c.starts_with("40")
                || c.starts_with("53")
                || c.starts_with("08")
                || matches!(c, "57P01" | "57P02" | "57P03")
        }
    }
}

/// An error with its causes (`a: b: c`), so a TLS failure says why (the
/// certificate, the name) rather than only that the handshake failed.
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

enum Tls {
    None,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// Connection pool settings (`[postgres]` in the config file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Most connections this node opens.
    pub max_connections: usize,
    /// How long to wait for a connection to be established.
    pub connect_timeout: std::time::Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            connect_timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL [`Store`](crate::store::Store).
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
    sequencer: Arc<append::Sequencer>,
    owners: Arc<super::cluster::Owners>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresStore")
    }
}

impl PostgresStore {
    /// Connects to `url` with the default pool settings; see [`Self::connect_with`].
    ///
    /// # Errors
    /// Connection, schema or migration failures.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        Self::connect_with(url, schema, &PoolSettings::default()).await
    }

    /// Connects to `url` (`postgres://…`), using `schema` when given
    /// (created if missing), and applies pending migrations.
    ///
    /// # Errors
    /// Connection, schema or migration failures.
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        pool: &PoolSettings,
    ) -> Result<Self> {
        let mut store = Self::open_pool(url, schema, pool, false).await?;
        store.migrate().await?;
        store.read_shards().await?;
        Ok(store)
    }

    /// Connects to `url` to read only: every session is
    /// `default_transaction_read_only` (a role with SELECT rights is
    /// enough), and nothing is migrated; the schema must be current.
    ///
    /// # Errors
    /// Connection failures; a schema that is not this binary's (older: run
    /// `trailkeep migrate`; newer: [`StoreError::SchemaTooNew`]).
    pub async fn connect_read_only(url: &str, pool: &PoolSettings) -> Result<Self> {
        let store = Self::open_pool(url, None, pool, true).await?;
        let c = store.client().await?;
        let version: i64 = match c.query_opt("SELECT version FROM schema_version", &[]).await {
            Ok(row) => row.map_or(0, |r| r.get(0)),
            // No table at all: nothing was ever migrated here.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => 0,
            Err(e) => return Err(backend(e)),
        };
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported,
            });
        }
        if version < supported {
            return Err(backend_message(format!(
                "schema version {version}, older than this binary's {supported}; `trailkeep migrate --store URL` (or serve) upgrades it"
            )));
        }
        drop(c);
        let mut store = store;
        store.read_shards().await?;
        Ok(store)
    }

    async fn open_pool(
        url: &str,
        schema: Option<&str>,
        pool: &PoolSettings,
        read_only: bool,
    ) -> Result<Self> {
        let (url, tls) = super::pg_tls::split_tls_params(url)
            .map_err(|e| backend_message(format!("connection string: {e}")))?;
        let tls = match super::pg_tls::client_config(&tls)
            .map_err(|e| backend_message(format!("tls: {e}")))?
        {
            Some(c) => Tls::Rustls(tokio_postgres_rustls::MakeRustlsConnect::new(c)),
            None => Tls::None,
        };
        let mut cfg = tokio_postgres::Config::from_str(&url)
            .map_err(|e| backend_message(format!("connection string: {e}")))?;
        cfg.connect_timeout(pool.connect_timeout);
        if let Some(s) = schema {
            if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(backend_message(format!(
                    "schema name {s:?} must be letters, digits and _"
                )));
            }
            let (client, task) = match &tls {
                Tls::None => {
                    let (client, conn) = cfg.connect(NoTls).await.map_err(backend)?;
                    (
                        client,
                        tokio::spawn(async move {
                            let _ = conn.await;
                        }),
                    )
                }
                Tls::Rustls(t) => {
                    let (client, conn) = cfg.connect(t.clone()).await.map_err(backend)?;
                    (
                        client,
                        tokio::spawn(async move {
                            let _ = conn.await;
                        }),
                    )
                }
            };
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
                .await
                .map_err(backend)?;
            drop(client);
            let _ = task.await;
            cfg.options(format!("-c search_path={s}"));
        }
        if read_only {
            let options = match cfg.get_options() {
                Some(o) if !o.is_empty() => format!("{o} -c default_transaction_read_only=on"),
                _ => "-c default_transaction_read_only=on".to_owned(),
            };
            cfg.options(options);
        }
        let mcfg = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match tls {
            Tls::None => Manager::from_config(cfg, NoTls, mcfg),
            Tls::Rustls(t) => Manager::from_config(cfg, t, mcfg),
        };
        let pool = Pool::builder(mgr)
            .max_size(pool.max_connections)
            .build()
            .map_err(|e| backend_message(e.to_string()))?;
        Ok(Self {
            pool,
            sequencer: Arc::default(),
            owners: Arc::new(super::cluster::Owners::new(DEFAULT_SHARDS)),
        })
    }

    /// Reads the shard count the schema was created with.
    async fn read_shards(&mut self) -> Result<()> {
        let c = self.client().await?;
        let shards: i32 = c
            .query_one("SELECT shards FROM cluster_settings", &[])
            .await
            .map_err(backend)?
            .get(0);
        self.owners = Arc::new(super::cluster::Owners::new(shards.max(1) as u32));
        Ok(())
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // One migrator at a time across nodes.
        tx.batch_execute("SELECT pg_advisory_xact_lock(7470001); CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .await
            .map_err(backend)?;
        let version: i64 = tx
            .query_opt("SELECT version FROM schema_version", &[])
            .await
            .map_err(backend)?
            .map_or(0, |r| r.get(0));
        let supported = MIGRATIONS.len() as i64;
        if version > supported {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported,
            });
        }
        for sql in MIGRATIONS.iter().skip(version as usize) {
            tx.batch_execute(sql).await.map_err(backend)?;
        }
        tx.batch_execute("DELETE FROM schema_version")
            .await
            .map_err(backend)?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&supported],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
}

#[async_trait]
impl EventStore for PostgresStore {
    async fn append(&self, groups: Vec<AppendGroup>) -> Result<Vec<GroupResult>> {
        self.append_cas(groups).await
    }

    /// The owner of a shard is normally its streams' only writer, so the
    /// batcher's predicted heads hold; a wrong one costs a recomputation.
    fn uses_seals(&self) -> bool {
        true
    }

    /// Three commits in flight on separate connections, each chained onto
    /// the one before (see `postgres/append.rs`); PostgreSQL flushes their WAL
    /// together.
    fn pipeline_depth(&self) -> usize {
        3
    }

    fn cluster(&self) -> Option<Arc<dyn super::cluster::ClusterStore>> {
        Some(Arc::new(self.clone()))
    }

    async fn streams(&self) -> Result<Vec<StreamInfo>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT s.name, s.head_seq, s.head_hash, (SELECT MIN(seq) FROM events e WHERE e.stream_id = s.id), \
                 (SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id), \
                 (SELECT received FROM events e WHERE e.stream_id = s.id AND e.seq = s.head_seq) FROM streams s ORDER BY s.name",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| StreamInfo {
                name: r.get(0),
                head_seq: r.get::<_, i64>(1) as u64,
                head_hash: r.get(2),
                oldest_hot_seq: r.get::<_, Option<i64>>(3).map(|s| s as u64),
                archived_seq: r.get::<_, Option<i64>>(4).map(|s| s as u64),
                head_received: r.get(5),
            })
            .collect())
    }

    async fn read_events(
        &self,
        stream: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = c
            .query(
                "SELECT e.seq, e.hash, e.body, e.restored IS NOT NULL FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = $1 AND e.seq >= $2 ORDER BY e.seq LIMIT $3",
                &[&stream, &super::seq_param(from_seq), &limit],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                seq: r.get::<_, i64>(0) as u64,
                hash: r.get(1),
                body: r.get(2),
                restored: r.get(3),
            })
            .collect())
    }

    async fn scan_events(&self, scan: &EventScan) -> Result<Vec<StoredEvent>> {
        let c = self.client().await?;
        let limit = scan.limit.min(i64::MAX as usize) as i64;
        let rows = c
            .query(
                "SELECT e.seq, e.hash, e.body, e.restored IS NOT NULL FROM events e JOIN streams s ON s.id = e.stream_id \
                 WHERE s.name = $1 AND e.seq >= $2 AND e.seq <= $3 \
                 AND ($4::text IS NULL OR e.time >= $4) AND ($5::text IS NULL OR e.time < $5) \
                 AND ($6::text IS NULL OR e.received >= $6) AND ($7::text IS NULL OR e.received < $7) \
                 AND ($8::text[] IS NULL OR e.type = ANY($8)) \
                 ORDER BY e.seq LIMIT $9",
                &[
                    &scan.stream,
                    &super::seq_param(scan.from_seq),
                    &super::seq_param(scan.to_seq),
                    &scan.time_from,
                    &scan.time_before,
                    &scan.received_from,
                    &scan.received_before,
                    &scan.types,
                    &limit,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                seq: r.get::<_, i64>(0) as u64,
                hash: r.get(1),
                body: r.get(2),
                restored: r.get(3),
            })
            .collect())
    }

    async fn hot_ranges(&self, stream: &str, from: u64, to: u64) -> Result<Vec<(u64, u64)>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT MIN(seq), MAX(seq) FROM (SELECT e.seq, e.seq - ROW_NUMBER() OVER (ORDER BY e.seq) AS g \
                 FROM events e JOIN streams s ON s.id = e.stream_id WHERE s.name = $1 AND e.seq >= $2 AND e.seq <= $3) r \
                 GROUP BY g ORDER BY 1",
                &[&stream, &super::seq_param(from), &super::seq_param(to)],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64))
            .collect())
    }

    async fn tiles(&self, stream: &str, ids: &[TileId]) -> Result<Vec<(TileId, Vec<u8>)>> {
        let c = self.client().await?;
        let Some(row) = c
            .query_opt("SELECT id FROM streams WHERE name = $1", &[&stream])
            .await
            .map_err(backend)?
        else {
            return Ok(Vec::new());
        };
        let sid: i64 = row.get(0);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = read_tile(&c, sid, *id).await? {
                out.push((*id, d));
            }
        }
        Ok(out)
    }

    async fn put_checkpoint(&self, stream: &str, cp: StoredCheckpoint) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                "INSERT INTO checkpoints (stream_id, size, root, note, created) SELECT id, $2, $3, $4, $5 FROM streams WHERE name = $1 \
                 ON CONFLICT (stream_id, size) DO NOTHING",
                &[&stream, &(cp.size as i64), &cp.root, &cp.note, &cp.created],
            )
            .await
            .map_err(backend)?;
        if n == 0
            && c.query_opt("SELECT 1 FROM streams WHERE name = $1", &[&stream])
                .await
                .map_err(backend)?
                .is_none()
        {
            return Err(StoreError::NotFound(format!("stream {stream}")));
        }
        Ok(())
    }

    async fn streams_behind_checkpoint(&self) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c.query("SELECT s.name FROM streams s WHERE s.head_seq > COALESCE((SELECT MAX(c.size) FROM checkpoints c WHERE c.stream_id = s.id), 0) ORDER BY s.name", &[]).await.map_err(backend)?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn latest_checkpoint(&self, stream: &str) -> Result<Option<StoredCheckpoint>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT c.size, c.root, c.note, c.created FROM checkpoints c JOIN streams s ON s.id = c.stream_id \
                 WHERE s.name = $1 ORDER BY c.size DESC LIMIT 1",
                &[&stream],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| StoredCheckpoint {
            size: r.get::<_, i64>(0) as u64,
            root: r.get(1),
            note: r.get(2),
            created: r.get(3),
        }))
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn create_key(&self, key: KeyRecord) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO api_keys (id, scope, stream, secret_hash, created, revoked) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&key.id, &key.scope, &key.stream, &key.secret_hash.to_vec(), &key.created, &key.revoked],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created, id"),
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(super::rows::key).collect()
    }

    async fn get_key(&self, id: &str) -> Result<Option<KeyRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(super::rows::key).transpose()
    }

    async fn revoke_key(&self, id: &str, at: &str) -> Result<bool> {
        let c = self.client().await?;
        let n = c
            .execute(
                "UPDATE api_keys SET revoked = $2 WHERE id = $1 AND revoked IS NULL",
                &[&id, &at],
            )
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }
}

#[async_trait]
impl SourceStore for PostgresStore {
    async fn put_source_state(&self, st: SourceState, fence: Option<&Lease>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        pg_put_state(&*tx, &st).await?;
        tx.commit().await.map_err(backend)
    }

    async fn source_states(&self) -> Result<Vec<SourceState>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!("SELECT {STATE_COLUMNS} FROM sources ORDER BY name"),
                &[],
            )
            .await
            .map_err(backend)?;
        let now = now_ms();
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut st = pg_state_row(&r);
            st.connected |= pg_receivers(&**c, &st.name)
                .await?
                .iter()
                .any(|r| super::receiver_live(r, now));
            st.gaps_total = c
                .query_one(
                    "SELECT count(*) FROM source_gaps WHERE source = $1",
                    &[&st.name],
                )
                .await
                .map_err(backend)?
                .get::<_, i64>(0) as u64;
            st.gaps = pg_gaps(&**c, &st.name, super::RECENT_GAPS).await?;
            out.push(st);
        }
        Ok(out)
    }

    async fn add_rejected(&self, e: RejectedEvent) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO source_rejected (source, at, position, reason, raw) VALUES ($1, $2, $3, $4, $5)",
            &[&e.source, &e.at, &e.position, &e.reason, &e.raw],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn rejected(&self, source: Option<&str>, limit: usize) -> Result<Vec<RejectedEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT source, at, position, reason, raw FROM source_rejected WHERE $1::text IS NULL OR source = $1 ORDER BY id LIMIT $2",
                &[&source, &(limit.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| RejectedEvent {
                source: r.get(0),
                at: r.get(1),
                position: r.get(2),
                reason: r.get(3),
                raw: r.get(4),
            })
            .collect())
    }

    async fn add_source_progress(&self, p: SourceProgress, fence: Option<&Lease>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        // Several nodes may write one source: the row lock orders them.
        tx.execute(
            "INSERT INTO sources (name, stream, connected, taken, duplicates, rejected, filtered, reconnects, updated) \
             VALUES ($1, $2, false, 0, 0, 0, 0, 0, $3) ON CONFLICT (name) DO NOTHING",
            &[&p.name, &p.stream, &p.updated],
        )
        .await
        .map_err(backend)?;
        let row = tx
            .query_one(
                &format!("SELECT {STATE_COLUMNS} FROM sources WHERE name = $1 FOR UPDATE"),
                &[&p.name],
            )
            .await
            .map_err(backend)?;
        let mut st = pg_state_row(&row);
        p.apply(&mut st);
        pg_put_state(&*tx, &st).await?;
        tx.commit().await.map_err(backend)
    }

    async fn put_source_receiver(&self, r: SourceReceiver) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO source_receivers (source, node, receiving, since_ms, until_ms, ended, pending_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (source, node) DO UPDATE SET receiving = excluded.receiving, since_ms = excluded.since_ms, \
             until_ms = excluded.until_ms, ended = excluded.ended, pending_ms = excluded.pending_ms",
            &[&r.source, &r.node, &r.receiving, &r.since_ms, &r.until_ms, &r.ended, &r.pending_ms],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn source_receivers(&self, source: &str) -> Result<Vec<SourceReceiver>> {
        let c = self.client().await?;
        pg_receivers(&**c, source).await
    }

    async fn record_source_gap(&self, gap: SourceGap, merge_ms: i64) -> Result<GapRecorded> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // One recorder per source at a time, so two nodes recording the
        // same gap merge instead of both inserting.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('trailkeep source gaps ' || $1))",
            &[&gap.source],
        )
        .await
        .map_err(backend)?;
        let latest = tx
            .query_opt(
                &format!("SELECT id, {GAP_COLUMNS} FROM source_gaps WHERE source = $1 ORDER BY end_ms DESC, id DESC LIMIT 1"),
                &[&gap.source],
            )
            .await
            .map_err(backend)?;
        let merged = latest.and_then(|r| {
            let id: i64 = r.get(0);
            super::merge_gap(&pg_gap_row_at(&r, 1), &gap, merge_ms).map(|m| (id, m))
        });
        let how = match merged {
            Some((id, (m, how))) => {
                if how == GapRecorded::Merged {
                    tx.execute(
                        "UPDATE source_gaps SET start_ms = $2, end_ms = $3, start_at = $4, end_at = $5, resume = $6, merged = $7 WHERE id = $1",
                        &[&id, &m.start_ms, &m.end_ms, &m.start, &m.end, &m.resume, &(m.merged as i64)],
                    )
                    .await
                    .map_err(backend)?;
                }
                how
            }
            None => {
                tx.execute(
                    "INSERT INTO source_gaps (source, start_ms, end_ms, start_at, end_at, reason, resume, merged) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[&gap.source, &gap.start_ms, &gap.end_ms, &gap.start, &gap.end, &gap.reason, &gap.resume, &(gap.merged.max(1) as i64)],
                )
                .await
                .map_err(backend)?;
                GapRecorded::New
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(how)
    }

    async fn source_gaps(&self, source: &str, limit: usize) -> Result<Vec<SourceGap>> {
        let c = self.client().await?;
        pg_gaps(&**c, source, limit).await
    }

    async fn gaps_to_log(&self, source: &str, logged_before_ms: i64) -> Result<Vec<SourceGap>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {GAP_COLUMNS} FROM source_gaps WHERE source = $1 AND (logged_end_ms IS NULL OR logged_end_ms <> end_ms) \
                     AND (logged_at_ms IS NULL OR logged_at_ms < $2) ORDER BY end_ms LIMIT 100"
                ),
                &[&source, &logged_before_ms],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| pg_gap_row_at(r, 0)).collect())
    }

    async fn gap_logged(&self, source: &str, start_ms: i64, end_ms: i64, at_ms: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE source_gaps SET logged_end_ms = $3, logged_at_ms = $4 WHERE source = $1 AND start_ms = $2",
            &[&source, &start_ms, &end_ms, &at_ms],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }
}

const STATE_COLUMNS: &str = "name, stream, connected, last_event_id, last_event_time, taken, duplicates, rejected, filtered, reconnects, last_error, last_error_at, updated";
const GAP_COLUMNS: &str = "source, start_ms, end_ms, start_at, end_at, reason, resume, merged";

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn pg_state_row(r: &tokio_postgres::Row) -> SourceState {
    SourceState {
        name: r.get(0),
        stream: r.get(1),
        connected: r.get(2),
        last_event_id: r.get(3),
        last_event_time: r.get(4),
        taken: r.get::<_, i64>(5) as u64,
        duplicates: r.get::<_, i64>(6) as u64,
        rejected: r.get::<_, i64>(7) as u64,
        filtered: r.get::<_, i64>(8) as u64,
        reconnects: r.get::<_, i64>(9) as u64,
        last_error: r.get(10),
        last_error_at: r.get(11),
        updated: r.get(12),
        gaps_total: 0,
        gaps: Vec::new(),
    }
}

fn pg_gap_row_at(r: &tokio_postgres::Row, i: usize) -> SourceGap {
    SourceGap {
        source: r.get(i),
        start_ms: r.get(i + 1),
        end_ms: r.get(i + 2),
        start: r.get(i + 3),
        end: r.get(i + 4),
        reason: r.get(i + 5),
        resume: r.get(i + 6),
        merged: r.get::<_, i64>(i + 7) as u64,
    }
}

async fn pg_gaps(
    c: &(impl tokio_postgres::GenericClient + Sync),
    source: &str,
    limit: usize,
) -> Result<Vec<SourceGap>> {
    let rows = c
        .query(
            &format!("SELECT {GAP_COLUMNS} FROM source_gaps WHERE source = $1 ORDER BY end_ms DESC, id DESC LIMIT $2"),
            &[&source, &(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(backend)?;
    Ok(rows.iter().map(|r| pg_gap_row_at(r, 0)).collect())
}

async fn pg_receivers(
    c: &(impl tokio_postgres::GenericClient + Sync),
    source: &str,
) -> Result<Vec<SourceReceiver>> {
    let rows = c
        .query(
            "SELECT source, node, receiving, since_ms, until_ms, ended, pending_ms FROM source_receivers WHERE source = $1 ORDER BY node",
            &[&source],
        )
        .await
        .map_err(backend)?;
    Ok(rows
        .iter()
        .map(|r| SourceReceiver {
            source: r.get(0),
            node: r.get(1),
            receiving: r.get(2),
            since_ms: r.get(3),
            until_ms: r.get(4),
            ended: r.get(5),
            pending_ms: r.get(6),
        })
        .collect())
}

async fn pg_put_state(
    c: &(impl tokio_postgres::GenericClient + Sync),
    st: &SourceState,
) -> Result<()> {
    c.execute(
        "INSERT INTO sources (name, stream, connected, last_event_id, last_event_time, taken, duplicates, rejected, filtered, reconnects, last_error, last_error_at, updated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (name) DO UPDATE SET stream = excluded.stream, connected = excluded.connected, last_event_id = excluded.last_event_id, \
         last_event_time = excluded.last_event_time, taken = excluded.taken, duplicates = excluded.duplicates, rejected = excluded.rejected, \
         filtered = excluded.filtered, reconnects = excluded.reconnects, last_error = excluded.last_error, last_error_at = excluded.last_error_at, \
         updated = excluded.updated",
        &[
            &st.name,
            &st.stream,
            &st.connected,
            &st.last_event_id,
            &st.last_event_time,
            &(st.taken as i64),
            &(st.duplicates as i64),
            &(st.rejected as i64),
            &(st.filtered as i64),
            &(st.reconnects as i64),
            &st.last_error,
            &st.last_error_at,
            &st.updated,
        ],
    )
    .await
    .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl super::cluster::ClusterStore for PostgresStore {
    fn owners(&self) -> Arc<super::cluster::Owners> {
        self.owners.clone()
    }

    async fn heartbeat(
        &self,
        node: &str,
        url: Option<&str>,
        ttl: std::time::Duration,
    ) -> Result<(i64, Vec<super::cluster::NodeInfo>)> {
        let c = self.client().await?;
        let ttl = ttl.as_millis() as i64;
        let now: i64 = c
            .query_one(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) \
                 INSERT INTO nodes (node, url, seen_ms) SELECT $1, $2, ms FROM now \
                 ON CONFLICT (node) DO UPDATE SET url = excluded.url, seen_ms = excluded.seen_ms \
                 RETURNING seen_ms",
                &[&node, &url],
            )
            .await
            .map_err(backend)?
            .get(0);
        // Nodes gone for a day (and holding no lease) are forgotten, so
        // that `trailkeep cluster` does not list every node ever started.
        c.execute(
            "DELETE FROM nodes n WHERE n.seen_ms < $1::bigint - $2::bigint \
             AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.holder = n.node AND l.expires_ms > $1::bigint)",
            &[&now, &(super::cluster::FORGET_NODES_AFTER.as_millis() as i64)],
        )
        .await
        .map_err(backend)?;
        let rows = c
            .query(
                "SELECT node, url, seen_ms FROM nodes WHERE seen_ms > $1::bigint - $2::bigint ORDER BY node",
                &[&now, &ttl],
            )
            .await
            .map_err(backend)?;
        Ok((
            now,
            rows.into_iter()
                .map(|r| super::cluster::NodeInfo {
                    node: r.get(0),
                    url: r.get(1),
                    seen_ms: r.get(2),
                })
                .collect(),
        ))
    }

    async fn shard_leases(&self) -> Result<Vec<Lease>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT name, holder, token, expires_ms FROM leases WHERE name LIKE 'shard:%' ORDER BY name",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| Lease {
                name: r.get(0),
                holder: r.get(1),
                token: r.get(2),
                expires_ms: r.get(3),
            })
            .collect())
    }

    async fn acquire_leases(
        &self,
        names: &[String],
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Vec<Lease>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.client().await?;
        let ttl = ttl.as_millis() as i64;
        // As acquire_lease, for many names in one statement (sorted, so two
        // nodes never lock lease rows in opposite orders).
        let mut names = names.to_vec();
        names.sort();
        let rows = c
            .query(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) \
                 INSERT INTO leases (name, holder, token, expires_ms) \
                 SELECT n, $2, 1, (SELECT ms FROM now) + $3::bigint FROM unnest($1::text[]) AS n ORDER BY n \
                 ON CONFLICT (name) DO UPDATE SET \
                   token = CASE WHEN leases.holder = excluded.holder AND leases.expires_ms > (SELECT ms FROM now) THEN leases.token ELSE leases.token + 1 END, \
                   holder = excluded.holder, expires_ms = excluded.expires_ms \
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= (SELECT ms FROM now) \
                 RETURNING name, token, expires_ms",
                &[&names, &holder, &ttl],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .into_iter()
            .map(|r| Lease {
                name: r.get(0),
                holder: holder.to_owned(),
                token: r.get(1),
                expires_ms: r.get(2),
            })
            .collect())
    }

    async fn release_leases(&self, names: &[String], holder: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_ms = 0 WHERE name = ANY($1) AND holder = $2",
            &[&names, &holder],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn current_lease(&self, name: &str) -> Result<Option<Lease>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                "SELECT holder, token, expires_ms FROM leases WHERE name = $1 \
                 AND expires_ms > (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[&name],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| Lease {
            name: name.to_owned(),
            holder: r.get(0),
            token: r.get(1),
            expires_ms: r.get(2),
        }))
    }

    async fn leave(&self, node: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute("DELETE FROM nodes WHERE node = $1", &[&node])
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<super::cluster::ClusterSnapshot> {
        let mut c = self.client().await?;
        // One snapshot for the three reads, so a node and the leases it
        // holds are seen at the same moment.
        let tx = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(backend)?;
        let now_ms: i64 = tx
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        let nodes = tx
            .query("SELECT node, url, seen_ms FROM nodes ORDER BY node", &[])
            .await
            .map_err(backend)?
            .into_iter()
            .map(|r| super::cluster::NodeInfo {
                node: r.get(0),
                url: r.get(1),
                seen_ms: r.get(2),
            })
            .collect();
        let leases = tx
            .query(
                "SELECT name, holder, token, expires_ms FROM leases WHERE name LIKE 'shard:%' ORDER BY name",
                &[],
            )
            .await
            .map_err(backend)?
            .into_iter()
            .map(|r| Lease {
                name: r.get(0),
                holder: r.get(1),
                token: r.get(2),
                expires_ms: r.get(3),
            })
            .collect();
        tx.commit().await.map_err(backend)?;
        Ok(super::cluster::ClusterSnapshot {
            now_ms,
            nodes,
            leases,
        })
    }
}

#[async_trait]
impl LeaseStore for PostgresStore {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>> {
        let c = self.client().await?;
        let ttl = ttl.as_millis() as i64;
        // The database's clock, so that nodes' clocks do not matter.
        let row = c
            .query_opt(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) \
                 INSERT INTO leases (name, holder, token, expires_ms) SELECT $1, $2, 1, ms + $3 FROM now \
                 ON CONFLICT (name) DO UPDATE SET \
                   token = CASE WHEN leases.holder = excluded.holder AND leases.expires_ms > (SELECT ms FROM now) THEN leases.token ELSE leases.token + 1 END, \
                   holder = excluded.holder, expires_ms = excluded.expires_ms \
                 WHERE leases.holder = excluded.holder OR leases.expires_ms <= (SELECT ms FROM now) \
                 RETURNING token, expires_ms",
                &[&name, &holder, &ttl],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| Lease {
            name: name.to_owned(),
            holder: holder.to_owned(),
            token: r.get(0),
            expires_ms: r.get(1),
        }))
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND token = $3",
            &[&lease.name, &lease.holder, &lease.token],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }
}

#[async_trait]
impl ArchiveLedger for PostgresStore {
    async fn record_archive_batch(&self, batch: ArchiveBatch, fence: Option<&Lease>) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        let row = tx
            .query_opt(
                "SELECT id, head_seq FROM streams WHERE name = $1",
                &[&batch.stream],
            )
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("stream {}", batch.stream)))?;
        let sid: i64 = row.get(0);
        let head = super::rows::Columns::count(&row, 1)?;
        let existing = tx
            .query_opt(
                &format!("SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id WHERE b.stream_id = $1 AND b.start_seq = $2"),
                &[&sid, &(batch.start_seq as i64)],
            )
            .await
            .map_err(backend)?;
        let existing = existing.as_ref().map(super::rows::batch).transpose()?;
        let last: Option<i64> = tx
            .query_one(
                "SELECT MAX(end_seq) FROM archive_batches WHERE stream_id = $1",
                &[&sid],
            )
            .await
            .map_err(backend)?
            .get(0);
        if !super::batch_is_new(existing.as_ref(), last, head, &batch)? {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO archive_batches (stream_id, start_seq, end_seq, count, first_time, last_time, last_hash, object_key, \
             object_sha256, object_size, raw_size, manifest_key, manifest_sha256, created) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &sid, &(batch.start_seq as i64), &(batch.end_seq as i64), &(batch.count as i64), &batch.first_time,
                &batch.last_time, &batch.last_hash, &batch.object_key, &batch.object_sha256, &(batch.object_size as i64),
                &(batch.raw_size as i64), &batch.manifest_key, &batch.manifest_sha256, &batch.created,
            ],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn archive_batches(
        &self,
        stream: Option<&str>,
        from_start: u64,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = c
            .query(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                     WHERE ($1::TEXT IS NULL OR s.name = $1) AND b.start_seq >= $2 ORDER BY s.name, b.start_seq LIMIT $3"
                ),
                &[&stream, &super::seq_param(from_start), &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(super::rows::batch).collect()
    }

    async fn archive_batches_newest(
        &self,
        stream: Option<&str>,
        before: Option<&BatchCursor>,
        limit: usize,
    ) -> Result<Vec<ArchiveBatch>> {
        let c = self.client().await?;
        let limit = limit.min(i64::MAX as usize) as i64;
        let (created, name, start) = match before {
            Some(b) => (
                Some(b.created.as_str()),
                Some(b.stream.as_str()),
                super::seq_param(b.start_seq),
            ),
            None => (None, None, 0),
        };
        let rows = c
            .query(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                     WHERE ($1::TEXT IS NULL OR s.name = $1) \
                     AND ($2::TEXT IS NULL OR (b.created, s.name, b.start_seq) < ($2::TEXT, $3::TEXT, $4::BIGINT)) \
                     ORDER BY b.created DESC, s.name DESC, b.start_seq DESC LIMIT $5"
                ),
                &[&stream, &created, &name, &start, &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(super::rows::batch).collect()
    }

    async fn last_archive_batch(&self, stream: &str) -> Result<Option<ArchiveBatch>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                     WHERE s.name = $1 ORDER BY b.start_seq DESC LIMIT 1"
                ),
                &[&stream],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(super::rows::batch).transpose()
    }

    async fn archive_batch_at(&self, stream: &str, seq: u64) -> Result<Option<ArchiveBatch>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &format!(
                    "SELECT {BATCH_COLUMNS} FROM archive_batches b JOIN streams s ON s.id = b.stream_id \
                     WHERE s.name = $1 AND b.start_seq <= $2 ORDER BY b.start_seq DESC LIMIT 1"
                ),
                &[&stream, &super::seq_param(seq)],
            )
            .await
            .map_err(backend)?;
        let found = row.as_ref().map(super::rows::batch).transpose()?;
        Ok(found.filter(|b| b.end_seq >= seq))
    }

    async fn delete_archived(
        &self,
        stream: &str,
        through_seq: u64,
        restored_before: &str,
        max_rows: usize,
        fence: Option<&Lease>,
    ) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        // The store's own guard for invariant 5: never past what is recorded as archived.
        let n = tx
            .execute(
                "WITH s AS (SELECT id, COALESCE((SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = streams.id), 0) AS archived \
                            FROM streams WHERE name = $1) \
                 DELETE FROM events WHERE stream_id = (SELECT id FROM s) AND seq IN ( \
                   SELECT e.seq FROM events e, s WHERE e.stream_id = s.id AND e.seq <= LEAST($2, s.archived) \
                   AND (e.restored IS NULL OR e.restored < $3) ORDER BY e.seq LIMIT $4)",
                &[&stream, &(through_seq.min(i64::MAX as u64) as i64), &restored_before, &(max_rows.min(i64::MAX as usize) as i64)],
            )
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }

    async fn restore_events(
        &self,
        stream: &str,
        events: Vec<RestoredEvent>,
        at: &str,
    ) -> Result<u64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let row = tx
            .query_opt(
                "SELECT s.id, COALESCE((SELECT MAX(end_seq) FROM archive_batches b WHERE b.stream_id = s.id), 0) FROM streams s WHERE s.name = $1",
                &[&stream],
            )
            .await
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("stream {stream}")))?;
        let (sid, archived): (i64, i64) = (row.get(0), row.get(1));
        let ins = tx
            .prepare(
                "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body, restored) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(backend)?;
        let mut n = 0;
        for e in &events {
            if e.seq == 0 || e.seq > archived as u64 {
                return Err(StoreError::Corrupt(format!(
                    "stream {stream}: seq {} is not covered by a recorded archive batch (archived through {archived})",
                    e.seq
                )));
            }
            n += tx
                .execute(
                    &ins,
                    &[
                        &sid,
                        &(e.seq as i64),
                        &e.id,
                        &e.event_type,
                        &e.time,
                        &e.received,
                        &e.hash,
                        &e.body,
                        &at,
                    ],
                )
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(n)
    }
}

#[async_trait]
impl DeliveryLedger for PostgresStore {
    async fn put_delivery_cursor(
        &self,
        cursor: DeliveryCursor,
        fence: Option<&Lease>,
    ) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        tx.execute(
            "INSERT INTO delivery_cursors (destination, stream, seq, archive_past, updated, delivered) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (destination, stream) DO UPDATE SET seq = excluded.seq, archive_past = excluded.archive_past, updated = excluded.updated, \
             delivered = delivery_cursors.delivered + excluded.delivered",
            &[&cursor.destination, &cursor.stream, &(cursor.seq as i64), &cursor.archive_past, &format_received(time::OffsetDateTime::now_utc()), &(cursor.delivered as i64)],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn delivery_cursors(&self) -> Result<Vec<DeliveryCursor>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT destination, stream, seq, archive_past, delivered FROM delivery_cursors ORDER BY destination, stream",
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| DeliveryCursor {
                destination: r.get(0),
                stream: r.get(1),
                seq: r.get::<_, i64>(2) as u64,
                archive_past: r.get(3),
                delivered: r.get::<_, i64>(4) as u64,
            })
            .collect())
    }

    async fn add_dead_letter(
        &self,
        l: DeadLetter,
        archive_past: bool,
        fence: Option<&Lease>,
    ) -> Result<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        check_fence(&tx, fence).await?;
        let status = l.status.map(i32::from);
        let id: i64 = tx
            .query_one(
                "INSERT INTO dead_letters (destination, stream, start_seq, end_seq, status, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&l.destination, &l.stream, &(l.start_seq as i64), &(l.end_seq as i64), &status, &l.error, &l.at],
            )
            .await
            .map_err(backend)?
            .get(0);
        tx.execute(
            "INSERT INTO delivery_cursors (destination, stream, seq, archive_past, updated) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (destination, stream) DO UPDATE SET seq = GREATEST(delivery_cursors.seq, excluded.seq), updated = excluded.updated",
            &[&l.destination, &l.stream, &(l.end_seq as i64), &archive_past, &l.at],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(id)
    }

    async fn dead_letters(
        &self,
        destination: Option<&str>,
        include_resolved: bool,
    ) -> Result<Vec<DeadLetter>> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT id, destination, stream, start_seq, end_seq, status, error, at, resolved FROM dead_letters \
                 WHERE ($1::TEXT IS NULL OR destination = $1) AND ($2 OR resolved IS NULL) ORDER BY id",
                &[&destination, &include_resolved],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                id: r.get(0),
                destination: r.get(1),
                stream: r.get(2),
                start_seq: r.get::<_, i64>(3) as u64,
                end_seq: r.get::<_, i64>(4) as u64,
                status: r
                    .get::<_, Option<i32>>(5)
                    .and_then(|s| u16::try_from(s).ok()),
                error: r.get(6),
                at: r.get(7),
                resolved: r.get(8),
            })
            .collect())
    }

    async fn resolve_dead_letter(&self, id: i64, at: &str) -> Result<bool> {
        let c = self.client().await?;
        // The retry delivered the letter's events: one statement (one
        // transaction) resolves it and counts them with the cursor's.
        let row = c
            .query_one(
                "WITH r AS (UPDATE dead_letters SET resolved = $2 WHERE id = $1 AND resolved IS NULL \
                 RETURNING destination, stream, end_seq - start_seq + 1 AS events), \
                 d AS (UPDATE delivery_cursors c SET delivered = c.delivered + r.events FROM r \
                 WHERE c.destination = r.destination AND c.stream = r.stream) \
                 SELECT count(*) FROM r",
                &[&id, &at],
            )
            .await
            .map_err(backend)?;
        Ok(row.get::<_, i64>(0) == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The PostgreSQL URL of the test server, which `scripts/test.sh` starts.
    /// In CI a missing server is a failure, not a skip.
    fn test_url() -> Option<String> {
        match std::env::var("TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI must run the PostgreSQL tests: TEST_POSTGRES_URL is not set"
                );
                eprintln!("TEST_POSTGRES_URL not set: skipping (scripts/test.sh sets it)");
                None
            }
        }
    }

    fn schema() -> String {
        let mut b = [0u8; 6];
        getrandom::fill(&mut b).expect("random");
        format!("t_{}", hex::encode(b))
    }

    /// `events`/`streams` read with a read-only session: they read what
    /// serve wrote, cannot write, and migrate nothing (issue #15).
    #[tokio::test]
    async fn a_read_only_connection_reads_and_cannot_write() {
        let Some(url) = test_url() else { return };
        let sep = if url.contains('?') { '&' } else { '?' };
        let fresh = schema();
        let in_schema = |s: &str| format!("{url}{sep}options=-c%20search_path%3D{s}");
        let other = schema();
        let c = PostgresStore::connect(&url, Some(&fresh))
            .await
            .expect("connect");
        c.append(vec![AppendGroup {
            sealed: None,
            stream: "s".into(),
            events: vec![ev("a", "x.y")],
        }])
        .await
        .expect("append");
        let ro = PostgresStore::connect_read_only(&in_schema(&fresh), &PoolSettings::default())
            .await
            .expect("read-only connect");
        assert_eq!(ro.streams().await.expect("streams")[0].head_seq, 1);
        let e = ro
            .append(vec![AppendGroup {
                sealed: None,
                stream: "s".into(),
                events: vec![ev("b", "x.y")],
            }])
            .await
            .expect_err("a read-only session cannot append");
        assert!(e.to_string().contains("read-only"), "{e}");
        // A schema nobody migrated: refused, naming the fix, and still empty.
        c.client()
            .await
            .expect("client")
            .batch_execute(&format!("CREATE SCHEMA {other}"))
            .await
            .expect("schema");
        let e = PostgresStore::connect_read_only(&in_schema(&other), &PoolSettings::default())
            .await
            .expect_err("unmigrated");
        assert!(e.to_string().contains("trailkeep migrate"), "{e}");
    }

    /// Issue #14: backend errors were all "retryable" text. Now a role the
    /// server refuses is not retryable (nobody will fix it by waiting),
    /// a refused connection (a server restarting) is, and the cause is kept.
    #[tokio::test]
    async fn refused_credentials_are_not_retryable_and_a_refused_connection_is() {
        let Some(url) = test_url() else { return };
        let settings = PoolSettings::default();
        let bad_role = url.replacen("postgres://postgres@", "postgres://no_such_role@", 1);
        assert_ne!(bad_role, url, "test URL has the expected shape");
        let e = PostgresStore::connect_with(&bad_role, None, &settings)
            .await
            .expect_err("unknown role");
        assert!(!e.is_retryable(), "{e}");
        assert!(
            std::error::Error::source(&e).is_some(),
            "the cause is kept: {e}"
        );
        let e = PostgresStore::connect_with(
            "postgres://postgres@127.0.0.1:1/postgres",
            None,
            &settings,
        )
        .await
        .expect_err("nothing listens on port 1");
        assert!(e.is_retryable(), "{e}");
    }

    /// Two stores ("nodes") on one fresh schema.
    async fn two_nodes(url: &str) -> (PostgresStore, PostgresStore) {
        let s = schema();
        let a = PostgresStore::connect(url, Some(&s))
            .await
            .expect("connect");
        let b = PostgresStore::connect(url, Some(&s))
            .await
            .expect("connect");
        (a, b)
    }

    fn ev(id: &str, ty: &str) -> crate::event::NewEvent {
        crate::event::validate(
            0,
            serde_json::json!({"type": ty, "id": id}),
            "2026-01-01T00:00:00.000000Z",
            &crate::event::Limits::default(),
        )
        .expect("valid")
    }

    #[tokio::test]
    async fn postgres_passes_the_store_conformance_suite() {
        let Some(url) = test_url() else { return };
        let mut stores = Vec::new();
        // One fresh store per check in `run_all` (it calls `make` once each).
        let checks = include_str!("../conformance.rs")
            .matches("(&make()).await")
            .count();
        for _ in 0..checks {
            stores.push(
                PostgresStore::connect(&url, Some(&schema()))
                    .await
                    .expect("connect"),
            );
        }
        let mut it = stores.into_iter();
        super::super::conformance::run_all(|| it.next().expect("enough stores")).await;
    }

    /// `sslmode` as libpq means it, against the test server's TLS (a
    /// throwaway CA; the server certificate names IP 127.0.0.1 only).
    #[tokio::test]
    async fn sslmode_encrypts_and_verifies_as_libpq_does() {
        let Some(url) = test_url() else { return };
        let (Ok(ca), Ok(other)) = (
            std::env::var("TEST_POSTGRES_CA"),
            std::env::var("TEST_POSTGRES_OTHER_CA"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the PostgreSQL TLS tests: TEST_POSTGRES_CA is not set"
            );
            return;
        };
        let with = |u: &str, q: &str| format!("{u}{}{q}", if u.contains('?') { '&' } else { '?' });
        let localhost = url.replace("127.0.0.1", "localhost");
        async fn ssl_in_use(url: &str) -> std::result::Result<bool, String> {
            let store = PostgresStore::connect(url, None)
                .await
                .map_err(|e| e.to_string())?;
            let c = store.client().await.map_err(|e| e.to_string())?;
            let row = c
                .query_one(
                    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                    &[],
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(row.get(0))
        }
        assert_eq!(ssl_in_use(&with(&url, "sslmode=disable")).await, Ok(false));
        assert_eq!(ssl_in_use(&with(&url, "sslmode=require")).await, Ok(true));
        assert_eq!(
            ssl_in_use(&url).await,
            Ok(true),
            "prefer (the default) encrypts when offered"
        );
        let full = format!("sslmode=verify-full&sslrootcert={ca}");
        let one = super::super::pg_tls::connect_one(&with(&url, &full))
            .await
            .expect("connect_one");
        let ssl: bool = one
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .expect("query")
            .get(0);
        assert!(ssl, "the benchmarks' single connection honours sslmode too");
        assert_eq!(ssl_in_use(&with(&url, &full)).await, Ok(true));
        let e = ssl_in_use(&with(&localhost, &full))
            .await
            .expect_err("name mismatch");
        assert!(
            e.to_lowercase().contains("certificate") || e.contains("name"),
            "verify-full checks the host name: {e}"
        );
        let ca_only = format!("sslmode=verify-ca&sslrootcert={ca}");
        assert_eq!(
            ssl_in_use(&with(&localhost, &ca_only)).await,
            Ok(true),
            "verify-ca does not check the name"
        );
        let e = ssl_in_use(&with(
            &url,
            &format!("sslmode=verify-ca&sslrootcert={other}"),
        ))
        .await
        .expect_err("unrelated CA");
        assert!(
            e.to_lowercase().contains("certificate") || e.contains("issuer"),
            "an unrelated CA is refused: {e}"
        );
    }

    #[tokio::test]
    async fn reconnecting_resumes_heads_and_tiles() {
        let Some(url) = test_url() else { return };
        let (first, second) = two_nodes(&url).await;
        let mut stores = vec![second, first];
        super::super::conformance::reopen_keeps_chain(|| stores.pop().expect("two stores")).await;
    }

    /// Every tile of `stream` as stored equals the tile built afresh from
    /// its events' hashes: racing writers left no stale or torn tile.
    async fn assert_tiles(store: &PostgresStore, stream: &str) {
        let events = store
            .read_events(stream, 1, usize::MAX >> 1)
            .await
            .expect("read");
        let leaves: Vec<crate::chain::Hash> = events
            .iter()
            .map(|e| {
                let mut h = [0u8; 32];
                hex::decode_to_slice(&e.hash, &mut h).expect("hex");
                crate::chain::leaf_hash(&h)
            })
            .collect();
        let mut expected: HashMap<TileId, Vec<u8>> = HashMap::new();
        for t in crate::chain::tiles::TileWriter::new().append(&leaves) {
            expected.insert(t.id, t.data);
        }
        let ids: Vec<TileId> = expected.keys().copied().collect();
        let stored: HashMap<TileId, Vec<u8>> = store
            .tiles(stream, &ids)
            .await
            .expect("tiles")
            .into_iter()
            .collect();
        assert_eq!(
            stored.len(),
            expected.len(),
            "every tile of {stream} stored"
        );
        for (id, data) in expected {
            assert_eq!(stored.get(&id), Some(&data), "tile {id:?} of {stream}");
        }
    }

    /// Makes `store` believe it holds the shard of `stream` with `token`.
    fn claim(store: &PostgresStore, stream: &str, holder: &str, token: i64) {
        let shard = store.owners.shard_of(stream);
        store.owners.set(
            vec![Lease {
                name: super::super::cluster::lease_name(shard),
                holder: holder.into(),
                token,
                expires_ms: i64::MAX,
            }],
            std::time::Instant::now(),
            std::time::Duration::from_secs(3600),
            std::collections::HashMap::new(),
        );
    }

    /// Issue #19: two nodes that both believe they own a shard append to
    /// the same stream at once, for many rounds: before each batch each
    /// side takes the shard's lease (a new epoch) and puts it into its own
    /// view, so the other side's view is stale from then on and its calls
    /// in flight meet the lease or epoch check. Owner writes from both
    /// sides interleave with fenced refusals (which go again as a
    /// non-owner's) and head refusals; neither can fork the chain or leave
    /// a gap, every acknowledged event is there once, the tiles are exact,
    /// and the stream's epoch never goes back.
    #[tokio::test]
    async fn two_owners_racing_on_one_shard_never_fork_or_gap() {
        const ROUNDS: usize = 20;
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let stream = "contested";
        let lease = super::super::cluster::lease_name(a.owners.shard_of(stream));
        let c = a.client().await.expect("client");
        c.execute(
            "INSERT INTO leases (name, holder, token, expires_ms) VALUES ($1, 'b', 2, 9223372036854775807)",
            &[&lease],
        )
        .await
        .expect("lease");
        drop(c);
        let mut tasks = Vec::new();
        for (n, (store, holder)) in [
            (a.clone(), "a"),
            (b.clone(), "b"),
            (a.clone(), "a"),
            (b.clone(), "b"),
        ]
        .into_iter()
        .enumerate()
        {
            let lease = lease.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                // Tokens at which this writer's call went through as the
                // owner (its fence still in the view afterwards).
                let mut owned = Vec::new();
                for round in 0..ROUNDS {
                    let token: i64 = {
                        let c = store.client().await.expect("client");
                        c.query_one(
                            "UPDATE leases SET holder = $2, token = token + 1 WHERE name = $1 RETURNING token",
                            &[&lease, &holder],
                        )
                        .await
                        .expect("take the lease")
                        .get(0)
                    };
                    claim(&store, stream, holder, token);
                    let events = (0..7)
                        .map(|i| ev(&format!("n{n}-r{round}-{i}"), "t"))
                        .collect();
                    let r = store
                        .append(vec![AppendGroup {
                            sealed: None,
                            stream: "contested".into(),
                            events,
                        }])
                        .await
                        .expect("every append is stored");
                    // A fenced call drops the lease from the view (only if
                    // it still holds this token): never counted here.
                    if store.owners.fence(stream).is_some_and(|l| l.token == token) {
                        owned.push(token);
                    }
                    acked.extend(
                        r[0].accepted
                            .iter()
                            .map(|x| (x.id.clone(), x.seq, x.hash.clone())),
                    );
                }
                (holder, acked, owned)
            }));
        }
        let mut acked = Vec::new();
        let mut owner_writes: HashMap<&str, Vec<i64>> = HashMap::new();
        for t in tasks {
            let (holder, a, o) = t.await.expect("task");
            acked.extend(a);
            owner_writes.entry(holder).or_default().extend(o);
        }
        for side in ["a", "b"] {
            assert!(
                owner_writes.get(side).is_some_and(|w| !w.is_empty()),
                "{side} wrote as the owner in some rounds: {owner_writes:?}"
            );
        }
        let total = 4 * ROUNDS as u64 * 7;
        assert_eq!(acked.len() as u64, total, "every event acknowledged once");
        super::super::conformance::assert_chain(&a, stream, total).await;
        assert_tiles(&a, stream).await;
        let stored = a.read_events(stream, 1, 10_000).await.expect("read");
        for (id, seq, hash) in &acked {
            let e = &stored[*seq as usize - 1];
            assert_eq!(
                &e.hash, hash,
                "acknowledged {id} at {seq} is what is stored"
            );
            assert!(
                e.body.contains(&format!("\"id\":\"{id}\"")),
                "{id} at {seq}"
            );
        }
        let c = a.client().await.expect("client");
        let row = c
            .query_one(
                "SELECT s.epoch, l.token FROM streams s, leases l WHERE s.name = $1 AND l.name = $2",
                &[&stream, &lease],
            )
            .await
            .expect("epoch");
        let (epoch, last_token): (i64, i64) = (row.get(0), row.get(1));
        let newest_owner_write = owner_writes.values().flatten().max().copied();
        assert!(
            newest_owner_write.is_some_and(|t| epoch >= t) && epoch <= last_token,
            "the stream's epoch ({epoch}) is the newest owner write's or later, never past the lease ({last_token})"
        );
        // A stale epoch is refused even where the lease row would let it
        // pass (say the lease table was restored from an old backup): the
        // stream's own epoch is compared too.
        c.execute(
            "UPDATE leases SET holder = 'a', token = 1 WHERE name = $1",
            &[&lease],
        )
        .await
        .expect("rewind");
        drop(c);
        claim(&a, stream, "a", 1);
        a.append(vec![AppendGroup {
            sealed: None,
            stream: stream.into(),
            events: vec![ev("late", "t")],
        }])
        .await
        .expect("stored as a non-owner");
        assert!(a.owners.fence(stream).is_none(), "the epoch fenced a off");
        super::super::conformance::assert_chain(&a, stream, total + 1).await;
        assert_tiles(&a, stream).await;
    }

    /// An append whose session is terminated while it runs (here by
    /// `pg_terminate_backend`, as a failover or an operator would) may have
    /// committed: it comes back ambiguous (the batcher then poisons), never
    /// as `RolledBack`, which would let its requests be refused and retried
    /// as if nothing were stored.
    #[tokio::test]
    async fn a_terminated_session_leaves_the_append_ambiguous() {
        let Some(url) = test_url() else { return };
        let s = schema();
        let store = PostgresStore::connect(&url, Some(&s))
            .await
            .expect("connect");
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE FUNCTION {s}.slow() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER slow BEFORE INSERT ON {s}.events FOR EACH ROW WHEN (NEW.type = 'slow') EXECUTE FUNCTION {s}.slow();"
            ))
            .await
            .expect("trigger");
        let appending = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(vec![AppendGroup {
                        sealed: None,
                        stream: "t".into(),
                        events: vec![ev("a", "slow")],
                    }])
                    .await
            })
        };
        // Only the session sleeping in this test's trigger: other tests run
        // appends on the same server at the same time.
        let mut killed = 0;
        for _ in 0..200 {
            killed = client
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE wait_event = 'PgSleep' AND query LIKE '%trailkeep_append(%' AND pid <> pg_backend_pid()",
                    &[],
                )
                .await
                .expect("terminate")
                .get::<_, i64>(0);
            if killed > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(killed, 1, "the append's session was found and terminated");
        let err = appending
            .await
            .expect("task")
            .expect_err("the session ended");
        assert!(
            matches!(err, StoreError::Backend { .. }),
            "ambiguous, not rolled back: {err:?}"
        );
    }

    /// The append function checks its own arguments: events that do not
    /// fill a stream exactly from its head to the new head, or a stream id
    /// that does not exist, are refused with nothing written, whatever the
    /// caller computed.
    #[tokio::test]
    async fn the_append_function_refuses_calls_that_do_not_fit_the_heads() {
        let Some(url) = test_url() else { return };
        let store = PostgresStore::connect(&url, Some(&schema()))
            .await
            .expect("connect");
        store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "f".into(),
                events: vec![ev("a", "t")],
            }])
            .await
            .expect("append");
        let info = super::super::StoreExt::stream(&store, "f")
            .await
            .expect("read")
            .expect("exists");
        let c = store.client().await.expect("client");
        let id: i64 = c
            .query_one("SELECT id FROM streams WHERE name = 'f'", &[])
            .await
            .expect("id")
            .get(0);
        let call = |sid: i64, new_seq: i64, seqs: Vec<i64>| {
            let n = seqs.len();
            (
                vec![sid],
                vec![info.head_seq as i64],
                vec![info.head_hash.clone()],
                vec![new_seq],
                vec!["f".repeat(64)],
                seqs,
                n,
            )
        };
        for (sid, new_seq, seqs, says) in [
            (id, 3, vec![2], "do not fill"),
            (id, 2, vec![3], "do not fill"),
            (id + 1000, 2, vec![2], "streams exist"),
        ] {
            let (s_id, s_seq, s_hash, s_new_seq, s_new_hash, e_seq, n) = call(sid, new_seq, seqs);
            let none: Vec<Option<String>> = vec![None];
            let no_epoch: Vec<Option<i64>> = vec![None];
            let texts = vec!["x".to_owned(); n];
            let e = c
                .query(
                    "SELECT * FROM trailkeep_append('', $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10, $10, $10, $10, \
                     '{}', '{}', '{}', '{}', '{}')",
                    &[
                        &s_id, &s_seq, &s_hash, &s_new_seq, &s_new_hash, &none, &no_epoch,
                        &vec![sid; n], &e_seq, &texts,
                    ],
                )
                .await
                .expect_err(says);
            assert!(
                e.to_string().contains(says) || format!("{e:?}").contains(says),
                "{e:?}"
            );
        }
        super::super::conformance::assert_chain(&store, "f", 1).await;
    }

    /// A node writing alone is never refused: each commit is one round
    /// trip (new streams are loaded once, cached tails hold, multi-stream
    /// calls chain every stream); a repeated id costs exactly one refusal.
    #[tokio::test]
    async fn an_uncontended_writer_commits_every_call_at_the_first_attempt() {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(url) = test_url() else { return };
        let store = PostgresStore::connect(&url, Some(&schema()))
            .await
            .expect("connect");
        for round in 0..6 {
            let groups = ["x", "y", "z"]
                .iter()
                .map(|s| AppendGroup {
                    sealed: None,
                    stream: (*s).into(),
                    events: (0..(round + 1))
                        .map(|i| ev(&format!("{s}-{round}-{i}"), "t"))
                        .collect(),
                })
                .collect();
            let r = store.append(groups).await.expect("append");
            assert!(r.iter().all(|g| g.accepted.iter().all(|a| !a.duplicate)));
        }
        assert_eq!(
            store.sequencer.refusals.load(Relaxed),
            0,
            "no refusal alone"
        );
        for s in ["x", "y", "z"] {
            super::super::conformance::assert_chain(&store, s, 21).await;
            assert_tiles(&store, s).await;
        }
        let r = store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "x".into(),
                events: vec![ev("x-0-0", "t"), ev("x-new", "t")],
            }])
            .await
            .expect("append");
        assert!(r[0].accepted[0].duplicate && !r[0].accepted[1].duplicate);
        assert_eq!(r[0].accepted[0].seq, 1, "the original seq");
        assert_eq!(r[0].accepted[1].seq, 22);
        assert_eq!(
            store.sequencer.refusals.load(Relaxed),
            1,
            "a stored id: one refusal, then written"
        );
        super::super::conformance::assert_chain(&store, "x", 22).await;
        assert_tiles(&store, "x").await;
    }

    /// A call that adds nothing to one of its streams (every event of it
    /// already stored) answers that stream's head as stored after the
    /// commit, not the tail this node cached: here another node writes the
    /// stream while the call (which also adds to another stream) is held
    /// up in the database. The head answered was the cached one, a head
    /// the stream had left before the call committed.
    #[tokio::test]
    async fn a_stream_with_only_duplicates_is_answered_with_its_stored_head() {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let group = |stream: &str, id: &str| AppendGroup {
            sealed: None,
            stream: stream.into(),
            events: vec![ev(id, "t")],
        };
        a.append(vec![group("s1", "n0"), group("s2", "x")])
            .await
            .expect("append");
        // An uncommitted row at s1's next seq: a's insert there waits for
        // this transaction (the function's earlier checks do not).
        let mut held = a.client().await.expect("client");
        let tx = held.transaction().await.expect("begin");
        let blocker: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        tx.execute(
            "INSERT INTO events (stream_id, seq, id, type, time, received, hash, body) \
             SELECT id, 2, 'blocker', 't', '', '', '', '' FROM streams WHERE name = 's1'",
            &[],
        )
        .await
        .expect("blocker");
        // x is stored: refused once as a duplicate, then sent for s1 only,
        // and held at the insert.
        let call = {
            let a = a.clone();
            tokio::spawn(async move { a.append(vec![group("s1", "n1"), group("s2", "x")]).await })
        };
        let watch = a.client().await.expect("client");
        let mut waiting = 0;
        for _ in 0..500 {
            waiting = watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    &[&blocker],
                )
                .await
                .expect("activity")
                .get::<_, i64>(0);
            if waiting > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(waiting, 1, "a's append waits at its insert into s1");
        // Meanwhile node b moves s2.
        let moved = b
            .append(vec![AppendGroup {
                sealed: None,
                stream: "s2".into(),
                events: vec![ev("y", "t")],
            }])
            .await
            .expect("b appends");
        assert_eq!(moved[0].head.seq, 2);
        tx.rollback().await.expect("rollback");
        drop(held);
        let r = call.await.expect("task").expect("a's append is stored");
        assert_eq!(
            a.sequencer.refusals.load(Relaxed),
            1,
            "one refusal, for the duplicate"
        );
        assert!(!r[0].accepted[0].duplicate && r[0].accepted[0].seq == 2);
        assert!(r[1].accepted[0].duplicate && r[1].accepted[0].seq == 1);
        let s2 = super::super::StoreExt::stream(&a, "s2")
            .await
            .expect("read")
            .expect("exists");
        assert_eq!(
            (r[1].head.seq, r[1].head.hash.as_str()),
            (s2.head_seq, s2.head_hash.as_str()),
            "s2's head as stored when a's call committed (b's event), not a's cached tail"
        );
        assert_eq!(r[1].head, moved[0].head);
        // Nothing new at all (nothing sent): the stored head too.
        let r = a.append(vec![group("s2", "x")]).await.expect("append");
        assert!(r[0].accepted[0].duplicate);
        assert_eq!(r[0].head, moved[0].head);
        for s in ["s1", "s2"] {
            super::super::conformance::assert_chain(&a, s, 2).await;
            assert_tiles(&a, s).await;
        }
    }

    /// Three commits in flight from one node on one stream, each chained
    /// onto the one before: all land, in order, with their tiles.
    #[tokio::test]
    async fn pipelined_appends_from_one_owner_chain_in_order() {
        let Some(url) = test_url() else { return };
        let s = schema();
        let store = PostgresStore::connect(&url, Some(&s))
            .await
            .expect("connect");
        // Sixteen callers at once on one store: each call is chained onto
        // the tail the one before left, several in flight.
        let mut tasks = Vec::new();
        for c in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for r in 0..40 {
                    let res = store
                        .append(vec![AppendGroup {
                            sealed: None,
                            stream: "piped".into(),
                            events: (0..3).map(|i| ev(&format!("c{c}-{r}-{i}"), "t")).collect(),
                        }])
                        .await
                        .expect("stored");
                    acked.extend(res[0].accepted.iter().map(|a| (a.seq, a.hash.clone())));
                }
                acked
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            let acked = t.await.expect("task");
            assert!(
                acked.windows(2).all(|w| w[0].0 < w[1].0),
                "one caller's events are stored in the order it sent them"
            );
            all.extend(acked);
        }
        let stored = store.read_events("piped", 1, 10_000).await.expect("read");
        for (seq, hash) in &all {
            assert_eq!(&stored[*seq as usize - 1].hash, hash, "acknowledged {seq}");
        }
        super::super::conformance::assert_chain(&store, "piped", 16 * 40 * 3).await;
        assert_tiles(&store, "piped").await;
    }

    /// One writer alone is never refused, however many calls it has in
    /// flight: calls chained onto each other go in order on one
    /// connection. Before, each went on a connection of its own and
    /// nothing ordered their statements in PostgreSQL, so a call's
    /// statement could lock the head rows before its predecessor's, find
    /// the head behind the one it was chained onto and be refused (`head`),
    /// with every call chained after it (`trailkeep bench postgres`
    /// counted ~700 with one node; here, calls of several streams from
    /// many callers at once, as the batcher's are, were refused dozens of
    /// times per run).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_writer_with_calls_in_flight_is_never_refused() {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(url) = test_url() else { return };
        let store = PostgresStore::connect(&url, Some(&schema()))
            .await
            .expect("connect");
        let mut tasks = Vec::new();
        for c in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..25 {
                    let groups = [(c + r) % 4, (c + r + 1) % 4]
                        .iter()
                        .map(|s| AppendGroup {
                            sealed: None,
                            stream: format!("s{s}"),
                            events: vec![ev(&format!("c{c}-{r}-{s}"), "t")],
                        })
                        .collect();
                    store.append(groups).await.expect("stored");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(
            store.sequencer.refusals.load(Relaxed),
            0,
            "no refusal alone"
        );
        for s in 0..4 {
            super::super::conformance::assert_chain(&store, &format!("s{s}"), 200).await;
            assert_tiles(&store, &format!("s{s}")).await;
        }
    }

    /// A call that is refused keeps its place: a call that began after it
    /// on the same stream is chained after it, not onto the head the
    /// refused call reloads. Before, a retrying call no longer held later
    /// calls back, so a later call could take the reloaded head first and
    /// land ahead of it (an SSE source's batches out of order).
    ///
    /// How the race is made certain rather than likely: node b moves
    /// stream `b`, so node a's call `first` (streams `a`, `b`) is refused
    /// for `b`'s head and reloads both tails. The test holds `tiles`
    /// locked (ACCESS EXCLUSIVE), so that reload stops between installing
    /// `a` (an empty stream: no tile to read) and reading `b`'s tiles.
    /// Only then does `later` (stream `a`) begin: before the fix it found
    /// `a` cached and nothing unprepared ahead of it, chained onto `a` and
    /// got stuck at its own tile insert (two sessions wait on the lock);
    /// with the fix it waits for `first` in the sequencer (parked). Then
    /// the lock is released and both finish.
    #[tokio::test]
    async fn a_refused_call_keeps_its_place_before_later_calls() {
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let group = |stream: &str, id: &str| AppendGroup {
            sealed: None,
            stream: stream.into(),
            events: vec![ev(id, "t")],
        };
        // `a` first (lower id, never updated before the race): the reload
        // reads it before `b`, by heap or by index order.
        a.client()
            .await
            .expect("client")
            .execute(
                "INSERT INTO streams (name, head_seq, head_hash, created) VALUES ('a', 0, $1, '')",
                &[&crate::chain::ZERO_HASH_HEX],
            )
            .await
            .expect("stream a");
        a.append(vec![group("b", "b1")]).await.expect("append");
        b.append(vec![group("b", "b2")]).await.expect("b moves b");
        let mut held = a.client().await.expect("client");
        let tx = held.transaction().await.expect("begin");
        let locker: i32 = tx
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .expect("pid")
            .get(0);
        tx.batch_execute("LOCK TABLE tiles IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock tiles");
        let watch = a.client().await.expect("client");
        let waiting_on_lock = || async {
            watch
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    &[&locker],
                )
                .await
                .expect("activity")
                .get::<_, i64>(0)
        };
        let first = {
            let a = a.clone();
            tokio::spawn(async move { a.append(vec![group("a", "first"), group("b", "b3")]).await })
        };
        let mut reached = false;
        for _ in 0..500 {
            if waiting_on_lock().await == 1 {
                reached = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(reached, "the refused call reloads and waits at b's tiles");
        let later = {
            let a = a.clone();
            tokio::spawn(async move { a.append(vec![group("a", "later")]).await })
        };
        let mut reached = false;
        for _ in 0..500 {
            if a.sequencer.parked() > 0 || waiting_on_lock().await > 1 {
                reached = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            reached,
            "the later call waits in the sequencer or at the lock"
        );
        tx.rollback().await.expect("release tiles");
        drop(held);
        let first = first.await.expect("task").expect("first is stored");
        let later = later.await.expect("task").expect("later is stored");
        assert_eq!(
            (first[0].accepted[0].seq, later[0].accepted[0].seq),
            (1, 2),
            "the call that began first is first in stream a"
        );
        super::super::conformance::assert_chain(&a, "a", 2).await;
        super::super::conformance::assert_chain(&a, "b", 3).await;
        assert_tiles(&a, "a").await;
        assert_tiles(&a, "b").await;
    }

    /// The shard keeper's store calls: heartbeats list live nodes, leases
    /// are taken in one statement and not from a live holder, released
    /// ones are free at once, a node that leaves is no longer listed.
    #[tokio::test]
    async fn cluster_calls_take_renew_release_and_list() {
        use super::super::cluster::ClusterStore as _;
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let ttl = std::time::Duration::from_secs(30);
        let (now, nodes) = a.heartbeat("a", Some("http://a"), ttl).await.expect("beat");
        assert!(now > 0);
        assert_eq!(nodes.len(), 1);
        let (_, nodes) = b.heartbeat("b", None, ttl).await.expect("beat");
        assert_eq!(
            nodes
                .iter()
                .map(|n| (n.node.as_str(), n.url.as_deref()))
                .collect::<Vec<_>>(),
            [("a", Some("http://a")), ("b", None)]
        );
        let names: Vec<String> = (0..4).map(super::super::cluster::lease_name).collect();
        let got = a.acquire_leases(&names[..3], "a", ttl).await.expect("take");
        assert_eq!(got.len(), 3);
        let got_b = b.acquire_leases(&names, "b", ttl).await.expect("take");
        assert_eq!(got_b.len(), 1, "only the free one: {got_b:?}");
        let again = a
            .acquire_leases(&names[..3], "a", ttl)
            .await
            .expect("renew");
        assert_eq!(
            again.iter().map(|l| l.token).collect::<Vec<_>>(),
            got.iter().map(|l| l.token).collect::<Vec<_>>(),
            "a renewal keeps the epoch"
        );
        a.release_leases(&names[..1], "a").await.expect("release");
        let moved = b.acquire_leases(&names[..1], "b", ttl).await.expect("take");
        assert_eq!(moved.len(), 1, "released is free at once");
        assert!(
            moved[0].token > got[0].token,
            "a new holder gets a larger epoch"
        );
        assert_eq!(a.shard_leases().await.expect("list").len(), 4);
        a.leave("a").await.expect("leave");
        let (_, nodes) = b.heartbeat("b", None, ttl).await.expect("beat");
        assert_eq!(nodes.len(), 1, "a left");
        // Dead for a day and holding nothing: forgotten at the next beat;
        // dead for an hour, or dead but still named by a lease: kept.
        let day = super::super::cluster::FORGET_NODES_AFTER.as_millis() as i64;
        let c = b.client().await.expect("client");
        c.execute(
            "INSERT INTO nodes (node, url, seen_ms) VALUES ('gone', NULL, $1), ('recent', NULL, $2), ('holder', NULL, $1)",
            &[&(now - day - 1), &(now - 3_600_000)],
        )
        .await
        .expect("insert");
        c.execute(
            "INSERT INTO leases (name, holder, token, expires_ms) VALUES ('shard:0063', 'holder', 1, $1)",
            &[&(now + 3_600_000)],
        )
        .await
        .expect("insert");
        b.heartbeat("b", None, ttl).await.expect("beat");
        let mut left: Vec<String> = c
            .query("SELECT node FROM nodes", &[])
            .await
            .expect("list")
            .iter()
            .map(|r| r.get(0))
            .collect();
        left.sort();
        assert_eq!(left, ["b", "holder", "recent"]);
    }

    /// `GET /v1/cluster`'s read: every node (a dead one too, with its old
    /// heartbeat) and every shard lease (released ones too), with the
    /// store's clock, through a read-only session as `trailkeep cluster`
    /// opens it.
    #[tokio::test]
    async fn a_cluster_snapshot_lists_every_node_and_lease_read_only() {
        use super::super::cluster::{ClusterStore as _, lease_name};
        let Some(url) = test_url() else { return };
        let sep = if url.contains('?') { '&' } else { '?' };
        let fresh = schema();
        let a = PostgresStore::connect(&url, Some(&fresh))
            .await
            .expect("connect");
        let ttl = std::time::Duration::from_secs(30);
        let (before, _) = a.heartbeat("a", Some("http://a"), ttl).await.expect("beat");
        a.heartbeat("dead", None, ttl).await.expect("beat");
        // "dead" last beat a minute ago.
        a.client()
            .await
            .expect("client")
            .execute(
                "UPDATE nodes SET seen_ms = seen_ms - 60000 WHERE node = 'dead'",
                &[],
            )
            .await
            .expect("age");
        let names: Vec<String> = (0..3).map(lease_name).collect();
        a.acquire_leases(&names[..2], "a", ttl).await.expect("take");
        a.acquire_leases(&names[2..], "dead", ttl)
            .await
            .expect("take");
        a.release_leases(&names[1..2], "a").await.expect("release");
        let ro = PostgresStore::connect_read_only(
            &format!("{url}{sep}options=-c%20search_path%3D{fresh}"),
            &PoolSettings::default(),
        )
        .await
        .expect("read-only connect");
        let snap = ro.snapshot().await.expect("snapshot");
        assert!(snap.now_ms >= before, "the store's clock");
        assert_eq!(
            snap.nodes
                .iter()
                .map(|n| (
                    n.node.as_str(),
                    n.url.as_deref(),
                    snap.now_ms - n.seen_ms >= 60_000
                ))
                .collect::<Vec<_>>(),
            [("a", Some("http://a"), false), ("dead", None, true)],
            "every node, the dead one with its old heartbeat"
        );
        assert_eq!(
            snap.leases
                .iter()
                .map(|l| (
                    l.name.as_str(),
                    l.holder.as_str(),
                    l.expires_ms > snap.now_ms
                ))
                .collect::<Vec<_>>(),
            [
                ("shard:0000", "a", true),
                ("shard:0001", "a", false),
                ("shard:0002", "dead", true)
            ],
            "every shard lease, the released one expired"
        );
    }

    #[tokio::test]
    async fn two_nodes_appending_to_one_stream_keep_it_gapless() {
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let mut tasks = Vec::new();
        for (n, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                for round in 0..25 {
                    let events = (0..10)
                        .map(|i| ev(&format!("n{n}-r{round}-{i}"), "t"))
                        .collect();
                    store
                        .append(vec![AppendGroup {
                            sealed: None,
                            stream: "shared".into(),
                            events,
                        }])
                        .await
                        .expect("append");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        super::super::conformance::assert_chain(&a, "shared", 1000).await;
    }

    /// Regression: two nodes whose calls name the same streams in opposite
    /// orders used to lock the head rows in opposite orders and deadlock;
    /// PostgreSQL then aborted one transaction and the writer poisoned.
    #[tokio::test]
    async fn opposite_stream_orders_on_two_nodes_do_not_deadlock() {
        let Some(url) = test_url() else { return };
        let (a, b) = two_nodes(&url).await;
        let mut tasks = Vec::new();
        for (n, (store, order)) in [(a.clone(), ["x", "y"]), (b.clone(), ["y", "x"])]
            .into_iter()
            .enumerate()
        {
            tasks.push(tokio::spawn(async move {
                for round in 0..60 {
                    let groups = order
                        .iter()
                        .map(|st| AppendGroup {
                            sealed: None,
                            stream: (*st).into(),
                            events: vec![ev(&format!("n{n}-{round}-{st}"), "t")],
                        })
                        .collect();
                    store.append(groups).await.expect("no deadlock");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        super::super::conformance::assert_chain(&a, "x", 120).await;
        super::super::conformance::assert_chain(&a, "y", 120).await;
    }

    /// A statement failing before COMMIT comes back as `RolledBack` (nothing
    /// stored, not ambiguous) and the store goes on appending gaplessly.
    #[tokio::test]
    async fn a_failed_statement_is_rolled_back_not_ambiguous() {
        let Some(url) = test_url() else { return };
        let s = schema();
        let store = PostgresStore::connect(&url, Some(&s))
            .await
            .expect("connect");
        let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "CREATE FUNCTION {s}.boom() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'injected'; END $$ LANGUAGE plpgsql; \
                 CREATE TRIGGER boom BEFORE INSERT ON {s}.events FOR EACH ROW WHEN (NEW.type = 'boom') EXECUTE FUNCTION {s}.boom();"
            ))
            .await
            .expect("trigger");
        store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "r".into(),
                events: vec![ev("a", "ok")],
            }])
            .await
            .expect("append");
        let err = store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "r".into(),
                events: vec![ev("b", "ok"), ev("c", "boom")],
            }])
            .await
            .expect_err("trigger fires");
        assert!(matches!(err, StoreError::RolledBack(_)), "{err}");
        let r = store
            .append(vec![AppendGroup {
                sealed: None,
                stream: "r".into(),
                events: vec![ev("d", "ok")],
            }])
            .await
            .expect("append");
        assert_eq!(
            r[0].accepted[0].seq, 2,
            "the rolled-back events took no seq"
        );
        super::super::conformance::assert_chain(&store, "r", 2).await;
    }
}
