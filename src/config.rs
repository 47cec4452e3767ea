//! Configuration: the TOML file (`RawConfig`, every table refusing unknown
//! keys) merged with CLI flags, then validated into [`Config`].
//!
//! Validation is pure: no filesystem, network or key loading (`server` does
//! that). Each error names the offending key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::event::Limits;
use crate::ingest::BatchLimits;

/// The config file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Name of the log: checkpoint origins are `<log_name>/<stream>`.
    pub log_name: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<String>,
    /// Hot store: `sqlite` (default, in the data directory) or a
    /// `postgres://` URL.
    pub store: Option<String>,
    /// The Ed25519 signing key (default `DATA_DIR/signing.key`); nodes that
    /// share a PostgreSQL store must all point at the same key.
    pub signing_key_file: Option<PathBuf>,
    /// `[ingest]` table.
    #[serde(default)]
    pub ingest: RawIngest,
    /// `[checkpoint]` table.
    #[serde(default)]
    pub checkpoint: RawCheckpoint,
    /// `[[sources]]` tables.
    #[serde(default)]
    pub sources: Vec<crate::sources::RawSource>,
    /// `[postgres]` table: pool settings when `store` is a PostgreSQL URL.
    #[serde(default)]
    pub postgres: RawPostgres,
    /// `[cluster]` table: nodes sharing a PostgreSQL store.
    #[serde(default)]
    pub cluster: RawCluster,
    /// `[archive]` table: the cold archive.
    #[serde(default)]
    pub archive: RawArchive,
    /// `[[destinations]]` tables.
    #[serde(default)]
    pub destinations: Vec<crate::destinations::config::RawDestination>,
    /// `[server]` table: the HTTP listener's limits and TLS.
    #[serde(default)]
    pub server: RawServer,
    /// `[metrics]` table: what `/metrics` exports.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[verify]` table: scheduled verification of the hot store.
    #[serde(default)]
    pub verify: RawVerify,
    /// `[query]` table: limits of SQL queries.
    #[serde(default)]
    pub query: crate::query::RawQuery,
}

/// `[metrics]`: what `/metrics` exports.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Export per-stream series with the stream name as a label (default
    /// false: `/metrics` needs no key, and a stream's name is visible only
    /// to keys for it; with many streams, each costs series).
    pub stream_labels: Option<bool>,
}

/// `[verify]`: scheduled verification of the hot store.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// Verify every hash, link, seq and checkpoint of the hot store this
    /// often (default `24h`; `off` disables). One node verifies at a time
    /// (lease `verifier`); the result is in `/metrics`.
    pub interval: Option<String>,
}

/// The validated `[metrics]` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsSettings {
    /// Export per-stream series.
    pub stream_labels: bool,
}

/// How often `serve` verifies the hot store unless `[verify] interval` says.
pub const DEFAULT_VERIFY_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// `[server]`: how the listener treats slow, idle, numerous or greedy
/// clients, and TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// A connection must send a whole request head within this long, ms,
    /// counted from when it opens or its previous response ended: slow
    /// (slowloris) and idle keep-alive connections are closed (default 10000).
    pub header_timeout_ms: Option<u64>,
    /// A request body must arrive within this long, ms (default 30000).
    pub body_timeout_ms: Option<u64>,
    /// Open connections at most; more are closed at once (default 1024).
    pub max_connections: Option<usize>,
    /// On SIGTERM, in-flight requests get this long, ms, to finish before
    /// their connections are closed (default 10000).
    pub shutdown_grace_ms: Option<u64>,
    /// Requests per second one API key may make; 0 turns it off (default 1000).
    pub requests_per_second: Option<u32>,
    /// Events per second one API key may append; 0 turns it off (default 100000).
    pub events_per_second: Option<u32>,
    /// PEM certificate chain: with `tls_key_file`, the listener speaks
    /// HTTPS only; both are read again on SIGHUP.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// The validated `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// See [`RawServer::header_timeout_ms`].
    pub header_timeout: Duration,
    /// See [`RawServer::body_timeout_ms`].
    pub body_timeout: Duration,
    /// See [`RawServer::max_connections`].
    pub max_connections: usize,
    /// See [`RawServer::shutdown_grace_ms`].
    pub shutdown_grace: Duration,
    /// Per-key requests per second (0: unlimited).
    pub requests_per_second: u32,
    /// Per-key events per second (0: unlimited).
    pub events_per_second: u32,
    /// Certificate and key files, when TLS is on.
    pub tls: Option<TlsFiles>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            shutdown_grace: Duration::from_secs(10),
            requests_per_second: 1000,
            events_per_second: 100_000,
            tls: None,
        }
    }
}

