//! The conformance suite every destination type runs (issue #14).
//!
//! Each destination's test module implements [`Subject`] (its destination,
//! built as `build` builds it, sending to a real local receiver of its wire
//! format: the receivers of its own tests) and invokes
//! [`http_destination_test_suite!`] or [`stored_destination_test_suite!`],
//! which turn every contract check below into its own `#[tokio::test]`, so a
//! failure names the backend and the check (the shape of quickwit's
//! `metastore_test_suite!`).
//!
//! The contract, from `Destination` and `client.rs`:
//! - every HTTP destination: 2xx accepted; 408, 429 and 5xx retryable; any
//!   other 4xx permanent; `Retry-After` (seconds or an HTTP date) carried to
//!   the driver; redirects refused, never followed;
//! - every destination: a batch arrives complete and in seq order; a batch
//!   delivered again is sent as the same bytes (or, for create-only
//!   objects, finds its own object and makes no second one); a batch is cut
//!   to the receiver's documented limits (or, without limits, is one
//!   request, object or append) and an event over a per-entry limit is
//!   refused for good, sending nothing.
//!
//! HTTP receivers sit behind a [`Tap`]: it records each delivery request as
//! sent and, when a check scripted an answer, answers with it instead of
//! the vendor receiver.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{Batch, DeliveryError, Destination, OutEvent};

/// A receiver's documented size limits, as the destination applies them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Most events in one request.
    pub max_events: Option<usize>,
    /// Most bytes of one request, measured as [`Subject::decode`] does.
    pub max_bytes: Option<usize>,
    /// Most bytes of one event's entry: a larger one is refused for good.
    pub max_entry_bytes: Option<usize>,
}

/// What a redelivered batch does at the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redelivery {
    /// It is sent again, as the same bytes (the receiver deduplicates).
    Resent,
    /// It finds what the first delivery made and makes nothing new.
    Idempotent,
}

/// One delivery as the receiver got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// Request path, object key or file name.
    pub at: String,
    /// The bytes as sent (the request body, the object, the appended bytes).
    pub bytes: Vec<u8>,
}

/// One payload read back: the event ids it carries, in order, and its size
/// as the receiver's limit measures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub ids: Vec<String>,
    pub size: usize,
}

/// A destination under test and its receiver.
#[async_trait]
pub trait Subject: Send + Sync + Sized + 'static {
    /// Starts a fresh receiver and builds the destination sending to it;
    /// `None` when the backend's server is not available here (skipped, and
    /// refused under `CI`).
    async fn start() -> Option<Self>;
    /// The destination.
    fn destination(&self) -> &dyn Destination;
    /// Every delivery the receiver holds so far, in order.
    async fn received(&self) -> Vec<Payload>;
    /// Reads one payload back.
    fn decode(&self, payload: &Payload) -> Decoded;
    /// The receiver's documented limits.
    fn limits(&self) -> Limits {
        Limits::default()
    }
    /// What redelivery does.
    fn redelivery(&self) -> Redelivery {
        Redelivery::Resent
    }
    /// The tap in front of an HTTP receiver (HTTP destinations only).
    fn tap(&self) -> Option<&Tap> {
        None
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
        }
    }

    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Records what reaches an HTTP receiver and answers from a script.
#[derive(Debug, Default)]
pub struct Tap {
    /// The receiver's base URL (`http://127.0.0.1:port`).
    pub base: String,
    deliveries: Vec<&'static str>,
    script: Mutex<VecDeque<Answer>>,
    got: Mutex<Vec<Payload>>,
    elsewhere: Mutex<Vec<String>>,
}

