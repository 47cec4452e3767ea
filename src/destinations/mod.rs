//! Destinations: at-least-once delivery of the committed log, each from its
//! own durable cursor per stream.
//!
//! A destination implements one trait, [`Destination`]: deliver one batch
//! and classify the outcome. Everything else is the [`driver`]'s, shared by
//! all: reading from the cursor, filters, batching (count, bytes, age),
//! retries with capped exponential backoff and full jitter (honouring
//! `Retry-After`), dead letters for permanent refusals, the cursor moved
//! only after the destination accepted, the lease that lets one node drive
//! each destination, and status.
//!
//! Here: the trait, the shared driver (which feeds a destination from the
//! archive when it fell behind the hot store), the `file`, `webhook`,
//! object-store (`s3`, `gcs`, `azure_blob`), Splunk HEC, Datadog Logs and
//! BigQuery destinations, the `[[destinations]]` config (one raw struct per
//! type), payload encodings, the one HTTP client and answer classifier
//! every HTTP destination uses ([`client`]), [`build`], and (tests only)
//! the conformance suite every destination runs.

pub mod bigquery;
pub mod client;
pub mod config;
#[cfg(test)]
pub mod conformance;
pub mod driver;
pub mod encoding;
pub mod file;
pub mod http;
pub mod object;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;

pub use client::{
    ERROR_BODY_MAX, HttpClient, classify_http, excerpt, parse_retry_after, read_answer,
};

/// One event as destinations receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutEvent {
    /// Seq.
    pub seq: u64,
    /// Event id (receivers deduplicate on it: delivery is at least once).
    pub id: String,
    /// Event type.
    pub event_type: String,
    /// Receipt time (RFC 3339).
    pub received: String,
    /// The stored event as JSON, chain fields included.
    pub json: String,
}

/// One batch: the events of `stream` with seqs `start_seq..=end_seq` that
/// pass the destination's filters (possibly fewer than the range).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Destination name.
    pub destination: String,
    /// Stream.
    pub stream: String,
    /// First seq covered.
    pub start_seq: u64,
    /// Last seq covered (the cursor moves here once accepted).
    pub end_seq: u64,
    /// The events to send.
    pub events: Vec<OutEvent>,
}

/// Why a delivery failed.
///
/// `message` is what status pages and logs show: it never carries a URL
/// with its query, credentials or the receiver's body. The receiver's
/// answer (status and a redacted excerpt of at most 512 characters) is
/// `detail`, for admins only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: network, timeout, 408, 429, 5xx.
    #[error("retryable: {message}")]
    Retryable {
        /// What happened.
        message: String,
        /// The receiver's `Retry-After`, a floor for the next wait (the
        /// driver caps it at the destination's `backoff_max_ms`).
        retry_after: Option<Duration>,
        /// The receiver's answer (redacted excerpt), when there was one.
        detail: Option<String>,
    },
    /// Refused for good (other 4xx): the batch goes to the dead letters.
    #[error("permanent: {message}")]
    Permanent {
        /// Response status, when there was one.
        status: Option<u16>,
        /// What happened.
        message: String,
        /// The receiver's answer (redacted excerpt), when there was one.
        detail: Option<String>,
    },
}

impl DeliveryError {
    /// A retryable failure without a receiver's answer.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
            detail: None,
        }
    }

    /// A permanent failure without a receiver's answer.
    pub fn permanent(status: Option<u16>, message: impl Into<String>) -> Self {
        Self::Permanent {
            status,
            message: message.into(),
            detail: None,
        }
    }

    /// A failed request: refused by the SSRF guard (permanent: the
    /// configuration must change) or a network failure (retryable).
    pub fn from_send(what: &str, e: &crate::net::SendError) -> Self {
        if e.refused().is_some() {
            Self::permanent(None, format!("{what}: {e}"))
        } else {
            Self::retryable(format!("{what}: {e}"))
        }
    }

    /// Returns the message (free of URLs' queries, credentials and bodies).
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent { message, .. } => message,
        }
    }

    /// Returns the receiver's answer, when there was one.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Self::Retryable { detail, .. } | Self::Permanent { detail, .. } => detail.as_deref(),
        }
    }
}

/// A destination: delivers a batch, says whether it was accepted.
#[async_trait]
pub trait Destination: Send + Sync + 'static {
    /// Delivers `batch`. `Ok` means the receiver accepted it (durably, as
    /// far as the receiver's API says); the driver then moves the cursor.
    ///
    /// # Errors
    /// [`DeliveryError`], classified.
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError>;
}

/// Why a destination could not be built. Messages name the destination and
/// where its secret comes from, never a secret or a URL's credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The secret cannot be loaded (its variable or file, never its value).
    #[error(transparent)]
    Secret(#[from] crate::secret::SecretError),
    /// The webhook's secret or URL is unusable.
    #[error("destination {destination}")]
    Webhook {
        /// Destination name.
        destination: String,
        /// What is wrong.
        source: webhook::WebhookError,
    },
    /// The BigQuery service account is unusable.
    #[error("destination {destination}")]
    ServiceAccount {
        /// Destination name.
        destination: String,
        /// What is wrong.
        source: bigquery::AccountError,
    },
    /// The object store cannot be opened (its URL or options).
    #[error("destination {destination}")]
    Bucket {
        /// Destination name.
        destination: String,
        /// What is wrong.
        source: Box<crate::objstore::ObjStoreError>,
    },
}