/// TLS certificate chain and private key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl RawServer {
    pub(crate) fn validate(self) -> Result<ServerSettings, ConfigError> {
        let d = ServerSettings::default();
        let ms = |v: Option<u64>, key: &str, def: Duration| -> Result<Duration, ConfigError> {
            match v {
                None => Ok(def),
                Some(v) if (100..=3_600_000).contains(&v) => Ok(Duration::from_millis(v)),
                Some(_) => Err(err(key, "must be between 100 and 3600000 (ms)")),
            }
        };
        let max_connections = self.max_connections.unwrap_or(d.max_connections);
        if !(1..=1_000_000).contains(&max_connections) {
            return Err(err(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        let tls = match (self.tls_cert_file, self.tls_key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(err(
                    "server.tls_key_file",
                    "tls_cert_file needs tls_key_file too",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "server.tls_cert_file",
                    "tls_key_file needs tls_cert_file too",
                ));
            }
        };
        Ok(ServerSettings {
            header_timeout: ms(
                self.header_timeout_ms,
                "server.header_timeout_ms",
                d.header_timeout,
            )?,
            body_timeout: ms(
                self.body_timeout_ms,
                "server.body_timeout_ms",
                d.body_timeout,
            )?,
            max_connections,
            shutdown_grace: ms(
                self.shutdown_grace_ms,
                "server.shutdown_grace_ms",
                d.shutdown_grace,
            )?,
            requests_per_second: self.requests_per_second.unwrap_or(d.requests_per_second),
            events_per_second: self.events_per_second.unwrap_or(d.events_per_second),
            tls,
        })
    }
}

/// `[archive]`: where and when hot events move to object storage.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    /// `file:///dir`, `s3://bucket/prefix?…`, `gs://…`, `az://…`
    /// (default `file://DATA_DIR/archive`).
    pub url: Option<String>,
    /// Archive events received longer ago than this (default `90d`).
    pub older_than: Option<String>,
    /// Most events per object (default 100000).
    pub segment_events: Option<u64>,
    /// Most uncompressed bytes per object (default 67108864).
    pub segment_bytes: Option<u64>,
    /// `gzip` (default) or `zstd`.
    pub compression: Option<String>,
    /// Run every this long (default `1h`); exclusive with `daily_hour_utc`.
    pub interval: Option<String>,
    /// Run once a day at this UTC hour (0-23) instead of on an interval.
    pub daily_hour_utc: Option<u8>,
    /// Whether `serve` runs the archiver (default true).
    pub enabled: Option<bool>,
    /// A file holding a shared secret: manifests then carry an HMAC too.
    pub hmac_secret_file: Option<PathBuf>,
    /// Archive to a store that overwrites on create-only writes (only when
    /// exactly one archiver ever writes there).
    pub single_writer: Option<bool>,
    /// S3 Object Lock mode set on every archived object: `compliance` or
    /// `governance` (s3:// archives whose bucket has Object Lock enabled).
    pub object_lock_mode: Option<String>,
    /// Days of Object Lock retention from each object's write (with
    /// `object_lock_mode`).
    pub object_lock_days: Option<u32>,
    /// Timeout of one object store request, ms (default 60000).
    pub request_timeout_ms: Option<u64>,
    /// Retries of a failed object store request (default 4).
    pub max_retries: Option<usize>,
    /// Archiver lease TTL, ms (default 60000): how long a crashed archiver
    /// keeps others waiting.
    pub lease_ttl_ms: Option<u64>,
    /// Write a signed index of every stream at least this often, even when
    /// nothing is archived (default `1h`); `verify --max-age` defaults to
    /// twice this.
    pub index_interval: Option<String>,
}

/// When the archiver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveSchedule {
    /// Every so long.
    Every(Duration),
    /// Daily at this UTC hour.
    DailyAt(u8),
}

/// The validated `[archive]` table.
#[derive(Clone)]
pub struct ArchiveConfig {
    /// The URL, when configured (else the data directory's `archive`).
    pub url: Option<String>,
    /// Archive settings (the HMAC key is loaded at start from `hmac_secret_file`).
    pub settings: crate::archive::ArchiveSettings,
    /// When `serve` runs it.
    pub schedule: ArchiveSchedule,
    /// Whether `serve` runs it.
    pub enabled: bool,
    /// The secret's file.
    pub hmac_secret_file: Option<PathBuf>,
    /// Object store client settings.
    pub bucket: crate::archive::BucketOptions,
}