impl Tap {
    /// Serves `app` on 127.0.0.1, port 0, behind a tap that records the
    /// requests to `deliveries` (paths) and every request to another path.
    pub async fn serve(app: axum::Router, deliveries: &[&'static str]) -> Arc<Self> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tap = Arc::new(Self {
            base: format!("http://{}", l.local_addr().unwrap()),
            deliveries: deliveries.to_vec(),
            ..Self::default()
        });
        let t = tap.clone();
        let app = app
            .fallback(|| async { StatusCode::NOT_FOUND })
            // Receivers take what the vendors take (BigQuery: 10 MB).
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .layer(axum::middleware::from_fn(
                move |req: axum::extract::Request, next: axum::middleware::Next| {
                    let t = t.clone();
                    async move { t.pass(req, next).await }
                },
            ));
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        tap
    }

    async fn pass(&self, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
        let path = req.uri().path().to_owned();
        if !self.deliveries.contains(&path.as_str()) {
            self.elsewhere.lock().unwrap().push(path);
            return next.run(req).await;
        }
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        self.got.lock().unwrap().push(Payload {
            at: path,
            bytes: bytes.to_vec(),
        });
        let scripted = self.script.lock().unwrap().pop_front();
        if let Some(a) = scripted {
            let mut resp = (StatusCode::from_u16(a.status).unwrap(), "scripted").into_response();
            let h: &mut HeaderMap = resp.headers_mut();
            for (name, value) in a.headers {
                h.insert(name, value.parse().unwrap());
            }
            return resp;
        }
        next.run(axum::extract::Request::from_parts(
            parts,
            axum::body::Body::from(bytes),
        ))
        .await
    }

    /// Answers the next delivery requests with `answers`, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.script.lock().unwrap().extend(answers);
    }

    /// The delivery requests so far.
    pub fn received(&self) -> Vec<Payload> {
        self.got.lock().unwrap().clone()
    }

    /// Requests to paths that are not delivery paths (a token exchange, or
    /// a followed redirect).
    pub fn elsewhere(&self) -> Vec<String> {
        self.elsewhere.lock().unwrap().clone()
    }
}

/// A batch of `n` events from seq `from` of stream `auth`, each with a
/// `data.p` of `pad` bytes.
pub fn batch(from: u64, n: u64, pad: usize) -> Batch {
    Batch {
        destination: "conformance".into(),
        stream: "auth".into(),
        start_seq: from,
        end_seq: from + n - 1,
        events: (from..from + n)
            .map(|seq| OutEvent {
                seq,
                id: format!("e{seq}"),
                event_type: "grant.created".into(),
                received: format!("2026-11-23T10:00:{:02}.{seq:06}Z", seq % 60),
                json: format!(
                    r#"{{"data":{{"p":"{}"}},"hash":"h","id":"e{seq}","received":"2026-11-23T10:00:{:02}.{seq:06}Z","seq":{seq},"stream":"auth","time":"2026-11-23T10:00:00.5Z","type":"grant.created"}}"#,
                    "x".repeat(pad),
                    seq % 60
                ),
            })
            .collect(),
    }
}

fn ids(from: u64, n: u64) -> Vec<String> {
    (from..from + n).map(|s| format!("e{s}")).collect()
}

fn http<S: Subject>(s: &S) -> &Tap {
    s.tap()
        .expect("an HTTP destination's subject exposes its tap")
}

/// Delivers `batch` once with each answer scripted, returning the outcomes.
async fn answered<S: Subject>(s: &S, answers: Vec<Answer>) -> Vec<Result<(), DeliveryError>> {
    let mut out = Vec::new();
    for a in answers {
        http(s).script([a]);
        out.push(s.destination().deliver(&batch(1, 2, 0)).await);
    }
    out
}

// ---- every destination ----

/// A batch is accepted and arrives complete, in seq order.
pub async fn a_batch_arrives_complete_and_in_order<S: Subject>() {
    let Some(s) = S::start().await else { return };
    s.destination().deliver(&batch(1, 5, 0)).await.unwrap();
    let got: Vec<String> = s
        .received()
        .await
        .iter()
        .flat_map(|p| s.decode(p).ids)
        .collect();
    assert_eq!(got, ids(1, 5));
}

/// The same batch delivered again is the same bytes (a receiver can
/// deduplicate on them), or, for create-only objects, makes nothing new.
pub async fn redelivery_sends_identical_payload<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let b = batch(7, 3, 10);
    s.destination().deliver(&b).await.unwrap();
    let first = s.received().await;
    assert_eq!(first.len(), 1, "a small batch is one delivery");
    // A second later (wall-clock: payloads must not carry the send time,
    // and some clocks in payloads have one-second resolution).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.destination().deliver(&b).await.unwrap();
    let after = s.received().await;
    match s.redelivery() {
        Redelivery::Resent => {
            assert_eq!(after.len(), 2, "sent again");
            assert_eq!(after[1].at, first[0].at);
            assert!(
                after[1].bytes == first[0].bytes,
                "the redelivered payload differs from the first:\n{}\n{}",
                String::from_utf8_lossy(&first[0].bytes),
                String::from_utf8_lossy(&after[1].bytes)
            );
        }
        Redelivery::Idempotent => assert_eq!(after, first, "nothing new, nothing changed"),
    }
}

