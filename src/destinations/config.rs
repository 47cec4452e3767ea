//! `[[destinations]]` in the config file: the keys every destination has
//! ([`RawDestination`]: name, filters, batching, encoding, backoff), and one
//! raw struct per `type` with `deny_unknown_fields` ([`RawFile`],
//! [`RawWebhook`], [`RawObject`], [`RawSplunkHec`], [`RawDatadog`],
//! [`RawBigQuery`]): a key that is not a setting of the table's type is
//! refused by name, like an unknown one, and each type's keys are written
//! once, in its struct.
//!
//! Validation is pure (no secrets read, no clients built: that is
//! [`super::build`]). Payload encodings are [`super::encoding`]'s.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::driver::DriverSettings;
use super::encoding::Encoding;
use crate::event::filter::Filter;
use crate::secret::Secret;

/// A destination table as written: the keys every type shares, and the
/// rest, checked by the raw struct of its `type`.
#[derive(Debug, Deserialize)]
pub struct RawDestination {
    /// Unique name (cursors, dead letters and status are kept under it).
    pub name: String,
    /// `file`, `webhook`, `s3`, `gcs`, `azure_blob`, `splunk_hec`,
    /// `datadog_logs` or `bigquery`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Streams it takes (default all: `["*"]`).
    #[serde(default)]
    pub streams: Vec<String>,
    /// Type patterns (`grant.*`, `!token.issued`; default all).
    #[serde(default)]
    pub types: Vec<String>,
    /// Most events per batch (default 500).
    pub max_events: Option<usize>,
    /// Most bytes per batch (default 4 MiB).
    pub max_bytes: Option<usize>,
    /// Longest wait before a partial batch goes (default 0 ms: as soon as
    /// the driver is free; 1000 ms for object stores, one object per batch).
    pub max_age_ms: Option<u64>,
    /// `trailkeep` (stored events, default) or `grantex` (`{id, type, createdAt, data}`).
    pub encoding: Option<String>,
    /// Let hot deletion pass this destination's cursor (default false).
    pub archive_past: Option<bool>,
    /// Also deliver the log's own stream `_trailkeep`: every signed
    /// checkpoint and archive index as it is made, so a copy lives outside
    /// the operator's reach (default false).
    pub checkpoints: Option<bool>,
    /// Longest retry delay, ms (default 60000).
    pub backoff_max_ms: Option<u64>,
    /// Streams delivered at the same time (default 1).
    pub concurrency: Option<usize>,
    /// Every other key: the settings of `type`, read into its raw struct
    /// (which refuses keys it does not have).
    #[serde(flatten)]
    pub settings: toml::Table,
}

/// `type = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// The NDJSON file.
    pub path: PathBuf,
    /// Rotate past this size (default 64 MiB).
    pub rotate_bytes: Option<u64>,
    /// Rotated files kept (default 5).
    pub keep: Option<usize>,
}

/// `type = "webhook"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// The receiver's URL (HTTPS; HTTP only to loopback).
    pub url: String,
    /// Environment variable holding the `whsec_…` secret.
    pub secret_env: Option<String>,
    /// File holding the `whsec_…` secret.
    pub secret_file: Option<PathBuf>,
    /// Allow addresses that are not public (default false).
    pub allow_private: Option<bool>,
    /// Request timeout, ms (default 10000).
    pub timeout_ms: Option<u64>,
}

/// `type = "s3" | "gcs" | "azure_blob"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawObject {
    /// `s3://…`, `gs://…` or `az://…` (matching the type), as for the archive.
    pub url: String,
    /// `none`, `gzip` (default) or `zstd`.
    pub compression: Option<super::object::ObjectCompression>,
    /// Request timeout, ms (default 60000).
    pub timeout_ms: Option<u64>,
}

