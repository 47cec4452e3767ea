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
//! BigQuery destinations, and the `[[destinations]]` config.

pub mod bigquery;
pub mod config;
pub mod driver;
pub mod encoding;
pub mod file;
pub mod http;
pub mod object;
pub mod webhook;

use std::time::Duration;

use async_trait::async_trait;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Worth retrying: network, timeout, 408, 429, 5xx.
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

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable { message, .. } => write!(f, "retryable: {message}"),
            Self::Permanent { message, .. } => write!(f, "permanent: {message}"),
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

/// Builds the destination a config describes (loading its secret).
///
/// # Errors
/// A secret that cannot be loaded or is malformed (the message names where
/// it comes from, never the value).
pub fn build(cfg: &config::DestinationConfig) -> Result<std::sync::Arc<dyn Destination>, String> {
    let policy = |allow_private: bool| {
        crate::net::Policy::new(
            allow_private,
            format!("[[destinations]] {:?}", cfg.driver.name),
        )
    };
    Ok(match &cfg.kind {
        config::Kind::File {
            path,
            rotate_bytes,
            keep,
        } => std::sync::Arc::new(
            file::FileDestination::new(path.clone(), *rotate_bytes, *keep)
                .with_encoding(cfg.encoding),
        ),
        config::Kind::SplunkHec {
            url,
            secret,
            settings,
            timeout,
            allow_private,
        } => std::sync::Arc::new(http::SplunkHec::new(
            url,
            secret.load(&cfg.driver.name)?,
            settings.clone(),
            *timeout,
            cfg.encoding,
            policy(*allow_private),
        )),
        config::Kind::BigQuery {
            url,
            table,
            secret,
            timeout,
            allow_private,
        } => {
            // secret_file names the JSON file; secret_env holds the JSON itself.
            let json = secret.load(&cfg.driver.name)?;
            std::sync::Arc::new(
                bigquery::BigQuery::new(
                    url,
                    table.clone(),
                    json.expose(),
                    *timeout,
                    policy(*allow_private),
                )
                .map_err(|e| format!("destination {}: {e}", cfg.driver.name))?,
            )
        }
        config::Kind::Datadog {
            url,
            secret,
            settings,
            timeout,
            allow_private,
        } => std::sync::Arc::new(http::DatadogLogs::new(
            url,
            secret.load(&cfg.driver.name)?,
            settings.clone(),
            *timeout,
            cfg.encoding,
            policy(*allow_private),
        )),
        config::Kind::Object {
            url,
            compression,
            bucket,
        } => {
            let b = crate::archive::Bucket::open(url, bucket)
                .map_err(|e| format!("destination {}: {e}", cfg.driver.name))?;
            std::sync::Arc::new(object::ObjectDestination::new(
                b,
                *compression,
                cfg.encoding,
            ))
        }
        config::Kind::Webhook {
            url,
            secret,
            allow_private,
            timeout,
        } => {
            let s = secret.load(&cfg.driver.name)?;
            std::sync::Arc::new(
                webhook::WebhookDestination::new(
                    url,
                    &s,
                    policy(*allow_private),
                    *timeout,
                    cfg.encoding,
                )
                .map_err(|e| format!("destination {}: {e}", cfg.driver.name))?,
            )
        }
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

/// The first 512 characters of a response body, redacted, for details and
/// dead letters.
pub fn excerpt(body: &str) -> String {
    crate::net::excerpt(body.as_bytes(), 512)
}

/// Most bytes of a receiver's error body read (the excerpt comes from it).
pub const ERROR_BODY_MAX: usize = 4096;

/// Classifies an HTTP response the way every HTTP destination does: 2xx
/// accepted; 408, 429 and 5xx retryable (with `Retry-After` in seconds or as
/// an HTTP date); any other status permanent. The message names the status
/// only; the body's excerpt is the detail.
///
/// # Errors
/// The classified failure.
pub fn classify_http(
    status: u16,
    retry_after: Option<&str>,
    body: &str,
) -> Result<(), DeliveryError> {
    let detail = (!body.is_empty()).then(|| format!("HTTP {status}: {}", excerpt(body)));
    match status {
        200..=299 => Ok(()),
        408 | 429 | 500..=599 => Err(DeliveryError::Retryable {
            message: format!("receiver answered HTTP {status}"),
            retry_after: retry_after.and_then(parse_retry_after),
            detail,
        }),
        _ => Err(DeliveryError::Permanent {
            status: Some(status),
            message: format!("receiver answered HTTP {status}"),
            detail,
        }),
    }
}

/// Reads a receiver's answer and classifies it: a success body is read up
/// to `ok_max` bytes (more is an error: the answer is not what the API
/// sends), an error body up to [`ERROR_BODY_MAX`] for the detail.
///
/// # Errors
/// The classified failure.
pub async fn read_answer(resp: reqwest::Response, ok_max: usize) -> Result<String, DeliveryError> {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max = if (200..300).contains(&status) {
        ok_max
    } else {
        ERROR_BODY_MAX
    };
    let body = crate::net::read_limited(resp, max).await.map_err(|e| {
        DeliveryError::retryable(format!("reading the answer: {}", crate::net::describe(&e)))
    })?;
    let text = String::from_utf8_lossy(&body.bytes).into_owned();
    classify_http(status, retry_after.as_deref(), &text)?;
    if body.truncated {
        return Err(DeliveryError::retryable(format!(
            "the receiver's answer is over {ok_max} bytes; not read"
        )));
    }
    Ok(text)
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s.min(u64::from(u32::MAX))));
    }
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(v, &f).ok()?.assume_utc();
    let d = at - time::OffsetDateTime::now_utc();
    Some(d.try_into().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn http_statuses_are_classified() {
        assert!(classify_http(200, None, "").is_ok());
        assert!(classify_http(204, None, "").is_ok());
        for s in [408, 429, 500, 502, 503] {
            assert!(
                matches!(
                    classify_http(s, None, "x"),
                    Err(DeliveryError::Retryable { .. })
                ),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(
                matches!(classify_http(s, None, "x"), Err(DeliveryError::Permanent { status: Some(x), .. }) if x == s),
                "{s}"
            );
        }
        let Err(DeliveryError::Retryable { retry_after, .. }) = classify_http(429, Some("7"), "")
        else {
            panic!("retryable")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
        let long = "y".repeat(2000);
        let Err(DeliveryError::Permanent { message, .. }) = classify_http(400, None, &long) else {
            panic!("permanent")
        };
        assert!(!message.contains('y'), "the body is the detail only");
        let detail = classify_http(400, None, &long).unwrap_err();
        assert!(detail.detail().unwrap().len() < 600);
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a past date: now"
        );
        let future = time::OffsetDateTime::now_utc() + time::Duration::seconds(90);
        let f = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        let d = parse_retry_after(&future.format(&f).unwrap()).unwrap();
        assert!(
            d > Duration::from_secs(85) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
