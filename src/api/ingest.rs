//! `POST /v1/streams/{stream}/events`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;

use super::{ApiError, AppState, authorize, check_stream};
use crate::auth::Scope;
use crate::event::{format_received, parse_request};
use crate::ingest::AppendError;

pub(super) async fn post_events(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::response::Response, ApiError> {
    check_stream(&stream)?;
    if crate::event::is_reserved_stream(&stream) {
        return Err(ApiError {
            field: Some("stream".into()),
            ..ApiError::bad_request(
                "reserved_stream",
                "stream names starting with '.' or '_' belong to the log itself (its checkpoints and audit records); choose a name starting with a letter, digit or '-'",
            )
        });
    }
    authorize(&st, &headers, Scope::Ingest, Some(&stream)).await?;
    let received = format_received(time::OffsetDateTime::now_utc());
    let bytes = axum::body::to_bytes(body, st.limits.max_request_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!("request body exceeds {} bytes", st.limits.max_request_bytes),
            )
        })?;
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
    let result = st
        .appender
        .append(stream.clone(), events)
        .await
        .map_err(|e| match e {
            AppendError::Unavailable(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", m)
            }
        })?;
    // Serialized straight from the result: no intermediate `Value` tree.
    Ok(Json(Accepted {
        stream: &stream,
        accepted: &result.accepted,
        head: &result.head,
    })
    .into_response())
}

/// The 200 body: `{"stream","accepted":[{"id","seq","hash","duplicate"}],"head":{"seq","hash"}}`.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    stream: &'a str,
    accepted: &'a [crate::store::Accepted],
    head: &'a crate::store::Head,
}