/// `type = "splunk_hec"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSplunkHec {
    /// Base URL (`https://splunk:8088`).
    pub url: String,
    /// Environment variable holding the HEC token.
    pub secret_env: Option<String>,
    /// File holding the HEC token.
    pub secret_file: Option<PathBuf>,
    /// Allow addresses that are not public (default false).
    pub allow_private: Option<bool>,
    /// Request timeout, ms (default 10000).
    pub timeout_ms: Option<u64>,
    /// `index` field (default: the token's; `main` with `encoding = "grantex"`).
    pub index: Option<String>,
    /// `source` field (default `trailkeep`; `grantex` with `encoding = "grantex"`).
    pub source: Option<String>,
    /// `sourcetype` field (default `_json`).
    pub sourcetype: Option<String>,
    /// `host` field (default: the HEC's own).
    pub host: Option<String>,
    /// Wait for indexer acknowledgement (default false).
    pub ack: Option<bool>,
    /// How long to wait for the acknowledgement, ms (default 30000).
    pub ack_timeout_ms: Option<u64>,
}

/// `type = "datadog_logs"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatadog {
    /// Intake base URL; or set `site`.
    pub url: Option<String>,
    /// The site (default `datadoghq.com`).
    pub site: Option<String>,
    /// Environment variable holding the API key.
    pub secret_env: Option<String>,
    /// File holding the API key.
    pub secret_file: Option<PathBuf>,
    /// Allow addresses that are not public (default false).
    pub allow_private: Option<bool>,
    /// Request timeout, ms (default 10000).
    pub timeout_ms: Option<u64>,
    /// `ddsource` of every entry (default `trailkeep`; `grantex` with
    /// `encoding = "grantex"`).
    pub ddsource: Option<String>,
    /// `service` of every entry (default `trailkeep`; `grantex` with
    /// `encoding = "grantex"`).
    pub service: Option<String>,
    /// `hostname` of every entry (default: none; `grantex-auth-service`
    /// with `encoding = "grantex"`).
    pub hostname: Option<String>,
    /// Extra `ddtags` (`key:value`), after the event's own.
    pub tags: Option<Vec<String>>,
    /// `gzip` or `none` (default `gzip`; `none` with `encoding = "grantex"`).
    pub compression: Option<String>,
}

/// `type = "bigquery"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBigQuery {
    /// API base URL (default `https://bigquery.googleapis.com`; for tests).
    pub url: Option<String>,
    /// Project id.
    pub project: Option<String>,
    /// Dataset id.
    pub dataset: Option<String>,
    /// Table id.
    pub table: Option<String>,
    /// Environment variable holding the service account JSON itself.
    pub secret_env: Option<String>,
    /// The service account JSON file.
    pub secret_file: Option<PathBuf>,
    /// Allow addresses that are not public (default false).
    pub allow_private: Option<bool>,
    /// Request timeout, ms (default 30000).
    pub timeout_ms: Option<u64>,
}

/// What kind of destination, with its own settings.
#[derive(Debug, Clone)]
pub enum Kind {
    /// NDJSON file.
    File {
        /// Path.
        path: PathBuf,
        /// Rotation size.
        rotate_bytes: u64,
        /// Rotated files kept.
        keep: usize,
    },
    /// An object store (the `url` scheme matches the type).
    Object {
        /// `s3://…`, `gs://…` or `az://…`, as for the archive.
        url: String,
        /// Object compression.
        compression: super::object::ObjectCompression,
        /// Client settings.
        bucket: crate::objstore::BucketOptions,
    },
    /// Splunk HTTP Event Collector.
    SplunkHec {
        /// Base URL (`https://splunk:8088`).
        url: String,
        /// Where the HEC token is.
        secret: SecretFrom,
        /// Fields and acknowledgement.
        settings: super::http::HecSettings,
        /// Request timeout.
        timeout: Duration,
        /// Allow non-public addresses (`allow_private`).
        allow_private: bool,
    },
    /// BigQuery streaming inserts.
    BigQuery {
        /// API base URL.
        url: String,
        /// Target table.
        table: super::bigquery::Table,
        /// Where the service account JSON is (`secret_file`: its path;
        /// `secret_env`: a variable holding the JSON).
        secret: SecretFrom,
        /// Request timeout.
        timeout: Duration,
        /// Allow non-public addresses (`allow_private`).
        allow_private: bool,
    },
    /// Datadog Logs v2 intake.
    Datadog {
        /// Intake base URL.
        url: String,
        /// Where the API key is.
        secret: SecretFrom,
        /// Entry fields.
        settings: super::http::DatadogSettings,
        /// Request timeout.
        timeout: Duration,
        /// Allow non-public addresses (`allow_private`).
        allow_private: bool,
    },
    /// Standard Webhooks.
    Webhook {
        /// URL.
        url: String,
        /// Where the secret is (loaded at start).
        secret: SecretFrom,
        /// Allow private addresses.
        allow_private: bool,
        /// Request timeout.
        timeout: Duration,
    },
}

