//! Per-key rate limits (requests/s and events/s), answered with 429 and
//! `Retry-After`. GCRA from `governor`, keyed by the API key id, with a
//! burst of one second's worth.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::ApiError;

/// The limiters of one server.
#[derive(Debug)]
pub struct RateLimits {
    requests: Option<DefaultKeyedRateLimiter<String>>,
    events: Option<DefaultKeyedRateLimiter<String>>,
    events_per_second: u32,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|n| governor::RateLimiter::keyed(Quota::per_second(n)))
}

impl RateLimits {
    /// Limits from `[server]` (0 turns a limit off).
    pub fn new(settings: &crate::config::ServerSettings) -> Self {
        Self {
            requests: limiter(settings.requests_per_second),
            events: limiter(settings.events_per_second),
            events_per_second: settings.events_per_second,
            body_timeout: settings.body_timeout,
        }
    }

    /// Counts one request of key `id`.
    ///
    /// # Errors
    /// 429 with `Retry-After` when the key is over its rate.
    pub fn request(&self, id: &str) -> Result<(), ApiError> {
        let Some(l) = &self.requests else {
            return Ok(());
        };
        let key = id.to_owned();
        l.check_key(&key).map_err(|not_until| {
            too_many(
                "requests",
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })?;
        Self::tidy(l);
        Ok(())
    }

    /// Counts `n` events appended with key `id`.
    ///
    /// # Errors
    /// 429 with `Retry-After` when the key is over its rate; 413 when one
    /// request holds more events than a second's worth (waiting would never
    /// let it through: a client honouring 429 would retry it forever).
    pub fn events(&self, id: &str, n: usize) -> Result<(), ApiError> {
        let (Some(l), Some(n)) = (
            &self.events,
            u32::try_from(n).ok().and_then(NonZeroU32::new),
        ) else {
            return Ok(());
        };
        match l.check_key_n(&id.to_owned(), n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(too_many(
                "events",
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "over_event_rate",
                format!(
                    "this request holds {n} events, more than this key may send in a second ([server] events_per_second = {}); send at most that many per request, or raise the setting",
                    self.events_per_second
                ),
            )),
        }
    }

    /// Forgets keys that are back to full capacity, now and then, so the
    /// map does not grow with every key ever seen.
    fn tidy(l: &DefaultKeyedRateLimiter<String>) {
        if l.len() > 10_000 {
            l.retain_recent();
        }
    }
}

fn too_many(what: &str, wait: Duration) -> ApiError {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut e = ApiError::new(
        axum::http::StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!(
            "this key is over its {what} per second limit ([server] {what}_per_second); retry after {secs} s"
        ),
    );
    e.retry_after = Some(secs.max(1));
    e
}
