//! The `webhook` destination: JSON batches signed per the Standard Webhooks
//! specification (<https://www.standardwebhooks.com/>).
//!
//! Headers: `webhook-id` (stable per batch: a retry carries the same id, so
//! receivers deduplicate), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256>` over `id.timestamp.body`
//! with the `whsec_` secret's base64-decoded bytes. HTTPS only (HTTP to a
//! loopback address for tests); redirects are never followed; a host that
//! resolves to a private, loopback or link-local address is refused unless
//! `allow_private` is set, and the request goes to the addresses checked.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};

use super::config::{Encoding, encode};
use super::{Batch, DeliveryError, Destination, classify_http};
use crate::sources::Secret;

/// Sends batches to a webhook receiver.
pub struct WebhookDestination {
    url: url::Url,
    key: Vec<u8>,
    allow_private: bool,
    timeout: Duration,
    encoding: Encoding,
}

impl std::fmt::Debug for WebhookDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookDestination({}, secret redacted)", self.url)
    }
}

/// Whether `ip` is private, loopback, link-local or otherwise not a public address.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_broadcast()
                || a.is_multicast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10, carrier-grade NAT
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || a.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
        }
    }
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
    /// A webhook destination.
    ///
    /// # Errors
    /// A secret that is not `whsec_` + base64, or a bad URL.
    pub fn new(
        url: &str,
        secret: &Secret,
        allow_private: bool,
        timeout: Duration,
        encoding: Encoding,
    ) -> Result<Self, String> {
        let key = secret
            .expose()
            .strip_prefix("whsec_")
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|k| !k.is_empty())
            .ok_or("the webhook secret must be whsec_ followed by base64")?;
        Ok(Self {
            url: url::Url::parse(url).map_err(|e| e.to_string())?,
            key,
            allow_private,
            timeout,
            encoding,
        })
    }
}

#[async_trait]
impl Destination for WebhookDestination {
    async fn deliver(&self, batch: &Batch) -> Result<(), DeliveryError> {
        let host = self
            .url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_owned();
        let port = self.url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| DeliveryError::Retryable {
                message: format!("resolving {host}: {e}"),
                retry_after: None,
            })?
            .collect();
        if !self.allow_private
            && let Some(a) = addrs.iter().find(|a| is_private(a.ip()))
        {
            return Err(DeliveryError::Permanent {
                status: None,
                message: format!(
                    "{host} resolves to {}, a private address; refused (set allow_private = true to allow it)",
                    a.ip()
                ),
            });
        }
        let events: Vec<serde_json::Value> = batch
            .events
            .iter()
            .map(|e| serde_json::from_str(&encode(&e.json, self.encoding)).unwrap_or_default())
            .collect();
        let now = time::OffsetDateTime::now_utc();
        let body = serde_json::to_vec(&serde_json::json!({
            "type": "trailkeep.events",
            "timestamp": crate::event::format_received(now),
            "data": {
                "destination": batch.destination,
                "stream": batch.stream,
                "start_seq": batch.start_seq,
                "end_seq": batch.end_seq,
                "events": events,
            },
        }))
        .map_err(|e| DeliveryError::Permanent {
            status: None,
            message: e.to_string(),
        })?;
        let id = format!(
            "msg_{}_{}_{}_{}",
            batch.destination, batch.stream, batch.start_seq, batch.end_seq
        );
        let ts = now.unix_timestamp();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.timeout)
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| DeliveryError::Retryable {
                message: e.to_string(),
                retry_after: None,
            })?;
        let resp = client
            .post(self.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&self.key, &id, ts, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Retryable {
                message: format!("{}: {e}", self.url),
                retry_after: None,
            })?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        classify_http(status, retry_after.as_deref(), &text)
    }
}

#[cfg(test)]
mod tests;
