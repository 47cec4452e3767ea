//! `serve`: opens the data directory, starts the batcher and checkpointer,
//! and serves the API until `shutdown` resolves.
//!
//! Shutdown order keeps every acknowledgement honest: stop accepting
//! connections and let in-flight requests finish (each waits for its
//! commit), then drop the last append handle so the batcher drains and
//! exits, then run a final checkpoint round.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{AppState, router};
use crate::auth::Authenticator;
use crate::config::{Config, StoreLocation};
use crate::ingest::{Appender, checkpointer};
use crate::keyfile;
use crate::node::NodeId;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

pub use crate::node::{NODE_ID_FILE, NODE_LOCK_FILE};

/// Takes the data directory for this `serve` (see [`NodeId::claim`]).
///
/// # Errors
/// The directory is in use by another `serve`, or unreadable.
pub fn claim_data_dir(dir: &Path) -> Result<(NodeId, std::fs::File), ServeError> {
    NodeId::claim(dir).map_err(|source| ServeError::DataDir {
        path: dir.to_owned(),
        source,
    })
}

/// File name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "trailkeep.db";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The signing key failed to load.
    #[error(transparent)]
    Key(#[from] keyfile::KeyFileError),
    /// Serving failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
    /// A source's secret could not be loaded.
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// A source's HTTP client could not be built.
    #[error("source {name}: http client: {message}")]
    SourceClient {
        /// The source.
        name: String,
        /// What failed (redacted).
        message: String,
    },
    /// A destination could not start (its secret, its object store).
    #[error(transparent)]
    Destination(#[from] crate::destinations::BuildError),
    /// The archive could not be set up (URL, secret file).
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::http::TlsError),
}

/// Builds the archiver from the config: the bucket behind the archive URL,
/// the log's signing key, the HMAC secret if configured.
///
/// # Errors
/// A bad URL or an unreadable secret file.
pub fn archiver(
    config: &Config,
    store: Arc<dyn Store>,
    signer: crate::chain::note::NoteSigner,
) -> Result<crate::archive::Archiver, ServeError> {
    use crate::archive::{ArchiveError, Archiver, Bucket};
    let url = config
        .archive_url()
        .map_err(|e| ArchiveError::Location(crate::report::Chain(&e).to_string()))?;
    let bucket = Bucket::open(&url, &config.archive.bucket).map_err(ArchiveError::from)?;
    let mut settings = config.archive.settings.clone();
    settings.destinations = config
        .destinations
        .iter()
        .map(|d| {
            (
                d.driver.name.clone(),
                d.driver.filter.clone(),
                d.driver.archive_past,
            )
        })
        .collect();
    if let Some(f) = &config.archive.hmac_secret_file {
        let secret = crate::secret::SecretSource::File(f.clone())
            .load_bytes("archive.hmac_secret_file")
            .map_err(|e| ArchiveError::Location(crate::report::Chain(&e).to_string()))?;
        if secret.len() < 16 {
            return Err(ArchiveError::Location(format!(
                "archive.hmac_secret_file {}: the secret must be at least 16 bytes",
                f.display()
            ))
            .into());
        }
        settings.hmac_key = Some(secret);
    }
    Ok(Archiver::new(
        store,
        bucket,
        signer,
        config.log_name.clone(),
        settings,
    ))
}

/// The next time at `hour`:00 UTC strictly after `now`.
fn next_daily_run(now: time::OffsetDateTime, hour: u8) -> time::OffsetDateTime {
    let now = now.to_offset(time::UtcOffset::UTC);
    let today = now.replace_time(time::Time::MIDNIGHT) + time::Duration::hours(i64::from(hour));
    if today > now {
        today
    } else {
        today + time::Duration::days(1)
    }
}

