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
use crate::config::NonOwner;
use crate::event::{NewEvent, Rejection, format_received, parse_request};
use crate::ingest::AppendError;
use crate::store::cluster::Owner;

/// Marks a request one node sent on to another: the receiver commits it
/// itself, whoever it believes owns the stream (no forwarding loops).
pub(super) const FORWARDED_BY: &str = "trailkeep-forwarded-by";

/// On a shared store, names the node that committed the request.
const NODE_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static("trailkeep-node");

/// The owner to send this request on to, if it is another node that can
/// be reached and this request was not already forwarded.
fn owner_route(st: &AppState, stream: &str, headers: &HeaderMap) -> Option<(String, String)> {
    let cluster = st.cluster.as_ref()?;
    if cluster.mode == NonOwner::Local || headers.contains_key(FORWARDED_BY) {
        return None;
    }
    match cluster.owners.owner(stream) {
        Owner::Other {
            node,
            url: Some(url),
        } => Some((node, url)),
        Owner::Me | Owner::Nobody | Owner::Other { url: None, .. } => None,
    }
}

/// `307` to the owner: the client sends the same request there. Clients
/// that follow redirects across origins drop `Authorization` (the fetch
/// standard, reqwest and curl all do), so this mode suits clients that
/// re-send it themselves; `forward` is the default.
fn redirect(node: &str, url: &str, stream: &str) -> axum::response::Response {
    let location = format!("{url}/v1/streams/{stream}/events");
    let mut e = ApiError::new(
        StatusCode::TEMPORARY_REDIRECT,
        "not_owner",
        format!("stream {stream} is owned by node {node}; send the request to {location}"),
    );
    if let Ok(v) = axum::http::HeaderValue::from_str(&location) {
        e = e.with_header(axum::http::header::LOCATION, v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(node) {
        e = e.with_header(axum::http::HeaderName::from_static("trailkeep-owner"), v);
    }
    e.into_response()
}

/// A forward that never reached the owner (nothing was sent).
struct Unsent(reqwest::Error);

/// Sends the request on to the owner and returns its answer as it is. An
/// error once the request may have been sent is answered 502 (the events
/// may be stored: the client retries with the same ids, as after any lost
/// answer); only a connection that could not be made comes back `Unsent`.
async fn forward(
    cluster: &super::ClusterRoute,
    (owner, url): (&str, &str),
    stream: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<axum::response::Response, Unsent> {
    let mut req = cluster
        .client
        .post(format!("{url}/v1/streams/{stream}/events"))
        .header(FORWARDED_BY, cluster.node.as_str())
        .body(body);
    for name in [
        axum::http::header::AUTHORIZATION,
        axum::http::header::CONTENT_TYPE,
        axum::http::header::CONTENT_ENCODING,
    ] {
        if let Some(v) = headers.get(&name) {
            req = req.header(name.as_str(), v.as_bytes());
        }
    }
    let sent = req.send().await;
    let answer = match sent {
        Err(e) if e.is_connect() || e.is_builder() => return Err(Unsent(e)),
        Err(e) => Err(e),
        Ok(r) => {
            let status = r.status();
            let retry_after = r.headers().get(axum::http::header::RETRY_AFTER).cloned();
            let content_type = r.headers().get(axum::http::header::CONTENT_TYPE).cloned();
            let node = r.headers().get(NODE_HEADER.as_str()).cloned();
            r.bytes()
                .await
                .map(|b| (status, [retry_after, content_type, node], b))
        }
    };
    // A success from anything but the owner (a stale or forged URL that
    // reaches another service) is not passed on as stored.
    let answer = answer.map_err(Some).and_then(|(status, headers, b)| {
        let from_owner = headers[2]
            .as_ref()
            .is_some_and(|v| v.as_bytes() == owner.as_bytes());
        if status.is_success() && !from_owner {
            Err(None)
        } else {
            Ok((status, headers, b))
        }
    });
    Ok(match answer {
        Ok((status, [retry_after, content_type, node], b)) => {
            let mut resp = axum::response::Response::new(Body::from(b));
            *resp.status_mut() =
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            for (name, v) in [
                (axum::http::header::RETRY_AFTER, retry_after),
                (axum::http::header::CONTENT_TYPE, content_type),
                (NODE_HEADER, node),
            ] {
                if let Some(v) =
                    v.and_then(|v| axum::http::HeaderValue::from_bytes(v.as_bytes()).ok())
                {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
        Err(e) => {
            metrics::counter!("trailkeep_ingest_forwarded_total", "outcome" => "failed")
                .increment(1);
            let why = e.map_or_else(
                || format!("answered success but is not node {owner}"),
                |e| crate::net::describe(&e),
            );
            tracing::warn!(owner = %url, error = %why, "forwarding an ingest request to the stream's owner failed after sending");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "forward_failed",
                format!(
                    "this node sent the request on to stream {stream}'s owner and got no answer; the events may or may not be stored: send them again with the same ids"
                ),
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            )
            .into_response()
        }
    })
}

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
        (status = 200, description = "Stored (or already stored). On a shared PostgreSQL store, `Trailkeep-Node` names the node that committed it", body = Accepted),
        (status = 307, description = "[cluster] non_owner = \"redirect\": another node owns the stream; `Location` is the same request on the owner, `Trailkeep-Owner` names it (code not_owner)", body = ErrorBody),
        (status = 408, description = "The body did not arrive within [server] body_timeout_ms", body = ErrorBody),
        (status = 413, description = "Too large, as sent or decoded: the message names the [ingest] setting \
(max_request_bytes, max_event_bytes, max_events_per_request) and its value; send less or raise it; \
or more events than [server] events_per_second allows in one request (over_event_rate)", body = ErrorBody),
        (status = 415, description = "A Content-Encoding other than gzip, deflate, zstd or identity \
(`unsupported_encoding`); Accept-Encoding lists those taken", body = ErrorBody),
        (status = 502, description = "Forwarded to the stream's owner, no answer (forward_failed): the events may be stored; send them again with the same ids", body = ErrorBody),
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
    let route = owner_route(&st, stream, &headers);
    if let Some((node, url)) = &route
        && matches!(
            st.cluster.as_ref().map(|c| c.mode),
            Some(NonOwner::Redirect)
        )
    {
        metrics::counter!("trailkeep_ingest_redirects_total").increment(1);
        return Ok(redirect(node, url, stream));
    }
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
    if let (Some((node, url)), Some(cluster)) = (&route, &st.cluster) {
        match forward(cluster, (node, url), stream, &headers, bytes.clone()).await {
            Ok(answer) => {
                metrics::counter!("trailkeep_ingest_forwarded_total", "outcome" => "forwarded")
                    .increment(1);
                return Ok(answer);
            }
            Err(Unsent(e)) => {
                // The owner could not be reached at all (dead, before its
                // shards fail over): nothing was sent, so this node commits
                // the request itself; the append's compare-and-set keeps
                // the chain whole whoever writes.
                metrics::counter!("trailkeep_ingest_forwarded_total", "outcome" => "committed_here")
                    .increment(1);
                tracing::debug!(owner = %node, error = %crate::report::Chain(&e), "the stream's owner cannot be reached; committing here");
            }
        }
    }
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
    let mut answer = Json(Accepted {
        stream: stream.to_owned(),
        accepted: result.accepted,
        head: result.head,
    })
    .into_response();
    if let Some(c) = &st.cluster
        && let Ok(v) = axum::http::HeaderValue::from_str(&c.node)
    {
        // Which node committed it (forwarded answers keep the owner's).
        answer.headers_mut().insert(NODE_HEADER, v);
    }
    Ok(answer)
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
