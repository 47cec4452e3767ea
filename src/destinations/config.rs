//! `[[destinations]]` in the config file: one table per destination, its
//! `type` deciding which keys apply; a key that does not apply to the type
//! is refused by name, like an unknown one.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::driver::DriverSettings;
use crate::event::filter::Filter;
use crate::secret::Secret;

/// A destination table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    /// Unique name (cursors, dead letters and status are kept under it).
    pub name: String,
    /// `file` or `webhook` (more to come, see issue #5).
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
    /// Longest wait before a partial batch goes (default 1000 ms).
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
    /// Request timeout, ms (HTTP destinations; default 10000).
    pub timeout_ms: Option<u64>,
    /// `file`: the NDJSON file.
    pub path: Option<PathBuf>,
    /// `file`: rotate past this size (default 64 MiB).
    pub rotate_bytes: Option<u64>,
    /// `file`: rotated files kept (default 5).
    pub keep: Option<usize>,
    /// `webhook`: the receiver's URL (HTTPS; HTTP only to loopback).
    pub url: Option<String>,
    /// `webhook`: environment variable holding the `whsec_…` secret.
    pub secret_env: Option<String>,
    /// `webhook`: file holding the `whsec_…` secret.
    pub secret_file: Option<PathBuf>,
    /// `webhook`, `splunk_hec`, `datadog_logs`, `bigquery`: allow addresses
    /// that are not public (IANA special-purpose, this host's own; default
    /// false).
    pub allow_private: Option<bool>,
    /// `s3`/`gcs`/`azure_blob`: `none`, `gzip` (default) or `zstd`.
    pub compression: Option<String>,
    /// `splunk_hec`: `index` field.
    pub index: Option<String>,
    /// `splunk_hec`: `source` field (default `trailkeep`).
    pub source: Option<String>,
    /// `splunk_hec`: `sourcetype` field (default `_json`).
    pub sourcetype: Option<String>,
    /// `splunk_hec`: `host` field.
    pub host: Option<String>,
    /// `splunk_hec`: wait for indexer acknowledgement (default false).
    pub ack: Option<bool>,
    /// `splunk_hec`: how long to wait for the acknowledgement, ms (default 30000).
    pub ack_timeout_ms: Option<u64>,
    /// `datadog_logs`: the site (default `datadoghq.com`); or set `url`.
    pub site: Option<String>,
    /// `datadog_logs`: `service` of every entry (default `trailkeep`).
    pub service: Option<String>,
    /// `datadog_logs`: `hostname` of every entry.
    pub hostname: Option<String>,
    /// `datadog_logs`: extra `ddtags` (`key:value`).
    pub tags: Option<Vec<String>>,
    /// `bigquery`: project id.
    pub project: Option<String>,
    /// `bigquery`: dataset id.
    pub dataset: Option<String>,
    /// `bigquery`: table id.
    pub table: Option<String>,
}

/// Payload encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// The stored event, chain fields included.
    #[default]
    Trailkeep,
    /// `{id, type, createdAt, data}`, as the Grantex tools write.
    Grantex,
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
        bucket: crate::archive::BucketOptions,
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

/// Where a destination's secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretFrom {
    /// An environment variable.
    Env(String),
    /// A file.
    File(PathBuf),
}

impl SecretFrom {
    /// Loads the secret.
    ///
    /// # Errors
    /// A message naming the variable or file (never the value).
    pub fn load(&self, dest: &str) -> Result<Secret, String> {
        match self {
            Self::Env(v) => std::env::var(v)
                .map(|s| Secret::new(s.trim().to_owned()))
                .map_err(|_| format!("destination {dest}: environment variable {v} is not set")),
            Self::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret::new(s.trim().to_owned()))
                .map_err(|e| {
                    format!(
                        "destination {dest}: cannot read secret_file {}: {e}",
                        p.display()
                    )
                }),
        }
    }
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
#[derive(Debug)]
pub struct KeyError {
    /// Key.
    pub key: String,
    /// Message.
    pub message: String,
}

