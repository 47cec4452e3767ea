//! What every HTTP destination (webhook, Splunk HEC, Datadog, BigQuery)
//! shares: its one client, built with the destination ([`HttpClient`]), and
//! the one classifier of receivers' answers ([`classify_http`],
//! [`read_answer`], [`parse_retry_after`]).
//!
//! Not here: object stores (`object_store` owns their client and retries;
//! `object.rs` classifies its errors) and the retry loop (the driver's).

use std::time::Duration;

use super::DeliveryError;
use crate::net::Policy;

/// A destination's one HTTP client: guarded resolver, no proxy, no
/// redirects, the destination's timeout. Built once, when the destination
/// is, so every batch reuses the keep-alive connections of the last. A
/// client that cannot be built is kept as the error each delivery reports,
/// never replaced by an unguarded default.
#[derive(Clone)]
pub struct HttpClient {
    client: Result<reqwest::Client, String>,
    policy: Policy,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HttpClient")
    }
}

impl HttpClient {
    /// Builds the client of a destination under `policy`.
    pub fn new(policy: Policy, timeout: Duration) -> Self {
        Self {
            client: policy
                .client_builder()
                .timeout(timeout)
                .build()
                .map_err(|e| crate::net::describe(&e)),
            policy,
        }
    }

    /// Returns the client.
    ///
    /// # Errors
    /// Why it could not be built (retryable: nothing was sent).
    pub fn get(&self) -> Result<&reqwest::Client, DeliveryError> {
        self.client
            .as_ref()
            .map_err(|e| DeliveryError::retryable(e.clone()))
    }

    /// Sends `req` (built on [`HttpClient::get`]); `what` names the receiver
    /// in messages and must be free of credentials (a redacted URL).
    ///
    /// # Errors
    /// Refused by the SSRF guard (permanent) or a network failure
    /// (retryable). An answer, whatever its status, is `Ok`: classify it
    /// with [`read_answer`].
    pub async fn send(
        &self,
        req: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, DeliveryError> {
        self.policy
            .send(req)
            .await
            .map_err(|e| DeliveryError::from_send(what, &e))
    }
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
/// an HTTP date); any other status (3xx included: redirects are not
/// followed) permanent. The message names the status only; the body's
/// excerpt is the detail.
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
/// sends), an error body up to [`ERROR_BODY_MAX`] for the detail. With
/// `ok_max` 0 a success body is not read at all.
///
/// # Errors
/// The classified failure.
pub async fn read_answer(resp: reqwest::Response, ok_max: usize) -> Result<String, DeliveryError> {
    let status = resp.status().as_u16();
    if ok_max == 0 && resp.status().is_success() {
        return Ok(String::new());
    }
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
        for s in [301, 302, 400, 401, 403, 404, 413, 422] {
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
        let detail = classify_http(400, None, &long).expect_err("permanent");
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
