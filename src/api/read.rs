//! Read routes: streams, events, checkpoints, public key, proofs, verify.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, authenticate, authorize, permit, read_body, stream_name};
use crate::auth::{Scope, Target, sees};
use crate::chain::merkle;
use crate::event::stored_json;
use crate::store::{ReaderSource, StoreExt, StreamInfo};

pub(super) async fn list_streams(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    let mut streams = st
        .store
        .streams()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    streams.sort_by(|a, b| crate::event::stream_order(&a.name, &b.name));
    streams.retain(|s| sees(&key, &s.name));
    Ok(Json(json!({ "streams": streams })))
}

async fn existing(st: &AppState, stream: &str) -> Result<StreamInfo, ApiError> {
    st.store
        .stream(stream)
        .await
        .map_err(|e| ApiError::internal(&e))?
        .ok_or_else(|| ApiError::not_found(format!("stream {stream} not found")))
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    from_seq: Option<u64>,
    limit: Option<usize>,
}

pub(super) async fn get_events(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    stream_name(&stream)?;
    authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    existing(&st, &stream).await?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError {
            field: Some("limit".into()),
            ..ApiError::bad_request("invalid_query", "limit must be between 1 and 10000")
        });
    }
    let rows = st
        .store
        .read_events(&stream, q.from_seq.unwrap_or(1), limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let mut out = String::new();
    for r in rows {
        out.push_str(&stored_json(&r.body, &r.hash));
        out.push('\n');
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out))
}

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

#[derive(Deserialize)]
pub(super) struct InclusionQuery {
    seq: Option<u64>,
    size: Option<u64>,
}

pub(super) async fn inclusion(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<Value>, ApiError> {
    stream_name(&stream)?;
    authorize(&st, &headers, Scope::Read, Target::Stream(&stream)).await?;
    let info = existing(&st, &stream).await?;
    let seq = q
        .seq
        .ok_or_else(|| query_err("seq", "seq is required".into()))?;
    let size = match q.size {
        Some(s) => s,
        None => st
            .store
            .latest_checkpoint(&stream)
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
        .with_tiles(&stream, |r| {
            let src = ReaderSource(r);
            Ok((
                r.node(0, seq - 1)?,
                merkle::inclusion_proof(&src, seq - 1, size)?,
                merkle::root(&src, size)?,
            ))
        })
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "seq": seq, "size": size, "leaf_index": seq - 1,
        "leaf_hash": STANDARD.encode(leaf), "root": STANDARD.encode(root), "hashes": b64(&proof),
    })))
}

#[derive(Deserialize)]
pub(super) struct ConsistencyQuery {
    from: Option<u64>,
    to: Option<u64>,
}

pub(super) async fn consistency(
    State(st): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({
        "from": from, "to": to, "from_root": STANDARD.encode(r1), "to_root": STANDARD.encode(r2), "hashes": b64(&proof),
    })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyBody {
    stream: Option<String>,
}

pub(super) async fn verify(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    // Authenticated before the body is read: an anonymous caller gets 401
    // whatever it sends, and nobody gets to send more than a small body.
    let key = authenticate(&st, &headers).await?;
    permit(&st, &key, Scope::Admin, Target::Listing)?;
    let body = read_body(&st, body, 4096).await?;
    let req: VerifyBody = if body.iter().all(u8::is_ascii_whitespace) {
        VerifyBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("body: {e}")))?
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
    .await
    .map_err(|e| match e {
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
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::internal(&e))?,
    ))
}

pub(super) async fn sources(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    let mut all = st
        .store
        .source_states()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    all.retain(|s| sees(&key, &s.stream));
    Ok(Json(json!({ "sources": all })))
}

#[derive(Deserialize)]
pub(super) struct RejectedQuery {
    source: Option<String>,
    limit: Option<usize>,
}

pub(super) async fn rejected(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RejectedQuery>,
) -> Result<Json<Value>, ApiError> {
    // Rejected events may hold anything an upstream sent: admin only, and
    // a key bound to a stream sees only its sources' rejects.
    let key = authorize(&st, &headers, Scope::Admin, Target::Listing).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let states = st
        .store
        .source_states()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let visible: std::collections::HashSet<&str> = states
        .iter()
        .filter(|s| sees(&key, &s.stream))
        .map(|s| s.name.as_str())
        .collect();
    if let Some(name) = &q.source
        && !visible.contains(name.as_str())
        && key.stream != "*"
    {
        return Err(ApiError::not_found(format!("source {name}")));
    }
    let mut rows = st
        .store
        .rejected(q.source.as_deref(), limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    if key.stream != "*" {
        rows.retain(|r| visible.contains(r.source.as_str()));
    }
    Ok(Json(json!({ "rejected": rows })))
}
