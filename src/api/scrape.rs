//! `/metrics`: request counting for every route, and the gauges that are
//! read from the store when Prometheus scrapes (lags, open dead letters,
//! delivered totals, streams behind their checkpoint), so they are right
//! on every node, whichever node did the work, and cost nothing between
//! scrapes.

use std::collections::HashMap;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;

/// The store-derived gauges are read at most this often.
const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The ingest route's template, whose requests are also counted by outcome.
const INGEST_ROUTE: &str = "/v1/streams/{stream}/events";

/// Counts every request by route template, method and status, and times
/// it. Route templates, not paths: a stream name never becomes a label.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    let status = res.status();
    metrics::histogram!("trailkeep_http_request_seconds", "route" => route.clone())
        .record(started.elapsed().as_secs_f64());
    if route == INGEST_ROUTE && method == "POST" {
        metrics::counter!("trailkeep_ingest_requests_total", "outcome" => ingest_outcome(status))
            .increment(1);
    }
    metrics::counter!(
        "trailkeep_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status.as_str().to_owned()
    )
    .increment(1);
    res
}

/// A method as a label: the standard ones by name, any other `other`
/// (HTTP lets a client invent methods; each would otherwise be a new
/// series, kept for the life of the process).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// The outcome label of an ingest answer (see the catalogue's help text).
fn ingest_outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "accepted",
        401 => "unauthorized",
        403 => "forbidden",
        413 => "too_large",
        429 => "rate_limited",
        503 => "unavailable",
        _ => "invalid",
    }
}

/// Prometheus exposition: refreshes the gauges read from the store, then
/// renders every series. A store that cannot answer leaves those gauges at
/// their last value (and says so in the log); the rest still renders.
pub(super) async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    // `/metrics` needs no key: a flood of scrapes costs the store at most
    // one read of these a second, one at a time.
    {
        let mut last = st.scraped.lock().await;
        if last.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
            if let Err(e) = refresh(&st).await {
                tracing::warn!(error = %e, "metrics: cannot read the store; store-derived gauges keep their last values");
            }
            *last = Some(Instant::now());
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        st.metrics.render(),
    )
}

async fn refresh(st: &AppState) -> Result<(), crate::store::StoreError> {
    let streams = st.store.streams().await?;
    metrics::gauge!("trailkeep_streams").set(streams.len() as f64);
    let behind = st.store.streams_behind_checkpoint().await?;
    metrics::gauge!("trailkeep_checkpoint_streams_behind").set(behind.len() as f64);
    if st.stream_labels {
        for s in &streams {
            let stream = s.name.clone();
            metrics::gauge!("trailkeep_stream_head_seq", "stream" => stream.clone())
                .set(s.head_seq as f64);
            if let Some(cp) = st.store.latest_checkpoint(&s.name).await? {
                metrics::gauge!("trailkeep_stream_checkpoint_size", "stream" => stream.clone())
                    .set(cp.size as f64);
                if let Ok(t) = time::OffsetDateTime::parse(
                    &cp.created,
                    &time::format_description::well_known::Rfc3339,
                ) {
                    metrics::gauge!("trailkeep_stream_checkpoint_timestamp_seconds", "stream" => stream)
                        .set(t.unix_timestamp() as f64);
                }
            }
        }
    }
    if st.destinations.is_empty() {
        return Ok(());
    }
    let cursors = st.store.delivery_cursors().await?;
    let mut open: HashMap<&str, usize> = HashMap::new();
    let letters = st.store.dead_letters(None, false).await?;
    for l in &letters {
        *open.entry(l.destination.as_str()).or_default() += 1;
    }
    for d in &st.destinations {
        let name = d.config.driver.name.as_str();
        let label = name.to_owned();
        let delivered: u64 = cursors
            .iter()
            .filter(|c| c.destination == name)
            .map(|c| c.delivered)
            .sum();
        metrics::counter!("trailkeep_destination_delivered_total", "destination" => label.clone())
            .absolute(delivered);
        metrics::gauge!("trailkeep_destination_dead_letters_open", "destination" => label.clone())
            .set(open.get(name).copied().unwrap_or(0) as f64);
        metrics::gauge!("trailkeep_destination_paused", "destination" => label.clone())
            .set(f64::from(u8::from(d.handle.status().paused)));
        let lags =
            crate::destinations::lags(st.store.as_ref(), name, &d.config.driver.filter).await?;
        metrics::gauge!("trailkeep_destination_lag_events", "destination" => label.clone())
            .set(lags.iter().map(|l| l.lag_events).sum::<u64>() as f64);
        metrics::gauge!("trailkeep_destination_lag_seconds", "destination" => label).set(
            lags.iter()
                .filter_map(|l| l.lag_seconds)
                .fold(0.0_f64, f64::max),
        );
    }
    Ok(())
}