/// Where a destination's secret comes from (loaded as every secret is,
/// see [`crate::secret`]).
pub type SecretFrom = crate::secret::SecretSource;

/// Loads a destination's secret; errors name `destinations.NAME.secret_env`
/// or `secret_file`, never the value.
///
/// # Errors
/// [`super::BuildError::Secret`].
pub fn load_secret(from: &SecretFrom, dest: &str) -> Result<Secret, super::BuildError> {
    let setting = match from {
        SecretFrom::Env(_) => format!("destinations.{dest}.secret_env"),
        SecretFrom::File(_) => format!("destinations.{dest}.secret_file"),
    };
    Ok(from.load(&setting)?)
}

/// A validated destination.
#[derive(Debug, Clone)]
pub struct DestinationConfig {
    /// Driver settings (name, filters, batching, backoff).
    pub driver: DriverSettings,
    /// Encoding.
    pub encoding: Encoding,
    /// Kind and its settings.
    pub kind: Kind,
}

impl DestinationConfig {
    /// The type name as configured.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::File { .. } => "file",
            Kind::Webhook { .. } => "webhook",
            Kind::SplunkHec { .. } => "splunk_hec",
            Kind::Datadog { .. } => "datadog_logs",
            Kind::BigQuery { .. } => "bigquery",
            Kind::Object { url, .. } if url.starts_with("gs://") => "gcs",
            Kind::Object { url, .. } if url.starts_with("az://") => "azure_blob",
            Kind::Object { .. } => "s3",
        }
    }
}

/// A config error: the key (relative to the table) and what is wrong.
pub type KeyError = crate::setting::SettingError;

fn bad(key: &str, message: impl Into<String>) -> KeyError {
    KeyError::new(key, message)
}

/// The types, as `type` names them.
const TYPES: &str = "file, webhook, s3, gcs, azure_blob, splunk_hec, datadog_logs, bigquery";

/// Reads the settings of type `kind` into its raw struct. A key the struct
/// does not have, a missing required key or a value of the wrong type is
/// refused naming that key.
fn settings<T: DeserializeOwned>(kind: &str, table: toml::Table) -> Result<T, KeyError> {
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.message().to_owned();
        // Missing fields have no path (the error comes at the table's end);
        // their name is the message's first `quoted` word, as for unknown ones.
        let named = msg.split('`').nth(1).unwrap_or_default();
        if msg.starts_with("missing field ") {
            return bad(named, format!("is required for type {kind}"));
        }
        if msg.starts_with("unknown field ") {
            let known = msg
                .split_once(", expected ")
                .map_or("none", |(_, r)| r.trim_start_matches("one of "));
            return bad(
                named,
                format!("is not a setting of type {kind} (its settings: {known})"),
            );
        }
        let key = if path == "." || path.is_empty() {
            "type".to_owned()
        } else {
            path
        };
        bad(&key, msg)
    })
}

/// Where the secret comes from: exactly one of `secret_env` and `secret_file`.
fn secret(env: Option<String>, file: Option<PathBuf>, what: &str) -> Result<SecretFrom, KeyError> {
    match (env, file) {
        (Some(_), Some(_)) => Err(bad("secret_env", "set secret_env or secret_file, not both")),
        (Some(v), None) => Ok(SecretFrom::Env(v)),
        (None, Some(f)) => Ok(SecretFrom::File(f)),
        (None, None) => Err(bad(
            "secret_env",
            format!("{what} is required (secret_env or secret_file)"),
        )),
    }
}