impl std::fmt::Debug for ArchiveConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveConfig")
            .field("url", &self.url)
            .field("settings", &self.settings)
            .field("schedule", &self.schedule)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl RawArchive {
    pub(crate) fn validate(self, over: Option<String>) -> Result<ArchiveConfig, ConfigError> {
        let d = crate::archive::ArchiveSettings::default();
        let dur = |key: &str,
                   v: Option<String>,
                   default: Duration|
         -> Result<Duration, ConfigError> {
            match v {
                None => Ok(default),
                Some(s) => crate::archive::parse_duration(&s).map_err(|e| err(key, e.to_string())),
            }
        };
        let older_than = dur("archive.older_than", self.older_than, d.older_than)?;
        let url = over.or(self.url);
        if let Some(u) = &url
            && !["file://", "s3://", "gs://", "az://"]
                .iter()
                .any(|p| u.starts_with(p))
        {
            return Err(err(
                "archive.url",
                "must be a file://, s3://, gs:// or az:// URL",
            ));
        }
        let segment_events = self.segment_events.unwrap_or(d.segment_events);
        if !(1..=10_000_000).contains(&segment_events) {
            return Err(err(
                "archive.segment_events",
                "must be between 1 and 10000000",
            ));
        }
        let segment_bytes = self.segment_bytes.unwrap_or(d.segment_bytes);
        if !((64 << 10)..=(4 << 30)).contains(&segment_bytes) {
            return Err(err(
                "archive.segment_bytes",
                "must be between 65536 and 4294967296 (single PUTs)",
            ));
        }
        let compression = match self.compression.as_deref() {
            None => d.compression,
            Some(c) => crate::archive::Compression::parse(c)
                .ok_or_else(|| err("archive.compression", "must be \"gzip\" or \"zstd\""))?,
        };
        let schedule = match (self.interval, self.daily_hour_utc) {
            (Some(_), Some(_)) => {
                return Err(err(
                    "archive.daily_hour_utc",
                    "set either archive.interval or archive.daily_hour_utc, not both",
                ));
            }
            (_, Some(h)) if h > 23 => return Err(err("archive.daily_hour_utc", "must be 0-23")),
            (_, Some(h)) => ArchiveSchedule::DailyAt(h),
            (i, None) => {
                let every = dur("archive.interval", i, Duration::from_secs(3600))?;
                if every < Duration::from_secs(1) {
                    return Err(err("archive.interval", "must be at least 1s"));
                }
                ArchiveSchedule::Every(every)
            }
        };
        let request_timeout_ms = self.request_timeout_ms.unwrap_or(60_000);
        if !(100..=3_600_000).contains(&request_timeout_ms) {
            return Err(err(
                "archive.request_timeout_ms",
                "must be between 100 and 3600000",
            ));
        }
        let lease_ttl_ms = self.lease_ttl_ms.unwrap_or(60_000);
        if !(300..=3_600_000).contains(&lease_ttl_ms) {
            return Err(err(
                "archive.lease_ttl_ms",
                "must be between 300 and 3600000",
            ));
        }
        let index_interval = dur(
            "archive.index_interval",
            self.index_interval,
            d.index_interval,
        )?;
        if index_interval < Duration::from_secs(1) {
            return Err(err("archive.index_interval", "must be at least 1s"));
        }
        let max_retries = self.max_retries.unwrap_or(4);
        if max_retries > 20 {
            return Err(err("archive.max_retries", "must be at most 20"));
        }
        let object_lock = match (self.object_lock_mode, self.object_lock_days) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(err(
                    "archive.object_lock_days",
                    "set object_lock_mode (compliance or governance) too",
                ));
            }
            (Some(_), None) => {
                return Err(err(
                    "archive.object_lock_mode",
                    "set object_lock_days (how long to retain each object) too",
                ));
            }
            (Some(mode), Some(days)) => {
                let mode = crate::objstore::object_lock::LockMode::parse(&mode)
                    .map_err(|m| err("archive.object_lock_mode", m))?;
                if !(1..=36_500).contains(&days) {
                    return Err(err(
                        "archive.object_lock_days",
                        "must be between 1 and 36500",
                    ));
                }
                if !url.as_deref().is_some_and(|u| u.starts_with("s3://")) {
                    return Err(err(
                        "archive.object_lock_mode",
                        "Object Lock is an S3 feature: archive.url must be s3://",
                    ));
                }
                Some(crate::objstore::object_lock::LockSettings { mode, days })
            }
        };
        Ok(ArchiveConfig {
            url,
            settings: crate::archive::ArchiveSettings {
                older_than,
                segment_events,
                segment_bytes,
                compression,
                hmac_key: None,
                single_writer: self.single_writer.unwrap_or(false),
                lease_ttl: Duration::from_millis(lease_ttl_ms),
                index_interval,
                destinations: Vec::new(),
            },
            schedule,
            enabled: self.enabled.unwrap_or(true),
            hmac_secret_file: self.hmac_secret_file,
            bucket: crate::archive::BucketOptions {
                request_timeout: Duration::from_millis(request_timeout_ms),
                max_retries,
                object_lock,
            },
        })
    }
}

