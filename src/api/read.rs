//! Read routes: streams, events, checkpoints, public key, proofs, verify.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Path, Query};
use super::{ApiError, AppState, Shared, authenticate, authorize, permit, read_body, stream_name};
use crate::auth::{Scope, Target, sees};
use crate::chain::merkle;
use crate::event::stored_json;
use crate::store::{
    EventPage, KeyRecord, ReaderSource, RejectedEvent, SourceState, StoreExt, StreamInfo,
};
use crate::verify::evidence::InclusionProof;

/// `GET /v1/streams`.
#[derive(Serialize, ToSchema)]
pub(super) struct StreamList {
    /// The streams the key may see, in name order.
    streams: Vec<StreamInfo>,
}

/// Every stream the key may see: head, oldest hot seq, archived seq.
#[utoipa::path(get, path = "/v1/streams", tag = "read", security(("bearer" = [])),
    responses((status = 200, body = StreamList)))]
pub(super) async fn list_streams(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<StreamList>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    let mut streams = st
        .store
        .streams()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
    streams.retain(|s| sees(&key, &s.name));
    Ok(Json(StreamList { streams }))
}

async fn existing(st: &Shared, stream: &str) -> Result<StreamInfo, ApiError> {
    st.store
        .stream(stream)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found(format!("stream {stream} not found")))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct EventsQuery {
    /// First seq to return (default 1). Archived seqs no longer in the hot
    /// store answer 410 with the range and where the hot store goes on.
    #[param(maximum = 9223372036854775807_u64)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    from_seq: Option<u64>,
    /// At most this many events (1-10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// The stream's events from `from_seq` on, as stored (hash included), one
/// JSON object per line: consecutive seqs starting at `from_seq`, up to
/// `limit`, ending early at a gap in the hot store. When `from_seq` was
/// archived and is no longer hot, 410 `archived` names the archived range,
/// where the hot store goes on, and how to get them; a reader never skips
/// seqs without being told.
#[utoipa::path(get, path = "/v1/streams/{stream}/events", tag = "read",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), EventsQuery),
    responses(
        (status = 200, description = "NDJSON of stored events: consecutive seqs from from_seq (empty past the head)", body = String, content_type = "application/x-ndjson"),
        (status = 404, description = "No such stream", body = super::ErrorBody),
        (status = 410, description = "from_seq is archived and no longer in the hot store (code `archived`): \
`error.archived` has the range (`from_seq`-`to_seq`), `next_hot_seq` (read from there to skip it), \
the archive objects holding it, and the restore command and request that bring it back", body = super::ErrorBody)))]
pub(super) async fn get_events(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    stream_name(&stream)?;
    authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    existing(&st, &stream).await?;
    let limit = super::limit_param(q.limit, 1000)?;
    let page = st
        .store
        .read_page(&stream, q.from_seq.unwrap_or(1), limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let rows = match page {
        EventPage::Events(rows) => rows,
        EventPage::Archived(range) => return Err(ApiError::archived(range)),
    };
    let mut out = String::new();
    for r in rows {
        out.push_str(&stored_json(&r.body, &r.hash));
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out))
}

/// The latest signed checkpoint: a C2SP signed note.
#[utoipa::path(get, path = "/v1/streams/{stream}/checkpoint", tag = "read",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses(
        (status = 200, description = "C2SP signed note", body = String, content_type = "text/plain"),
        (status = 404, description = "No checkpoint for this stream yet", body = super::ErrorBody)))]
pub(super) async fn get_checkpoint(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    stream_name(&stream)?;
    authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    let cp = st
        .store
        .latest_checkpoint(&stream)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found(format!("no checkpoint for stream {stream} yet")))?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        cp.note,
    ))
}

/// `GET /v1/public-key`: public, no token (auditors fetch it to verify
/// offline; it proves nothing by itself, they pin it out of band).
#[utoipa::path(get, path = "/v1/public-key", tag = "verify",
    responses((status = 200, description = "The verifier key: name+hexkeyid+base64(0x01 || key)", body = String, content_type = "text/plain")))]
pub(super) async fn public_key(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{}\n", st.verifier),
    )
}

fn b64(hashes: &[crate::chain::Hash]) -> Vec<String> {
    hashes.iter().map(|h| STANDARD.encode(h)).collect()
}

