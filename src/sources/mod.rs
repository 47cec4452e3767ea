//! Event sources: pull events from an upstream and append them to a stream
//! through the same validation and group commit as HTTP ingest.
//!
//! - [`sse`]: a Server-Sent Events source (Grantex-compatible): type filter,
//!   reconnect with capped exponential backoff and full jitter (honouring
//!   `retry:`), resume with `Last-Event-ID`, backfill after every reconnect;
//! - [`backfill`]: reads a paged HTTP endpoint to cover gaps;
//! - [`mapping`]: turns an upstream JSON object into a trailkeep event;
//! - [`placement`]: on a cluster, runs each source on the node that owns
//!   its target stream.
//!
//! Durable hand-off: a source stores its resume position (last SSE id, last
//! event time) only after the events are committed, so a crash re-reads at
//! most what was in flight, and ids make the re-read harmless.
//!
//! Not here: HTTP ingest (`api`), scheduling of other workers.

pub mod backfill;
pub mod gaps;
pub mod mapping;
pub mod placement;
pub mod sse;

use crate::setting::SettingError;
use std::time::Duration;

use serde::Deserialize;

pub use crate::secret::Secret;

/// `[[sources]]` as written in the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// Unique name (status and resume position are kept under it).
    pub name: String,
    /// Kind of source; only `sse` today.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event stream URL.
    pub url: String,
    /// Target stream.
    pub stream: String,
    /// Environment variable holding the API key.
    pub api_key_env: Option<String>,
    /// File holding the API key.
    pub api_key_file: Option<std::path::PathBuf>,
    /// Header carrying the key: `authorization` (as `Bearer <key>`, default)
    /// or any other header name (the bare key).
    #[serde(default = "default_api_key_header")]
    pub api_key_header: String,
    /// Event types to take (sent upstream and enforced here); empty: all.
    #[serde(default)]
    pub types: Vec<String>,
    /// Query parameter carrying the types, comma-separated (Grantex: `types`).
    #[serde(default = "default_types_param")]
    pub types_param: String,
    /// First reconnect delay, ms.
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    /// Longest reconnect delay, ms.
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// Lease time, ms: with several nodes on one store, one node runs the
    /// source and another takes over this long after it stops renewing
    /// (unless `active_active`).
    #[serde(default = "default_lease_ttl_ms")]
    pub lease_ttl_ms: u64,
    /// Concurrent connections to the upstream on each node (1-8, default
    /// 1): with 2, a drop of one connection loses nothing the other
    /// received; every event arrives twice and is stored once (by id).
    #[serde(default = "default_connections")]
    pub connections: u32,
    /// Delay between starting one connection and the next, ms (default
    /// 1000), so they do not drop and reconnect together.
    #[serde(default = "default_connection_stagger_ms")]
    pub connection_stagger_ms: u64,
    /// Run the source on every node at once instead of on the lease
    /// holder only (default false); events are deduplicated by id.
    #[serde(default)]
    pub active_active: bool,
    /// Gaps closer together than this, ms, are merged into one gap record
    /// (default 60000): bounds what an upstream that keeps dropping
    /// connections can make the log write.
    #[serde(default = "default_gap_merge_ms")]
    pub gap_merge_ms: u64,
    /// Allow upstream addresses that are not public (IANA special-purpose,
    /// this host's own), for the stream and the backfill (default false).
    #[serde(default)]
    pub allow_private: bool,
    /// Largest event accepted, bytes: every line of one event, up to its
    /// blank line (default 1 MiB). A larger one is rejected and the source
    /// reconnects.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Longest line accepted, bytes (default: `max_event_bytes`).
    pub max_line_bytes: Option<usize>,
    /// Field mapping of stream events.
    #[serde(default)]
    pub fields: mapping::RawFields,
    /// Optional backfill endpoint.
    pub backfill: Option<backfill::RawBackfill>,
}