/// `timeout_ms`, between 100 and 600000 (`default` when unset).
fn timeout(ms: Option<u64>, default: u64) -> Result<Duration, KeyError> {
    let ms = ms.unwrap_or(default);
    if (100..=600_000).contains(&ms) {
        Ok(Duration::from_millis(ms))
    } else {
        Err(bad("timeout_ms", "must be between 100 and 600000"))
    }
}

/// An HTTP(S) `url` the SSRF guard accepts as configured.
fn http_url(url: String, allow_private: bool) -> Result<String, KeyError> {
    let parsed = url::Url::parse(&url).map_err(|e| bad("url", e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("url", "must be an http:// or https:// URL"));
    }
    crate::net::guard::check_config_url(&parsed, allow_private).map_err(|m| bad("url", m))?;
    Ok(url)
}

impl RawFile {
    fn validate(self) -> Result<Kind, KeyError> {
        let rotate_bytes = self.rotate_bytes.unwrap_or(64 << 20);
        if rotate_bytes < 1024 {
            return Err(bad("rotate_bytes", "must be at least 1024"));
        }
        Ok(Kind::File {
            path: self.path,
            rotate_bytes,
            keep: self.keep.unwrap_or(5).clamp(1, 1000),
        })
    }
}

impl RawWebhook {
    fn validate(self) -> Result<Kind, KeyError> {
        let allow_private = self.allow_private.unwrap_or(false);
        let parsed = url::Url::parse(&self.url).map_err(|e| bad("url", e.to_string()))?;
        let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
        if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
            return Err(bad(
                "url",
                "must be https:// (http:// only to a loopback address, with allow_private = true)",
            ));
        }
        Ok(Kind::Webhook {
            url: http_url(self.url, allow_private)?,
            secret: secret(self.secret_env, self.secret_file, "a whsec_ secret")?,
            allow_private,
            timeout: timeout(self.timeout_ms, 10_000)?,
        })
    }
}

impl RawObject {
    fn validate(self, kind: &str) -> Result<Kind, KeyError> {
        let scheme = match kind {
            "s3" => "s3://",
            "gcs" => "gs://",
            _ => "az://",
        };
        if !self.url.starts_with(scheme) {
            return Err(bad("url", format!("type {kind} takes a {scheme} URL")));
        }
        Ok(Kind::Object {
            url: self.url,
            compression: self
                .compression
                .unwrap_or(super::object::ObjectCompression::Gzip),
            bucket: crate::objstore::BucketOptions {
                request_timeout: timeout(self.timeout_ms, 60_000)?,
                max_retries: 2,
                object_lock: None,
            },
        })
    }
}

/// A field value a destination sends (`source`, `service`, …): refused
/// when empty, longer than 200 bytes or holding a control character, which
/// no intake indexes usefully.
fn field(key: &str, v: Option<String>) -> Result<Option<String>, KeyError> {
    match v {
        Some(s) if s.is_empty() => {
            Err(bad(key, "must not be empty (leave it out for the default)"))
        }
        Some(s) if s.len() > 200 => Err(bad(key, "must be at most 200 bytes")),
        Some(s) if s.chars().any(char::is_control) => {
            Err(bad(key, "must not contain control characters"))
        }
        v => Ok(v),
    }
}

