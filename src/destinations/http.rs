//! Splunk HEC and Datadog Logs: HTTP intake APIs with a token.
//!
//! - Splunk HEC (<https://docs.splunk.com/Documentation/Splunk/latest/Data/FormateventsforHTTPEventCollector>):
//!   `POST {url}/services/collector/event`, `Authorization: Splunk <token>`,
//!   the batch as concatenated event objects `{time, host, source,
//!   sourcetype, index, event}`. With indexer acknowledgement on, requests
//!   carry `X-Splunk-Request-Channel`, the answer's `ackId` is polled at
//!   `/services/collector/ack?channel=…` and the batch counts as accepted
//!   only once it reports `true` (a timeout retries the batch).
//!   With `encoding = "grantex"` the objects are Grantex's
//!   (`{event, time, source, sourcetype, index}` in that order, `time` in
//!   whole seconds rounded down, `index` defaulting to `main`), joined by
//!   newlines as its `SplunkDestination` sends them.
//! - Datadog Logs v2 (<https://docs.datadoghq.com/api/latest/logs/#send-logs>):
//!   `POST {url}/api/v2/logs`, `DD-API-KEY`, gzip JSON arrays of entries
//!   `{ddsource, ddtags, hostname, service, message}`, split to the intake
//!   limits (1,000 entries and 5 MB per request; an entry over 1 MB is
//!   refused for good rather than truncated by the intake). With
//!   `encoding = "grantex"` the entries are Grantex's `DatadogDestination`'s
//!   (`ddsource`/`service` `grantex`, `hostname` `grantex-auth-service`,
//!   `ddtags` `type:…`) and the body goes uncompressed, as it sends it.
//!
//! Every field a user filters on is configurable; the defaults follow the
//! encoding ([`HecSettings`], [`DatadogSettings`]).

use std::io::Write as _;
use std::time::Duration;

use async_trait::async_trait;

use super::encoding::{Encoding, encode};
use super::{Batch, DeliveryError, Destination, HttpClient, read_answer};
use crate::secret::Secret;

fn retryable(message: String) -> DeliveryError {
    DeliveryError::retryable(message)
}

/// Most bytes of a HEC answer read (they are a few dozen bytes of JSON).
const ANSWER_MAX: usize = 64 * 1024;

/// Splunk HEC settings. Unset fields take the encoding's defaults.
#[derive(Debug, Clone, Default)]
pub struct HecSettings {
    /// `host` field (default: none, the HEC's own).
    pub host: Option<String>,
    /// `source` field (default `trailkeep`; `grantex` in that encoding).
    pub source: Option<String>,
    /// `sourcetype` field (default `_json`).
    pub sourcetype: Option<String>,
    /// `index` field (default: none, the token's; `main` in the `grantex`
    /// encoding, as Grantex sends).
    pub index: Option<String>,
    /// Wait for indexer acknowledgement.
    pub ack: bool,
    /// How long to poll for the acknowledgement.
    pub ack_timeout: Duration,
}

/// Splunk HTTP Event Collector.
pub struct SplunkHec {
    url: String,
    token: Secret,
    settings: HecSettings,
    encoding: Encoding,
    channel: String,
    /// Built once: every batch reuses its connections.
    client: HttpClient,
}