fn query_err(field: &str, message: String) -> ApiError {
    ApiError {
        field: Some(field.into()),
        ..ApiError::bad_request("invalid_query", message)
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct InclusionQuery {
    /// The event's seq.
    #[param(maximum = 9223372036854775807_u64, required = true, minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    seq: Option<u64>,
    /// Tree size (default: the latest checkpoint's).
    #[param(maximum = 9223372036854775807_u64, minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    size: Option<u64>,
}

/// Proves the event at `seq` is in the tree of `size`.
#[utoipa::path(get, path = "/v1/streams/{stream}/proof/inclusion", tag = "read",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), InclusionQuery),
    responses(
        (status = 200, body = InclusionProof),
        (status = 404, description = "No such stream", body = super::ErrorBody)))]
pub(super) async fn inclusion(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    stream_name(&stream)?;
    let key = authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    let seq = q
        .seq
        .ok_or_else(|| query_err("seq", "seq is required".into()))?;
    Ok(Json(
        prove_inclusion(&st, &key, &stream, seq, q.size).await?,
    ))
}

/// The inclusion proof of `stream`'s event `seq` in the tree of `size`
/// leaves (default: the latest signed checkpoint's size, else the head),
/// for `key`. A stream the key may not see is answered as one that does
/// not exist. The tiles are never deleted, so archived seqs are proved
/// too. Shared by the API and the console.
///
/// # Errors
/// 404 for a stream `key` cannot see or that does not exist; 400 naming
/// `seq` or `size` when out of range; 500 for the store.
pub async fn prove_inclusion(
    st: &Shared,
    key: &KeyRecord,
    stream: &str,
    seq: u64,
    size: Option<u64>,
) -> Result<InclusionProof, ApiError> {
    if !sees(key, stream) {
        return Err(ApiError::not_found(format!("stream {stream} not found")));
    }
    let info = existing(st, stream).await?;
    let size = match size {
        Some(s) => s,
        None => st
            .store
            .latest_checkpoint(stream)
            .await
            .map_err(|e| ApiError::internal(&e))?
            .map_or(info.head_seq, |c| c.size),
    };
    if size == 0 || size > info.head_seq {
        return Err(query_err(
            "size",
            format!("size must be between 1 and the head seq {}", info.head_seq),
        ));
    }
    if seq == 0 || seq > size {
        return Err(query_err(
            "seq",
            format!("seq must be between 1 and size {size}"),
        ));
    }
    let (leaf, proof, root) = st
        .store
        .with_tiles(stream, |r| {
            let src = ReaderSource(r);
            Ok((
                r.node(0, seq - 1)?,
                merkle::inclusion_proof(&src, seq - 1, size)?,
                merkle::root(&src, size)?,
            ))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(InclusionProof {
        seq,
        size,
        leaf_index: seq - 1,
        leaf_hash: STANDARD.encode(leaf),
        root: STANDARD.encode(root),
        hashes: b64(&proof),
    })
}

/// Where an event was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// The hot store (also a restored row).
    Hot,
    /// An archive object (checked against its recorded digest and chain).
    Cold,
}

impl Tier {
    /// `hot` or `cold`, as the query engine's `tier` column says.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Cold => "cold",
        }
    }
}

/// One event as stored, and the evidence of it when a signed checkpoint
/// covers it.
#[derive(Debug, Clone)]
pub struct EventEvidence {
    /// Where it was read from.
    pub tier: Tier,
    /// The event as stored: canonical JSON with `hash` inside.
    pub line: String,
    /// The latest signed checkpoint's size (None: none yet).
    pub checkpoint_size: Option<u64>,
    /// The evidence against the latest signed checkpoint; None while no
    /// checkpoint covers the seq yet.
    pub evidence: Option<crate::verify::evidence::Evidence>,
}

