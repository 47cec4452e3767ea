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
}

impl Config {
    /// Returns where the signing key is: `signing_key_file`, else
    /// `DATA_DIR/signing.key`.
    pub fn signing_key_path(&self) -> PathBuf {
        self.signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::keyfile::FILE_NAME))
    }
}

/// A configuration error naming the key.
#[derive(Debug, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    /// The offending key, dotted (`ingest.max_event_bytes`).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
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
}

impl RawConfig {
    /// Parses TOML text.
    ///
    /// # Errors
    /// Syntax errors and unknown keys, with the key's name and position.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().to_owned();
            let key = msg.split('`').nth(1).unwrap_or("(file)").to_owned();
            err(&key, e.to_string().trim().replace('\n', " "))
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
                .validate(i)
                .map_err(|e| err(&format!("sources[{i}].{}", e.key), e.message))?;
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
        Ok(Config {
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
        let e = RawConfig::parse("[checkpoint]\ninterval_ms = 0")
            .expect("parses")
            .validate(&Overrides::default())
            .expect_err("zero");
        assert_eq!(e.key, "checkpoint.interval_ms");
    }
}