impl RawSplunkHec {
    fn validate(self) -> Result<Kind, KeyError> {
        let allow_private = self.allow_private.unwrap_or(false);
        let index = field("index", self.index)?;
        if let Some(i) = &index
            && !i
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(bad(
                "index",
                format!(
                    "{i:?} is not a Splunk index name (lowercase letters, digits, _ and - only)"
                ),
            ));
        }
        let (host, source, sourcetype) = (
            field("host", self.host)?,
            field("source", self.source)?,
            field("sourcetype", self.sourcetype)?,
        );
        Ok(Kind::SplunkHec {
            url: http_url(self.url, allow_private)?,
            secret: secret(self.secret_env, self.secret_file, "the HEC token")?,
            settings: super::http::HecSettings {
                host,
                source,
                sourcetype,
                index,
                ack: self.ack.unwrap_or(false),
                ack_timeout: Duration::from_millis(
                    self.ack_timeout_ms.unwrap_or(30_000).clamp(100, 3_600_000),
                ),
            },
            timeout: timeout(self.timeout_ms, 10_000)?,
            allow_private,
        })
    }
}

impl RawDatadog {
    fn validate(self) -> Result<Kind, KeyError> {
        let allow_private = self.allow_private.unwrap_or(false);
        let url = match (self.url, self.site) {
            (Some(_), Some(_)) => return Err(bad("site", "set site or url, not both")),
            (Some(u), None) => http_url(u, allow_private)?,
            (None, site) => {
                let site = site.unwrap_or_else(|| "datadoghq.com".into());
                if site.is_empty()
                    || !site
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                {
                    return Err(bad(
                        "site",
                        "a Datadog site such as datadoghq.com or datadoghq.eu",
                    ));
                }
                format!("https://http-intake.logs.{site}")
            }
        };
        let tags = self.tags.unwrap_or_default();
        if let Some(t) = tags
            .iter()
            .find(|t| t.is_empty() || t.contains(',') || t.chars().any(char::is_control))
        {
            return Err(bad(
                "tags",
                format!("{t:?} is not a Datadog tag (one key:value, not empty, no commas)"),
            ));
        }
        let gzip = match self.compression.as_deref() {
            None => None,
            Some("gzip") => Some(true),
            Some("none") => Some(false),
            Some(other) => {
                return Err(bad(
                    "compression",
                    format!("{other:?} is not a compression here (gzip or none)"),
                ));
            }
        };
        Ok(Kind::Datadog {
            url,
            secret: secret(self.secret_env, self.secret_file, "the Datadog API key")?,
            settings: super::http::DatadogSettings {
                ddsource: field("ddsource", self.ddsource)?,
                service: field("service", self.service)?,
                hostname: field("hostname", self.hostname)?,
                tags,
                gzip,
            },
            timeout: timeout(self.timeout_ms, 10_000)?,
            allow_private,
        })
    }
}

impl RawBigQuery {
    fn validate(self) -> Result<Kind, KeyError> {
        let allow_private = self.allow_private.unwrap_or(false);
        let id = |key: &str, v: Option<String>| -> Result<String, KeyError> {
            match v {
                Some(s)
                    if !s.is_empty()
                        && s.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) =>
                {
                    Ok(s)
                }
                Some(_) => Err(bad(key, "letters, digits, _ - . : only")),
                None => Err(bad(key, "is required for type bigquery")),
            }
        };
        Ok(Kind::BigQuery {
            url: match self.url {
                Some(u) => http_url(u, allow_private)?,
                None => "https://bigquery.googleapis.com".into(),
            },
            table: super::bigquery::Table {
                project: id("project", self.project)?,
                dataset: id("dataset", self.dataset)?,
                table: id("table", self.table)?,
            },
            secret: secret(
                self.secret_env,
                self.secret_file,
                "the service account JSON",
            )?,
            timeout: timeout(self.timeout_ms, 30_000)?,
            allow_private,
        })
    }
}