/// `[cluster]`: how nodes sharing a PostgreSQL store divide the streams
/// (ignored on SQLite, where one process is the only writer).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The URL other nodes use to reach this one (`http(s)://host:port`).
    /// Default: the listen address, when it names one host (not
    /// `0.0.0.0` or `[::]`); without one, other nodes commit this node's
    /// streams themselves instead of forwarding to it.
    pub advertise_url: Option<String>,
    /// Shard lease TTL, ms (default 6000): after a `kill -9` of a node, its
    /// shards move to the others within about this long plus a third.
    pub lease_ttl_ms: Option<u64>,
    /// What a node does with an ingest request for a stream another node
    /// owns: `forward` (default: send it on to the owner and answer with
    /// its answer), `redirect` (answer 307 to the owner's URL) or `local`
    /// (commit it here; correct, but it costs the owner a reload).
    pub non_owner: Option<String>,
}

/// What a node does with an ingest request for a stream another node owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonOwner {
    /// Send it to the owner, answer with the owner's answer.
    Forward,
    /// `307 Temporary Redirect` to the owner's URL.
    Redirect,
    /// Commit it here.
    Local,
}

/// The validated `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// See [`RawCluster::advertise_url`] (validated; no trailing slash).
    pub advertise_url: Option<String>,
    /// See [`RawCluster::lease_ttl_ms`].
    pub lease_ttl: Duration,
    /// See [`RawCluster::non_owner`].
    pub non_owner: NonOwner,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            advertise_url: None,
            lease_ttl: Duration::from_millis(6000),
            non_owner: NonOwner::Forward,
        }
    }
}

impl RawCluster {
    fn validate(self) -> Result<ClusterSettings, ConfigError> {
        let advertise_url = match self.advertise_url {
            None => None,
            Some(u) => {
                let url = url::Url::parse(&u).map_err(|e| {
                    err(
                        "cluster.advertise_url",
                        format!(
                            "{e}: expected http(s)://host:port, how the other nodes reach this one"
                        ),
                    )
                })?;
                if !matches!(url.scheme(), "http" | "https")
                    || url.host_str().is_none_or(str::is_empty)
                    || !url.username().is_empty()
                    || url.password().is_some()
                    || url.query().is_some()
                    || url.fragment().is_some()
                    || url.path() != "/"
                {
                    return Err(err(
                        "cluster.advertise_url",
                        "must be http(s)://host:port with no user, path, query or fragment",
                    ));
                }
                Some(url.as_str().trim_end_matches('/').to_owned())
            }
        };
        let ttl = self.lease_ttl_ms.unwrap_or(6000);
        if !(300..=600_000).contains(&ttl) {
            return Err(err(
                "cluster.lease_ttl_ms",
                "must be between 300 and 600000 (failover takes about this long)",
            ));
        }
        let non_owner = match self.non_owner.as_deref() {
            None | Some("forward") => NonOwner::Forward,
            Some("redirect") => NonOwner::Redirect,
            Some("local") => NonOwner::Local,
            Some(o) => {
                return Err(err(
                    "cluster.non_owner",
                    format!("{o:?}: must be \"forward\", \"redirect\" or \"local\""),
                ));
            }
        };
        Ok(ClusterSettings {
            advertise_url,
            lease_ttl: Duration::from_millis(ttl),
            non_owner,
        })
    }
}

/// `[postgres]`: connection pool settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPostgres {
    /// Most connections per node (default 16).
    #[serde(default = "default_pg_max_connections")]
    pub max_connections: usize,
    /// Connection timeout, ms (default 10000).
    #[serde(default = "default_pg_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

impl Default for RawPostgres {
    fn default() -> Self {
        Self {
            max_connections: default_pg_max_connections(),
            connect_timeout_ms: default_pg_connect_timeout_ms(),
        }
    }
}

fn default_pg_max_connections() -> usize {
    16
}
fn default_pg_connect_timeout_ms() -> u64 {
    10_000
}

/// `[ingest]`: request limits and group commit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// Largest event, bytes (default 65536).
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Largest request body, bytes (default 8 MiB).
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Most events per request (default 10000).
    #[serde(default = "default_max_events_per_request")]
    pub max_events_per_request: usize,
    /// Most events in one group commit (default 20000).
    #[serde(default = "default_max_batch_events")]
    pub max_batch_events: usize,
}

impl Default for RawIngest {
    fn default() -> Self {
        Self {
            max_event_bytes: default_max_event_bytes(),
            max_request_bytes: default_max_request_bytes(),
            max_events_per_request: default_max_events_per_request(),
            max_batch_events: default_max_batch_events(),
        }
    }
}

/// `[checkpoint]`: signing cadence.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheckpoint {
    /// Shortest time between two checkpoints of one stream, ms (default 1000).
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
}