/// A batch over the receiver's count or size limit is cut into deliveries
/// within it, every event once and in order; without limits a batch is one
/// delivery.
pub async fn batches_are_cut_to_the_receivers_limits<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let limits = s.limits();
    let mut want = Vec::new();
    let mut next = 1;
    let mut send = |n: u64, pad: usize| {
        let b = batch(next, n, pad);
        want.extend(ids(next, n));
        next += n;
        b
    };
    let mut batches = Vec::new();
    if let Some(n) = limits.max_events {
        batches.push(send(2 * n as u64 + 1, 0));
    }
    if let Some(bytes) = limits.max_bytes {
        batches.push(send(15, bytes / 10));
    }
    if batches.is_empty() {
        batches.push(send(1200, 100));
    }
    let expect_split = limits.max_events.is_some() || limits.max_bytes.is_some();
    for b in &batches {
        s.destination().deliver(b).await.unwrap();
    }
    let got = s.received().await;
    let decoded: Vec<Decoded> = got.iter().map(|p| s.decode(p)).collect();
    for d in &decoded {
        if let Some(n) = limits.max_events {
            assert!(
                d.ids.len() <= n,
                "{} events over the limit of {n}",
                d.ids.len()
            );
        }
        if let Some(b) = limits.max_bytes {
            assert!(d.size <= b, "{} bytes over the limit of {b}", d.size);
        }
    }
    if expect_split {
        assert!(
            decoded.len() > batches.len(),
            "cut: {} deliveries",
            decoded.len()
        );
    } else {
        assert_eq!(decoded.len(), batches.len(), "one delivery per batch");
    }
    let all: Vec<String> = decoded.into_iter().flat_map(|d| d.ids).collect();
    assert_eq!(all, want, "every event once, in order");
}

/// An event over the receiver's per-entry limit is refused for good and
/// nothing of its batch is sent (a partial batch would be sent again).
pub async fn an_event_over_the_entry_limit_is_refused_for_good<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let Some(max) = s.limits().max_entry_bytes else {
        return;
    };
    let mut b = batch(1, 3, 0);
    b.events[1] = batch(2, 1, max + 1000).events.remove(0);
    let e = s
        .destination()
        .deliver(&b)
        .await
        .expect_err("over the limit");
    assert!(matches!(e, DeliveryError::Permanent { .. }), "{e}");
    assert!(s.received().await.is_empty(), "nothing sent");
}

// ---- HTTP destinations ----

/// 2xx answers accept the batch.
pub async fn status_2xx_is_accepted<S: Subject>() {
    let Some(s) = S::start().await else { return };
    for (code, r) in [200, 201, 202, 204]
        .into_iter()
        .zip(answered(&s, [200, 201, 202, 204].map(Answer::status).into()).await)
    {
        assert!(r.is_ok(), "HTTP {code}: {r:?}");
    }
}

/// 408, 429 and 5xx are retryable.
pub async fn status_408_429_5xx_are_retryable<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let codes = [408, 429, 500, 502, 503, 504];
    for (code, r) in codes
        .into_iter()
        .zip(answered(&s, codes.map(Answer::status).into()).await)
    {
        assert!(
            matches!(r, Err(DeliveryError::Retryable { .. })),
            "HTTP {code}: {r:?}"
        );
    }
}

/// Any other 4xx is permanent and carries its status.
pub async fn other_4xx_are_permanent<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let codes = [400, 401, 403, 404, 409, 413, 422];
    for (code, r) in codes
        .into_iter()
        .zip(answered(&s, codes.map(Answer::status).into()).await)
    {
        assert!(
            matches!(r, Err(DeliveryError::Permanent { status: Some(c), .. }) if c == code),
            "HTTP {code}: {r:?}"
        );
    }
}