impl RawDestination {
    /// Validates one table.
    ///
    /// # Errors
    /// The first bad key.
    pub fn validate(self) -> Result<DestinationConfig, KeyError> {
        crate::names::ConfigName::parse(&self.name).map_err(|e| bad("name", e.to_string()))?;
        for s in self.streams.iter().filter(|s| *s != "*") {
            crate::names::StreamName::producer(s).map_err(|e| {
                bad(
                    "streams",
                    format!("{e} (the log's own stream goes out with checkpoints = true)"),
                )
            })?;
        }
        let filter = Filter::new(&self.streams, &self.types)
            .map_err(|e| bad("types", e.to_string()))?
            .with_checkpoints(self.checkpoints.unwrap_or(false));
        let mut driver = DriverSettings::new(&self.name);
        driver.filter = filter;
        if let Some(n) = self.max_events {
            if !(1..=100_000).contains(&n) {
                return Err(bad("max_events", "must be between 1 and 100000"));
            }
            driver.max_events = n;
        }
        if let Some(n) = self.max_bytes {
            if !(1024..=(256 << 20)).contains(&n) {
                return Err(bad("max_bytes", "must be between 1024 and 268435456"));
            }
            driver.max_bytes = n;
        }
        // A partial batch goes as soon as the driver is free (events gather
        // while a batch is in flight), except to object stores, where each
        // batch is an object: there it waits up to 1 s for company.
        let object = matches!(self.kind.as_str(), "s3" | "gcs" | "azure_blob");
        driver.max_age = match self.max_age_ms {
            Some(ms) if ms > 3_600_000 => {
                return Err(bad("max_age_ms", "must be at most 3600000"));
            }
            Some(ms) => Duration::from_millis(ms),
            None if object => Duration::from_secs(1),
            None => Duration::ZERO,
        };
        if let Some(ms) = self.backoff_max_ms {
            if !(100..=3_600_000).contains(&ms) {
                return Err(bad("backoff_max_ms", "must be between 100 and 3600000"));
            }
            driver.backoff_max = Duration::from_millis(ms);
        }
        driver.archive_past = self.archive_past.unwrap_or(false);
        if let Some(c) = self.concurrency {
            if !(1..=64).contains(&c) {
                return Err(bad("concurrency", "must be between 1 and 64"));
            }
            driver.concurrency = c;
        }
        let encoding = Encoding::parse(self.encoding.as_deref())
            .ok_or_else(|| bad("encoding", "must be \"trailkeep\" or \"grantex\""))?;
        let kind = self.kind.as_str();
        let table = self.settings;
        let kind = match kind {
            "file" => settings::<RawFile>(kind, table)?.validate()?,
            "webhook" => settings::<RawWebhook>(kind, table)?.validate()?,
            "s3" | "gcs" | "azure_blob" => settings::<RawObject>(kind, table)?.validate(kind)?,
            "splunk_hec" => settings::<RawSplunkHec>(kind, table)?.validate()?,
            "datadog_logs" => settings::<RawDatadog>(kind, table)?.validate()?,
            "bigquery" => settings::<RawBigQuery>(kind, table)?.validate()?,
            other => {
                return Err(bad(
                    "type",
                    format!("{other:?} is not a destination type ({TYPES})"),
                ));
            }
        };
        Ok(DestinationConfig {
            driver,
            encoding,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(t: &str) -> Result<DestinationConfig, KeyError> {
        #[derive(Deserialize)]
        struct W {
            destinations: Vec<RawDestination>,
        }
        let w: W = toml::from_str(t).unwrap();
        w.destinations.into_iter().next().unwrap().validate()
    }

    #[test]
    fn keys_are_checked_by_type_and_named() {
        let ok = parse("[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/tmp/x\"\ntypes = [\"grant.*\"]").unwrap();
        assert_eq!(ok.type_name(), "file");
        for (t, key) in [
            (
                "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nurl = \"https://a\"",
                "url",
            ),
            ("[[destinations]]\nname = \"f\"\ntype = \"file\"", "path"),
            (
                "[[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://example.com/h\"\nsecret_env = \"S\"",
                "url",
            ),
            (
                "[[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://example.com/h\"",
                "secret_env",
            ),
            (
                "[[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://e/h\"\nsecret_env = \"S\"\npath = \"/x\"",
                "path",
            ),
            (
                "[[destinations]]\nname = \"b\"\ntype = \"bigquery\"",
                "project",
            ),
            (
                "[[destinations]]\nname = \"b\"\ntype = \"bigquery\"\nproject = \"p\"\ndataset = \"d\"\ntable = \"t\"",
                "secret_env",
            ),
            (
                "[[destinations]]\nname = \"b\"\ntype = \"bigquery\"\nproject = \"p q\"",
                "project",
            ),
            ("[[destinations]]\nname = \"b\"\ntype = \"ftp\"", "type"),
            (
                "[[destinations]]\nname = \"b c\"\ntype = \"file\"\npath = \"/x\"",
                "name",
            ),
            (
                "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\ntypes = [\"a*b\"]",
                "types",
            ),
            (
                "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nencoding = \"xml\"",
                "encoding",
            ),
            (
                "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nmax_events = 0",
                "max_events",
            ),
        ] {
            assert_eq!(parse(t).unwrap_err().key, key, "{t}");
        }
        let w = parse("[[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\nsecret_env = \"S\"\nallow_private = true").unwrap();
        assert_eq!(w.type_name(), "webhook");
        let h = parse("[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"https://splunk:8088\"\nsecret_env = \"T\"\nindex = \"audit\"\nack = true").unwrap();
        assert_eq!(h.type_name(), "splunk_hec");
        let d = parse("[[destinations]]\nname = \"d\"\ntype = \"datadog_logs\"\nsite = \"datadoghq.eu\"\nsecret_file = \"/k\"\ntags = [\"env:prod\"]").unwrap();
        let Kind::Datadog { url, .. } = &d.kind else {
            panic!("datadog")
        };
        assert_eq!(url, "https://http-intake.logs.datadoghq.eu");
        for (t, key) in [
            (
                "[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"https://s\"",
                "secret_env",
            ),
            (
                "[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nsecret_env = \"T\"",
                "url",
            ),
            (
                "[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"https://s\"\nsecret_env = \"T\"\ntags = []",
                "tags",
            ),
            (
                "[[destinations]]\nname = \"d\"\ntype = \"datadog_logs\"\nsecret_env = \"K\"\nindex = \"x\"",
                "index",
            ),
            (
                "[[destinations]]\nname = \"d\"\ntype = \"datadog_logs\"\nsecret_env = \"K\"\nsite = \"a/b\"",
                "site",
            ),
            (
                "[[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurl = \"https://e/h\"\nsecret_env = \"S\"\nack = true",
                "ack",
            ),
        ] {
            assert_eq!(parse(t).unwrap_err().key, key, "{t}");
        }
        // Every field a user filters on is a key; bad values are named.
        let d = parse("[[destinations]]\nname = \"d\"\ntype = \"datadog_logs\"\nsecret_env = \"K\"\nencoding = \"grantex\"\nddsource = \"grantex\"\nservice = \"auth\"\nhostname = \"h1\"\ntags = [\"env:prod\"]\ncompression = \"gzip\"").unwrap();
        let Kind::Datadog { settings, .. } = &d.kind else {
            panic!("datadog")
        };
        assert_eq!(
            (
                settings.ddsource.as_deref(),
                settings.service.as_deref(),
                settings.hostname.as_deref(),
                settings.gzip
            ),
            (Some("grantex"), Some("auth"), Some("h1"), Some(true))
        );
        let h = parse("[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"https://s\"\nsecret_env = \"T\"\nsource = \"grantex\"\nsourcetype = \"grantex:event\"\nindex = \"main\"\nhost = \"h1\"").unwrap();
        let Kind::SplunkHec { settings, .. } = &h.kind else {
            panic!("hec")
        };
        assert_eq!(
            (
                settings.source.as_deref(),
                settings.sourcetype.as_deref(),
                settings.index.as_deref(),
                settings.host.as_deref()
            ),
            (
                Some("grantex"),
                Some("grantex:event"),
                Some("main"),
                Some("h1")
            )
        );
        let dd = "[[destinations]]\nname = \"d\"\ntype = \"datadog_logs\"\nsecret_env = \"K\"\n";
        let hec = "[[destinations]]\nname = \"h\"\ntype = \"splunk_hec\"\nurl = \"https://s\"\nsecret_env = \"T\"\n";
        for (t, key, says) in [
            (
                format!("{dd}ddsource = \"\""),
                "ddsource",
                "must not be empty",
            ),
            (
                format!("{dd}service = \"a\\nb\""),
                "service",
                "control characters",
            ),
            (
                format!("{dd}hostname = \"{}\"", "h".repeat(201)),
                "hostname",
                "at most 200",
            ),
            (
                format!("{dd}tags = [\"a:b,c:d\"]"),
                "tags",
                "\"a:b,c:d\" is not a Datadog tag",
            ),
            (format!("{dd}tags = [\"\"]"), "tags", "not a Datadog tag"),
            (
                format!("{dd}compression = \"zstd\""),
                "compression",
                "\"zstd\" is not a compression here (gzip or none)",
            ),
            (
                format!("{dd}source = \"x\""),
                "source",
                "is not a setting of type datadog_logs",
            ),
            (
                format!("{hec}index = \"Audit\""),
                "index",
                "\"Audit\" is not a Splunk index name",
            ),
            (format!("{hec}source = \"\""), "source", "must not be empty"),
            (
                format!("{hec}sourcetype = \"\\t\""),
                "sourcetype",
                "control characters",
            ),
            (format!("{hec}host = \"\""), "host", "must not be empty"),
            (
                format!("{hec}ddsource = \"x\""),
                "ddsource",
                "is not a setting of type splunk_hec",
            ),
        ] {
            let e = parse(&t).unwrap_err();
            assert_eq!(e.key, key, "{t}");
            assert!(e.to_string().contains(says), "{t}: {e}");
        }
        let g = parse("[[destinations]]\nname = \"g\"\ntype = \"gcs\"\nurl = \"gs://b/p\"\ncompression = \"zstd\"").unwrap();
        assert_eq!(g.type_name(), "gcs");
        for (t, key) in [
            (
                "[[destinations]]\nname = \"s\"\ntype = \"s3\"\nurl = \"gs://b\"",
                "url",
            ),
            (
                "[[destinations]]\nname = \"s\"\ntype = \"azure_blob\"",
                "url",
            ),
            (
                "[[destinations]]\nname = \"s\"\ntype = \"s3\"\nurl = \"s3://b\"\npath = \"/x\"",
                "path",
            ),
            (
                "[[destinations]]\nname = \"s\"\ntype = \"s3\"\nurl = \"s3://b\"\ncompression = \"lz4\"",
                "compression",
            ),
            (
                "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\ncompression = \"gzip\"",
                "compression",
            ),
        ] {
            assert_eq!(parse(t).unwrap_err().key, key, "{t}");
        }
    }

    /// Each type's raw struct names the bad key: one the type does not have
    /// (with the ones it has), a value of the wrong type, a misspelt one.
    #[test]
    fn a_bad_key_is_named_with_what_the_type_takes() {
        let e = parse(
            "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nurl = \"https://a\"",
        )
        .expect_err("url is not a file setting");
        assert_eq!(e.key, "url");
        assert!(
            e.message.contains("is not a setting of type file")
                && e.message.contains("`path`")
                && e.message.contains("`keep`"),
            "{}",
            e.message
        );
        let e = parse(
            "[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nkeep = \"five\"",
        )
        .expect_err("keep is a number");
        assert_eq!(e.key, "keep", "{}", e.message);
        let e =
            parse("[[destinations]]\nname = \"f\"\ntype = \"file\"\npath = \"/x\"\nmax_event = 5")
                .expect_err("a typo");
        assert_eq!(e.key, "max_event", "{}", e.message);
        let e = parse("[[destinations]]\nname = \"s\"\ntype = \"s3\"\nurl = \"s3://b\"\ncompression = \"lz4\"")
            .expect_err("no lz4");
        assert!(e.message.contains("zstd"), "{}", e.message);
        let e =
            parse("[[destinations]]\nname = \"f\"\ntype = \"file\"").expect_err("path is required");
        assert_eq!(
            (e.key.as_str(), e.message.as_str()),
            ("path", "is required for type file")
        );
    }
}
