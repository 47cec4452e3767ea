//! `POST /v1/streams/{stream}/events`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;

use super::body::{self, Coding, DecodeError};
use super::extract::Path;
use super::{ApiError, AppState, ErrorBody, authorize, producer_stream, read_body};
use crate::auth::{Scope, Target};
use crate::event::{NewEvent, Rejection, format_received, parse_request};
use crate::ingest::AppendError;

/// Appends events; answers once they are durably committed and chained.
/// A repeated `id` is answered as a duplicate with its original seq.
#[utoipa::path(post, path = "/v1/streams/{stream}/events", tag = "ingest",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name (not starting with . or _, which are the log's own)", pattern = r"^[A-Za-z0-9-][A-Za-z0-9._-]{0,127}$")),
    request_body(description = "One event or an array of events (JSON), or NDJSON: one event per line, \
as application/x-ndjson, application/jsonl or application/x-jsonlines (also application/ndjson, \
application/x-jsonl, application/jsonlines). Any other type is read as JSON. The body may be sent \
with `Content-Encoding: gzip`, `deflate` (zlib or raw) or `zstd`; [ingest] max_request_bytes \
bounds it both as sent and decoded.",
        content(
            (super::openapi::EventBatch = "application/json"),
            (String = "application/x-ndjson"),
            (String = "application/jsonl"),
            (String = "application/x-jsonlines"))),
    responses(
        (status = 200, description = "Stored (or already stored)", body = Accepted),
        (status = 408, description = "The body did not arrive within [server] body_timeout_ms", body = ErrorBody),
        (status = 413, description = "Too large, as sent or decoded: the message names the [ingest] setting \
(max_request_bytes, max_event_bytes, max_events_per_request) and its value; send less or raise it; \
or more events than [server] events_per_second allows in one request (over_event_rate)", body = ErrorBody),
        (status = 415, description = "A Content-Encoding other than gzip, deflate, zstd or identity \
(`unsupported_encoding`); Accept-Encoding lists those taken", body = ErrorBody),
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
    // An unknown coding is refused before the body is read.
    let coding = body::coding(&headers)?;
    let ndjson = body::is_ndjson(&headers);
    let limits = st.limits;
    let max = limits.max_request_bytes;
    let bytes = read_body(&st, body, max, || {
        format!(
            "the request body is larger than [ingest] max_request_bytes = {}; send fewer events per request, or raise the setting",
            super::bytes(max)
        )
    })
    .await?;
    // Decoding and large bodies are CPU work: off the async threads.
    let blocking = coding != Coding::Identity || bytes.len() > 256 * 1024;
    let parse = move || -> Result<Vec<NewEvent>, ApiError> {
        let decoded;
        let body: &[u8] = if coding == Coding::Identity {
            &bytes
        } else {
            decoded = body::decode(&bytes, coding, max).map_err(|e| {
                metrics::counter!("trailkeep_ingest_bytes_total").increment(bytes.len() as u64);
                decode_error(e, max)
            })?;
            &decoded
        };
        metrics::counter!("trailkeep_ingest_bytes_total").increment(body.len() as u64);
        parse_request(body, ndjson, &received, &limits).map_err(refusal)
    };
    let events = if blocking {
        tokio::task::spawn_blocking(parse)
            .await
            .map_err(|e| ApiError::internal(&e))?
    } else {
        parse()
    };
    let events = events.inspect_err(|e| {
        metrics::counter!("trailkeep_requests_refused_total", "code" => e.code).increment(1);
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

/// A refused event or request, with the setting behind a size limit named
/// (the event layer does not know the configuration's names).
fn refusal(r: Rejection) -> ApiError {
    let mut e = ApiError::from(r);
    let hint = match e.code {
        "event_too_large" => "; raise [ingest] max_event_bytes, or make the event smaller",
        "too_many_events" => "; raise [ingest] max_events_per_request, or split the request",
        "request_too_large" => {
            "; raise [ingest] max_request_bytes, or send fewer events per request"
        }
        _ => return e,
    };
    e.message.push_str(hint);
    e
}

fn decode_error(e: DecodeError, max: usize) -> ApiError {
    match e {
        DecodeError::TooLarge => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            format!(
                "the request body is larger than [ingest] max_request_bytes = {} once its Content-Encoding is decoded (the limit applies to the decoded body); send fewer events per request, or raise the setting",
                super::bytes(max)
            ),
        ),
        DecodeError::Corrupt(m) => ApiError {
            field: Some("Content-Encoding".into()),
            ..ApiError::bad_request(
                "invalid_encoding",
                format!("the body does not decode as its Content-Encoding says: {m}"),
            )
        },
    }
}