/// `stream`'s event `seq` for `key`, from the hot store or, when archived
/// and no longer hot, from its archive object, with its inclusion proof in
/// the latest signed checkpoint, that checkpoint and the verifier key.
/// `None` for a stream the key may not see, a stream that does not exist
/// and a seq it does not have (alike). Shared by the console's event page
/// and its evidence download.
///
/// # Errors
/// 500 for the store or an archive that cannot be read.
pub async fn event_evidence(
    st: &Shared,
    key: &KeyRecord,
    stream: &str,
    seq: u64,
) -> Result<Option<EventEvidence>, ApiError> {
    if !sees(key, stream) || seq == 0 {
        return Ok(None);
    }
    let Some(info) = st
        .store
        .stream(stream)
        .await
        .map_err(|e| ApiError::internal(&e))?
    else {
        return Ok(None);
    };
    if seq > info.head_seq {
        return Ok(None);
    }
    let page = st
        .store
        .read_page(stream, seq, 1)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let (tier, event) = match page {
        EventPage::Events(rows) => match rows.into_iter().next() {
            Some(r) if r.seq == seq => (Tier::Hot, r),
            _ => return Ok(None),
        },
        EventPage::Archived(_) => {
            let got = st
                .archiver
                .read_archived(stream, seq, 1)
                .await
                .map_err(|e| ApiError::internal(&crate::report::Chain(&e)))?;
            match got.and_then(|v| v.into_iter().next()) {
                Some(r) if r.seq == seq => (Tier::Cold, r.into()),
                _ => return Ok(None),
            }
        }
    };
    let line = stored_json(&event.body, &event.hash);
    let cp = st
        .store
        .latest_checkpoint(stream)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let checkpoint_size = cp.as_ref().map(|c| c.size);
    let evidence = match cp {
        Some(cp) if cp.size >= seq => {
            let proof = prove_inclusion(st, key, stream, seq, Some(cp.size)).await?;
            Some(crate::verify::evidence::Evidence {
                format: crate::verify::evidence::FORMAT.into(),
                stream: stream.to_owned(),
                seq,
                event: line.clone(),
                proof,
                checkpoint: cp.note,
                public_key: st.verifier.to_string(),
            })
        }
        _ => None,
    };
    Ok(Some(EventEvidence {
        tier,
        line,
        checkpoint_size,
        evidence,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ConsistencyQuery {
    /// The older tree size.
    #[param(maximum = 9223372036854775807_u64, required = true, minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    from: Option<u64>,
    /// The newer tree size (default: the head).
    #[param(maximum = 9223372036854775807_u64, minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    to: Option<u64>,
}

/// An RFC 9162 consistency proof (base64 hashes).
#[derive(Serialize, ToSchema)]
pub(super) struct ConsistencyProof {
    from: u64,
    to: u64,
    from_root: String,
    to_root: String,
    hashes: Vec<String>,
}

/// Proves the tree of size `from` is a prefix of the tree of size `to`.
#[utoipa::path(get, path = "/v1/streams/{stream}/proof/consistency", tag = "read",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), ConsistencyQuery),
    responses(
        (status = 200, body = ConsistencyProof),
        (status = 404, description = "No such stream", body = super::ErrorBody)))]
pub(super) async fn consistency(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    stream_name(&stream)?;
    authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    let info = existing(&st, &stream).await?;
    let from = q
        .from
        .ok_or_else(|| query_err("from", "from is required".into()))?;
    let to = q.to.unwrap_or(info.head_seq);
    if to == 0 || to > info.head_seq {
        return Err(query_err(
            "to",
            format!("to must be between 1 and the head seq {}", info.head_seq),
        ));
    }
    if from == 0 || from > to {
        return Err(query_err(
            "from",
            format!("from must be between 1 and to ({to})"),
        ));
    }
    let (proof, r1, r2) = st
        .store
        .with_tiles(&stream, |r| {
            let src = ReaderSource(r);
            Ok((
                merkle::consistency_proof(&src, from, to)?,
                merkle::root(&src, from)?,
                merkle::root(&src, to)?,
            ))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(ConsistencyProof {
        from,
        to,
        from_root: STANDARD.encode(r1),
        to_root: STANDARD.encode(r2),
        hashes: b64(&proof),
    }))
}

/// `POST /v1/verify` body (optional).
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    /// Verify this stream only (a key bound to a stream verifies it only).
    #[schema(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    stream: Option<String>,
}

/// Re-derives every hash, prev link, tile and checkpoint of the hot store
/// and cross-checks the batches recorded as archived.
#[utoipa::path(post, path = "/v1/verify", tag = "verify", security(("bearer" = [])),
    request_body(content = Option<VerifyBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "The report; `ok` is false when a problem was found", body = crate::verify::Report),
        (status = 404, description = "No such stream", body = super::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = super::ErrorBody),
        (status = 413, description = "The body exceeds 4 KiB", body = super::ErrorBody)))]
