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
use crate::store::Store;
use crate::store::sqlite::SqliteStore;

/// Returns this process's node id (random per start): the holder name in
/// leases.
pub fn node_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 6];
        let _ = getrandom::fill(&mut b);
        format!("node-{}-{}", std::process::id(), hex::encode(b))
    })
}

/// File name of the SQLite database inside the data directory.
pub const DB_FILE: &str = "trailkeep.db";

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("data directory {path}: {source}")]
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
    /// A source could not start (its API key, or the HTTP client).
    #[error("{0}")]
    Source(String),
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
    sources: Vec<tokio::task::JoinHandle<()>>,
    stop_sources: tokio::sync::watch::Sender<bool>,
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
    let store = open_store(config).await?;
    let signer = keyfile::load_or_create(&config.signing_key_path(), &config.log_name)?;
    let (appender, batcher) = Appender::start(store.clone(), config.batch);
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let checkpointer = tokio::spawn(checkpointer::run(
        store.clone(),
        signer.clone(),
        config.log_name.clone(),
        config.checkpoint_interval,
        stop_rx,
    ));
    let state = Arc::new(crate::api::Shared {
        store: store.clone(),
        appender,
        auth: Authenticator::new(store.clone()),
        limits: config.limits,
        verifier: signer.verifier(),
        log_name: config.log_name.clone(),
        metrics: crate::telemetry::prometheus(),
    });
    let (stop_sources, sources_rx) = tokio::sync::watch::channel(false);
    let mut sources = Vec::new();
    if !config.sources.is_empty() {
        let client = crate::sources::http_client()
            .map_err(|e| ServeError::Source(format!("http client: {e}")))?;
        for cfg in &config.sources {
            let key = cfg.load_key().map_err(ServeError::Source)?;
            sources.push(tokio::spawn(crate::sources::sse::run(
                cfg.clone(),
                key,
                client.clone(),
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
        sources,
        stop_sources,
    })
}

impl Running {
    /// Returns the router over this log.
    pub fn router(&self) -> axum::Router {
        router(self.state.clone())
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
            sources,
            stop_sources,
        } = self;
        // Sources first: each finishes its in-flight batch and stores its
        // position; then the batcher drains; then the last checkpoint.
        let _ = stop_sources.send(true);
        for s in sources {
            let _ = s.await;
        }
        drop(state);
        let _ = batcher.await;
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
    let running = start(&config).await?;
    let app = running.router();
    tracing::info!(listen = %listener.local_addr().map_err(ServeError::Http)?, data_dir = %config.data_dir.display(), "trailkeep serving");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // In-flight requests have finished (each waited for its commit); the
    // router is dropped, so the batcher drains and stops.
    running.stop().await;
    tracing::info!("trailkeep stopped");
    served.map_err(ServeError::Http)
}