/// Runs the archiver on its schedule until `stop` turns true. Probes the
/// store first and says why when it refuses; every run takes the
/// `archiver` lease, so with several nodes one archives at a time.
async fn archive_worker(
    archiver: Arc<crate::archive::Archiver>,
    schedule: crate::config::ArchiveSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    archiver.set_schedule(match schedule {
        crate::config::ArchiveSchedule::Every(d) => crate::archive::archiver::Schedule {
            text: format!("every {}", crate::archive::format_duration(d)),
            period: d,
        },
        crate::config::ArchiveSchedule::DailyAt(h) => crate::archive::archiver::Schedule {
            text: format!("daily at {h:02}:00 UTC"),
            period: std::time::Duration::from_secs(86_400),
        },
    });
    match archiver.check_store().await {
        Ok(r) => {
            tracing::info!(archive = %archiver.bucket().display(), probe = ?r, "archive store probed")
        }
        Err(e) => {
            tracing::error!(archive = %archiver.bucket().display(), error = %crate::report::Chain(&e), "archive store refused; archive runs will fail until this is fixed")
        }
    }
    loop {
        let wait = match schedule {
            crate::config::ArchiveSchedule::Every(d) => d,
            crate::config::ArchiveSchedule::DailyAt(h) => {
                let now = time::OffsetDateTime::now_utc();
                (next_daily_run(now, h) - now)
                    .try_into()
                    .unwrap_or(std::time::Duration::from_secs(3600))
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let run = archiver.run_leased(None, &|_| {}).await;
        if !matches!(run, Err(crate::archive::ArchiveError::Busy)) {
            crate::audit::record(
                archiver.store().as_ref(),
                "archive.run",
                crate::audit::Actor::Server,
                crate::audit::archive_run(&run),
            )
            .await;
        }
        match run {
            Ok(r) => tracing::info!(
                events = r.events_archived,
                batches = r.batches.len(),
                deleted = r.deleted,
                held_back = r.held_back.len(),
                "archive run finished"
            ),
            Err(crate::archive::ArchiveError::Busy) => {
                tracing::debug!("archive run skipped: another node holds the archiver lease")
            }
            Err(e) => {
                metrics::counter!("trailkeep_archive_failures_total").increment(1);
                tracing::error!(error = %crate::report::Chain(&e), "archive run failed; the next run goes on from the last recorded batch");
            }
        }
    }
}

/// Lease of the scheduled verification: one node at a time reads the whole
/// store.
const VERIFY_LEASE: &str = "verifier";

/// Verifies the whole hot store every `every` (the first run one interval
/// after start) under the `verifier` lease, and records the result in
/// `/metrics` and, when something is wrong, in the log as an error.
async fn verify_worker(
    state: AppState,
    node: crate::node::NodeId,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        let ttl = std::time::Duration::from_secs(60);
        let keeper = match crate::lease::LeaseKeeper::take(
            state.store.clone(),
            VERIFY_LEASE,
            &node,
            ttl,
        )
        .await
        {
            Ok(Some(k)) => k,
            Ok(None) => {
                tracing::debug!("scheduled verification skipped: another node is verifying");
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scheduled verification skipped: cannot take its lease");
                continue;
            }
        };
        let run = crate::verify::verify_store(
            state.store.as_ref(),
            &state.verifier,
            &state.log_name,
            None,
            &|_| {},
        );
        let report = tokio::select! {
            r = run => r,
            _ = stop.changed() => {
                keeper.release().await;
                return;
            }
        };
        keeper.release().await;
        crate::verify::record_run(&report);
        match &report {
            Ok(r) if r.ok => {
                tracing::info!(events = r.events, "scheduled verification found no problem")
            }
            Ok(r) => tracing::error!(
                problems = r.problem_count,
                events = r.events,
                "scheduled verification found problems; run `trailkeep verify` for where"
            ),
            Err(e) => tracing::error!(error = %e, "scheduled verification could not run"),
        }
    }
}

/// How often refused authentications are written to `_audit`.
const REFUSALS_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes the refused authentications counted in each window to `_audit`,
/// and once more at stop.
async fn flush_refusals(
    store: Arc<dyn Store>,
    refusals: Arc<crate::audit::Refusals>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    // Tests shorten the window (the `testing` feature only).
    #[cfg(feature = "testing")]
    let window = std::env::var("TRAILKEEP_TEST_REFUSALS_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(REFUSALS_WINDOW, std::time::Duration::from_millis);
    #[cfg(not(feature = "testing"))]
    let window = REFUSALS_WINDOW;
    loop {
        tokio::select! {
            () = tokio::time::sleep(window) => {}
            _ = stop.changed() => {
                refusals.flush(store.as_ref(), window.as_secs()).await;
                return;
            }
        }
        refusals.flush(store.as_ref(), window.as_secs()).await;
    }
}

/// Writes an archive index at start and then whenever the last one this
/// node wrote is `index_interval` old (an archive run writes one too), so
/// `verify --max-age` can tell a quiet log from a truncated bucket.
async fn index_worker(
    archiver: Arc<crate::archive::Archiver>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = archiver.settings().index_interval;
    let mut tick = tokio::time::interval((every / 4).max(std::time::Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        match archiver.write_index_leased().await {
            Ok(_) | Err(crate::archive::ArchiveError::Busy) => {}
            Err(e) => {
                metrics::counter!("trailkeep_archive_index_failures_total").increment(1);
                tracing::error!(error = %crate::report::Chain(&e), "cannot write the archive index; will retry");
            }
        }
    }
}

/// Creates the data directory (and parents) readable only by its owner
/// (0700): it holds the audit events and the signing key. An existing
/// directory keeps its mode.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Opens the SQLite store in `data_dir`, creating the directory if needed.
///
/// # Errors
/// When the directory cannot be created or the store cannot be opened.
pub fn open_sqlite(data_dir: &Path) -> Result<SqliteStore, ServeError> {
    create_private_dir(data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    Ok(SqliteStore::open(&data_dir.join(DB_FILE))?)
}

/// Opens the configured hot store: SQLite in the data directory (created if
/// needed) or PostgreSQL (migrated if needed).
///
/// # Errors
/// When the store cannot be opened or reached.
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServeError> {
    Ok(match &config.store {
        StoreLocation::Sqlite => Arc::new(open_sqlite(&config.data_dir)?),
        StoreLocation::Postgres(url) => Arc::new(
            crate::store::postgres::PostgresStore::connect_with(url, None, &config.postgres)
                .await?,
        ),
    })
}

/// A started log: store, batcher and checkpointer, ready to be served.
pub struct Running {
    /// Shared state of the HTTP handlers.
    pub state: AppState,
    batcher: tokio::task::JoinHandle<()>,
    checkpointer: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
    stop_workers: tokio::sync::watch::Sender<bool>,
    sources: Vec<tokio::task::JoinHandle<()>>,
    stop_sources: tokio::sync::watch::Sender<bool>,
    archive_task: Option<tokio::task::JoinHandle<()>>,
    audit_task: tokio::task::JoinHandle<()>,
    verify_task: Option<tokio::task::JoinHandle<()>>,
    destination_tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_destinations: tokio::sync::watch::Sender<bool>,
    /// Held while running: one `serve` per data directory.
    _node_lock: std::fs::File,
    /// The server speaks TLS (console cookies get `Secure`).
    tls: bool,
    /// Shard ownership, once serving on a store several nodes share.
    shards: Option<crate::shards::ShardKeeper>,
    node: NodeId,
    cluster: crate::config::ClusterSettings,
}

/// Opens the data directory and starts the batcher and checkpointer.
///
/// # Errors
/// Data directory, store or signing key failures.
pub async fn start(config: &Config) -> Result<Running, ServeError> {
    // The data directory holds the signing key, whichever store is used.
    create_private_dir(&config.data_dir).map_err(|source| ServeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let (node, node_lock) = claim_data_dir(&config.data_dir)?;
    // Installed before anything records: every series from the start.
    let metrics = crate::telemetry::prometheus();
    let store = open_store(config).await?;
    let signer = keyfile::load_or_create(&config.signing_key_path(), &config.log_name)?;
    let (appender, batcher) = Appender::start(store.clone(), config.batch);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    // The archiver and the `_audit` flush stop before the checkpointer's last
    // round, so what they write at stop is signed by it.
    let (stop_workers, _) = tokio::sync::watch::channel(false);
    let checkpointer = tokio::spawn(checkpointer::run(
        store.clone(),
        node.clone(),
        signer.clone(),
        config.log_name.clone(),
        config.checkpoint_interval,
        stop_rx,
    ));
    let archiver =
        Arc::new(archiver(config, store.clone(), signer.clone())?.with_node(node.clone()));
    let archive_task = config.archive.enabled.then(|| {
        let index = tokio::spawn(index_worker(archiver.clone(), stop_workers.subscribe()));
        let run = tokio::spawn(archive_worker(
            archiver.clone(),
            config.archive.schedule,
            stop_workers.subscribe(),
        ));
        tokio::spawn(async move {
            let _ = tokio::join!(index, run);
        })
    });
    let (stop_destinations, destinations_rx) = tokio::sync::watch::channel(false);
    let mut destinations = Vec::new();
    let mut destination_tasks = Vec::new();
    for cfg in &config.destinations {
        let dest = crate::destinations::build(cfg).map_err(ServeError::Destination)?;
        for metric in [
            "trailkeep_destination_delivered_total",
            "trailkeep_destination_retries_total",
            "trailkeep_destination_dead_letters_total",
            "trailkeep_destination_dead_letters_open",
            "trailkeep_destination_lag_events",
            "trailkeep_destination_lag_seconds",
            "trailkeep_destination_paused",
        ] {
            crate::telemetry::register(metric, "destination", &cfg.driver.name);
        }
        let handle = crate::destinations::driver::DriverHandle::default();
        let mut driver = cfg.driver.clone();
        driver.archive = Some(Arc::new(ArchiveFeed(archiver.clone())));
        driver.commits = Some(appender.commits());
        destination_tasks.push(tokio::spawn(crate::destinations::driver::run(
            store.clone(),
            node.clone(),
            dest.clone(),
            driver,
            handle.clone(),
            destinations_rx.clone(),
        )));
        destinations.push(crate::api::DestinationEntry {
            config: cfg.clone(),
            handle,
            dest,
        });
    }
    let refusals = Arc::new(crate::audit::Refusals::default());
    let audit_task = tokio::spawn(flush_refusals(
        store.clone(),
        refusals.clone(),
        stop_workers.subscribe(),
    ));
    let cluster = match store.cluster() {
        Some(c) => Some(crate::api::ClusterRoute {
            owners: c.owners(),
            peer: crate::api::PeerKey::new(signer.derive_key(crate::api::PEER_KEY_PURPOSE)),
            replays: crate::api::Replays::default(),
            mode: config.cluster.non_owner,
            node: node.as_str().to_owned(),
            lease_ttl: config.cluster.lease_ttl,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // Straight to the owner, never through a proxy.
                .no_proxy()
                .connect_timeout(std::time::Duration::from_secs(2))
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .map_err(|e| ServeError::SourceClient {
                    name: "cluster forwarding".into(),
                    message: crate::net::describe(&e),
                })?,
        }),
        None => None,
    };
    let state = Arc::new(crate::api::Shared {
        cluster,
        destinations,
        archiver: archiver.clone(),
        store: store.clone(),
        appender,
        auth: Authenticator::new(store.clone()),
        limits: config.limits,
        verifier: signer.verifier(),
        log_name: config.log_name.clone(),
        metrics,
        stream_labels: config.metrics.stream_labels,
        scraped: tokio::sync::Mutex::default(),
        rate: crate::api::RateLimits::new(&config.server),
        refusals: refusals.clone(),
        query: crate::query::Engine::new(
            store.clone(),
            Some(archiver.bucket().clone()),
            config.query.clone(),
        ),
    });
    crate::audit::record(
        store.as_ref(),
        "config.loaded",
        crate::audit::Actor::Server,
        config.audit_summary(),
    )
    .await;
    let (stop_sources, sources_rx) = tokio::sync::watch::channel(false);
    // Stops with the sources (it holds the state, and so the appender).
    let verify_task = config.verify_interval.map(|every| {
        tokio::spawn(verify_worker(
            state.clone(),
            node.clone(),
            every,
            stop_sources.subscribe(),
        ))
    });
    let mut sources = Vec::new();
    if !config.sources.is_empty() {
        for cfg in &config.sources {
            let client = cfg.http_client().map_err(|e| ServeError::SourceClient {
                name: cfg.name.to_string(),
                message: crate::net::describe(&e),
            })?;
            let key = cfg.load_key()?;
            sources.push(tokio::spawn(crate::sources::sse::run(
                node.clone(),
                cfg.clone(),
                key,
                client,
                state.appender.clone(),
                store.clone(),
                sources_rx.clone(),
            )));
        }
    }
    Ok(Running {
        state,
        batcher,
        checkpointer,
        stop,
        stop_workers,
        sources,
        stop_sources,
        archive_task,
        audit_task,
        verify_task,
        destination_tasks,
        stop_destinations,
        _node_lock: node_lock,
        tls: config.server.tls.is_some(),
        shards: None,
        node,
        cluster: config.cluster.clone(),
    })
}

impl Running {
    /// Returns the router over this log.
    pub fn router(&self) -> axum::Router {
        crate::ui::router(self.state.clone(), self.tls).merge(router(self.state.clone()))
    }

    /// Starts keeping this node's share of the shards, on a store several
    /// nodes share (nothing on SQLite). `bound` is the listener's address:
    /// the advertised URL defaults to it when it names one host.
    pub async fn start_shards(&mut self, bound: std::net::SocketAddr) {
        let Some(cluster) = self.state.store.cluster() else {
            return;
        };
        let url = self.cluster.advertise_url.clone().or_else(|| {
            (!bound.ip().is_unspecified()).then(|| {
                let scheme = if self.tls { "https" } else { "http" };
                format!("{scheme}://{bound}")
            })
        });
        if url.is_none() {
            tracing::warn!(
                "[cluster] advertise_url is not set and the listen address names no one host: other nodes will commit this node's streams themselves instead of forwarding them here"
            );
        }
        self.shards = Some(
            crate::shards::ShardKeeper::start(
                cluster,
                self.node.clone(),
                url,
                self.cluster.lease_ttl,
            )
            .await,
        );
    }

    /// Stops the sources, then the batcher (after draining its queue), and runs a last
    /// checkpoint round. Every router clone must be dropped first, or the
    /// batcher keeps waiting for requests.
    pub async fn stop(self) {
        let Running {
            state,
            batcher,
            checkpointer,
            stop,
            stop_workers,
            sources,
            stop_sources,
            archive_task,
            audit_task,
            verify_task,
            destination_tasks,
            stop_destinations,
            _node_lock,
            tls: _,
            shards,
            node: _,
            cluster: _,
        } = self;
        // Sources first: each finishes its in-flight batch and stores its
        // position; then the batcher drains; then the last checkpoint.
        let _ = stop_sources.send(true);
        for s in sources {
            let _ = s.await;
        }
        // Dispatchers stop after their batch in flight; their cursors stay.
        let _ = stop_destinations.send(true);
        for d in destination_tasks {
            let _ = d.await;
        }
        // A verification under way is only reading: it was dropped with the
        // sources' stop; it holds the state, so it ends before the batcher.
        if let Some(t) = verify_task {
            let _ = t.await;
        }
        drop(state);
        let _ = batcher.await;
        // Nothing more is appended here: the shards go to the other nodes now.
        if let Some(k) = shards {
            k.stop().await;
        }
        // The archiver and the last `_audit` flush write through the store
        // directly: they finish before the checkpointer's last round, so
        // nothing they write at stop is left unsigned.
        let _ = stop_workers.send(true);
        let _ = audit_task.await;
        if let Some(t) = archive_task {
            let _ = t.await;
        }
        let _ = stop.send(true);
        let _ = checkpointer.await;
    }
}

/// Runs the server on `listener` until `shutdown` resolves.
///
/// # Errors
/// Startup failures (data directory, store, key) and HTTP server errors.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // A bad certificate fails before anything starts.
    if let Some(files) = &config.server.tls {
        crate::http::load_tls(files)?;
    }
    let mut running = start(&config).await?;
    running
        .start_shards(listener.local_addr().map_err(ServeError::Http)?)
        .await;
    let app = running.router();
    tracing::info!(
        listen = %listener.local_addr().map_err(ServeError::Http)?,
        tls = config.server.tls.is_some(),
        data_dir = %config.data_dir.display(),
        "trailkeep serving"
    );
    let served = crate::http::serve(listener, app, &config.server, shutdown).await;
    // In-flight requests have finished (each waited for its commit); the
    // router is dropped, so the batcher drains and stops.
    running.stop().await;
    tracing::info!("trailkeep stopped");
    Ok(served?)
}

/// The archive as a destination's [`crate::destinations::driver::ColdFeed`]:
/// wired here so that destinations do not depend on the archive.
pub struct ArchiveFeed(pub Arc<crate::archive::Archiver>);

impl std::fmt::Debug for ArchiveFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ArchiveFeed")
            .field(&self.0.bucket().display())
            .finish()
    }
}

#[async_trait::async_trait]
impl crate::destinations::driver::ColdFeed for ArchiveFeed {
    async fn read(
        &self,
        stream: &str,
        from_seq: u64,
        max: usize,
    ) -> Result<Option<Vec<crate::store::StoredEvent>>, crate::destinations::driver::ColdFeedError>
    {
        let events = self.0.read_archived(stream, from_seq, max).await?;
        Ok(events.map(|v| v.into_iter().map(Into::into).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::next_daily_run;
    use time::macros::datetime;

    #[test]
    fn daily_runs_fall_on_the_hour_utc() {
        assert_eq!(
            next_daily_run(datetime!(2026-11-23 01:30 UTC), 3),
            datetime!(2026-11-23 03:00 UTC)
        );
        assert_eq!(
            next_daily_run(datetime!(2026-11-23 03:00 UTC), 3),
            datetime!(2026-11-24 03:00 UTC)
        );
        assert_eq!(
            next_daily_run(datetime!(2026-11-23 23:59 UTC), 0),
            datetime!(2026-11-24 00:00 UTC)
        );
        assert_eq!(
            next_daily_run(datetime!(2026-11-23 05:00 +02:00), 4),
            datetime!(2026-11-23 04:00 UTC)
        );
        assert_eq!(
            next_daily_run(datetime!(2026-11-23 07:00 +02:00), 4),
            datetime!(2026-11-24 04:00 UTC)
        );
    }
}