pub(super) async fn verify(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<crate::verify::Report>, ApiError> {
    // Authenticated before the body is read: an anonymous caller gets 401
    // whatever it sends, and nobody gets to send more than a small body.
    let key = authenticate(&st, &headers).await?;
    permit(&st, &key, Scope::Admin, Target::Listing)?;
    let body = read_body(&st, body, 4096, || {
        "the request body is larger than 4096 bytes, the most POST /v1/verify takes (it is {\"stream\": \"…\"} or nothing)".into()
    })
    .await?;
    let req: VerifyBody = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyBody::default()
    } else {
        serde_json::from_slice::<Option<VerifyBody>>(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("body: {e}")))?
            .unwrap_or_default()
    };
    if let Some(s) = &req.stream {
        stream_name(s)?;
        permit(&st, &key, Scope::Admin, Target::Stream(s))?;
    }
    // A key bound to one stream verifies that stream only.
    let only = req
        .stream
        .clone()
        .or((key.stream != "*").then(|| key.stream.clone()));
    let report = crate::verify::verify_store(
        st.store.as_ref(),
        &st.verifier,
        &st.log_name,
        only.as_deref(),
        &|_| {},
    )
    .await;
    if only.is_none() {
        crate::verify::record_run(&report);
    }
    let report = report.map_err(|e| match e {
        crate::store::StoreError::NotFound(what) => {
            ApiError::not_found(format!("{what} not found"))
        }
        e => ApiError::internal(&e),
    })?;
    crate::audit::record(
        st.store.as_ref(),
        "verify.run",
        crate::audit::Actor::Key(&key.id),
        json!({"stream": only, "ok": report.ok, "events": report.events, "problems": report.problem_count}),
    )
    .await;
    Ok(Json(report))
}

/// `GET /v1/sources`.
#[derive(Serialize, ToSchema)]
pub(super) struct SourceList {
    /// The sources feeding streams the key may see.
    sources: Vec<SourceState>,
}

/// Each SSE source: connection, resume position, counters, last error, the
/// latest possible upstream gaps.
#[utoipa::path(get, path = "/v1/sources", tag = "sources", security(("bearer" = [])),
    responses((status = 200, body = SourceList)))]
pub(super) async fn sources(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<SourceList>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    Ok(Json(SourceList {
        sources: source_states(&st, &key).await?,
    }))
}

/// The sources feeding streams `key` may see.
///
/// # Errors
/// 500 when the store cannot be read.
pub(crate) async fn source_states(
    st: &AppState,
    key: &KeyRecord,
) -> Result<Vec<SourceState>, ApiError> {
    let mut all = st
        .store
        .source_states()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    all.retain(|s| sees(key, &s.stream));
    Ok(all)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RejectedQuery {
    /// Only this source's.
    #[param(pattern = r"^[A-Za-z0-9_-]{1,64}$")]
    source: Option<String>,
    /// At most this many, newest first (1-10000, default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// `GET /v1/sources/rejected`.
#[derive(Serialize, ToSchema)]
pub(super) struct RejectedList {
    /// Refused upstream events, newest first.
    rejected: Vec<RejectedEvent>,
}

/// Events sources received but could not store, with why (admin).
#[utoipa::path(get, path = "/v1/sources/rejected", tag = "sources", security(("bearer" = [])),
    params(RejectedQuery),
    responses(
        (status = 200, body = RejectedList),
        (status = 404, description = "No such source", body = super::ErrorBody)))]
pub(super) async fn rejected(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RejectedQuery>,
) -> Result<Json<RejectedList>, ApiError> {
    // Rejected events may hold anything an upstream sent: admin only.
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let limit = super::limit_param(q.limit, 100)?;
    Ok(Json(RejectedList {
        rejected: rejected_events(&st, &key, q.source.as_deref(), limit).await?,
    }))
}

/// Up to `limit` events sources refused (of `source`, or all), newest
/// first, that `key` may see: admin only, and a key bound to a stream sees
/// only its sources' rejects.
///
/// # Errors
/// 403 for a key that is not admin; 400 for a bad source name; 404 for a
/// source the key does not see.
pub(crate) async fn rejected_events(
    st: &AppState,
    key: &KeyRecord,
    source: Option<&str>,
    limit: usize,
) -> Result<Vec<RejectedEvent>, ApiError> {
    permit(st, key, Scope::Admin, Target::Listing)?;
    if let Some(name) = source {
        crate::names::ConfigName::parse(name).map_err(|e| ApiError {
            field: Some("source".into()),
            ..ApiError::bad_request(e.code(), e.to_string())
        })?;
    }
    let states = st
        .store
        .source_states()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let visible: std::collections::HashSet<&str> = states
        .iter()
        .filter(|s| sees(key, &s.stream))
        .map(|s| s.name.as_str())
        .collect();
    if let Some(name) = source
        && !visible.contains(name)
        && key.stream != "*"
    {
        return Err(ApiError::not_found(format!("source {name}")));
    }
    let mut rows = st
        .store
        .rejected(source, limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if key.stream != "*" {
        rows.retain(|r| visible.contains(r.source.as_str()));
    }
    Ok(rows)
}
