//! `POST /v1/streams/{stream}/events`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;

use super::body::{self, Coding, DecodeError};
use super::extract::Path;
use super::{ApiError, AppState, ErrorBody, authorize, peer, producer_stream, read_body};
use crate::auth::{Scope, Target};
use crate::config::NonOwner;
use crate::event::{NewEvent, Rejection, format_received, parse_request};
use crate::ingest::AppendError;
use crate::store::cluster::Owner;

/// On a shared store, names the node that committed the request.
const NODE_HEADER: axum::http::HeaderName = axum::http::HeaderName::from_static("trailkeep-node");

/// The owner to send this request on to, if it is another node that can
/// be reached and this request was not itself forwarded.
fn owner_route(st: &AppState, stream: &str, forwarded: bool) -> Option<(String, String)> {
    let cluster = st.cluster.as_ref()?;
    if cluster.mode == NonOwner::Local || forwarded {
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

/// Why a forward's answer is not relayed.
enum NoAnswer {
    /// The request or its answer failed in flight.
    Lost(reqwest::Error),
    /// The answer is larger than any answer to this request can be.
    TooLarge,
    /// The answer is not signed by the owner with the nodes' key: not the
    /// owner (a stale or forged URL), a node with another signing key or
    /// clock, or the owner refusing a forward changed on the way.
    Unsigned(reqwest::StatusCode, String),
}

/// Reads an answer's body, refusing one longer than `max`.
async fn bounded_body(mut r: reqwest::Response, max: usize) -> Result<Vec<u8>, NoAnswer> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(NoAnswer::Lost)? {
        if body.len() + chunk.len() > max {
            return Err(NoAnswer::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Sends the request on to the owner, signed for key `key_id` instead of
/// the client's token (see [`super::peer`]), and returns the owner's
/// signed answer. An error once the request may have been sent is answered
/// 502 (the events may be stored: the client retries with the same ids,
/// as after any lost answer); only a connection that could not be made
/// comes back `Unsent`.
async fn forward(
    cluster: &super::ClusterRoute,
    (owner, url): (&str, &str),
    (stream, key_id): (&str, &str),
    headers: &HeaderMap,
    body: bytes::Bytes,
    max_answer: usize,
) -> Result<axum::response::Response, Unsent> {
    let route = peer::Route {
        from: &cluster.node,
        to: owner,
        key_id,
        stream,
    };
    let (signature, request_mac) =
        cluster
            .peer
            .sign_request(route, &peer::BodyHeaders::of(headers), &body);
    let mut req = cluster
        .client
        .post(format!("{url}/v1/streams/{stream}/events"))
        .body(body);
    for (name, v) in signature {
        req = req.header(name, v);
    }
    // Only what the body is parsed by, every value as it came (all signed):
    // never the client's Authorization.
    for name in [
        axum::http::header::CONTENT_TYPE,
        axum::http::header::CONTENT_ENCODING,
    ] {
        for v in headers.get_all(&name) {
            req = req.header(name.as_str(), v.as_bytes());
        }
    }
    let answer = match req.send().await {
        Err(e) if e.is_connect() || e.is_builder() => return Err(Unsent(e)),
        Err(e) => Err(NoAnswer::Lost(e)),
        Ok(r) => {
            let status = r.status();
            let all = |n: &axum::http::HeaderName| -> Vec<Vec<u8>> {
                r.headers()
                    .get_all(n.as_str())
                    .iter()
                    .map(|v| v.as_bytes().to_vec())
                    .collect()
            };
            let (retry_after, content_type) = (
                all(&axum::http::header::RETRY_AFTER),
                all(&axum::http::header::CONTENT_TYPE),
            );
            let mac = r.headers().get(peer::ANSWER_MAC.as_str()).cloned();
            bounded_body(r, max_answer).await.and_then(|b| {
                // Only the owner's signed answer is passed on: anything else
                // (another service at a stale or forged URL, a refusal of a
                // forward changed on the way) may not claim the events
                // stored, nor refused.
                let answer = peer::Answer {
                    status: status.as_u16(),
                    retry_after: retry_after.iter().map(Vec::as_slice).collect(),
                    content_type: content_type.iter().map(Vec::as_slice).collect(),
                    body: &b,
                };
                let signed = cluster.peer.check_answer(
                    owner,
                    &request_mac,
                    &answer,
                    mac.as_ref().map(reqwest::header::HeaderValue::as_bytes),
                );
                if signed {
                    Ok((status, [retry_after, content_type], b))
                } else {
                    Err(NoAnswer::Unsigned(
                        status,
                        String::from_utf8_lossy(&b[..b.len().min(512)]).into_owned(),
                    ))
                }
            })
        }
    };
    Ok(match answer {
        Ok((status, [retry_after, content_type], b)) => {
            let mut resp = axum::response::Response::new(Body::from(b));
            *resp.status_mut() =
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            for (name, values) in [
                (axum::http::header::RETRY_AFTER, retry_after),
                (axum::http::header::CONTENT_TYPE, content_type),
            ] {
                for v in values {
                    if let Ok(v) = axum::http::HeaderValue::from_bytes(&v) {
                        resp.headers_mut().append(name.clone(), v);
                    }
                }
            }
            if let Ok(v) = axum::http::HeaderValue::from_str(owner) {
                resp.headers_mut().insert(NODE_HEADER, v);
            }
            resp
        }
        Err(e) => {
            metrics::counter!("trailkeep_ingest_forwarded_total", "outcome" => "failed")
                .increment(1);
            let why = match e {
                NoAnswer::Lost(e) => crate::net::describe(&e),
                NoAnswer::TooLarge => format!("answered with more than {max_answer} bytes"),
                NoAnswer::Unsigned(status, body)
                    if status == 401 && body.contains("\"forward_") =>
                {
                    format!(
                        "node {owner} refused this node's signed forward ({status}: {body}): the nodes' clocks are more than {} s apart, they do not share signing_key_file, it runs an older version, or the request was changed on the way",
                        peer::FORWARD_WINDOW.as_secs()
                    )
                }
                NoAnswer::Unsigned(status, _) => format!(
                    "answered {status} without node {owner}'s signature: the URL in the store's nodes table is not that node's, or the nodes do not share signing_key_file"
                ),
            };
            tracing::warn!(owner = %url, error = %why, "forwarding an ingest request to the stream's owner failed after sending");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "forward_failed",
                format!(
                    "this node sent the request on to stream {stream}'s owner and got no answer it could trust; the events may or may not be stored: send them again with the same ids"
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

/// The longest answer an ingest request of at most `max_events` events
/// gets (ids and hashes are bounded): a forward's answer is read up to it.
fn max_answer(max_events: usize) -> usize {
    64 * 1024 + max_events.saturating_mul(512)
}

/// Checks a request that says it was forwarded by another node: `Ok(None)`
/// for an ordinary request (or any request on a single-node store, where
/// the header means nothing).
fn forwarded(
    st: &AppState,
    stream: &str,
    headers: &HeaderMap,
) -> Result<Option<peer::Forwarded>, ApiError> {
    let Some(cluster) = &st.cluster else {
        return Ok(None);
    };
    if !headers.contains_key(peer::FORWARDED_BY) {
        return Ok(None);
    }
    let Some(f) = cluster.peer.check_request(headers, &cluster.node, stream) else {
        st.refusals.unauthenticated(None);
        return Err(forward_unauthenticated());
    };
    if !cluster.replays.first_time(&f) {
        st.refusals.unauthenticated(Some(&f.key_id));
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "forward_replayed",
            "this signed forward was taken before: each is taken once",
        ));
    }
    Ok(Some(f))
}

/// Why an ingest request failed, and whether a forward's answer may be
/// signed: a refusal whose cause may be a change on the way (the body or
/// its headers, before they were checked against the signature) is left
/// unsigned, so that the forwarding node answers 502 instead of relaying
/// a refusal the client would take as final.
enum Failure {
    Signed(ApiError),
    Unsigned(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Signed(e)
    }
}

fn forward_unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "forward_unauthenticated",
        "Trailkeep-Forwarded-By marks a request another node of this cluster forwarded, signed with the key the nodes share (derived from signing_key_file); this one's signature is missing, expired or wrong. Clients: send the request without the Trailkeep-Forwarded-* headers, with Authorization: Bearer <token>",
    )
}

/// Signs the answer to a forward, so that the forwarding node can tell it
/// from anything else that answers at the owner's URL.
async fn seal(
    cluster: &super::ClusterRoute,
    forward: &peer::Forwarded,
    answer: axum::response::Response,
) -> axum::response::Response {
    let (mut parts, body) = answer.into_parts();
    // Answers are built in memory: this only gathers the bytes.
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return ApiError::internal(&"an answer's body could not be read").into_response();
    };
    let all = |n| {
        parts
            .headers
            .get_all(n)
            .iter()
            .map(axum::http::HeaderValue::as_bytes)
            .collect()
    };
    let answer = peer::Answer {
        status: parts.status.as_u16(),
        retry_after: all(axum::http::header::RETRY_AFTER),
        content_type: all(axum::http::header::CONTENT_TYPE),
        body: &body,
    };
    let mac = cluster.peer.sign_answer(&cluster.node, forward, &answer);
    if let Ok(v) = axum::http::HeaderValue::from_str(&mac) {
        parts.headers.insert(peer::ANSWER_MAC, v);
    }
    if let Ok(v) = axum::http::HeaderValue::from_str(&cluster.node) {
        parts.headers.insert(NODE_HEADER, v);
    }
    axum::response::Response::from_parts(parts, Body::from(body))
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
        (status = 401, description = "No valid key (unauthorized), or Trailkeep-Forwarded-By without the signature only the cluster's nodes can make (forward_unauthenticated): clients send no Trailkeep-Forwarded-* headers", body = ErrorBody),
        (status = 502, description = "Forwarded to the stream's owner, no answer it signed (forward_failed): the events may be stored; send them again with the same ids", body = ErrorBody),
        (status = 503, description = "Saturated or the disk is full; nothing was stored; see Retry-After", body = ErrorBody)))]
pub(super) async fn post_events(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> axum::response::Response {
    let forward = match forwarded(&st, &stream, &headers) {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let answer = match ingest(&st, &stream, &headers, body, forward.as_ref()).await {
        Ok(answer) => answer,
        Err(Failure::Signed(e)) => e.into_response(),
        Err(Failure::Unsigned(e)) => return e.into_response(),
    };
    match (&forward, &st.cluster) {
        (Some(f), Some(cluster)) => seal(cluster, f, answer).await,
        _ => answer,
    }
}

/// Takes a request from a client, or one forwarded by another node
/// (authenticated by its signature and the key id it names).
async fn ingest(
    st: &AppState,
    stream: &str,
    headers: &HeaderMap,
    body: Body,
    forward: Option<&peer::Forwarded>,
) -> Result<axum::response::Response, Failure> {
    let stream = producer_stream(stream)?;
    let target = Target::Stream(stream.as_str());
    let key = match forward {
        // The forwarding node authenticated the client; the key is read
        // again here so that a revoked key or a narrower scope still holds.
        Some(f) => {
            let key = st.auth.active(&f.key_id).await.map_err(|e| match e {
                crate::auth::AuthError::Unauthenticated => {
                    st.refusals.unauthenticated(Some(&f.key_id));
                    ApiError::unauthorized()
                }
                crate::auth::AuthError::Store(e) => ApiError::internal(&e),
            })?;
            super::permit(st, &key, Scope::Ingest, target)?;
            tracing::trace!(from = %f.from, key = %key.id, "a forwarded ingest request");
            key
        }
        None => authorize(st, headers, Scope::Ingest, target).await?,
    };
    let stream = stream.as_str();
    let route = owner_route(st, stream, forward.is_some());
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
    let coding = body::coding(headers).map_err(Failure::Unsigned)?;
    let ndjson = body::is_ndjson(headers);
    let limits = st.limits;
    let max = limits.max_request_bytes;
    let bytes = read_body(st, body, max, || {
        format!(
            "the request body is larger than [ingest] max_request_bytes = {}; send fewer events per request, or raise the setting",
            super::bytes(max)
        )
    })
    .await
    .map_err(Failure::Unsigned)?;
    if forward.is_some_and(|f| !f.body_matches(&bytes)) {
        st.refusals.unauthenticated(Some(&key.id));
        return Err(Failure::Unsigned(forward_unauthenticated()));
    }
    if let (Some((node, url)), Some(cluster)) = (&route, &st.cluster) {
        let max_answer = max_answer(limits.max_events_per_request);
        match self::forward(
            cluster,
            (node, url),
            (stream, &key.id),
            headers,
            bytes.clone(),
            max_answer,
        )
        .await
        {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest answer `n` events can get: longest ids, largest seqs.
    fn largest_answer(n: usize) -> usize {
        let accepted = (0..n)
            .map(|_| crate::store::Accepted {
                id: "x".repeat(128),
                seq: u64::MAX,
                hash: "f".repeat(64),
                duplicate: false,
            })
            .collect();
        let a = Accepted {
            stream: "s".repeat(128),
            accepted,
            head: crate::store::Head {
                seq: u64::MAX,
                hash: "f".repeat(64),
            },
        };
        serde_json::to_vec(&a).expect("serializes").len()
    }

    #[test]
    fn a_forwards_answer_bound_fits_the_largest_answer_and_not_much_more() {
        for n in [1, 100, 10_000] {
            let (largest, bound) = (largest_answer(n), max_answer(n));
            assert!(largest <= bound, "{n} events: {largest} > {bound}");
            assert!(
                bound <= 64 * 1024 + 2 * largest,
                "{n} events: bound {bound} far above the largest answer {largest}"
            );
        }
    }
}