fn default_max_event_bytes() -> usize {
    1 << 20
}

fn default_api_key_header() -> String {
    "authorization".into()
}
fn default_types_param() -> String {
    "types".into()
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_lease_ttl_ms() -> u64 {
    15_000
}
fn default_connections() -> u32 {
    1
}
fn default_connection_stagger_ms() -> u64 {
    1_000
}
fn default_gap_merge_ms() -> u64 {
    60_000
}

/// A validated source configuration.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Name.
    pub name: String,
    /// Upstream URL.
    pub url: reqwest::Url,
    /// Target stream.
    pub stream: String,
    /// Where the API key comes from (loaded by [`SourceConfig::load_key`]).
    pub key_from: Option<crate::secret::SecretSource>,
    /// Header name, lowercase.
    pub api_key_header: String,
    /// Types to take; empty: all.
    pub types: Vec<String>,
    /// Query parameter for the types.
    pub types_param: String,
    /// First reconnect delay.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay.
    pub reconnect_max: Duration,
    /// Lease time.
    pub lease_ttl: Duration,
    /// Concurrent connections per node.
    pub connections: usize,
    /// Delay between starting connections.
    pub connection_stagger: Duration,
    /// Run on every node at once.
    pub active_active: bool,
    /// Gaps closer than this are merged.
    pub gap_merge: Duration,
    /// Allow non-public upstream addresses.
    pub allow_private: bool,
    /// Largest event, bytes.
    pub max_event_bytes: usize,
    /// Longest line, bytes.
    pub max_line_bytes: usize,
    /// Field mapping.
    pub fields: mapping::Fields,
    /// Backfill endpoint.
    pub backfill: Option<backfill::BackfillConfig>,
}

fn cfg_err(key: &str, message: impl Into<String>) -> SettingError {
    SettingError::new(key, message)
}