impl Default for RawCheckpoint {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
        }
    }
}

fn default_max_event_bytes() -> usize {
    64 * 1024
}
fn default_max_request_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_events_per_request() -> usize {
    10_000
}
fn default_max_batch_events() -> usize {
    20_000
}
fn default_interval_ms() -> u64 {
    1000
}

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./trailkeep-data";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7470";
/// Default log name.
pub const DEFAULT_LOG_NAME: &str = "trailkeep.local";

/// Where the hot store is.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in the data directory.
    Sqlite,
    /// A PostgreSQL URL (may hold a password: never printed).
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite => f.write_str("Sqlite"),
            Self::Postgres(_) => f.write_str("Postgres(url redacted)"),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Hot store.
    pub store: StoreLocation,
    /// Log name.
    pub log_name: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// Request limits.
    pub limits: Limits,
    /// Group commit limits.
    pub batch: BatchLimits,
    /// Checkpoint interval.
    pub checkpoint_interval: Duration,
    /// Event sources.
    pub sources: Vec<crate::sources::SourceConfig>,
    /// Configured signing key file, if not the default.
    pub signing_key_file: Option<PathBuf>,
    /// PostgreSQL pool settings.
    pub postgres: crate::store::postgres::PoolSettings,
    /// Nodes sharing a PostgreSQL store.
    pub cluster: ClusterSettings,
    /// The cold archive.
    pub archive: ArchiveConfig,
    /// Destinations.
    pub destinations: Vec<crate::destinations::config::DestinationConfig>,
    /// The HTTP listener's limits and TLS.
    pub server: ServerSettings,
    /// What `/metrics` exports.
    pub metrics: MetricsSettings,
    /// How often `serve` verifies the hot store (`None`: never).
    pub verify_interval: Option<Duration>,
    /// Limits of SQL queries.
    pub query: crate::query::QuerySettings,
}

impl Config {
    /// What `config.loaded` records in `_audit`: the shape of the
    /// configuration, never a URL's credentials or query, a key or a secret.
    pub fn audit_summary(&self) -> serde_json::Value {
        let bare = |u: &str| {
            url::Url::parse(u).map_or_else(
                |_| "(unparsable)".to_owned(),
                |mut u| {
                    let _ = u.set_username("");
                    let _ = u.set_password(None);
                    u.set_query(None);
                    u.to_string()
                },
            )
        };
        serde_json::json!({
            "log_name": self.log_name,
            "listen": self.listen.to_string(),
            "tls": self.server.tls.is_some(),
            "store": match &self.store { StoreLocation::Sqlite => "sqlite", StoreLocation::Postgres(_) => "postgres" },
            "data_dir": self.data_dir.display().to_string(),
            "checkpoint_interval_ms": self.checkpoint_interval.as_millis() as u64,
            "archive": self.archive.url.as_deref().map_or_else(|| "file://DATA_DIR/archive".to_owned(), bare),
            "sources": self.sources.iter().map(|s| serde_json::json!({"name": s.name, "stream": s.stream, "url": bare(s.url.as_str())})).collect::<Vec<_>>(),
            "destinations": self.destinations.iter().map(|d| serde_json::json!({"name": d.driver.name, "type": d.type_name()})).collect::<Vec<_>>(),
            "server": {
                "header_timeout_ms": self.server.header_timeout.as_millis() as u64,
                "body_timeout_ms": self.server.body_timeout.as_millis() as u64,
                "max_connections": self.server.max_connections,
                "requests_per_second": self.server.requests_per_second,
                "events_per_second": self.server.events_per_second,
            },
        })
    }

    /// The archive URL: `archive.url` (or `--archive`), else
    /// `file://DATA_DIR/archive` with the data directory made absolute.
    ///
    /// # Errors
    /// When the working directory cannot be read.
    pub fn archive_url(&self) -> std::io::Result<String> {
        if let Some(u) = &self.archive.url {
            return Ok(u.clone());
        }
        let dir = std::path::absolute(self.data_dir.join("archive"))?;
        url::Url::from_directory_path(&dir)
            .map(|u| u.to_string())
            .map_err(|()| std::io::Error::other(format!("{} is not a usable path", dir.display())))
    }

    /// Returns where the signing key is: `signing_key_file`, else
    /// `DATA_DIR/signing.key`.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::keyfile::FILE_NAME))
    }
}

/// A configuration error naming the key (see [`crate::setting`]).
pub type ConfigError = crate::setting::SettingError;

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(key, message)
}

/// Values given on the command line (or `TRAILKEEP_*`), which win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--listen`.
    pub listen: Option<String>,
    /// `--store`.
    pub store: Option<String>,
    /// `--archive`.
    pub archive: Option<String>,
}