impl SplunkHec {
    /// A HEC destination at `url` (scheme, host, port).
    pub fn new(
        url: &str,
        token: Secret,
        settings: HecSettings,
        encoding: Encoding,
        client: HttpClient,
    ) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            token,
            settings,
            encoding,
            channel: uuid_like(),
            client,
        }
    }

    /// The request body: one event object per event, concatenated.
    pub fn body(&self, batch: &Batch) -> Vec<u8> {
        if self.encoding == Encoding::Grantex {
            return self.grantex_body(batch);
        }
        let mut out = Vec::new();
        for e in &batch.events {
            let event: serde_json::Value =
                serde_json::from_str(&encode(&e.json, self.encoding)).unwrap_or_default();
            let t = serde_json::from_str::<serde_json::Value>(&e.json)
                .ok()
                .and_then(|v| v["time"].as_str().map(str::to_owned))
                .and_then(|t| {
                    time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(0.0, |t| t.unix_timestamp_nanos() as f64 / 1e9);
            let mut o = serde_json::json!({
                "time": (t * 1000.0).round() / 1000.0,
                "source": self.settings.source.as_deref().unwrap_or("trailkeep"),
                "sourcetype": self.settings.sourcetype.as_deref().unwrap_or("_json"),
                "event": event,
            });
            if let Some(h) = &self.settings.host {
                o["host"] = h.clone().into();
            }
            if let Some(i) = &self.settings.index {
                o["index"] = i.clone().into();
            }
            out.extend_from_slice(o.to_string().as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// The body Grantex's `SplunkDestination` sends: per event
    /// `{"event":…,"time":…,"source":…,"sourcetype":…,"index":…}` in that
    /// order (`host` after them when set), `time` the event time in whole
    /// seconds rounded down, the objects joined by `\n`.
    fn grantex_body(&self, batch: &Batch) -> Vec<u8> {
        let s = &self.settings;
        let source = s.source.as_deref().unwrap_or("grantex");
        let sourcetype = s.sourcetype.as_deref().unwrap_or("_json");
        let index = s.index.as_deref().unwrap_or("main");
        let mut out = String::new();
        for (i, e) in batch.events.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str("{\"event\":");
            super::encoding::write_grantex(&mut out, &e.json);
            out.push_str(",\"time\":");
            let secs = serde_json::from_str::<StoredTime<'_>>(&e.json)
                .ok()
                .and_then(|t| super::encoding::unix_seconds_floor(&t.time))
                .unwrap_or(0);
            out.push_str(itoa::Buffer::new().format(secs));
            for (k, v) in [
                ("source", Some(source)),
                ("sourcetype", Some(sourcetype)),
                ("index", Some(index)),
                ("host", s.host.as_deref()),
            ] {
                if let Some(v) = v {
                    out.push_str(",\"");
                    out.push_str(k);
                    out.push_str("\":");
                    crate::jcs::write_str(&mut out, v);
                }
            }
            out.push('}');
        }
        out.into_bytes()
    }
}

/// The `time` of a stored event, borrowed.
#[derive(serde::Deserialize)]
struct StoredTime<'a> {
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

fn uuid_like() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[async_trait]
impl Destination for SplunkHec {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let c = self.client.get()?;
        let auth = format!("Splunk {}", self.token.expose());
        let mut req = c
            .post(format!("{}/services/collector/event", self.url))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(self.body(batch));
        if self.settings.ack {
            req = req.header("x-splunk-request-channel", &self.channel);
        }
        let resp = self
            .client
            .send(req, &crate::net::redact_urls(&self.url))
            .await?;
        let text = read_answer(resp, ANSWER_MAX).await?;
        if !self.settings.ack {
            return Ok(());
        }
        let ack_id = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["ackId"].as_u64())
            .ok_or_else(|| DeliveryError::Permanent {
                status: Some(200),
                message: "acknowledgement is on but the answer has no ackId".into(),
                detail: Some(super::excerpt(&text)),
            })?;
        let deadline = tokio::time::Instant::now() + self.settings.ack_timeout;
        loop {
            let req = c
                .post(format!(
                    "{}/services/collector/ack?channel={}",
                    self.url, self.channel
                ))
                .header("authorization", &auth)
                .header("x-splunk-request-channel", &self.channel)
                .header("content-type", "application/json")
                .body(serde_json::json!({"acks": [ack_id]}).to_string());
            let resp = self
                .client
                .send(
                    req,
                    &format!("{} (ack)", crate::net::redact_urls(&self.url)),
                )
                .await?;
            let text = read_answer(resp, ANSWER_MAX).await?;
            let done = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["acks"][ack_id.to_string()].as_bool())
                .unwrap_or(false);
            if done {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(retryable(format!(
                    "ackId {ack_id} not acknowledged in time; sending the batch again"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Datadog settings. Unset fields take the encoding's defaults.
#[derive(Debug, Clone, Default)]
pub struct DatadogSettings {
    /// `ddsource` of every entry (default `trailkeep`; `grantex` in that
    /// encoding).
    pub ddsource: Option<String>,
    /// `service` of every entry (default `trailkeep`; `grantex` in that
    /// encoding).
    pub service: Option<String>,
    /// `hostname` of every entry (default: none; `grantex-auth-service` in
    /// the `grantex` encoding, as Grantex sends).
    pub hostname: Option<String>,
    /// Tags (`key:value`) after the event's own in `ddtags` (`type:…`, and
    /// `stream:…` in the `trailkeep` encoding).
    pub tags: Vec<String>,
    /// Gzip the body (default: yes; no in the `grantex` encoding, which
    /// Grantex sends uncompressed).
    pub gzip: Option<bool>,
}

/// Intake limits.
const DD_MAX_ENTRIES: usize = 1000;
const DD_MAX_REQUEST: usize = 5_000_000;
const DD_MAX_ENTRY: usize = 1_000_000;

/// Datadog Logs v2 intake.
pub struct DatadogLogs {
    url: String,
    key: Secret,
    settings: DatadogSettings,
    encoding: Encoding,
    /// Built once: every batch reuses its connections.
    client: HttpClient,
}

impl DatadogLogs {
    /// A Datadog destination at `url` (`https://http-intake.logs.<site>`).
    pub fn new(
        url: &str,
        key: Secret,
        settings: DatadogSettings,
        encoding: Encoding,
        client: HttpClient,
    ) -> Self {
        Self {
            url: url.trim_end_matches('/').to_owned(),
            key,
            settings,
            encoding,
            client,
        }
    }

    /// The requests for `batch`: JSON arrays within the intake limits.
    ///
    /// # Errors
    /// [`DeliveryError::Permanent`] for an entry over 1 MB.
    pub fn requests(&self, batch: &Batch) -> Result<Vec<Vec<u8>>, DeliveryError> {
        let mut out = Vec::new();
        let mut cur: Vec<String> = Vec::new();
        let mut size = 2;
        let grantex = self.encoding == Encoding::Grantex;
        let st = &self.settings;
        let default = if grantex { "grantex" } else { "trailkeep" };
        let ddsource = st.ddsource.as_deref().unwrap_or(default);
        let service = st.service.as_deref().unwrap_or(default);
        let hostname = match &st.hostname {
            Some(h) => Some(h.as_str()),
            None if grantex => Some("grantex-auth-service"),
            None => None,
        };
        for e in &batch.events {
            let mut tags = format!("type:{}", e.event_type);
            if !grantex {
                tags.push_str(",stream:");
                tags.push_str(&batch.stream);
            }
            for t in &st.tags {
                tags.push(',');
                tags.push_str(t);
            }
            // Members in the order Grantex's entries have them (which is
            // also sorted order).
            let mut s = String::with_capacity(e.json.len() + 160);
            s.push_str("{\"ddsource\":");
            crate::jcs::write_str(&mut s, ddsource);
            s.push_str(",\"ddtags\":");
            crate::jcs::write_str(&mut s, &tags);
            if let Some(h) = hostname {
                s.push_str(",\"hostname\":");
                crate::jcs::write_str(&mut s, h);
            }
            s.push_str(",\"message\":");
            crate::jcs::write_str(&mut s, &encode(&e.json, self.encoding));
            s.push_str(",\"service\":");
            crate::jcs::write_str(&mut s, service);
            s.push('}');
            if s.len() > DD_MAX_ENTRY {
                return Err(DeliveryError::permanent(
                    None,
                    format!(
                        "event seq {} is {} bytes, over Datadog's 1 MB entry limit",
                        e.seq,
                        s.len()
                    ),
                ));
            }
            if !cur.is_empty()
                && (cur.len() >= DD_MAX_ENTRIES || size + s.len() + 1 > DD_MAX_REQUEST)
            {
                out.push(std::mem::take(&mut cur));
                size = 2;
            }
            size += s.len() + 1;
            cur.push(s);
        }
        if !cur.is_empty() {
            out.push(cur);
        }
        Ok(out
            .into_iter()
            .map(|entries| format!("[{}]", entries.join(",")).into_bytes())
            .collect())
    }
}

#[async_trait]
impl Destination for DatadogLogs {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let c = self.client.get()?;
        let gzip = self
            .settings
            .gzip
            .unwrap_or(self.encoding != Encoding::Grantex);
        for body in self.requests(batch)? {
            let mut req = c
                .post(format!("{}/api/v2/logs", self.url))
                .header("content-type", "application/json")
                .header("dd-api-key", self.key.expose());
            req = if gzip {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
                gz.write_all(&body).map_err(|e| retryable(e.to_string()))?;
                let gz = gz.finish().map_err(|e| retryable(e.to_string()))?;
                req.header("content-encoding", "gzip").body(gz)
            } else {
                req.body(body)
            };
            let resp = self
                .client
                .send(req, &crate::net::redact_urls(&self.url))
                .await?;
            read_answer(resp, ANSWER_MAX).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