fn bad(key: &str, message: impl Into<String>) -> KeyError {
    KeyError {
        key: key.into(),
        message: message.into(),
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
            .map_err(|m| bad("types", m))?
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
        if let Some(ms) = self.max_age_ms {
            if ms > 3_600_000 {
                return Err(bad("max_age_ms", "must be at most 3600000"));
            }
            driver.max_age = Duration::from_millis(ms);
        }
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
        let encoding = match self.encoding.as_deref() {
            None | Some("trailkeep") => Encoding::Trailkeep,
            Some("grantex") => Encoding::Grantex,
            Some(_) => return Err(bad("encoding", "must be \"trailkeep\" or \"grantex\"")),
        };
        // Type-specific keys: a key set on a type it does not belong to is
        // refused by name, like an unknown key.
        let present: Vec<&'static str> = [
            (self.path.is_some(), "path"),
            (self.rotate_bytes.is_some(), "rotate_bytes"),
            (self.keep.is_some(), "keep"),
            (self.url.is_some(), "url"),
            (self.secret_env.is_some(), "secret_env"),
            (self.secret_file.is_some(), "secret_file"),
            (self.allow_private.is_some(), "allow_private"),
            (self.timeout_ms.is_some(), "timeout_ms"),
            (self.compression.is_some(), "compression"),
            (self.index.is_some(), "index"),
            (self.source.is_some(), "source"),
            (self.sourcetype.is_some(), "sourcetype"),
            (self.host.is_some(), "host"),
            (self.ack.is_some(), "ack"),
            (self.ack_timeout_ms.is_some(), "ack_timeout_ms"),
            (self.site.is_some(), "site"),
            (self.service.is_some(), "service"),
            (self.hostname.is_some(), "hostname"),
            (self.tags.is_some(), "tags"),
            (self.project.is_some(), "project"),
            (self.dataset.is_some(), "dataset"),
            (self.table.is_some(), "table"),
        ]
        .into_iter()
        .filter_map(|(p, k)| p.then_some(k))
        .collect();
        let allowed: &[&str] = match self.kind.as_str() {
            "file" => &["path", "rotate_bytes", "keep"],
            "webhook" => &[
                "url",
                "secret_env",
                "secret_file",
                "allow_private",
                "timeout_ms",
            ],
            "s3" | "gcs" | "azure_blob" => &["url", "compression", "timeout_ms"],
            "splunk_hec" => &[
                "url",
                "secret_env",
                "secret_file",
                "allow_private",
                "timeout_ms",
                "index",
                "source",
                "sourcetype",
                "host",
                "ack",
                "ack_timeout_ms",
            ],
            "datadog_logs" => &[
                "url",
                "site",
                "secret_env",
                "secret_file",
                "allow_private",
                "timeout_ms",
                "service",
                "hostname",
                "tags",
            ],
            "bigquery" => &[
                "url",
                "project",
                "dataset",
                "table",
                "secret_env",
                "secret_file",
                "allow_private",
                "timeout_ms",
            ],
            _ => &[],
        };
        if let Some(k) = present.iter().find(|k| !allowed.contains(k))
            && !allowed.is_empty()
        {
            return Err(bad(k, format!("is not a setting of type {}", self.kind)));
        }
        let secret = |what: &str| -> Result<SecretFrom, KeyError> {
            match (self.secret_env.clone(), self.secret_file.clone()) {
                (Some(_), Some(_)) => {
                    Err(bad("secret_env", "set secret_env or secret_file, not both"))
                }
                (Some(v), None) => Ok(SecretFrom::Env(v)),
                (None, Some(f)) => Ok(SecretFrom::File(f)),
                (None, None) => Err(bad(
                    "secret_env",
                    format!("{what} is required (secret_env or secret_file)"),
                )),
            }
        };
        let timeout = |default: u64| -> Result<Duration, KeyError> {
            let ms = self.timeout_ms.unwrap_or(default);
            if (100..=600_000).contains(&ms) {
                Ok(Duration::from_millis(ms))
            } else {
                Err(bad("timeout_ms", "must be between 100 and 600000"))
            }
        };
        let allow_private = self.allow_private.unwrap_or(false);
        let http_url = |url: Option<String>| -> Result<String, KeyError> {
            let url =
                url.ok_or_else(|| bad("url", format!("is required for type {}", self.kind)))?;
            let parsed = url::Url::parse(&url).map_err(|e| bad("url", e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("url", "must be an http:// or https:// URL"));
            }
            crate::net::guard::check_config_url(&parsed, allow_private)
                .map_err(|m| bad("url", m))?;
            Ok(url)
        };
        if self.kind == "splunk_hec" {
            let settings = super::http::HecSettings {
                host: self.host.clone(),
                source: self.source.clone(),
                sourcetype: self.sourcetype.clone(),
                index: self.index.clone(),
                ack: self.ack.unwrap_or(false),
                ack_timeout: Duration::from_millis(
                    self.ack_timeout_ms.unwrap_or(30_000).clamp(100, 3_600_000),
                ),
            };
            let kind = Kind::SplunkHec {
                url: http_url(self.url.clone())?,
                secret: secret("the HEC token")?,
                settings,
                timeout: timeout(10_000)?,
                allow_private,
            };
            return Ok(DestinationConfig {
                driver,
                encoding,
                kind,
            });
        }
        if self.kind == "bigquery" {
            let id = |key: &str, v: &Option<String>| -> Result<String, KeyError> {
                match v {
                    Some(s)
                        if !s.is_empty()
                            && s.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) =>
                    {
                        Ok(s.clone())
                    }
                    Some(_) => Err(bad(key, "letters, digits, _ - . : only")),
                    None => Err(bad(key, "is required for type bigquery")),
                }
            };
            let kind = Kind::BigQuery {
                url: match &self.url {
                    Some(u) => http_url(Some(u.clone()))?,
                    None => "https://bigquery.googleapis.com".into(),
                },
                table: super::bigquery::Table {
                    project: id("project", &self.project)?,
                    dataset: id("dataset", &self.dataset)?,
                    table: id("table", &self.table)?,
                },
                secret: secret("the service account JSON")?,
                timeout: timeout(30_000)?,
                allow_private,
            };
            return Ok(DestinationConfig {
                driver,
                encoding,
                kind,
            });
        }
        if self.kind == "datadog_logs" {
            let url = match (&self.url, &self.site) {
                (Some(_), Some(_)) => return Err(bad("site", "set site or url, not both")),
                (Some(u), None) => http_url(Some(u.clone()))?,
                (None, site) => {
                    let site = site.clone().unwrap_or_else(|| "datadoghq.com".into());
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
            let settings = super::http::DatadogSettings {
                service: self.service.clone(),
                hostname: self.hostname.clone(),
                tags: self.tags.clone().unwrap_or_default(),
            };
            let kind = Kind::Datadog {
                url,
                secret: secret("the Datadog API key")?,
                settings,
                timeout: timeout(10_000)?,
                allow_private,
            };
            return Ok(DestinationConfig {
                driver,
                encoding,
                kind,
            });
        }
        let kind = match self.kind.as_str() {
            "file" => {
                let path = self
                    .path
                    .ok_or_else(|| bad("path", "is required for type file"))?;
                let rotate_bytes = self.rotate_bytes.unwrap_or(64 << 20);
                if rotate_bytes < 1024 {
                    return Err(bad("rotate_bytes", "must be at least 1024"));
                }
                Kind::File {
                    path,
                    rotate_bytes,
                    keep: self.keep.unwrap_or(5).clamp(1, 1000),
                }
            }
            "webhook" => {
                let url = self
                    .url
                    .ok_or_else(|| bad("url", "is required for type webhook"))?;
                let parsed = url::Url::parse(&url).map_err(|e| bad("url", e.to_string()))?;
                let loopback =
                    matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
                if parsed.scheme() != "https" && !(parsed.scheme() == "http" && loopback) {
                    return Err(bad(
                        "url",
                        "must be https:// (http:// only to a loopback address)",
                    ));
                }
                crate::net::guard::check_config_url(&parsed, allow_private)
                    .map_err(|m| bad("url", m))?;
                let secret = match (self.secret_env, self.secret_file) {
                    (Some(_), Some(_)) => {
                        return Err(bad("secret_env", "set secret_env or secret_file, not both"));
                    }
                    (Some(v), None) => SecretFrom::Env(v),
                    (None, Some(f)) => SecretFrom::File(f),
                    (None, None) => {
                        return Err(bad(
                            "secret_env",
                            "a whsec_ secret is required (secret_env or secret_file)",
                        ));
                    }
                };
                let timeout_ms = self.timeout_ms.unwrap_or(10_000);
                if !(100..=600_000).contains(&timeout_ms) {
                    return Err(bad("timeout_ms", "must be between 100 and 600000"));
                }
                Kind::Webhook {
                    url,
                    secret,
                    allow_private: self.allow_private.unwrap_or(false),
                    timeout: Duration::from_millis(timeout_ms),
                }
            }
            kind @ ("s3" | "gcs" | "azure_blob") => {
                let url = self
                    .url
                    .ok_or_else(|| bad("url", format!("is required for type {kind}")))?;
                let scheme = match kind {
                    "s3" => "s3://",
                    "gcs" => "gs://",
                    _ => "az://",
                };
                if !url.starts_with(scheme) {
                    return Err(bad("url", format!("type {kind} takes a {scheme} URL")));
                }
                let compression = match self.compression.as_deref() {
                    None | Some("gzip") => super::object::ObjectCompression::Gzip,
                    Some("zstd") => super::object::ObjectCompression::Zstd,
                    Some("none") => super::object::ObjectCompression::None,
                    Some(_) => {
                        return Err(bad("compression", "must be \"none\", \"gzip\" or \"zstd\""));
                    }
                };
                let timeout_ms = self.timeout_ms.unwrap_or(60_000);
                if !(100..=600_000).contains(&timeout_ms) {
                    return Err(bad("timeout_ms", "must be between 100 and 600000"));
                }
                Kind::Object {
                    url,
                    compression,
                    bucket: crate::archive::BucketOptions {
                        request_timeout: Duration::from_millis(timeout_ms),
                        max_retries: 2,
                        object_lock: None,
                    },
                }
            }
            other => {
                return Err(bad(
                    "type",
                    format!(
                        "{other:?} is not a destination type (file, webhook, s3, gcs, azure_blob, splunk_hec, datadog_logs, bigquery)"
                    ),
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

/// The payload of one event in `encoding`.
pub fn encode(json: &str, encoding: Encoding) -> String {
    match encoding {
        Encoding::Trailkeep => json.to_owned(),
        Encoding::Grantex => {
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let mut out = serde_json::json!({
                "id": v["id"],
                "type": v["type"],
                "createdAt": v["time"],
            });
            if !v["data"].is_null() {
                out["data"] = v["data"].clone();
            }
            out.to_string()
        }
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

    #[test]
    fn grantex_encoding_has_the_grantex_shape() {
        let stored = r#"{"actor":{"id":"u"},"data":{"k":1},"hash":"ab","id":"e1","prev":"00","received":"r","seq":3,"stream":"s","time":"2026-01-01T00:00:00Z","type":"grant.created"}"#;
        let g: serde_json::Value =
            serde_json::from_str(&encode(stored, Encoding::Grantex)).unwrap();
        assert_eq!(
            g,
            serde_json::json!({"id":"e1","type":"grant.created","createdAt":"2026-01-01T00:00:00Z","data":{"k":1}})
        );
        assert_eq!(encode(stored, Encoding::Trailkeep), stored);
    }
}
