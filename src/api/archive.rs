//! Archive endpoints (admin): list batches, run now, restore a range.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, AppState, authorize, stream_name};
use crate::archive::ArchiveError;
use crate::auth::{Scope, Target};

fn archive_error(e: &ArchiveError) -> ApiError {
    match e {
        ArchiveError::Busy => ApiError::new(StatusCode::CONFLICT, "archive_busy", e.to_string()),
        ArchiveError::Location(_) => ApiError::bad_request("bad_range", e.to_string()),
        // Keys, checksums and seqs only: no secrets in archive errors.
        ArchiveError::Conflict { .. }
        | ArchiveError::NotCreateOnly(_)
        | ArchiveError::Chain { .. }
        | ArchiveError::ReadBack { .. } => {
            ApiError::new(StatusCode::CONFLICT, "archive_refused", e.to_string())
        }
        _ => {
            tracing::error!(error = %e, "archive request failed");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "archive_failed",
                format!("archive failed: {e}"),
            )
        }
    }
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    stream: Option<String>,
    #[serde(default)]
    from_start: u64,
    limit: Option<usize>,
}

/// `GET /v1/archives`: recorded batches, by stream and seq.
pub(super) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.stream {
        stream_name(s)?;
    }
    let target = q.stream.as_deref().map_or(Target::Listing, Target::Stream);
    let key = authorize(&st, &headers, Scope::Admin, target).await?;
    // A key bound to a stream lists that stream's batches only.
    let stream = q
        .stream
        .as_deref()
        .or((key.stream != "*").then_some(key.stream.as_str()));
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let batches = st
        .store
        .archive_batches(stream, q.from_start, limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({
        "archive": st.archiver.bucket().display(),
        "batches": batches,
    })))
}

#[derive(Deserialize)]
pub(super) struct RunQuery {
    older_than: Option<String>,
}

/// `POST /v1/archive/run`: one run now, under the archiver lease. A run
/// archives (and deletes from hot) every stream, so it needs a key for `*`.
pub(super) async fn run(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::AllStreams).await?;
    let older_than = q
        .older_than
        .as_deref()
        .map(crate::archive::parse_duration)
        .transpose()
        .map_err(|m| ApiError {
            field: Some("older_than".into()),
            ..ApiError::bad_request("invalid_duration", m)
        })?;
    let run = st.archiver.run_leased(older_than, &|_| {}).await;
    crate::audit::record(
        st.store.as_ref(),
        "archive.run",
        crate::audit::Actor::Key(&key.id),
        crate::audit::archive_run(&run),
    )
    .await;
    let report = run.map_err(|e| archive_error(&e))?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::internal(&e))?,
    ))
}

#[derive(Deserialize)]
pub(super) struct RestoreQuery {
    from: u64,
    to: u64,
}

/// `POST /v1/streams/{stream}/restore?from=&to=`.
pub(super) async fn restore(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(stream): Path<String>,
    Query(q): Query<RestoreQuery>,
) -> Result<Json<Value>, ApiError> {
    stream_name(&stream)?;
    let key = authorize(&st, &headers, Scope::Admin, Target::Stream(&stream)).await?;
    let restored = crate::archive::restore::restore(
        st.store.as_ref(),
        st.archiver.bucket(),
        &st.verifier,
        st.archiver.settings().hmac_key.as_deref(),
        crate::archive::restore::RestoreRange {
            stream: &stream,
            from: q.from,
            to: q.to,
        },
        &|_| {},
    )
    .await;
    crate::audit::record(
        st.store.as_ref(),
        "archive.restore",
        crate::audit::Actor::Key(&key.id),
        json!({
            "stream": stream, "from": q.from, "to": q.to,
            "restored": restored.as_ref().ok().map(|r| r.restored),
            "error": restored.as_ref().err().map(ToString::to_string),
        }),
    )
    .await;
    let report = restored.map_err(|e| archive_error(&e))?;
    Ok(Json(
        serde_json::to_value(report).map_err(|e| ApiError::internal(&e))?,
    ))
}