impl RawSource {
    /// Validates one `[[sources]]` table (pure: reads no key).
    ///
    /// # Errors
    /// The first invalid value, by key.
    pub fn validate(self) -> Result<SourceConfig, SettingError> {
        if self.kind != "sse" {
            return Err(cfg_err(
                "type",
                format!("unknown source type {:?}; supported: \"sse\"", self.kind),
            ));
        }
        crate::names::ConfigName::parse(&self.name).map_err(|e| cfg_err("name", e.to_string()))?;
        crate::names::StreamName::producer(&self.stream)
            .map_err(|e| cfg_err("stream", e.to_string()))?;
        let url = parse_http_url(&self.url).map_err(|m| cfg_err("url", m))?;
        crate::net::guard::check_config_url(&url, self.allow_private)
            .map_err(|m| cfg_err("url", m))?;
        if !(1024..=(64 << 20)).contains(&self.max_event_bytes) {
            return Err(cfg_err(
                "max_event_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        let max_line_bytes = self.max_line_bytes.unwrap_or(self.max_event_bytes);
        if !(1024..=self.max_event_bytes).contains(&max_line_bytes) {
            return Err(cfg_err(
                "max_line_bytes",
                "must be at least 1024 and at most max_event_bytes",
            ));
        }
        let key_from = match (self.api_key_env, self.api_key_file) {
            (Some(_), Some(_)) => {
                return Err(cfg_err(
                    "api_key_env",
                    "set api_key_env or api_key_file, not both",
                ));
            }
            (Some(e), None) => Some(crate::secret::SecretSource::Env(e)),
            (None, Some(f)) => Some(crate::secret::SecretSource::File(f)),
            (None, None) => None,
        };
        let header = self.api_key_header.to_ascii_lowercase();
        if reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(cfg_err("api_key_header", "is not a valid HTTP header name"));
        }
        for t in &self.types {
            if crate::event::validate(
                0,
                serde_json::json!({"type": t}),
                "2000-01-01T00:00:00Z",
                &crate::event::Limits::default(),
            )
            .is_err()
            {
                return Err(cfg_err("types", format!("{t:?} is not an event type")));
            }
        }
        if self.reconnect_initial_ms == 0 || self.reconnect_initial_ms > self.reconnect_max_ms {
            return Err(cfg_err(
                "reconnect_initial_ms",
                "must be at least 1 and at most reconnect_max_ms",
            ));
        }
        if !(300..=3_600_000).contains(&self.lease_ttl_ms) {
            return Err(cfg_err("lease_ttl_ms", "must be between 300 and 3600000"));
        }
        if self.reconnect_max_ms > 3_600_000 {
            return Err(cfg_err("reconnect_max_ms", "must be at most 3600000"));
        }
        if !(1..=8).contains(&self.connections) {
            return Err(cfg_err("connections", "must be between 1 and 8"));
        }
        if self.connection_stagger_ms > 600_000 {
            return Err(cfg_err("connection_stagger_ms", "must be at most 600000"));
        }
        if self.gap_merge_ms > 86_400_000 {
            return Err(cfg_err(
                "gap_merge_ms",
                "must be at most 86400000 (one day)",
            ));
        }
        let backfill = match self.backfill {
            Some(b) => Some(
                b.validate(self.allow_private)
                    .map_err(|(k, m)| cfg_err(&format!("backfill.{k}"), m))?,
            ),
            None => None,
        };
        Ok(SourceConfig {
            name: self.name,
            url,
            stream: self.stream,
            key_from,
            api_key_header: header,
            types: self.types,
            types_param: self.types_param,
            reconnect_initial: Duration::from_millis(self.reconnect_initial_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            lease_ttl: Duration::from_millis(self.lease_ttl_ms),
            connections: self.connections as usize,
            connection_stagger: Duration::from_millis(self.connection_stagger_ms),
            active_active: self.active_active,
            gap_merge: Duration::from_millis(self.gap_merge_ms),
            allow_private: self.allow_private,
            max_event_bytes: self.max_event_bytes,
            max_line_bytes,
            fields: self.fields.into(),
            backfill,
        })
    }
}

/// Parses an `http`/`https` URL.
///
/// # Errors
/// A message saying what is wrong.
pub fn parse_http_url(s: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{s:?} must be http or https"));
    }
    Ok(url)
}

impl SourceConfig {
    /// Returns the SSRF policy of this source (`allow_private`).
    pub fn policy(&self) -> crate::net::Policy {
        crate::net::Policy::new(self.allow_private, format!("[[sources]] {:?}", self.name))
    }

    /// Returns the source's HTTP client: the SSRF guard as its resolver,
    /// redirects within the origin only, a connect timeout (the stream
    /// itself may idle as long as the upstream likes).
    ///
    /// # Errors
    /// When the TLS backend cannot initialise.
    pub fn http_client(&self) -> Result<reqwest::Client, reqwest::Error> {
        self.policy()
            .client_builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(crate::net::same_origin_redirects())
            .build()
    }

    /// Reads the API key (environment or file), as every secret is read
    /// ([`crate::secret::SecretSource::load`]).
    ///
    /// # Errors
    /// An error naming the setting and the variable or file, never the key.
    pub fn load_key(&self) -> Result<Secret, crate::secret::SecretError> {
        match &self.key_from {
            None => Ok(Secret::default()),
            Some(from @ crate::secret::SecretSource::Env(_)) => {
                from.load(&format!("sources.{}.api_key_env", self.name))
            }
            Some(from @ crate::secret::SecretSource::File(_)) => {
                from.load(&format!("sources.{}.api_key_file", self.name))
            }
        }
    }

    /// Adds the API key header to a request.
    pub fn authorize(&self, req: reqwest::RequestBuilder, key: &Secret) -> reqwest::RequestBuilder {
        if key.expose().is_empty() {
            return req;
        }
        let value = if self.api_key_header == "authorization" {
            format!("Bearer {}", key.expose())
        } else {
            key.expose().to_owned()
        };
        match reqwest::header::HeaderValue::from_str(&value) {
            Ok(mut v) => {
                v.set_sensitive(true);
                req.header(self.api_key_header.as_str(), v)
            }
            Err(_) => req,
        }
    }

    /// Returns whether the type filter lets `event_type` through.
    pub fn wants(&self, event_type: &str) -> bool {
        self.types.is_empty() || self.types.iter().any(|t| t == event_type)
    }
}

/// Returns the current time as stored in state records.
pub(crate) fn now() -> String {
    crate::event::format_received(time::OffsetDateTime::now_utc())
}

/// Truncates `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(extra: &str) -> RawSource {
        toml::from_str(&format!(
            "name = \"up\"\ntype = \"sse\"\nurl = \"http://127.0.0.1:1/s\"\nstream = \"s\"\nallow_private = true\n{extra}"
        ))
        .expect("parses")
    }