/// Builds the destination a config describes: loads its secret and builds
/// its one HTTP client (or object-store handle).
///
/// # Errors
/// [`BuildError`]: a secret that cannot be loaded or is malformed, an
/// object store that cannot be opened.
pub fn build(
    cfg: &config::DestinationConfig,
) -> Result<std::sync::Arc<dyn Destination>, BuildError> {
    use config::Kind;
    use std::sync::Arc;
    let name = &cfg.driver.name;
    let client = |allow_private: bool, timeout: Duration| {
        HttpClient::new(
            crate::net::Policy::new(allow_private, format!("[[destinations]] {name:?}")),
            timeout,
        )
    };
    Ok(match &cfg.kind {
        Kind::File {
            path,
            rotate_bytes,
            keep,
        } => Arc::new(
            file::FileDestination::new(path.clone(), *rotate_bytes, *keep)
                .with_encoding(cfg.encoding),
        ),
        Kind::SplunkHec {
            url,
            secret,
            settings,
            timeout,
            allow_private,
        } => Arc::new(http::SplunkHec::new(
            url,
            config::load_secret(secret, name)?,
            settings.clone(),
            cfg.encoding,
            client(*allow_private, *timeout),
        )),
        Kind::BigQuery {
            url,
            table,
            secret,
            timeout,
            allow_private,
        } => {
            // secret_file names the JSON file; secret_env holds the JSON itself.
            let json = config::load_secret(secret, name)?;
            Arc::new(
                bigquery::BigQuery::new(
                    url,
                    table.clone(),
                    json.expose(),
                    client(*allow_private, *timeout),
                )
                .map_err(|source| BuildError::ServiceAccount {
                    destination: name.clone(),
                    source,
                })?,
            )
        }
        Kind::Datadog {
            url,
            secret,
            settings,
            timeout,
            allow_private,
        } => Arc::new(http::DatadogLogs::new(
            url,
            config::load_secret(secret, name)?,
            settings.clone(),
            cfg.encoding,
            client(*allow_private, *timeout),
        )),
        Kind::Object {
            url,
            compression,
            bucket,
        } => {
            let b = crate::objstore::Bucket::open(url, bucket).map_err(|source| {
                BuildError::Bucket {
                    destination: name.clone(),
                    source: Box::new(source),
                }
            })?;
            Arc::new(object::ObjectDestination::new(
                b,
                *compression,
                cfg.encoding,
            ))
        }
        Kind::Webhook {
            url,
            secret,
            allow_private,
            timeout,
        } => Arc::new(
            webhook::WebhookDestination::new(
                url,
                &config::load_secret(secret, name)?,
                client(*allow_private, *timeout),
                cfg.encoding,
            )
            .map_err(|source| BuildError::Webhook {
                destination: name.clone(),
                source,
            })?,
        ),
    })
}

/// How far one destination is behind on one stream.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct StreamLag {
    /// Stream.
    pub stream: String,
    /// Highest seq delivered (or passed by a dead letter or a filter).
    pub cursor: u64,
    /// The stream's head.
    pub head: u64,
    /// Events not yet delivered.
    pub lag_events: u64,
    /// Age of the oldest undelivered event, seconds (None when caught up).
    pub lag_seconds: Option<f64>,
}

/// Per stream the destination takes: cursor, head and lag.
///
/// # Errors
/// Store errors.
pub async fn lags(
    store: &dyn crate::store::Store,
    name: &str,
    filter: &crate::event::filter::Filter,
) -> Result<Vec<StreamLag>, crate::store::StoreError> {
    let cursors = store.delivery_cursors().await?;
    let mut out = Vec::new();
    for info in store.streams().await? {
        if !filter.stream(&info.name) {
            continue;
        }
        let cursor = cursors
            .iter()
            .find(|c| c.destination == name && c.stream == info.name)
            .map_or(0, |c| c.seq);
        let lag_events = info.head_seq.saturating_sub(cursor);
        let mut lag_seconds = None;
        if lag_events > 0
            && let Some(next) = store.read_events(&info.name, cursor + 1, 1).await?.first()
        {
            let received = serde_json::from_str::<serde_json::Value>(&next.body)
                .ok()
                .and_then(|v| v["received"].as_str().map(str::to_owned));
            lag_seconds = received
                .and_then(|r| {
                    time::OffsetDateTime::parse(&r, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| {
                    (time::OffsetDateTime::now_utc() - t)
                        .as_seconds_f64()
                        .max(0.0)
                });
        }
        out.push(StreamLag {
            stream: info.name,
            cursor,
            head: info.head_seq,
            lag_events,
            lag_seconds,
        });
    }
    Ok(out)
}