impl RawConfig {
    /// Parses TOML text.
    ///
    /// # Errors
    /// Syntax errors and unknown keys, with the key's name and position.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_owned();
            let key = match msg.split('`').nth(1) {
                // The empty key, as TOML spells it (`'' = 1`).
                Some("") => "\"\"",
                Some(k) => k,
                None => "(file)",
            };
            // The message alone, and where: `check::render` shows the
            // line and a caret under it on lines of their own (toml's own
            // Display does, without the file name; issue #15).
            let mut e2 = err(key, msg.clone());
            e2.span = e.span();
            e2
        })
    }

    /// Validates into a [`Config`], applying `over`.
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub fn validate(self, over: &Overrides) -> Result<Config, ConfigError> {
        let log_name = self.log_name.unwrap_or_else(|| DEFAULT_LOG_NAME.into());
        if log_name.is_empty()
            || log_name.contains('+')
            || log_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                "log_name",
                "must be non-empty, without spaces or '+' (it names the signing key)",
            ));
        }
        let listen_s = over
            .listen
            .clone()
            .or(self.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_s.parse().map_err(|_| {
            err(
                "listen",
                format!("{listen_s:?} is not an address such as 127.0.0.1:7470"),
            )
        })?;
        let data_dir = over
            .data_dir
            .clone()
            .or(self.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        let i = self.ingest;
        if !(1024..=16 * 1024 * 1024).contains(&i.max_event_bytes) {
            return Err(err(
                "ingest.max_event_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if i.max_request_bytes < i.max_event_bytes || i.max_request_bytes > 256 * 1024 * 1024 {
            return Err(err(
                "ingest.max_request_bytes",
                "must be at least ingest.max_event_bytes and at most 268435456",
            ));
        }
        if !(1..=1_000_000).contains(&i.max_events_per_request) {
            return Err(err(
                "ingest.max_events_per_request",
                "must be between 1 and 1000000",
            ));
        }
        if !(1..=1_000_000).contains(&i.max_batch_events) {
            return Err(err(
                "ingest.max_batch_events",
                "must be between 1 and 1000000",
            ));
        }
        if !(10..=3_600_000).contains(&self.checkpoint.interval_ms) {
            return Err(err(
                "checkpoint.interval_ms",
                "must be between 10 and 3600000",
            ));
        }
        let store = match over.store.clone().or(self.store).as_deref() {
            None | Some("sqlite") => StoreLocation::Sqlite,
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                StoreLocation::Postgres(u.to_owned())
            }
            Some(_) => return Err(err("store", "must be \"sqlite\" or a postgres:// URL")),
        };
        let mut sources = Vec::new();
        for (i, raw) in self.sources.into_iter().enumerate() {
            let s = raw
                .validate()
                .map_err(|e| e.within(&format!("sources[{i}]")))?;
            if sources
                .iter()
                .any(|o: &crate::sources::SourceConfig| o.name == s.name)
            {
                return Err(err(
                    &format!("sources[{i}].name"),
                    format!("{:?} is used by another source", s.name),
                ));
            }
            sources.push(s);
        }
        if !(1..=1000).contains(&self.postgres.max_connections) {
            return Err(err(
                "postgres.max_connections",
                "must be between 1 and 1000",
            ));
        }
        if !(100..=600_000).contains(&self.postgres.connect_timeout_ms) {
            return Err(err(
                "postgres.connect_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        let cluster = self.cluster.validate()?;
        let archive = self.archive.validate(over.archive.clone())?;
        let mut destinations: Vec<crate::destinations::config::DestinationConfig> = Vec::new();
        for (i, raw) in self.destinations.into_iter().enumerate() {
            let d = raw
                .validate()
                .map_err(|e| e.within(&format!("destinations[{i}]")))?;
            if destinations.iter().any(|o| o.driver.name == d.driver.name) {
                return Err(err(
                    &format!("destinations[{i}].name"),
                    format!("{:?} is used by another destination", d.driver.name),
                ));
            }
            destinations.push(d);
        }
        let server = self.server.validate()?;
        let verify_interval = match self.verify.interval.as_deref() {
            Some("off") => None,
            None => Some(DEFAULT_VERIFY_INTERVAL),
            Some(v) => {
                let d = crate::archive::parse_duration(v).map_err(|e| {
                    err(
                        "verify.interval",
                        format!("{e} (or \"off\" to turn scheduled verification off)"),
                    )
                })?;
                if d < Duration::from_secs(1) {
                    return Err(err(
                        "verify.interval",
                        "must be at least 1s (each run reads the whole hot store: hours suit most stores)",
                    ));
                }
                Some(d)
            }
        };
        let query = self.query.validate().map_err(|e| e.within("query"))?;
        Ok(Config {
            query,
            metrics: MetricsSettings {
                stream_labels: self.metrics.stream_labels.unwrap_or(false),
            },
            verify_interval,
            server,
            destinations,
            archive,
            cluster,
            postgres: crate::store::postgres::PoolSettings {
                max_connections: self.postgres.max_connections,
                connect_timeout: Duration::from_millis(self.postgres.connect_timeout_ms),
            },
            signing_key_file: self.signing_key_file,
            store,
            sources,
            log_name,
            data_dir,
            listen,
            limits: Limits {
                max_event_bytes: i.max_event_bytes,
                max_request_bytes: i.max_request_bytes,
                max_events_per_request: i.max_events_per_request,
            },
            batch: BatchLimits {
                max_batch_events: i.max_batch_events,
            },
            checkpoint_interval: Duration::from_millis(self.checkpoint.interval_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fuzzing finding (FUZZING.md, `config`): an unknown key spelled as
    /// the empty string (`'' = 1`) gave an error naming no key
    /// (`config: : unknown field ``…`).
    #[test]
    fn an_empty_unknown_key_is_named() {
        for text in ["'' = 1\n", "[ingest]\n\"\" = 2\n"] {
            let e = RawConfig::parse(text).expect_err("unknown key");
            assert_eq!(e.key, "\"\"", "{text:?}: {e}");
        }
        let e = RawConfig::parse("bogus = 1\n").expect_err("unknown key");
        assert_eq!(e.key, "bogus");
    }

    #[test]
    fn defaults_and_overrides() {
        let c = RawConfig::parse("")
            .expect("empty")
            .validate(&Overrides::default())
            .expect("valid");
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.log_name, DEFAULT_LOG_NAME);
        assert_eq!(c.limits.max_event_bytes, 65536);
        let over = Overrides {
            data_dir: Some("/x".into()),
            listen: Some("127.0.0.1:1".into()),
            store: None,
            archive: None,
        };
        let c = RawConfig::parse("listen = \"127.0.0.1:2\"\n[ingest]\nmax_event_bytes = 2048")
            .expect("ok")
            .validate(&over)
            .expect("valid");
        assert_eq!(
            c.listen.to_string(),
            "127.0.0.1:1",
            "flags win over the file"
        );
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.limits.max_event_bytes, 2048);
    }

    #[test]
    fn archive_table_is_validated_by_key() {
        let ok = |t: &str| {
            RawConfig::parse(t)
                .expect("parses")
                .validate(&Overrides::default())
        };
        let c = ok("").expect("defaults");
        assert_eq!(
            c.archive.settings.older_than,
            Duration::from_secs(90 * 86_400)
        );
        assert_eq!(
            c.archive.schedule,
            ArchiveSchedule::Every(Duration::from_secs(3600))
        );
        assert!(c.archive_url().expect("url").starts_with("file:///"));
        assert!(
            c.archive_url()
                .expect("url")
                .ends_with("/trailkeep-data/archive/")
        );
        let c = ok("[archive]\nurl = \"s3://b/p\"\ndaily_hour_utc = 3\ncompression = \"zstd\"\nolder_than = \"7d\"").expect("valid");
        assert_eq!(c.archive.schedule, ArchiveSchedule::DailyAt(3));
        assert_eq!(c.archive_url().expect("url"), "s3://b/p");
        for (text, key) in [
            ("[archive]\nolder_than = \"soon\"", "archive.older_than"),
            ("[archive]\nurl = \"ftp://x\"", "archive.url"),
            ("[archive]\ncompression = \"lz4\"", "archive.compression"),
            (
                "[archive]\ninterval = \"1h\"\ndaily_hour_utc = 2",
                "archive.daily_hour_utc",
            ),
            ("[archive]\ndaily_hour_utc = 24", "archive.daily_hour_utc"),
            ("[archive]\nsegment_events = 0", "archive.segment_events"),
            ("[archive]\nsegment_bytes = 10", "archive.segment_bytes"),
            (
                "[archive]\nurl = \"s3://b/p\"\nobject_lock_mode = \"compliance\"",
                "archive.object_lock_mode",
            ),
            (
                "[archive]\nurl = \"s3://b/p\"\nobject_lock_days = 30",
                "archive.object_lock_days",
            ),
            (
                "[archive]\nurl = \"s3://b/p\"\nobject_lock_mode = \"strict\"\nobject_lock_days = 30",
                "archive.object_lock_mode",
            ),
            (
                "[archive]\nurl = \"s3://b/p\"\nobject_lock_mode = \"governance\"\nobject_lock_days = 0",
                "archive.object_lock_days",
            ),
            (
                "[archive]\nurl = \"gs://b/p\"\nobject_lock_mode = \"compliance\"\nobject_lock_days = 30",
                "archive.object_lock_mode",
            ),
        ] {
            assert_eq!(ok(text).expect_err(text).key, key, "{text}");
        }
        let c = ok("[archive]\nurl = \"s3://b/p\"\nobject_lock_mode = \"compliance\"\nobject_lock_days = 2557")
            .expect("valid");
        assert_eq!(
            c.archive.bucket.object_lock,
            Some(crate::objstore::object_lock::LockSettings {
                mode: crate::objstore::object_lock::LockMode::Compliance,
                days: 2557
            })
        );
        let e = RawConfig::parse("[archive]\nbucket = \"x\"").expect_err("unknown");
        assert_eq!(e.key, "bucket");
        let over = Overrides {
            archive: Some("gs://b".into()),
            ..Overrides::default()
        };
        let c = RawConfig::parse("[archive]\nurl = \"s3://b/p\"")
            .expect("parses")
            .validate(&over)
            .expect("valid");
        assert_eq!(c.archive_url().expect("url"), "gs://b", "--archive wins");
    }

    #[test]
    fn errors_name_the_key() {
        let e = RawConfig::parse("[ingest]\nmax_evnt_bytes = 1").expect_err("typo");
        assert_eq!(e.key, "max_evnt_bytes", "{e}");
        let e = RawConfig::parse("bogus = 1").expect_err("unknown");
        assert_eq!(e.key, "bogus", "{e}");
        let e = RawConfig::parse("[ingest]\nmax_event_bytes = 10")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("too small");
        assert_eq!(e.key, "ingest.max_event_bytes");
        let e = RawConfig::parse("listen = \"nope\"")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("bad addr");
        assert_eq!(e.key, "listen");
        let e = RawConfig::parse("log_name = \"a b\"")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("bad name");
        assert_eq!(e.key, "log_name");
        let e = RawConfig::parse("store = \"mysql://x\"")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("bad store");
        assert_eq!(e.key, "store");
        let c = RawConfig::parse("store = \"postgres://u:secret@h/db\"")
            .expect("parses")
            .validate(&Overrides::default())
            .expect("valid");
        assert!(
            !format!("{c:?}").contains("secret"),
            "the store URL never shows in Debug"
        );
        let e = RawConfig::parse("[postgres]\nmax_connections = 0")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("zero pool");
        assert_eq!(e.key, "postgres.max_connections");
        let e = RawConfig::parse("[postgres]\npool = 3").expect_err("unknown key");
        assert_eq!(e.key, "pool");
        let c = RawConfig::parse("[postgres]\nmax_connections = 4\nconnect_timeout_ms = 2500")
            .expect("parses")
            .validate(&Overrides::default())
            .expect("valid");
        assert_eq!(
            (
                c.postgres.max_connections,
                c.postgres.connect_timeout.as_millis()
            ),
            (4, 2500)
        );
        for (text, key, says) in [
            (
                "[cluster]\nnon_owner = \"proxy\"",
                "cluster.non_owner",
                "forward",
            ),
            (
                "[cluster]\nlease_ttl_ms = 100",
                "cluster.lease_ttl_ms",
                "300",
            ),
            (
                "[cluster]\nadvertise_url = \"10.0.0.5:7470\"",
                "cluster.advertise_url",
                "http",
            ),
            (
                "[cluster]\nadvertise_url = \"http://u:pw@n1:7470/\"",
                "cluster.advertise_url",
                "no user",
            ),
            (
                "[cluster]\nadvertise_url = \"http://n1:7470/api\"",
                "cluster.advertise_url",
                "path",
            ),
        ] {
            let e = RawConfig::parse(text)
                .expect("parses")
                .validate(&Overrides::default())
                .expect_err(text);
            assert_eq!(e.key, key, "{text}");
            assert!(e.to_string().contains(says), "{text}: {e}");
            assert!(!e.to_string().contains("pw"), "no secret in {e}");
        }
        let c = RawConfig::parse(
            "[cluster]\nadvertise_url = \"https://n1.example:7470/\"\nlease_ttl_ms = 2000\nnon_owner = \"redirect\"",
        )
        .expect("parses")
        .validate(&Overrides::default())
        .expect("valid");
        assert_eq!(
            c.cluster,
            ClusterSettings {
                advertise_url: Some("https://n1.example:7470".into()),
                lease_ttl: Duration::from_millis(2000),
                non_owner: NonOwner::Redirect,
            }
        );
        assert_eq!(
            RawConfig::default()
                .validate(&Overrides::default())
                .expect("valid")
                .cluster,
            ClusterSettings::default(),
            "forward, 6 s, no URL by default"
        );
        let e = RawConfig::parse("[checkpoint]\ninterval_ms = 0")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("zero");
        assert_eq!(e.key, "checkpoint.interval_ms");
    }
}
