//! Archive endpoints (admin): list batches, run now, restore a range.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Path, Query};
use super::{ApiError, AppState, ErrorBody, authorize, permit, stream_name};
use crate::archive::ArchiveError;
use crate::archive::archiver::RunReport;
use crate::archive::restore::RestoreReport;
use crate::auth::{Scope, Target};
use crate::objstore::ObjStoreError;
use crate::store::{ArchiveBatch, KeyRecord};

fn archive_error(e: &ArchiveError) -> ApiError {
    match e {
        ArchiveError::Busy => ApiError::new(StatusCode::CONFLICT, "archive_busy", e.to_string()),
        ArchiveError::Location(_) => ApiError::bad_request("bad_range", e.to_string()),
        // Keys, checksums and seqs only: no secrets in archive errors.
        ArchiveError::Bucket(ObjStoreError::Conflict { .. } | ObjStoreError::ReadBack { .. })
        | ArchiveError::NotCreateOnly(_)
        | ArchiveError::Chain { .. } => {
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

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only this stream's batches.
    #[param(pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")]
    stream: Option<String>,
    /// Only batches starting at or after this seq.
    #[serde(default, deserialize_with = "super::extract::seq")]
    #[param(value_type = Option<u64>, maximum = 9223372036854775807_u64)]
    from_start: Option<u64>,
    /// At most this many (1-10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

/// `GET /v1/archives`.
#[derive(Serialize, ToSchema)]
pub(super) struct BatchList {
    /// The archive (URL without query).
    archive: String,
    /// Batches recorded as archived, by stream and seq.
    batches: Vec<ArchiveBatch>,
}

/// Recorded archive batches, by stream and seq (admin).
#[utoipa::path(get, path = "/v1/archives", tag = "archive", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = BatchList)))]
pub(super) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<BatchList>, ApiError> {
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
    let limit = super::limit_param(q.limit, 1000)?;
    let batches = st
        .store
        .archive_batches(stream, q.from_start.unwrap_or(0), limit)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(BatchList {
        archive: st.archiver.bucket().display().to_owned(),
        batches,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RunQuery {
    /// Archive events received before this long ago (`30d`, `12h`, `0s`;
    /// default: `[archive] older_than`).
    #[param(pattern = r"^([0-9]{1,5}(d|h|m|s)|[0-9]{1,9}(s|ms))$")]
    older_than: Option<String>,
}

/// One archive run now, under the archiver lease (admin, a key for `*`:
/// a run archives and deletes from hot every stream).
#[utoipa::path(post, path = "/v1/archive/run", tag = "archive", security(("bearer" = [])),
    params(RunQuery),
    responses(
        (status = 200, body = RunReport),
        (status = 409, description = "Another run holds the lease, or the bucket refused a write", body = ErrorBody),
        (status = 502, description = "The archive failed", body = ErrorBody)))]
pub(super) async fn run(
    State(st): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RunQuery>,
) -> Result<Json<RunReport>, ApiError> {
    let key = authorize(&st, &headers, Scope::Admin, Target::AllStreams).await?;
    let older_than = q
        .older_than
        .as_deref()
        .map(crate::archive::parse_duration)
        .transpose()
        .map_err(|m| ApiError {
            field: Some("older_than".into()),
            ..ApiError::bad_request("invalid_duration", m.to_string())
        })?;
    Ok(Json(run_now(&st, &key, older_than).await?))
}

/// Runs the archive once now for `key` (admin for `*`, checked here too),
/// records the run in `_audit`, and answers its report: the API's
/// `POST /v1/archive/run` and the console's "Run archive now".
///
/// # Errors
/// 403 for a key that may not; as [`archive_error`] when the run fails.
pub(crate) async fn run_now(
    st: &AppState,
    key: &KeyRecord,
    older_than: Option<std::time::Duration>,
) -> Result<RunReport, ApiError> {
    permit(st, key, Scope::Admin, Target::AllStreams)?;
    let run = st.archiver.run_leased(older_than, &|_| {}).await;
    crate::audit::record(
        st.store.as_ref(),
        "archive.run",
        crate::audit::Actor::Key(&key.id),
        crate::audit::archive_run(&run),
    )
    .await;
    run.map_err(|e| archive_error(&e))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct RestoreQuery {
    /// First seq to bring back.
    #[param(required = true, minimum = 1, maximum = 9223372036854775807_u64)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    from: Option<u64>,
    /// Last seq to bring back.
    #[param(required = true, minimum = 1, maximum = 9223372036854775807_u64)]
    #[serde(default, deserialize_with = "super::extract::seq")]
    to: Option<u64>,
}

/// Brings an archived seq range back into the hot store, each object
/// checked against its signed manifest first (admin).
#[utoipa::path(post, path = "/v1/streams/{stream}/restore", tag = "archive",
    security(("bearer" = [])),
    params(("stream" = String, Path, description = "Stream name", pattern = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"), RestoreQuery),
    responses(
        (status = 200, body = RestoreReport),
        (status = 409, description = "The archive does not match its manifests", body = ErrorBody),
        (status = 502, description = "The archive could not be read", body = ErrorBody)))]
pub(super) async fn restore(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(stream): Path<String>,
    Query(q): Query<RestoreQuery>,
) -> Result<Json<RestoreReport>, ApiError> {
    stream_name(&stream)?;
    let key = authorize(&st, &headers, Scope::Admin, Target::Stream(&stream)).await?;
    let (Some(from), Some(to)) = (q.from, q.to) else {
        return Err(ApiError {
            field: Some(if q.from.is_none() { "from" } else { "to" }.into()),
            ..ApiError::bad_request("invalid_query", "from and to (seqs) are required")
        });
    };
    Ok(Json(restore_range(&st, &key, &stream, from, to).await?))
}

/// Brings seqs `from`-`to` of `stream` back into the hot store for `key`
/// (admin on that stream, checked here too), recording it in `_audit`:
/// the API's `POST /v1/streams/{stream}/restore` and the console's
/// "Restore a range".
///
/// # Errors
/// 403 for a key that may not; as [`archive_error`] when it fails.
pub(crate) async fn restore_range(
    st: &AppState,
    key: &KeyRecord,
    stream: &str,
    from: u64,
    to: u64,
) -> Result<RestoreReport, ApiError> {
    stream_name(stream)?;
    permit(st, key, Scope::Admin, Target::Stream(stream))?;
    let restored = crate::archive::restore::restore(
        st.store.as_ref(),
        st.archiver.bucket(),
        &st.verifier,
        st.archiver.settings().hmac_key.as_deref(),
        crate::archive::restore::RestoreRange { stream, from, to },
        &|_| {},
    )
    .await;
    crate::audit::record(
        st.store.as_ref(),
        "archive.restore",
        crate::audit::Actor::Key(&key.id),
        json!({
            "stream": stream, "from": from, "to": to,
            "restored": restored.as_ref().ok().map(|r| r.restored),
            "error": restored.as_ref().err().map(ToString::to_string),
        }),
    )
    .await;
    restored.map_err(|e| archive_error(&e))
}
