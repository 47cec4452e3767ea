//! The `webhook` destination: JSON batches signed per the Standard Webhooks
//! specification (<https://www.standardwebhooks.com/>).
//!
//! The body is `{type, timestamp, data}` with `timestamp` the receipt time of
//! the batch's last event, so a retried batch is the same bytes. Headers:
//! `webhook-id` (stable per batch: a retry carries the same id, so
//! receivers deduplicate), `webhook-timestamp` (Unix seconds, the send
//! time) and
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `id.timestamp.body`
//! with the `whsec_` secret's base64-decoded bytes. HTTPS only (HTTP to a
//! loopback address for tests); redirects are never followed; a host that
//! resolves to an address that is not public is refused unless
//! `allow_private` is set (`net::guard`, at connect time: the request goes
//! to the addresses checked).
//!
//! The `webhook-id` is `msg_` + the first 128 bits of SHA-256 over the
//! length-prefixed destination, stream and seq range, hex: stable per batch
//! and unambiguous whatever the names contain.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

use super::encoding::{Encoding, encode};
use super::{Batch, DeliveryError, Destination, HttpClient, read_answer};
use crate::secret::Secret;

/// Sends batches to a webhook receiver.
pub struct WebhookDestination {
    url: url::Url,
    key: Vec<u8>,
    client: HttpClient,
    encoding: Encoding,
}

/// Why a webhook destination cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The secret is not `whsec_` + base64.
    #[error("the webhook secret must be whsec_ followed by base64")]
    Secret,
    /// The URL does not parse (config validation has parsed it already).
    #[error("url is not a URL")]
    Url(#[from] url::ParseError),
}

impl std::fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebhookDestination({}, secret redacted)",
            crate::net::redact_url(&self.url)
        )
    }
}

/// Returns whether `ip` is not a public address (see `net::guard`).
pub fn is_private(ip: std::net::IpAddr) -> bool {
    crate::net::guard::special_purpose(ip).is_some()
}

/// Returns the `webhook-id` of a batch: `msg_` + 32 hex digits of SHA-256
/// over each part prefixed by its length, so no two batches share an id.
pub fn message_id(destination: &str, stream: &str, start: u64, end: u64) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for part in [destination.as_bytes(), stream.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(start.to_be_bytes());
    h.update(end.to_be_bytes());
    format!("msg_{}", hex::encode(&h.finalize()[..16]))
}

/// The signature of `id.timestamp.body` with `key`: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

impl WebhookDestination {
    /// A webhook destination sending through `client`.
    ///
    /// # Errors
    /// A secret that is not `whsec_` + base64, or a bad URL.
    pub fn new(
        url: &str,
        secret: &Secret,
        client: HttpClient,
        encoding: Encoding,
    ) -> Result<Self, WebhookError> {
        let key = secret
            .expose()
            .strip_prefix("whsec_")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|k| !k.is_empty())
            .ok_or(WebhookError::Secret)?;
        Ok(Self {
            url: url::Url::parse(url)?,
            key,
            client,
            encoding,
        })
    }

    /// Returns the request body of `batch`. Its `timestamp` is when the
    /// batch's last event was received (Standard Webhooks: when the event
    /// occurred), not the send time, so a batch delivered again is the same
    /// bytes (the `webhook-timestamp` header is the send time).
    pub fn body(&self, batch: &Batch) -> Vec<u8> {
        let events: Vec<serde_json::Value> = batch
            .events
            .iter()
            .map(|e| serde_json::from_str(&encode(&e.json, self.encoding)).unwrap_or_default())
            .collect();
        serde_json::json!({
            "type": "trailkeep.events",
            "timestamp": batch.events.last().map_or_else(
                || crate::event::format_received(time::OffsetDateTime::now_utc()),
                |e| e.received.clone(),
            ),
            "data": {
                "destination": batch.destination,
                "stream": batch.stream,
                "start_seq": batch.start_seq,
                "end_seq": batch.end_seq,
                "events": events,
            },
        })
        .to_string()
        .into_bytes()
    }
}

#[async_trait]
impl Destination for WebhookDestination {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let body = self.body(batch);
        let id = message_id(
            &batch.destination,
            &batch.stream,
            batch.start_seq,
            batch.end_seq,
        );
        let ts = time::OffsetDateTime::now_utc().unix_timestamp();
        let req = self
            .client
            .get()?
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&self.key, &id, ts, &body))
            .body(body);
        let resp = self
            .client
            .send(req, &crate::net::redact_url(&self.url))
            .await?;
        // A 2xx body is not needed (and not read); an error's is the detail.
        read_answer(resp, 0).await.map(drop)
    }
}

#[cfg(test)]
mod tests;
