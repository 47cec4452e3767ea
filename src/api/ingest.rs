//! `POST /v1/streams/{stream}/events`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse as _;

use super::extract::Path;
use super::{ApiError, AppState, ErrorBody, authorize, producer_stream, read_body};
use crate::auth::{Scope, Target};
use crate::event::{format_received, parse_request};
use crate::ingest::AppendError;

/// Appends events; answers once they are durably committed and chained.
/// A repeated `id` is answered as a duplicate with its original seq.
#[utoipa::path(post, path = "/v1/streams/{stream}/events", tag = "ingest",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name (not starting with . or _, which are the log's own)", pattern = r"^[A-Za-z0-9-][A-Za-z0-9._-]{0,127}$")),
    request_body(description = "One event, an array of events, or NDJSON (one event per line)",
        content(
            (super::openapi::EventBatch = "application/json"),
            (String = "application/x-ndjson"))),
    responses(
        (status = 200, description = "Stored (or already stored)", body = Accepted),
        (status = 408, description = "The body did not arrive within [server] body_timeout_ms", body = ErrorBody),
        (status = 413, description = "Too large: raise [ingest] max_request_bytes or send less; or more events than [server] events_per_second allows in one request (over_event_rate)", body = ErrorBody),
        (status = 503, description = "Saturated or the disk is full; nothing was stored; see Retry-After", body = ErrorBody)))]
pub(super) async fn post_events(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiError> {
    let stream = producer_stream(&stream)?;
    let key = authorize(
        &st,
        &headers,
        Scope::Ingest,
        Target::Stream(stream.as_str()),
    )
    .await?;
    let stream = stream.as_str();
    let received = format_received(time::OffsetDateTime::now_utc());
    let bytes = read_body(&st, body, st.limits.max_request_bytes).await?;
    metrics::counter!("trailkeep_ingest_bytes_total").increment(bytes.len() as u64);
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson")
        });
    let limits = st.limits;
    let events = if bytes.len() > 256 * 1024 {
        tokio::task::spawn_blocking(move || parse_request(&bytes, ndjson, &received, &limits))
            .await
            .map_err(|e| ApiError::internal(&e))?
    } else {
        parse_request(&bytes, ndjson, &received, &limits)
    };
    let events = events.map_err(|r| {
        metrics::counter!("trailkeep_requests_refused_total", "code" => r.code).increment(1);
        ApiError::from(r)
    })?;
    st.rate.events(&key.id, events.len())?;
    let result = st
        .appender
        .append(stream.to_owned(), events)
        .await
        .map_err(|e| match &e {
            // Fixed messages: the store's error (paths, SQL) stays in the
            // server log, where the writer logged it.
            AppendError::Poisoned(_) | AppendError::Stopped => {
                ApiError::unavailable("unavailable", e.to_string(), 30)
            }
            AppendError::NotStored(_) => ApiError::unavailable("not_stored", e.to_string(), 5),
            AppendError::Busy(_) => ApiError::unavailable("overloaded", e.to_string(), 1),
        })?;
    // Serialized straight from the result: no intermediate `Value` tree.
    Ok(Json(Accepted {
        stream: stream.to_owned(),
        accepted: result.accepted,
        head: result.head,
    })
    .into_response())
}

/// The 200 body: `{"stream","accepted":[{"id","seq","hash","duplicate"}],"head":{"seq","hash"}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[schema(as = IngestResponse)]
pub(super) struct Accepted {
    /// The stream.
    stream: String,
    /// One entry per event, in request order.
    accepted: Vec<crate::store::Accepted>,
    /// The stream's head after the commit.
    head: crate::store::Head,
}