    #[test]
    fn validation_names_the_key() {
        assert!(raw("").validate().is_ok());
        let e = raw("types = [\"bad type\"]")
            .validate()
            .expect_err("bad type");
        assert_eq!(e.key, "types");
        let e = raw("reconnect_initial_ms = 0")
            .validate()
            .expect_err("zero");
        assert_eq!(e.key, "reconnect_initial_ms");
        for (text, key) in [
            ("connections = 0", "connections"),
            ("connections = 9", "connections"),
            ("connection_stagger_ms = 600001", "connection_stagger_ms"),
            ("gap_merge_ms = 86400001", "gap_merge_ms"),
            (
                "[backfill]\nurl = \"http://127.0.0.1:1/b\"\noverlap_ms = 604800001",
                "backfill.overlap_ms",
            ),
        ] {
            assert_eq!(raw(text).validate().expect_err(text).key, key, "{text}");
        }
        let ok = raw("connections = 2\nactive_active = true")
            .validate()
            .expect("valid");
        assert_eq!((ok.connections, ok.active_active), (2, true));
        let e = raw("api_key_env = \"A\"\napi_key_file = \"/x\"")
            .validate()
            .expect_err("both");
        assert_eq!(e.key, "api_key_env");
        let e: Result<RawSource, _> = toml::from_str(
            "name = \"up\"\ntype = \"sse\"\nurl = \"ftp://x\"\nstream = \"s\"\nbogus = 1",
        );
        assert!(e.expect_err("unknown key").to_string().contains("bogus"));
        let bad_url: RawSource =
            toml::from_str("name = \"up\"\ntype = \"sse\"\nurl = \"ftp://x\"\nstream = \"s\"")
                .expect("parses");
        assert_eq!(bad_url.validate().expect_err("ftp").key, "url");
    }

    #[test]
    fn the_key_goes_in_the_configured_header() {
        let key = Secret::new("k123".into());
        let client = reqwest::Client::new();
        let bearer = raw("").validate().expect("valid");
        let req = bearer
            .authorize(client.get("http://127.0.0.1:1/"), &key)
            .build()
            .expect("request");
        assert_eq!(req.headers()["authorization"], "Bearer k123");
        assert!(
            req.headers()["authorization"].is_sensitive(),
            "kept out of debug output"
        );
        let custom = raw("api_key_header = \"X-Api-Key\"")
            .validate()
            .expect("valid");
        let req = custom
            .authorize(client.get("http://127.0.0.1:1/"), &key)
            .build()
            .expect("request");
        assert_eq!(req.headers()["x-api-key"], "k123");
        assert!(!req.headers().contains_key("authorization"));
        let none = custom
            .authorize(client.get("http://127.0.0.1:1/"), &Secret::default())
            .build()
            .expect("request");
        assert!(none.headers().is_empty(), "no key, no header");
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let s = Secret::new("tk_super_secret".into());
        assert!(!format!("{s:?}").contains("super"));
    }
}