fn retry_after_of(r: &Result<(), DeliveryError>) -> Option<Duration> {
    match r {
        Err(DeliveryError::Retryable { retry_after, .. }) => *retry_after,
        other => panic!("retryable expected: {other:?}"),
    }
}

/// `Retry-After` in seconds reaches the driver.
pub async fn retry_after_seconds_is_honoured<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let r = answered(
        &s,
        vec![
            Answer::status(429).with("retry-after", "7"),
            Answer::status(503).with("retry-after", "120"),
            Answer::status(503),
        ],
    )
    .await;
    assert_eq!(retry_after_of(&r[0]), Some(Duration::from_secs(7)));
    assert_eq!(retry_after_of(&r[1]), Some(Duration::from_secs(120)));
    assert_eq!(retry_after_of(&r[2]), None);
}

/// `Retry-After` as an HTTP date reaches the driver as the time until it.
pub async fn retry_after_http_date_is_honoured<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = (time::OffsetDateTime::now_utc() + time::Duration::seconds(90))
        .format(&f)
        .unwrap();
    let r = answered(&s, vec![Answer::status(503).with("retry-after", at)]).await;
    let d = retry_after_of(&r[0]).expect("a date is honoured");
    assert!(
        d > Duration::from_secs(80) && d <= Duration::from_secs(90),
        "{d:?}"
    );
}

/// A redirect is a permanent refusal; its target gets no request.
pub async fn redirects_are_refused_not_followed<S: Subject>() {
    let Some(s) = S::start().await else { return };
    let to = format!("{}/elsewhere", http(&s).base);
    let codes = [301, 302, 303, 307, 308];
    let r = answered(
        &s,
        codes
            .map(|c| Answer::status(c).with("location", to.clone()))
            .into(),
    )
    .await;
    for (code, r) in codes.into_iter().zip(r) {
        assert!(
            matches!(r, Err(DeliveryError::Permanent { status: Some(c), .. }) if c == code),
            "HTTP {code}: {r:?}"
        );
    }
    let elsewhere = http(&s).elsewhere();
    assert!(
        !elsewhere.iter().any(|p| p == "/elsewhere"),
        "followed: {elsewhere:?}"
    );
}

/// Generates one `#[tokio::test]` per check in `[...]` for `$subject`.
#[macro_export]
#[doc(hidden)]
macro_rules! destination_test_suite {
    ($subject:ty, [$($check:ident),* $(,)?]) => {
        $(
            #[tokio::test]
            async fn $check() {
                $crate::destinations::conformance::$check::<$subject>().await;
            }
        )*
    };
}

/// The suite of an HTTP destination: every check.
#[macro_export]
#[doc(hidden)]
macro_rules! http_destination_test_suite {
    ($subject:ty) => {
        $crate::destination_test_suite!(
            $subject,
            [
                a_batch_arrives_complete_and_in_order,
                redelivery_sends_identical_payload,
                batches_are_cut_to_the_receivers_limits,
                an_event_over_the_entry_limit_is_refused_for_good,
                status_2xx_is_accepted,
                status_408_429_5xx_are_retryable,
                other_4xx_are_permanent,
                retry_after_seconds_is_honoured,
                retry_after_http_date_is_honoured,
                redirects_are_refused_not_followed,
            ]
        );
    };
}

/// The suite of a destination that stores (file, object stores): the
/// checks that do not need HTTP answers.
#[macro_export]
#[doc(hidden)]
macro_rules! stored_destination_test_suite {
    ($subject:ty) => {
        $crate::destination_test_suite!(
            $subject,
            [
                a_batch_arrives_complete_and_in_order,
                redelivery_sends_identical_payload,
                batches_are_cut_to_the_receivers_limits,
                an_event_over_the_entry_limit_is_refused_for_good,
            ]
        );
    };
}

/// Returns an environment variable a backend's server needs; `None` (skip)
/// when unset, which `CI` refuses.
pub fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the destination conformance suite: {var} is not set (scripts/test.sh sets it)"
            );
            eprintln!("{var} not set: skipping (scripts/test.sh sets it)");
            None
        }
    }
}
