//! `POST /v1/query`: SQL over the `events` table (hot and archived
//! together) with a read key; a stream-bound key's answer holds its stream
//! only (the scan plans nothing else, whatever the SQL says).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiError, AppState, authorize, read_body};
use crate::auth::{Scope, Target};
use crate::query::output::{Column, Format};
use crate::query::{QueryError, QueryStats, Visible};

/// The body of `POST /v1/query`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct QueryRequest {
    /// One SQL statement over the table `events` (columns `stream, seq,
    /// id, type, time, received, actor, subject, data, prev, hash, tier,
    /// dt`).
    sql: String,
    /// The answer's format (default `json`).
    #[serde(default)]
    format: Option<Format>,
}

/// The answer in `json` format.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct QueryAnswer {
    /// Column names and Arrow types.
    columns: Vec<Column>,
    /// One object per row.
    rows: Vec<serde_json::Value>,
    /// What the query read.
    stats: QueryStats,
}

fn query_error(e: &QueryError) -> ApiError {
    match e {
        QueryError::Sql { line, column, .. } => ApiError {
            field: Some("sql".into()),
            ..ApiError::bad_request(
                "bad_sql",
                match (line, column) {
                    (Some(l), Some(c)) => format!("{e} (line {l}, column {c})"),
                    _ => e.to_string(),
                },
            )
        },
        QueryError::Invalid(_) => ApiError {
            field: Some("sql".into()),
            ..ApiError::bad_request("invalid_query", e.to_string())
        },
        QueryError::Limit {
            setting: "max_concurrent",
            ..
        } => ApiError::unavailable("query_busy", e.to_string(), 1),
        QueryError::Limit { .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "query_limit",
            e.to_string(),
        ),
        _ => {
            tracing::error!(error = %crate::report::Chain(e), "query failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "query_failed",
                e.to_string(),
            )
        }
    }
}

/// Runs one SQL statement over `events` (read scope; a stream-bound key
/// sees its stream only). Answers `json` (columns, rows, stats) unless
/// `format` asks for `ndjson`, `csv`, `parquet`, `arrow` or `table`; the
/// other formats carry the stats in `Trailkeep-*` headers.
#[utoipa::path(post, path = "/v1/query", tag = "read", security(("bearer" = [])),
    request_body = QueryRequest,
    responses(
        (status = 200, description = "The answer", body = QueryAnswer),
        (status = 400, description = "The SQL does not parse or cannot run (error.message says where)", body = super::ErrorBody),
        (status = 422, description = "The query went past a [query] limit, named in the message", body = super::ErrorBody),
        (status = 503, description = "Too many queries are running", body = super::ErrorBody),
    ))]
pub(super) async fn query(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let key = authorize(&st, &headers, Scope::Read, Target::Listing).await?;
    let max = st.query.settings().max_sql_bytes + 1024;
    let body = read_body(&st, body, max, || {
        format!("the query body is larger than {max} bytes ([query] max_sql_bytes)")
    })
    .await?;
    let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "invalid_json",
            format!(
                "{e}: send {{\"sql\": \"SELECT …\", \"format\": \"json\"}} (formats: {})",
                Format::NAMES
            ),
        )
    })?;
    let format = req.format.unwrap_or(Format::Json);
    let visible = if key.stream == "*" {
        Visible::All
    } else {
        Visible::Only(key.stream.clone())
    };
    let answer = st
        .query
        .run(&req.sql, visible, Arc::default())
        .await
        .map_err(|e| query_error(&e))?;
    let mut out = Vec::new();
    crate::query::output::write(
        format,
        &answer.schema,
        &answer.batches,
        &answer.stats,
        &mut out,
    )
    .map_err(|e| ApiError::internal(&e))?;
    let s = answer.stats;
    let mut resp = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        out,
    )
        .into_response();
    for (name, v) in [
        ("trailkeep-rows", s.rows),
        ("trailkeep-hot-rows-read", s.hot_rows_read),
        ("trailkeep-objects-read", s.objects_read),
        ("trailkeep-bytes-read", s.bytes_read),
        ("trailkeep-elapsed-ms", s.elapsed_ms),
    ] {
        resp.headers_mut()
            .insert(HeaderName::from_static(name), HeaderValue::from(v));
    }
    Ok(resp)
}
